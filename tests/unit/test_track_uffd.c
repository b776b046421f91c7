/* userfaultfd write-protect source (src/track/uffd.c) on real process
 * memory: written pages are reported exactly, re-armed by the harvest,
 * never-touched pages are known, and nothing is lost under a concurrent
 * writer. Skipped where the kernel lacks async write-protect. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "livemig/track.h"
#include "support/dirty_check.h"

static void *map_pages(uint64_t n)
{
	void *p = mmap(NULL, n * LM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	assert_true(p != MAP_FAILED);
	/* Huge pages would make the kernel report 512 pages per write: correct
	 * (over-reporting) but not what the exact checks below expect. */
	madvise(p, n * LM_PAGE_SIZE, MADV_NOHUGEPAGE);
	return p;
}

static int need_uffd(void **state)
{
	int err = lm_uffd_supported();
	if (err) {
		print_message("uffd write-protect unavailable here (%s): skipping\n", lm_strerror(err));
		return -1;
	}
	return 0;
}

#define SKIP_IF_NO_UFFD()                                                                                      \
	do {                                                                                                   \
		if (need_uffd(state))                                                                          \
			skip();                                                                                \
	} while (0)

static void test_writes_reported(void **state)
{
	SKIP_IF_NO_UFFD();
	const uint64_t n = 4096, base = 1 << 20;
	uint8_t *m = map_pages(n);
	struct lm_mem_region r = { base, n, m };
	lm_sbitmap dirty;
	struct lm_dirty_source *s;
	assert_int_equal(lm_sbitmap_init(&dirty, base + n, 0), 0);
	assert_int_equal(lm_uffd_source_new(&s), 0);
	assert_true(s->flags & LM_DIRTY_SYNC_REARMS);
	assert_int_equal(lm_dirty_source_start(s, &r, 1), 0);
	assert_int_equal(lm_dirty_source_sync(s, base, n, &dirty), 0);

	uint64_t seed = 7, expect = 0;
	bool *want = calloc(n, 1);
	for (int i = 0; i < 300; i++) {
		uint64_t p = lm_test_rand(&seed) % n;
		m[p * LM_PAGE_SIZE + (lm_test_rand(&seed) % LM_PAGE_SIZE)] = 1;
		if (!want[p])
			expect++;
		want[p] = true;
	}
	/* Reads do not count as writes. */
	volatile uint8_t sink = m[(n - 1) * LM_PAGE_SIZE];
	(void)sink;
	assert_int_equal(lm_dirty_source_sync(s, base, n, &dirty), (int64_t)expect);
	for (uint64_t p = 0; p < n; p++)
		assert_int_equal(lm_sbitmap_test(&dirty, base + p), want[p]);

	/* The harvest re-armed: a second sync finds nothing, a new write is seen. */
	lm_sbitmap_clear_range(&dirty, 0, base + n);
	assert_int_equal(lm_dirty_source_clear(s, base, n), 0);
	assert_int_equal(lm_dirty_source_sync(s, base, n, &dirty), 0);
	m[5 * LM_PAGE_SIZE] = 2;
	m[5 * LM_PAGE_SIZE + 1] = 2;
	/* A partial range sees only its own pages. */
	assert_int_equal(lm_dirty_source_sync(s, base + 64, 64, &dirty), 0);
	assert_int_equal(lm_dirty_source_sync(s, base, 64, &dirty), 1);
	assert_true(lm_sbitmap_test(&dirty, base + 5));

	/* After stop the memory is ordinary memory again. */
	assert_int_equal(lm_dirty_source_stop(s), 0);
	assert_int_equal(lm_dirty_source_sync(s, base, 64, &dirty), -ENOTCONN);
	memset(m, 3, n * LM_PAGE_SIZE);
	assert_int_equal(m[n * LM_PAGE_SIZE - 1], 3);
	lm_dirty_source_free(s);
	lm_sbitmap_destroy(&dirty);
	free(want);
	munmap(m, n * LM_PAGE_SIZE);
}

static void test_present_snapshot(void **state)
{
	SKIP_IF_NO_UFFD();
	const uint64_t n = 1024;
	uint8_t *m = map_pages(n);
	m[10 * LM_PAGE_SIZE] = 1;
	m[700 * LM_PAGE_SIZE] = 1;
	struct lm_mem_region r = { 0, n, m };
	struct lm_dirty_source *s;
	lm_bitmap present;
	assert_int_equal(lm_bitmap_init(&present, n), 0);
	assert_int_equal(lm_uffd_source_new(&s), 0);
	assert_true(s->flags & LM_DIRTY_KNOWS_PRESENT);
	assert_int_equal(lm_dirty_source_start(s, &r, 1), 0);
	assert_int_equal(s->ops->present(s, 0, n, &present), 0);
	assert_int_equal(lm_bitmap_count_range(&present, 0, n), 2);
	assert_true(lm_bitmap_test(&present, 10));
	assert_true(lm_bitmap_test(&present, 700));
	lm_bitmap_clear_range(&present, 0, n);
	assert_int_equal(s->ops->present(s, 640, 128, &present), 0);
	assert_int_equal(lm_bitmap_count_range(&present, 0, n), 1);
	lm_dirty_source_free(s);
	lm_bitmap_destroy(&present);
	munmap(m, n * LM_PAGE_SIZE);
}

