/*
 * End-to-end: post-copy between two livemig processes (docs/stream.md
 * 3.14), with real KVM guests.
 *
 * Each workload is migrated with --postcopy over a capped link with a
 * downtime limit it cannot meet, switched after round 1: the destination
 * runs the guest at once with the pages dirty at the switch still at the
 * source. The guest checks all of its memory as soon as it runs there
 * (the incoming side asks it to), so its vCPU touches missing pages while
 * the push runs; the check must pass, the digest too (status completed),
 * and the guest's progress must go on. With --postcopy alone the policy
 * switches by itself when the guest outruns the link. A connection cut in
 * post-copy (a proxy between the two, stopped) pauses it on both sides;
 * `livemig migrate --resume` through a new proxy goes on, 20 times over
 * (the last to the address migrate-recover opened on the destination),
 * and the guest verifies. Workloads that write little are switched as
 * well (--postcopy-after switches whether or not the pause would fit). A destination killed in post-copy leaves
 * the source paused (postcopy-paused, exit 3) with its copy intact: given
 * up with `livemig cancel`, `cont` runs it and it verifies.
 *
 * No assertion depends on timing; the link caps make the post-copy last
 * long enough for the guest to wait on pages and for the kill to land.
 */
#include <setjmp.h>
#include <signal.h>
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
	lm_live_setup("live-pc");
	return 0;
}

static void report_mig(const char *what, struct lm_live_mig *m)
{
	struct lm_live_figures f;
	lm_live_mig_figures(m, &f);
	double pending = 0, requests = 0;
	lm_live_num(m->json, "\"postcopy-pending\":", &pending);
	lm_live_num(m->json, "\"postcopy-requests\":", &requests);
	print_message("      %s: exit %d, total %.0f ms, downtime %.1f ms, %.0f rounds, %.1f MiB, %.0f pages "
		      "after the switch, %.0f asked for\n",
		      what, m->rc, f.total_ms, f.downtime_ms, f.rounds, f.transferred / 1048576.0, pending, requests);
}

static void expect_postcopy_done(struct lm_live_mig *m, struct lm_live_vm *src, struct lm_live_vm *dst)
{
	char status[32] = "";
	lm_live_str(m->json, "status", status, sizeof(status));
	if (m->rc != 0 || strcmp(status, "completed") || !strstr(m->json, "\"postcopy\":true")) {
		fprintf(stderr, "migrate exited %d, status '%s'\n%s%s", m->rc, status, m->json, m->errtext);
		lm_live_dump(src->out, 4096);
		lm_live_dump(dst->out, 4096);
	}
	assert_int_equal(m->rc, 0);
	assert_string_equal(status, "completed");
	assert_non_null(strstr(m->json, "\"postcopy\":true"));
	double pending = -1;
	assert_true(lm_live_num(m->json, "\"postcopy-pending\":", &pending));
	assert_true(pending >= 0);
}

static void postcopy_workload(const char *append, const char *key)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", append, NULL, 3);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", once), 0);
	struct lm_live_mig m;
	const char *opts[] = {"--max-bandwidth", "20M", "--downtime-limit", "1", "--postcopy", "--postcopy-after",
			      "1", NULL};
	lm_live_migrate(&m, &src, dst.uri, opts);
	report_mig(append, &m);
	expect_postcopy_done(&m, &src, &dst);
	lm_live_mig_free(&m);
	/* The destination said what post-copy did: once, after its receive
	 * returned, which may be just after the source's migrate did. */
	char line[512];
	assert_true(lm_live_wait_line(dst.out, "livemig incoming: post-copy:", 0, line, sizeof(line), dst.pid,
				      LM_LIVE_DEADLINE_S));
	assert_true(lm_live_count_file(dst.out, "livemig incoming: post-copy:", NULL, 0) == 1);
	lm_live_expect_switchover(&src, &dst, key);
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

static void test_hotset(void **state)
{
	postcopy_workload("workload=hotset wss=64M rate=100M verify=1 progress=250", "writes=");
}

static void test_stream(void **state)
{
	postcopy_workload("workload=stream mem=128M rate=50M verify=1 progress=250", "writes=");
}

static void test_mixed(void **state)
{
	postcopy_workload("workload=mixed mem=128M rate=50M wpct=50 verify=1 progress=250", "writes=");
}

static void test_contig(void **state)
{
	postcopy_workload("workload=contig wss=32M period=300 verify=1 progress=250", "writes=");
}

/* The workloads that write little or nothing (post-copy is forced by
 * --postcopy-after, whether or not the pause would fit). */
static void test_idle(void **state)
{
	postcopy_workload("workload=idle verify=1 progress=250", "t=");
}

static void test_memtouch(void **state)
{
	postcopy_workload("workload=memtouch mem=128M verify=1 progress=250", "t=");
}

static void test_alternate(void **state)
{
	postcopy_workload("workload=alternate wss=32M period=300 verify=1 progress=250", "writes=");
}

