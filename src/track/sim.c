/*
 * Software dirty log, for tests and for writes the tracked hardware cannot
 * see. Workload: writer threads mark pages at their own pace (one atomic OR
 * per page written) while the migration thread harvests ranges of 64-page
 * words. One bit per page in a flat word array per region is the natural
 * representation: marking is a single fetch_or, and harvesting goes a word
 * (64 pages) at a time through lm_sbitmap_sync_from.
 *
 * Writers may call lm_sim_mark() at any time, also before start() and after
 * stop(), from any thread. They reach the log through one pointer that is
 * published with release semantics; a stopped log is not freed until the
 * source is freed, so a writer that raced with stop() never touches freed
 * memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "track/internal.h"

struct sim_region {
	uint64_t first_page;
	uint64_t npages;
	uint64_t *log;       /* the writers' marks */
	uint64_t *harvested; /* LM_SIM_MANUAL: bits the last sync reported */
};

struct sim_state {
	struct sim_state *retired_next;
	size_t n;
	struct sim_region r[];
};

struct sim_source {
	struct lm_dirty_source base;
	enum lm_sim_mode mode;
	struct sim_state *live; /* read by writers with acquire */
	struct sim_state *retired;
#ifdef LM_TEST_HOOKS
	uint64_t drop_page; /* lm__sim_drop_once: UINT64_MAX when not armed */
#endif
};

/* LM_SIM_MANUAL copies this many log words per step into a stack buffer. */
#define SIM_TMP_WORDS 256

static struct sim_source *to_sim(struct lm_dirty_source *s)
{
	return (struct sim_source *)s;
}

static void state_free(struct sim_state *st)
{
	for (size_t i = 0; i < st->n; i++) {
		free(st->r[i].log);
		free(st->r[i].harvested);
	}
	free(st);
}

static int sim_start(struct lm_dirty_source *s, const struct lm_mem_region *regions, size_t n)
{
	struct sim_source *ss = to_sim(s);
	int err = lm__track_set_regions(s, regions, n);
	if (err)
		return err;
	struct sim_state *st = calloc(1, sizeof(*st) + n * sizeof(st->r[0]));
	if (!st) {
		err = -ENOMEM;
		goto fail_regions;
	}
	st->n = n;
	for (size_t i = 0; i < n; i++) {
		uint64_t nwords = (regions[i].npages + 63) / 64;
		st->r[i].first_page = regions[i].first_page;
		st->r[i].npages = regions[i].npages;
		st->r[i].log = calloc(nwords, sizeof(uint64_t));
		if (ss->mode == LM_SIM_MANUAL)
			st->r[i].harvested = calloc(nwords, sizeof(uint64_t));
		if (!st->r[i].log || (ss->mode == LM_SIM_MANUAL && !st->r[i].harvested)) {
			err = -ENOMEM;
			goto fail_state;
		}
	}
	__atomic_store_n(&ss->live, st, __ATOMIC_RELEASE);
	return 0;

fail_state:
	state_free(st);
fail_regions:
	lm__track_drop_regions(s);
	return err;
}

static struct sim_region *find(struct sim_state *st, uint64_t first, uint64_t n)
{
	for (size_t i = 0; i < st->n; i++) {
		struct sim_region *r = &st->r[i];
		if (first >= r->first_page && first - r->first_page < r->npages &&
		    n <= r->npages - (first - r->first_page))
			return r;
	}
	return NULL;
}

static int64_t sim_sync(struct lm_dirty_source *s, uint64_t first, uint64_t n, lm_sbitmap *dirty)
{
	struct sim_source *ss = to_sim(s);
	struct sim_state *st = ss->live;
	if (!st)
		return -ENOTCONN;
	struct sim_region *r = find(st, first, n);
	if (!r || ((first - r->first_page) & 63))
		return -EINVAL;
	uint64_t w0 = (first - r->first_page) / 64;
#ifdef LM_TEST_HOOKS
	/* Fault injection: lose one harvested write, as a buggy tracker would. */
	uint64_t d = __atomic_load_n(&ss->drop_page, __ATOMIC_ACQUIRE);
	if (d >= first && d - first < n) {
		uint64_t bit = 1ull << ((d - r->first_page) & 63);
		uint64_t *w = &r->log[(d - r->first_page) / 64];
		if (__atomic_fetch_and(w, ~bit, __ATOMIC_ACQ_REL) & bit)
			__atomic_store_n(&ss->drop_page, UINT64_MAX, __ATOMIC_RELEASE);
	}
#endif
	if (ss->mode == LM_SIM_EXCHANGE)
		return (int64_t)lm_sbitmap_sync_from(dirty, first, &r->log[w0], n);

	/* Manual mode: report without clearing, remember what was reported. */
	uint64_t tmp[SIM_TMP_WORDS];
	int64_t added = 0;
	for (uint64_t done = 0; done < n;) {
		uint64_t bits = n - done;
		if (bits > SIM_TMP_WORDS * 64)
			bits = SIM_TMP_WORDS * 64;
		uint64_t nw = (bits + 63) / 64;
		for (uint64_t k = 0; k < nw; k++) {
			uint64_t w = w0 + done / 64 + k;
			uint64_t v = __atomic_load_n(&r->log[w], __ATOMIC_ACQUIRE);
			r->harvested[w] |= v;
			tmp[k] = v;
		}
		added += (int64_t)lm_sbitmap_sync_from(dirty, first + done, tmp, bits);
		done += bits;
	}
	return added;
}

