/*
 * livemig bench: the benchmarks are a program of their own, livemig-bench,
 * so that the command does not carry their code. It is found next to this
 * binary (the build tree: build/livemig, build/livemig-bench) or in the
 * installation's libexec (PREFIX/bin/livemig, PREFIX/libexec/livemig/
 * livemig-bench), and run with the same arguments. LIVEMIG_EXE tells it
 * which livemig to start where a benchmark needs the command (vs-qemu).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

int lm_cli_bench(int argc, char **argv)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		fprintf(stderr, "livemig bench: cannot find this program (/proc/self/exe): %s\n",
			strerror(n < 0 ? errno : ENOENT));
		return 1;
	}
	self[n] = 0;
	if (setenv("LIVEMIG_EXE", self, 1) < 0) {
		fprintf(stderr, "livemig bench: setenv: %s\n", strerror(errno));
		return 1;
	}
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	static const char *const where[] = {"livemig-bench", "../libexec/livemig/livemig-bench"};
	char path[2][PATH_MAX + 64];
	for (size_t i = 0; i < 2; i++) {
		snprintf(path[i], sizeof(path[i]), "%s/%s", slash ? self : ".", where[i]);
		if (access(path[i], X_OK) < 0)
			continue;
		argv[0] = path[i];
		execv(path[i], argv);
		fprintf(stderr, "livemig bench: cannot run %s: %s\n", path[i], strerror(errno));
		return 1;
	}
	fprintf(stderr, "livemig bench: the benchmarks are not here: neither %s nor %s exists\n",
		path[0], path[1]);
	return 1;
}
