/*
 * End-to-end: stalls end. A connection that stalls in the middle of a live
 * migration (a proxy stops reading from the source and forwards nothing
 * more, both connections left open) must not hang either side:
 * `livemig incoming --timeout 3` gives up the migration in progress when
 * the 3 s are over and exits 1 saying so, and the source, whose writes no
 * longer progress, fails after its idle timeout (`migrate --idle-timeout`)
 * and keeps its guest running. A sender that goes silent after the
 * handshake makes `incoming --idle-timeout` fail that migration and wait
 * for the next; a termination signal ends an incoming side that waits in
 * the middle of a stream with no idle timeout at all.
 *
 * Deadlines only turn a hang into a failure; nothing here judges how long
 * anything took.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/stream.h"
#include "support/live.h"
#include "support/live_assert.h"

static int group_setup(void **state)
{
	lm_live_setup("live-timeout");
	return 0;
}

/* A working set rewritten faster than the capped link carries it: the
 * migration keeps sending until something ends it. */
#define FAST_DIRTIER "workload=hotset wss=16M rate=100M verify=1 progress=250"

/* ---- a proxy that stalls ------------------------------------------------ */

/* Forwards both ways until stall_after bytes went towards the target; then
 * reads from neither side and keeps both connections open until stopped. */
struct stall_proxy {
	int lfd;
	char target[320];
	uint64_t stall_after;
	_Atomic uint64_t fwd, back;
	atomic_bool stalled, stop;
	pthread_t th;
};

static bool pass(int from, int to, size_t want, uint64_t *n_out)
{
	char buf[65536];
	if (want > sizeof(buf))
		want = sizeof(buf);
	ssize_t n = read(from, buf, want);
	if (n <= 0)
		return false;
	for (ssize_t off = 0; off < n;) {
		ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		off += w;
	}
	*n_out = (uint64_t)n;
	return true;
}

static void *stall_main(void *arg)
{
	struct stall_proxy *p = arg;
	int a = -1, b = -1;
	while (!atomic_load(&p->stop) && a < 0) {
		struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
		if (poll(&pf, 1, 100) > 0)
			a = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
	}
	if (a >= 0)
		b = lm_live_tcp_connect(p->target);
	while (a >= 0 && b >= 0 && !atomic_load(&p->stop)) {
		uint64_t fwd = atomic_load(&p->fwd), n;
		if (fwd >= p->stall_after) {
			atomic_store(&p->stalled, true);
			lm_live_msleep(50);
			continue;
		}
		struct pollfd pf[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
		if (poll(pf, 2, 100) <= 0)
			continue;
		if (pf[0].revents) {
			if (!pass(a, b, (size_t)(p->stall_after - fwd), &n))
				break;
			atomic_fetch_add(&p->fwd, n);
		}
		if (pf[1].revents) {
			if (!pass(b, a, 65536, &n))
				break;
			atomic_fetch_add(&p->back, n);
		}
	}
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
	return NULL;
}

static void stall_start(struct stall_proxy *p, const char *target, uint64_t stall_after, char *uri,
			size_t urilen)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->target, sizeof(p->target), "%s", target);
	p->stall_after = stall_after;
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->lfd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(p->lfd, 4), 0);
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(uri, urilen, "tcp:127.0.0.1:%d", ntohs(sa.sin_port));
	assert_int_equal(pthread_create(&p->th, NULL, stall_main, p), 0);
}

static void stall_stop(struct stall_proxy *p)
{
	atomic_store(&p->stop, true);
	pthread_join(p->th, NULL);
	close(p->lfd);
}

/* ---- a sender that says HELLO, reads ACCEPT, then nothing --------------- */

/* Returns the connected fd once the destination accepted the HELLO (it is
 * then inside a receive, its memory set up). */
