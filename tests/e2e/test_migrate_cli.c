/*
 * End-to-end: the `livemig migrate` command line and what it tells its
 * user (issue 13, part B).
 *
 * - Parameters: the flags apply to one migration and are put back after
 *   it, also when it fails to start; every boolean has a --no- form; the
 *   parameter list in docs/cli.md is the one `--list-parameters` prints.
 * - Connecting: `migrate` returns at once and connects in the migration's
 *   own thread. A destination that drops SYNs (a veth pair between two
 *   network namespaces made here, the destination's address resolved to a
 *   MAC nobody has, so every frame vanishes) does not stall the control
 *   socket: it answers query-migrate ("setup") meanwhile, connect-timeout
 *   fails the migration with "Connection timed out after 2 s", and
 *   --timeout and `livemig cancel` cancel it while it connects.
 * - Errors that say what is wrong: an unknown host (getaddrinfo's words),
 *   a UNIX path too long for sockaddr_un, --append too long, a directory
 *   as the guest image, an IPv6 listener printed as tcp:[::1]:PORT (and
 *   a migration to that URI).
 * - `livemig status`, `livemig cancel`, Ctrl-C on `livemig migrate`
 *   without a terminal (it cancels and says so), exit codes: the source
 *   exits LM_CLI_EXIT_MIGRATED after migrating away, 0 after a power-off.
 *
 * Deadlines only turn a hang into a failure; nothing here judges how long
 * anything took. Bandwidth caps only make migrations last long enough to be
 * cancelled.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "support/live.h"
#include "support/live_assert.h"

static int group_setup(void **state)
{
	lm_live_setup("migrate-cli");
	return 0;
}

/* A small guest that keeps writing (2.5k pages/s) and checks itself. */
#define GUEST_MEM "64M"
#define WRITER "workload=hotset mem=32M wss=8M rate=10M verify=1 progress=250"

/* ---- helpers ------------------------------------------------------------- */

/* Runs `livemig ARGS...` to its end; *rc its status, the return value its
 * stdout and stderr (free it). */
static char *run_cli(const char *const *args, int *rc)
{
	static unsigned seq;
	const char *out = lm_live_path("cli-%u.out", seq++);
	char path[256];
	snprintf(path, sizeof(path), "%s", out);
	pid_t pid = lm_live_spawn(path, NULL, args);
	assert_true(pid > 0);
	*rc = lm_live_wait(pid, LM_LIVE_DEADLINE_S);
	char *t = lm_live_slurp(path);
	lm_live_log("livemig %s ... exit %d\n%s", args[0], *rc, t);
	return t;
}

static void expect_in(const char *text, const char *needle)
{
	if (!strstr(text, needle))
		fprintf(stderr, "expected \"%s\" in:\n%s\n", needle, text);
	assert_non_null(strstr(text, needle));
}

static void expect_not_in(const char *text, const char *needle)
{
	if (strstr(text, needle))
		fprintf(stderr, "did not expect \"%s\" in:\n%s\n", needle, text);
	assert_null(strstr(text, needle));
}

/* The "return" member of a reply to req on vm's control socket (put it). */
static struct json_object *vm_return(struct lm_live_vm *vm, const char *req)
{
	static char reply[65536];
	lm_live_expect_ok(lm_live_expect_vm_ctl(vm), req, reply, sizeof(reply));
	struct json_object *o = json_tokener_parse(reply), *r = NULL;
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "return", &r));
	json_object_get(r);
	json_object_put(o);
	return r;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

static int64_t jint(struct json_object *o, const char *k)
{
	struct json_object *v;
	assert_true(json_object_object_get_ex(o, k, &v));
	return json_object_get_int64(v);
}

static void expect_same_json(struct json_object *a, struct json_object *b)
{
	const char *sa = json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN);
	char copy[4096];
	snprintf(copy, sizeof(copy), "%s", sa);
	const char *sb = json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN);
	if (!json_object_equal(a, b))
		fprintf(stderr, "expected %s\n     got %s\n", copy, sb);
	assert_true(json_object_equal(a, b));
}

/* The finished migration's --json report. */
static struct json_object *mig_report(struct lm_live_mig *m)
{
	struct json_object *o = json_tokener_parse(m->json);
	if (!o)
		fprintf(stderr, "no JSON report (exit %d):\n%s%s", m->rc, m->json, m->errtext);
	assert_non_null(o);
	return o;
}

