/*
 * Unit tests for the convergence policy (src/migrate/converge.c): tables of
 * what the sender measured -> the decision and the predicted pause.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "migrate/converge.h"

#define MB 1e6
#define MS 1e-3

struct row {
	const char *what;
	struct lm__conv_in in;
	enum lm__conv_act act;
	bool forced;
	double expected_ms; /* < 0: not checked */
};

/* 1 GB/s, 300 ms limit, round 3 of at most 30, ready destination unless
 * a row says otherwise. */
#define BASE(r) .bw = 1000 * MB, .limit_s = 300 * MS, .round = (r), .max_rounds = 30

static const struct row rows[] = {
	{ "nothing left, ready: switch over",
	  { BASE(3), .remaining = 0, .prepared = true }, LM__CONV_SWITCHOVER, false, 0 },
	/* HELLO to ACCEPT took 2 s (the destination built a huge VM then):
	 * the destination is still asked to get ready, and the estimate
	 * shows the whole round trip; once READY measured the same 2 s, the
	 * pause does not fit. */
	/* 200 pages left, the guest dirties 12 800 a second and the harvest
	 * costs 14 ms (the bitmap log of 1 TiB): any round leaves about 180,
	 * so none pays. With a cheap harvest, another round does. */
	{ "a harvest that dirties what a round saves: switch over",
	  { BASE(3), .remaining = 200, .dirty_rate = 12800, .sync_s = 14 * MS, .prepared = true },
	  LM__CONV_SWITCHOVER, false, -1 },
	/* Rounds that cost 15 ms whatever they carry (two harvests and the
	 * scans of the bitmap log): 326 pages left, and the next round would
	 * leave about 200. */
	{ "rounds with a fixed cost that dirties what they save: switch over",
	  { BASE(3), .remaining = 326, .dirty_rate = 13000, .sync_s = 4 * MS, .fixed_s = 15 * MS, .prepared = true },
	  LM__CONV_SWITCHOVER, false, -1 },
	{ "a cheap harvest: another round",
	  { BASE(3), .remaining = 200, .dirty_rate = 12800, .sync_s = 0.05 * MS, .prepared = true },
	  LM__CONV_ROUND, false, -1 },
	{ "slow handshake round trip, not ready: prepare",
	  { BASE(3), .remaining = 0, .rtt_s = 2.0 }, LM__CONV_PREPARE, false, 2000 },
	{ "slow round trip, ready: another round",
	  { BASE(3), .remaining = 0, .rtt_s = 2.0, .prepared = true }, LM__CONV_ROUND, false, 2000 },
	{ "nothing left, destination not told yet: prepare first",
	  { BASE(3), .remaining = 0 }, LM__CONV_PREPARE, false, 0 },
	{ "the estimate adds harvest, round trip, workload and pages",
	  { BASE(3), .remaining = 50, .sync_s = 0.2 * MS, .rtt_s = 0.1 * MS, .workload_s = 0.5 * MS, .prepared = true },
	  LM__CONV_SWITCHOVER, false, 0.2 + 0.1 + 0.5 + 50 * 4096 / 1e6 },
	{ "fits, a slow writer: another round halves what is left",
	  { BASE(3), .remaining = 10000, .dirty_rate = 1000, .prepared = true }, LM__CONV_ROUND, false,
	  10000 * 4096 / 1e6 },
	{ "fits, a fast writer: a round would not leave half as much",
	  { BASE(3), .remaining = 10000, .dirty_rate = 200000, .prepared = true }, LM__CONV_SWITCHOVER, false, -1 },
	{ "fits, a fast writer, not told yet: prepare",
	  { BASE(3), .remaining = 10000, .dirty_rate = 200000 }, LM__CONV_PREPARE, false, -1 },
	{ "fits, but the last round allowed: switch over",
	  { BASE(30), .remaining = 10000, .dirty_rate = 1000, .prepared = true }, LM__CONV_SWITCHOVER,
	  false, -1 },
	{ "fits, few pages left (converged): no more rounds",
	  { BASE(3), .remaining = LM__CONV_CONVERGED_PAGES, .prepared = true }, LM__CONV_SWITCHOVER, false, -1 },
	{ "does not fit: another round",
	  { BASE(3), .remaining = 1000000, .dirty_rate = 50000, .prepared = true }, LM__CONV_ROUND, false, 4096 },
	{ "does not fit, out of rounds: switch over anyway",
	  { BASE(30), .remaining = 1000000, .prepared = true }, LM__CONV_SWITCHOVER, true, 4096 },
	{ "does not fit, out of rounds, not told yet: prepare, forced",
	  { BASE(30), .remaining = 1000000 }, LM__CONV_PREPARE, true, -1 },
	{ "does not fit, out of rounds, cancel set: cancel",
	  { BASE(30), .remaining = 1000000, .cancel = true, .prepared = true }, LM__CONV_CANCEL, true,
	  -1 },
	{ "does not fit, out of time: switch over anyway",
	  { BASE(3), .remaining = 1000000, .elapsed_s = 10, .max_time_s = 5, .prepared = true },
	  LM__CONV_SWITCHOVER, true, -1 },
	{ "does not fit, time left: another round",
	  { BASE(3), .remaining = 1000000, .elapsed_s = 4, .max_time_s = 5, .prepared = true }, LM__CONV_ROUND,
	  false, -1 },
	{ "no round limit: round 1000 still goes on",
	  { .bw = 1000 * MB, .limit_s = 300 * MS, .round = 1000, .remaining = 1000000, .prepared = true },
	  LM__CONV_ROUND, false, -1 },
	{ "the workload's part alone breaks a 1 ms limit",
	  { .bw = 1000 * MB, .limit_s = 1 * MS, .round = 2, .workload_s = 2 * MS, .prepared = true },
	  LM__CONV_ROUND, false, 2 },
	{ "unknown bandwidth: pages cost nothing yet",
	  { .limit_s = 300 * MS, .round = 1, .remaining = 10, .sync_s = 1 * MS, .prepared = true },
	  LM__CONV_SWITCHOVER, false, 1 },
	{ "guard: out of rounds and over the limit: cancel, never a late pause",
	  { BASE(30), .remaining = 1000000, .guard = true, .prepared = true }, LM__CONV_CANCEL, true, 4096 },
	{ "guard: out of time and over the limit: cancel",
	  { BASE(3), .remaining = 1000000, .elapsed_s = 10, .max_time_s = 5, .guard = true, .prepared = true },
	  LM__CONV_CANCEL, true, -1 },
	{ "guard: fits on the last round: switch over",
	  { BASE(30), .remaining = 10, .guard = true, .prepared = true }, LM__CONV_SWITCHOVER, false, -1 },
	{ "guard: over the limit with rounds left: another round",
	  { BASE(3), .remaining = 1000000, .guard = true, .prepared = true }, LM__CONV_ROUND, false, -1 },
	{ "exactly at the limit fits",
	  { .bw = 4096 * 1000.0, .limit_s = 0.01, .round = 2, .remaining = 10, .prepared = true },
	  LM__CONV_SWITCHOVER, false, 10 },
	/* post-copy: 1 GB/s is 244k pages/s, half of it 122k pages/s */
	{ "postcopy: a writer above half the link after round 1: post-copy",
	  { BASE(1), .remaining = 1000000, .dirty_rate = 150000, .postcopy = true, .prepared = true },
	  LM__CONV_POSTCOPY, false, 1000000 * LM__CONV_PC_PAGE_S * 1e3 },
	{ "postcopy: its pause is harvest, round trip, workload and the list",
	  { .bw = 1000 * MB, .round = 1, .max_rounds = 30, .remaining = 10000, .dirty_rate = 150000, .sync_s = 1 * MS, .rtt_s = 0.1 * MS,
	    .workload_s = 0.5 * MS, .limit_s = 10 * MS, .postcopy = true, .prepared = true },
	  LM__CONV_POSTCOPY, false, 1 + 0.1 + 0.5 + 10000 * LM__CONV_PC_PAGE_S * 1e3 },
	{ "postcopy: not told yet: prepare first",
	  { BASE(1), .remaining = 1000000, .dirty_rate = 150000, .postcopy = true }, LM__CONV_PREPARE, false, -1 },
	{ "postcopy: a writer below half the link: another round",
	  { BASE(1), .remaining = 1000000, .dirty_rate = 100000, .postcopy = true, .prepared = true },
	  LM__CONV_ROUND, false, -1 },
	{ "postcopy: it fits: an ordinary switchover",
	  { BASE(3), .remaining = 100, .dirty_rate = 150000, .postcopy = true, .prepared = true },
	  LM__CONV_SWITCHOVER, false, -1 },
	{ "postcopy: out of rounds and over the limit: post-copy, not a late pause",
	  { BASE(30), .remaining = 1000000, .postcopy = true, .prepared = true }, LM__CONV_POSTCOPY, true, -1 },
	{ "postcopy with cancel set, out of rounds: post-copy still finishes it",
	  { BASE(30), .remaining = 1000000, .postcopy = true, .cancel = true, .prepared = true },
	  LM__CONV_POSTCOPY, true, -1 },
	{ "postcopy-after 3, round 2, a fast writer: waits for round 3",
	  { BASE(2), .remaining = 1000000, .dirty_rate = 150000, .postcopy = true, .postcopy_after = 3,
	    .prepared = true },
	  LM__CONV_ROUND, false, -1 },
	{ "postcopy-after 1, it would fit: post-copy all the same (the user asked)",
	  { BASE(1), .remaining = 10, .postcopy = true, .postcopy_after = 1, .prepared = true },
	  LM__CONV_POSTCOPY, false, -1 },
	{ "postcopy-after 3, round 3: post-copy",
	  { BASE(3), .remaining = 1000000, .postcopy = true, .postcopy_after = 3, .prepared = true },
	  LM__CONV_POSTCOPY, false, -1 },
	{ "migrate-start-postcopy: now, whatever the rates",
	  { BASE(2), .remaining = 1000000, .postcopy = true, .postcopy_now = true, .prepared = true },
	  LM__CONV_POSTCOPY, false, -1 },
	{ "postcopy before the throttle: auto-converge does not step up",
	  { BASE(2), .remaining = 1000000, .dirty_rate = 150000, .postcopy = true, .auto_converge = true,
	    .throttle_initial = 20, .throttle_increment = 10, .prepared = true },
	  LM__CONV_POSTCOPY, false, -1 },
	{ "postcopy not allowed: a fast writer gets another round",
	  { BASE(1), .remaining = 1000000, .dirty_rate = 150000, .postcopy_now = true, .prepared = true },
	  LM__CONV_ROUND, false, -1 },
};

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct lm__conv_out out;
		lm__converge(&r->in, &out);
		if (out.act != r->act || out.forced != r->forced ||
		    (r->expected_ms >= 0 && fabs(out.expected_s * 1e3 - r->expected_ms) > 1e-6))
			fail_msg("row %zu (%s): got %s%s expected %.6f ms, want %s%s %.6f ms", i, r->what,
				 lm__conv_act_name(out.act), out.forced ? " (forced)" : "", out.expected_s * 1e3,
				 lm__conv_act_name(r->act), r->forced ? " (forced)" : "", r->expected_ms);
	}
}

