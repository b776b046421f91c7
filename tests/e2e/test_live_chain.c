/*
 * End-to-end: back-to-back migrations. A guest started by `livemig run`
 * (A) migrates to `livemig incoming` (B), and then, through B's control
 * socket, on to a second `livemig incoming` (C). After each hop the
 * process left behind exits LM_CLI_EXIT_MIGRATED (10), the guest verifies on its new host ("verify
 * ok", no FAIL) and its write counter keeps growing past the last value the
 * previous host printed. A guest-verify asked on C at the end answers ok.
 *
 * The first hop uses a capped link (several rounds while the guest writes),
 * the second an unlimited one; no assertion depends on timing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "support/live.h"
#include "support/live_assert.h"

/* Without LIVEMIG, GUEST_ELF or KVM every test skips (lm_live_ready()). */
static int group_setup(void **state)
{
	lm_live_setup("live-chain");
	return 0;
}

/* One hop: migrates from (a process serving the VM) to (a waiting
 * incoming), then checks both sides. */
static void hop(struct lm_live_vm *from, struct lm_live_vm *to, const char *const *opts)
{
	struct lm_live_mig m;
	lm_live_expect_hop(&m, from, to, opts, NULL);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(from, to, "writes=");
}

static void test_a_b_c(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm a, b, c;
	lm_live_expect_running(&a, "A", "512M",
			       "workload=hotset wss=64M rate=50M verify=1 progress=250", NULL, 1);
	assert_int_equal(lm_live_incoming(&b, "B", "tcp", NULL), 0);
	assert_int_equal(lm_live_incoming(&c, "C", "tcp", NULL), 0);

	const char *capped[] = {"--max-bandwidth", "100M", "--downtime-limit", "50", NULL};
	hop(&a, &b, capped);
	/* B is serving the guest: let it run a little there first. */
	assert_true(lm_live_vm_wait_progress(&b, 2));
	/* The parameters came from the stream's side (A); B has its own,
	 * the defaults: an unlimited link. */
	hop(&b, &c, NULL);

	assert_int_equal(lm_live_vm_verify(&c), 1);
	assert_int_equal(lm_live_count_file(c.console, "FAIL", NULL, 0), 0);
	/* Each host's console shows the check asked after its arrival. */
	assert_true(lm_live_count_file(b.console, "verify ok", NULL, 0) >= 1);
	assert_true(lm_live_count_file(c.console, "verify ok", NULL, 0) >= 2);
	assert_int_equal(lm_live_vm_quit(&c), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_a_b_c, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
