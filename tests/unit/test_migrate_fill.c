/*
 * The receiver's filler (src/migrate/fill.c) on real process memory: pages
 * that already have a page table entry when it starts (written, read and
 * so mapped to the shared zero page, or preallocated) are known from
 * PAGEMAP_SCAN and copied with memcpy, the others placed with UFFDIO_COPY;
 * either way every placed page holds exactly the bytes given, and a run
 * counts as present (written directly by a receiver) only when every page
 * of it is known populated. Skipped where
 * userfaultfd or PAGEMAP_SCAN is missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "migrate/internal.h"
#include "track/pagemap.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define NPAGES 64u
#define FIRST 1000u /* the region's first guest page */

static bool pagemap_scan_here(void)
{
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	bool ok = pm >= 0 && lm__pagemap_supported(pm);
	if (pm >= 0)
		close(pm);
	return ok;
}

static void test_mapped_pages_known(void **state)
{
	(void)state;
	if (!pagemap_scan_here()) {
		print_message("      skipped: no PAGEMAP_SCAN\n");
		skip();
	}
	uint8_t *m = mmap(NULL, NPAGES * LM_PAGE_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(m != MAP_FAILED);
	/* Small pages only: one written byte must map one page, not 512. */
	madvise(m, NPAGES * LM_PAGE_SIZE, MADV_NOHUGEPAGE);
	for (unsigned p = 3; p < 10; p++)
		m[p * LM_PAGE_SIZE + 5] = (uint8_t)p; /* written */
	volatile uint8_t r = m[20 * LM_PAGE_SIZE]; /* read: the shared zero page */
	(void)r;
	bool prealloc = madvise(m + 40 * LM_PAGE_SIZE, 8 * LM_PAGE_SIZE, MADV_POPULATE_WRITE) == 0;

	struct lm_mem_region reg = { FIRST, NPAGES, m };
	struct lm__filler f;
	lm__filler_init(&f, &reg, 1, FIRST + NPAGES);
	if (!lm__filler_on(&f)) {
		print_message("      skipped: filler off (%s)\n", f.off_why);
		munmap(m, NPAGES * LM_PAGE_SIZE);
		skip();
	}
	for (unsigned p = 0; p < NPAGES; p++) {
		bool mapped = (p >= 3 && p < 10) || p == 20 || (prealloc && p >= 40 && p < 48);
		if (lm_bitmap_test(&f.populated, FIRST + p) != mapped)
			fail_msg("page %u: known populated %d, mapped %d", p, lm_bitmap_test(&f.populated, FIRST + p),
				 mapped);
	}

	/* What a receiver may write directly: only runs all known populated. */
	assert_true(lm__filler_present(&f, FIRST + 3, 7));
	assert_true(lm__filler_present(&f, FIRST + 20, 1));
	assert_false(lm__filler_present(&f, FIRST + 2, 8));
	assert_false(lm__filler_present(&f, FIRST + 3, 8));
	assert_false(lm__filler_present(&f, FIRST, NPAGES));
	assert_false(lm__filler_present(&f, FIRST + NPAGES, 1)); /* past the map */
	assert_int_equal(lm__filler_present(&f, FIRST + 40, 8), prealloc);

	/* Every page placed in one call, mapped or not: exactly the bytes given. */
	uint8_t *src = aligned_alloc(LM_PAGE_SIZE, NPAGES * LM_PAGE_SIZE);
	assert_non_null(src);
	for (size_t i = 0; i < NPAGES * LM_PAGE_SIZE; i++)
		src[i] = (uint8_t)(i * 7 + i / LM_PAGE_SIZE);
	assert_int_equal(lm__filler_place(&f, FIRST, m, src, NPAGES), 0);
	for (unsigned p = 0; p < NPAGES; p++)
		assert_true(lm_bitmap_test(&f.populated, FIRST + p));
	assert_true(lm__filler_present(&f, FIRST, NPAGES));
	/* Placed everywhere: reading cannot fault into the registered range. */
	assert_memory_equal(m, src, NPAGES * LM_PAGE_SIZE);
	lm__filler_destroy(&f);
	free(src);
	munmap(m, NPAGES * LM_PAGE_SIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mapped_pages_known),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
