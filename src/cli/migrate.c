/*
 * livemig migrate: ask a running VM (through its control socket) to migrate
 * to a destination, show progress while it runs, and print the report.
 *
 * The parameter options come from src/cli/params.c's table. They apply to
 * this migration only: they are set just before `migrate`, and the values
 * they replaced are put back as soon as `migrate` has answered (the
 * migration took its parameters then), whether it started or not.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

#include "cli/cli.h"
#include "cli/params.h"
#include "cli/qmp_client.h"
#include "cli/report.h"
#include "livemig/migrate.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig migrate --control PATH --to URI [options]\n"
		"       livemig migrate --list-parameters[=markdown|man]\n"
		"\n"
		"Asks the VM served at control socket PATH (livemig run/incoming --control)\n"
		"to migrate live to URI (tcp:HOST:PORT, tcp:[IPV6]:PORT or unix:PATH, where\n"
		"`livemig incoming` listens), shows progress on a terminal (percent done,\n"
		"elapsed, ETA, bytes sent), and prints the final report.\n"
		"\n"
		"The parameter options below apply to this migration only: the VM's values\n"
		"(migrate-set-parameters) are put back once it has started, or failed to.\n"
		"(QEMU's parameters persist; use the control socket for that.)\n"
		"\n"
		"Ctrl-C: on a terminal, asks whether to cancel the migration (a second Ctrl-C\n"
		"cancels); otherwise cancels it. Either way the outcome is reported: cancelled,\n"
		"or completed anyway when the cancel came too late.\n"
		"\n"
		"Exits 0 when the migration completed and verified, 1 when it failed or was\n"
		"cancelled (the VM then keeps running at the source), 2 for bad usage, 3 when\n"
		"the commit is unconfirmed (the destination may run the guest; the source keeps\n"
		"its copy paused) or post-copy broke off (the source keeps its copy paused, as\n"
		"the guest was at the switch), 4 when the completeness check found pages that differ (the\n"
		"source keeps its paused copy, the right one). The source process (livemig run\n"
		"or incoming) then exits %d after a completed migration.\n"
		"\n"
		"options:\n"
		"  --control PATH              the source VM's control socket (required)\n"
		"  --to URI                    the destination (required)\n"
		"  --timeout SEC               cancel the migration if it has not ended by then\n"
		"  --postcopy                  the same as --postcopy-ram: allow post-copy. From the\n"
		"                              switch until its last page the guest's memory is on\n"
		"                              both hosts: if the source dies then, the guest is lost\n"
		"  --channels N                the same as --multifd-channels N: page data on N\n"
		"                              connections (the destination must accept them)\n"
		"  --resume                    continue a post-copy whose connection broke\n"
		"                              (postcopy-paused) over a new connection to URI\n"
		"  --json                      print the final report as JSON\n"
		"  -q, --quiet                 no progress line\n"
		"  --list-parameters[=man]     the parameters as a Markdown table (docs/cli.md),\n"
		"                              or for the man page (docs/livemig.1)\n"
		"  -h, --help                  this text\n"
		"\n"
		"parameters (RATE: bytes/s, 64K, 100M, 2G, or bits: 1Gbit):\n",
		LM_CLI_EXIT_MIGRATED);
	lm_cli_params_help(f);
}

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "livemig migrate: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see livemig migrate --help)\n");
	return 2;
}

/* Bounds each wait for a reply on the control socket. */
#define CALL_TIMEOUT_S 30.0

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The first MIGRATION event (the final stats), whichever wait reads it. */
static void keep_migration_event(struct lm_qmp *q, const char *name, struct json_object *ev,
				 void *arg)
{
	struct json_object **event = arg;
	if (!*event && !strcmp(name, "MIGRATION"))
		*event = json_object_get(ev);
}

static int64_t get_i(struct json_object *o, const char *k)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static const char *get_s(struct json_object *o, const char *k)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

/*
 * The link rate, measured here from the bytes the source reports, so it is
 * live during round one too: over the last RATE_WINDOW_S of polls, because
 * the source's figure moves in steps (a megabyte flush at a time, which
 * takes a second on a 1 MiB/s link).
 */
