/*
 * The migration parameters' table (see params.h): read by the control
 * socket on every migrate-set-parameters / query-migrate-parameters, by
 * `livemig migrate` once per run to build its options, and by
 * `--list-parameters` for the docs. Seventeen rows, looked up by name: a flat
 * array is all it takes.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "cli/cli.h"
#include "cli/params.h"

/* ---- where each parameter lives ---------------------------------------- */

#define FIELD(fn, expr)                                                        \
	static int64_t get_##fn(const struct lm_cli_params *p)                 \
	{                                                                      \
		return (int64_t)(p->expr);                                     \
	}                                                                      \
	static void set_##fn(struct lm_cli_params *p, int64_t v)               \
	{                                                                      \
		p->expr = (__typeof__(p->expr))v;                              \
	}

FIELD(downtime, mig.downtime_limit_ms)
FIELD(bandwidth, mig.max_bandwidth)
FIELD(rounds, mig.max_rounds)
FIELD(time, mig.max_time_ms)
FIELD(nonconv, mig.on_nonconverge)
FIELD(compress, mig.compress)
FIELD(compress_always, mig.compress_always)
FIELD(chunk, mig.chunk_pages)
FIELD(verify, mig.verify)
FIELD(guard, mig.downtime_guard)
FIELD(autoconv, mig.auto_converge)
FIELD(thr_init, mig.throttle_initial)
FIELD(thr_inc, mig.throttle_increment)
FIELD(connect, connect_timeout_ms)
FIELD(postcopy, mig.postcopy)
FIELD(pc_after, mig.postcopy_after)
FIELD(channels, mig.channels)

/* idle-timeout: 0 on the interface, LM_TIMEOUT_NEVER in the engine. */
static int64_t get_idle(const struct lm_cli_params *p)
{
	return p->mig.idle_timeout_ms == LM_TIMEOUT_NEVER ? 0 : (int64_t)p->mig.idle_timeout_ms;
}

static void set_idle(struct lm_cli_params *p, int64_t v)
{
	p->mig.idle_timeout_ms = v ? (uint64_t)v : LM_TIMEOUT_NEVER;
}

/* skip-balloon: on unless the capability is switched off. */
static int64_t get_skip(const struct lm_cli_params *p)
{
	return !(p->mig.caps_disabled & LM_CAP_SKIP_BALLOON);
}

static void set_skip(struct lm_cli_params *p, int64_t v)
{
	if (v)
		p->mig.caps_disabled &= ~(uint64_t)LM_CAP_SKIP_BALLOON;
	else
		p->mig.caps_disabled |= LM_CAP_SKIP_BALLOON;
}

/* Enumerations: the index is the engine's enum value. */
static const char *const nonconv_names[] = {[LM_NONCONVERGE_SWITCHOVER] = "switchover",
					    [LM_NONCONVERGE_CANCEL] = "cancel", NULL};
static const char *const verify_names[] = {[LM_VERIFY_FULL] = "full", [LM_VERIFY_DIGEST] = "digest",
					   [LM_VERIFY_NONE] = "none", NULL};

/* The default of connect-timeout, the one parameter the engine lacks. */
#define CONNECT_TIMEOUT_DEFAULT_MS 10000

/*
 * multifd-channels' default, from the cores this process may use: a
 * channel costs a thread on each side, and on a host where both sides
 * share few cores more threads only compete for them (docs/bench.md,
 * "Channels"). One channel per four cores, at least 1, at most 8.
 */
unsigned lm_cli_default_channels(void)
{
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
	n /= 4;
	return n < 1 ? 1 : n > 8 ? 8 : (unsigned)n;
}

/* ---- the table ------------------------------------------------------------ */

