/*
 * The engine with ballooned pages (skip-balloon and the table stream), end
 * to end in one process: process memory tracked by the software dirty log,
 * a synthetic balloon that marks pages in a skip map and frees them with
 * MADV_DONTNEED, a receiver thread with its own skip map, and a tap between
 * them that keeps every byte the sender wrote so the stream can be decoded
 * afterwards.
 *
 * What is checked: with skip-balloon on, ballooned pages are never read
 * (they are made PROT_NONE, so a read would crash the test, and the
 * pages-scanned stat accounts for every other page exactly) and never
 * mentioned by a RAM run on the wire; the destination's skip map equals the
 * source's. With the balloon inflating and deflating during the rounds while
 * a writer runs, the destination ends bit-identical to the paused source
 * and the digests agree. With the capability off (by the user, because the
 * guest did not promise must-tell-host, or because the destination keeps no
 * skip map), ballooned pages travel as ordinary pages and that shows in the
 * stats.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/migrate.h"
#include "livemig/skip.h"

#define R0_PAGES 8192u		   /* 32 MiB at page 0 */
#define R1_FIRST (1ull << 20)	   /* 4 MiB far away */
#define R1_PAGES 1024u
#define END_PAGE (R1_FIRST + R1_PAGES)
#define WORK_PAGES 4096u	   /* the writer's pages: [0, 4096) of region 0 */
#define STATIC_FIRST 7000u	   /* [7000, 8192): ballooned before, never touched */
#define STATIC_N (R0_PAGES - STATIC_FIRST)

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static void nap_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

/* ---- source: memory, skip map, a pausable writer + balloon thread ---- */

struct source {
	struct lm_mem_region r[2];
	struct lm_dirty_source *log;
	lm_skip_map *skip;
	/* workload thread */
	bool run_balloon; /* inflate/deflate in the free pages while writing */
	pthread_t th;
	int stop, pause_req, paused;
	uint64_t ops;
};

static uint8_t *page_ptr(struct source *s, uint64_t page)
{
	if (page >= R1_FIRST)
		return (uint8_t *)s->r[1].host + (page - R1_FIRST) * LM_PAGE_SIZE;
	return (uint8_t *)s->r[0].host + page * LM_PAGE_SIZE;
}

static void fill_page(struct source *s, uint64_t page, uint64_t *rs)
{
	uint64_t *p = (uint64_t *)page_ptr(s, page);
	p[0] = page;
	for (int k = 1; k < 512; k += 7)
		p[k] = rnd(rs);
}

/* Inflate: the device marks, then frees (the pages read as zero), then
 * reports the change to the dirty log as the VMM's write hook does. */
static void inflate(struct source *s, uint64_t first, uint64_t n)
{
	assert_int_equal(lm_skip_map_set(s->skip, first, n), 0);
	assert_int_equal(madvise(page_ptr(s, first), n * LM_PAGE_SIZE, MADV_DONTNEED), 0);
	lm_sim_mark_range(s->log, first, n);
}

/* Deflate, then the guest reuses the pages: unmark first (must-tell-host). */
static void deflate_and_write(struct source *s, uint64_t first, uint64_t n, uint64_t *rs)
{
	assert_int_equal(lm_skip_map_clear(s->skip, first, n), 0);
	for (uint64_t p = first; p < first + n; p++) {
		fill_page(s, p, rs);
		lm_sim_mark(s->log, p);
	}
}

