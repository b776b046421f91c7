/*
 * livemig bench vs-qemu: the same guest image migrated with the same
 * parameters by QEMU and by livemig, on this machine, in the same run.
 *
 * Each run starts a source and a destination process of one peer (QEMU:
 * qemu-system-x86_64 -incoming; livemig: `livemig run` and `livemig
 * incoming`), lets the guest's workload warm up, sets the downtime limit and
 * the bandwidth cap, starts the migration over TCP loopback and polls
 * query-migrate until it completes. Both peers are driven through the very
 * same QMP-style client over their UNIX control sockets, so the harness
 * treats them alike: the numbers in a row are the peers' own query-migrate
 * figures (total-time, downtime, setup-time, ram.transferred,
 * ram.dirty-sync-count), plus a downtime the harness measures itself from
 * the timestamps of the source's STOP event and the destination's RESUME
 * event (both peers stamp events with the host's wall clock).
 *
 * Correctness is judged by the guest, not by the harness: the guest image
 * checks every page it wrote (and its vector registers) against its own
 * version table. Under QEMU there is no pv device to ask for a check, so
 * every case boots the guest with a periodic check (verify_every) and the
 * harness requires a complete check that *started on the destination*
 * after the migration: a `verify start` line on the destination's console
 * followed by `verify ok`. A check that started on the source and ended on
 * the destination proves less, so it is not counted. Paused never-run
 * guests are resumed on the destination and must pass their setup check.
 *
 * Peers alternate (QEMU first in odd repetitions, livemig first in even
 * ones), so slow drift of the shared machine's load hits both alike. Each
 * case reports the median and the range of its repetitions.
 *
 * Only one pair of processes runs at a time, and every process started is
 * stopped on every path (and dies with the benchmark: PR_SET_PDEATHSIG).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench.h"
#include "cli/cli.h"
#include "cli/qmp_client.h"

#define MAX_REPEAT 25
#define GIB (1ull << 30)
#define MIB (1ull << 20)

/* ------------------------------------------------------------------ */
/* Cases                                                               */

struct vcase {
	const char *name;
	const char *desc;
	uint64_t mem;       /* guest RAM in bytes */
	bool paused;        /* created, never run on the source */
	bool memtouch;      /* wait for "memtouch done" before migrating */
	bool capped;        /* max-bandwidth = --cap (1 Gbit/s) */
	bool in_default;    /* part of the full run */
	const char *append; /* the guest's command line */
};

/*
 * zerocheck=0 on both peers: under QEMU the guest would otherwise read every
 * never-written page at every check (a 2 GiB sweep per period) while under
 * livemig it would not (its default), and the two guests would then not do
 * the same work during the migration. The check still covers every page
 * written and the version table's sum.
 */
#define RUNNING_VERIFY "verify=1 verify_every=2 zerocheck=0"
/* memtouch's checks read all 2 GiB (about 1.3 s): fewer of them, so that
 * the guest mostly idles during the migration as the workload intends. */
#define MEMTOUCH_VERIFY "verify=1 verify_every=5 zerocheck=0"
#define PAUSED_APPEND "workload=idle verify=1 zerocheck=0"

