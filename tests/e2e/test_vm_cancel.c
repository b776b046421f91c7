/*
 * Migrations of a running guest cut short, in a loop, in process: the
 * guest image (env GUEST_ELF) runs its hotset workload and its balloon
 * driver in an lm_vm while a thread moves the balloon target up and down,
 * and 30 migrations (lm_vm_migration, to an lm_vm_incoming receiver in a
 * thread over a socketpair) are each started and then cancelled, or failed
 * by shutting down one end of the connection, at a random moment in their
 * first 250 ms.
 *
 * What is asserted: every migration ends (cancelled when cancelled, failed
 * when cut; never completed, never hung), its receiver gives up and builds
 * no VM, the write hook is gone after each, the guest keeps running
 * throughout (not paused, not stopped, progress lines keep coming) and
 * its own check of all its pages passes at the end, and nothing crashes
 * (which AddressSanitizer and ThreadSanitizer builds make strict). Waits
 * have deadlines that only turn a hang into a failure.
 */
#include <errno.h>
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
#include <unistd.h>
#include <cmocka.h>

#include "livemig/balloon.h"
#include "livemig/vmm_migrate.h"
#include "support/live.h"
#include "support/live_assert.h"
#include "support/dirty_check.h"
#include "support/vm_inproc.h"

#define DEADLINE_S 90
#define MIB (1ull << 20)
#define ITERATIONS 30

struct balloon_mover {
	struct lm_vm *vm;
	int stop;	/* atomic */
	unsigned moves; /* atomic */
	int errors;	/* atomic */
	pthread_t th;
};

/* Target up, target down, every 30 ms: the guest's driver follows about
 * five times a second, so it inflates and deflates all the time. */
static void *mover_main(void *arg)
{
	struct balloon_mover *b = arg;
	for (unsigned k = 0; !__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE); k++) {
		uint64_t target = (k & 1) ? 0 : 4000 + (k * 997) % 8000;
		if (lm_vm_balloon_set_target(b->vm, target) < 0)
			__atomic_fetch_add(&b->errors, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&b->moves, 1, __ATOMIC_RELAXED);
		lm_live_msleep(30);
	}
	return NULL;
}

static void verify(struct lm_vm *vm, struct lm_test_console *con)
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