static int hello_then_silence(const char *uri)
{
	int fd = lm_live_tcp_connect(uri);
	assert_true(fd >= 0);
	lm_stream_region reg = {0, 1024}; /* 4 MiB from 0: a layout the VMM takes */
	lm_stream_hello h = {.version = LM_STREAM_VERSION, .page_size = LM_PAGE_SIZE,
			     .offered = LM_CAP_RECORD_CSUM, .mandatory = LM_CAP_RECORD_CSUM};
	lm_stream_err e = {0};
	assert_int_equal(lm_stream_layout_init(&h.layout, &reg, 1, &e), 0);
	lm_buf b;
	lm_buf_init(&b);
	assert_int_equal(lm_stream_put_hello(&b, &h), 0);
	assert_int_equal(send(fd, b.data, b.len, MSG_NOSIGNAL), (ssize_t)b.len);
	lm_buf_destroy(&b);
	/* ACCEPT: a 12-byte header and 16 bytes. */
	uint8_t acc[28];
	size_t got = 0;
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	while (got < sizeof(acc) && poll(&pf, 1, (int)(LM_LIVE_DEADLINE_S * 1000)) > 0) {
		ssize_t n = read(fd, acc + got, sizeof(acc) - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	assert_int_equal(got, sizeof(acc));
	assert_int_equal(acc[0] | acc[1] << 8, LM_REC_ACCEPT);
	return fd;
}

/* ---- tests -------------------------------------------------------------- */

/* incoming --timeout 3 with a source whose stream stalls in round 1. */
static void test_stalled_stream(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", FAST_DIRTIER, NULL, 1);
	/* No idle timeout here: only --timeout may end the wait. */
	const char *const in_opts[] = {"--timeout", "3", "--idle-timeout", "0", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", in_opts), 0);
	struct stall_proxy px;
	char via[64];
	stall_start(&px, dst.uri, 1 << 20, via, sizeof(via));

	static const char *const opts[] = {"--max-bandwidth", "20M", "--max-rounds", "100000",
					   "--on-nonconverge", "cancel", "--idle-timeout", "1000", NULL};
	struct lm_live_mig m;
	int rc = lm_live_migrate(&m, &src, via, opts);
	fprintf(stderr, "      migrate: exit %d: %s%s", rc, m.errtext, strchr(m.errtext, '\n') ? "" : "\n");
	/* The source: its writes went nowhere for 1 s, it gave up and runs on. */
	assert_int_equal(rc, 1);
	assert_non_null(strstr(m.json, "the receiver read nothing for 1 s"));
	lm_live_mig_free(&m);
	lm_live_expect_survived(&src, "writes=");
	char reply[4096];
	assert_int_equal(lm_live_vm_cmd(&src, "{\"execute\":\"query-migrate-parameters\"}", reply, sizeof(reply)),
			 0);
	assert_non_null(strstr(reply, "\"idle-timeout\":1000"));

	/* The destination: the migration it was receiving is given up when
	 * the 3 s are over, and it exits 1 saying so. */
	int st = lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S);
	char line[512] = "";
	lm_live_count_file(dst.out, "no migration completed within 3 s", line, sizeof(line));
	fprintf(stderr, "      incoming: exit %d: %s\n", st, line);
	assert_int_equal(st, 1);
	assert_non_null(strstr(line, "no migration completed within 3 s"));
	/* It had answered the HELLO (the proxy carried its ACCEPT back), so
	 * it was inside that migration when the time was up. */
	if (atomic_load(&px.back) > 0)
		assert_non_null(strstr(line, "giving up the one in progress: cancelled during"));
	assert_int_equal(lm_live_count_file(dst.out, "migration failed", NULL, 0), 0);
	lm_live_expect_never_ran(&dst);
	stall_stop(&px);
}

/* incoming --idle-timeout: a sender silent after the handshake fails that
 * migration, the next one is awaited. */
static void test_idle_sender(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm dst;
	const char *const in_opts[] = {"--idle-timeout", "500", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", in_opts), 0);
	int fd = hello_then_silence(dst.uri);
	char line[512] = "";
	assert_true(lm_live_wait_line(dst.out, "migration failed", 0, line, sizeof(line), dst.pid,
				      LM_LIVE_DEADLINE_S));
	fprintf(stderr, "      %s\n", line);
	assert_non_null(strstr(line, "no data from the sender for 500 ms before round 1"));
	lm_live_expect_waiting_again(&dst, 0);
	close(fd);
	lm_live_kill(dst.pid, SIGTERM);
	assert_int_equal(lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S), 1);
}

/* No idle timeout and no --timeout: a termination signal still ends a
 * receive that waits for a silent sender. */
static void test_signal_ends_receive(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm dst;
	const char *const in_opts[] = {"--idle-timeout", "0", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", in_opts), 0);
	int fd = hello_then_silence(dst.uri);
	lm_live_kill(dst.pid, SIGTERM);
	assert_int_equal(lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S), 1);
	close(fd);
	assert_int_equal(lm_live_count_file(dst.out, "waiting for another migration", NULL, 0), 0);
	lm_live_expect_never_ran(&dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_stalled_stream, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_idle_sender, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_signal_ends_receive, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