/* Polls query-migrate until its status is want (or the migration ended:
 * returns its status then); every poll must be answered. */
static void wait_migration_status(struct lm_live_vm *vm, const char *want, char *got, size_t gotlen)
{
	double end = lm_live_now() + LM_LIVE_DEADLINE_S;
	/* The last migration's end is what query-migrate says until the new
	 * `migrate` has arrived: the new one has a smaller total-time. */
	struct json_object *st = vm_return(vm, "{\"execute\":\"query-migrate\"}");
	struct json_object *tt;
	int64_t stale = json_object_object_get_ex(st, "total-time", &tt) ? json_object_get_int64(tt) : -1;
	char old[32];
	snprintf(old, sizeof(old), "%s", jstr(st, "status"));
	json_object_put(st);
	for (;;) {
		st = vm_return(vm, "{\"execute\":\"query-migrate\"}");
		snprintf(got, gotlen, "%s", jstr(st, "status"));
		bool same = json_object_object_get_ex(st, "total-time", &tt) && json_object_get_int64(tt) == stale &&
			    !strcmp(got, old);
		json_object_put(st);
		if (!same && (!strcmp(got, want) || !strcmp(got, "failed") || !strcmp(got, "cancelled") ||
			      !strcmp(got, "completed")))
			return;
		if (lm_live_now() > end)
			return;
		lm_live_msleep(20);
	}
}

/* The migration m just started from src must reach "active" with some
 * bytes sent (the last migration's end, which query-migrate shows until
 * the new one has begun, does not count). */
static void expect_active(struct lm_live_vm *src, struct lm_live_mig *m)
{
	char status[32];
	wait_migration_status(src, "active", status, sizeof(status));
	double end = lm_live_now() + LM_LIVE_DEADLINE_S;
	while (!strcmp(status, "active") && lm_live_now() < end) {
		struct json_object *st = vm_return(src, "{\"execute\":\"query-migrate\"}"), *ram;
		snprintf(status, sizeof(status), "%s", jstr(st, "status"));
		bool enough = json_object_object_get_ex(st, "ram", &ram) && jint(ram, "transferred") >= 64 << 10;
		json_object_put(st);
		if (enough && !strcmp(status, "active"))
			return;
		lm_live_msleep(20);
	}
	lm_live_kill(m->pid, SIGKILL);
	lm_live_mig_finish(m);
	fprintf(stderr, "the migration did not become active (%s): exit %d\n%s%s", status, m->rc, m->json,
		m->errtext);
	fail();
}

/* ---- docs and usage ------------------------------------------------------- */

/* The part of file (in LM_SRCDIR) between the line begin and the line
 * end must be what `livemig ARGS` prints. */
static void expect_generated(const char *file, const char *begin, const char *end, const char *const *args)
{
	int rc;
	char *gen = run_cli(args, &rc);
	assert_int_equal(rc, 0);
	expect_in(gen, "connect");
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", getenv("LM_SRCDIR"), file);
	char *doc = lm_live_slurp(path);
	const char *b = strstr(doc, begin), *e = b ? strstr(b, end) : NULL;
	if (!b || !e)
		fprintf(stderr, "%s lacks the lines \"%s\" and \"%s\" around the parameters\n", file, begin, end);
	assert_true(b && e);
	b += strlen(begin);
	size_t n = (size_t)(e - b);
	if (n != strlen(gen) || memcmp(b, gen, n))
		fprintf(stderr, "%s's parameters differ from `livemig %s %s`:\n%.*s\n---\n%s", file, args[0],
			args[1], (int)n, b, gen);
	assert_true(n == strlen(gen) && !memcmp(b, gen, n));
	free(doc);
	free(gen);
}

/* docs/cli.md's parameter table and the man page's list are what
 * `--list-parameters` prints. */
