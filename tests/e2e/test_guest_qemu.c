/*
 * The guest image under QEMU: the very same guest/guest.elf that livemig's
 * VMM runs must boot under qemu-system-x86_64 -enable-kvm and print the
 * same lines (banner, progress, verify results), and its self-check must
 * catch pages that were deliberately damaged.
 *
 * Each case boots one small guest (64 MiB) with exit_after=N, so the
 * guest powers itself off through QEMU's isa-debug-exit device; QEMU then
 * exits with (status << 1) | 1. Boots run one after another: QEMU start-up
 * on these hosts slows down badly when several start at once.
 *
 * The -cpu model is not assumed: the first test asks `livemig bench
 * qemu-cpu` which model boots the guest on this host (support/qemu_cpu.h)
 * and every boot uses it; the tests fail on the CPU model only when no
 * candidate boots.
 *
 * Env: GUEST_ELF (default guest/guest.elf), QEMU (default
 * qemu-system-x86_64 from PATH), LIVEMIG (default build/livemig, for the
 * probe). Skips if QEMU is not installed.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "support/child.h"
#include "support/qemu_cpu.h"

#define QEMU_TIMEOUT_S 45

static char qemu_path[4096];

static bool find_qemu(void)
{
	const char *env = getenv("QEMU");
	if (env && *env) {
		snprintf(qemu_path, sizeof(qemu_path), "%s", env);
		return access(qemu_path, X_OK) == 0;
	}
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	char *dup = strdup(path);
	bool found = false;
	for (char *save = NULL, *dir = strtok_r(dup, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(qemu_path, sizeof(qemu_path), "%s/qemu-system-x86_64", dir);
		if (access(qemu_path, X_OK) == 0) {
			found = true;
			break;
		}
	}
	free(dup);
	return found;
}

static const char *guest_elf(void)
{
	const char *env = getenv("GUEST_ELF");
	if (env && *env)
		return env;
	return "guest/guest.elf";
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 == cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb) {
				free(buf);
				buf = NULL;
			}
			buf = nb;
		}
	}
	fclose(f);
	if (buf)
		buf[len] = 0;
	return buf;
}

/*
 * Boots the guest with the given command line and returns its serial
 * output (malloc'd) and QEMU's exit status (-1 if it had to be killed).
 */
static char *run_guest(const char *append, int *status)
{
	const char *cpu = lm_test_qemu_cpu(qemu_path, guest_elf());
	if (!cpu)
		fail_msg("no QEMU -cpu model boots the guest on this host (candidates above)");
	char log[] = "/tmp/livemig-guest-qemu-XXXXXX";
	int fd = mkstemp(log);
	assert_true(fd >= 0);
	close(fd);
	char serial[sizeof(log) + 8];
	snprintf(serial, sizeof(serial), "file:%s", log);

	const char *elf = guest_elf();
	assert_int_equal(access(elf, R_OK), 0);
	char *argv[24];
	int n = 0;
	argv[n++] = qemu_path;
	argv[n++] = "-enable-kvm";
	if (strcmp(cpu, "default")) {
		argv[n++] = "-cpu";
		argv[n++] = (char *)cpu;
	}
	char *rest[] = { "-m", "64M", "-display", "none", "-monitor", "none", "-serial", serial, "-no-reboot",
			 "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", (char *)elf, "-append",
			 (char *)append, NULL };
	for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++)
		argv[n++] = rest[i];
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		lm_test_die_with_parent(parent);
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		execv(qemu_path, argv);
		_exit(127);
	}
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int wstatus = 0;
	*status = -1;
	for (;;) {
		pid_t r = waitpid(pid, &wstatus, WNOHANG);
		if (r == pid) {
			if (WIFEXITED(wstatus))
				*status = WEXITSTATUS(wstatus);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > QEMU_TIMEOUT_S) {
			kill(pid, SIGKILL);
			waitpid(pid, &wstatus, 0);
			break;
		}
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	char *out = read_file(log);
	unlink(log);
	assert_non_null(out);
	if (getenv("LIVEMIG_TEST_VERBOSE"))
		fprintf(stderr, "--- %s\n%s--- qemu status %d\n", append, out, *status);
	return out;
}

static int count(const char *text, const char *needle)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* The values of "key=" in lines starting with prefix, in order. */
static int values(const char *text, const char *prefix, const char *key, unsigned long long *v, int max)
{
	int n = 0;
	size_t plen = strlen(prefix);
	for (const char *line = text; line && *line && n < max;) {
		const char *end = strchr(line, '\n');
		if (!strncmp(line, prefix, plen)) {
			const char *k = strstr(line, key);
			if (k && (!end || k < end))
				v[n++] = strtoull(k + strlen(key), NULL, 10);
		}
		line = end ? end + 1 : NULL;
	}
	return n;
}

