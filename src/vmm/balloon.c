/*
 * The balloon device: three 32-bit registers at LM_PV_BALLOON_BASE
 * (guest_abi.h) through which a guest gives pages to the host and takes
 * them back, and the host sets how many it wants. See livemig/balloon.h
 * for the contract and docs/guest.md for the port protocol.
 *
 * Workload: requests come from vCPU threads in batches of up to 511 page
 * frame numbers, one VM exit each; a 3 GiB inflate is about 1.5 k of them.
 * The guest's driver hands out pages from the top of RAM down, so a batch
 * is mostly one descending run of contiguous pages: the device coalesces
 * runs (either direction) and makes one skip-map change, one madvise and
 * one write-hook call per run rather than per page.
 *
 * Order on inflate: mark the run in the skip map, then MADV_DONTNEED it,
 * then report it to the write hook. A migration that trusts the map skips
 * the pages from the moment they are marked; one that does not sees them
 * dirty and sends their new (zero) contents, so the digest at the end
 * agrees with what the source holds. On deflate the run is unmarked before
 * the out instruction completes, i.e. before the guest can touch it.
 *
 * Locking: b->lock serialises requests (several vCPUs), the control path's
 * queries and the state save/load. The skip map has its own lock, which
 * the migration thread takes; b->lock is never held while waiting for
 * anything but that.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "livemig/balloon.h"
#include "livemig/guest_abi.h"
#include "vmm/vmm_int.h"

#define BALLOON_PORTS 12u
#define LOW_PROTECT (1ull << 20)
#define REQ_HDR 8u

struct lm__balloon {
	struct lm_vm *vm;
	lm_skip_map *map;
	pthread_mutex_t lock;
	uint64_t pfn_end;  /* guest page frames [0, pfn_end) span RAM and the hole */
	uint32_t target;   /* pages */
	uint32_t guest_actual;
	uint32_t features; /* accepted by the guest */
	bool acked;
	uint32_t refused_last;
	uint64_t requests, inflated, deflated, refused;
	uint64_t protect_end;
};

/* A run of page frames [lo, hi) being collected from a request. */
struct run {
	uint64_t lo, hi;
};

bool lm_balloon_pfn_valid(uint64_t pfn, uint64_t mem_size, uint64_t protect_end)
{
	uint64_t low = mem_size < LM_VM_HOLE_START ? mem_size : LM_VM_HOLE_START;
	uint64_t high = mem_size - low;
	if (pfn >= (UINT64_MAX >> LM_PAGE_SHIFT))
		return false;
	uint64_t gpa = pfn << LM_PAGE_SHIFT;
	if (gpa < LOW_PROTECT || gpa < protect_end)
		return false;
	if (gpa < low)
		return true;
	return gpa >= LM_VM_HOLE_END && gpa - LM_VM_HOLE_END < high;
}

static uint8_t *host_page(struct lm_vm *vm, uint64_t pfn)
{
	uint64_t gpa = pfn << LM_PAGE_SHIFT;
	return vm->ram + (gpa >= LM_VM_HOLE_END ? gpa - (LM_VM_HOLE_END - LM_VM_HOLE_START) : gpa);
}

/* Inflate: mark, free, report. The run never crosses the hole (hole
 * frames are refused), so its host pages are contiguous. */
static void flush_inflate(struct lm__balloon *b, struct run *r)
{
	uint64_t n = r->hi - r->lo;
	if (!n)
		return;
	struct lm_vm *vm = b->vm;
	if (lm_skip_map_set(b->map, r->lo, n) == 0) {
		madvise(host_page(vm, r->lo), n << LM_PAGE_SHIFT, MADV_DONTNEED);
		lm__vm_wrote(vm, r->lo << LM_PAGE_SHIFT, n << LM_PAGE_SHIFT);
		b->inflated += n;
	}
	r->lo = r->hi = 0;
}

static void flush_deflate(struct lm__balloon *b, struct run *r)
{
	uint64_t n = r->hi - r->lo;
	if (n && lm_skip_map_clear(b->map, r->lo, n) == 0)
		b->deflated += n;
	r->lo = r->hi = 0;
}

/* Adds pfn to the run, flushing it first if pfn does not extend it. */
static void add(struct lm__balloon *b, struct run *r, uint64_t pfn, bool inflate)
{
	if (r->hi > r->lo) {
		if (pfn == r->hi) {
			r->hi++;
			return;
		}
		if (pfn + 1 == r->lo) {
			r->lo--;
			return;
		}
		if (inflate)
			flush_inflate(b, r);
		else
			flush_deflate(b, r);
	}
	r->lo = pfn;
	r->hi = pfn + 1;
}

