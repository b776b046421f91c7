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
 * (the VMM owns the slot registration). One region per KVM slot: start()
 * must be given the same regions as the slot table, in any order.
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
};

int lm_kvm_log_source_new(const struct lm_kvm_log_config *cfg, struct lm_dirty_source **out);
/* Pages [first_page, first_page+n) were written by the VMM itself. */
void lm_kvm_log_mark(struct lm_dirty_source *s, uint64_t first_page, uint64_t n);
/* Whether the running source uses manual-protect mode (after start). */
bool lm_kvm_log_manual(const struct lm_dirty_source *s);

#endif
