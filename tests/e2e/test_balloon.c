/*
 * End-to-end tests of the balloon: the livemig command (env LIVEMIG)
 * running the guest image (env GUEST_ELF) with its balloon driver, driven
 * through the control socket's balloon / query-balloon, plus an in-process
 * state round trip through the lm_vm API (the destination's path: a skip
 * map handed to lm_vm_new and the device state from the blob).
 *
 * What is asserted: the skip map's count (query-balloon's ballooned-pages)
 * reaches the target, the process's resident memory drops when touched
 * pages go into the balloon, the guest's own check passes with pages in
 * the balloon and after they come back, pages that come back are written
 * again, must-tell-host follows the guest's choice, and bad arguments give
 * JSON errors. Waits have generous deadlines that only turn a hang into a
 * failure; nothing depends on how fast anything runs.
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

#include "livemig/balloon.h"
#include "livemig/bitmap.h"
#include "livemig/vmm.h"

#define DEADLINE_S 90
#define MIB (1ull << 20)

static const char *livemig, *guest;
static char tmpdir[] = "/tmp/lm-balloon-e2e-XXXXXX";

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
static pid_t spawned[32];
static size_t nspawned;

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

/* Complete lines of text containing needle; the last is copied to line. */
static int count_lines(const char *text, const char *needle, char *line, size_t linelen)
{
	int n = 0;
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		if (!e)
			break;
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

static int file_count(const char *path, const char *needle, char *line, size_t linelen)
{
	char *t = slurp(path);
	int n = count_lines(t, needle, line, linelen);
	free(t);
	return n;
}

/* Waits until the file has more than `have` lines containing needle. */
static bool wait_line(const char *path, const char *needle, int have, char *line, size_t linelen)
{
	double end = now_s() + DEADLINE_S;
	while (now_s() < end) {
		if (file_count(path, needle, line, linelen) > have)
			return true;
		msleep(50);
	}
	return false;
}

static uint64_t field(const char *line, const char *key)
{
	const char *p = strstr(line, key);
	if (!p)
		fprintf(stderr, "no '%s' in: %s\n", key, line);
	assert_non_null(p);
	return strtoull(p + strlen(key), NULL, 10);
}

/* A JSON member's value: "key": then optional spaces, then a number,
 * or true/false as 1/0. */
static uint64_t jfield(const char *reply, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(reply, k);
	if (!p)
		fprintf(stderr, "no %s in: %s\n", k, reply);
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

static void dump(const char *path)
{
	char *t = slurp(path);
	fprintf(stderr, "---- %s\n%s----\n", path, t);
	free(t);
}

/* Resident memory of a process in KiB (VmRSS). */
static uint64_t rss_kib(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	uint64_t kib = 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kib = strtoull(line + 6, NULL, 10);
	fclose(f);
	return kib;
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
	if (!strstr(reply, "\"error\""))
		fprintf(stderr, "request %s -> %s (an error was expected)\n", req, reply);
	assert_non_null(strstr(reply, "\"error\""));
	assert_non_null(strstr(reply, "\"GenericError\""));
	assert_non_null(strstr(reply, "\"desc\""));
}

static void set_balloon(struct ctl *c, uint64_t bytes)
{
	char req[128];
	snprintf(req, sizeof(req), "{\"execute\":\"balloon\",\"arguments\":{\"value\":%llu}}",
		 (unsigned long long)bytes);
	expect_ok(c, req);
}

struct bq {
	uint64_t actual, ballooned, target, guest_actual;
	bool mth, driver;
};

static void query_balloon(struct ctl *c, struct bq *q)
{
	char reply[4096];
	ctl_raw(c, "{\"execute\":\"query-balloon\"}", reply, sizeof(reply));
	if (!strstr(reply, "\"return\""))
		fprintf(stderr, "query-balloon -> %s\n", reply);
	assert_non_null(strstr(reply, "\"return\""));
	q->actual = jfield(reply, "actual");
	q->ballooned = jfield(reply, "ballooned-pages");
	q->target = jfield(reply, "target-pages");
	q->guest_actual = jfield(reply, "guest-actual-pages");
	q->mth = jfield(reply, "must-tell-host");
	q->driver = jfield(reply, "driver");
}

/* Polls query-balloon until the balloon holds `pages` pages. */
static void wait_ballooned(struct ctl *c, uint64_t pages, struct bq *q)
{
	double end = now_s() + DEADLINE_S;
	for (;;) {
		query_balloon(c, q);
		if (q->ballooned == pages && q->guest_actual == pages)
			return;
		if (now_s() > end)
			fprintf(stderr, "balloon holds %llu pages, waited for %llu\n",
				(unsigned long long)q->ballooned, (unsigned long long)pages);
		assert_true(now_s() <= end);
		msleep(50);
	}
}

/* Asks the guest to check its pages and waits for a passing check; the
 * "verify ok" line is copied into line. */
static void guest_verify(struct ctl *c, const char *out, char *line, size_t linelen)
{
	int have = file_count(out, "verify ok pages=", NULL, 0);
	int fails = file_count(out, "FAIL", NULL, 0);
	expect_ok(c, "{\"execute\":\"guest-verify\"}");
	bool ok = wait_line(out, "verify ok pages=", have, line, linelen);
	if (!ok || file_count(out, "FAIL", NULL, 0) != fails)
		dump(out);
	assert_true(ok);
	assert_int_equal(file_count(out, "FAIL", NULL, 0), fails);
}

static void quit_and_check(struct ctl *c, pid_t pid, const char *out)
{
	expect_ok(c, "{\"execute\":\"quit\"}");
	close(c->fd);
	int rc = wait_exit(pid, DEADLINE_S);
	if (rc != 0)
		dump(out);
	assert_int_equal(rc, 0);
	assert_int_equal(file_count(out, "FAIL", NULL, 0), 0);
	assert_int_equal(file_count(out, "exception", NULL, 0), 0);
}

/* ---- tests -------------------------------------------------------------- */

/*
 * A 1 GiB guest that has written all its pages inflates to leave 512 MiB:
 * query-balloon and the skip map say so, the process gives the memory
 * back to the host, the guest's check passes; deflated again, the check
 * still passes (the pages came back zero, as never-written pages).
 */
static void test_inflate_deflate(void **state)
{
	const char *out = path_in_tmp("inflate.out"), *sock = path_in_tmp("inflate.sock");
	const char *args[] = {"run", guest, "--mem", "1G", "--control", sock, "--append",
			      "workload=memtouch verify=1 progress=0", NULL};
	pid_t pid = spawn(out, args);
	char line[1024];
	bool ok = wait_line(out, "verify ok pages=", 0, line, sizeof(line));
	if (!ok)
		dump(out);
	assert_true(ok); /* memtouch done and checked */
	struct ctl c;
	ctl_open(&c, sock);
	struct bq q;
	query_balloon(&c, &q);
	assert_int_equal(q.ballooned, 0);
	assert_int_equal(q.actual, 1024 * MIB);
	assert_true(q.driver);
	assert_true(q.mth);
	uint64_t rss0 = rss_kib(pid);
	assert_true(rss0 > 900 * 1024); /* memtouch wrote all of it */

	set_balloon(&c, 512 * MIB);
	wait_ballooned(&c, 131072, &q);
	assert_int_equal(q.target, 131072);
	assert_int_equal(q.actual, 512 * MIB);
	assert_true(wait_line(out, "balloon actual=131072 target=131072", 0, NULL, 0));
	uint64_t rss1 = rss_kib(pid);
	if (rss1 + 400 * 1024 > rss0)
		fprintf(stderr, "VmRSS %llu KiB before, %llu KiB after inflating 512 MiB\n",
			(unsigned long long)rss0, (unsigned long long)rss1);
	assert_true(rss1 + 400 * 1024 <= rss0);
	guest_verify(&c, out, line, sizeof(line));

	/* A target above RAM means an empty balloon, as in QEMU. */
	set_balloon(&c, 4096 * MIB);
	wait_ballooned(&c, 0, &q);
	assert_int_equal(q.target, 0);
	assert_int_equal(q.actual, 1024 * MIB);
	guest_verify(&c, out, line, sizeof(line));
	quit_and_check(&c, pid, out);
}

/*
 * Pages that leave the balloon are the workload's again: a hotset over
 * all memory writes them, and its check passes throughout.
 */
static void test_deflated_pages_reused(void **state)
{
	const char *out = path_in_tmp("reuse.out"), *sock = path_in_tmp("reuse.sock");
	const char *args[] = {"run", guest, "--mem", "1G", "--control", sock, "--append",
			      "workload=hotset wss=1G rate=200M verify=1 progress=500", NULL};
	pid_t pid = spawn(out, args);
	char line[1024];
	bool ok = wait_line(out, "livemig-guest: balloon offered=", 0, NULL, 0) &&
		  wait_line(out, "progress t=", 0, NULL, 0);
	if (!ok)
		dump(out);
	assert_true(ok);
	assert_true(file_count(out, "livemig-guest: ram_top=", line, sizeof(line)) == 1);
	uint64_t npages = field(line, " pages=");
	struct ctl c;
	ctl_open(&c, sock);
	struct bq q;
	set_balloon(&c, 512 * MIB);
	wait_ballooned(&c, 131072, &q);
	uint64_t owned = npages - 131072;
	guest_verify(&c, out, line, sizeof(line));
	assert_true(field(line, "written=") <= owned);

	set_balloon(&c, 1024 * MIB);
	wait_ballooned(&c, 0, &q);
	/* Check until the workload has written more pages than it owned
	 * while ballooned: some of them are pages that came back. */
	double end = now_s() + DEADLINE_S;
	for (;;) {
		guest_verify(&c, out, line, sizeof(line));
		if (field(line, "written=") > owned)
			break;
		assert_true(now_s() < end);
		msleep(300);
	}
	quit_and_check(&c, pid, out);
}

/*
 * A guest that declines must-tell-host (balloon_mtl=0) is reported so; its
 * balloon still works. Bad arguments to the commands are JSON errors.
 */
static void test_no_mth_and_errors(void **state)
{
	const char *out = path_in_tmp("nomth.out"), *sock = path_in_tmp("nomth.sock");
	const char *args[] = {"run", guest, "--mem", "256M", "--control", sock, "--append",
			      "workload=hotset mem=64M wss=16M rate=20M verify=1 balloon_mtl=0 progress=0",
			      NULL};
	pid_t pid = spawn(out, args);
	assert_true(wait_line(out, "livemig-guest: balloon offered=0x1 accepted=0", 0, NULL, 0));
	struct ctl c;
	ctl_open(&c, sock);
	struct bq q;
	query_balloon(&c, &q);
	assert_true(q.driver);
	assert_false(q.mth);
	set_balloon(&c, 128 * MIB);
	wait_ballooned(&c, 32768, &q);
	assert_false(q.mth);
	char line[1024];
	guest_verify(&c, out, line, sizeof(line));

	expect_error(&c, "{\"execute\":\"balloon\"}");
	expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{}}");
	expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":\"1G\"}}");
	expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":0}}");
	expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":-4096}}");
	expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":1.5}}");
	expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":4096,\"x\":1}}");
	expect_error(&c, "{\"execute\":\"query-balloon\",\"arguments\":{\"x\":1}}");
	/* Nothing changed. */
	query_balloon(&c, &q);
	assert_int_equal(q.target, 32768);
	assert_int_equal(q.ballooned, 32768);
	quit_and_check(&c, pid, out);
}

