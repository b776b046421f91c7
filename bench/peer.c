/*
 * The peer processes of the end-to-end benchmarks (bench/peer.h): child
 * processes, their QMP sessions, a migration polled to its end, and the
 * guest's verdict read from its console. Moved here from bench/vs_qemu.c
 * so that bench/sizes.c drives the same processes the same way.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench.h"
#include "cli/qmp_client.h"
#include "peer.h"

void lm_bench_sleep(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* Child processes                                                     */

pid_t lm_bench_spawn(char *const argv[], const char *out_path)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	int null = open("/dev/null", O_RDONLY);
	int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (null < 0 || out < 0)
		_exit(127);
	dup2(null, 0);
	dup2(out, 1);
	dup2(out, 2);
	execvp(argv[0], argv);
	_exit(127);
}

bool lm_bench_wait_exit(pid_t pid, double timeout_s, int *wstatus)
{
	double end = bench_now() + timeout_s;
	int st = 0;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid || (r < 0 && errno == ECHILD)) {
			if (wstatus)
				*wstatus = st;
			return true;
		}
		if (bench_now() >= end)
			return false;
		lm_bench_sleep(0.02);
	}
}

/* How the last child that lm_bench_alive() found gone ended (a wait status). */
static int gone_status = -1;

bool lm_bench_alive(pid_t pid)
{
	int st = 0;
	pid_t r = pid > 0 ? waitpid(pid, &st, WNOHANG) : -1;
	if (r == pid)
		gone_status = st;
	return r == 0;
}

const char *lm_bench_gone_desc(char *buf, size_t cap)
{
	if (gone_status < 0)
		snprintf(buf, cap, "status unknown");
	else if (WIFSIGNALED(gone_status))
		snprintf(buf, cap, "killed by signal %d", WTERMSIG(gone_status));
	else
		snprintf(buf, cap, "exit status %d", WEXITSTATUS(gone_status));
	return buf;
}

void lm_bench_reap(pid_t *pid, double grace_s)
{
	if (*pid <= 0)
		return;
	if (!lm_bench_wait_exit(*pid, grace_s, NULL)) {
		kill(*pid, SIGTERM);
		if (!lm_bench_wait_exit(*pid, 3.0, NULL)) {
			kill(*pid, SIGKILL);
			waitpid(*pid, NULL, 0);
		}
	}
	*pid = -1;
}

void lm_bench_push(struct lm_bench_argv *a, const char *fmt, ...)
{
	va_list ap;
	size_t room = sizeof(a->store) - a->used;
	va_start(ap, fmt);
	int n = vsnprintf(a->store + a->used, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room || a->n >= 62)
		return; /* cannot happen with the arguments the benchmarks build */
	a->v[a->n++] = a->store + a->used;
	a->v[a->n] = NULL;
	a->used += (size_t)n + 1;
}

/* ------------------------------------------------------------------ */
/* Files                                                               */

char *lm_bench_slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t cap = 1 << 14, len = 0, n;
	char *buf = malloc(cap);
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 == cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (buf)
		buf[len] = 0;
	return buf;
}

void lm_bench_remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[4096];
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

void lm_bench_log_tail(const char *path, char *out, size_t outlen)
{
	char *t = lm_bench_slurp(path);
	out[0] = 0;
	if (!t)
		return;
	size_t len = strlen(t);
	while (len && (t[len - 1] == '\n' || t[len - 1] == ' '))
		t[--len] = 0;
	const char *s = t + (len > 120 ? len - 120 : 0);
	snprintf(out, outlen, "%s", s);
	for (char *p = out; *p; p++)
		if (*p == '\n')
			*p = ' ';
	free(t);
}

double lm_bench_last_progress(const char *text)
{
	double best = -1;
	for (const char *p = text; p && (p = strstr(p, "progress t=")); p += 11) {
		if (p != text && p[-1] != '\n')
			continue;
		double t = strtod(p + 11, NULL);
		if (t > best)
			best = t;
	}
	return best;
}

