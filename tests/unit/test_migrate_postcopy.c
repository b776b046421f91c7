/*
 * Post-copy through the engine in one process (docs/stream.md 3.14): a
 * writer thread dirties memory faster than the capped link carries, the
 * sender switches to post-copy, and on the destination a reader thread
 * starts at once (as a VMM's device model or a vCPU would) and reads every
 * page, last to first, while the background push goes first to last: it
 * faults on pages still missing, which are then asked for, and on pages
 * never written, which read as zero. Every page it reads must equal the
 * paused source's; the digest and the sender's completeness check must
 * pass. A connection cut in post-copy leaves the source paused (never
 * resumed: its copy is the guest at the switch) with an error that says
 * so; with a recovery connection it goes on, also when the first cut
 * falls between COMMIT and COMMITTED. migrate-start-postcopy switches a
 * migration the policy would not.
 *
 * No assertion depends on timing; the link cap only makes post-copy last
 * long enough for the reader to get ahead of the push.
 */
#include <errno.h>
#include <pthread.h>
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
#include "migrate/internal.h"
#include "support/dirty_check.h"
#include "support/mig_helpers.h"

#define R0_PAGES 4096u /* 16 MiB */
#define R1_FIRST (1u << 20)
#define R1_PAGES 1024u /* 4 MiB, far away */

struct fixture {
	struct lm_mem_region r[2];
	struct lm_test_writer w;
	struct lm_dirty_source *src;
	struct lm_test_receiver rx;
	int fds[2];
	/* the destination's reader */
	pthread_t reader;
	bool reader_on;
	uint64_t read_pages, mismatches, first_mismatch;
};

static bool usable(void)
{
	char why[200];
	if (lm__pc_dst_possible(why, sizeof(why)))
		return true;
	print_message("      skipped: %s\n", why);
	return false;
}

static void fx_init(struct fixture *f, uint64_t rate)
{
	memset(f, 0, sizeof(*f));
	f->r[0] = (struct lm_mem_region){ 0, R0_PAGES, lm_test_map(R0_PAGES) };
	f->r[1] = (struct lm_mem_region){ R1_FIRST, R1_PAGES, lm_test_map(R1_PAGES) };
	assert_non_null(f->r[0].host);
	assert_non_null(f->r[1].host);
	uint64_t rs = 7;
	for (uint64_t p = 0; p < 3000; p += 2)
		for (int k = 0; k < 512; k++)
			((uint64_t *)f->r[0].host)[p * 512 + k] = lm_test_rand(&rs);
	memset(f->r[1].host, 0, 512 * LM_PAGE_SIZE); /* zero, but written */
	assert_int_equal(lm_sim_source_new(LM_SIM_MANUAL, &f->src), 0);
	f->w = (struct lm_test_writer){ .regions = f->r, .n = 2, .mark = f->src, .bytes_per_sec = rate, .seed = 3 };
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->fds), 0);
	f->rx.dest.user = f;
}

static void fx_fini(struct fixture *f)
{
	lm_dirty_source_free(f->src);
	munmap(f->r[0].host, R0_PAGES * LM_PAGE_SIZE);
	munmap(f->r[1].host, R1_PAGES * LM_PAGE_SIZE);
	lm_test_dest_free(&f->rx.dest);
	close(f->fds[0]);
	close(f->fds[1]);
}

/* Post-copy after round 1 over an 8 MB/s link, whatever the rates. */
static void pc_params(struct lm_migrate_params *p)
{
	lm_migrate_params_default(p);
	p->downtime_limit_ms = 1;
	p->postcopy = true;
	p->postcopy_after = 1;
	p->max_bandwidth = 8u << 20;
}

/* The destination's reader: every page, last to first, against the paused
 * source (which no one writes any more: the writer is paused for good). */
