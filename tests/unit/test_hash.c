/*
 * Unit tests for the stream layer's XXH3 ops (src/stream/hash.c): every
 * instruction set's entry gives the reference library's values (one-shot
 * 64 and 128 bits, and streaming in uneven pieces) at lengths around
 * XXH3's internal block and stripe sizes, so a sender on one CPU and a
 * receiver on another agree; and the chosen entry is AVX2 exactly where
 * the CPU has it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "stream/hash.h"

static const size_t lens[] = {0, 1, 3, 16, 17, 128, 129, 240, 241, 1023, 1024, 4095, 4096, 4097, 65536 + 7, 1u << 20};

static uint8_t *pattern(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	assert_non_null(p);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
	return p;
}

static void check_ops(const struct lm__hash_ops *h)
{
	uint8_t *buf = pattern(1u << 20);
	const uint64_t seeds[] = {0, 7, 1ull << 40, ~0ull};
	for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
		size_t n = lens[li];
		for (size_t si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
			uint64_t seed = seeds[si];
			/* Unaligned too: pages sit 28 bytes into a frame. */
			const uint8_t *p = buf + (li & 1 ? 28 : 0);
			size_t len = n > (1u << 20) - 28 ? n - 28 : n;
			assert_int_equal(h->h64(p, len, seed), XXH3_64bits_withSeed(p, len, seed));
			XXH128_hash_t ref = XXH3_128bits_withSeed(p, len, seed);
			lm_hash128 got = h->h128(p, len, seed);
			assert_int_equal(got.lo, ref.low64);
			assert_int_equal(got.hi, ref.high64);

			lm_stream_csum c;
			memset(&c, 0xa5, sizeof(c)); /* garbage the reset must not trust */
			h->reset(&c, seed);
			size_t done = 0, step = 1;
			while (done < len) {
				size_t k = step < len - done ? step : len - done;
				h->update(&c, p + done, k);
				done += k;
				step = step * 3 + 5;
			}
			assert_int_equal(h->digest(&c), XXH3_64bits_withSeed(p, len, seed));
		}
	}
	free(buf);
}

static void test_sse2(void **state)
{
	(void)state;
	assert_string_equal(lm__hash_sse2.name, "sse2");
	check_ops(&lm__hash_sse2);
}

static void test_avx2(void **state)
{
	(void)state;
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !lm__hash_avx2.name)
		skip();
	assert_string_equal(lm__hash_avx2.name, "avx2");
	check_ops(&lm__hash_avx2);
}

static void test_chosen(void **state)
{
	(void)state;
	__builtin_cpu_init();
	const struct lm__hash_ops *h = lm__hash();
	/* The test binaries are built as the library is: with the AVX2 copy. */
	assert_non_null(lm__hash_avx2.name);
	assert_ptr_equal(h, __builtin_cpu_supports("avx2") ? &lm__hash_avx2 : &lm__hash_sse2);
	assert_ptr_equal(lm__hash(), h);
	check_ops(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sse2),
	    cmocka_unit_test(test_avx2),
	    cmocka_unit_test(test_chosen),
	};
	return cmocka_run_group_tests_name("hash", tests, NULL, NULL);
}
