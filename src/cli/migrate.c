/*
 * livemig migrate: ask a running VM (through its control socket) to migrate
 * to a destination, show progress while it runs, and print the report.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig migrate --control PATH --to URI [options]\n"
		"\n"
		"Asks the VM served at control socket PATH (livemig run/incoming --control)\n"
		"to migrate live to URI (tcp:HOST:PORT or unix:PATH, where `livemig incoming`\n"
		"listens), shows progress on a terminal, and prints the final report.\n"
		"Exits 0 when the migration completed and verified, 1 when it failed or was\n"
		"cancelled (the VM then keeps running at the source), 2 for bad usage, 3 when\n"
		"the commit is unconfirmed (the destination may run the guest; the source keeps\n"
		"its copy paused), 4 when the completeness check found pages that differ (the\n"
		"source keeps its paused copy, the right one).\n"
		"\n"
		"options:\n"
		"  --control PATH            the source VM's control socket (required)\n"
		"  --to URI                  the destination (required)\n"
		"  --downtime-limit MS       target pause in ms (default 300)\n"
		"  --max-bandwidth RATE      e.g. 100M (bytes/s) or 1Gbit; 0 = unlimited (default)\n"
		"  --max-rounds N            pre-copy rounds before giving up converging (default 30)\n"
		"  --max-time MS             pre-copy time before giving up converging (default none)\n"
		"  --on-nonconverge WHAT     switchover (default) or cancel\n"
		"  --compress                offer zstd compression of page data\n"
		"  --verify full|digest|none full (default): the RAM digest, then the paused source\n"
		"                            compared page by page with what was sent (after the\n"
		"                            switchover, not in the pause); digest: the digest only;\n"
		"                            none: per-frame checksums only, if the destination\n"
		"                            accepts that (else as digest)\n"
		"  --no-skip-balloon         send ballooned pages as ordinary pages (skip-balloon\n"
		"                            is on by default when the guest promised must-tell-host)\n"
		"  --timeout SEC             cancel the migration if it has not ended by then\n"
		"  --idle-timeout MS         fail when the destination reads or sends nothing for MS ms\n"
		"                            (default 10000; 0: never)\n"
		"  --json                    print the final report as JSON\n"
		"  -q, --quiet               no progress line\n"
		"  -h, --help                this text\n");
}

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "livemig migrate: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see livemig migrate --help)\n");
	return 2;
}

/* A line-oriented JSON client of the control socket. */
struct client {
	int fd;
	char buf[65536];
	size_t len;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Next complete line as a parsed object; NULL with *eof set on EOF/error,
 * NULL without it on timeout. */
static struct json_object *read_obj(struct client *c, int timeout_ms, bool *eof)
{
	double deadline = now_s() + timeout_ms / 1000.0;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			*nl = 0;
			struct json_object *o = json_tokener_parse(c->buf);
			size_t used = (size_t)(nl - c->buf) + 1;
			memmove(c->buf, nl + 1, c->len - used);
			c->len -= used;
			if (o)
				return o;
			continue; /* not JSON: ignore the line */
		}
		if (c->len == sizeof(c->buf)) {
			*eof = true; /* a line longer than any reply we know */
			return NULL;
		}
		int left = (int)((deadline - now_s()) * 1000);
		if (left < 0)
			return NULL;
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return NULL;
		ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
		if (n <= 0) {
			*eof = true;
			return NULL;
		}
		c->len += (size_t)n;
	}
}

static int send_cmd(struct client *c, const char *name, struct json_object *args)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "execute", json_object_new_string(name));
	if (args)
		json_object_object_add(o, "arguments", args);
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	int err = 0;
	if (write(c->fd, s, len) != (ssize_t)len || write(c->fd, "\n", 1) != 1)
		err = -errno ? -errno : -EIO;
	json_object_put(o);
	return err;
}

/* Send a command and wait for its reply (events in between are returned
 * through on_event). Returns the reply object (caller puts it) or NULL. */
static struct json_object *call(struct client *c, const char *name, struct json_object *args,
				struct json_object **event)
{
	if (send_cmd(c, name, args) < 0)
		return NULL;
	for (;;) {
		bool eof = false;
		struct json_object *o = read_obj(c, 30000, &eof);
		if (!o)
			return NULL;
		struct json_object *v;
		if (json_object_object_get_ex(o, "event", &v)) {
			if (event && !*event && !strcmp(json_object_get_string(v), "MIGRATION"))
				*event = o;
			else
				json_object_put(o);
			continue;
		}
		return o;
	}
}

