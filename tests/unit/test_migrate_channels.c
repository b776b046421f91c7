/* Channels (multifd, docs/stream.md 3.16) end to end in one process: a
 * sender with N channels over socketpairs, a receiver that takes them
 * through accept_channel, a writer rewriting the same pages flat out (the
 * ordering rule), a channel cut at several points (the error names it, the
 * workload runs on, a retry works), and the compression policy. */
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

#include "livemig/migrate.h"
#include "migrate/internal.h"
#include "support/dirty_check.h"
#include "support/mig_helpers.h"

/* The "network": connect_channel makes a socketpair (or a cutting proxy
 * for channel cut_index) and queues the receiver's end in a pipe, which
 * accept_channel reads. */
struct net {
	int pipe[2];
	int cut_index;	     /* -1: no cut */
	uint64_t cut_after;  /* sender -> receiver bytes on that channel */
	struct lm_test_proxy proxy;
	bool proxy_on;
	unsigned connects;
};

static int net_connect(void *arg, unsigned index)
{
	struct net *n = arg;
	int fds[2];
	n->connects++;
	if ((int)index == n->cut_index) {
		n->proxy = (struct lm_test_proxy){.cut_fwd = n->cut_after, .cut_back = UINT64_MAX};
		if (lm_test_proxy_start(&n->proxy, &fds[0], &fds[1]) < 0)
			return -EIO;
		n->proxy_on = true;
	} else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
		return -errno;
	}
	if (write(n->pipe[1], &fds[1], sizeof(int)) != sizeof(int))
		return -EIO;
	return fds[0];
}

static int net_accept(void *arg, int timeout_ms)
{
	struct net *n = arg;
	return lm_test_fd_pipe_accept(n->pipe[0], timeout_ms);
}

static void net_init(struct net *n)
{
	memset(n, 0, sizeof(*n));
	n->cut_index = -1;
	assert_int_equal(pipe(n->pipe), 0);
}

static void net_fini(struct net *n)
{
	if (n->proxy_on)
		lm_test_proxy_join(&n->proxy);
	lm_test_fd_pipe_drain(n->pipe[0]);
	close(n->pipe[0]);
	close(n->pipe[1]);
}

struct fixture {
	struct lm_mem_region r[2];
	struct lm_test_writer w;
	struct lm_dirty_source *src;
	struct lm_test_receiver rx;
	int fds[2];
	struct net net;
};

/* 16 MiB + 4 MiB far away; half the first region random, some text-like
 * (compressible) pages, zero pages, never-touched pages. */
static void fx_init(struct fixture *f, uint64_t rate)
{
	memset(f, 0, sizeof(*f));
	f->r[0] = (struct lm_mem_region){0, 4096, lm_test_map(4096)};
	f->r[1] = (struct lm_mem_region){1 << 20, 1024, lm_test_map(1024)};
	assert_non_null(f->r[0].host);
	assert_non_null(f->r[1].host);
	uint64_t rs = 7;
	for (uint64_t p = 0; p < 2048; p++)
		for (int k = 0; k < 512; k++)
			((uint64_t *)f->r[0].host)[p * 512 + k] = lm_test_rand(&rs);
	for (uint64_t p = 2048; p < 3000; p++)
		for (int k = 0; k < 4096; k++)
			((char *)f->r[0].host)[p * 4096 + k] = "the quick brown fox "[(k + p) % 20];
	memset(f->r[1].host, 0, 512 * LM_PAGE_SIZE);
	assert_int_equal(lm_sim_source_new(LM_SIM_MANUAL, &f->src), 0);
	f->w = (struct lm_test_writer){.regions = f->r, .n = 2, .mark = f->src, .bytes_per_sec = rate, .seed = 3};
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->fds), 0);
	net_init(&f->net);
	f->rx.p.accept_channel = net_accept;
	f->rx.p.channel_arg = &f->net;
	lm_test_dest_compare_with(&f->rx.dest, f->r, 2);
}

