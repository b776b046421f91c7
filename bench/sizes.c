/*
 * livemig bench sizes: how a migration's cost grows with the guest's size
 * (issue 12, "huge guests"), through the real command line end to end.
 *
 * Each run starts a destination (`livemig incoming --listen tcp:127.0.0.1:0
 * --once`, with `--mem SIZE` when the command has it, so that KVM's work to
 * register a big guest's memory happens before the migration, as for a
 * QEMU destination started with -m) and a source (`livemig run`), connects
 * to both control sockets with the command's own QMP client, starts the
 * migration with `migrate` on the source's socket with default parameters,
 * and polls `query-migrate` until it ends. Rows are guest sizes (4 GiB up
 * to the largest guest the host can hold, plus a 2 GiB row that goal 3
 * compares against); columns are the workload (a paused never-run guest,
 * or a running `workload=hotset wss=256M rate=50M verify=1`) times the KVM
 * dirty source (the bitmap log or the dirty ring, `--dirty-source`).
 *
 * Per run: total time, the measured pause (downtime-us), the
 * expected-downtime that decided the switchover (livemig's final report
 * keeps it; for QEMU the last one seen while active), rounds, the last and the longest harvest
 * of the dirty log (ram.dirty-sync-us, -max-us), bytes on the wire, and
 * three checks: the source's completeness check (verify.status), the
 * destination's digest of all guest RAM (its receive report), and the
 * guest's own check of every page it wrote, run on the destination after
 * the migration (guest-verify).
 *
 * Memory: guest RAM is MAP_NORESERVE, so a sparse 1 TiB guest fits in a
 * 24 GiB host, but KVM allocates about 10 bytes of kernel memory per 4 KiB
 * page of every memory slot (2.5 GiB per TiB) for each VM, and source and
 * destination both exist during a migration. Before each run the harness
 * compares that estimate for both VMs, plus the workload's resident pages
 * and a margin, with MemAvailable, and skips what does not fit, saying so;
 * after each run it waits until the kernel has given the memory back
 * (MemAvailable and VmallocUsed back near where they were). One pair of
 * processes runs at a time; every child dies with the benchmark, and an
 * interrupted benchmark kills its children and removes their sockets.
 *
 * With --qemu, QEMU 7.2 migrates paused 64 GiB and 256 GiB guests in the
 * same run (RAM as a memory-backend-ram with reserve=off), for a
 * side-by-side of total time and pause.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench.h"
#include "cli/cli.h"
#include "livemig/vmm.h"
#include "peer.h"

#define GIB LM_BENCH_GIB
#define TIB (GIB << 10)
#define MAX_REPEAT 9
#define MAX_SIZES 16
/* The largest guest `livemig run --mem` takes. */
#define MAX_GUEST (16 * TIB)
/* Goal 3 compares harvests of at least this many microseconds. */
#define HARVEST_FLOOR_US 100.0
/* "max" is rounded down to a multiple of this. */
#define MAX_STEP (256 * GIB)

enum wl { W_PAUSED, W_HOTSET, N_WL };
static const char *const wl_name[N_WL] = { "paused", "hotset" };
/* zerocheck=0: the paused guest's setup check on the destination reads only
 * what was written (as under QEMU, where it would otherwise read every
 * page of a 256 GiB guest). */
static const char *const wl_append[N_WL] = { "workload=idle verify=1 zerocheck=0",
					     "workload=hotset wss=256M rate=50M verify=1" };
/* Pages the workload makes resident, per VM: the hot set and its version
 * table, the guest's own pages, the VMM's buffers. */
static const uint64_t wl_resident[N_WL] = { 64ull << 20, 384ull << 20 };

enum src { SRC_LOG, SRC_RING, SRC_DEFAULT, N_SRC };
static const char *const src_name[N_SRC] = { "log", "ring", "default" };

/* ------------------------------------------------------------------ */
/* Results                                                             */

/* The parts of livemig's downtime-breakdown: the report's key (us), and
 * this benchmark's JSON key (ms). */
static const struct {
	const char *report, *json;
} part_name[4] = {
	{ "stop-us", "stop-ms" },
	{ "device-state-us", "device-state-ms" },
	{ "ram-us", "ram-ms" },
	{ "result-us", "result-ms" },
};

struct run {
	bool done;
	char status[16];                /* completed, failed, timeout, error */
	double total_ms, pause_ms;      /* total-time; downtime-us / 1000 (QEMU: downtime) */
	double setup_ms, normal;        /* setup-time (ms); ram.normal (data pages sent) */
	double exp_ms;                  /* last expected-downtime while active */
	double part_ms[4];              /* livemig's downtime-breakdown, in the order of part_name */
	bool exp_polled;                /* else from the final report (never seen active) */
	double rounds, syncs;           /* ram.rounds, ram.dirty-sync-count */
	double sync_us, sync_max_us;    /* ram.dirty-sync-us, -max-us: NAN if absent */
	double bytes;                   /* ram.transferred */
	double kvm_gib;                 /* VmallocUsed's peak growth during the run */
	double wall_s;                  /* the whole run, start to stop */
	char dirty_source[16];          /* query-migrate's dirty-source, "" if absent */
	char src_verify[16], digest[16], guest[24];
	char err[400];
};

/* Medians over the completed runs. */
struct med {
	int n, attempted, checked;
	double total_ms, pause_ms, exp_ms, rounds, syncs, sync_us, sync_max_us, bytes, kvm_gib;
	bool exp_polled;
};

struct row {
	uint64_t size;
	enum wl w;
	enum src s;
	bool qemu;         /* a QEMU row (paused only) */
	bool skipped;
	char skip[300];
	struct run runs[MAX_REPEAT];
	struct med m;
};

#define MAX_ROWS (MAX_SIZES * N_WL * N_SRC + MAX_SIZES)
static struct row rows[MAX_ROWS];
static int n_rows;

struct opts {
	uint64_t sizes[MAX_SIZES];
	int n_sizes;
	bool want_max;
	bool src_on[N_SRC];
	bool wl_on[N_WL];
	int repeat;
	const char *json_path;
	bool qemu_on;
	const char *qemu;
	const char *qemu_cpu;
	bool qemu_cpu_probed;
	struct lm_qemu_cpu_probe qemu_cpu_probe;
	uint64_t qemu_sizes[MAX_SIZES];
	int n_qemu_sizes;
	char livemig[4096];
	const char *guest;
	uint64_t margin;
	uint64_t largest;    /* the "max" row's size, 0 if none fits */
	char largest_why[300];
	double timeout_s, warmup_s, verify_timeout_s, start_timeout_s;
	bool keep, verbose;
	/* What the command offers (its --help). */
	bool has_dirty_source, has_incoming_mem, has_paused, has_incoming_dirty;
	bool no_dest_mem; /* --no-dest-mem: the destination builds its VM when the stream says */
};