/* The first switchover decision is always PREPARE, and once prepared the
 * same inputs give SWITCHOVER, unless the round trip (left out until the
 * destination is ready) is what does not fit: the sender's loop cannot
 * spin on PREPARE. */
static void test_prepare_then_switch(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct lm__conv_in in = rows[i].in;
		struct lm__conv_out a, b;
		in.prepared = false;
		lm__converge(&in, &a);
		in.prepared = true;
		lm__converge(&in, &b);
		bool rtt_decides = b.expected_s > in.limit_s && b.expected_s - in.rtt_s <= in.limit_s;
		if (a.act == LM__CONV_PREPARE)
			assert_true(b.act == LM__CONV_SWITCHOVER || b.act == LM__CONV_POSTCOPY ||
				    (rtt_decides && b.act == LM__CONV_ROUND));
		else
			assert_int_equal(a.act, b.act);
		assert_true(b.act != LM__CONV_PREPARE);
		assert_true(fabs(a.expected_s - b.expected_s) < 1e-12);
	}
}

/* `last` says no rounds or time are left, whatever the decision (the
 * guard cancels a pause it undoes then). */
static void test_last(void **state)
{
	(void)state;
	struct lm__conv_out out;
	struct lm__conv_in fits = { BASE(30), .remaining = 10, .prepared = true };
	lm__converge(&fits, &out);
	assert_int_equal(out.act, LM__CONV_SWITCHOVER);
	assert_false(out.forced);
	assert_true(out.last);
	fits.round = 29;
	lm__converge(&fits, &out);
	assert_false(out.last);
	struct lm__conv_in late = { BASE(3), .remaining = 10, .elapsed_s = 6, .max_time_s = 5, .prepared = true };
	lm__converge(&late, &out);
	assert_true(out.last);
	assert_false(out.forced);
}

