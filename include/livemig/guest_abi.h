/*
 * The contract between livemig's guest image (guest/) and its VMM
 * (src/vmm/): I/O ports and their meaning. Plain #defines only, so the
 * freestanding guest can include it.
 *
 * Ports the guest uses, all opened to ring 3 through the TSS I/O bitmap:
 *   0x3f8-0x3ff  COM1 (output: THR at +0, LSR at +5, bit 5 = THR empty)
 *   0x40-0x43, 0x61  PIT channel 2 and its gate, for TSC calibration
 *   LM_PV_BASE .. +LM_PV_SIZE  livemig paravirtual device (below), its
 *                last 12 bytes the balloon device
 *   0xf4         QEMU's isa-debug-exit, when run under QEMU for tests
 *
 * Under QEMU the pv device is absent: LM_PV_ID reads as all ones, and the
 * guest then does without it.
 */
#ifndef LIVEMIG_GUEST_ABI_H
#define LIVEMIG_GUEST_ABI_H

#define LM_PV_BASE 0x0e80
#define LM_PV_SIZE 0x20

/* in32: reads LM_PV_MAGIC when the device is present. */
#define LM_PV_ID (LM_PV_BASE + 0x0)
#define LM_PV_MAGIC 0x4c4d5056u /* "VPML" */

/* in32: verify-request counter. The VMM increments it whenever it wants
 * the guest to check all its pages (e.g. right after a migration has
 * resumed the guest on the destination). The guest polls it a few times a
 * second and runs its checker once per increment. */
#define LM_PV_VERIFY_REQ (LM_PV_BASE + 0x4)

/* out32: the guest reports that it finished the check for request N (the
 * value it read from LM_PV_VERIFY_REQ), result in LM_PV_VERIFY_RESULT
 * written just before: 0 = ok, 1 = failed. */
#define LM_PV_VERIFY_RESULT (LM_PV_BASE + 0x8)
#define LM_PV_VERIFY_DONE (LM_PV_BASE + 0xc)

/* out32: power off; the value is the guest's exit status. */
#define LM_PV_POWEROFF (LM_PV_BASE + 0x10)

/*
 * 0x14-0x1f: the balloon device (three 32-bit registers). The guest gives
 * pages to the host (inflate) and takes them back (deflate) in batches: a
 * port exit costs a VM exit to userspace (tens of microseconds here), so a
 * 3 GiB inflate is 1.5 k requests of LM_PV_BALLOON_BATCH pages, not 786 k
 * exits. See docs/guest.md, "The balloon".
 */
#define LM_PV_BALLOON_BASE (LM_PV_BASE + 0x14)

/* in32: LM_PV_BALLOON_MAGIC in bits 31..16 (so that an absent device,
 * which reads as all ones, is told apart) and the offered feature bits in
 * 15..0. out32: the features the guest accepts (a subset of the offered
 * ones; others are dropped). Accepted only while the balloon is empty; a
 * guest that never writes it has accepted none. */
#define LM_PV_BALLOON_FEATURES (LM_PV_BALLOON_BASE + 0x0)
#define LM_PV_BALLOON_MAGIC 0x42b1u
#define LM_PV_BALLOON_F_MUST_TELL_HOST 0x1u /* the guest deflates before reusing a page */

/* in32: the target balloon size in pages, set by the host. out32 (same
 * port): the guest reports how many pages it has in the balloon now. */
#define LM_PV_BALLOON_TARGET (LM_PV_BALLOON_BASE + 0x4)
#define LM_PV_BALLOON_ACTUAL LM_PV_BALLOON_TARGET

/*
 * out32: a request. The value is the guest-physical address of a
 * page-aligned request page below 4 GiB, plus the operation in its low
 * bits (LM_PV_BALLOON_OP_*). The request page holds a u32 count, a u32
 * that must be 0, then count u64 page frame numbers (at most
 * LM_PV_BALLOON_BATCH). The host handles the whole request before the
 * out instruction completes. in32: how many PFNs of the last request the
 * host refused (outside RAM, inside the guest image, or a bad request).
 * Deflate must come BEFORE the guest reuses a page when it accepted
 * LM_PV_BALLOON_F_MUST_TELL_HOST.
 */
#define LM_PV_BALLOON_REQUEST (LM_PV_BALLOON_BASE + 0x8)
#define LM_PV_BALLOON_OP_INFLATE 0x0u
#define LM_PV_BALLOON_OP_DEFLATE 0x1u
#define LM_PV_BALLOON_OP_MASK 0xfffu
#define LM_PV_BALLOON_BATCH 511u

/* QEMU isa-debug-exit (iobase 0xf4, iosize 4): QEMU exits with (v<<1)|1. */
#define LM_QEMU_DEBUG_EXIT 0xf4

#endif
