/*
 * Migration stats as text: JSON with QEMU's query-migrate names (json-c),
 * and a readable two-column table. The library returns strings; printing
 * them is the caller's business.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "livemig/migrate.h"

const char *lm_migrate_status_name(enum lm_migrate_status st)
{
	switch (st) {
	case LM_MIG_NONE: return "none";
	case LM_MIG_SETUP: return "setup";
	case LM_MIG_ACTIVE: return "active";
	case LM_MIG_DEVICE: return "device";
	case LM_MIG_COMPLETED: return "completed";
	case LM_MIG_FAILED: return "failed";
	case LM_MIG_CANCELLED: return "cancelled";
	case LM_MIG_UNCONFIRMED: return "unconfirmed";
	case LM_MIG_POSTCOPY_ACTIVE: return "postcopy-active";
	case LM_MIG_POSTCOPY_PAUSED: return "postcopy-paused";
	case LM_MIG_POSTCOPY_RECOVER: return "postcopy-recover";
	}
	return "unknown";
}

const char *lm_verify_state_name(enum lm_verify_state v)
{
	switch (v) {
	case LM_VERIFY_NOT_RUN: return "not-run";
	case LM_VERIFY_OK: return "ok";
	case LM_VERIFY_MISMATCH: return "mismatch";
	case LM_VERIFY_INCOMPLETE: return "incomplete";
	}
	return "unknown";
}

/* The downtime was measured: the switchover reached RESULT ok. */
static bool downtime_known(const struct lm_migrate_stats *st)
{
	return st->status == LM_MIG_COMPLETED || st->status == LM_MIG_UNCONFIRMED || st->postcopy;
}

