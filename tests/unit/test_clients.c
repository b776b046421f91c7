/*
 * Unit tests for the per-client dirty maps (src/bitmap/clients.c): clients
 * are independent, a sync takes each source word once and delivers it to
 * every active client, and random programs agree with one bool array per
 * client.
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

static void test_enable_disable(void **state)
{
	(void)state;
	lm_dirty_clients c;
	assert_int_equal(lm_dirty_clients_init(&c, 0), -EINVAL);
	assert_int_equal(lm_dirty_clients_init(&c, 1000), 0);
	assert_int_equal(c.active, 0);
	assert_null(lm_dirty_clients_map(&c, LM_CLIENT_MIGRATION));
	assert_int_equal(lm_dirty_clients_enable(&c, LM_CLIENT_MAX), -EINVAL);
	assert_int_equal(lm_dirty_clients_enable(&c, LM_CLIENT_MIGRATION), 0);
	assert_int_equal(lm_dirty_clients_enable(&c, LM_CLIENT_MIGRATION), 0); /* idempotent */
	assert_int_equal(lm_dirty_clients_enable(&c, LM_CLIENT_DISPLAY), 0);
	assert_int_equal(c.active, (1u << LM_CLIENT_MIGRATION) | (1u << LM_CLIENT_DISPLAY));
	lm_dirty_clients_set_range(&c, 10, 20);
	assert_true(lm_dirty_clients_test_and_clear(&c, LM_CLIENT_MIGRATION, 10));
	assert_false(lm_dirty_clients_test_and_clear(&c, LM_CLIENT_MIGRATION, 10));
	/* the display client still has it: clients are independent */
	assert_true(lm_dirty_clients_test_and_clear(&c, LM_CLIENT_DISPLAY, 10));
	assert_false(lm_dirty_clients_test_and_clear(&c, LM_CLIENT_CODE, 11));
	assert_false(lm_dirty_clients_test_and_clear(&c, LM_CLIENT_MIGRATION, 1000));
	lm_dirty_clients_disable(&c, LM_CLIENT_DISPLAY);
	assert_null(lm_dirty_clients_map(&c, LM_CLIENT_DISPLAY));
	assert_false(lm_dirty_clients_test_and_clear(&c, LM_CLIENT_DISPLAY, 12));
	/* re-enabling starts clean */
	assert_int_equal(lm_dirty_clients_enable(&c, LM_CLIENT_DISPLAY), 0);
	assert_int_equal(
	    lm_bitmap_count_range(lm_dirty_clients_map(&c, LM_CLIENT_DISPLAY), 0, 1000), 0);
	assert_int_equal(
	    lm_bitmap_count_range(lm_dirty_clients_map(&c, LM_CLIENT_MIGRATION), 0, 1000), 19);
	lm_dirty_clients_disable(&c, LM_CLIENT_MAX + 3); /* harmless */
	lm_dirty_clients_destroy(&c);
	assert_int_equal(c.active, 0);
}