static void *reader_main(void *arg)
{
	struct fixture *f = arg;
	struct lm_test_dest *d = &f->rx.dest;
	for (size_t k = d->n; k-- > 0;) {
		const uint8_t *src = f->r[k].host;
		const uint8_t *dst = d->r[k].host;
		for (uint64_t i = d->r[k].npages; i-- > 0;) {
			if (memcmp(dst + i * LM_PAGE_SIZE, src + i * LM_PAGE_SIZE, LM_PAGE_SIZE)) {
				if (!f->mismatches)
					f->first_mismatch = d->r[k].first_page + i;
				f->mismatches++;
			}
			f->read_pages++;
		}
	}
	return NULL;
}

static int start_reader(struct lm_test_dest *d)
{
	struct fixture *f = d->user;
	if (pthread_create(&f->reader, NULL, reader_main, f))
		return -EAGAIN;
	f->reader_on = true;
	return 0;
}

/*
 * The whole post-copy: switched after round 1, the reader's faults served
 * first, every page equal to the source's, the digest and the
 * completeness check passing, the source never resumed.
 */
static void test_postcopy_reader(void **state)
{
	(void)state;
	if (!usable())
		skip();
	struct fixture f;
	fx_init(&f, 8u << 20);
	f.rx.dest.on_postcopy = start_reader;
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_params p;
	pc_params(&p);
	struct lm_migrate_stats st;
	int err = lm_migrate_send(f.fds[0], f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p, &st);
	int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
	lm_test_writer_stop(&f.w);
	if (err || rerr)
		/* The reader not joined: after a failed post-copy one waiting
		 * for a page that will never come waits forever, as the guest
		 * would (the destination keeps the pages missing). */
		fail_msg("post-copy failed: sender: %s; receiver: %s", st.error, f.rx.st.error);
	if (f.reader_on)
		pthread_join(f.reader, NULL);
	print_message("      %llu pending, %llu asked for in %llu requests, %llu pushed; page wait p50 %llu us, "
		      "p99 %llu us; downtime %.3f ms\n",
		      (unsigned long long)st.postcopy_pending, (unsigned long long)st.postcopy_pages_requested,
		      (unsigned long long)st.postcopy_requests, (unsigned long long)st.postcopy_pages_pushed,
		      (unsigned long long)f.rx.st.postcopy_latency_p50_us,
		      (unsigned long long)f.rx.st.postcopy_latency_p99_us, st.downtime_us / 1000.0);
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	assert_true(st.postcopy);
	assert_int_equal(st.rounds, 1);
	assert_true(st.postcopy_pending > 0);
	assert_int_equal(st.postcopy_pages_requested + st.postcopy_pages_pushed, st.postcopy_pending);
	assert_true(f.rx.st.postcopy && f.rx.st.postcopy_started && f.rx.st.postcopy_complete);
	assert_int_equal(f.rx.st.postcopy_pending, st.postcopy_pending);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(st.verify, LM_VERIFY_OK);
	assert_int_equal(f.rx.dest.postcopy_starts, 1);
	assert_int_equal(f.rx.dest.finish_err, 0);
	/* The reader saw every page, each equal to the source's. */
	assert_int_equal(f.read_pages, R0_PAGES + R1_PAGES);
	if (f.mismatches)
		fail_msg("%llu pages differ, the first %llu", (unsigned long long)f.mismatches,
			 (unsigned long long)f.first_mismatch);
	/* It got ahead of the push: it waited for pages, which were asked for;
	 * and it read never-written ones, which were zero-filled. */
	assert_true(f.rx.st.postcopy_requests > 0);
	assert_true(st.postcopy_requests > 0);
	assert_true(f.rx.st.postcopy_zero_faults > 0);
	assert_true(f.rx.st.postcopy_latency_max_us >= f.rx.st.postcopy_latency_p50_us);
	/* The source was paused once and never resumed. */
	assert_int_equal(f.w.pauses, 1);
	assert_int_equal(f.w.resumes, 0);
	fx_fini(&f);
}

/* A test point in the receiver (cut_point: by default once the guest runs
 * in post-copy): cut the connection there, as a dead link would. */
