/*
 * The VMM's write hook between threads (src/vmm/vm.c, "The write hook"),
 * on a real, never-run KVM VM whose "vCPUs" are test threads calling the
 * balloon's port handler the way a vCPU thread does:
 *
 * - fn and opaque go out together: every call a hook receives carries the
 *   opaque it was installed with, and a removed hook is never called again;
 * - removal waits for a call in progress (the grace period) and does not
 *   wait for calls that start after it;
 * - the migration's own hook under fire: 40 migrations of the VM are
 *   started and then cancelled, or failed by shutting down one end of the
 *   connection, while two threads inflate and deflate the balloon (each
 *   inflate calls the hook, i.e. the migration's dirty source) and, outside
 *   ThreadSanitizer, a third writes guest RAM through lm_vm_write_guest.
 *   Every migration must end (cancelled or failed, never completed, never
 *   hung), its receiver too, the hook must be gone after each, and nothing
 *   may touch a freed migration (AddressSanitizer, ThreadSanitizer).
 *
 * Waits have deadlines that only turn a hang into a failure.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/balloon.h"
#include "livemig/guest_abi.h"
#include "livemig/vmm_migrate.h"
#include "vmm/vmm_int.h"
#include "support/dirty_check.h"
#include "support/vm_inproc.h"

#define MIB (1ull << 20)
#define DEADLINE_S 60.0
#define ITERATIONS 40
#define VCPUS 2
/* Each "vCPU" balloons its own 256 pages, listed in its own request page. */
#define RUN_PAGES 256u
#define REQ_GPA(t) (0x200000ull + (uint64_t)(t)*0x1000)
#define RUN_PFN(t) (0x1000ull + (uint64_t)(t)*0x400)
/* lm_vm_write_guest's target: a page nothing else uses. */
#define SCRIBBLE_GPA 0x300000ull

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

static struct lm_vm *new_vm(uint64_t mem)
{
	struct lm_vm_config cfg = {.mem_size = mem, .ncpus = 1, .console_fd = -1};
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&cfg, &vm), 0);
	return vm;
}

static struct lm__pio_range *balloon_range(struct lm_vm *vm)
{
	for (unsigned i = 0; i < vm->npio; i++)
		if (vm->pio[i].base == LM_PV_BALLOON_BASE)
			return &vm->pio[i];
	return NULL;
}

/* An out to a balloon register, as lm__vm_handle_pio makes it. */
static int port_out(struct lm_vm *vm, uint16_t port, uint32_t v)
{
	struct lm__pio_range *r = balloon_range(vm);
	return r ? r->fn(r->opaque, port, 4, true, &v) : -ENODEV;
}

/* ---- fn and opaque as one unit ----------------------------------------- */

struct counter {
	unsigned calls;	 /* atomic */
	unsigned strays; /* atomic: calls that carried another opaque */
	const void *self;
};

static void count_write(void *opaque, uint64_t gpa, uint64_t len)
{
	struct counter *c = opaque;
	if (c->self != c)
		__atomic_fetch_add(&c->strays, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&c->calls, 1, __ATOMIC_RELAXED);
}

static void test_publish(void **state)
{
	struct lm_vm *vm = new_vm(16 * MIB);
	struct counter a = {.self = &a}, b = {.self = &b};
	uint8_t buf[64] = {1};
	assert_null(vm->hook);
	assert_int_equal(lm_vm_write_guest(vm, 0x100000, buf, sizeof(buf)), 0);
	lm_vm_set_write_hook(vm, count_write, &a);
	assert_int_equal(lm_vm_write_guest(vm, 0x100000, buf, sizeof(buf)), 0);
	lm_vm_set_write_hook(vm, count_write, &b);
	assert_int_equal(lm_vm_write_guest(vm, 0x100000, buf, sizeof(buf)), 0);
	assert_int_equal(lm_vm_write_guest(vm, 0x100000, buf, sizeof(buf)), 0);
	/* The third set refills the first slot: still the right pair. */
	lm_vm_set_write_hook(vm, count_write, &a);
	assert_int_equal(lm_vm_write_guest(vm, 0x100000, buf, sizeof(buf)), 0);
	lm_vm_set_write_hook(vm, NULL, NULL);
	assert_null(vm->hook);
	assert_int_equal(lm_vm_write_guest(vm, 0x100000, buf, sizeof(buf)), 0);
	assert_int_equal(a.calls, 2);
	assert_int_equal(b.calls, 2);
	assert_int_equal(a.strays + b.strays, 0);
	assert_int_equal(vm->hook_users, 0);
	lm_vm_free(vm);
}

/* ---- removal waits for a call in progress ------------------------------ */

struct slow {
	int inside, done; /* atomic */
	int calls;	  /* atomic */
	struct lm_vm *vm;
};

