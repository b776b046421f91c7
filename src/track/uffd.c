/*
 * Dirty tracking of ordinary process memory with userfaultfd write-protect
 * in asynchronous mode and the PAGEMAP_SCAN ioctl (Linux 6.7+).
 *
 * Workload: a few large anonymous regions written by other threads of this
 * process; the migration thread harvests one range at a time. Arming
 * protects every page (UFFD_FEATURE_WP_UNPOPULATED puts markers on pages
 * that were never touched, so their first write is seen too). In async mode
 * the kernel resolves a write fault on a protected page itself by dropping
 * the protection: the writer pays ~1 us once per page and no handler thread
 * exists. PAGEMAP_SCAN with PM_SCAN_WP_MATCHING then reports the pages that
 * lost their protection (PAGE_IS_WRITTEN) and protects them again in the
 * same page-table walk, so harvest and re-arm are one step
 * (LM_DIRTY_SYNC_REARMS) and clear() has nothing to do. The kernel answers
 * in runs of pages (struct page_region), which we spread into a private word
 * log and hand to lm_sbitmap_sync_from 64 pages at a time.
 *
 * Never-touched pages: just before arming, one scan records which pages were
 * present or swapped; the rest read as zero, and anything written after
 * arming is reported by sync anyway. present() answers from that snapshot,
 * so the engine can skip untouched memory without reading it.
 *
 * Debian's 6.1 headers lack the constants of this interface: userfaultfd's
 * are defined here when missing, PAGEMAP_SCAN's in track/pagemap.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>

#include "track/internal.h"
#include "track/pagemap.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif


/* Pages per sync step: bounds the private word log (32 KiB). */
#define UFFD_SYNC_PAGES (1ull << 18)
/* page_region entries per PAGEMAP_SCAN call. */
#define UFFD_VEC_LEN 1024

struct uffd_source {
	struct lm_dirty_source base;
	int uffd;
	int pagemap;
	uint64_t *log;            /* UFFD_SYNC_PAGES bits */
	struct page_region *vec;  /* UFFD_VEC_LEN entries */
	lm_bitmap *present;       /* per region: pages populated at start() */
};

static struct uffd_source *to_uffd(struct lm_dirty_source *s)
{
	return (struct uffd_source *)s;
}

static int open_uffd(void)
{
	/* As root the plain syscall works; otherwise user-mode-only faults
	 * (all we need) are allowed, or /dev/userfaultfd if its mode permits. */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd >= 0)
		return fd;
	int err = -errno;
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return err;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		fd = -errno;
	close(dev);
	return fd;
}

static int uffd_api(int fd)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
	};
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return errno == EINVAL ? -EOPNOTSUPP : -errno;
	return 0;
}

int lm_uffd_supported(void)
{
	int fd = open_uffd();
	if (fd < 0)
		return fd;
	int err = uffd_api(fd);
	close(fd);
	if (err)
		return err;
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		return -errno;
	/* A scan of an empty range tells whether the ioctl exists at all. */
	struct pm_scan_arg arg = { .size = sizeof(arg) };
	err = ioctl(pm, PAGEMAP_SCAN, &arg) < 0 ? -errno : 0;
	close(pm);
	return err == -ENOTTY ? -EOPNOTSUPP : err;
}

/*
 * One PAGEMAP_SCAN pass over [addr, addr + npages pages): call fn for each
 * returned run of pages (offsets in pages from addr). Continues after a full
 * vector from where the kernel stopped.
 */
static int scan(struct uffd_source *us, uint8_t *addr, uint64_t npages, uint64_t flags,
		uint64_t mask, uint64_t anyof, uint64_t *log)
{
	uint64_t start = (uint64_t)(uintptr_t)addr, end = start + npages * LM_PAGE_SIZE;
	while (start < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.flags = flags,
			.start = start,
			.end = end,
			.vec = (uint64_t)(uintptr_t)us->vec,
			.vec_len = UFFD_VEC_LEN,
			.category_mask = mask,
			.category_anyof_mask = anyof,
			.return_mask = mask | anyof,
		};
		int n = ioctl(us->pagemap, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		for (int i = 0; i < n; i++) {
			uint64_t p0 = (us->vec[i].start - (uint64_t)(uintptr_t)addr) / LM_PAGE_SIZE;
			uint64_t p1 = (us->vec[i].end - (uint64_t)(uintptr_t)addr) / LM_PAGE_SIZE;
			if (p1 > npages || p0 >= p1)
				return -EIO;
			/* Set bits [p0, p1) in the word log. */
			while (p0 < p1) {
				uint64_t bit = p0 & 63, take = 64 - bit;
				if (take > p1 - p0)
					take = p1 - p0;
				log[p0 / 64] |= (take == 64 ? ~0ull : ((1ull << take) - 1) << bit);
				p0 += take;
			}
		}
		if (arg.walk_end <= start || arg.walk_end > end)
			return -EIO;
		start = arg.walk_end;
	}
	return 0;
}