void lm_bench_classify_verify(const char *text, char *out, size_t outlen, bool *done)
{
	bool mem_fail = false, reg_fail = false;
	*done = false;
	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		if (!strncmp(line, "verify FAIL reg=", 16))
			reg_fail = true;
		else if (!strncmp(line, "verify FAIL", 11) && strncmp(line, "verify FAIL bad=", 16))
			mem_fail = true;
		else if (!strncmp(line, "progress ", 9)) {
			const char *f = strstr(line, " fpu=FAIL");
			if (f && (!end || f < end))
				reg_fail = true;
		}
		line = end ? end + 1 : NULL;
	}
	if (strstr(text, "livemig-guest: exception")) {
		snprintf(out, outlen, "crash");
		*done = true;
		return;
	}
	const char *start = strstr(text, "verify start");
	if (start) {
		const char *ok = strstr(start, "verify ok");
		const char *bad = strstr(start, "verify FAIL bad=");
		if (ok || bad)
			*done = true;
	}
	if (mem_fail || reg_fail)
		snprintf(out, outlen, "FAIL(%s)", mem_fail && reg_fail ? "mem+reg" : mem_fail ? "mem" : "reg");
	else if (*done)
		snprintf(out, outlen, "ok");
	else
		snprintf(out, outlen, "none");
}

/* ------------------------------------------------------------------ */
/* QMP: every peer through livemig's one client (src/cli/qmp_client.h) */

void lm_bench_qmp_init(struct lm_bench_qmp *q, const char *tag, bool verbose)
{
	memset(q, 0, sizeof(*q));
	q->tag = tag;
	q->verbose = verbose;
}

void lm_bench_qmp_close(struct lm_bench_qmp *q)
{
	lm_qmp_free(q->c);
	q->c = NULL;
	if (q->mig_event)
		json_object_put(q->mig_event);
	q->mig_event = NULL;
}

static void qmp_event(struct lm_qmp *c, const char *name, struct json_object *o, void *arg)
{
	struct lm_bench_qmp *q = arg;
	if (!strcmp(name, "STOP")) {
		if (q->stop_ts == 0)
			q->stop_ts = lm_qmp_event_time(o);
	} else if (!strcmp(name, "RESUME")) {
		q->resume_ts = lm_qmp_event_time(o);
	} else if (!strcmp(name, "MIGRATION")) {
		/* livemig's last word before the source exits: the final stats. QEMU's
		 * MIGRATION event (only with the events capability) has no "ram". */
		struct json_object *data, *ram;
		if (json_object_object_get_ex(o, "data", &data) && json_object_object_get_ex(data, "ram", &ram)) {
			if (q->mig_event)
				json_object_put(q->mig_event);
			q->mig_event = json_object_get(data);
		}
	}
}

/* Gives up connecting once the peer's process has ended. */
static int qmp_peer_gone(void *arg)
{
	const struct lm_bench_qmp *q = arg;
	return lm_bench_alive(q->pid) ? 0 : -ECHILD;
}

int lm_bench_qmp_connect(struct lm_bench_qmp *q, const char *path, pid_t pid, double timeout_s, char *msg,
			 size_t msglen)
{
	q->pid = pid;
	q->c = lm_qmp_new();
	if (!q->c) {
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	lm_qmp_set_event_cb(q->c, qmp_event, q);
	lm_qmp_set_give_up(q->c, qmp_peer_gone, q);
	if (q->verbose)
		lm_qmp_set_trace(q->c, stderr, q->tag);
	int err = lm_qmp_connect(q->c, path, timeout_s, 15.0);
	if (err) {
		snprintf(msg, msglen, "%s", lm_qmp_error(q->c));
		lm_qmp_free(q->c);
		q->c = NULL;
	}
	return err;
}

void lm_bench_qmp_drain(struct lm_bench_qmp *q, double timeout_s)
{
	if (q->c)
		lm_qmp_poll(q->c, timeout_s);
}

struct json_object *lm_bench_qmp_exec(struct lm_bench_qmp *q, const char *cmd, struct json_object *args,
				      double timeout_s, char *msg, size_t msglen)
{
	struct json_object *ret = NULL;
	if (!q->c) {
		json_object_put(args);
		snprintf(msg, msglen, "%s: not connected", cmd);
		return NULL;
	}
	if (lm_qmp_exec(q->c, cmd, args, timeout_s, &ret) < 0) {
		snprintf(msg, msglen, "%s: %s", cmd, lm_qmp_error(q->c));
		return NULL;
	}
	return ret ? ret : json_object_new_object();
}

double lm_bench_jnum(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v))
		return NAN;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return NAN;
	return json_object_get_double(v);
}