static void *workload_main(void *arg)
{
	struct source *s = arg;
	uint64_t rs = 77;
	unsigned step = 0;
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(&s->pause_req, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&s->paused, 1, __ATOMIC_RELEASE);
			while (__atomic_load_n(&s->pause_req, __ATOMIC_ACQUIRE) &&
			       !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
				nap_us(100);
			__atomic_store_n(&s->paused, 0, __ATOMIC_RELEASE);
			continue;
		}
		/* About 2000 page writes a second into the work pages. */
		for (int i = 0; i < 4; i++) {
			uint64_t p = rnd(&rs) % WORK_PAGES;
			fill_page(s, p, &rs);
			lm_sim_mark(s->log, p);
		}
		if (s->run_balloon && step++ % 4 == 0) {
			/* Free pages: [4096, 7000) of region 0 and all of region 1. */
			bool hi = rnd(&rs) % 3 == 0;
			uint64_t lo = hi ? R1_FIRST : WORK_PAGES;
			uint64_t span = hi ? R1_PAGES : STATIC_FIRST - WORK_PAGES;
			uint64_t first = lo + rnd(&rs) % span;
			uint64_t n = 1 + rnd(&rs) % 300;
			if (n > lo + span - first)
				n = lo + span - first;
			if (rnd(&rs) % 2)
				inflate(s, first, n);
			else
				deflate_and_write(s, first, n, &rs);
			s->ops++;
		}
		nap_us(2000);
	}
	return NULL;
}

static int src_pause(void *ctx)
{
	struct source *s = ctx;
	__atomic_store_n(&s->pause_req, 1, __ATOMIC_RELEASE);
	if (s->th)
		while (!__atomic_load_n(&s->paused, __ATOMIC_ACQUIRE))
			nap_us(50);
	return 0;
}

static int src_resume(void *ctx)
{
	struct source *s = ctx;
	__atomic_store_n(&s->pause_req, 0, __ATOMIC_RELEASE);
	return 0;
}

static const struct lm_workload_ops source_ops = {
	.pause = src_pause,
	.resume = src_resume,
};

static void source_init(struct source *s)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < 2; i++) {
		uint64_t n = i ? R1_PAGES : R0_PAGES;
		void *p = mmap(NULL, n * LM_PAGE_SIZE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		assert_true(p != MAP_FAILED);
		s->r[i] = (struct lm_mem_region){ i ? R1_FIRST : 0, n, p };
	}
	/* Every page of region 0 and half of region 1 hold data. */
	uint64_t rs = 5;
	for (uint64_t p = 0; p < R0_PAGES; p++)
		fill_page(s, p, &rs);
	for (uint64_t p = R1_FIRST; p < R1_FIRST + R1_PAGES / 2; p++)
		fill_page(s, p, &rs);
	assert_int_equal(lm_sim_source_new(LM_SIM_MANUAL, &s->log), 0);
	assert_int_equal(lm_skip_map_new(END_PAGE, &s->skip), 0);
}

static void source_fini(struct source *s)
{
	lm_dirty_source_free(s->log);
	lm_skip_map_free(s->skip);
	munmap(s->r[0].host, R0_PAGES * LM_PAGE_SIZE);
	munmap(s->r[1].host, R1_PAGES * LM_PAGE_SIZE);
}

/* ---- destination ---- */

struct dest {
	struct lm_mem_region r[2];
	size_t n;
	bool with_map;
	lm_skip_map *skip;
	struct source *src; /* compared at finish, while the source is paused */
	uint64_t mismatch;  /* pages that differ from the source */
	uint64_t map_mismatch;
	bool compared;
	int finish_err;
};

static int dst_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct dest *d = ctx;
	if (l->nregions != 2)
		return -EPROTO;
	for (uint32_t i = 0; i < 2; i++) {
		void *p = mmap(NULL, out[i].npages * LM_PAGE_SIZE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			return -ENOMEM;
		out[i].host = p;
		d->r[i] = out[i];
		d->n = i + 1;
	}
	if (d->with_map) {
		int err = lm_skip_map_new(l->end_page, &d->skip);
		if (err)
			return err;
	}
	return 0;
}

static lm_skip_map *dst_skip_map(void *ctx)
{
	struct dest *d = ctx;
	return d->skip;
}

