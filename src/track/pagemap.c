/*
 * Which pages of a mapping were ever populated, from PAGEMAP_SCAN: the
 * kernel walks the page tables and answers in runs of pages, so the cost
 * follows the populated part, not the mapping's size (a 1 TiB guest with
 * 2 GiB touched costs a walk of 2 GiB).
 */
#include <errno.h>

#include "track/pagemap.h"
#include "livemig/common.h"

#define VEC_LEN 512

static void set_bits(uint64_t *words, uint64_t p0, uint64_t p1)
{
	while (p0 < p1) {
		uint64_t bit = p0 & 63, take = 64 - bit;
		if (take > p1 - p0)
			take = p1 - p0;
		words[p0 / 64] |= take == 64 ? ~0ull : ((1ull << take) - 1) << bit;
		p0 += take;
	}
}

bool lm__pagemap_supported(int pagemap_fd)
{
	/* An empty range: only the ioctl's existence is tested. */
	struct pm_scan_arg arg = {.size = sizeof(arg)};
	return ioctl(pagemap_fd, PAGEMAP_SCAN, &arg) >= 0;
}

/* The runs of pages present or swapped; mapped to the shared zero page too
 * when zero_too. */
static int scan_runs(int pagemap_fd, void *host, uint64_t npages, uint64_t first_page, bool zero_too,
		     void (*run)(void *arg, uint64_t page, uint64_t n), void *arg_)
{
	struct page_region vec[VEC_LEN];
	uint64_t base = (uint64_t)(uintptr_t)host;
	uint64_t start = base, end = base + npages * LM_PAGE_SIZE;
	while (start < end) {
		struct pm_scan_arg arg = {
		    .size = sizeof(arg),
		    .start = start,
		    .end = end,
		    .vec = (uint64_t)(uintptr_t)vec,
		    .vec_len = VEC_LEN,
		    /* not mapped to the zero page (unless zero_too) ... */
		    .category_inverted = zero_too ? 0 : PAGE_IS_PFNZERO,
		    .category_mask = zero_too ? 0 : PAGE_IS_PFNZERO,
		    /* ... and present or swapped */
		    .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		    .return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		};
		int n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		for (int i = 0; i < n; i++) {
			if (vec[i].start < base || vec[i].end > end || vec[i].start >= vec[i].end)
				return -EIO;
			run(arg_, first_page + (vec[i].start - base) / LM_PAGE_SIZE,
			    (vec[i].end - vec[i].start) / LM_PAGE_SIZE);
		}
		if (arg.walk_end <= start || arg.walk_end > end)
			return -EIO;
		start = arg.walk_end;
	}
	return 0;
}

int lm__pagemap_populated_runs(int pagemap_fd, void *host, uint64_t npages, uint64_t first_page,
				void (*run)(void *arg, uint64_t page, uint64_t n), void *arg)
{
	return scan_runs(pagemap_fd, host, npages, first_page, false, run, arg);
}

int lm__pagemap_mapped_runs(int pagemap_fd, void *host, uint64_t npages, uint64_t first_page,
			    void (*run)(void *arg, uint64_t page, uint64_t n), void *arg)
{
	return scan_runs(pagemap_fd, host, npages, first_page, true, run, arg);
}

static void words_run(void *arg, uint64_t off, uint64_t n)
{
	set_bits(arg, off, off + n);
}

int lm__pagemap_populated(int pagemap_fd, void *host, uint64_t npages, uint64_t *words)
{
	return lm__pagemap_populated_runs(pagemap_fd, host, npages, 0, words_run, words);
}