static void run_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_error(struct run *r, const char *fmt, ...)
{
	va_list ap;
	if (r->err[0])
		return; /* the first reason; later ones are consequences */
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

/* "4G", "1T", "3.5T". */
static const char *size_name(char *buf, size_t len, uint64_t size)
{
	if (size >= TIB && size % (TIB / 4) == 0)
		snprintf(buf, len, "%gT", (double)size / (double)TIB);
	else
		lm_bench_mem_arg(buf, len, size);
	return buf;
}

/* ------------------------------------------------------------------ */
/* Host memory                                                         */

/* MemAvailable and VmallocUsed in bytes (0 when unreadable). */
static void meminfo(uint64_t *avail, uint64_t *vmalloc)
{
	*avail = *vmalloc = 0;
	char *t = lm_bench_slurp("/proc/meminfo");
	const char *p;
	if (t && (p = strstr(t, "MemAvailable:")))
		*avail = strtoull(p + 13, NULL, 10) << 10;
	if (t && (p = strstr(t, "VmallocUsed:")))
		*vmalloc = strtoull(p + 12, NULL, 10) << 10;
	free(t);
}

/* KVM's metadata for one VM of size bytes. */
static uint64_t kvm_bytes(uint64_t size)
{
	return size / 4096 * LM_VM_KVM_BYTES_PER_PAGE;
}

/* What a migration of this size needs: both VMs' KVM metadata, both
 * workloads' resident pages, the margin. */
static uint64_t need_bytes(const struct opts *o, uint64_t size, enum wl w)
{
	return 2 * kvm_bytes(size) + 2 * wl_resident[w] + o->margin;
}

static double gib(uint64_t b)
{
	return (double)b / (double)GIB;
}

/* 0 when a migration of size fits now; else the reason in why. */
static int fits(const struct opts *o, uint64_t size, enum wl w, char *why, size_t len)
{
	uint64_t avail, vm;
	meminfo(&avail, &vm);
	uint64_t need = need_bytes(o, size, w);
	if (!avail || need <= avail)
		return 0;
	snprintf(why, len,
		 "needs %.1f GiB: KVM metadata 2 x %.1f GiB (source and destination) + %.1f GiB resident + "
		 "%.1f GiB margin; %.1f GiB available",
		 gib(need), gib(kvm_bytes(size)), gib(2 * wl_resident[w]), gib(o->margin), gib(avail));
	return -ENOMEM;
}

/* fits(), waiting while MemAvailable still grows (the memory of an earlier
 * run coming back: see wait_memory), at most 120 s. */
static int fits_soon(const struct opts *o, uint64_t size, enum wl w, char *why, size_t len)
{
	double t0 = bench_now();
	uint64_t last, vm;
	meminfo(&last, &vm);
	while (fits(o, size, w, why, len)) {
		if (bench_now() - t0 > 120)
			return -ENOMEM;
		lm_bench_sleep(5);
		uint64_t avail;
		meminfo(&avail, &vm);
		if (avail < last + (16ull << 20))
			return fits(o, size, w, why, len);
		last = avail;
	}
	return 0;
}

/* The largest size (a multiple of MAX_STEP) whose migration fits now, with
 * the reason the next step does not; 0 if none. */
static uint64_t largest_fit(const struct opts *o, char *why, size_t len)
{
	uint64_t s = 0;
	while (s + MAX_STEP <= MAX_GUEST && fits(o, s + MAX_STEP, W_HOTSET, why, len) == 0)
		s += MAX_STEP;
	if (s + MAX_STEP > MAX_GUEST)
		snprintf(why, len, "livemig run takes at most 16T");
	return s;
}

/*
 * After a run: until the kernel has given the memory back. KVM's metadata
 * (VmallocUsed) comes back as soon as the processes are gone; MemAvailable
 * then creeps back for a while (here ~15 MB/s for the last GiB after a
 * 3.5 TiB pair). Waits for VmallocUsed to be back near vm0 and MemAvailable
 * within 256 MiB of avail0, at most 90 s. Returns 0, -EAGAIN when only
 * MemAvailable is still short (*short_by says by how much), -EBUSY when
 * VmallocUsed did not come back.
 */
static int wait_memory(uint64_t avail0, uint64_t vm0, double *waited, uint64_t *short_by)
{
	double t0 = bench_now();
	for (;;) {
		uint64_t avail, vm;
		meminfo(&avail, &vm);
		bool vm_back = vm <= vm0 + (128ull << 20);
		*waited = bench_now() - t0;
		*short_by = avail < avail0 ? avail0 - avail : 0;
		if (vm_back && avail + (256ull << 20) >= avail0)
			return 0;
		if (*waited > 90)
			return vm_back ? -EAGAIN : -EBUSY;
		lm_bench_sleep(0.25);
	}
}

/* ------------------------------------------------------------------ */
/* Cleanup when interrupted                                             */

/* The current run's children and folder, for the signal handler. */
static volatile pid_t live_pids[2] = { -1, -1 };
static char live_dir[64];

static void on_signal(int sig)
{
	static const char *const files[] = { "src.sock", "dst.sock", "src.console", "dst.console", "src.log",
					     "dst.log" };
	for (int i = 0; i < 2; i++)
		if (live_pids[i] > 0)
			kill(live_pids[i], SIGKILL);
	if (live_dir[0]) {
		char p[128];
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			/* snprintf is not async-signal-safe: build the path by hand. */
			size_t n = strlen(live_dir), m = strlen(files[i]);
			if (n + 1 + m >= sizeof(p))
				continue;
			memcpy(p, live_dir, n);
			p[n] = '/';
			memcpy(p + n + 1, files[i], m + 1);
			unlink(p);
		}
		rmdir(live_dir);
	}
	_exit(128 + sig);
}

static void track(int i, pid_t pid)
{
	live_pids[i] = pid;
}

/* ------------------------------------------------------------------ */
/* One migration                                                        */

struct poll_state {
	struct run *r;
	uint64_t vm0, vm_peak;
};

static void sample_vmalloc(struct poll_state *ps)
{
	uint64_t a, vm;
	meminfo(&a, &vm);
	if (vm > ps->vm_peak)
		ps->vm_peak = vm;
}

/* Expected downtime in ms: livemig's -us figure, else QEMU's ms. */
static double expected_ms(struct json_object *st)
{
	double us = lm_bench_jnum(st, "expected-downtime-us");
	return isnan(us) ? lm_bench_jnum(st, "expected-downtime") : us / 1e3;
}

static void on_poll(struct json_object *st, void *arg)
{
	struct poll_state *ps = arg;
	const char *status = lm_bench_jstr(st, "status");
	if (status && !strcmp(status, "active")) {
		ps->r->exp_ms = expected_ms(st);
		ps->r->exp_polled = !isnan(ps->r->exp_ms);
	}
	sample_vmalloc(ps);
}

static void take_stats(struct run *r, struct json_object *st, bool qemu)
{
	struct json_object *ram = NULL, *v = NULL;
	json_object_object_get_ex(st, "ram", &ram);
	json_object_object_get_ex(st, "verify", &v);
	/* livemig's total in microseconds: the paused rows take 1-3 ms, where
	 * QEMU's whole milliseconds (total-time) cannot show a 2x. */
	double tus = lm_bench_jnum(st, "total-time-us");
	r->total_ms = isnan(tus) ? lm_bench_jnum(st, "total-time") : tus / 1e3;
	double us = lm_bench_jnum(st, "downtime-us");
	r->pause_ms = isnan(us) ? lm_bench_jnum(st, "downtime") : us / 1e3;
	/* livemig's final report keeps the estimate that decided the
	 * switchover (the last poll may predate it); QEMU's has none. */
	double fin = expected_ms(st);
	if ((!qemu && !isnan(fin)) || !r->exp_polled)
		r->exp_ms = fin;
	struct json_object *bd = NULL;
	json_object_object_get_ex(st, "downtime-breakdown", &bd);
	for (int i = 0; i < 4; i++)
		r->part_ms[i] = lm_bench_jnum(bd, part_name[i].report) / 1e3;
	r->syncs = lm_bench_jnum(ram, "dirty-sync-count");
	r->rounds = qemu ? r->syncs : lm_bench_jnum(ram, "rounds");
	r->sync_us = lm_bench_jnum(ram, "dirty-sync-us");
	r->sync_max_us = lm_bench_jnum(ram, "dirty-sync-max-us");
	r->bytes = lm_bench_jnum(ram, "transferred");
	r->setup_ms = lm_bench_jnum(st, "setup-time");
	r->normal = lm_bench_jnum(ram, "normal");
	const char *ds = lm_bench_jstr(st, "dirty-source");
	snprintf(r->dirty_source, sizeof(r->dirty_source), "%s", ds ? ds : "");
	const char *vs = lm_bench_jstr(v, "status");
	snprintf(r->src_verify, sizeof(r->src_verify), "%s", vs ? vs : "-");
}

/* The destination's receive report (incoming --json, on its stderr): its
 * "digest" member, or "-". */
static void dest_digest(const char *log, char *out, size_t len)
{
	snprintf(out, len, "-");
	char *t = lm_bench_slurp(log);
	for (char *line = t; line && *line;) {
		char *end = strchr(line, '\n');
		if (end)
			*end = 0;
		if (*line == '{' && strstr(line, "\"digest\"")) {
			struct json_object *o = json_tokener_parse(line);
			const char *d = lm_bench_jstr(o, "digest");
			if (d)
				snprintf(out, len, "%s", d);
			json_object_put(o);
		}
		line = end ? end + 1 : NULL;
	}
	free(t);
}

/*
 * The guest's own check on the destination: guest-verify, then query-status
 * until the check asked for is done; the console's FAIL lines or a crash
 * overrule an "ok". livemig only (QEMU has no pv device to ask).
 */
static void guest_check(struct lm_bench_side *dst, double timeout_s, struct run *r)
{
	char msg[300];
	snprintf(r->guest, sizeof(r->guest), "none");
	struct json_object *ret = lm_bench_qmp_exec(&dst->q, "guest-verify", NULL, 10.0, msg, sizeof(msg));
	double req = lm_bench_jnum(ret, "request");
	if (ret)
		json_object_put(ret);
	if (isnan(req)) {
		run_error(r, "destination: %s", ret ? "guest-verify: no request number" : msg);
		return;
	}
	double end = bench_now() + timeout_s;
	while (bench_now() < end) {
		struct json_object *st = lm_bench_qmp_exec(&dst->q, "query-status", NULL, 10.0, msg, sizeof(msg));
		struct json_object *vf = NULL;
		if (st)
			json_object_object_get_ex(st, "verify", &vf);
		double done = lm_bench_jnum(vf, "done");
		const char *res = lm_bench_jstr(vf, "result");
		bool finished = !isnan(done) && done >= req && res;
		if (finished)
			snprintf(r->guest, sizeof(r->guest), "%s", strcmp(res, "ok") ? "FAIL" : "ok");
		if (st)
			json_object_put(st);
		if (finished)
			break;
		if (!st) {
			run_error(r, "destination: %s", msg);
			break;
		}
		lm_bench_sleep(0.05);
	}
	char *t = lm_bench_slurp(dst->console);
	char v[24];
	bool cdone;
	lm_bench_classify_verify(t ? t : "", v, sizeof(v), &cdone);
	free(t);
	if (strcmp(v, "ok") && strcmp(v, "none"))
		snprintf(r->guest, sizeof(r->guest), "%s", v);
	if (!strcmp(r->guest, "none"))
		run_error(r, "the destination guest's check did not finish within %.0f s", timeout_s);
}

