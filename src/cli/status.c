/*
 * livemig status and livemig cancel: one look at a VM through its control
 * socket (query-status and query-migrate), and migrate-cancel with the
 * outcome it had.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <json-c/json.h>

#include "cli/cli.h"
#include "cli/qmp_client.h"
#include "cli/report.h"

/* Each request's bound: a server that answers nothing within it is stuck. */
#define REPLY_TIMEOUT_S 10.0

static const char *get_s(struct json_object *o, const char *k)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

static bool final_status(const char *s)
{
	return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled") ||
	       !strcmp(s, "unconfirmed");
}

static void status_usage(FILE *f)
{
	fprintf(f, "usage: livemig status --control PATH [--json]\n"
		   "\n"
		   "Shows the state of the VM served at control socket PATH (query-status) and of\n"
		   "its migration (query-migrate): the one running, with its progress, or the\n"
		   "last one and how it ended. Exits 0, 1 when the socket does not answer, 2 for\n"
		   "bad usage.\n"
		   "\n"
		   "options:\n"
		   "  --control PATH   the VM's control socket (required)\n"
		   "  --json           {\"status\": query-status, \"migration\": query-migrate}\n"
		   "  -h, --help       this text\n");
}

static void cancel_usage(FILE *f)
{
	fprintf(f, "usage: livemig cancel --control PATH [--timeout SEC] [--json]\n"
		   "\n"
		   "Cancels the migration running from the VM served at control socket PATH\n"
		   "(migrate-cancel), waits until it has ended and says how: cancelled (the VM runs\n"
		   "on at the source) or, when the cancel came too late, completed anyway.\n"
		   "Exits 0 when it ended cancelled, 1 when there was no migration to cancel, it\n"
		   "ended otherwise (completed, failed) or the socket does not answer, 2 for bad\n"
		   "usage.\n"
		   "\n"
		   "options:\n"
		   "  --control PATH   the VM's control socket (required)\n"
		   "  --timeout SEC    wait at most this long for the end (default 60)\n"
		   "  --json           print the migration's final stats as JSON\n"
		   "  -h, --help       this text\n");
}

static int bad(const char *prog, void (*usage)(FILE *), const char *fmt, const char *arg)
{
	fprintf(stderr, "livemig %s: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see livemig %s --help)\n", prog);
	(void)usage;
	return 2;
}