const char *lm_bench_jstr(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* ------------------------------------------------------------------ */
/* One side of a migration                                              */

void lm_bench_side_init(struct lm_bench_side *s, const char *dir, bool dst, bool verbose)
{
	memset(s, 0, sizeof(*s));
	s->pid = -1;
	s->name = dst ? "dst" : "src";
	snprintf(s->console, sizeof(s->console), "%s/%s.console", dir, s->name);
	snprintf(s->sock, sizeof(s->sock), "%s/%s.sock", dir, s->name);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", dir, s->name);
	lm_bench_qmp_init(&s->q, s->name, verbose);
}

int lm_bench_side_spawn(struct lm_bench_side *s, char *const argv[], bool verbose)
{
	if (verbose) {
		fprintf(stderr, "  %s:", s->name);
		for (int i = 0; argv[i]; i++)
			fprintf(stderr, " %s", argv[i]);
		fprintf(stderr, "\n");
	}
	s->pid = lm_bench_spawn(argv, s->log);
	return s->pid < 0 ? (int)s->pid : 0;
}

int lm_bench_side_connect(struct lm_bench_side *s, const char *peer, double timeout_s, char *msg, size_t msglen)
{
	const char *role = strcmp(s->name, "dst") ? "source" : "destination";
	char why[200];
	int err = lm_bench_qmp_connect(&s->q, s->sock, s->pid, timeout_s, why, sizeof(why));
	if (err) {
		char tail[160], how[256];
		lm_bench_log_tail(s->log, tail, sizeof(tail));
		if (err == -ECHILD)
			snprintf(how, sizeof(how), "the process ended (%s)", lm_bench_gone_desc((char[40]){ 0 }, 40));
		else
			snprintf(how, sizeof(how), "%s", why);
		snprintf(msg, msglen, "%s %s did not start: %s [%s]", peer, role, how, tail);
		return err;
	}
	/* QEMU leaves capabilities negotiation mode; livemig accepts it too. */
	struct json_object *ret = lm_bench_qmp_exec(&s->q, "qmp_capabilities", NULL, 10.0, why, sizeof(why));
	if (!ret) {
		snprintf(msg, msglen, "%s %s: %s", peer, role, why);
		return -EPROTO;
	}
	json_object_put(ret);
	return 0;
}

void lm_bench_side_stop(struct lm_bench_side *s, bool ask)
{
	if (s->pid > 0 && ask && s->q.c && lm_bench_alive(s->pid)) {
		char msg[200];
		struct json_object *ret = lm_bench_qmp_exec(&s->q, "quit", NULL, 5.0, msg, sizeof(msg));
		if (ret)
			json_object_put(ret);
	}
	lm_bench_reap(&s->pid, ask ? 5.0 : 0.0);
	lm_bench_qmp_close(&s->q);
}

int lm_bench_dest_running(struct lm_bench_side *dst, double timeout_s, char *msg, size_t msglen)
{
	double end = bench_now() + timeout_s;
	bool cont_sent = false;
	char why[200];
	for (;;) {
		struct json_object *st = lm_bench_qmp_exec(&dst->q, "query-status", NULL, 10.0, why, sizeof(why));
		const char *s = lm_bench_jstr(st, "status");
		bool running = s && !strcmp(s, "running");
		bool paused = s && (!strcmp(s, "paused") || !strcmp(s, "prelaunch"));
		char status[32];
		snprintf(status, sizeof(status), "%s", s ? s : "");
		if (st)
			json_object_put(st);
		if (!s) {
			snprintf(msg, msglen, "destination: %s", why);
			return -EPROTO;
		}
		if (running)
			return 0;
		if (paused && !cont_sent) {
			struct json_object *ret = lm_bench_qmp_exec(&dst->q, "cont", NULL, 10.0, why, sizeof(why));
			if (ret)
				json_object_put(ret);
			cont_sent = true;
		}
		if (bench_now() >= end) {
			snprintf(msg, msglen, "destination not running (status %s)", status);
			return -ETIMEDOUT;
		}
		lm_bench_sleep(0.05);
	}
}

int lm_bench_guest_verdict(struct lm_bench_side *dst, double timeout_s, char *out, size_t outlen)
{
	double end = bench_now() + timeout_s;
	for (;;) {
		char *t = lm_bench_slurp(dst->console);
		bool done = false;
		lm_bench_classify_verify(t ? t : "", out, outlen, &done);
		free(t);
		if (done || bench_now() >= end)
			return 0;
		if (!lm_bench_alive(dst->pid)) {
			snprintf(out, outlen, "crash");
			return -ECHILD;
		}
		lm_bench_sleep(0.1);
	}
}

int lm_bench_warm_up(const struct lm_bench_side *src, double guest_s, const char *also, double timeout_s, char *msg,
		     size_t msglen)
{
	double end = bench_now() + timeout_s;
	for (;;) {
		char *t = lm_bench_slurp(src->console);
		bool ready = t && lm_bench_last_progress(t) >= guest_s && (!also || strstr(t, also));
		bool crashed = t && strstr(t, "livemig-guest: exception");
		free(t);
		if (ready)
			return 0;
		if (crashed) {
			snprintf(msg, msglen, "source guest crashed before migrating");
			return -EIO;
		}
		if (!lm_bench_alive(src->pid)) {
			char tail[160];
			lm_bench_log_tail(src->log, tail, sizeof(tail));
			snprintf(msg, msglen, "source exited before migrating [%s]", tail);
			return -ECHILD;
		}
		if (bench_now() >= end) {
			snprintf(msg, msglen, "source guest did not reach t=%.1f s in %.0f s", guest_s, timeout_s);
			return -ETIMEDOUT;
		}
		lm_bench_sleep(0.1);
	}
}

int lm_bench_migrate_start(struct lm_bench_side *src, struct json_object *params, int port, double *t0, char *msg,
			   size_t msglen)
{
	struct json_object *ret;
	if (params) {
		ret = lm_bench_qmp_exec(&src->q, "migrate-set-parameters", params, 10.0, msg, msglen);
		if (!ret)
			return -EPROTO;
		json_object_put(ret);
	}
	struct json_object *args = json_object_new_object();
	char uri[64];
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", port);
	json_object_object_add(args, "uri", json_object_new_string(uri));
	*t0 = bench_now();
	ret = lm_bench_qmp_exec(&src->q, "migrate", args, 10.0, msg, msglen);
	if (!ret)
		return -EPROTO;
	json_object_put(ret);
	return 0;
}

void lm_bench_migrate_cancel(struct lm_bench_side *src, bool qemu)
{
	char msg[200];
	struct json_object *ret =
		lm_bench_qmp_exec(&src->q, qemu ? "migrate_cancel" : "migrate-cancel", NULL, 10.0, msg, sizeof(msg));
	if (ret)
		json_object_put(ret);
}

static bool final_status(const char *s)
{
	return s && (!strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

int lm_bench_migrate_poll(struct lm_bench_side *src, double deadline, double interval_s, lm_bench_poll_fn *fn,
			  void *arg, struct json_object **final, char *msg, size_t msglen)
{
	*final = NULL;
	for (;;) {
		struct json_object *st = NULL;
		const char *status = NULL;
		if (!src->q.mig_event) {
			st = lm_bench_qmp_exec(&src->q, "query-migrate", NULL, 10.0, msg, msglen);
			status = lm_bench_jstr(st, "status");
			/* The source may have exited after its last word: read
			 * what it sent before it closed. */
			if (!st)
				lm_bench_qmp_drain(&src->q, 2.0);
		}
		if (src->q.mig_event && !final_status(status)) {
			if (st)
				json_object_put(st);
			st = json_object_get(src->q.mig_event);
			status = lm_bench_jstr(st, "status");
		}
		if (!st)
			return -EPROTO;
		if (fn)
			fn(st, arg);
		if (final_status(status)) {
			*final = st;
			if (!strcmp(status, "completed"))
				return 0;
			const char *desc = lm_bench_jstr(st, "error-desc");
			snprintf(msg, msglen, "migration %s%s%s", status, desc ? ": " : "", desc ? desc : "");
			return -EIO;
		}
		if (bench_now() >= deadline) {
			*final = st;
			snprintf(msg, msglen, "not completed in time (no convergence?)");
			return -ETIMEDOUT;
		}
		json_object_put(st);
		lm_bench_sleep(interval_s);
	}
}

/* ------------------------------------------------------------------ */
/* Command lines                                                        */

void lm_bench_mem_arg(char *buf, size_t len, uint64_t bytes)
{
	if (bytes % LM_BENCH_GIB == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(bytes / LM_BENCH_GIB));
	else
		snprintf(buf, len, "%lluM", (unsigned long long)(bytes / LM_BENCH_MIB));
}

int lm_bench_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int port = -EADDRNOTAVAIL;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

void lm_bench_qemu_argv(struct lm_bench_argv *a, const char *qemu, const char *cpu, const struct lm_bench_guest *g,
			bool noreserve, const char *dir, bool dst, int port)
{
	char mem[32];
	lm_bench_mem_arg(mem, sizeof(mem), g->mem);
	lm_bench_push(a, "%s", qemu);
	lm_bench_push(a, "-enable-kvm");
	if (strcmp(cpu, LM_QEMU_CPU_DEFAULT)) {
		lm_bench_push(a, "-cpu");
		lm_bench_push(a, "%s", cpu);
	}
	lm_bench_push(a, "-m");
	lm_bench_push(a, "%s", mem);
	if (noreserve) {
		lm_bench_push(a, "-object");
		lm_bench_push(a, "memory-backend-ram,id=ram0,size=%s,reserve=off", mem);
		lm_bench_push(a, "-machine");
		lm_bench_push(a, "memory-backend=ram0");
	}
	/* No default NIC, VGA (16 MiB of video RAM to migrate), floppy or CD:
	 * the QEMU guest has what livemig's has, RAM and a serial port. */
	lm_bench_push(a, "-nodefaults");
	lm_bench_push(a, "-display");
	lm_bench_push(a, "none");
	lm_bench_push(a, "-no-reboot");
	lm_bench_push(a, "-device");
	lm_bench_push(a, "isa-debug-exit,iobase=0xf4,iosize=0x04");
	lm_bench_push(a, "-kernel");
	lm_bench_push(a, "%s", g->image);
	lm_bench_push(a, "-append");
	lm_bench_push(a, "%s", g->append);
	lm_bench_push(a, "-serial");
	lm_bench_push(a, "file:%s/%s.console", dir, dst ? "dst" : "src");
	lm_bench_push(a, "-qmp");
	lm_bench_push(a, "unix:%s/%s.sock,server=on,wait=off", dir, dst ? "dst" : "src");
	if (dst) {
		lm_bench_push(a, "-incoming");
		lm_bench_push(a, "tcp:127.0.0.1:%d", port);
	} else if (g->paused) {
		lm_bench_push(a, "-S");
	}
}

void lm_bench_livemig_argv(struct lm_bench_argv *a, const char *livemig, const struct lm_bench_guest *g,
			   const char *dir, bool dst, const char *const *extra)
{
	char mem[32];
	lm_bench_mem_arg(mem, sizeof(mem), g->mem);
	lm_bench_push(a, "%s", livemig);
	if (dst) {
		lm_bench_push(a, "incoming");
		lm_bench_push(a, "--listen");
		lm_bench_push(a, "tcp:127.0.0.1:0");
		lm_bench_push(a, "--once");
	} else {
		lm_bench_push(a, "run");
		lm_bench_push(a, "%s", g->image);
		lm_bench_push(a, "--mem");
		lm_bench_push(a, "%s", mem);
		lm_bench_push(a, "--append");
		lm_bench_push(a, "%s", g->append);
		if (g->paused)
			lm_bench_push(a, "--paused");
	}
	lm_bench_push(a, "--console");
	lm_bench_push(a, "%s/%s.console", dir, dst ? "dst" : "src");
	lm_bench_push(a, "--control");
	lm_bench_push(a, "%s/%s.sock", dir, dst ? "dst" : "src");
	for (int i = 0; extra && extra[i]; i++)
		lm_bench_push(a, "%s", extra[i]);
}

int lm_bench_livemig_port(const char *log_path, pid_t pid, double timeout_s)
{
	double end = bench_now() + timeout_s;
	for (;;) {
		char *t = lm_bench_slurp(log_path);
		const char *p = t ? strstr(t, "listening on tcp:") : NULL;
		if (p) {
			p = strstr(p, "tcp:");
			const char *colon = strchr(p + 4, ':');
			int port = colon ? atoi(colon + 1) : 0;
			free(t);
			return port > 0 ? port : -EPROTO;
		}
		free(t);
		if (!lm_bench_alive(pid))
			return -ECHILD;
		if (bench_now() >= end)
			return -ETIMEDOUT;
		lm_bench_sleep(0.02);
	}
}

/* ------------------------------------------------------------------ */
/* The machine                                                          */

void lm_bench_machine_info(char *cpu, size_t cpulen, long *ncpu, double *mem_gib)
{
	snprintf(cpu, cpulen, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "model name", 10)) {
			char *v = strchr(line, ':');
			if (v) {
				v++;
				while (*v == ' ')
					v++;
				v[strcspn(v, "\n")] = 0;
				snprintf(cpu, cpulen, "%s", v);
			}
			break;
		}
	}
	if (f)
		fclose(f);
	*ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	*mem_gib = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / (double)LM_BENCH_GIB;
}

struct json_object *lm_bench_json_root(const char *benchmark, const char *date)
{
	char cpu[256];
	long ncpu;
	double mem;
	lm_bench_machine_info(cpu, sizeof(cpu), &ncpu, &mem);
	struct json_object *root = json_object_new_object();
	json_object_object_add(root, "benchmark", json_object_new_string(benchmark));
	json_object_object_add(root, "date", json_object_new_string(date));
	struct json_object *m = json_object_new_object();
	json_object_object_add(m, "nproc", json_object_new_int64(ncpu));
	json_object_object_add(m, "cpu", json_object_new_string(cpu));
	json_object_object_add(m, "mem-gib", json_object_new_double(mem));
	json_object_object_add(root, "machine", m);
	return root;
}

void lm_bench_qemu_version(const char *qemu, char *out, size_t len)
{
	char cmd[4200];
	snprintf(out, len, "unknown");
	snprintf(cmd, sizeof(cmd), "'%s' --version 2>/dev/null", qemu);
	FILE *p = popen(cmd, "r");
	if (!p)
		return;
	char line[200];
	if (fgets(line, sizeof(line), p)) {
		line[strcspn(line, "\n")] = 0;
		const char *v = strstr(line, "version ");
		snprintf(out, len, "%s", v ? v + 8 : line);
	}
	pclose(p);
}

bool lm_bench_in_path(const char *name)
{
	if (strchr(name, '/'))
		return access(name, X_OK) == 0;
	const char *path = getenv("PATH");
	char p[4200];
	char *dup = strdup(path ? path : "/usr/bin:/bin");
	bool found = false;
	for (char *save = NULL, *d = dup ? strtok_r(dup, ":", &save) : NULL; d && !found;
	     d = strtok_r(NULL, ":", &save)) {
		snprintf(p, sizeof(p), "%s/%s", d, name);
		found = access(p, X_OK) == 0;
	}
	free(dup);
	return found;
}

/* ------------------------------------------------------------------ */
/* Numbers                                                              */

int lm_bench_parse_double(const char *s, double *out, double min)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < min)
		return -EINVAL;
	*out = v;
	return 0;
}

int lm_bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

const char *lm_bench_fmt(char *out, size_t len, double v, double scale, int prec)
{
	if (isnan(v))
		snprintf(out, len, "-");
	else
		snprintf(out, len, "%.*f", prec, v / scale);
	return out;
}
