/*
 * End-to-end tests of the VMM: the livemig command (env LIVEMIG) running
 * the guest image (env GUEST_ELF) with its serial console and control
 * socket, and an in-process state round trip through the lm_vm API.
 *
 * Waits have generous deadlines that only turn a hang into a failure; no
 * assertion depends on how fast anything runs.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/bitmap.h"
#include "livemig/vmm.h"
#include "support/live.h"
#include "support/live_assert.h"
#include "support/vm_inproc.h"

#define DEADLINE_S 90

/* ---- tests -------------------------------------------------------------- */

static void test_run_console(void **state)
{
	const char *out = lm_live_path("run.out");
	const char *args[] = {
	    "run",
	    lm_live_guest(),
	    "--mem",
	    "128M",
	    "--append",
	    "workload=hotset mem=32M wss=8M rate=10M exit_after=2 verify=1 progress=500",
	    NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	int rc = lm_live_wait(pid, DEADLINE_S);
	char *t = lm_live_slurp(out);
	if (rc != 0)
		lm_live_dump(out, SIZE_MAX);
	assert_int_equal(rc, 0);
	assert_true(lm_live_count(t, "livemig-guest: workload=hotset", NULL, 0) == 1);
	/* A check after setup and one at exit. */
	assert_true(lm_live_count(t, "verify ok pages=", NULL, 0) >= 2);
	assert_true(lm_live_count(t, "progress t=", NULL, 0) >= 1);
	assert_int_equal(lm_live_count(t, "FAIL", NULL, 0), 0);
	assert_true(lm_live_count(t, "livemig-guest: exit status=0", NULL, 0) == 1);
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
	const char *out = lm_live_path("usage.out");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[8];
		for (int k = 0; k < 8; k++)
			args[k] =
			    bad[i][k] && !strcmp(bad[i][k], "GUEST") ? lm_live_guest() : bad[i][k];
		int rc = lm_live_wait(lm_live_expect_spawn(out, args), DEADLINE_S);
		char *t = lm_live_slurp(out);
		if (rc == 0 || !strstr(t, "livemig run:"))
			fprintf(stderr, "case %zu: rc=%d output: %s\n", i, rc, t);
		assert_true(rc == 1 || rc == 2);
		assert_non_null(strstr(t, "livemig run:"));
		free(t);
	}
	const char *help[] = {"run", "--help", NULL};
	assert_int_equal(lm_live_wait(lm_live_expect_spawn(out, help), DEADLINE_S), 0);
	char *t = lm_live_slurp(out);
	assert_non_null(strstr(t, "--control"));
	free(t);
}

