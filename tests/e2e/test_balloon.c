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
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "livemig/balloon.h"
#include "livemig/bitmap.h"
#include "livemig/vmm.h"
#include "support/live.h"
#include "support/live_assert.h"
#include "support/vm_inproc.h"

#define DEADLINE_S 90
#define MIB (1ull << 20)

/* Waits until the file has more than `have` lines containing needle. */
static bool wait_line(const char *path, const char *needle, int have, char *line, size_t linelen)
{
	return lm_live_wait_line(path, needle, have, line, linelen, 0, DEADLINE_S);
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

struct bq {
	uint64_t actual, ballooned, target, guest_actual;
	bool mth, driver;
};

static void query_balloon(struct lm_live_ctl *c, struct bq *q)
{
	char reply[4096];
	lm_live_expect_ok(c, "{\"execute\":\"query-balloon\"}", reply, sizeof(reply));
	q->actual = lm_live_json_u64(reply, "actual");
	q->ballooned = lm_live_json_u64(reply, "ballooned-pages");
	q->target = lm_live_json_u64(reply, "target-pages");
	q->guest_actual = lm_live_json_u64(reply, "guest-actual-pages");
	q->mth = lm_live_json_u64(reply, "must-tell-host");
	q->driver = lm_live_json_u64(reply, "driver");
}

/* Polls query-balloon until the balloon holds `pages` pages. */
static void wait_ballooned(struct lm_live_ctl *c, uint64_t pages, struct bq *q)
{
	double end = lm_live_now() + DEADLINE_S;
	for (;;) {
		query_balloon(c, q);
		if (q->ballooned == pages && q->guest_actual == pages)
			return;
		if (lm_live_now() > end)
			fprintf(stderr, "balloon holds %llu pages, waited for %llu\n",
				(unsigned long long)q->ballooned, (unsigned long long)pages);
		assert_true(lm_live_now() <= end);
		lm_live_msleep(50);
	}
}

/* Asks the guest to check its pages and waits for a passing check; the
 * "verify ok" line is copied into line. */
static void guest_verify(struct lm_live_ctl *c, const char *out, char *line, size_t linelen)
{
	int have = lm_live_count_file(out, "verify ok pages=", NULL, 0);
	int fails = lm_live_count_file(out, "FAIL", NULL, 0);
	lm_live_expect_ok(c, "{\"execute\":\"guest-verify\"}", NULL, 0);
	bool ok = wait_line(out, "verify ok pages=", have, line, linelen);
	if (!ok || lm_live_count_file(out, "FAIL", NULL, 0) != fails)
		lm_live_dump(out, SIZE_MAX);
	assert_true(ok);
	assert_int_equal(lm_live_count_file(out, "FAIL", NULL, 0), fails);
}

static void quit_and_check(struct lm_live_ctl *c, pid_t pid, const char *out)
{
	lm_live_expect_ok(c, "{\"execute\":\"quit\"}", NULL, 0);
	lm_live_ctl_close(c);
	int rc = lm_live_wait(pid, DEADLINE_S);
	if (rc != 0)
		lm_live_dump(out, SIZE_MAX);
	assert_int_equal(rc, 0);
	assert_int_equal(lm_live_count_file(out, "FAIL", NULL, 0), 0);
	assert_int_equal(lm_live_count_file(out, "exception", NULL, 0), 0);
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
	const char *out = lm_live_path("inflate.out"), *sock = lm_live_path("inflate.sock");
	const char *args[] = {"run",	   lm_live_guest(),
			      "--mem",	   "1G",
			      "--control", sock,
			      "--append",  "workload=memtouch verify=1 progress=0",
			      NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	char line[1024];
	bool ok = wait_line(out, "verify ok pages=", 0, line, sizeof(line));
	if (!ok)
		lm_live_dump(out, SIZE_MAX);
	assert_true(ok); /* memtouch done and checked */
	struct lm_live_ctl c;
	lm_live_expect_ctl_open(&c, sock, DEADLINE_S);
	struct bq q;
	query_balloon(&c, &q);
	assert_int_equal(q.ballooned, 0);
	assert_int_equal(q.actual, 1024 * MIB);
	assert_true(q.driver);
	assert_true(q.mth);
	uint64_t rss0 = rss_kib(pid);
	assert_true(rss0 > 900 * 1024); /* memtouch wrote all of it */

	lm_live_expect_balloon(&c, 512 * MIB);
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
	lm_live_expect_balloon(&c, 4096 * MIB);
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
	const char *out = lm_live_path("reuse.out"), *sock = lm_live_path("reuse.sock");
	const char *args[] = {"run",	   lm_live_guest(),
			      "--mem",	   "1G",
			      "--control", sock,
			      "--append",  "workload=hotset wss=1G rate=200M verify=1 progress=500",
			      NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	char line[1024];
	bool ok = wait_line(out, "livemig-guest: balloon offered=", 0, NULL, 0) &&
		  wait_line(out, "progress t=", 0, NULL, 0);
	if (!ok)
		lm_live_dump(out, SIZE_MAX);
	assert_true(ok);
	assert_true(lm_live_count_file(out, "livemig-guest: ram_top=", line, sizeof(line)) == 1);
	uint64_t npages = lm_live_line_u64(line, " pages=");
	struct lm_live_ctl c;
	lm_live_expect_ctl_open(&c, sock, DEADLINE_S);
	struct bq q;
	lm_live_expect_balloon(&c, 512 * MIB);
	wait_ballooned(&c, 131072, &q);
	uint64_t owned = npages - 131072;
	guest_verify(&c, out, line, sizeof(line));
	assert_true(lm_live_line_u64(line, "written=") <= owned);

	lm_live_expect_balloon(&c, 1024 * MIB);
	wait_ballooned(&c, 0, &q);
	/* Check until the workload has written more pages than it owned
	 * while ballooned: some of them are pages that came back. */
	double end = lm_live_now() + DEADLINE_S;
	for (;;) {
		guest_verify(&c, out, line, sizeof(line));
		if (lm_live_line_u64(line, "written=") > owned)
			break;
		assert_true(lm_live_now() < end);
		lm_live_msleep(300);
	}
	quit_and_check(&c, pid, out);
}

/*
 * A guest that declines must-tell-host (balloon_mtl=0) is reported so; its
 * balloon still works. Bad arguments to the commands are JSON errors.
 */
static void test_no_mth_and_errors(void **state)
{
	const char *out = lm_live_path("nomth.out"), *sock = lm_live_path("nomth.sock");
	const char *args[] = {
	    "run",
	    lm_live_guest(),
	    "--mem",
	    "256M",
	    "--control",
	    sock,
	    "--append",
	    "workload=hotset mem=64M wss=16M rate=20M verify=1 balloon_mtl=0 progress=0",
	    NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	assert_true(wait_line(out, "livemig-guest: balloon offered=0x1 accepted=0", 0, NULL, 0));
	struct lm_live_ctl c;
	lm_live_expect_ctl_open(&c, sock, DEADLINE_S);
	struct bq q;
	query_balloon(&c, &q);
	assert_true(q.driver);
	assert_false(q.mth);
	lm_live_expect_balloon(&c, 128 * MIB);
	wait_ballooned(&c, 32768, &q);
	assert_false(q.mth);
	char line[1024];
	guest_verify(&c, out, line, sizeof(line));

	lm_live_expect_error(&c, "{\"execute\":\"balloon\"}");
	lm_live_expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{}}");
	lm_live_expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":\"1G\"}}");
	lm_live_expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":0}}");
	lm_live_expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":-4096}}");
	lm_live_expect_error(&c, "{\"execute\":\"balloon\",\"arguments\":{\"value\":1.5}}");
	lm_live_expect_error(&c,
			     "{\"execute\":\"balloon\",\"arguments\":{\"value\":4096,\"x\":1}}");
	lm_live_expect_error(&c, "{\"execute\":\"query-balloon\",\"arguments\":{\"x\":1}}");
	/* Nothing changed. */
	query_balloon(&c, &q);
	assert_int_equal(q.target, 32768);
	assert_int_equal(q.ballooned, 32768);
	quit_and_check(&c, pid, out);
}