static void test_docs_parameter_table(void **state)
{
	if (!lm_live_ready() || !getenv("LM_SRCDIR"))
		skip();
	const char *md[] = {"migrate", "--list-parameters", NULL};
	expect_generated("docs/cli.md", "<!-- parameters: livemig migrate --list-parameters -->\n",
			 "<!-- end of parameters -->", md);
	const char *man[] = {"migrate", "--list-parameters=man", NULL};
	expect_generated("docs/livemig.1", ".\\\" parameters: livemig migrate --list-parameters=man\n",
			 ".\\\" end of parameters", man);
}

/* Each bad argument gets a message that names what is wrong. */
static void test_error_messages(void **state)
{
	if (!lm_live_ready())
		skip();
	char longpath[160];
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[150] = 0;
	char to[200];
	snprintf(to, sizeof(to), "unix:%s", longpath);
	int rc;
	char *t;

	const char *a1[] = {"migrate", "--control", "/nonexistent.sock", "--to", to, NULL};
	t = run_cli(a1, &rc);
	assert_int_equal(rc, 2);
	expect_in(t, "the UNIX socket path is 150 bytes, at most 107 fit");
	free(t);

	const char *a2[] = {"incoming", "--listen", to, NULL};
	t = run_cli(a2, &rc);
	assert_int_equal(rc, 2);
	expect_in(t, "the UNIX socket path is 150 bytes, at most 107 fit");
	free(t);

	const char *a3[] = {"migrate", "--control", "/nonexistent.sock", "--to", "tcp:::1:4444", NULL};
	t = run_cli(a3, &rc);
	assert_int_equal(rc, 2);
	expect_in(t, "tcp:[ADDR]:PORT");
	free(t);

	const char *a4[] = {"migrate", "--control", "/x", "--to", "tcp:h:1", "--chunk-pages", "100", NULL};
	t = run_cli(a4, &rc);
	assert_int_equal(rc, 2);
	expect_in(t, "bad --chunk-pages '100' (64..16777216, a multiple of 64 pages)");
	free(t);

	/* A directory as the guest image. */
	const char *a5[] = {"run", lm_live_path("."), NULL};
	t = run_cli(a5, &rc);
	assert_int_equal(rc, 1);
	expect_in(t, "Is a directory");
	expect_not_in(t, "Exec format error");
	free(t);

	/* 100 KB of guest command line. */
	char *big = malloc(100 * 1024 + 1);
	memset(big, 'a', 100 * 1024);
	big[100 * 1024] = 0;
	const char *a6[] = {"run", lm_live_guest(), "--append", big, NULL};
	t = run_cli(a6, &rc);
	assert_int_equal(rc, 2);
	expect_in(t, "--append is 102400 bytes; the guest command line holds at most");
	expect_not_in(t, "Argument list too long");
	free(t);
	free(big);
}

/* ---- --no- forms, checked against a fake control socket ------------------ */

/*
 * A QMP server that answers like a VM whose parameters are compress true,
 * skip-balloon false, max-bandwidth 0, and whose migration completes at
 * once; it records every request. It shows exactly what `livemig migrate`
 * asks for, which no VM reports (compress leaves no trace in the stats).
 */
struct fake {
	int lfd;
	char path[256];
	pthread_t th;
	struct json_object *log; /* array of the requests, in order */
};

static void fake_reply(int fd, struct json_object *req, struct json_object *ret)
{
	struct json_object *r = json_object_new_object(), *id;
	json_object_object_add(r, "return", ret ? ret : json_object_new_object());
	if (json_object_object_get_ex(req, "id", &id))
		json_object_object_add(r, "id", json_object_get(id));
	const char *s = json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN);
	if (write(fd, s, strlen(s)) < 0 || write(fd, "\n", 1) < 0) {
		/* the client went away: it will say so */
	}
	json_object_put(r);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	const char *hello = "{\"QMP\":{\"version\":{\"qemu\":{\"major\":0,\"minor\":2,\"micro\":0},"
			    "\"package\":\"fake\"},\"capabilities\":[]}}\n";
	if (write(fd, hello, strlen(hello)) < 0)
		goto out;
	struct json_tokener *tok = json_tokener_new();
	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			struct json_object *req = json_tokener_parse_ex(tok, buf + off, (int)(n - off));
			enum json_tokener_error e = json_tokener_get_error(tok);
			if (e == json_tokener_continue)
				break;
			off += (ssize_t)json_tokener_get_parse_end(tok);
			json_tokener_reset(tok);
			if (!req) {
				off++; /* skip what does not parse (a newline) */
				continue;
			}
			json_object_array_add(f->log, json_object_get(req));
			const char *cmd = jstr(req, "execute");
			if (!strcmp(cmd, "query-migrate-parameters"))
				fake_reply(fd, req, json_tokener_parse("{\"compress\":true,\"skip-balloon\":false,"
								       "\"max-bandwidth\":0,\"verify\":\"full\"}"));
			else if (!strcmp(cmd, "query-migrate"))
				fake_reply(fd, req, json_tokener_parse("{\"status\":\"completed\",\"total-time\":1,"
								       "\"ram\":{\"transferred\":4096}}"));
			else
				fake_reply(fd, req, NULL);
			json_object_put(req);
		}
	}
	json_tokener_free(tok);
