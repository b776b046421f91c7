/*
 * The control socket server (see control.h).
 *
 * The workload: a handful of clients (an operator's socat, `livemig
 * migrate` polling query-migrate a few times a second, an orchestrator
 * holding a connection open for events), small requests and replies, and
 * events that come from other threads, one of them at the worst moment: the
 * migration thread sends STOP while the guest is paused for the switchover.
 * Nothing a client does or fails to do may delay that thread or the other
 * clients. So:
 *
 *  - One server thread owns every client: its socket (non-blocking), its
 *    incremental JSON tokener and its output queue. No other thread touches
 *    a client, so client state needs no lock.
 *  - Output is queued per client and sent when the socket takes it (poll
 *    for POLLOUT while a queue is non-empty). A client whose queue would
 *    exceed MAX_QUEUE (it does not read what it asked for) is disconnected;
 *    the others are not affected.
 *  - lm_control_event() only serialises the event, appends it to a list
 *    under `lock` (held for a pointer update, never across I/O) and wakes
 *    the server thread through a pipe; the server thread copies it into
 *    every client's queue.
 *  - Requests are framed by JSON value, not by line (as QEMU's QMP): a
 *    newline is optional, one read may hold several values, a value may
 *    arrive in pieces. json-c's tokener is fed whatever arrived; a value
 *    over MAX_VALUE bytes drops the client.
 *  - Handlers run on the server thread, one at a time, holding no lock; some
 *    block briefly (stop waits until the vCPUs have paused). Output to the
 *    other clients simply waits in their queues meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/control.h"
#include "livemig/migrate.h"
#include "livemig/version.h"

#define MAX_COMMANDS 64
#define MAX_CLIENTS 16
/* A request longer than this drops the client: nothing legitimate is that
 * big, and the tokener's buffer must be bounded. */
#define MAX_VALUE (1u << 20)
/* Replies and events a client has not read yet, beyond what its socket
 * buffer holds. */
#define MAX_QUEUE (1u << 20)
/* Events not yet copied to the clients (the server thread is busy in a
 * handler): beyond this, new events are dropped (and counted). */
#define MAX_PENDING_EVENTS (1u << 20)
/* At shutdown, how long queued output (the last MIGRATION event, a quit's
 * reply) may still take to go out. */
#define FLUSH_AT_EXIT_MS 500
#define READ_CHUNK 65536

struct command {
	char name[48];
	lm_control_fn fn;
	void *ctx;
	bool needs_vm; /* answered with an error until a VM is attached */
};

/* Output not yet taken by the socket: buf[off, len). */
struct outq {
	char *buf;
	size_t off, len, cap;
};

struct client {
	int fd;
	struct json_tokener *tok;
	size_t in_value; /* bytes fed to tok since the last complete value */
	struct outq out;
	bool gone; /* closed and removed at the end of the server's round */
};

struct event {
	struct event *next;
	size_t len;
	char text[];
};

struct lm_control {
	char *path;
	dev_t dev; /* of the socket file we created: only that one is removed */
	ino_t ino;
	int listen_fd;
	int wake[2];
	pthread_t thread;
	bool running;
	struct command cmds[MAX_COMMANDS];
	unsigned ncmds;
	struct lm_vm *vm; /* atomic: NULL until lm_control_attach_vm */
	const char *run_state; /* atomic: a string literal, or NULL */
	bool stop; /* atomic */
	/* Events from any thread, for the server thread to deliver; `lock`
	 * guards these four and nothing else. */
	pthread_mutex_t lock;
	struct event *ev_head, **ev_tail;
	size_t ev_bytes;
	uint64_t ev_dropped;
	/* The server thread's own. */
	struct client clients[MAX_CLIENTS];
	unsigned nclients;
	const char *err_class; /* set by the running handler, or NULL */
	char rbuf[READ_CHUNK];
};

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (n bytes available), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else
		return 0;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

static bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(p + i, n - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

/*
 * s with every ill-formed byte replaced by U+FFFD, in a new buffer (*outlen
 * its length), or NULL when s is well-formed (the usual case) or memory
 * ran out. Serialised JSON can hold bytes >= 0x80 only inside strings, so
 * the result is still the same JSON text, now valid UTF-8. Needed because
 * a message cut with "%.64s" can split a character, and handlers may echo
 * what they did not check.
 */
static char *utf8_repair(const char *s, size_t n, size_t *outlen)
{
	if (utf8_valid(s, n))
		return NULL;
	char *o = malloc(n * 3 + 1);
	if (!o)
		return NULL;
	const unsigned char *p = (const unsigned char *)s;
	size_t j = 0;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(p + i, n - i);
		if (k) {
			memcpy(o + j, p + i, k);
			j += k;
			i += k;
		} else {
			memcpy(o + j, "\xef\xbf\xbd", 3);
			j += 3;
			i++;
		}
	}
	o[j] = 0;
	*outlen = j;
	return o;
}

/* Every string in a parsed request (keys included) is valid UTF-8. json-c
 * copies other bytes through, and its own JSON_TOKENER_VALIDATE_UTF8 flag
 * rejects a character split across two reads, so the check is done here,
 * on the whole value. */
static bool json_utf8_ok(struct json_object *o, int depth)
{
	if (depth > 64)
		return false;
	switch (json_object_get_type(o)) {
	case json_type_string:
		return utf8_valid(json_object_get_string(o), (size_t)json_object_get_string_len(o));
	case json_type_object: {
		json_object_object_foreach(o, key, val)
		{
			if (!utf8_valid(key, strlen(key)) || !json_utf8_ok(val, depth + 1))
				return false;
		}
		return true;
	}
	case json_type_array:
		for (size_t i = 0; i < json_object_array_length(o); i++)
			if (!json_utf8_ok(json_object_array_get_idx(o, i), depth + 1))
				return false;
		return true;
	default:
		return true;
	}
}

/* ---- output queues -------------------------------------------------------- */

static void client_gone(struct client *cl, const char *why)
{
	if (cl->gone)
		return;
	cl->gone = true;
	if (why)
		fprintf(stderr, "livemig: control socket: dropped a client: %s\n", why);
}