static int sim_clear(struct lm_dirty_source *s, uint64_t first, uint64_t n)
{
	struct sim_source *ss = to_sim(s);
	struct sim_state *st = ss->live;
	if (!st)
		return -ENOTCONN;
	struct sim_region *r = find(st, first, n);
	if (!r || ((first - r->first_page) & 63))
		return -EINVAL;
	if ((n & 63) && first + n != r->first_page + r->npages)
		return -EINVAL;
	if (ss->mode == LM_SIM_EXCHANGE)
		return 0;
	uint64_t w0 = (first - r->first_page) / 64, nw = (n + 63) / 64;
	/* Like KVM_CLEAR_DIRTY_LOG: only bits that were reported are re-armed;
	 * a mark that arrived after the sync stays for the next round. */
	for (uint64_t w = w0; w < w0 + nw; w++) {
		if (r->harvested[w]) {
			__atomic_fetch_and(&r->log[w], ~r->harvested[w], __ATOMIC_ACQ_REL);
			r->harvested[w] = 0;
		}
	}
	return 0;
}

static int sim_stop(struct lm_dirty_source *s)
{
	struct sim_source *ss = to_sim(s);
	struct sim_state *st = ss->live;
	if (!st)
		return 0;
	__atomic_store_n(&ss->live, NULL, __ATOMIC_RELEASE);
	st->retired_next = ss->retired;
	ss->retired = st;
	lm__track_drop_regions(s);
	return 0;
}

static void sim_free(struct lm_dirty_source *s)
{
	struct sim_source *ss = to_sim(s);
	sim_stop(s);
	while (ss->retired) {
		struct sim_state *next = ss->retired->retired_next;
		state_free(ss->retired);
		ss->retired = next;
	}
	free(ss);
}

static const struct lm_dirty_source_ops sim_ops = {
	.name = "sim",
	.start = sim_start,
	.sync = sim_sync,
	.clear = sim_clear,
	.present = NULL,
	.stop = sim_stop,
	.free = sim_free,
};

#ifdef LM_TEST_HOOKS
void lm__sim_drop_once(struct lm_dirty_source *s, uint64_t page)
{
	__atomic_store_n(&((struct sim_source *)s)->drop_page, page, __ATOMIC_RELEASE);
}
#endif

int lm_sim_source_new(enum lm_sim_mode mode, struct lm_dirty_source **out)
{
	if (mode != LM_SIM_EXCHANGE && mode != LM_SIM_MANUAL)
		return -EINVAL;
	struct sim_source *ss = calloc(1, sizeof(*ss));
	if (!ss)
		return -ENOMEM;
	ss->base.ops = &sim_ops;
	ss->base.flags = mode == LM_SIM_EXCHANGE ? LM_DIRTY_SYNC_REARMS : 0;
	ss->base.sync_pages = 0;
	ss->mode = mode;
#ifdef LM_TEST_HOOKS
	ss->drop_page = UINT64_MAX;
#endif
	*out = &ss->base;
	return 0;
}

void lm_sim_mark_range(struct lm_dirty_source *s, uint64_t first, uint64_t n)
{
	struct sim_source *ss = to_sim(s);
	struct sim_state *st = __atomic_load_n(&ss->live, __ATOMIC_ACQUIRE);
	if (!st)
		return;
	while (n) {
		struct sim_region *r = find(st, first, 1);
		if (!r)
			return;
		uint64_t off = first - r->first_page;
		uint64_t bit = off & 63, take = 64 - bit;
		if (take > n)
			take = n;
		if (take > r->npages - off)
			take = r->npages - off;
		uint64_t mask = take == 64 ? ~0ull : ((1ull << take) - 1) << bit;
		/* Release: the page contents written before the mark are visible
		 * to the harvester that takes this word. */
		__atomic_fetch_or(&r->log[off / 64], mask, __ATOMIC_RELEASE);
		first += take;
		n -= take;
	}
}

void lm_sim_mark(struct lm_dirty_source *s, uint64_t page)
{
	lm_sim_mark_range(s, page, 1);
}
