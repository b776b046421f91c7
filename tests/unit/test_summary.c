/*
 * Unit tests for the summary bitmap (src/bitmap/summary.c): random
 * operation programs against a naive bool array, checking after every step
 * that the bits, the count, the summary (bit set iff its chunk holds a set
 * bit, with an exact dirty-chunk count) and the top level (bit set iff its
 * summary word is non-zero) are right, in every scan mode; and that a scan
 * of a huge, nearly clean map does not read the clean part of its summary.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/bitmap.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static uint64_t oracle_next(const bool *o, uint64_t n, uint64_t from)
{
	for (uint64_t i = from; i < n; i++)
		if (o[i])
			return i;
	return n;
}

static void check_state(const lm_sbitmap *s, const bool *o, uint64_t n)
{
	uint64_t chunk = 1ull << s->chunk_shift;
	uint64_t count = 0, dirty_chunks = 0;
	for (uint64_t i = 0; i < n; i++) {
		if (lm_sbitmap_test(s, i) != o[i])
			fail_msg("bit %llu differs", (unsigned long long)i);
		count += o[i];
	}
	assert_int_equal(lm_sbitmap_count(s), count);
	for (uint64_t c = 0; c * chunk < n; c++) {
		bool any = false;
		for (uint64_t i = c * chunk; i < n && i < (c + 1) * chunk; i++)
			any |= o[i];
		if (lm_sbitmap_chunk_dirty(s, c) != any)
			fail_msg("summary bit of chunk %llu is %d, chunk dirty %d",
				 (unsigned long long)c, lm_sbitmap_chunk_dirty(s, c), any);
		dirty_chunks += any;
	}
	assert_int_equal(s->nchunks_set, dirty_chunks);
	assert_int_equal(lm_bitmap_count_range(&s->summary, 0, s->nchunks), dirty_chunks);
	assert_int_equal(s->top.nbits, s->summary.nwords);
	for (uint64_t k = 0; k < s->summary.nwords; k++)
		if (lm_bitmap_test(&s->top, k) != (s->summary.words[k] != 0))
			fail_msg("top bit %llu is %d, summary word %#llx", (unsigned long long)k,
				 lm_bitmap_test(&s->top, k), (unsigned long long)s->summary.words[k]);
}

static void test_init(void **state)
{
	(void)state;
	lm_sbitmap s;
	assert_int_equal(lm_sbitmap_init(&s, 0, 0), -EINVAL);
	assert_int_equal(lm_sbitmap_init(&s, 100, 32), -EINVAL);
	assert_int_equal(lm_sbitmap_init(&s, 100, 100), -EINVAL);
	assert_int_equal(lm_sbitmap_init(&s, 1000, 0), 0);
	assert_int_equal(s.chunk_shift, 9);
	assert_int_equal(s.nchunks, 2);
	assert_int_equal(lm_sbitmap_set_mode(&s, 7), -EINVAL);
	assert_int_equal(lm_sbitmap_find_next_set(&s, 0), 1000);
	lm_sbitmap_set(&s, 999);
	assert_int_equal(lm_sbitmap_find_next_set(&s, 0), 999);
	assert_true(lm_sbitmap_chunk_dirty(&s, 1));
	assert_false(lm_sbitmap_chunk_dirty(&s, 0));
	lm_sbitmap_destroy(&s);
	lm_sbitmap_destroy(&s);
	assert_int_equal(lm_sbitmap_init(&s, 64, 64), 0);
	lm_sbitmap_set_range(&s, 0, 64);
	assert_int_equal(lm_sbitmap_count(&s), 64);
	lm_sbitmap_destroy(&s);
}

enum {
	OP_SET,
	OP_CLEAR,
	OP_SET_RANGE,
	OP_CLEAR_RANGE,
	OP_NEXT,
	OP_SYNC,
	OP_TAKE,
	OP_COLLECT,
	OP_REBUILD,
	NOPS
};

static void oracle_program(uint64_t n, uint64_t chunk, unsigned steps)
{
	lm_sbitmap s;
	bool *o = calloc(n, 1);
	uint64_t *out = calloc(n + 1, 8);
	assert_non_null(o);
	assert_non_null(out);
	assert_int_equal(lm_sbitmap_init(&s, n, chunk), 0);
	for (unsigned step = 0; step < steps; step++) {
		assert_int_equal(lm_sbitmap_set_mode(&s, (unsigned)rnd_below(3)), 0);
		uint64_t i = rnd_below(n);
		uint64_t len = (rnd() & 1) ? rnd_below(140) : rnd_below(n + 1);
		if (len > n - i)
			len = n - i;
		switch (rnd_below(NOPS)) {
		case OP_SET:
			lm_sbitmap_set(&s, i);
			o[i] = true;
			break;
		case OP_CLEAR:
			lm_sbitmap_clear(&s, i);
			o[i] = false;
			break;
		case OP_SET_RANGE:
			lm_sbitmap_set_range(&s, i, len);
			memset(o + i, 1, len);
			break;
		case OP_CLEAR_RANGE:
			lm_sbitmap_clear_range(&s, i, len);
			memset(o + i, 0, len);
			break;
		case OP_NEXT:
			for (unsigned m = 0; m < 3; m++) {
				lm_sbitmap_set_mode(&s, m);
				assert_int_equal(lm_sbitmap_find_next_set(&s, i),
						 oracle_next(o, n, i));
			}
			assert_int_equal(lm_sbitmap_find_next_set(&s, n), n);
			break;
		case OP_SYNC: {
			uint64_t nw = (len + 63) / 64 + 1;
			uint64_t *src = calloc(nw, 8);
			assert_non_null(src);
			/* sparse or dense logs */
			uint64_t every = 1 + rnd_below(200);
			for (uint64_t k = rnd_below(every); k < len; k += 1 + rnd_below(every))
				src[k >> 6] |= 1ull << (k & 63);
			uint64_t fresh = 0;
			for (uint64_t k = 0; k < len; k++)
				if ((src[k >> 6] >> (k & 63)) & 1) {
					fresh += !o[i + k];
					o[i + k] = true;
				}
			assert_int_equal(lm_sbitmap_sync_from(&s, i, src, len), fresh);
			free(src);
			break;
		}
		case OP_TAKE: {
			uint64_t max = (rnd() & 1) ? rnd_below(70) : n;
			uint64_t got = lm_sbitmap_take(&s, i, len, out, max);
			uint64_t want = 0, at = i;
			while (want < max) {
				at = oracle_next(o, n, at);
				if (at >= i + len)
					break;
				assert_true(want < got);
				assert_int_equal(out[want], at);
				o[at] = false;
				want++;
				at++;
			}
			assert_int_equal(got, want);
			break;
		}
		case OP_COLLECT: {
			/* Small batches must resume exactly where they stopped. */
			uint64_t max = 1 + rnd_below(100);
			uint64_t pos = i, end = i + len, want = oracle_next(o, n, i);
			for (;;) {
				uint64_t got = lm_sbitmap_collect(&s, &pos, end, out, max);
				assert_true(got <= max);
				for (uint64_t k = 0; k < got; k++) {
					assert_int_equal(out[k], want);
					want = oracle_next(o, n, want + 1);
				}
				if (got == 0)
					break;
			}
			assert_int_equal(pos, end);
			assert_true(want >= end);
			break;
		}
		case OP_REBUILD:
			/* Direct writes to the flat bits, then a rebuild. */
			lm_bitmap_set(&s.bits, i);
			o[i] = true;
			lm_sbitmap_rebuild(&s);
			break;
		}
		check_state(&s, o, n);
	}
	lm_sbitmap_destroy(&s);
	free(o);
	free(out);
}