static void dst_finish(void *ctx, int err, const char *msg)
{
	struct dest *d = ctx;
	(void)msg;
	d->finish_err = err;
	if (err)
		return;
	/* The source is paused (stop-and-copy) and stays so after success. */
	struct source *s = d->src;
	d->mismatch = 0;
	for (int i = 0; i < 2; i++)
		for (uint64_t p = 0; p < d->r[i].npages; p++) {
			uint64_t page = d->r[i].first_page + p;
			if (lm_skip_map_test(s->skip, page) && page >= STATIC_FIRST && page < R0_PAGES)
				continue; /* PROT_NONE in the static test; zero either way */
			if (memcmp((uint8_t *)d->r[i].host + p * LM_PAGE_SIZE, page_ptr(s, page), LM_PAGE_SIZE))
				d->mismatch++;
		}
	if (d->skip) {
		uint64_t a[16], b[16];
		for (uint64_t p = 0; p < END_PAGE; p += 1024) {
			uint64_t n = END_PAGE - p < 1024 ? END_PAGE - p : 1024;
			lm_skip_map_get(s->skip, p, n, a);
			lm_skip_map_get(d->skip, p, n, b);
			if (memcmp(a, b, (n + 63) / 64 * 8))
				d->map_mismatch++;
		}
	}
	d->compared = true;
}

static const struct lm_workload_ops dest_ops = {
	.setup = dst_setup,
	.finish = dst_finish,
	.skip_map = dst_skip_map,
};

static void dest_fini(struct dest *d)
{
	for (size_t i = 0; i < d->n; i++)
		munmap(d->r[i].host, d->r[i].npages * LM_PAGE_SIZE);
	lm_skip_map_free(d->skip);
}

/* ---- receiver thread and tap ---- */

struct rx {
	int fd;
	struct lm_receive_params p;
	struct dest *d;
	struct lm_receive_stats st;
	int result;
	pthread_t th;
};

static void *rx_main(void *arg)
{
	struct rx *r = arg;
	r->result = lm_migrate_receive(r->fd, &r->p, &dest_ops, r->d, &r->st);
	shutdown(r->fd, SHUT_RDWR);
	return NULL;
}

/* Forwards both ways between a (sender side) and b (receiver side),
 * keeping what the sender wrote. */
struct tap {
	int a, b;
	uint8_t *buf;
	size_t len, cap;
	pthread_t th;
};

static void *tap_main(void *arg)
{
	struct tap *t = arg;
	uint8_t tmp[65536];
	bool a_open = true, b_open = true;
	while (a_open || b_open) {
		struct pollfd pf[2] = { { a_open ? t->a : -1, POLLIN, 0 }, { b_open ? t->b : -1, POLLIN, 0 } };
		if (poll(pf, 2, 10000) <= 0)
			break;
		if (a_open && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t n = read(t->a, tmp, sizeof(tmp));
			if (n <= 0) {
				a_open = false;
				shutdown(t->b, SHUT_WR);
			} else {
				if (t->len + (size_t)n > t->cap) {
					t->cap = (t->cap + (size_t)n) * 2;
					t->buf = realloc(t->buf, t->cap);
				}
				memcpy(t->buf + t->len, tmp, (size_t)n);
				t->len += (size_t)n;
				for (ssize_t o = 0; o < n;) {
					ssize_t w = write(t->b, tmp + o, (size_t)(n - o));
					if (w <= 0)
						break;
					o += w;
				}
			}
		}
		if (b_open && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t n = read(t->b, tmp, sizeof(tmp));
			if (n <= 0) {
				b_open = false;
				shutdown(t->a, SHUT_WR);
			} else {
				for (ssize_t o = 0; o < n;) {
					ssize_t w = send(t->a, tmp + o, (size_t)(n - o), MSG_NOSIGNAL);
					if (w <= 0)
						break;
					o += w;
				}
			}
		}
	}
	return NULL;
}

/* What the captured stream says. */
struct wire {
	uint64_t ram_runs;
	uint64_t pages_in_runs;
	uint64_t runs_on_static; /* RAM runs touching the static ballooned pages */
	uint64_t runs_on_ballooned_end; /* touching pages ballooned at the end */
	uint64_t tables;
	uint64_t table_bytes;
};