const struct lm_cli_param lm_cli_params[] = {
	{"downtime-limit", LM_PARAM_INT, "ms", 1, 2000000, 0, NULL, "MS",
	 "the longest pause the switchover may take: pre-copy goes on until the estimate fits",
	 get_downtime, set_downtime},
	{"max-bandwidth", LM_PARAM_RATE, "bytes/s", 0, INT64_MAX, 0, NULL, "RATE",
	 "cap on the pre-copy rounds (not the stop-and-copy); 0 = unlimited; the CLI takes 100M, 1Gbit",
	 get_bandwidth, set_bandwidth},
	{"max-rounds", LM_PARAM_INT, "", 1, 100000, 0, NULL, "N",
	 "pre-copy rounds before on-nonconverge decides", get_rounds, set_rounds},
	{"max-time", LM_PARAM_INT, "ms", 0, INT64_MAX, 0, NULL, "MS",
	 "pre-copy time before on-nonconverge decides; 0 = no limit", get_time, set_time},
	{"on-nonconverge", LM_PARAM_ENUM, "", 0, 0, 0, nonconv_names, "WHAT",
	 "at max-rounds or max-time: switchover (pause and send the rest anyway) or cancel (the VM runs on)",
	 get_nonconv, set_nonconv},
	{"compress", LM_PARAM_BOOL, "", 0, 1, 0, NULL, NULL, "offer zstd compression of page data",
	 get_compress, set_compress},
	{"compress-always", LM_PARAM_BOOL, "", 0, 1, 0, NULL, NULL,
	 "with compress: try zstd on every run that shrinks however fast the link (bytes cost more than "
	 "time); off: zstd switches itself off while sending plain is faster",
	 get_compress_always, set_compress_always},
	{"skip-balloon", LM_PARAM_BOOL, "", 0, 1, 0, NULL, NULL,
	 "leave ballooned pages out (the skip map travels instead), when the guest promised must-tell-host",
	 get_skip, set_skip},
	{"chunk-pages", LM_PARAM_INT, "pages", 64, 1 << 24, 64, NULL, "N",
	 "re-arm and copy granularity", get_chunk, set_chunk},
	{"idle-timeout", LM_PARAM_INT, "ms", 0, INT32_MAX, 0, NULL, "MS",
	 "a read or write on the migration connection without progress this long fails it; 0 = never",
	 get_idle, set_idle},
	{"verify", LM_PARAM_ENUM, "", 0, 0, 0, verify_names, "MODE",
	 "full: RAM digest, then the paused source compared page by page; digest: the digest only; "
	 "none: frame checksums only, if the destination allows",
	 get_verify, set_verify},
	{"downtime-guard", LM_PARAM_BOOL, "", 0, 1, 0, NULL, NULL,
	 "keep downtime-limit as a promise: a pause found to break it resumes the guest and pre-copy goes on; "
	 "out of rounds or time, cancel instead of a late switchover",
	 get_guard, set_guard},
	{"auto-converge", LM_PARAM_BOOL, "", 0, 1, 0, NULL, NULL,
	 "slow the vCPUs while the guest dirties more than half of what the link carries "
	 "(cpu-throttle-initial, then cpu-throttle-increment more per round, at most 99%)",
	 get_autoconv, set_autoconv},
	{"cpu-throttle-initial", LM_PARAM_INT, "%", 1, 99, 0, NULL, "PCT",
	 "auto-converge's first throttle: the share of time the vCPUs sleep", get_thr_init, set_thr_init},
	{"cpu-throttle-increment", LM_PARAM_INT, "%", 1, 99, 0, NULL, "PCT",
	 "auto-converge's step per round that still does not converge", get_thr_inc, set_thr_inc},
	{"postcopy-ram", LM_PARAM_BOOL, "", 0, 1, 0, NULL, NULL,
	 "allow post-copy (`livemig migrate --postcopy`): when pre-copy does not converge the guest moves and "
	 "its dirty pages follow; if the source dies before the last one, the guest is lost",
	 get_postcopy, set_postcopy},
	{"postcopy-after", LM_PARAM_INT, "rounds", 0, 100000, 0, NULL, "N",
	 "with postcopy-ram: switch after this many rounds; 0 = when pre-copy is seen not to converge",
	 get_pc_after, set_pc_after},
	{"multifd-channels", LM_PARAM_INT, "", 0, LM_STREAM_MAX_CHANNELS, 0, NULL, "N",
	 "connections that carry page data, each with its own thread on both sides (`livemig migrate "
	 "--channels N`); 1 = the main connection alone; 0 = one per four cores here, at least 1",
	 get_channels, set_channels},
	{"connect-timeout", LM_PARAM_INT, "ms", 0, INT32_MAX, 0, NULL, "MS",
	 "how long `migrate` may take to connect before the migration fails; 0 = the kernel's bound (~2 min)",
	 get_connect, set_connect},
};

const size_t lm_cli_nparams = sizeof(lm_cli_params) / sizeof(lm_cli_params[0]);

const struct lm_cli_param *lm_cli_param_find(const char *name)
{
	for (size_t i = 0; i < lm_cli_nparams; i++)
		if (!strcmp(lm_cli_params[i].name, name))
			return &lm_cli_params[i];
	return NULL;
}

void lm_cli_params_default(struct lm_cli_params *p)
{
	memset(p, 0, sizeof(*p));
	lm_migrate_params_default(&p->mig);
	p->connect_timeout_ms = CONNECT_TIMEOUT_DEFAULT_MS;
}

/* ---- values ------------------------------------------------------------- */

static size_t nchoices(const struct lm_cli_param *d)
{
	size_t n = 0;
	while (d->choices[n])
		n++;
	return n;
}