out:
	close(fd);
	return NULL;
}

static void fake_start(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->path, sizeof(f->path), "%s", lm_live_path("fake.sock"));
	unlink(f->path);
	f->log = json_object_new_array();
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(f->path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 1), 0);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

/* Joins the server (it ends when the client has gone); the log stays. */
static void fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->th, NULL);
	close(f->lfd);
	unlink(f->path);
}

/* Index of the first query-migrate-parameters: what the client says
 * before it (qmp_capabilities, if it does) is not ours to check. */
static size_t first_query(struct fake *f)
{
	size_t k = 0;
	while (k < json_object_array_length(f->log) &&
	       strcmp(jstr(json_object_array_get_idx(f->log, k), "execute"), "query-migrate-parameters"))
		k++;
	return k;
}

/* The i-th request was `cmd` with these arguments (NULL: none checked). */
static void expect_request(struct fake *f, size_t i, const char *cmd, const char *args)
{
	assert_true(json_object_array_length(f->log) > i);
	struct json_object *req = json_object_array_get_idx(f->log, i), *a = NULL;
	if (strcmp(jstr(req, "execute"), cmd))
		fprintf(stderr, "request %zu: %s, expected %s\n", i,
			json_object_to_json_string(req), cmd);
	assert_string_equal(jstr(req, "execute"), cmd);
	if (!args)
		return;
	json_object_object_get_ex(req, "arguments", &a);
	struct json_object *want = json_tokener_parse(args);
	expect_same_json(want, a);
	json_object_put(want);
}

static void test_no_forms_and_restore(void **state)
{
	if (!lm_live_ready())
		skip();
	struct fake f;
	fake_start(&f);
	const char *args[] = {"migrate", "--control", f.path, "--to", "tcp:127.0.0.1:1", "--no-compress",
			      "--skip-balloon", "--max-bandwidth", "1M", "--verify", "digest", "-q", NULL};
	int rc;
	char *t = run_cli(args, &rc);
	fake_stop(&f);
	assert_int_equal(rc, 0);
	size_t k = first_query(&f);
	expect_request(&f, k, "query-migrate-parameters", NULL);
	expect_request(&f, k + 1, "migrate-set-parameters",
		       "{\"compress\":false,\"skip-balloon\":true,\"max-bandwidth\":1048576,\"verify\":\"digest\"}");
	expect_request(&f, k + 2, "migrate", "{\"uri\":\"tcp:127.0.0.1:1\"}");
	/* Put back right after `migrate`: the values it found. */
	expect_request(&f, k + 3, "migrate-set-parameters",
		       "{\"compress\":true,\"skip-balloon\":false,\"max-bandwidth\":0,\"verify\":\"full\"}");
	free(t);
	json_object_put(f.log);

	/* The other way round: --compress, --no-skip-balloon. */
	fake_start(&f);
	const char *args2[] = {"migrate", "--control", f.path, "--to", "unix:/x.sock", "--compress",
			       "--no-skip-balloon", "-q", NULL};
	t = run_cli(args2, &rc);
	fake_stop(&f);
	assert_int_equal(rc, 0);
	k = first_query(&f);
	expect_request(&f, k + 1, "migrate-set-parameters", "{\"compress\":true,\"skip-balloon\":false}");
	expect_request(&f, k + 2, "migrate", "{\"uri\":\"unix:/x.sock\"}");
	expect_request(&f, k + 3, "migrate-set-parameters", "{\"compress\":true,\"skip-balloon\":false}");
	free(t);
	json_object_put(f.log);
}