static void decode(const struct tap *t, uint64_t caps, lm_skip_map *final_map, struct wire *w)
{
	lm_stream s;
	lm_stream_init(&s);
	lm_record rec;
	lm_stream_err e;
	size_t off = 0;
	memset(w, 0, sizeof(*w));
	int64_t n = lm_stream_decode(&s, t->buf, t->len, &rec, &e);
	assert_true(n > 0);
	assert_int_equal(rec.frame.type, LM_REC_HELLO);
	s.layout = rec.u.hello.layout;
	s.caps = caps;
	off = (size_t)n;
	while (off < t->len) {
		n = lm_stream_decode(&s, t->buf + off, t->len - off, &rec, &e);
		if (n <= 0)
			fail_msg("captured stream does not decode at %zu: %s", off, e.msg);
		off += (size_t)n;
		if (rec.frame.type == LM_REC_TABLE) {
			w->tables++;
			w->table_bytes += LM_FRAME_HDR + rec.u.table.len;
		}
		if (rec.frame.type != LM_REC_RAM)
			continue;
		uint64_t f = rec.u.run.first_page, e2 = f + rec.u.run.npages;
		w->ram_runs++;
		w->pages_in_runs += rec.u.run.npages;
		if (f < R0_PAGES && e2 > STATIC_FIRST)
			w->runs_on_static++;
		for (uint64_t p = f; p < e2; p++)
			if (lm_skip_map_test(final_map, p)) {
				w->runs_on_ballooned_end++;
				break;
			}
	}
	lm_stream_destroy(&s);
}

/* ---- one migration ---- */

struct run_cfg {
	bool set_map, trusted, user_off, dest_map, balloon_ops, protect;
	uint64_t bw;
	uint64_t downtime_ms;
	unsigned rounds;
};

struct result {
	int err;
	struct lm_migrate_stats st;
	struct rx rx;
	struct wire w;
	uint64_t mismatch, map_mismatch, dest_ballooned;
	bool compared;
	uint64_t balloon_ops;
};

static void migrate(const struct run_cfg *c, struct result *res)
{
	struct source s;
	struct dest d = { .with_map = c->dest_map };
	struct tap t = { 0 };
	int sa[2], sb[2];
	source_init(&s);
	d.src = &s;
	memset(res, 0, sizeof(*res));

	/* Ballooned before the migration: a static part, and some scattered
	 * runs in the free pages that the balloon thread may deflate. */
	inflate(&s, STATIC_FIRST, STATIC_N);
	inflate(&s, 5000, 700);
	inflate(&s, R1_FIRST + 100, 200);
	if (c->protect)
		assert_int_equal(mprotect(page_ptr(&s, STATIC_FIRST), STATIC_N * LM_PAGE_SIZE, PROT_NONE), 0);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sa), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sb), 0);
	t.a = sa[1];
	t.b = sb[0];
	assert_int_equal(pthread_create(&t.th, NULL, tap_main, &t), 0);
	res->rx = (struct rx){ .fd = sb[1], .d = &d, .p = { .idle_timeout_ms = 20000 } };
	assert_int_equal(pthread_create(&res->rx.th, NULL, rx_main, &res->rx), 0);

	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.max_bandwidth = c->bw;
	p.downtime_limit_ms = c->downtime_ms ? c->downtime_ms : 300;
	p.max_rounds = c->rounds ? c->rounds : 30;
	if (c->user_off)
		p.caps_disabled |= LM_CAP_SKIP_BALLOON;
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, s.r, 2, s.log, &source_ops, &s, &p), 0);
	if (c->set_map)
		assert_int_equal(lm_migration_set_skip_map(m, s.skip, c->trusted), 0);
	s.run_balloon = c->balloon_ops;
	if (c->balloon_ops)
		assert_int_equal(pthread_create(&s.th, NULL, workload_main, &s), 0);
	assert_int_equal(lm_migration_start(m, sa[0]), 0);
	res->err = lm_migration_wait(m);
	lm_migration_query(m, &res->st);
	if (res->err)
		print_message("migration failed: %s\n", lm_migration_error(m));
	lm_migration_free(m);
	shutdown(sa[0], SHUT_RDWR);
	pthread_join(res->rx.th, NULL);
	pthread_join(t.th, NULL);
	if (s.th) {
		__atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
		pthread_join(s.th, NULL);
	}
	if (res->rx.result)
		print_message("receiver: %s\n", res->rx.st.error);
	decode(&t, res->rx.st.caps, s.skip, &res->w);
	res->mismatch = d.mismatch;
	res->map_mismatch = d.map_mismatch;
	res->compared = d.compared;
	res->dest_ballooned = d.skip ? lm_skip_map_count(d.skip) : 0;
	res->balloon_ops = s.ops;
	if (c->protect)
		mprotect(page_ptr(&s, STATIC_FIRST), STATIC_N * LM_PAGE_SIZE, PROT_READ | PROT_WRITE);
	free(t.buf);
	close(sa[0]);
	close(sa[1]);
	close(sb[0]);
	close(sb[1]);
	dest_fini(&d);
	source_fini(&s);
}

