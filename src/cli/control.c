/*
 * The control socket server (see control.h): one thread, poll() over the
 * listening socket, a wake-up pipe and the clients; JSON parsed by json-c.
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
#include <unistd.h>

#include "cli/control.h"
#include "livemig/version.h"

#define MAX_COMMANDS 64
#define MAX_CLIENTS 16
/* A request longer than this is refused and the client dropped: nothing
 * legitimate is that big, and the buffer must be bounded. */
#define MAX_LINE (1u << 20)

struct command {
	char name[48];
	lm_control_fn fn;
	void *ctx;
	bool needs_vm; /* answered with an error until a VM is attached */
};

struct client {
	int fd;
	char *buf;
	size_t len, cap;
};

struct lm_control {
	char *path;
	int listen_fd;
	int wake[2];
	pthread_t thread;
	bool running;
	struct command cmds[MAX_COMMANDS];
	unsigned ncmds;
	struct lm_vm *vm; /* atomic: NULL until lm_control_attach_vm */
	const char *run_state; /* atomic: a string literal, or NULL */
	/* Clients: added and removed by the server thread; lock held while
	 * sending, so events from other threads do not interleave lines. */
	pthread_mutex_t lock;
	struct client clients[MAX_CLIENTS];
	unsigned nclients;
	bool stop;
};

static void send_line(int fd, const char *s)
{
	size_t n = strlen(s);
	char *line = malloc(n + 1);
	if (!line)
		return;
	memcpy(line, s, n);
	line[n] = '\n';
	const char *p = line;
	size_t left = n + 1;
	while (left) {
		ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* the client is gone; poll() will tell the server */
		p += w;
		left -= (size_t)w;
	}
	free(line);
}

static void send_obj(struct lm_control *c, int fd, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	pthread_mutex_lock(&c->lock);
	send_line(fd, s);
	pthread_mutex_unlock(&c->lock);
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

static void send_error(struct lm_control *c, int fd, struct json_object *id, const char *desc)
{
	struct json_object *o = json_object_new_object();
	struct json_object *e = json_object_new_object();
	json_object_object_add(e, "class", json_object_new_string("GenericError"));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	json_object_object_add(o, "error", e);
	if (id)
		json_object_object_add(o, "id", json_object_get(id));
	send_obj(c, fd, o);
	json_object_put(o);
}

int lm_control_new(const char *path, struct lm_control **out)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	struct lm_control *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	int r;
	c->listen_fd = -1;
	c->wake[0] = c->wake[1] = -1;
	pthread_mutex_init(&c->lock, NULL);
	c->path = strdup(path);
	if (!c->path) {
		r = -ENOMEM;
		goto fail;
	}
	strcpy(sa.sun_path, path);
	/* A socket file left by an earlier run is replaced; anything else at
	 * that path is not ours to remove. */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			r = -EEXIST;
			goto fail;
		}
		unlink(path);
	}
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0 || bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(c->listen_fd, 8) < 0) {
		r = -errno;
		goto fail;
	}
	if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		goto fail;
	}
	*out = c;
	return 0;
fail:
	if (c->listen_fd >= 0) {
		close(c->listen_fd);
		c->listen_fd = -1;
	}
	free(c->path);
	c->path = NULL;
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

static int cmd_capabilities(void *ctx, struct json_object *args, struct json_object **ret,
			    char *err, size_t errlen)
{
	return 0;
}

