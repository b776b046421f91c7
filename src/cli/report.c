/*
 * A migration's stats (query-migrate's object) as people read them: the
 * progress line of `livemig migrate` and `livemig status`, and the final
 * table with a unit on every figure.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <json-c/json.h>

#include "cli/report.h"

static int64_t get_i(struct json_object *o, const char *k)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static double get_d(struct json_object *o, const char *k)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_double(v) : 0;
}

static const char *get_s(struct json_object *o, const char *k)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

/* "512 B", "12.3 KiB", "75.3 MiB", "2.0 GiB". */
static const char *bytes_str(char *buf, size_t len, double b)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	while (u < 4 && b >= 1024) {
		b /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
	return buf;
}

/* "45 s", "3.2 s", "2 min 05 s". */
static const char *secs_str(char *buf, size_t len, double s)
{
	if (s < 10)
		snprintf(buf, len, "%.1f s", s);
	else if (s < 120)
		snprintf(buf, len, "%.0f s", s);
	else
		snprintf(buf, len, "%d min %02d s", (int)(s / 60), (int)fmod(s, 60));
	return buf;
}

int lm_cli_migration_percent(struct json_object *st)
{
	struct json_object *ram = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	const char *status = get_s(st, "status");
	if (!strcmp(status, "completed"))
		return 100;
	/* Of everything that had to go so far (pages sent, re-sent ones
	 * included, plus what is dirty now), the part that went. */
	double psize = get_i(ram, "page-size") ? (double)get_i(ram, "page-size") : 4096;
	double sent = (double)(get_i(ram, "normal") + get_i(ram, "duplicate")) * psize;
	double left = (double)get_i(ram, "remaining");
	if (sent + left <= 0)
		return 0;
	int pct = (int)(100 * sent / (sent + left));
	return pct > 99 && left > 0 ? 99 : pct;
}

void lm_cli_progress_line(struct json_object *st, double rate, char *buf, size_t len)
{
	struct json_object *ram = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	const char *status = get_s(st, "status");
	if (rate <= 0)
		rate = get_d(ram, "mbps") * 1e6 / 8;
	double left = (double)get_i(ram, "remaining");
	char el[32], eta[32], sent[32], rem[32];
	secs_str(el, sizeof(el), (double)get_i(st, "total-time") / 1000);
	if (!strcmp(status, "setup") && get_i(ram, "transferred") == 0)
		snprintf(eta, sizeof(eta), "-");
	else if (rate > 0)
		secs_str(eta, sizeof(eta), left / rate);
	else
		snprintf(eta, sizeof(eta), "-");
	bytes_str(sent, sizeof(sent), (double)get_i(ram, "transferred"));
	bytes_str(rem, sizeof(rem), left);
	snprintf(buf, len,
		 "%-9s %3d%%  round %lld  elapsed %s  ETA %s  sent %s  remaining %s  %.0f Mbit/s  "
		 "dirty %lld pages/s  expected downtime %lld ms",
		 status, lm_cli_migration_percent(st), (long long)get_i(ram, "rounds"), el, eta, sent, rem,
		 rate * 8 / 1e6, (long long)get_i(ram, "dirty-pages-rate"), (long long)get_i(st, "expected-downtime"));
}

/*
 * The unit (and, where the name alone misleads, what it counts) of every
 * figure query-migrate reports, by its flattened name. A key missing here
 * is printed bare.
 */
static const struct {
	const char *key, *unit, *note;
} units[] = {
	{"total-time", "ms", NULL},
	{"total-time-us", "us", NULL},
	{"setup-time", "ms", NULL},
	{"downtime", "ms", "measured: vCPUs stopped until the destination verified everything"},
	{"downtime-us", "us", NULL},
	{"expected-downtime", "ms", "the estimate after the last round"},
	{"expected-downtime-us", "us", NULL},
	{"verify.pages", "pages", NULL},
	{"verify.mismatches", "pages", NULL},
	{"verify.time", "ms", NULL},
	{"ram.transferred", "bytes", NULL},
	{"ram.remaining", "bytes", NULL},
	{"ram.total", "bytes", NULL},
	{"ram.duplicate", "pages", "zero pages, sent as a header only"},
	{"ram.normal", "pages", "sent with their contents"},
	{"ram.normal-bytes", "bytes", NULL},
	{"ram.skipped", "pages", "never touched or ballooned: neither read nor sent"},
	{"ram.dirty-sync-count", "", "harvests of the dirty log: one after each round, one in the pause"},
	{"ram.dirty-sync-us", "us", "the last harvest of the whole guest after a round"},
	{"ram.dirty-sync-max-us", "us", "the longest such harvest"},
	{"ram.dirty-pages-rate", "pages/s", NULL},
	{"ram.mbps", "Mbit/s", "guest data pages, the rate the downtime estimate uses"},
	{"ram.page-size", "bytes", NULL},
	{"ram.rounds", "", "pre-copy passes while the guest ran; the pass in the pause not counted"},
	{"ram.pages-scanned", "pages", NULL},
	{"ram.ballooned", "pages", NULL},
	{"ram.table-bytes", "bytes", NULL},
	{"ram.stop-copy-bytes", "bytes", NULL},
};

static void print_value(FILE *f, const char *name, struct json_object *val)
{
	const char *unit = NULL, *note = NULL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(units[i].key, name)) {
			unit = units[i].unit;
			note = units[i].note;
		}
	char v[64], extra[48] = "";
	if (json_object_is_type(val, json_type_double))
		snprintf(v, sizeof(v), "%.1f", json_object_get_double(val));
	else if (json_object_is_type(val, json_type_array) && json_object_array_length(val) == 0)
		snprintf(v, sizeof(v), "none");
	else
		snprintf(v, sizeof(v), "%s", json_object_get_string(val));
	if (unit && !strcmp(unit, "bytes") && json_object_get_int64(val) >= 1024) {
		char b[32];
		snprintf(extra, sizeof(extra), " (%s)", bytes_str(b, sizeof(b), (double)json_object_get_int64(val)));
	}
	fprintf(f, "  %-26s %s%s%s%s%s%s%s\n", name, v, unit && *unit ? " " : "", unit ? unit : "", extra,
		note ? "  (" : "", note ? note : "", note ? ")" : "");
}

static void print_flat(FILE *f, struct json_object *o, const char *prefix)
{
	json_object_object_foreach(o, key, val)
	{
		char name[128];
		snprintf(name, sizeof(name), "%s%s", prefix, key);
		if (json_object_is_type(val, json_type_object)) {
			char p[sizeof(name) + 2];
			snprintf(p, sizeof(p), "%s.", name);
			print_flat(f, val, p);
		} else {
			print_value(f, name, val);
		}
	}
}

void lm_cli_print_report(FILE *f, struct json_object *st)
{
	fprintf(f, "migration %s\n", get_s(st, "status"));
	print_flat(f, st, "");
}
