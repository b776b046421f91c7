/*
 * End-to-end: the control socket as a QMP server that no client can stall.
 *
 * - Slow clients during a live migration of a running guest: one client
 *   asked for ~450 KB of replies and reads none of them (its socket is
 *   full, its queue holds the rest: it stays connected), another sends
 *   commands without reading until its queue passes 1 MiB and it is
 *   disconnected. Meanwhile a third client's query-status is answered, and
 *   the migration completes. Its measured pause (downtime-us) and the
 *   third client's slowest answer are printed, not judged.
 * - Framing by JSON value: no newline, two values in one write, one value
 *   in three writes (a UTF-8 character split between two of them), invalid
 *   UTF-8 in a command name (the reply is valid UTF-8 JSON), a message cut
 *   inside a character, a 10 MB value (that client is dropped, the server
 *   stays up), CommandNotFound, query-commands, query-status and events
 *   with their timestamps.
 * - socat piping one request; a Python client framed as qemu.qmp frames
 *   (tests/support/qmp_client.py); DeviceNotActive and GenericError on
 *   `livemig incoming` before the VM arrived.
 *
 * Deadlines only turn a hang into a failure; nothing here judges timing.
 */
#include <errno.h>
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
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "support/live.h"
#include "support/live_assert.h"

static int group_setup(void **state)
{
	lm_live_setup("control-qmp");
	return 0;
}

#define IDLE_GUEST "workload=idle progress=200"

/* ---- a raw client --------------------------------------------------------- */

struct raw {
	int fd;
	size_t len;
	char buf[1 << 16];
};

static void raw_open(struct raw *r, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	r->len = 0;
	r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(r->fd >= 0);
	assert_int_equal(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
}

static void raw_close(struct raw *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}

static void raw_send(struct raw *r, const void *p, size_t n)
{
	assert_int_equal(send(r->fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void raw_sends(struct raw *r, const char *s)
{
	raw_send(r, s, strlen(s));
}

/* Reads until buf holds needle (true), or EOF / the deadline (false). */
static bool raw_wait(struct raw *r, const char *needle, double deadline_s)
{
	double end = lm_live_now() + deadline_s;
	for (;;) {
		r->buf[r->len] = 0;
		if (strstr(r->buf, needle))
			return true;
		int left = (int)((end - lm_live_now()) * 1000);
		if (left <= 0 || r->len + 1 >= sizeof(r->buf))
			return false;
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		if (poll(&p, 1, left) <= 0)
			return false;
		ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, 0);
		if (n <= 0)
			return false;
		r->len += (size_t)n;
	}
}

/* Well-formed UTF-8 (the checker is independent of the server's). */
static bool utf8_ok(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = p[i];
		size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
		if (!k || i + k > n || (k == 2 && c < 0xc2))
			return false;
		uint32_t cp = k == 1 ? c : c & (0x7f >> k);
		for (size_t j = 1; j < k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + j] & 0x3f);
		}
		if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k;
	}
	return true;
}

/* Every line received so far is valid UTF-8 and parses as one JSON object. */
static void raw_expect_valid(struct raw *r)
{
	assert_true(utf8_ok((const unsigned char *)r->buf, r->len));
	char *copy = strndup(r->buf, r->len);
	assert_non_null(copy);
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct json_tokener *tok = json_tokener_new();
		struct json_object *o = json_tokener_parse_ex(tok, line, (int)strlen(line));
		bool ok = o && json_tokener_get_error(tok) == json_tokener_success &&
			  json_tokener_get_parse_end(tok) == strlen(line) &&
			  json_object_is_type(o, json_type_object);
		if (!ok)
			fprintf(stderr, "not one JSON object: %s\n", line);
		assert_true(ok);
		json_object_put(o);
		json_tokener_free(tok);
	}
	free(copy);
}

/* Connects and waits for the greeting. */
static void raw_greeted(struct raw *r, const char *path)
{
	raw_open(r, path);
	assert_true(raw_wait(r, "\"QMP\"", LM_LIVE_DEADLINE_S));
	/* QEMU's VersionInfo, as qmp-shell reads it. */
	assert_non_null(strstr(r->buf, "\"version\":{\"qemu\":{\"major\":"));
	assert_non_null(strstr(r->buf, "\"package\":\"livemig "));
	assert_non_null(strstr(r->buf, "\"capabilities\":[]"));
}