/* Sends what the socket takes now, never waiting. */
static void flush(struct client *cl)
{
	struct outq *q = &cl->out;
	while (!cl->gone && q->off < q->len) {
		ssize_t w = send(cl->fd, q->buf + q->off, q->len - q->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (w <= 0) {
			client_gone(cl, NULL); /* it went away; nothing to tell */
			break;
		}
		q->off += (size_t)w;
	}
	if (q->off == q->len)
		q->off = q->len = 0;
}

/* Appends one message and a newline (for line-reading clients; QMP needs
 * none) to the client's queue; a client over MAX_QUEUE is dropped. */
static void queue(struct client *cl, const char *s, size_t n)
{
	if (cl->gone)
		return;
	struct outq *q = &cl->out;
	size_t fixed_len;
	char *fixed = utf8_repair(s, n, &fixed_len);
	if (fixed) {
		s = fixed;
		n = fixed_len;
	}
	if (q->len - q->off + n + 1 > MAX_QUEUE) {
		client_gone(cl, "over 1 MiB of replies and events it did not read");
		goto out;
	}
	if (q->off && q->len + n + 1 > q->cap) {
		memmove(q->buf, q->buf + q->off, q->len - q->off);
		q->len -= q->off;
		q->off = 0;
	}
	if (q->len + n + 1 > q->cap) {
		size_t cap = q->cap ? q->cap : 4096;
		while (cap < q->len + n + 1)
			cap *= 2;
		char *b = realloc(q->buf, cap);
		if (!b) {
			client_gone(cl, "out of memory for its output");
			goto out;
		}
		q->buf = b;
		q->cap = cap;
	}
	memcpy(q->buf + q->len, s, n);
	q->buf[q->len + n] = '\n';
	q->len += n + 1;
out:
	free(fixed);
}

static void send_obj(struct client *cl, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	queue(cl, s, strlen(s));
	flush(cl);
}

static struct json_object *timestamp(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct json_object *t = json_object_new_object();
	json_object_object_add(t, "seconds", json_object_new_int64(tv.tv_sec));
	json_object_object_add(t, "microseconds", json_object_new_int64(tv.tv_usec));
	return t;
}

static void send_error_class(struct client *cl, struct json_object *id, const char *cls,
			     const char *desc)
{
	struct json_object *o = json_object_new_object();
	struct json_object *e = json_object_new_object();
	json_object_object_add(e, "class", json_object_new_string(cls));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	json_object_object_add(o, "error", e);
	if (id)
		json_object_object_add(o, "id", json_object_get(id));
	send_obj(cl, o);
	json_object_put(o);
}

static void send_error(struct client *cl, struct json_object *id, const char *desc)
{
	send_error_class(cl, id, LM_CONTROL_GENERIC_ERROR, desc);
}

/* Moves the events other threads (or a handler) sent into every client's
 * queue, in the order they were sent. */
static void deliver_events(struct lm_control *c)
{
	pthread_mutex_lock(&c->lock);
	struct event *e = c->ev_head;
	uint64_t dropped = c->ev_dropped;
	c->ev_head = NULL;
	c->ev_tail = &c->ev_head;
	c->ev_bytes = 0;
	c->ev_dropped = 0;
	pthread_mutex_unlock(&c->lock);
	if (dropped)
		fprintf(stderr, "livemig: control socket: %llu event(s) dropped (the server was busy)\n",
			(unsigned long long)dropped);
	while (e) {
		struct event *next = e->next;
		for (unsigned i = 0; i < c->nclients; i++)
			queue(&c->clients[i], e->text, e->len);
		free(e);
		e = next;
	}
	for (unsigned i = 0; i < c->nclients; i++)
		flush(&c->clients[i]);
}

/* ---- creation, commands ----------------------------------------------------- */

int lm_control_new(const char *path, struct lm_control **out)
{
	if (!path || !*path)
		return -EINVAL;
	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	struct lm_control *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	int r;
	c->listen_fd = -1;
	c->wake[0] = c->wake[1] = -1;
	c->ev_tail = &c->ev_head;
	pthread_mutex_init(&c->lock, NULL);
	/* Only a stale socket is replaced; a file, or the live socket of
	 * another process, is refused (-EEXIST, -EADDRINUSE). */
	r = lm_transport_unix_listen(path, 8);
	if (r < 0)
		goto fail;
	c->listen_fd = r;
	struct stat st;
	if (lstat(path, &st) < 0) {
		r = -errno;
		goto fail;
	}
	c->dev = st.st_dev;
	c->ino = st.st_ino;
	c->path = strdup(path);
	if (!c->path) {
		r = -ENOMEM;
		unlink(path);
		goto fail;
	}
	if (fcntl(c->listen_fd, F_SETFL, O_NONBLOCK) < 0 ||
	    pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		goto fail;
	}
	*out = c;
	return 0;
fail:
	lm_control_free(c);
	return r;
}

static int add_command(struct lm_control *c, const char *name, lm_control_fn fn, void *ctx,
		       bool needs_vm)
{
	if (!name || !fn || strlen(name) >= sizeof(c->cmds[0].name))
		return -EINVAL;
	for (unsigned i = 0; i < c->ncmds; i++)
		if (!strcmp(c->cmds[i].name, name))
			return -EEXIST;
	if (c->ncmds == MAX_COMMANDS)
		return -ENOSPC;
	struct command *cmd = &c->cmds[c->ncmds];
	strcpy(cmd->name, name);
	cmd->fn = fn;
	cmd->ctx = ctx;
	cmd->needs_vm = needs_vm;
	/* Entries are only appended: publish the count after the entry, so a
	 * command may be added while the server thread runs. */
	__atomic_store_n(&c->ncmds, c->ncmds + 1, __ATOMIC_RELEASE);
	return 0;
}

int lm_control_register(struct lm_control *c, const char *name, lm_control_fn fn, void *ctx)
{
	return add_command(c, name, fn, ctx, false);
}

int lm_control_register_vm(struct lm_control *c, const char *name, lm_control_fn fn, void *ctx)
{
	return add_command(c, name, fn, ctx, true);
}

void lm_control_attach_vm(struct lm_control *c, struct lm_vm *vm)
{
	__atomic_store_n(&c->vm, vm, __ATOMIC_RELEASE);
}

struct lm_vm *lm_control_vm(struct lm_control *c)
{
	return __atomic_load_n(&c->vm, __ATOMIC_ACQUIRE);
}

void lm_control_error_class(struct lm_control *c, const char *cls)
{
	c->err_class = cls;
}

static int cmd_capabilities(void *ctx, struct json_object *args, struct json_object **ret,
			    char *err, size_t errlen)
{
	return 0;
}

static int cmd_query_commands(void *ctx, struct json_object *args, struct json_object **ret,
			      char *err, size_t errlen)
{
	struct lm_control *c = ctx;
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	/* Every registered command, those that need a VM included (QEMU
	 * lists the commands that exist, not those that work right now). */
	struct json_object *a = json_object_new_array();
	unsigned n = __atomic_load_n(&c->ncmds, __ATOMIC_ACQUIRE);
	for (unsigned i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(c->cmds[i].name));
		json_object_array_add(a, o);
	}
	*ret = a;
	return 0;
}

