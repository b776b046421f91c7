/*
 * Tests for the incremental RAM digest (src/stream/digest.c).
 *
 * The oracle is the definition itself, computed here independently with
 * xxhash: the sum mod 2^128 over every page of 0 for a zero page, else
 * XXH3-128(page, seed = index). Random programs of page writes, zeroings and
 * resends are applied to a memory image and, as a migration would, to the
 * incremental digest; after every step the two must agree.
 */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "livemig/stream.h"

#define PG 4096u

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

/* The definition, written out with unsigned __int128 as an independent adder. */
static lm_hash128 oracle(const uint8_t *mem, uint64_t first, uint64_t npages)
{
	unsigned __int128 sum = 0;
	static const uint8_t zero[PG];
	for (uint64_t k = 0; k < npages; k++) {
		const uint8_t *p = mem + k * PG;
		if (!memcmp(p, zero, PG))
			continue;
		XXH128_hash_t h = XXH3_128bits_withSeed(p, PG, first + k);
		sum += ((unsigned __int128)h.high64 << 64) | h.low64;
	}
	lm_hash128 r = {(uint64_t)sum, (uint64_t)(sum >> 64)};
	return r;
}

static void assert_hash_eq(lm_hash128 a, lm_hash128 b)
{
	if (!lm_hash128_eq(a, b))
		fail_msg("digest %016llx%016llx != %016llx%016llx", (unsigned long long)a.hi,
			 (unsigned long long)a.lo, (unsigned long long)b.hi,
			 (unsigned long long)b.lo);
}

static void test_contrib_definition(void **state)
{
	(void)state;
	uint8_t page[PG];
	memset(page, 0, sizeof(page));
	lm_hash128 c = lm_digest_contrib(7, page);
	assert_int_equal(c.lo, 0);
	assert_int_equal(c.hi, 0);
	/* One nonzero byte anywhere, including the very last, makes a hash. */
	page[PG - 1] = 1;
	c = lm_digest_contrib(7, page);
	XXH128_hash_t h = XXH3_128bits_withSeed(page, PG, 7);
	assert_int_equal(c.lo, h.low64);
	assert_int_equal(c.hi, h.high64);
	/* The index is bound in: the same page elsewhere contributes differently. */
	lm_hash128 c8 = lm_digest_contrib(8, page);
	assert_false(lm_hash128_eq(c, c8));
	/* Large indices (beyond 8 TiB of guest) work as seeds. */
	lm_hash128 big = lm_digest_contrib(1ull << 40, page);
	h = XXH3_128bits_withSeed(page, PG, 1ull << 40);
	assert_int_equal(big.lo, h.low64);
	/* Pages need not be aligned: inside an outgoing frame they sit at
	 * offset 28 (UBSan flags misaligned word loads). */
	uint8_t *buf = calloc(1, PG + 64);
	for (size_t at = 1; at < 32; at += 9) {
		memset(buf, 0, PG + 64);
		c = lm_digest_contrib(3, buf + at);
		assert_int_equal(c.lo | c.hi, 0);
		buf[at + PG - 1] = 9;
		c = lm_digest_contrib(3, buf + at);
		h = XXH3_128bits_withSeed(buf + at, PG, 3);
		assert_int_equal(c.lo, h.low64);
	}
	free(buf);
}

static void test_init_errors(void **state)
{
	(void)state;
	lm_digest d;
	assert_int_equal(lm_digest_init(&d, 0), -EINVAL);
	assert_int_equal(lm_digest_init(&d, LM_STREAM_PAGE_LIMIT + 1), -EINVAL);
	assert_int_equal(lm_digest_init(&d, 16), 0);
	lm_hash128 v = lm_digest_value(&d);
	assert_int_equal(v.lo | v.hi, 0);
	/* Out-of-range indices are ignored rather than written. */
	uint8_t page[PG];
	memset(page, 0x11, sizeof(page));
	lm_digest_page(&d, 16, page);
	lm_digest_zero(&d, 20, 5);
	v = lm_digest_value(&d);
	assert_int_equal(v.lo | v.hi, 0);
	lm_digest_destroy(&d);
}