static const struct vcase cases[] = {
	{ "paused-2G", "paused never-run guest, 2 GiB", 2 * GIB, true, false, false, true, PAUSED_APPEND },
	{ "paused-8G", "paused never-run guest, 8 GiB", 8 * GIB, true, false, false, true, PAUSED_APPEND },
	{ "paused-16G", "paused never-run guest, 16 GiB", 16 * GIB, true, false, false, true, PAUSED_APPEND },
	{ "idle-2G", "running 2 GiB, idle", 2 * GIB, false, false, false, true,
	  "workload=idle " RUNNING_VERIFY },
	{ "memtouch-2G", "running 2 GiB, every page written once", 2 * GIB, false, true, false, true,
	  "workload=memtouch " MEMTOUCH_VERIFY },
	{ "hotset50-2G", "running 2 GiB, 256 MiB hot set at 50 MB/s", 2 * GIB, false, false, false, true,
	  "workload=hotset wss=256M rate=50M " RUNNING_VERIFY },
	{ "hotset200-2G", "running 2 GiB, 256 MiB hot set at 200 MB/s", 2 * GIB, false, false, false, true,
	  "workload=hotset wss=256M rate=200M " RUNNING_VERIFY },
	{ "idle-2G-1g", "idle-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, false, true, true,
	  "workload=idle " RUNNING_VERIFY },
	{ "memtouch-2G-1g", "memtouch-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, true, true, true,
	  "workload=memtouch " MEMTOUCH_VERIFY },
	{ "hotset50-2G-1g", "hotset50-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, false, true, true,
	  "workload=hotset wss=256M rate=50M " RUNNING_VERIFY },
	{ "hotset200-2G-1g", "hotset200-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, false, true, true,
	  "workload=hotset wss=256M rate=200M " RUNNING_VERIFY },
	/* --quick: small enough for a smoke test, still a live migration. */
	{ "hotset-256M", "running 256 MiB, 64 MiB hot set at 50 MB/s", 256 * MIB, false, false, false, false,
	  "workload=hotset wss=64M rate=50M verify=1 verify_every=1 zerocheck=0" },
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

enum peer { P_QEMU = 0, P_LIVEMIG = 1, N_PEERS = 2 };
static const char *const peer_name[N_PEERS] = { "qemu", "livemig" };

struct opts {
	int repeat;
	bool want[N_CASES];
	bool peer_on[N_PEERS];
	const char *json_path;
	const char *plot_path;
	const char *qemu;
	const char *qemu_cpu; /* the -cpu argument, "default" (none) or "auto" until probed */
	bool qemu_cpu_probed; /* qemu_cpu came from qemu_cpu_probe (--qemu-cpu auto) */
	struct lm_qemu_cpu_probe qemu_cpu_probe;
	char livemig[4096];
	const char *guest;
	uint64_t downtime_limit_ms;
	uint64_t cap_bps;    /* bytes/s for the capped cases */
	double timeout_s;    /* per migration */
	double warmup_s;     /* workload time on the source before migrating */
	double verify_timeout_s;
	bool keep;
	bool verbose;
};

/* ------------------------------------------------------------------ */
/* Results                                                             */

struct run {
	bool done;          /* the run was attempted */
	char status[16];    /* completed, failed, timeout, error */
	double total_ms, downtime_ms, setup_ms, dt_meas_ms, wall_ms;
	double bytes, rounds;
	double downtime_us;   /* livemig's own measured pause, if reported */
	bool dt_from_events;  /* dt_meas_ms from STOP/RESUME events (else from downtime-us) */
	char verify[24];    /* ok, FAIL(mem), FAIL(reg), FAIL(mem+reg), none, crash, n/a */
	char err[200];
};

struct summary {
	int n;             /* completed runs */
	double med[5], min[5], max[5]; /* total, downtime, dt_meas, bytes, rounds */
	int verified;      /* runs with verify "ok" */
	int attempted;
};
enum { S_TOTAL, S_DOWNTIME, S_DTMEAS, S_BYTES, S_ROUNDS, N_STAT };

static struct run results[N_CASES][N_PEERS][MAX_REPEAT];

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

static void run_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_error(struct run *r, const char *fmt, ...)
{
	va_list ap;
	if (r->err[0])
		return; /* keep the first reason: later ones are consequences */
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Child processes                                                     */

/*
 * Starts argv with stdin from /dev/null and stdout+stderr into out_path.
 * The child gets SIGKILL if the benchmark dies, so an interrupted run
 * leaves no 16 GiB guest behind.
 */
static pid_t spawn(char *const argv[], const char *out_path)
{
	pid_t parent = getpid();
	pid_t pid = fork();
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

/* Waits up to timeout_s for pid to exit; true if it did (and was reaped). */
static bool wait_exit(pid_t pid, double timeout_s, int *wstatus)
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
		sleep_s(0.02);
	}
}

/* How the last child that alive() found gone ended (a wait status). */
static int gone_status = -1;

static bool alive(pid_t pid)
{
	int st = 0;
	pid_t r = pid > 0 ? waitpid(pid, &st, WNOHANG) : -1;
	if (r == pid)
		gone_status = st;
	return r == 0;
}

/* "exit status N" or "killed by signal S" for gone_status. */
static const char *gone_desc(char *buf, size_t cap)
{
	if (gone_status < 0)
		snprintf(buf, cap, "status unknown");
	else if (WIFSIGNALED(gone_status))
		snprintf(buf, cap, "killed by signal %d", WTERMSIG(gone_status));
	else
		snprintf(buf, cap, "exit status %d", WEXITSTATUS(gone_status));
	return buf;
}

/* Stops a child for good: it had grace_s to exit by itself, then SIGTERM, then SIGKILL. */
static void reap(pid_t *pid, double grace_s)
{
	if (*pid <= 0)
		return;
	if (!wait_exit(*pid, grace_s, NULL)) {
		kill(*pid, SIGTERM);
		if (!wait_exit(*pid, 3.0, NULL)) {
			kill(*pid, SIGKILL);
			waitpid(*pid, NULL, 0);
		}
	}
	*pid = -1;
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

static void remove_tree(const char *dir)
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

/* The largest t of the guest's "progress t=..." lines, or -1. */
static double last_progress(const char *text)
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

/*
 * The destination guest's verdict, from its console output. done is set
 * once a check that started on the destination has finished, or the guest
 * crashed.
 */
static void classify_verify(const char *text, char *out, size_t outlen, bool *done)
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
/* QMP: both peers through livemig's one client (src/cli/qmp_client.h)  */

struct qmp {
	struct lm_qmp *c;              /* NULL until connected */
	pid_t pid;                     /* the peer's process, while connecting */
	double stop_ts, resume_ts;     /* first STOP, last RESUME (host wall clock), 0 if none */
	struct json_object *mig_event; /* final stats from a MIGRATION event (livemig), or NULL */
	bool verbose;
	const char *tag;
};

static void qmp_init(struct qmp *q, const char *tag, bool verbose)
{
	memset(q, 0, sizeof(*q));
	q->tag = tag;
	q->verbose = verbose;
}

static void qmp_close(struct qmp *q)
{
	lm_qmp_free(q->c);
	q->c = NULL;
	if (q->mig_event)
		json_object_put(q->mig_event);
	q->mig_event = NULL;
}

static void qmp_event(struct lm_qmp *c, const char *name, struct json_object *o, void *arg)
{
	struct qmp *q = arg;
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
	const struct qmp *q = arg;
	return alive(q->pid) ? 0 : -ECHILD;
}

/* Connects to path, retrying while the peer starts up (and while pid lives),
 * and reads the greeting. On failure *msg says why. */
static int qmp_connect(struct qmp *q, const char *path, pid_t pid, double timeout_s, char *msg, size_t msglen)
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

/* Records the events that arrive within timeout_s (until the peer closes). */
static void qmp_drain_for(struct qmp *q, double timeout_s)
{
	if (q->c)
		lm_qmp_poll(q->c, timeout_s);
}

/* Records the events that have already arrived. */
static void qmp_drain(struct qmp *q)
{
	qmp_drain_for(q, 0);
}

/*
 * Sends {"execute":cmd,"arguments":args} (args is consumed, may be NULL) and
 * returns the "return" member (a new reference), or NULL with *msg set.
 */
static struct json_object *qmp_exec(struct qmp *q, const char *cmd, struct json_object *args, double timeout_s,
				    char *msg, size_t msglen)
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

static double jnum(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v))
		return NAN;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return NAN;
	return json_object_get_double(v);
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* ------------------------------------------------------------------ */
/* One migration                                                        */

struct argvb {
	char *v[64];
	int n;
	char store[8192];
	size_t used;
};

static void push(struct argvb *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void push(struct argvb *a, const char *fmt, ...)
{
	va_list ap;
	size_t room = sizeof(a->store) - a->used;
	va_start(ap, fmt);
	int n = vsnprintf(a->store + a->used, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room || a->n >= 62)
		return; /* cannot happen with the arguments built here */
	a->v[a->n++] = a->store + a->used;
	a->v[a->n] = NULL;
	a->used += (size_t)n + 1;
}

static int free_port(void)
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

static void mem_arg(char *buf, size_t len, uint64_t bytes)
{
	if (bytes % GIB == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(bytes / GIB));
	else
		snprintf(buf, len, "%lluM", (unsigned long long)(bytes / MIB));
}

static void qemu_argv(struct argvb *a, const struct opts *o, const struct vcase *c, const char *dir, bool dst,
		      int port)
{
	char mem[32];
	mem_arg(mem, sizeof(mem), c->mem);
	push(a, "%s", o->qemu);
	push(a, "-enable-kvm");
	if (strcmp(o->qemu_cpu, LM_QEMU_CPU_DEFAULT)) {
		push(a, "-cpu");
		push(a, "%s", o->qemu_cpu);
	}
	push(a, "-m");
	push(a, "%s", mem);
	/* No default NIC, VGA (16 MiB of video RAM to migrate), floppy or CD:
	 * the QEMU guest has what livemig's has, RAM and a serial port. */
	push(a, "-nodefaults");
	push(a, "-display");
	push(a, "none");
	push(a, "-no-reboot");
	push(a, "-device");
	push(a, "isa-debug-exit,iobase=0xf4,iosize=0x04");
	push(a, "-kernel");
	push(a, "%s", o->guest);
	push(a, "-append");
	push(a, "%s", c->append);
	push(a, "-serial");
	push(a, "file:%s/%s.console", dir, dst ? "dst" : "src");
	push(a, "-qmp");
	push(a, "unix:%s/%s.sock,server=on,wait=off", dir, dst ? "dst" : "src");
	if (dst) {
		push(a, "-incoming");
		push(a, "tcp:127.0.0.1:%d", port);
	} else if (c->paused) {
		push(a, "-S");
	}
}

static void livemig_argv(struct argvb *a, const struct opts *o, const struct vcase *c, const char *dir, bool dst)
{
	char mem[32];
	mem_arg(mem, sizeof(mem), c->mem);
	push(a, "%s", o->livemig);
	if (dst) {
		push(a, "incoming");
		push(a, "--listen");
		push(a, "tcp:127.0.0.1:0");
		push(a, "--once");
	} else {
		push(a, "run");
		push(a, "%s", o->guest);
		push(a, "--mem");
		push(a, "%s", mem);
		push(a, "--append");
		push(a, "%s", c->append);
		if (c->paused)
			push(a, "--paused");
	}
	push(a, "--console");
	push(a, "%s/%s.console", dir, dst ? "dst" : "src");
	push(a, "--control");
	push(a, "%s/%s.sock", dir, dst ? "dst" : "src");
}

/* `livemig incoming` says where it listens on stderr. */
static int livemig_port(const char *log_path, pid_t pid, double timeout_s)
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
		if (!alive(pid))
			return -ECHILD;
		if (bench_now() >= end)
			return -ETIMEDOUT;
		sleep_s(0.02);
	}
}

