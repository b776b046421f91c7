/*
 * Unit tests for the flat bitmap (src/bitmap/bitmap.c): edge cases, an
 * oracle test in the manner of SQLite's bitvec test (random operation
 * programs run against lm_bitmap and a naive bool array, compared after
 * every step), a 2^36-bit bitmap, and sync_from against a concurrent writer.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "livemig/bitmap.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64: deterministic, so a failing seed can be replayed. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* Compare every bit and the zero-tail invariant. */
static void check_equal(const lm_bitmap *b, const bool *o, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (lm_bitmap_test(b, i) != o[i])
			fail_msg("bit %llu: bitmap %d oracle %d", (unsigned long long)i,
				 lm_bitmap_test(b, i), o[i]);
	if (n & 63)
		assert_int_equal(b->words[b->nwords - 1] >> (n & 63), 0);
}

static uint64_t oracle_next(const bool *o, uint64_t n, uint64_t from, bool val)
{
	for (uint64_t i = from; i < n; i++)
		if (o[i] == val)
			return i;
	return n;
}

static void test_init_errors(void **state)
{
	(void)state;
	lm_bitmap b;
	assert_int_equal(lm_bitmap_init(&b, 0), -EINVAL);
	assert_null(b.words);
	lm_bitmap_destroy(&b); /* destroying a failed init is harmless */
	assert_int_equal(lm_bitmap_init(&b, 1), 0);
	assert_int_equal(b.nwords, 1);
	assert_int_equal(lm_bitmap_find_next_set(&b, 0), 1);
	assert_int_equal(lm_bitmap_find_next_clear(&b, 0), 0);
	lm_bitmap_set(&b, 0);
	assert_int_equal(lm_bitmap_find_next_set(&b, 0), 0);
	assert_int_equal(lm_bitmap_find_next_clear(&b, 0), 1);
	lm_bitmap_destroy(&b);
	lm_bitmap_destroy(&b);
}

static void test_edges(void **state)
{
	(void)state;
	const uint64_t sizes[] = {1, 63, 64, 65, 127, 128, 129, 200, 4096};
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		uint64_t n = sizes[si];
		lm_bitmap b, c;
		assert_int_equal(lm_bitmap_init(&b, n), 0);
		assert_int_equal(lm_bitmap_init(&c, n), 0);
		/* index 0 and the last index */
		lm_bitmap_set(&b, 0);
		lm_bitmap_set(&b, n - 1);
		assert_true(lm_bitmap_test(&b, 0));
		assert_true(lm_bitmap_test(&b, n - 1));
		assert_int_equal(lm_bitmap_find_next_set(&b, 0), 0);
		assert_int_equal(lm_bitmap_find_next_set(&b, 1), n - 1 > 0 ? n - 1 : n);
		assert_int_equal(lm_bitmap_find_next_set(&b, n - 1), n - 1);
		assert_int_equal(lm_bitmap_find_next_set(&b, n), n);
		assert_int_equal(lm_bitmap_find_next_set(&b, n + 100), n);
		assert_int_equal(lm_bitmap_find_next_clear(&b, n), n);
		assert_int_equal(lm_bitmap_count_range(&b, 0, n), n == 1 ? 1 : 2);
		assert_int_equal(lm_bitmap_count_range(&b, 0, 0), 0);
		assert_int_equal(lm_bitmap_count_range(&b, n, 0), 0);
		/* empty ranges change nothing, at either end */
		lm_bitmap_set_range(&c, 0, 0);
		lm_bitmap_set_range(&c, n, 0);
		lm_bitmap_clear_range(&b, n, 0);
		assert_int_equal(lm_bitmap_count_range(&c, 0, n), 0);
		/* full range */
		lm_bitmap_set_range(&c, 0, n);
		assert_int_equal(lm_bitmap_count_range(&c, 0, n), n);
		assert_int_equal(lm_bitmap_find_next_clear(&c, 0), n);
		if (n & 63)
			assert_int_equal(c.words[c.nwords - 1] >> (n & 63), 0);
		/* word boundaries: ranges ending and starting on them */
		for (uint64_t s = 0; s < n; s += 63) {
			uint64_t len = n - s < 65 ? n - s : 65;
			lm_bitmap_clear_range(&c, s, len);
			assert_int_equal(lm_bitmap_count_range(&c, s, len), 0);
			assert_int_equal(lm_bitmap_find_next_set(&c, s), s + len);
			lm_bitmap_set_range(&c, s, len);
		}
		for (uint64_t w = 64; w < n; w += 64) {
			lm_bitmap_clear_range(&c, 0, n);
			lm_bitmap_set(&c, w - 1);
			lm_bitmap_set(&c, w);
			assert_int_equal(lm_bitmap_find_next_set(&c, 0), w - 1);
			assert_int_equal(lm_bitmap_find_next_set(&c, w), w);
			assert_int_equal(lm_bitmap_count_range(&c, w - 1, 2), 2);
			assert_int_equal(lm_bitmap_count_range(&c, w, 1), 1);
			lm_bitmap_clear(&c, w);
			assert_int_equal(lm_bitmap_find_next_set(&c, w), n);
		}
		/* full bitmap: next clear runs off the end */
		lm_bitmap_set_range(&c, 0, n);
		assert_int_equal(lm_bitmap_find_next_clear(&c, n - 1), n);
		lm_bitmap_destroy(&b);
		lm_bitmap_destroy(&c);
	}
}