static void test_pause_resume(void **state)
{
	const char *out = lm_live_path("pause.out"), *sock = lm_live_path("pause.sock");
	const char *args[] = {"run",	   lm_live_guest(),
			      "--mem",	   "128M",
			      "--cpus",	   "2",
			      "--control", sock,
			      "--append",  "workload=hotset mem=32M wss=8M rate=10M progress=200",
			      NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	struct lm_live_ctl c;
	lm_live_expect_ctl_open(&c, sock, DEADLINE_S);
	lm_live_expect_status(&c, "running");
	char line[1024];
	assert_true(lm_live_wait_line(out, "progress t=", 1, line, sizeof(line), pid, DEADLINE_S));

	lm_live_expect_ok(&c, "{\"execute\":\"stop\"}", NULL, 0);
	lm_live_expect_status(&c, "paused");
	char *t = lm_live_slurp(out);
	int before = lm_live_count(t, "progress t=", line, sizeof(line));
	free(t);
	uint64_t writes = lm_live_line_u64(line, "writes=");
	/* Paused for a while: the guest prints nothing (its progress lines
	 * come every 200 ms of its own time, which does not pass). */
	lm_live_msleep(1000);
	t = lm_live_slurp(out);
	assert_int_equal(lm_live_count(t, "progress t=", NULL, 0), before);
	free(t);
	lm_live_expect_ok(&c, "{\"execute\":\"stop\"}", NULL, 0); /* stopping twice is fine */

	lm_live_expect_ok(&c, "{\"execute\":\"cont\"}", NULL, 0);
	lm_live_expect_status(&c, "running");
	assert_true(
	    lm_live_wait_line(out, "progress t=", before + 1, line, sizeof(line), pid, DEADLINE_S));
	assert_true(lm_live_line_u64(line, "writes=") > writes);
	assert_non_null(strstr(line, "fpu=ok"));

	lm_live_expect_ok(&c, "{\"execute\":\"quit\"}", NULL, 0);
	lm_live_ctl_close(&c);
	int rc = lm_live_wait(pid, DEADLINE_S);
	if (rc != 0)
		lm_live_dump(out, SIZE_MAX);
	assert_int_equal(rc, 0);
	assert_int_equal(access(sock, F_OK), -1); /* the socket file is removed */
	t = lm_live_slurp(out);
	assert_int_equal(lm_live_count(t, "FAIL", NULL, 0), 0);
	assert_int_equal(lm_live_count(t, "went backwards", NULL, 0), 0);
	free(t);
}

static void test_control_errors(void **state)
{
	const char *out = lm_live_path("ctl.out"), *sock = lm_live_path("ctl.sock");
	const char *con = lm_live_path("ctl.console");
	const char *args[] = {"run",	   lm_live_guest(),
			      "--mem",	   "64M",
			      "--control", sock,
			      "--console", con,
			      "--append",  "workload=hotset mem=16M wss=4M rate=5M progress=200",
			      NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	struct lm_live_ctl c;
	lm_live_expect_ctl_open(&c, sock, DEADLINE_S);
	char reply[4096];

	/* Requests are framed by JSON value, not by line: a value cut short
	 * is waited for, so malformed JSON is what gets an error here (the
	 * framing cases are in test_control_qmp.c). */
	lm_live_expect_error(&c, "{\"execute\":}");
	lm_live_expect_error(&c, "this is not json");
	lm_live_expect_error(&c, "[1, 2, 3]");		 /* not an object */
	lm_live_expect_error(&c, "{\"exec\":\"stop\"}"); /* no execute */
	lm_live_expect_error(&c, "{\"execute\":42}");
	lm_live_expect_reply(&c, "{\"execute\":\"no-such-command\"}", reply, sizeof(reply));
	assert_non_null(strstr(reply, "\"class\":\"CommandNotFound\""));
	lm_live_expect_error(&c, "{\"execute\":\"stop\",\"arguments\":5}");
	lm_live_expect_error(&c, "{\"execute\":\"stop\",\"arguments\":{\"now\":true}}");
	lm_live_expect_error(&c, "{\"execute\":\"query-status\",\"extra\":1}");
	/* The id comes back with the answer, error or not. */
	lm_live_expect_reply(&c, "{\"execute\":\"no-such-command\",\"id\":\"abc\"}", reply,
			     sizeof(reply));
	assert_non_null(strstr(reply, "\"id\":\"abc\""));
	lm_live_expect_reply(&c, "{\"execute\":\"query-status\",\"id\":7}", reply, sizeof(reply));
	assert_non_null(strstr(reply, "\"id\":7"));
	lm_live_expect_ok(&c, "{\"execute\":\"qmp_capabilities\"}", NULL, 0);
	lm_live_expect_reply(&c, "{\"execute\":\"query-commands\"}", reply, sizeof(reply));
	assert_non_null(strstr(reply, "\"query-status\""));

	/* None of that touched the VM: it is running and makes progress. */
	lm_live_expect_status(&c, "running");
	char *t = lm_live_slurp(con);
	int have = lm_live_count(t, "progress t=", NULL, 0);
	free(t);
	if (!lm_live_wait_line(con, "progress t=", have, NULL, 0, pid, DEADLINE_S)) {
		lm_live_dump(con, SIZE_MAX);
		lm_live_dump(out, SIZE_MAX);
		fail();
	}

	/* A second client is served too, and a client that disconnects
	 * mid-request does not disturb the server. */
	struct lm_live_ctl c2;
	lm_live_expect_ctl_open(&c2, sock, DEADLINE_S);
	assert_int_equal(write(c2.fd, "{\"execute\":\"query-st", 20), 20);
	lm_live_ctl_close(&c2);
	lm_live_expect_status(&c, "running");

	/* SIGTERM shuts the VM down cleanly: exit 128+15, socket removed. The
	 * console went to its file, nothing of it to stdout. */
	lm_live_ctl_close(&c);
	lm_live_kill(pid, SIGTERM);
	int rc = lm_live_wait(pid, DEADLINE_S);
	if (rc != 128 + SIGTERM)
		lm_live_dump(out, SIZE_MAX);
	assert_int_equal(rc, 128 + SIGTERM);
	assert_int_equal(access(sock, F_OK), -1);
	t = lm_live_slurp(out);
	assert_int_equal(lm_live_count(t, "progress t=", NULL, 0), 0);
	free(t);
}

static void test_mem_1t(void **state)
{
	const char *out = lm_live_path("1t.out");
	const char *args[] = {
	    "run",
	    lm_live_guest(),
	    "--mem",
	    "1T",
	    "--append",
	    "workload=hotset mem=32M wss=8M rate=10M exit_after=2 verify=1 progress=500",
	    NULL};
	int rc = lm_live_wait(lm_live_expect_spawn(out, args), DEADLINE_S * 2);
	char *t = lm_live_slurp(out);
	if (rc != 0)
		lm_live_dump(out, SIZE_MAX);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(t, "ram_top=1025G"));
	assert_true(lm_live_count(t, "verify ok pages=", NULL, 0) >= 2);
	assert_int_equal(lm_live_count(t, "FAIL", NULL, 0), 0);
	free(t);
}

/* ---- in-process state round trip --------------------------------------- */

static void test_state_round_trip(void **state)
{
	/* Static: should an assertion fail, the VMs are leaked still running
	 * and must not write into a later test's stack. */
	static struct lm_test_console csrc = LM_TEST_CONSOLE_INIT, cdst = LM_TEST_CONSOLE_INIT;
	struct lm_vm_config cfg = {
	    .mem_size = 128ull << 20,
	    .ncpus = 1,
	    .kernel = lm_live_guest(),
	    .cmdline = "workload=hotset mem=32M wss=8M rate=10M progress=200 seed=5",
	    .console_fd = -1,
	    .console_fn = lm_test_console_line,
	    .console_opaque = &csrc,
	};
	struct lm_vm *src = NULL, *dst = NULL;
	assert_int_equal(lm_vm_new(&cfg, &src), 0);
	assert_int_equal(lm_vm_start(src), 0);
	char line[1024];
	bool ok =
	    lm_test_console_wait(&csrc, "progress t=", 1, line, sizeof(line), src, DEADLINE_S);
	if (!ok)
		fprintf(stderr, "source console:\n%s\n", csrc.text ? csrc.text : "");
	assert_true(ok);

	assert_int_equal(lm_vm_pause(src), 0);
	assert_true(lm_vm_is_paused(src));
	lm_test_console_count(&csrc, "progress t=", line, sizeof(line));
	uint64_t writes = lm_live_line_u64(line, "writes=");
	assert_true(writes > 0);
	uint8_t *blob = NULL;
	size_t len = 0;
	assert_int_equal(lm_vm_state_save(src, &blob, &len), 0);

	/* A brand-new VM with no kernel receives RAM and state. */
	cfg.kernel = NULL;
	cfg.cmdline = NULL;
	cfg.console_opaque = &cdst;
	assert_int_equal(lm_vm_new(&cfg, &dst), 0);
	lm_test_vm_copy_ram(dst, src);
	lm_vm_free(src); /* the source never runs again */
	assert_int_equal(lm_vm_state_load(dst, blob, len), 0);
	free(blob);
	assert_int_equal(lm_vm_start(dst), 0);

	/* The guest continues: its write counter keeps growing from where it
	 * was, its vector registers still hold the canary, and its TSC did
	 * not go backwards. */
	ok = lm_test_console_wait(&cdst, "progress t=", 1, line, sizeof(line), dst, DEADLINE_S);
	if (!ok)
		fprintf(stderr, "destination console:\n%s\n", cdst.text ? cdst.text : "");
	assert_true(ok);
	assert_true(lm_live_line_u64(line, "writes=") > writes);
	assert_non_null(strstr(line, "fpu=ok"));
	assert_non_null(strstr(line, "fails=0"));

	/* And its pages check out. */
	uint32_t req = lm_vm_request_verify(dst), done = 0, result = 1;
	assert_true(lm_test_console_wait(&cdst, "verify ok pages=", 0, line, sizeof(line), dst,
					 DEADLINE_S));
	lm_test_vm_wait_verified(dst, req, &done, &result, DEADLINE_S);
	assert_int_equal(done, req);
	assert_int_equal(result, 0);
	assert_int_equal(lm_test_console_count(&cdst, "FAIL", NULL, 0), 0);
	assert_int_equal(lm_test_console_count(&cdst, "went backwards", NULL, 0), 0);
	assert_int_equal(lm_test_console_count(&cdst, "exception", NULL, 0), 0);

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
	static struct lm_test_console con = LM_TEST_CONSOLE_INIT;
	struct lm_vm_config cfg = {
	    .mem_size = 64ull << 20,
	    .ncpus = 2,
	    .kernel = lm_live_guest(),
	    .cmdline = "workload=hotset mem=16M wss=4M rate=5M progress=100",
	    .console_fd = -1,
	    .console_fn = lm_test_console_line,
	    .console_opaque = &con,
	};
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&cfg, &vm), 0);
	assert_int_equal(lm_vm_pause(vm), 0); /* paused before start: starts paused */
	assert_int_equal(lm_vm_start(vm), 0);
	lm_live_msleep(200);
	assert_int_equal(lm_test_console_count(&con, "livemig-guest", NULL, 0), 0);
	assert_int_equal(lm_vm_resume(vm), 0);
	char line[1024];
	assert_true(
	    lm_test_console_wait(&con, "progress t=", 0, line, sizeof(line), vm, DEADLINE_S));
	for (int i = 0; i < 200; i++) {
		assert_int_equal(lm_vm_pause(vm), 0);
		if (i % 50 == 0) {
			uint8_t *blob;
			size_t len;
			assert_int_equal(lm_vm_state_save(vm, &blob, &len), 0);
			free(blob);
		}
		assert_int_equal(lm_vm_resume(vm), 0);
		lm_live_msleep(2);
	}
	int have = lm_test_console_count(&con, "progress t=", NULL, 0);
	assert_true(
	    lm_test_console_wait(&con, "progress t=", have, line, sizeof(line), vm, DEADLINE_S));
	assert_non_null(strstr(line, "fails=0"));
	lm_vm_quit(vm, 3);
	int st = 0;
	assert_int_equal(lm_vm_wait(vm, -1, &st), 0);
	assert_int_equal(st, 3);
	assert_string_equal(lm_vm_stop_reason(vm), "quit");
	lm_vm_free(vm);
	assert_int_equal(lm_live_count(con.text, "FAIL", NULL, 0), 0);
	free(con.text);
}

static int group_setup(void **state)
{
	return lm_live_setup("vmm-e2e");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_run_console),	     cmocka_unit_test(test_bad_usage),
	    cmocka_unit_test(test_pause_resume),     cmocka_unit_test(test_control_errors),
	    cmocka_unit_test(test_state_round_trip), cmocka_unit_test(test_pause_storm),
	    cmocka_unit_test(test_mem_1t),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