/* Options both take; *timeout untouched unless --timeout (cancel only). */
static int parse(int argc, char **argv, const char *prog, void (*usage)(FILE *), bool with_timeout,
		 const char **control, bool *json, double *timeout)
{
	enum { O_CONTROL = 256, O_JSON, O_TIMEOUT };
	static const struct option opts[] = {
	    {"control", required_argument, NULL, O_CONTROL},
	    {"json", no_argument, NULL, O_JSON},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;
	char *end;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_CONTROL: *control = optarg; break;
		case O_JSON: *json = true; break;
		case O_TIMEOUT:
			if (!with_timeout)
				return bad(prog, usage, "unknown option '%s'", argv[optind - 1]);
			*timeout = strtod(optarg, &end);
			if (*end || end == optarg || *timeout <= 0)
				return bad(prog, usage, "bad --timeout '%s' (seconds)", optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			return bad(prog, usage, "option '%s' needs a value", argv[optind - 1]);
		default:
			return bad(prog, usage, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad(prog, usage, "unexpected argument '%s'", argv[optind]);
	if (!*control)
		return bad(prog, usage, "%s", "--control PATH is required");
	return -1; /* go on */
}

static struct lm_qmp *open_ctl(const char *prog, const char *control)
{
	struct lm_qmp *q = lm_qmp_new();
	if (!q) {
		fprintf(stderr, "livemig %s: out of memory\n", prog);
		return NULL;
	}
	if (lm_qmp_connect(q, control, 0, REPLY_TIMEOUT_S) < 0) {
		fprintf(stderr, "livemig %s: %s: %s\n", prog, control, lm_qmp_error(q));
		lm_qmp_free(q);
		return NULL;
	}
	return q;
}

static int exec(struct lm_qmp *q, const char *prog, const char *cmd, struct json_object **ret)
{
	int r = lm_qmp_exec(q, cmd, NULL, REPLY_TIMEOUT_S, ret);
	if (r < 0)
		fprintf(stderr, "livemig %s: %s: %s\n", prog, cmd, lm_qmp_error(q));
	return r;
}

/* One line about the migration in st (query-migrate's answer). */
static void migration_line(FILE *f, struct json_object *st)
{
	const char *status = get_s(st, "status");
	if (!*status) {
		fprintf(f, "migration  none yet\n");
		return;
	}
	if (!final_status(status)) {
		char line[512];
		lm_cli_progress_line(st, 0, line, sizeof(line));
		fprintf(f, "migration  %s\n", line);
		return;
	}
	struct json_object *v;
	fprintf(f, "migration  %s after %lld ms", status,
		(long long)(json_object_object_get_ex(st, "total-time", &v) ? json_object_get_int64(v) : 0));
	if (json_object_object_get_ex(st, "downtime", &v))
		fprintf(f, ", downtime %lld ms", (long long)json_object_get_int64(v));
	const char *why = get_s(st, "error-desc");
	fprintf(f, "%s%s\n", *why ? ": " : "", why);
}

int lm_cli_status(int argc, char **argv)
{
	const char *control = NULL;
	bool json = false;
	int r = parse(argc, argv, "status", status_usage, false, &control, &json, NULL);
	if (r >= 0)
		return r;
	struct lm_qmp *q = open_ctl("status", control);
	if (!q)
		return 1;
	struct json_object *vm = NULL, *mig = NULL;
	int ret = 1;
	if (exec(q, "status", "query-status", &vm) < 0 || exec(q, "status", "query-migrate", &mig) < 0)
		goto out;
	if (json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "status", json_object_get(vm));
		json_object_object_add(o, "migration", json_object_get(mig));
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
		json_object_put(o);
	} else {
		printf("vm         %s\n", get_s(vm, "status"));
		migration_line(stdout, mig);
	}
	ret = 0;
out:
	json_object_put(vm);
	json_object_put(mig);
	lm_qmp_free(q);
	return ret;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int lm_cli_cancel(int argc, char **argv)
{
	const char *control = NULL;
	bool json = false;
	double timeout = 60;
	int r = parse(argc, argv, "cancel", cancel_usage, true, &control, &json, &timeout);
	if (r >= 0)
		return r;
	struct lm_qmp *q = open_ctl("cancel", control);
	if (!q)
		return 1;
	struct json_object *st = NULL;
	int ret = 1;
	if (exec(q, "cancel", "query-migrate", &st) < 0)
		goto out;
	const char *status = get_s(st, "status");
	if (!*status || final_status(status)) {
		fprintf(stderr, "livemig cancel: no migration in progress%s%s%s\n", *status ? " (the last one " : "",
			status, *status ? ")" : "");
		goto out;
	}
	json_object_put(st);
	st = NULL;
	if (exec(q, "cancel", "migrate-cancel", NULL) < 0)
		goto out;
	/* The cancel takes effect at the engine's next check; until the
	 * destination's verdict is in, a migration may still complete. */
	double end = now_s() + timeout;
	for (;;) {
		if (exec(q, "cancel", "query-migrate", &st) < 0)
			goto out;
		status = get_s(st, "status");
		if (final_status(status))
			break;
		if (now_s() > end) {
			fprintf(stderr, "livemig cancel: asked to cancel, but the migration is still %s after %g s\n",
				status, timeout);
			goto out;
		}
		json_object_put(st);
		st = NULL;
		lm_qmp_poll(q, 0.1);
	}
	if (json)
		printf("%s\n", json_object_to_json_string_ext(st, JSON_C_TO_STRING_PRETTY));
	if (!strcmp(status, "cancelled")) {
		fprintf(stderr, "livemig cancel: the migration was cancelled; the VM runs on at the source\n");
		ret = 0;
	} else if (!strcmp(status, "completed")) {
		fprintf(stderr, "livemig cancel: too late: the migration completed anyway (the guest runs at "
				"the destination)\n");
	} else {
		const char *why = get_s(st, "error-desc");
		fprintf(stderr, "livemig cancel: the migration ended %s%s%s\n", status, *why ? ": " : "", why);
	}
out:
	json_object_put(st);
	lm_qmp_free(q);
	return ret;
}