static void test_iter(void **state)
{
	(void)state;
	lm_bitmap b;
	assert_int_equal(lm_bitmap_init(&b, 1000), 0);
	lm_bitmap_iter it;
	lm_bitmap_iter_init(&it, &b, 0);
	assert_int_equal(lm_bitmap_iter_next(&it), 1000);
	assert_int_equal(lm_bitmap_iter_next(&it), 1000);
	const uint64_t want[] = {0, 1, 63, 64, 127, 500, 999};
	for (size_t i = 0; i < 7; i++)
		lm_bitmap_set(&b, want[i]);
	lm_bitmap_iter_init(&it, &b, 0);
	for (size_t i = 0; i < 7; i++)
		assert_int_equal(lm_bitmap_iter_next(&it), want[i]);
	assert_int_equal(lm_bitmap_iter_next(&it), 1000);
	lm_bitmap_iter_init(&it, &b, 64);
	assert_int_equal(lm_bitmap_iter_next(&it), 64);
	lm_bitmap_iter_init(&it, &b, 65);
	assert_int_equal(lm_bitmap_iter_next(&it), 127);
	lm_bitmap_iter_init(&it, &b, 1000);
	assert_int_equal(lm_bitmap_iter_next(&it), 1000);
	lm_bitmap_destroy(&b);
}

enum {
	OP_SET,
	OP_CLEAR,
	OP_SET_RANGE,
	OP_CLEAR_RANGE,
	OP_COUNT,
	OP_NEXT,
	OP_SYNC,
	OP_LOGIC,
	OP_ITER,
	NOPS
};

