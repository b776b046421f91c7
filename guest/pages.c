/*
 * Self-verifying guest memory.
 *
 * Workload: pages are rewritten one at a time (hotset: random pages in a
 * working set; stream/contig/alternate/mixed: sequential sweeps), a
 * checker reads all of them now and then, and a migration may copy any of
 * them at any moment. A page's content is a function of (page frame
 * number, version, seed), so the checker needs one number per page to
 * know what a page must hold: the version table, a u32 per data page in
 * pages of its own (0.1% of the memory, and untouched until pages are
 * written, so an idle 1 TiB guest stays sparse). Version 0 means "never
 * written": such a page must read as zero.
 *
 * Write order for page i from version v-1 to v (each step a plain store,
 * which x86 makes visible in program order):
 *   1. ctl.inflight_version = v, ctl.inflight_index = i
 *   2. body words 2..511 of version v
 *   3. header word 0 (tag | pfn), then header word 1 (tag | v)
 *   4. table[i] = v
 *   5. ctl.writes++ (so sum(table) == writes)
 *   6. ctl.inflight_index = none
 * A page whose header says v therefore holds all of version v; a page
 * whose header is older than the table lost a write (stale page); a
 * header newer than the table means the table lost a write; the sum of
 * the table against ctl.writes catches a table page that lost updates in
 * step with its data pages. Only the page named in the in-flight record
 * may be torn (a mix of v-1 and v words, header v-1 or v). The guest's own
 * checker runs between writes, so it never sees a torn page: a migration
 * that stops the guest mid-write resumes it on the destination, where the
 * write completes. The in-flight rules are for checking a snapshot.
 */
#include "work.h"

#define HDR0_TAG (0x4c4dull << 48)
#define HDR1_TAG (0x5645ull << 48)
#define HDR0(pfn) (HDR0_TAG | (pfn))
#define HDR1(v) (HDR1_TAG | (u64)(v))
#define MAX_DETAIL 4

struct memory M;
struct guest_ctl lm_guest_ctl;
#define C lm_guest_ctl

static bool zerocheck;
static u64 fail_lines;

static inline u64 body_seed(u64 pfn, u32 v)
{
	return mix64(pfn * 0x9e3779b97f4a7c15ull ^ mix64((u64)v ^ C.seed_mix));
}

/* A 64-bit LCG with an xorshift on the output: one multiply per word,
 * and data that no compressor can shrink. */
static inline u64 body_next(u64 *x)
{
	*x = *x * 6364136223846793005ull + 1442695040888963407ull;
	return *x ^ (*x >> 29);
}

static void fill_body(u64 *p, u64 pfn, u32 v)
{
	u64 x = body_seed(pfn, v);
	for (unsigned i = 2; i < PAGE_WORDS; i++)
		p[i] = body_next(&x);
}

/* First body word that is not version v's, or PAGE_WORDS. */
static unsigned check_body(const u64 *p, u64 pfn, u32 v, u64 *expected)
{
	u64 x = body_seed(pfn, v);
	for (unsigned i = 2; i < PAGE_WORDS; i++) {
		u64 e = body_next(&x);
		if (p[i] != e) {
			*expected = e;
			return i;
		}
	}
	return PAGE_WORDS;
}

static bool all_zero(const u64 *p, unsigned *word);

static unsigned scrub(u64 *p)
{
	unsigned w;
	if (all_zero(p, &w))
		return 0;
	memset(p, 0, PAGE_SIZE);
	return 1;
}

