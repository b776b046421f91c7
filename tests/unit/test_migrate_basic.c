/* The migration engine end to end in one process: sender thread, receiver
 * thread, socketpair. Memory on both sides must match exactly at the
 * switchover; stats, cancel, non-convergence policy and the rate limit. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/testpoint.h"
#include "livemig/migrate.h"
#include "support/dirty_check.h"
#include "support/mig_helpers.h"

struct fixture {
	struct lm_mem_region r[2];
	struct lm_test_writer w;
	struct lm_dirty_source *src;
	struct lm_test_receiver rx;
	int fds[2];
};

static void fx_init(struct fixture *f, bool sim, uint64_t rate)
{
	memset(f, 0, sizeof(*f));
	f->r[0] = (struct lm_mem_region){ 0, 4096, lm_test_map(4096) };       /* 16 MiB */
	f->r[1] = (struct lm_mem_region){ 1 << 20, 1024, lm_test_map(1024) }; /* 4 MiB, far away */
	assert_non_null(f->r[0].host);
	assert_non_null(f->r[1].host);
	/* Some data, some zero pages, some never touched. */
	uint64_t rs = 99;
	for (uint64_t p = 0; p < 3000; p += 2)
		for (int k = 0; k < 512; k++)
			((uint64_t *)f->r[0].host)[p * 512 + k] = lm_test_rand(&rs);
	memset(f->r[1].host, 0, 512 * LM_PAGE_SIZE);
	if (sim)
		assert_int_equal(lm_sim_source_new(LM_SIM_MANUAL, &f->src), 0);
	else
		assert_int_equal(lm_uffd_source_new(&f->src), 0);
	f->w = (struct lm_test_writer){ .regions = f->r, .n = 2, .mark = sim ? f->src : NULL,
					.bytes_per_sec = rate, .seed = 5 };
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->fds), 0);
}

static void fx_fini(struct fixture *f)
{
	lm_dirty_source_free(f->src);
	munmap(f->r[0].host, 4096 * LM_PAGE_SIZE);
	munmap(f->r[1].host, 1024 * LM_PAGE_SIZE);
	lm_test_dest_free(&f->rx.dest);
	close(f->fds[0]);
	close(f->fds[1]);
}

/*
 * Every test below joins the receiver and stops the writer before it
 * asserts: a failed assertion leaves the test function at once, and a
 * thread still running on its stack would hang the test or crash the next
 * one instead of letting this one fail alone.
 */

/* A fixture with the writer at 20 MB/s and the receiver running, whose
 * destination compares memory at the switchover (rx.dest.mismatch). */
static void start_compared(struct fixture *f, bool sim)
{
	fx_init(f, sim, 20u << 20);
	lm_test_dest_compare_with(&f->rx.dest, f->r, 2);
	assert_int_equal(lm_test_writer_start(&f->w), 0);
	assert_int_equal(lm_test_receiver_start(&f->rx, f->fds[1]), 0);
}

/* Send with p (NULL: the defaults), then join the receiver and stop the
 * writer; both sides' errors are printed if either failed. After a
 * completed migration the workload stays paused: the counters the caller
 * checks are final. */
static int send_and_join(struct fixture *f, const struct lm_migrate_params *p, struct lm_migrate_stats *st,
			 int *rerr)
{
	int err = lm_migrate_send(f->fds[0], f->r, 2, f->src, &lm_test_writer_ops, &f->w, p, st);
	*rerr = lm_test_receiver_join_after(&f->rx, f->fds[0], err);
	lm_test_writer_stop(&f->w);
	if (err || *rerr)
		print_message("sender: %s\nreceiver: %s\n", st->error, f->rx.st.error);
	return err;
}