struct side {
	pid_t pid;
	struct qmp q;
	char console[4200], sock[4200], log[4200];
};

/* The tail of a log file, for an error message. */
static void log_tail(const char *path, char *out, size_t outlen)
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

static int connect_side(struct side *s, enum peer p, bool dst, double timeout_s, struct run *r);

static int start_side(struct side *s, const struct opts *o, const struct vcase *c, enum peer p, const char *dir,
		      bool dst, int port, struct run *r)
{
	struct argvb a = { .n = 0 };
	snprintf(s->console, sizeof(s->console), "%s/%s.console", dir, dst ? "dst" : "src");
	snprintf(s->sock, sizeof(s->sock), "%s/%s.sock", dir, dst ? "dst" : "src");
	snprintf(s->log, sizeof(s->log), "%s/%s.log", dir, dst ? "dst" : "src");
	if (p == P_QEMU)
		qemu_argv(&a, o, c, dir, dst, port);
	else
		livemig_argv(&a, o, c, dir, dst);
	if (o->verbose) {
		fprintf(stderr, "  %s %s:", peer_name[p], dst ? "dst" : "src");
		for (int i = 0; i < a.n; i++)
			fprintf(stderr, " %s", a.v[i]);
		fprintf(stderr, "\n");
	}
	s->pid = spawn(a.v, s->log);
	if (s->pid < 0) {
		run_error(r, "fork: %s", strerror(errno));
		return -errno;
	}
	/* `livemig incoming` serves its control socket only once the VM has
	 * arrived: the harness connects after the migration (connect_side). */
	if (p == P_LIVEMIG && dst)
		return 0;
	return connect_side(s, p, dst, 20.0, r);
}

static int connect_side(struct side *s, enum peer p, bool dst, double timeout_s, struct run *r)
{
	char msg[200];
	int err = qmp_connect(&s->q, s->sock, s->pid, timeout_s, msg, sizeof(msg));
	if (err) {
		char tail[160];
		log_tail(s->log, tail, sizeof(tail));
		char how[256];
		if (err == -ECHILD)
			snprintf(how, sizeof(how), "the process ended (%s)", gone_desc((char[40]){0}, 40));
		else
			snprintf(how, sizeof(how), "%s", msg);
		run_error(r, "%s %s did not start: %s [%s]", peer_name[p], dst ? "destination" : "source", how,
			  tail);
		return err;
	}
	/* QEMU leaves capabilities negotiation mode; livemig accepts it too. */
	struct json_object *ret = qmp_exec(&s->q, "qmp_capabilities", NULL, 10.0, msg, sizeof(msg));
	if (!ret) {
		run_error(r, "%s %s: %s", peer_name[p], dst ? "destination" : "source", msg);
		return -EPROTO;
	}
	json_object_put(ret);
	return 0;
}

/* Lets the source's workload run for warmup_s (guest time), and memtouch finish. */
static int warm_up(const struct side *src, const struct opts *o, const struct vcase *c, struct run *r)
{
	if (c->paused)
		return 0;
	double end = bench_now() + 90.0;
	for (;;) {
		char *t = lm_bench_slurp(src->console);
		bool ready = t && last_progress(t) >= o->warmup_s && (!c->memtouch || strstr(t, "memtouch done"));
		bool crashed = t && strstr(t, "livemig-guest: exception");
		free(t);
		if (ready)
			return 0;
		if (crashed) {
			run_error(r, "source guest crashed before migrating");
			return -EIO;
		}
		if (!alive(src->pid)) {
			run_error(r, "source exited before migrating");
			return -ECHILD;
		}
		if (bench_now() >= end) {
			run_error(r, "source guest did not reach t=%.1f s", o->warmup_s);
			return -ETIMEDOUT;
		}
		sleep_s(0.1);
	}
}

static void take_stats(struct run *r, struct json_object *st)
{
	struct json_object *ram = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	r->total_ms = jnum(st, "total-time");
	r->downtime_ms = jnum(st, "downtime");
	r->setup_ms = jnum(st, "setup-time");
	r->bytes = jnum(ram, "transferred");
	r->rounds = jnum(ram, "dirty-sync-count");
	r->downtime_us = jnum(st, "downtime-us");
}

/*
 * Runs the migration: set the parameters, migrate, poll until a final
 * status. Returns 0 when it completed.
 */
static int migrate(struct side *src, const struct opts *o, const struct vcase *c, enum peer p, int port,
		   struct run *r)
{
	char msg[200];
	struct json_object *params = json_object_new_object();
	json_object_object_add(params, "downtime-limit", json_object_new_int64((int64_t)o->downtime_limit_ms));
	/* QEMU's default cap is 32 MiB/s, so "unlimited" must be said: as a
	 * rate no loopback reaches. livemig is unlimited unless told. */
	if (c->capped)
		json_object_object_add(params, "max-bandwidth", json_object_new_int64((int64_t)o->cap_bps));
	else if (p == P_QEMU)
		json_object_object_add(params, "max-bandwidth", json_object_new_int64(INT64_C(1) << 40));
	struct json_object *ret = qmp_exec(&src->q, "migrate-set-parameters", params, 10.0, msg, sizeof(msg));
	if (!ret) {
		run_error(r, "%s", msg);
		snprintf(r->status, sizeof(r->status), "error");
		return -EPROTO;
	}
	json_object_put(ret);

	struct json_object *args = json_object_new_object();
	char uri[64];
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", port);
	json_object_object_add(args, "uri", json_object_new_string(uri));
	double t0 = bench_now();
	ret = qmp_exec(&src->q, "migrate", args, 10.0, msg, sizeof(msg));
	if (!ret) {
		run_error(r, "%s", msg);
		snprintf(r->status, sizeof(r->status), "error");
		return -EPROTO;
	}
	json_object_put(ret);

