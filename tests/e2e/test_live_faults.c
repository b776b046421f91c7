/*
 * End-to-end: faults during a live migration.
 *
 * The destination is killed with SIGKILL in the middle of a migration; the
 * connection is cut by a proxy after a chosen number of bytes (during the
 * handshake, in the first round, in a later round), or one channel's connection
 * is; the destination stops
 * answering (SIGSTOP) and migrate's --timeout gives up; garbage is sent to
 * the incoming port; the source is killed. Each time the source guest must keep running unharmed
 * (query-status running, progress continues, a guest-verify answers ok, no
 * FAIL on its console), the destination must never run the guest, and a
 * retry to a fresh (or the same, still waiting) destination must succeed
 * and verify there.
 *
 * The link is capped with --max-bandwidth and the guest dirties faster than
 * the cap, so that the migration is still running when the fault comes; no
 * assertion depends on timing.
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
	lm_live_setup("live-faults");
	return 0;
}

/* A working set of 16 MiB rewritten at 100 MB/s never converges over a
 * 20 MB/s link: the migration lasts until something ends it. */
#define FAST_DIRTIER "workload=hotset wss=16M rate=100M verify=1 progress=250"
static const char *const slow_link[] = {
    "--max-bandwidth", "20M", "--max-rounds", "100000", "--on-nonconverge", "cancel", NULL};
/* The parameters stay set on the source VM: a retry lifts the cap. */
static const char *const fast_link[] = {
    "--max-bandwidth", "0", "--max-rounds", "30", "--on-nonconverge", "switchover", NULL};

/* The source (FAST_DIRTIER, its workload running) and an incoming side
 * without --once, which waits for another migration after a broken one. */
static void start_pair(struct lm_live_vm *src, struct lm_live_vm *dst, const char *dst_name)
{
	lm_live_expect_running(src, "src", "256M", FAST_DIRTIER, NULL, 1);
	assert_int_equal(lm_live_incoming(dst, dst_name, "tcp", NULL), 0);
}

static void report_mig(const char *what, struct lm_live_mig *m)
{
	struct lm_live_figures f;
	char status[32] = "";
	lm_live_str(m->json, "status", status, sizeof(status));
	lm_live_mig_figures(m, &f);
	print_message("      %s: exit %d, %s, total %.0f ms, %.0f rounds, %.1f MiB\n", what, m->rc,
		      status, f.total_ms, f.rounds, f.transferred / 1048576.0);
}

/* The migration ended without completing; the source survived it. */
static void expect_failed_and_survived(struct lm_live_mig *m, struct lm_live_vm *src)
{
	char status[32] = "";
	lm_live_str(m->json, "status", status, sizeof(status));
	if (m->rc != 1 || (strcmp(status, "failed") && strcmp(status, "cancelled")))
		fprintf(stderr, "migrate exited %d, status '%s'\n%s%s", m->rc, status, m->json,
			m->errtext);
	assert_int_equal(m->rc, 1);
	assert_true(!strcmp(status, "failed") || !strcmp(status, "cancelled"));
	lm_live_expect_survived(src, "writes=");
}

/* A complete migration from src to dst, checked on both sides; dst quits. */
static void migrate_ok(struct lm_live_vm *src, struct lm_live_vm *dst)
{
	struct lm_live_mig m;
	int rc = lm_live_migrate(&m, src, dst->uri, fast_link);
	report_mig("retry", &m);
	if (rc != 0) {
		fprintf(stderr, "%s%s", m.json, m.errtext);
		lm_live_dump(dst->out, 4096);
	}
	assert_int_equal(rc, 0);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(src, dst, "writes=");
	assert_int_equal(lm_live_vm_quit(dst), 0);
}

/* Starts a migration from src to dst over the slow link and, well into the
 * copy (past the first round's first megabytes), kills victim (src or dst)
 * with SIGKILL; migrate then ends. */
static void kill_midway(struct lm_live_mig *m, struct lm_live_vm *src, struct lm_live_vm *dst,
			struct lm_live_vm *victim, const char *what)
{
	assert_int_equal(lm_live_mig_start(m, src, dst->uri, slow_link), 0);
	assert_true(lm_live_wait_migration_active(src, 4 << 20));
	lm_live_kill(victim->pid, SIGKILL);
	assert_int_equal(lm_live_wait(victim->pid, LM_LIVE_DEADLINE_S), 128 + SIGKILL);
	lm_live_mig_finish(m);
	report_mig(what, m);
}