static void test_oracle(void **state)
{
	(void)state;
	const struct {
		uint64_t n, chunk;
	} cfg[] = {
	    {1, 64},	 {64, 64},    {65, 64},	 {200, 64},
	    {1000, 128}, {2049, 512}, {5000, 0}, {4096, 1024},
	    /* several summary words, so that the top level has work */
	    {300000, 64}, {270000, 128},
	};
	for (uint64_t seed = 1; seed <= 5; seed++)
		for (size_t k = 0; k < sizeof(cfg) / sizeof(cfg[0]); k++) {
			rng_state = seed * 7919 + k;
			oracle_program(cfg[k].n, cfg[k].chunk, 500);
		}
}

/* Dense round one: take everything chunk by chunk, then the map is empty. */
static void test_take_all(void **state)
{
	(void)state;
	const uint64_t n = 1 << 20;
	lm_sbitmap s;
	assert_int_equal(lm_sbitmap_init(&s, n, 0), 0);
	lm_sbitmap_set_range(&s, 0, n);
	assert_int_equal(s.nchunks_set, s.nchunks);
	uint64_t *out = malloc(4096 * sizeof(uint64_t));
	assert_non_null(out);
	uint64_t total = 0, expect = 0;
	for (;;) {
		uint64_t got = lm_sbitmap_take(&s, 0, n, out, 4096);
		if (!got)
			break;
		for (uint64_t k = 0; k < got; k++)
			assert_int_equal(out[k], expect++);
		total += got;
	}
	assert_int_equal(total, n);
	assert_int_equal(lm_sbitmap_count(&s), 0);
	assert_int_equal(s.nchunks_set, 0);
	assert_int_equal(lm_sbitmap_find_next_set(&s, 0), n);
	free(out);
	lm_sbitmap_destroy(&s);
}

