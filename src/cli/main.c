/* livemig: dispatch to the subcommand named by argv[1]. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "livemig/version.h"

static const struct lm_cli_cmd commands[] = {
	/* one line per subcommand; keep sorted by name */
	{ "incoming", "wait for a live migration and run the VM it brings", lm_cli_incoming },
	{ "migrate", "migrate a running VM live to another livemig process", lm_cli_migrate },
	{ "bench", "run a benchmark (scan, migrate, ...)", lm_cli_bench },
	{ "run", "boot a guest image in the KVM VMM", lm_cli_run },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: livemig <command> [options]   (livemig <command> --help)\n"
		   "       livemig --version\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int lm_cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		return -EINVAL;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	unsigned shift = 0;
	if (*end) {
		switch (*end) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		case 't': case 'T': shift = 40; break;
		default: return -EINVAL;
		}
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (shift && v > (~0ull >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

int lm_cli_parse_rate(const char *s, uint64_t *bytes_per_sec)
{
	size_t n = s ? strlen(s) : 0;
	/* "1Gbit", "100Mbit": bits per second, decimal units as for links */
	if (n > 3 && strcasecmp(s + n - 3, "bit") == 0) {
		char buf[64];
		if (n - 3 >= sizeof(buf))
			return -EINVAL;
		memcpy(buf, s, n - 3);
		buf[n - 3] = 0;
		char *end;
		errno = 0;
		double v = strtod(buf, &end);
		if (errno || end == buf || v < 0)
			return -EINVAL;
		double mult = 1;
		switch (*end) {
		case 0: break;
		case 'k': case 'K': mult = 1e3; end++; break;
		case 'm': case 'M': mult = 1e6; end++; break;
		case 'g': case 'G': mult = 1e9; end++; break;
		default: return -EINVAL;
		}
		if (*end)
			return -EINVAL;
		*bytes_per_sec = (uint64_t)(v * mult / 8);
		return 0;
	}
	return lm_cli_parse_size(s, bytes_per_sec);
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