static int cut_fd = -1;
static const char *cut_point = "receiver-postcopy-running";
static void cut_at(const char *name, void *arg)
{
	(void)arg;
	if (!strcmp(name, cut_point))
		shutdown(cut_fd, SHUT_RDWR);
}

/*
 * A cut in post-copy with no recovery: neither side can finish. The
 * destination (without a reconnect callback) reports that post-copy broke
 * off with pages still at the source; the source waits paused for a
 * recovery (postcopy-paused) and, given up (a cancel), ends keeping its
 * copy paused (never resumed) and says how many pages had not gone out.
 */
static void test_postcopy_cut(void **state)
{
	(void)state;
	if (!usable())
		skip();
	struct fixture f;
	fx_init(&f, 8u << 20);
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	cut_fd = f.fds[1];
	cut_point = "receiver-postcopy-running";
	lm__test_point_set(cut_at, NULL);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_params p;
	pc_params(&p);
	struct lm_migrate_stats st;
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p), 0);
	assert_int_equal(lm_migration_start(m, f.fds[0]), 0);
	int rerr = lm_test_receiver_join(&f.rx);
	lm__test_point_set(NULL, NULL);
	for (int i = 0; i < 6000; i++) {
		lm_migration_query(m, &st);
		if (st.status == LM_MIG_POSTCOPY_PAUSED)
			break;
		usleep(10000);
	}
	assert_int_equal(st.status, LM_MIG_POSTCOPY_PAUSED);
	assert_non_null(strstr(st.error, "waiting for `migrate --resume`"));
	lm_migration_cancel(m);
	int err = lm_migration_wait(m);
	lm_migration_query(m, &st);
	assert_int_equal(lm_migration_resume(m, -1), -EINVAL); /* over: nothing to resume */
	lm_migration_free(m);
	lm_test_writer_stop(&f.w);
	print_message("      sender: %s\n      receiver: %s\n", st.error, f.rx.st.error);
	assert_int_equal(err, -ENOLINK);
	assert_int_equal(st.status, LM_MIG_FAILED);
	assert_non_null(strstr(st.error, "post-copy broke off with"));
	assert_non_null(strstr(st.error, "this copy stays paused, the guest as it was at the switch"));
	assert_int_equal(f.w.pauses, 1);
	assert_int_equal(f.w.resumes, 0);
	assert_true(rerr < 0);
	assert_true(f.rx.st.postcopy_started);
	assert_false(f.rx.st.postcopy_complete);
	assert_non_null(strstr(f.rx.st.error, "post-copy broke off"));
	assert_int_not_equal(f.rx.dest.finish_err, 0);
	fx_fini(&f);
}

/*
 * Recovery (docs/stream.md 3.15): the post-copy connection is cut 21 times
 * at different points: first when the guest starts on the destination,
 * then 20 recovery connections each after a different number of bytes
 * (inside RESUME itself, which leaves both sides waiting again; in a run
 * header; deep in page data; ...); the 22nd connection is left alone. Each
 * time the source, paused, gets a new connection (lm_migration_resume) and
 * goes on.
 * The reader on the destination waits through the cuts; every page it
 * reads equals the source's, and the digest and completeness check pass.
 */
#define CUTS 20
static struct lm_test_proxy proxies[CUTS + 1];
static int nproxies;
static int next_sender_fd = -1; /* handed from the receiver's thread to the test's */
static pthread_mutex_t next_lock = PTHREAD_MUTEX_INITIALIZER;
static bool no_more; /* the source is over: no more connections (under next_lock) */

