/*
 * PAGEMAP_SCAN (Linux 6.7+) on /proc/self/pagemap, for dirty sources that
 * need to know which pages of this process's memory were ever populated.
 * Debian's 6.1 headers lack the interface, so it is declared here when
 * missing (values from the kernel's UAPI headers).
 */
#ifndef LIVEMIG_TRACK_PAGEMAP_H
#define LIVEMIG_TRACK_PAGEMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/fs.h>

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

struct page_region {
	uint64_t start;
	uint64_t end;
	uint64_t categories;
};

#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

struct pm_scan_arg {
	uint64_t size;
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end;
	uint64_t vec;
	uint64_t vec_len;
	uint64_t max_pages;
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

/*
 * Set in words (bit k = page k of [host, host + npages pages)) every page
 * that is present or swapped out and not mapped to the shared zero page:
 * the pages that may hold data. The others read as zero. pagemap_fd is an
 * open /proc/self/pagemap. 0 or -errno (-ENOTTY: no PAGEMAP_SCAN).
 */
/* Whether this kernel has PAGEMAP_SCAN. */
bool lm__pagemap_supported(int pagemap_fd);
int lm__pagemap_populated(int pagemap_fd, void *host, uint64_t npages, uint64_t *words);
/* The same as runs: run(arg, first_page + k, n) for the populated pages
 * [k, k + n) of the range, in ascending order, without a bitmap: O(populated
 * page tables). first_page numbers the range's first page for run. */
int lm__pagemap_populated_runs(int pagemap_fd, void *host, uint64_t npages, uint64_t first_page,
			       void (*run)(void *arg, uint64_t page, uint64_t n), void *arg);
/* The pages that have a page table entry at all (present or swapped, the
 * shared zero page included), as runs like lm__pagemap_populated_runs: the
 * pages a UFFDIO_COPY would refuse (EEXIST). */
int lm__pagemap_mapped_runs(int pagemap_fd, void *host, uint64_t npages, uint64_t first_page,
			    void (*run)(void *arg, uint64_t page, uint64_t n), void *arg);

#endif
