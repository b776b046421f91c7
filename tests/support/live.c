/*
 * Helpers for the end-to-end live-migration tests: child processes, files,
 * the control-socket client, VMs and migrations, and a cutting TCP proxy.
 * See live.h for who owns what.
 */
#include "live.h"
#include "child.h"
#include "cli/qmp_client.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

static const char *livemig_path, *guest_path;
static char tmpdir[64];
static bool verbose, ready;

/* ---- environment -------------------------------------------------------- */

double lm_live_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void lm_live_msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void lm_live_log(const char *fmt, ...)
{
	if (!verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

int lm_live_setup(const char *tag)
{
	ready = false;
	livemig_path = getenv("LIVEMIG");
	guest_path = getenv("GUEST_ELF");
	verbose = getenv("LIVEMIG_TEST_VERBOSE") != NULL;
	if (!livemig_path || !guest_path || access(livemig_path, X_OK) < 0 ||
	    access(guest_path, R_OK) < 0) {
		fprintf(stderr,
			"set LIVEMIG and GUEST_ELF to the livemig command and guest/guest.elf\n");
		return -1;
	}
	if (access("/dev/kvm", R_OK | W_OK) < 0) {
		fprintf(stderr, "/dev/kvm is not usable here\n");
		return -1;
	}
	/* A failing test may leave the terminal's signals to us; a dead peer
	 * must not kill the test process through SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/lm-%s-XXXXXX", tag);
	if (!mkdtemp(tmpdir))
		return -1;
	ready = true;
	return 0;
}

bool lm_live_ready(void)
{
	return ready;
}

const char *lm_live_livemig(void)
{
	return livemig_path;
}

const char *lm_live_set_livemig(const char *path)
{
	const char *old = livemig_path;
	livemig_path = path;
	return old;
}

const char *lm_live_guest(void)
{
	return guest_path;
}

const char *lm_live_path(const char *fmt, ...)
{
	static char bufs[32][256];
	static unsigned k;
	char *p = bufs[k++ % 32];
	char name[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

/* ---- child processes ---------------------------------------------------- */

struct child {
	pid_t pid;
	bool reaped;
	int status; /* exit code or 128+signal, once reaped */
};
static struct child children[256];
static size_t nchildren;

/* The newest entry for pid: an older one may hold a reaped child whose pid
 * the kernel has given out again (pid_max is small on some machines). */
static struct child *find_child(pid_t pid)
{
	for (size_t i = nchildren; i-- > 0;)
		if (children[i].pid == pid)
			return &children[i];
	return NULL;
}

static int decode_status(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Reaps the child without blocking; true once it has been reaped. */
static bool try_reap(struct child *c)
{
	if (c->reaped)
		return true;
	int st;
	pid_t r = waitpid(c->pid, &st, WNOHANG);
	if (r == c->pid || (r < 0 && errno == ECHILD)) {
		c->reaped = true;
		c->status = r == c->pid ? decode_status(st) : -1;
	}
	return c->reaped;
}

pid_t lm_live_spawn(const char *out, const char *err, const char *const *args)
{
	const char *argv[64];
	int n = 0;
	argv[n++] = livemig_path;
	for (; args && *args && n < 63; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	if (nchildren == sizeof(children) / sizeof(children[0])) {
		/* Forget children that are long gone to make room. */
		size_t k = 0;
		for (size_t i = 0; i < nchildren; i++)
			if (!try_reap(&children[i]))
				children[k++] = children[i];
		nchildren = k;
		if (nchildren == sizeof(children) / sizeof(children[0]))
			return -EMFILE;
	}
	if (verbose) {
		fprintf(stderr, "spawn:");
		for (int i = 0; i < n; i++)
			fprintf(stderr, " %s", argv[i]);
		fprintf(stderr, "\n");
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		lm_test_die_with_parent(parent);
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			_exit(126);
		int efd = fd;
		if (err) {
			efd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (efd < 0)
				_exit(126);
		}
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0)
			dup2(nul, 0);
		dup2(fd, 1);
		dup2(efd, 2);
		/* The test may have set SIGPIPE to ignored; the child gets the
		 * default back so that it behaves as it would from a shell. */
		signal(SIGPIPE, SIG_DFL);
		execv(livemig_path, (char *const *)argv);
		_exit(127);
	}
	children[nchildren++] = (struct child){.pid = pid};
	return pid;
}

int lm_live_wait(pid_t pid, double deadline_s)
{
	struct child *c = find_child(pid);
	if (!c)
		return -1;
	double end = lm_live_now() + deadline_s;
	while (!try_reap(c)) {
		if (lm_live_now() > end) {
			kill(pid, SIGKILL);
			int st;
			waitpid(pid, &st, 0);
			c->reaped = true;
			c->status = -1;
			return -1;
		}
		lm_live_msleep(20);
	}
	return c->status;
}

bool lm_live_alive(pid_t pid)
{
	struct child *c = find_child(pid);
	return c && !try_reap(c);
}

void lm_live_kill(pid_t pid, int sig)
{
	struct child *c = find_child(pid);
	if (c && !try_reap(c))
		kill(pid, sig);
}

/* ---- registered control clients and proxies (for cleanup) ---------------- */

static struct lm_qmp *ctl_clients[64];
static size_t nctl_clients;

static bool register_client(struct lm_qmp *q)
{
	if (nctl_clients == sizeof(ctl_clients) / sizeof(ctl_clients[0]))
		return false;
	ctl_clients[nctl_clients++] = q;
	return true;
}

/* False if q is not registered: lm_live_cleanup() has freed it already. */
static bool unregister_client(struct lm_qmp *q)
{
	for (size_t i = 0; i < nctl_clients; i++)
		if (ctl_clients[i] == q) {
			ctl_clients[i] = ctl_clients[--nctl_clients];
			return true;
		}
	return false;
}

static struct lm_live_proxy *proxies[16];
static size_t nproxies;

void lm_live_cleanup(void)
{
	while (nproxies > 0)
		lm_live_proxy_stop(proxies[nproxies - 1]);
	for (size_t i = 0; i < nctl_clients; i++)
		lm_qmp_free(ctl_clients[i]);
	nctl_clients = 0;
	for (size_t i = 0; i < nchildren; i++) {
		struct child *c = &children[i];
		if (!try_reap(c)) {
			kill(c->pid, SIGKILL);
			int st;
			if (waitpid(c->pid, &st, 0) == c->pid)
				c->status = decode_status(st);
			c->reaped = true;
		}
	}
	nchildren = 0;
}

void lm_live_finish(void)
{
	lm_live_cleanup();
	if (!tmpdir[0])
		return;
	if (getenv("LIVEMIG_TEST_KEEP")) {
		fprintf(stderr, "test files kept in %s\n", tmpdir);
		return;
	}
	DIR *d = opendir(tmpdir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char p[600];
			snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(tmpdir);
}

/* ---- files and text ----------------------------------------------------- */

char *lm_live_slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	size_t cap = 1 << 16, len = 0, n;
	char *b = malloc(cap);
	if (!b) {
		fclose(f);
		return strdup("");
	}
	while ((n = fread(b + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 4096) {
			char *nb = realloc(b, cap * 2);
			if (!nb)
				break;
			b = nb;
			cap *= 2;
		}
	}
	b[len] = 0;
	fclose(f);
	return b;
}

int lm_live_count(const char *text, const char *needle, char *last, size_t lastlen)
{
	int n = 0;
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		if (!e)
			break; /* a partial line is not there yet */
		size_t l = (size_t)(e - p);
		char tmp[2048];
		size_t c = l < sizeof(tmp) - 1 ? l : sizeof(tmp) - 1;
		memcpy(tmp, p, c);
		tmp[c] = 0;
		if (strstr(tmp, needle)) {
			n++;
			if (last)
				snprintf(last, lastlen, "%s", tmp);
		}
		p = e + 1;
	}
	return n;
}

int lm_live_count_file(const char *path, const char *needle, char *last, size_t lastlen)
{
	char *t = lm_live_slurp(path);
	int n = lm_live_count(t, needle, last, lastlen);
	free(t);
	return n;
}

bool lm_live_wait_line(const char *path, const char *needle, int have, char *line, size_t linelen,
		       pid_t pid, double deadline_s)
{
	double end = lm_live_now() + deadline_s;
	while (lm_live_now() < end) {
		if (lm_live_count_file(path, needle, line, linelen) > have)
			return true;
		if (pid > 0 && !lm_live_alive(pid))
			return lm_live_count_file(path, needle, line, linelen) > have;
		lm_live_msleep(50);
	}
	return false;
}

bool lm_live_num(const char *text, const char *key, double *out)
{
	const char *p = text ? strstr(text, key) : NULL;
	if (!p)
		return false;
	p += strlen(key);
	while (*p == ' ')
		p++;
	char *end;
	double v = strtod(p, &end);
	if (end == p)
		return false;
	*out = v;
	return true;
}

bool lm_live_str(const char *text, const char *key, char *out, size_t outlen)
{
	char k[128];
	snprintf(k, sizeof(k), "\"%s\"", key);
	const char *p = text ? strstr(text, k) : NULL;
	if (!p)
		return false;
	p += strlen(k);
	while (*p == ' ' || *p == ':')
		p++;
	if (*p != '"')
		return false;
	p++;
	const char *e = strchr(p, '"');
	if (!e)
		return false;
	snprintf(out, outlen, "%.*s", (int)(e - p), p);
	return true;
}

void lm_live_dump(const char *path, size_t maxbytes)
{
	char *t = lm_live_slurp(path);
	size_t len = strlen(t);
	const char *s = len > maxbytes ? t + len - maxbytes : t;
	fprintf(stderr, "---- %s%s\n%s----\n", path, len > maxbytes ? " (tail)" : "", s);
	free(t);
}

/* ---- control socket client ---------------------------------------------- */

/* MIGRATION events are counted and the last one kept, whichever wait reads
 * them. */
static void ctl_event(struct lm_qmp *q, const char *name, struct json_object *event, void *arg)
{
	struct lm_live_ctl *c = arg;
	lm_live_log("event: %s\n", lm_qmp_text(q));
	if (!strcmp(name, "MIGRATION")) {
		c->migration_events++;
		snprintf(c->last_event, sizeof(c->last_event), "%s", lm_qmp_text(q));
	}
}

int lm_live_ctl_open(struct lm_live_ctl *c, const char *path, double deadline_s)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->deadline_s = deadline_s;
	c->qmp = lm_qmp_new();
	if (!c->qmp)
		return -ENOMEM;
	if (!register_client(c->qmp)) {
		lm_qmp_free(c->qmp);
		c->qmp = NULL;
		return -EMFILE;
	}
	lm_qmp_set_event_cb(c->qmp, ctl_event, c);
	int r = lm_qmp_connect(c->qmp, path, deadline_s, deadline_s);
	if (r < 0) {
		lm_live_log("%s: %s\n", path, lm_qmp_error(c->qmp));
		lm_live_ctl_close(c);
		return r;
	}
	c->fd = lm_qmp_fd(c->qmp);
	return 0;
}

void lm_live_ctl_close(struct lm_live_ctl *c)
{
	if (c->qmp && unregister_client(c->qmp))
		lm_qmp_free(c->qmp);
	c->qmp = NULL;
	c->fd = -1;
}

int lm_live_ctl_cmd(struct lm_live_ctl *c, const char *req, char *reply, size_t replylen)
{
	if (!c->qmp || !lm_qmp_connected(c->qmp))
		return -EBADF;
	size_t n = strlen(req);
	char *line = malloc(n + 2);
	if (!line)
		return -ENOMEM;
	memcpy(line, req, n);
	line[n] = '\n';
	int r = lm_qmp_send_raw(c->qmp, line, n + 1, c->deadline_s);
	free(line);
	struct json_object *o = NULL;
	if (r == 0)
		r = lm_qmp_read_reply(c->qmp, c->deadline_s, &o);
	if (r < 0) {
		lm_live_log("%s -> %s\n", req, lm_qmp_error(c->qmp));
		return r;
	}
	json_object_put(o);
	snprintf(reply, replylen, "%s", lm_qmp_text(c->qmp));
	return 0;
}

/* ---- VMs ---------------------------------------------------------------- */

static void vm_init(struct lm_live_vm *vm, const char *name)
{
	memset(vm, 0, sizeof(*vm));
	vm->pid = -1;
	vm->ctl.fd = -1;
	vm->ctl.qmp = NULL;
	snprintf(vm->name, sizeof(vm->name), "%s", name);
	snprintf(vm->console, sizeof(vm->console), "%s", lm_live_path("%s.console", name));
	snprintf(vm->out, sizeof(vm->out), "%s", lm_live_path("%s.out", name));
	snprintf(vm->sock, sizeof(vm->sock), "%s", lm_live_path("%s.sock", name));
	unlink(vm->console);
	unlink(vm->out);
}

static size_t add_extra(const char **args, size_t n, size_t cap, const char *const *extra)
{
	for (; extra && *extra && n < cap - 1; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	return n;
}

int lm_live_run(struct lm_live_vm *vm, const char *name, const char *mem, const char *append,
		const char *const *extra)
{
	vm_init(vm, name);
	const char *args[48] = {"run",	guest_path,  "--mem",	  mem,	       "--append",
				append, "--console", vm->console, "--control", vm->sock};
	add_extra(args, 10, 48, extra);
	vm->pid = lm_live_spawn(vm->out, NULL, args);
	return vm->pid < 0 ? vm->pid : 0;
}

int lm_live_incoming(struct lm_live_vm *vm, const char *name, const char *transport,
		     const char *const *extra)
{
	vm_init(vm, name);
	char listen[300];
	if (!strcmp(transport, "unix")) {
		snprintf(listen, sizeof(listen), "unix:%s", lm_live_path("%s.mig", name));
		unlink(listen + 5);
	} else {
		snprintf(listen, sizeof(listen), "tcp:127.0.0.1:0");
	}
	const char *args[48] = {"incoming",  "--listen",  listen,  "--console",
				vm->console, "--control", vm->sock};
	add_extra(args, 7, 48, extra);
	vm->pid = lm_live_spawn(vm->out, NULL, args);
	if (vm->pid < 0)
		return vm->pid;
	char line[1024];
	if (!lm_live_wait_line(vm->out, "listening on ", 0, line, sizeof(line), vm->pid,
			       LM_LIVE_DEADLINE_S))
		return -ETIMEDOUT;
	const char *p = strstr(line, "listening on ") + strlen("listening on ");
	snprintf(vm->uri, sizeof(vm->uri), "%s", p);
	size_t l = strlen(vm->uri);
	while (l > 0 && (vm->uri[l - 1] == ' ' || vm->uri[l - 1] == '\r'))
		vm->uri[--l] = 0;
	return 0;
}

struct lm_live_ctl *lm_live_vm_ctl(struct lm_live_vm *vm)
{
	if (!vm->ctl_open) {
		if (lm_live_ctl_open(&vm->ctl, vm->sock, LM_LIVE_DEADLINE_S) < 0)
			return NULL;
		vm->ctl_open = true;
	}
	return &vm->ctl;
}

void lm_live_vm_ctl_close(struct lm_live_vm *vm)
{
	if (vm->ctl_open) {
		lm_live_ctl_close(&vm->ctl);
		vm->ctl_open = false;
	}
}

int lm_live_vm_cmd(struct lm_live_vm *vm, const char *req, char *reply, size_t replylen)
{
	struct lm_live_ctl *c = lm_live_vm_ctl(vm);
	if (!c)
		return -ENOTCONN;
	int r = lm_live_ctl_cmd(c, req, reply, replylen);
	if (r < 0)
		return r;
	if (!strstr(reply, "\"return\"")) {
		lm_live_log("%s: %s -> %s\n", vm->name, req, reply);
		return -EIO;
	}
	return 0;
}

bool lm_live_vm_status(struct lm_live_vm *vm, char *status, size_t len)
{
	char reply[4096];
	if (lm_live_vm_cmd(vm, "{\"execute\":\"query-status\"}", reply, sizeof(reply)) < 0)
		return false;
	return lm_live_str(reply, "status", status, len);
}

int lm_live_vm_verify(struct lm_live_vm *vm)
{
	char reply[4096];
	int r = lm_live_vm_cmd(vm, "{\"execute\":\"guest-verify\"}", reply, sizeof(reply));
	if (r < 0)
		return r;
	double req;
	if (!lm_live_num(reply, "\"request\":", &req))
		return -EPROTO;
	double end = lm_live_now() + LM_LIVE_DEADLINE_S;
	while (lm_live_now() < end) {
		if ((r = lm_live_vm_cmd(vm, "{\"execute\":\"query-status\"}", reply,
					sizeof(reply))) < 0)
			return r;
		double done;
		char result[32];
		if (lm_live_num(reply, "\"done\":", &done) && done >= req &&
		    lm_live_str(reply, "result", result, sizeof(result)))
			return !strcmp(result, "ok") ? 1 : 0;
		lm_live_msleep(50);
	}
	return -ETIMEDOUT;
}

bool lm_live_vm_wait_progress(struct lm_live_vm *vm, int have)
{
	return lm_live_wait_line(vm->console, "progress t=", have, NULL, 0, vm->pid,
				 LM_LIVE_DEADLINE_S);
}

bool lm_live_vm_last_progress(struct lm_live_vm *vm, const char *key, double *val)
{
	char line[2048];
	if (lm_live_count_file(vm->console, "progress t=", line, sizeof(line)) == 0)
		return false;
	char k[64];
	/* " writes=" and not "wps="; "t=" must match the first field only. */
	snprintf(k, sizeof(k), "%s%s", strcmp(key, "t=") ? " " : "progress ", key);
	return lm_live_num(line, k, val);
}

bool lm_live_vm_wait_progress_above(struct lm_live_vm *vm, const char *key, double above)
{
	double end = lm_live_now() + LM_LIVE_DEADLINE_S;
	while (lm_live_now() < end) {
		double v;
		if (lm_live_vm_last_progress(vm, key, &v) && v > above)
			return true;
		if (!lm_live_alive(vm->pid))
			return lm_live_vm_last_progress(vm, key, &v) && v > above;
		lm_live_msleep(100);
	}
	return false;
}

int lm_live_vm_quit(struct lm_live_vm *vm)
{
	char reply[4096];
	if (lm_live_alive(vm->pid) &&
	    lm_live_vm_cmd(vm, "{\"execute\":\"quit\"}", reply, sizeof(reply)) < 0)
		lm_live_kill(vm->pid, SIGKILL);
	int rc = lm_live_wait(vm->pid, LM_LIVE_DEADLINE_S);
	lm_live_vm_ctl_close(vm);
	return rc;
}

/* ---- migrations --------------------------------------------------------- */

int lm_live_mig_start(struct lm_live_mig *m, const struct lm_live_vm *src, const char *uri,
		      const char *const *opts)
{
	static unsigned seq;
	memset(m, 0, sizeof(*m));
	m->rc = -1;
	unsigned k = seq++;
	snprintf(m->out, sizeof(m->out), "%s", lm_live_path("migrate-%u.json", k));
	snprintf(m->err, sizeof(m->err), "%s", lm_live_path("migrate-%u.err", k));
	const char *args[48] = {"migrate", "--control", src->sock, "--to", uri, "--json", "-q"};
	add_extra(args, 7, 48, opts);
	m->pid = lm_live_spawn(m->out, m->err, args);
	return m->pid < 0 ? m->pid : 0;
}

int lm_live_mig_finish(struct lm_live_mig *m)
{
	m->rc = lm_live_wait(m->pid, LM_LIVE_DEADLINE_S * 2);
	free(m->json);
	free(m->errtext);
	m->json = lm_live_slurp(m->out);
	m->errtext = lm_live_slurp(m->err);
	lm_live_log("migrate exit %d\n%s%s", m->rc, m->json, m->errtext);
	return m->rc;
}

void lm_live_mig_free(struct lm_live_mig *m)
{
	free(m->json);
	free(m->errtext);
	m->json = m->errtext = NULL;
}

int lm_live_migrate(struct lm_live_mig *m, const struct lm_live_vm *src, const char *uri,
		    const char *const *opts)
{
	int r = lm_live_mig_start(m, src, uri, opts);
	if (r < 0)
		return r;
	return lm_live_mig_finish(m);
}

void lm_live_mig_figures(const struct lm_live_mig *m, struct lm_live_figures *f)
{
	memset(f, 0, sizeof(*f));
	lm_live_num(m->json, "\"total-time\":", &f->total_ms);
	lm_live_num(m->json, "\"downtime\":", &f->downtime_ms);
	lm_live_num(m->json, "\"transferred\":", &f->transferred);
	lm_live_num(m->json, "\"rounds\":", &f->rounds);
}

bool lm_live_wait_migration_active(struct lm_live_vm *src, double min_bytes)
{
	double end = lm_live_now() + LM_LIVE_DEADLINE_S;
	char reply[8192], status[32];
	while (lm_live_now() < end) {
		if (lm_live_vm_cmd(src, "{\"execute\":\"query-migrate\"}", reply, sizeof(reply)) <
		    0)
			return false;
		if (lm_live_str(reply, "status", status, sizeof(status))) {
			double tr = 0;
			lm_live_num(reply, "\"transferred\":", &tr);
			if (!strcmp(status, "active") && tr >= min_bytes)
				return true;
			if (!strcmp(status, "completed") || !strcmp(status, "failed") ||
			    !strcmp(status, "cancelled"))
				return false;
		}
		lm_live_msleep(20);
	}
	return false;
}

/* ---- what a test checks ------------------------------------------------ */

const char *lm_live_check_switchover(struct lm_live_vm *src, struct lm_live_vm *dst,
				     const char *key)
{
	int rc = lm_live_wait(src->pid, LM_LIVE_DEADLINE_S);
	if (rc != LM_CLI_EXIT_MIGRATED)
		return "the source process did not exit with LM_CLI_EXIT_MIGRATED after a completed migration";
	/* The source is gone: its last progress line is final. */
	double last = -1;
	lm_live_vm_last_progress(src, key, &last);
	if (!lm_live_wait_line(dst->console, "verify ok", 0, NULL, 0, dst->pid, LM_LIVE_DEADLINE_S))
		return "no \"verify ok\" on the destination";
	if (!lm_live_vm_wait_progress_above(dst, key, last))
		return "the guest's progress did not continue on the destination";
	if (lm_live_count_file(src->console, "FAIL", NULL, 0) > 0)
		return "FAIL on the source console";
	if (lm_live_count_file(dst->console, "FAIL", NULL, 0) > 0)
		return "FAIL on the destination console";
	if (lm_live_count_file(dst->console, "went backwards", NULL, 0) > 0)
		return "the guest saw its TSC go backwards";
	/* The guest prints each progress line once, with a later time than
	 * the one before: a line printed again (output replayed, an
	 * instruction executed twice) or a clock that went back across the
	 * switchover shows here. */
	double t_src = -1;
	lm_live_vm_last_progress(src, "t=", &t_src);
	char *text = lm_live_slurp(dst->console);
	double prev = t_src;
	bool ordered = true;
	for (const char *p = text; (p = strstr(p, "progress t=")) != NULL; p++) {
		double t = strtod(p + strlen("progress t="), NULL);
		if (t <= prev)
			ordered = false;
		prev = t;
	}
	free(text);
	if (!ordered)
		return "the guest's progress times on the destination do not follow the source's "
		       "in order";
	char status[32];
	if (!lm_live_vm_status(dst, status, sizeof(status)) || strcmp(status, "running"))
		return "the destination VM is not running";
	return NULL;
}

const char *lm_live_check_survived(struct lm_live_vm *src, const char *key)
{
	char status[32];
	if (!lm_live_alive(src->pid))
		return "the source process exited";
	if (!lm_live_vm_status(src, status, sizeof(status)))
		return "the source does not answer query-status";
	if (strcmp(status, "running"))
		return "the source VM is not running";
	double last = -1;
	lm_live_vm_last_progress(src, key, &last);
	if (!lm_live_vm_wait_progress_above(src, key, last))
		return "the source guest's progress stopped";
	int v = lm_live_vm_verify(src);
	if (v < 0)
		return "guest-verify on the source got no answer";
	if (v == 0)
		return "guest-verify on the source failed";
	if (lm_live_count_file(src->console, "FAIL", NULL, 0) > 0)
		return "FAIL on the source console";
	return NULL;
}

/* ---- a TCP proxy that cuts the connection ------------------------------- */

#define PROXY_CONNS 8

struct lm_live_proxy {
	int lfd;
	struct sockaddr_in target;
	unsigned cut_conn; /* the connection (in accept order) that is cut */
	uint64_t cut_after;
	_Atomic uint64_t fwd; /* towards the target on cut_conn */
	atomic_bool cut, stop;
	pthread_t th;
};

static int parse_tcp(const char *uri, struct sockaddr_in *sa)
{
	char host[128];
	int port;
	if (sscanf(uri, "tcp:%127[^:]:%d", host, &port) != 2 || port <= 0 || port > 65535)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

/* Forwards what is readable on from to to; towards the target on the
 * connection that is cut, never more than the bytes left before the cut.
 * Returns false at EOF or error. */
static bool forward(struct lm_live_proxy *p, int from, int to, bool counted)
{
	char buf[65536];
	size_t want = sizeof(buf);
	if (counted) {
		uint64_t left = p->cut_after - atomic_load(&p->fwd);
		if (left < want)
			want = (size_t)left;
	}
	ssize_t n = read(from, buf, want);
	if (n <= 0)
		return false;
	for (ssize_t off = 0; off < n;) {
		ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		off += w;
	}
	if (counted)
		atomic_fetch_add(&p->fwd, (uint64_t)n);
	return true;
}

/* An abrupt cut, as when a cable is pulled: both sides see the connection
 * end in the middle of the stream. */
static void proxy_close(int *a, int *b)
{
	if (*a >= 0) {
		shutdown(*a, SHUT_RDWR);
		close(*a);
	}
	if (*b >= 0) {
		shutdown(*b, SHUT_RDWR);
		close(*b);
	}
	*a = *b = -1;
}

/* Accepts connections (the main one, then the channels, in the order the
 * source opens them), each forwarded both ways to its own connection to the
 * target; connection cut_conn is cut after cut_after bytes towards the
 * target. A connection that ends is closed on both sides, the others go
 * on. */
static void *proxy_main(void *arg)
{
	struct lm_live_proxy *p = arg;
	int a[PROXY_CONNS], b[PROXY_CONNS];
	unsigned n = 0;
	while (!atomic_load(&p->stop)) {
		struct pollfd pf[1 + 2 * PROXY_CONNS];
		unsigned np = 0;
		pf[np++] = (struct pollfd){.fd = n < PROXY_CONNS ? p->lfd : -1, .events = POLLIN};
		for (unsigned i = 0; i < n; i++) {
			pf[np++] = (struct pollfd){.fd = a[i], .events = POLLIN};
			pf[np++] = (struct pollfd){.fd = b[i], .events = POLLIN};
		}
		int r = poll(pf, np, 100);
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		if (pf[0].revents & POLLIN) {
			a[n] = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
			b[n] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (a[n] >= 0 && b[n] >= 0 &&
			    connect(b[n], (struct sockaddr *)&p->target, sizeof(p->target)) == 0) {
				n++;
			} else {
				proxy_close(&a[n], &b[n]);
			}
			continue; /* the poll set changed */
		}
		for (unsigned i = 0; i < n; i++) {
			if (a[i] < 0)
				continue;
			bool counted = i == p->cut_conn;
			const short ev = POLLIN | POLLHUP | POLLERR;
			if (((pf[1 + 2 * i].revents & ev) && !forward(p, a[i], b[i], counted)) ||
			    ((pf[2 + 2 * i].revents & ev) && !forward(p, b[i], a[i], false))) {
				proxy_close(&a[i], &b[i]);
				continue;
			}
			if (counted && atomic_load(&p->fwd) >= p->cut_after) {
				atomic_store(&p->cut, true);
				proxy_close(&a[i], &b[i]);
			}
		}
	}
	for (unsigned i = 0; i < n; i++)
		proxy_close(&a[i], &b[i]);
	return NULL;
}

int lm_live_proxy_start(struct lm_live_proxy **out, const char *target_uri, uint64_t cut_after,
			char *uri, size_t urilen)
{
	return lm_live_proxy_start_conn(out, target_uri, 0, cut_after, uri, urilen);
}

int lm_live_proxy_start_conn(struct lm_live_proxy **out, const char *target_uri, unsigned cut_conn,
			     uint64_t cut_after, char *uri, size_t urilen)
{
	if (cut_conn >= PROXY_CONNS)
		return -EINVAL;
	if (nproxies == sizeof(proxies) / sizeof(proxies[0]))
		return -EMFILE;
	struct lm_live_proxy *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	int r = parse_tcp(target_uri, &p->target);
	if (r < 0)
		goto fail;
	p->cut_after = cut_after;
	p->cut_conn = cut_conn;
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->lfd < 0) {
		r = -errno;
		goto fail;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sa);
	if (bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(p->lfd, PROXY_CONNS) < 0 ||
	    getsockname(p->lfd, (struct sockaddr *)&sa, &sl) < 0) {
		r = -errno;
		goto fail_fd;
	}
	snprintf(uri, urilen, "tcp:127.0.0.1:%d", ntohs(sa.sin_port));
	if ((r = -pthread_create(&p->th, NULL, proxy_main, p)) < 0)
		goto fail_fd;
	proxies[nproxies++] = p;
	*out = p;
	return 0;
fail_fd:
	close(p->lfd);
fail:
	free(p);
	return r;
}

uint64_t lm_live_proxy_forwarded(struct lm_live_proxy *p, bool *cut)
{
	if (cut)
		*cut = atomic_load(&p->cut);
	return atomic_load(&p->fwd);
}

void lm_live_proxy_stop(struct lm_live_proxy *p)
{
	if (!p)
		return;
	atomic_store(&p->stop, true);
	pthread_join(p->th, NULL);
	close(p->lfd);
	for (size_t i = 0; i < nproxies; i++)
		if (proxies[i] == p) {
			proxies[i] = proxies[--nproxies];
			break;
		}
	free(p);
}

int lm_live_tcp_connect(const char *uri)
{
	struct sockaddr_in sa;
	int r = parse_tcp(uri, &sa);
	if (r < 0)
		return r;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int lm_live_send_garbage(const char *uri, const void *buf, size_t len)
{
	int fd = lm_live_tcp_connect(uri);
	if (fd < 0)
		return fd;
	const char *b = buf;
	for (size_t off = 0; off < len;) {
		ssize_t w = send(fd, b + off, len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			/* The receiver may reject the stream and close before
			 * reading all of it: that is its right. */
			break;
		}
		off += (size_t)w;
	}
	/* Give the receiver the chance to read and answer before the close. */
	shutdown(fd, SHUT_WR);
	char sink[4096];
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	double end = lm_live_now() + 10;
	while (lm_live_now() < end && poll(&pf, 1, 200) >= 0) {
		if (pf.revents) {
			ssize_t n = read(fd, sink, sizeof(sink));
			if (n <= 0)
				break;
		}
	}
	close(fd);
	return 0;
}
