/*
 * The QMP client (src/cli/qmp_client.h) that livemig migrate, livemig-bench
 * and the tests share: against a real `livemig run --paused` control socket
 * (greeting, a command answered, an error reply, events delivered to the
 * callback while a reply is awaited and by lm_qmp_wait_event), and against
 * servers written here: one that accepts and says nothing (every deadline
 * returns -ETIMEDOUT), and one that frames its values the ways a QMP
 * server may (no newline, two values in one write, a value split across
 * writes, bytes that do not parse, a late reply to an earlier request).
 *
 * Deadlines only turn a hang into a failure, except where a deadline is
 * the thing tested: then the client must return within a bound.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "cli/qmp_client.h"
#include "support/live.h"
#include "support/live_assert.h"

#define DEADLINE_S 60.0

/* ---- what the callback saw ---------------------------------------------- */

struct seen {
	int n;
	char names[32][32];
	double time[32];
};

static void on_event(struct lm_qmp *q, const char *name, struct json_object *ev, void *arg)
{
	struct seen *s = arg;
	if (s->n < 32) {
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
		s->time[s->n] = lm_qmp_event_time(ev);
		s->n++;
	}
}

static int count(const struct seen *s, const char *name)
{
	int k = 0;
	for (int i = 0; i < s->n; i++)
		k += !strcmp(s->names[i], name);
	return k;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static struct lm_qmp *expect_connect(const char *path, struct seen *s)
{
	struct lm_qmp *q = lm_qmp_new();
	assert_non_null(q);
	if (s)
		lm_qmp_set_event_cb(q, on_event, s);
	int r = lm_qmp_connect(q, path, DEADLINE_S, DEADLINE_S);
	if (r < 0)
		fprintf(stderr, "connect %s: %s\n", path, lm_qmp_error(q));
	assert_int_equal(r, 0);
	return q;
}

/* ---- against livemig ---------------------------------------------------- */

static void test_livemig(void **state)
{
	if (!lm_live_ready())
		skip();
	const char *sock = lm_live_path("paused.sock"), *out = lm_live_path("paused.out");
	const char *args[] = {"run", lm_live_guest(), "--mem",
			      "64M", "--paused",      "--control",
			      sock,  "--append",      "workload=hotset mem=8M wss=1M rate=1M",
			      NULL};
	pid_t pid = lm_live_expect_spawn(out, args);
	struct seen sa = {0}, sb = {0};
	/* The socket appears some time after the process starts: connect
	 * retries until then. */
	struct lm_qmp *a = expect_connect(sock, &sa), *b = expect_connect(sock, &sb);

	/* The greeting, parsed. */
	struct json_object *g = lm_qmp_greeting(a), *qmp, *ver;
	assert_non_null(g);
	assert_true(json_object_object_get_ex(g, "QMP", &qmp));
	assert_true(json_object_object_get_ex(qmp, "version", &ver));
	assert_non_null(strstr(lm_qmp_text(a), "\"QMP\""));

	/* A command answered; the VM is paused (--paused). */
	struct json_object *ret = NULL;
	assert_int_equal(lm_qmp_exec(a, "qmp_capabilities", NULL, DEADLINE_S, NULL), 0);
	assert_int_equal(lm_qmp_exec(a, "query-status", NULL, DEADLINE_S, &ret), 0);
	assert_non_null(ret);
	struct json_object *running;
	assert_true(json_object_object_get_ex(ret, "running", &running));
	assert_false(json_object_get_boolean(running));
	json_object_put(ret);

	/* An error reply: -EREMOTEIO, the server's description and class. */
	assert_int_equal(lm_qmp_exec(a, "no-such-command", NULL, DEADLINE_S, &ret), -EREMOTEIO);
	assert_null(ret);
	assert_true(strlen(lm_qmp_error(a)) > 0);
	assert_true(strlen(lm_qmp_error_class(a)) > 0);

	/* A request of the caller's own, with an id: the whole reply, id echoed. */
	struct json_object *req =
	    json_tokener_parse("{\"execute\":\"query-status\",\"id\":\"abc\"}");
	struct json_object *reply = NULL;
	assert_int_equal(lm_qmp_request(a, req, DEADLINE_S, &reply), 0);
	assert_string_equal(jstr(reply, "id"), "abc");
	assert_non_null(strstr(lm_qmp_text(a), "\"return\""));
	json_object_put(reply);
	json_object_put(req);

	/* b resumes the VM; a, idle, waits for the RESUME event. */
	assert_int_equal(lm_qmp_exec(b, "cont", NULL, DEADLINE_S, NULL), 0);
	struct json_object *ev = NULL;
	int r = lm_qmp_wait_event(a, "RESUME", DEADLINE_S, &ev);
	if (r < 0)
		fprintf(stderr, "RESUME: %s\n", lm_qmp_error(a));
	assert_int_equal(r, 0);
	assert_string_equal(jstr(ev, "event"), "RESUME");
	assert_true(lm_qmp_event_time(ev) > 1e9); /* the host's wall clock */
	json_object_put(ev);
	assert_int_equal(count(&sa, "RESUME"), 1); /* the callback saw it too */

	/* b stops it; a only sends commands, and the STOP event reaches a's
	 * callback while a waits for their replies. */
	assert_int_equal(lm_qmp_exec(b, "stop", NULL, DEADLINE_S, NULL), 0);
	double end = lm_live_now() + DEADLINE_S;
	while (count(&sa, "STOP") == 0 && lm_live_now() < end) {
		assert_int_equal(lm_qmp_exec(a, "query-status", NULL, DEADLINE_S, &ret), 0);
		json_object_put(ret);
		lm_live_msleep(10);
	}
	assert_int_equal(count(&sa, "STOP"), 1);
	/* b saw both events of its own commands, during its own replies or
	 * when it polls for what has arrived. */
	end = lm_live_now() + DEADLINE_S;
	while (count(&sb, "STOP") == 0 && lm_live_now() < end)
		assert_int_equal(lm_qmp_poll(b, 0.05), 0);
	assert_int_equal(count(&sb, "RESUME"), 1);
	assert_int_equal(count(&sb, "STOP"), 1);

	/* quit: the reply, then the server closes: -EPIPE from then on. */
	assert_int_equal(lm_qmp_exec(a, "quit", NULL, DEADLINE_S, NULL), 0);
	assert_int_equal(lm_live_wait(pid, DEADLINE_S), 0);
	assert_int_equal(lm_qmp_poll(a, DEADLINE_S), -EPIPE);
	assert_int_equal(lm_qmp_exec(b, "query-status", NULL, DEADLINE_S, NULL), -EPIPE);
	lm_qmp_free(a);
	lm_qmp_free(b);

	/* Gone: one try fails at once; retries end at their deadline. */
	struct lm_qmp *q = lm_qmp_new();
	assert_int_equal(lm_qmp_connect(q, sock, 0, DEADLINE_S), -ENOENT);
	assert_non_null(strstr(lm_qmp_error(q), sock));
	double t0 = lm_live_now();
	assert_int_equal(lm_qmp_connect(q, sock, 0.3, DEADLINE_S), -ENOENT);
	assert_true(lm_live_now() - t0 >= 0.29);
	assert_false(lm_qmp_connected(q));
	lm_qmp_free(q);
}

/* ---- against servers written here ---------------------------------------- */

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

/* A server that accepts (the backlog does it) and never says a word. */
static void test_silent_server(void **state)
{
	if (!lm_live_ready())
		skip();
	const char *path = lm_live_path("silent.sock");
	int lfd = listen_unix(path);
	struct lm_qmp *q = lm_qmp_new();
	double t0 = lm_live_now();
	assert_int_equal(lm_qmp_connect(q, path, 0, 0.3), -ETIMEDOUT);
	double took = lm_live_now() - t0;
	assert_true(took >= 0.29 && took < 5);
	assert_non_null(strstr(lm_qmp_error(q), "greeting"));
	assert_false(lm_qmp_connected(q));
	lm_qmp_free(q);
	close(lfd);
	unlink(path);
}

/* The scripted server: greets, then answers each request line with the
 * next reply script, written in pieces with pauses between them. */
struct script {
	const char *path;
	int lfd;
	double delay_s; /* before the listener exists */
	const char *greeting[3];
	const char *answers[4][4]; /* per request: the pieces to write */
	int requests;		   /* how many request lines it read */
};

static void write_all(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void write_pieces(int fd, const char *const *pieces, int n)
{
	for (int i = 0; i < n && pieces[i]; i++) {
		write_all(fd, pieces[i]);
		lm_live_msleep(30); /* separate reads on the other side */
	}
}

static void *script_main(void *arg)
{
	struct script *s = arg;
	lm_live_msleep((int)(s->delay_s * 1000));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s->path);
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s->lfd, 1) < 0)
		return NULL;
	int fd = accept(s->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	write_pieces(fd, s->greeting, 3);
	char c;
	for (int k = 0; k < 4 && s->answers[k][0]; k++) {
		/* one request line */
		while (read(fd, &c, 1) == 1 && c != '\n')
			;
		s->requests++;
		write_pieces(fd, s->answers[k], 4);
	}
	/* then silence until the client closes */
	while (read(fd, &c, 1) > 0)
		;
	close(fd);
	return NULL;
}

