/*
 * The QEMU -cpu model for e2e tests that start QEMU themselves.
 *
 * Hosts of this project's kind differ in their CPU, and `-cpu host` does
 * not start everywhere (DESIGN.md, "Platform facts"), so a test never
 * hard-codes a model: it asks `$LIVEMIG bench qemu-cpu` (env LIVEMIG,
 * default build/livemig), which owns the one implementation of the probe
 * (bench/qemu_cpu.c). The answer is cached for the rest of the process; the
 * probe's report of every candidate goes to stderr, into the test log.
 */
#ifndef LIVEMIG_TEST_QEMU_CPU_H
#define LIVEMIG_TEST_QEMU_CPU_H

/* The -cpu argument, or "default" for QEMU's default model (pass no -cpu);
 * NULL when no candidate boots or the probe could not run (stderr says
 * why). The string is static. */
const char *lm_test_qemu_cpu(const char *qemu, const char *guest_elf);

#endif
