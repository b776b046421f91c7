/*
 * End-to-end tests of the VMM: the livemig command (env LIVEMIG) running
 * the guest image (env GUEST_ELF) with its serial console and control
 * socket, and an in-process state round trip through the lm_vm API.
 *
 * Waits have generous deadlines that only turn a hang into a failure; no
 * assertion depends on how fast anything runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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

#include "livemig/bitmap.h"
#include "livemig/vmm.h"

#define DEADLINE_S 90

static const char *livemig, *guest;
static char tmpdir[] = "/tmp/lm-vmm-e2e-XXXXXX";

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static char *path_in_tmp(const char *name)
{
	static char buf[8][256];
	static int k;
	char *p = buf[k++ % 8];
	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

/* Every child, so that one left running by a failed test is killed at
 * the end instead of outliving the suite. */
static pid_t spawned[64];
static size_t nspawned;

/* Starts livemig with stdout and stderr into out. */
static pid_t spawn(const char *out, const char *const *args)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = livemig;
	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid > 0 && nspawned < sizeof(spawned) / sizeof(spawned[0]))
		spawned[nspawned++] = pid;
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(livemig, (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Exit status of pid, or -1 if it had to be killed at the deadline. */
static int wait_exit(pid_t pid, int deadline_s)
{
	double end = now_s() + deadline_s;
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
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
	if (!f)
		return strdup("");
	size_t cap = 1 << 16, len = 0;
	char *b = malloc(cap);
	size_t n;
	while ((n = fread(b + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 4096)
			b = realloc(b, cap *= 2);
	}
	b[len] = 0;
	fclose(f);
	return b;
}

/* Lines of text in text, from the start, containing needle; the last one
 * is copied into line (if given). */
static int count_lines(const char *text, const char *needle, char *line, size_t linelen)
{
	int n = 0;
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		if (!e)
			break; /* a partial line is not there yet */
		size_t l = (size_t)(e - p);
		char tmp[1024];
		size_t c = l < sizeof(tmp) - 1 ? l : sizeof(tmp) - 1;
		memcpy(tmp, p, c);
		tmp[c] = 0;
		if (strstr(tmp, needle)) {
			n++;
			if (line)
				snprintf(line, linelen, "%s", tmp);
		}
		p = e + 1;
	}
	return n;
}

/* Waits until the file has more than `have` lines containing needle. */
static bool wait_line(const char *path, const char *needle, int have, char *line, size_t linelen,
		      pid_t pid)
{
	double end = now_s() + DEADLINE_S;
	while (now_s() < end) {
		char *t = slurp(path);
		int n = count_lines(t, needle, line, linelen);
		free(t);
		if (n > have)
			return true;
		if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid) {
			t = slurp(path);
			n = count_lines(t, needle, line, linelen);
			free(t);
			return n > have;
		}
		msleep(50);
	}
	return false;
}

static uint64_t field(const char *line, const char *key)
{
	const char *p = strstr(line, key);
	assert_non_null(p);
	return strtoull(p + strlen(key), NULL, 10);
}

static void dump(const char *path)
{
	char *t = slurp(path);
	fprintf(stderr, "---- %s\n%s----\n", path, t);
	free(t);
}

/* ---- control socket client ---------------------------------------------- */

struct ctl {
	int fd;
	char buf[65536];
	size_t len;
};

static bool ctl_read_line(struct ctl *c, char *out, size_t outlen)
{
	double end = now_s() + DEADLINE_S;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			size_t l = (size_t)(nl - c->buf);
			snprintf(out, outlen, "%.*s", (int)l, c->buf);
			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
			return true;
		}
		struct pollfd pf = {.fd = c->fd, .events = POLLIN};
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
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	double end = now_s() + DEADLINE_S;
	c->len = 0;
	for (;;) {
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(c->fd >= 0);
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(c->fd);
		assert_true(now_s() < end);
		msleep(50);
	}
	char line[4096];
	assert_true(ctl_read_line(c, line, sizeof(line)));
	assert_non_null(strstr(line, "\"QMP\""));
}

/* Sends one raw line; returns the next reply that is not an event. */
static void ctl_raw(struct ctl *c, const char *req, char *reply, size_t replylen)
{
	size_t n = strlen(req);
	assert_int_equal(write(c->fd, req, n), (ssize_t)n);
	assert_int_equal(write(c->fd, "\n", 1), 1);
	for (;;) {
		assert_true(ctl_read_line(c, reply, replylen));
		if (!strstr(reply, "\"event\""))
			return;
	}
}