static void fx_fini(struct fixture *f)
{
	net_fini(&f->net);
	lm_dirty_source_free(f->src);
	munmap(f->r[0].host, 4096 * LM_PAGE_SIZE);
	munmap(f->r[1].host, 1024 * LM_PAGE_SIZE);
	lm_test_dest_free(&f->rx.dest);
	close(f->fds[0]);
	close(f->fds[1]);
}

static void params(struct lm_migrate_params *p, struct fixture *f, unsigned channels)
{
	lm_migrate_params_default(p);
	p->downtime_limit_ms = 5;
	p->max_rounds = 6;
	p->channels = channels;
	p->connect_channel = net_connect;
	p->channel_arg = &f->net;
}

/* The writer and the receiver started, one migration with p, both ends
 * succeeded (the writer stopped after it). */
static void send_ok(struct fixture *f, const struct lm_migrate_params *p, struct lm_migrate_stats *st)
{
	assert_int_equal(lm_test_writer_start(&f->w), 0);
	assert_int_equal(lm_test_receiver_start(&f->rx, f->fds[1]), 0);
	int err = lm_migrate_send(f->fds[0], f->r, 2, f->src, &lm_test_writer_ops, &f->w, p, st);
	int rerr = lm_test_receiver_join_after(&f->rx, f->fds[0], err);
	lm_test_writer_stop(&f->w);
	if (err || rerr)
		print_message("sender: %s\nreceiver: %s\n", st->error, f->rx.st.error);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
}

/* One live migration; 0 and the stats, memory compared at the switchover. */
static void migrate_ok(unsigned channels, uint64_t rate, bool compress)
{
	struct fixture f;
	fx_init(&f, rate);
	struct lm_migrate_params p;
	params(&p, &f, channels);
	p.compress = compress;
	p.compress_always = compress; /* the text must shrink, even on this fast socket */
	struct lm_migrate_stats st;
	send_ok(&f, &p, &st);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_int_equal(st.verify, LM_VERIFY_OK);
	assert_int_equal(st.channels, channels);
	assert_int_equal(f.rx.st.channels, channels);
	assert_int_equal(f.net.connects, channels);
	assert_true(st.normal >= 2900);
	if (rate)
		assert_true(st.duplicate > 0); /* a writer flat out may have written every zero page */
	/* Everything the channels sent was counted on both sides. */
	assert_int_equal(f.rx.st.received, st.transferred);
	/* Where userfaultfd works, the placer threads placed the pages. */
	if (lm_uffd_supported() == 0)
		assert_non_null(strstr(f.rx.st.fill, "uffdio-copy, a placer thread"));
	if (compress)
		assert_true(st.transferred < st.normal * LM_PAGE_SIZE); /* the text-like pages shrank */
	fx_fini(&f);
}

static void test_four_channels(void **state)
{
	(void)state;
	migrate_ok(4, 20u << 20, false);
}

/* The writer rewrites its pages as fast as it can: versions of one page in
 * many rounds, which must arrive in order (the stripe rule). */
static void test_fast_writer(void **state)
{
	(void)state;
	migrate_ok(3, 0, false);
}

static void test_channels_zstd(void **state)
{
	(void)state;
	migrate_ok(2, 20u << 20, true);
}

/* Out of rounds at once with the writer flat out: the pause carries most
 * of the memory on the channels, far more than the sockets buffer, so the
 * channels must keep flowing through the pause without any other record
 * on the main connection (docs/stream.md 3.16). */
static void test_big_final_pass(void **state)
{
	(void)state;
	struct fixture f;
	fx_init(&f, 0);
	struct lm_migrate_params p;
	params(&p, &f, 2);
	p.max_rounds = 1;
	p.downtime_limit_ms = 1;
	struct lm_migrate_stats st;
	send_ok(&f, &p, &st);
	assert_int_equal(f.rx.dest.mismatch, 0);
	print_message("final pass: %llu bytes\n", (unsigned long long)st.stop_copy_bytes);
	assert_true(st.stop_copy_bytes > (1u << 20));
	fx_fini(&f);
}

