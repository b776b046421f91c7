/*
 * The skip map: one bit per guest page that a balloon gave back to the host.
 *
 * Workload: a balloon inflates and deflates in large, mostly contiguous
 * runs (thousands of pages per request) from vCPU threads, rarely; the
 * migration thread meanwhile asks, for every chunk of 512 pages it copies,
 * which of them are skipped (a few words), and reads the map repeatedly as
 * an incremental table stream so that the destination learns the set while
 * the guest runs and the stop-and-copy carries only what changed since the
 * last read. A 4 GiB guest with 3 GiB ballooned has 786 k marked pages; a
 * 1 TiB guest needs 32 MiB of bits, most of them never touched.
 *
 * Representation: an lm_bitmap (word operations on ranges, MAP_NORESERVE so
 * untouched stretches cost nothing) whose words double as the entries of an
 * lm_table_src: two words = 16 bytes = 128 pages per entry. The bitmap is
 * sized to a multiple of 128 bits so every entry lies inside it, and the
 * bits past npages stay zero. An all-zero entry is "invalid" to the table
 * stream and costs nothing on the wire, so a map that is mostly clear or
 * whose marks are clustered (what a balloon produces) is cheap to send.
 * Every change marks the entries it touches as changed; the table source
 * finds them a word (64 entries) at a time. A count of set bits is kept
 * exact on every change so the engine can report it at any time without a
 * pass over the map.
 *
 * One mutex guards everything: the changes are rare and large, and the
 * migration thread's reads are short (a chunk's words, or one table read
 * into a bounded buffer), so nobody waits long.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "livemig/skip.h"
#include "livemig/table.h"

/* The table stream copies entries as bytes; the words are little-endian on
 * the wire only because the hosts are. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the skip map's table stream assumes a little-endian host"
#endif

struct lm_skip_map {
	pthread_mutex_t lock;
	uint64_t npages;
	lm_bitmap bits;	   /* nbits = npages rounded up to 128 */
	uint64_t count;	   /* set bits, exact unless count_stale */
	bool count_stale;  /* a table write changed bits wholesale */
	lm_table_src *src; /* entries = bits.words, 16 bytes each */
	lm_table_dst *dst; /* opened on the first table write */
};

int lm_skip_map_new(uint64_t npages, lm_skip_map **out)
{
	lm_skip_map *m;
	int err;

	if (!out || npages == 0 || npages > LM_SKIP_MAX_PAGES)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	uint64_t nbits = (npages + LM_SKIP_PAGES_PER_ENTRY - 1) / LM_SKIP_PAGES_PER_ENTRY * LM_SKIP_PAGES_PER_ENTRY;
	err = lm_bitmap_init(&m->bits, nbits);
	if (err)
		goto fail_free;
	err = lm_table_src_open(&m->src, m->bits.words, nbits / LM_SKIP_PAGES_PER_ENTRY, 0);
	if (err)
		goto fail_bits;
	err = pthread_mutex_init(&m->lock, NULL);
	if (err) {
		err = -err;
		goto fail_src;
	}
	m->npages = npages;
	*out = m;
	return 0;

fail_src:
	lm_table_src_close(m->src);
fail_bits:
	lm_bitmap_destroy(&m->bits);
fail_free:
	free(m);
	return err;
}

