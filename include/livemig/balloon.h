/*
 * livemig VMM: the balloon device (src/vmm/balloon.c).
 *
 * Every VM made by lm_vm_new() has one, at the pv device's reserved ports
 * (LM_PV_BALLOON_* in livemig/guest_abi.h). The host sets a target size
 * in pages; a guest driver gives pages to the host (inflate) and takes
 * them back (deflate) in batches. On inflate the device marks the pages in
 * the VM's skip map, then frees them (MADV_DONTNEED: they read as zero
 * afterwards) and reports them to the VM's write hook, because their
 * contents changed behind KVM's dirty log. On deflate it unmarks them:
 * they are ordinary (zero) pages again. Every page frame number is
 * checked: it must be guest RAM, at or above the end of the loaded image
 * (and 1 MiB); a bad one is refused and counted, never a crash.
 *
 * Must-tell-host: the device offers it; a guest that accepts it promises
 * to deflate a page before it reuses it. Only then may a migration trust
 * the skip map (leave its pages out); otherwise ballooned pages are
 * migrated as ordinary pages.
 *
 * Ownership: the skip map belongs to the VM and lives as long as it; a
 * migration borrows it (lm_vm_skip_map). A migration destination that
 * received a skip map before the VM exists hands it over with
 * lm_vm_config.skip_map (the VM owns it from then on). The device's own
 * state (target, features, the guest's last report, the image end) travels
 * in the VM state blob as an optional section.
 *
 * Threads: all calls may come from any thread; the device serialises them
 * with the vCPU threads that make requests.
 */
#ifndef LIVEMIG_BALLOON_H
#define LIVEMIG_BALLOON_H

#include "livemig/skip.h"
#include "livemig/vmm.h"

/* The VM's skip map: the pages its guest has in the balloon. Never NULL
 * for a VM made by lm_vm_new(). */
lm_skip_map *lm_vm_skip_map(struct lm_vm *vm);

/* Sets the balloon's target size in pages (the guest polls it a few times
 * a second). -EINVAL if more pages than the VM has RAM. */
int lm_vm_balloon_set_target(struct lm_vm *vm, uint64_t pages);

/* The target, the pages in the balloon now (the skip map's count), and
 * whether the guest accepted must-tell-host. Any pointer may be NULL. */
void lm_vm_balloon_info(struct lm_vm *vm, uint64_t *target, uint64_t *actual,
			bool *must_tell_host);

struct lm_balloon_stats {
	uint64_t target;       /* pages */
	uint64_t actual;       /* pages in the skip map */
	uint64_t guest_actual; /* what the guest last reported (LM_PV_BALLOON_ACTUAL) */
	uint32_t offered;      /* feature bits the device offers */
	uint32_t features;     /* feature bits the guest accepted */
	bool acked;	       /* the guest wrote LM_PV_BALLOON_FEATURES */
	bool must_tell_host;
	uint64_t requests;     /* inflate and deflate requests served */
	uint64_t inflated;     /* pages that went in (already-ballooned ones not counted) */
	uint64_t deflated;     /* pages that came out */
	uint64_t refused;      /* page frame numbers and requests refused */
	uint64_t protect_end;  /* pages below this address are refused */
};
void lm_vm_balloon_stats(struct lm_vm *vm, struct lm_balloon_stats *st);

/*
 * The check every page frame number of a request passes: inside RAM
 * (mem_size bytes laid out as lm_vm describes: below the 3-4 GiB hole,
 * then from 4 GiB), and at or above protect_end (the end of the loaded
 * image; never below 1 MiB). Exposed for tests.
 */
bool lm_balloon_pfn_valid(uint64_t pfn, uint64_t mem_size, uint64_t protect_end);

#endif
