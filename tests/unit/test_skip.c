/*
 * Tests for the skip map (src/migrate/skip.c) against a naive oracle: a
 * byte per page. Random programs of set/clear ranges are checked bit by bit
 * (test, count, get), the map is carried to a second map through its table
 * stream after every few steps (the destination must equal the source, and
 * the runs reported on both sides must be exactly the marked pages of the
 * entries carried), skipped pages are removed from a dirty bitmap, bad
 * records are refused without changing anything, and writers on other
 * threads may change the map while a reader drains its table stream.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "livemig/skip.h"
#include "livemig/table.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Collects reported runs into a byte-per-page array, checking that runs
 * are maximal within what was reported and never overlap. */
struct runs {
	uint8_t *seen;
	uint64_t npages;
	uint64_t calls;
	uint64_t pages;
};

static void collect(void *arg, uint64_t first, uint64_t n)
{
	struct runs *r = arg;
	assert_true(n > 0);
	assert_true(first + n <= r->npages + LM_SKIP_PAGES_PER_ENTRY);
	for (uint64_t p = first; p < first + n; p++) {
		assert_true(p < r->npages);
		assert_int_equal(r->seen[p], 0);
		r->seen[p] = 1;
	}
	r->calls++;
	r->pages += n;
}

static void check_equal(lm_skip_map *m, const uint8_t *oracle, uint64_t npages)
{
	uint64_t cnt = 0;
	for (uint64_t p = 0; p < npages; p++) {
		cnt += oracle[p];
		if (lm_skip_map_test(m, p) != (oracle[p] != 0))
			fail_msg("page %llu: map %d, oracle %d", (unsigned long long)p, lm_skip_map_test(m, p),
				 oracle[p]);
	}
	assert_false(lm_skip_map_test(m, npages));
	assert_int_equal(lm_skip_map_count(m), cnt);
	/* get() over a random unaligned window. */
	uint64_t first = rnd() % npages, n = rnd() % (npages - first) + 1;
	uint64_t *w = calloc((n + 63) / 64, 8);
	assert_int_equal(lm_skip_map_get(m, first, n, w), 0);
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal((w[k / 64] >> (k % 64)) & 1, oracle[first + k]);
	if (n % 64)
		assert_int_equal(w[n / 64] >> (n % 64), 0);
	free(w);
}

/* Drain one pass of src's table stream into dst in small reads; check the
 * runs reported on both sides. */
static void carry(lm_skip_map *src, lm_skip_map *dst, const uint8_t *oracle, uint64_t npages, size_t cap)
{
	uint8_t *buf = malloc(cap);
	struct runs rs = { calloc(npages, 1), npages, 0, 0 };
	struct runs rd = { calloc(npages, 1), npages, 0, 0 };
	char why[200];
	int64_t got;
	while ((got = lm_skip_map_table_read(src, buf, cap, collect, &rs)) > 0)
		assert_int_equal(lm_skip_map_table_write(dst, buf, (size_t)got, collect, &rd, why, sizeof(why)), got);
	assert_int_equal(got, 0);
	/* What each side reported is marked in the oracle, and the same. */
	for (uint64_t p = 0; p < npages; p++) {
		if (rs.seen[p])
			assert_int_equal(oracle[p], 1);
		assert_int_equal(rs.seen[p], rd.seen[p]);
	}
	free(rs.seen);
	free(rd.seen);
	free(buf);
}

