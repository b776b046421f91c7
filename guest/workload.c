/*
 * The ring-3 program: parse the command line, calibrate the clock, set
 * up the checkable memory, then run one workload forever, interleaved
 * with housekeeping: a progress line about once a second, polling the
 * VMM's verify-request counter a few times a second, periodic checks and
 * the power-off at exit_after.
 *
 * Workloads do bounded steps (at most STEP_PAGES pages) so housekeeping
 * is never late by more than a few milliseconds, and paced workloads
 * sleep between batches instead of spinning.
 */
#include "work.h"

#define STEP_PAGES 256
#define POLL_MS 100
#define MIN_SLEEP_MS 2
#define MAX_LAG_MS 500

static struct {
	bool pv;
	u64 t0;
	u64 next_progress, next_poll, next_verify, exit_at;
	u64 last_tsc, tsc_back;
	u32 last_req;
	u64 verifies, fails;
	u64 prev_writes, prev_reads, prev_t;
	/* workload state */
	u64 cursor, count;
	u64 pace_t0, paced, tpp;
	u64 next_period;
	bool in_burst, setup_done, selftested;
	u64 rng;
	u64 init_ms[2]; /* clock calibration, memory preparation */
} S;

static u64 rnd(void)
{
	/* xorshift64* */
	S.rng ^= S.rng >> 12;
	S.rng ^= S.rng << 25;
	S.rng ^= S.rng >> 27;
	return S.rng * 0x2545f4914f6cdd1dull;
}

static void power_off(u32 status)
{
	if (S.pv)
		outl(LM_PV_POWEROFF, status);
	outb(LM_QEMU_DEBUG_EXIT, (u8)status);
	gprintf("livemig-guest: power-off did not happen; halting\n");
	syscall1(SYS_HALT, 0);
	for (;;)
		cpu_relax();
}

static bool run_verify(const char *why)
{
	gprintf("verify start reason=%s\n", why);
	bool ok = verify_all();
	S.verifies++;
	if (!ok)
		S.fails++;
	return ok;
}

static void print_time(char *buf, size_t size, u64 now)
{
	u64 ms = (now - S.t0) / (tsc_hz / 1000);
	gsnprintf(buf, size, "%llu.%03llu", (unsigned long long)(ms / 1000),
		  (unsigned long long)(ms % 1000));
}

static void progress(u64 now)
{
	char t[32];
	print_time(t, sizeof(t), now);
	u64 w = lm_guest_ctl.writes, r = lm_guest_ctl.reads;
	u64 dt_ms = (now - S.prev_t) / (tsc_hz / 1000);
	u64 wps = dt_ms ? (w - S.prev_writes) * 1000 / dt_ms : 0;
	u64 rps = dt_ms ? (r - S.prev_reads) * 1000 / dt_ms : 0;
	bool fpu = fpu_canary_check(true);
	if (!fpu)
		S.fails++;
	gprintf("progress t=%s writes=%llu reads=%llu wps=%llu rps=%llu verifies=%llu fails=%llu fpu=%s\n",
		t, (unsigned long long)w, (unsigned long long)r, (unsigned long long)wps,
		(unsigned long long)rps, (unsigned long long)S.verifies, (unsigned long long)S.fails,
		fpu ? "ok" : "FAIL");
	S.prev_writes = w;
	S.prev_reads = r;
	S.prev_t = now;
}

static void finish(void)
{
	if (P.verify)
		run_verify("exit");
	u32 status = S.fails ? 1 : 0;
	gprintf("livemig-guest: exit status=%u writes=%llu verifies=%llu fails=%llu\n", status,
		(unsigned long long)lm_guest_ctl.writes, (unsigned long long)S.verifies,
		(unsigned long long)S.fails);
	power_off(status);
}