static void test_seqread(void **state)
{
	postcopy_workload("workload=seqread mem=64M rate=50M verify=1 progress=250", "reads=");
}

/* --postcopy alone: the guest outruns the link, the policy switches by
 * itself after a round or two instead of going on for 30. */
static void test_policy_switches(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", "workload=hotset wss=16M rate=100M verify=1 progress=250", NULL,
			       3);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", once), 0);
	struct lm_live_mig m;
	const char *opts[] = {"--max-bandwidth", "20M", "--postcopy", NULL};
	lm_live_migrate(&m, &src, dst.uri, opts);
	report_mig("--postcopy, the policy decides", &m);
	expect_postcopy_done(&m, &src, &dst);
	double rounds = 0;
	assert_true(lm_live_num(m.json, "\"rounds\":", &rounds));
	assert_true(rounds <= 3);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

/* Until the source's query-migrate says status (the reply left in reply). */
static void wait_migration_status(struct lm_live_vm *src, const char *status, char *reply, size_t len)
{
	char want[48];
	snprintf(want, sizeof(want), "\"%s\"", status);
	for (double end = lm_live_now() + LM_LIVE_DEADLINE_S;; lm_live_msleep(10)) {
		if (lm_live_vm_cmd(src, "{\"execute\":\"query-migrate\"}", reply, len) == 0 && strstr(reply, want))
			return;
		if (lm_live_now() > end)
			fail_msg("the migration never became %s: %s", status, reply);
	}
}

static void wait_postcopy_active(struct lm_live_vm *src)
{
	char reply[8192];
	wait_migration_status(src, "postcopy-active", reply, sizeof(reply));
}

/*
 * The destination dies in post-copy: the source cannot finish and must
 * not resume by itself (the guest ran on over there), but its paused copy
 * is the whole guest as it was at the switch: `cont` runs it, and it
 * verifies every page.
 */
static void destination_killed(bool at_commit)
{
	if (!lm_live_ready())
		skip();
	const char *hooks = getenv("LIVEMIG_HOOKS");
	if (at_commit && !(hooks && *hooks))
		fail_msg("needs LIVEMIG_HOOKS (build/hooks/livemig, make check sets it)");
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", "workload=hotset wss=64M rate=100M verify=1 progress=250", NULL,
			       3);
	const char *once[] = {"--once", NULL};
	const char *plain = NULL;
	if (at_commit) {
		/* The test build, which dies where LIVEMIG_TEST_KILL_AT says:
		 * after reading COMMIT, before answering COMMITTED. */
		plain = lm_live_set_livemig(hooks);
		setenv("LIVEMIG_TEST_KILL_AT", "receiver-after-commit", 1);
	}
	int irc = lm_live_incoming(&dst, "dst", "tcp", once);
	if (at_commit) {
		unsetenv("LIVEMIG_TEST_KILL_AT");
		lm_live_set_livemig(plain);
	}
	assert_int_equal(irc, 0);
	struct lm_live_mig m;
	const char *opts[] = {"--max-bandwidth", "5M", "--downtime-limit", "1", "--postcopy", "--postcopy-after",
			      "1", NULL};
	assert_int_equal(lm_live_mig_start(&m, &src, dst.uri, opts), 0);
	char reply[8192];
	if (!at_commit) {
		wait_postcopy_active(&src);
		lm_live_kill(dst.pid, SIGKILL);
	}
	lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S);
	int rc = lm_live_mig_finish(&m);
	report_mig(at_commit ? "destination killed before COMMITTED" : "destination killed in post-copy", &m);
	if (at_commit)
		assert_true(lm_live_count_file(dst.out, "killed at receiver-after-commit", NULL, 0) == 1);
	char status[32] = "";
	lm_live_str(m.json, "status", status, sizeof(status));
	if (rc != 3 || strcmp(status, "postcopy-paused"))
		fprintf(stderr, "migrate exited %d, status '%s'\n%s%s", rc, status, m.json, m.errtext);
	assert_int_equal(rc, 3);
	assert_string_equal(status, "postcopy-paused");
	assert_non_null(strstr(m.json, "waiting for `migrate --resume`"));
	assert_non_null(strstr(m.errtext, "livemig migrate --resume"));
	lm_live_mig_free(&m);
	/* Nobody will reconnect: give up the post-copy. */
	assert_true(lm_live_alive(src.pid));
	assert_int_equal(lm_live_vm_cmd(&src, "{\"execute\":\"migrate-cancel\"}", reply, sizeof(reply)), 0);
	wait_migration_status(&src, "failed", reply, sizeof(reply));
	assert_non_null(strstr(reply, "post-copy broke off with"));
	/* Paused, not resumed by itself. */
	assert_int_equal(lm_live_vm_cmd(&src, "{\"execute\":\"query-status\"}", reply, sizeof(reply)), 0);
	if (!strstr(reply, "\"postmigrate\""))
		fail_msg("the source is not paused in postmigrate: %s", reply);
	double before = -1;
	lm_live_vm_last_progress(&src, "writes=", &before);
	assert_int_equal(lm_live_vm_cmd(&src, "{\"execute\":\"cont\"}", reply, sizeof(reply)), 0);
	/* Its copy is whole: it runs on and checks every page. */
	assert_true(lm_live_vm_wait_progress_above(&src, "writes=", before));
	assert_int_equal(lm_live_vm_verify(&src), 1);
	assert_int_equal(lm_live_count_file(src.console, "FAIL", NULL, 0), 0);
	assert_int_equal(lm_live_vm_quit(&src), 0);
}