/*
 * Post-copy with channels: the channels' LAST SYNC comes before PENDING and
 * POSTCOPY (docs/stream.md 3.16), so no channel still places pages when the
 * receiver arms post-copy over all RAM; the receiver refuses POSTCOPY
 * before that SYNC. Forced after round 1 with the writer running.
 */
static void test_channels_postcopy(void **state)
{
	(void)state;
	char why[200];
	if (!lm__pc_dst_possible(why, sizeof(why))) {
		print_message("      skipped: %s\n", why);
		skip();
	}
	struct fixture f;
	fx_init(&f, 8u << 20);
	struct lm_migrate_params p;
	params(&p, &f, 2);
	p.postcopy = true;
	p.postcopy_after = 1;
	struct lm_migrate_stats st;
	send_ok(&f, &p, &st);
	assert_true(st.postcopy);
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	assert_int_equal(st.channels, 2);
	assert_int_equal(f.rx.st.channels, 2);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_int_equal(st.verify, LM_VERIFY_OK);
	fx_fini(&f);
}

/* A receiver that cannot take channels: the migration uses the main
 * connection alone. */
static void test_receiver_without_channels(void **state)
{
	(void)state;
	struct fixture f;
	fx_init(&f, 20u << 20);
	f.rx.p.accept_channel = NULL;
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_params p;
	params(&p, &f, 4);
	struct lm_migrate_stats st;
	int err = lm_migrate_send(f.fds[0], f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p, &st);
	int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
	lm_test_writer_stop(&f.w);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_int_equal(f.rx.dest.mismatch, 0);
	assert_int_equal(st.channels, 0);
	assert_int_equal(f.net.connects, 0);
	fx_fini(&f);
}

/*
 * Channel 1 of 3 cut after a number of bytes (inside its CHANNEL frame,
 * inside round 1's data, later): the migration fails naming the channel,
 * the workload runs on, and a retry on fresh connections completes.
 */
static void test_channel_cut(void **state)
{
	(void)state;
	/* Inside CHANNEL, right after it, in the first RAM record, later. */
	static const uint64_t cuts[] = {10, 36, 5000, 1u << 20, 2u << 20};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		struct fixture f;
		fx_init(&f, 20u << 20);
		f.net.cut_index = 1;
		f.net.cut_after = cuts[i];
		assert_int_equal(lm_test_writer_start(&f.w), 0);
		assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
		struct lm_migrate_params p;
		params(&p, &f, 3);
		struct lm_migrate_stats st;
		int err = lm_migrate_send(f.fds[0], f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p, &st);
		int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
		uint64_t c = lm_test_writer_count(&f.w);
		usleep(20000);
		uint64_t c2 = lm_test_writer_count(&f.w);
		print_message("cut at %llu: sender: %s\n  receiver: %s\n", (unsigned long long)cuts[i], st.error,
			      f.rx.st.error);
		assert_true(err < 0);
		assert_true(rerr < 0);
		assert_non_null(strstr(st.error, "channel 1"));
		assert_int_equal(st.status, LM_MIG_FAILED);
		assert_true(c2 > c); /* the workload runs on */
		assert_int_equal(f.w.pauses, f.w.resumes);
		assert_int_not_equal(f.rx.dest.finish_err, 0);

		/* The retry: new connections, the same workload. */
		close(f.fds[0]);
		close(f.fds[1]);
		lm_test_dest_free(&f.rx.dest);
		memset(&f.rx.dest, 0, sizeof(f.rx.dest));
		lm_test_dest_compare_with(&f.rx.dest, f.r, 2);
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f.fds), 0);
		net_fini(&f.net);
		net_init(&f.net);
		assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
		params(&p, &f, 3);
		err = lm_migrate_send(f.fds[0], f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p, &st);
		rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
		lm_test_writer_stop(&f.w);
		if (err || rerr)
			print_message("retry: sender: %s\nreceiver: %s\n", st.error, f.rx.st.error);
		assert_int_equal(err, 0);
		assert_int_equal(rerr, 0);
		assert_int_equal(f.rx.dest.mismatch, 0);
		assert_int_equal(st.channels, 3);
		fx_fini(&f);
	}
}

