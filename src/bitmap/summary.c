/*
 * Summary bitmap: a flat dirty bitmap plus one bit per chunk.
 *
 * Workload: the pre-copy engine walks the migration bitmap once per round.
 * Between rounds most memory is clean, and on a big guest (1 TiB is 2^28
 * pages, a 32 MiB bitmap) reading every word to find a few dirty pages costs
 * milliseconds per round for nothing. A second level with one bit per chunk
 * (512 pages = 2 MiB by default) is 1/512 of that size, so a clean or
 * sparsely-but-clustered dirty guest is scanned in microseconds.
 *
 * The catch is uniformly scattered dirt. At 0.2% of pages dirty, about 64%
 * of 512-page chunks hold a dirty page, so the summary skips only a third of
 * the words while every skip pays for consulting it. Measured with
 * `livemig bench scan --sweep` (uniform pages, flat word scan against the
 * summary forced on, 2^24 pages so the bitmap sits in cache, 2026-11):
 *
 *	dirty pages   dirty chunks   summary / flat
 *	  0.001%          0.5%           0.05
 *	  0.01%           5%             0.46
 *	  0.05%          22%             0.89
 *	  0.1%           40%             0.95
 *	  0.2%           64%             1.07
 *	  0.5%           92%             1.11
 *
 * So the summary pays while fewer than about half of the chunks are dirty
 * and costs up to ~10% beyond. At the full 2^28 pages the bitmap streams
 * from memory while every summary skip lands on a cold cache line, so from
 * 0.01% to 2% of pages the two are within noise of each other; there the
 * summary wins only on sparse or clustered dirt, and the threshold below
 * costs nothing. The representation is therefore chosen per
 * scan from exact state: the structure counts its dirty chunks
 * (nchunks_set), and in AUTO mode the scan walks the summary only while at
 * most SUMMARY_MAX_DIRTY_NUM/SUMMARY_MAX_DIRTY_DEN (one half) of the chunks
 * are dirty, and otherwise scans the flat words directly, which is what the
 * summary would have degenerated to anyway. lm_sbitmap_collect decides once
 * per batch, lm_sbitmap_find_next_set once per call. The count changes as
 * pages are set and taken, so one round can start flat (everything dirty
 * in round one) and move to the summary as the engine takes pages.
 *
 * The top level. On a huge guest the summary itself is big: 3.5 TiB is
 * 1.8M chunks, a 224 KiB summary, and a scan that finds a few dirty chunks
 * in it still reads every word. Worse, most of those pages were never
 * written, and reading one maps it (a minor fault each, 5-10 us on this
 * nested host): measured 2026-12-03 with `perf record -e page-faults` on
 * the source of a paused 3.5 TiB migration, 168 of its 260 faults were
 * these scans (the ring's pending map, the send pass, the completeness
 * check), against 95 faults in all at 4 GiB. So a
 * third level holds one bit per summary word (64 chunks, 128 MiB of guest
 * by default): 3.5 KiB for 3.5 TiB, one page. Finding the next dirty chunk
 * reads the current summary word, then the top bits, then the one summary
 * word they point to: what a scan reads is O(dirty chunks) plus the top
 * level, 1/32768 of the flat bitmap. With it the same migration's source
 * takes 95-97 faults, as at 4 GiB.
 *
 * Exactness: a summary bit is set iff its chunk holds a set bit, and a top
 * bit is set iff its summary word is non-zero, after every call (set,
 * clear, ranges, sync, take, rebuild). Setting is cheap (two ORs);
 * clearing re-checks the chunk's words only when the word just cleared
 * became zero, and take re-checks each chunk once after leaving it.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "bitmap/bitmap_impl.h"

/* Above this fraction of dirty chunks (num/den), AUTO scans flat: see the
 * measurements in the file comment. */
#define SUMMARY_MAX_DIRTY_NUM 1
#define SUMMARY_MAX_DIRTY_DEN 2

int lm_sbitmap_init(lm_sbitmap *s, uint64_t nbits, uint64_t chunk_pages)
{
	int rc;
	memset(s, 0, sizeof(*s));
	if (chunk_pages == 0)
		chunk_pages = 512;
	if (chunk_pages < 64 || (chunk_pages & (chunk_pages - 1)) || nbits == 0)
		return -EINVAL;
	unsigned shift = (unsigned)__builtin_ctzll(chunk_pages);
	uint64_t nchunks = (nbits >> shift) + ((nbits & (chunk_pages - 1)) != 0);
	rc = lm_bitmap_init(&s->bits, nbits);
	if (rc < 0)
		goto fail;
	rc = lm_bitmap_init(&s->summary, nchunks);
	if (rc < 0)
		goto fail_bits;
	rc = lm_bitmap_init(&s->top, s->summary.nwords);
	if (rc < 0)
		goto fail_summary;
	s->chunk_shift = shift;
	s->nchunks = nchunks;
	s->mode = LM_SBITMAP_AUTO;
	return 0;

fail_summary:
	lm_bitmap_destroy(&s->summary);
fail_bits:
	lm_bitmap_destroy(&s->bits);
fail:
	memset(s, 0, sizeof(*s));
	return rc;
}