void lm_control_set_run_state(struct lm_control *c, const char *state)
{
	__atomic_store_n(&c->run_state, state, __ATOMIC_RELEASE);
}

const char *lm_control_run_state(struct lm_control *c)
{
	return __atomic_load_n(&c->run_state, __ATOMIC_ACQUIRE);
}

struct json_object *lm_control_version_json(void)
{
	/* QEMU's VersionInfo: clients written for QEMU (qmp-shell, qemu.qmp)
	 * read version.qemu.{major,minor,micro}; livemig puts its own
	 * version there and names itself in package. */
	struct json_object *v = json_object_new_object();
	struct json_object *q = json_object_new_object();
	json_object_object_add(q, "major", json_object_new_int(LM_VERSION_MAJOR));
	json_object_object_add(q, "minor", json_object_new_int(LM_VERSION_MINOR));
	json_object_object_add(q, "micro", json_object_new_int(LM_VERSION_PATCH));
	json_object_object_add(v, "qemu", q);
	json_object_object_add(v, "package", json_object_new_string("livemig " LM_VERSION_STRING));
	return v;
}

static int cmd_query_version(void *ctx, struct json_object *args, struct json_object **ret,
			     char *err, size_t errlen)
{
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	*ret = lm_control_version_json();
	return 0;
}

static void greet(struct client *cl)
{
	struct json_object *o = json_object_new_object();
	struct json_object *q = json_object_new_object();
	json_object_object_add(q, "version", lm_control_version_json());
	json_object_object_add(q, "capabilities", json_object_new_array());
	json_object_object_add(o, "QMP", q);
	send_obj(cl, o);
	json_object_put(o);
}

/* ---- requests --------------------------------------------------------------- */

/* One complete JSON value from the client: a request, answered in QEMU's
 * words where QEMU has them. */
