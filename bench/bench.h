/* Benchmarks run by livemig-bench (`livemig bench <name>`); one file per benchmark. */
#ifndef LIVEMIG_BENCH_H
#define LIVEMIG_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* argv[0] is the benchmark name; returns the exit code. */
int lm_bench_scan(int argc, char **argv);
int lm_bench_table(int argc, char **argv);
int lm_bench_stream(int argc, char **argv);
int lm_bench_vs_qemu(int argc, char **argv);
int lm_bench_migrate(int argc, char **argv);
int lm_bench_qemu_cpu(int argc, char **argv);
int lm_bench_sizes(int argc, char **argv);

/*
 * A raw socket baseline (bench/raw.c): len bytes of src over one TCP
 * loopback (or UNIX) connection into a discard buffer, fresh memory made
 * present ahead of the reader, or reused memory. *gbps: bytes per second
 * of the transfer / 1e9. 0 or -errno with why.
 */
enum lm_bench_raw_dest { LM_BENCH_RAW_DISCARD, LM_BENCH_RAW_FRESH, LM_BENCH_RAW_REUSED, LM_BENCH_RAW_N };
extern const char *const lm_bench_raw_names[LM_BENCH_RAW_N];
int lm_bench_raw(const void *src, size_t len, bool unix_sock, enum lm_bench_raw_dest dest, double *gbps,
		 char *why, size_t cap);

/* The livemig command a benchmark starts (bench/bench_main.c): LIVEMIG_EXE
 * (set by `livemig bench`), else the livemig next to this program (the
 * build tree) or in the installation's bin. 0, or -ENOENT with "livemig"
 * (found through PATH) in out. */
int lm_bench_livemig(char *out, size_t len);
/* The whole file as a NUL-terminated string (free it), or NULL. */
char *lm_bench_slurp(const char *path);

/*
 * The QEMU -cpu model this host can run (bench/qemu_cpu.c): candidates
 * host, host,-arch-capabilities, max and QEMU's default, each booting the
 * guest image in turn until one prints the guest's banner on its serial
 * port within timeout_s. The caller owns the struct; models are static
 * strings.
 */
#define LM_QEMU_CPU_DEFAULT "default" /* QEMU's default model: no -cpu at all */
#define LM_QEMU_CPU_MAX_TRIES 4
#define LM_QEMU_CPU_TIMEOUT_S 10.0    /* per candidate; a boot takes ~3 s here */

struct lm_qemu_cpu_try {
	const char *model; /* the -cpu argument, or LM_QEMU_CPU_DEFAULT */
	int err;           /* 0 booted; -ECHILD QEMU exited, -EFAULT guest exception, -ETIMEDOUT */
	double seconds;    /* from start to banner or failure */
	char outcome[128]; /* one line: "boots (...)", "QEMU killed by signal 6 (...)", ... */
	char msg[1024];    /* QEMU's messages (and the guest's, if it failed), lines joined by '\n' */
};

struct lm_qemu_cpu_probe {
	int n;      /* candidates tried, in order */
	int chosen; /* index into tries of the one that booted, or -1 */
	struct lm_qemu_cpu_try tries[LM_QEMU_CPU_MAX_TRIES];
};

/* Returns 0 with p->chosen set, -ENODEV when no candidate booted (p says
 * why for each), or -errno when the probe could not run (no QEMU: -ENOENT). */
int lm_bench_qemu_cpu_probe(struct lm_qemu_cpu_probe *p, const char *qemu, const char *guest_elf,
			    double timeout_s);
/* One line per candidate tried, its messages indented below; each line starts with prefix. */
void lm_bench_qemu_cpu_report(const struct lm_qemu_cpu_probe *p, FILE *f, const char *prefix);

#endif