/* Housekeeping; returns the TSC time it next has something to do. */
static u64 service(void)
{
	u64 now = rdtsc();
	if (now < S.last_tsc) {
		S.tsc_back++;
		gprintf("livemig-guest: warning: TSC went backwards by %llu cycles\n",
			(unsigned long long)(S.last_tsc - now));
	}
	S.last_tsc = now;
	if (P.progress_ms && now >= S.next_progress) {
		progress(now);
		S.next_progress += ms_to_tsc(P.progress_ms);
		if (S.next_progress <= now)
			S.next_progress = now + ms_to_tsc(P.progress_ms);
	}
	/* The self-test damages pages a second into the run, so that the
	 * workload has written some pages more than once by then. */
	if (P.selftest != ST_NONE && !S.selftested && S.setup_done &&
	    now >= S.t0 + ms_to_tsc(1000)) {
		S.selftested = true;
		selftest_run(P.selftest, rnd());
		run_verify("selftest");
		now = rdtsc();
	}
	if (S.pv && now >= S.next_poll && S.setup_done) {
		u32 req = inl(LM_PV_VERIFY_REQ);
		if (req != S.last_req) {
			bool ok = run_verify("request");
			outl(LM_PV_VERIFY_RESULT, ok ? 0 : 1);
			outl(LM_PV_VERIFY_DONE, req);
			S.last_req = req;
		}
		now = rdtsc();
		S.next_poll = now + ms_to_tsc(POLL_MS);
	}
	if (P.verify_every && now >= S.next_verify && S.setup_done) {
		run_verify("periodic");
		now = rdtsc();
		S.next_verify = now + ms_to_tsc(P.verify_every * 1000);
	}
	if (P.exit_after && now >= S.exit_at)
		finish();
	u64 balloon_next = balloon_service(now);

	u64 next = balloon_next;
	if (P.progress_ms && S.next_progress < next)
		next = S.next_progress;
	if (S.pv && S.next_poll < next)
		next = S.next_poll;
	if (P.verify_every && S.next_verify < next)
		next = S.next_verify;
	if (P.exit_after && S.exit_at < next)
		next = S.exit_at;
	if (P.selftest != ST_NONE && !S.selftested && S.t0 + ms_to_tsc(1000) < next)
		next = S.t0 + ms_to_tsc(1000);
	return next;
}

static void setup_done(void)
{
	if (S.setup_done)
		return;
	S.setup_done = true;
	if (P.verify)
		run_verify("setup");
}

static void do_page(u64 n)
{
	switch (P.workload) {
	case W_HOTSET:
		page_write(rnd() % S.count);
		break;
	case W_STREAM:
		page_write(S.cursor);
		S.cursor = (S.cursor + 1) % S.count;
		break;
	case W_SEQREAD:
		page_read(S.cursor);
		S.cursor = (S.cursor + 1) % S.count;
		break;
	case W_MIXED:
		if (rnd() % 100 < P.wpct)
			page_write(S.cursor);
		else
			page_read(S.cursor);
		S.cursor = (S.cursor + 1) % S.count;
		break;
	}
	(void)n;
}

/*
 * Paced workloads: page k is due at pace_t0 + k * tpp. After a pause (a
 * stopped VM, a slow migration round) the backlog beyond MAX_LAG_MS is
 * dropped rather than written in one burst.
 */
static u64 step_paced(u64 now)
{
	u64 due = S.pace_t0 + S.paced * S.tpp;
	if (S.tpp && now > due + ms_to_tsc(MAX_LAG_MS))
		S.pace_t0 += now - due;
	unsigned n = 0;
	while (n < STEP_PAGES && (S.tpp == 0 || S.pace_t0 + S.paced * S.tpp <= now)) {
		do_page(S.paced);
		S.paced++;
		n++;
	}
	if (n == STEP_PAGES)
		return 0;
	u64 next = S.pace_t0 + S.paced * S.tpp;
	u64 min = now + ms_to_tsc(MIN_SLEEP_MS);
	return next > min ? next : min;
}

/* contig and alternate: rewrite the region as fast as possible once per
 * period, then wait for the next period. */
static u64 step_periodic(u64 now)
{
	if (!S.in_burst) {
		if (now < S.next_period)
			return S.next_period;
		S.in_burst = true;
		S.cursor = 0;
		S.next_period += ms_to_tsc(P.period_ms);
		if (S.next_period <= now)
			S.next_period = now + ms_to_tsc(P.period_ms);
	}
	for (unsigned n = 0; n < STEP_PAGES && S.cursor < S.count; n++, S.cursor++)
		page_write(P.workload == W_ALTERNATE ? 2 * S.cursor : S.cursor);
	if (S.cursor == S.count)
		S.in_burst = false;
	return 0;
}

static u64 step(u64 now)
{
	switch (P.workload) {
	case W_MEMTOUCH:
		if (S.cursor < S.count) {
			for (unsigned n = 0; n < STEP_PAGES && S.cursor < S.count; n++)
				page_write(S.cursor++);
			if (S.cursor == S.count) {
				u64 ms = (rdtsc() - S.t0) / (tsc_hz / 1000);
				gprintf("memtouch done pages=%llu ms=%llu\n", (unsigned long long)S.count,
					(unsigned long long)ms);
				setup_done();
			}
			return 0;
		}
		return ~0ull;
	case W_HOTSET:
	case W_STREAM:
	case W_SEQREAD:
	case W_MIXED:
		return step_paced(now);
	case W_CONTIG:
	case W_ALTERNATE:
		return step_periodic(now);
	default:
		return ~0ull;
	}
}