/* Random programs against the oracle: writes, zeroings, resends, runs. */
static void test_incremental_vs_oracle(void **state)
{
	(void)state;
	const uint64_t first = 1000, npages = 256;
	uint8_t *mem = calloc(npages, PG);
	lm_digest d;
	assert_int_equal(lm_digest_init(&d, first + npages), 0);
	for (int step = 0; step < 1500; step++) {
		uint64_t i = rnd() % npages;
		uint64_t n = 1 + rnd() % 8;
		if (i + n > npages)
			n = npages - i;
		uint8_t *p = mem + i * PG;
		switch (rnd() % 5) {
		case 0: /* a random page run written and sent */
			for (size_t k = 0; k < n * PG; k += 8)
				*(uint64_t *)(p + k) = rnd();
			lm_digest_pages(&d, first + i, n, p);
			break;
		case 1: /* one byte changed, page resent */
			p[rnd() % PG] ^= (uint8_t)(1 + rnd() % 255);
			lm_digest_page(&d, first + i, p);
			break;
		case 2: /* a zero run */
			memset(p, 0, n * PG);
			lm_digest_zero(&d, first + i, n);
			break;
		case 3: /* a page that became zero, sent as data */
			memset(p, 0, PG);
			lm_digest_page(&d, first + i, p);
			break;
		case 4: /* the same contents resent: no change */
			lm_digest_page(&d, first + i, p);
			break;
		}
		if (step % 50 == 0 || step == 1499)
			assert_hash_eq(lm_digest_value(&d), oracle(mem, first, npages));
	}
	/* lm_digest_add_memory is the same definition in one pass. */
	lm_hash128 acc = {0, 0};
	lm_digest_add_memory(&acc, first, npages, mem);
	assert_hash_eq(acc, lm_digest_value(&d));
	/* Zeroing everything brings the sum back to exactly 0 (carries undone). */
	lm_digest_zero(&d, 0, first + npages);
	acc = lm_digest_value(&d);
	assert_int_equal(acc.lo | acc.hi, 0);
	lm_digest_destroy(&d);
	free(mem);
}

/* Order of updates does not matter; only the final contents do. */
static void test_order_independent(void **state)
{
	(void)state;
	enum { N = 64 };
	uint8_t *mem = malloc((size_t)N * PG);
	for (size_t k = 0; k < (size_t)N * PG; k += 8)
		*(uint64_t *)(mem + k) = rnd();
	lm_digest a, b;
	assert_int_equal(lm_digest_init(&a, N), 0);
	assert_int_equal(lm_digest_init(&b, N), 0);
	for (uint64_t i = 0; i < N; i++)
		lm_digest_page(&a, i, mem + i * PG);
	/* b sees garbage first, then the pages in reverse, some twice. */
	uint8_t junk[PG];
	memset(junk, 0x77, sizeof(junk));
	for (uint64_t i = 0; i < N; i += 3)
		lm_digest_page(&b, i, junk);
	for (uint64_t i = N; i-- > 0;)
		lm_digest_page(&b, i, mem + i * PG);
	for (uint64_t i = 0; i < N; i += 5)
		lm_digest_page(&b, i, mem + i * PG);
	assert_hash_eq(lm_digest_value(&a), lm_digest_value(&b));
	/* Swapping two different pages changes the digest. */
	lm_digest_page(&b, 1, mem + 2 * PG);
	lm_digest_page(&b, 2, mem + 1 * PG);
	assert_false(lm_hash128_eq(lm_digest_value(&a), lm_digest_value(&b)));
	lm_digest_destroy(&a);
	lm_digest_destroy(&b);
	free(mem);
}

/* The sum must carry across the 64-bit halves: sums of many hashes overflow lo. */
static void test_carry(void **state)
{
	(void)state;
	enum { N = 512 };
	uint8_t page[PG];
	lm_digest d;
	assert_int_equal(lm_digest_init(&d, N), 0);
	uint8_t *mem = calloc(N, PG);
	for (uint64_t i = 0; i < N; i++) {
		memset(page, (int)(1 + i % 250), sizeof(page));
		page[0] = (uint8_t)i;
		memcpy(mem + i * PG, page, PG);
		lm_digest_page(&d, i, page);
	}
	assert_hash_eq(lm_digest_value(&d), oracle(mem, 0, N));
	/* Remove them in another order: back to 0, so borrows are right too. */
	for (uint64_t i = 0; i < N; i += 2)
		lm_digest_zero(&d, i, 1);
	for (uint64_t i = 1; i < N; i += 2)
		lm_digest_zero(&d, i, 1);
	lm_hash128 v = lm_digest_value(&d);
	assert_int_equal(v.lo | v.hi, 0);
	lm_digest_destroy(&d);
	free(mem);
}

/* A 1 TiB page space costs nothing until touched: digest a few pages at its far end. */
static void test_sparse_huge(void **state)
{
	(void)state;
	const uint64_t end = 1ull << 28; /* 1 TiB of pages */
	lm_digest d;
	assert_int_equal(lm_digest_init(&d, end), 0);
	uint8_t page[PG];
	memset(page, 0x5c, sizeof(page));
	lm_digest_page(&d, end - 1, page);
	lm_digest_page(&d, 12345678, page);
	lm_digest_zero(&d, 0, 1000); /* zero over zero: no writes */
	lm_hash128 want = lm_digest_contrib(end - 1, page);
	lm_hash128 c2 = lm_digest_contrib(12345678, page);
	unsigned __int128 s = (((unsigned __int128)want.hi << 64) | want.lo) +
			      (((unsigned __int128)c2.hi << 64) | c2.lo);
	lm_hash128 sum = {(uint64_t)s, (uint64_t)(s >> 64)};
	assert_hash_eq(lm_digest_value(&d), sum);
	lm_digest_destroy(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_contrib_definition),
	    cmocka_unit_test(test_init_errors),
	    cmocka_unit_test(test_incremental_vs_oracle),
	    cmocka_unit_test(test_order_independent),
	    cmocka_unit_test(test_carry),
	    cmocka_unit_test(test_sparse_huge),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