void lm_sbitmap_destroy(lm_sbitmap *s)
{
	lm_bitmap_destroy(&s->top);
	lm_bitmap_destroy(&s->summary);
	lm_bitmap_destroy(&s->bits);
	memset(s, 0, sizeof(*s));
}

int lm_sbitmap_set_mode(lm_sbitmap *s, unsigned mode)
{
	if (mode > LM_SBITMAP_FLAT)
		return -EINVAL;
	s->mode = mode;
	return 0;
}

/* Words [first, end) of chunk c, clipped to the bitmap. */
static uint64_t chunk_first_word(const lm_sbitmap *s, uint64_t c)
{
	return c << (s->chunk_shift - 6);
}

static uint64_t chunk_end_word(const lm_sbitmap *s, uint64_t c)
{
	uint64_t e = (c + 1) << (s->chunk_shift - 6);
	return e < s->bits.nwords ? e : s->bits.nwords;
}

/* The top bit of summary word k, from that word. */
static void refresh_top(lm_sbitmap *s, uint64_t k)
{
	uint64_t *t = &s->top.words[k >> 6];
	uint64_t bit = 1ull << (k & 63);
	if (s->summary.words[k])
		*t |= bit;
	else
		*t &= ~bit;
}

static void mark_chunk(lm_sbitmap *s, uint64_t c)
{
	uint64_t *w = &s->summary.words[c >> 6];
	uint64_t bit = 1ull << (c & 63);
	if (!(*w & bit)) {
		if (!*w)
			s->top.words[c >> 12] |= 1ull << ((c >> 6) & 63);
		*w |= bit;
		s->nchunks_set++;
	}
}

/* Recompute chunk c's summary bit from its words. */
static void refresh_chunk(lm_sbitmap *s, uint64_t c)
{
	uint64_t end = chunk_end_word(s, c);
	bool dirty = lm__first_nonzero_word(s->bits.words, chunk_first_word(s, c), end) < end;
	uint64_t *w = &s->summary.words[c >> 6];
	uint64_t bit = 1ull << (c & 63);
	if (dirty) {
		mark_chunk(s, c);
	} else if (*w & bit) {
		*w &= ~bit;
		s->nchunks_set--;
		if (!*w)
			refresh_top(s, c >> 6);
	}
}

/* The first dirty chunk at or after c (s->nchunks if none), through the
 * top level: clean summary words are not read. */
static uint64_t next_chunk(const lm_sbitmap *s, uint64_t c)
{
	if (c >= s->nchunks)
		return s->nchunks;
	uint64_t k = c >> 6;
	uint64_t v = s->summary.words[k] & lm__mask_from((unsigned)(c & 63));
	if (!v) {
		k = lm_bitmap_find_next_set(&s->top, k + 1);
		if (k >= s->top.nbits)
			return s->nchunks;
		v = s->summary.words[k];
	}
	return (k << 6) + (uint64_t)__builtin_ctzll(v);
}

bool lm_sbitmap_test(const lm_sbitmap *s, uint64_t i)
{
	return lm_bitmap_test(&s->bits, i);
}

uint64_t lm_sbitmap_count(const lm_sbitmap *s)
{
	return s->nset;
}

void lm_sbitmap_set(lm_sbitmap *s, uint64_t i)
{
	uint64_t *w = &s->bits.words[i >> 6];
	uint64_t bit = 1ull << (i & 63);
	if (*w & bit)
		return;
	*w |= bit;
	s->nset++;
	mark_chunk(s, i >> s->chunk_shift);
}

void lm_sbitmap_clear(lm_sbitmap *s, uint64_t i)
{
	uint64_t *w = &s->bits.words[i >> 6];
	uint64_t bit = 1ull << (i & 63);
	if (!(*w & bit))
		return;
	*w &= ~bit;
	s->nset--;
	/* Only a word that became zero can have emptied its chunk. */
	if (!*w)
		refresh_chunk(s, i >> s->chunk_shift);
}

