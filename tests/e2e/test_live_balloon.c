/*
 * Live migration of a ballooned guest, end to end with the livemig command
 * (env LIVEMIG) and the guest image (env GUEST_ELF): a 4 GiB guest running
 * a workload in 512 MiB gives 3 GiB to its balloon (must-tell-host
 * accepted), then migrates A -> B -> C with skip-balloon on, and A -> B with
 * it off (--no-skip-balloon).
 *
 * What is asserted: every migration completes and the guest's own check
 * passes at the destination; with skip-balloon on, query-migrate says so,
 * counts the 786432 ballooned pages, the pages scanned leave them out, and
 * C still knows them (query-balloon's ballooned-pages) after two hops;
 * with it off, query-migrate says skip-balloon false. The figures (total
 * time, bytes on the wire, pages scanned, stop-and-copy bytes) are printed
 * for docs/bench.md, never asserted. Deadlines only turn a hang into a
 * failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define DEADLINE_S 120
#define MIB (1ull << 20)
#define BALLOON_PAGES 786432ull /* 3 GiB */

static const char *livemig, *guest;
static char tmpdir[] = "/tmp/lm-live-balloon-XXXXXX";
static pid_t children[16];
static size_t nchildren;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static const char *tmp(const char *name)
{
	static char buf[16][256];
	static int k;
	char *p = buf[k++ % 16];
	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

/* livemig ARGS with stdout and stderr into the file out. */
static pid_t spawn(const char *out, const char *const *args)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = livemig;
	while (*args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(livemig, (char *const *)argv);
		_exit(127);
	}
	if (nchildren < sizeof(children) / sizeof(children[0]))
		children[nchildren++] = pid;
	return pid;
}

static int wait_exit(pid_t pid)
{
	double end = now_s() + DEADLINE_S;
	int st;
	for (;;) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (now_s() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		msleep(50);
	}
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	size_t cap = 1 << 16, len = 0, n;
	char *b = malloc(cap);
	b[0] = 0;
	if (!f)
		return b;
	while ((n = fread(b + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 4096)
			b = realloc(b, cap *= 2);
	}
	b[len] = 0;
	fclose(f);
	return b;
}

static void dump(const char *path)
{
	char *t = slurp(path);
	fprintf(stderr, "---- %s\n%s----\n", path, t);
	free(t);
}

static int count(const char *path, const char *needle)
{
	char *t = slurp(path);
	int n = 0;
	for (const char *p = t; (p = strstr(p, needle)); p++)
		n++;
	free(t);
	return n;
}

static bool wait_text(const char *path, const char *needle, int have)
{
	double end = now_s() + DEADLINE_S;
	while (now_s() < end) {
		if (count(path, needle) > have)
			return true;
		msleep(100);
	}
	dump(path);
	return false;
}

/* A JSON member: number, or true/false as 1/0. */
static uint64_t jfield(const char *text, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(text, k);
	if (!p)
		fprintf(stderr, "no %s in: %s\n", k, text);
	assert_non_null(p);
	p += strlen(k);
	while (*p == ' ')
		p++;
	if (!strncmp(p, "true", 4))
		return 1;
	if (!strncmp(p, "false", 5))
		return 0;
	return strtoull(p, NULL, 10);
}

/* ---- control socket ---- */

struct ctl {
	int fd;
	char buf[65536];
	size_t len;
};

static bool ctl_line(struct ctl *c, char *out, size_t cap)
{
	double end = now_s() + DEADLINE_S;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			size_t l = (size_t)(nl - c->buf);
			snprintf(out, cap, "%.*s", (int)l, c->buf);
			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
			return true;
		}
		struct pollfd pf = { c->fd, POLLIN, 0 };
		int ms = (int)((end - now_s()) * 1000);
		if (ms <= 0 || poll(&pf, 1, ms) <= 0)
			return false;
		ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
		if (n <= 0)
			return false;
		c->len += (size_t)n;
	}
}

static void ctl_open(struct ctl *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	double end = now_s() + DEADLINE_S;
	char line[4096];
	c->len = 0;
	for (;;) {
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(c->fd >= 0);
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(c->fd);
		assert_true(now_s() < end);
		msleep(100);
	}
	assert_true(ctl_line(c, line, sizeof(line))); /* greeting */
}