#define RATE_WINDOW_S 5.0
#define RATE_SAMPLES 64
struct rate {
	double t[RATE_SAMPLES];
	int64_t bytes[RATE_SAMPLES];
	unsigned n; /* samples taken (the last RATE_SAMPLES kept) */
};

static double rate_add(struct rate *r, double t, int64_t bytes)
{
	r->t[r->n % RATE_SAMPLES] = t;
	r->bytes[r->n % RATE_SAMPLES] = bytes;
	r->n++;
	/* The oldest sample kept that is still within the window. */
	unsigned first = r->n > RATE_SAMPLES ? r->n - RATE_SAMPLES : 0, i = first;
	while (i + 1 < r->n && t - r->t[i % RATE_SAMPLES] > RATE_WINDOW_S)
		i++;
	double dt = t - r->t[i % RATE_SAMPLES];
	int64_t db = bytes - r->bytes[i % RATE_SAMPLES];
	return dt > 0.1 && db >= 0 ? (double)db / dt : 0;
}

/* One progress line, over the last one. */
static void progress(struct json_object *st, struct rate *r)
{
	struct json_object *ram = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	double rate = rate_add(r, now_s(), get_i(ram, "transferred"));
	char line[512];
	lm_cli_progress_line(st, rate, line, sizeof(line));
	fprintf(stderr, "\r\033[K%s", line);
	fflush(stderr);
}

static bool final_status(const char *s)
{
	return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled") ||
	       !strcmp(s, "unconfirmed") || !strcmp(s, "postcopy-paused");
}

/* ---- Ctrl-C --------------------------------------------------------------- */

static volatile sig_atomic_t sigints;

static void on_sigint(int sig)
{
	(void)sig;
	sigints++;
}

/* Not SA_RESTART: a wait in progress returns early and the loop looks. */
static void catch_sigint(void)
{
	struct sigaction sa = {.sa_handler = on_sigint};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
}

/* The line typed on the terminal after the question: 1 yes, 0 no, -1 none yet. */
static int answer(void)
{
	struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
	if (poll(&p, 1, 0) <= 0)
		return -1;
	char buf[64];
	ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
	if (n < 0)
		return -1;
	return n > 0 && (buf[0] == 'y' || buf[0] == 'Y');
}

/* ---- parameters ------------------------------------------------------------ */

/*
 * The VM's current values of the keys in params, to put back after
 * `migrate`. NULL (after saying why) when they cannot be read: then
 * nothing is set either.
 */
static struct json_object *save_params(struct lm_qmp *cl, struct json_object *params)
{
	struct json_object *cur = NULL;
	if (lm_qmp_exec(cl, "query-migrate-parameters", NULL, CALL_TIMEOUT_S, &cur) < 0) {
		fprintf(stderr, "livemig migrate: query-migrate-parameters: %s\n", lm_qmp_error(cl));
		return NULL;
	}
	struct json_object *saved = json_object_new_object();
	json_object_object_foreach(params, key, val)
	{
		(void)val;
		struct json_object *v;
		if (!json_object_object_get_ex(cur, key, &v)) {
			fprintf(stderr, "livemig migrate: the VM has no parameter '%s' (query-migrate-parameters)\n",
				key);
			json_object_put(saved);
			saved = NULL;
			break;
		}
		json_object_object_add(saved, key, json_object_get(v));
	}
	json_object_put(cur);
	return saved;
}

static void restore_params(struct lm_qmp *cl, struct json_object **saved)
{
	if (!*saved)
		return;
	if (lm_qmp_exec(cl, "migrate-set-parameters", *saved, CALL_TIMEOUT_S, NULL) < 0)
		fprintf(stderr,
			"livemig migrate: warning: could not put the VM's parameters back (%s): they are now "
			"as this command set them\n",
			lm_qmp_error(cl));
	*saved = NULL; /* consumed */
}

/* ---- the command ------------------------------------------------------------ */

#define MAX_PARAMS 32
enum { O_CONTROL = 256, O_TO, O_JSON, O_TIMEOUT, O_LIST, O_POSTCOPY, O_RESUME, O_CHANNELS, O_PARAM = 512,
       O_NO_PARAM = 768 };

