/* Software dirty log (src/track/sim.c): both modes report every mark, the
 * manual mode behaves like KVM's manual-protect log, and nothing is lost
 * under a concurrent writer. */
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
	return p;
}

/* Two regions with a hole between them in guest page space. */
struct two {
	struct lm_mem_region r[2];
	lm_sbitmap dirty;
};

static void two_setup(struct two *t, uint64_t n0, uint64_t n1)
{
	t->r[0] = (struct lm_mem_region){ 0, n0, map_pages(n0) };
	t->r[1] = (struct lm_mem_region){ n0 + 4096, n1, map_pages(n1) };
	assert_int_equal(lm_sbitmap_init(&t->dirty, n0 + 4096 + n1, 0), 0);
}

static void two_teardown(struct two *t)
{
	munmap(t->r[0].host, t->r[0].npages * LM_PAGE_SIZE);
	munmap(t->r[1].host, t->r[1].npages * LM_PAGE_SIZE);
	lm_sbitmap_destroy(&t->dirty);
}

static int64_t sync_all(struct lm_dirty_source *s, struct two *t)
{
	int64_t a = lm_dirty_source_sync(s, t->r[0].first_page, t->r[0].npages, &t->dirty);
	int64_t b = lm_dirty_source_sync(s, t->r[1].first_page, t->r[1].npages, &t->dirty);
	assert_true(a >= 0 && b >= 0);
	return a + b;
}

static void test_marks_reported(void **state)
{
	for (int mode = LM_SIM_EXCHANGE; mode <= LM_SIM_MANUAL; mode++) {
		struct two t;
		struct lm_dirty_source *s;
		two_setup(&t, 1000, 130);
		assert_int_equal(lm_sim_source_new((enum lm_sim_mode)mode, &s), 0);
		assert_int_equal(lm_dirty_source_start(s, t.r, 2), 0);
		uint64_t pages[] = { 0, 1, 63, 64, 65, 999, 5096, 5096 + 129 };
		for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++)
			lm_sim_mark(s, pages[i]);
		lm_sim_mark(s, 1000); /* in the hole: ignored */
		lm_sim_mark(s, 1 << 30);
		lm_sim_mark_range(s, 100, 70); /* crosses a word boundary */
		assert_int_equal(sync_all(s, &t), 8 + 70);
		for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++)
			assert_true(lm_sbitmap_test(&t.dirty, pages[i]));
		for (uint64_t p = 100; p < 170; p++)
			assert_true(lm_sbitmap_test(&t.dirty, p));
		assert_int_equal(lm_sbitmap_count(&t.dirty), 78);

		/* Clear re-arms: nothing more until the next mark. */
		lm_sbitmap_clear_range(&t.dirty, 0, t.dirty.bits.nbits);
		assert_int_equal(lm_dirty_source_clear(s, 0, 1000), 0);
		assert_int_equal(lm_dirty_source_clear(s, 5096, 130), 0);
		assert_int_equal(sync_all(s, &t), 0);
		lm_sim_mark(s, 7);
		assert_int_equal(sync_all(s, &t), 1);
		lm_dirty_source_free(s);
		two_teardown(&t);
	}
}

/* KVM's manual-protect semantics: sync does not forget, clear forgets only
 * what the sync reported, and a mark between sync and clear survives. */
static void test_manual_semantics(void **state)
{
	struct two t;
	struct lm_dirty_source *s;
	two_setup(&t, 256, 64);
	assert_int_equal(lm_sim_source_new(LM_SIM_MANUAL, &s), 0);
	assert_int_equal(s->flags & LM_DIRTY_SYNC_REARMS, 0);
	assert_int_equal(lm_dirty_source_start(s, t.r, 2), 0);
	lm_sim_mark(s, 3);
	assert_int_equal(sync_all(s, &t), 1);
	lm_sbitmap_clear(&t.dirty, 3);
	/* Not cleared yet: reported again. */
	assert_int_equal(sync_all(s, &t), 1);
	lm_sbitmap_clear(&t.dirty, 3);
	lm_sim_mark(s, 4); /* after the sync, before the clear */
	assert_int_equal(lm_dirty_source_clear(s, 0, 256), 0);
	assert_int_equal(sync_all(s, &t), 1);
	assert_true(lm_sbitmap_test(&t.dirty, 4));
	assert_false(lm_sbitmap_test(&t.dirty, 3));
	lm_dirty_source_free(s);
	two_teardown(&t);
}

static void test_errors(void **state)
{
	struct two t;
	struct lm_dirty_source *s;
	two_setup(&t, 256, 64);
	assert_int_equal(lm_sim_source_new((enum lm_sim_mode)7, &s), -EINVAL);
	assert_int_equal(lm_sim_source_new(LM_SIM_MANUAL, &s), 0);
	assert_int_equal(lm_dirty_source_sync(s, 0, 64, &t.dirty), -ENOTCONN);
	lm_sim_mark(s, 1); /* before start: ignored, no crash */
	struct lm_mem_region overlap[2] = { { 0, 100, t.r[0].host }, { 99, 10, t.r[1].host } };
	assert_int_equal(lm_dirty_source_start(s, overlap, 2), -EINVAL);
	struct lm_mem_region unaligned = { 0, 10, (uint8_t *)t.r[0].host + 8 };
	assert_int_equal(lm_dirty_source_start(s, &unaligned, 1), -EINVAL);
	assert_int_equal(lm_dirty_source_start(s, t.r, 0), -EINVAL);
	assert_int_equal(lm_dirty_source_start(s, t.r, 2), 0);
	assert_int_equal(lm_dirty_source_start(s, t.r, 2), -EBUSY);
	assert_int_equal(lm_dirty_source_sync(s, 1, 64, &t.dirty), -EINVAL);   /* unaligned */
	assert_int_equal(lm_dirty_source_sync(s, 200, 64, &t.dirty), -EINVAL); /* past the region */
	assert_int_equal(lm_dirty_source_clear(s, 0, 100), -EINVAL);           /* not a multiple of 64 */
	assert_int_equal(lm_dirty_source_clear(s, 192, 64), 0);                /* ends at the region end */
	assert_int_equal(lm_dirty_source_stop(s), 0);
	assert_int_equal(lm_dirty_source_stop(s), 0);
	lm_sim_mark(s, 1); /* after stop: ignored */
	assert_int_equal(lm_dirty_source_sync(s, 0, 64, &t.dirty), -ENOTCONN);
	/* Restart after stop works. */
	assert_int_equal(lm_dirty_source_start(s, t.r, 2), 0);
	lm_dirty_source_free(s);
	two_teardown(&t);
}

static void lossless(enum lm_sim_mode mode, uint64_t chunk)
{
	struct two t;
	struct lm_dirty_source *s;
	two_setup(&t, 2048, 700);
	assert_int_equal(lm_sim_source_new(mode, &s), 0);
	struct lm_test_lossless l = { .rounds = 40, .chunk_pages = chunk, .sim_mark = true, .seed = 42 + mode };
	assert_int_equal(lm_test_lossless_run(s, t.r, 2, &l), 0);
	assert_true(l.writes > 0);
	assert_int_equal(l.pages_mismatch, 0);
	lm_dirty_source_free(s);
	two_teardown(&t);
}

static void test_lossless_exchange(void **state)
{
	lossless(LM_SIM_EXCHANGE, 512);
}

static void test_lossless_manual(void **state)
{
	lossless(LM_SIM_MANUAL, 64);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_marks_reported),
		cmocka_unit_test(test_manual_semantics),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_lossless_exchange),
		cmocka_unit_test(test_lossless_manual),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
