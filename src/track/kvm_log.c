/*
 * KVM dirty-log source: per-slot KVM_GET_DIRTY_LOG, and in manual-protect
 * mode KVM_CLEAR_DIRTY_LOG one 64-page-aligned chunk at a time.
 *
 * Workload: a guest of a few GiB to 1 TiB split into slots (1 GiB by
 * default); each round the engine syncs one slot, then clears and copies
 * it chunk by chunk. Per slot we keep three word arrays of one bit per
 * page: the buffer KVM fills (scratch, consumed by the word sync), the bits
 * the last sync reported (what clear() hands back to KVM: never more, or a
 * write made between the read and the clear would be re-protected without
 * being copied), and the software log of the VMM's own writes. All are
 * MAP_NORESERVE bitmaps, so a sparse 1 TiB guest pays for the pages it
 * touches in them, not for its size.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/kvm.h>

#include "livemig/track_kvm.h"
#include "track/internal.h"
#include "track/pagemap.h"

#ifndef KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
#define KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE (1 << 0)
#endif
#ifndef KVM_DIRTY_LOG_INITIALLY_SET
#define KVM_DIRTY_LOG_INITIALLY_SET (1 << 1)
#endif

struct kslot {
	struct lm_kvm_log_slot s;
	lm_bitmap kbuf;	     /* KVM_GET_DIRTY_LOG target; consumed by sync */
	lm_bitmap harvested; /* reported by sync, not yet cleared in KVM */
	lm_bitmap soft;	     /* the VMM's own writes */
	int soft_any;	     /* atomic: soft may have bits (else its scan is skipped) */
	bool logging;
};

struct kvm_log {
	struct lm_dirty_source base;
	int vm_fd;
	lm_kvm_log_enable_fn enable;
	void *opaque;
	bool no_manual;
	bool always_on; /* slots log from creation: never toggled */
	bool cfg_manual; /* always_on: manual-protect was enabled by the VMM */
	bool manual; /* manual-protect mode in use (valid while started) */
	bool initially_set; /* ... with KVM_DIRTY_LOG_INITIALLY_SET */
	int pagemap; /* /proc/self/pagemap for present(), or -1 */
	struct kslot *slots;
	size_t nslots;
	int started; /* read by lm_kvm_log_mark from other threads */
};

static struct kslot *slot_for(struct kvm_log *k, uint64_t first, uint64_t n)
{
	for (size_t i = 0; i < k->nslots; i++) {
		struct kslot *ks = &k->slots[i];
		if (first >= ks->s.first_page && first - ks->s.first_page < ks->s.npages &&
		    n <= ks->s.npages - (first - ks->s.first_page))
			return ks;
	}
	return NULL;
}

/* kbuf and harvested live while tracking runs; soft lives as long as the
 * source, so that lm_kvm_log_mark never touches unmapped memory even when
 * it races with stop(). */
static void free_slot_maps(struct kslot *ks)
{
	lm_bitmap_destroy(&ks->kbuf);
	lm_bitmap_destroy(&ks->harvested);
}

