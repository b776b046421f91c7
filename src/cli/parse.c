/*
 * Sizes and rates on the command line, for livemig's subcommands and for
 * livemig-bench (which links this file but not main.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"

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