static void expect_ok(struct ctl *c, const char *req)
{
	char reply[4096];
	ctl_raw(c, req, reply, sizeof(reply));
	if (!strstr(reply, "\"return\""))
		fprintf(stderr, "request %s -> %s\n", req, reply);
	assert_non_null(strstr(reply, "\"return\""));
}

static void expect_error(struct ctl *c, const char *req)
{
	char reply[4096];
	ctl_raw(c, req, reply, sizeof(reply));
	assert_non_null(strstr(reply, "\"error\""));
	assert_non_null(strstr(reply, "\"GenericError\""));
	assert_non_null(strstr(reply, "\"desc\""));
}

static void expect_status(struct ctl *c, const char *status)
{
	char reply[4096], want[64];
	ctl_raw(c, "{\"execute\":\"query-status\"}", reply, sizeof(reply));
	snprintf(want, sizeof(want), "\"status\":\"%s\"", status);
	if (!strstr(reply, want))
		fprintf(stderr, "query-status -> %s\n", reply);
	assert_non_null(strstr(reply, want));
}

/* ---- tests -------------------------------------------------------------- */

static void test_run_console(void **state)
{
	const char *out = path_in_tmp("run.out");
	const char *args[] = {
	    "run",
	    guest,
	    "--mem",
	    "128M",
	    "--append",
	    "workload=hotset mem=32M wss=8M rate=10M exit_after=2 verify=1 progress=500",
	    NULL};
	pid_t pid = spawn(out, args);
	int rc = wait_exit(pid, DEADLINE_S);
	char *t = slurp(out);
	if (rc != 0)
		dump(out);
	assert_int_equal(rc, 0);
	assert_true(count_lines(t, "livemig-guest: workload=hotset", NULL, 0) == 1);
	assert_true(count_lines(t, "verify ok pages=", NULL, 0) >= 2); /* after setup and at exit */
	assert_true(count_lines(t, "progress t=", NULL, 0) >= 1);
	assert_int_equal(count_lines(t, "FAIL", NULL, 0), 0);
	assert_true(count_lines(t, "livemig-guest: exit status=0", NULL, 0) == 1);
	free(t);
}

static void test_bad_usage(void **state)
{
	static const char *const bad[][8] = {
	    {"run", NULL},
	    {"run", "/nonexistent.elf", NULL},
	    {"run", "GUEST", "--mem", "12Q", NULL},
	    {"run", "GUEST", "--mem", "1M", NULL},
	    {"run", "GUEST", "--mem", "100000T", NULL},
	    {"run", "GUEST", "--cpus", "0", NULL},
	    {"run", "GUEST", "--cpus", "two", NULL},
	    {"run", "GUEST", "--bogus", NULL},
	    {"run", "GUEST", "--mem", NULL},
	    {"run", "GUEST", "extra", NULL},
	    {"run", "/etc/passwd", NULL},
	};
	const char *out = path_in_tmp("usage.out");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[8];
		for (int k = 0; k < 8; k++)
			args[k] = bad[i][k] && !strcmp(bad[i][k], "GUEST") ? guest : bad[i][k];
		int rc = wait_exit(spawn(out, args), DEADLINE_S);
		char *t = slurp(out);
		if (rc == 0 || !strstr(t, "livemig run:"))
			fprintf(stderr, "case %zu: rc=%d output: %s\n", i, rc, t);
		assert_true(rc == 1 || rc == 2);
		assert_non_null(strstr(t, "livemig run:"));
		free(t);
	}
	const char *help[] = {"run", "--help", NULL};
	assert_int_equal(wait_exit(spawn(out, help), DEADLINE_S), 0);
	char *t = slurp(out);
	assert_non_null(strstr(t, "--control"));
	free(t);
}