static u64 pages_of(u64 bytes)
{
	u64 p = bytes / PAGE_SIZE;
	if (p > M.npages)
		p = M.npages;
	return p ? p : 1;
}

extern u64 boot_tsc_entry;

static void banner(void)
{
	char mem[24], used[24], wss[24], rate[24], ram[24];
	if (P.mem)
		fmt_size(mem, sizeof(mem), P.mem);
	else
		gsnprintf(mem, sizeof(mem), "all");
	fmt_size(used, sizeof(used), (M.npages + M.table_pages + M.summary_pages) * PAGE_SIZE);
	fmt_size(wss, sizeof(wss), P.wss);
	fmt_size(rate, sizeof(rate), P.rate);
	fmt_size(ram, sizeof(ram), g_boot.ram_top);
	gprintf("livemig-guest: workload=%s mem=%s wss=%s rate=%s seed=%llu verify=%u "
		"verify_every=%llu exit_after=%llu selftest=%s period=%llu zerocheck=%u sleep=%s "
		"progress=%llu wpct=%u\n",
		workload_name(P.workload), mem, wss, rate, (unsigned long long)P.seed, P.verify,
		(unsigned long long)P.verify_every, (unsigned long long)P.exit_after,
		selftest_name(P.selftest), (unsigned long long)P.period_ms, memory_zerocheck(),
		clock_has_timer() ? "hlt" : "spin", (unsigned long long)P.progress_ms, P.wpct);
	gprintf("livemig-guest: ram_top=%s used=%s pages=%llu table_pages=%llu first_page=%#llx "
		"tsc_hz=%llu lapic_hz=%llu avx=%u gbpages=%u pv=%u ctl=%p boot_ms=%llu,%llu,%llu,%llu init_ms=%llu,%llu\n",
		ram, used, (unsigned long long)M.npages, (unsigned long long)M.table_pages,
		(unsigned long long)(M.n ? M.r[0].start : 0), (unsigned long long)tsc_hz,
		(unsigned long long)clock_lapic_hz(), g_boot.avx, g_boot.gbpages, S.pv,
		(void *)&lm_guest_ctl, (unsigned long long)(boot_tsc_entry / (tsc_hz / 1000)),
		(unsigned long long)(g_boot.tsc_boot_main / (tsc_hz / 1000)),
		(unsigned long long)(g_boot.tsc_user / (tsc_hz / 1000)),
		(unsigned long long)(S.t0 / (tsc_hz / 1000)), (unsigned long long)S.init_ms[0],
		(unsigned long long)S.init_ms[1]);
}

void user_main(void)
{
	params_parse(g_boot.cmdline);
	S.pv = inl(LM_PV_ID) == LM_PV_MAGIC;
	u64 ta = rdtsc();
	clock_init(P.hlt);
	u64 tb = rdtsc();
	fpu_canary_init(P.seed);
	S.rng = mix64(P.seed) | 1;
	memory_init(P.mem, !S.pv);
	S.init_ms[0] = (tb - ta) / (tsc_hz / 1000);
	S.init_ms[1] = (rdtsc() - tb) / (tsc_hz / 1000);
	if (!M.npages)
		power_off(0x7e);

	S.t0 = rdtsc();
	S.last_tsc = S.prev_t = S.t0;
	S.next_progress = S.t0 + ms_to_tsc(P.progress_ms);
	S.next_poll = S.t0;
	S.next_verify = S.t0 + ms_to_tsc(P.verify_every * 1000);
	S.exit_at = S.t0 + ms_to_tsc(P.exit_after * 1000);
	S.pace_t0 = S.t0;
	S.next_period = S.t0;
	S.tpp = P.rate ? tsc_hz * PAGE_SIZE / P.rate : 0;
	if (S.tpp == 0 && P.rate)
		S.tpp = 1;

	switch (P.workload) {
	case W_HOTSET:
	case W_CONTIG:
		S.count = pages_of(P.wss);
		break;
	case W_ALTERNATE:
		/* wss pages written, every other page of twice the span. */
		S.count = pages_of(P.wss);
		if (2 * S.count > M.npages)
			S.count = M.npages / 2 ? M.npages / 2 : 1;
		break;
	default:
		S.count = M.npages;
		break;
	}
	banner();
	balloon_init(S.pv);
	if (P.workload != W_MEMTOUCH)
		setup_done();

	for (;;) {
		u64 next = service();
		u64 now = rdtsc();
		u64 wake = step(now);
		if (wake == 0)
			continue;
		if (wake > next)
			wake = next;
		if (wake > rdtsc())
			sleep_until(wake);
	}
}