static int reconnect_via_proxy(void *arg, const char *why)
{
	(void)arg;
	(void)why;
	/* Held throughout: the source giving up (no_more) either comes
	 * before, or finds the connection made and closes it. */
	pthread_mutex_lock(&next_lock);
	if (nproxies > CUTS || no_more) {
		pthread_mutex_unlock(&next_lock);
		return -ECANCELED;
	}
	struct lm_test_proxy *p = &proxies[nproxies];
	memset(p, 0, sizeof(*p));
	/* Cut points spread from inside RESUME (24 bytes + header) to deep
	 * into page data; the last connection is never cut. */
	static const uint64_t cuts[CUTS] = {0, 20, 36, 50, 4000, 4200, 70000, 100, 300000, 12, 1 << 20, 66000,
					    28, 9000, 500000, 44, 131072, 700, 2000000, 0};
	p->cut_fwd = nproxies == CUTS ? UINT64_MAX : cuts[nproxies] ? cuts[nproxies] : 5000;
	p->cut_back = UINT64_MAX;
	int sfd, rfd;
	if (lm_test_proxy_start(p, &sfd, &rfd) < 0) {
		pthread_mutex_unlock(&next_lock);
		return -EAGAIN;
	}
	nproxies++;
	next_sender_fd = sfd;
	pthread_mutex_unlock(&next_lock);
	return rfd;
}

static struct lm_migrate_stats recovery_case(const char *point)
{
	if (!usable())
		skip();
	/* On the heap, and left there if the case fails: the reader may then
	 * stay blocked on a page that never came, or still run, with its
	 * pointers into the fixture. */
	struct fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	fx_init(fx, 8u << 20);
	fx->rx.dest.on_postcopy = start_reader;
	fx->rx.p.reconnect = reconnect_via_proxy;
	nproxies = 0;
	next_sender_fd = -1;
	no_more = false;
	assert_int_equal(lm_test_writer_start(&fx->w), 0);
	cut_fd = fx->fds[1];
	cut_point = point;
	lm__test_point_set(cut_at, NULL);
	assert_int_equal(lm_test_receiver_start(&fx->rx, fx->fds[1]), 0);
	struct lm_migrate_params p;
	pc_params(&p);
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, fx->r, 2, fx->src, &lm_test_writer_ops, &fx->w, &p), 0);
	assert_int_equal(lm_migration_start(m, fx->fds[0]), 0);
	struct lm_migrate_stats st;
	int resumes = 0;
	for (int i = 0; i < 60000; i++) {
		lm_migration_query(m, &st);
		if (st.status == LM_MIG_COMPLETED || st.status == LM_MIG_FAILED || st.status == LM_MIG_CANCELLED)
			break;
		if (st.status == LM_MIG_POSTCOPY_PAUSED) {
			pthread_mutex_lock(&next_lock);
			int fd = next_sender_fd;
			next_sender_fd = -1;
			pthread_mutex_unlock(&next_lock);
			if (fd >= 0) {
				assert_int_equal(lm_migration_resume(m, fd), 0);
				resumes++;
			}
		}
		usleep(2000);
	}
	int err = lm_migration_wait(m);
	lm_migration_query(m, &st);
	lm_migration_free(m);
	/* A source that gave up takes no recovery connection: the one the
	 * destination waits on, if any, is closed, and it is told no more. */
	pthread_mutex_lock(&next_lock);
	no_more = true;
	if (next_sender_fd >= 0)
		close(next_sender_fd);
	next_sender_fd = -1;
	pthread_mutex_unlock(&next_lock);
	int rerr = lm_test_receiver_join_after(&fx->rx, fx->fds[0], err);
	lm__test_point_set(NULL, NULL);
	lm_test_writer_stop(&fx->w);
	for (int i = 0; i < nproxies; i++)
		lm_test_proxy_join(&proxies[i]);
	if (err || rerr)
		/* The reader not joined: one waiting for a page that will never
		 * come waits forever, as the guest would. */
		fail_msg("post-copy did not recover: sender: %s; receiver: %s", st.error, fx->rx.st.error);
	if (fx->reader_on)
		pthread_join(fx->reader, NULL);
	print_message("      %d cuts, %llu recoveries (source), %llu (destination), %llu pending, %llu asked for\n",
		      nproxies, (unsigned long long)st.postcopy_recoveries,
		      (unsigned long long)fx->rx.st.postcopy_recoveries, (unsigned long long)st.postcopy_pending,
		      (unsigned long long)st.postcopy_requests);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	/* Every cut was survived: 21 connections cut, a 22nd to finish. The
	 * ones cut inside RESUME/RESUMED are no recovery on either side. */
	assert_int_equal(nproxies, CUTS + 1);
	/* A RESUMED that left the destination but was cut on its way counts
	 * there, not here. */
	assert_true(st.postcopy_recoveries <= fx->rx.st.postcopy_recoveries);
	assert_true(st.postcopy_recoveries > CUTS / 2);
	assert_true(fx->rx.st.digest_ok);
	assert_int_equal(st.verify, LM_VERIFY_OK);
	assert_int_equal(fx->read_pages, R0_PAGES + R1_PAGES);
	if (fx->mismatches)
		fail_msg("%llu pages differ, the first %llu", (unsigned long long)fx->mismatches,
			 (unsigned long long)fx->first_mismatch);
	assert_int_equal(fx->w.resumes, 0);
	fx_fini(fx);
	free(fx);
	return st;
}

