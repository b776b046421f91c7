/* Faults: the connection is cut at many points in both directions. The
 * sender must fail with a message naming the cause, leave the workload
 * running and its memory unharmed; the receiver must never claim success
 * for an incomplete stream; a migration afterwards succeeds. And the
 * switchover rules (docs/stream.md 3.13): no cut point leaves the receiver
 * running the guest while the sender resumed its workload, the sender never
 * resumes once COMMIT is out, and a receiver that verified everything but
 * got no COMMIT keeps its copy (-ENOLINK, never run, never dropped). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/migrate.h"
#include "support/dirty_check.h"
#include "support/mig_helpers.h"

#define NPAGES 2048 /* 8 MiB */

struct run_out {
	int send_err, recv_err;
	char send_msg[256], recv_msg[256];
	uint64_t transferred;
	int finish_calls, finish_err;
	bool wait_commit;
};

static void one(struct lm_mem_region *r, struct lm_dirty_source *src, struct lm_test_writer *w, uint64_t cut_fwd,
		uint64_t cut_back, enum lm_test_cut_mode mode, struct run_out *o)
{
	struct lm_test_proxy px = { .cut_fwd = cut_fwd, .cut_back = cut_back, .mode = mode };
	struct lm_test_receiver rx;
	int sfd, rfd;
	memset(&rx, 0, sizeof(rx));
	assert_int_equal(lm_test_proxy_start(&px, &sfd, &rfd), 0);
	assert_int_equal(lm_test_receiver_start(&rx, rfd), 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.downtime_limit_ms = 50;
	p.result_timeout_ms = 5000;
	struct lm_migrate_stats st;
	o->send_err = lm_migrate_send(sfd, r, 1, src, &lm_test_writer_ops, w, &p, &st);
	snprintf(o->send_msg, sizeof(o->send_msg), "%s", st.error);
	o->transferred = st.transferred;
	close(sfd);
	o->recv_err = lm_test_receiver_join(&rx);
	snprintf(o->recv_msg, sizeof(o->recv_msg), "%s", rx.st.error);
	o->finish_calls = rx.dest.finish_calls;
	o->finish_err = rx.dest.finish_err;
	o->wait_commit = rx.st.wait_commit;
	close(rfd);
	lm_test_proxy_join(&px);
	lm_test_dest_free(&rx.dest);
}

/* After a completed migration the workload stays paused (it "runs" on the
 * destination now); the test lets it go on for the next round, counting
 * that as a resume. */
static void release(struct lm_test_writer *w)
{
	__atomic_store_n(&w->pause_req, 0, __ATOMIC_RELEASE);
	w->resumes++;
}

/* Keep the writer still (not counted as a pause of the workload). */
static void hold(struct lm_test_writer *w)
{
	__atomic_store_n(&w->pause_req, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&w->paused, __ATOMIC_ACQUIRE))
		usleep(50);
}

