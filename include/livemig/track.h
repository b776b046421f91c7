/*
 * livemig dirty sources: who tells the engine which guest pages were written.
 *
 * A dirty source watches a set of memory regions (guest page numbers plus the
 * host address they are mapped at) and, on request, reports the pages written
 * since they were last re-armed. All sources sit behind one ops table, like
 * kvmtool's disk_image_operations, so the engine does not know whether the log
 * comes from userfaultfd, from KVM's dirty bitmap or from software.
 *
 * The engine drives a source like this, per round:
 *
 *     for each sync unit U (a region, or a piece of at most sync_pages pages):
 *         ops->sync(U, dirty)          harvest: OR written pages into dirty
 *         for each chunk C of U (64-page aligned from the region start):
 *             ops->clear(C)            re-arm: later writes are reported again
 *             copy the dirty pages of C
 *
 * The order harvest, clear, copy is what makes the scheme lossless: a write
 * that lands after the clear is reported by a later sync, and a write that
 * lands before it is caught by the copy that follows. Sync and clear are
 * separate because that is how KVM's manual-protect log works
 * (KVM_GET_DIRTY_LOG per slot, KVM_CLEAR_DIRTY_LOG per chunk, with
 * KVM_DIRTY_LOG_INITIALLY_SET). Sources whose harvest re-arms in the same
 * step (userfaultfd's PAGEMAP_SCAN with PM_SCAN_WP_MATCHING, the software
 * log's atomic exchange) set LM_DIRTY_SYNC_REARMS and make clear a no-op.
 *
 * A source may report a page that was not written (over-reporting costs a
 * resend); it must never miss a write made after start() and before stop().
 *
 * Ownership: a source is created by its constructor (lm_uffd_source_new,
 * lm_sim_source_new, later the VMM's KVM log source) and freed with
 * lm_dirty_source_free(). It keeps a copy of the region table given to
 * start(); the memory itself stays the caller's. sync, clear and stop are
 * called from one thread at a time (the migration thread); the workload
 * may write to the memory concurrently with all of them.
 */
#ifndef LIVEMIG_TRACK_H
#define LIVEMIG_TRACK_H

#include "livemig/common.h"
#include "livemig/bitmap.h"

/* One piece of guest memory: guest pages [first_page, first_page + npages)
 * live at host address host (page aligned). Regions do not overlap. */
struct lm_mem_region {
	uint64_t first_page;
	uint64_t npages;
	void *host;
};

struct lm_dirty_source;

/* Source capability flags (lm_dirty_source.flags). */
enum {
	/* sync() re-arms what it reports; clear() does nothing. */
	LM_DIRTY_SYNC_REARMS = 1u << 0,
	/* present() is implemented: the source can tell never-touched pages. */
	LM_DIRTY_KNOWS_PRESENT = 1u << 1,
};

struct lm_dirty_source_ops {
	const char *name;
	/*
	 * Begin tracking these regions: every write from now on is reported by
	 * a later sync(). The source copies the table. -EBUSY if already
	 * started; -EINVAL for overlapping or misaligned regions.
	 */
	int (*start)(struct lm_dirty_source *s, const struct lm_mem_region *regions, size_t nregions);
	/*
	 * Harvest: OR the pages of [first_page, first_page + npages) written
	 * since their last re-arm into dirty (indexed by guest page number),
	 * 64 pages at a time through lm_sbitmap_sync_from. The range lies
	 * within one region and starts 64-page aligned relative to the region
	 * start. Returns the number of bits newly set in dirty, or -errno.
	 */
	int64_t (*sync)(struct lm_dirty_source *s, uint64_t first_page, uint64_t npages, lm_sbitmap *dirty);
	/*
	 * Re-arm [first_page, first_page + npages) after a sync(): pages
	 * reported by that sync are protected again. Same alignment rules as
	 * sync; npages is a multiple of 64 unless the range ends at the end of
	 * its region. 0 or -errno.
	 */
	int (*clear)(struct lm_dirty_source *s, uint64_t first_page, uint64_t npages);
	/*
	 * Optional (LM_DIRTY_KNOWS_PRESENT): set in present the pages of the
	 * range that were ever populated (written or faulted in). Pages not
	 * set there read as zero and were never written. 0 or -errno.
	 */
	int (*present)(struct lm_dirty_source *s, uint64_t first_page, uint64_t npages, lm_bitmap *present);
	/*
	 * Optional, preferred to present() where given: the same pages as
	 * ascending runs, run(arg, first_page, npages), without a bitmap, so
	 * that a huge sparse guest costs its populated pages and not a scan
	 * of one bit per page. 0 or -errno.
	 */
	int (*present_runs)(struct lm_dirty_source *s, uint64_t first_page, uint64_t npages,
			    void (*run)(void *arg, uint64_t first_page, uint64_t npages), void *arg);
	/* End tracking; the memory behaves as ordinary memory again. Idempotent. */
	int (*stop)(struct lm_dirty_source *s);
	/* Release everything (stops first if needed). */
	void (*free)(struct lm_dirty_source *s);
};

