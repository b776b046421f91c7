/*
 * End-to-end: migrations that cannot converge, cancelled ones, and a
 * migration over a UNIX socket.
 *
 * A guest that dirties its working set faster than a link capped with
 * --max-bandwidth can carry never gets below the downtime limit. With
 * --on-nonconverge cancel the user asked for the migration to be given up
 * after --max-rounds: migrate exits 1, the source guest keeps running
 * unharmed (progress continues, guest-verify answers ok) and the incoming
 * side never runs the guest. With --on-nonconverge switchover the same
 * guest is moved anyway, with a longer pause, and verifies on the other
 * side. migrate-cancel on the control socket in the middle of a migration
 * leaves the source running too, and the incoming side (without --once)
 * goes back to waiting and then accepts a complete migration.
 * --downtime-guard cancels instead of a late switchover and undoes a
 * stalled pause; --auto-converge slows the same guest until it converges.
 *
 * No assertion depends on timing; the link caps only make the migrations
 * last long enough (a few seconds) for the rounds and the cancel to happen.
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
	lm_live_setup("live-conv");
	return 0;
}

/* A working set of 16 MiB rewritten at 100 MB/s: every round over a 20 MB/s
 * link finds all of it dirty again. */
#define FAST_DIRTIER "workload=hotset wss=16M rate=100M verify=1 progress=250"

static void report_mig(const char *what, struct lm_live_mig *m)
{
	struct lm_live_figures f;
	lm_live_mig_figures(m, &f);
	print_message("      %s: exit %d, total %.0f ms, downtime %.0f ms, %.0f rounds, %.1f MiB\n",
		      what, m->rc, f.total_ms, f.downtime_ms, f.rounds, f.transferred / 1048576.0);
}

static void expect_status(struct lm_live_mig *m, const char *a, const char *b)
{
	char status[32] = "";
	lm_live_str(m->json, "status", status, sizeof(status));
	if (strcmp(status, a) && (!b || strcmp(status, b)))
		fprintf(stderr, "migrate exited %d, status '%s'\n%s%s", m->rc, status, m->json,
			m->errtext);
	assert_true(!strcmp(status, a) || (b && !strcmp(status, b)));
}

static void test_nonconverge_cancel_then_switchover(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", FAST_DIRTIER, NULL, 1);

	/* Cancel after three rounds: the destination (--once) gives up. */
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst1", "tcp", once), 0);
	struct lm_live_mig m;
	const char *cancel[] = {"--max-bandwidth", "20M", "--max-rounds", "3", "--on-nonconverge",
				"cancel",	   NULL};
	int rc = lm_live_migrate(&m, &src, dst.uri, cancel);
	report_mig("on-nonconverge=cancel", &m);
	assert_int_equal(rc, 1);
	expect_status(&m, "cancelled", "failed");
	double rounds = 0;
	assert_true(lm_live_num(m.json, "\"rounds\":", &rounds));
	assert_true(rounds >= 3);
	lm_live_mig_free(&m);
	assert_int_equal(lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S), 1);
	lm_live_expect_never_ran(&dst);
	assert_true(lm_live_count_file(dst.out, "migration failed", NULL, 0) >= 1);
	lm_live_expect_survived(&src, "writes=");

	/* The same guest, the same link, but switch over when it does not
	 * converge: it moves, with a longer pause, and verifies there. */
	assert_int_equal(lm_live_incoming(&dst, "dst2", "tcp", once), 0);
	const char *sw[] = {"--max-bandwidth", "20M", "--max-rounds", "3", "--on-nonconverge",
			    "switchover",      NULL};
	rc = lm_live_migrate(&m, &src, dst.uri, sw);
	report_mig("on-nonconverge=switchover", &m);
	assert_int_equal(rc, 0);
	expect_status(&m, "completed", NULL);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

/*
 * --downtime-guard keeps the limit a promise. A guest that cannot converge
 * over the capped link is not switched over late at --max-rounds: the
 * migration is cancelled and the guest runs on. A pause that stalls past
 * the limit (the test build of livemig sleeps 400 ms in it once,
 * LIVEMIG_TEST_STALL_AT) is undone: the guest resumes, pre-copy goes on,
 * the next switchover completes, the report counts one resume and the
 * guest verifies every page on the destination.
 */
static void test_downtime_guard(void **state)
{
	if (!lm_live_ready())
		skip();
	const char *hooks = getenv("LIVEMIG_HOOKS");
	if (!hooks || !*hooks)
		fail_msg("needs LIVEMIG_HOOKS (build/hooks/livemig, make check sets it)");
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", FAST_DIRTIER, NULL, 1);

	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst1", "tcp", once), 0);
	struct lm_live_mig m;
	const char *late[] = {"--max-bandwidth", "20M", "--max-rounds", "3", "--downtime-guard", NULL};
	int rc = lm_live_migrate(&m, &src, dst.uri, late);
	report_mig("guard, not converging", &m);
	assert_int_equal(rc, 1);
	expect_status(&m, "failed", "cancelled");
	assert_non_null(strstr(m.json, "downtime guard"));
	lm_live_mig_free(&m);
	assert_int_equal(lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S), 1);
	lm_live_expect_never_ran(&dst);
	lm_live_expect_survived(&src, "writes=");
	assert_int_equal(lm_live_vm_quit(&src), 0);

	/* The stalled pause: a source from the test build. */
	const char *plain = lm_live_set_livemig(hooks);
	setenv("LIVEMIG_TEST_STALL_AT", "sender-in-pause:400", 1);
	lm_live_expect_running(&src, "src2", "256M", "workload=hotset wss=32M rate=20M verify=1 progress=250",
			       NULL, 1);
	unsetenv("LIVEMIG_TEST_STALL_AT");
	lm_live_set_livemig(plain);
	assert_int_equal(lm_live_incoming(&dst, "dst2", "tcp", once), 0);
	const char *guard[] = {"--downtime-limit", "100", "--downtime-guard", NULL};
	rc = lm_live_migrate(&m, &src, dst.uri, guard);
	report_mig("guard, stalled pause", &m);
	assert_int_equal(rc, 0);
	expect_status(&m, "completed", NULL);
	double resumes = -1;
	assert_true(lm_live_num(m.json, "\"downtime-guard-resumes\":", &resumes));
	assert_true(resumes == 1);
	assert_true(lm_live_count_file(src.out, "stalled 400 ms at sender-in-pause", NULL, 0) == 1);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