static void handle_request(struct lm_control *c, struct client *cl, struct json_object *req)
{
	struct json_object *id = NULL, *exec = NULL, *args = NULL;
	char msg[256];
	if (!json_object_is_type(req, json_type_object)) {
		send_error(cl, NULL, "QMP input must be a JSON object");
		return;
	}
	json_object_object_get_ex(req, "id", &id);
	if (!json_utf8_ok(req, 0)) {
		/* Said without echoing any of it: the reply must stay valid
		 * UTF-8 and JSON. */
		send_error(cl, json_utf8_ok(id, 0) ? id : NULL,
			   "JSON parse error, invalid UTF-8 sequence in string");
		return;
	}
	if (!json_object_object_get_ex(req, "execute", &exec)) {
		send_error(cl, id, "QMP input lacks member 'execute'");
		return;
	}
	if (!json_object_is_type(exec, json_type_string)) {
		send_error(cl, id, "QMP input member 'execute' must be a string");
		return;
	}
	json_object_object_foreach(req, key, val)
	{
		(void)val;
		if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
			snprintf(msg, sizeof(msg), "QMP input member '%.64s' is unexpected", key);
			send_error(cl, id, msg);
			return;
		}
	}
	bool own_args = false;
	if (json_object_object_get_ex(req, "arguments", &args)) {
		if (!json_object_is_type(args, json_type_object)) {
			send_error(cl, id, "QMP input member 'arguments' must be an object");
			return;
		}
	} else {
		args = json_object_new_object();
		own_args = true;
	}
	const char *name = json_object_get_string(exec);
	struct command *cmd = NULL;
	unsigned ncmds = __atomic_load_n(&c->ncmds, __ATOMIC_ACQUIRE);
	for (unsigned i = 0; i < ncmds; i++)
		if (!strcmp(c->cmds[i].name, name))
			cmd = &c->cmds[i];
	if (!cmd) {
		snprintf(msg, sizeof(msg), "The command %.64s has not been found", name);
		send_error_class(cl, id, LM_CONTROL_COMMAND_NOT_FOUND, msg);
	} else if (cmd->needs_vm && !lm_control_vm(c)) {
		snprintf(msg, sizeof(msg),
			 "No VM here yet: waiting for an incoming migration (%s needs the VM)", name);
		send_error(cl, id, msg);
	} else {
		struct json_object *ret = NULL;
		char err[256] = "";
		c->err_class = NULL;
		int r = cmd->fn(cmd->ctx, args, &ret, err, sizeof(err));
		/* What the handler caused (stop's STOP event) goes out before
		 * its reply, as QEMU sends it. */
		deliver_events(c);
		if (r < 0) {
			if (!err[0])
				snprintf(err, sizeof(err), "%s failed: %s", name, strerror(-r));
			send_error_class(cl, id, c->err_class ? c->err_class : LM_CONTROL_GENERIC_ERROR,
					 err);
			json_object_put(ret);
		} else {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "return", ret ? ret : json_object_new_object());
			if (id)
				json_object_object_add(o, "id", json_object_get(id));
			send_obj(cl, o);
			json_object_put(o);
		}
		c->err_class = NULL;
	}
	if (own_args)
		json_object_put(args);
}

static bool is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/*
 * Feeds n bytes that arrived from the client to its tokener and serves
 * every value they complete. After a parse error the tokener starts
 * afresh after the next newline in these bytes (or after them all): a
 * person typing into socat gets one error per bad line.
 */
static void feed(struct lm_control *c, struct client *cl, const char *data, size_t n)
{
	size_t pos = 0;
	while (pos < n && !cl->gone) {
		if (cl->in_value == 0) {
			while (pos < n && is_ws(data[pos]))
				pos++;
			if (pos == n)
				break;
		}
		size_t chunk = n - pos;
		if (chunk > MAX_VALUE - cl->in_value)
			chunk = MAX_VALUE - cl->in_value;
		struct json_object *o = json_tokener_parse_ex(cl->tok, data + pos, (int)chunk);
		enum json_tokener_error e = json_tokener_get_error(cl->tok);
		size_t used = json_tokener_get_parse_end(cl->tok);
		if (used > chunk)
			used = chunk;
		if (e == json_tokener_continue) {
			cl->in_value += chunk;
			pos += chunk;
			if (cl->in_value >= MAX_VALUE) {
				send_error(cl, NULL, "Request over 1 MiB: closing the connection");
				client_gone(cl, "sent a request over 1 MiB");
			}
			continue;
		}
		json_tokener_reset(cl->tok);
		cl->in_value = 0;
		if (e == json_tokener_success) {
			pos += used;
			handle_request(c, cl, o);
			json_object_put(o);
			continue;
		}
		char msg[160];
		snprintf(msg, sizeof(msg), "JSON parse error, %s", json_tokener_error_desc(e));
		send_error(cl, NULL, msg);
		json_object_put(o);
		const char *nl = memchr(data + pos + used, '\n', n - pos - used);
		pos = nl ? (size_t)(nl - data) + 1 : n;
	}
}

/* Reads once from the client and serves what arrived. */
static void serve_client(struct lm_control *c, struct client *cl)
{
	ssize_t n = recv(cl->fd, c->rbuf, sizeof(c->rbuf), MSG_DONTWAIT);
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		client_gone(cl, NULL);
		return;
	}
	feed(c, cl, c->rbuf, (size_t)n);
}

