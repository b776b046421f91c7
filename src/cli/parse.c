/*
 * Sizes and rates on the command line, for livemig's subcommands and for
 * livemig-bench (which links this file but not main.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <stdio.h>

#include "cli/cli.h"
#include "livemig/vmm.h"

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

int lm_cli_parse_ring_size(const char *s, uint32_t *out)
{
	char *end;
	errno = 0;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < LM_VM_RING_MIN || v > (1u << 20) || (v & (v - 1)))
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int lm_cli_check_host(const char *cmd, uint64_t mem_size)
{
	uint64_t need = 0, avail = 0;
	if (lm_vm_host_check(mem_size, &need, &avail) == 0)
		return 0;
	fprintf(stderr,
		"livemig %s: a VM of %.1f GiB cannot exist on this host: KVM needs about %u bytes of kernel\n"
		"memory per 4 KiB page of guest RAM (reverse maps, dirty bitmaps) even if the page is never\n"
		"touched, %.1f GiB here, and the host has %.1f GiB available (MemAvailable). The largest\n"
		"guest that fits now is about %.0f GiB.\n",
		cmd, (double)mem_size / (1 << 30), LM_VM_KVM_BYTES_PER_PAGE, (double)need / (1 << 30),
		(double)avail / (1 << 30), (double)avail / LM_VM_KVM_BYTES_PER_PAGE * 4096 / (1 << 30));
	return -ENOMEM;
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