void lm_skip_map_free(lm_skip_map *m)
{
	if (!m)
		return;
	lm_table_dst_close(m->dst);
	lm_table_src_close(m->src);
	lm_bitmap_destroy(&m->bits);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Make m->count exact again after a table write. Lock held. */
static void refresh_count(lm_skip_map *m)
{
	if (m->count_stale) {
		m->count = lm_bitmap_count_range(&m->bits, 0, m->bits.nbits);
		m->count_stale = false;
	}
}

static bool range_ok(const lm_skip_map *m, uint64_t first, uint64_t n)
{
	return first <= m->npages && n <= m->npages - first;
}

/* Entries [first/128, (first+n-1)/128] changed. n > 0. */
static void mark_entries(lm_skip_map *m, uint64_t first, uint64_t n)
{
	uint64_t e0 = first / LM_SKIP_PAGES_PER_ENTRY;
	uint64_t e1 = (first + n - 1) / LM_SKIP_PAGES_PER_ENTRY;
	/* Cannot fail: the range was checked against npages. */
	(void)lm_table_src_mark_range(m->src, e0, e1 - e0 + 1);
}

int lm_skip_map_set(lm_skip_map *m, uint64_t first, uint64_t n)
{
	if (!range_ok(m, first, n))
		return -ERANGE;
	if (n == 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	refresh_count(m);
	uint64_t before = lm_bitmap_count_range(&m->bits, first, n);
	lm_bitmap_set_range(&m->bits, first, n);
	m->count += n - before;
	mark_entries(m, first, n);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int lm_skip_map_clear(lm_skip_map *m, uint64_t first, uint64_t n)
{
	if (!range_ok(m, first, n))
		return -ERANGE;
	if (n == 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	refresh_count(m);
	/* An empty map stays as it is: no bit and no entry changes, and the
	 * untouched words of a huge map are never read or written (a
	 * receiver clears a fresh 1 TiB map at every HELLO: 32 MiB, ~40 ms
	 * of first touches here). */
	if (m->count == 0) {
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	uint64_t before = lm_bitmap_count_range(&m->bits, first, n);
	lm_bitmap_clear_range(&m->bits, first, n);
	m->count -= before;
	mark_entries(m, first, n);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

bool lm_skip_map_test(lm_skip_map *m, uint64_t page)
{
	if (page >= m->npages)
		return false;
	pthread_mutex_lock(&m->lock);
	bool r = lm_bitmap_test(&m->bits, page);
	pthread_mutex_unlock(&m->lock);
	return r;
}

uint64_t lm_skip_map_count(lm_skip_map *m)
{
	pthread_mutex_lock(&m->lock);
	refresh_count(m);
	uint64_t r = m->count;
	pthread_mutex_unlock(&m->lock);
	return r;
}

uint64_t lm_skip_map_npages(const lm_skip_map *m)
{
	return m->npages;
}

/* 64 bits of b starting at bit pos (bits past the bitmap read as zero). */
static uint64_t get64(const lm_bitmap *b, uint64_t pos)
{
	uint64_t w = pos >> 6;
	unsigned sh = (unsigned)(pos & 63);
	if (w >= b->nwords)
		return 0;
	uint64_t v = b->words[w] >> sh;
	if (sh && w + 1 < b->nwords)
		v |= b->words[w + 1] << (64 - sh);
	return v;
}

int lm_skip_map_get(lm_skip_map *m, uint64_t first, uint64_t n, uint64_t *out)
{
	if (!range_ok(m, first, n))
		return -ERANGE;
	pthread_mutex_lock(&m->lock);
	for (uint64_t k = 0; k < n; k += 64) {
		uint64_t v = get64(&m->bits, first + k);
		if (n - k < 64)
			v &= (1ull << (n - k)) - 1;
		out[k >> 6] = v;
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

/*
 * Call fn for every maximal run of set bits in [first, first + n), a word at
 * a time: a full word extends the current run by 64 without looking at its
 * bits, a clear word costs one test. The lock is held by the caller.
 */
static void walk_runs(const lm_bitmap *b, uint64_t first, uint64_t n, lm_skip_run_fn fn, void *arg)
{
	uint64_t run_start = 0, run_len = 0;
	uint64_t end = first + n;
	if (n == 0)
		return;
	for (uint64_t w = first >> 6; w <= (end - 1) >> 6; w++) {
		uint64_t x = b->words[w];
		if (w == first >> 6)
			x &= ~0ull << (first & 63);
		if (w == (end - 1) >> 6 && (end & 63))
			x &= (1ull << (end & 63)) - 1;
		while (x) {
			unsigned lo = (unsigned)__builtin_ctzll(x);
			uint64_t rest = ~(x >> lo);
			unsigned len = rest ? (unsigned)__builtin_ctzll(rest) : 64 - lo;
			uint64_t s = (w << 6) + lo;
			if (run_len && run_start + run_len == s) {
				run_len += len;
			} else {
				if (run_len)
					fn(arg, run_start, run_len);
				run_start = s;
				run_len = len;
			}
			x = lo + len >= 64 ? 0 : x & (~0ull << (lo + len));
		}
	}
	if (run_len)
		fn(arg, run_start, run_len);
}

static void clear_dirty_run(void *arg, uint64_t first, uint64_t n)
{
	lm_sbitmap_clear_range(arg, first, n);
}

uint64_t lm_skip_map_remove_from(lm_skip_map *m, lm_sbitmap *dirty, uint64_t first, uint64_t n)
{
	if (first >= m->npages)
		return 0;
	if (n > m->npages - first)
		n = m->npages - first;
	if (first >= dirty->bits.nbits)
		return 0;
	if (n > dirty->bits.nbits - first)
		n = dirty->bits.nbits - first;
	uint64_t before = lm_sbitmap_count(dirty);
	pthread_mutex_lock(&m->lock);
	walk_runs(&m->bits, first, n, clear_dirty_run, dirty);
	pthread_mutex_unlock(&m->lock);
	return before - lm_sbitmap_count(dirty);
}

void lm_skip_map_table_restart(lm_skip_map *m)
{
	pthread_mutex_lock(&m->lock);
	lm_table_src_restart(m->src);
	pthread_mutex_unlock(&m->lock);
}

uint64_t lm_skip_map_table_pending(lm_skip_map *m)
{
	pthread_mutex_lock(&m->lock);
	uint64_t r = lm_table_src_pending(m->src);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static uint32_t le32_at(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16_at(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/*
 * Walk records that are known to be well formed (produced by lm_table_read,
 * or accepted by lm_table_write): for each record, report the runs of set
 * bits in its valid entries as they are in the map now, and if mark, mark
 * all its entries changed for this map's own table source.
 */
static void walk_records(lm_skip_map *m, const unsigned char *p, size_t len, lm_skip_run_fn fn, void *arg,
			 bool mark)
{
	size_t off = 0;
	while (off + LM_TABLE_RECORD_HDR <= len) {
		uint64_t index = le32_at(p + off);
		uint64_t nv = le16_at(p + off + 4);
		uint64_t ni = le16_at(p + off + 6);
		if (fn && nv)
			walk_runs(&m->bits, index * LM_SKIP_PAGES_PER_ENTRY, nv * LM_SKIP_PAGES_PER_ENTRY, fn, arg);
		if (mark && nv + ni)
			(void)lm_table_src_mark_range(m->src, index, nv + ni);
		off += LM_TABLE_RECORD_HDR + (size_t)nv * LM_TABLE_ENTRY_SIZE;
	}
}

int64_t lm_skip_map_table_read(lm_skip_map *m, void *buf, size_t cap, lm_skip_run_fn fn, void *arg)
{
	pthread_mutex_lock(&m->lock);
	int64_t r = lm_table_read(m->src, buf, cap);
	if (r > 0)
		walk_records(m, buf, (size_t)r, fn, arg, false);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int64_t lm_skip_map_table_write(lm_skip_map *m, const void *buf, size_t len, lm_skip_run_fn fn, void *arg,
				char *err, size_t errcap)
{
	int64_t r;
	if (err && errcap)
		err[0] = 0;
	pthread_mutex_lock(&m->lock);
	if (!m->dst) {
		int e = lm_table_dst_open(&m->dst, m->bits.words, m->bits.nbits / LM_SKIP_PAGES_PER_ENTRY, 0);
		if (e) {
			r = e;
			if (err && errcap)
				snprintf(err, errcap, "cannot open the skip map for writing: %s", lm_strerror(e));
			goto out;
		}
	}
	r = lm_table_write(m->dst, buf, len);
	if (r < 0) {
		if (err && errcap)
			snprintf(err, errcap, "%s", lm_table_dst_error(m->dst));
		goto out;
	}
	/*
	 * A record may set bits of the last entry past npages (the table only
	 * knows whole entries): clear them, so the map never claims pages the
	 * guest does not have.
	 */
	if (m->bits.nbits > m->npages)
		lm_bitmap_clear_range(&m->bits, m->npages, m->bits.nbits - m->npages);
	m->count_stale = true;
	walk_records(m, buf, len, fn, arg, true);
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}
