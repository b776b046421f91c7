/*
 * livemig-bench: dispatch to one benchmark. A program of its own (`livemig
 * bench ...` runs it), so that the livemig command does not link the
 * benchmarks.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "bench.h"

static const struct {
	const char *name;
	const char *summary;
	int (*main)(int, char **);
} benches[] = {
	/* one line per benchmark */
	{ "scan", "dirty-bitmap scan methods, word sync, zero-page test", lm_bench_scan },
	{ "table", "incremental table stream vs an index per entry", lm_bench_table },
	{ "stream", "wire format: digest, RAW/zstd encode and decode per page", lm_bench_stream },
	{ "vs-qemu", "side by side with QEMU: the same guests migrated by both", lm_bench_vs_qemu },
	{ "migrate", "whole migrations: sizes x data kinds x links (loopback, veth, tbf rates) x zstd x channels, raw baselines", lm_bench_migrate },
	{ "sizes", "huge guests: cost against guest size, paused and hotset, log and ring", lm_bench_sizes },
	{ "qemu-cpu", "probe which QEMU -cpu model boots the guest here; prints it", lm_bench_qemu_cpu },
	{ NULL, NULL, NULL },
};

int lm_bench_livemig(char *out, size_t len)
{
	const char *env = getenv("LIVEMIG_EXE");
	if (env && *env) {
		snprintf(out, len, "%s", env);
		return 0;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			static const char *const where[] = {"livemig", "../../bin/livemig"};
			for (size_t i = 0; i < 2; i++) {
				snprintf(out, len, "%s/%s", self, where[i]);
				if (access(out, X_OK) == 0)
					return 0;
			}
		}
	}
	snprintf(out, len, "livemig");
	return -ENOENT;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		FILE *f = argc < 2 ? stderr : stdout;
		fprintf(f, "usage: livemig bench <name> [options]   (livemig bench <name> --help)\n\n");
		for (int i = 0; benches[i].name; i++)
			fprintf(f, "  %-10s %s\n", benches[i].name, benches[i].summary);
		return argc < 2 ? 2 : 0;
	}
	for (int i = 0; benches[i].name; i++)
		if (!strcmp(argv[1], benches[i].name))
			return benches[i].main(argc - 1, argv + 1);
	fprintf(stderr, "livemig bench: unknown benchmark '%s'\n", argv[1]);
	return 2;
}