static void test_pause_resume(void **state)
{
	const char *out = path_in_tmp("pause.out"), *sock = path_in_tmp("pause.sock");
	const char *args[] = {"run",	   guest,
			      "--mem",	   "128M",
			      "--cpus",	   "2",
			      "--control", sock,
			      "--append",  "workload=hotset mem=32M wss=8M rate=10M progress=200",
			      NULL};
	pid_t pid = spawn(out, args);
	struct ctl c;
	ctl_open(&c, sock);
	expect_status(&c, "running");
	char line[1024];
	assert_true(wait_line(out, "progress t=", 1, line, sizeof(line), pid));

	expect_ok(&c, "{\"execute\":\"stop\"}");
	expect_status(&c, "paused");
	char *t = slurp(out);
	int before = count_lines(t, "progress t=", line, sizeof(line));
	free(t);
	uint64_t writes = field(line, "writes=");
	/* Paused for a while: the guest prints nothing (its progress lines
	 * come every 200 ms of its own time, which does not pass). */
	msleep(1000);
	t = slurp(out);
	assert_int_equal(count_lines(t, "progress t=", NULL, 0), before);
	free(t);
	expect_ok(&c, "{\"execute\":\"stop\"}"); /* stopping twice is fine */

	expect_ok(&c, "{\"execute\":\"cont\"}");
	expect_status(&c, "running");
	assert_true(wait_line(out, "progress t=", before + 1, line, sizeof(line), pid));
	assert_true(field(line, "writes=") > writes);
	assert_non_null(strstr(line, "fpu=ok"));

	expect_ok(&c, "{\"execute\":\"quit\"}");
	close(c.fd);
	int rc = wait_exit(pid, DEADLINE_S);
	if (rc != 0)
		dump(out);
	assert_int_equal(rc, 0);
	assert_int_equal(access(sock, F_OK), -1); /* the socket file is removed */
	t = slurp(out);
	assert_int_equal(count_lines(t, "FAIL", NULL, 0), 0);
	assert_int_equal(count_lines(t, "went backwards", NULL, 0), 0);
	free(t);
}

static void test_control_errors(void **state)
{
	const char *out = path_in_tmp("ctl.out"), *sock = path_in_tmp("ctl.sock");
	const char *con = path_in_tmp("ctl.console");
	const char *args[] = {"run",	   guest,
			      "--mem",	   "64M",
			      "--control", sock,
			      "--console", con,
			      "--append",  "workload=hotset mem=16M wss=4M rate=5M progress=200",
			      NULL};
	pid_t pid = spawn(out, args);
	struct ctl c;
	ctl_open(&c, sock);
	char reply[4096];

	expect_error(&c, "{\"execute\":"); /* truncated JSON */
	expect_error(&c, "this is not json");
	expect_error(&c, "[1, 2, 3]");		 /* not an object */
	expect_error(&c, "{\"exec\":\"stop\"}"); /* no execute */
	expect_error(&c, "{\"execute\":42}");
	expect_error(&c, "{\"execute\":\"no-such-command\"}");
	expect_error(&c, "{\"execute\":\"stop\",\"arguments\":5}");
	expect_error(&c, "{\"execute\":\"stop\",\"arguments\":{\"now\":true}}");
	expect_error(&c, "{\"execute\":\"query-status\"} trailing");
	expect_error(&c, "{\"execute\":\"query-status\",\"extra\":1}");
	/* The id comes back with the answer, error or not. */
	ctl_raw(&c, "{\"execute\":\"no-such-command\",\"id\":\"abc\"}", reply, sizeof(reply));
	assert_non_null(strstr(reply, "\"id\":\"abc\""));
	ctl_raw(&c, "{\"execute\":\"query-status\",\"id\":7}", reply, sizeof(reply));
	assert_non_null(strstr(reply, "\"id\":7"));
	expect_ok(&c, "{\"execute\":\"qmp_capabilities\"}");
	ctl_raw(&c, "{\"execute\":\"query-commands\"}", reply, sizeof(reply));
	assert_non_null(strstr(reply, "\"query-status\""));

	/* None of that touched the VM: it is running and makes progress. */
	expect_status(&c, "running");
	char *t = slurp(con);
	int have = count_lines(t, "progress t=", NULL, 0);
	free(t);
	if (!wait_line(con, "progress t=", have, NULL, 0, pid)) {
		dump(con);
		dump(out);
		fail();
	}

	/* A second client is served too, and a client that disconnects
	 * mid-request does not disturb the server. */
	struct ctl c2;
	ctl_open(&c2, sock);
	assert_int_equal(write(c2.fd, "{\"execute\":\"query-st", 20), 20);
	close(c2.fd);
	expect_status(&c, "running");

	/* SIGTERM shuts the VM down cleanly: exit 128+15, socket removed. The
	 * console went to its file, nothing of it to stdout. */
	close(c.fd);
	kill(pid, SIGTERM);
	int rc = wait_exit(pid, DEADLINE_S);
	if (rc != 128 + SIGTERM)
		dump(out);
	assert_int_equal(rc, 128 + SIGTERM);
	assert_int_equal(access(sock, F_OK), -1);
	t = slurp(out);
	assert_int_equal(count_lines(t, "progress t=", NULL, 0), 0);
	free(t);
}

