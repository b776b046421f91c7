/* Timeouts: no stall lasts for ever. A sender that stops sending mid-stream
 * makes the receiver fail after its idle timeout with a message naming the
 * phase; a receiver that stops reading makes the sender fail after its idle
 * timeout and resume the workload; a receiver that answers nothing makes
 * the sender's wait for its answer fail; a receiver's cancel fd ends a
 * receive that waits; TCP migration sockets carry keepalive. The timeouts
 * are short and chosen here; no assertion depends on how fast anything
 * ran (an alarm only turns a hang into a failure). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/migrate.h"
#include "support/dirty_check.h"
#include "support/mig_helpers.h"

#define NPAGES 2048 /* 8 MiB: much more than the socket buffers hold */

/* ---- a relay that stalls: it stops reading from the sender -------------- */

struct relay {
	int s_end, r_end;     /* the relay's ends: towards the sender, towards the receiver */
	uint64_t stall_after; /* stop reading from the sender after this many bytes */
	int stall_now;        /* (atomic) stop reading from the sender from now on */
	int stop;             /* (atomic) end the thread; it then closes both ends */
	uint64_t fwd;         /* (atomic) bytes forwarded towards the receiver */
	pthread_t th;
};

/* Both directions until the stall; after it, only receiver -> sender. The
 * connections stay open: a stalled peer, not a closed one. */
static void *relay_main(void *arg)
{
	struct relay *x = arg;
	static char buf[65536];
	bool s_open = true, r_open = true;
	while (!__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE)) {
		uint64_t fwd = __atomic_load_n(&x->fwd, __ATOMIC_ACQUIRE);
		bool stalled = fwd >= x->stall_after || __atomic_load_n(&x->stall_now, __ATOMIC_ACQUIRE);
		struct pollfd p[2] = {
			{ .fd = s_open && !stalled ? x->s_end : -1, .events = POLLIN },
			{ .fd = r_open ? x->r_end : -1, .events = POLLIN },
		};
		if (poll(p, 2, 20) <= 0)
			continue;
		if (p[0].revents) {
			size_t want = sizeof(buf);
			if (x->stall_after - fwd < want)
				want = (size_t)(x->stall_after - fwd);
			ssize_t n = read(x->s_end, buf, want);
			if (n <= 0 || send(x->r_end, buf, (size_t)n, MSG_NOSIGNAL) != n)
				s_open = false;
			else
				__atomic_store_n(&x->fwd, fwd + (uint64_t)n, __ATOMIC_RELEASE);
		}
		if (p[1].revents) {
			ssize_t n = read(x->r_end, buf, sizeof(buf));
			if (n <= 0 || send(x->s_end, buf, (size_t)n, MSG_NOSIGNAL) != n)
				r_open = false;
		}
	}
	close(x->s_end);
	close(x->r_end);
	return NULL;
}