/* Serves one request; returns how many frames were refused. Under b->lock. */
static uint32_t serve(struct lm__balloon *b, uint32_t value)
{
	struct lm_vm *vm = b->vm;
	uint32_t op = value & LM_PV_BALLOON_OP_MASK;
	uint64_t gpa = value & ~(uint64_t)LM_PV_BALLOON_OP_MASK;
	if (op != LM_PV_BALLOON_OP_INFLATE && op != LM_PV_BALLOON_OP_DEFLATE)
		return 1;
	const uint8_t *page = lm_vm_gpa_to_host(vm, gpa, LM_PAGE_SIZE);
	if (!page)
		return 1;
	/* The guest may change the page while we read it (another vCPU):
	 * take one copy and work on that. */
	_Static_assert(REQ_HDR + 8ull * LM_PV_BALLOON_BATCH <= LM_PAGE_SIZE, "request fits a page");
	uint64_t req[LM_PAGE_SIZE / 8];
	memcpy(req, page, sizeof(req));
	uint32_t count = (uint32_t)req[0], zero = (uint32_t)(req[0] >> 32);
	if (count > LM_PV_BALLOON_BATCH || zero != 0)
		return 1;
	bool inflate = op == LM_PV_BALLOON_OP_INFLATE;
	uint32_t refused = 0;
	struct run r = {0, 0};
	for (uint32_t i = 0; i < count; i++) {
		uint64_t pfn = req[1 + i];
		if (pfn >= b->pfn_end || !lm_balloon_pfn_valid(pfn, vm->ram_size, b->protect_end)) {
			refused++;
			continue;
		}
		/* Already in (out of) the balloon: nothing to do, and not counted
		 * twice. The pending run is not yet in the map, so look there too. */
		bool in_run = pfn >= r.lo && pfn < r.hi;
		if (in_run || lm_skip_map_test(b->map, pfn) == inflate)
			continue;
		add(b, &r, pfn, inflate);
	}
	if (inflate)
		flush_inflate(b, &r);
	else
		flush_deflate(b, &r);
	b->requests++;
	return refused;
}

static int balloon_pio(void *opaque, uint16_t port, unsigned size, bool is_write, uint32_t *val)
{
	struct lm__balloon *b = opaque;
	unsigned off = port - LM_PV_BALLOON_BASE;
	pthread_mutex_lock(&b->lock);
	/* Registers are 32 bits wide and aligned; anything else reads as all
	 * ones and is ignored, like an empty bus. */
	if (size != 4 || off % 4) {
		if (!is_write)
			*val = 0xffffffffu;
		goto out;
	}
	switch (port) {
	case LM_PV_BALLOON_FEATURES:
		if (!is_write) {
			*val = LM_PV_BALLOON_MAGIC << 16 | LM_PV_BALLOON_F_MUST_TELL_HOST;
		} else if (lm_skip_map_count(b->map) == 0) {
			/* Changing the promise with pages in the balloon would
			 * make the map lie; only an empty balloon renegotiates. */
			b->features = *val & LM_PV_BALLOON_F_MUST_TELL_HOST;
			b->acked = true;
		} else {
			b->refused++;
		}
		break;
	case LM_PV_BALLOON_TARGET:
		if (is_write)
			b->guest_actual = *val;
		else
			*val = __atomic_load_n(&b->target, __ATOMIC_ACQUIRE);
		break;
	case LM_PV_BALLOON_REQUEST:
		if (is_write) {
			b->refused_last = serve(b, *val);
			b->refused += b->refused_last;
		} else {
			*val = b->refused_last;
		}
		break;
	default:
		break;
	}
out:
	pthread_mutex_unlock(&b->lock);
	return 0;
}

int lm__balloon_new(struct lm_vm *vm, lm_skip_map *adopt)
{
	struct lm__balloon *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->vm = vm;
	pthread_mutex_init(&b->lock, NULL);
	uint64_t low = vm->ram_size < LM_VM_HOLE_START ? vm->ram_size : LM_VM_HOLE_START;
	uint64_t high = vm->ram_size - low;
	b->pfn_end = (high ? LM_VM_HOLE_END + high : low) >> LM_PAGE_SHIFT;
	b->protect_end = LOW_PROTECT;
	int r;
	if (adopt) {
		if (lm_skip_map_npages(adopt) != b->pfn_end) {
			r = -EINVAL;
			goto fail;
		}
		b->map = adopt;
	} else if ((r = lm_skip_map_new(b->pfn_end, &b->map)) < 0) {
		goto fail;
	}
	if ((r = lm_vm_register_pio(vm, LM_PV_BALLOON_BASE, BALLOON_PORTS, balloon_pio, b)) < 0)
		goto fail_map;
	vm->balloon = b;
	return 0;
fail_map:
	if (!adopt)
		lm_skip_map_free(b->map);
fail:
	pthread_mutex_destroy(&b->lock);
	free(b);
	return r;
}

void lm__balloon_disown_map(struct lm_vm *vm)
{
	if (vm->balloon)
		vm->balloon->map = NULL;
}

void lm__balloon_free(struct lm_vm *vm)
{
	struct lm__balloon *b = vm->balloon;
	if (!b)
		return;
	lm_skip_map_free(b->map);
	pthread_mutex_destroy(&b->lock);
	free(b);
	vm->balloon = NULL;
}