static void test_postcopy_recovery(void **state)
{
	(void)state;
	recovery_case("receiver-postcopy-running");
}

/*
 * The first cut between COMMIT and COMMITTED (docs/stream.md 3.14): the
 * destination read COMMIT and runs the guest, its COMMITTED is lost. The
 * source waits for a recovery as after any later break (it made its
 * promise with COMMIT), and the same recoveries as above finish the
 * migration with every page.
 */
static void test_postcopy_recovery_at_commit(void **state)
{
	(void)state;
	struct lm_migrate_stats st = recovery_case("receiver-after-commit");
	assert_false(st.commit_acked);
}

/*
 * migrate-start-postcopy: with postcopy-after far away the policy would
 * go on with rounds; the call switches at the end of the round. Without
 * postcopy-ram it is refused, and after the switch it is too late.
 */
static void test_start_postcopy(void **state)
{
	(void)state;
	if (!usable())
		skip();
	struct fixture f;
	fx_init(&f, 8u << 20);
	assert_int_equal(lm_test_writer_start(&f.w), 0);
	assert_int_equal(lm_test_receiver_start(&f.rx, f.fds[1]), 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.downtime_limit_ms = 1;
	p.max_rounds = 100000;
	p.postcopy = true;
	p.postcopy_after = 100000;
	p.max_bandwidth = 16u << 20;
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p), 0);
	assert_int_equal(lm_migration_start(m, f.fds[0]), 0);
	struct lm_migrate_stats st;
	for (int i = 0; i < 3000; i++) {
		lm_migration_query(m, &st);
		if (st.rounds >= 3 || st.status > LM_MIG_DEVICE)
			break;
		usleep(10000);
	}
	assert_true(st.rounds >= 3);
	assert_false(st.postcopy);
	assert_int_equal(lm_migration_start_postcopy(m), 0);
	int err = lm_migration_wait(m);
	lm_migration_query(m, &st);
	assert_int_equal(lm_migration_start_postcopy(m), -EALREADY);
	lm_migration_free(m);
	int rerr = lm_test_receiver_join_after(&f.rx, f.fds[0], err);
	lm_test_writer_stop(&f.w);
	if (err || rerr)
		print_message("sender: %s\nreceiver: %s\n", st.error, f.rx.st.error);
	assert_int_equal(err, 0);
	assert_int_equal(rerr, 0);
	assert_true(st.postcopy);
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(st.verify, LM_VERIFY_OK);
	fx_fini(&f);

	/* Not allowed: refused before anything happens. */
	fx_init(&f, 0);
	p.postcopy = false;
	assert_int_equal(lm_migration_new(&m, f.r, 2, f.src, &lm_test_writer_ops, &f.w, &p), 0);
	assert_int_equal(lm_migration_start_postcopy(m), -EINVAL);
	lm_migration_free(m);
	fx_fini(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_postcopy_reader),
		cmocka_unit_test(test_postcopy_cut),
		cmocka_unit_test(test_postcopy_recovery),
		cmocka_unit_test(test_postcopy_recovery_at_commit),
		cmocka_unit_test(test_start_postcopy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