static void test_cancel_loop(void **state)
{
	/* Static: a failed assertion leaves the VM's threads writing here. */
	static struct lm_test_console con = LM_TEST_CONSOLE_INIT;
	static struct balloon_mover mover;
	static struct lm_test_vm_receiver rx;
	struct lm_vm_config cfg = {
	    .mem_size = 256 * MIB,
	    .ncpus = 1,
	    .kernel = lm_live_guest(),
	    .cmdline = "workload=hotset wss=64M rate=50M progress=200 seed=11",
	    .console_fd = -1,
	    .console_fn = lm_test_console_line,
	    .console_opaque = &con,
	};
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&cfg, &vm), 0);
	assert_int_equal(lm_vm_start(vm), 0);
	assert_true(lm_test_console_wait(&con, "progress t=", 0, NULL, 0, vm, DEADLINE_S));

	mover = (struct balloon_mover){.vm = vm};
	assert_int_equal(pthread_create(&mover.th, NULL, mover_main, &mover), 0);

	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	uint64_t rnd = 0x2545f4914f6cdd1dull;
	unsigned cancelled = 0, failed = 0, overlapped = 0;
	for (unsigned it = 0; it < ITERATIONS; it++) {
		/* Half of them bandwidth-limited, so that the cut lands in the
		 * rounds; the rest unlimited but cut within 5 ms. */
		bool limited = it & 1;
		p.max_bandwidth = limited ? 16 * MIB : 0;
		long delay_ms =
		    limited ? (long)(lm_test_rand(&rnd) % 250) : (long)(lm_test_rand(&rnd) % 5);
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		assert_int_equal(lm_test_vm_receiver_start(&rx, sv[1]), 0);

		struct lm_balloon_stats bs0, bs1;
		lm_vm_balloon_stats(vm, &bs0);
		struct lm_vm_migration *m = NULL;
		assert_int_equal(lm_vm_migration_new(vm, &p, &m), 0);
		assert_int_equal(lm_vm_migration_start(m, sv[0]), 0);
		if (delay_ms)
			lm_live_msleep((int)delay_ms);
		unsigned mode = (it / 2) % 3;
		if (mode == 0)
			lm_vm_migration_cancel(m);
		else if (mode == 1)
			shutdown(sv[0], SHUT_RDWR);
		else
			shutdown(sv[1], SHUT_RDWR);

		struct lm_migrate_stats st;
		double end = lm_live_now() + DEADLINE_S;
		do {
			lm_vm_migration_query(m, &st);
			if (lm_test_mig_ended(st.status))
				break;
			lm_live_msleep(2);
		} while (lm_live_now() < end);
		if (!lm_test_mig_ended(st.status)) {
			fprintf(stderr, "iteration %u (mode %u): migration hung in status %s\n", it,
				mode, lm_migrate_status_name(st.status));
			fail();
		}
		int err = lm_vm_migration_wait(m);
		lm_vm_balloon_stats(vm, &bs1);
		if (bs1.requests != bs0.requests)
			overlapped++;
		if (err >= 0 || st.status == LM_MIG_COMPLETED)
			fprintf(stderr, "iteration %u: the migration completed; cut too late\n",
				it);
		assert_true(err < 0);
		if (mode == 0) {
			assert_int_equal(err, -ECANCELED);
			assert_int_equal(st.status, LM_MIG_CANCELLED);
			cancelled++;
		} else {
			assert_int_equal(st.status, LM_MIG_FAILED);
			failed++;
		}
		lm_live_log("iteration %u mode %u after %ld ms: %s, %llu bytes, %llu rounds: %s\n",
			    it, mode, delay_ms, lm_migrate_status_name(st.status),
			    (unsigned long long)st.transferred, (unsigned long long)st.rounds,
			    st.error);
		lm_vm_migration_free(m);
		close(sv[0]);

		end = lm_live_now() + DEADLINE_S;
		while (!__atomic_load_n(&rx.done, __ATOMIC_ACQUIRE) && lm_live_now() < end)
			lm_live_msleep(2);
		if (!__atomic_load_n(&rx.done, __ATOMIC_ACQUIRE)) {
			fprintf(stderr, "iteration %u: the receiver hung\n", it);
			fail();
		}
		assert_int_equal(pthread_join(rx.th, NULL), 0);
		assert_true(rx.err < 0);
		assert_null(rx.vm);
		close(sv[1]);
		/* The guest runs on: not paused, not stopped. */
		assert_false(lm_vm_is_paused(vm));
		assert_int_equal(lm_vm_wait(vm, 0, NULL), -EINTR);
	}
	__atomic_store_n(&mover.stop, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(mover.th, NULL), 0);
	assert_int_equal(mover.errors, 0);
	assert_int_equal(cancelled + failed, ITERATIONS);

	/* Still running: new progress, the balloon follows, the pages check. */
	int progress = lm_test_console_count(&con, "progress t=", NULL, 0);
	assert_true(lm_test_console_wait(&con, "progress t=", progress, NULL, 0, vm, DEADLINE_S));
	assert_int_equal(lm_vm_balloon_set_target(vm, 0), 0);
	verify(vm, &con);
	struct lm_balloon_stats bs;
	lm_vm_balloon_stats(vm, &bs);
	/* How many migrations saw the balloon move is reported, not judged:
	 * it depends on timing. */
	fprintf(stderr,
		"%u cancelled, %u failed, %u with balloon requests; balloon: %u target "
		"moves, %llu requests, %llu pages inflated, %llu deflated\n",
		cancelled, failed, overlapped, __atomic_load_n(&mover.moves, __ATOMIC_RELAXED),
		(unsigned long long)bs.requests, (unsigned long long)bs.inflated,
		(unsigned long long)bs.deflated);
	assert_true(bs.inflated > 0);
	assert_int_equal(lm_test_console_count(&con, "FAIL", NULL, 0), 0);
	lm_vm_quit(vm, 0);
	assert_int_equal(lm_vm_wait(vm, -1, NULL), 0);
	lm_vm_free(vm);
	free(con.text);
	con.text = NULL;
}

static int group_setup(void **state)
{
	return lm_live_setup("vm-cancel");
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cancel_loop),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