/* *sfd and *rfd: the sender's and the receiver's ends. */
static void relay_start(struct relay *x, uint64_t stall_after, int *sfd, int *rfd)
{
	int a[2], b[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
	*x = (struct relay){ .s_end = a[1], .r_end = b[1], .stall_after = stall_after };
	*sfd = a[0];
	*rfd = b[0];
	assert_int_equal(pthread_create(&x->th, NULL, relay_main, x), 0);
}

static void relay_stop(struct relay *x)
{
	__atomic_store_n(&x->stop, 1, __ATOMIC_RELEASE);
	pthread_join(x->th, NULL);
}

/* ---- a receiver thread with its own ops and params ---------------------- */

struct rx {
	int fd;
	struct lm_receive_params p;
	const struct lm_workload_ops *ops;
	struct lm_test_dest dest;
	struct lm_receive_stats st;
	int result;
	pthread_t th;
};

static void *rx_main(void *arg)
{
	struct rx *r = arg;
	r->result = lm_migrate_receive(r->fd, &r->p, r->ops, &r->dest, &r->st);
	shutdown(r->fd, SHUT_RDWR);
	return NULL;
}

static void rx_start(struct rx *r, int fd)
{
	r->fd = fd;
	if (!r->ops)
		r->ops = &lm_test_dest_ops;
	assert_int_equal(pthread_create(&r->th, NULL, rx_main, r), 0);
}

static int rx_join(struct rx *r)
{
	pthread_join(r->th, NULL);
	close(r->fd);
	lm_test_dest_free(&r->dest);
	return r->result;
}

/* ---- the source: memory full of data, a sim source, a writer ------------ */

struct src {
	struct lm_mem_region r;
	struct lm_dirty_source *ds;
	struct lm_test_writer w;
};

static void src_init(struct src *s)
{
	s->r = (struct lm_mem_region){ 0, NPAGES, lm_test_map(NPAGES) };
	assert_non_null(s->r.host);
	uint64_t rs = 7;
	for (uint64_t i = 0; i < NPAGES * 512; i++)
		((uint64_t *)s->r.host)[i] = lm_test_rand(&rs);
	assert_int_equal(lm_sim_source_new(LM_SIM_EXCHANGE, &s->ds), 0);
	s->w = (struct lm_test_writer){ .regions = &s->r, .n = 1, .mark = s->ds, .bytes_per_sec = 4u << 20,
					.seed = 5 };
	assert_int_equal(lm_test_writer_start(&s->w), 0);
}

static void src_destroy(struct src *s)
{
	lm_test_writer_stop(&s->w);
	lm_dirty_source_free(s->ds);
	munmap(s->r.host, NPAGES * LM_PAGE_SIZE);
}

/* The workload runs (it is not paused, or was resumed): its writes go on. */
static void expect_running(struct lm_test_writer *w)
{
	assert_int_equal(w->pauses, w->resumes);
	uint64_t c0 = lm_test_writer_count(w);
	while (lm_test_writer_count(w) <= c0 + 100)
		usleep(1000); /* a hang here is caught by the alarm */
}

static void params(struct lm_migrate_params *p)
{
	lm_migrate_params_default(p);
	p->downtime_limit_ms = 50;
	p->max_rounds = 3;
}

/* ---- tests -------------------------------------------------------------- */

static void test_defaults(void **state)
{
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	assert_int_equal(p.idle_timeout_ms, LM_IDLE_TIMEOUT_DEFAULT_MS);
	assert_int_equal(LM_IDLE_TIMEOUT_DEFAULT_MS, 10000);
}

/* The sender stops sending after N bytes (the relay stops reading from it):
 * the receiver gives up after its idle timeout and says where it was. */
static void test_sender_stalls(void **state)
{
	static const struct {
		uint64_t after;
		const char *where;
	} cases[] = {
		{ 5, "during the handshake" },	    /* inside HELLO's frame header */
		{ 64 << 10, "during round 1" },	    /* among round 1's pages */
	};
	struct src s;
	src_init(&s);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct relay x;
		int sfd, rfd;
		relay_start(&x, cases[i].after, &sfd, &rfd);
		struct rx r = { .p = { .idle_timeout_ms = 300 } };
		rx_start(&r, rfd);
		struct lm_migrate_params p;
		params(&p);
		p.idle_timeout_ms = LM_TIMEOUT_NEVER; /* the sender waits; the receiver gives up */
		lm_migration *m;
		assert_int_equal(lm_migration_new(&m, &s.r, 1, s.ds, &lm_test_writer_ops, &s.w, &p), 0);
		assert_int_equal(lm_migration_start(m, sfd), 0);

		int rerr = rx_join(&r);
		print_message("      stall after %llu bytes: receiver: %s\n", (unsigned long long)cases[i].after,
			      r.st.error);
		assert_int_equal(rerr, -ETIMEDOUT);
		assert_non_null(strstr(r.st.error, "no data from the sender for 300 ms"));
		assert_non_null(strstr(r.st.error, cases[i].where));
		assert_int_equal(r.dest.finish_calls, cases[i].after > 100 ? 1 : 0);

		/* The stalled link goes away: the sender fails too, its
		 * workload untouched. */
		relay_stop(&x);
		int serr = lm_migration_wait(m);
		print_message("      sender: %s\n", lm_migration_error(m));
		assert_true(serr < 0);
		lm_migration_free(m);
		close(sfd);
		expect_running(&s.w);
	}
	src_destroy(&s);
}