static void slow_write(void *opaque, uint64_t gpa, uint64_t len)
{
	struct slow *s = opaque;
	__atomic_fetch_add(&s->calls, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&s->inside, 1, __ATOMIC_RELEASE);
	sleep_us(200 * 1000);
	__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
}

static void *slow_writer_main(void *arg)
{
	struct slow *s = arg;
	uint8_t v = 7;
	lm_vm_write_guest(s->vm, 0x100000, &v, 1);
	return NULL;
}

static void test_grace_period(void **state)
{
	struct lm_vm *vm = new_vm(16 * MIB);
	static struct slow s; /* the writer may outlive a failed assertion */
	s = (struct slow){.vm = vm};
	lm_vm_set_write_hook(vm, slow_write, &s);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, slow_writer_main, &s), 0);
	double end = now_s() + DEADLINE_S;
	while (!__atomic_load_n(&s.inside, __ATOMIC_ACQUIRE) && now_s() < end)
		sleep_us(1000);
	assert_true(__atomic_load_n(&s.inside, __ATOMIC_ACQUIRE));
	/* The caller is inside the hook: removal returns only after it left. */
	lm_vm_set_write_hook(vm, NULL, NULL);
	assert_true(__atomic_load_n(&s.done, __ATOMIC_ACQUIRE));
	assert_int_equal(pthread_join(th, NULL), 0);
	/* Gone: a later write does not call it. */
	uint8_t v = 8;
	assert_int_equal(lm_vm_write_guest(vm, 0x100000, &v, 1), 0);
	assert_int_equal(__atomic_load_n(&s.calls, __ATOMIC_RELAXED), 1);
	lm_vm_free(vm);
}

/* ---- migrations cancelled while the balloon moves ---------------------- */

struct stress {
	struct lm_vm *vm;
	int stop; /* atomic */
	/* atomic: balloon requests made, VMM writes made */
	uint64_t requests[VCPUS];
	uint64_t scribbles;
	int errors; /* atomic: a port handler that failed */
};

struct vcpu_arg {
	struct stress *s;
	unsigned index;
};

/* Inflate the thread's run, then deflate it, until told to stop. */
static void *vcpu_main(void *arg)
{
	struct vcpu_arg *a = arg;
	struct stress *s = a->s;
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		uint32_t req = (uint32_t)REQ_GPA(a->index);
		if (port_out(s->vm, LM_PV_BALLOON_REQUEST, req | LM_PV_BALLOON_OP_INFLATE) < 0 ||
		    port_out(s->vm, LM_PV_BALLOON_REQUEST, req | LM_PV_BALLOON_OP_DEFLATE) < 0)
			__atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->requests[a->index], 2, __ATOMIC_RELAXED);
		sched_yield();
	}
	return NULL;
}

/* The VMM's own writes of guest RAM, the loader's path. */
static void *scribbler_main(void *arg)
{
	struct stress *s = arg;
	uint64_t v = 0;
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		v++;
		if (lm_vm_write_guest(s->vm, SCRIBBLE_GPA, &v, sizeof(v)) < 0)
			__atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->scribbles, 1, __ATOMIC_RELAXED);
		sleep_us(50);
	}
	return NULL;
}