static void test_kill_destination(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	start_pair(&src, &dst, "dst1");
	struct lm_live_mig m;
	kill_midway(&m, &src, &dst, &dst, "destination killed");
	expect_failed_and_survived(&m, &src);
	lm_live_mig_free(&m);
	lm_live_expect_never_ran(&dst);

	assert_int_equal(lm_live_incoming(&dst, "dst2", "tcp", NULL), 0);
	migrate_ok(&src, &dst);
}

static void test_cut_connection(void **state)
{
	if (!lm_live_ready())
		skip();
	/* During the handshake, in the first round, and in a later round
	 * (the working set is 16 MiB: past 24 MiB the first round is over). */
	static const uint64_t cuts[] = {64, 4 << 20, 24 << 20};
	struct lm_live_vm src, dst;
	/* One destination for all: after each broken stream it must say why
	 * and wait for the next migration, never running the guest. */
	start_pair(&src, &dst, "dst");
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		struct lm_live_proxy *px;
		char via[128];
		assert_int_equal(lm_live_proxy_start(&px, dst.uri, cuts[i], via, sizeof(via)), 0);
		struct lm_live_mig m;
		lm_live_migrate(&m, &src, via, slow_link);
		bool cut;
		uint64_t fwd = lm_live_proxy_forwarded(px, &cut);
		char what[64];
		snprintf(what, sizeof(what), "cut after %llu bytes", (unsigned long long)cuts[i]);
		report_mig(what, &m);
		assert_true(cut);
		assert_int_equal(fwd, cuts[i]);
		expect_failed_and_survived(&m, &src);
		lm_live_mig_free(&m);
		lm_live_proxy_stop(px);
		lm_live_expect_waiting_again(&dst, (int)i);
	}
	assert_int_equal(lm_live_count_file(dst.out, "migration failed", NULL, 0), 3);
	migrate_ok(&src, &dst);
}

/* Channels (multifd): one channel's connection is cut, at its first bytes
 * (the CHANNEL frame), in the first round and in a later one. Each time the
 * migration fails naming that channel, the source runs on, the destination
 * waits again; then a migration with the same channels succeeds. */
static void test_cut_channel(void **state)
{
	if (!lm_live_ready())
		skip();
	static const struct {
		unsigned channel;
		uint64_t after;
	} cuts[] = {{1, 8}, {0, 2 << 20}, {2, 12 << 20}};
	static const char *const slow3[] = {"--channels",	"3",	  "--max-bandwidth", "20M",	"--max-rounds",
					    "100000",		"--on-nonconverge", "cancel", NULL};
	static const char *const fast3[] = {"--channels",	"3",	      "--max-bandwidth", "0",
					    "--max-rounds",	"30",	      "--on-nonconverge", "switchover",
					    NULL};
	struct lm_live_vm src, dst;
	start_pair(&src, &dst, "dst");
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		struct lm_live_proxy *px;
		char via[128];
		/* Connection 0 is the main one; channel k is connection k + 1. */
		assert_int_equal(
		    lm_live_proxy_start_conn(&px, dst.uri, cuts[i].channel + 1, cuts[i].after, via, sizeof(via)), 0);
		struct lm_live_mig m;
		lm_live_migrate(&m, &src, via, slow3);
		bool cut;
		lm_live_proxy_forwarded(px, &cut);
		char what[96], name[32];
		snprintf(what, sizeof(what), "channel %u cut after %llu bytes", cuts[i].channel,
			 (unsigned long long)cuts[i].after);
		report_mig(what, &m);
		print_message("        %s", m.errtext);
		assert_true(cut);
		expect_failed_and_survived(&m, &src);
		snprintf(name, sizeof(name), "channel %u", cuts[i].channel);
		assert_non_null(strstr(m.errtext, name));
		lm_live_mig_free(&m);
		lm_live_proxy_stop(px);
		lm_live_expect_waiting_again(&dst, (int)i);
	}
	struct lm_live_mig m;
	int rc = lm_live_migrate(&m, &src, dst.uri, fast3);
	report_mig("retry with 3 channels", &m);
	if (rc != 0)
		fprintf(stderr, "%s%s", m.json, m.errtext);
	assert_int_equal(rc, 0);
	double ch = 0;
	assert_true(lm_live_num(m.json, "\"multifd-channels\":", &ch));
	assert_true(ch == 3);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