/* A sparse 1 GiB region: arming costs page tables only; a few writes are
 * reported exactly. */
static void test_big_sparse(void **state)
{
	SKIP_IF_NO_UFFD();
	const uint64_t n = 1ull << 18;
	uint8_t *m = map_pages(n);
	struct lm_mem_region r = { 0, n, m };
	struct lm_dirty_source *s;
	lm_sbitmap dirty;
	assert_int_equal(lm_sbitmap_init(&dirty, n, 0), 0);
	assert_int_equal(lm_uffd_source_new(&s), 0);
	assert_int_equal(lm_dirty_source_start(s, &r, 1), 0);
	uint64_t pages[] = { 0, 63, 64, 100000, n - 1 };
	for (size_t i = 0; i < 5; i++)
		m[pages[i] * LM_PAGE_SIZE] = 9;
	assert_int_equal(lm_dirty_source_sync(s, 0, n, &dirty), 5);
	for (size_t i = 0; i < 5; i++)
		assert_true(lm_sbitmap_test(&dirty, pages[i]));
	lm_dirty_source_free(s);
	lm_sbitmap_destroy(&dirty);
	munmap(m, n * LM_PAGE_SIZE);
}

static void test_lossless_concurrent_writer(void **state)
{
	SKIP_IF_NO_UFFD();
	struct lm_mem_region r[2] = {
		{ 0, 4096, map_pages(4096) },
		{ 10000, 1000, map_pages(1000) },
	};
	/* Half the pages hold data before tracking starts. */
	memset(r[0].host, 0x5a, 2048 * LM_PAGE_SIZE);
	struct lm_dirty_source *s;
	assert_int_equal(lm_uffd_source_new(&s), 0);
	struct lm_test_lossless l = { .rounds = 30, .chunk_pages = 512, .seed = 1234 };
	assert_int_equal(lm_test_lossless_run(s, r, 2, &l), 0);
	assert_true(l.writes > 0);
	assert_int_equal(l.pages_mismatch, 0);
	lm_dirty_source_free(s);
	munmap(r[0].host, 4096 * LM_PAGE_SIZE);
	munmap(r[1].host, 1000 * LM_PAGE_SIZE);
}

static void test_errors(void **state)
{
	SKIP_IF_NO_UFFD();
	uint8_t *m = map_pages(256);
	struct lm_dirty_source *s;
	lm_sbitmap dirty;
	assert_int_equal(lm_sbitmap_init(&dirty, 256, 0), 0);
	assert_int_equal(lm_uffd_source_new(&s), 0);
	assert_int_equal(lm_dirty_source_sync(s, 0, 64, &dirty), -ENOTCONN);
	struct lm_mem_region r = { 0, 256, m };
	assert_int_equal(lm_dirty_source_start(s, &r, 1), 0);
	assert_int_equal(lm_dirty_source_start(s, &r, 1), -EBUSY);
	assert_int_equal(lm_dirty_source_sync(s, 3, 64, &dirty), -EINVAL);
	assert_int_equal(lm_dirty_source_sync(s, 0, 257, &dirty), -EINVAL);
	assert_int_equal(lm_dirty_source_stop(s), 0);
	assert_int_equal(lm_dirty_source_stop(s), 0);
	/* Restarting after stop tracks again, from a clean slate. */
	m[0] = 1;
	assert_int_equal(lm_dirty_source_start(s, &r, 1), 0);
	assert_int_equal(lm_dirty_source_sync(s, 0, 256, &dirty), 0);
	m[LM_PAGE_SIZE] = 1;
	assert_int_equal(lm_dirty_source_sync(s, 0, 256, &dirty), 1);
	assert_true(lm_sbitmap_test(&dirty, 1));
	lm_dirty_source_free(s);
	lm_sbitmap_destroy(&dirty);
	munmap(m, 256 * LM_PAGE_SIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writes_reported),
		cmocka_unit_test(test_present_snapshot),
		cmocka_unit_test(test_big_sparse),
		cmocka_unit_test(test_lossless_concurrent_writer),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
