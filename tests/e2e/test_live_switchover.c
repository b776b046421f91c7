/*
 * End-to-end: the switchover's cut points (docs/stream.md 3.13). The source
 * (`livemig run`) or the destination (`livemig incoming`) is killed with
 * SIGKILL at each named point of the commit (the test build of livemig,
 * LIVEMIG_HOOKS, dies where LIVEMIG_TEST_KILL_AT says). At every point:
 * the guest never runs on both sides, and it survives on the side that is
 * still alive, running or paused; a paused survivor runs on `cont` and its
 * guest then verifies every page.
 *
 * The matrix, and what each case asserts:
 *   killed      at                       survivor
 *   destination receiver-before-result   source resumed, running
 *   destination receiver-after-result    source resumed, or paused unconfirmed
 *   destination receiver-after-commit    source paused, unconfirmed (exit 3)
 *   destination receiver-after-committed source completed and exited 0;
 *                                        the guest was the destination's
 *   source      sender-after-result      destination paused, inmigrate-wait-commit
 *   source      sender-after-commit      destination running
 *   source      sender-after-committed   destination running
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "support/live.h"
#include "support/live_assert.h"

static bool have_hooks;

static int group_setup(void **state)
{
	/* Every process here is the test build: it has the kill points. */
	const char *hooks = getenv("LIVEMIG_HOOKS");
	if (hooks && *hooks) {
		setenv("LIVEMIG", hooks, 1);
		have_hooks = true;
	} else {
		print_message("LIVEMIG_HOOKS (build/hooks/livemig, make check sets it) is not set\n");
	}
	lm_live_setup("live-switchover");
	return 0;
}

/* Polls query-status until it says want (the survivor may still be
 * finishing the receive, or between starting its vCPUs and resuming them);
 * a deadline only turns a hang into a failure. */
static void wait_status(struct lm_live_vm *vm, const char *want, char *status, size_t len)
{
	double end = lm_live_now() + 30;
	while (lm_live_vm_status(vm, status, len) && strcmp(status, want) && lm_live_now() < end)
		lm_live_msleep(50);
}

/* The guest on a survivor that the operator resumes: it must run and pass
 * its own check of every page. */
static void expect_resumable(struct lm_live_vm *vm, const char *want_status)
{
	char status[64] = "";
	wait_status(vm, want_status, status, sizeof(status));
	print_message("      %s: query-status %s\n", vm->name, status);
	assert_string_equal(status, want_status);
	/* Paused: the guest makes no progress by itself ... */
	double before = 0, after = 0;
	lm_live_vm_last_progress(vm, "writes=", &before);
	lm_live_msleep(600);
	lm_live_vm_last_progress(vm, "writes=", &after);
	assert_true(after == before);
	/* ... and runs on cont. */
	char reply[4096];
	assert_int_equal(lm_live_vm_cmd(vm, "{\"execute\":\"cont\"}", reply, sizeof(reply)), 0);
	lm_live_expect_survived(vm, "writes=");
}

enum side { KILL_DST, KILL_SRC };

static void cut_case(enum side who, const char *point)
{
	if (!lm_live_ready() || !have_hooks)
		fail_msg("needs LIVEMIG, GUEST_ELF, KVM and LIVEMIG_HOOKS");
	struct lm_live_vm src, dst;
	print_message("    kill the %s at %s\n", who == KILL_DST ? "destination" : "source", point);
	if (who == KILL_SRC)
		setenv("LIVEMIG_TEST_KILL_AT", point, 1);
	lm_live_expect_running(&src, "src", "256M", "workload=hotset wss=32M rate=20M verify=1 progress=200",
			       NULL, 1);
	unsetenv("LIVEMIG_TEST_KILL_AT");
	if (who == KILL_DST)
		setenv("LIVEMIG_TEST_KILL_AT", point, 1);
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", NULL), 0);
	unsetenv("LIVEMIG_TEST_KILL_AT");

	struct lm_live_mig m;
	int rc = lm_live_migrate(&m, &src, dst.uri, NULL);
	print_message("      livemig migrate exited %d: %s", rc, m.errtext);
	pid_t killed = who == KILL_DST ? dst.pid : src.pid;
	int st = lm_live_wait(killed, 30);
	assert_int_equal(st, 128 + 9);
	assert_true(lm_live_count_file(who == KILL_DST ? dst.out : src.out, "killed at", NULL, 0) == 1);

	if (who == KILL_DST) {
		if (!strcmp(point, "receiver-before-result")) {
			assert_int_equal(rc, 1);
			lm_live_expect_survived(&src, "writes=");
		} else if (!strcmp(point, "receiver-after-result")) {
			/* COMMIT either could not be written (the source
			 * resumed) or went out unacknowledged (paused). */
			assert_true(rc == 1 || rc == 3);
			if (rc == 1)
				lm_live_expect_survived(&src, "writes=");
			else
				expect_resumable(&src, "postmigrate");
		} else if (!strcmp(point, "receiver-after-commit")) {
			assert_int_equal(rc, 3);
			assert_non_null(strstr(m.json, "\"unconfirmed\""));
			expect_resumable(&src, "postmigrate");
		} else {
			/* The destination took over and said so: the source
			 * let its copy go. */
			assert_int_equal(rc, 0);
			assert_int_equal(lm_live_wait(src.pid, 30), LM_CLI_EXIT_MIGRATED);
		}
	} else {
		/* The source died: livemig migrate lost its control socket. */
		assert_int_equal(rc, 1);
		if (!strcmp(point, "sender-after-result")) {
			expect_resumable(&dst, "inmigrate-wait-commit");
			assert_true(lm_live_count_file(dst.out, "inmigrate-wait-commit", NULL, 0) == 1);
		} else {
			char status[64] = "";
			wait_status(&dst, "running", status, sizeof(status));
			assert_string_equal(status, "running");
			lm_live_expect_survived(&dst, "writes=");
		}
	}
	lm_live_mig_free(&m);
}

static void test_dst_before_result(void **state) { cut_case(KILL_DST, "receiver-before-result"); }
static void test_dst_after_result(void **state) { cut_case(KILL_DST, "receiver-after-result"); }
static void test_dst_after_commit(void **state) { cut_case(KILL_DST, "receiver-after-commit"); }
static void test_dst_after_committed(void **state) { cut_case(KILL_DST, "receiver-after-committed"); }
static void test_src_after_result(void **state) { cut_case(KILL_SRC, "sender-after-result"); }
static void test_src_after_commit(void **state) { cut_case(KILL_SRC, "sender-after-commit"); }
static void test_src_after_committed(void **state) { cut_case(KILL_SRC, "sender-after-committed"); }

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_dst_before_result, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_dst_after_result, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_dst_after_commit, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_dst_after_committed, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_src_after_result, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_src_after_commit, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_src_after_committed, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
