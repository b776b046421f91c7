/*
 * KVM dirty-ring source: per-vCPU rings of (slot, offset) entries, collected
 * into a pending bitmap and reset, then handed to the engine range by range.
 *
 * Workload: guests from 2 MiB to several TiB of which a migration round
 * dirties a few thousand to a few hundred thousand pages. A harvest costs
 * the entries pushed since the last one plus one KVM_RESET_DIRTY_RINGS
 * (which re-protects exactly those pages), and moving them into the
 * engine's bitmap costs the pending bitmap's summary level (one bit per
 * 2 MiB: 64 KiB of summary per TiB) plus the pages themselves. Nothing is
 * proportional to the guest's size but that summary scan and the
 * MAP_NORESERVE bitmaps, which stay unbacked where nothing was written.
 *
 * Lossless because of the order: an entry is collected, the rings are
 * reset (the page is protected again, so a later write pushes a new
 * entry), and only then may the engine copy the page (sync() returns after
 * the reset). A write between the collect and the reset finds the page
 * still writable and pushes nothing, but the copy that follows the reset
 * sees it. Entries are read with acquire loads of their flags and handed
 * back with release stores (KVM_CAP_DIRTY_LOG_RING_ACQ_REL's protocol).
 *
 * Locking: one mutex over the fetch indices, the pending bitmap and the
 * started flag. Takers: the migration thread (sync, start, stop), vCPU
 * threads whose ring is full (lm_kvm_ring_collect), and the VMM's writers
 * (lm_kvm_ring_mark). Each holds it for one collect or one bitmap update.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "livemig/track_kvm.h"
#include "track/internal.h"
#include "track/pagemap.h"

/* Pages moved from pending to the engine's bitmap per step. */
#define MOVE_BATCH 512

struct ring_slot {
	uint64_t first_page, npages; /* npages 0: no such slot id */
	void *host;
};

struct kvm_ring {
	struct lm_dirty_source base;
	int vm_fd;
	int pagemap; /* /proc/self/pagemap, or -1 */
	struct kvm_dirty_gfn **rings;
	uint32_t *fetch; /* next entry to read, per ring */
	unsigned nrings;
	uint32_t mask;	/* entries - 1 */
	struct ring_slot *slots; /* indexed by KVM slot id (address space 0) */
	uint32_t nslot_ids;
	uint64_t end_page;

	pthread_mutex_t lock;
	bool started;
	lm_sbitmap pending; /* collected, not yet handed to the engine (while started) */
	bool pending_ok;
	struct lm_kvm_ring_stats st;
	uint64_t batch[MOVE_BATCH];
};

static struct kvm_ring *to_ring(struct lm_dirty_source *s);

