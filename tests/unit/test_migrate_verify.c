/* The completeness check (docs/stream.md 5.2): after the switchover the
 * sender compares its paused memory with what it sent, page by page. A
 * write the dirty source lost (fault injection: the software source drops
 * one harvested mark, lm__sim_drop_once) is found by page number, with the
 * workload still paused; the same migration without the fault checks
 * clean; verify=digest skips the check, verify=none the digest too (when
 * the receiver allows no-digest). And the commit rules seen from the
 * engine: a connection cut after COMMIT arrived (no COMMITTED) leaves the
 * sender unconfirmed and paused while the receiver runs; a cut after
 * RESULT ok, before COMMIT, resumes the sender and leaves the receiver
 * holding its copy (-ENOLINK). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
#include "track/internal.h"

#define NPAGES 4096 /* 16 MiB */
#define LOST_PAGE 1234

struct fixture {
	struct lm_mem_region r;
	struct lm_dirty_source *src;
	struct lm_test_writer w;
	struct lm_test_receiver rx;
	int fds[2];
	bool drop;      /* lose LOST_PAGE's last write */
	uint64_t lost_value;
};

static struct fixture *cur;

/* pause(): the writer stops; then one more write lands on LOST_PAGE just
 * before the workload counts as paused, and its mark is logged as usual.
 * With the fault armed the final harvest drops that mark: the page's last
 * version is never sent. */
static int pause_and_write(void *ctx)
{
	struct fixture *f = cur;
	int err = lm_test_writer_ops.pause(ctx);
	if (err)
		return err;
	uint64_t *p = (uint64_t *)((uint8_t *)f->r.host + (uint64_t)LOST_PAGE * LM_PAGE_SIZE);
	f->lost_value = 0x10570000u + f->w.pauses;
	p[7] = f->lost_value;
	if (f->drop)
		lm__sim_drop_once(f->src, LOST_PAGE);
	lm_sim_mark(f->src, LOST_PAGE);
	return 0;
}

static struct lm_workload_ops ops;

static void fx_init(struct fixture *f, bool drop)
{
	memset(f, 0, sizeof(*f));
	cur = f;
	f->drop = drop;
	f->r = (struct lm_mem_region){ 0, NPAGES, lm_test_map(NPAGES) };
	assert_non_null(f->r.host);
	uint64_t rs = 17;
	/* Half the pages hold data, the rest stay untouched (never read). */
	for (uint64_t p = 0; p < NPAGES; p += 2)
		for (int k = 0; k < 512; k++)
			((uint64_t *)f->r.host)[p * 512 + k] = lm_test_rand(&rs);
	assert_int_equal(lm_sim_source_new(LM_SIM_EXCHANGE, &f->src), 0);
	f->w = (struct lm_test_writer){ .regions = &f->r, .n = 1, .mark = f->src, .bytes_per_sec = 16u << 20,
					.seed = 9 };
	ops = lm_test_writer_ops;
	ops.pause = pause_and_write;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->fds), 0);
}

static void fx_fini(struct fixture *f)
{
	__atomic_store_n(&f->w.pause_req, 0, __ATOMIC_RELEASE);
	lm_test_writer_stop(&f->w);
	lm_dirty_source_free(f->src);
	munmap(f->r.host, NPAGES * LM_PAGE_SIZE);
	lm_test_dest_free(&f->rx.dest);
	close(f->fds[0]);
	close(f->fds[1]);
	lm__test_point_set(NULL, NULL);
}