static void test_mem_1t(void **state)
{
	const char *out = path_in_tmp("1t.out");
	const char *args[] = {
	    "run",
	    guest,
	    "--mem",
	    "1T",
	    "--append",
	    "workload=hotset mem=32M wss=8M rate=10M exit_after=2 verify=1 progress=500",
	    NULL};
	int rc = wait_exit(spawn(out, args), DEADLINE_S * 2);
	char *t = slurp(out);
	if (rc != 0)
		dump(out);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(t, "ram_top=1025G"));
	assert_true(count_lines(t, "verify ok pages=", NULL, 0) >= 2);
	assert_int_equal(count_lines(t, "FAIL", NULL, 0), 0);
	free(t);
}

/* ---- in-process state round trip --------------------------------------- */

struct console {
	pthread_mutex_t lock;
	char *text;
	size_t len, cap;
};

static void console_line(void *opaque, const char *line, size_t len)
{
	struct console *c = opaque;
	pthread_mutex_lock(&c->lock);
	if (c->len + len + 2 > c->cap) {
		c->cap = (c->cap + len + 2) * 2;
		c->text = realloc(c->text, c->cap);
	}
	memcpy(c->text + c->len, line, len);
	c->len += len;
	c->text[c->len++] = '\n';
	c->text[c->len] = 0;
	pthread_mutex_unlock(&c->lock);
}

static int console_count(struct console *c, const char *needle, char *line, size_t linelen)
{
	pthread_mutex_lock(&c->lock);
	int n = c->text ? count_lines(c->text, needle, line, linelen) : 0;
	pthread_mutex_unlock(&c->lock);
	return n;
}

static bool console_wait(struct console *c, const char *needle, int have, char *line,
			 size_t linelen, struct lm_vm *vm)
{
	double end = now_s() + DEADLINE_S;
	while (now_s() < end) {
		if (console_count(c, needle, line, linelen) > have)
			return true;
		if (lm_vm_wait(vm, 0, NULL) != -EINTR)
			return console_count(c, needle, line, linelen) > have;
		msleep(20);
	}
	return false;
}

static void copy_ram(struct lm_vm *dst, struct lm_vm *src)
{
	assert_int_equal(lm_vm_slot_count(dst), lm_vm_slot_count(src));
	for (unsigned i = 0; i < lm_vm_slot_count(src); i++) {
		const struct lm_vm_slot *s = lm_vm_slot(src, i), *d = lm_vm_slot(dst, i);
		assert_int_equal(s->gpa, d->gpa);
		assert_int_equal(s->size, d->size);
		/* Zero pages stay untouched on the destination, as a migration
		 * would leave them. */
		for (uint64_t off = 0; off < s->size; off += LM_PAGE_SIZE) {
			const uint8_t *p = (const uint8_t *)s->host + off;
			if (!lm_page_is_zero(p))
				memcpy((uint8_t *)d->host + off, p, LM_PAGE_SIZE);
		}
	}
}

static void test_state_round_trip(void **state)
{
	/* Static: should an assertion fail, the VMs are leaked still running
	 * and must not write into a later test's stack. */
	static struct console csrc = {.lock = PTHREAD_MUTEX_INITIALIZER},
			      cdst = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct lm_vm_config cfg = {
	    .mem_size = 128ull << 20,
	    .ncpus = 1,
	    .kernel = guest,
	    .cmdline = "workload=hotset mem=32M wss=8M rate=10M progress=200 seed=5",
	    .console_fd = -1,
	    .console_fn = console_line,
	    .console_opaque = &csrc,
	};
	struct lm_vm *src = NULL, *dst = NULL;
	assert_int_equal(lm_vm_new(&cfg, &src), 0);
	assert_int_equal(lm_vm_start(src), 0);
	char line[1024];
	bool ok = console_wait(&csrc, "progress t=", 1, line, sizeof(line), src);
	if (!ok)
		fprintf(stderr, "source console:\n%s\n", csrc.text ? csrc.text : "");
	assert_true(ok);

	assert_int_equal(lm_vm_pause(src), 0);
	assert_true(lm_vm_is_paused(src));
	console_count(&csrc, "progress t=", line, sizeof(line));
	uint64_t writes = field(line, "writes=");
	assert_true(writes > 0);
	uint8_t *blob = NULL;
	size_t len = 0;
	assert_int_equal(lm_vm_state_save(src, &blob, &len), 0);

	/* A brand-new VM with no kernel receives RAM and state. */
	cfg.kernel = NULL;
	cfg.cmdline = NULL;
	cfg.console_opaque = &cdst;
	assert_int_equal(lm_vm_new(&cfg, &dst), 0);
	copy_ram(dst, src);
	lm_vm_free(src); /* the source never runs again */
	assert_int_equal(lm_vm_state_load(dst, blob, len), 0);
	free(blob);
	assert_int_equal(lm_vm_start(dst), 0);

	/* The guest continues: its write counter keeps growing from where it
	 * was, its vector registers still hold the canary, and its TSC did
	 * not go backwards. */
	ok = console_wait(&cdst, "progress t=", 1, line, sizeof(line), dst);
	if (!ok)
		fprintf(stderr, "destination console:\n%s\n", cdst.text ? cdst.text : "");
	assert_true(ok);
	assert_true(field(line, "writes=") > writes);
	assert_non_null(strstr(line, "fpu=ok"));
	assert_non_null(strstr(line, "fails=0"));

	/* And its pages check out. */
	uint32_t req = lm_vm_request_verify(dst), done = 0, result = 1;
	assert_true(console_wait(&cdst, "verify ok pages=", 0, line, sizeof(line), dst));
	double end = now_s() + DEADLINE_S;
	while (now_s() < end) {
		lm_vm_verify_status(dst, NULL, &done, &result);
		if (done == req)
			break;
		msleep(20);
	}
	assert_int_equal(done, req);
	assert_int_equal(result, 0);
	assert_int_equal(console_count(&cdst, "FAIL", NULL, 0), 0);
	assert_int_equal(console_count(&cdst, "went backwards", NULL, 0), 0);
	assert_int_equal(console_count(&cdst, "exception", NULL, 0), 0);

	lm_vm_quit(dst, 0);
	int st = -1;
	assert_int_equal(lm_vm_wait(dst, -1, &st), 0);
	assert_int_equal(st, 0);
	lm_vm_free(dst);
	free(csrc.text);
	free(cdst.text);
}