static void close_client(struct client *cl)
{
	close(cl->fd);
	json_tokener_free(cl->tok);
	free(cl->out.buf);
}

/* Closes and removes the clients marked gone. */
static void sweep(struct lm_control *c)
{
	for (unsigned i = c->nclients; i-- > 0;) {
		if (!c->clients[i].gone)
			continue;
		struct client *cl = &c->clients[i];
		/* One last try for what is queued (the error that dropped it). */
		cl->gone = false;
		flush(cl);
		close_client(cl);
		c->clients[i] = c->clients[--c->nclients];
	}
}

static void accept_clients(struct lm_control *c)
{
	for (;;) {
		int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return; /* EAGAIN: no more; others: the next poll retries */
		if (c->nclients == MAX_CLIENTS) {
			static const char full[] =
			    "{\"error\":{\"class\":\"GenericError\",\"desc\":\"Too many clients\"}}\n";
			ssize_t w = send(fd, full, sizeof(full) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)w;
			close(fd);
			continue;
		}
		struct json_tokener *tok = json_tokener_new();
		if (!tok) {
			close(fd);
			continue;
		}
		struct client *cl = &c->clients[c->nclients++];
		*cl = (struct client){.fd = fd, .tok = tok};
		greet(cl);
	}
}

/* At shutdown: what is queued may take up to FLUSH_AT_EXIT_MS to go. */
static void flush_at_exit(struct lm_control *c)
{
	deliver_events(c);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd pf[MAX_CLIENTS];
		unsigned n = 0;
		for (unsigned i = 0; i < c->nclients; i++) {
			struct client *cl = &c->clients[i];
			if (!cl->gone && cl->out.len > cl->out.off)
				pf[n++] = (struct pollfd){.fd = cl->fd, .events = POLLOUT};
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		long left = FLUSH_AT_EXIT_MS - ((t.tv_sec - t0.tv_sec) * 1000 +
						(t.tv_nsec - t0.tv_nsec) / 1000000);
		if (!n || left <= 0 || poll(pf, n, (int)left) <= 0)
			return;
		for (unsigned i = 0; i < c->nclients; i++)
			flush(&c->clients[i]);
	}
}

static void *server_main(void *arg)
{
	struct lm_control *c = arg;
	struct pollfd pf[MAX_CLIENTS + 2];
	for (;;) {
		unsigned n = 0;
		pf[n++] = (struct pollfd){.fd = c->wake[0], .events = POLLIN};
		pf[n++] = (struct pollfd){.fd = c->listen_fd, .events = POLLIN};
		unsigned nc = c->nclients;
		for (unsigned i = 0; i < nc; i++) {
			struct client *cl = &c->clients[i];
			short ev = POLLIN;
			if (cl->out.len > cl->out.off)
				ev |= POLLOUT;
			pf[n++] = (struct pollfd){.fd = cl->fd, .events = ev};
		}
		if (poll(pf, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents & POLLIN) {
			char drain[64];
			while (read(c->wake[0], drain, sizeof(drain)) > 0)
				;
		}
		/* After draining, never before: lm_control_free sets stop and
		 * then writes its wake byte, so a byte drained here may be that
		 * one, and a stop read before the drain would miss it and poll
		 * for ever (a `quit` that never exits). */
		if (__atomic_load_n(&c->stop, __ATOMIC_SEQ_CST))
			break;
		deliver_events(c);
		for (unsigned i = 0; i < nc; i++) {
			struct client *cl = &c->clients[i];
			short re = pf[2 + i].revents;
			if (re & POLLOUT)
				flush(cl);
			if (re & (POLLIN | POLLHUP | POLLERR))
				serve_client(c, cl);
		}
		sweep(c);
		if (pf[1].revents & POLLIN)
			accept_clients(c);
	}
	flush_at_exit(c);
	return NULL;
}

int lm_control_start(struct lm_control *c)
{
	int r;
	if ((r = lm_control_register(c, "qmp_capabilities", cmd_capabilities, c)) < 0 &&
	    r != -EEXIST)
		return r;
	if ((r = lm_control_register(c, "query-commands", cmd_query_commands, c)) < 0 &&
	    r != -EEXIST)
		return r;
	if ((r = lm_control_register(c, "query-version", cmd_query_version, c)) < 0 &&
	    r != -EEXIST)
		return r;
	r = -pthread_create(&c->thread, NULL, server_main, c);
	if (r == 0)
		c->running = true;
	return r;
}

void lm_control_event(struct lm_control *c, const char *name, struct json_object *data)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "event", json_object_new_string(name));
	if (data)
		json_object_object_add(o, "data", data);
	json_object_object_add(o, "timestamp", timestamp());
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	struct event *e = malloc(sizeof(*e) + len + 1);
	if (e) {
		e->next = NULL;
		e->len = len;
		memcpy(e->text, s, len + 1);
	}
	json_object_put(o);
	pthread_mutex_lock(&c->lock);
	if (!e || c->ev_bytes + len > MAX_PENDING_EVENTS) {
		c->ev_dropped++;
		free(e);
		e = NULL;
	} else {
		*c->ev_tail = e;
		c->ev_tail = &e->next;
		c->ev_bytes += len;
	}
	pthread_mutex_unlock(&c->lock);
	/* Wake the server thread; a full pipe already will. */
	ssize_t w = write(c->wake[1], "e", 1);
	(void)w;
}