/* The receiver stops reading once the workload is paused: the sender's
 * writes of the stop-and-copy cannot progress, it fails after its idle
 * timeout and resumes the workload. */
static struct relay *pause_relay;
static struct src *pause_src;

static int pause_then_stall(void *ctx)
{
	int err = lm_test_writer_ops.pause(ctx);
	/* All of memory is dirty again (8 MiB to send, more than the
	 * buffers hold) and the receiver side stops reading. */
	lm_sim_mark_range(pause_src->ds, 0, NPAGES);
	__atomic_store_n(&pause_relay->stall_now, 1, __ATOMIC_RELEASE);
	return err;
}

static void test_receiver_stops_reading(void **state)
{
	struct src s;
	src_init(&s);
	struct relay x;
	int sfd, rfd;
	relay_start(&x, UINT64_MAX, &sfd, &rfd);
	pause_relay = &x;
	pause_src = &s;
	struct lm_workload_ops ops = lm_test_writer_ops;
	ops.pause = pause_then_stall;
	/* This receiver would wait for ever: the sender must end it all. */
	struct rx r = { .p = { .idle_timeout_ms = LM_TIMEOUT_NEVER } };
	rx_start(&r, rfd);
	struct lm_migrate_params p;
	params(&p);
	p.idle_timeout_ms = 300;
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, &s.r, 1, s.ds, &ops, &s.w, &p), 0);
	assert_int_equal(lm_migration_start(m, sfd), 0);
	int serr = lm_migration_wait(m);
	print_message("      sender: %s\n", lm_migration_error(m));
	assert_int_equal(serr, -ETIMEDOUT);
	assert_non_null(strstr(lm_migration_error(m), "the receiver read nothing for 300 ms during"));
	struct lm_migrate_stats st;
	lm_migration_query(m, &st);
	assert_int_equal(st.status, LM_MIG_FAILED);
	lm_migration_free(m);
	/* Paused for the switchover, then resumed. */
	assert_int_equal(s.w.pauses, 1);
	expect_running(&s.w);

	relay_stop(&x);
	close(sfd);
	int rerr = rx_join(&r);
	print_message("      receiver: %s\n", r.st.error);
	assert_true(rerr < 0);
	assert_int_equal(r.dest.finish_err, rerr);
	src_destroy(&s);
}

/* The receiver cannot get ready (its prepare hangs): the sender's wait for
 * READY ends after result_timeout_ms with the receiver named. */
static int prepare_release;

static int hanging_prepare(void *ctx)
{
	while (!__atomic_load_n(&prepare_release, __ATOMIC_ACQUIRE))
		usleep(1000);
	return lm_test_dest_ops.prepare(ctx);
}

static void test_receiver_silent(void **state)
{
	struct src s;
	src_init(&s);
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	struct lm_workload_ops dops = lm_test_dest_ops;
	dops.prepare = hanging_prepare;
	__atomic_store_n(&prepare_release, 0, __ATOMIC_RELEASE);
	struct rx r = { .ops = &dops, .p = { .idle_timeout_ms = LM_TIMEOUT_NEVER } };
	rx_start(&r, sp[1]);
	struct lm_migrate_params p;
	params(&p);
	p.result_timeout_ms = 300;
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, &s.r, 1, s.ds, &lm_test_writer_ops, &s.w, &p), 0);
	assert_int_equal(lm_migration_start(m, sp[0]), 0);
	int serr = lm_migration_wait(m);
	print_message("      sender: %s\n", lm_migration_error(m));
	assert_int_equal(serr, -ETIMEDOUT);
	assert_non_null(strstr(lm_migration_error(m), "the receiver sent nothing for 300 ms while waiting"));
	lm_migration_free(m);
	assert_int_equal(s.w.pauses, 0); /* it never got as far as pausing */
	expect_running(&s.w);

	close(sp[0]);
	__atomic_store_n(&prepare_release, 1, __ATOMIC_RELEASE);
	int rerr = rx_join(&r);
	print_message("      receiver: %s\n", r.st.error);
	assert_true(rerr < 0);
	src_destroy(&s);
}

