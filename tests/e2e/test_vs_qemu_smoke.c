/*
 * Smoke test of `livemig bench vs-qemu`: the side-by-side benchmark must
 * keep working, so its smallest case (hotset-256M: a running 256 MiB guest
 * rewriting a 64 MiB hot set at 50 MB/s) runs once per peer here, and the
 * JSON it writes is checked for correctness only, never for timing: both
 * migrations completed, both reported their figures, and both destination
 * guests finished a check that started after the migration.
 *
 * One allowance, for QEMU only: on this project's hosts (nested, kvm_pvm)
 * a QEMU 7.2 migration loses the upper halves of the guest's YMM registers
 * (the guest sees AVX through CPUID whatever -cpu says, and the restored
 * state has them zeroed), which the guest reports as `verify FAIL reg=ymm..`
 * while every page checks out. The benchmark reports that verdict as
 * FAIL(reg); this test accepts it for QEMU and requires that no page was
 * wrong. livemig must pass its check outright.
 *
 * The benchmark picks QEMU's -cpu model itself (--qemu-cpu auto: the first
 * candidate that boots the guest here); the test prints the choice.
 *
 * Env: LIVEMIG (default build/livemig), GUEST_ELF (default
 * guest/guest.elf), QEMU (default qemu-system-x86_64 from PATH). Skips if
 * QEMU is not installed. Takes about 10 s.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "support/child.h"

#define BENCH_TIMEOUT_S 120

static bool have_qemu(void)
{
	const char *env = getenv("QEMU");
	if (env && *env)
		return access(env, X_OK) == 0;
	const char *path = getenv("PATH");
	char *dup = strdup(path ? path : "/usr/bin:/bin");
	char p[4096];
	bool found = false;
	for (char *save = NULL, *d = strtok_r(dup, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		snprintf(p, sizeof(p), "%s/qemu-system-x86_64", d);
		found = access(p, X_OK) == 0;
	}
	free(dup);
	return found;
}

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

/* Runs argv with stdout+stderr into out_path; returns the exit status or -1. */
static int run_cmd(char *const argv[], const char *out_path)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		lm_test_die_with_parent(parent);
		int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int null = open("/dev/null", O_RDONLY);
		if (out < 0 || null < 0)
			_exit(127);
		dup2(null, 0);
		dup2(out, 1);
		dup2(out, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int st = 0;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > BENCH_TIMEOUT_S) {
			/* The benchmark's children die with it (PR_SET_PDEATHSIG). */
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static void dump(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f))
		fputs(line, stderr);
	if (f)
		fclose(f);
}

static struct json_object *get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	if (!o || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static double num(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);
	assert_non_null(v);
	assert_true(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double));
	return json_object_get_double(v);
}

static const char *str(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);
	assert_non_null(v);
	assert_true(json_object_is_type(v, json_type_string));
	return json_object_get_string(v);
}

/* One peer's single run: completed, with figures, and checked after. */
static void check_peer(struct json_object *peers, const char *name)
{
	struct json_object *p = get(peers, name);
	assert_non_null(p);
	struct json_object *runs = get(p, "runs");
	assert_non_null(runs);
	assert_int_equal(json_object_array_length(runs), 1);
	struct json_object *r = json_object_array_get_idx(runs, 0);
	const char *status = str(r, "status");
	const char *verify = str(r, "verify");
	fprintf(stderr, "  %s: status %s, verify %s\n", name, status, verify);
	assert_string_equal(status, "completed");
	/* The guest wrote pages before the migration: they went on the wire. */
	assert_true(num(r, "transferred") > 1e6);
	assert_true(num(r, "total-time") >= 0);
	assert_true(num(r, "downtime") >= 0);
	assert_true(num(r, "dirty-sync-count") >= 1);
	if (!strcmp(name, "qemu") && !strcmp(verify, "FAIL(reg)"))
		return; /* the known QEMU-on-this-host register loss (see the top) */
	assert_string_equal(verify, "ok");
}

static void test_quick_case_both_peers(void **state)
{
	(void)state;
	if (!have_qemu()) {
		fprintf(stderr, "qemu-system-x86_64 not found\n");
		skip();
	}
	const char *livemig = env_or("LIVEMIG", "build/livemig");
	const char *guest = env_or("GUEST_ELF", "guest/guest.elf");
	assert_int_equal(access(livemig, X_OK), 0);
	assert_int_equal(access(guest, R_OK), 0);

	char dir[] = "/tmp/livemig-vsqemu-smoke-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char json[sizeof(dir) + 16], out[sizeof(dir) + 16];
	snprintf(json, sizeof(json), "%s/r.json", dir);
	snprintf(out, sizeof(out), "%s/out.txt", dir);
	char *argv[] = { (char *)livemig, "bench", "vs-qemu", "--quick", "--repeat", "1", "--guest", (char *)guest,
			 "--json", json, NULL };
	int rc = run_cmd(argv, out);
	if (rc != 0 || getenv("LIVEMIG_TEST_VERBOSE"))
		dump(out);
	assert_int_equal(rc, 0);

	struct json_object *root = json_object_from_file(json);
	assert_non_null(root);
	assert_string_equal(str(root, "benchmark"), "vs-qemu");
	struct json_object *par = get(root, "parameters");
	assert_non_null(par);
	fprintf(stderr, "  QEMU -cpu model: %s (chosen by %s)\n", str(par, "qemu-cpu"),
		str(par, "qemu-cpu-chosen-by"));
	struct json_object *tries = get(par, "qemu-cpu-probe");
	for (size_t i = 0; tries && i < json_object_array_length(tries); i++) {
		struct json_object *t = json_object_array_get_idx(tries, i);
		fprintf(stderr, "    probe %s: %s\n", str(t, "model"), str(t, "outcome"));
	}
	struct json_object *cases = get(root, "cases");
	assert_non_null(cases);
	assert_int_equal(json_object_array_length(cases), 1);
	struct json_object *c = json_object_array_get_idx(cases, 0);
	assert_string_equal(str(c, "name"), "hotset-256M");
	struct json_object *peers = get(c, "peers");
	check_peer(peers, "qemu");
	check_peer(peers, "livemig");
	/* Both peers reported bytes and times, so the ratios exist. */
	assert_true(num(c, "ratio-time") > 0);
	assert_true(num(c, "ratio-bytes") > 0);
	json_object_put(root);

	unlink(json);
	unlink(out);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quick_case_both_peers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