static void migrate_live(bool sim)
{
	struct fixture f;
	start_compared(&f, sim);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.downtime_limit_ms = 5; /* several rounds before it converges */
	p.max_rounds = 6;
	struct lm_migrate_stats st;
	int rerr, err = send_and_join(&f, &p, &st, &rerr);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(f.rx.dest.finish_calls, 1);
	assert_int_equal(f.rx.dest.finish_err, 0);
	/* Bit-identical at the switchover, checked without the digest. */
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	assert_true(st.rounds >= 1);
	assert_int_equal(f.w.pauses, 1);
	assert_int_equal(f.w.resumes, 0);
	assert_int_equal(f.w.save_state_calls, 1);
	assert_int_equal(f.rx.st.devices, 1);
	assert_true(st.duplicate > 0);
	assert_true(st.normal >= 1500);
	assert_true(st.transferred > st.normal * LM_PAGE_SIZE);
	assert_true(st.downtime_us > 0);
	if (!sim)
		assert_true(st.skipped > 0); /* never-touched pages are not sent */
	char *js = lm_migrate_stats_json(&st), *tb = lm_migrate_stats_table(&st);
	assert_non_null(js);
	assert_non_null(tb);
	assert_non_null(strstr(js, "\"downtime\""));
	assert_non_null(strstr(js, "\"dirty-sync-count\""));
	assert_non_null(strstr(tb, "downtime"));
	free(js);
	free(tb);
	fx_fini(&f);
}

static void test_live_sim(void **state)
{
	migrate_live(true);
}

static void test_live_uffd(void **state)
{
	if (lm_uffd_supported())
		skip();
	migrate_live(false);
}

/* Writer dirtying much faster than a 4 MB/s link: cancel policy gives up
 * cleanly, the writer keeps running; switchover policy completes. */
static void test_nonconverge(void **state)
{
	for (int policy = 0; policy < 2; policy++) {
		struct fixture f;
		fx_init(&f, true, 0);
		assert_int_equal(lm_test_writer_start(&f.w), 0);
		assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
		struct lm_migrate_params p;
		lm_migrate_params_default(&p);
		p.max_bandwidth = 64u << 20;
		p.downtime_limit_ms = 1;
		p.max_rounds = 3;
		p.on_nonconverge = policy ? LM_NONCONVERGE_CANCEL : LM_NONCONVERGE_SWITCHOVER;
		struct lm_migrate_stats st;
		int err = lm_migrate_send(f.fds[0], f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p, &st);
		/* A sender that gave up (policy 1 expects it to) closes the
		 * connection; the receiver learns it from there. */
		int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
		uint64_t c = lm_test_writer_count(&f.w);
		usleep(20000);
		uint64_t c2 = lm_test_writer_count(&f.w);
		lm_test_writer_stop(&f.w);
		if (policy) {
			assert_int_equal(err, -ETIMEDOUT);
			assert_non_null(strstr(st.error, "did not converge"));
			assert_int_equal(st.status, LM_MIG_FAILED);
			assert_int_equal(f.w.pauses, 0);
			assert_true(rerr < 0);
			assert_int_not_equal(f.rx.dest.finish_err, 0);
			assert_true(c2 > c); /* still running */
		} else {
			if (err)
				print_message("sender: %s\n", st.error);
			assert_int_equal(err, 0);
			assert_int_equal(st.rounds, 3);
			assert_int_equal(rerr, 0);
		}
		fx_fini(&f);
	}
}

/*
 * downtime-guard: a pause that stalls past the limit (a test point sleeping
 * 60 ms right after the writer stopped, against a 20 ms limit) is undone:
 * the writer runs again, pre-copy goes on and the next switchover
 * completes with memory identical. A pause that stalls every time ends in
 * a cancel once the rounds run out, the writer running. Without the guard
 * the stalled pause simply completes late.
 */
static int stalls_left; /* < 0: every time */
static void stall_in_pause(const char *name, void *arg)
{
	(void)arg;
	if (strcmp(name, "sender-in-pause") || stalls_left == 0)
		return;
	if (stalls_left > 0)
		stalls_left--;
	usleep(60000);
}