/* A receive that waits for a stalled sender ends when its cancel fd
 * becomes readable, with the phase in the message. */
static void test_receiver_cancel_fd(void **state)
{
	struct src s;
	src_init(&s);
	struct relay x;
	int sfd, rfd;
	relay_start(&x, 64 << 10, &sfd, &rfd);
	int efd = eventfd(0, EFD_CLOEXEC);
	assert_true(efd > 0);
	struct rx r = { .p = { .idle_timeout_ms = LM_TIMEOUT_NEVER, .cancel_fd = efd } };
	rx_start(&r, rfd);
	struct lm_migrate_params p;
	params(&p);
	lm_migration *m;
	assert_int_equal(lm_migration_new(&m, &s.r, 1, s.ds, &lm_test_writer_ops, &s.w, &p), 0);
	assert_int_equal(lm_migration_start(m, sfd), 0);
	/* Once the stall is reached (a hang here is caught by the alarm). */
	while (__atomic_load_n(&x.fwd, __ATOMIC_ACQUIRE) < (64 << 10))
		usleep(1000);
	uint64_t one = 1;
	assert_int_equal(write(efd, &one, sizeof(one)), sizeof(one));
	int rerr = rx_join(&r);
	print_message("      receiver: %s\n", r.st.error);
	assert_int_equal(rerr, -ECANCELED);
	/* The phase it was in: round 1 normally; on a loaded machine the
	 * receiver may not have read the ROUND record from the relay yet. */
	if (!strstr(r.st.error, "cancelled during round 1") && !strstr(r.st.error, "cancelled before round 1"))
		fail_msg("the message does not name the phase: %s", r.st.error);
	assert_int_equal(r.dest.finish_err, -ECANCELED);

	relay_stop(&x);
	assert_true(lm_migration_wait(m) < 0);
	lm_migration_free(m);
	close(sfd);
	close(efd);
	expect_running(&s.w);
	src_destroy(&s);
}

static void expect_keepalive(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len), 0);
	assert_int_equal(v, 1);
	int idle = 0, intvl = 0, cnt = 0;
	unsigned int user = 0;
	len = sizeof(int);
	assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len), 0);
	assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, &len), 0);
	assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &len), 0);
	len = sizeof(user);
	assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, &len), 0);
	/* A dead peer is noticed within about 30 s. */
	assert_true(idle > 0 && intvl > 0 && cnt > 0);
	assert_true(idle + intvl * cnt <= 30);
	assert_true(user > 0 && user <= 30000);
}

/* Both ends of a TCP migration connection probe a silent peer. */
static void test_tcp_keepalive(void **state)
{
	struct lm_uri u;
	assert_int_equal(lm_uri_parse("tcp:127.0.0.1:0", &u), 0);
	int lfd = lm_transport_listen(&u);
	assert_true(lfd >= 0);
	int port = lm_transport_local_port(lfd);
	assert_true(port > 0);
	snprintf(u.port, sizeof(u.port), "%d", port);
	int cfd = lm_transport_connect(&u);
	assert_true(cfd >= 0);
	int afd = lm_transport_accept(lfd, 5000);
	assert_true(afd >= 0);
	expect_keepalive(cfd);
	expect_keepalive(afd);
	close(afd);
	close(cfd);
	close(lfd);
}

int main(void)
{
	/* Only to turn a hang into a failure. */
	alarm(300);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_sender_stalls),
		cmocka_unit_test(test_receiver_stops_reading),
		cmocka_unit_test(test_receiver_silent),
		cmocka_unit_test(test_receiver_cancel_fd),
		cmocka_unit_test(test_tcp_keepalive),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