/* The part every source shares; sources embed it first. */
struct lm_dirty_source {
	const struct lm_dirty_source_ops *ops;
	unsigned flags;
	/* Largest range the engine should pass to one sync() (0: a whole region). */
	uint64_t sync_pages;
	/* Regions given to start(), owned by the source; nregions is 0 when stopped. */
	struct lm_mem_region *regions;
	size_t nregions;
};

static inline int lm_dirty_source_start(struct lm_dirty_source *s, const struct lm_mem_region *r, size_t n)
{
	return s->ops->start(s, r, n);
}
static inline int64_t lm_dirty_source_sync(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_sbitmap *dirty)
{
	return s->ops->sync(s, first, n, dirty);
}
static inline int lm_dirty_source_clear(struct lm_dirty_source *s, uint64_t first, uint64_t n)
{
	return s->ops->clear(s, first, n);
}
static inline int lm_dirty_source_stop(struct lm_dirty_source *s)
{
	return s->ops->stop(s);
}
static inline void lm_dirty_source_free(struct lm_dirty_source *s)
{
	if (s)
		s->ops->free(s);
}

/* ---- userfaultfd write-protect source (src/track/uffd.c) ---------------- */

/*
 * Tracks ordinary anonymous (or shmem) process memory of this process with
 * userfaultfd write-protection in asynchronous mode: a write to a protected
 * page is resolved by the kernel without a fault handler thread, and
 * PAGEMAP_SCAN harvests the written pages and protects them again in one
 * call. Needs Linux 6.7+. Returns 0 or -errno (-ENOSYS/-EPERM/-EINVAL when
 * the kernel cannot do it: lm_uffd_supported() tells beforehand).
 */
int lm_uffd_source_new(struct lm_dirty_source **out);
/* 0 if this kernel and process can use the uffd source, else -errno. */
int lm_uffd_supported(void);

/* ---- software log (src/track/sim.c) -------------------------------------- */

/*
 * A dirty log kept by the writers themselves: after writing a page, a
 * writer calls lm_sim_mark(); the mark sets one bit atomically and is safe
 * from any number of threads. Mark after the write, not before: the engine
 * then either copies the new contents or sees the mark in a later round.
 *
 * mode LM_SIM_EXCHANGE: sync takes the log words with an atomic exchange
 * (harvest and re-arm at once). mode LM_SIM_MANUAL: sync only reads the
 * log and clear() removes exactly the bits the last sync reported, which is
 * how KVM's manual-protect dirty log behaves; tests use it to exercise the
 * engine's clear path.
 */
enum lm_sim_mode { LM_SIM_EXCHANGE = 0, LM_SIM_MANUAL = 1 };
int lm_sim_source_new(enum lm_sim_mode mode, struct lm_dirty_source **out);
/* Mark guest page `page` written. Ignored if not tracked or outside the regions. */
void lm_sim_mark(struct lm_dirty_source *s, uint64_t page);
void lm_sim_mark_range(struct lm_dirty_source *s, uint64_t first, uint64_t n);

#endif