/*
 * --auto-converge: the guest that outruns the 20 MB/s link is slowed
 * (cpu-throttle-initial 20%, +10% per round) until what it dirties fits;
 * the migration then completes before --max-rounds without a forced
 * switchover, the report names the throttle reached, and the guest
 * verifies every page on the destination, running at full speed there.
 */
static void test_auto_converge(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", FAST_DIRTIER, NULL, 1);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", once), 0);
	struct lm_live_mig m;
	const char *ac[] = {"--max-bandwidth", "20M", "--max-rounds", "30", "--on-nonconverge", "cancel",
			    "--auto-converge", NULL};
	int rc = lm_live_migrate(&m, &src, dst.uri, ac);
	report_mig("auto-converge", &m);
	assert_int_equal(rc, 0);
	expect_status(&m, "completed", NULL);
	double pct = 0, rounds = 0;
	assert_true(lm_live_num(m.json, "\"cpu-throttle-percentage\":", &pct));
	print_message("      cpu-throttle-percentage %.0f\n", pct);
	assert_true(pct >= 20 && pct <= 99);
	assert_true(lm_live_num(m.json, "\"rounds\":", &rounds));
	assert_true(rounds < 30);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

static void test_cancel_midway(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", FAST_DIRTIER, NULL, 1);
	/* No --once: after the cancelled stream the incoming side waits for
	 * the next migration. */
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", NULL), 0);
	struct lm_live_mig m;
	const char *slow[] = {"--max-bandwidth", "20M", "--max-rounds", "1000", NULL};
	assert_int_equal(lm_live_mig_start(&m, &src, dst.uri, slow), 0);
	assert_true(lm_live_wait_migration_active(&src, 1 << 20));
	char reply[4096];
	assert_int_equal(
	    lm_live_vm_cmd(&src, "{\"execute\":\"migrate-cancel\"}", reply, sizeof(reply)), 0);
	int rc = lm_live_mig_finish(&m);
	report_mig("migrate-cancel", &m);
	assert_int_equal(rc, 1);
	expect_status(&m, "cancelled", NULL);
	lm_live_mig_free(&m);
	/* query-migrate keeps the last migration's outcome. */
	assert_int_equal(
	    lm_live_vm_cmd(&src, "{\"execute\":\"query-migrate\"}", reply, sizeof(reply)), 0);
	assert_non_null(strstr(reply, "\"cancelled\""));
	lm_live_expect_survived(&src, "writes=");

	lm_live_expect_waiting_again(&dst, 0);

	/* The same destination now takes a full migration (the link cap is
	 * a parameter of the source VM that stays set: lift it). */
	const char *fast[] = {"--max-bandwidth", "0", "--max-rounds", "30", NULL};
	rc = lm_live_migrate(&m, &src, dst.uri, fast);
	report_mig("retry", &m);
	assert_int_equal(rc, 0);
	expect_status(&m, "completed", NULL);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

static void test_timeout_cancels(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", FAST_DIRTIER, NULL, 1);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", once), 0);
	struct lm_live_mig m;
	/* It cannot converge and may run 1000 rounds: migrate's own
	 * --timeout cancels it. */
	const char *opts[] = {
	    "--max-bandwidth", "20M", "--max-rounds", "1000", "--timeout", "2", NULL};
	int rc = lm_live_migrate(&m, &src, dst.uri, opts);
	report_mig("--timeout 2", &m);
	assert_int_equal(rc, 1);
	expect_status(&m, "cancelled", NULL);
	lm_live_mig_free(&m);
	assert_int_equal(lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S), 1);
	lm_live_expect_never_ran(&dst);
	lm_live_expect_survived(&src, "writes=");
	assert_int_equal(lm_live_vm_quit(&src), 0);
}

static void test_unix_uri(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M",
			       "workload=hotset wss=32M rate=50M verify=1 progress=250", NULL, 1);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "unix", once), 0);
	assert_true(!strncmp(dst.uri, "unix:", 5));
	struct lm_live_mig m;
	int rc = lm_live_migrate(&m, &src, dst.uri, NULL);
	report_mig(dst.uri, &m);
	if (rc != 0)
		fprintf(stderr, "%s%s", m.json, m.errtext);
	assert_int_equal(rc, 0);
	expect_status(&m, "completed", NULL);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_nonconverge_cancel_then_switchover,
				      lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_downtime_guard, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_auto_converge, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_cancel_midway, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_timeout_cancels, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_unix_uri, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