/* ---- parameters of a real VM after a migration that failed ---------------- */

static void test_params_restored_after_failure(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src;
	lm_live_expect_running(&src, "src", GUEST_MEM, WRITER, NULL, 1);
	struct json_object *before = vm_return(&src, "{\"execute\":\"query-migrate-parameters\"}");
	assert_int_equal(jint(before, "connect-timeout"), 10000);

	/* Nothing listens on port 1 of loopback. */
	struct lm_live_mig m;
	const char *opts[] = {"--max-bandwidth", "1M", "--max-rounds", "2", "--downtime-limit", "5", "--compress",
			      "--no-skip-balloon", NULL};
	int rc = lm_live_migrate(&m, &src, "tcp:127.0.0.1:1", opts);
	assert_int_equal(rc, 1);
	struct json_object *rep = mig_report(&m);
	assert_string_equal(jstr(rep, "status"), "failed");
	expect_in(jstr(rep, "error-desc"), "cannot connect to tcp:127.0.0.1:1: Connection refused");
	json_object_put(rep);
	lm_live_mig_free(&m);
	struct json_object *after = vm_return(&src, "{\"execute\":\"query-migrate-parameters\"}");
	expect_same_json(before, after);
	json_object_put(after);

	/* A UNIX socket that is not there. */
	const char *opts2[] = {"--downtime-limit", "7", NULL};
	rc = lm_live_migrate(&m, &src, lm_live_path("nothing-here.sock"), opts2);
	assert_int_equal(rc, 2); /* not a URI: bad usage, nothing touched */
	lm_live_mig_free(&m);
	char uri[300];
	snprintf(uri, sizeof(uri), "unix:%s", lm_live_path("nothing-here.sock"));
	rc = lm_live_migrate(&m, &src, uri, opts2);
	assert_int_equal(rc, 1);
	expect_in(m.errtext, "No such file or directory");
	lm_live_mig_free(&m);
	after = vm_return(&src, "{\"execute\":\"query-migrate-parameters\"}");
	expect_same_json(before, after);
	json_object_put(after);

	/* The control socket's own migrate says what is wrong with a path. */
	char req[400], reply[4096];
	char longpath[151];
	memset(longpath, 'q', 150);
	longpath[0] = '/';
	longpath[150] = 0;
	snprintf(req, sizeof(req), "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"unix:%s\"}}", longpath);
	lm_live_expect_reply(lm_live_expect_vm_ctl(&src), req, reply, sizeof(reply));
	expect_in(reply, "the UNIX socket path is 150 bytes, at most 107 fit");
	/* A bad value changes nothing either. */
	lm_live_expect_error(lm_live_expect_vm_ctl(&src),
			     "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"downtime-limit\":9,"
			     "\"connect-timeout\":-1}}");
	after = vm_return(&src, "{\"execute\":\"query-migrate-parameters\"}");
	expect_same_json(before, after);
	json_object_put(after);
	json_object_put(before);
	lm_live_expect_survived(&src, "writes=");
	assert_int_equal(lm_live_vm_quit(&src), 0);
}

/* ---- a destination that drops SYNs ------------------------------------------ */

/* Two namespaces of our own joined by a veth pair, 10.231.0.1 (where the
 * source runs) and 10.231.0.2, whose neighbour entry in the first points
 * to a MAC no interface has: SYNs to it leave and are never answered. */
static char ns_a[64], ns_b[64];
static bool netns_made;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	lm_live_log("+ %s\n", cmd);
	char full[600];
	snprintf(full, sizeof(full), "%s >/dev/null 2>&1", cmd);
	return system(full);
}

static void netns_remove(void)
{
	if (!netns_made)
		return;
	sh("ip netns del %s", ns_a);
	sh("ip netns del %s", ns_b);
	netns_made = false;
}