static void start_vm(struct lm_live_vm *vm, const char *name)
{
	assert_int_equal(lm_live_run(vm, name, "64M", IDLE_GUEST, NULL), 0);
	assert_true(lm_live_vm_wait_progress(vm, 0));
}

/* ---- framing ---------------------------------------------------------------- */

static void test_framing(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm vm;
	start_vm(&vm, "frame");
	struct raw r;
	raw_greeted(&r, vm.sock);

	/* No newline, as qemu.qmp sends it. */
	raw_sends(&r, "{\"execute\":\"query-status\",\"id\":\"nl\"}");
	assert_true(raw_wait(&r, "\"id\":\"nl\"", LM_LIVE_DEADLINE_S));
	assert_non_null(strstr(r.buf, "\"return\":{\"status\":\"running\",\"running\":true"));

	/* Two values in one write. */
	raw_sends(&r, "{\"execute\":\"query-status\",\"id\":\"two1\"}{\"execute\":\"query-version\","
		      "\"id\":\"two2\"}");
	assert_true(raw_wait(&r, "\"id\":\"two1\"", LM_LIVE_DEADLINE_S));
	assert_true(raw_wait(&r, "\"id\":\"two2\"", LM_LIVE_DEADLINE_S));
	assert_true(strstr(r.buf, "\"id\":\"two1\"") < strstr(r.buf, "\"id\":\"two2\""));

	/* One value in three writes with pauses, a character (é, C3 A9) split
	 * between the second and the third. */
	raw_sends(&r, "{\"execu");
	lm_live_msleep(200);
	raw_sends(&r, "te\":\"query-status\",\"id\":\"thr\xc3");
	lm_live_msleep(200);
	raw_sends(&r, "\xa9\"}");
	assert_true(raw_wait(&r, "\"id\":\"thr\xc3\xa9\"", LM_LIVE_DEADLINE_S));

	/* Unknown command: QEMU's CommandNotFound. */
	raw_sends(&r, "{\"execute\":\"no-such-command\",\"id\":\"nf\"}\n");
	assert_true(raw_wait(&r, "\"id\":\"nf\"", LM_LIVE_DEADLINE_S));
	assert_non_null(strstr(r.buf, "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The "
				      "command no-such-command has not been found\"},\"id\":\"nf\"}"));

	/* Invalid UTF-8 in the command name: an error, and valid UTF-8 JSON. */
	raw_sends(&r, "{\"execute\":\"qu\xff\xfery-status\",\"id\":\"bad\"}");
	assert_true(raw_wait(&r, "\"id\":\"bad\"", LM_LIVE_DEADLINE_S));
	assert_non_null(strstr(r.buf, "invalid UTF-8"));
	/* A valid name whose echo is cut inside a character (63 bytes, then
	 * é): the reply still is valid UTF-8. */
	char req[256];
	snprintf(req, sizeof(req), "{\"execute\":\"%.63s\xc3\xa9x\",\"id\":\"cut\"}",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	raw_sends(&r, req);
	assert_true(raw_wait(&r, "\"id\":\"cut\"", LM_LIVE_DEADLINE_S));
	raw_expect_valid(&r);

	/* A 10 MB value: that client is dropped (with an error it may read),
	 * the server stays up for the others. */
	struct raw big;
	raw_greeted(&big, vm.sock);
	const char *head = "{\"execute\":\"query-status\",\"arguments\":{\"x\":\"";
	size_t total = 10u << 20;
	char *val = malloc(total);
	assert_non_null(val);
	memset(val, 'A', total);
	memcpy(val, head, strlen(head));
	memcpy(val + total - 3, "\"}}", 3);
	size_t sent = 0;
	int err = 0;
	while (sent < total) {
		ssize_t w = send(big.fd, val + sent, total - sent, MSG_NOSIGNAL);
		if (w <= 0) {
			err = errno;
			break;
		}
		sent += (size_t)w;
	}
	free(val);
	fprintf(stderr, "      10 MB value: %zu bytes went before the server hung up (%s)\n", sent,
		strerror(err));
	assert_true(sent < total);
	assert_true(err == EPIPE || err == ECONNRESET);
	/* Whatever it got before the end is valid, and the end came. */
	raw_wait(&big, "over 1 MiB", 5);
	raw_expect_valid(&big);
	raw_close(&big);
	raw_sends(&r, "{\"execute\":\"query-status\",\"id\":\"after\"}");
	assert_true(raw_wait(&r, "\"id\":\"after\"", LM_LIVE_DEADLINE_S));
	assert_int_equal(lm_live_count_file(vm.out, "dropped a client: sent a request over 1 MiB",
					    NULL, 0),
			 1);

	/* Events: STOP and RESUME with QEMU's timestamp. */
	raw_sends(&r, "{\"execute\":\"stop\",\"id\":\"st\"}");
	assert_true(raw_wait(&r, "\"id\":\"st\"", LM_LIVE_DEADLINE_S));
	const char *ev = strstr(r.buf, "{\"event\":\"STOP\",\"timestamp\":{\"seconds\":");
	assert_non_null(ev);
	assert_non_null(strstr(ev, "\"microseconds\":"));
	/* The event first, then the reply, as QEMU sends them. */
	assert_true(ev < strstr(r.buf, "\"id\":\"st\""));
	raw_sends(&r, "{\"execute\":\"query-status\",\"id\":\"ps\"}");
	assert_true(raw_wait(&r, "\"status\":\"paused\",\"running\":false", LM_LIVE_DEADLINE_S));
	raw_sends(&r, "{\"execute\":\"cont\",\"id\":\"ct\"}");
	assert_true(raw_wait(&r, "{\"event\":\"RESUME\",\"timestamp\":{\"seconds\":", LM_LIVE_DEADLINE_S));
	assert_true(raw_wait(&r, "\"id\":\"ct\"", LM_LIVE_DEADLINE_S));

	/* query-commands lists every command the socket serves. */
	raw_sends(&r, "{\"execute\":\"query-commands\",\"id\":\"qc\"}");
	assert_true(raw_wait(&r, "\"id\":\"qc\"", LM_LIVE_DEADLINE_S));
	static const char *const every[] = {
	    "qmp_capabilities", "query-commands", "query-version",	   "query-status",
	    "stop",		"cont",		  "quit",		   "guest-verify",
	    "balloon",		"query-balloon",  "migrate",		   "migrate-cancel",
	    "query-migrate",	"migrate-set-parameters", "query-migrate-parameters",
	};
	for (size_t i = 0; i < sizeof(every) / sizeof(every[0]); i++) {
		char want[64];
		snprintf(want, sizeof(want), "{\"name\":\"%s\"}", every[i]);
		if (!strstr(r.buf, want))
			fprintf(stderr, "query-commands lacks %s\n", every[i]);
		assert_non_null(strstr(r.buf, want));
	}
	raw_expect_valid(&r);
	raw_close(&r);
	assert_int_equal(lm_live_vm_quit(&vm), 0);
}

/* ---- socat, and a client framed like qemu.qmp -------------------------------- */

static bool have_program(const char *name)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

static void test_socat(void **state)
{
	if (!lm_live_ready())
		skip();
	if (!have_program("socat"))
		fail_msg("socat is missing (scripts/deps.sh installs it)");
	struct lm_live_vm vm;
	start_vm(&vm, "socat");
	const char *out = lm_live_path("socat.out");
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
		 "printf '%%s' '{\"execute\":\"query-status\"}' | socat -t 5 - UNIX-CONNECT:%s > %s",
		 vm.sock, out);
	assert_int_equal(system(cmd), 0);
	char *t = lm_live_slurp(out);
	fprintf(stderr, "      socat got: %s", t);
	assert_non_null(strstr(t, "{\"QMP\":{\"version\":"));
	assert_non_null(strstr(t, "{\"return\":{\"status\":\"running\",\"running\":true"));
	free(t);
	assert_int_equal(lm_live_vm_quit(&vm), 0);
}