static void guard_case(bool guard, int stalls)
{
	struct fixture f;
	start_compared(&f, true);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.downtime_limit_ms = 20;
	p.downtime_guard = guard;
	if (stalls < 0)
		p.max_rounds = 4;
	stalls_left = stalls;
	lm__test_point_set(stall_in_pause, NULL);
	struct lm_migrate_stats st;
	int err = lm_migrate_send(f.fds[0], f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p, &st);
	lm__test_point_set(NULL, NULL);
	int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
	uint64_t c = lm_test_writer_count(&f.w);
	usleep(20000);
	uint64_t c2 = lm_test_writer_count(&f.w);
	lm_test_writer_stop(&f.w);
	if (stalls < 0) {
		assert_int_equal(err, -ETIMEDOUT);
		assert_non_null(strstr(st.error, "downtime guard"));
		assert_int_equal(st.status, LM_MIG_FAILED);
		assert_true(st.guard_resumes >= 1);
		assert_int_equal(f.w.pauses, f.w.resumes);
		assert_true(c2 > c); /* still running */
		assert_true(rerr < 0);
		assert_int_not_equal(f.rx.dest.finish_err, 0);
		assert_int_equal(f.rx.st.devices, 0); /* no state ever sent */
		fx_fini(&f);
		return;
	}
	if (err || rerr)
		print_message("sender: %s\nreceiver: %s\n", st.error, f.rx.st.error);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_int_equal(f.rx.st.devices, 1); /* the held-back state of the stalled pause never went out */
	assert_int_equal(st.guard_resumes, guard ? 1 : 0);
	assert_int_equal(f.w.pauses, guard ? 2 : 1);
	assert_int_equal(f.w.resumes, guard ? 1 : 0);
	assert_int_equal(f.w.save_state_calls, guard ? 2 : 1);
	if (!guard)
		assert_true(st.downtime_us >= 60000); /* the stall itself, not a timing threshold */
	char *js = lm_migrate_stats_json(&st), *tb = lm_migrate_stats_table(&st);
	assert_non_null(js);
	assert_non_null(tb);
	assert_non_null(strstr(js, "\"downtime-guard-resumes\""));
	assert_true((strstr(tb, "downtime guard") != NULL) == guard);
	free(js);
	free(tb);
	fx_fini(&f);
}

static void test_guard_resumes(void **state)
{
	guard_case(true, 1);
}

static void test_guard_cancels(void **state)
{
	guard_case(true, -1);
}

static void test_no_guard_late(void **state)
{
	guard_case(false, 1);
}

/* A destination that cannot get ready fails the migration before the
 * pause: the workload never stops. */
static void test_destination_not_ready(void **state)
{
	struct fixture f;
	fx_init(&f, true, 0);
	f.rx.dest.prepare_err = -EIO;
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_stats st;
	int err = lm_migrate_send(f.fds[0], f.r, 2, f.src, &lm_test_writer_ops, &f.w, NULL, &st);
	int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
	uint64_t c = lm_test_writer_count(&f.w);
	usleep(20000);
	uint64_t c2 = lm_test_writer_count(&f.w);
	lm_test_writer_stop(&f.w);
	assert_int_equal(err, -EIO);
	assert_non_null(strstr(st.error, "could not get ready"));
	assert_int_equal(f.w.pauses, 0);
	assert_true(rerr < 0);
	assert_int_equal(f.rx.dest.prepares, 1);
	assert_int_not_equal(f.rx.dest.finish_err, 0);
	assert_true(c2 > c); /* still running */
	fx_fini(&f);
}

/* While the destination gets ready, the source rewrites 3000 pages: after
 * READY the sender sends them in another round, and (with catch-up) pauses
 * only after a second PREPARE/READY, once the destination applied them. A
 * receiver without catch-up (an older one) gets the pause right after that
 * round, as before. Both end bit-identical. */
static void burst_at_prepare(struct lm_test_dest *d)
{
	struct fixture *f = d->user;
	uint64_t rs = 7;
	for (uint64_t p = 0; p < 3000; p++) {
		((uint64_t *)f->r[0].host)[p * 512 + 1] = lm_test_rand(&rs);
		lm_sim_mark(f->src, f->r[0].first_page + p);
	}
}

static void catch_up_case(bool receiver_has_it)
{
	struct fixture f;
	fx_init(&f, true, 20u << 20);
	lm_test_dest_compare_with(&f.rx.dest, f.r, 2);
	f.rx.dest.user = &f;
	f.rx.dest.on_prepare = burst_at_prepare;
	if (!receiver_has_it)
		f.rx.p.caps_disabled = LM_CAP_CATCH_UP;
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_stats st;
	int rerr, err = send_and_join(&f, NULL, &st, &rerr);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_int_equal(f.rx.dest.prepares, 1); /* the workload prepares once */
	assert_int_equal((f.rx.st.caps & LM_CAP_CATCH_UP) != 0, receiver_has_it);
	if (receiver_has_it)
		assert_true(st.catch_ups >= 1);
	else
		assert_int_equal(st.catch_ups, 0);
	assert_int_equal(f.rx.st.catch_ups, st.catch_ups);
	char *js = lm_migrate_stats_json(&st);
	assert_non_null(js);
	assert_non_null(strstr(js, "\"catch-ups\""));
	free(js);
	fx_fini(&f);
}