void memory_init(u64 mem, bool scrub_table)
{
	u64 total = 0;
	for (unsigned i = 0; i < g_boot.nram; i++)
		total += (g_boot.ram[i].end - g_boot.ram[i].start) / PAGE_SIZE;
	u64 limit = mem ? mem / PAGE_SIZE : total;
	if (limit > total) {
		gprintf("livemig-guest: warning: mem is more than the %llu free pages\n",
			(unsigned long long)total);
		limit = total;
	}
	/* limit = summary + table + data pages, with 1024 entries per table
	 * page: ceil(limit / 1025) table pages leave room for the rest. */
	u64 tpages = (limit + 1024) / 1025;

	struct range r[MAX_RANGES];
	unsigned n = 0;
	u64 left = limit;
	for (unsigned i = 0; i < g_boot.nram && left; i++) {
		u64 pages = (g_boot.ram[i].end - g_boot.ram[i].start) / PAGE_SIZE;
		if (pages > left)
			pages = left;
		r[n].start = g_boot.ram[i].start;
		r[n].end = r[n].start + pages * PAGE_SIZE;
		n++;
		left -= pages;
	}
	/* The summary (a bit per table page) and the table must be
	 * contiguous: take them from the first range that can hold both. */
	u64 spages = (tpages + 32767) / 32768;
	for (unsigned i = 0; i < n; i++) {
		if ((r[i].end - r[i].start) / PAGE_SIZE >= spages + tpages) {
			M.summary = (u64 *)(uintptr_t)r[i].start;
			M.table = (u32 *)(uintptr_t)(r[i].start + spages * PAGE_SIZE);
			r[i].start += (spages + tpages) * PAGE_SIZE;
			break;
		}
	}
	M.summary_pages = spages;
	M.table_pages = tpages;
	if (!M.table)
		tpages = spages = 0;
	M.n = 0;
	M.npages = 0;
	for (unsigned i = 0; i < n; i++) {
		if (r[i].start >= r[i].end)
			continue;
		M.r[M.n] = r[i];
		M.first[M.n] = M.npages;
		M.npages += (r[i].end - r[i].start) / PAGE_SIZE;
		M.n++;
	}
	if (!M.table || !M.npages) {
		gprintf("livemig-guest: error: not enough memory for the workload\n");
		M.npages = 0;
	}
	M.limit = M.npages;
	M.dropped = 0;
	M.spare_pages = total - limit;

	/*
	 * Firmware may leave data in RAM it reports as free (SeaBIOS under
	 * QEMU does, near the top of low memory). The version table must
	 * start out all zero, and so must every data page if never-written
	 * pages are to be checked. Pages are read and only the non-zero ones
	 * written, so an idle guest stays untouched.
	 */
	u64 scrubbed = 0;
	if (scrub_table) {
		for (u64 i = 0; i < spages; i++)
			scrubbed += scrub(M.summary + i * PAGE_WORDS);
		for (u64 i = 0; i < tpages; i++)
			scrubbed += scrub((u64 *)(uintptr_t)M.table + i * PAGE_WORDS);
	}
	zerocheck = P.zerocheck < 0 ? scrub_table && M.npages * PAGE_SIZE <= (4ull << 30)
				    : P.zerocheck;
	if (zerocheck)
		for (unsigned i = 0; i < M.n; i++)
			for (u64 a = M.r[i].start; a < M.r[i].end; a += PAGE_SIZE)
				scrubbed += scrub((u64 *)(uintptr_t)a);
	if (scrubbed)
		gprintf("livemig-guest: zeroed %llu pages the firmware left non-zero\n",
			(unsigned long long)scrubbed);
	C.table_addr = (u64)(uintptr_t)M.table;
	C.summary_addr = (u64)(uintptr_t)M.summary;
	C.table_pages = M.table_pages;
	C.npages = M.npages;
	C.nranges = M.n;
	for (unsigned i = 0; i < M.n; i++)
		C.ranges[i] = M.r[i];
	C.seed_mix = mix64(P.seed ^ 0x6c6976656d6967ull);
	C.inflight_index = INFLIGHT_NONE;
	C.balloon_limit = M.limit;
	C.balloon_dropped = 0;
	C.magic = CTL_MAGIC;
}

bool memory_zerocheck(void)
{
	return zerocheck;
}

u64 page_addr(u64 idx)
{
	unsigned i = M.n - 1;
	while (i > 0 && idx < M.first[i])
		i--;
	return M.r[i].start + (idx - M.first[i]) * PAGE_SIZE;
}

/*
 * The balloon takes data pages from the top, one at a time and in order
 * (memory_give(limit - 1)), and gives them back in the reverse order. A
 * page in the balloon is not the workload's: page_write and page_read
 * pass it over and the checker ignores it. Its table entry goes to zero
 * (the host discards the page, so it reads zero when it comes back, which
 * is what version 0 means) and the version it held moves to dropped.
 */