	double deadline = t0 + o->timeout_s;
	for (;;) {
		struct json_object *st = NULL;
		const char *status = NULL;
		if (!src->q.mig_event) {
			st = qmp_exec(&src->q, "query-migrate", NULL, 10.0, msg, sizeof(msg));
			status = jstr(st, "status");
			if (!st) {
				/* The source may have exited after its last word: read
				 * what it sent before it closed. */
				qmp_drain_for(&src->q, 2.0);
			}
		}
		/* livemig's source sends the final stats as an event and exits,
		 * which may beat the answer to a query. */
		if (src->q.mig_event && (!status || (strcmp(status, "completed") && strcmp(status, "failed")))) {
			if (st)
				json_object_put(st);
			st = json_object_get(src->q.mig_event);
			status = jstr(st, "status");
		}
		if (!st) {
			r->wall_ms = (bench_now() - t0) * 1e3;
			run_error(r, "%s", msg);
			snprintf(r->status, sizeof(r->status), "error");
			return -EPROTO;
		}
		if (status && (!strcmp(status, "completed") || !strcmp(status, "failed") ||
			       !strcmp(status, "cancelled"))) {
			r->wall_ms = (bench_now() - t0) * 1e3;
			take_stats(r, st);
			snprintf(r->status, sizeof(r->status), "%s", status);
			if (strcmp(status, "completed")) {
				const char *desc = jstr(st, "error-desc");
				run_error(r, "migration %s%s%s", status, desc ? ": " : "", desc ? desc : "");
			}
			json_object_put(st);
			return strcmp(status, "completed") ? -EIO : 0;
		}
		json_object_put(st);
		if (bench_now() >= deadline) {
			r->wall_ms = (bench_now() - t0) * 1e3;
			snprintf(r->status, sizeof(r->status), "timeout");
			run_error(r, "not completed after %.0f s (no convergence?)", o->timeout_s);
			ret = qmp_exec(&src->q, p == P_QEMU ? "migrate_cancel" : "migrate-cancel", NULL, 10.0, msg,
				       sizeof(msg));
			if (ret)
				json_object_put(ret);
			return -ETIMEDOUT;
		}
		sleep_s(0.025);
	}
}

/*
 * After completion: the destination must be running (a paused source's
 * guest is resumed here, as QEMU leaves it paused), and a check that
 * started on the destination must have passed.
 */
static void after_migration(struct side *src, struct side *dst, const struct opts *o, const struct vcase *c,
			    enum peer p, struct run *r)
{
	char msg[200];
	if (!dst->q.c && connect_side(dst, p, true, 15.0, r)) {
		snprintf(r->verify, sizeof(r->verify), "n/a");
		return;
	}
	double end = bench_now() + 15.0;
	bool cont_sent = false;
	for (;;) {
		struct json_object *st = qmp_exec(&dst->q, "query-status", NULL, 10.0, msg, sizeof(msg));
		const char *s = jstr(st, "status");
		bool running = s && !strcmp(s, "running");
		bool paused = s && (!strcmp(s, "paused") || !strcmp(s, "prelaunch"));
		if (st)
			json_object_put(st);
		if (!s) {
			run_error(r, "destination: %s", msg);
			snprintf(r->verify, sizeof(r->verify), "n/a");
			return;
		}
		if (running)
			break;
		if (paused && !cont_sent) {
			struct json_object *ret = qmp_exec(&dst->q, "cont", NULL, 10.0, msg, sizeof(msg));
			if (ret)
				json_object_put(ret);
			cont_sent = true;
		}
		if (bench_now() >= end) {
			run_error(r, "destination not running (status %s)", s);
			snprintf(r->verify, sizeof(r->verify), "n/a");
			return;
		}
		sleep_s(0.05);
	}
	qmp_drain(&src->q);
	qmp_drain(&dst->q);
	/* A paused guest never stopped: its pause is not a downtime. */
	if (!c->paused && src->q.stop_ts > 0 && dst->q.resume_ts > 0) {
		r->dt_meas_ms = (dst->q.resume_ts - src->q.stop_ts) * 1e3;
		r->dt_from_events = true;
	} else if (!c->paused && !isnan(r->downtime_us)) {
		/* A source that sends no STOP event when the migration pauses
		 * the guest: fall back to the peer's own measured pause. */
		r->dt_meas_ms = r->downtime_us / 1e3;
	}

	end = bench_now() + o->verify_timeout_s;
	for (;;) {
		char *t = lm_bench_slurp(dst->console);
		bool done = false;
		classify_verify(t ? t : "", r->verify, sizeof(r->verify), &done);
		free(t);
		if (done || bench_now() >= end)
			break;
		if (!alive(dst->pid)) {
			snprintf(r->verify, sizeof(r->verify), "crash");
			run_error(r, "destination exited");
			break;
		}
		sleep_s(0.1);
	}
}

/* Asks a side to quit, then makes sure it is gone. */
static void stop_side(struct side *s, bool ask)
{
	if (s->pid > 0 && ask && s->q.c && alive(s->pid)) {
		char msg[200];
		struct json_object *ret = qmp_exec(&s->q, "quit", NULL, 5.0, msg, sizeof(msg));
		if (ret)
			json_object_put(ret);
	}
	reap(&s->pid, ask ? 5.0 : 0.0);
	qmp_close(&s->q);
}

static void run_one(const struct opts *o, const struct vcase *c, enum peer p, struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->done = true;
	r->total_ms = r->downtime_ms = r->setup_ms = r->dt_meas_ms = r->wall_ms = NAN;
	r->bytes = r->rounds = r->downtime_us = NAN;
	snprintf(r->status, sizeof(r->status), "error");
	snprintf(r->verify, sizeof(r->verify), "n/a");

	struct side src, dst;
	memset(&src, 0, sizeof(src));
	memset(&dst, 0, sizeof(dst));
	src.pid = dst.pid = -1;
	qmp_init(&src.q, "src", o->verbose);
	qmp_init(&dst.q, "dst", o->verbose);

	char dir[] = "/tmp/livemig-vsqemu-XXXXXX";
	if (!mkdtemp(dir)) {
		run_error(r, "mkdtemp: %s", strerror(errno));
		return;
	}
	int port = 0;
	if (p == P_QEMU) {
		port = free_port();
		if (port < 0) {
			run_error(r, "no free port: %s", strerror(-port));
			goto out;
		}
	}
	if (start_side(&dst, o, c, p, dir, true, port, r))
		goto out;
	if (p == P_LIVEMIG) {
		port = livemig_port(dst.log, dst.pid, 10.0);
		if (port < 0) {
			run_error(r, "livemig incoming: no listening port: %s", strerror(-port));
			goto out;
		}
	}
	if (start_side(&src, o, c, p, dir, false, port, r))
		goto out;
	if (warm_up(&src, o, c, r))
		goto out;
	if (migrate(&src, o, c, p, port, r))
		goto out;
	after_migration(&src, &dst, o, c, p, r);
out:
	if (!strcmp(r->verify, "n/a") && !strcmp(r->status, "completed"))
		run_error(r, "destination not checked");
	if (o->verbose && r->err[0])
		fprintf(stderr, "  error: %s\n", r->err);
	/* livemig's source exits on its own after a completed migration. */
	stop_side(&src, !(p == P_LIVEMIG && !strcmp(r->status, "completed")) || alive(src.pid));
	stop_side(&dst, true);
	if (o->keep)
		fprintf(stderr, "  kept %s\n", dir);
	else
		remove_tree(dir);
}