/* auto-converge: from round 2, while the guest dirties more than half the
 * link, the throttle starts at cpu-throttle-initial and grows by the
 * increment per round, at most 99; otherwise it stays where it is. */
static void test_throttle(void **state)
{
	(void)state;
	static const struct {
		unsigned round, pct;
		double rate; /* pages/s; the link is 1 GB/s = 244140 pages/s */
		uint64_t remaining;
		bool on;
		unsigned want;
	} t[] = {
		{ 2, 0, 200000, 1000000, true, 20 },  /* 819 MB/s dirty > half of 1 GB/s */
		{ 3, 20, 200000, 1000000, true, 30 },
		{ 9, 90, 200000, 1000000, true, 99 }, /* 100 capped */
		{ 10, 99, 200000, 1000000, true, 99 },
		{ 1, 0, 200000, 1000000, true, 0 },   /* round 1: the rates are not known yet */
		{ 3, 20, 100000, 1000000, true, 20 }, /* 410 MB/s: under half, stays */
		{ 3, 0, 200000, 1000000, false, 0 },  /* off */
		{ 3, 30, 200000, 10, true, 30 },      /* fits: no change */
		{ 30, 40, 200000, 1000000, true, 40 }, /* last round: switch over, no change */
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct lm__conv_in in = { BASE(t[i].round), .remaining = t[i].remaining, .dirty_rate = t[i].rate,
					  .prepared = true, .auto_converge = t[i].on, .throttle_pct = t[i].pct,
					  .throttle_initial = 20, .throttle_increment = 10 };
		struct lm__conv_out out;
		lm__converge(&in, &out);
		if (out.throttle_pct != t[i].want)
			fail_msg("throttle row %zu: got %u, want %u", i, out.throttle_pct, t[i].want);
	}
}

