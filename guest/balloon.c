/*
 * The balloon driver (ring 3): gives pages to the host and takes them back
 * to follow the target the host sets, through the pv balloon device
 * (guest_abi.h, LM_PV_BALLOON_*).
 *
 * Which pages: the balloon is a stack that grows down from the top of
 * RAM. First the spare pages (free RAM above what the workload uses:
 * with mem=256M on a 1 GiB guest, about 750 MiB), then the workload's
 * own data pages from the highest index down (memory_give), never its
 * version table or the image. Deflating pops the stack in the reverse
 * order, so the workload's pages always stay a prefix [0, limit) and the
 * checker's view of them stays simple.
 *
 * Must-tell-host: the driver accepts the feature (unless balloon_mtl=0)
 * and keeps the promise by construction: a page is only reused after the
 * deflate request naming it has completed (the out instruction returns
 * once the host has handled the whole batch).
 *
 * Cost: a port access is a VM exit to userspace, tens of microseconds
 * here, so requests carry up to LM_PV_BALLOON_BATCH pages each, and one
 * call moves at most MAX_BATCHES batches before giving the workload its
 * turn again.
 */
#include "work.h"

#define POLL_MS 200
#define MAX_BATCHES 32

struct request {
	u32 count;
	u32 zero;
	u64 pfn[LM_PV_BALLOON_BATCH];
};

/* Identity mapped and inside the image, so below 4 GiB as the request
 * port requires. */
static struct request req __attribute__((aligned(4096)));

static struct {
	bool on;
	u32 features;
	u64 max;    /* pages the balloon may hold: spare + data pages but one */
	u64 actual; /* pages in the balloon now */
	u64 target; /* last target read, clamped to max */
	u64 raw_target;
	u64 next_poll;
	u64 refused;
	bool moving;
} B;

/* Guest-physical address of the k-th page of the stack (k = 0 is the
 * highest page of RAM). */
static u64 stack_page(u64 k)
{
	if (k >= M.spare_pages)
		return page_addr(M.npages - 1 - (k - M.spare_pages));
	for (unsigned i = g_boot.nram; i-- > 0;) {
		u64 pages = (g_boot.ram[i].end - g_boot.ram[i].start) / PAGE_SIZE;
		if (k < pages)
			return g_boot.ram[i].end - (k + 1) * PAGE_SIZE;
		k -= pages;
	}
	return 0; /* not reached: k < spare_pages */
}

static void send(u32 op)
{
	outl(LM_PV_BALLOON_REQUEST, (u32)(uintptr_t)&req | op);
	u32 refused = inl(LM_PV_BALLOON_REQUEST);
	if (refused) {
		B.refused += refused;
		gprintf("livemig-guest: warning: the host refused %u balloon pages\n", refused);
	}
}

static void inflate(u64 n)
{
	req.count = (u32)n;
	req.zero = 0;
	for (u64 j = 0; j < n; j++) {
		u64 k = B.actual + j;
		/* A data page leaves the workload before the host may drop it. */
		if (k >= M.spare_pages)
			memory_give(M.npages - 1 - (k - M.spare_pages));
		req.pfn[j] = stack_page(k) / PAGE_SIZE;
	}
	barrier();
	send(LM_PV_BALLOON_OP_INFLATE);
	B.actual += n;
}

static void deflate(u64 n)
{
	req.count = (u32)n;
	req.zero = 0;
	for (u64 j = 0; j < n; j++)
		req.pfn[j] = stack_page(B.actual - 1 - j) / PAGE_SIZE;
	barrier();
	/* Tell the host first; only then may the workload reuse the pages. */
	send(LM_PV_BALLOON_OP_DEFLATE);
	for (u64 j = 0; j < n; j++) {
		u64 k = B.actual - 1 - j;
		if (k >= M.spare_pages)
			memory_take_back(M.npages - 1 - (k - M.spare_pages));
	}
	B.actual -= n;
}

void balloon_init(bool pv)
{
	if (!pv || !P.balloon || !M.npages)
		return;
	u32 f = inl(LM_PV_BALLOON_FEATURES);
	if (f >> 16 != LM_PV_BALLOON_MAGIC)
		return;
	B.features = (f & 0xffff) & (P.balloon_mtl ? LM_PV_BALLOON_F_MUST_TELL_HOST : 0);
	outl(LM_PV_BALLOON_FEATURES, B.features);
	B.on = true;
	B.max = M.spare_pages + M.npages - 1;
	gprintf("livemig-guest: balloon offered=%#x accepted=%#x max=%llu spare=%llu\n", f & 0xffff,
		B.features, (unsigned long long)B.max, (unsigned long long)M.spare_pages);
}

u64 balloon_service(u64 now)
{
	if (!B.on)
		return ~0ull;
	if (now < B.next_poll && !B.moving)
		return B.next_poll;
	u64 t = inl(LM_PV_BALLOON_TARGET);
	if (t != B.raw_target) {
		B.raw_target = t;
		B.target = t > B.max ? B.max : t;
		gprintf("balloon target=%llu actual=%llu\n", (unsigned long long)t,
			(unsigned long long)B.actual);
	}
	u64 before = B.actual;
	for (unsigned i = 0; i < MAX_BATCHES && B.actual != B.target; i++) {
		if (B.actual < B.target) {
			u64 n = B.target - B.actual;
			inflate(n > LM_PV_BALLOON_BATCH ? LM_PV_BALLOON_BATCH : n);
		} else {
			u64 n = B.actual - B.target;
			deflate(n > LM_PV_BALLOON_BATCH ? LM_PV_BALLOON_BATCH : n);
		}
	}
	if (B.actual != before)
		outl(LM_PV_BALLOON_ACTUAL, (u32)B.actual);
	bool was_moving = B.moving;
	B.moving = B.actual != B.target;
	if ((was_moving || B.actual != before) && !B.moving)
		gprintf("balloon actual=%llu target=%llu\n", (unsigned long long)B.actual,
			(unsigned long long)B.raw_target);
	now = rdtsc();
	B.next_poll = now + ms_to_tsc(POLL_MS);
	/* Still moving: come back as soon as the workload had its step. */
	return B.moving ? now : B.next_poll;
}