/* ------------------------------------------------------------------ */
/* Statistics and output                                                */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double run_stat(const struct run *r, int k)
{
	switch (k) {
	case S_TOTAL: return r->total_ms;
	case S_DOWNTIME: return r->downtime_ms;
	case S_DTMEAS: return r->dt_meas_ms;
	case S_BYTES: return r->bytes;
	default: return r->rounds;
	}
}

static void summarize(const struct run *runs, int n, struct summary *s)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < n; i++) {
		if (!runs[i].done)
			continue;
		s->attempted++;
		if (!strcmp(runs[i].status, "completed"))
			s->n++;
		if (!strcmp(runs[i].verify, "ok"))
			s->verified++;
	}
	for (int k = 0; k < N_STAT; k++) {
		double v[MAX_REPEAT];
		int m = 0;
		for (int i = 0; i < n; i++)
			if (runs[i].done && !strcmp(runs[i].status, "completed") && !isnan(run_stat(&runs[i], k)))
				v[m++] = run_stat(&runs[i], k);
		if (!m) {
			s->med[k] = s->min[k] = s->max[k] = NAN;
			continue;
		}
		qsort(v, (size_t)m, sizeof(double), cmp_double);
		s->med[k] = m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
		s->min[k] = v[0];
		s->max[k] = v[m - 1];
	}
}

/* "median (min-max)" with a unit scale, or "-". */
static void cell(char *out, size_t len, const struct summary *s, int k, double scale, int prec)
{
	if (isnan(s->med[k])) {
		snprintf(out, len, "-");
		return;
	}
	if (s->min[k] == s->max[k])
		snprintf(out, len, "%.*f", prec, s->med[k] / scale);
	else
		snprintf(out, len, "%.*f (%.*f-%.*f)", prec, s->med[k] / scale, prec, s->min[k] / scale, prec,
			 s->max[k] / scale);
}

/* A number scaled and printed, or "-" when there is none. */
static const char *fmt(char *out, size_t len, double v, double scale, int prec)
{
	if (isnan(v))
		snprintf(out, len, "-");
	else
		snprintf(out, len, "%.*f", prec, v / scale);
	return out;
}

static double ratio(const struct summary *a, const struct summary *b, int k)
{
	if (isnan(a->med[k]) || isnan(b->med[k]) || b->med[k] <= 0)
		return NAN;
	return a->med[k] / b->med[k];
}

static void machine_info(char *cpu, size_t cpulen, long *ncpu, double *mem_gib)
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
	*mem_gib = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / (double)GIB;
}

static void qemu_version(const char *qemu, char *out, size_t len)
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

static void print_table(const struct opts *o, FILE *f)
{
	fprintf(f, "\n%-16s %-8s %-22s %-18s %-18s %-20s %-9s %s\n", "case", "peer", "total ms", "downtime ms",
		"downtime meas ms", "wire MB", "rounds", "verify");
	for (size_t ci = 0; ci < N_CASES; ci++) {
		if (!o->want[ci])
			continue;
		struct summary s[N_PEERS];
		for (int p = 0; p < N_PEERS; p++)
			summarize(results[ci][p], o->repeat, &s[p]);
		bool first = true;
		for (int p = 0; p < N_PEERS; p++) {
			if (!o->peer_on[p])
				continue;
			char t[48], d[48], m[48], b[48], rd[48], v[48];
			cell(t, sizeof(t), &s[p], S_TOTAL, 1, 0);
			cell(d, sizeof(d), &s[p], S_DOWNTIME, 1, 0);
			cell(m, sizeof(m), &s[p], S_DTMEAS, 1, 0);
			cell(b, sizeof(b), &s[p], S_BYTES, 1e6, 1);
			cell(rd, sizeof(rd), &s[p], S_ROUNDS, 1, 0);
			/* Verification: "3/3 ok", or the first bad verdict. */
			snprintf(v, sizeof(v), "%d/%d ok", s[p].verified, s[p].attempted);
			for (int i = 0; i < o->repeat; i++) {
				const struct run *r = &results[ci][p][i];
				if (r->done && strcmp(r->verify, "ok")) {
					snprintf(v, sizeof(v), "%d/%d ok, %s", s[p].verified, s[p].attempted,
						 strcmp(r->status, "completed") ? r->status : r->verify);
					break;
				}
			}
			fprintf(f, "%-16s %-8s %-22s %-18s %-18s %-20s %-9s %s\n", first ? cases[ci].name : "",
				peer_name[p], t, d, m, b, rd, v);
			first = false;
		}
		if (o->peer_on[P_QEMU] && o->peer_on[P_LIVEMIG]) {
			double rt = ratio(&s[P_LIVEMIG], &s[P_QEMU], S_TOTAL);
			double rb = ratio(&s[P_LIVEMIG], &s[P_QEMU], S_BYTES);
			double rd = ratio(&s[P_LIVEMIG], &s[P_QEMU], S_DOWNTIME);
			char a[32] = "-", b[32] = "-", d[32] = "-";
			if (!isnan(rt))
				snprintf(a, sizeof(a), "%.3f", rt);
			if (!isnan(rd))
				snprintf(d, sizeof(d), "%.3f", rd);
			if (!isnan(rb))
				snprintf(b, sizeof(b), "%.4f", rb);
			fprintf(f, "%-16s %-8s %-22s %-18s %-18s %-20s\n", "", "ratio", a, d, "", b);
		}
	}
	/* Why runs failed, once each. */
	for (size_t ci = 0; ci < N_CASES; ci++)
		for (int p = 0; p < N_PEERS; p++)
			for (int i = 0; i < o->repeat; i++) {
				const struct run *r = &results[ci][p][i];
				if (r->done && r->err[0])
					fprintf(f, "note: %s %s #%d: %s\n", cases[ci].name, peer_name[p], i + 1, r->err);
			}
}

static struct json_object *jd(double v)
{
	return isnan(v) ? NULL : json_object_new_double(v);
}

/* Where the -cpu model came from, for the header and the JSON. */
static const char *qemu_cpu_source(const struct opts *o)
{
	if (o->qemu_cpu_probed)
		return "probe";
	return strcmp(o->qemu_cpu, "auto") ? "--qemu-cpu" : "not probed: QEMU not run";
}

