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
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench.h"
#include "cli/cli.h"
#include "peer.h"

#define MAX_REPEAT 25
#define GIB LM_BENCH_GIB
#define MIB LM_BENCH_MIB

/* ------------------------------------------------------------------ */
/* Cases                                                               */

/* How the migration may end when pre-copy does not converge. */
enum vmode {
	M_PRECOPY = 0, /* rounds, then the switchover */
	/* post-copy allowed on both (QEMU's capability postcopy-ram on both
	 * sides): livemig's policy decides when; QEMU never switches by
	 * itself, so the harness sends migrate-start-postcopy once its first
	 * pass is done (dirty-sync-count 2), as its documentation advises */
	M_POSTCOPY,
	M_AUTOCONV, /* auto-converge on both */
};

struct vcase {
	const char *name;
	const char *desc;
	uint64_t mem;       /* guest RAM in bytes */
	bool paused;        /* created, never run on the source */
	bool memtouch;      /* wait for "memtouch done" before migrating */
	bool capped;        /* max-bandwidth = --cap (1 Gbit/s) */
	bool in_default;    /* part of the full run */
	const char *append; /* the guest's command line */
	enum vmode mode;
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
	{ "paused-2G", "paused never-run guest, 2 GiB", 2 * GIB, true, false, false, true, PAUSED_APPEND, M_PRECOPY },
	{ "paused-8G", "paused never-run guest, 8 GiB", 8 * GIB, true, false, false, true, PAUSED_APPEND, M_PRECOPY },
	{ "paused-16G", "paused never-run guest, 16 GiB", 16 * GIB, true, false, false, true, PAUSED_APPEND, M_PRECOPY },
	{ "idle-2G", "running 2 GiB, idle", 2 * GIB, false, false, false, true,
	  "workload=idle " RUNNING_VERIFY, M_PRECOPY },
	{ "memtouch-2G", "running 2 GiB, every page written once", 2 * GIB, false, true, false, true,
	  "workload=memtouch " MEMTOUCH_VERIFY, M_PRECOPY },
	{ "hotset50-2G", "running 2 GiB, 256 MiB hot set at 50 MB/s", 2 * GIB, false, false, false, true,
	  "workload=hotset wss=256M rate=50M " RUNNING_VERIFY, M_PRECOPY },
	{ "hotset200-2G", "running 2 GiB, 256 MiB hot set at 200 MB/s", 2 * GIB, false, false, false, true,
	  "workload=hotset wss=256M rate=200M " RUNNING_VERIFY, M_PRECOPY },
	{ "idle-2G-1g", "idle-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, false, true, true,
	  "workload=idle " RUNNING_VERIFY, M_PRECOPY },
	{ "memtouch-2G-1g", "memtouch-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, true, true, true,
	  "workload=memtouch " MEMTOUCH_VERIFY, M_PRECOPY },
	{ "hotset50-2G-1g", "hotset50-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, false, true, true,
	  "workload=hotset wss=256M rate=50M " RUNNING_VERIFY, M_PRECOPY },
	{ "hotset200-2G-1g", "hotset200-2G, max-bandwidth 1 Gbit/s", 2 * GIB, false, false, true, true,
	  "workload=hotset wss=256M rate=200M " RUNNING_VERIFY, M_PRECOPY },
	{ "hotset200-2G-1g-pc", "hotset200-2G-1g with post-copy (postcopy-ram)", 2 * GIB, false, false, true,
	  true, "workload=hotset wss=256M rate=200M " RUNNING_VERIFY, M_POSTCOPY },
	{ "hotset200-2G-1g-ac", "hotset200-2G-1g with auto-converge", 2 * GIB, false, false, true, true,
	  "workload=hotset wss=256M rate=200M " RUNNING_VERIFY, M_AUTOCONV },
	{ "hotset200-1G", "running 2 GiB, 1 GiB working set at 200 MB/s", 2 * GIB, false, false, false, true,
	  "workload=hotset wss=1G rate=200M " RUNNING_VERIFY, M_PRECOPY },
	/* --quick: small enough for a smoke test, still a live migration. */
	{ "hotset-256M", "running 256 MiB, 64 MiB hot set at 50 MB/s", 256 * MIB, false, false, false, false,
	  "workload=hotset wss=64M rate=50M verify=1 verify_every=1 zerocheck=0", M_PRECOPY },
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
/* One migration                                                        */

static void peer_argv(struct lm_bench_argv *a, const struct opts *o, const struct vcase *c, enum peer p,
		      const char *dir, bool dst, int port)
{
	const struct lm_bench_guest g = { .image = o->guest, .mem = c->mem, .append = c->append, .paused = c->paused };
	if (p == P_QEMU)
		lm_bench_qemu_argv(a, o->qemu, o->qemu_cpu, &g, false, dir, dst, port);
	else
		lm_bench_livemig_argv(a, o->livemig, &g, dir, dst, NULL);
}

static int start_side(struct lm_bench_side *s, const struct opts *o, const struct vcase *c, enum peer p,
		      const char *dir, bool dst, int port, struct run *r)
{
	struct lm_bench_argv a = { .n = 0 };
	peer_argv(&a, o, c, p, dir, dst, port);
	int err = lm_bench_side_spawn(s, a.v, o->verbose);
	if (err) {
		run_error(r, "fork: %s", strerror(-err));
		return err;
	}
	/* `livemig incoming` serves its control socket only once the VM has
	 * arrived: the harness connects after the migration. */
	if (p == P_LIVEMIG && dst)
		return 0;
	char msg[512];
	err = lm_bench_side_connect(s, peer_name[p], 20.0, msg, sizeof(msg));
	if (err)
		run_error(r, "%s", msg);
	return err;
}

/* Lets the source's workload run for warmup_s (guest time), and memtouch finish. */
static int warm_up(const struct lm_bench_side *src, const struct opts *o, const struct vcase *c, struct run *r)
{
	char msg[300];
	int err = c->paused ? 0 : lm_bench_warm_up(src, o->warmup_s, c->memtouch ? "memtouch done" : NULL, 90.0, msg,
						   sizeof(msg));
	if (err)
		run_error(r, "%s", msg);
	return err;
}

static void take_stats(struct run *r, struct json_object *st)
{
	struct json_object *ram = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	r->total_ms = lm_bench_jnum(st, "total-time");
	r->downtime_ms = lm_bench_jnum(st, "downtime");
	r->setup_ms = lm_bench_jnum(st, "setup-time");
	r->bytes = lm_bench_jnum(ram, "transferred");
	r->rounds = lm_bench_jnum(ram, "dirty-sync-count");
	r->downtime_us = lm_bench_jnum(st, "downtime-us");
}

/*
 * Runs the migration: set the parameters, migrate, poll until a final
 * status. Returns 0 when it completed.
 */
/* QEMU's migrate-set-capabilities with one capability on. */
static int qemu_capability(struct lm_bench_side *s, const char *cap, char *msg, size_t msglen)
{
	struct json_object *one = json_object_new_object(), *list = json_object_new_array(),
			   *args = json_object_new_object();
	json_object_object_add(one, "capability", json_object_new_string(cap));
	json_object_object_add(one, "state", json_object_new_boolean(1));
	json_object_array_add(list, one);
	json_object_object_add(args, "capabilities", list);
	struct json_object *ret = lm_bench_qmp_exec(&s->q, "migrate-set-capabilities", args, 10.0, msg, msglen);
	if (!ret)
		return -EPROTO;
	json_object_put(ret);
	return 0;
}

/* The poll's view of a QEMU post-copy: switch once the first pass is done. */
struct pc_poll {
	struct lm_bench_side *src;
	bool sent;
	char msg[200];
};

static void qemu_start_postcopy(struct json_object *st, void *arg)
{
	struct pc_poll *pp = arg;
	struct json_object *ram = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	const char *status = lm_bench_jstr(st, "status");
	if (pp->sent || !status || strcmp(status, "active") || lm_bench_jnum(ram, "dirty-sync-count") < 2)
		return;
	struct json_object *ret = lm_bench_qmp_exec(&pp->src->q, "migrate-start-postcopy", NULL, 10.0, pp->msg,
						    sizeof(pp->msg));
	if (ret)
		json_object_put(ret);
	pp->sent = true;
}

static int migrate(struct lm_bench_side *src, struct lm_bench_side *dst, const struct opts *o,
		   const struct vcase *c, enum peer p, int port, struct run *r)
{
	char msg[200];
	if (p == P_QEMU && c->mode != M_PRECOPY) {
		const char *cap = c->mode == M_POSTCOPY ? "postcopy-ram" : "auto-converge";
		/* post-copy needs it on the destination too */
		if (qemu_capability(src, cap, msg, sizeof(msg)) ||
		    (c->mode == M_POSTCOPY && qemu_capability(dst, cap, msg, sizeof(msg)))) {
			run_error(r, "%s", msg);
			snprintf(r->status, sizeof(r->status), "error");
			return -EPROTO;
		}
	}
	struct json_object *params = json_object_new_object();
	if (p == P_LIVEMIG && c->mode == M_POSTCOPY)
		json_object_object_add(params, "postcopy-ram", json_object_new_boolean(1));
	if (p == P_LIVEMIG && c->mode == M_AUTOCONV)
		json_object_object_add(params, "auto-converge", json_object_new_boolean(1));
	json_object_object_add(params, "downtime-limit", json_object_new_int64((int64_t)o->downtime_limit_ms));
	/* QEMU's default cap is 32 MiB/s, so "unlimited" must be said: as a
	 * rate no loopback reaches. livemig is unlimited unless told. */
	if (c->capped)
		json_object_object_add(params, "max-bandwidth", json_object_new_int64((int64_t)o->cap_bps));
	else if (p == P_QEMU)
		json_object_object_add(params, "max-bandwidth", json_object_new_int64(INT64_C(1) << 40));
	double t0;
	if (lm_bench_migrate_start(src, params, port, &t0, msg, sizeof(msg))) {
		run_error(r, "%s", msg);
		snprintf(r->status, sizeof(r->status), "error");
		return -EPROTO;
	}

	struct json_object *st = NULL;
	struct pc_poll pp = { .src = src };
	bool qemu_pc = p == P_QEMU && c->mode == M_POSTCOPY;
	int err = lm_bench_migrate_poll(src, t0 + o->timeout_s, 0.025, qemu_pc ? qemu_start_postcopy : NULL, &pp, &st,
					msg, sizeof(msg));
	if (pp.msg[0])
		run_error(r, "migrate-start-postcopy: %s", pp.msg);
	r->wall_ms = (bench_now() - t0) * 1e3;
	if (err == -EPROTO) {
		run_error(r, "%s", msg);
		snprintf(r->status, sizeof(r->status), "error");
	} else if (err == -ETIMEDOUT) {
		snprintf(r->status, sizeof(r->status), "timeout");
		run_error(r, "not completed after %.0f s (no convergence?)", o->timeout_s);
		lm_bench_migrate_cancel(src, p == P_QEMU);
	} else {
		take_stats(r, st);
		snprintf(r->status, sizeof(r->status), "%s", lm_bench_jstr(st, "status"));
		if (err)
			run_error(r, "%s", msg);
	}
	if (st)
		json_object_put(st);
	return err;
}

/*
 * After completion: the destination must be running (a paused source's
 * guest is resumed here, as QEMU leaves it paused), and a check that
 * started on the destination must have passed.
 */
static void after_migration(struct lm_bench_side *src, struct lm_bench_side *dst, const struct opts *o,
			    const struct vcase *c, enum peer p, struct run *r)
{
	char msg[512];
	if ((!dst->q.c && lm_bench_side_connect(dst, peer_name[p], 15.0, msg, sizeof(msg))) ||
	    lm_bench_dest_running(dst, 15.0, msg, sizeof(msg))) {
		run_error(r, "%s", msg);
		snprintf(r->verify, sizeof(r->verify), "n/a");
		return;
	}
	lm_bench_qmp_drain(&src->q, 0);
	lm_bench_qmp_drain(&dst->q, 0);
	/* A paused guest never stopped: its pause is not a downtime. */
	if (!c->paused && src->q.stop_ts > 0 && dst->q.resume_ts > 0) {
		r->dt_meas_ms = (dst->q.resume_ts - src->q.stop_ts) * 1e3;
		r->dt_from_events = true;
	} else if (!c->paused && !isnan(r->downtime_us)) {
		/* A source that sends no STOP event when the migration pauses
		 * the guest: fall back to the peer's own measured pause. */
		r->dt_meas_ms = r->downtime_us / 1e3;
	}
	if (lm_bench_guest_verdict(dst, o->verify_timeout_s, r->verify, sizeof(r->verify)) == -ECHILD)
		run_error(r, "destination exited");
}

static void run_one(const struct opts *o, const struct vcase *c, enum peer p, struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->done = true;
	r->total_ms = r->downtime_ms = r->setup_ms = r->dt_meas_ms = r->wall_ms = NAN;
	r->bytes = r->rounds = r->downtime_us = NAN;
	snprintf(r->status, sizeof(r->status), "error");
	snprintf(r->verify, sizeof(r->verify), "n/a");

	char dir[] = "/tmp/livemig-vsqemu-XXXXXX";
	if (!mkdtemp(dir)) {
		run_error(r, "mkdtemp: %s", strerror(errno));
		return;
	}
	struct lm_bench_side src, dst;
	lm_bench_side_init(&src, dir, false, o->verbose);
	lm_bench_side_init(&dst, dir, true, o->verbose);
	int port = 0;
	if (p == P_QEMU) {
		port = lm_bench_free_port();
		if (port < 0) {
			run_error(r, "no free port: %s", strerror(-port));
			goto out;
		}
	}
	if (start_side(&dst, o, c, p, dir, true, port, r))
		goto out;
	if (p == P_LIVEMIG) {
		port = lm_bench_livemig_port(dst.log, dst.pid, 10.0);
		if (port < 0) {
			run_error(r, "livemig incoming: no listening port: %s", strerror(-port));
			goto out;
		}
	}
	if (start_side(&src, o, c, p, dir, false, port, r))
		goto out;
	if (warm_up(&src, o, c, r))
		goto out;
	if (migrate(&src, &dst, o, c, p, port, r))
		goto out;
	after_migration(&src, &dst, o, c, p, r);
out:
	if (!strcmp(r->verify, "n/a") && !strcmp(r->status, "completed"))
		run_error(r, "destination not checked");
	if (o->verbose && r->err[0])
		fprintf(stderr, "  error: %s\n", r->err);
	/* livemig's source exits on its own after a completed migration. */
	lm_bench_side_stop(&src, !(p == P_LIVEMIG && !strcmp(r->status, "completed")) || lm_bench_alive(src.pid));
	lm_bench_side_stop(&dst, true);
	if (o->keep)
		fprintf(stderr, "  kept %s\n", dir);
	else
		lm_bench_remove_tree(dir);
}
/* ------------------------------------------------------------------ */
/* Statistics and output                                                */

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
		qsort(v, (size_t)m, sizeof(double), lm_bench_cmp_double);
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
static double ratio(const struct summary *a, const struct summary *b, int k)
{
	if (isnan(a->med[k]) || isnan(b->med[k]) || b->med[k] <= 0)
		return NAN;
	return a->med[k] / b->med[k];
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
	struct json_object *root = lm_bench_json_root("vs-qemu", date);
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
			bad = lm_bench_parse_double(v, &d, 1) != 0;
			o.downtime_limit_ms = (uint64_t)d;
		} else if (!strcmp(a, "--cap")) {
			NEEDS_VALUE();
			bad = lm_cli_parse_rate(v, &o.cap_bps) != 0 || o.cap_bps == 0;
		} else if (!strcmp(a, "--timeout")) {
			NEEDS_VALUE();
			bad = lm_bench_parse_double(v, &o.timeout_s, 1) != 0;
		} else if (!strcmp(a, "--warmup")) {
			NEEDS_VALUE();
			bad = lm_bench_parse_double(v, &o.warmup_s, 0) != 0;
		} else if (!strcmp(a, "--verify-timeout")) {
			NEEDS_VALUE();
			bad = lm_bench_parse_double(v, &o.verify_timeout_s, 1) != 0;
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
	if (o.peer_on[P_QEMU] && !lm_bench_in_path(o.qemu)) {
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
		lm_bench_qemu_version(o.qemu, qver, sizeof(qver));
	lm_bench_machine_info(cpu, sizeof(cpu), &ncpu, &mem);
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
				       cases[ci].name, peer_name[p], rep + 1, r->status, lm_bench_fmt(t1, sizeof(t1), r->total_ms, 1, 0),
				       lm_bench_fmt(t2, sizeof(t2), r->downtime_ms, 1, 0), lm_bench_fmt(t3, sizeof(t3), r->dt_meas_ms, 1, 0),
				       lm_bench_fmt(t4, sizeof(t4), r->bytes, 1e6, 1), lm_bench_fmt(t5, sizeof(t5), r->rounds, 1, 0), r->verify,
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