static void source_args(const struct opts *o, enum src s, bool dst, uint64_t size, char *mem, size_t memlen,
			const char **extra)
{
	int n = 0;
	if (dst) {
		extra[n++] = "--json";
		if (o->has_incoming_mem && !o->no_dest_mem) {
			lm_bench_mem_arg(mem, memlen, size);
			extra[n++] = "--mem";
			extra[n++] = mem;
		}
	}
	if (s != SRC_DEFAULT && (dst ? o->has_incoming_dirty : o->has_dirty_source)) {
		extra[n++] = "--dirty-source";
		extra[n++] = src_name[s];
	}
	extra[n] = NULL;
}

/* Starts the migration on the source's control socket and polls it. */
static int migrate(struct lm_bench_side *src, const struct opts *o, bool qemu, int port, struct poll_state *ps)
{
	struct run *r = ps->r;
	char msg[400];
	/* QEMU's default cap is 32 MiB/s; livemig's default is no cap. The
	 * same "unlimited" for both: a rate no loopback reaches. */
	struct json_object *params = NULL;
	if (qemu) {
		params = json_object_new_object();
		json_object_object_add(params, "max-bandwidth", json_object_new_int64(INT64_C(1) << 40));
	}
	double t0;
	if (lm_bench_migrate_start(src, params, port, &t0, msg, sizeof(msg))) {
		run_error(r, "%s", msg);
		return -EPROTO;
	}
	struct json_object *st = NULL;
	int err = lm_bench_migrate_poll(src, t0 + o->timeout_s, 0.01, on_poll, ps, &st, msg, sizeof(msg));
	if (st && err != -ETIMEDOUT)
		take_stats(r, st, qemu);
	if (st)
		snprintf(r->status, sizeof(r->status), "%s", err == -ETIMEDOUT ? "timeout" : lm_bench_jstr(st, "status"));
	if (err)
		run_error(r, "%s", msg);
	if (err == -ETIMEDOUT)
		lm_bench_migrate_cancel(src, qemu);
	if (st)
		json_object_put(st);
	return err;
}

static void run_init(struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->done = true;
	r->total_ms = r->pause_ms = r->exp_ms = r->rounds = r->syncs = NAN;
	r->setup_ms = r->normal = NAN;
	r->sync_us = r->sync_max_us = r->bytes = r->kvm_gib = NAN;
	for (int i = 0; i < 4; i++)
		r->part_ms[i] = NAN;
	snprintf(r->status, sizeof(r->status), "error");
	snprintf(r->src_verify, sizeof(r->src_verify), "-");
	snprintf(r->digest, sizeof(r->digest), "-");
	snprintf(r->guest, sizeof(r->guest), "-");
}

/* Starts one side of the row's peer in dir (QEMU's destination on port). */
static int start_peer(const struct opts *o, const struct row *row, const struct lm_bench_guest *g, const char *dir,
		      struct lm_bench_side *s, int port, struct run *r)
{
	bool dst = !strcmp(s->name, "dst");
	struct lm_bench_argv a = { .n = 0 };
	char mem[32];
	const char *extra[8];
	if (row->qemu) {
		lm_bench_qemu_argv(&a, o->qemu, o->qemu_cpu, g, true, dir, dst, port);
	} else {
		source_args(o, row->s, dst, row->size, mem, sizeof(mem), extra);
		lm_bench_livemig_argv(&a, o->livemig, g, dir, dst, extra);
	}
	int err = lm_bench_side_spawn(s, a.v, o->verbose);
	if (err)
		run_error(r, "fork: %s", strerror(-err));
	else
		track(dst, s->pid);
	return err;
}

static void run_one(const struct opts *o, const struct row *row, struct run *r)
{
	run_init(r);
	double t_start = bench_now();
	bool qemu = row->qemu;
	const char *peer = qemu ? "qemu" : "livemig";
	char dir[] = "/tmp/livemig-sizes-XXXXXX";
	if (!mkdtemp(dir)) {
		run_error(r, "mkdtemp: %s", strerror(errno));
		return;
	}
	snprintf(live_dir, sizeof(live_dir), "%s", dir);
	uint64_t avail0, vm0;
	meminfo(&avail0, &vm0);
	struct poll_state ps = { .r = r, .vm0 = vm0, .vm_peak = vm0 };
	const struct lm_bench_guest g = {
		.image = o->guest, .mem = row->size, .append = wl_append[row->w], .paused = row->w == W_PAUSED
	};
	struct lm_bench_side src, dst;
	lm_bench_side_init(&src, dir, false, o->verbose);
	lm_bench_side_init(&dst, dir, true, o->verbose);
	char msg[512];
	int port = 0, err;

	/* The destination first: with --mem it builds the VM before it listens. */
	if (qemu && (port = lm_bench_free_port()) < 0) {
		run_error(r, "no free port: %s", strerror(-port));
		goto out;
	}
	if (start_peer(o, row, &g, dir, &dst, port, r))
		goto out;
	if (qemu) {
		if (lm_bench_side_connect(&dst, peer, o->start_timeout_s, msg, sizeof(msg))) {
			run_error(r, "%s", msg);
			goto out;
		}
	} else if ((port = lm_bench_livemig_port(dst.log, dst.pid, o->start_timeout_s)) < 0) {
		char tail[160];
		lm_bench_log_tail(dst.log, tail, sizeof(tail));
		run_error(r, "livemig incoming: no listening port (%s) [%s]", strerror(-port), tail);
		goto out;
	}
	sample_vmalloc(&ps);
	if (start_peer(o, row, &g, dir, &src, port, r))
		goto out;
	if (lm_bench_side_connect(&src, peer, o->start_timeout_s, msg, sizeof(msg))) {
		run_error(r, "%s", msg);
		goto out;
	}
	if (row->w == W_HOTSET && lm_bench_warm_up(&src, o->warmup_s, NULL, o->start_timeout_s, msg, sizeof(msg))) {
		run_error(r, "%s", msg);
		goto out;
	}
	sample_vmalloc(&ps);
	if (migrate(&src, o, qemu, port, &ps))
		goto out;

	/* The destination: running (QEMU leaves a paused guest paused), then
	 * its checks. */
	if ((!dst.q.c && lm_bench_side_connect(&dst, peer, 30.0, msg, sizeof(msg))) ||
	    lm_bench_dest_running(&dst, 30.0, msg, sizeof(msg))) {
		run_error(r, "%s", msg);
		goto out;
	}
	sample_vmalloc(&ps);
	if (qemu) {
				if (lm_bench_guest_verdict(&dst, o->verify_timeout_s, r->guest, sizeof(r->guest)) == -ECHILD)
			run_error(r, "destination exited");
	} else {
		dest_digest(dst.log, r->digest, sizeof(r->digest));
		guest_check(&dst, o->verify_timeout_s, r);
	}
out:
	if (o->verbose && r->err[0])
		fprintf(stderr, "  error: %s\n", r->err);
	/* livemig's source exits by itself after a completed migration. */
	lm_bench_side_stop(&src, qemu || strcmp(r->status, "completed") || lm_bench_alive(src.pid));
	lm_bench_side_stop(&dst, true);
	track(0, -1);
	track(1, -1);
	if (ps.vm_peak > vm0)
		r->kvm_gib = gib(ps.vm_peak - vm0);
	if (o->keep)
		fprintf(stderr, "  kept %s\n", dir);
	else
		lm_bench_remove_tree(dir);
	live_dir[0] = 0;
	double waited;
	uint64_t short_by;
	err = wait_memory(avail0, vm0, &waited, &short_by);
	if (err == -EBUSY)
		run_error(r, "KVM's memory (VmallocUsed) not returned %.0f s after the run", waited);
	if (err)
		printf("      memory after the run: not all back after %.0f s (MemAvailable %.1f GiB short)\n", waited,
		       gib(short_by));
	else if (o->verbose)
		fprintf(stderr, "  memory after the run: back after %.1f s\n", waited);
	r->wall_s = bench_now() - t_start;
}