static void oracle_program(uint64_t n, unsigned steps)
{
	lm_bitmap b, other;
	bool *o = calloc(n, 1), *o2 = calloc(n, 1);
	assert_non_null(o);
	assert_non_null(o2);
	assert_int_equal(lm_bitmap_init(&b, n), 0);
	assert_int_equal(lm_bitmap_init(&other, n), 0);
	for (unsigned step = 0; step < steps; step++) {
		uint64_t i = rnd_below(n);
		/* Ranges: short ones near word edges and long ones. */
		uint64_t len = (rnd() & 1) ? rnd_below(130) : rnd_below(n + 1);
		if (len > n - i)
			len = n - i;
		switch (rnd_below(NOPS)) {
		case OP_SET:
			lm_bitmap_set(&b, i);
			o[i] = true;
			break;
		case OP_CLEAR:
			lm_bitmap_clear(&b, i);
			o[i] = false;
			break;
		case OP_SET_RANGE:
			lm_bitmap_set_range(&b, i, len);
			memset(o + i, 1, len);
			break;
		case OP_CLEAR_RANGE:
			lm_bitmap_clear_range(&b, i, len);
			memset(o + i, 0, len);
			break;
		case OP_COUNT: {
			uint64_t c = 0;
			for (uint64_t k = i; k < i + len; k++)
				c += o[k];
			assert_int_equal(lm_bitmap_count_range(&b, i, len), c);
			break;
		}
		case OP_NEXT:
			assert_int_equal(lm_bitmap_find_next_set(&b, i),
					 oracle_next(o, n, i, true));
			assert_int_equal(lm_bitmap_find_next_clear(&b, i),
					 oracle_next(o, n, i, false));
			break;
		case OP_SYNC: {
			/* A source log of len bits landing at i, sparse or dense. */
			uint64_t nw = (len + 63) / 64 + 1;
			uint64_t *src = calloc(nw, 8);
			assert_non_null(src);
			uint64_t density = rnd_below(4);
			for (uint64_t k = 0; k < len; k++)
				if (rnd_below(4) < density)
					src[k >> 6] |= 1ull << (k & 63);
			/* Bits past len in the last word belong to someone else. */
			uint64_t tail = 0;
			if (len & 63) {
				tail = rnd() & ~((1ull << (len & 63)) - 1);
				src[len >> 6] |= tail;
			}
			uint64_t fresh = 0;
			for (uint64_t k = 0; k < len; k++)
				if ((src[k >> 6] >> (k & 63)) & 1) {
					fresh += !o[i + k];
					o[i + k] = true;
				}
			assert_int_equal(lm_bitmap_sync_from(&b, i, src, len), fresh);
			for (uint64_t k = 0; k < len / 64; k++)
				assert_int_equal(src[k], 0);
			if (len & 63)
				assert_int_equal(src[len >> 6], tail);
			free(src);
			break;
		}
		case OP_LOGIC: {
			lm_bitmap_clear_range(&other, 0, n);
			for (uint64_t k = 0; k < n; k++) {
				o2[k] = rnd() & 1;
				if (o2[k])
					lm_bitmap_set(&other, k);
			}
			unsigned which = (unsigned)rnd_below(3);
			int rc = which == 0   ? lm_bitmap_and(&b, &other)
				 : which == 1 ? lm_bitmap_or(&b, &other)
					      : lm_bitmap_andnot(&b, &other);
			assert_int_equal(rc, 0);
			for (uint64_t k = 0; k < n; k++)
				o[k] = which == 0   ? (o[k] && o2[k])
				       : which == 1 ? (o[k] || o2[k])
						    : (o[k] && !o2[k]);
			break;
		}
		case OP_ITER: {
			lm_bitmap_iter it;
			lm_bitmap_iter_init(&it, &b, i);
			uint64_t want = oracle_next(o, n, i, true);
			for (;;) {
				uint64_t got = lm_bitmap_iter_next(&it);
				assert_int_equal(got, want);
				if (got >= n)
					break;
				want = oracle_next(o, n, got + 1, true);
			}
			break;
		}
		}
		check_equal(&b, o, n);
	}
	lm_bitmap_destroy(&b);
	lm_bitmap_destroy(&other);
	free(o);
	free(o2);
}

static void test_oracle(void **state)
{
	(void)state;
	const uint64_t sizes[] = {1, 2, 63, 64, 65, 128, 191, 777, 4096, 5000};
	for (uint64_t seed = 1; seed <= 6; seed++) {
		for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
			rng_state = seed * 1000 + si;
			oracle_program(sizes[si], sizes[si] > 1000 ? 300 : 600);
		}
	}
}

static void test_logic_size_mismatch(void **state)
{
	(void)state;
	lm_bitmap a, b;
	assert_int_equal(lm_bitmap_init(&a, 100), 0);
	assert_int_equal(lm_bitmap_init(&b, 101), 0);
	assert_int_equal(lm_bitmap_and(&a, &b), -EINVAL);
	assert_int_equal(lm_bitmap_or(&a, &b), -EINVAL);
	assert_int_equal(lm_bitmap_andnot(&a, &b), -EINVAL);
	lm_bitmap_destroy(&a);
	lm_bitmap_destroy(&b);
}

/* 2^36 pages: a 256 TiB guest. MAP_NORESERVE means only touched words cost. */
static void test_huge(void **state)
{
	(void)state;
	const uint64_t n = 1ull << 36;
	lm_bitmap b;
	assert_int_equal(lm_bitmap_init(&b, n), 0);
	assert_int_equal(b.nwords, 1ull << 30);
	lm_bitmap_set(&b, n - 1);
	lm_bitmap_set(&b, (1ull << 35) + 3);
	assert_true(lm_bitmap_test(&b, n - 1));
	assert_false(lm_bitmap_test(&b, n - 2));
	assert_int_equal(lm_bitmap_find_next_set(&b, n - 100000), n - 1);
	assert_int_equal(lm_bitmap_find_next_set(&b, (1ull << 35)), (1ull << 35) + 3);
	assert_int_equal(lm_bitmap_find_next_clear(&b, n - 1), n);
	assert_int_equal(lm_bitmap_count_range(&b, n - 4096, 4096), 1);
	/* A range that crosses the 2^32 and 2^35 boundaries and ends at n. */
	lm_bitmap_set_range(&b, (1ull << 32) - 5, 10);
	assert_int_equal(lm_bitmap_count_range(&b, (1ull << 32) - 64, 128), 10);
	lm_bitmap_set_range(&b, n - 200, 200);
	assert_int_equal(lm_bitmap_count_range(&b, n - 1000, 1000), 200);
	assert_int_equal(lm_bitmap_find_next_set(&b, n - 1000), n - 200);
	lm_bitmap_clear_range(&b, n - 130, 129);
	assert_int_equal(lm_bitmap_count_range(&b, n - 200, 200), 71);
	assert_true(lm_bitmap_test(&b, n - 1));
	/* Sync into the top of the map, unaligned. */
	uint64_t src[3] = {~0ull, 0x5, 0};
	assert_int_equal(lm_bitmap_sync_from(&b, n - 140, src, 130), 64 + 2 - 10);
	lm_bitmap_iter it;
	lm_bitmap_iter_init(&it, &b, n - 300);
	assert_int_equal(lm_bitmap_iter_next(&it), n - 200);
	lm_bitmap_destroy(&b);
}

