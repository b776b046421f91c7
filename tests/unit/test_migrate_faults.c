/* Faults: the connection is cut at many points in both directions. The
 * sender must fail with a message naming the cause, leave the workload
 * running and its memory unharmed; the receiver must never claim success
 * for an incomplete stream; a migration afterwards succeeds. */
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
	close(rfd);
	lm_test_proxy_join(&px);
	lm_test_dest_free(&rx.dest);
}

static void test_cuts(void **state)
{
	struct lm_mem_region r = { 0, NPAGES, lm_test_map(NPAGES) };
	assert_non_null(r.host);
	uint64_t rs = 3;
	for (uint64_t i = 0; i < NPAGES * 512 / 2; i++)
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
	__atomic_store_n(&w.pause_req, 0, __ATOMIC_RELEASE);
	uint64_t len = o.transferred;
	assert_true(len > NPAGES * LM_PAGE_SIZE / 2);

	/* Cut points: the handshake, inside frame headers, inside page data,
	 * near the end; forward (sender->receiver) and back (ACCEPT, RESULT). */
	uint64_t fwd[] = { 0, 1, 11, 12, 40, 100, 4096 + 7, 65536, 100000, len / 4, len / 3 + 5, len / 2,
			   len - 200, len - 40, len - 30, len - 12, len - 1 };
	uint64_t back[] = { 0, 1, 5, 12, 20, 30 }; /* ACCEPT is ~24 bytes: later cuts hit RESULT */
	int cases = 0;
	for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]) + sizeof(back) / sizeof(back[0]); i++) {
		bool is_fwd = i < sizeof(fwd) / sizeof(fwd[0]);
		uint64_t at = is_fwd ? fwd[i] : back[i - sizeof(fwd) / sizeof(fwd[0])];
		enum lm_test_cut_mode mode = (enum lm_test_cut_mode)(i % 3);
		uint64_t before = lm_test_writer_count(&w);
		one(&r, src, &w, is_fwd ? at : UINT64_MAX, is_fwd ? UINT64_MAX : at, mode, &o);
		cases++;
		print_message("cut %-4s at %8llu: sender: %s | receiver: %s\n", is_fwd ? "fwd" : "back",
			      (unsigned long long)at, o.send_err ? o.send_msg : "ok", o.recv_err ? o.recv_msg : "ok");
		/* The writer may finish a stream shorter than the first. A cut
		 * after the last byte changes nothing; otherwise both sides fail. */
		if (o.send_err == 0) {
			/* Only possible when the cut came after everything mattered. */
			assert_int_equal(o.recv_err, 0);
			__atomic_store_n(&w.pause_req, 0, __ATOMIC_RELEASE);
			continue;
		}
		if (o.send_msg[0] == 0)
			fail_msg("cut %s at %llu: sender failed without a message", is_fwd ? "fwd" : "back",
				 (unsigned long long)at);
		assert_true(strstr(o.send_msg, "receiver") != NULL || strstr(o.send_msg, "connection") != NULL);
		/* A receiver of an incomplete stream never reports success. The
		 * one exception is a cut of the RESULT itself: the receiver did
		 * get and verify everything, only the answer was lost. */
		if (o.recv_err == 0) {
			assert_false(is_fwd);
			assert_non_null(strstr(o.send_msg, "waiting for the result"));
		} else {
			assert_true(o.recv_msg[0] != 0);
			if (o.finish_calls)
				assert_int_not_equal(o.finish_err, 0);
		}
		/* The writer was resumed and keeps running. */
		assert_false(__atomic_load_n(&w.pause_req, __ATOMIC_ACQUIRE));
		usleep(3000);
		assert_true(lm_test_writer_count(&w) > before);
	}
	assert_true(cases >= 20);

	/* And a migration afterwards succeeds, bit for bit. */
	one(&r, src, &w, UINT64_MAX, UINT64_MAX, LM_CUT_BOTH, &o);
	if (o.send_err)
		print_message("sender: %s / receiver: %s\n", o.send_msg, o.recv_msg);
	assert_int_equal(o.send_err, 0);
	assert_int_equal(o.recv_err, 0);
	__atomic_store_n(&w.pause_req, 0, __ATOMIC_RELEASE);
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