static int enable_manual(struct kvm_log *k)
{
	if (k->no_manual)
		return 0;
	int caps = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	if (caps <= 0)
		return 0;
	struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2};
	cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
	if (caps & KVM_DIRTY_LOG_INITIALLY_SET)
		cap.args[0] |= KVM_DIRTY_LOG_INITIALLY_SET;
	if (ioctl(k->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
		return -errno;
	k->initially_set = (cap.args[0] & KVM_DIRTY_LOG_INITIALLY_SET) != 0;
	return 1;
}

static int kl_stop(struct lm_dirty_source *s);

static int kl_start(struct lm_dirty_source *s, const struct lm_mem_region *r, size_t n)
{
	struct kvm_log *k = (struct kvm_log *)s;
	if (k->started)
		return -EBUSY;
	/* Each region: consecutive slots, contiguous in guest and host space. */
	uint64_t covered = 0;
	for (size_t i = 0; i < n; i++) {
		for (uint64_t p = 0; p < r[i].npages;) {
			struct kslot *ks = slot_for(k, r[i].first_page + p, 1);
			if (!ks || ks->s.first_page != r[i].first_page + p || ks->s.npages > r[i].npages - p ||
			    ks->s.host != (uint8_t *)r[i].host + p * LM_PAGE_SIZE)
				return -EINVAL;
			p += ks->s.npages;
			covered++;
		}
	}
	if (covered != k->nslots)
		return -EINVAL;
	int err = lm__track_set_regions(s, r, n);
	if (err < 0)
		return err;
	for (size_t i = 0; i < k->nslots; i++) {
		struct kslot *ks = &k->slots[i];
		if ((err = lm_bitmap_init(&ks->kbuf, ks->s.npages)) < 0 ||
		    (err = lm_bitmap_init(&ks->harvested, ks->s.npages)) < 0)
			goto fail;
	}
	k->initially_set = false;
	err = k->always_on ? (k->cfg_manual ? 1 : 0) : enable_manual(k);
	if (err < 0)
		goto fail;
	k->manual = err == 1;
	if (k->manual) {
		k->base.flags &= ~(unsigned)LM_DIRTY_SYNC_REARMS;
	} else {
		k->base.flags |= LM_DIRTY_SYNC_REARMS;
	}
	/* From here on every write is logged: mark VMM writes too. */
	__atomic_store_n(&k->started, 1, __ATOMIC_RELEASE);
	for (size_t i = 0; i < k->nslots && !k->always_on; i++) {
		struct kslot *ks = &k->slots[i];
		err = k->enable(k->opaque, ks->s.kvm_slot, true);
		if (err < 0)
			goto fail_logging;
		ks->logging = true;
	}
	return 0;

fail_logging:
	kl_stop(s);
	return err;
fail:
	for (size_t i = 0; i < k->nslots; i++)
		free_slot_maps(&k->slots[i]);
	lm__track_drop_regions(s);
	return err;
}

static int64_t kl_sync(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_sbitmap *dirty)
{
	struct kvm_log *k = (struct kvm_log *)s;
	if (!k->started)
		return -EINVAL;
	struct kslot *ks = slot_for(k, first, n);
	if (!ks)
		return -EINVAL;
	uint64_t off = first - ks->s.first_page;
	if (off & 63)
		return -EINVAL;

	struct kvm_dirty_log log = {.slot = ks->s.kvm_slot};
	log.dirty_bitmap = ks->kbuf.words;
	if (ioctl(k->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
		return -errno;

	uint64_t w0 = off >> 6, nw = (n + 63) >> 6;
	uint64_t *kw = ks->kbuf.words + w0;
	/* The last word of a sub-range may hold bits past it: keep those for
	 * the sync of the next range. */
	uint64_t tail_mask = (n & 63) ? (1ull << (n & 63)) - 1 : ~0ull;
	uint64_t keep = kw[nw - 1] & ~tail_mask;
	kw[nw - 1] &= tail_mask;
	if (k->manual) {
		uint64_t *hw = ks->harvested.words + w0;
		for (uint64_t i = 0; i < nw; i++)
			hw[i] |= kw[i];
	}
	uint64_t added = lm_sbitmap_sync_from(dirty, first, kw, n);
	kw[nw - 1] |= keep;

	/* The VMM's own writes: taken word by word with an atomic exchange,
	 * so a mark that races with us lands either now or next time. The
	 * flag is dropped before the scan: a mark after that raises it again. */
	if (!__atomic_exchange_n(&ks->soft_any, 0, __ATOMIC_ACQ_REL))
		return (int64_t)added;
	uint64_t *sw = ks->soft.words + w0;
	uint64_t skeep = __atomic_fetch_and(&sw[nw - 1], tail_mask, __ATOMIC_ACQ_REL) & ~tail_mask;
	added += lm_sbitmap_sync_from(dirty, first, sw, n);
	if (skeep)
		__atomic_fetch_or(&sw[nw - 1], skeep, __ATOMIC_RELEASE);
	/* Marks of the slot outside this range are still there. */
	if (n != ks->s.npages)
		__atomic_store_n(&ks->soft_any, 1, __ATOMIC_RELEASE);
	return (int64_t)added;
}

static int kl_clear(struct lm_dirty_source *s, uint64_t first, uint64_t n)
{
	struct kvm_log *k = (struct kvm_log *)s;
	if (!k->started)
		return -EINVAL;
	if (!k->manual)
		return 0;
	struct kslot *ks = slot_for(k, first, n);
	if (!ks)
		return -EINVAL;
	uint64_t off = first - ks->s.first_page;
	/* KVM's rule: first_page a multiple of 64, and num_pages too unless
	 * the range ends at the end of the slot. */
	if ((off & 63) || ((n & 63) && off + n != ks->s.npages))
		return -EINVAL;
	uint64_t w0 = off >> 6, nw = (n + 63) >> 6;
	uint64_t *hw = ks->harvested.words + w0;
	bool any = false;
	for (uint64_t i = 0; i < nw && !any; i++)
		any = hw[i] != 0;
	if (!any)
		return 0;
	struct kvm_clear_dirty_log c = {
	    .slot = ks->s.kvm_slot,
	    .num_pages = (uint32_t)n,
	    .first_page = off,
	    .dirty_bitmap = hw,
	};
	if (n > UINT32_MAX)
		return -EINVAL;
	if (ioctl(k->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
		return -errno;
	memset(hw, 0, nw * sizeof(*hw));
	return 0;
}

/*
 * Pages that may hold data: populated in the host mapping (KVM faults guest
 * writes in through it). A page not populated now reads as zero, and the
 * engine skips it, so its first write must be logged from now on. Without
 * KVM_DIRTY_LOG_INITIALLY_SET that holds since start() (enabling the log
 * write-protected everything). With it, nothing is protected yet, so: scan,
 * hand the bits of the unpopulated pages back to KVM (which protects them),
 * and scan again. A page written before that clear is populated by the
 * second scan; one written after it is in the log.
 */
static int present_in_slot(struct kvm_log *k, uint64_t first, uint64_t n, lm_bitmap *present)
{
	struct kslot *ks = slot_for(k, first, n);
	if (!ks)
		return -EINVAL;
	uint64_t off = first - ks->s.first_page;
	if ((off & 63) || ((n & 63) && off + n != ks->s.npages) || n > UINT32_MAX)
		return -EINVAL;
	uint64_t nw = (n + 63) >> 6;
	uint64_t *w = calloc(nw, sizeof(*w));
	if (!w)
		return -ENOMEM;
	uint8_t *host = (uint8_t *)ks->s.host + off * LM_PAGE_SIZE;
	int err = lm__pagemap_populated(k->pagemap, host, n, w);
	if (!err && k->initially_set) {
		for (uint64_t i = 0; i < nw; i++)
			w[i] = ~w[i];
		if (n & 63)
			w[nw - 1] &= (1ull << (n & 63)) - 1;
		struct kvm_clear_dirty_log c = {
		    .slot = ks->s.kvm_slot,
		    .num_pages = (uint32_t)n,
		    .first_page = off,
		    .dirty_bitmap = w,
		};
		if (ioctl(k->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
			err = -errno;
		memset(w, 0, nw * sizeof(*w));
		if (!err)
			err = lm__pagemap_populated(k->pagemap, host, n, w);
	}
	if (!err)
		lm_bitmap_sync_from(present, first, w, n);
	free(w);
	return err;
}

/*
 * fn(k, ks, first, len, ctx) for each slot piece of [first, first + n): a
 * region, which present() and present_runs() are asked about, is one slot
 * or several.
 */
static int each_slot(struct kvm_log *k, uint64_t first, uint64_t n,
		     int (*fn)(struct kvm_log *, struct kslot *, uint64_t, uint64_t, void *), void *ctx)
{
	while (n) {
		struct kslot *ks = slot_for(k, first, 1);
		if (!ks)
			return -EINVAL;
		uint64_t len = ks->s.first_page + ks->s.npages - first;
		if (len > n)
			len = n;
		int err = fn(k, ks, first, len, ctx);
		if (err)
			return err;
		first += len;
		n -= len;
	}
	return 0;
}

static int present_piece(struct kvm_log *k, struct kslot *ks, uint64_t first, uint64_t n, void *present)
{
	(void)ks;
	return present_in_slot(k, first, n, present);
}

static int kl_present(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_bitmap *present)
{
	struct kvm_log *k = (struct kvm_log *)s;
	if (!k->started || k->pagemap < 0)
		return -EINVAL;
	return each_slot(k, first, n, present_piece, present);
}

struct runs_to {
	void (*run)(void *arg, uint64_t first_page, uint64_t npages);
	void *arg;
};

static int runs_piece(struct kvm_log *k, struct kslot *ks, uint64_t first, uint64_t n, void *ctx)
{
	const struct runs_to *t = ctx;
	uint8_t *host = (uint8_t *)ks->s.host + (first - ks->s.first_page) * LM_PAGE_SIZE;
	return lm__pagemap_populated_runs(k->pagemap, host, n, first, t->run, t->arg);
}

/* Without initially-set the log holds every write since start(), so the
 * populated pages are all there is (with it, present() must clear). */
static int kl_present_runs(struct lm_dirty_source *s, uint64_t first, uint64_t n,
			   void (*run)(void *arg, uint64_t first_page, uint64_t npages), void *arg)
{
	struct kvm_log *k = (struct kvm_log *)s;
	if (!k->started || k->pagemap < 0)
		return -EINVAL;
	if (k->initially_set)
		return -EOPNOTSUPP;
	struct runs_to t = {run, arg};
	return each_slot(k, first, n, runs_piece, &t);
}

static int kl_stop(struct lm_dirty_source *s)
{
	struct kvm_log *k = (struct kvm_log *)s;
	int err = 0;
	if (!k->started && !k->base.nregions)
		return 0;
	__atomic_store_n(&k->started, 0, __ATOMIC_RELEASE);
	for (size_t i = 0; i < k->nslots; i++) {
		struct kslot *ks = &k->slots[i];
		if (ks->logging && !k->always_on) {
			int r = k->enable(k->opaque, ks->s.kvm_slot, false);
			if (r < 0 && !err)
				err = r;
			ks->logging = false;
		}
		free_slot_maps(ks);
		/* Forget software marks: zero pages back, cheaply. */
		madvise(ks->soft.words, ks->soft.map_len, MADV_DONTNEED);
	}
	lm__track_drop_regions(s);
	return err;
}

static void kl_free(struct lm_dirty_source *s)
{
	struct kvm_log *k = (struct kvm_log *)s;
	kl_stop(s);
	if (k->pagemap >= 0)
		close(k->pagemap);
	for (size_t i = 0; i < k->nslots; i++)
		lm_bitmap_destroy(&k->slots[i].soft);
	free(k->slots);
	free(k);
}

static const struct lm_dirty_source_ops kvm_log_ops = {
    .name = "kvm-log",
    .start = kl_start,
    .sync = kl_sync,
    .clear = kl_clear,
    .present = kl_present,
    .present_runs = kl_present_runs,
    .stop = kl_stop,
    .free = kl_free,
};

int lm_kvm_log_source_new(const struct lm_kvm_log_config *cfg, struct lm_dirty_source **out)
{
	if (!cfg || cfg->vm_fd < 0 || !cfg->slots || !cfg->nslots || (!cfg->enable && !cfg->always_on) || !out)
		return -EINVAL;
	for (size_t i = 0; i < cfg->nslots; i++)
		if (!cfg->slots[i].npages || (cfg->slots[i].npages >> 32))
			return -EINVAL;
	struct kvm_log *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->slots = calloc(cfg->nslots, sizeof(*k->slots));
	if (!k->slots) {
		free(k);
		return -ENOMEM;
	}
	k->nslots = cfg->nslots;
	for (size_t i = 0; i < cfg->nslots; i++) {
		k->slots[i].s = cfg->slots[i];
		int err = lm_bitmap_init(&k->slots[i].soft, cfg->slots[i].npages);
		if (err < 0) {
			while (i--)
				lm_bitmap_destroy(&k->slots[i].soft);
			free(k->slots);
			free(k);
			return err;
		}
	}
	k->base.ops = &kvm_log_ops;
	k->base.sync_pages = cfg->sync_pages;
	k->vm_fd = cfg->vm_fd;
	k->enable = cfg->enable;
	k->opaque = cfg->opaque;
	k->no_manual = cfg->no_manual_protect;
	k->always_on = cfg->always_on;
	k->cfg_manual = cfg->manual && !cfg->no_manual_protect;
	/* present() needs PAGEMAP_SCAN; without it every page is scanned. */
	k->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (k->pagemap >= 0 && lm__pagemap_supported(k->pagemap))
		k->base.flags |= LM_DIRTY_KNOWS_PRESENT;
	*out = &k->base;
	return 0;
}

void lm_kvm_log_mark(struct lm_dirty_source *s, uint64_t first_page, uint64_t n)
{
	struct kvm_log *k = (struct kvm_log *)s;
	if (!s || s->ops != &kvm_log_ops || !__atomic_load_n(&k->started, __ATOMIC_ACQUIRE))
		return;
	for (uint64_t p = first_page; p < first_page + n;) {
		struct kslot *ks = slot_for(k, p, 1);
		if (!ks) {
			p++;
			continue;
		}
		uint64_t end = ks->s.first_page + ks->s.npages;
		if (end > first_page + n)
			end = first_page + n;
		for (; p < end; p++)
			lm_bitmap_set_atomic(&ks->soft, p - ks->s.first_page);
		__atomic_store_n(&ks->soft_any, 1, __ATOMIC_RELEASE);
	}
}

bool lm_kvm_log_manual(const struct lm_dirty_source *s)
{
	const struct kvm_log *k = (const struct kvm_log *)s;
	return s && s->ops == &kvm_log_ops && k->manual;
}