/* balloon=0 turns the driver off: the target is set, nothing moves. */
static void test_driver_off(void **state)
{
	const char *out = path_in_tmp("off.out"), *sock = path_in_tmp("off.sock");
	const char *args[] = {"run", guest, "--mem", "128M", "--control", sock, "--append",
			      "workload=hotset mem=32M wss=8M rate=10M balloon=0 progress=200", NULL};
	pid_t pid = spawn(out, args);
	assert_true(wait_line(out, "progress t=", 0, NULL, 0));
	struct ctl c;
	ctl_open(&c, sock);
	set_balloon(&c, 64 * MIB);
	int have = file_count(out, "progress t=", NULL, 0);
	assert_true(wait_line(out, "progress t=", have + 2, NULL, 0)); /* the guest polled by now */
	struct bq q;
	query_balloon(&c, &q);
	assert_false(q.driver);
	assert_false(q.mth);
	assert_int_equal(q.target, 16384);
	assert_int_equal(q.ballooned, 0);
	assert_int_equal(file_count(out, "balloon", NULL, 0), 0);
	quit_and_check(&c, pid, out);
}

/* ---- in-process: the destination's path --------------------------------- */

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

static bool console_wait(struct console *c, const char *needle, int have, struct lm_vm *vm)
{
	double end = now_s() + DEADLINE_S;
	while (now_s() < end) {
		if (console_count(c, needle, NULL, 0) > have)
			return true;
		if (lm_vm_wait(vm, 0, NULL) != -EINTR)
			return console_count(c, needle, NULL, 0) > have;
		msleep(20);
	}
	return false;
}