static int write_json(const struct opts *o, const char *path, const char *date, const char *qver)
{
	char cpu[256];
	long ncpu;
	double mem;
	machine_info(cpu, sizeof(cpu), &ncpu, &mem);
	struct json_object *root = json_object_new_object();
	json_object_object_add(root, "benchmark", json_object_new_string("vs-qemu"));
	json_object_object_add(root, "date", json_object_new_string(date));
	struct json_object *m = json_object_new_object();
	json_object_object_add(m, "nproc", json_object_new_int64(ncpu));
	json_object_object_add(m, "cpu", json_object_new_string(cpu));
	json_object_object_add(m, "mem-gib", json_object_new_double(mem));
	json_object_object_add(root, "machine", m);
	json_object_object_add(root, "qemu-version", json_object_new_string(qver));
	struct json_object *par = json_object_new_object();
	json_object_object_add(par, "repeat", json_object_new_int(o->repeat));
	json_object_object_add(par, "downtime-limit", json_object_new_int64((int64_t)o->downtime_limit_ms));
	json_object_object_add(par, "capped-max-bandwidth", json_object_new_int64((int64_t)o->cap_bps));
	json_object_object_add(par, "qemu-cpu", json_object_new_string(o->qemu_cpu));
	json_object_object_add(par, "qemu-cpu-chosen-by", json_object_new_string(qemu_cpu_source(o)));
	if (o->qemu_cpu_probed) {
		struct json_object *tries = json_object_new_array();
		for (int i = 0; i < o->qemu_cpu_probe.n; i++) {
			const struct lm_qemu_cpu_try *t = &o->qemu_cpu_probe.tries[i];
			struct json_object *jt = json_object_new_object();
			json_object_object_add(jt, "model", json_object_new_string(t->model));
			json_object_object_add(jt, "boots", json_object_new_boolean(t->err == 0));
			json_object_object_add(jt, "outcome", json_object_new_string(t->outcome));
			json_object_object_add(jt, "messages", json_object_new_string(t->msg));
			json_object_array_add(tries, jt);
		}
		json_object_object_add(par, "qemu-cpu-probe", tries);
	}
	json_object_object_add(par, "warmup-s", json_object_new_double(o->warmup_s));
	json_object_object_add(par, "timeout-s", json_object_new_double(o->timeout_s));
	json_object_object_add(root, "parameters", par);
	struct json_object *arr = json_object_new_array();
	for (size_t ci = 0; ci < N_CASES; ci++) {
		if (!o->want[ci])
			continue;
		const struct vcase *c = &cases[ci];
		struct json_object *jc = json_object_new_object();
		json_object_object_add(jc, "name", json_object_new_string(c->name));
		json_object_object_add(jc, "description", json_object_new_string(c->desc));
		json_object_object_add(jc, "mem", json_object_new_int64((int64_t)c->mem));
		json_object_object_add(jc, "paused", json_object_new_boolean(c->paused));
		json_object_object_add(jc, "max-bandwidth",
				       c->capped ? json_object_new_int64((int64_t)o->cap_bps) : NULL);
		json_object_object_add(jc, "append", json_object_new_string(c->append));
		struct summary s[N_PEERS];
		struct json_object *peers = json_object_new_object();
		for (int p = 0; p < N_PEERS; p++) {
			summarize(results[ci][p], o->repeat, &s[p]);
			if (!o->peer_on[p])
				continue;
			struct json_object *jp = json_object_new_object();
			struct json_object *runs = json_object_new_array();
			for (int i = 0; i < o->repeat; i++) {
				const struct run *r = &results[ci][p][i];
				if (!r->done)
					continue;
				struct json_object *jr = json_object_new_object();
				json_object_object_add(jr, "status", json_object_new_string(r->status));
				json_object_object_add(jr, "total-time", jd(r->total_ms));
				json_object_object_add(jr, "downtime", jd(r->downtime_ms));
				json_object_object_add(jr, "downtime-measured", jd(r->dt_meas_ms));
				json_object_object_add(jr, "downtime-measured-by",
						       isnan(r->dt_meas_ms) ? NULL
						       : json_object_new_string(r->dt_from_events ? "events"
										    : "downtime-us"));
				json_object_object_add(jr, "setup-time", jd(r->setup_ms));
				json_object_object_add(jr, "transferred", jd(r->bytes));
				json_object_object_add(jr, "dirty-sync-count", jd(r->rounds));
				json_object_object_add(jr, "wall-ms", jd(r->wall_ms));
				json_object_object_add(jr, "verify", json_object_new_string(r->verify));
				if (r->err[0])
					json_object_object_add(jr, "error", json_object_new_string(r->err));
				json_object_array_add(runs, jr);
			}
			json_object_object_add(jp, "runs", runs);
			static const char *const key[N_STAT] = { "total-time", "downtime", "downtime-measured",
								 "transferred", "dirty-sync-count" };
			for (int k = 0; k < N_STAT; k++) {
				struct json_object *st = json_object_new_object();
				json_object_object_add(st, "median", jd(s[p].med[k]));
				json_object_object_add(st, "min", jd(s[p].min[k]));
				json_object_object_add(st, "max", jd(s[p].max[k]));
				json_object_object_add(jp, key[k], st);
			}
			json_object_object_add(jp, "completed", json_object_new_int(s[p].n));
			json_object_object_add(jp, "verified", json_object_new_int(s[p].verified));
			json_object_object_add(peers, peer_name[p], jp);
		}
		json_object_object_add(jc, "peers", peers);
		json_object_object_add(jc, "ratio-time", jd(ratio(&s[P_LIVEMIG], &s[P_QEMU], S_TOTAL)));
		json_object_object_add(jc, "ratio-downtime", jd(ratio(&s[P_LIVEMIG], &s[P_QEMU], S_DOWNTIME)));
		json_object_object_add(jc, "ratio-bytes", jd(ratio(&s[P_LIVEMIG], &s[P_QEMU], S_BYTES)));
		json_object_array_add(arr, jc);
	}
	json_object_object_add(root, "cases", arr);
	int rc = json_object_to_file_ext(path, root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	json_object_put(root);
	return rc ? -EIO : 0;
}

/*
 * The ratios per case as a bar chart: one pair of bars (time, bytes) per
 * case on a log scale, with the line at 1 where livemig equals QEMU. The
 * gnuplot program is written here rather than shipped as a file so that
 * the command works from any directory.
 */
static int write_plot(const struct opts *o, const char *path, const char *date, const char *qver)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "gnuplot 2>&1");
	FILE *g = popen(cmd, "w");
	if (!g)
		return -errno;
	fprintf(g, "set terminal pngcairo size 1100,560 font 'sans,10'\n");
	fprintf(g, "set output '%s'\n", path);
	fprintf(g, "set title 'livemig / QEMU %s, median of %d runs (%s); below 1: livemig better'\n", qver,
		o->repeat, date);
	fprintf(g, "set style data histograms\nset style histogram clustered gap 1\n");
	fprintf(g, "set style fill solid 0.8 border -1\nset boxwidth 0.9\n");
	fprintf(g, "set logscale y\nset yrange [0.001:100]\nset grid ytics\n");
	fprintf(g, "set ylabel 'ratio livemig/QEMU (log scale)'\nset xtics rotate by -30\n");
	fprintf(g, "set key outside top center horizontal\n");
	fprintf(g, "$d << EOD\n");
	int rows = 0;
	for (size_t ci = 0; ci < N_CASES; ci++) {
		if (!o->want[ci])
			continue;
		struct summary s[N_PEERS];
		for (int p = 0; p < N_PEERS; p++)
			summarize(results[ci][p], o->repeat, &s[p]);
		double rt = ratio(&s[P_LIVEMIG], &s[P_QEMU], S_TOTAL);
		double rd = ratio(&s[P_LIVEMIG], &s[P_QEMU], S_DOWNTIME);
		double rb = ratio(&s[P_LIVEMIG], &s[P_QEMU], S_BYTES);
		fprintf(g, "%s", cases[ci].name);
		/* A zero downtime cannot sit on a log scale: clamp to the floor. */
		double v[3] = { rt, rd, rb };
		for (int k = 0; k < 3; k++) {
			if (isnan(v[k]))
				fprintf(g, " NaN");
			else
				fprintf(g, " %g", v[k] < 0.001 ? 0.001 : v[k]);
		}
		fprintf(g, "\n");
		rows++;
	}
	fprintf(g, "EOD\n");
	fprintf(g, "plot $d using 2:xtic(1) title 'total time', '' using 3 title 'downtime', "
		   "'' using 4 title 'bytes on the wire', 1 with lines lw 2 lc rgb 'black' notitle\n");
	int st = pclose(g);
	if (!rows)
		return -ENODATA;
	return st == 0 ? 0 : -EIO;
}

