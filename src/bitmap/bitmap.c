/*
 * Flat bitmap: one bit per guest page.
 *
 * Workload: the migration engine asks three things of a dirty bitmap, in
 * this order of frequency. Between pre-copy rounds most memory is clean, so
 * "find the next dirty page after i" must skip long runs of zero bits
 * cheaply. In round one every page is dirty, so setting, clearing and
 * counting whole ranges must not touch pages one at a time. And every round
 * the kernel's log is folded in (lm_bitmap_sync_from), which must cost in
 * proportion to the log's size in words, not in pages.
 *
 * Representation: a plain array of 64-bit words, bit i in word i/64 at
 * position i%64. Every operation works a word (64 pages) at a time: ranges
 * use masks at the two ends and whole-word stores in between, find-next uses
 * __builtin_ctzll on the first non-zero word, counts use popcount. The array
 * is mmap'ed with MAP_NORESERVE so that a bitmap for a 256 TiB guest
 * (2^36 pages, 8 GiB of bits) costs only the pages that are touched.
 *
 * Invariant: bits at positions >= nbits in the last word are always zero,
 * so whole-word operations (count, and/or, find-next-set) need no masking of
 * the tail.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "bitmap/bitmap_impl.h"

int lm_bitmap_init(lm_bitmap *b, uint64_t nbits)
{
	memset(b, 0, sizeof(*b));
	if (nbits == 0)
		return -EINVAL;
	/* 2^58 words would overflow the byte count below; no guest is that big. */
	if (nbits > (1ull << 58))
		return -EINVAL;
	uint64_t nwords = (nbits + 63) / 64;
	uint64_t bytes = nwords * sizeof(uint64_t);
	uint64_t len = (bytes + LM_PAGE_SIZE - 1) & ~(LM_PAGE_SIZE - 1);
	if (len > SIZE_MAX)
		return -ENOMEM;
	void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	b->words = p;
	b->nbits = nbits;
	b->nwords = nwords;
	b->map_len = (size_t)len;
	return 0;
}

void lm_bitmap_destroy(lm_bitmap *b)
{
	if (b->words)
		munmap(b->words, b->map_len);
	memset(b, 0, sizeof(*b));
}

void lm_bitmap_set_range(lm_bitmap *b, uint64_t start, uint64_t n)
{
	assert(start <= b->nbits && n <= b->nbits - start);
	if (n == 0)
		return;
	uint64_t end = start + n; /* exclusive */
	uint64_t w0 = start >> 6, w1 = (end - 1) >> 6;
	uint64_t m0 = lm__mask_from((unsigned)(start & 63));
	uint64_t m1 = lm__mask_below((unsigned)(((end - 1) & 63) + 1));
	if (w0 == w1) {
		b->words[w0] |= m0 & m1;
		return;
	}
	b->words[w0] |= m0;
	/* memset writes the whole words in between at memory bandwidth. */
	if (w1 > w0 + 1)
		memset(&b->words[w0 + 1], 0xff, (size_t)(w1 - w0 - 1) * sizeof(uint64_t));
	b->words[w1] |= m1;
}

void lm_bitmap_clear_range(lm_bitmap *b, uint64_t start, uint64_t n)
{
	assert(start <= b->nbits && n <= b->nbits - start);
	if (n == 0)
		return;
	uint64_t end = start + n;
	uint64_t w0 = start >> 6, w1 = (end - 1) >> 6;
	uint64_t m0 = lm__mask_from((unsigned)(start & 63));
	uint64_t m1 = lm__mask_below((unsigned)(((end - 1) & 63) + 1));
	if (w0 == w1) {
		b->words[w0] &= ~(m0 & m1);
		return;
	}
	b->words[w0] &= ~m0;
	if (w1 > w0 + 1)
		memset(&b->words[w0 + 1], 0, (size_t)(w1 - w0 - 1) * sizeof(uint64_t));
	b->words[w1] &= ~m1;
}

uint64_t lm_bitmap_count_range(const lm_bitmap *b, uint64_t start, uint64_t n)
{
	assert(start <= b->nbits && n <= b->nbits - start);
	if (n == 0)
		return 0;
	uint64_t end = start + n;
	uint64_t w0 = start >> 6, w1 = (end - 1) >> 6;
	uint64_t m0 = lm__mask_from((unsigned)(start & 63));
	uint64_t m1 = lm__mask_below((unsigned)(((end - 1) & 63) + 1));
	if (w0 == w1)
		return (uint64_t)__builtin_popcountll(b->words[w0] & m0 & m1);
	uint64_t c = (uint64_t)__builtin_popcountll(b->words[w0] & m0);
	for (uint64_t w = w0 + 1; w < w1; w++)
		c += (uint64_t)__builtin_popcountll(b->words[w]);
	return c + (uint64_t)__builtin_popcountll(b->words[w1] & m1);
}

/*
 * Index of the first non-zero word at or after w, or nwords. Clean memory is
 * the common case, so the loop ORs a cache line (8 words) at a time and only
 * looks at single words once a line is known to hold a set bit.
 */
uint64_t lm__first_nonzero_word(const uint64_t *words, uint64_t w, uint64_t nwords)
{
	while (w < nwords && (w & 7)) {
		if (words[w])
			return w;
		w++;
	}
	while (w + 8 <= nwords) {
		const uint64_t *p = &words[w];
		if (p[0] | p[1] | p[2] | p[3] | p[4] | p[5] | p[6] | p[7])
			break;
		w += 8;
	}
	while (w < nwords && !words[w])
		w++;
	return w;
}