/* OR the pages of every region that match any of `anyof` into us->present. */
static int snapshot_present(struct uffd_source *us, uint64_t anyof)
{
	for (size_t i = 0; i < us->base.nregions; i++) {
		const struct lm_mem_region *r = &us->base.regions[i];
		for (uint64_t off = 0; off < r->npages; off += UFFD_SYNC_PAGES) {
			uint64_t cnt = r->npages - off;
			if (cnt > UFFD_SYNC_PAGES)
				cnt = UFFD_SYNC_PAGES;
			memset(us->log, 0, (cnt + 63) / 64 * 8);
			int err = scan(us, (uint8_t *)r->host + off * LM_PAGE_SIZE, cnt, 0, 0, anyof, us->log);
			if (err)
				return err;
			for (uint64_t w = 0; w < (cnt + 63) / 64; w++)
				us->present[i].words[off / 64 + w] |= us->log[w];
		}
	}
	return 0;
}

static void uffd_unregister_all(struct uffd_source *us)
{
	for (size_t i = 0; i < us->base.nregions; i++) {
		struct lm_mem_region *r = &us->base.regions[i];
		struct uffdio_range range = {
			.start = (uint64_t)(uintptr_t)r->host,
			.len = r->npages * LM_PAGE_SIZE,
		};
		/* Unregistering drops the protection bits and markers too. */
		(void)ioctl(us->uffd, UFFDIO_UNREGISTER, &range);
	}
}

static void drop_present(struct uffd_source *us)
{
	if (!us->present)
		return;
	for (size_t i = 0; i < us->base.nregions; i++)
		if (us->present[i].words)
			lm_bitmap_destroy(&us->present[i]);
	free(us->present);
	us->present = NULL;
}