/* The compression policy: back off on runs that do not shrink, try again. */
static void test_zstd_policy(void **state)
{
	(void)state;
	struct lm__zstd_pol z = {0};
	assert_true(lm__zstd_next(&z));
	lm__zstd_result(&z, 4096, 1000); /* paid */
	assert_true(lm__zstd_next(&z));
	/* Incompressible: skip 1, then 2, then 4 ... runs before trying. */
	unsigned expect = 1;
	for (int round = 0; round < 10; round++) {
		lm__zstd_result(&z, 4096, 0);
		unsigned skipped = 0;
		while (!lm__zstd_next(&z))
			skipped++;
		assert_int_equal(skipped, expect);
		expect = expect * 2 > LM__ZSTD_MAX_BACKOFF ? LM__ZSTD_MAX_BACKOFF : expect * 2;
	}
	/* Barely shrinking (less than an eighth) does not pay either. */
	lm__zstd_result(&z, 4096, 4000);
	assert_false(lm__zstd_next(&z));
	/* Data that compresses again resets the backoff. */
	while (!lm__zstd_next(&z))
		;
	lm__zstd_result(&z, 4096, 512);
	assert_true(lm__zstd_next(&z));
	lm__zstd_result(&z, 4096, 0);
	assert_false(lm__zstd_next(&z));
	assert_true(lm__zstd_next(&z));
}

/* Feeds `total` raw bytes in runs of 1 MiB to the window policy, each
 * costing ns_zstd or ns_plain per byte in the mode the policy chose; the
 * bytes sent with zstd tried. */
static uint64_t zstd_feed(struct lm__zstd_pol *z, uint64_t total, double ns_zstd, double ns_plain)
{
	uint64_t zbytes = 0;
	for (uint64_t done = 0; done < total; done += 1u << 20) {
		bool plain = z->plain;
		if (!plain)
			zbytes += 1u << 20;
		lm__zstd_encoded(z, 1u << 20, 1u << 19, (1u << 20) * (plain ? ns_plain : ns_zstd) * 1e-9);
		lm__zstd_wrote(z, 0); /* a write that took no time */
	}
	return zbytes;
}

/* The window policy: zstd switches itself off where the CPU is the
 * bottleneck (compressing costs more per byte than sending), stays on
 * where the link is, and follows a change between the two. */
static void test_zstd_window(void **state)
{
	(void)state;
	const uint64_t gib = 1ull << 30;
	/* Loopback-like: zstd 3.7 ns/B, plain 0.7 ns/B. Measured once each,
	 * then tried again ever more rarely: under 3% of the bytes. */
	struct lm__zstd_pol z = {0};
	assert_true(lm__zstd_next(&z)); /* starts by measuring zstd */
	uint64_t zb = zstd_feed(&z, gib, 3.7, 0.7);
	assert_true(z.plain);
	assert_false(lm__zstd_next(&z));
	assert_true(zb < gib * 3 / 100);
	assert_true(z.plain_windows > 0 && z.zstd_windows > 0);
	/* A 1 Gbit/s-like link: zstd 3.6 ns/B, plain 8 ns/B: zstd keeps over
	 * 85% of the bytes. */
	struct lm__zstd_pol y = {0};
	zb = zstd_feed(&y, gib, 3.6, 8.0);
	assert_false(y.plain);
	assert_true(zb > gib * 85 / 100);
	/* The link changes: from slow to fast, zstd goes off within the
	 * longest wait (32 windows of 16 MiB) plus a try; and back. */
	zstd_feed(&y, 1ull << 30, 3.6, 0.7);
	assert_true(y.plain);
	zstd_feed(&y, 1ull << 30, 3.6, 8.0);
	assert_false(y.plain);
	/* The per-run backoff still applies in the zstd windows. */
	lm__zstd_result(&y, 4096, 0);
	assert_false(lm__zstd_next(&y));
	assert_true(lm__zstd_next(&y));
}