/* Pause and resume many times in a row: no progress is lost and nothing
 * breaks (I/O in flight is completed before each pause). */
static void test_pause_storm(void **state)
{
	static struct console con = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct lm_vm_config cfg = {
	    .mem_size = 64ull << 20,
	    .ncpus = 2,
	    .kernel = guest,
	    .cmdline = "workload=hotset mem=16M wss=4M rate=5M progress=100",
	    .console_fd = -1,
	    .console_fn = console_line,
	    .console_opaque = &con,
	};
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&cfg, &vm), 0);
	assert_int_equal(lm_vm_pause(vm), 0); /* paused before start: starts paused */
	assert_int_equal(lm_vm_start(vm), 0);
	msleep(200);
	assert_int_equal(console_count(&con, "livemig-guest", NULL, 0), 0);
	assert_int_equal(lm_vm_resume(vm), 0);
	char line[1024];
	assert_true(console_wait(&con, "progress t=", 0, line, sizeof(line), vm));
	for (int i = 0; i < 200; i++) {
		assert_int_equal(lm_vm_pause(vm), 0);
		if (i % 50 == 0) {
			uint8_t *blob;
			size_t len;
			assert_int_equal(lm_vm_state_save(vm, &blob, &len), 0);
			free(blob);
		}
		assert_int_equal(lm_vm_resume(vm), 0);
		msleep(2);
	}
	int have = console_count(&con, "progress t=", NULL, 0);
	assert_true(console_wait(&con, "progress t=", have, line, sizeof(line), vm));
	assert_non_null(strstr(line, "fails=0"));
	lm_vm_quit(vm, 3);
	int st = 0;
	assert_int_equal(lm_vm_wait(vm, -1, &st), 0);
	assert_int_equal(st, 3);
	assert_string_equal(lm_vm_stop_reason(vm), "quit");
	lm_vm_free(vm);
	assert_int_equal(count_lines(con.text, "FAIL", NULL, 0), 0);
	free(con.text);
}

static int group_setup(void **state)
{
	livemig = getenv("LIVEMIG");
	guest = getenv("GUEST_ELF");
	if (!livemig || !guest) {
		fprintf(stderr, "set LIVEMIG and GUEST_ELF\n");
		return -1;
	}
	if (!mkdtemp(tmpdir))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	for (size_t i = 0; i < nspawned; i++)
		if (waitpid(spawned[i], NULL, WNOHANG) == 0) {
			kill(spawned[i], SIGKILL);
			waitpid(spawned[i], NULL, 0);
		}
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_run_console),	     cmocka_unit_test(test_bad_usage),
	    cmocka_unit_test(test_pause_resume),     cmocka_unit_test(test_control_errors),
	    cmocka_unit_test(test_state_round_trip), cmocka_unit_test(test_pause_storm),
	    cmocka_unit_test(test_mem_1t),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