static bool netns_make(void)
{
	snprintf(ns_a, sizeof(ns_a), "lmcli-a-%d", (int)getpid());
	snprintf(ns_b, sizeof(ns_b), "lmcli-b-%d", (int)getpid());
	if (geteuid() != 0 || sh("ip netns add %s", ns_a) != 0)
		return false;
	netns_made = true;
	if (sh("ip netns add %s", ns_b) != 0 ||
	    sh("ip -n %s link add lmcva type veth peer name lmcvb netns %s", ns_a, ns_b) != 0 ||
	    sh("ip -n %s link set lo up", ns_a) != 0 ||
	    sh("ip -n %s addr add 10.231.0.1/24 dev lmcva", ns_a) != 0 ||
	    sh("ip -n %s link set lmcva up", ns_a) != 0 ||
	    sh("ip -n %s addr add 10.231.0.2/24 dev lmcvb", ns_b) != 0 ||
	    sh("ip -n %s link set lmcvb up", ns_b) != 0 ||
	    sh("ip -n %s neigh replace 10.231.0.2 lladdr 02:00:00:00:e3:e3 dev lmcva nud permanent", ns_a) != 0) {
		netns_remove();
		return false;
	}
	return true;
}

static int netns_teardown(void **state)
{
	lm_live_cleanup();
	netns_remove();
	return 0;
}

/* Starts the source VM inside ns_a: this thread joins it for the spawn
 * (the child inherits it) and goes back. */
static void run_in_ns_a(struct lm_live_vm *src)
{
	char path[128];
	snprintf(path, sizeof(path), "/var/run/netns/%s", ns_a);
	int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	int there = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(home >= 0 && there >= 0);
	assert_int_equal(setns(there, CLONE_NEWNET), 0);
	int r = lm_live_run(src, "src", GUEST_MEM, WRITER, NULL);
	assert_int_equal(setns(home, CLONE_NEWNET), 0);
	close(home);
	close(there);
	assert_int_equal(r, 0);
	assert_true(lm_live_vm_wait_progress(src, 1));
}

static void test_syn_drop(void **state)
{
	if (!lm_live_ready())
		skip();
	if (!netns_make()) {
		print_message("      no network namespaces here (needs root and ip): skipped\n");
		skip();
	}
	struct lm_live_vm src;
	run_in_ns_a(&src);
	struct json_object *before = vm_return(&src, "{\"execute\":\"query-migrate-parameters\"}");

	/* connect-timeout 2000: the control socket answers while it connects. */
	struct lm_live_mig m;
	const char *opts[] = {"--connect-timeout", "2000", "--max-rounds", "3", NULL};
	assert_int_equal(lm_live_mig_start(&m, &src, "tcp:10.231.0.2:4444", opts), 0);
	char status[32];
	wait_migration_status(&src, "setup", status, sizeof(status));
	assert_string_equal(status, "setup");
	lm_live_expect_status(lm_live_expect_vm_ctl(&src), "running");
	/* A second client is answered too. */
	struct lm_live_ctl other;
	lm_live_expect_ctl_open(&other, src.sock, LM_LIVE_DEADLINE_S);
	char reply[8192];
	lm_live_expect_ok(&other, "{\"execute\":\"query-migrate\"}", reply, sizeof(reply));
	lm_live_ctl_close(&other);
	assert_int_equal(lm_live_mig_finish(&m), 1);
	struct json_object *rep = mig_report(&m);
	assert_string_equal(jstr(rep, "status"), "failed");
	expect_in(jstr(rep, "error-desc"), "cannot connect to tcp:10.231.0.2:4444: Connection timed out after 2 s");
	json_object_put(rep);
	expect_in(m.errtext, "Connection timed out after 2 s");
	lm_live_mig_free(&m);
	struct json_object *after = vm_return(&src, "{\"execute\":\"query-migrate-parameters\"}");
	expect_same_json(before, after);
	json_object_put(after);

	/* No connect-timeout: migrate's own --timeout cancels the connect. */
	const char *opts2[] = {"--connect-timeout", "0", "--timeout", "1", NULL};
	assert_int_equal(lm_live_migrate(&m, &src, "tcp:10.231.0.2:4444", opts2), 1);
	rep = mig_report(&m);
	assert_string_equal(jstr(rep, "status"), "cancelled");
	json_object_put(rep);
	lm_live_mig_free(&m);

	/* `livemig cancel` during the connect. */
	assert_int_equal(lm_live_mig_start(&m, &src, "tcp:10.231.0.2:4444", NULL), 0);
	wait_migration_status(&src, "setup", status, sizeof(status));
	assert_string_equal(status, "setup");
	const char *cancel[] = {"cancel", "--control", src.sock, NULL};
	int rc;
	char *t = run_cli(cancel, &rc);
	assert_int_equal(rc, 0);
	expect_in(t, "the migration was cancelled");
	free(t);
	assert_int_equal(lm_live_mig_finish(&m), 1);
	rep = mig_report(&m);
	assert_string_equal(jstr(rep, "status"), "cancelled");
	json_object_put(rep);
	lm_live_mig_free(&m);

	/* An unknown host: getaddrinfo's words (here, with no name server
	 * reachable from the namespace, "Temporary failure in name
	 * resolution"), not an errno that blames the network. */
	assert_int_equal(lm_live_migrate(&m, &src, "tcp:no-such-host.invalid:4444", NULL), 1);
	expect_in(m.errtext, "cannot resolve 'no-such-host.invalid': ");
	expect_not_in(m.errtext, "Cannot assign requested address");
	expect_not_in(m.errtext, "No route to host");
	lm_live_mig_free(&m);

	after = vm_return(&src, "{\"execute\":\"query-migrate-parameters\"}");
	expect_same_json(before, after);
	json_object_put(after);
	json_object_put(before);
	lm_live_expect_survived(&src, "writes=");
	assert_int_equal(lm_live_vm_quit(&src), 0);
}