/*
 * A link with buffers: raw runs of 1 MiB, encoded at enc_zstd or
 * enc_plain ns per raw byte (zstd makes `ratio` wire bytes of each raw
 * byte), written into `buf` bytes of socket and link buffers that drain at
 * `link` bytes per ns; a write blocks while the buffers are full. The
 * policy's clocks are what the lane would measure. Returns the raw bytes
 * sent with zstd tried; *ns: the simulated time.
 */
static uint64_t zstd_link(struct lm__zstd_pol *z, uint64_t total, double enc_zstd, double enc_plain, double ratio,
			  double link, double buf, double *ns)
{
	uint64_t zbytes = 0;
	double t = 0, q = 0; /* ns, bytes queued */
	const double raw = 1u << 20;
	for (uint64_t done = 0; done < total; done += 1u << 20) {
		bool plain = z->plain;
		double enc = raw * (plain ? enc_plain : enc_zstd), wire = plain ? raw : raw * ratio;
		if (!plain)
			zbytes += 1u << 20;
		t += enc;
		q = q > enc * link ? q - enc * link : 0;
		lm__zstd_encoded(z, 1u << 20, (uint64_t)wire, enc * 1e-9);
		double wait = q + wire > buf ? (q + wire - buf) / link : 0;
		t += wait;
		q = q + wire - wait * link;
		lm__zstd_wrote(z, wait * 1e-9);
	}
	*ns += t;
	return zbytes;
}

/* The buffers a switch of mode meets do not decide: on a 1 Gbit/s-like
 * link with 8 MiB of buffers (zstd 3 ns/B at a ratio of 0.29, plain
 * 0.7 ns/B, the link 8 ns/B) zstd keeps most of the bytes and the run
 * takes not much longer than zstd alone; on a fast link (0.4 ns/B) plain
 * does. */
static void test_zstd_buffers(void **state)
{
	(void)state;
	const uint64_t gib = 1ull << 30;
	const double buf = 8u << 20;
	struct lm__zstd_pol z = {0};
	double ns = 0, alone = 0;
	uint64_t zb = zstd_link(&z, gib, 3.0, 0.7, 0.29, 0.125, buf, &ns);
	assert_false(z.plain);
	assert_true(zb > gib * 90 / 100);
	alone = (double)gib * 3.0; /* zstd alone is CPU-bound: 0.29 x 8 < 3 ns/B */
	assert_true(ns < alone * 1.15);
	/* Fast link: plain. */
	struct lm__zstd_pol y = {0};
	ns = 0;
	zb = zstd_link(&y, gib, 3.0, 0.7, 0.29, 2.5, buf, &ns);
	assert_true(y.plain);
	assert_true(zb < gib * 5 / 100);
	/* The slow link again: back to zstd within the longest wait. */
	zstd_link(&y, 1ull << 30, 3.0, 0.7, 0.29, 0.125, buf, &ns);
	assert_false(y.plain);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_zstd_policy),
	    cmocka_unit_test(test_zstd_window),
	    cmocka_unit_test(test_zstd_buffers),
	    cmocka_unit_test(test_four_channels),
	    cmocka_unit_test(test_fast_writer),
	    cmocka_unit_test(test_channels_zstd),
	    cmocka_unit_test(test_big_final_pass),
	    cmocka_unit_test(test_channels_postcopy),
	    cmocka_unit_test(test_receiver_without_channels),
	    cmocka_unit_test(test_channel_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
