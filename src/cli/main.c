/* livemig: dispatch to the subcommand named by argv[1]. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "livemig/version.h"

static const struct lm_cli_cmd commands[] = {
	/* one line per subcommand; keep sorted by name */
	{ "cancel", "cancel a VM's migration and say how it ended", lm_cli_cancel },
	{ "incoming", "wait for a live migration and run the VM it brings", lm_cli_incoming },
	{ "migrate", "migrate a running VM live to another livemig process", lm_cli_migrate },
	{ "bench", "run a benchmark (scan, migrate, ...)", lm_cli_bench },
	{ "run", "boot a guest image in the KVM VMM", lm_cli_run },
	{ "status", "show a VM's state and its migration's progress", lm_cli_status },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: livemig <command> [options]   (livemig <command> --help)\n"
		   "       livemig --version\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V") || !strcmp(argv[1], "version")) {
		printf("livemig %s\n", lm_version());
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].main(argc - 1, argv + 1);
	fprintf(stderr, "livemig: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