int lm_cli_migrate(int argc, char **argv)
{
	static const struct option fixed[] = {
	    {"control", required_argument, NULL, O_CONTROL},
	    {"to", required_argument, NULL, O_TO},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"json", no_argument, NULL, O_JSON},
	    {"list-parameters", optional_argument, NULL, O_LIST},
	    {"postcopy", no_argument, NULL, O_POSTCOPY},
	    {"resume", no_argument, NULL, O_RESUME},
	    {"channels", required_argument, NULL, O_CHANNELS},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	};
	/* The fixed options, then --NAME for every parameter and --no-NAME
	 * for every boolean one. */
	struct option opts[sizeof(fixed) / sizeof(fixed[0]) + 2 * MAX_PARAMS + 1];
	char nonames[MAX_PARAMS][64];
	size_t no = 0;
	memcpy(opts, fixed, sizeof(fixed));
	no = sizeof(fixed) / sizeof(fixed[0]);
	for (size_t i = 0; i < lm_cli_nparams && i < MAX_PARAMS; i++) {
		const struct lm_cli_param *d = &lm_cli_params[i];
		bool b = d->type == LM_PARAM_BOOL;
		opts[no++] = (struct option){d->name, b ? no_argument : required_argument, NULL, O_PARAM + (int)i};
		if (b) {
			snprintf(nonames[i], sizeof(nonames[i]), "no-%s", d->name);
			opts[no++] = (struct option){nonames[i], no_argument, NULL, O_NO_PARAM + (int)i};
		}
	}
	opts[no] = (struct option){NULL, 0, NULL, 0};

	const char *control = NULL, *to = NULL;
	bool json = false, quiet = false, resume = false;
	double timeout = 0;
	struct json_object *params = json_object_new_object(), *saved = NULL;
	int c, ret = 2;
	char *end, err[256];

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":qh", opts, NULL)) != -1) {
		if (c >= O_PARAM && c < O_PARAM + MAX_PARAMS) {
			const struct lm_cli_param *d = &lm_cli_params[c - O_PARAM];
			int64_t v = 1;
			if (d->type != LM_PARAM_BOOL && lm_cli_param_parse(d, optarg, &v, err, sizeof(err)) < 0) {
				ret = bad("%s", err);
				goto out;
			}
			json_object_object_add(params, d->name, lm_cli_param_to_json(d, v));
			continue;
		}
		if (c >= O_NO_PARAM && c < O_NO_PARAM + MAX_PARAMS) {
			const struct lm_cli_param *d = &lm_cli_params[c - O_NO_PARAM];
			json_object_object_add(params, d->name, lm_cli_param_to_json(d, 0));
			continue;
		}
		switch (c) {
		case O_CONTROL: control = optarg; break;
		case O_POSTCOPY:
			json_object_object_add(params, "postcopy-ram", json_object_new_boolean(1));
			break;
		case O_RESUME: resume = true; break;
		case O_CHANNELS: {
			const struct lm_cli_param *d = lm_cli_param_find("multifd-channels");
			int64_t v;
			if (lm_cli_param_parse(d, optarg, &v, err, sizeof(err)) < 0) {
				ret = bad("%s", err);
				goto out;
			}
			json_object_object_add(params, d->name, lm_cli_param_to_json(d, v));
			break;
		}
		case O_TO: to = optarg; break;
		case O_TIMEOUT:
			timeout = strtod(optarg, &end);
			if (*end || end == optarg || timeout <= 0) {
				ret = bad("bad --timeout '%s' (seconds)", optarg);
				goto out;
			}
			break;
		case O_JSON: json = true; break;
		case O_LIST:
			if (optarg && strcmp(optarg, "markdown") && strcmp(optarg, "man")) {
				ret = bad("bad --list-parameters=%s (markdown or man)", optarg);
				goto out;
			}
			if (optarg && !strcmp(optarg, "man"))
				lm_cli_params_troff(stdout);
			else
				lm_cli_params_markdown(stdout);
			ret = 0;
			goto out;
		case 'q': quiet = true; break;
		case 'h':
			usage(stdout);
			ret = 0;
			goto out;
		case ':':
			ret = bad("option '%s' needs a value", argv[optind - 1]);
			goto out;
		default:
			ret = bad("unknown option '%s'", argv[optind - 1]);
			goto out;
		}
	}
	if (optind < argc) {
		ret = bad("unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (!control || !to) {
		ret = bad("%s", !control ? "--control PATH is required" : "--to URI is required");
		goto out;
	}
	if (resume && json_object_object_length(params) > 0) {
		ret = bad("%s", "--resume takes no parameters: the paused post-copy goes on with its own");
		goto out;
	}
	struct lm_uri uri;
	if (lm_cli_uri_parse(to, &uri, err, sizeof(err)) < 0) {
		ret = bad("--to: %s", err);
		goto out;
	}

	ret = 1;
	struct json_object *event = NULL;
	struct lm_qmp *cl = lm_qmp_new();
	if (!cl) {
		fprintf(stderr, "livemig migrate: out of memory\n");
		goto out;
	}
	lm_qmp_set_event_cb(cl, keep_migration_event, &event);
	int r = lm_qmp_connect(cl, control, 0, 5.0);
	if (r == -ENAMETOOLONG) {
		ret = bad("%s", lm_qmp_error(cl));
		goto out_fd;
	}
	if (r < 0) {
		fprintf(stderr, "livemig migrate: %s\n", lm_qmp_error(cl));
		goto out_fd;
	}
	/* From here Ctrl-C is ours: before `migrate` it stops us with
	 * nothing changed, after it it is about the migration. */
	catch_sigint();
	if (json_object_object_length(params) > 0) {
		if (!(saved = save_params(cl, params)))
			goto out_fd;
		if (lm_qmp_exec(cl, "migrate-set-parameters", json_object_get(params), CALL_TIMEOUT_S, NULL) < 0) {
			fprintf(stderr, "livemig migrate: migrate-set-parameters: %s\n", lm_qmp_error(cl));
			json_object_put(saved); /* nothing was set: a bad request changes nothing */
			saved = NULL;
			goto out_fd;
		}
	}
	if (sigints) {
		restore_params(cl, &saved);
		fprintf(stderr, "livemig migrate: interrupted before the migration started; nothing changed\n");
		goto out_fd;
	}
	struct json_object *pc;
	if (!quiet && json_object_object_get_ex(params, "postcopy-ram", &pc) && json_object_get_boolean(pc))
		fprintf(stderr, "livemig migrate: post-copy allowed: once it switches, the guest runs on the "
				"destination while its last pages are still here; if this source dies before they "
				"are all sent, THE GUEST IS LOST\n");
	struct json_object *margs = json_object_new_object();
	json_object_object_add(margs, "uri", json_object_new_string(to));
	if (resume)
		json_object_object_add(margs, "resume", json_object_new_boolean(1));
	r = lm_qmp_exec(cl, "migrate", margs, CALL_TIMEOUT_S, NULL);
	/* Started or not, the migration has its parameters now. */
	restore_params(cl, &saved);
	if (r < 0) {
		fprintf(stderr, "livemig migrate: %s\n", lm_qmp_error(cl));
		goto out_fd;
	}

	bool tty = !quiet && isatty(STDERR_FILENO);
	bool ask = isatty(STDIN_FILENO) && isatty(STDERR_FILENO);
	double start = now_s();
	const char *cancel_why = NULL; /* set once migrate-cancel went out */
	bool asking = false;
	int seen_sigints = 0;
	struct json_object *final = NULL;
	struct rate rate = {0};
	while (!final) {
		if (event) {
			final = json_object_get(json_object_object_get(event, "data"));
			break;
		}
		const char *want_cancel = NULL;
		if (sigints != seen_sigints) {
			seen_sigints = sigints;
			if (cancel_why)
				; /* cancelling already: wait for the end */
			else if (!ask || asking)
				want_cancel = "Ctrl-C";
			else {
				fprintf(stderr, "%slivemig migrate: cancel the migration? [y/N] (Ctrl-C again: cancel) ",
					tty ? "\n" : "");
				fflush(stderr);
				asking = true;
			}
		}
		if (asking && !want_cancel) {
			int a = answer();
			if (a == 1)
				want_cancel = "Ctrl-C";
			else if (a == 0) {
				fprintf(stderr, "livemig migrate: not cancelled; the migration goes on\n");
				asking = false;
			}
		}
		if (!want_cancel && timeout > 0 && !cancel_why && now_s() - start > timeout)
			want_cancel = "--timeout";
		if (want_cancel) {
			if (asking || tty)
				fprintf(stderr, "\n");
			asking = false;
			fprintf(stderr, "livemig migrate: %s: cancelling the migration\n",
				!strcmp(want_cancel, "--timeout") ? "--timeout reached" : "interrupted (Ctrl-C)");
			if (lm_qmp_exec(cl, "migrate-cancel", NULL, CALL_TIMEOUT_S, NULL) < 0)
				fprintf(stderr, "livemig migrate: migrate-cancel: %s\n", lm_qmp_error(cl));
			cancel_why = want_cancel;
		}
		struct json_object *st = NULL;
		r = lm_qmp_exec(cl, "query-migrate", NULL, CALL_TIMEOUT_S, &st);
		if (r < 0 && r != -EREMOTEIO && r != -EINTR)
			break; /* the source went away (its last event read on the way) */
		if (st && final_status(get_s(st, "status")) && !event) {
			/* Finished: the MIGRATION event with the same stats follows;
			 * the stats in hand are as good. */
			final = json_object_get(st);
		} else if (st && tty && !asking && json_object_object_length(st) > 0) {
			progress(st, &rate);
		}
		json_object_put(st);
		if (!final && !event) {
			r = lm_qmp_wait_event(cl, "MIGRATION", 0.2, NULL);
			if (r < 0 && r != -ETIMEDOUT && r != -EINTR)
				break;
		}
	}
	if (!final && event)
		final = json_object_get(json_object_object_get(event, "data"));
	if (tty || asking)
		fprintf(stderr, "\n");
	if (!final) {
		fprintf(stderr, "livemig migrate: the source closed its control socket before the migration ended\n");
		json_object_put(event);
		goto out_fd;
	}
	const char *status = get_s(final, "status");
	if (json)
		printf("%s\n", json_object_to_json_string_ext(final, JSON_C_TO_STRING_PRETTY));
	else
		lm_cli_print_report(stdout, final);
	struct json_object *vobj;
	const char *vstatus = json_object_object_get_ex(final, "verify", &vobj) ? get_s(vobj, "status") : "";
	if (cancel_why && !strcmp(status, "cancelled"))
		fprintf(stderr, "livemig migrate: cancelled (%s); the VM runs on at the source\n", cancel_why);
	else if (cancel_why)
		fprintf(stderr, "livemig migrate: the cancel (%s) came too late: the migration ended %s anyway\n",
			cancel_why, status);
	if (!strcmp(status, "completed") && !strcmp(vstatus, "mismatch")) {
		fprintf(stderr, "livemig migrate: migration completed, but VERIFY FAILED: pages of the paused "
				"source differ from what reached the destination (see verify above); the source "
				"keeps its paused copy\n");
		ret = 4;
	} else if (!strcmp(status, "completed")) {
		ret = 0;
	} else if (!strcmp(status, "postcopy-paused")) {
		fprintf(stderr,
			"livemig migrate: %s\n"
			"livemig migrate: the guest runs on the destination and waits for the pages still here. "
			"Reconnect with `livemig migrate --resume --control %s --to URI` (the destination's "
			"--listen address); `livemig cancel --control %s` gives up (this copy stays paused, "
			"the guest as it was at the switch)\n",
			get_s(final, "error-desc"), control, control);
		ret = 3;
	} else if (!strcmp(status, "unconfirmed")) {
		fprintf(stderr, "livemig migrate: %s\n", get_s(final, "error-desc"));
		ret = 3;
	} else {
		const char *why = get_s(final, "error-desc");
		fprintf(stderr, "livemig migrate: migration %s%s%s\n", status, *why ? ": " : "", why);
	}
	json_object_put(final);
	json_object_put(event);
out_fd:
	json_object_put(saved);
	lm_qmp_free(cl);
out:
	json_object_put(params);
	return ret;
}