/* Whether every check of a completed run passed. */
static bool run_ok(const struct run *r, bool qemu)
{
	if (strcmp(r->status, "completed") || strcmp(r->guest, "ok"))
		return false;
	return qemu || (!strcmp(r->src_verify, "ok") && !strcmp(r->digest, "ok"));
}

/* ------------------------------------------------------------------ */
/* Statistics                                                           */

static double median_of(const struct row *row, int n, size_t off)
{
	double v[MAX_REPEAT];
	int m = 0;
	for (int i = 0; i < n; i++) {
		const struct run *r = &row->runs[i];
		double x = *(const double *)((const char *)r + off);
		if (r->done && !strcmp(r->status, "completed") && !isnan(x))
			v[m++] = x;
	}
	if (!m)
		return NAN;
	qsort(v, (size_t)m, sizeof(double), lm_bench_cmp_double);
	return m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
}

static void summarize(struct row *row, int n)
{
	struct med *m = &row->m;
	memset(m, 0, sizeof(*m));
	for (int i = 0; i < n; i++) {
		const struct run *r = &row->runs[i];
		if (!r->done)
			continue;
		m->attempted++;
		if (!strcmp(r->status, "completed"))
			m->n++;
		if (run_ok(r, row->qemu))
			m->checked++;
		if (r->exp_polled)
			m->exp_polled = true;
	}
#define MED(f) m->f = median_of(row, n, offsetof(struct run, f))
	MED(total_ms);
	MED(pause_ms);
	MED(exp_ms);
	MED(rounds);
	MED(syncs);
	MED(sync_us);
	MED(sync_max_us);
	MED(bytes);
	MED(kvm_gib);
#undef MED
}

/* The row's label for its dirty source: the one asked for, or what the
 * source reported when none could be asked for. */
static const char *row_source(const struct row *row, char *buf, size_t len)
{
	if (row->s != SRC_DEFAULT) {
		snprintf(buf, len, "%s", src_name[row->s]);
		return buf;
	}
	for (int i = 0; i < MAX_REPEAT; i++)
		if (row->runs[i].done && row->runs[i].dirty_source[0]) {
			snprintf(buf, len, "%s", row->runs[i].dirty_source);
			return buf;
		}
	snprintf(buf, len, "default");
	return buf;
}