/*
 * A writer thread sets every bit of a permutation of [0, NBITS) once, with
 * atomic ORs, while the main thread keeps syncing the source into dst and
 * moving what it got into "seen". Every bit must arrive exactly once: never
 * lost, never delivered twice, and the fresh counts add up.
 */
#define CONC_BITS (1u << 17)

struct writer_arg {
	uint64_t *src;
	uint32_t *order;
	volatile int done;
};

static void *writer(void *p)
{
	struct writer_arg *a = p;
	for (uint32_t k = 0; k < CONC_BITS; k++) {
		uint32_t i = a->order[k];
		__atomic_fetch_or(&a->src[i >> 6], 1ull << (i & 63), __ATOMIC_RELEASE);
	}
	__atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void concurrent_sync(uint64_t dst_start)
{
	struct writer_arg a;
	a.src = calloc(CONC_BITS / 64, 8);
	a.order = malloc(CONC_BITS * sizeof(uint32_t));
	a.done = 0;
	assert_non_null(a.src);
	assert_non_null(a.order);
	for (uint32_t k = 0; k < CONC_BITS; k++)
		a.order[k] = k;
	/* Mostly shuffled, so writes hit words the syncer is exchanging. */
	for (uint32_t k = CONC_BITS - 1; k > 0; k--) {
		uint32_t j = (uint32_t)rnd_below(k + 1);
		uint32_t t = a.order[k];
		a.order[k] = a.order[j];
		a.order[j] = t;
	}
	lm_bitmap dst, seen;
	assert_int_equal(lm_bitmap_init(&dst, dst_start + CONC_BITS + 64), 0);
	assert_int_equal(lm_bitmap_init(&seen, CONC_BITS), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer, &a), 0);
	uint64_t total = 0, rounds = 0;
	for (;;) {
		int done = __atomic_load_n(&a.done, __ATOMIC_ACQUIRE);
		total += lm_bitmap_sync_from(&dst, dst_start, a.src, CONC_BITS);
		rounds++;
		/* Move what arrived into seen; a bit arriving twice is a bug. */
		for (uint64_t i = lm_bitmap_find_next_set(&dst, 0); i < dst.nbits;
		     i = lm_bitmap_find_next_set(&dst, i + 1)) {
			assert_true(i >= dst_start && i < dst_start + CONC_BITS);
			assert_false(lm_bitmap_test(&seen, i - dst_start));
			lm_bitmap_set(&seen, i - dst_start);
			lm_bitmap_clear(&dst, i);
		}
		if (done)
			break;
	}
	pthread_join(t, NULL);
	assert_int_equal(total, CONC_BITS);
	assert_int_equal(lm_bitmap_count_range(&seen, 0, CONC_BITS), CONC_BITS);
	for (uint64_t w = 0; w < CONC_BITS / 64; w++)
		assert_int_equal(a.src[w], 0);
	assert_true(rounds >= 1);
	lm_bitmap_destroy(&dst);
	lm_bitmap_destroy(&seen);
	free(a.src);
	free(a.order);
}

static void test_sync_concurrent(void **state)
{
	(void)state;
	rng_state = 42;
	concurrent_sync(0);
	concurrent_sync(64 * 3);
	concurrent_sync(17);
	concurrent_sync(63);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init_errors),
	    cmocka_unit_test(test_edges),
	    cmocka_unit_test(test_iter),
	    cmocka_unit_test(test_oracle),
	    cmocka_unit_test(test_logic_size_mismatch),
	    cmocka_unit_test(test_huge),
	    cmocka_unit_test(test_sync_concurrent),
	};
	return cmocka_run_group_tests_name("bitmap", tests, NULL, NULL);
}