void lm_sbitmap_set_range(lm_sbitmap *s, uint64_t start, uint64_t n)
{
	assert(start <= s->bits.nbits && n <= s->bits.nbits - start);
	if (n == 0)
		return;
	s->nset += n - lm_bitmap_count_range(&s->bits, start, n);
	lm_bitmap_set_range(&s->bits, start, n);
	uint64_t c0 = start >> s->chunk_shift;
	uint64_t nc = ((start + n - 1) >> s->chunk_shift) - c0 + 1;
	s->nchunks_set += nc - lm_bitmap_count_range(&s->summary, c0, nc);
	lm_bitmap_set_range(&s->summary, c0, nc);
	lm_bitmap_set_range(&s->top, c0 >> 6, ((c0 + nc - 1) >> 6) - (c0 >> 6) + 1);
}

void lm_sbitmap_clear_range(lm_sbitmap *s, uint64_t start, uint64_t n)
{
	assert(start <= s->bits.nbits && n <= s->bits.nbits - start);
	if (n == 0)
		return;
	uint64_t end = start + n;
	s->nset -= lm_bitmap_count_range(&s->bits, start, n);
	lm_bitmap_clear_range(&s->bits, start, n);
	uint64_t c0 = start >> s->chunk_shift;
	uint64_t c1 = (end - 1) >> s->chunk_shift;
	/* Chunks wholly inside the range are now clean; the two end chunks
	 * may keep bits outside the range and are re-checked. */
	if (c1 > c0 + 1) {
		s->nchunks_set -= lm_bitmap_count_range(&s->summary, c0 + 1, c1 - c0 - 1);
		lm_bitmap_clear_range(&s->summary, c0 + 1, c1 - c0 - 1);
	}
	refresh_chunk(s, c0);
	if (c1 != c0)
		refresh_chunk(s, c1);
	/* Summary words strictly between the end chunks' are now zero; the
	 * end chunks' words are re-read. */
	uint64_t k0 = c0 >> 6, k1 = c1 >> 6;
	if (k1 > k0 + 1)
		lm_bitmap_clear_range(&s->top, k0 + 1, k1 - k0 - 1);
	refresh_top(s, k0);
	if (k1 != k0)
		refresh_top(s, k1);
}

/* Find-next walking the summary: skip to the next dirty chunk when the
 * current chunk has nothing left after `from`. */
static uint64_t find_next_summary(const lm_sbitmap *s, uint64_t from)
{
	const uint64_t *words = s->bits.words;
	uint64_t w = from >> 6;
	uint64_t v = words[w] & lm__mask_from((unsigned)(from & 63));
	if (v)
		return (w << 6) + (uint64_t)__builtin_ctzll(v);
	uint64_t c = from >> s->chunk_shift;
	if (lm_bitmap_test(&s->summary, c)) {
		uint64_t end = chunk_end_word(s, c);
		w = lm__first_nonzero_word(words, w + 1, end);
		if (w < end)
			return (w << 6) + (uint64_t)__builtin_ctzll(words[w]);
	}
	for (;;) {
		c = next_chunk(s, c + 1);
		if (c >= s->nchunks)
			return s->bits.nbits;
		uint64_t end = chunk_end_word(s, c);
		w = lm__first_nonzero_word(words, chunk_first_word(s, c), end);
		/* Between calls the summary is exact, so a dirty chunk has a
		 * non-zero word; inside lm_sbitmap_take a chunk being emptied
		 * is re-checked only when take leaves it, hence the loop. */
		if (w < end)
			return (w << 6) + (uint64_t)__builtin_ctzll(words[w]);
	}
}

static bool use_summary(const lm_sbitmap *s)
{
	switch (s->mode) {
	case LM_SBITMAP_SUMMARY:
		return true;
	case LM_SBITMAP_FLAT:
		return false;
	default:
		return s->nchunks_set * SUMMARY_MAX_DIRTY_DEN <= s->nchunks * SUMMARY_MAX_DIRTY_NUM;
	}
}

uint64_t lm_sbitmap_find_next_set(const lm_sbitmap *s, uint64_t from)
{
	if (from >= s->bits.nbits)
		return s->bits.nbits;
	if (use_summary(s))
		return find_next_summary(s, from);
	return lm_bitmap_find_next_set(&s->bits, from);
}

static uint64_t summary_skip(const void *ctx, uint64_t from)
{
	const lm_sbitmap *s = ctx;
	if (from >= s->bits.nbits)
		return s->bits.nbits;
	return find_next_summary(s, from);
}