static void test_catch_up(void **state)
{
	catch_up_case(true);
}

static void test_catch_up_old_receiver(void **state)
{
	catch_up_case(false);
}

/* page-hash-csum (docs/stream.md 2) on, switched off by the receiver (an
 * older one) and by the sender: a live migration under a writer ends
 * bit-identical with the digest checked, whichever rule the RAW runs'
 * checksums followed. */
static void page_hash_case(uint64_t rx_off, uint64_t tx_off)
{
	struct fixture f;
	fx_init(&f, true, 20u << 20);
	lm_test_dest_compare_with(&f.rx.dest, f.r, 2);
	f.rx.p.caps_disabled = rx_off;
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.caps_disabled = tx_off;
	struct lm_migrate_stats st;
	int rerr, err = send_and_join(&f, &p, &st, &rerr);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_true(st.normal > 0);
	assert_int_equal((f.rx.st.caps & LM_CAP_PAGE_HASH_CSUM) != 0, !rx_off && !tx_off);
	fx_fini(&f);
}

static void test_page_hash_csum(void **state)
{
	(void)state;
	page_hash_case(0, 0);
	page_hash_case(LM_CAP_PAGE_HASH_CSUM, 0);
	page_hash_case(0, LM_CAP_PAGE_HASH_CSUM);
}

/* A destination that takes 400 ms to answer HELLO (a VMM building its VM
 * then): that round trip says nothing about the pause, which fits the
 * 300 ms limit, so the migration switches over once READY measured the
 * round trip again, long before its rounds run out. */
static void test_slow_hello(void **state)
{
	(void)state;
	struct fixture f;
	fx_init(&f, true, 20u << 20);
	lm_test_dest_compare_with(&f.rx.dest, f.r, 2);
	f.rx.dest.setup_delay_ms = 400;
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.max_rounds = 10;
	struct lm_migrate_stats st;
	int rerr, err = send_and_join(&f, &p, &st, &rerr);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_true(st.rounds < 10);
	assert_true(st.expected_downtime_ms < p.downtime_limit_ms);
	fx_fini(&f);
}

/* Cancel from another thread while the rate limit keeps it in round 1. */
static void test_cancel(void **state)
{
	struct fixture f;
	fx_init(&f, true, 1u << 20);
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.max_bandwidth = 8u << 20; /* ~1.5 s for the data: cancelled long before */
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p), 0);
	assert_int_equal(lm_migration_start(m, f.fds[0]), 0);
	struct lm_migrate_stats st, before;
	for (int i = 0; i < 200; i++) {
		lm_migration_query(m, &before);
		if (before.status == LM_MIG_ACTIVE && before.transferred > (1u << 20))
			break;
		usleep(5000);
	}
	lm_migration_cancel(m);
	int err = lm_migration_wait(m);
	int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
	lm_test_writer_stop(&f.w);
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", lm_migration_error(m));
	lm_migration_query(m, &st);
	lm_migration_free(m);
	assert_int_equal(before.status, LM_MIG_ACTIVE);
	assert_true(before.total_time_ms > 0);
	assert_int_equal(err, -ECANCELED);
	assert_non_null(strstr(msg, "cancelled during round 1"));
	assert_int_equal(st.status, LM_MIG_CANCELLED);
	assert_true(rerr < 0);
	assert_int_equal(f.rx.dest.finish_calls, 1);
	assert_int_not_equal(f.rx.dest.finish_err, 0);
	fx_fini(&f);
}

/*
 * The bandwidth estimate is taken on data pages only: a mostly-zero guest
 * (32 MiB, one page in eight holding data) behind a 16 MB/s limit must not
 * report more than the limit, although its round 1 covers 32 MiB of guest
 * memory in about a quarter of a second (the old estimate, guest memory
 * per round time with zero pages at full size, said about eight times the
 * limit). This holds by construction, not by timing: the limiter makes a
 * write call of B bytes take at least B / rate less the idle time it may
 * make up (RATE_CREDIT_S, 10 ms, in src/migrate/io.c), and the estimate
 * divides data bytes by at least the write time. Round 1 here is four
 * 1 MiB flushes and a short one, about 0.25 s at the limit, of which at
 * most 5 x 10 ms may be made up: at most 25% over the limit, whatever the
 * machine's speed (a TSan run, whose encoding falls behind before every
 * call, measured 11% over once).
 */