static void add_u64(json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

char *lm_migrate_stats_json(const struct lm_migrate_stats *st)
{
	json_object *o = json_object_new_object();
	json_object *ram = json_object_new_object();
	if (!o || !ram) {
		json_object_put(o);
		json_object_put(ram);
		return NULL;
	}
	json_object_object_add(o, "status", json_object_new_string(lm_migrate_status_name(st->status)));
	add_u64(o, "total-time", st->total_time_ms);
	add_u64(o, "total-time-us", st->total_time_us);
	add_u64(o, "setup-time", st->setup_time_ms);
	if (downtime_known(st)) {
		add_u64(o, "downtime", st->downtime_ms);
		add_u64(o, "downtime-us", st->downtime_us);
		json_object *b = json_object_new_object();
		add_u64(b, "stop-us", st->downtime_stop_us);
		add_u64(b, "device-state-us", st->downtime_state_us);
		add_u64(b, "ram-us", st->downtime_ram_us);
		add_u64(b, "harvest-us", st->downtime_harvest_us);
		if (st->commit_acked)
			add_u64(b, "resume-us", st->downtime_resume_us);
		add_u64(b, "result-us", st->downtime_result_us);
		json_object_object_add(o, "downtime-breakdown", b);
		json_object_object_add(o, "commit-acknowledged", json_object_new_boolean(st->commit_acked));
	}
	json_object *v = json_object_new_object();
	json_object_object_add(v, "status", json_object_new_string(lm_verify_state_name(st->verify)));
	add_u64(v, "pages", st->verify_pages);
	add_u64(v, "mismatches", st->verify_mismatches);
	json_object *pages = json_object_new_array();
	for (uint64_t i = 0; i < st->verify_mismatches && i < LM_VERIFY_LIST; i++)
		json_object_array_add(pages, json_object_new_int64((int64_t)st->verify_first[i]));
	json_object_object_add(v, "mismatched-pages", pages);
	add_u64(v, "time", st->verify_time_ms);
	json_object_object_add(o, "verify", v);
	add_u64(o, "expected-downtime", st->expected_downtime_ms);
	add_u64(o, "expected-downtime-us", st->expected_downtime_us);
	add_u64(o, "downtime-guard-resumes", st->guard_resumes);
	add_u64(o, "downtime-guard-paused-us", st->guard_paused_us);
	add_u64(o, "cpu-throttle-percentage", st->cpu_throttle_pct);
	json_object_object_add(o, "postcopy", json_object_new_boolean(st->postcopy));
	if (st->postcopy) {
		add_u64(o, "postcopy-pending", st->postcopy_pending);
		add_u64(o, "postcopy-requests", st->postcopy_requests);
		add_u64(o, "postcopy-pages-requested", st->postcopy_pages_requested);
		add_u64(o, "postcopy-pages-pushed", st->postcopy_pages_pushed);
		add_u64(o, "postcopy-bytes", st->postcopy_bytes);
		add_u64(o, "postcopy-time", st->postcopy_time_ms);
		add_u64(o, "postcopy-recoveries", st->postcopy_recoveries);
	}
	if (st->dirty_source[0])
		json_object_object_add(o, "dirty-source", json_object_new_string(st->dirty_source));
	json_object_object_add(o, "skip-balloon", json_object_new_boolean(st->skip_balloon));
	add_u64(o, "multifd-channels", st->channels);
	add_u64(o, "catch-ups", st->catch_ups);
	add_u64(ram, "transferred", st->transferred);
	add_u64(ram, "remaining", st->remaining);
	add_u64(ram, "total", st->total);
	add_u64(ram, "duplicate", st->duplicate);
	add_u64(ram, "normal", st->normal);
	add_u64(ram, "normal-bytes", st->normal_bytes);
	add_u64(ram, "skipped", st->skipped);
	add_u64(ram, "dirty-sync-count", st->dirty_sync_count);
	add_u64(ram, "dirty-sync-us", st->dirty_sync_us);
	add_u64(ram, "dirty-sync-max-us", st->dirty_sync_max_us);
	add_u64(ram, "dirty-pages-rate", st->dirty_pages_rate);
	json_object_object_add(ram, "mbps", json_object_new_double(st->mbps));
	add_u64(ram, "page-size", LM_PAGE_SIZE);
	add_u64(ram, "rounds", st->rounds);
	add_u64(ram, "pages-scanned", st->pages_scanned);
	add_u64(ram, "ballooned", st->ballooned);
	add_u64(ram, "table-bytes", st->table_bytes);
	add_u64(ram, "stop-copy-bytes", st->stop_copy_bytes);
	json_object_object_add(o, "ram", ram);
	if (st->error[0])
		json_object_object_add(o, "error-desc", json_object_new_string(st->error));
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	char *out = s ? strdup(s) : NULL;
	json_object_put(o);
	return out;
}

static void mib(char *buf, size_t cap, uint64_t bytes)
{
	snprintf(buf, cap, "%.1f MiB", (double)bytes / (1 << 20));
}

char *lm_migrate_stats_table(const struct lm_migrate_stats *st)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	if (!f)
		return NULL;
	char a[64], b[64], c[64];
	fprintf(f, "%-20s %s\n", "status", lm_migrate_status_name(st->status));
	if (st->error[0])
		fprintf(f, "%-20s %s\n", "error", st->error);
	fprintf(f, "%-20s %llu ms\n", "total time", (unsigned long long)st->total_time_ms);
	fprintf(f, "%-20s %llu ms\n", "setup time", (unsigned long long)st->setup_time_ms);
	if (downtime_known(st))
		fprintf(f, "%-20s %.3f ms (measured: pause to RESULT ok): stop %.3f + device state %.3f + ram %.3f "
			   "(harvest %.3f) + result %.3f\n",
			"downtime", st->downtime_us / 1000.0, st->downtime_stop_us / 1000.0,
			st->downtime_state_us / 1000.0, st->downtime_ram_us / 1000.0, st->downtime_harvest_us / 1000.0,
			st->downtime_result_us / 1000.0);
	if (st->status == LM_MIG_UNCONFIRMED)
		fprintf(f, "%-20s sent, NOT acknowledged: the destination may run the guest; this copy stays paused\n",
			"commit");
	if (st->verify == LM_VERIFY_OK)
		fprintf(f, "%-20s ok: %llu pages of the paused source equal what was sent (%llu ms)\n", "verify",
			(unsigned long long)st->verify_pages, (unsigned long long)st->verify_time_ms);
	else if (st->verify == LM_VERIFY_MISMATCH) {
		fprintf(f, "%-20s MISMATCH: %llu of %llu pages differ from what was sent (pages", "verify",
			(unsigned long long)st->verify_mismatches, (unsigned long long)st->verify_pages);
		for (uint64_t i = 0; i < st->verify_mismatches && i < LM_VERIFY_LIST; i++)
			fprintf(f, " %llu", (unsigned long long)st->verify_first[i]);
		fprintf(f, "%s); the paused source holds the right copy\n",
			st->verify_mismatches > LM_VERIFY_LIST ? " ..." : "");
	} else if (st->verify == LM_VERIFY_INCOMPLETE)
		fprintf(f, "%-20s incomplete: interrupted after %llu pages\n", "verify",
			(unsigned long long)st->verify_pages);
	fprintf(f, "%-20s %.3f ms\n", "expected downtime", st->expected_downtime_us / 1000.0);
	if (st->cpu_throttle_pct)
		fprintf(f, "%-20s %u%% (auto-converge: the vCPUs slept that share of the time)\n", "cpu throttle",
			st->cpu_throttle_pct);
	if (st->postcopy) {
		mib(a, sizeof(a), st->postcopy_bytes);
		fprintf(f, "%-20s %llu pages followed the guest in %llu ms (%s): %llu asked for in %llu requests, "
			   "%llu pushed\n",
			"post-copy", (unsigned long long)st->postcopy_pending, (unsigned long long)st->postcopy_time_ms,
			a, (unsigned long long)st->postcopy_pages_requested, (unsigned long long)st->postcopy_requests,
			(unsigned long long)st->postcopy_pages_pushed);
	}
	if (st->guard_resumes)
		fprintf(f, "%-20s resumed the guest %llu time%s (after %.3f ms stopped in all): the pause would "
			   "have broken the limit\n",
			"downtime guard", (unsigned long long)st->guard_resumes, st->guard_resumes == 1 ? "" : "s",
			st->guard_paused_us / 1000.0);
	fprintf(f, "%-20s %llu\n", "rounds", (unsigned long long)st->rounds);
	mib(a, sizeof(a), st->transferred);
	mib(b, sizeof(b), st->total);
	fprintf(f, "%-20s %s of %s guest RAM\n", "transferred", a, b);
	mib(c, sizeof(c), st->remaining);
	fprintf(f, "%-20s %s\n", "remaining", c);
	fprintf(f, "%-20s %llu pages\n", "normal", (unsigned long long)st->normal);
	fprintf(f, "%-20s %llu pages\n", "duplicate (zero)", (unsigned long long)st->duplicate);
	fprintf(f, "%-20s %llu pages (never touched or ballooned: neither read nor sent)\n", "skipped", (unsigned long long)st->skipped);
	fprintf(f, "%-20s %llu pages\n", "scanned", (unsigned long long)st->pages_scanned);
	fprintf(f, "%-20s %llu pages (skip-balloon %s)\n", "ballooned", (unsigned long long)st->ballooned,
		st->skip_balloon ? "on: neither read nor sent" : "off: ordinary pages");
	if (st->table_bytes)
		fprintf(f, "%-20s %llu bytes\n", "skip map on wire", (unsigned long long)st->table_bytes);
	if (st->stop_copy_bytes) {
		mib(a, sizeof(a), st->stop_copy_bytes);
		fprintf(f, "%-20s %s\n", "stop-and-copy", a);
	}
	fprintf(f, "%-20s %llu (%s; last %llu us, longest %llu us)\n", "dirty syncs",
		(unsigned long long)st->dirty_sync_count, st->dirty_source[0] ? st->dirty_source : "?",
		(unsigned long long)st->dirty_sync_us, (unsigned long long)st->dirty_sync_max_us);
	fprintf(f, "%-20s %llu pages/s\n", "dirty rate", (unsigned long long)st->dirty_pages_rate);
	fprintf(f, "%-20s %.0f Mbit/s\n", "bandwidth", st->mbps);
	if (fclose(f)) {
		free(out);
		return NULL;
	}
	return out;
}
