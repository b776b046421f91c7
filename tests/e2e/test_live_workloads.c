/*
 * End-to-end: live migration of a running guest, one test per guest
 * workload, between two livemig processes over TCP loopback.
 *
 * Each test starts `livemig run` with the guest image (env GUEST_ELF)
 * running one workload with verification on, waits for its first progress
 * lines (setup done, pages being written), starts `livemig incoming` on
 * 127.0.0.1 port 0 and runs `livemig migrate --json` with the link capped
 * at 100 MB/s, so that the copy takes several rounds while the guest writes. It then requires what
 * issue 4 asks of every workload: the migration completed (exit 0, status
 * "completed"), the source process exited LM_CLI_EXIT_MIGRATED, the destination guest passed
 * the check the incoming side asks for once it resumes the guest ("verify
 * ok", and no "FAIL" on either console), and the guest's progress counter
 * kept growing on the destination past its last value on the source. The
 * counter is `writes` for the workloads that write; `idle` and `memtouch`
 * (which has finished its single pass by then) write nothing more, so their
 * guest clock `t` is followed instead, and `seqread` follows `reads`.
 *
 * The guests are small (256 MiB, working sets of 32-64 MiB) so the whole
 * file runs in well under a minute on a shared 2-core machine; no assertion
 * depends on timing.
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
	lm_live_setup("live-wl");
	return 0;
}

static void migrate_workload_with(const char *append, const char *key, const char *const *run_extra,
				  const char *const *mig_extra)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	/* The first progress line comes after the setup check: the workload
	 * is running from then on. */
	lm_live_expect_running(&src, "src", "256M", append, run_extra, 3);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", once), 0);

	struct lm_live_mig m;
	/* A link slower than loopback makes the copy take several rounds
	 * while the guest writes, which is what the dirty log is for. */
	const char *opts[16] = {"--max-bandwidth", "100M", "--downtime-limit", "50"};
	for (size_t i = 0; mig_extra && mig_extra[i] && i < 11; i++)
		opts[4 + i] = mig_extra[i];
	int rc = lm_live_migrate(&m, &src, dst.uri, opts);
	char status[32] = "";
	lm_live_str(m.json, "status", status, sizeof(status));
	if (rc != 0 || strcmp(status, "completed")) {
		fprintf(stderr, "migrate exited %d, status '%s'\n%s%s", rc, status, m.json,
			m.errtext);
		lm_live_dump(src.out, 4096);
		lm_live_dump(dst.out, 4096);
	}
	assert_int_equal(rc, 0);
	assert_string_equal(status, "completed");
	struct lm_live_figures f;
	lm_live_mig_figures(&m, &f);
	print_message(
	    "      %s%s%s: total %.0f ms, downtime %.0f ms, %.0f rounds, %.1f MiB on the wire\n",
	    append, run_extra ? " with run " : "", run_extra ? run_extra[0] : "", f.total_ms,
	    f.downtime_ms, f.rounds, f.transferred / 1048576.0);
	if (mig_extra)
		print_message("      (migrate %s)\n", mig_extra[0]);
	/* Channels asked for are channels used (the destination accepts them). */
	for (size_t i = 0; mig_extra && mig_extra[i]; i++)
		if (!strcmp(mig_extra[i], "--channels")) {
			double ch = 0;
			assert_true(lm_live_num(m.json, "\"multifd-channels\":", &ch));
			assert_int_equal((int)ch, atoi(mig_extra[i + 1]));
		}
	lm_live_mig_free(&m);

	lm_live_expect_switchover(&src, &dst, key);
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

static void migrate_workload(const char *append, const char *key)
{
	migrate_workload_with(append, key, NULL, NULL);
}

static void test_idle(void **state)
{
	migrate_workload("workload=idle verify=1 progress=250", "t=");
}

static void test_memtouch(void **state)
{
	migrate_workload("workload=memtouch mem=128M verify=1 progress=250", "t=");
}

static void test_hotset(void **state)
{
	migrate_workload("workload=hotset wss=64M rate=50M verify=1 progress=250", "writes=");
}

static void test_stream(void **state)
{
	migrate_workload("workload=stream mem=128M rate=50M verify=1 progress=250", "writes=");
}

static void test_contig(void **state)
{
	migrate_workload("workload=contig wss=32M period=300 verify=1 progress=250", "writes=");
}

static void test_alternate(void **state)
{
	migrate_workload("workload=alternate wss=32M period=300 verify=1 progress=250", "writes=");
}

static void test_seqread(void **state)
{
	migrate_workload("workload=seqread mem=64M rate=50M verify=1 progress=250", "reads=");
}

static void test_mixed(void **state)
{
	migrate_workload("workload=mixed mem=128M rate=50M wpct=50 verify=1 progress=250",
			 "writes=");
}

/* Two vCPUs: the second waits for a startup IPI that never comes, and
 * that state (and its LAPIC) moves too. */
static void test_hotset_two_vcpus(void **state)
{
	const char *cpus[] = {"--cpus", "2", NULL};
	migrate_workload_with("workload=hotset wss=64M rate=50M verify=1 progress=250",
			      "writes=", cpus, NULL);
}

/* zstd-compressed page data (the guest's pages are incompressible, the
 * version table and headers are not). */
static void test_hotset_compressed(void **state)
{
	const char *compress[] = {"--compress", NULL};
	migrate_workload_with("workload=hotset wss=64M rate=50M verify=1 progress=250",
			      "writes=", NULL, compress);
}

/* Page data on four channels (multifd): every page through its stripe's
 * connection while the guest rewrites its working set. */
static void test_hotset_channels(void **state)
{
	const char *ch[] = {"--channels", "4", NULL};
	migrate_workload_with("workload=hotset wss=64M rate=50M verify=1 progress=250", "writes=", NULL, ch);
}

/* Channels with zstd on incompressible pages: each channel's encoder
 * gives up compressing and the pages go raw. */
static void test_mixed_channels_compressed(void **state)
{
	const char *ch[] = {"--channels", "2", "--compress", NULL};
	migrate_workload_with("workload=mixed mem=128M rate=50M wpct=50 verify=1 progress=250", "writes=", NULL,
			      ch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_idle, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_memtouch, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_hotset, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_stream, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_contig, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_alternate, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_seqread, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_mixed, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_hotset_two_vcpus, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_hotset_compressed, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_hotset_channels, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_mixed_channels_compressed, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
