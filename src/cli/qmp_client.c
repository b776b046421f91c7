/*
 * The QMP client (see qmp_client.h for the workload, who owns what and the
 * errors).
 *
 * Incoming bytes collect in buf; buf[off, len) is what has not been
 * returned yet, and its first fed bytes have already been given to the
 * tokener, which keeps its state between reads, so a value split across
 * reads is parsed once and a read of several values yields them one by
 * one. The text of a value stays in buf until it is returned, so the
 * caller can see exactly what the server sent (lm_qmp_text()).
 */
#include "cli/qmp_client.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

struct lm_qmp {
	int fd;
	bool eof;    /* the server closed its end (what it sent may still be in buf) */
	bool broken; /* framing lost (a value over the limit): nothing more is read */
	struct json_tokener *tok;
	char *buf;
	size_t off, fed, len, cap;
	char *text; /* the last value's text, NUL-terminated */
	size_t text_cap;
	struct json_object *greeting;
	int64_t next_id;
	lm_qmp_event_fn *on_event;
	void *event_arg;
	int (*give_up)(void *arg);
	void *give_up_arg;
	FILE *trace;
	const char *tag;
	char err[512];
	char err_class[64];
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Milliseconds left until end, for poll(): rounded up, never negative. */
static int ms_left(double end)
{
	double left = end - now_s();
	if (left <= 0)
		return 0;
	if (left > 1e6)
		return 1000000000;
	return (int)ceil(left * 1000);
}

static int fail(struct lm_qmp *q, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct lm_qmp *q, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
	return err;
}

struct lm_qmp *lm_qmp_new(void)
{
	struct lm_qmp *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->fd = -1;
	q->tok = json_tokener_new_ex(64);
	if (!q->tok) {
		free(q);
		return NULL;
	}
	return q;
}

void lm_qmp_close(struct lm_qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	q->eof = q->broken = false;
	q->off = q->fed = q->len = 0;
	json_tokener_reset(q->tok);
	json_object_put(q->greeting);
	q->greeting = NULL;
}

void lm_qmp_free(struct lm_qmp *q)
{
	if (!q)
		return;
	lm_qmp_close(q);
	json_tokener_free(q->tok);
	free(q->buf);
	free(q->text);
	free(q);
}

void lm_qmp_set_event_cb(struct lm_qmp *q, lm_qmp_event_fn *fn, void *arg)
{
	q->on_event = fn;
	q->event_arg = arg;
}

void lm_qmp_set_give_up(struct lm_qmp *q, int (*give_up)(void *arg), void *arg)
{
	q->give_up = give_up;
	q->give_up_arg = arg;
}

void lm_qmp_set_trace(struct lm_qmp *q, FILE *f, const char *tag)
{
	q->trace = f;
	q->tag = tag ? tag : "qmp";
}

bool lm_qmp_connected(const struct lm_qmp *q)
{
	return q->fd >= 0;
}

int lm_qmp_fd(const struct lm_qmp *q)
{
	return q->fd;
}

struct json_object *lm_qmp_greeting(const struct lm_qmp *q)
{
	return q->greeting;
}

const char *lm_qmp_text(const struct lm_qmp *q)
{
	return q->text ? q->text : "";
}

const char *lm_qmp_error(const struct lm_qmp *q)
{
	return q->err;
}

const char *lm_qmp_error_class(const struct lm_qmp *q)
{
	return q->err_class;
}

double lm_qmp_event_time(struct json_object *event)
{
	struct json_object *ts, *s, *us;
	if (!json_object_object_get_ex(event, "timestamp", &ts) ||
	    !json_object_object_get_ex(ts, "seconds", &s) ||
	    !json_object_object_get_ex(ts, "microseconds", &us))
		return 0;
	return (double)json_object_get_int64(s) + (double)json_object_get_int64(us) * 1e-6;
}

/* ---- reading ------------------------------------------------------------ */

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Keeps buf[off, off + n) as the last value's text and drops it from buf. */
static int take_text(struct lm_qmp *q, size_t n)
{
	size_t t = n;
	while (t > 0 && is_ws(q->buf[q->off + t - 1]))
		t--;
	if (t + 1 > q->text_cap) {
		size_t cap = q->text_cap ? q->text_cap : 4096;
		while (cap < t + 1)
			cap *= 2;
		char *p = realloc(q->text, cap);
		if (!p)
			return -ENOMEM;
		q->text = p;
		q->text_cap = cap;
	}
	memcpy(q->text, q->buf + q->off, t);
	q->text[t] = 0;
	q->off += n;
	q->fed = 0;
	return 0;
}

/* Where to resume after bytes that do not parse: past the next newline,
 * or at the next '{' (a value sent without one), else past everything. */
static size_t resync(const struct lm_qmp *q)
{
	const char *p = q->buf + q->off;
	size_t n = q->len - q->off;
	const char *nl = n > 1 ? memchr(p + 1, '\n', n - 1) : NULL;
	const char *br = n > 1 ? memchr(p + 1, '{', n - 1) : NULL;
	if (nl && (!br || nl < br))
		return (size_t)(nl - p) + 1;
	if (br)
		return (size_t)(br - p);
	return n;
}

/* The next complete object already in buf, or NULL (*err 0: more bytes
 * needed; else -errno). Values that are not objects, and bytes that do not
 * parse, are skipped. */
static struct json_object *parse_buffered(struct lm_qmp *q, int *err)
{
	*err = 0;
	for (;;) {
		if (q->fed == 0)
			while (q->off < q->len && is_ws(q->buf[q->off]))
				q->off++;
		if (q->off + q->fed >= q->len)
			return NULL;
		size_t start = q->off + q->fed;
		struct json_object *o =
		    json_tokener_parse_ex(q->tok, q->buf + start, (int)(q->len - start));
		enum json_tokener_error e = json_tokener_get_error(q->tok);
		size_t used = q->fed + json_tokener_get_parse_end(q->tok);
		if (e == json_tokener_success) {
			json_tokener_reset(q->tok);
			if ((*err = take_text(q, used)) < 0) {
				json_object_put(o);
				return NULL;
			}
			if (q->trace)
				fprintf(q->trace, "    %s <- %s\n", q->tag, q->text);
			if (json_object_is_type(o, json_type_object))
				return o;
			json_object_put(o);
			continue;
		}
		if (e == json_tokener_continue) {
			q->fed = q->len - q->off;
			if (q->fed > LM_QMP_MAX_VALUE) {
				q->broken = true;
				*err = fail(q, -EMSGSIZE,
					    "a value from the server is larger than %u MiB",
					    LM_QMP_MAX_VALUE >> 20);
				return NULL;
			}
			return NULL;
		}
		if (q->trace)
			fprintf(q->trace, "    %s <- (unparsable: %s) %.*s\n", q->tag,
				json_tokener_error_desc(e),
				(int)(q->len - q->off > 200 ? 200 : q->len - q->off),
				q->buf + q->off);
		json_tokener_reset(q->tok);
		q->off += resync(q);
		q->fed = 0;
	}
}

/* Reads once, waiting until end at most. 0 after some bytes (or EOF, which
 * sets q->eof), -ETIMEDOUT, or -errno. */
static int read_more(struct lm_qmp *q, double end)
{
	if (q->off > 0) {
		memmove(q->buf, q->buf + q->off, q->len - q->off);
		q->len -= q->off;
		q->off = 0;
	}
	if (q->cap - q->len < 4096) {
		size_t cap = q->cap ? q->cap * 2 : 65536;
		char *p = realloc(q->buf, cap);
		if (!p)
			return fail(q, -ENOMEM, "out of memory");
		q->buf = p;
		q->cap = cap;
	}
	for (;;) {
		ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
		if (n > 0) {
			q->len += (size_t)n;
			return 0;
		}
		if (n == 0) {
			q->eof = true;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET) {
			/* The server closed with our bytes unread: a close like any
			 * other (the write path says the same, -EPIPE). */
			q->eof = true;
			return 0;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			int e = errno;
			q->eof = true;
			return fail(q, -e, "read: %s", strerror(e));
		}
		struct pollfd pf = {.fd = q->fd, .events = POLLIN};
		int r = poll(&pf, 1, ms_left(end));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(q, -errno, "poll: %s", strerror(errno));
		if (r == 0)
			return -ETIMEDOUT;
	}
}

/* The next object from the server, waiting until end. -ETIMEDOUT (the
 * message is the caller's to write), -EPIPE once the server has closed and
 * everything it sent has been returned, or another -errno. */
static int next_value(struct lm_qmp *q, double end, struct json_object **out)
{
	if (q->fd < 0)
		return fail(q, -ENOTCONN, "not connected");
	for (;;) {
		if (q->broken)
			return fail(q, -EMSGSIZE, "a value from the server is larger than %u MiB",
				    LM_QMP_MAX_VALUE >> 20);
		int err;
		if ((*out = parse_buffered(q, &err)))
			return 0;
		if (err)
			return err;
		if (q->eof)
			return fail(q, -EPIPE, "the server closed the connection");
		if ((err = read_more(q, end)) < 0)
			return err;
	}
}

/* An event goes to the callback and is consumed (true); anything else is
 * left to the caller. */
static bool dispatch_event(struct lm_qmp *q, struct json_object *o)
{
	struct json_object *ev;
	if (!json_object_object_get_ex(o, "event", &ev))
		return false;
	if (q->on_event)
		q->on_event(q, json_object_get_string(ev), o, q->event_arg);
	json_object_put(o);
	return true;
}

static bool is_reply(struct json_object *o)
{
	return json_object_object_get_ex(o, "return", NULL) ||
	       json_object_object_get_ex(o, "error", NULL);
}

static int timed_out(struct lm_qmp *q, double timeout_s, const char *what)
{
	return fail(q, -ETIMEDOUT, "no %s within %.3g s", what, timeout_s);
}

/* The next reply for id (NULL: any), events dispatched on the way. */
static int read_reply_for(struct lm_qmp *q, struct json_object *id, double timeout_s,
			  struct json_object **reply)
{
	double end = now_s() + timeout_s;
	for (;;) {
		struct json_object *o;
		int r = next_value(q, end, &o);
		if (r == -ETIMEDOUT)
			return timed_out(q, timeout_s, "reply");
		if (r < 0)
			return r;
		if (dispatch_event(q, o))
			continue;
		struct json_object *rid;
		if (!is_reply(o) || (id && json_object_object_get_ex(o, "id", &rid) &&
				     !json_object_equal(id, rid))) {
			json_object_put(o); /* a stray value, or a late reply to another request */
			continue;
		}
		*reply = o;
		return 0;
	}
}

int lm_qmp_read_reply(struct lm_qmp *q, double timeout_s, struct json_object **reply)
{
	return read_reply_for(q, NULL, timeout_s, reply);
}

int lm_qmp_wait_event(struct lm_qmp *q, const char *name, double timeout_s,
		      struct json_object **event)
{
	double end = now_s() + timeout_s;
	for (;;) {
		struct json_object *o, *ev;
		int r = next_value(q, end, &o);
		if (r == -ETIMEDOUT)
			return fail(q, -ETIMEDOUT, "no %s event within %.3g s", name, timeout_s);
		if (r < 0)
			return r;
		bool match = json_object_object_get_ex(o, "event", &ev) &&
			     !strcmp(json_object_get_string(ev), name);
		if (match && event)
			*event = json_object_get(o);
		if (!dispatch_event(q, o))
			json_object_put(o); /* a stray reply: nothing is outstanding */
		if (match)
			return 0;
	}
}

int lm_qmp_poll(struct lm_qmp *q, double timeout_s)
{
	double end = now_s() + timeout_s;
	for (;;) {
		struct json_object *o;
		int r = next_value(q, end, &o);
		if (r == -ETIMEDOUT)
			return 0;
		if (r < 0)
			return r;
		if (!dispatch_event(q, o))
			json_object_put(o);
	}
}

/* ---- sending ------------------------------------------------------------ */

static int send_until(struct lm_qmp *q, const char *p, size_t len, double end)
{
	if (q->fd < 0)
		return fail(q, -ENOTCONN, "not connected");
	while (len > 0) {
		ssize_t n = send(q->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pf = {.fd = q->fd, .events = POLLOUT};
			int r = poll(&pf, 1, ms_left(end));
			if (r < 0 && errno != EINTR)
				return fail(q, -errno, "poll: %s", strerror(errno));
			if (r == 0)
				return fail(q, -ETIMEDOUT,
					    "the server reads nothing: send timed out");
			continue;
		}
		int e = n < 0 ? errno : EIO;
		if (e == EPIPE || e == ECONNRESET)
			return fail(q, -EPIPE, "the server closed the connection");
		return fail(q, -e, "send: %s", strerror(e));
	}
	return 0;
}

int lm_qmp_send_raw(struct lm_qmp *q, const void *buf, size_t len, double timeout_s)
{
	if (q->trace)
		fprintf(q->trace, "    %s -> %.*s\n", q->tag, (int)len, (const char *)buf);
	return send_until(q, buf, len, now_s() + timeout_s);
}

/* Sends req, newline-terminated (a server framing by line reads it too). */
static int send_obj(struct lm_qmp *q, struct json_object *req, double end)
{
	size_t len;
	const char *s = json_object_to_json_string_length(
	    req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (!s)
		return fail(q, -ENOMEM, "out of memory");
	if (q->trace)
		fprintf(q->trace, "    %s -> %s\n", q->tag, s);
	int r = send_until(q, s, len, end);
	return r < 0 ? r : send_until(q, "\n", 1, end);
}

int lm_qmp_request(struct lm_qmp *q, struct json_object *req, double timeout_s,
		   struct json_object **reply)
{
	double start = now_s();
	int r = send_obj(q, req, start + timeout_s);
	if (r < 0)
		return r;
	struct json_object *id = NULL;
	json_object_object_get_ex(req, "id", &id);
	double left = timeout_s - (now_s() - start);
	return read_reply_for(q, id, left > 0 ? left : 0, reply);
}

int lm_qmp_exec(struct lm_qmp *q, const char *cmd, struct json_object *args, double timeout_s,
		struct json_object **ret)
{
	if (ret)
		*ret = NULL;
	q->err_class[0] = 0;
	struct json_object *req = json_object_new_object(), *reply = NULL;
	if (!req) {
		json_object_put(args);
		return fail(q, -ENOMEM, "out of memory");
	}
	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", args);
	json_object_object_add(req, "id", json_object_new_int64(++q->next_id));
	int r = lm_qmp_request(q, req, timeout_s, &reply);
	json_object_put(req);
	if (r < 0)
		return r;
	struct json_object *v, *e, *d, *c;
	if (json_object_object_get_ex(reply, "return", &v)) {
		if (ret)
			*ret = json_object_get(v);
		r = 0;
	} else {
		json_object_object_get_ex(reply, "error", &e);
		if (json_object_object_get_ex(e, "class", &c))
			snprintf(q->err_class, sizeof(q->err_class), "%s",
				 json_object_get_string(c));
		r = fail(q, -EREMOTEIO, "%s",
			 json_object_object_get_ex(e, "desc", &d) ? json_object_get_string(d)
								  : "error without a description");
	}
	json_object_put(reply);
	return r;
}

/* ---- connecting --------------------------------------------------------- */

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int lm_qmp_connect(struct lm_qmp *q, const char *path, double retry_s, double timeout_s)
{
	lm_qmp_close(q);
	q->err[0] = q->err_class[0] = 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return fail(q, -ENAMETOOLONG,
			    "control socket path too long (%zu bytes, at most %zu): %s",
			    strlen(path), sizeof(sa.sun_path) - 1, path);
	strcpy(sa.sun_path, path);
	double end = now_s() + retry_s;
	int fd;
	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return fail(q, -errno, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		int e = errno;
		close(fd);
		bool retry = e == ENOENT || e == ECONNREFUSED || e == EAGAIN;
		if (!retry || now_s() >= end)
			return fail(q, -e, "cannot connect to %s: %s", path, strerror(e));
		int g = q->give_up ? q->give_up(q->give_up_arg) : 0;
		if (g < 0)
			return fail(q, g, "cannot connect to %s: %s", path, strerror(-g));
		double left = end - now_s();
		sleep_s(left < 0.02 ? (left > 0 ? left : 0) : 0.02);
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int e = errno;
		close(fd);
		return fail(q, -e, "fcntl: %s", strerror(e));
	}
	q->fd = fd;
	struct json_object *g;
	int r = next_value(q, now_s() + timeout_s, &g);
	if (r == -ETIMEDOUT)
		r = fail(q, -ETIMEDOUT, "%s sent no greeting within %.3g s", path, timeout_s);
	else if (r == -EPIPE)
		r = fail(q, -EPIPE, "%s closed the connection before its greeting", path);
	else if (r == 0 && !json_object_object_get_ex(g, "QMP", NULL)) {
		r = fail(q, -EPROTO, "%s did not greet as a QMP server: %.200s", path, q->text);
		json_object_put(g);
	}
	if (r < 0) {
		lm_qmp_close(q);
		return r;
	}
	q->greeting = g;
	return 0;
}