static void test_destination_killed(void **state)
{
	destination_killed(false);
}

/* The same where a kill found it once by chance: between COMMIT and the
 * destination's COMMITTED. COMMIT was the promise, so this is a break of
 * the post-copy like any other (postcopy-paused), not a failure. */
static void test_destination_killed_at_commit(void **state)
{
	destination_killed(true);
}

/*
 * Recovery (docs/stream.md 3.15), 20 cuts: the post-copy goes through a
 * proxy that is stopped once post-copy runs; then each `livemig migrate
 * --resume` goes through a new proxy that cuts after a different number
 * of bytes (in page data, in headers), 18 more times; `livemig migrate`
 * exits 3 saying how to resume each time. The last recovery goes to the
 * address the destination's migrate-recover opened (QEMU's command) and
 * completes. The guest, which waited through the cuts, verifies.
 */
#define CUTS 20
static void test_recovery(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", "workload=hotset wss=64M rate=100M verify=1 progress=250", NULL,
			       3);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", once), 0);
	char puri[64], reply[8192];
	struct lm_live_proxy *px;
	assert_int_equal(lm_live_proxy_start(&px, dst.uri, UINT64_MAX, puri, sizeof(puri)), 0);
	struct lm_live_mig m;
	const char *opts[] = {"--max-bandwidth", "20M", "--downtime-limit", "1", "--postcopy", "--postcopy-after",
			      "1", NULL};
	assert_int_equal(lm_live_mig_start(&m, &src, puri, opts), 0);
	wait_postcopy_active(&src);
	lm_live_msleep(100);
	lm_live_proxy_stop(px); /* the first cut */
	px = NULL;
	const char *resume[] = {"--resume", NULL};
	for (int cut = 1;; cut++) {
		int rc = lm_live_mig_finish(&m);
		char status[32] = "";
		lm_live_str(m.json, "status", status, sizeof(status));
		if (cut <= CUTS) {
			if (rc != 3 || strcmp(status, "postcopy-paused") || !strstr(m.errtext, "--resume"))
				fprintf(stderr, "cut %d: migrate exited %d, status '%s'\n%s%s", cut, rc, status, m.json,
					m.errtext);
			assert_int_equal(rc, 3);
			assert_string_equal(status, "postcopy-paused");
		}
		if (cut > CUTS) {
			report_mig("after 20 cuts", &m);
			expect_postcopy_done(&m, &src, &dst);
			double rec = -1;
			assert_true(lm_live_num(m.json, "\"postcopy-recoveries\":", &rec));
			print_message("      %.0f recoveries\n", rec);
			assert_true(rec == CUTS);
			lm_live_mig_free(&m);
			break;
		}
		lm_live_mig_free(&m);
		lm_live_proxy_stop(px);
		px = NULL;
		if (cut < CUTS) {
			/* Cut again after this many bytes towards the destination. */
			uint64_t after = 65536 + (uint64_t)cut * 40961;
			assert_int_equal(lm_live_proxy_start(&px, dst.uri, after, puri, sizeof(puri)), 0);
		} else {
			/* The destination opens another address for the last one. */
			snprintf(puri, sizeof(puri), "unix:%s", lm_live_path("recover.sock"));
			char req[256];
			snprintf(req, sizeof(req), "{\"execute\":\"migrate-recover\",\"arguments\":{\"uri\":\"%s\"}}",
				 puri);
			for (double end = lm_live_now() + LM_LIVE_DEADLINE_S;; lm_live_msleep(20)) {
				assert_true(lm_live_now() < end);
				assert_int_equal(lm_live_vm_cmd(&dst, req, reply, sizeof(reply)), 0);
				if (strstr(reply, "\"return\""))
					break;
				/* Not paused yet on its side: it notices the cut itself. */
				assert_non_null(strstr(reply, "No post-copy is paused here"));
			}
		}
		assert_int_equal(lm_live_mig_start(&m, &src, puri, resume), 0);
	}
	assert_true(lm_live_count_file(dst.out, "the source reconnected", NULL, 0) == CUTS);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_hotset, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_stream, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_mixed, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_contig, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_idle, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_memtouch, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_alternate, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_seqread, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_policy_switches, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_destination_killed, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_destination_killed_at_commit, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_recovery, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
