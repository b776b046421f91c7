/*
 * livemig KVM dirty-log source (src/track/kvm_log.c).
 *
 * Tracks guest RAM written by vCPUs through KVM's per-slot dirty bitmap,
 * plus the VMM's own writes logged in software (KVM does not see those).
 *
 * With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (the normal case):
 *   - start() enables the capability with KVM_DIRTY_LOG_INITIALLY_SET when
 *     the kernel offers it, so turning logging on costs nothing (no
 *     write-protection pass; every page starts out dirty, which round one
 *     sends anyway), then sets KVM_MEM_LOG_DIRTY_PAGES on every slot;
 *   - sync() reads the slot's log (KVM_GET_DIRTY_LOG no longer clears it)
 *     and remembers exactly which bits it reported;
 *   - clear() hands back exactly those bits of one 64-page-aligned chunk
 *     with KVM_CLEAR_DIRTY_LOG, which re-protects only that chunk, just
 *     before the engine copies it. A write that lands between the read and
 *     the clear keeps its bit in KVM's log and is reported next time.
 * Without it, sync() uses the classic KVM_GET_DIRTY_LOG, which clears and
 * re-protects the whole slot in one step (LM_DIRTY_SYNC_REARMS).
 *
 * The source does not know the VMM: it gets the VM fd, the slot table and
 * a callback that turns KVM_MEM_LOG_DIRTY_PAGES on or off for one slot
 * (the VMM owns the slot registration), or is told that the slots log
 * from their creation (always_on). Each region given to start() is one
 * slot or several consecutive ones (contiguous in guest and host
 * addresses); the engine's sync ranges (sync_pages) then lie in one slot.
 *
 * Ownership: the source copies the slot table; memory and fd stay the
 * caller's. lm_kvm_log_mark() may be called from any thread at any time.
 */
#ifndef LIVEMIG_TRACK_KVM_H
#define LIVEMIG_TRACK_KVM_H

#include "livemig/track.h"

struct lm_kvm_log_slot {
	uint32_t kvm_slot;   /* KVM's slot id */
	uint64_t first_page; /* guest physical page number of the slot's start */
	uint64_t npages;
	void *host;
};

/* Turn dirty logging on or off for KVM slot kvm_slot; 0 or -errno. */
typedef int (*lm_kvm_log_enable_fn)(void *opaque, uint32_t kvm_slot, bool on);

struct lm_kvm_log_config {
	int vm_fd;
	const struct lm_kvm_log_slot *slots;
	size_t nslots;
	lm_kvm_log_enable_fn enable;
	void *opaque;
	/* Pages per sync() range the engine should use (0: a whole slot).
	 * KVM reads a whole slot's log per call, so smaller only helps the
	 * clear granularity, which the engine sets separately. */
	uint64_t sync_pages;
	/* Do not use manual-protect mode even if KVM offers it (for tests and
	 * measurements). */
	bool no_manual_protect;
	/*
	 * The slots log from their creation (the VMM registered them with
	 * KVM_MEM_LOG_DIRTY_PAGES and enabled manual-protect, without
	 * initially-set, before them): never toggle logging (enable may be
	 * NULL) nor the capability; `manual` says whether manual-protect is on.
	 * Turning logging on and off costs KVM a walk of the slot (~80 ms and
	 * ~115 ms per TiB here), this costs nothing per migration.
	 */
	bool always_on;
	bool manual;
};

int lm_kvm_log_source_new(const struct lm_kvm_log_config *cfg, struct lm_dirty_source **out);
/* Pages [first_page, first_page+n) were written by the VMM itself. */
void lm_kvm_log_mark(struct lm_dirty_source *s, uint64_t first_page, uint64_t n);
/* Whether the running source uses manual-protect mode (after start). */
bool lm_kvm_log_manual(const struct lm_dirty_source *s);

/* ---- KVM dirty ring (src/track/kvm_ring.c) -------------------------------- */

/*
 * Tracks guest RAM written by vCPUs through KVM's per-vCPU dirty rings
 * (KVM_CAP_DIRTY_LOG_RING_ACQ_REL or KVM_CAP_DIRTY_LOG_RING): each write
 * to a write-protected page of a slot with KVM_MEM_LOG_DIRTY_PAGES pushes
 * one (slot, offset) entry into the writing vCPU's ring and makes the page
 * writable. Collecting the entries and calling KVM_RESET_DIRTY_RINGS
 * protects those pages again. The cost follows the number of pages
 * written, not the size of the guest: nothing is read for clean memory.
 *
 * The rings must exist before the vCPUs (the VMM enables the capability
 * at creation), and the slots must have KVM_MEM_LOG_DIRTY_PAGES for as
 * long as the source exists: the source never toggles logging, so that a
 * 1 TiB guest does not pay ~80 ms (on) and ~115 ms (off) per migration
 * for KVM to walk its slots. Entries pushed while the source is not
 * started are collected and dropped (the vCPU must not block on a full
 * ring between migrations).
 *
 * A vCPU whose ring reaches KVM's soft limit leaves KVM_RUN with
 * KVM_EXIT_DIRTY_RING_FULL and cannot enter the guest again until its
 * ring is reset: its thread calls lm_kvm_ring_collect(). The migration
 * thread collects in sync(); both take the source's lock, so an entry is
 * collected once and never lost. The VMM's own writes are logged with
 * lm_kvm_ring_mark() (after the write).
 *
 * Ownership: the source copies the slot table and the ring pointers; the
 * rings (mmapped from the vCPU fds), the memory and the VM fd stay the
 * caller's and must outlive the source.
 */
struct lm_kvm_ring_config {
	int vm_fd;
	const struct lm_kvm_log_slot *slots; /* every slot that logs */
	size_t nslots;
	void *const *rings;	 /* struct kvm_dirty_gfn[entries] per vCPU */
	unsigned nrings;
	uint32_t entries;	 /* per ring, a power of two */
};

int lm_kvm_ring_source_new(const struct lm_kvm_ring_config *cfg, struct lm_dirty_source **out);
/*
 * Collect every ring and reset them (from a vCPU thread after
 * KVM_EXIT_DIRTY_RING_FULL, or any thread). The entries are kept for the
 * next sync() while the source is started, dropped otherwise. Returns the
 * number of entries collected, or -errno.
 */
int64_t lm_kvm_ring_collect(struct lm_dirty_source *s);
/* Pages [first_page, first_page+n) were written by the VMM itself. */
void lm_kvm_ring_mark(struct lm_dirty_source *s, uint64_t first_page, uint64_t n);
/* Counters since the source was made, for tests and stats. */
struct lm_kvm_ring_stats {
	uint64_t collected; /* entries read from the rings */
	uint64_t resets;    /* KVM_RESET_DIRTY_RINGS calls */
	uint64_t collects_full; /* lm_kvm_ring_collect calls (vCPU ring-full exits) */
	uint64_t bad;	    /* entries naming no known slot page (ignored) */
};
void lm_kvm_ring_stats(struct lm_dirty_source *s, struct lm_kvm_ring_stats *out);

#endif