static void program(uint64_t npages, uint64_t seed)
{
	lm_skip_map *src, *dst;
	rng_state = seed;
	uint8_t *oracle = calloc(npages, 1);
	assert_int_equal(lm_skip_map_new(npages, &src), 0);
	assert_int_equal(lm_skip_map_new(npages, &dst), 0);
	assert_int_equal(lm_skip_map_npages(src), npages);
	for (int step = 0; step < 400; step++) {
		uint64_t first = rnd() % npages;
		uint64_t max = npages - first;
		/* Mostly balloon-sized runs, sometimes single pages. */
		uint64_t n = rnd() % 4 == 0 ? 1 : rnd() % (max < 3000 ? max : 3000) + 1;
		if (n > max)
			n = max;
		bool set = rnd() % 3 != 0;
		assert_int_equal(set ? lm_skip_map_set(src, first, n) : lm_skip_map_clear(src, first, n), 0);
		memset(oracle + first, set, n);
		if (step % 37 == 0) {
			check_equal(src, oracle, npages);
			carry(src, dst, oracle, npages, LM_TABLE_READ_MIN + (rnd() % 4) * 1000);
			check_equal(dst, oracle, npages);
		}
	}
	carry(src, dst, oracle, npages, 4096);
	check_equal(src, oracle, npages);
	check_equal(dst, oracle, npages);
	/* A quiet map sends nothing after a pass. */
	uint8_t buf[256];
	assert_int_equal(lm_skip_map_table_read(src, buf, sizeof(buf), NULL, NULL), 0);
	/* A restart sends the whole map again, to a fresh map. */
	lm_skip_map *dst2;
	assert_int_equal(lm_skip_map_new(npages, &dst2), 0);
	lm_skip_map_table_restart(src);
	carry(src, dst2, oracle, npages, 100000);
	check_equal(dst2, oracle, npages);
	lm_skip_map_free(dst2);
	lm_skip_map_free(dst);
	lm_skip_map_free(src);
	free(oracle);
}

static void test_random_programs(void **state)
{
	(void)state;
	program(128, 1);
	program(1000, 2);	 /* not a multiple of 128: a partial last entry */
	program(64 * 1024 + 7, 3);
	program(300000, 4);
}

static void test_bad_args(void **state)
{
	(void)state;
	lm_skip_map *m;
	assert_int_equal(lm_skip_map_new(0, &m), -EINVAL);
	assert_int_equal(lm_skip_map_new(LM_SKIP_MAX_PAGES + 1, &m), -EINVAL);
	assert_int_equal(lm_skip_map_new(1000, &m), 0);
	assert_int_equal(lm_skip_map_set(m, 999, 2), -ERANGE);
	assert_int_equal(lm_skip_map_clear(m, 1001, 0), -ERANGE);
	assert_int_equal(lm_skip_map_set(m, 1000, 0), 0);
	assert_int_equal(lm_skip_map_set(m, 0, 1000), 0);
	assert_int_equal(lm_skip_map_count(m), 1000);
	uint64_t w[2];
	assert_int_equal(lm_skip_map_get(m, 990, 11, w), -ERANGE);
	lm_skip_map_free(m);
	lm_skip_map_free(NULL);
	/* A huge sparse map costs nothing until touched. */
	assert_int_equal(lm_skip_map_new(1ull << 36, &m), 0);
	assert_int_equal(lm_skip_map_set(m, (1ull << 36) - 5, 5), 0);
	assert_int_equal(lm_skip_map_count(m), 5);
	assert_int_equal(lm_skip_map_get(m, (1ull << 36) - 64, 64, w), 0);
	assert_int_equal(w[0], 0x1full << 59);
	lm_skip_map_free(m);
}

/* Writes that would change pages past npages, malformed buffers and
 * records past the table change nothing. */
static void test_bad_records(void **state)
{
	(void)state;
	lm_skip_map *m;
	char why[200];
	assert_int_equal(lm_skip_map_new(200, &m), 0); /* 2 entries */
	assert_int_equal(lm_skip_map_set(m, 10, 5), 0);
	uint8_t rec[8 + 16] = { 0 };
	/* index 2: past the two entries */
	rec[0] = 2;
	rec[4] = 1;
	memset(rec + 8, 0xff, 16);
	assert_int_equal(lm_skip_map_table_write(m, rec, sizeof(rec), NULL, NULL, why, sizeof(why)), -ERANGE);
	assert_true(strlen(why) > 0);
	/* a valid entry that is all zero */
	rec[0] = 0;
	memset(rec + 8, 0, 16);
	assert_int_equal(lm_skip_map_table_write(m, rec, sizeof(rec), NULL, NULL, why, sizeof(why)), -EINVAL);
	/* truncated */
	assert_int_equal(lm_skip_map_table_write(m, rec, 5, NULL, NULL, why, sizeof(why)), -EINVAL);
	assert_int_equal(lm_skip_map_count(m), 5);
	/* Entry 1 all ones: pages 128..255, but the map has only 200 pages. */
	rec[0] = 1;
	memset(rec + 8, 0xff, 16);
	assert_int_equal(lm_skip_map_table_write(m, rec, sizeof(rec), NULL, NULL, why, sizeof(why)), 24);
	assert_int_equal(lm_skip_map_count(m), 5 + 72);
	assert_true(lm_skip_map_test(m, 199));
	assert_false(lm_skip_map_test(m, 200));
	lm_skip_map_free(m);
}

