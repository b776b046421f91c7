/*
 * Live migration of a ballooned guest, end to end with the livemig command
 * (env LIVEMIG) and the guest image (env GUEST_ELF): a 4 GiB guest running
 * a workload in 512 MiB gives 3 GiB to its balloon (must-tell-host
 * accepted), then migrates A -> B -> C with skip-balloon on, and A -> B with
 * it off (--no-skip-balloon).
 *
 * What is asserted: every migration completes and the guest's own check
 * passes at the destination; with skip-balloon on, query-migrate says so,
 * counts the 786432 ballooned pages, the pages scanned leave them out, and
 * C still knows them (query-balloon's ballooned-pages) after two hops;
 * with it off, query-migrate says skip-balloon false. The figures (total
 * time, bytes on the wire, pages scanned, stop-and-copy bytes) are printed
 * for docs/bench.md, never asserted. Deadlines only turn a hang into a
 * failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "support/live.h"
#include "support/live_assert.h"

#define DEADLINE_S 120
#define MIB (1ull << 20)
#define BALLOON_PAGES 786432ull /* 3 GiB */

/* Occurrences of needle in the file, in a line still being written too. */
static int count(const char *path, const char *needle)
{
	char *t = lm_live_slurp(path);
	int n = 0;
	for (const char *p = t; (p = strstr(p, needle)); p++)
		n++;
	free(t);
	return n;
}

static bool wait_text(const char *path, const char *needle, int have)
{
	double end = lm_live_now() + DEADLINE_S;
	while (lm_live_now() < end) {
		if (count(path, needle) > have)
			return true;
		lm_live_msleep(100);
	}
	lm_live_dump(path, SIZE_MAX);
	return false;
}

/* ---- control socket ---- */

static uint64_t ballooned(struct lm_live_ctl *c, bool *mth)
{
	char r[4096];
	lm_live_expect_ok(c, "{\"execute\":\"query-balloon\"}", r, sizeof(r));
	if (mth)
		*mth = lm_live_json_u64(r, "must-tell-host");
	return lm_live_json_u64(r, "ballooned-pages");
}

static void wait_ballooned(struct lm_live_ctl *c, uint64_t pages)
{
	double end = lm_live_now() + DEADLINE_S;
	while (ballooned(c, NULL) != pages) {
		assert_true(lm_live_now() < end);
		lm_live_msleep(200);
	}
}

/* Asks the guest to check all its pages; waits for "verify ok". */
static void verify(struct lm_live_ctl *c, const char *console)
{
	char r[4096];
	int have = count(console, "verify ok"), fails = count(console, "FAIL");
	lm_live_expect_ok(c, "{\"execute\":\"guest-verify\"}", r, sizeof(r));
	assert_true(wait_text(console, "verify ok", have));
	assert_int_equal(count(console, "FAIL"), fails);
}

/* ---- the steps ---- */

/* A 4 GiB guest, workload in 512 MiB, 3 GiB in the balloon. */
static void start_source(struct lm_live_vm *v, const char *name)
{
	assert_int_equal(
	    lm_live_run(v, name, "4G",
			"workload=hotset mem=512M wss=64M rate=20M verify=1 progress=0", NULL),
	    0);
	assert_true(wait_text(v->console, "verify ok", 0)); /* set up and checked */
	struct lm_live_ctl *c = lm_live_expect_vm_ctl(v);
	lm_live_expect_balloon(c, 1024 * MIB);
	wait_ballooned(c, BALLOON_PAGES);
	bool mth;
	ballooned(c, &mth);
	assert_true(mth);
	verify(c, v->console);
}

/* An incoming side (--once) listening on unix:TMP/NAME.mig (v->uri). */
static void start_incoming(struct lm_live_vm *v, const char *name)
{
	const char *once[] = {"--once", NULL};
	int r = lm_live_incoming(v, name, "unix", once);
	if (r < 0)
		lm_live_dump(v->out, SIZE_MAX);
	assert_int_equal(r, 0);
}

struct figures {
	uint64_t total_ms, transferred, scanned, stop_copy, ballooned, downtime_ms, table_bytes;
	bool skip;
};

/* livemig migrate from v to uri (with channels, or NULL); the JSON report
 * is parsed. */