/* A 2^36-page summary bitmap with bits near the end only. */
static void test_huge(void **state)
{
	(void)state;
	const uint64_t n = 1ull << 36;
	lm_sbitmap s;
	assert_int_equal(lm_sbitmap_init(&s, n, 0), 0);
	lm_sbitmap_set(&s, n - 1);
	lm_sbitmap_set_range(&s, n - 3000, 10);
	assert_int_equal(lm_sbitmap_count(&s), 11);
	assert_int_equal(s.nchunks_set, 2);
	lm_sbitmap_set_mode(&s, LM_SBITMAP_SUMMARY);
	/* Walks only the 16 MiB summary, not the 8 GiB of bits. */
	assert_int_equal(lm_sbitmap_find_next_set(&s, n - (1ull << 30)), n - 3000);
	uint64_t out[16];
	assert_int_equal(lm_sbitmap_take(&s, n - 4096, 4096, out, 16), 11);
	assert_int_equal(out[10], n - 1);
	assert_int_equal(s.nchunks_set, 0);
	lm_sbitmap_destroy(&s);
}

/* Pages of [p, p + len) that are mapped (read or written since mmap). */
static size_t resident_pages(const void *p, size_t len)
{
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1);
	size_t n = (size_t)(((uintptr_t)p + len - a + (size_t)pg - 1) / (size_t)pg);
	unsigned char *v = malloc(n);
	assert_non_null(v);
	assert_int_equal(mincore((void *)a, n * (size_t)pg, v), 0);
	size_t r = 0;
	for (size_t i = 0; i < n; i++)
		r += v[i] & 1;
	free(v);
	return r;
}

/*
 * A 16 TiB guest's map (2^32 pages: a 32 MiB summary) with two dirty pages
 * far apart: finding, taking and clearing them reads a few pages of the
 * summary, not its 8192 (each first read of a page costs a fault).
 */
static void test_huge_scan_reads_little(void **state)
{
	(void)state;
	const uint64_t n = 1ull << 32;
	lm_sbitmap s;
	assert_int_equal(lm_sbitmap_init(&s, n, 0), 0);
	size_t sum_len = s.summary.nwords * sizeof(uint64_t);
	assert_int_equal(resident_pages(s.summary.words, sum_len), 0);
	lm_sbitmap_set(&s, 12345);
	lm_sbitmap_set(&s, n - 7);
	/* Both modes that may walk the summary (FLAT reads the 512 MiB of bits). */
	const unsigned modes[] = {LM_SBITMAP_AUTO, LM_SBITMAP_SUMMARY};
	for (unsigned m = 0; m < 2; m++) {
		lm_sbitmap_set_mode(&s, modes[m]);
		assert_int_equal(lm_sbitmap_find_next_set(&s, 0), 12345);
		assert_int_equal(lm_sbitmap_find_next_set(&s, 12346), n - 7);
		assert_int_equal(lm_sbitmap_find_next_set(&s, n - 6), n);
	}
	uint64_t out[4], pos = 0;
	assert_int_equal(lm_sbitmap_collect(&s, &pos, n, out, 4), 2);
	assert_int_equal(out[1], n - 7);
	assert_int_equal(lm_sbitmap_take(&s, 0, n, out, 4), 2);
	assert_int_equal(lm_sbitmap_count(&s), 0);
	assert_int_equal(lm_sbitmap_find_next_set(&s, 0), n);
	/* The two dirty chunks' summary pages, and nothing else. */
	assert_true(resident_pages(s.summary.words, sum_len) <= 2);
	/* Inside one summary page: 100000 pages past the middle one. */
	const uint64_t mid = n / 2 + 100000;
	lm_sbitmap_set_range(&s, mid, 4096);
	lm_sbitmap_clear_range(&s, mid - 1000, 10000);
	assert_int_equal(lm_sbitmap_find_next_set(&s, 0), n);
	assert_true(resident_pages(s.summary.words, sum_len) <= 3);
	lm_sbitmap_destroy(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init),
	    cmocka_unit_test(test_oracle),
	    cmocka_unit_test(test_take_all),
	    cmocka_unit_test(test_huge),
	    cmocka_unit_test(test_huge_scan_reads_little),
	};
	return cmocka_run_group_tests_name("summary", tests, NULL, NULL);
}