static void test_remove_from(void **state)
{
	(void)state;
	lm_skip_map *m;
	lm_sbitmap d;
	assert_int_equal(lm_skip_map_new(5000, &m), 0);
	assert_int_equal(lm_sbitmap_init(&d, 6000, 0), 0);
	lm_sbitmap_set_range(&d, 0, 6000);
	assert_int_equal(lm_skip_map_set(m, 100, 900), 0);  /* 100..999 */
	assert_int_equal(lm_skip_map_set(m, 4990, 10), 0);  /* to the end */
	/* Only inside the range asked for. */
	assert_int_equal(lm_skip_map_remove_from(m, &d, 512, 512), 1000 - 512);
	assert_true(lm_sbitmap_test(&d, 511));
	assert_false(lm_sbitmap_test(&d, 512));
	assert_false(lm_sbitmap_test(&d, 999));
	assert_true(lm_sbitmap_test(&d, 1000));
	assert_int_equal(lm_skip_map_remove_from(m, &d, 0, 6000), 412 + 10);
	assert_int_equal(lm_sbitmap_count(&d), 6000 - 910);
	assert_true(lm_sbitmap_test(&d, 99));
	assert_false(lm_sbitmap_test(&d, 100));
	assert_true(lm_sbitmap_test(&d, 5000)); /* past the map: left alone */
	assert_int_equal(lm_skip_map_remove_from(m, &d, 7000, 10), 0);
	lm_sbitmap_destroy(&d);
	lm_skip_map_free(m);
}

/* Writers on two threads, a reader draining the table stream into a second
 * map meanwhile; after the writers stop, one more pass makes them equal. */
struct writer_arg {
	lm_skip_map *m;
	uint64_t seed;
	uint64_t lo, hi; /* page range this writer owns */
	uint8_t *oracle;
};

static void *writer(void *p)
{
	struct writer_arg *a = p;
	uint64_t s = a->seed;
	for (int i = 0; i < 20000; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		uint64_t first = a->lo + s % (a->hi - a->lo);
		uint64_t n = 1 + (s >> 20) % 300;
		if (n > a->hi - first)
			n = a->hi - first;
		bool set = (s >> 40) & 1;
		if (set)
			lm_skip_map_set(a->m, first, n);
		else
			lm_skip_map_clear(a->m, first, n);
		memset(a->oracle + first, set, n);
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	const uint64_t np = 100000;
	lm_skip_map *src, *dst;
	uint8_t *oracle = calloc(np, 1);
	assert_int_equal(lm_skip_map_new(np, &src), 0);
	assert_int_equal(lm_skip_map_new(np, &dst), 0);
	struct writer_arg a = { src, 11, 0, np / 2, oracle }, b = { src, 23, np / 2, np, oracle };
	pthread_t ta, tb;
	assert_int_equal(pthread_create(&ta, NULL, writer, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, writer, &b), 0);
	uint8_t buf[2048];
	char why[200];
	for (int i = 0; i < 2000; i++) {
		int64_t got = lm_skip_map_table_read(src, buf, sizeof(buf), NULL, NULL);
		assert_true(got >= 0);
		if (got)
			assert_int_equal(lm_skip_map_table_write(dst, buf, (size_t)got, NULL, NULL, why, sizeof(why)),
					 got);
	}
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	/* Finish the pass in progress, then one whole pass of what is left. */
	int64_t got;
	while ((got = lm_skip_map_table_read(src, buf, sizeof(buf), NULL, NULL)) > 0)
		lm_skip_map_table_write(dst, buf, (size_t)got, NULL, NULL, why, sizeof(why));
	while ((got = lm_skip_map_table_read(src, buf, sizeof(buf), NULL, NULL)) > 0)
		lm_skip_map_table_write(dst, buf, (size_t)got, NULL, NULL, why, sizeof(why));
	rng_state = 5;
	check_equal(src, oracle, np);
	check_equal(dst, oracle, np);
	lm_skip_map_free(src);
	lm_skip_map_free(dst);
	free(oracle);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_programs),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_bad_records),
		cmocka_unit_test(test_remove_from),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
