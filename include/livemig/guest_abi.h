/*
 * The contract between livemig's guest image (guest/) and its VMM
 * (src/vmm/): I/O ports and their meaning. Plain #defines only, so the
 * freestanding guest can include it.
 *
 * Ports the guest uses, all opened to ring 3 through the TSS I/O bitmap:
 *   0x3f8-0x3ff  COM1 (output: THR at +0, LSR at +5, bit 5 = THR empty)
 *   0x40-0x43, 0x61  PIT channel 2 and its gate, for TSC calibration
 *   LM_PV_BASE .. +LM_PV_SIZE  livemig paravirtual device (below)
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

/* 0x14-0x1f: reserved for the balloon device. */
#define LM_PV_BALLOON_BASE (LM_PV_BASE + 0x14)

/* QEMU isa-debug-exit (iobase 0xf4, iosize 4): QEMU exits with (v<<1)|1. */
#define LM_QEMU_DEBUG_EXIT 0xf4

#endif