static const uint64_t TOTAL = R0_PAGES + R1_PAGES;
static const uint64_t BALLOONED = STATIC_N + 700 + 200;

/* Skip-balloon on, nothing running: ballooned pages are neither read (the
 * static ones are PROT_NONE) nor mentioned on the wire. */
static void test_skip_on_static(void **state)
{
	(void)state;
	struct result r;
	struct run_cfg c = { .set_map = true, .trusted = true, .dest_map = true, .protect = true };
	migrate(&c, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.rx.result, 0);
	assert_true(r.rx.st.digest_ok);
	assert_true(r.st.skip_balloon);
	assert_true(r.rx.st.caps & LM_CAP_SKIP_BALLOON);
	assert_true(r.rx.st.caps & LM_CAP_TABLE_STREAM);
	assert_int_equal(r.st.ballooned, BALLOONED);
	/* Every other page was read exactly once (round 1); nothing later. */
	assert_int_equal(r.st.pages_scanned, TOTAL - BALLOONED);
	assert_int_equal(r.w.pages_in_runs, TOTAL - BALLOONED);
	assert_int_equal(r.w.runs_on_static, 0);
	assert_int_equal(r.w.runs_on_ballooned_end, 0);
	/* The map went over in a few entries: 1192 + 700 + 200 pages in runs
	 * are about 20 entries of 16 bytes plus record headers. */
	assert_true(r.w.tables >= 1);
	assert_true(r.w.table_bytes < 1024);
	assert_int_equal(r.w.table_bytes, r.st.table_bytes);
	assert_int_equal(r.rx.st.table_bytes, r.st.table_bytes);
	assert_true(r.compared);
	assert_int_equal(r.mismatch, 0);
	assert_int_equal(r.map_mismatch, 0);
	assert_int_equal(r.dest_ballooned, BALLOONED);
	assert_int_equal(r.rx.st.ballooned, BALLOONED);
	/* The stop-and-copy carried no map: nothing changed since round 1. */
	assert_true(r.st.stop_copy_bytes < 4096);
}

/* Off because the user said so: ballooned pages are ordinary (zero) pages,
 * read and sent as zero runs; no map on the wire. */
static void test_skip_off_by_user(void **state)
{
	(void)state;
	struct result r;
	struct run_cfg c = { .set_map = true, .trusted = true, .user_off = true, .dest_map = true };
	migrate(&c, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.rx.result, 0);
	assert_false(r.st.skip_balloon);
	assert_false(r.rx.st.caps & LM_CAP_SKIP_BALLOON);
	assert_int_equal(r.st.ballooned, BALLOONED); /* visible, but not used */
	assert_int_equal(r.st.pages_scanned, TOTAL);
	assert_int_equal(r.w.pages_in_runs, TOTAL);
	assert_true(r.w.runs_on_static > 0);
	assert_int_equal(r.w.tables, 0);
	assert_true(r.st.duplicate >= BALLOONED);
	assert_int_equal(r.mismatch, 0);
	assert_int_equal(r.dest_ballooned, 0);
}