static void migrate_ch(struct lm_live_vm *v, const char *uri, bool skip, const char *channels,
		       const char *report, struct figures *f)
{
	const char *args[] = { "migrate", "--control", v->sock, "--to", uri, "--json", "-q",
			       "--channels", channels ? channels : "1",
			       skip ? NULL : "--no-skip-balloon", NULL };
	pid_t pid = lm_live_expect_spawn(report, args);
	int rc = lm_live_wait(pid, DEADLINE_S);
	if (rc != 0)
		lm_live_dump(report, SIZE_MAX);
	assert_int_equal(rc, 0);
	char *t = lm_live_slurp(report);
	f->skip = lm_live_json_u64(t, "skip-balloon");
	f->total_ms = lm_live_json_u64(t, "total-time");
	f->downtime_ms = lm_live_json_u64(t, "downtime");
	f->transferred = lm_live_json_u64(t, "transferred");
	f->scanned = lm_live_json_u64(t, "pages-scanned");
	f->stop_copy = lm_live_json_u64(t, "stop-copy-bytes");
	f->ballooned = lm_live_json_u64(t, "ballooned");
	f->table_bytes = lm_live_json_u64(t, "table-bytes");
	if (channels)
		assert_int_equal(lm_live_json_u64(t, "multifd-channels"), (uint64_t)atoi(channels));
	free(t);
	/* The source exits once the guest runs at the destination. */
	lm_live_vm_ctl_close(v);
	assert_int_equal(lm_live_wait(v->pid, DEADLINE_S), LM_CLI_EXIT_MIGRATED);
	fprintf(stderr,
		"  %s: skip-balloon %s, total %llu ms, downtime %llu ms, %.1f MiB on the wire, "
		"%llu pages scanned, stop-and-copy %.1f KiB, ballooned %llu, skip map %llu bytes\n",
		report, f->skip ? "on" : "off", (unsigned long long)f->total_ms, (unsigned long long)f->downtime_ms,
		(double)f->transferred / MIB, (unsigned long long)f->scanned, (double)f->stop_copy / 1024,
		(unsigned long long)f->ballooned, (unsigned long long)f->table_bytes);
}

static void migrate(struct lm_live_vm *v, const char *uri, bool skip, const char *report, struct figures *f)
{
	migrate_ch(v, uri, skip, NULL, report, f);
}

static void arrived(struct lm_live_vm *v)
{
	verify(lm_live_expect_vm_ctl(v), v->console);
}

static void quit(struct lm_live_vm *v)
{
	char r[4096];
	lm_live_expect_ok(lm_live_expect_vm_ctl(v), "{\"execute\":\"quit\"}", r, sizeof(r));
	lm_live_vm_ctl_close(v);
	assert_int_equal(lm_live_wait(v->pid, DEADLINE_S), 0);
}

/* A -> B -> C with skip-balloon on: C still knows the ballooned pages.
 * B -> C goes over three channels: the skip map's TABLE records wait for
 * each round's pages on them (docs/stream.md 3.16). */
static void test_skip_on_a_b_c(void **state)
{
	(void)state;
	struct lm_live_vm a, b, c;
	struct figures f1, f2;
	start_source(&a, "a");
	start_incoming(&b, "b");
	migrate(&a, b.uri, true, lm_live_path("a-b.json"), &f1);
	assert_true(f1.skip);
	assert_int_equal(f1.ballooned, BALLOON_PAGES);
	/* The ballooned pages are not among those read: 4 GiB is 1048576. */
	assert_true(f1.scanned < 1048576 - BALLOON_PAGES);
	/* The map itself went over, once: 16 bytes per 128 ballooned pages. */
	assert_true(f1.table_bytes >= BALLOON_PAGES / 128 * 16);
	arrived(&b);
	bool mth;
	assert_int_equal(ballooned(&b.ctl, &mth), BALLOON_PAGES);
	assert_true(mth);

	start_incoming(&c, "c");
	migrate_ch(&b, c.uri, true, "3", lm_live_path("b-c.json"), &f2);
	assert_true(f2.skip);
	assert_int_equal(f2.ballooned, BALLOON_PAGES);
	arrived(&c);
	assert_int_equal(ballooned(&c.ctl, &mth), BALLOON_PAGES);
	assert_true(mth);
	/* And the balloon still works there: give 1 GiB back. */
	lm_live_expect_balloon(&c.ctl, 2048 * MIB);
	wait_ballooned(&c.ctl, BALLOON_PAGES - 262144);
	verify(&c.ctl, c.console);
	quit(&c);
}

/* skip-balloon off by the user: ballooned pages are ordinary pages. */
static void test_skip_off(void **state)
{
	(void)state;
	struct lm_live_vm a, b;
	struct figures f;
	start_source(&a, "a2");
	start_incoming(&b, "b2");
	migrate(&a, b.uri, false, lm_live_path("a2-b2.json"), &f);
	assert_false(f.skip);
	assert_int_equal(f.ballooned, BALLOON_PAGES);
	assert_int_equal(f.table_bytes, 0);
	arrived(&b);
	quit(&b);
}

static int group_setup(void **state)
{
	(void)state;
	return lm_live_setup("live-balloon");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_skip_on_a_b_c),
		cmocka_unit_test(test_skip_off),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
