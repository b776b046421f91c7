/*
 * Unit tests for the run-length codec (src/bitmap/rle.c): known encodings,
 * round-trips of random page sets of every density, -ENOSPC, and rejection
 * of truncated, corrupted, non-minimal, overlong and out-of-range input.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

static bool same(const lm_bitmap *a, const lm_bitmap *b)
{
	return a->nbits == b->nbits && memcmp(a->words, b->words, a->nwords * 8) == 0;
}

static int decode_fresh(const uint8_t *buf, size_t len, uint64_t nbits, lm_bitmap *out)
{
	assert_int_equal(lm_bitmap_init(out, nbits), 0);
	return lm_rle_decode(buf, len, out);
}

static void test_known(void **state)
{
	(void)state;
	lm_bitmap b, d;
	uint8_t buf[64];
	assert_int_equal(lm_bitmap_init(&b, 1000), 0);
	/* empty set: zero bytes */
	assert_int_equal(lm_rle_encoded_size(&b), 0);
	assert_int_equal(lm_rle_encode(&b, buf, sizeof(buf)), 0);
	assert_int_equal(lm_rle_encode(&b, NULL, 0), 0);
	assert_int_equal(decode_fresh(buf, 0, 1000, &d), 0);
	assert_int_equal(lm_bitmap_count_range(&d, 0, 1000), 0);
	lm_bitmap_destroy(&d);
	assert_int_equal(decode_fresh(NULL, 0, 1000, &d), 0);
	lm_bitmap_destroy(&d);
	/* {0,1,2} and {10}: runs (gap 0, len-1 2), (gap 7, len-1 0) */
	lm_bitmap_set_range(&b, 0, 3);
	lm_bitmap_set(&b, 10);
	const uint8_t want[] = {0, 2, 7, 0};
	assert_int_equal(lm_rle_encoded_size(&b), 4);
	assert_int_equal(lm_rle_encode(&b, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, want, 4);
	/* a 300-page run at 999 is not allowed in 1000 pages, one at 700 is */
	lm_bitmap_clear_range(&b, 0, 1000);
	lm_bitmap_set_range(&b, 700, 300);
	const uint8_t want2[] = {0xbc, 0x05, 0xab, 0x02}; /* 700, 299 */
	assert_int_equal(lm_rle_encode(&b, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, want2, 4);
	assert_int_equal(decode_fresh(buf, 4, 1000, &d), 0);
	assert_true(same(&b, &d));
	lm_bitmap_destroy(&d);
	assert_int_equal(decode_fresh(buf, 4, 999, &d), -ERANGE);
	lm_bitmap_destroy(&d);
	/* cap too small */
	assert_int_equal(lm_rle_encode(&b, buf, 3), -ENOSPC);
	assert_int_equal(lm_rle_encode(&b, NULL, 0), -ENOSPC);
	lm_bitmap_destroy(&b);
}

static void roundtrip(uint64_t nbits, unsigned density_per_1024, bool runs)
{
	lm_bitmap b, d;
	assert_int_equal(lm_bitmap_init(&b, nbits), 0);
	if (runs) {
		for (uint64_t i = 0; i < nbits; i += 1 + rnd() % 300) {
			uint64_t len = 1 + rnd() % 200;
			if (len > nbits - i)
				len = nbits - i;
			lm_bitmap_set_range(&b, i, len);
			i += len;
		}
	} else {
		for (uint64_t i = 0; i < nbits; i++)
			if (rnd() % 1024 < density_per_1024)
				lm_bitmap_set(&b, i);
	}
	int64_t size = lm_rle_encoded_size(&b);
	assert_true(size >= 0);
	uint8_t *buf = malloc((size_t)size + 1);
	assert_non_null(buf);
	assert_int_equal(lm_rle_encode(&b, buf, (size_t)size), size);
	if (size > 0)
		assert_int_equal(lm_rle_encode(&b, buf, (size_t)size - 1), -ENOSPC);
	assert_int_equal(decode_fresh(buf, (size_t)size, nbits, &d), 0);
	assert_true(same(&b, &d));
	lm_bitmap_destroy(&d);
	/* Every strict prefix is either rejected or ends on a run boundary
	 * and decodes to a subset; never more than the original. */
	for (int64_t cut = 0; cut < size && cut < 400; cut++) {
		int rc = decode_fresh(buf, (size_t)cut, nbits, &d);
		if (rc == 0) {
			lm_bitmap_andnot(&d, &b);
			assert_int_equal(lm_bitmap_count_range(&d, 0, nbits), 0);
		} else {
			assert_int_equal(rc, -EINVAL);
		}
		lm_bitmap_destroy(&d);
	}
	/* Every one-byte corruption fails cleanly or decodes to some set:
	 * the decoder never reads past len nor writes past nbits (ASan). */
	for (int64_t k = 0; k < size && k < 200; k++) {
		uint8_t save = buf[k];
		buf[k] = (uint8_t)rnd();
		int rc = decode_fresh(buf, (size_t)size, nbits, &d);
		assert_true(rc == 0 || rc == -EINVAL || rc == -ERANGE);
		lm_bitmap_destroy(&d);
		buf[k] = save;
	}
	free(buf);
	lm_bitmap_destroy(&b);
}

static void test_roundtrip(void **state)
{
	(void)state;
	rng_state = 5;
	const uint64_t sizes[] = {1, 63, 64, 65, 1000, 100000};
	const unsigned dens[] = {0, 1, 30, 512, 1000, 1024};
	for (size_t s = 0; s < 6; s++) {
		for (size_t k = 0; k < 6; k++)
			roundtrip(sizes[s], dens[k], false);
		roundtrip(sizes[s], 0, true);
	}
	/* single pages at index 0 and at the last index of a 2^36 set */
	lm_bitmap b, d;
	uint8_t buf[32];
	const uint64_t n = 1ull << 36;
	assert_int_equal(lm_bitmap_init(&b, n), 0);
	lm_bitmap_set(&b, 0);
	lm_bitmap_set(&b, n - 1);
	int64_t len = lm_rle_encode(&b, buf, sizeof(buf));
	assert_int_equal(len, 2 + 6 + 1); /* (0,0), (2^36-3 in 6 bytes, 0) */
	assert_int_equal(decode_fresh(buf, (size_t)len, n, &d), 0);
	assert_int_equal(lm_bitmap_find_next_set(&d, 1), n - 1);
	lm_bitmap_destroy(&d);
	assert_int_equal(decode_fresh(buf, (size_t)len, n - 1, &d), -ERANGE);
	lm_bitmap_destroy(&d);
	lm_bitmap_destroy(&b);
}

static int decode_bytes(const uint8_t *buf, size_t len, uint64_t nbits)
{
	lm_bitmap d;
	int rc = decode_fresh(buf, len, nbits, &d);
	lm_bitmap_destroy(&d);
	return rc;
}

static void test_reject(void **state)
{
	(void)state;
	/* a lone gap with no length */
	const uint8_t lone[] = {5};
	assert_int_equal(decode_bytes(lone, 1, 100), -EINVAL);
	/* a varint cut in the middle */
	const uint8_t cut[] = {0, 0, 0x85};
	assert_int_equal(decode_bytes(cut, 3, 100), -EINVAL);
	/* non-minimal: 0x80 0x00 spells 0 in two bytes; 0x85 0x00 spells 5 */
	const uint8_t nm1[] = {0x80, 0x00, 0};
	assert_int_equal(decode_bytes(nm1, 3, 100), -EINVAL);
	const uint8_t nm2[] = {0, 0x85, 0x00};
	assert_int_equal(decode_bytes(nm2, 3, 100), -EINVAL);
	/* eleven bytes */
	const uint8_t over[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
				0x80, 0x80, 0x80, 0x80, 0x01, 0};
	assert_int_equal(decode_bytes(over, sizeof(over), 100), -EINVAL);
	/* ten bytes whose last carries more than bit 63 */
	const uint8_t big[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0};
	assert_int_equal(decode_bytes(big, sizeof(big), 100), -EINVAL);
	/* ten bytes, exactly 2^64-1: valid varint, out of range as a gap */
	const uint8_t max[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0};
	assert_int_equal(decode_bytes(max, sizeof(max), 100), -ERANGE);
	/* length 2^64 (len-1 = 2^64-1) must not wrap around */
	const uint8_t huge_len[] = {3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	assert_int_equal(decode_bytes(huge_len, sizeof(huge_len), 100), -ERANGE);
	/* second run adjacent to the first (gap 0): not maximal */
	const uint8_t adj[] = {0, 4, 0, 4};
	assert_int_equal(decode_bytes(adj, sizeof(adj), 100), -EINVAL);
	/* runs past nbits, at the first page past and by one page */
	const uint8_t past[] = {100, 0};
	assert_int_equal(decode_bytes(past, 2, 100), -ERANGE);
	const uint8_t past2[] = {99, 1};
	assert_int_equal(decode_bytes(past2, 2, 100), -ERANGE);
	const uint8_t fits[] = {99, 0};
	assert_int_equal(decode_bytes(fits, 2, 100), 0);
	/* a full set followed by anything */
	const uint8_t full[] = {0, 99, 1, 0};
	assert_int_equal(decode_bytes(full, 2, 100), 0);
	assert_int_equal(decode_bytes(full, 4, 100), -ERANGE);
	/* trailing garbage after a valid encoding: a lone byte */
	const uint8_t trail[] = {1, 2, 0x80};
	assert_int_equal(decode_bytes(trail, 3, 100), -EINVAL);
	/* NULL with a length */
	lm_bitmap d;
	assert_int_equal(lm_bitmap_init(&d, 10), 0);
	assert_int_equal(lm_rle_decode(NULL, 3, &d), -EINVAL);
	lm_bitmap_destroy(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known),
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_reject),
	};
	return cmocka_run_group_tests_name("rle", tests, NULL, NULL);
}
