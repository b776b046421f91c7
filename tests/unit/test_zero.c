/*
 * Unit tests for the zero-page test (src/bitmap/zero.c): every
 * implementation (AVX2, SSE2, portable words, and the chosen one with and
 * without sampling) says "zero" for a zero page and "not zero" for a page
 * with one non-zero byte at any offset, at any alignment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "livemig/bitmap.h"
#include "bitmap/bitmap_impl.h"

static const char *const impls[] = {"avx2", "sse2", "words", "nosample"};

static bool check(int impl, const void *p)
{
	return impl < 0 ? lm_page_is_zero(p) : lm__page_is_zero_with(impls[impl], p);
}

static void test_impl_name(void **state)
{
	(void)state;
	const char *name = lm_zero_impl();
	assert_non_null(name);
#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx2"))
		assert_string_equal(name, "avx2");
	else
		assert_string_equal(name, "sse2");
#endif
}

static void test_every_offset(void **state)
{
	(void)state;
	/* two pages of room so the page can start at any of 64 offsets */
	unsigned char *buf = aligned_alloc(4096, 3 * 4096);
	assert_non_null(buf);
	memset(buf, 0, 3 * 4096);
	for (size_t align = 0; align < 64; align += 7) {
		unsigned char *p = buf + 4096 + align;
		for (int impl = -1; impl < 4; impl++) {
			assert_true(check(impl, p));
			for (size_t off = 0; off < 4096; off++) {
				unsigned char v = (unsigned char)(1u << (off % 8));
				p[off] = v;
				if (check(impl, p))
					fail_msg("impl %d align %zu: byte %zu = %u reads as zero",
						 impl, align, off, v);
				p[off] = 0;
			}
			/* bytes just outside the page do not count */
			p[-1] = 0xff;
			p[4096] = 0xff;
			assert_true(check(impl, p));
			p[-1] = 0;
			p[4096] = 0;
		}
	}
	free(buf);
}

static void test_full_page(void **state)
{
	(void)state;
	unsigned char *p = aligned_alloc(4096, 4096);
	assert_non_null(p);
	memset(p, 0xa5, 4096);
	for (int impl = -1; impl < 4; impl++)
		assert_false(check(impl, p));
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_impl_name),
	    cmocka_unit_test(test_every_offset),
	    cmocka_unit_test(test_full_page),
	};
	return cmocka_run_group_tests_name("zero", tests, NULL, NULL);
}