static void test_stopped_destination(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	start_pair(&src, &dst, "dst1");
	struct lm_live_mig m;
	const char *opts[] = {
	    "--max-bandwidth", "20M", "--max-rounds", "100000", "--timeout", "4", NULL};
	assert_int_equal(lm_live_mig_start(&m, &src, dst.uri, opts), 0);
	assert_true(lm_live_wait_migration_active(&src, 1 << 20));
	/* The destination hangs: the socket buffers fill and the sender
	 * blocks; the cancel from --timeout must still bring the source
	 * back. */
	lm_live_kill(dst.pid, SIGSTOP);
	lm_live_mig_finish(&m);
	report_mig("destination stopped, --timeout 4", &m);
	expect_failed_and_survived(&m, &src);
	lm_live_mig_free(&m);
	lm_live_kill(dst.pid, SIGKILL);
	lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S);
	lm_live_expect_never_ran(&dst);

	assert_int_equal(lm_live_incoming(&dst, "dst2", "tcp", NULL), 0);
	migrate_ok(&src, &dst);
}

/* The other way round: the source dies mid-migration. The destination
 * holds an incomplete stream and must not run the guest; it waits for the
 * next migration. */
static void test_kill_source(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	start_pair(&src, &dst, "dst");
	struct lm_live_mig m;
	kill_midway(&m, &src, &dst, &src, "source killed");
	assert_int_equal(m.rc, 1);
	lm_live_mig_free(&m);
	lm_live_expect_waiting_again(&dst, 0);

	/* A new source, the same destination. */
	struct lm_live_vm src2;
	lm_live_expect_running(&src2, "src2", "256M", FAST_DIRTIER, NULL, 1);
	migrate_ok(&src2, &dst);
}

static void test_garbage(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst, once;
	start_pair(&src, &dst, "dst");

	/* Random bytes, a line of text, and an empty connection. */
	static uint8_t junk[1 << 16];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < sizeof(junk); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		junk[i] = (uint8_t)x;
	}
	static const char text[] = "GET / HTTP/1.0\r\n\r\n";
	assert_int_equal(lm_live_send_garbage(dst.uri, junk, sizeof(junk)), 0);
	assert_true(lm_live_wait_line(dst.out, "waiting for another migration", 0, NULL, 0, dst.pid,
				      LM_LIVE_DEADLINE_S));
	assert_int_equal(lm_live_send_garbage(dst.uri, text, sizeof(text) - 1), 0);
	assert_true(lm_live_wait_line(dst.out, "waiting for another migration", 1, NULL, 0, dst.pid,
				      LM_LIVE_DEADLINE_S));
	/* An empty connection is no migration at all (it never became one:
	 * incoming waits for a connection's first bytes), so not a failure. */
	assert_int_equal(lm_live_send_garbage(dst.uri, "", 0), 0);
	assert_true(lm_live_wait_line(dst.out, "a connection closed before sending anything", 0, NULL, 0,
				      dst.pid, LM_LIVE_DEADLINE_S));
	assert_true(lm_live_alive(dst.pid));
	assert_int_equal(lm_live_count_file(dst.out, "migration failed", NULL, 0), 2);
	lm_live_expect_never_ran(&dst);

	/* With --once the incoming side exits 1 instead. */
	const char *o[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&once, "once", "tcp", o), 0);
	assert_int_equal(lm_live_send_garbage(once.uri, junk, sizeof(junk)), 0);
	assert_int_equal(lm_live_wait(once.pid, LM_LIVE_DEADLINE_S), 1);
	assert_true(lm_live_count_file(once.out, "migration failed", NULL, 0) == 1);
	lm_live_expect_never_ran(&once);

	/* The source was never involved and runs on; the destination that
	 * refused the garbage takes the real migration. */
	lm_live_expect_survived(&src, "writes=");
	migrate_ok(&src, &dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_kill_destination, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_cut_connection, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_cut_channel, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_stopped_destination, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_kill_source, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_garbage, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