static void wait_info(struct lm_vm *vm, uint64_t pages)
{
	double end = now_s() + DEADLINE_S;
	uint64_t actual = ~0ull;
	while (now_s() < end) {
		lm_vm_balloon_info(vm, NULL, &actual, NULL);
		if (actual == pages)
			return;
		msleep(20);
	}
	fprintf(stderr, "balloon holds %llu pages, waited for %llu\n", (unsigned long long)actual,
		(unsigned long long)pages);
	fail();
}

static void verify_in_process(struct lm_vm *vm, struct console *con)
{
	int have = console_count(con, "verify ok pages=", NULL, 0);
	uint32_t req = lm_vm_request_verify(vm), done = 0, result = 1;
	double end = now_s() + DEADLINE_S;
	while (now_s() < end) {
		lm_vm_verify_status(vm, NULL, &done, &result);
		if (done == req)
			break;
		msleep(20);
	}
	if (done != req || result != 0)
		fprintf(stderr, "console:\n%s\n", con->text ? con->text : "");
	assert_int_equal(done, req);
	assert_int_equal(result, 0);
	assert_true(console_count(con, "verify ok pages=", NULL, 0) > have);
}

/*
 * Source VM inflates; its RAM, skip map and state go to a brand-new VM
 * (as a migration destination builds it); there the balloon is known
 * (target, must-tell-host, the pages), the guest checks out, and it can
 * deflate.
 */