uint64_t lm_bitmap_find_next_set(const lm_bitmap *b, uint64_t from)
{
	if (from >= b->nbits)
		return b->nbits;
	uint64_t w = from >> 6;
	uint64_t v = b->words[w] & lm__mask_from((unsigned)(from & 63));
	if (v)
		return (w << 6) + (uint64_t)__builtin_ctzll(v);
	w = lm__first_nonzero_word(b->words, w + 1, b->nwords);
	if (w >= b->nwords)
		return b->nbits;
	return (w << 6) + (uint64_t)__builtin_ctzll(b->words[w]);
}

uint64_t lm__collect(const uint64_t *words, uint64_t from, uint64_t end, uint64_t *out,
		     uint64_t max, uint64_t *next, uint64_t (*skip)(const void *ctx, uint64_t from),
		     const void *ctx)
{
	uint64_t n = 0;
	uint64_t i = from;
	if (i >= end || max == 0)
		goto done;
	uint64_t last_w = (end - 1) >> 6;
	uint64_t last_mask = lm__mask_below((unsigned)(((end - 1) & 63) + 1));
	uint64_t w = i >> 6;
	uint64_t v = words[w] & lm__mask_from((unsigned)(i & 63));
	for (;;) {
		if (!v) {
			/* Clean word: let the caller's structure skip ahead. */
			i = skip(ctx, (w + 1) << 6);
			if (i >= end) {
				i = end;
				goto done;
			}
			w = i >> 6;
			v = words[w] & lm__mask_from((unsigned)(i & 63));
		}
		if (w == last_w)
			v &= last_mask;
		uint64_t base = w << 6;
		if (v == ~0ull && max - n >= 64) {
			/* A fully dirty word (round one): 64 consecutive indices,
			 * a loop the compiler turns into vector stores. */
			for (unsigned k = 0; k < 64; k++)
				out[n + k] = base + k;
			n += 64;
		} else {
			while (v && n < max) {
				out[n++] = base + (uint64_t)__builtin_ctzll(v);
				v &= v - 1;
			}
			if (v) {
				/* Out of room inside this word: resume after the
				 * last index handed out. */
				i = out[n - 1] + 1;
				goto done;
			}
		}
		if (w >= last_w) {
			i = end;
			goto done;
		}
		i = (w + 1) << 6;
		if (n == max)
			goto done;
		v = words[++w];
	}
done:
	*next = i;
	return n;
}

static uint64_t flat_skip(const void *ctx, uint64_t from)
{
	return lm_bitmap_find_next_set(ctx, from);
}

uint64_t lm_bitmap_collect(const lm_bitmap *b, uint64_t *pos, uint64_t end, uint64_t *out,
			   uint64_t max)
{
	assert(end <= b->nbits);
	return lm__collect(b->words, *pos, end, out, max, pos, flat_skip, b);
}

uint64_t lm_bitmap_find_next_clear(const lm_bitmap *b, uint64_t from)
{
	if (from >= b->nbits)
		return b->nbits;
	uint64_t w = from >> 6;
	uint64_t v = ~b->words[w] & lm__mask_from((unsigned)(from & 63));
	while (!v) {
		if (++w >= b->nwords)
			return b->nbits;
		v = ~b->words[w];
	}
	uint64_t i = (w << 6) + (uint64_t)__builtin_ctzll(v);
	/* The zero tail past nbits reads as "clear": clamp it away. */
	return i < b->nbits ? i : b->nbits;
}

int lm_bitmap_and(lm_bitmap *dst, const lm_bitmap *src)
{
	if (dst->nbits != src->nbits)
		return -EINVAL;
	for (uint64_t w = 0; w < dst->nwords; w++)
		dst->words[w] &= src->words[w];
	return 0;
}

int lm_bitmap_or(lm_bitmap *dst, const lm_bitmap *src)
{
	if (dst->nbits != src->nbits)
		return -EINVAL;
	for (uint64_t w = 0; w < dst->nwords; w++)
		dst->words[w] |= src->words[w];
	return 0;
}

int lm_bitmap_andnot(lm_bitmap *dst, const lm_bitmap *src)
{
	if (dst->nbits != src->nbits)
		return -EINVAL;
	for (uint64_t w = 0; w < dst->nwords; w++)
		dst->words[w] &= ~src->words[w];
	return 0;
}

uint64_t lm_bitmap_sync_from(lm_bitmap *dst, uint64_t dst_start, uint64_t *src, uint64_t nbits)
{
	assert(dst_start <= dst->nbits && nbits <= dst->nbits - dst_start);
	uint64_t fresh = 0;
	uint64_t nsrc = (nbits + 63) / 64;
	if ((dst_start & 63) == 0) {
		/* Aligned: source word k lands on exactly one destination word. */
		uint64_t *d = &dst->words[dst_start >> 6];
		for (uint64_t k = 0; k < nsrc; k++) {
			uint64_t v = lm__take_src_word(src, k, nbits);
			if (!v)
				continue;
			fresh += (uint64_t)__builtin_popcountll(v & ~d[k]);
			d[k] |= v;
		}
		return fresh;
	}
	/* Unaligned: each source word straddles two destination words. */
	for (uint64_t k = 0; k < nsrc; k++) {
		uint64_t v = lm__take_src_word(src, k, nbits);
		if (v)
			fresh += lm__or_bits_at(dst, dst_start + k * 64, v);
	}
	return fresh;
}