/* Read every ring up to its first unpublished entry, then reset. Under lock. */
static int64_t collect_locked(struct kvm_ring *k)
{
	uint64_t got = 0;
	for (unsigned r = 0; r < k->nrings; r++) {
		struct kvm_dirty_gfn *ring = k->rings[r];
		for (;;) {
			struct kvm_dirty_gfn *e = &ring[k->fetch[r] & k->mask];
			uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
			if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
				break;
			uint32_t as = e->slot >> 16, id = e->slot & 0xffff;
			uint64_t off = e->offset;
			if (as == 0 && id < k->nslot_ids && off < k->slots[id].npages) {
				if (k->started)
					lm_sbitmap_set(&k->pending, k->slots[id].first_page + off);
			} else {
				k->st.bad++;
			}
			__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
			k->fetch[r]++;
			got++;
		}
	}
	k->st.collected += got;
	if (got) {
		/* Re-protects the collected pages; only then may they be copied. */
		if (ioctl(k->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
			return -errno;
		k->st.resets++;
	}
	return (int64_t)got;
}

static int kr_start(struct lm_dirty_source *s, const struct lm_mem_region *r, size_t n)
{
	struct kvm_ring *k = to_ring(s);
	/* Every region must lie in logged slots: tracking elsewhere is blind. */
	for (size_t i = 0; i < n && r; i++) {
		uint64_t p = r[i].first_page, end = p + r[i].npages;
		while (p < end) {
			uint32_t id;
			for (id = 0; id < k->nslot_ids; id++)
				if (k->slots[id].npages && p >= k->slots[id].first_page &&
				    p - k->slots[id].first_page < k->slots[id].npages)
					break;
			if (id == k->nslot_ids || p >= k->end_page)
				return -EINVAL;
			const struct ring_slot *sl = &k->slots[id];
			if ((uint8_t *)sl->host + (p - sl->first_page) * LM_PAGE_SIZE !=
			    (uint8_t *)r[i].host + (p - r[i].first_page) * LM_PAGE_SIZE)
				return -EINVAL;
			p = sl->first_page + sl->npages;
		}
	}
	int err = lm__track_set_regions(s, r, n);
	if (err < 0)
		return err;
	pthread_mutex_lock(&k->lock);
	err = lm_sbitmap_init(&k->pending, k->end_page, 0);
	if (!err) {
		k->pending_ok = true;
		/* Entries from before are dropped: those pages are protected
		 * again by the reset, and present() covers what they hold. */
		int64_t got = collect_locked(k);
		if (got < 0)
			err = (int)got;
	}
	if (!err)
		k->started = true;
	pthread_mutex_unlock(&k->lock);
	if (err) {
		if (k->pending_ok)
			lm_sbitmap_destroy(&k->pending);
		k->pending_ok = false;
		lm__track_drop_regions(s);
	}
	return err;
}

static int64_t kr_sync(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_sbitmap *dirty)
{
	struct kvm_ring *k = to_ring(s);
	if (!lm__track_find(s, first, n))
		return -EINVAL;
	pthread_mutex_lock(&k->lock);
	int64_t err = k->started ? collect_locked(k) : -EINVAL;
	uint64_t added = 0;
	if (err >= 0) {
		uint64_t got;
		while ((got = lm_sbitmap_take(&k->pending, first, n, k->batch, MOVE_BATCH)) > 0)
			for (uint64_t i = 0; i < got; i++)
				if (!lm_sbitmap_test(dirty, k->batch[i])) {
					lm_sbitmap_set(dirty, k->batch[i]);
					added++;
				}
	}
	pthread_mutex_unlock(&k->lock);
	return err < 0 ? err : (int64_t)added;
}

/* sync() re-armed already (the reset). */
static int kr_clear(struct lm_dirty_source *s, uint64_t first, uint64_t n)
{
	(void)s;
	(void)first;
	(void)n;
	return 0;
}

/* Populated pages: the ones that may hold data (pagemap, like kvm_log). */
static int kr_present_runs(struct lm_dirty_source *s, uint64_t first, uint64_t n,
			   void (*run)(void *arg, uint64_t first_page, uint64_t npages), void *arg)
{
	struct kvm_ring *k = to_ring(s);
	const struct lm_mem_region *r = lm__track_find(s, first, n);
	if (!r || k->pagemap < 0)
		return -EINVAL;
	uint8_t *host = (uint8_t *)r->host + (first - r->first_page) * LM_PAGE_SIZE;
	return lm__pagemap_populated_runs(k->pagemap, host, n, first, run, arg);
}

static void bitmap_run(void *arg, uint64_t first, uint64_t n)
{
	lm_bitmap_set_range(arg, first, n);
}

static int kr_present(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_bitmap *present)
{
	return kr_present_runs(s, first, n, bitmap_run, present);
}

static int kr_stop(struct lm_dirty_source *s)
{
	struct kvm_ring *k = to_ring(s);
	pthread_mutex_lock(&k->lock);
	k->started = false;
	if (k->pending_ok)
		lm_sbitmap_destroy(&k->pending);
	k->pending_ok = false;
	pthread_mutex_unlock(&k->lock);
	lm__track_drop_regions(s);
	return 0;
}

static void kr_free(struct lm_dirty_source *s)
{
	struct kvm_ring *k = to_ring(s);
	kr_stop(s);
	if (k->pagemap >= 0)
		close(k->pagemap);
	pthread_mutex_destroy(&k->lock);
	free(k->rings);
	free(k->fetch);
	free(k->slots);
	free(k);
}

static const struct lm_dirty_source_ops kvm_ring_ops = {
    .name = "kvm-ring",
    .start = kr_start,
    .sync = kr_sync,
    .clear = kr_clear,
    .present = kr_present,
    .present_runs = kr_present_runs,
    .stop = kr_stop,
    .free = kr_free,
};

static struct kvm_ring *to_ring(struct lm_dirty_source *s)
{
	return (struct kvm_ring *)s;
}

int lm_kvm_ring_source_new(const struct lm_kvm_ring_config *cfg, struct lm_dirty_source **out)
{
	if (!cfg || !out || cfg->vm_fd < 0 || !cfg->slots || !cfg->nslots || !cfg->rings || !cfg->nrings ||
	    cfg->entries < 2 || (cfg->entries & (cfg->entries - 1)))
		return -EINVAL;
	uint32_t ids = 0;
	uint64_t end = 0;
	for (size_t i = 0; i < cfg->nslots; i++) {
		const struct lm_kvm_log_slot *sl = &cfg->slots[i];
		if (sl->kvm_slot > 0xffff || !sl->npages || !sl->host)
			return -EINVAL;
		if (sl->kvm_slot + 1 > ids)
			ids = sl->kvm_slot + 1;
		if (sl->first_page + sl->npages > end)
			end = sl->first_page + sl->npages;
	}
	for (unsigned i = 0; i < cfg->nrings; i++)
		if (!cfg->rings[i])
			return -EINVAL;
	struct kvm_ring *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->rings = calloc(cfg->nrings, sizeof(*k->rings));
	k->fetch = calloc(cfg->nrings, sizeof(*k->fetch));
	k->slots = calloc(ids, sizeof(*k->slots));
	if (!k->rings || !k->fetch || !k->slots) {
		free(k->rings);
		free(k->fetch);
		free(k->slots);
		free(k);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < cfg->nrings; i++)
		k->rings[i] = cfg->rings[i];
	for (size_t i = 0; i < cfg->nslots; i++) {
		const struct lm_kvm_log_slot *sl = &cfg->slots[i];
		if (k->slots[sl->kvm_slot].npages) { /* the same id twice */
			free(k->rings);
			free(k->fetch);
			free(k->slots);
			free(k);
			return -EINVAL;
		}
		k->slots[sl->kvm_slot] = (struct ring_slot){sl->first_page, sl->npages, sl->host};
	}
	k->nrings = cfg->nrings;
	k->mask = cfg->entries - 1;
	k->nslot_ids = ids;
	k->end_page = end;
	k->vm_fd = cfg->vm_fd;
	pthread_mutex_init(&k->lock, NULL);
	k->base.ops = &kvm_ring_ops;
	k->base.flags = LM_DIRTY_SYNC_REARMS;
	k->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (k->pagemap >= 0 && lm__pagemap_supported(k->pagemap))
		k->base.flags |= LM_DIRTY_KNOWS_PRESENT;
	*out = &k->base;
	return 0;
}

int64_t lm_kvm_ring_collect(struct lm_dirty_source *s)
{
	if (!s || s->ops != &kvm_ring_ops)
		return -EINVAL;
	struct kvm_ring *k = to_ring(s);
	pthread_mutex_lock(&k->lock);
	k->st.collects_full++;
	int64_t got = collect_locked(k);
	pthread_mutex_unlock(&k->lock);
	return got;
}

void lm_kvm_ring_mark(struct lm_dirty_source *s, uint64_t first_page, uint64_t n)
{
	if (!s || s->ops != &kvm_ring_ops)
		return;
	struct kvm_ring *k = to_ring(s);
	pthread_mutex_lock(&k->lock);
	if (k->started && first_page < k->end_page) {
		if (n > k->end_page - first_page)
			n = k->end_page - first_page;
		lm_sbitmap_set_range(&k->pending, first_page, n);
	}
	pthread_mutex_unlock(&k->lock);
}

void lm_kvm_ring_stats(struct lm_dirty_source *s, struct lm_kvm_ring_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!s || s->ops != &kvm_ring_ops)
		return;
	struct kvm_ring *k = to_ring(s);
	pthread_mutex_lock(&k->lock);
	*out = k->st;
	pthread_mutex_unlock(&k->lock);
}