static void test_python_client(void **state)
{
	if (!lm_live_ready())
		skip();
	const char *src = getenv("LM_SRCDIR");
	if (access("/usr/bin/python3", X_OK) != 0)
		fail_msg("/usr/bin/python3 is missing");
	struct lm_live_vm vm;
	start_vm(&vm, "py");
	const char *out = lm_live_path("py.out"), *err = lm_live_path("py.err");
	char cmd[2048];
	snprintf(cmd, sizeof(cmd),
		 "/usr/bin/python3 %s/tests/support/qmp_client.py %s qmp_capabilities query-version "
		 "query-status no-such-command > %s 2> %s",
		 src ? src : ".", vm.sock, out, err);
	int rc = system(cmd);
	char *t = lm_live_slurp(out);
	fprintf(stderr, "      python client (exit %d):\n%s", rc, t);
	lm_live_dump(err, 2000);
	assert_int_equal(rc, 0);
	assert_int_equal(lm_live_count(t, "\"greeting\": {\"QMP\": {\"version\": {\"qemu\": {\"major\": ",
				       NULL, 0),
			 1);
	assert_int_equal(lm_live_count(t, "{\"command\": \"qmp_capabilities\", \"reply\": {\"return\": {}",
				       NULL, 0),
			 1);
	assert_int_equal(lm_live_count(t, "\"package\": \"livemig ", NULL, 0), 2);
	assert_int_equal(lm_live_count(t, "\"status\": \"running\", \"running\": true", NULL, 0), 1);
	assert_int_equal(lm_live_count(t, "\"class\": \"CommandNotFound\"", NULL, 0), 1);
	free(t);
	assert_int_equal(lm_live_vm_quit(&vm), 0);
}

