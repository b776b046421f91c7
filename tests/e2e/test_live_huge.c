/*
 * End-to-end: huge guests with default settings, and the dirty ring under a
 * writer that outruns it.
 *
 * A 1 TiB guest (MAP_NORESERVE; the workload touches a 64 MiB hot set plus
 * its own page tables) is migrated A -> B -> C with default flags, once
 * with each dirty source (`--dirty-source ring` and `log`, chosen at
 * `livemig run` and at each `livemig incoming`). Each hop must complete
 * with the named source, the receiver's digest check and the source's
 * completeness check both ok, and the guest's own check of every page it
 * wrote passing on its new host. Before 0.3 a guest over 256 GiB failed at
 * migration time with "Invalid argument" (one stream region per 1 GiB
 * slot, 256 at most).
 *
 * The ring-full case: a guest with the smallest ring (65536 entries per
 * vCPU) rewriting a 512 MiB working set (twice the ring) as fast as it can: the
 * vCPU leaves KVM_RUN with KVM_EXIT_DIRTY_RING_FULL over and over while the
 * migration runs, and not one write may be lost (digest, completeness
 * check and the guest's self-check).
 *
 * Skipped (with the reason) when the host cannot hold two 1 TiB VMs at
 * once (KVM's ~2.5 GiB of metadata per TiB each) or has no dirty ring.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "livemig/vmm.h"
#include "support/live.h"
#include "support/live_assert.h"

static int group_setup(void **state)
{
	lm_live_setup("live-huge");
	return 0;
}

/* Two VMs of `bytes` at once (source and destination). */
static bool host_holds_two(uint64_t bytes)
{
	uint64_t need = 0, avail = 0;
	lm_vm_host_check(bytes, &need, &avail);
	if (avail && 2 * need + (2ull << 30) > avail) {
		print_message("      host has %.1f GiB available, two %.0f GiB VMs need %.1f GiB of KVM metadata\n",
			      avail / 1073741824.0, bytes / 1073741824.0, 2 * need / 1073741824.0);
		return false;
	}
	return true;
}

static void hop(struct lm_live_vm *from, struct lm_live_vm *to, const char *source)
{
	struct lm_live_mig m;
	char label[32];
	snprintf(label, sizeof(label), " (%s)", source);
	lm_live_expect_hop(&m, from, to, NULL, label);
	char want[64];
	snprintf(want, sizeof(want), "\"dirty-source\":\"%s\"", source);
	/* The report is pretty-printed: look for the value, spaces aside. */
	char *compact = strdup(m.json);
	size_t k = 0;
	for (size_t i = 0; compact[i]; i++)
		if (compact[i] != ' ' && compact[i] != '\n')
			compact[k++] = compact[i];
	compact[k] = 0;
	assert_non_null(strstr(compact, want));
	assert_non_null(strstr(compact, "\"verify\":{\"status\":\"ok\""));
	free(compact);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(from, to, "writes=");
}

static void a_b_c(const char *mode, const char *source)
{
	if (!lm_live_ready())
		skip();
	if (!host_holds_two(1ull << 40))
		skip();
	const char *extra[] = {"--dirty-source", mode, NULL};
	struct lm_live_vm a, b, c;
	lm_live_expect_running(&a, "A", "1T", "workload=hotset wss=64M rate=50M verify=1 progress=250", extra, 1);
	assert_int_equal(lm_live_incoming(&b, "B", "tcp", extra), 0);
	hop(&a, &b, source);
	assert_true(lm_live_vm_wait_progress(&b, 2));
	/* C only now: A has gone, so two 1 TiB VMs exist at a time. */
	assert_int_equal(lm_live_incoming(&c, "C", "tcp", extra), 0);
	hop(&b, &c, source);
	assert_int_equal(lm_live_vm_verify(&c), 1);
	assert_int_equal(lm_live_count_file(c.console, "FAIL", NULL, 0), 0);
	assert_int_equal(lm_live_vm_quit(&c), 0);
}

static void test_1t_ring_a_b_c(void **state)
{
	a_b_c("ring", "kvm-ring");
}

static void test_1t_log_a_b_c(void **state)
{
	a_b_c("log", "kvm-log");
}

static void test_ring_full_loses_nothing(void **state)
{
	if (!lm_live_ready())
		skip();
	const char *extra[] = {"--dirty-source", "ring", "--dirty-ring-size", "65536", NULL};
	struct lm_live_vm a, b;
	/* rate=0: as fast as the vCPU can write (see docs/guest.md). */
	lm_live_expect_running(&a, "A", "1G", "workload=hotset wss=512M rate=0 verify=1 progress=250", extra, 1);
	assert_int_equal(lm_live_incoming(&b, "B", "tcp", extra), 0);
	hop(&a, &b, "kvm-ring");
	assert_true(lm_live_vm_wait_progress(&b, 2));
	assert_int_equal(lm_live_vm_verify(&b), 1);
	assert_int_equal(lm_live_count_file(b.console, "FAIL", NULL, 0), 0);
	assert_int_equal(lm_live_vm_quit(&b), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_1t_ring_a_b_c, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_1t_log_a_b_c, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_ring_full_loses_nothing, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