static void test_cancel_loop(void **state)
{
	static struct stress s; /* threads may outlive a failed assertion */
	memset(&s, 0, sizeof(s));
	s.vm = new_vm(64 * MIB);
	signal(SIGPIPE, SIG_IGN);
	/* Data everywhere, so that a bandwidth-limited migration takes
	 * seconds and every one of them is still running when it is cut. */
	for (unsigned i = 0; i < lm_vm_slot_count(s.vm); i++) {
		const struct lm_vm_slot *sl = lm_vm_slot(s.vm, i);
		memset(sl->host, 0x5a, sl->size);
	}
	/* Must-tell-host, so that the migration trusts (and sends) the map. */
	assert_int_equal(port_out(s.vm, LM_PV_BALLOON_FEATURES, LM_PV_BALLOON_F_MUST_TELL_HOST), 0);
	for (unsigned t = 0; t < VCPUS; t++) {
		uint64_t page[512] = {RUN_PAGES};
		for (unsigned k = 0; k < RUN_PAGES; k++)
			page[1 + k] =
			    RUN_PFN(t) + RUN_PAGES - 1 - k; /* descending, as the driver */
		assert_int_equal(lm_vm_write_guest(s.vm, REQ_GPA(t), page, sizeof(page)), 0);
	}

	static struct vcpu_arg args[VCPUS];
	pthread_t vcpus[VCPUS], scribbler;
	for (unsigned t = 0; t < VCPUS; t++) {
		args[t] = (struct vcpu_arg){&s, t};
		assert_int_equal(pthread_create(&vcpus[t], NULL, vcpu_main, &args[t]), 0);
	}
	/*
	 * Under ThreadSanitizer the scribbler stays home: its memcpy into
	 * guest RAM races, by design, with the migration thread reading the
	 * page (pre-copy sends a page being written and sends it again once
	 * the log says so), which TSan would rightly report; a guest's own
	 * writes are invisible to it. Its hook calls take the same path as
	 * the balloon's (lm__vm_wrote), which runs either way.
	 */
#if defined(__SANITIZE_THREAD__)
	bool scribble = false;
#else
	bool scribble = true;
#endif
	if (scribble)
		assert_int_equal(pthread_create(&scribbler, NULL, scribbler_main, &s), 0);

	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.max_bandwidth = 8 * MIB; /* 64 MiB of data: 8 s, far longer than any cut */
	uint64_t rnd = 0x9e3779b97f4a7c15ull;
	unsigned cancelled = 0, failed = 0;
	for (unsigned it = 0; it < ITERATIONS; it++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		static struct lm_test_vm_receiver rx;
		assert_int_equal(lm_test_vm_receiver_start(&rx, sv[1]), 0);

		struct lm_vm_migration *m = NULL;
		assert_int_equal(lm_vm_migration_new(s.vm, &p, &m), 0);
		assert_int_equal(lm_vm_migration_start(m, sv[0]), 0);
		assert_non_null(__atomic_load_n(&s.vm->hook, __ATOMIC_ACQUIRE));
		/* 0-40 ms in: handshake, arming, or rounds. */
		sleep_us((long)(lm_test_rand(&rnd) % 40000));
		unsigned mode = it % 3;
		if (mode == 0)
			lm_vm_migration_cancel(m);
		else if (mode == 1)
			shutdown(sv[0], SHUT_RDWR); /* our end of the connection breaks */
		else
			shutdown(sv[1], SHUT_RDWR); /* the receiver's end breaks */

		struct lm_migrate_stats st;
		double end = now_s() + DEADLINE_S;
		do {
			lm_vm_migration_query(m, &st);
			if (lm_test_mig_ended(st.status))
				break;
			sleep_us(1000);
		} while (now_s() < end);
		if (!lm_test_mig_ended(st.status)) {
			fprintf(stderr, "iteration %u (mode %u): migration hung in status %s\n", it,
				mode, lm_migrate_status_name(st.status));
			fail();
		}
		int err = lm_vm_migration_wait(m);
		if (err >= 0 || st.status == LM_MIG_COMPLETED)
			fprintf(stderr, "iteration %u: migration ended with %d (%s)\n", it, err,
				lm_migrate_status_name(st.status));
		assert_true(err < 0);
		if (mode == 0) {
			assert_int_equal(err, -ECANCELED);
			assert_int_equal(st.status, LM_MIG_CANCELLED);
			cancelled++;
		} else {
			assert_int_equal(st.status, LM_MIG_FAILED);
			failed++;
		}
		/* The hook is gone once the migration is waited for. */
		assert_null(__atomic_load_n(&s.vm->hook, __ATOMIC_ACQUIRE));
		lm_vm_migration_free(m);
		close(sv[0]); /* the receiver sees the end of the stream */

		end = now_s() + DEADLINE_S;
		while (!__atomic_load_n(&rx.done, __ATOMIC_ACQUIRE) && now_s() < end)
			sleep_us(1000);
		if (!__atomic_load_n(&rx.done, __ATOMIC_ACQUIRE)) {
			fprintf(stderr, "iteration %u: the receiver hung\n", it);
			fail();
		}
		assert_int_equal(pthread_join(rx.th, NULL), 0);
		assert_true(rx.err < 0);
		assert_null(rx.vm);
		close(sv[1]);
		/* The source VM is as the user left it: not held paused. */
		assert_false(lm_vm_is_paused(s.vm));
	}
	__atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
	for (unsigned t = 0; t < VCPUS; t++)
		assert_int_equal(pthread_join(vcpus[t], NULL), 0);
	if (scribble)
		assert_int_equal(pthread_join(scribbler, NULL), 0);
	assert_int_equal(s.errors, 0);
	assert_int_equal(cancelled + failed, ITERATIONS);
	assert_null(s.vm->hook);
	assert_int_equal(s.vm->hook_users, 0);
	/* The devices kept working throughout. */
	struct lm_balloon_stats bs;
	lm_vm_balloon_stats(s.vm, &bs);
	assert_true(bs.inflated > 0);
	assert_int_equal(bs.refused, 0);
	fprintf(stderr,
		"%u cancelled, %u failed; %llu balloon requests, %llu pages inflated, "
		"%llu VMM writes\n",
		cancelled, failed, (unsigned long long)(s.requests[0] + s.requests[1]),
		(unsigned long long)bs.inflated, (unsigned long long)s.scribbles);
	lm_vm_free(s.vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_publish),
	    cmocka_unit_test(test_grace_period),
	    cmocka_unit_test(test_cancel_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