/* ------------------------------------------------------------------ */
/* Command line                                                         */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig bench vs-qemu [options]\n"
		"\n"
		"Migrates the same guest image under QEMU and under livemig over TCP loopback,\n"
		"with the same downtime limit and bandwidth cap, alternating the peers, and\n"
		"reports per case the median and range of total time, downtime (as each peer\n"
		"reports it, and as measured from its STOP/RESUME events), bytes on the wire,\n"
		"rounds, the ratios livemig/QEMU, and the destination guests' self-check.\n"
		"\n"
		"  --repeat N           runs per case and peer (default 3, at most %d)\n"
		"  --cases A,B,...      cases to run (default: all but hotset-256M); --list shows them\n"
		"  --quick              one small case (hotset-256M), one run per peer\n"
		"  --peers qemu,livemig which peers to run (default both)\n"
		"  --json FILE          write every run and the summaries as JSON\n"
		"  --plot FILE.png      bar chart of the ratios per case (gnuplot)\n"
		"  --downtime-limit MS  downtime limit for both peers (default 300)\n"
		"  --cap RATE           bandwidth of the capped cases (default 1Gbit)\n"
		"  --timeout S          give up a migration after S seconds (default 60)\n"
		"  --warmup S           guest workload time before migrating (default 2)\n"
		"  --verify-timeout S   wait for the destination's check (default 20)\n"
		"  --guest ELF          guest image (default $GUEST_ELF or guest/guest.elf)\n"
		"  --qemu PATH          QEMU binary (default $QEMU or qemu-system-x86_64)\n"
		"  --qemu-cpu MODEL     QEMU -cpu; 'default': no -cpu; 'auto' (the default): the\n"
		"                       first of host, host,-arch-capabilities, max, default\n"
		"                       that boots the guest here (livemig bench qemu-cpu)\n"
		"  --livemig PATH       livemig binary (default: this one)\n"
		"  --keep               keep each run's directory (consoles, logs) under /tmp\n"
		"  -v, --verbose        show commands, QMP traffic and progress\n"
		"\n"
		"Exit status: 0 when every run of the harness went through and every livemig run\n"
		"completed and passed its check; 1 otherwise (QEMU's results are data: a QEMU\n"
		"migration that does not converge or a QEMU guest that fails its check is\n"
		"reported, not an error); 2 for bad usage.\n",
		MAX_REPEAT);
}

static int parse_cases(struct opts *o, const char *list)
{
	char *dup = strdup(list);
	if (!dup)
		return -ENOMEM;
	memset(o->want, 0, sizeof(o->want));
	int rc = 0;
	for (char *save = NULL, *w = strtok_r(dup, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		bool found = false;
		for (size_t i = 0; i < N_CASES; i++)
			if (!strcmp(w, cases[i].name) || !strcmp(w, "all") ||
			    (!strcmp(w, "paused") && cases[i].paused && cases[i].in_default) ||
			    (!strcmp(w, "capped") && cases[i].capped)) {
				if (strcmp(w, "all") || cases[i].in_default)
					o->want[i] = true;
				found = true;
			}
		if (!found) {
			fprintf(stderr, "livemig bench vs-qemu: unknown case '%s' (--list)\n", w);
			rc = -EINVAL;
		}
	}
	free(dup);
	return rc;
}

static bool in_path(const char *name)
{
	if (strchr(name, '/'))
		return access(name, X_OK) == 0;
	const char *path = getenv("PATH");
	char p[4200];
	char *dup = strdup(path ? path : "/usr/bin:/bin");
	bool found = false;
	for (char *save = NULL, *d = strtok_r(dup, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		snprintf(p, sizeof(p), "%s/%s", d, name);
		found = access(p, X_OK) == 0;
	}
	free(dup);
	return found;
}

static int parse_double(const char *s, double *out, double min)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < min)
		return -EINVAL;
	*out = v;
	return 0;
}