static void test_cuts(void **state)
{
	struct lm_mem_region r = { 0, NPAGES, lm_test_map(NPAGES) };
	assert_non_null(r.host);
	uint64_t rs = 3;
	/* Every page holds data, so the writer never turns a zero page into a
	 * data page and a quiet stream keeps the same length from run to run. */
	for (uint64_t i = 0; i < NPAGES * 512; i++)
		((uint64_t *)r.host)[i] = lm_test_rand(&rs);
	struct lm_dirty_source *src;
	assert_int_equal(lm_sim_source_new(LM_SIM_EXCHANGE, &src), 0);
	struct lm_test_writer w = { .regions = &r, .n = 1, .mark = src, .bytes_per_sec = 8u << 20, .seed = 11 };
	assert_int_equal(lm_test_writer_start(&w), 0);

	/* A clean run tells how long the stream is. */
	struct run_out o;
	one(&r, src, &w, UINT64_MAX, UINT64_MAX, LM_CUT_BOTH, &o);
	assert_int_equal(o.send_err, 0);
	assert_int_equal(o.recv_err, 0);
	release(&w);
	uint64_t len = o.transferred;
	assert_true(len > NPAGES * LM_PAGE_SIZE / 2);
	/* With the writer held still the stream has an exact length (round 1,
	 * an empty final pass, DEVICE, DIGEST, END, COMMIT), so cuts can be
	 * placed inside each of the last frames. */
	hold(&w);
	one(&r, src, &w, UINT64_MAX, UINT64_MAX, LM_CUT_BOTH, &o);
	assert_int_equal(o.send_err, 0);
	assert_int_equal(o.recv_err, 0);
	release(&w);
	uint64_t qlen = o.transferred;

	/* Cut points: the handshake, inside frame headers, inside page data,
	 * near the end; forward (sender->receiver) and back (ACCEPT, RESULT).
	 * The tail of a quiet stream is DEVICE (40 bytes), DIGEST (36), END
	 * (12), COMMIT (12). Back: ACCEPT (28 bytes), READY (12), RESULT ok
	 * (18), COMMITTED (12): back cuts from 40 on hit RESULT, from 58 on
	 * COMMITTED (the commit is then unconfirmed). */
	struct cut {
		bool fwd, quiet;
		uint64_t at;
	} cuts[] = {
		{ true, false, 0 },	       { true, false, 1 },	      { true, false, 11 },
		{ true, false, 12 },	       { true, false, 40 },	      { true, false, 100 },
		{ true, false, 4096 + 7 },     { true, false, 65536 },	      { true, false, 100000 },
		{ true, false, len / 4 },      { true, false, len / 3 + 5 },  { true, false, len / 2 },
		{ true, false, len - 200 },    { true, false, len - 1 },      { true, true, qlen - 100 },
		{ true, true, qlen - 80 },     { true, true, qlen - 60 },     { true, true, qlen - 40 },
		{ true, true, qlen - 24 },     { true, true, qlen - 18 },     { true, true, qlen - 12 },
		{ true, true, qlen - 6 },      { true, true, qlen - 1 },      { true, true, qlen },
		{ false, false, 0 },	       { false, false, 1 },	      { false, false, 5 },
		{ false, false, 12 },	       { false, false, 20 },	      { false, false, 28 },
		{ false, true, 30 },	       { false, true, 40 },	      { false, true, 45 },
		{ false, true, 46 },	       { false, true, 52 },	      { false, true, 58 },
		{ false, true, 59 },	       { false, true, 64 },	      { false, true, 69 },
	};
	int cases = 0, result_cut = 0, no_commit = 0, unconfirmed = 0;
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		bool is_fwd = cuts[i].fwd;
		uint64_t at = cuts[i].at;
		enum lm_test_cut_mode mode = (enum lm_test_cut_mode)(i % 3);
		if (cuts[i].quiet)
			hold(&w);
		uint64_t before = lm_test_writer_count(&w);
		one(&r, src, &w, is_fwd ? at : UINT64_MAX, is_fwd ? UINT64_MAX : at, mode, &o);
		cases++;
		print_message("cut %-4s at %8llu: sender: %s | receiver: %s\n", is_fwd ? "fwd" : "back",
			      (unsigned long long)at, o.send_err ? o.send_msg : "ok", o.recv_err ? o.recv_msg : "ok");
		/*
		 * The switchover rules, at every cut point. A receiver that
		 * runs the guest (0) read COMMIT, so the sender either completed
		 * (COMMITTED arrived) or is unconfirmed; both leave the workload
		 * paused. A receiver that kept a verified copy (-ENOLINK) does
		 * not run it; its sender did not complete.
		 */
		if (o.recv_err == 0) {
			assert_true(o.send_err == 0 || o.send_err == -ENOLINK);
			assert_int_equal(o.finish_calls, 1);
			assert_int_equal(o.finish_err, 0);
		}
		if (o.recv_err == -ENOLINK) {
			assert_true(o.wait_commit);
			assert_non_null(strstr(o.recv_msg, "commit"));
			assert_int_not_equal(o.send_err, 0);
		}
		if (o.send_err == 0 || o.send_err == -ENOLINK) {
			/* COMMIT went out: the workload stays stopped here. */
			assert_true(__atomic_load_n(&w.pause_req, __ATOMIC_ACQUIRE));
			assert_true(w.pauses > w.resumes);
			if (o.send_err == 0)
				assert_int_equal(o.recv_err, 0);
			else {
				unconfirmed++;
				assert_non_null(strstr(o.send_msg, "not acknowledged"));
				assert_true(o.recv_err == 0 || o.recv_err == -ENOLINK);
			}
			release(&w);
			continue;
		}
		if (o.send_msg[0] == 0)
			fail_msg("cut %s at %llu: sender failed without a message", is_fwd ? "fwd" : "back",
				 (unsigned long long)at);
		assert_true(strstr(o.send_msg, "receiver") != NULL || strstr(o.send_msg, "connection") != NULL);
		/* The sender failed and resumed: the receiver must have failed. */
		assert_int_not_equal(o.recv_err, 0);
		assert_true(o.recv_msg[0] != 0);
		if (o.finish_calls) {
			assert_int_equal(o.finish_calls, 1);
			assert_int_not_equal(o.finish_err, 0);
		}
		/* A cut of the RESULT (the receiver verified everything): the
		 * missing COMMIT is what keeps the destination stopped. */
		if (!is_fwd && strstr(o.send_msg, "waiting for the result")) {
			result_cut++;
			if (strstr(o.recv_msg, "no commit"))
				no_commit++;
		}
		/* The writer was resumed and keeps running. A quiet case that
		 * failed before the workload was paused leaves our hold on. */
		assert_int_equal(w.pauses, w.resumes);
		if (cuts[i].quiet && !strstr(o.send_msg, "stop-and-copy") && !strstr(o.send_msg, "device state") &&
		    !strstr(o.send_msg, "result") && !strstr(o.send_msg, "commit"))
			__atomic_store_n(&w.pause_req, 0, __ATOMIC_RELEASE);
		assert_false(__atomic_load_n(&w.pause_req, __ATOMIC_ACQUIRE));
		/* It writes again (a deadline, not a time: the machine may be busy). */
		for (int k = 0; k < 10000 && lm_test_writer_count(&w) <= before; k++)
			usleep(1000);
		assert_true(lm_test_writer_count(&w) > before);
	}
	print_message("%d cuts: %d of the RESULT (%d ended in 'no commit'), %d unconfirmed commits\n", cases,
		      result_cut, no_commit, unconfirmed);
	/* The RESULT cuts exist and the receiver refused without COMMIT. */
	assert_true(result_cut >= 1);
	assert_true(no_commit >= 1);
	assert_true(unconfirmed >= 1);
	assert_true(cases >= 20);

	/* And a migration afterwards succeeds, bit for bit. */
	one(&r, src, &w, UINT64_MAX, UINT64_MAX, LM_CUT_BOTH, &o);
	if (o.send_err)
		print_message("sender: %s / receiver: %s\n", o.send_msg, o.recv_msg);
	assert_int_equal(o.send_err, 0);
	assert_int_equal(o.recv_err, 0);
	release(&w);
	lm_test_writer_stop(&w);
	lm_dirty_source_free(src);
	munmap(r.host, NPAGES * LM_PAGE_SIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cuts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
