/*
 * The livemig command: one subcommand per file in src/cli/ (and bench/).
 * Only src/cli may print to the terminal and exit.
 */
#ifndef LIVEMIG_CLI_H
#define LIVEMIG_CLI_H

#include <stdbool.h>
#include <stdint.h>

struct lm_cli_cmd {
	const char *name;
	const char *summary;
	/* argv[0] is the subcommand name; returns the process exit code. */
	int (*main)(int argc, char **argv);
};

/* Subcommands, each defined in its own file. */
int lm_cli_bench(int argc, char **argv);   /* bench/bench_main.c */
int lm_cli_run(int argc, char **argv);     /* src/cli/run.c */

/* Parse a size such as 4096, 64K, 2M, 2G, 1T (binary units). 0 or -EINVAL. */
int lm_cli_parse_size(const char *s, uint64_t *out);
/* Parse a rate such as 50M (bytes/s) or 1Gbit. */
int lm_cli_parse_rate(const char *s, uint64_t *bytes_per_sec);

#endif