/* ---- status, cancel, Ctrl-C, exit codes --------------------------------- */

/* `livemig incoming --listen tcp:[::1]:0`: it says where, as a URI that
 * `livemig migrate --to` takes. */
static void incoming_v6(struct lm_live_vm *dst)
{
	memset(dst, 0, sizeof(*dst));
	dst->pid = -1;
	dst->ctl.fd = -1;
	snprintf(dst->name, sizeof(dst->name), "dst6");
	snprintf(dst->console, sizeof(dst->console), "%s", lm_live_path("dst6.console"));
	snprintf(dst->out, sizeof(dst->out), "%s", lm_live_path("dst6.out"));
	snprintf(dst->sock, sizeof(dst->sock), "%s", lm_live_path("dst6.sock"));
	const char *args[] = {"incoming", "--listen", "tcp:[::1]:0", "--console", dst->console,
			      "--control", dst->sock, NULL};
	dst->pid = lm_live_spawn(dst->out, NULL, args);
	assert_true(dst->pid > 0);
	char line[512];
	assert_true(lm_live_wait_line(dst->out, "listening on ", 0, line, sizeof(line), dst->pid,
				      LM_LIVE_DEADLINE_S));
	const char *p = strstr(line, "listening on ") + strlen("listening on ");
	snprintf(dst->uri, sizeof(dst->uri), "%s", p);
	size_t l = strlen(dst->uri);
	while (l && (dst->uri[l - 1] == '\n' || dst->uri[l - 1] == ' '))
		dst->uri[--l] = 0;
	if (strncmp(dst->uri, "tcp:[::1]:", 10))
		fprintf(stderr, "incoming printed: %s\n", line);
	assert_true(!strncmp(dst->uri, "tcp:[::1]:", 10));
}