static void test_sync_all_clients(void **state)
{
	(void)state;
	lm_dirty_clients c;
	assert_int_equal(lm_dirty_clients_init(&c, 300), 0);
	uint64_t src[3] = {0x8000000000000001ull, 0xf0, 0x3};
	/* nobody listening: the log is still emptied */
	assert_int_equal(lm_dirty_clients_sync_from(&c, 0, src, 130), 0);
	assert_int_equal(src[0], 0);
	assert_int_equal(src[1], 0);
	assert_int_equal(src[2], 0);
	assert_int_equal(lm_dirty_clients_enable(&c, LM_CLIENT_DISPLAY), 0);
	assert_int_equal(lm_dirty_clients_enable(&c, 5), 0);
	src[0] = 0x8000000000000001ull;
	src[1] = 0xf0;
	src[2] = 0xff; /* bits past nbits = 130 are someone else's */
	/* migration is not active: the return value counts only migration */
	assert_int_equal(lm_dirty_clients_sync_from(&c, 7, src, 130), 0);
	assert_int_equal(src[2], 0xfc);
	for (unsigned cl = 0; cl < LM_CLIENT_MAX; cl++) {
		lm_bitmap *b = lm_dirty_clients_map(&c, cl);
		if (!b)
			continue;
		assert_int_equal(lm_bitmap_count_range(b, 0, 300), 8);
		assert_true(lm_bitmap_test(b, 7));
		assert_true(lm_bitmap_test(b, 7 + 63));
		assert_true(lm_bitmap_test(b, 7 + 64 + 4));
		assert_true(lm_bitmap_test(b, 7 + 129));
		assert_false(lm_bitmap_test(b, 7 + 130));
	}
	assert_int_equal(lm_dirty_clients_enable(&c, LM_CLIENT_MIGRATION), 0);
	uint64_t src2[2] = {0x3, 0};
	assert_int_equal(lm_dirty_clients_sync_from(&c, 6, src2, 128), 2);
	/* display already had page 7: for it only page 6 is new, but the
	 * return value is the migration client's */
	assert_int_equal(lm_bitmap_count_range(lm_dirty_clients_map(&c, LM_CLIENT_DISPLAY), 0, 300),
			 9);
	lm_dirty_clients_destroy(&c);
}

static void test_oracle(void **state)
{
	(void)state;
	const uint64_t n = 777;
	rng_state = 99;
	lm_dirty_clients c;
	bool o[LM_CLIENT_MAX][777];
	memset(o, 0, sizeof(o));
	assert_int_equal(lm_dirty_clients_init(&c, n), 0);
	for (unsigned step = 0; step < 3000; step++) {
		unsigned cl = (unsigned)(rnd() % LM_CLIENT_MAX);
		uint64_t i = rnd() % n, len = rnd() % (n - i + 1);
		switch (rnd() % 5) {
		case 0:
			assert_int_equal(lm_dirty_clients_enable(&c, cl), 0);
			break;
		case 1:
			lm_dirty_clients_disable(&c, cl);
			memset(o[cl], 0, n);
			break;
		case 2:
			lm_dirty_clients_set_range(&c, i, len);
			for (unsigned k = 0; k < LM_CLIENT_MAX; k++)
				if (c.active & (1u << k))
					memset(o[k] + i, 1, len);
			break;
		case 3: {
			bool want = (c.active & (1u << cl)) && o[cl][i];
			assert_int_equal(lm_dirty_clients_test_and_clear(&c, cl, i), want);
			o[cl][i] = false;
			break;
		}
		case 4: {
			uint64_t src[14] = {0};
			for (uint64_t k = 0; k < len; k++)
				if (rnd() % 8 == 0)
					src[k >> 6] |= 1ull << (k & 63);
			uint64_t fresh = 0;
			for (uint64_t k = 0; k < len; k++) {
				if (!((src[k >> 6] >> (k & 63)) & 1))
					continue;
				for (unsigned m = 0; m < LM_CLIENT_MAX; m++) {
					if (!(c.active & (1u << m)))
						continue;
					if (m == LM_CLIENT_MIGRATION && !o[m][i + k])
						fresh++;
					o[m][i + k] = true;
				}
			}
			assert_int_equal(lm_dirty_clients_sync_from(&c, i, src, len), fresh);
			break;
		}
		}
		for (unsigned k = 0; k < LM_CLIENT_MAX; k++) {
			lm_bitmap *b = lm_dirty_clients_map(&c, k);
			for (uint64_t p = 0; p < n; p++)
				assert_int_equal(b ? lm_bitmap_test(b, p) : false, o[k][p]);
		}
	}
	lm_dirty_clients_destroy(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_enable_disable),
	    cmocka_unit_test(test_sync_all_clients),
	    cmocka_unit_test(test_oracle),
	};
	return cmocka_run_group_tests_name("clients", tests, NULL, NULL);
}