static const struct row *find_row(uint64_t size, enum wl w, enum src s, bool qemu)
{
	for (int i = 0; i < n_rows; i++)
		if (rows[i].size == size && rows[i].w == w && rows[i].s == s && rows[i].qemu == qemu)
			return &rows[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Output                                                               */

static void check_cell(char *out, size_t len, const struct row *row, int repeat)
{
	/* The first run's three checks, and how many runs passed all. */
	const struct run *r = &row->runs[0];
	if (repeat > 1)
		snprintf(out, len, "%s/%s/%s %d/%d", r->src_verify, r->digest, r->guest, row->m.checked,
			 row->m.attempted);
	else
		snprintf(out, len, "%s/%s/%s", r->src_verify, r->digest, r->guest);
}

static void print_row(FILE *f, const struct row *row, int repeat)
{
	char sz[16], so[24];
	size_name(sz, sizeof(sz), row->size);
	row_source(row, so, sizeof(so));
	fprintf(f, "%-6s %-8s %-8s ", sz, wl_name[row->w], row->qemu ? "qemu" : so);
	if (row->skipped) {
		fprintf(f, "skipped: %s\n", row->skip);
		return;
	}
	const struct med *m = &row->m;
	if (!m->n) {
		const struct run *r = &row->runs[0];
		fprintf(f, "%s: %s\n", r->status, r->err[0] ? r->err : "(no reason given)");
		return;
	}
	char t[24], p[24], e[24], rd[24], h1[24], h2[24], b[24], k[24], c[64], hv[56];
	lm_bench_fmt(t, sizeof(t), m->total_ms, 1, m->total_ms < 100 ? 1 : 0);
	lm_bench_fmt(p, sizeof(p), m->pause_ms, 1, 2);
	lm_bench_fmt(e, sizeof(e), m->exp_ms, 1, 2);
	if (!m->exp_polled && !isnan(m->exp_ms))
		strncat(e, "*", sizeof(e) - strlen(e) - 1);
	lm_bench_fmt(rd, sizeof(rd), m->rounds, 1, 0);
	lm_bench_fmt(h1, sizeof(h1), m->sync_us, 1e3, 3);
	lm_bench_fmt(h2, sizeof(h2), m->sync_max_us, 1e3, 3);
	snprintf(hv, sizeof(hv), "%s/%s", h1, h2);
	lm_bench_fmt(b, sizeof(b), m->bytes, 1e6, 1);
	lm_bench_fmt(k, sizeof(k), m->kvm_gib, 1, 2);
	check_cell(c, sizeof(c), row, repeat);
	fprintf(f, "%9s %9s %9s %6s %17s %9s %-20s %7s\n", t, p, e, rd, hv, b, c, k);
	if (m->n < m->attempted)
		for (int i = 0; i < repeat; i++)
			if (row->runs[i].done && strcmp(row->runs[i].status, "completed"))
				fprintf(f, "%-24s run %d %s: %s\n", "", i + 1, row->runs[i].status, row->runs[i].err);
}

static void print_header(FILE *f)
{
	fprintf(f, "%-6s %-8s %-8s %9s %9s %9s %6s %17s %9s %-20s %7s\n", "size", "workload", "source", "total ms",
		"pause ms", "exp ms", "rounds", "harvest ms l/max", "wire MB", "check src/dig/guest", "kvm GiB");
}

static void print_table(const struct opts *o, FILE *f)
{
	fprintf(f, "\n");
	print_header(f);
	for (int i = 0; i < n_rows; i++)
		if (!rows[i].qemu)
			print_row(f, &rows[i], o->repeat);
	fprintf(f, "\ntotal: total-time; pause: the measured downtime (downtime-us); exp: the expected-downtime that "
		   "decided the switchover\n(livemig's final report; QEMU's last seen while active, * = never seen "
		   "active); rounds: pre-copy rounds; "
		   "harvest: ram.dirty-sync-us\n(last) and -max-us (longest), '-' where the command does not report "
		   "them; wire: ram.transferred;\ncheck: the source's completeness check / the destination's RAM "
		   "digest / the guest's own check on the\ndestination; kvm: VmallocUsed's peak growth during the run "
		   "(both VMs).%s\n",
		   o->repeat > 1 ? " Medians of the completed runs." : "");
}

/* ---- goals ------------------------------------------------------------ */

struct goal {
	enum src s;
	int id;
	char what[96];
	char figures[320];
	int met; /* 1 met, 0 not met, -1 not measured */
};
#define MAX_GOALS 96
static struct goal goals[MAX_GOALS];
static int n_goals;

static struct goal *add_goal(enum src s, int id, const char *what)
{
	if (n_goals >= MAX_GOALS)
		return NULL;
	struct goal *g = &goals[n_goals++];
	memset(g, 0, sizeof(*g));
	g->s = s;
	g->id = id;
	snprintf(g->what, sizeof(g->what), "%s", what);
	g->met = -1;
	return g;
}

/* The row's medians, or NULL if it has no completed run. */
static const struct med *row_med(uint64_t size, enum wl w, enum src s)
{
	const struct row *r = find_row(size, w, s, false);
	return r && !r->skipped && r->m.n ? &r->m : NULL;
}

static void not_measured(struct goal *g, const struct med *a, uint64_t sa, const struct med *b, uint64_t sb,
			 enum wl w)
{
	char na[16], nb[16];
	size_name(na, sizeof(na), sa);
	size_name(nb, sizeof(nb), sb);
	snprintf(g->figures, sizeof(g->figures), "no completed %s row at %s%s%s", wl_name[w], !a ? na : "",
		 !a && !b ? " and " : "", !b ? nb : "");
}

/* Goal 2 for big against small (4G): total at most 2x, pause at most +5 ms. */
static void goal_paused(enum src s, uint64_t big)
{
	char sb[16], what[96];
	size_name(sb, sizeof(sb), big);
	const struct med *b = row_med(big, W_PAUSED, s), *a = row_med(4 * GIB, W_PAUSED, s);
	snprintf(what, sizeof(what), "paused: total(%s) <= 2 x total(4G)", sb);
	struct goal *g = add_goal(s, 2, what);
	if (g && (!a || !b))
		not_measured(g, b, big, a, 4 * GIB, W_PAUSED);
	else if (g) {
		snprintf(g->figures, sizeof(g->figures), "%.2f ms vs 2 x %.2f ms = %.2f ms", b->total_ms, a->total_ms,
			 2 * a->total_ms);
		g->met = b->total_ms <= 2 * a->total_ms;
	}
	snprintf(what, sizeof(what), "paused: pause(%s) <= pause(4G) + 5 ms", sb);
	g = add_goal(s, 2, what);
	if (g && (!a || !b))
		not_measured(g, b, big, a, 4 * GIB, W_PAUSED);
	else if (g) {
		snprintf(g->figures, sizeof(g->figures), "%.2f ms vs %.2f + 5 ms", b->pause_ms, a->pause_ms);
		g->met = b->pause_ms <= a->pause_ms + 5;
	}
}

/* Goal 3 for big against the 2G (and, for the harvest, the 4G) hotset rows. */
static void goal_hotset(enum src s, uint64_t big)
{
	char sb[16], what[96];
	size_name(sb, sizeof(sb), big);
	const struct med *b = row_med(big, W_HOTSET, s), *a = row_med(2 * GIB, W_HOTSET, s);
	const struct med *a4 = row_med(4 * GIB, W_HOTSET, s);
	struct goal *g;

	snprintf(what, sizeof(what), "hotset: total(%s) <= 1.5 x total(2G)", sb);
	if ((g = add_goal(s, 3, what)) && (!a || !b))
		not_measured(g, b, big, a, 2 * GIB, W_HOTSET);
	else if (g) {
		snprintf(g->figures, sizeof(g->figures), "%.0f ms vs 1.5 x %.0f ms = %.0f ms", b->total_ms,
			 a->total_ms, 1.5 * a->total_ms);
		g->met = b->total_ms <= 1.5 * a->total_ms;
	}
	snprintf(what, sizeof(what), "hotset: rounds(%s) within +-1 of rounds(2G)", sb);
	if ((g = add_goal(s, 3, what)) && (!a || !b))
		not_measured(g, b, big, a, 2 * GIB, W_HOTSET);
	else if (g) {
		snprintf(g->figures, sizeof(g->figures), "%.0f vs %.0f", b->rounds, a->rounds);
		g->met = fabs(b->rounds - a->rounds) <= 1;
	}
	snprintf(what, sizeof(what), "hotset: pause(%s) <= pause(2G) + 2 ms", sb);
	if ((g = add_goal(s, 3, what)) && (!a || !b))
		not_measured(g, b, big, a, 2 * GIB, W_HOTSET);
	else if (g) {
		snprintf(g->figures, sizeof(g->figures), "%.2f ms vs %.2f + 2 ms", b->pause_ms, a->pause_ms);
		g->met = b->pause_ms <= a->pause_ms + 2;
	}
	snprintf(what, sizeof(what), "hotset: bytes(%s) within 5%% of bytes(2G)", sb);
	if ((g = add_goal(s, 3, what)) && (!a || !b))
		not_measured(g, b, big, a, 2 * GIB, W_HOTSET);
	else if (g) {
		double d = (b->bytes - a->bytes) / a->bytes;
		snprintf(g->figures, sizeof(g->figures), "%.1f MB vs %.1f MB (%+.1f%%)", b->bytes / 1e6,
			 a->bytes / 1e6, d * 100);
		g->met = fabs(d) <= 0.05;
	}
	snprintf(what, sizeof(what), "hotset: harvest per round %s <= 2 x 4G", sb);
	if ((g = add_goal(s, 3, what)) && (!a4 || !b))
		not_measured(g, b, big, a4, 4 * GIB, W_HOTSET);
	else if (g && (isnan(b->sync_us) || isnan(a4->sync_us)))
		snprintf(g->figures, sizeof(g->figures), "ram.dirty-sync-us not reported");
	else if (g) {
		/* Harvests under HARVEST_FLOOR_US are timer and scheduling noise
		 * on two shared cores: compared as that floor. */
		double hb = fmax(b->sync_us, HARVEST_FLOOR_US), ha = fmax(a4->sync_us, HARVEST_FLOOR_US);
		snprintf(g->figures, sizeof(g->figures), "last %.3f ms vs %.3f ms (%.1fx%s); longest %.3f vs %.3f ms",
			 b->sync_us / 1e3, a4->sync_us / 1e3, hb / ha,
			 ha == HARVEST_FLOOR_US || hb == HARVEST_FLOOR_US ? ", under 0.1 ms as 0.1" : "",
			 b->sync_max_us / 1e3, a4->sync_max_us / 1e3);
		g->met = hb <= 2 * ha;
	}
}

/* Goal 5: expected-downtime within 2x of the pause (1 ms under 2 ms), every row. */
static void goal_expected(enum src s)
{
	struct goal *g = add_goal(s, 5, "expected-downtime within 2x of the pause, every size");
	if (!g)
		return;
	int n = 0, bad = 0;
	size_t used = 0;
	for (int i = 0; i < n_rows; i++) {
		const struct row *r = &rows[i];
		if (r->qemu || r->s != s || r->skipped || !r->m.n || isnan(r->m.exp_ms) || isnan(r->m.pause_ms))
			continue;
		n++;
		double e = r->m.exp_ms, p = r->m.pause_ms;
		bool ok = p < 2 ? fabs(e - p) <= 1 : e <= 2 * p && e >= p / 2;
		if (!ok) {
			char sz[16];
			if (!bad)
				used += (size_t)snprintf(g->figures + used, sizeof(g->figures) - used, "off at:");
			if (used < sizeof(g->figures))
				used += (size_t)snprintf(g->figures + used, sizeof(g->figures) - used,
							 " %s %s %.2f/%.2f ms;", size_name(sz, sizeof(sz), r->size),
							 wl_name[r->w], e, p);
			bad++;
		}
	}
	if (!n) {
		snprintf(g->figures, sizeof(g->figures), "no completed row");
		return;
	}
	if (!bad)
		snprintf(g->figures, sizeof(g->figures), "all %d rows", n);
	else if (used >= sizeof(g->figures))
		snprintf(g->figures, sizeof(g->figures), "%d of %d rows off", bad, n);
	g->met = bad == 0;
}

static void compute_goals(const struct opts *o)
{
	n_goals = 0;
	for (int s = 0; s < N_SRC; s++) {
		if (!o->src_on[s])
			continue;
		/* The largest paused and hotset rows that ran (completed or not), if above 1T. */
		uint64_t lp = 0, lh = 0;
		for (int i = 0; i < n_rows; i++) {
			const struct row *r = &rows[i];
			if (r->qemu || (int)r->s != s || r->skipped || r->size <= TIB)
				continue;
			if (r->w == W_PAUSED && r->size > lp)
				lp = r->size;
			if (r->w == W_HOTSET && r->size > lh)
				lh = r->size;
		}
		if (o->wl_on[W_PAUSED]) {
			goal_paused((enum src)s, TIB);
			if (lp)
				goal_paused((enum src)s, lp);
		}
		if (o->wl_on[W_HOTSET]) {
			goal_hotset((enum src)s, TIB);
			if (lh)
				goal_hotset((enum src)s, lh);
		}
		goal_expected((enum src)s);
	}
}

static const char *met_word(int met)
{
	return met == 1 ? "met" : met == 0 ? "not met" : "not measured";
}

static void print_goals(const struct opts *o, FILE *f)
{
	for (int s = 0; s < N_SRC; s++) {
		if (!o->src_on[s])
			continue;
		fprintf(f, "\ngoals (issue 12) from this run, dirty source %s:\n", src_name[s]);
		for (int i = 0; i < n_goals; i++)
			if ((int)goals[i].s == s)
				fprintf(f, "  %d. %-56s %-13s %s\n", goals[i].id, goals[i].what, met_word(goals[i].met),
					goals[i].figures);
	}
}

static void print_qemu(const struct opts *o, FILE *f, const char *qver)
{
	if (!o->qemu_on)
		return;
	fprintf(f, "\nQEMU %s side by side: paused never-run guests, -cpu %s, RAM memory-backend-ram reserve=off,\n"
		   "max-bandwidth unlimited for both, other parameters default; pause: QEMU's downtime, livemig's "
		   "downtime-us\n",
		qver, o->qemu_cpu);
	fprintf(f, "%-6s %-14s %9s %9s %9s %6s %-12s\n", "size", "peer", "total ms", "pause ms", "wire MB", "syncs",
		"guest check");
	for (int q = 0; q < o->n_qemu_sizes; q++) {
		uint64_t size = o->qemu_sizes[q];
		char sz[16];
		size_name(sz, sizeof(sz), size);
		const struct row *qr = find_row(size, W_PAUSED, SRC_DEFAULT, true);
		const struct row *list[1 + N_SRC];
		int n = 0;
		if (qr)
			list[n++] = qr;
		for (int s = 0; s < N_SRC; s++) {
			const struct row *lr = o->src_on[s] ? find_row(size, W_PAUSED, (enum src)s, false) : NULL;
			if (lr)
				list[n++] = lr;
		}
		for (int i = 0; i < n; i++) {
			const struct row *r = list[i];
			char peer[32], so[24];
			snprintf(peer, sizeof(peer), "%s", r->qemu ? "qemu" : "livemig ");
			if (!r->qemu)
				strncat(peer, row_source(r, so, sizeof(so)), sizeof(peer) - strlen(peer) - 1);
			fprintf(f, "%-6s %-14s ", i ? "" : sz, peer);
			if (r->skipped || !r->m.n) {
				fprintf(f, "%s\n", r->skipped ? r->skip : r->runs[0].err);
				continue;
			}
			char t[24], p[24], b[24], y[24];
			fprintf(f, "%9s %9s %9s %6s %-12s\n", lm_bench_fmt(t, sizeof(t), r->m.total_ms, 1, 0),
				lm_bench_fmt(p, sizeof(p), r->m.pause_ms, 1, 2), lm_bench_fmt(b, sizeof(b), r->m.bytes, 1e6, 1),
				lm_bench_fmt(y, sizeof(y), r->m.syncs, 1, 0), r->runs[0].guest);
		}
		/* livemig's figures over QEMU's (below 1: livemig better). */
		if (qr && qr->m.n)
			for (int i = 1; i < n; i++)
				if (list[i]->m.n && qr->m.total_ms > 0) {
					char so[24], peer[32], p[24];
					snprintf(peer, sizeof(peer), "ratio %s", row_source(list[i], so, sizeof(so)));
					fprintf(f, "%-6s %-14s %9.4f %9s %9.4f\n", "", peer, list[i]->m.total_ms / qr->m.total_ms,
						qr->m.pause_ms > 0 ? lm_bench_fmt(p, sizeof(p), list[i]->m.pause_ms / qr->m.pause_ms, 1, 3) : "-",
						list[i]->m.bytes / qr->m.bytes);
				}
	}
}

static struct json_object *jd(double v)
{
	return isnan(v) || isinf(v) ? NULL : json_object_new_double(v);
}

static struct json_object *run_json(const struct run *r)
{
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "status", json_object_new_string(r->status));
	json_object_object_add(j, "total-time", jd(r->total_ms));
	json_object_object_add(j, "setup-time", jd(r->setup_ms));
	json_object_object_add(j, "normal-pages", jd(r->normal));
	json_object_object_add(j, "pause-ms", jd(r->pause_ms));
	json_object *bd = json_object_new_object();
	for (int i = 0; i < 4; i++)
		json_object_object_add(bd, part_name[i].json, jd(r->part_ms[i]));
	json_object_object_add(j, "downtime-breakdown", bd);
	json_object_object_add(j, "expected-downtime-ms", jd(r->exp_ms));
	json_object_object_add(j, "expected-downtime-polled", json_object_new_boolean(r->exp_polled));
	json_object_object_add(j, "rounds", jd(r->rounds));
	json_object_object_add(j, "dirty-sync-count", jd(r->syncs));
	json_object_object_add(j, "dirty-sync-us", jd(r->sync_us));
	json_object_object_add(j, "dirty-sync-max-us", jd(r->sync_max_us));
	json_object_object_add(j, "transferred", jd(r->bytes));
	json_object_object_add(j, "kvm-vmalloc-gib", jd(r->kvm_gib));
	json_object_object_add(j, "wall-s", jd(r->wall_s));
	json_object_object_add(j, "dirty-source", json_object_new_string(r->dirty_source));
	json_object_object_add(j, "source-verify", json_object_new_string(r->src_verify));
	json_object_object_add(j, "destination-digest", json_object_new_string(r->digest));
	json_object_object_add(j, "guest-check", json_object_new_string(r->guest));
	if (r->err[0])
		json_object_object_add(j, "error", json_object_new_string(r->err));
	return j;
}

static int write_json(const struct opts *o, const char *date, const char *qver)
{
	struct json_object *root = lm_bench_json_root("sizes", date);
	struct json_object *p = json_object_new_object();
	json_object_object_add(p, "repeat", json_object_new_int(o->repeat));
	json_object_object_add(p, "margin-gib", json_object_new_double(gib(o->margin)));
	json_object_object_add(p, "largest", json_object_new_int64((int64_t)o->largest));
	json_object_object_add(p, "largest-limit", json_object_new_string(o->largest_why));
	json_object_object_add(p, "incoming-mem", json_object_new_boolean(o->has_incoming_mem && !o->no_dest_mem));
	json_object_object_add(p, "dirty-source-flag", json_object_new_boolean(o->has_dirty_source));
	if (o->qemu_on) {
		json_object_object_add(p, "qemu-version", json_object_new_string(qver));
		json_object_object_add(p, "qemu-cpu", json_object_new_string(o->qemu_cpu));
	}
	json_object_object_add(root, "parameters", p);
	struct json_object *arr = json_object_new_array();
	for (int i = 0; i < n_rows; i++) {
		const struct row *r = &rows[i];
		char so[24];
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "size", json_object_new_int64((int64_t)r->size));
		json_object_object_add(j, "workload", json_object_new_string(wl_name[r->w]));
		json_object_object_add(j, "append", json_object_new_string(wl_append[r->w]));
		json_object_object_add(j, "peer", json_object_new_string(r->qemu ? "qemu" : "livemig"));
		json_object_object_add(j, "source", json_object_new_string(r->qemu ? "qemu" : row_source(r, so, sizeof(so))));
		if (r->skipped) {
			json_object_object_add(j, "skipped", json_object_new_string(r->skip));
		} else {
			struct json_object *runs = json_object_new_array();
			for (int k = 0; k < o->repeat; k++)
				if (r->runs[k].done)
					json_object_array_add(runs, run_json(&r->runs[k]));
			json_object_object_add(j, "runs", runs);
			struct json_object *md = json_object_new_object();
			json_object_object_add(md, "completed", json_object_new_int(r->m.n));
			json_object_object_add(md, "checked", json_object_new_int(r->m.checked));
			json_object_object_add(md, "total-time", jd(r->m.total_ms));
			json_object_object_add(md, "pause-ms", jd(r->m.pause_ms));
			json_object_object_add(md, "expected-downtime-ms", jd(r->m.exp_ms));
			json_object_object_add(md, "rounds", jd(r->m.rounds));
			json_object_object_add(md, "dirty-sync-us", jd(r->m.sync_us));
			json_object_object_add(md, "dirty-sync-max-us", jd(r->m.sync_max_us));
			json_object_object_add(md, "transferred", jd(r->m.bytes));
			json_object_object_add(md, "kvm-vmalloc-gib", jd(r->m.kvm_gib));
			json_object_object_add(j, "median", md);
		}
		json_object_array_add(arr, j);
	}
	json_object_object_add(root, "rows", arr);
	struct json_object *ga = json_object_new_array();
	for (int i = 0; i < n_goals; i++) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "source", json_object_new_string(src_name[goals[i].s]));
		json_object_object_add(j, "goal", json_object_new_int(goals[i].id));
		json_object_object_add(j, "check", json_object_new_string(goals[i].what));
		json_object_object_add(j, "figures", json_object_new_string(goals[i].figures));
		json_object_object_add(j, "met", goals[i].met < 0 ? NULL : json_object_new_boolean(goals[i].met));
		json_object_array_add(ga, j);
	}
	json_object_object_add(root, "goals", ga);
	int rc = json_object_to_file_ext(o->json_path, root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	json_object_put(root);
	return rc ? -EIO : 0;
}