static void test_framing(void **state)
{
	if (!lm_live_ready())
		skip();
	struct script s = {
	    .path = lm_live_path("scripted.sock"),
	    .delay_s = 0.2,
	    /* a greeting split in three, no newline */
	    .greeting = {"{\"QMP\": {\"vers", "ion\": {}, \"capabilities\"", ": []}}"},
	    .answers =
		{
		    /* an event and the reply in one write, no newline */
		    {"{\"event\":\"STOP\",\"timestamp\":{\"seconds\":1700000000,\"microseconds\":"
		     "500000}}"
		     "{\"return\": {\"one\": 1}}"},
		    /* bytes that do not parse, a late reply to an earlier
		     * request (another id), then ours split across writes */
		    {"not json\n{\"return\": {\"late\": 1}, \"id\": 999}\n", "{\"return\": {\"tw",
		     "o\": 2}, \"id\": 2}\r\n"},
		    /* an error, then an event nobody waits for */
		    {"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no such\"}, \"id\": "
		     "3}"
		     "{\"event\":\"RESUME\"}"},
		    /* nothing: the command's deadline must pass */
		    {""},
		},
	};
	unlink(s.path);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, script_main, &s), 0);
	struct seen seen = {0};
	struct lm_qmp *q = lm_qmp_new();
	lm_qmp_set_event_cb(q, on_event, &seen);
	/* The listener appears 0.2 s later: connect retries until then. */
	int r = lm_qmp_connect(q, s.path, DEADLINE_S, DEADLINE_S);
	if (r < 0)
		fprintf(stderr, "connect: %s\n", lm_qmp_error(q));
	assert_int_equal(r, 0);
	assert_string_equal(lm_qmp_text(q), "{\"QMP\": {\"version\": {}, \"capabilities\": []}}");

	struct json_object *ret = NULL, *v;
	assert_int_equal(lm_qmp_exec(q, "a", NULL, DEADLINE_S, &ret), 0);
	assert_true(json_object_object_get_ex(ret, "one", &v));
	json_object_put(ret);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.names[0], "STOP");
	assert_true(seen.time[0] == 1700000000.5);

	assert_int_equal(lm_qmp_exec(q, "b", NULL, DEADLINE_S, &ret), 0);
	assert_false(json_object_object_get_ex(ret, "late", NULL));
	assert_true(json_object_object_get_ex(ret, "two", &v));
	assert_int_equal(json_object_get_int(v), 2);
	json_object_put(ret);

	assert_int_equal(lm_qmp_exec(q, "c", NULL, DEADLINE_S, &ret), -EREMOTEIO);
	assert_string_equal(lm_qmp_error(q), "no such");
	assert_string_equal(lm_qmp_error_class(q), "CommandNotFound");
	assert_int_equal(lm_qmp_poll(q, 0.1), 0);
	assert_int_equal(seen.n, 2);
	assert_string_equal(seen.names[1], "RESUME");

	double t0 = lm_live_now();
	assert_int_equal(lm_qmp_exec(q, "d", NULL, 0.3, &ret), -ETIMEDOUT);
	double took = lm_live_now() - t0;
	assert_true(took >= 0.29 && took < 5);
	assert_int_equal(lm_qmp_wait_event(q, "SHUTDOWN", 0.2, NULL), -ETIMEDOUT);
	assert_int_equal(s.requests, 4);

	lm_qmp_free(q);
	pthread_join(th, NULL);
	close(s.lfd);
	unlink(s.path);
}

static int group_setup(void **state)
{
	lm_live_setup("qmp-client");
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_livemig, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_silent_server, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_framing, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