static uint64_t flat_skip(const void *ctx, uint64_t from)
{
	return lm_bitmap_find_next_set(ctx, from);
}

uint64_t lm_sbitmap_collect(const lm_sbitmap *s, uint64_t *pos, uint64_t end, uint64_t *out,
			    uint64_t max)
{
	assert(end <= s->bits.nbits);
	/* The representation is chosen once per batch, not per word. */
	if (use_summary(s))
		return lm__collect(s->bits.words, *pos, end, out, max, pos, summary_skip, s);
	return lm__collect(s->bits.words, *pos, end, out, max, pos, flat_skip, &s->bits);
}

uint64_t lm_sbitmap_sync_from(lm_sbitmap *s, uint64_t dst_start, uint64_t *src, uint64_t nbits)
{
	assert(dst_start <= s->bits.nbits && nbits <= s->bits.nbits - dst_start);
	uint64_t fresh = 0;
	uint64_t nsrc = (nbits + 63) / 64;
	for (uint64_t k = 0; k < nsrc; k++) {
		uint64_t v = lm__take_src_word(src, k, nbits);
		if (!v)
			continue;
		uint64_t pos = dst_start + k * 64;
		fresh += lm__or_bits_at(&s->bits, pos, v);
		/* 64 bits span at most two chunks (chunks are >= 64 pages):
		 * mark the chunks of the lowest and highest bit taken. */
		mark_chunk(s, (pos + (uint64_t)__builtin_ctzll(v)) >> s->chunk_shift);
		mark_chunk(s, (pos + 63 - (uint64_t)__builtin_clzll(v)) >> s->chunk_shift);
	}
	s->nset += fresh;
	return fresh;
}

uint64_t lm_sbitmap_take(lm_sbitmap *s, uint64_t start, uint64_t n, uint64_t *out, uint64_t max)
{
	assert(start <= s->bits.nbits && n <= s->bits.nbits - start);
	if (n == 0 || max == 0)
		return 0;
	uint64_t end = start + n;
	uint64_t last_w = (end - 1) >> 6;
	uint64_t last_mask = lm__mask_below((unsigned)(((end - 1) & 63) + 1));
	uint64_t taken = 0;
	uint64_t cur_chunk = UINT64_MAX;
	uint64_t i = start;
	while (taken < max) {
		i = lm_sbitmap_find_next_set(s, i);
		if (i >= end)
			break;
		uint64_t w = i >> 6;
		uint64_t c = i >> s->chunk_shift;
		/* Re-check each chunk once, after we are done taking from it. */
		if (c != cur_chunk) {
			if (cur_chunk != UINT64_MAX)
				refresh_chunk(s, cur_chunk);
			cur_chunk = c;
		}
		uint64_t v = s->bits.words[w] & lm__mask_from((unsigned)(i & 63));
		if (w == last_w)
			v &= last_mask;
		uint64_t got = 0;
		if (v == ~0ull && max - taken >= 64) {
			/* Round one: a fully dirty word goes out whole. */
			for (unsigned k = 0; k < 64; k++)
				out[taken + k] = (w << 6) + k;
			taken += 64;
			got = ~0ull;
			v = 0;
		}
		while (v && taken < max) {
			uint64_t b = v & -v;
			out[taken++] = (w << 6) + (uint64_t)__builtin_ctzll(v);
			got |= b;
			v ^= b;
		}
		s->bits.words[w] &= ~got;
		s->nset -= (uint64_t)__builtin_popcountll(got);
		i = (w + 1) << 6;
	}
	if (cur_chunk != UINT64_MAX)
		refresh_chunk(s, cur_chunk);
	return taken;
}

void lm_sbitmap_rebuild(lm_sbitmap *s)
{
	const uint64_t *words = s->bits.words;
	uint64_t wpc = 1ull << (s->chunk_shift - 6);
	s->nset = 0;
	s->nchunks_set = 0;
	lm_bitmap_clear_range(&s->summary, 0, s->nchunks);
	lm_bitmap_clear_range(&s->top, 0, s->top.nbits);
	for (uint64_t c = 0; c < s->nchunks; c++) {
		uint64_t w0 = c * wpc, w1 = chunk_end_word(s, c);
		uint64_t n = 0;
		for (uint64_t w = w0; w < w1; w++)
			n += (uint64_t)__builtin_popcountll(words[w]);
		if (n) {
			s->nset += n;
			lm_bitmap_set(&s->summary, c);
			lm_bitmap_set(&s->top, c >> 6);
			s->nchunks_set++;
		}
	}
}