/* ------------------------------------------------------------------ */
/* Command line                                                         */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig bench sizes [options]\n"
		"\n"
		"How a migration's cost grows with the guest's size (issue 12): for each guest\n"
		"size, a paused never-run guest and a running hotset guest (workload=hotset\n"
		"wss=256M rate=50M verify=1), each with the KVM dirty log and with the dirty ring\n"
		"(livemig run/incoming --dirty-source), migrated over TCP loopback by `livemig run`\n"
		"and `livemig incoming` with default parameters, driven through their control\n"
		"sockets. Per row: total time, the measured pause (downtime-us), the\n"
		"expected-downtime that decided the switchover, rounds, the last and longest harvest of the\n"
		"dirty log (ram.dirty-sync-us, -max-us), bytes on the wire, the source's\n"
		"completeness check, the destination's RAM digest and the guest's own check on\n"
		"the destination. Then the issue's goals as ratios from this run, met or not.\n"
		"\n"
		"Rows that do not fit are skipped with the reason: KVM needs about %u bytes of\n"
		"kernel memory per 4 KiB page of each VM (2.5 GiB per TiB), and source and\n"
		"destination both exist during a migration; that, the workload's resident pages\n"
		"and --margin must fit in MemAvailable.\n"
		"\n"
		"  --sizes LIST         guest sizes (default 2G,4G,64G,256G,1T,4T,max; 'max': the\n"
		"                       largest multiple of 256G whose migration fits now)\n"
		"  --sources LIST       log,ring (default both; 'default' when the command has\n"
		"                       no --dirty-source)\n"
		"  --workloads LIST     paused,hotset (default both)\n"
		"  --repeat N           runs per row, the median reported (default 1, at most %d)\n"
		"  --quick              --sizes 2G,4G,64G,1T (what `make bench` runs)\n"
		"  --json FILE          every run, the medians and the goals as JSON\n"
		"  --qemu               also QEMU on paused guests (--qemu-sizes, default 64G,256G)\n"
		"  --qemu-sizes LIST    the QEMU rows\n"
		"  --qemu-path PATH     QEMU binary (default $QEMU or qemu-system-x86_64)\n"
		"  --qemu-cpu MODEL     QEMU -cpu; 'auto' (the default) probes (livemig bench qemu-cpu)\n"
		"  --no-dest-mem        do not pass incoming --mem: the destination builds its VM\n"
		"                       when the stream says its size (inside the migration)\n"
		"  --margin SIZE        memory left free beyond the estimate (default 4G)\n"
		"  --timeout S          give up a migration after S seconds (default 180)\n"
		"  --warmup S           hotset guest time before migrating (default 2)\n"
		"  --guest ELF          guest image (default $GUEST_ELF or guest/guest.elf)\n"
		"  --livemig PATH       livemig binary (default: the one next to this program)\n"
		"  --keep               keep each run's folder (consoles, logs) under /tmp\n"
		"  -v, --verbose        commands, QMP traffic and memory waits on stderr\n"
		"\n"
		"Exit status: 0 when every livemig run that was not skipped completed and passed\n"
		"all three checks (goals not met are data, not errors); 1 otherwise; 2 for bad\n"
		"usage.\n",
		LM_VM_KVM_BYTES_PER_PAGE, MAX_REPEAT);
}