/* ---- before the VM: DeviceNotActive, GenericError ------------------------------ */

static void test_incoming_before_vm(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm dst;
	assert_int_equal(lm_live_incoming(&dst, "early", "tcp", NULL), 0);
	struct raw r;
	raw_greeted(&r, dst.sock);
	raw_sends(&r, "{\"execute\":\"query-status\",\"id\":1}");
	assert_true(raw_wait(&r, "\"id\":1}", LM_LIVE_DEADLINE_S));
	assert_non_null(strstr(r.buf, "\"status\":\"inmigrate\",\"running\":false"));
	/* No balloon device yet: QEMU's class for a missing balloon. */
	raw_sends(&r, "{\"execute\":\"query-balloon\",\"id\":2}");
	assert_true(raw_wait(&r, "\"id\":2}", LM_LIVE_DEADLINE_S));
	assert_non_null(strstr(r.buf, "{\"error\":{\"class\":\"DeviceNotActive\",\"desc\":\"No balloon "
				      "device has been activated"));
	raw_sends(&r, "{\"execute\":\"balloon\",\"arguments\":{\"value\":1048576},\"id\":3}");
	assert_true(raw_wait(&r, "\"id\":3}", LM_LIVE_DEADLINE_S));
	assert_non_null(strstr(strstr(r.buf, "\"id\":2}"), "\"class\":\"DeviceNotActive\""));
	/* No VM at all: QEMU has no such state; a GenericError that says so. */
	raw_sends(&r, "{\"execute\":\"stop\",\"id\":4}");
	assert_true(raw_wait(&r, "\"id\":4}", LM_LIVE_DEADLINE_S));
	assert_non_null(strstr(r.buf, "{\"error\":{\"class\":\"GenericError\",\"desc\":\"No VM here yet"));
	raw_close(&r);
	lm_live_kill(dst.pid, SIGTERM);
	assert_int_equal(lm_live_wait(dst.pid, LM_LIVE_DEADLINE_S), 1);
}

/* ---- slow clients during a migration ------------------------------------------- */

struct flood {
	char path[108];
	pthread_t th;
	atomic_bool stop;
	_Atomic uint64_t requests;
	atomic_int err; /* errno of the send that failed: the server hung up */
	double dropped_at;
};

/* Sends query-commands requests, 100 per write, and reads nothing, until
 * a write fails. */
static void *flood_main(void *arg)
{
	struct flood *f = arg;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, f->path, sizeof(f->path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		atomic_store(&f->err, -1);
		return NULL;
	}
	static const char one[] = "{\"execute\":\"query-commands\"}";
	char batch[100 * sizeof(one)];
	size_t n = 0;
	for (int i = 0; i < 100; i++, n += sizeof(one) - 1)
		memcpy(batch + n, one, sizeof(one) - 1);
	while (!atomic_load(&f->stop)) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t w = send(fd, batch, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EAGAIN)
			continue;
		if (w <= 0) {
			f->dropped_at = lm_live_now();
			atomic_store(&f->err, errno ? errno : EPIPE);
			break;
		}
		atomic_fetch_add(&f->requests, (uint64_t)w / (sizeof(one) - 1));
		lm_live_msleep(1);
	}
	close(fd);
	return NULL;
}