void memory_give(u64 idx)
{
	if (idx + 1 != M.limit)
		return;
	M.limit = idx;
	C.balloon_limit = idx;
	barrier();
	u32 v = M.table[idx];
	if (v) {
		M.dropped += v;
		C.balloon_dropped = M.dropped;
		barrier();
		M.table[idx] = 0;
	}
}

void memory_take_back(u64 idx)
{
	if (idx != M.limit || idx >= M.npages)
		return;
	M.limit = idx + 1;
	C.balloon_limit = M.limit;
}

void page_write(u64 idx)
{
	if (idx >= M.limit)
		return;
	u64 a = page_addr(idx);
	u64 *p = (u64 *)(uintptr_t)a;
	u64 pfn = a / PAGE_SIZE;
	u32 v = M.table[idx] + 1;
	u64 tp = idx / 1024, bit = 1ull << (tp % 64);

	/* The summary bit goes first: a table page with entries always has
	 * its bit set. Testing first keeps the summary page clean. */
	if (!(M.summary[tp / 64] & bit)) {
		M.summary[tp / 64] |= bit;
		barrier();
	}
	C.inflight_version = v;
	barrier();
	C.inflight_index = idx;
	barrier();
	fill_body(p, pfn, v);
	barrier();
	p[0] = HDR0(pfn);
	barrier();
	p[1] = HDR1(v);
	barrier();
	M.table[idx] = v;
	barrier();
	C.writes++;
	barrier();
	C.inflight_index = INFLIGHT_NONE;
}

/* Reads one word per cache line, as a reader streaming the page would. */
void page_read(u64 idx)
{
	if (idx >= M.limit)
		return;
	const volatile u64 *p = (const volatile u64 *)(uintptr_t)page_addr(idx);
	u64 sum = 0;
	for (unsigned i = 0; i < PAGE_WORDS; i += 8)
		sum += p[i];
	C.readsum += sum;
	C.reads++;
}