/* Off because the guest did not promise must-tell-host. */
static void test_skip_off_untrusted(void **state)
{
	(void)state;
	struct result r;
	struct run_cfg c = { .set_map = true, .trusted = false, .dest_map = true };
	migrate(&c, &r);
	assert_int_equal(r.err, 0);
	assert_false(r.st.skip_balloon);
	assert_int_equal(r.st.ballooned, BALLOONED);
	assert_int_equal(r.st.pages_scanned, TOTAL);
	assert_int_equal(r.w.tables, 0);
	assert_int_equal(r.mismatch, 0);
	assert_int_equal(r.dest_ballooned, 0);
	char *js = lm_migrate_stats_json(&r.st);
	assert_non_null(strstr(js, "\"skip-balloon\": false"));
	assert_non_null(strstr(js, "\"ballooned\": 2092"));
	free(js);
}

/* Off because the destination keeps no skip map (refuses the capability). */
static void test_skip_off_by_destination(void **state)
{
	(void)state;
	struct result r;
	struct run_cfg c = { .set_map = true, .trusted = true, .dest_map = false };
	migrate(&c, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.rx.result, 0);
	assert_false(r.st.skip_balloon);
	assert_false(r.rx.st.caps & (LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM));
	assert_int_equal(r.st.pages_scanned, TOTAL);
	assert_int_equal(r.mismatch, 0);
}

/* The balloon inflates (pages already sent with data) and deflates (then
 * the pages are written) during the rounds while a writer runs. */
static void test_skip_changes_during_rounds(void **state)
{
	(void)state;
	struct result r;
	struct run_cfg c = { .set_map = true, .trusted = true, .dest_map = true, .balloon_ops = true,
			     .bw = 40u << 20, .downtime_ms = 1, .rounds = 6 };
	migrate(&c, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.rx.result, 0);
	assert_true(r.rx.st.digest_ok);
	assert_true(r.st.skip_balloon);
	assert_true(r.balloon_ops > 20);
	assert_true(r.st.rounds >= 2);
	assert_true(r.compared);
	assert_int_equal(r.mismatch, 0);
	assert_int_equal(r.map_mismatch, 0);
	/* Never a RAM run over pages ballooned the whole time. */
	assert_int_equal(r.w.runs_on_static, 0);
	print_message("  rounds %llu, balloon ops %llu, table records %llu (%llu bytes), scanned %llu, "
		      "ballooned at the end %llu\n",
		      (unsigned long long)r.st.rounds, (unsigned long long)r.balloon_ops,
		      (unsigned long long)r.w.tables, (unsigned long long)r.w.table_bytes,
		      (unsigned long long)r.st.pages_scanned, (unsigned long long)r.st.ballooned);
}

/* The same with skip-balloon off: everything is an ordinary page. */
static void test_changes_during_rounds_off(void **state)
{
	(void)state;
	struct result r;
	struct run_cfg c = { .set_map = true, .trusted = true, .user_off = true, .dest_map = true,
			     .balloon_ops = true, .bw = 40u << 20, .downtime_ms = 1, .rounds = 4 };
	migrate(&c, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.rx.result, 0);
	assert_false(r.st.skip_balloon);
	assert_true(r.compared);
	assert_int_equal(r.mismatch, 0);
	assert_int_equal(r.dest_ballooned, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_skip_on_static),
		cmocka_unit_test(test_skip_off_by_user),
		cmocka_unit_test(test_skip_off_untrusted),
		cmocka_unit_test(test_skip_off_by_destination),
		cmocka_unit_test(test_skip_changes_during_rounds),
		cmocka_unit_test(test_changes_during_rounds_off),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