int lm_bench_vs_qemu(int argc, char **argv)
{
	struct opts o = {
		.repeat = 3,
		.peer_on = { true, true },
		.qemu_cpu = "auto",
		.downtime_limit_ms = 300,
		.cap_bps = 125000000,
		.timeout_s = 60,
		.warmup_s = 2,
		.verify_timeout_s = 20,
	};
	for (size_t i = 0; i < N_CASES; i++)
		o.want[i] = cases[i].in_default;
	o.qemu = getenv("QEMU") && *getenv("QEMU") ? getenv("QEMU") : "qemu-system-x86_64";
	o.guest = getenv("GUEST_ELF") && *getenv("GUEST_ELF") ? getenv("GUEST_ELF") : "guest/guest.elf";
	lm_bench_livemig(o.livemig, sizeof(o.livemig));
	bool quick = false, repeat_set = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool bad = false;
#define NEEDS_VALUE()                                                                        \
	do {                                                                                 \
		if (!v) {                                                                    \
			fprintf(stderr, "livemig bench vs-qemu: %s needs a value\n", a);     \
			return 2;                                                            \
		}                                                                            \
		i++;                                                                         \
	} while (0)
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--list")) {
			for (size_t k = 0; k < N_CASES; k++)
				printf("%-16s %s%s\n    append: %s\n", cases[k].name, cases[k].desc,
				       cases[k].in_default ? "" : " (not in the default set)", cases[k].append);
			return 0;
		} else if (!strcmp(a, "--repeat")) {
			NEEDS_VALUE();
			o.repeat = atoi(v);
			bad = o.repeat < 1 || o.repeat > MAX_REPEAT;
			repeat_set = true;
		} else if (!strcmp(a, "--cases")) {
			NEEDS_VALUE();
			if (parse_cases(&o, v))
				return 2;
		} else if (!strcmp(a, "--quick")) {
			quick = true;
		} else if (!strcmp(a, "--peers")) {
			NEEDS_VALUE();
			o.peer_on[P_QEMU] = strstr(v, "qemu") != NULL;
			o.peer_on[P_LIVEMIG] = strstr(v, "livemig") != NULL;
			bad = !o.peer_on[P_QEMU] && !o.peer_on[P_LIVEMIG];
		} else if (!strcmp(a, "--json")) {
			NEEDS_VALUE();
			o.json_path = v;
		} else if (!strcmp(a, "--plot")) {
			NEEDS_VALUE();
			o.plot_path = v;
		} else if (!strcmp(a, "--downtime-limit")) {
			NEEDS_VALUE();
			double d = 0;
			bad = parse_double(v, &d, 1) != 0;
			o.downtime_limit_ms = (uint64_t)d;
		} else if (!strcmp(a, "--cap")) {
			NEEDS_VALUE();
			bad = lm_cli_parse_rate(v, &o.cap_bps) != 0 || o.cap_bps == 0;
		} else if (!strcmp(a, "--timeout")) {
			NEEDS_VALUE();
			bad = parse_double(v, &o.timeout_s, 1) != 0;
		} else if (!strcmp(a, "--warmup")) {
			NEEDS_VALUE();
			bad = parse_double(v, &o.warmup_s, 0) != 0;
		} else if (!strcmp(a, "--verify-timeout")) {
			NEEDS_VALUE();
			bad = parse_double(v, &o.verify_timeout_s, 1) != 0;
		} else if (!strcmp(a, "--guest")) {
			NEEDS_VALUE();
			o.guest = v;
		} else if (!strcmp(a, "--qemu")) {
			NEEDS_VALUE();
			o.qemu = v;
		} else if (!strcmp(a, "--qemu-cpu")) {
			NEEDS_VALUE();
			o.qemu_cpu = v;
		} else if (!strcmp(a, "--livemig")) {
			NEEDS_VALUE();
			snprintf(o.livemig, sizeof(o.livemig), "%s", v);
		} else if (!strcmp(a, "--keep")) {
			o.keep = true;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			o.verbose = true;
		} else {
			fprintf(stderr, "livemig bench vs-qemu: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		}
#undef NEEDS_VALUE
		if (bad) {
			fprintf(stderr, "livemig bench vs-qemu: bad value for %s: '%s'\n", a, v ? v : "");
			return 2;
		}
	}
	if (quick) {
		memset(o.want, 0, sizeof(o.want));
		for (size_t i = 0; i < N_CASES; i++)
			o.want[i] = !strcmp(cases[i].name, "hotset-256M");
		if (!repeat_set)
			o.repeat = 1;
	}
	if (access(o.guest, R_OK)) {
		fprintf(stderr, "livemig bench vs-qemu: guest image %s: %s (make guest/guest.elf, or --guest)\n",
			o.guest, strerror(errno));
		return 2;
	}
	/* The peers run from per-run directories: give them absolute paths. */
	char guest_abs[4096];
	if (realpath(o.guest, guest_abs))
		o.guest = guest_abs;
	if (o.peer_on[P_QEMU] && !in_path(o.qemu)) {
		fprintf(stderr, "livemig bench vs-qemu: %s not found (make bench-qemu installs it)\n", o.qemu);
		return 2;
	}

	if (o.peer_on[P_QEMU] && !strcmp(o.qemu_cpu, "auto")) {
		int err = lm_bench_qemu_cpu_probe(&o.qemu_cpu_probe, o.qemu, o.guest, LM_QEMU_CPU_TIMEOUT_S);
		if (err) {
			lm_bench_qemu_cpu_report(&o.qemu_cpu_probe, stderr, "qemu-cpu: ");
			fprintf(stderr, "livemig bench vs-qemu: %s (--qemu-cpu MODEL to force one)\n",
				err == -ENODEV ? "no QEMU -cpu model boots the guest on this host"
					       : strerror(-err));
			return 1;
		}
		o.qemu_cpu = o.qemu_cpu_probe.tries[o.qemu_cpu_probe.chosen].model;
		o.qemu_cpu_probed = true;
	}

	char date[64], qver[300] = "-", cpu[256];
	long ncpu;
	double mem;
	time_t tnow = time(NULL);
	struct tm tm;
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M %Z", localtime_r(&tnow, &tm));
	if (o.peer_on[P_QEMU])
		qemu_version(o.qemu, qver, sizeof(qver));
	machine_info(cpu, sizeof(cpu), &ncpu, &mem);
	printf("bench vs-qemu: %s; %ld cpus (%s), %.0f GiB; QEMU %s -cpu %s (%s); %d run(s) per case and peer\n",
	       date, ncpu, cpu, mem, qver, o.qemu_cpu, qemu_cpu_source(&o), o.repeat);
	if (o.qemu_cpu_probed)
		lm_bench_qemu_cpu_report(&o.qemu_cpu_probe, stdout, "qemu-cpu probe: ");
	printf("downtime-limit %llu ms for both; capped cases at %.0f Mbit/s; timeout %.0f s\n",
	       (unsigned long long)o.downtime_limit_ms, (double)o.cap_bps * 8 / 1e6, o.timeout_s);
	fflush(stdout);

	/* Child processes are reaped explicitly; a dead control socket must
	 * not kill the benchmark. */
	signal(SIGPIPE, SIG_IGN);

	int harness_errors = 0, livemig_bad = 0;
	for (size_t ci = 0; ci < N_CASES; ci++) {
		if (!o.want[ci])
			continue;
		for (int rep = 0; rep < o.repeat; rep++) {
			for (int k = 0; k < N_PEERS; k++) {
				/* QEMU first in odd repetitions, livemig first in even ones. */
				enum peer p = (enum peer)(rep % 2 ? N_PEERS - 1 - k : k);
				if (!o.peer_on[p])
					continue;
				struct run *r = &results[ci][p][rep];
				double t = bench_now();
				run_one(&o, &cases[ci], p, r);
				char t1[24], t2[24], t3[24], t4[24], t5[24];
				printf("  %-16s %-8s #%d: %-9s total %s ms, downtime %s ms (measured %s), %s MB, "
				       "%s rounds, verify %s  [%.1f s]\n",
				       cases[ci].name, peer_name[p], rep + 1, r->status, fmt(t1, sizeof(t1), r->total_ms, 1, 0),
				       fmt(t2, sizeof(t2), r->downtime_ms, 1, 0), fmt(t3, sizeof(t3), r->dt_meas_ms, 1, 0),
				       fmt(t4, sizeof(t4), r->bytes, 1e6, 1), fmt(t5, sizeof(t5), r->rounds, 1, 0), r->verify,
				       bench_now() - t);
				fflush(stdout);
				if (!strcmp(r->status, "error"))
					harness_errors++;
				if (p == P_LIVEMIG && (strcmp(r->status, "completed") || strcmp(r->verify, "ok")))
					livemig_bad++;
			}
		}
	}
	print_table(&o, stdout);
	int rc = harness_errors || livemig_bad ? 1 : 0;
	if (o.json_path) {
		int err = write_json(&o, o.json_path, date, qver);
		if (err) {
			fprintf(stderr, "livemig bench vs-qemu: writing %s failed\n", o.json_path);
			rc = 1;
		} else {
			printf("wrote %s\n", o.json_path);
		}
	}
	if (o.plot_path) {
		if (!(o.peer_on[P_QEMU] && o.peer_on[P_LIVEMIG])) {
			fprintf(stderr, "livemig bench vs-qemu: --plot needs both peers\n");
		} else {
			int err = write_plot(&o, o.plot_path, date, qver);
			if (err) {
				fprintf(stderr, "livemig bench vs-qemu: plotting %s failed: %s\n", o.plot_path,
					strerror(-err));
				rc = 1;
			} else {
				printf("wrote %s\n", o.plot_path);
			}
		}
	}
	return rc;
}
