/* Benchmarks run by `livemig bench <name>`; one file per benchmark. */
#ifndef LIVEMIG_BENCH_H
#define LIVEMIG_BENCH_H

#include <stdint.h>
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

#endif