static void test_bandwidth_estimate(void **state)
{
	const uint64_t n = 8192, limit = 16u << 20;
	struct lm_mem_region r = { 0, n, lm_test_map(n) };
	assert_non_null(r.host);
	uint64_t rs = 1;
	for (uint64_t p = 0; p < n; p += 8)
		for (int k = 0; k < 512; k++)
			((uint64_t *)r.host)[p * 512 + k] = lm_test_rand(&rs);
	struct lm_dirty_source *src;
	assert_int_equal(lm_sim_source_new(LM_SIM_EXCHANGE, &src), 0);
	struct lm_test_writer w = { .regions = &r, .n = 1, .mark = src, .seed = 3 };
	struct lm_test_receiver rx;
	memset(&rx, 0, sizeof(rx));
	int fds[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	assert_int_equal(lm_test_receiver_start(&rx, fds[1]), 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.max_bandwidth = limit;
	struct lm_migrate_stats st;
	/* No writer thread: pause/resume only flip flags nobody waits on. */
	w.paused = 1;
	int err = lm_migrate_send(fds[0], &r, 1, src, &lm_test_writer_ops, &w, &p, &st);
	int rerr = lm_test_receiver_join_after(&rx, fds[0], err);
	if (err || rerr)
		print_message("sender: %s\nreceiver: %s\n", st.error, rx.st.error);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_int_equal(st.normal, n / 8);
	assert_int_equal(st.duplicate, n - n / 8);
	double bytes_per_s = st.mbps * 1e6 / 8;
	print_message("estimate %.1f MB/s with a %.1f MB/s limit\n", bytes_per_s / 1e6, (double)limit / 1e6);
	assert_true(bytes_per_s > 0);
	assert_true(bytes_per_s <= (double)limit * 1.3);
	lm_dirty_source_free(src);
	lm_test_dest_free(&rx.dest);
	close(fds[0]);
	close(fds[1]);
	munmap(r.host, n * LM_PAGE_SIZE);
	(void)w;
}

static void test_uri(void **state)
{
	struct lm_uri u;
	assert_int_equal(lm_uri_parse("tcp:127.0.0.1:4444", &u), 0);
	assert_int_equal(u.kind, LM_URI_TCP);
	assert_string_equal(u.host, "127.0.0.1");
	assert_string_equal(u.port, "4444");
	assert_int_equal(lm_uri_parse("tcp:[::1]:80", &u), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(lm_uri_parse("unix:/tmp/x.sock", &u), 0);
	assert_string_equal(u.path, "/tmp/x.sock");
	assert_int_equal(lm_uri_parse("tcp:host", &u), -EINVAL);
	assert_int_equal(lm_uri_parse("tcp::80", &u), -EINVAL);
	assert_int_equal(lm_uri_parse("tcp:h:99999", &u), -EINVAL);
	assert_int_equal(lm_uri_parse("tcp:h:8x", &u), -EINVAL);
	assert_int_equal(lm_uri_parse("udp:h:1", &u), -EINVAL);
	assert_int_equal(lm_uri_parse("unix:", &u), -EINVAL);
	/* Listen on an ephemeral port, connect, accept. */
	assert_int_equal(lm_uri_parse("tcp:127.0.0.1:0", &u), 0);
	int l = lm_transport_listen(&u);
	assert_true(l >= 0);
	int port = lm_transport_local_port(l);
	assert_true(port > 0);
	snprintf(u.port, sizeof(u.port), "%d", port);
	int c = lm_transport_connect(&u);
	assert_true(c >= 0);
	int a = lm_transport_accept(l, 1000);
	assert_true(a >= 0);
	close(a);
	close(c);
	close(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_live_sim),
		cmocka_unit_test(test_live_uffd),
		cmocka_unit_test(test_nonconverge),
		cmocka_unit_test(test_slow_hello),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_destination_not_ready),
		cmocka_unit_test(test_catch_up),
		cmocka_unit_test(test_catch_up_old_receiver),
		cmocka_unit_test(test_page_hash_csum),
		cmocka_unit_test(test_guard_resumes),
		cmocka_unit_test(test_guard_cancels),
		cmocka_unit_test(test_no_guard_late),
		cmocka_unit_test(test_bandwidth_estimate),
		cmocka_unit_test(test_uri),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