static int cmd_query_commands(void *ctx, struct json_object *args, struct json_object **ret,
			      char *err, size_t errlen)
{
	struct lm_control *c = ctx;
	struct json_object *a = json_object_new_array();
	for (unsigned i = 0; i < c->ncmds; i++) {
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

static void greet(struct lm_control *c, int fd)
{
	struct json_object *o = json_object_new_object();
	struct json_object *q = json_object_new_object();
	json_object_object_add(q, "version", lm_control_version_json());
	json_object_object_add(q, "capabilities", json_object_new_array());
	json_object_object_add(o, "QMP", q);
	send_obj(c, fd, o);
	json_object_put(o);
}

static void handle_line(struct lm_control *c, int fd, const char *line, size_t len)
{
	/* Blank lines are tolerated, as a person typing into socat makes them. */
	size_t k = 0;
	while (k < len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
		k++;
	if (k == len)
		return;

	struct json_tokener *tok = json_tokener_new();
	struct json_object *req = tok ? json_tokener_parse_ex(tok, line, (int)len) : NULL;
	enum json_tokener_error jerr = tok ? json_tokener_get_error(tok) : json_tokener_error_depth;
	size_t end = tok ? json_tokener_get_parse_end(tok) : 0;
	if (tok)
		json_tokener_free(tok);
	while (req && end < len && (line[end] == ' ' || line[end] == '\t' || line[end] == '\r'))
		end++;
	if (!req || jerr != json_tokener_success || end != len) {
		char msg[160];
		snprintf(msg, sizeof(msg), "JSON parse error: %s",
			 req ? "trailing characters"
			     : (jerr == json_tokener_continue ? "unexpected end of input"
							      : json_tokener_error_desc(jerr)));
		send_error(c, fd, NULL, msg);
		json_object_put(req);
		return;
	}
	struct json_object *id = NULL, *exec = NULL, *args = NULL;
	if (!json_object_is_type(req, json_type_object)) {
		send_error(c, fd, NULL, "Expected a JSON object");
		goto out;
	}
	json_object_object_get_ex(req, "id", &id);
	if (!json_object_object_get_ex(req, "execute", &exec) ||
	    !json_object_is_type(exec, json_type_string)) {
		send_error(c, fd, id, "Expected 'execute' with a command name");
		goto out;
	}
	json_object_object_foreach(req, key, val)
	{
		(void)val;
		if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
			char msg[160];
			snprintf(msg, sizeof(msg), "Unexpected member '%.64s' in request", key);
			send_error(c, fd, id, msg);
			goto out;
		}
	}
	bool own_args = false;
	if (json_object_object_get_ex(req, "arguments", &args)) {
		if (!json_object_is_type(args, json_type_object)) {
			send_error(c, fd, id, "'arguments' must be an object");
			goto out;
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
		char msg[160];
		snprintf(msg, sizeof(msg), "The command %.64s has not been found", name);
		send_error(c, fd, id, msg);
	} else if (cmd->needs_vm && !lm_control_vm(c)) {
		send_error(c, fd, id, "No VM here yet: waiting for an incoming migration");
	} else {
		struct json_object *ret = NULL;
		char err[256] = "";
		int r = cmd->fn(cmd->ctx, args, &ret, err, sizeof(err));
		if (r < 0) {
			if (!err[0])
				snprintf(err, sizeof(err), "%s failed: %s", name, strerror(-r));
			send_error(c, fd, id, err);
			json_object_put(ret);
		} else {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "return", ret ? ret : json_object_new_object());
			if (id)
				json_object_object_add(o, "id", json_object_get(id));
			send_obj(c, fd, o);
			json_object_put(o);
		}
	}
	if (own_args)
		json_object_put(args);
out:
	json_object_put(req);
}

static void drop_client(struct lm_control *c, unsigned i)
{
	pthread_mutex_lock(&c->lock);
	close(c->clients[i].fd);
	free(c->clients[i].buf);
	c->clients[i] = c->clients[--c->nclients];
	pthread_mutex_unlock(&c->lock);
}

/* Reads what the client sent and serves every complete line. false: the
 * client is gone or misbehaved and was dropped. */
static bool serve_client(struct lm_control *c, unsigned i)
{
	struct client *cl = &c->clients[i];
	if (cl->cap - cl->len < 4096) {
		size_t cap = cl->cap ? cl->cap * 2 : 8192;
		if (cap > MAX_LINE + 8192) {
			send_error(c, cl->fd, NULL, "Request line too long");
			drop_client(c, i);
			return false;
		}
		char *n = realloc(cl->buf, cap);
		if (!n) {
			drop_client(c, i);
			return false;
		}
		cl->buf = n;
		cl->cap = cap;
	}
	ssize_t n = recv(cl->fd, cl->buf + cl->len, cl->cap - cl->len, 0);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0) {
		drop_client(c, i);
		return false;
	}
	cl->len += (size_t)n;
	size_t start = 0;
	for (;;) {
		char *nl = memchr(cl->buf + start, '\n', cl->len - start);
		if (!nl)
			break;
		size_t l = (size_t)(nl - (cl->buf + start));
		/* The handler may run long; the client array may not change
		 * meanwhile because only this thread changes it. */
		handle_line(c, cl->fd, cl->buf + start, l);
		start += l + 1;
	}
	memmove(cl->buf, cl->buf + start, cl->len - start);
	cl->len -= start;
	return true;
}

static void *server_main(void *arg)
{
	struct lm_control *c = arg;
	for (;;) {
		struct pollfd pf[MAX_CLIENTS + 2];
		unsigned n = 0;
		pf[n++] = (struct pollfd){.fd = c->wake[0], .events = POLLIN};
		pf[n++] = (struct pollfd){.fd = c->listen_fd, .events = POLLIN};
		unsigned nc = c->nclients;
		for (unsigned i = 0; i < nc; i++)
			pf[n++] = (struct pollfd){.fd = c->clients[i].fd, .events = POLLIN};
		if (poll(pf, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (__atomic_load_n(&c->stop, __ATOMIC_SEQ_CST))
			break;
		/* Clients from the last to the first, as dropping one moves the
		 * last into its place. */
		for (unsigned i = nc; i-- > 0;)
			if (pf[2 + i].revents)
				serve_client(c, i);
		if (pf[1].revents & POLLIN) {
			int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0 && c->nclients == MAX_CLIENTS) {
				send_error(c, fd, NULL, "Too many clients");
				close(fd);
			} else if (fd >= 0) {
				pthread_mutex_lock(&c->lock);
				c->clients[c->nclients++] = (struct client){.fd = fd};
				pthread_mutex_unlock(&c->lock);
				greet(c, fd);
			}
		}
	}
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
	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < c->nclients; i++)
		send_line(c->clients[i].fd, s);
	pthread_mutex_unlock(&c->lock);
	json_object_put(o);
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
	for (unsigned i = 0; i < c->nclients; i++) {
		close(c->clients[i].fd);
		free(c->clients[i].buf);
	}
	if (c->listen_fd >= 0)
		close(c->listen_fd);
	if (c->path)
		unlink(c->path);
	if (c->wake[0] >= 0)
		close(c->wake[0]);
	if (c->wake[1] >= 0)
		close(c->wake[1]);
	pthread_mutex_destroy(&c->lock);
	free(c->path);
	free(c);
}

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