static void ctl(struct ctl *c, const char *req, char *reply, size_t cap)
{
	size_t n = strlen(req);
	assert_int_equal(write(c->fd, req, n), (ssize_t)n);
	assert_int_equal(write(c->fd, "\n", 1), 1);
	do
		assert_true(ctl_line(c, reply, cap));
	while (strstr(reply, "\"event\""));
	if (!strstr(reply, "\"return\""))
		fprintf(stderr, "%s -> %s\n", req, reply);
	assert_non_null(strstr(reply, "\"return\""));
}

static uint64_t ballooned(struct ctl *c, bool *mth)
{
	char r[4096];
	ctl(c, "{\"execute\":\"query-balloon\"}", r, sizeof(r));
	if (mth)
		*mth = jfield(r, "must-tell-host");
	return jfield(r, "ballooned-pages");
}

static void wait_ballooned(struct ctl *c, uint64_t pages)
{
	double end = now_s() + DEADLINE_S;
	while (ballooned(c, NULL) != pages) {
		assert_true(now_s() < end);
		msleep(200);
	}
}

/* Asks the guest to check all its pages; waits for "verify ok". */
static void verify(struct ctl *c, const char *console)
{
	char r[4096];
	int have = count(console, "verify ok"), fails = count(console, "FAIL");
	ctl(c, "{\"execute\":\"guest-verify\"}", r, sizeof(r));
	assert_true(wait_text(console, "verify ok", have));
	assert_int_equal(count(console, "FAIL"), fails);
}

/* ---- the steps ---- */

struct vm {
	pid_t pid;
	const char *console, *sock, *out;
	struct ctl c;
};

/* A 4 GiB guest, workload in 512 MiB, 3 GiB in the balloon. */
static void start_source(struct vm *v, const char *name)
{
	char b[64];
	snprintf(b, sizeof(b), "%s.console", name);
	v->console = strdup(tmp(b));
	snprintf(b, sizeof(b), "%s.sock", name);
	v->sock = strdup(tmp(b));
	snprintf(b, sizeof(b), "%s.out", name);
	v->out = strdup(tmp(b));
	const char *args[] = { "run", guest, "--mem", "4G", "--control", v->sock, "--console", v->console,
			       "--append", "workload=hotset mem=512M wss=64M rate=20M verify=1 progress=0", NULL };
	v->pid = spawn(v->out, args);
	assert_true(wait_text(v->console, "verify ok", 0)); /* set up and checked */
	ctl_open(&v->c, v->sock);
	char r[256];
	snprintf(r, sizeof(r), "{\"execute\":\"balloon\",\"arguments\":{\"value\":%llu}}",
		 (unsigned long long)(1024 * MIB));
	char reply[4096];
	ctl(&v->c, r, reply, sizeof(reply));
	wait_ballooned(&v->c, BALLOON_PAGES);
	bool mth;
	ballooned(&v->c, &mth);
	assert_true(mth);
	verify(&v->c, v->console);
}

static void start_incoming(struct vm *v, const char *name, const char *uri)
{
	char b[64];
	snprintf(b, sizeof(b), "%s.console", name);
	v->console = strdup(tmp(b));
	snprintf(b, sizeof(b), "%s.sock", name);
	v->sock = strdup(tmp(b));
	snprintf(b, sizeof(b), "%s.out", name);
	v->out = strdup(tmp(b));
	const char *args[] = { "incoming", "--listen", uri, "--control", v->sock, "--console", v->console,
			       "--once", NULL };
	v->pid = spawn(v->out, args);
	assert_true(wait_text(v->out, "listening on", 0));
}

struct figures {
	uint64_t total_ms, transferred, scanned, stop_copy, ballooned, downtime_ms, table_bytes;
	bool skip;
};