static void test_state_carries_balloon(void **state)
{
	static struct console csrc = {.lock = PTHREAD_MUTEX_INITIALIZER},
			      cdst = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct lm_vm_config cfg = {
	    .mem_size = 256 * MIB,
	    .ncpus = 1,
	    .kernel = guest,
	    .cmdline = "workload=hotset wss=256M rate=50M progress=200 seed=3",
	    .console_fd = -1,
	    .console_fn = console_line,
	    .console_opaque = &csrc,
	};
	struct lm_vm *src = NULL, *dst = NULL;
	assert_int_equal(lm_vm_new(&cfg, &src), 0);
	assert_int_equal(lm_vm_start(src), 0);
	assert_true(console_wait(&csrc, "progress t=", 1, src));
	assert_int_equal(lm_vm_balloon_set_target(src, 20000), 0);
	assert_int_equal(lm_vm_balloon_set_target(src, (256 * MIB >> 12) + 1), -EINVAL);
	wait_info(src, 20000);
	verify_in_process(src, &csrc);

	assert_int_equal(lm_vm_pause(src), 0);
	uint8_t *blob = NULL;
	size_t len = 0;
	assert_int_equal(lm_vm_state_save(src, &blob, &len), 0);

	/* The destination receives the skip map with RAM, before the VM. */
	lm_skip_map *sm = lm_vm_skip_map(src), *copy = NULL;
	uint64_t np = lm_skip_map_npages(sm);
	assert_int_equal(np, 256 * MIB >> 12);
	assert_int_equal(lm_skip_map_new(np, &copy), 0);
	uint64_t *words = calloc((np + 63) / 64, 8);
	assert_int_equal(lm_skip_map_get(sm, 0, np, words), 0);
	for (uint64_t p = 0; p < np; p++)
		if (words[p / 64] >> (p % 64) & 1)
			assert_int_equal(lm_skip_map_set(copy, p, 1), 0);
	free(words);
	assert_int_equal(lm_skip_map_count(copy), 20000);

	cfg.kernel = NULL;
	cfg.cmdline = NULL;
	cfg.console_opaque = &cdst;
	cfg.skip_map = copy;
	assert_int_equal(lm_vm_new(&cfg, &dst), 0);
	assert_ptr_equal(lm_vm_skip_map(dst), copy);
	for (unsigned i = 0; i < lm_vm_slot_count(src); i++) {
		const struct lm_vm_slot *s = lm_vm_slot(src, i), *d = lm_vm_slot(dst, i);
		for (uint64_t off = 0; off < s->size; off += 4096) {
			const uint8_t *p = (const uint8_t *)s->host + off;
			if (!lm_page_is_zero(p))
				memcpy((uint8_t *)d->host + off, p, 4096);
		}
	}
	lm_vm_free(src);
	assert_int_equal(lm_vm_state_load(dst, blob, len), 0);
	free(blob);
	uint64_t target = 0, actual = 0;
	bool mth = false;
	lm_vm_balloon_info(dst, &target, &actual, &mth);
	assert_int_equal(target, 20000);
	assert_int_equal(actual, 20000);
	assert_true(mth);

	assert_int_equal(lm_vm_start(dst), 0);
	assert_true(console_wait(&cdst, "progress t=", 0, dst));
	verify_in_process(dst, &cdst);
	assert_int_equal(lm_vm_balloon_set_target(dst, 0), 0);
	wait_info(dst, 0);
	verify_in_process(dst, &cdst);
	struct lm_balloon_stats st;
	lm_vm_balloon_stats(dst, &st);
	assert_int_equal(st.deflated, 20000);
	assert_int_equal(st.refused, 0);
	assert_int_equal(console_count(&cdst, "FAIL", NULL, 0), 0);
	lm_vm_quit(dst, 0);
	assert_int_equal(lm_vm_wait(dst, -1, NULL), 0);
	lm_vm_free(dst);
	free(csrc.text);
	free(cdst.text);
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
	    cmocka_unit_test(test_inflate_deflate),
	    cmocka_unit_test(test_deflated_pages_reused),
	    cmocka_unit_test(test_no_mth_and_errors),
	    cmocka_unit_test(test_driver_off),
	    cmocka_unit_test(test_state_carries_balloon),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