/* One migration of the fixture; the sender's result, the receiver's in *rerr. */
static int send_recv(struct fixture *f, enum lm_verify_mode v, struct lm_migrate_stats *st, int *rerr)
{
	assert_int_equal(lm_test_writer_start(&f->w), 0);
	assert_int_equal(lm_test_receiver_start(&f->rx, f->fds[1]), 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.downtime_limit_ms = 20;
	p.max_rounds = 5;
	p.verify = v;
	int err = lm_migrate_send(f->fds[0], &f->r, 1, f->src, &ops, &f->w, &p, st);
	*rerr = lm_test_receiver_join_after(&f->rx, f->fds[0], err);
	print_message("sender: %s (%s, %llu pages compared, %llu mismatches) | receiver: %s\n",
		      err ? st->error : "ok", lm_verify_state_name(st->verify),
		      (unsigned long long)st->verify_pages, (unsigned long long)st->verify_mismatches,
		      *rerr ? f->rx.st.error : "ok");
	return err;
}

static int migrate(struct fixture *f, enum lm_verify_mode v, struct lm_migrate_stats *st)
{
	int rerr, err = send_recv(f, v, st, &rerr);
	return err ? err : rerr;
}

static void test_clean(void **state)
{
	struct fixture f;
	fx_init(&f, false);
	struct lm_migrate_stats st;
	assert_int_equal(migrate(&f, LM_VERIFY_FULL, &st), 0);
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	assert_true(st.commit_acked);
	assert_true(f.rx.st.committed_sent);
	assert_int_equal(st.verify, LM_VERIFY_OK);
	assert_int_equal(st.verify_mismatches, 0);
	/* Every page that holds data was compared, the untouched ones were
	 * not read: at least the data half, at most all of it. */
	assert_true(st.verify_pages >= NPAGES / 2);
	assert_true(st.verify_pages <= NPAGES);
	/* The destination got the last write. */
	uint64_t *d = (uint64_t *)((uint8_t *)f.rx.dest.r[0].host + (uint64_t)LOST_PAGE * LM_PAGE_SIZE);
	assert_int_equal(d[7], f.lost_value);
	/* Completed: the workload stays paused, it runs on the destination. */
	assert_int_equal(f.w.resumes, 0);
	fx_fini(&f);
}

static void test_lost_page_found(void **state)
{
	struct fixture f;
	fx_init(&f, true);
	struct lm_migrate_stats st;
	/* The digest cannot see it: both sides agree on the stale page. */
	assert_int_equal(migrate(&f, LM_VERIFY_FULL, &st), 0);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	uint64_t *d = (uint64_t *)((uint8_t *)f.rx.dest.r[0].host + (uint64_t)LOST_PAGE * LM_PAGE_SIZE);
	uint64_t *s = (uint64_t *)((uint8_t *)f.r.host + (uint64_t)LOST_PAGE * LM_PAGE_SIZE);
	assert_int_not_equal(d[7], f.lost_value); /* the write really was lost */
	assert_int_equal(s[7], f.lost_value);
	/* The check finds exactly that page, by number. */
	assert_int_equal(st.verify, LM_VERIFY_MISMATCH);
	assert_int_equal(st.verify_mismatches, 1);
	assert_int_equal(st.verify_first[0], LOST_PAGE);
	/* The source still holds its paused copy, the right one. */
	assert_int_equal(f.w.resumes, 0);
	assert_true(__atomic_load_n(&f.w.pause_req, __ATOMIC_ACQUIRE));
	char *js = lm_migrate_stats_json(&st), *tb = lm_migrate_stats_table(&st);
	assert_non_null(strstr(js, "\"mismatch\""));
	assert_non_null(strstr(js, "1234"));
	assert_non_null(strstr(tb, "MISMATCH"));
	print_message("%s", tb);
	free(js);
	free(tb);
	fx_fini(&f);
}

static void test_digest_only(void **state)
{
	struct fixture f;
	fx_init(&f, true);
	struct lm_migrate_stats st;
	assert_int_equal(migrate(&f, LM_VERIFY_DIGEST, &st), 0);
	assert_int_equal(st.verify, LM_VERIFY_NOT_RUN);
	assert_int_equal(st.verify_pages, 0);
	fx_fini(&f);
}

/* verify=none: no digest on either side when the receiver accepts it; a
 * receiver that insists gets the digest all the same. */
static void test_none(void **state)
{
	struct fixture f;
	fx_init(&f, false);
	struct lm_migrate_stats st;
	assert_int_equal(migrate(&f, LM_VERIFY_NONE, &st), 0);
	assert_true(f.rx.st.caps & LM_CAP_NO_DIGEST);
	assert_false(f.rx.st.digest_ok);
	assert_int_equal(st.verify, LM_VERIFY_NOT_RUN);
	uint64_t *d = (uint64_t *)((uint8_t *)f.rx.dest.r[0].host + (uint64_t)LOST_PAGE * LM_PAGE_SIZE);
	assert_int_equal(d[7], f.lost_value);
	fx_fini(&f);

	fx_init(&f, false);
	f.rx.p.caps_disabled = LM_CAP_NO_DIGEST;
	assert_int_equal(migrate(&f, LM_VERIFY_NONE, &st), 0);
	assert_false(f.rx.st.caps & LM_CAP_NO_DIGEST);
	assert_true(f.rx.st.digest_ok);
	fx_fini(&f);
}

/* Cut the receiver's connection at one named test point. */
static const char *cut_at;
static int cut_fd = -1;
static void cut(const char *name, void *arg)
{
	if (cut_at && !strcmp(name, cut_at))
		shutdown(cut_fd, SHUT_RDWR);
}

static void test_no_committed(void **state)
{
	struct fixture f;
	fx_init(&f, false);
	cut_at = "receiver-after-commit";
	cut_fd = f.fds[1];
	lm__test_point_set(cut, NULL);
	struct lm_migrate_stats st;
	int rerr, err = send_recv(&f, LM_VERIFY_FULL, &st, &rerr);
	/* The receiver read COMMIT and runs the guest ... */
	assert_int_equal(rerr, 0);
	assert_false(f.rx.st.committed_sent);
	/* ... the sender cannot know: unconfirmed, and its copy stays paused. */
	assert_int_equal(err, -ENOLINK);
	assert_int_equal(st.status, LM_MIG_UNCONFIRMED);
	assert_false(st.commit_acked);
	assert_non_null(strstr(st.error, "not acknowledged"));
	assert_int_equal(f.w.resumes, 0);
	assert_true(__atomic_load_n(&f.w.pause_req, __ATOMIC_ACQUIRE));
	fx_fini(&f);
}

static void test_no_commit(void **state)
{
	struct fixture f;
	fx_init(&f, false);
	/* The sender read RESULT ok; its connection breaks before COMMIT. */
	cut_at = "sender-after-result";
	cut_fd = f.fds[0];
	lm__test_point_set(cut, NULL);
	struct lm_migrate_stats st;
	int rerr, err = send_recv(&f, LM_VERIFY_FULL, &st, &rerr);
	/* The receiver verified everything but got no COMMIT: it keeps its
	 * copy (neither runs nor drops it). */
	assert_int_equal(rerr, -ENOLINK);
	assert_true(f.rx.st.wait_commit);
	assert_true(f.rx.st.digest_ok);
	assert_int_equal(f.rx.dest.finish_err, -ENOLINK);
	/* The sender could not write COMMIT, so the receiver cannot have
	 * read it: it resumed its workload (the guest runs there, and only
	 * there: the receiver's copy waits). */
	assert_true(err < 0 && err != -ENOLINK);
	assert_non_null(strstr(st.error, "commit"));
	assert_int_equal(f.w.resumes, f.w.pauses);
	fx_fini(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean),
		cmocka_unit_test(test_lost_page_found),
		cmocka_unit_test(test_digest_only),
		cmocka_unit_test(test_none),
		cmocka_unit_test(test_no_committed),
		cmocka_unit_test(test_no_commit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