void lm_cli_param_range(const struct lm_cli_param *d, char *buf, size_t len)
{
	switch (d->type) {
	case LM_PARAM_BOOL:
		snprintf(buf, len, "true or false");
		return;
	case LM_PARAM_ENUM: {
		size_t n = nchoices(d), off = 0;
		buf[0] = 0;
		for (size_t i = 0; i < n && off < len; i++)
			off += (size_t)snprintf(buf + off, len - off, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ",
						d->choices[i]);
		return;
	}
	case LM_PARAM_INT:
	case LM_PARAM_RATE:
		if (d->max == INT64_MAX)
			snprintf(buf, len, ">= %" PRId64, d->min);
		else
			snprintf(buf, len, "%" PRId64 "..%" PRId64, d->min, d->max);
		if (d->multiple)
			snprintf(buf + strlen(buf), len - strlen(buf), ", a multiple of %" PRId64, d->multiple);
		return;
	}
}

/* "Parameter 'NAME' expects RANGE (UNIT)". */
static int expects(const struct lm_cli_param *d, char *err, size_t errlen)
{
	char r[128];
	lm_cli_param_range(d, r, sizeof(r));
	const char *what = d->type == LM_PARAM_BOOL ? "" : d->type == LM_PARAM_ENUM ? "one of " : "an integer ";
	snprintf(err, errlen, "Parameter '%s' expects %s%s%s%s%s", d->name, what, r, *d->unit ? " (" : "", d->unit,
		 *d->unit ? ")" : "");
	return -EINVAL;
}

static int check_int(const struct lm_cli_param *d, int64_t v, char *err, size_t errlen)
{
	if (v < d->min || v > d->max || (d->multiple && v % d->multiple))
		return expects(d, err, errlen);
	return 0;
}

int lm_cli_param_from_json(const struct lm_cli_param *d, struct json_object *val, int64_t *v, char *err,
			   size_t errlen)
{
	switch (d->type) {
	case LM_PARAM_BOOL:
		if (!json_object_is_type(val, json_type_boolean))
			return expects(d, err, errlen);
		*v = json_object_get_boolean(val);
		return 0;
	case LM_PARAM_ENUM: {
		if (!json_object_is_type(val, json_type_string))
			return expects(d, err, errlen);
		const char *s = json_object_get_string(val);
		for (size_t i = 0; d->choices[i]; i++)
			if (!strcmp(s, d->choices[i])) {
				*v = (int64_t)i;
				return 0;
			}
		return expects(d, err, errlen);
	}
	case LM_PARAM_INT:
	case LM_PARAM_RATE:
		if (!json_object_is_type(val, json_type_int))
			return expects(d, err, errlen);
		/* json-c saturates out-of-range numbers at INT64_MIN/MAX; an
		 * unsigned beyond INT64_MAX reads as INT64_MAX, out of every
		 * bounded range and harmless for the unbounded ones. */
		*v = json_object_get_int64(val);
		return check_int(d, *v, err, errlen);
	}
	return -EINVAL;
}

struct json_object *lm_cli_param_to_json(const struct lm_cli_param *d, int64_t v)
{
	switch (d->type) {
	case LM_PARAM_BOOL:
		return json_object_new_boolean(v != 0);
	case LM_PARAM_ENUM:
		return json_object_new_string(v >= 0 && (size_t)v < nchoices(d) ? d->choices[v] : "unknown");
	default:
		return json_object_new_int64(v);
	}
}

int lm_cli_param_parse(const struct lm_cli_param *d, const char *arg, int64_t *v, char *err, size_t errlen)
{
	switch (d->type) {
	case LM_PARAM_BOOL:
		if (!strcmp(arg, "true") || !strcmp(arg, "on") || !strcmp(arg, "1"))
			*v = 1;
		else if (!strcmp(arg, "false") || !strcmp(arg, "off") || !strcmp(arg, "0"))
			*v = 0;
		else
			goto bad;
		return 0;
	case LM_PARAM_ENUM:
		for (size_t i = 0; d->choices[i]; i++)
			if (!strcmp(arg, d->choices[i])) {
				*v = (int64_t)i;
				return 0;
			}
		goto bad;
	case LM_PARAM_RATE: {
		uint64_t r;
		if (lm_cli_parse_rate(arg, &r) < 0 || r > (uint64_t)d->max)
			goto bad;
		*v = (int64_t)r;
		return 0;
	}
	case LM_PARAM_INT: {
		char *end;
		errno = 0;
		long long n = strtoll(arg, &end, 10);
		if (errno || end == arg || *end)
			goto bad;
		*v = n;
		if (check_int(d, *v, err, errlen) < 0)
			goto bad;
		return 0;
	}
	}
bad: {
	char r[128];
	lm_cli_param_range(d, r, sizeof(r));
	if (d->type == LM_PARAM_RATE)
		snprintf(err, errlen, "bad --%s '%s' (bytes/s, e.g. 100M, 1Gbit, 0 = unlimited)", d->name, arg);
	else
		snprintf(err, errlen, "bad --%s '%s' (%s%s%s)", d->name, arg, r, *d->unit ? " " : "", d->unit);
	return -EINVAL;
}
}

