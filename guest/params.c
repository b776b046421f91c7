/*
 * Multiboot command line parsing: space-separated key=value pairs. QEMU
 * puts the image's file name first, so a first word without '=' is
 * skipped; any other unknown word gets a warning line and is ignored.
 */
#include "work.h"

struct params P = {
	.workload = W_IDLE,
	.wss = 256ull << 20,
	.rate = 50ull << 20,
	.seed = 1,
	.period_ms = 1000,
	.zerocheck = -1,
	.hlt = true,
	.progress_ms = 1000,
	.wpct = 50,
	.balloon = true,
	.balloon_mtl = true,
};

static const char *const workloads[] = { "idle", "memtouch", "hotset", "stream",
					 "contig", "alternate", "seqread", "mixed" };
static const char *const selftests[] = { "none", "corrupt", "stale", "table", "all" };

const char *workload_name(int w)
{
	return workloads[w];
}

const char *selftest_name(int s)
{
	return selftests[s];
}

static bool streq(const char *a, size_t alen, const char *b)
{
	size_t i = 0;
	for (; i < alen && b[i]; i++)
		if (a[i] != b[i])
			return false;
	return i == alen && !b[i];
}

/* Decimal number with an optional binary suffix: K, M, G, T (an optional
 * trailing "B" or "iB" is accepted). */
static bool parse_size(const char *s, size_t n, u64 *out)
{
	u64 v = 0;
	size_t i = 0;
	if (!n)
		return false;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (u64)(s[i] - '0');
	if (i == 0)
		return false;
	if (i < n) {
		unsigned shift;
		switch (s[i] | 0x20) {
		case 'k': shift = 10; break;
		case 'm': shift = 20; break;
		case 'g': shift = 30; break;
		case 't': shift = 40; break;
		default: return false;
		}
		v <<= shift;
		i++;
		if (i < n && s[i] == 'i')
			i++;
		if (i < n && (s[i] | 0x20) == 'b')
			i++;
	}
	if (i != n)
		return false;
	*out = v;
	return true;
}

static int parse_choice(const char *v, size_t n, const char *const *names, int count)
{
	for (int i = 0; i < count; i++)
		if (streq(v, n, names[i]))
			return i;
	return -1;
}

static void warn(const char *what, const char *w, size_t n)
{
	char buf[128];
	if (n > sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	memcpy(buf, w, n);
	buf[n] = 0;
	gprintf("livemig-guest: warning: %s '%s' ignored\n", what, buf);
}

static const char *const number_keys[] = { "mem", "wss", "rate", "seed", "verify", "verify_every",
					   "exit_after", "period", "zerocheck", "progress", "wpct",
					   "balloon", "balloon_mtl" };

static bool known_number(const char *k, size_t n)
{
	for (unsigned i = 0; i < sizeof(number_keys) / sizeof(number_keys[0]); i++)
		if (streq(k, n, number_keys[i]))
			return true;
	return false;
}

static void parse_word(const char *w, size_t n, bool first)
{
	size_t k = 0;
	while (k < n && w[k] != '=')
		k++;
	if (k == n) {
		if (!first)
			warn("parameter without a value", w, n);
		return;
	}
	const char *v = w + k + 1;
	size_t vn = n - k - 1;
	u64 num;
	bool ok = true;
	int c;

	if (streq(w, k, "workload")) {
		c = parse_choice(v, vn, workloads, sizeof(workloads) / sizeof(workloads[0]));
		if ((ok = c >= 0))
			P.workload = c;
	} else if (streq(w, k, "selftest")) {
		c = parse_choice(v, vn, selftests, sizeof(selftests) / sizeof(selftests[0]));
		if ((ok = c >= 0))
			P.selftest = c;
	} else if (streq(w, k, "sleep")) {
		c = parse_choice(v, vn, (const char *const[]){ "spin", "hlt" }, 2);
		if ((ok = c >= 0))
			P.hlt = c == 1;
	} else if (!known_number(w, k)) {
		warn("unknown parameter", w, n);
		return;
	} else if (!parse_size(v, vn, &num)) {
		ok = false;
	} else if (streq(w, k, "mem")) {
		P.mem = num;
	} else if (streq(w, k, "wss")) {
		P.wss = num;
	} else if (streq(w, k, "rate")) {
		P.rate = num;
	} else if (streq(w, k, "seed")) {
		P.seed = num;
	} else if (streq(w, k, "verify")) {
		P.verify = num != 0;
	} else if (streq(w, k, "verify_every")) {
		P.verify_every = num;
	} else if (streq(w, k, "exit_after")) {
		P.exit_after = num;
	} else if (streq(w, k, "period")) {
		P.period_ms = num ? num : 1;
	} else if (streq(w, k, "zerocheck")) {
		P.zerocheck = num != 0;
	} else if (streq(w, k, "progress")) {
		P.progress_ms = num;
	} else if (streq(w, k, "wpct")) {
		P.wpct = num > 100 ? 100 : (u32)num;
	} else if (streq(w, k, "balloon")) {
		P.balloon = num != 0;
	} else if (streq(w, k, "balloon_mtl")) {
		P.balloon_mtl = num != 0;
	}
	if (!ok)
		warn("bad value in", w, n);
}

void params_parse(const char *cmdline)
{
	const char *s = cmdline;
	bool first = true;
	for (;;) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s)
			break;
		const char *w = s;
		while (*s && *s != ' ' && *s != '\t')
			s++;
		parse_word(w, (size_t)(s - w), first);
		first = false;
	}
}