static const char *error_desc(struct json_object *reply)
{
	struct json_object *e, *d;
	if (reply && json_object_object_get_ex(reply, "error", &e) &&
	    json_object_object_get_ex(e, "desc", &d))
		return json_object_get_string(d);
	return NULL;
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

/* One progress line. The link rate is measured here, from the bytes the
 * source reports between two polls, so it is live during round one too. */
static void progress(struct json_object *st, double *last_t, int64_t *last_bytes)
{
	struct json_object *ram = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	int64_t bytes = get_i(ram, "transferred");
	double t = now_s(), mbit = 0;
	if (*last_t > 0 && t > *last_t && bytes >= *last_bytes)
		mbit = (double)(bytes - *last_bytes) * 8 / 1e6 / (t - *last_t);
	*last_t = t;
	*last_bytes = bytes;
	fprintf(stderr,
		"\r\033[K%-9s round %-3lld remaining %8.1f MiB  dirty %7lld pages/s  %8.1f Mbit/s  "
		"expected downtime %lld ms",
		get_s(st, "status"), (long long)get_i(ram, "rounds"),
		(double)get_i(ram, "remaining") / 1048576.0, (long long)get_i(ram, "dirty-pages-rate"),
		mbit, (long long)get_i(st, "expected-downtime"));
	fflush(stderr);
}

/* The report: every key of the stats object, nested objects flattened. */
static void print_table(struct json_object *o, const char *prefix)
{
	json_object_object_foreach(o, key, val)
	{
		char name[128];
		snprintf(name, sizeof(name), "%s%s", prefix, key);
		if (json_object_is_type(val, json_type_object)) {
			char p[sizeof(name) + 2];
			snprintf(p, sizeof(p), "%s.", name);
			print_table(val, p);
		} else {
			printf("  %-26s %s\n", name, json_object_get_string(val));
		}
	}
}

static bool final_status(const char *s)
{
	return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled") ||
	       !strcmp(s, "unconfirmed");
}

int lm_cli_migrate(int argc, char **argv)
{
	enum { O_CONTROL = 256, O_TO, O_DOWNTIME, O_BW, O_ROUNDS, O_TIME, O_NONCONV, O_COMPRESS,
	       O_JSON, O_TIMEOUT, O_NO_SKIP_BALLOON, O_IDLE, O_VERIFY };
	static const struct option opts[] = {
	    {"control", required_argument, NULL, O_CONTROL},
	    {"to", required_argument, NULL, O_TO},
	    {"downtime-limit", required_argument, NULL, O_DOWNTIME},
	    {"max-bandwidth", required_argument, NULL, O_BW},
	    {"max-rounds", required_argument, NULL, O_ROUNDS},
	    {"max-time", required_argument, NULL, O_TIME},
	    {"on-nonconverge", required_argument, NULL, O_NONCONV},
	    {"compress", no_argument, NULL, O_COMPRESS},
	    {"no-skip-balloon", no_argument, NULL, O_NO_SKIP_BALLOON},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"idle-timeout", required_argument, NULL, O_IDLE},
	    {"verify", required_argument, NULL, O_VERIFY},
	    {"json", no_argument, NULL, O_JSON},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *control = NULL, *to = NULL;
	bool json = false, quiet = false;
	double timeout = 0;
	struct json_object *params = json_object_new_object();
	int c, ret = 2;
	char *end;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":qh", opts, NULL)) != -1) {
		uint64_t v;
		long long n;
		switch (c) {
		case O_CONTROL: control = optarg; break;
		case O_TO: to = optarg; break;
		case O_DOWNTIME:
			n = strtoll(optarg, &end, 10);
			if (*end || end == optarg || n < 1 || n > 2000000) {
				ret = bad("bad --downtime-limit '%s' (milliseconds, 1..2000000)", optarg);
				goto out;
			}
			json_object_object_add(params, "downtime-limit", json_object_new_int64(n));
			break;
		case O_BW:
			if (lm_cli_parse_rate(optarg, &v) < 0 || v > INT64_MAX) {
				ret = bad("bad --max-bandwidth '%s' (e.g. 100M, 1Gbit, 0)", optarg);
				goto out;
			}
			json_object_object_add(params, "max-bandwidth", json_object_new_int64((int64_t)v));
			break;
		case O_ROUNDS:
			n = strtoll(optarg, &end, 10);
			if (*end || end == optarg || n < 1 || n > 100000) {
				ret = bad("bad --max-rounds '%s' (1..100000)", optarg);
				goto out;
			}
			json_object_object_add(params, "max-rounds", json_object_new_int64(n));
			break;
		case O_TIME:
			n = strtoll(optarg, &end, 10);
			if (*end || end == optarg || n < 0) {
				ret = bad("bad --max-time '%s' (milliseconds)", optarg);
				goto out;
			}
			json_object_object_add(params, "max-time", json_object_new_int64(n));
			break;
		case O_NONCONV:
			if (strcmp(optarg, "switchover") && strcmp(optarg, "cancel")) {
				ret = bad("bad --on-nonconverge '%s' (switchover or cancel)", optarg);
				goto out;
			}
			json_object_object_add(params, "on-nonconverge", json_object_new_string(optarg));
			break;
		case O_COMPRESS:
			json_object_object_add(params, "compress", json_object_new_boolean(true));
			break;
		case O_VERIFY:
			if (strcmp(optarg, "full") && strcmp(optarg, "digest") && strcmp(optarg, "none")) {
				ret = bad("bad --verify '%s' (full, digest or none)", optarg);
				goto out;
			}
			json_object_object_add(params, "verify", json_object_new_string(optarg));
			break;
		case O_NO_SKIP_BALLOON:
			json_object_object_add(params, "skip-balloon", json_object_new_boolean(false));
			break;
		case O_TIMEOUT:
			timeout = strtod(optarg, &end);
			if (*end || end == optarg || timeout <= 0) {
				ret = bad("bad --timeout '%s' (seconds)", optarg);
				goto out;
			}
			break;
		case O_IDLE:
			n = strtoll(optarg, &end, 10);
			if (*end || end == optarg || n < 0 || n > INT32_MAX) {
				ret = bad("bad --idle-timeout '%s' (milliseconds, 0: never)", optarg);
				goto out;
			}
			json_object_object_add(params, "idle-timeout", json_object_new_int64(n));
			break;
		case O_JSON: json = true; break;
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

	struct client cl = {.fd = -1};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(control) >= sizeof(sa.sun_path)) {
		ret = bad("control socket path too long: %s", control);
		goto out;
	}
	strcpy(sa.sun_path, control);
	ret = 1;
	cl.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cl.fd < 0 || connect(cl.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "livemig migrate: cannot connect to %s: %s\n", control, strerror(errno));
		goto out_fd;
	}
	bool eof = false;
	struct json_object *greeting = read_obj(&cl, 5000, &eof);
	if (!greeting) {
		fprintf(stderr, "livemig migrate: %s did not greet us\n", control);
		goto out_fd;
	}
	json_object_put(greeting);

	struct json_object *event = NULL, *reply;
	if (json_object_object_length(params) > 0) {
		reply = call(&cl, "migrate-set-parameters", json_object_get(params), &event);
		if (!reply || error_desc(reply)) {
			fprintf(stderr, "livemig migrate: migrate-set-parameters: %s\n",
				reply ? error_desc(reply) : "no reply");
			json_object_put(reply);
			goto out_fd;
		}
		json_object_put(reply);
	}
	struct json_object *margs = json_object_new_object();
	json_object_object_add(margs, "uri", json_object_new_string(to));
	reply = call(&cl, "migrate", margs, &event);
	if (!reply || error_desc(reply)) {
		fprintf(stderr, "livemig migrate: %s\n", reply ? error_desc(reply) : "no reply to migrate");
		json_object_put(reply);
		goto out_fd;
	}
	json_object_put(reply);

	bool tty = !quiet && isatty(STDERR_FILENO);
	double start = now_s();
	bool cancelled = false;
	struct json_object *final = NULL;
	double last_t = 0;
	int64_t last_bytes = 0;
	while (!final) {
		if (event) {
			final = json_object_get(json_object_object_get(event, "data"));
			break;
		}
		if (timeout > 0 && !cancelled && now_s() - start > timeout) {
			fprintf(stderr, "%slivemig migrate: --timeout reached, cancelling\n", tty ? "\n" : "");
			reply = call(&cl, "migrate-cancel", NULL, &event);
			json_object_put(reply);
			cancelled = true;
		}
		reply = call(&cl, "query-migrate", NULL, &event);
		if (!reply)
			break; /* the source went away; an event may still be buffered */
		struct json_object *st = json_object_object_get(reply, "return");
		if (st && final_status(get_s(st, "status")) && !event) {
			/* Finished: the MIGRATION event with the same stats follows;
			 * the stats in hand are as good. */
			final = json_object_get(st);
		} else if (st && tty && json_object_object_length(st) > 0) {
			progress(st, &last_t, &last_bytes);
		}
		json_object_put(reply);
		if (!final && !event) {
			struct json_object *o = read_obj(&cl, 200, &eof);
			if (o) {
				struct json_object *v;
				if (json_object_object_get_ex(o, "event", &v) &&
				    !strcmp(json_object_get_string(v), "MIGRATION"))
					event = o;
				else
					json_object_put(o);
			} else if (eof) {
				break;
			}
		}
	}
	if (tty)
		fprintf(stderr, "\n");
	if (!final) {
		fprintf(stderr, "livemig migrate: the source closed its control socket before the migration ended\n");
		json_object_put(event);
		goto out_fd;
	}
	const char *status = get_s(final, "status");
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(final, JSON_C_TO_STRING_PRETTY));
	} else {
		printf("migration %s\n", status);
		print_table(final, "");
	}
	struct json_object *vobj;
	const char *vstatus = json_object_object_get_ex(final, "verify", &vobj) ? get_s(vobj, "status") : "";
	if (!strcmp(status, "completed") && !strcmp(vstatus, "mismatch")) {
		fprintf(stderr, "livemig migrate: migration completed, but VERIFY FAILED: pages of the paused "
				"source differ from what reached the destination (see verify above); the source "
				"keeps its paused copy\n");
		ret = 4;
	} else if (!strcmp(status, "completed")) {
		ret = 0;
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
	if (cl.fd >= 0)
		close(cl.fd);
out:
	json_object_put(params);
	return ret;
}