static void fail(u64 idx, u64 pfn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(u64 idx, u64 pfn, const char *fmt, ...)
{
	if (fail_lines++ >= MAX_DETAIL)
		return;
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	gvsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	gprintf("verify FAIL page=%llu index=%llu %s\n", (unsigned long long)pfn,
		(unsigned long long)idx, buf);
}

static bool all_zero(const u64 *p, unsigned *word)
{
	for (unsigned i = 0; i < PAGE_WORDS; i++)
		if (p[i]) {
			*word = i;
			return false;
		}
	return true;
}

/* The page of an interrupted write to version v: each word must be the
 * old or the new version's, and the header and table may be one step
 * behind, never ahead of the body. */
static bool check_torn(u64 idx, const u64 *p, u64 pfn, u32 t, u32 v)
{
	u32 old = v - 1;
	if (t != old && t != v) {
		fail(idx, pfn, "expected=v%u|v%u found=v%u (version table, write in flight)", old, v, t);
		return false;
	}
	bool hdr_new = p[0] == HDR0(pfn) && p[1] == HDR1(v);
	if (t == v && !hdr_new) {
		fail(idx, pfn, "expected=v%u found=%#llx (header behind the table)", v,
		     (unsigned long long)p[1]);
		return false;
	}
	u64 xo = body_seed(pfn, old), xn = body_seed(pfn, v);
	for (unsigned i = 2; i < PAGE_WORDS; i++) {
		u64 eo = old ? body_next(&xo) : 0, en = body_next(&xn);
		if (p[i] == en || (!hdr_new && p[i] == eo))
			continue;
		fail(idx, pfn, "expected=%#llx found=%#llx word=%u (torn page)",
		     (unsigned long long)en, (unsigned long long)p[i], i);
		return false;
	}
	return true;
}

static bool check_page(u64 idx, u64 addr, u32 t)
{
	const u64 *p = (const u64 *)(uintptr_t)addr;
	u64 pfn = addr / PAGE_SIZE;
	unsigned w;
	u64 e;

	if (C.inflight_index == idx)
		return check_torn(idx, p, pfn, t, (u32)C.inflight_version);
	if (t == 0) {
		if (all_zero(p, &w))
			return true;
		if (p[0] == HDR0(pfn) && (p[1] >> 48) == (HDR1_TAG >> 48))
			fail(idx, pfn, "expected=v0 found=v%u (stale version table)", (u32)p[1]);
		else
			fail(idx, pfn, "expected=zero found=%#llx word=%u (never written)",
			     (unsigned long long)p[w], w);
		return false;
	}
	if (p[0] != HDR0(pfn) || (p[1] >> 48) != (HDR1_TAG >> 48)) {
		if (all_zero(p, &w))
			fail(idx, pfn, "expected=v%u found=zero (lost page)", t);
		else
			fail(idx, pfn, "expected=v%u found=%#llx,%#llx (corrupt header)", t,
			     (unsigned long long)p[0], (unsigned long long)p[1]);
		return false;
	}
	u32 h = (u32)p[1];
	if (h < t) {
		fail(idx, pfn, "expected=v%u found=v%u (stale page)", t, h);
		return false;
	}
	if (h > t) {
		fail(idx, pfn, "expected=v%u found=v%u (stale version table)", t, h);
		return false;
	}
	w = check_body(p, pfn, t, &e);
	if (w < PAGE_WORDS) {
		fail(idx, pfn, "expected=%#llx found=%#llx word=%u v%u (corrupt page)",
		     (unsigned long long)e, (unsigned long long)p[w], w, t);
		return false;
	}
	return true;
}

bool verify_all(void)
{
	u64 t0 = rdtsc();
	u64 checked = 0, written = 0, bad = 0, sum = 0;
	fail_lines = 0;
	u64 inflight = C.inflight_index;
	for (unsigned r = 0; r < M.n; r++) {
		u64 idx = M.first[r];
		for (u64 a = M.r[r].start; a < M.r[r].end; a += PAGE_SIZE, idx++) {
			/* Pages in the balloon are not the workload's; they are
			 * all at the top, so the check ends here. */
			if (idx >= M.limit)
				goto done;
			/* Without zerocheck, table pages whose summary bit is clear
			 * are skipped unread: the check costs what was written. A
			 * lost summary bit shows up in the sum check. */
			u64 tp = idx / 1024;
			if (!zerocheck && idx % 1024 == 0 && !(M.summary[tp / 64] & (1ull << (tp % 64))) &&
			    inflight / 1024 != tp) {
				u64 skip = 1024;
				if (skip > (M.r[r].end - a) / PAGE_SIZE)
					skip = (M.r[r].end - a) / PAGE_SIZE;
				a += (skip - 1) * PAGE_SIZE;
				idx += skip - 1;
				continue;
			}
			u32 t = M.table[idx];
			sum += t;
			written += t != 0;
			if (t == 0 && !zerocheck && C.inflight_index != idx)
				continue;
			checked++;
			if (!check_page(idx, a, t))
				bad++;
		}
	}
done:;
	/* A write in flight may have bumped the table but not the counter.
	 * Versions of pages that went into the balloon count as written. */
	u64 writes = C.writes;
	sum += M.dropped;
	if (sum != writes && !(C.inflight_index != INFLIGHT_NONE && sum == writes + 1)) {
		bad++;
		gprintf("verify FAIL writes expected=%llu found=%llu (version table sum)\n",
			(unsigned long long)writes, (unsigned long long)sum);
	}
	if (!fpu_canary_check(true))
		bad++;
	u64 ms = (rdtsc() - t0) / (tsc_hz / 1000);
	if (bad)
		gprintf("verify FAIL bad=%llu pages=%llu written=%llu ms=%llu\n",
			(unsigned long long)bad, (unsigned long long)checked,
			(unsigned long long)written, (unsigned long long)ms);
	else
		gprintf("verify ok pages=%llu written=%llu ms=%llu\n", (unsigned long long)checked,
			(unsigned long long)written, (unsigned long long)ms);
	return bad == 0;
}

static u64 damaged[3];
static unsigned ndamaged;

static bool was_damaged(u64 idx)
{
	for (unsigned i = 0; i < ndamaged; i++)
		if (damaged[i] == idx)
			return true;
	return false;
}

/* A written page not damaged yet, searching from start; if there is none,
 * one is written. */
static u64 pick_page(u64 start)
{
	u64 idx = start, seen = 0, n = M.limit;
	while (seen < n) {
		u64 tp = idx / 1024;
		/* Table pages never written need not be read. */
		if (idx % 1024 == 0 && !(M.summary[tp / 64] & (1ull << (tp % 64)))) {
			u64 skip = n - idx < 1024 ? n - idx : 1024;
			seen += skip;
			idx = (idx + skip) % n;
			continue;
		}
		if (M.table[idx] && !was_damaged(idx))
			return idx;
		idx = (idx + 1) % n;
		seen++;
	}
	idx = start;
	while (was_damaged(idx))
		idx = (idx + 1) % n;
	page_write(idx);
	return idx;
}

static void damage(int kind, u64 rnd)
{
	if (M.limit < 4)
		return;
	u64 idx = pick_page(rnd % M.limit);
	damaged[ndamaged++ % 3] = idx;
	u64 a = page_addr(idx), pfn = a / PAGE_SIZE;
	u64 *p = (u64 *)(uintptr_t)a;
	u32 t = M.table[idx];
	switch (kind) {
	case ST_CORRUPT:
		p[100] ^= 1ull << 17;
		gprintf("selftest: flipped a bit in word 100 of page=%llu\n", (unsigned long long)pfn);
		break;
	case ST_STALE:
		if (t > 1) {
			fill_body(p, pfn, t - 1);
			p[1] = HDR1(t - 1);
		} else {
			memset(p, 0, PAGE_SIZE);
		}
		gprintf("selftest: rolled page=%llu back from v%u to v%u\n", (unsigned long long)pfn,
			t, t - 1);
		break;
	case ST_TABLE:
		M.table[idx] = t - 1;
		gprintf("selftest: rolled the version table entry of page=%llu back from v%u to v%u\n",
			(unsigned long long)pfn, t, t - 1);
		break;
	}
}

void selftest_run(int kind, u64 rnd)
{
	ndamaged = 0;
	if (kind != ST_ALL) {
		damage(kind, rnd);
		return;
	}
	damage(ST_CORRUPT, rnd);
	damage(ST_STALE, mix64(rnd + 1));
	damage(ST_TABLE, mix64(rnd + 2));
}

/* The canary: 256 bytes of ymm8-15 (128 of xmm8-15 without AVX), plus
 * non-default MXCSR (round toward zero) and x87 control word (double
 * precision), none of which the guest's code ever changes. */
#define MXCSR_CANARY 0x7f80u
#define FCW_CANARY 0x027fu
static u64 canary[32] __attribute__((aligned(32)));

void fpu_canary_init(u64 seed)
{
	for (unsigned i = 0; i < 32; i++)
		canary[i] = mix64(seed ^ (0xf9u + i));
	fpu_canary_load(canary, g_boot.avx);
	u32 m = MXCSR_CANARY;
	u16 cw = FCW_CANARY;
	__asm__ volatile("ldmxcsr %0" : : "m"(m));
	__asm__ volatile("fldcw %0" : : "m"(cw));
}

bool fpu_canary_check(bool print)
{
	u64 now[32] __attribute__((aligned(32)));
	unsigned per = g_boot.avx ? 4 : 2, n = 8 * per;
	fpu_canary_store(now, g_boot.avx);
	for (unsigned i = 0; i < n; i++) {
		if (now[i] == canary[i])
			continue;
		if (print)
			gprintf("verify FAIL reg=%cmm%u lane=%u expected=%#llx found=%#llx\n",
				g_boot.avx ? 'y' : 'x', 8 + i / per, i % per,
				(unsigned long long)canary[i], (unsigned long long)now[i]);
		return false;
	}
	u32 m;
	u16 cw;
	__asm__ volatile("stmxcsr %0" : "=m"(m));
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	if (m != MXCSR_CANARY || cw != FCW_CANARY) {
		if (print)
			gprintf("verify FAIL reg=mxcsr/fcw expected=%#x/%#x found=%#x/%#x\n",
				MXCSR_CANARY, FCW_CANARY, m, cw);
		return false;
	}
	return true;
}