static int setup(void **state)
{
	(void)state;
	return 0;
}

#define NEED_QEMU()                                                       \
	do {                                                              \
		if (!find_qemu()) {                                       \
			fprintf(stderr, "qemu-system-x86_64 not found\n"); \
			skip();                                           \
		}                                                         \
	} while (0)

/* A paced hotset: banner with the parsed parameters, progress lines
 * whose write counter grows, a check after setup and at exit, status 0. */
static void test_hotset_progress_and_verify(void **state)
{
	(void)state;
	NEED_QEMU();
	int status;
	char *out = run_guest("workload=hotset mem=32M wss=4M rate=8M seed=7 verify=1 exit_after=3",
			      &status);
	assert_non_null(strstr(out, "livemig-guest: workload=hotset mem=32M wss=4M rate=8M seed=7 verify=1"));
	unsigned long long w[16];
	int n = values(out, "progress t=", " writes=", w, 16);
	assert_true(n >= 2);
	for (int i = 1; i < n; i++)
		assert_true(w[i] > w[i - 1]);
	assert_true(w[0] > 0);
	assert_int_equal(count(out, "verify ok pages="), 2);
	assert_int_equal(count(out, "verify FAIL"), 0);
	assert_non_null(strstr(out, "exit status=0"));
	assert_int_equal(status, 1);
	free(out);
}

/* memtouch writes every page once; the check then sees all of them
 * written and intact. */
static void test_memtouch_fills_and_verifies(void **state)
{
	(void)state;
	NEED_QEMU();
	int status;
	char *out = run_guest("workload=memtouch verify=1 exit_after=1", &status);
	unsigned long long done[2], checked[4], written[4];
	assert_int_equal(values(out, "memtouch done", " pages=", done, 2), 1);
	assert_true(done[0] > 10000);
	int n = values(out, "verify ok", " pages=", checked, 4);
	assert_int_equal(n, 2);
	assert_int_equal(values(out, "verify ok", " written=", written, 4), 2);
	for (int i = 0; i < n; i++) {
		assert_int_equal(checked[i], done[0]);
		assert_int_equal(written[i], done[0]);
	}
	assert_int_equal(status, 1);
	free(out);
}

/* selftest=all corrupts one page, rolls another back to its previous
 * version and rolls a third page's version-table entry back: the checker
 * must name each, and the guest must exit with status 1. */
static void test_selftest_damage_is_caught(void **state)
{
	(void)state;
	NEED_QEMU();
	int status;
	char *out = run_guest("workload=hotset wss=1M rate=16M selftest=all verify=1 exit_after=2",
			      &status);
	const char *st = strstr(out, "verify start reason=selftest");
	assert_non_null(st);
	/* Before the damage all was well. */
	assert_non_null(strstr(out, "verify ok pages="));
	assert_true(strstr(out, "verify ok pages=") < st);
	assert_non_null(strstr(st, "(corrupt page)"));
	assert_non_null(strstr(st, "(stale page)"));
	assert_non_null(strstr(st, "(stale version table)"));
	assert_non_null(strstr(st, "verify FAIL bad="));
	assert_non_null(strstr(out, "exit status=1"));
	assert_int_equal(status, 3);
	free(out);
}

/* A periodic workload, plus an unknown key that must only warn. */
static void test_contig_and_unknown_key(void **state)
{
	(void)state;
	NEED_QEMU();
	int status;
	char *out = run_guest("workload=contig wss=4M period=250 verify=1 exit_after=2 bogus=1", &status);
	assert_non_null(strstr(out, "warning: unknown parameter 'bogus=1'"));
	assert_non_null(strstr(out, "livemig-guest: workload=contig"));
	unsigned long long w[8];
	int n = values(out, "progress t=", " writes=", w, 8);
	assert_true(n >= 1);
	/* 4 MiB = 1024 pages rewritten every 250 ms: several rounds a second. */
	assert_true(w[n - 1] >= 2 * 1024);
	assert_int_equal(count(out, "verify ok pages="), 2);
	assert_int_equal(count(out, "verify FAIL"), 0);
	assert_int_equal(status, 1);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hotset_progress_and_verify),
		cmocka_unit_test(test_memtouch_fills_and_verifies),
		cmocka_unit_test(test_selftest_damage_is_caught),
		cmocka_unit_test(test_contig_and_unknown_key),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