void lm__balloon_set_image_end(struct lm_vm *vm, uint64_t end)
{
	struct lm__balloon *b = vm->balloon;
	end = (end + LM_PAGE_SIZE - 1) & ~(LM_PAGE_SIZE - 1);
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	if (end > b->protect_end)
		b->protect_end = end;
	pthread_mutex_unlock(&b->lock);
}

/* ---- state ------------------------------------------------------------- */

/*
 * The optional state section (LM__ST_BALLOON), 32 bytes little-endian:
 * u32 target, u32 guest's last report, u32 accepted features, u32 flags
 * (bit 0: the guest acknowledged features), u64 protect_end, u64 0.
 * The skip map itself travels in the RAM stream.
 */
static void wr32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

void lm__balloon_save(struct lm_vm *vm, uint8_t out[LM__BALLOON_STATE_SIZE])
{
	struct lm__balloon *b = vm->balloon;
	memset(out, 0, LM__BALLOON_STATE_SIZE);
	pthread_mutex_lock(&b->lock);
	/* target is written without b->lock (lm_vm_balloon_set_target, from
	 * the control path while vCPUs run): always read it atomically. */
	wr32(out, __atomic_load_n(&b->target, __ATOMIC_ACQUIRE));
	wr32(out + 4, b->guest_actual);
	wr32(out + 8, b->features);
	wr32(out + 12, b->acked ? 1 : 0);
	wr32(out + 16, (uint32_t)b->protect_end);
	wr32(out + 20, (uint32_t)(b->protect_end >> 32));
	pthread_mutex_unlock(&b->lock);
}

int lm__balloon_check_state(const struct lm_vm *vm, const uint8_t *p, size_t len)
{
	if (len != LM__BALLOON_STATE_SIZE)
		return -EINVAL;
	uint32_t target = rd32(p), features = rd32(p + 8), flags = rd32(p + 12);
	uint64_t protect = rd64(p + 16), reserved = rd64(p + 24);
	if (target > vm->ram_size >> LM_PAGE_SHIFT)
		return -EINVAL;
	if (features & ~LM_PV_BALLOON_F_MUST_TELL_HOST || flags & ~1u || reserved)
		return -EINVAL;
	if (protect % LM_PAGE_SIZE || protect > LM_VM_HOLE_START)
		return -EINVAL;
	return 0;
}

void lm__balloon_load(struct lm_vm *vm, const uint8_t *p)
{
	struct lm__balloon *b = vm->balloon;
	pthread_mutex_lock(&b->lock);
	__atomic_store_n(&b->target, rd32(p), __ATOMIC_RELEASE);
	b->guest_actual = rd32(p + 4);
	b->features = rd32(p + 8);
	b->acked = rd32(p + 12) & 1;
	b->protect_end = rd64(p + 16);
	if (b->protect_end < LOW_PROTECT)
		b->protect_end = LOW_PROTECT;
	pthread_mutex_unlock(&b->lock);
}

/* ---- public ------------------------------------------------------------ */

lm_skip_map *lm_vm_skip_map(struct lm_vm *vm)
{
	return vm->balloon ? vm->balloon->map : NULL;
}

int lm_vm_balloon_set_target(struct lm_vm *vm, uint64_t pages)
{
	struct lm__balloon *b = vm->balloon;
	if (!b)
		return -ENODEV;
	if (pages > vm->ram_size >> LM_PAGE_SHIFT || pages > UINT32_MAX)
		return -EINVAL;
	__atomic_store_n(&b->target, (uint32_t)pages, __ATOMIC_RELEASE);
	return 0;
}

void lm_vm_balloon_stats(struct lm_vm *vm, struct lm_balloon_stats *st)
{
	struct lm__balloon *b = vm->balloon;
	memset(st, 0, sizeof(*st));
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	st->target = __atomic_load_n(&b->target, __ATOMIC_ACQUIRE); /* set without b->lock */
	st->actual = lm_skip_map_count(b->map);
	st->guest_actual = b->guest_actual;
	st->offered = LM_PV_BALLOON_F_MUST_TELL_HOST;
	st->features = b->features;
	st->acked = b->acked;
	st->must_tell_host = b->acked && (b->features & LM_PV_BALLOON_F_MUST_TELL_HOST);
	st->requests = b->requests;
	st->inflated = b->inflated;
	st->deflated = b->deflated;
	st->refused = b->refused;
	st->protect_end = b->protect_end;
	pthread_mutex_unlock(&b->lock);
}

void lm_vm_balloon_info(struct lm_vm *vm, uint64_t *target, uint64_t *actual, bool *must_tell_host)
{
	struct lm_balloon_stats st;
	lm_vm_balloon_stats(vm, &st);
	if (target)
		*target = st.target;
	if (actual)
		*actual = st.actual;
	if (must_tell_host)
		*must_tell_host = st.must_tell_host;
}