void lm_control_free(struct lm_control *c)
{
	if (!c)
		return;
	if (c->running) {
		__atomic_store_n(&c->stop, true, __ATOMIC_SEQ_CST);
		ssize_t w = write(c->wake[1], "x", 1);
		(void)w;
		pthread_join(c->thread, NULL);
	}
	for (unsigned i = 0; i < c->nclients; i++)
		close_client(&c->clients[i]);
	if (c->listen_fd >= 0)
		close(c->listen_fd);
	/* Only the socket file we created: if someone replaced it since, the
	 * new one is theirs. */
	struct stat st;
	if (c->path && lstat(c->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == c->dev &&
	    st.st_ino == c->ino)
		unlink(c->path);
	if (c->wake[0] >= 0)
		close(c->wake[0]);
	if (c->wake[1] >= 0)
		close(c->wake[1]);
	for (struct event *e = c->ev_head, *next; e; e = next) {
		next = e->next;
		free(e);
	}
	pthread_mutex_destroy(&c->lock);
	free(c->path);
	free(c);
}

/* ---- argument helpers --------------------------------------------------------- */

static int arg_get(struct json_object *args, const char *key, enum json_type t,
		   struct json_object **v, const char *tname, char *err, size_t errlen)
{
	if (!json_object_object_get_ex(args, key, v) || json_object_is_type(*v, json_type_null))
		return -ENOENT;
	if (!json_object_is_type(*v, t)) {
		snprintf(err, errlen, "Invalid parameter type for '%s', expected: %s", key, tname);
		return -EINVAL;
	}
	return 0;
}

int lm_control_only_arg(struct json_object *args, const char *allowed, char *err, size_t errlen)
{
	json_object_object_foreach(args, key, val)
	{
		(void)val;
		if (allowed && strcmp(key, allowed) == 0)
			continue;
		snprintf(err, errlen, "Parameter '%.64s' is unexpected", key);
		return -EINVAL;
	}
	return 0;
}

int lm_control_arg_int(struct json_object *args, const char *key, int64_t *out, char *err,
		       size_t errlen)
{
	struct json_object *v;
	int r = arg_get(args, key, json_type_int, &v, "integer", err, errlen);
	if (r == 0)
		*out = json_object_get_int64(v);
	return r;
}

int lm_control_arg_bool(struct json_object *args, const char *key, bool *out, char *err,
			size_t errlen)
{
	struct json_object *v;
	int r = arg_get(args, key, json_type_boolean, &v, "boolean", err, errlen);
	if (r == 0)
		*out = json_object_get_boolean(v);
	return r;
}

int lm_control_arg_str(struct json_object *args, const char *key, const char **out, char *err,
		       size_t errlen)
{
	struct json_object *v;
	int r = arg_get(args, key, json_type_string, &v, "string", err, errlen);
	if (r == 0)
		*out = json_object_get_string(v);
	return r;
}