/* livemig migrate from v to uri; the JSON report is parsed. */
static void migrate(struct vm *v, const char *uri, bool skip, const char *report, struct figures *f)
{
	const char *args[] = { "migrate", "--control", v->sock, "--to", uri, "--json", "-q",
			       skip ? NULL : "--no-skip-balloon", NULL };
	pid_t pid = spawn(report, args);
	int rc = wait_exit(pid);
	if (rc != 0)
		dump(report);
	assert_int_equal(rc, 0);
	char *t = slurp(report);
	f->skip = jfield(t, "skip-balloon");
	f->total_ms = jfield(t, "total-time");
	f->downtime_ms = jfield(t, "downtime");
	f->transferred = jfield(t, "transferred");
	f->scanned = jfield(t, "pages-scanned");
	f->stop_copy = jfield(t, "stop-copy-bytes");
	f->ballooned = jfield(t, "ballooned");
	f->table_bytes = jfield(t, "table-bytes");
	free(t);
	/* The source exits 0 once the guest runs at the destination. */
	close(v->c.fd);
	assert_int_equal(wait_exit(v->pid), 0);
	fprintf(stderr,
		"  %s: skip-balloon %s, total %llu ms, downtime %llu ms, %.1f MiB on the wire, "
		"%llu pages scanned, stop-and-copy %.1f KiB, ballooned %llu, skip map %llu bytes\n",
		report, f->skip ? "on" : "off", (unsigned long long)f->total_ms, (unsigned long long)f->downtime_ms,
		(double)f->transferred / MIB, (unsigned long long)f->scanned, (double)f->stop_copy / 1024,
		(unsigned long long)f->ballooned, (unsigned long long)f->table_bytes);
}

static void arrived(struct vm *v)
{
	ctl_open(&v->c, v->sock);
	verify(&v->c, v->console);
}

static void quit(struct vm *v)
{
	char r[4096];
	ctl(&v->c, "{\"execute\":\"quit\"}", r, sizeof(r));
	close(v->c.fd);
	assert_int_equal(wait_exit(v->pid), 0);
}

/* A -> B -> C with skip-balloon on: C still knows the ballooned pages. */
static void test_skip_on_a_b_c(void **state)
{
	(void)state;
	struct vm a, b, c;
	struct figures f1, f2;
	char ub[300], uc[300];
	snprintf(ub, sizeof(ub), "unix:%s", tmp("b.mig"));
	snprintf(uc, sizeof(uc), "unix:%s", tmp("c.mig"));
	start_source(&a, "a");
	start_incoming(&b, "b", ub);
	migrate(&a, ub, true, tmp("a-b.json"), &f1);
	assert_true(f1.skip);
	assert_int_equal(f1.ballooned, BALLOON_PAGES);
	/* The ballooned pages are not among those read: 4 GiB is 1048576. */
	assert_true(f1.scanned < 1048576 - BALLOON_PAGES);
	/* The map itself went over, once: 16 bytes per 128 ballooned pages. */
	assert_true(f1.table_bytes >= BALLOON_PAGES / 128 * 16);
	arrived(&b);
	bool mth;
	assert_int_equal(ballooned(&b.c, &mth), BALLOON_PAGES);
	assert_true(mth);

	start_incoming(&c, "c", uc);
	migrate(&b, uc, true, tmp("b-c.json"), &f2);
	assert_true(f2.skip);
	assert_int_equal(f2.ballooned, BALLOON_PAGES);
	arrived(&c);
	assert_int_equal(ballooned(&c.c, &mth), BALLOON_PAGES);
	assert_true(mth);
	/* And the balloon still works there: give 1 GiB back. */
	char r[4096];
	snprintf(r, sizeof(r), "{\"execute\":\"balloon\",\"arguments\":{\"value\":%llu}}",
		 (unsigned long long)(2048 * MIB));
	char reply[4096];
	ctl(&c.c, r, reply, sizeof(reply));
	wait_ballooned(&c.c, BALLOON_PAGES - 262144);
	verify(&c.c, c.console);
	quit(&c);
}

/* skip-balloon off by the user: ballooned pages are ordinary pages. */
static void test_skip_off(void **state)
{
	(void)state;
	struct vm a, b;
	struct figures f;
	char ub[300];
	snprintf(ub, sizeof(ub), "unix:%s", tmp("b2.mig"));
	start_source(&a, "a2");
	start_incoming(&b, "b2", ub);
	migrate(&a, ub, false, tmp("a2-b2.json"), &f);
	assert_false(f.skip);
	assert_int_equal(f.ballooned, BALLOON_PAGES);
	assert_int_equal(f.table_bytes, 0);
	arrived(&b);
	quit(&b);
}

static int group_setup(void **state)
{
	(void)state;
	livemig = getenv("LIVEMIG");
	guest = getenv("GUEST_ELF");
	if (!livemig || !guest) {
		fprintf(stderr, "set LIVEMIG and GUEST_ELF\n");
		return -1;
	}
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < nchildren; i++)
		if (waitpid(children[i], NULL, WNOHANG) == 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
		}
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_skip_on_a_b_c),
		cmocka_unit_test(test_skip_off),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