static void test_slow_clients_during_migration(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "256M", "workload=hotset wss=32M rate=20M verify=1 progress=200",
			       NULL, 1);
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", NULL), 0);

	/* The stuck client: ~450 KB of replies asked for, none read. Its
	 * socket fills; the rest waits in its queue (under 1 MiB: it stays). */
	struct raw stuck;
	raw_open(&stuck, src.sock);
	{
		static const char one[] = "{\"execute\":\"query-commands\"}";
		for (int i = 0; i < 1000; i++)
			raw_send(&stuck, one, sizeof(one) - 1);
	}
	/* The client that is answered throughout. */
	struct lm_live_ctl other;
	lm_live_expect_ctl_open(&other, src.sock, LM_LIVE_DEADLINE_S);
	char reply[8192];
	lm_live_expect_ok(&other, "{\"execute\":\"query-status\"}", reply, sizeof(reply));

	static const char *const opts[] = {"--max-bandwidth", "40M", NULL};
	struct lm_live_mig m;
	double t_start = lm_live_now();
	assert_int_equal(lm_live_mig_start(&m, &src, dst.uri, opts), 0);
	assert_true(lm_live_wait_migration_active(&src, 1 << 20));
	double t_flood = lm_live_now();

	/* The flooding client, during the migration. */
	struct flood fl = {0};
	assert_true(strlen(src.sock) < sizeof(fl.path));
	memcpy(fl.path, src.sock, strlen(src.sock) + 1);
	assert_int_equal(pthread_create(&fl.th, NULL, flood_main, &fl), 0);

	/* The other client, until the migration ends (the source then quits
	 * and its socket goes away). */
	int answered = 0;
	double slowest = 0;
	bool active = true;
	while (active) {
		double t0 = lm_live_now();
		int r = lm_live_ctl_cmd(&other, "{\"execute\":\"query-status\"}", reply, sizeof(reply));
		double dt = lm_live_now() - t0;
		if (r < 0)
			break; /* the source is gone: it migrated */
		assert_non_null(strstr(reply, "\"return\""));
		answered++;
		if (dt > slowest)
			slowest = dt;
		active = lm_live_alive(m.pid);
		lm_live_msleep(20);
	}
	double t_end = lm_live_now();
	int rc = lm_live_mig_finish(&m);
	atomic_store(&fl.stop, true);
	pthread_join(fl.th, NULL);
	double pause_us = -1;
	lm_live_num(m.json, "\"downtime-us\":", &pause_us);
	fprintf(stderr,
		"      slow clients: migrate exit %d, pause (downtime-us) %.0f us; other client "
		"answered %d times, slowest %.1f ms; flooder sent %llu requests, then %s\n",
		rc, pause_us, answered, slowest * 1000, (unsigned long long)atomic_load(&fl.requests),
		atomic_load(&fl.err) ? strerror(atomic_load(&fl.err)) : "was never dropped");
	fprintf(stderr,
		"      (flooder started %.0f ms into the migration, dropped %.0f ms later; the "
		"migration ended after %.0f ms)\n",
		(t_flood - t_start) * 1000, fl.dropped_at ? (fl.dropped_at - t_flood) * 1000 : -1.0,
		(t_end - t_start) * 1000);
	if (rc != 0)
		fprintf(stderr, "      migrate: %s\n", m.errtext);
	assert_int_equal(rc, 0);
	assert_true(answered > 0);
	/* The flooder was disconnected once its queue overflowed... */
	int e = atomic_load(&fl.err);
	assert_true(e == EPIPE || e == ECONNRESET);
	assert_true(lm_live_count_file(src.out, "dropped a client: over 1 MiB of replies", NULL, 0) >= 1);
	lm_live_expect_switchover(&src, &dst, "writes=");
	/* ... and only it: the stuck client, its queue under the bound, was
	 * never dropped (the switchover's STOP event was queued behind its
	 * unread replies, and the pause did not wait for it). */
	assert_int_equal(lm_live_count_file(src.out, "dropped a client: over 1 MiB of replies", NULL, 0),
			 1);
	lm_live_mig_free(&m);
	raw_close(&stuck);
	lm_live_ctl_close(&other);
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_framing, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_socat, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_python_client, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_incoming_before_vm, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_slow_clients_during_migration, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