static int uffd_start(struct lm_dirty_source *s, const struct lm_mem_region *regions, size_t n)
{
	struct uffd_source *us = to_uffd(s);
	int err = lm__track_set_regions(s, regions, n);
	if (err)
		return err;
	us->uffd = open_uffd();
	if (us->uffd < 0) {
		err = us->uffd;
		goto fail_regions;
	}
	err = uffd_api(us->uffd);
	if (err)
		goto fail_uffd;

	/* Snapshot which pages hold anything before protection markers make
	 * every page look swapped... */
	us->present = calloc(n, sizeof(*us->present));
	if (!us->present) {
		err = -ENOMEM;
		goto fail_uffd;
	}
	for (size_t i = 0; i < n; i++) {
		err = lm_bitmap_init(&us->present[i], regions[i].npages);
		if (err)
			goto fail_present;
	}
	err = snapshot_present(us, PAGE_IS_PRESENT | PAGE_IS_SWAPPED);
	if (err)
		goto fail_present;

	size_t registered = 0;
	for (; registered < n; registered++) {
		struct uffdio_register reg = {
			.range = { .start = (uint64_t)(uintptr_t)regions[registered].host,
				   .len = regions[registered].npages * LM_PAGE_SIZE },
			.mode = UFFDIO_REGISTER_MODE_WP,
		};
		if (ioctl(us->uffd, UFFDIO_REGISTER, &reg) < 0) {
			err = -errno;
			goto fail_register;
		}
		struct uffdio_writeprotect wp = {
			.range = reg.range,
			.mode = UFFDIO_WRITEPROTECT_MODE_WP,
		};
		if (ioctl(us->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
			err = -errno;
			(void)ioctl(us->uffd, UFFDIO_UNREGISTER, &reg.range);
			goto fail_register;
		}
	}
	/* ...and once more after arming, present pages only: a page first
	 * written between the two scans is present now, and it is protected
	 * without being reported as written. */
	err = snapshot_present(us, PAGE_IS_PRESENT);
	if (err)
		goto fail_register;
	return 0;

fail_register:
	for (size_t i = 0; i < registered; i++) {
		struct uffdio_range range = { .start = (uint64_t)(uintptr_t)regions[i].host,
					      .len = regions[i].npages * LM_PAGE_SIZE };
		(void)ioctl(us->uffd, UFFDIO_UNREGISTER, &range);
	}
fail_present:
	drop_present(us);
fail_uffd:
	close(us->uffd);
	us->uffd = -1;
fail_regions:
	lm__track_drop_regions(s);
	return err;
}

static int64_t uffd_sync(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_sbitmap *dirty)
{
	struct uffd_source *us = to_uffd(s);
	if (us->uffd < 0)
		return -ENOTCONN;
	const struct lm_mem_region *r = lm__track_find(s, first, n);
	if (!r || ((first - r->first_page) & 63))
		return -EINVAL;
	int64_t added = 0;
	for (uint64_t done = 0; done < n;) {
		uint64_t cnt = n - done;
		if (cnt > UFFD_SYNC_PAGES)
			cnt = UFFD_SYNC_PAGES;
		uint8_t *addr = (uint8_t *)r->host + (first - r->first_page + done) * LM_PAGE_SIZE;
		memset(us->log, 0, (cnt + 63) / 64 * 8);
		/* CHECK_WPASYNC makes the kernel refuse rather than silently
		 * report nothing if the range is not armed in async mode. */
		int err = scan(us, addr, cnt, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, PAGE_IS_WRITTEN, 0,
			       us->log);
		if (err)
			return err;
		added += (int64_t)lm_sbitmap_sync_from(dirty, first + done, us->log, cnt);
		done += cnt;
	}
	return added;
}

static int uffd_clear(struct lm_dirty_source *s, uint64_t first, uint64_t n)
{
	/* sync already re-protected what it reported. */
	return to_uffd(s)->uffd < 0 ? -ENOTCONN : 0;
}

static int uffd_present(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_bitmap *present)
{
	struct uffd_source *us = to_uffd(s);
	if (us->uffd < 0 || !us->present)
		return -ENOTCONN;
	const struct lm_mem_region *r = lm__track_find(s, first, n);
	if (!r || first + n > present->nbits)
		return -EINVAL;
	const lm_bitmap *snap = &us->present[r - s->regions];
	uint64_t off = first - r->first_page;
	for (uint64_t i = lm_bitmap_find_next_set(snap, off); i < off + n; i = lm_bitmap_find_next_set(snap, i)) {
		uint64_t e = lm_bitmap_find_next_clear(snap, i);
		if (e > off + n)
			e = off + n;
		lm_bitmap_set_range(present, r->first_page + i, e - i);
		i = e;
	}
	return 0;
}

static int uffd_stop(struct lm_dirty_source *s)
{
	struct uffd_source *us = to_uffd(s);
	if (us->uffd < 0)
		return 0;
	uffd_unregister_all(us);
	drop_present(us);
	close(us->uffd);
	us->uffd = -1;
	lm__track_drop_regions(s);
	return 0;
}

static void uffd_free(struct lm_dirty_source *s)
{
	struct uffd_source *us = to_uffd(s);
	uffd_stop(s);
	if (us->pagemap >= 0)
		close(us->pagemap);
	free(us->log);
	free(us->vec);
	free(us);
}

static const struct lm_dirty_source_ops uffd_ops = {
	.name = "uffd",
	.start = uffd_start,
	.sync = uffd_sync,
	.clear = uffd_clear,
	.present = uffd_present,
	.stop = uffd_stop,
	.free = uffd_free,
};

int lm_uffd_source_new(struct lm_dirty_source **out)
{
	int err;
	struct uffd_source *us = calloc(1, sizeof(*us));
	if (!us)
		return -ENOMEM;
	us->uffd = -1;
	us->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (us->pagemap < 0) {
		err = -errno;
		goto fail;
	}
	us->log = calloc(UFFD_SYNC_PAGES / 64, sizeof(uint64_t));
	us->vec = calloc(UFFD_VEC_LEN, sizeof(*us->vec));
	if (!us->log || !us->vec) {
		err = -ENOMEM;
		goto fail;
	}
	us->base.ops = &uffd_ops;
	us->base.flags = LM_DIRTY_SYNC_REARMS | LM_DIRTY_KNOWS_PRESENT;
	us->base.sync_pages = UFFD_SYNC_PAGES;
	*out = &us->base;
	return 0;

fail:
	if (us->pagemap >= 0)
		close(us->pagemap);
	free(us->log);
	free(us->vec);
	free(us);
	return err;
}