void lm_cli_param_format(const struct lm_cli_param *d, int64_t v, char *buf, size_t len)
{
	switch (d->type) {
	case LM_PARAM_BOOL:
		snprintf(buf, len, "%s", v ? "true" : "false");
		return;
	case LM_PARAM_ENUM:
		snprintf(buf, len, "%s", v >= 0 && (size_t)v < nchoices(d) ? d->choices[v] : "unknown");
		return;
	default:
		snprintf(buf, len, "%" PRId64, v);
		return;
	}
}

/* ---- documentation ----------------------------------------------------- */

static const char *type_name(const struct lm_cli_param *d)
{
	switch (d->type) {
	case LM_PARAM_BOOL: return "bool";
	case LM_PARAM_ENUM: return "string";
	default: return "int";
	}
}

void lm_cli_params_markdown(FILE *f)
{
	struct lm_cli_params def;
	lm_cli_params_default(&def);
	fprintf(f, "| parameter | type | unit | range | default | what it does |\n");
	fprintf(f, "|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < lm_cli_nparams; i++) {
		const struct lm_cli_param *d = &lm_cli_params[i];
		char r[128], v[64];
		lm_cli_param_range(d, r, sizeof(r));
		lm_cli_param_format(d, d->get(&def), v, sizeof(v));
		fprintf(f, "| `%s` | %s | %s | %s | %s | %s |\n", d->name, type_name(d), *d->unit ? d->unit : "-", r,
			v, d->doc);
	}
}

/* s for troff: "-" as "\\-" (a real minus, not a hyphen), "\\" as "\\e". */
static void troff(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '-')
			fputs("\\-", f);
		else if (*s == '\\')
			fputs("\\e", f);
		else
			fputc(*s, f);
	}
}

void lm_cli_params_troff(FILE *f)
{
	struct lm_cli_params def;
	lm_cli_params_default(&def);
	for (size_t i = 0; i < lm_cli_nparams; i++) {
		const struct lm_cli_param *d = &lm_cli_params[i];
		char r[128], v[64];
		lm_cli_param_range(d, r, sizeof(r));
		lm_cli_param_format(d, d->get(&def), v, sizeof(v));
		fputs(".TP\n.B ", f);
		troff(f, d->name);
		fputc('\n', f);
		troff(f, type_name(d));
		if (*d->unit) {
			fputs(", ", f);
			troff(f, d->unit);
		}
		fputs(", ", f);
		troff(f, r);
		fputs("; default ", f);
		troff(f, v);
		fputs(".\n", f);
		/* A sentence of its own here: capitalised. */
		fputc(d->doc[0] >= 'a' && d->doc[0] <= 'z' ? d->doc[0] - 'a' + 'A' : d->doc[0], f);
		troff(f, d->doc + 1);
		fputs(".\n", f);
	}
}

/* text, wrapped at 79 columns, from column col on; the lines after the
 * first indented by indent. */
static void wrap(FILE *f, const char *text, int col, int indent)
{
	const char *p = text;
	bool first = true;
	while (*p) {
		const char *w = p;
		while (*w && *w != ' ')
			w++;
		int n = (int)(w - p);
		if (!first && col + 1 + n > 79) {
			fprintf(f, "\n%*s", indent, "");
			col = indent;
		} else if (!first) {
			fputc(' ', f);
			col++;
		}
		fprintf(f, "%.*s", n, p);
		col += n;
		first = false;
		p = *w ? w + 1 : w;
	}
	fputc('\n', f);
}

void lm_cli_params_help(FILE *f)
{
	struct lm_cli_params def;
	lm_cli_params_default(&def);
	for (size_t i = 0; i < lm_cli_nparams; i++) {
		const struct lm_cli_param *d = &lm_cli_params[i];
		char opt[64], v[64], r[128], text[512];
		if (d->type == LM_PARAM_BOOL)
			snprintf(opt, sizeof(opt), "--[no-]%s", d->name);
		else
			snprintf(opt, sizeof(opt), "--%s %s", d->name, d->metavar);
		lm_cli_param_format(d, d->get(&def), v, sizeof(v));
		lm_cli_param_range(d, r, sizeof(r));
		snprintf(text, sizeof(text), "%s (%s%s%s; default %s)", d->doc, r, *d->unit ? " " : "", d->unit, v);
		fprintf(f, "  %-27s ", opt);
		wrap(f, text, 30, 30);
	}
}