/* balloon=0 turns the driver off: the target is set, nothing moves. */
static void test_driver_off(void **state)
{
	const char *out = lm_live_path("off.out"), *sock = lm_live_path("off.sock");
	const char *args[] = {
	    "run",	 lm_live_guest(),
	    "--mem",	 "128M",
	    "--control", sock,
	    "--append",	 "workload=hotset mem=32M wss=8M rate=10M balloon=0 progress=200",
	    NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	assert_true(wait_line(out, "progress t=", 0, NULL, 0));
	struct lm_live_ctl c;
	lm_live_expect_ctl_open(&c, sock, DEADLINE_S);
	lm_live_expect_balloon(&c, 64 * MIB);
	int have = lm_live_count_file(out, "progress t=", NULL, 0);
	assert_true(wait_line(out, "progress t=", have + 2, NULL, 0)); /* the guest polled by now */
	struct bq q;
	query_balloon(&c, &q);
	assert_false(q.driver);
	assert_false(q.mth);
	assert_int_equal(q.target, 16384);
	assert_int_equal(q.ballooned, 0);
	assert_int_equal(lm_live_count_file(out, "balloon", NULL, 0), 0);
	quit_and_check(&c, pid, out);
}

/* ---- in-process: the destination's path --------------------------------- */

static void wait_info(struct lm_vm *vm, uint64_t pages)
{
	double end = lm_live_now() + DEADLINE_S;
	uint64_t actual = ~0ull;
	while (lm_live_now() < end) {
		lm_vm_balloon_info(vm, NULL, &actual, NULL);
		if (actual == pages)
			return;
		lm_live_msleep(20);
	}
	fprintf(stderr, "balloon holds %llu pages, waited for %llu\n", (unsigned long long)actual,
		(unsigned long long)pages);
	fail();
}

static void verify_in_process(struct lm_vm *vm, struct lm_test_console *con)
{
	int have = lm_test_console_count(con, "verify ok pages=", NULL, 0);
	uint32_t req = lm_vm_request_verify(vm), done = 0, result = 1;
	lm_test_vm_wait_verified(vm, req, &done, &result, DEADLINE_S);
	if (done != req || result != 0)
		fprintf(stderr, "console:\n%s\n", con->text ? con->text : "");
	assert_int_equal(done, req);
	assert_int_equal(result, 0);
	assert_true(lm_test_console_count(con, "verify ok pages=", NULL, 0) > have);
}

/*
 * Source VM inflates; its RAM, skip map and state go to a brand-new VM
 * (as a migration destination builds it); there the balloon is known
 * (target, must-tell-host, the pages), the guest checks out, and it can
 * deflate.
 */
static void test_state_carries_balloon(void **state)
{
	static struct lm_test_console csrc = LM_TEST_CONSOLE_INIT, cdst = LM_TEST_CONSOLE_INIT;
	struct lm_vm_config cfg = {
	    .mem_size = 256 * MIB,
	    .ncpus = 1,
	    .kernel = lm_live_guest(),
	    .cmdline = "workload=hotset wss=256M rate=50M progress=200 seed=3",
	    .console_fd = -1,
	    .console_fn = lm_test_console_line,
	    .console_opaque = &csrc,
	};
	struct lm_vm *src = NULL, *dst = NULL;
	assert_int_equal(lm_vm_new(&cfg, &src), 0);
	assert_int_equal(lm_vm_start(src), 0);
	assert_true(lm_test_console_wait(&csrc, "progress t=", 1, NULL, 0, src, DEADLINE_S));
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
	lm_test_vm_copy_ram(dst, src);
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
	assert_true(lm_test_console_wait(&cdst, "progress t=", 0, NULL, 0, dst, DEADLINE_S));
	verify_in_process(dst, &cdst);
	assert_int_equal(lm_vm_balloon_set_target(dst, 0), 0);
	wait_info(dst, 0);
	verify_in_process(dst, &cdst);
	struct lm_balloon_stats st;
	lm_vm_balloon_stats(dst, &st);
	assert_int_equal(st.deflated, 20000);
	assert_int_equal(st.refused, 0);
	assert_int_equal(lm_test_console_count(&cdst, "FAIL", NULL, 0), 0);
	lm_vm_quit(dst, 0);
	assert_int_equal(lm_vm_wait(dst, -1, NULL), 0);
	lm_vm_free(dst);
	free(csrc.text);
	free(cdst.text);
}

static int group_setup(void **state)
{
	return lm_live_setup("balloon-e2e");
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
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