/* More remaining never predicts a shorter pause. */
static void test_monotone(void **state)
{
	(void)state;
	struct lm__conv_in in = { BASE(3), .sync_s = 0.1 * MS, .rtt_s = 0.05 * MS, .prepared = true };
	double last = -1;
	for (uint64_t rem = 0; rem < (1u << 22); rem = rem * 2 + 1) {
		struct lm__conv_out out;
		in.remaining = rem;
		lm__converge(&in, &out);
		assert_true(out.expected_s >= last);
		last = out.expected_s;
	}
}

/* The guard inside the pause: elapsed + pages + round trip + the rest of
 * the workload's part against the limit. */
static void test_guard(void **state)
{
	(void)state;
	static const struct {
		struct lm__guard_in in;
		bool ok;
	} g[] = {
		{ { .elapsed_s = 1 * MS, .limit_s = 300 * MS }, true },
		{ { .elapsed_s = 301 * MS, .limit_s = 300 * MS }, false },
		{ { .elapsed_s = 300 * MS, .limit_s = 300 * MS }, true },
		/* 1000 pages at 4.096 MB/s: 1 s */
		{ { .elapsed_s = 1 * MS, .remaining = 1000, .bw = 4096000, .limit_s = 300 * MS }, false },
		{ { .elapsed_s = 1 * MS, .remaining = 10, .bw = 4096000, .limit_s = 300 * MS }, true },
		{ { .elapsed_s = 1 * MS, .rtt_s = 299.5 * MS, .limit_s = 300 * MS }, false },
		{ { .elapsed_s = 1 * MS, .workload_left_s = 299.5 * MS, .limit_s = 300 * MS }, false },
		/* more time spent than the workload predicted counts as nothing left */
		{ { .elapsed_s = 1 * MS, .workload_left_s = -5 * MS, .limit_s = 2 * MS }, true },
		/* unknown bandwidth: the pages cannot be judged, the clock can */
		{ { .elapsed_s = 1 * MS, .remaining = 1000000, .limit_s = 2 * MS }, true },
	};
	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
		if (lm__converge_guard_ok(&g[i].in) != g[i].ok)
			fail_msg("guard row %zu: got %d, want %d", i, !g[i].ok, g[i].ok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_prepare_then_switch),
		cmocka_unit_test(test_monotone),
		cmocka_unit_test(test_guard),
		cmocka_unit_test(test_last),
		cmocka_unit_test(test_throttle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