/* A comma list of sizes ("max" allowed when max_ok); ascending, no repeats. */
static int parse_sizes(const char *list, uint64_t *out, int *n, bool max_ok, bool *want_max)
{
	char *dup = strdup(list);
	if (!dup)
		return -ENOMEM;
	*n = 0;
	if (want_max)
		*want_max = false;
	int rc = 0;
	for (char *save = NULL, *w = strtok_r(dup, ",", &save); w && !rc; w = strtok_r(NULL, ",", &save)) {
		uint64_t v = 0;
		if (max_ok && !strcmp(w, "max")) {
			*want_max = true;
			continue;
		}
		if (lm_cli_parse_size(w, &v) || v < (2ull << 20) || v > MAX_GUEST || v % 4096 || *n >= MAX_SIZES - 1)
			rc = -EINVAL;
		else
			out[(*n)++] = v;
	}
	free(dup);
	if (rc)
		return rc;
	/* Sort, drop repeats. */
	for (int i = 1; i < *n; i++)
		for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
			uint64_t t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	int k = 0;
	for (int i = 0; i < *n; i++)
		if (!k || out[k - 1] != out[i])
			out[k++] = out[i];
	*n = k;
	return 0;
}

/* Sets on[i] for each name of names[] in list; -EINVAL on an unknown one. */
static int parse_names(const char *list, const char *const *names, int n, bool *on)
{
	char *dup = strdup(list);
	if (!dup)
		return -ENOMEM;
	for (int i = 0; i < n; i++)
		on[i] = false;
	int rc = 0, any = 0;
	for (char *save = NULL, *w = strtok_r(dup, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		int k = 0;
		while (k < n && strcmp(w, names[k]))
			k++;
		if (k == n)
			rc = -EINVAL;
		else
			on[k] = true, any++;
	}
	free(dup);
	return rc ? rc : any ? 0 : -EINVAL;
}

/* Whether `livemig SUB --help` mentions word. */
static bool help_has(const char *livemig, const char *sub, const char *word)
{
	char cmd[4300];
	snprintf(cmd, sizeof(cmd), "'%s' %s --help 2>&1", livemig, sub);
	FILE *p = popen(cmd, "r");
	if (!p)
		return false;
	char line[512];
	bool found = false;
	while (fgets(line, sizeof(line), p))
		if (strstr(line, word))
			found = true;
	pclose(p);
	return found;
}

/* Adds "max" to the sizes once it is known, in order. */
static void add_largest(struct opts *o)
{
	if (!o->want_max || !o->largest)
		return;
	for (int i = 0; i < o->n_sizes; i++)
		if (o->sizes[i] == o->largest)
			return;
	int i = o->n_sizes++;
	while (i > 0 && o->sizes[i - 1] > o->largest) {
		o->sizes[i] = o->sizes[i - 1];
		i--;
	}
	o->sizes[i] = o->largest;
}

int lm_bench_sizes(int argc, char **argv)
{
	struct opts o = {
		.repeat = 1,
		.qemu_cpu = "auto",
		.margin = 4 * GIB,
		.timeout_s = 180,
		.warmup_s = 2,
		.verify_timeout_s = 60,
		.start_timeout_s = 180,
		.wl_on = { true, true },
	};
	const char *sizes = "2G,4G,64G,256G,1T,4T,max", *sources = NULL, *qsizes = "64G,256G";
	o.qemu = getenv("QEMU") && *getenv("QEMU") ? getenv("QEMU") : "qemu-system-x86_64";
	o.guest = getenv("GUEST_ELF") && *getenv("GUEST_ELF") ? getenv("GUEST_ELF") : "guest/guest.elf";
	lm_bench_livemig(o.livemig, sizeof(o.livemig));

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool bad = false, takes = true;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--quick") || !strcmp(a, "--qemu") || !strcmp(a, "--keep") || !strcmp(a, "-v") ||
			   !strcmp(a, "--verbose") || !strcmp(a, "--no-dest-mem")) {
			takes = false;
			if (!strcmp(a, "--no-dest-mem"))
				o.no_dest_mem = true;
			else if (!strcmp(a, "--quick"))
				sizes = "2G,4G,64G,1T";
			else if (!strcmp(a, "--qemu"))
				o.qemu_on = true;
			else if (!strcmp(a, "--keep"))
				o.keep = true;
			else
				o.verbose = true;
		} else if (!v) {
			fprintf(stderr, "livemig bench sizes: %s needs a value (--help)\n", a);
			return 2;
		} else if (!strcmp(a, "--sizes")) {
			sizes = v;
		} else if (!strcmp(a, "--sources")) {
			sources = v;
		} else if (!strcmp(a, "--workloads")) {
			bad = parse_names(v, wl_name, N_WL, o.wl_on) != 0;
		} else if (!strcmp(a, "--repeat")) {
			o.repeat = atoi(v);
			bad = o.repeat < 1 || o.repeat > MAX_REPEAT;
		} else if (!strcmp(a, "--json")) {
			o.json_path = v;
		} else if (!strcmp(a, "--qemu-sizes")) {
			qsizes = v;
		} else if (!strcmp(a, "--qemu-path")) {
			o.qemu = v;
		} else if (!strcmp(a, "--qemu-cpu")) {
			o.qemu_cpu = v;
		} else if (!strcmp(a, "--margin")) {
			bad = lm_cli_parse_size(v, &o.margin) != 0;
		} else if (!strcmp(a, "--timeout")) {
			bad = lm_bench_parse_double(v, &o.timeout_s, 1) != 0;
		} else if (!strcmp(a, "--warmup")) {
			bad = lm_bench_parse_double(v, &o.warmup_s, 0) != 0;
		} else if (!strcmp(a, "--guest")) {
			o.guest = v;
		} else if (!strcmp(a, "--livemig")) {
			snprintf(o.livemig, sizeof(o.livemig), "%s", v);
		} else {
			fprintf(stderr, "livemig bench sizes: unknown option '%s' (--help)\n", a);
			return 2;
		}
		if (takes)
			i++;
		if (bad) {
			fprintf(stderr, "livemig bench sizes: bad value for %s: '%s'\n", a, v);
			return 2;
		}
	}
	if (parse_sizes(sizes, o.sizes, &o.n_sizes, true, &o.want_max)) {
		fprintf(stderr, "livemig bench sizes: bad --sizes '%s' (e.g. 4G,64G,1T,max; 2M..16T)\n", sizes);
		return 2;
	}
	if (o.qemu_on && parse_sizes(qsizes, o.qemu_sizes, &o.n_qemu_sizes, false, NULL)) {
		fprintf(stderr, "livemig bench sizes: bad --qemu-sizes '%s'\n", qsizes);
		return 2;
	}
	if (access(o.guest, R_OK)) {
		fprintf(stderr, "livemig bench sizes: guest image %s: %s (make guest/guest.elf, or --guest)\n", o.guest,
			strerror(errno));
		return 2;
	}
	char guest_abs[4096];
	if (realpath(o.guest, guest_abs))
		o.guest = guest_abs;
	if (access(o.livemig, X_OK)) {
		fprintf(stderr, "livemig bench sizes: %s: %s (--livemig)\n", o.livemig, strerror(errno));
		return 2;
	}

	/* What this livemig offers. */
	o.has_dirty_source = help_has(o.livemig, "run", "--dirty-source");
	o.has_paused = help_has(o.livemig, "run", "--paused");
	o.has_incoming_mem = help_has(o.livemig, "incoming", "--mem ");
	o.has_incoming_dirty = help_has(o.livemig, "incoming", "--dirty-source");
	if (sources) {
		if (parse_names(sources, src_name, N_SRC, o.src_on)) {
			fprintf(stderr, "livemig bench sizes: bad --sources '%s' (log,ring)\n", sources);
			return 2;
		}
		if (!o.has_dirty_source && (o.src_on[SRC_LOG] || o.src_on[SRC_RING])) {
			fprintf(stderr, "livemig bench sizes: %s run has no --dirty-source: the default source only\n",
				o.livemig);
			o.src_on[SRC_LOG] = o.src_on[SRC_RING] = false;
			o.src_on[SRC_DEFAULT] = true;
		}
	} else if (o.has_dirty_source) {
		o.src_on[SRC_LOG] = o.src_on[SRC_RING] = true;
	} else {
		o.src_on[SRC_DEFAULT] = true;
	}

	if (o.qemu_on && !lm_bench_in_path(o.qemu)) {
		fprintf(stderr, "livemig bench sizes: --qemu: %s not found; QEMU rows left out\n", o.qemu);
		o.qemu_on = false;
	}
	if (o.qemu_on && !strcmp(o.qemu_cpu, "auto")) {
		int err = lm_bench_qemu_cpu_probe(&o.qemu_cpu_probe, o.qemu, o.guest, LM_QEMU_CPU_TIMEOUT_S);
		if (err) {
			lm_bench_qemu_cpu_report(&o.qemu_cpu_probe, stderr, "qemu-cpu: ");
			fprintf(stderr, "livemig bench sizes: no QEMU -cpu model boots here (%s); QEMU rows left out\n",
				strerror(-err));
			o.qemu_on = false;
		} else {
			o.qemu_cpu = o.qemu_cpu_probe.tries[o.qemu_cpu_probe.chosen].model;
			o.qemu_cpu_probed = true;
		}
	}

	/* Interrupted: kill the children, remove their sockets. */
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	char date[64], cpu[256], qver[300] = "-";
	long ncpu;
	double memg;
	time_t tnow = time(NULL);
	struct tm tm;
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M %Z", localtime_r(&tnow, &tm));
	lm_bench_machine_info(cpu, sizeof(cpu), &ncpu, &memg);
	if (o.qemu_on)
		lm_bench_qemu_version(o.qemu, qver, sizeof(qver));
	uint64_t avail, vm;
	meminfo(&avail, &vm);
	o.largest = largest_fit(&o, o.largest_why, sizeof(o.largest_why));
	add_largest(&o);

	printf("bench sizes: %s; %ld cpus (%s), %.0f GiB; MemAvailable %.1f GiB, VmallocUsed %.2f GiB\n", date, ncpu,
	       cpu, memg, gib(avail), gib(vm));
	printf("livemig %s: default parameters, TCP loopback; destination %s; dirty source %s\n", o.livemig,
	       o.has_incoming_mem && !o.no_dest_mem ? "built before it listens (incoming --mem)"
						    : "built when the stream says its size",
	       o.has_dirty_source ? "by run/incoming --dirty-source" : "the command's default (no --dirty-source)");
	char lg[16];
	if (o.want_max && o.largest)
		printf("largest guest whose migration fits: %s (both VMs' KVM metadata %.1f GiB + margin %.1f GiB); "
		       "bigger: %s\n",
		       size_name(lg, sizeof(lg), o.largest), gib(2 * kvm_bytes(o.largest)), gib(o.margin),
		       o.largest_why);
	else if (o.want_max)
		printf("largest guest: none fits (%s)\n", o.largest_why);
	if (o.qemu_on)
		printf("QEMU %s -cpu %s (%s)\n", qver, o.qemu_cpu, o.qemu_cpu_probed ? "probe" : "--qemu-cpu");
	printf("%d run(s) per row\n", o.repeat);
	fflush(stdout);

	/* The rows, in order: sizes, then workloads, then sources; QEMU last. */
	n_rows = 0;
	for (int si = 0; si < o.n_sizes; si++)
		for (int w = 0; w < N_WL; w++)
			for (int s = 0; s < N_SRC; s++) {
				if (!o.wl_on[w] || !o.src_on[s])
					continue;
				struct row *r = &rows[n_rows++];
				memset(r, 0, sizeof(*r));
				r->size = o.sizes[si];
				r->w = (enum wl)w;
				r->s = (enum src)s;
			}
	if (o.qemu_on)
		for (int q = 0; q < o.n_qemu_sizes; q++) {
			struct row *r = &rows[n_rows++];
			memset(r, 0, sizeof(*r));
			r->size = o.qemu_sizes[q];
			r->w = W_PAUSED;
			r->s = SRC_DEFAULT;
			r->qemu = true;
		}

	int bad = 0;
	for (int i = 0; i < n_rows; i++) {
		struct row *row = &rows[i];
		char sz[16], so[24];
		size_name(sz, sizeof(sz), row->size);
		if (row->w == W_PAUSED && !o.has_paused && !row->qemu) {
			row->skipped = true;
			snprintf(row->skip, sizeof(row->skip), "livemig run has no --paused");
		}
		for (int k = 0; k < o.repeat && !row->skipped; k++) {
			if (fits_soon(&o, row->size, row->w, row->skip, sizeof(row->skip))) {
				/* Only when nothing ran: a later repetition that no
				 * longer fits ends the row. */
				row->skipped = k == 0;
				if (!row->skipped)
					fprintf(stdout, "  %s %s: run %d skipped: %s\n", sz, wl_name[row->w], k + 1, row->skip);
				break;
			}
			struct run *r = &row->runs[k];
			run_one(&o, row, r);
			char t[24], p[24], e[24], n[24], h[24], b[24], kv[24];
			printf("  %-6s %-7s %-8s #%d: %-9s total %s ms, pause %s ms, expected %s ms%s, %s rounds, "
			       "harvest %s ms, %s MB, check %s/%s/%s, kvm %s GiB [%.1f s]\n",
			       sz, wl_name[row->w], row->qemu ? "qemu" : src_name[row->s], k + 1, r->status,
			       lm_bench_fmt(t, sizeof(t), r->total_ms, 1, r->total_ms < 100 ? 2 : 0),
			       lm_bench_fmt(p, sizeof(p), r->pause_ms, 1, 2),
			       lm_bench_fmt(e, sizeof(e), r->exp_ms, 1, 2), r->exp_polled ? "" : "*",
			       lm_bench_fmt(n, sizeof(n), r->rounds, 1, 0), lm_bench_fmt(h, sizeof(h), r->sync_us, 1e3, 3),
			       lm_bench_fmt(b, sizeof(b), r->bytes, 1e6, 1), r->src_verify, r->digest, r->guest,
			       lm_bench_fmt(kv, sizeof(kv), r->kvm_gib, 1, 2), r->wall_s);
			if (!isnan(r->part_ms[0]))
				printf("      pause: stop %.2f + device state %.2f + ram %.2f + result %.2f ms; "
				       "setup %.0f ms, %.0f data pages sent\n",
				       r->part_ms[0], r->part_ms[1], r->part_ms[2], r->part_ms[3], r->setup_ms, r->normal);
			if (r->err[0])
				printf("      %s\n", r->err);
			fflush(stdout);
			if (!row->qemu && !run_ok(r, false))
				bad++;
			/* A failed migration of a huge guest is the row's result:
			 * repeating it costs minutes of KVM setup for the same text. */
			if (strcmp(r->status, "completed") && k + 1 < o.repeat) {
				printf("      (row not repeated after a failed run)\n");
				break;
			}
		}
		if (row->skipped) {
			printf("  %-6s %-7s %-8s skipped: %s\n", sz, wl_name[row->w],
			       row->qemu ? "qemu" : row_source(row, so, sizeof(so)), row->skip);
			fflush(stdout);
		}
		summarize(row, o.repeat);
	}

	print_table(&o, stdout);
	compute_goals(&o);
	print_goals(&o, stdout);
	print_qemu(&o, stdout, qver);
	int rc = bad ? 1 : 0;
	if (o.json_path) {
		if (write_json(&o, date, qver)) {
			fprintf(stderr, "livemig bench sizes: writing %s failed\n", o.json_path);
			rc = 1;
		} else {
			printf("wrote %s\n", o.json_path);
		}
	}
	return rc;
}