static void test_status_cancel_sigint_exit(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", GUEST_MEM, WRITER, NULL, 1);
	incoming_v6(&dst);
	int rc;
	char *t;

	const char *status[] = {"status", "--control", src.sock, NULL};
	t = run_cli(status, &rc);
	assert_int_equal(rc, 0);
	expect_in(t, "vm         running");
	expect_in(t, "migration  none yet");
	free(t);
	const char *cancel[] = {"cancel", "--control", src.sock, NULL};
	t = run_cli(cancel, &rc);
	assert_int_equal(rc, 1);
	expect_in(t, "no migration in progress");
	free(t);

	/* A capped migration: status shows it, cancel ends it. */
	struct lm_live_mig m;
	const char *capped[] = {"--max-bandwidth", "1M", NULL};
	assert_int_equal(lm_live_mig_start(&m, &src, dst.uri, capped), 0);
	expect_active(&src, &m);
	t = run_cli(status, &rc);
	assert_int_equal(rc, 0);
	expect_in(t, "migration  active");
	expect_in(t, "% ");
	expect_in(t, "ETA");
	expect_in(t, "sent ");
	free(t);
	t = run_cli(cancel, &rc);
	assert_int_equal(rc, 0);
	expect_in(t, "the migration was cancelled; the VM runs on at the source");
	free(t);
	assert_int_equal(lm_live_mig_finish(&m), 1);
	struct json_object *rep = mig_report(&m), *ram;
	assert_string_equal(jstr(rep, "status"), "cancelled");
	assert_true(json_object_object_get_ex(rep, "ram", &ram));
	/* Pages count as sent once written: never more than went out. */
	if (jint(ram, "normal-bytes") > jint(ram, "transferred"))
		fprintf(stderr, "%s\n", m.json);
	assert_true(jint(ram, "normal-bytes") <= jint(ram, "transferred"));
	json_object_put(rep);
	lm_live_mig_free(&m);
	t = run_cli(status, &rc);
	expect_in(t, "migration  cancelled");
	free(t);

	/* Ctrl-C without a terminal (stdin is /dev/null): it cancels. */
	assert_int_equal(lm_live_mig_start(&m, &src, dst.uri, capped), 0);
	expect_active(&src, &m);
	lm_live_kill(m.pid, SIGINT);
	assert_int_equal(lm_live_mig_finish(&m), 1);
	rep = mig_report(&m);
	assert_string_equal(jstr(rep, "status"), "cancelled");
	json_object_put(rep);
	expect_in(m.errtext, "interrupted (Ctrl-C): cancelling the migration");
	expect_in(m.errtext, "cancelled (Ctrl-C); the VM runs on at the source");
	lm_live_mig_free(&m);
	lm_live_expect_survived(&src, "writes=");

	/* Then a whole one, to the IPv6 listener as it printed itself. The
	 * guest writes all along: the dirty rate is not 0. */
	const char *some[] = {"--max-bandwidth", "50M", NULL};
	rc = lm_live_migrate(&m, &src, dst.uri, some);
	if (rc != 0)
		fprintf(stderr, "%s%s", m.json, m.errtext);
	assert_int_equal(rc, 0);
	rep = mig_report(&m);
	assert_string_equal(jstr(rep, "status"), "completed");
	assert_true(json_object_object_get_ex(rep, "ram", &ram));
	if (jint(ram, "dirty-pages-rate") <= 0)
		fprintf(stderr, "%s\n", m.json);
	assert_true(jint(ram, "dirty-pages-rate") > 0);
	assert_true(jint(ram, "normal-bytes") <= jint(ram, "transferred"));
	json_object_put(rep);
	lm_live_mig_free(&m);
	/* The source exits LM_CLI_EXIT_MIGRATED (checked here). */
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

/* The table's units, on a migration of a paused guest (quick). */
static void test_report_units(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	const char *paused[] = {"--paused", NULL};
	assert_int_equal(lm_live_run(&src, "srcp", GUEST_MEM, WRITER, paused), 0);
	const char *once[] = {"--once", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dstp", "tcp", once), 0);
	const char *args[] = {"migrate", "--control", src.sock, "--to", dst.uri, NULL};
	int rc;
	char *t = run_cli(args, &rc);
	assert_int_equal(rc, 0);
	expect_in(t, "migration completed");
	expect_in(t, " ms\n");
	expect_in(t, "Mbit/s");
	expect_in(t, "ram.rounds");
	expect_in(t, "pre-copy passes while the guest ran");
	expect_in(t, "harvests of the dirty log");
	free(t);
	assert_int_equal(lm_live_wait(src.pid, LM_LIVE_DEADLINE_S), LM_CLI_EXIT_MIGRATED);
	assert_int_equal(lm_live_vm_quit(&dst), 0);

	/* A guest that powers off: its own status, 0. */
	const char *off[] = {"run", lm_live_guest(), "--mem", "16M", "--append",
			     "workload=hotset mem=4M wss=1M rate=1M exit_after=1", "--console",
			     lm_live_path("off.console"), NULL};
	t = run_cli(off, &rc);
	assert_int_equal(rc, 0);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_docs_parameter_table, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_error_messages, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_no_forms_and_restore, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_params_restored_after_failure, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_syn_drop, netns_teardown),
	    cmocka_unit_test_teardown(test_status_cancel_sigint_exit, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_report_units, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
