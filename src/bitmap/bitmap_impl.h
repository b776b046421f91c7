/*
 * Internals shared by the files of src/bitmap (not part of the public API).
 * Owned by src/bitmap; nothing outside this folder may include it.
 */
#ifndef LIVEMIG_BITMAP_IMPL_H
#define LIVEMIG_BITMAP_IMPL_H

#include "livemig/bitmap.h"

/* Mask of the bits [lo, 64) and [0, hi) of one word (lo < 64, 0 < hi <= 64). */
static inline uint64_t lm__mask_from(unsigned lo)
{
	return ~0ull << lo;
}
static inline uint64_t lm__mask_below(unsigned hi)
{
	return hi >= 64 ? ~0ull : (1ull << hi) - 1;
}

/* Index of the first non-zero word at or after w, or nwords (bitmap.c). */
uint64_t lm__first_nonzero_word(const uint64_t *words, uint64_t w, uint64_t nwords);

/*
 * The batch scan behind lm_bitmap_collect and lm_sbitmap_collect: append
 * the set bits of words[] in [from, end) to out, up to max; *next gets the
 * index to resume from. skip(ctx, i) returns the first set bit >= i (or
 * anything >= end), and is called only when the next word is zero, so the
 * flat and summary versions differ only in how they skip clean words.
 */
uint64_t lm__collect(const uint64_t *words, uint64_t from, uint64_t end, uint64_t *out,
		     uint64_t max, uint64_t *next, uint64_t (*skip)(const void *ctx, uint64_t from),
		     const void *ctx);

/*
 * lm_page_is_zero with a named implementation ("avx2", "sse2", "words"; or
 * "nosample" for the chosen one without the sampling step), for tests and
 * bench/scan. An implementation the CPU lacks falls back to "words".
 */
bool lm__page_is_zero_with(const char *name, const void *p);

/*
 * Take source word k of a log of nbits bits atomically: exchange it with 0,
 * or, for a partial last word, clear only the bits below nbits so that a
 * neighbour's bits sharing the word survive. Returns the bits taken (0
 * without writing when the word reads as clean).
 */
static inline uint64_t lm__take_src_word(uint64_t *src, uint64_t k, uint64_t nbits)
{
	uint64_t mask = ~0ull;
	if ((k + 1) * 64 > nbits)
		mask = lm__mask_below((unsigned)(nbits - k * 64));
	/* A plain load first: most of the log is clean, and a locked
	 * exchange on a clean word would dirty its cache line for nothing. */
	if (!(__atomic_load_n(&src[k], __ATOMIC_RELAXED) & mask))
		return 0;
	if (mask == ~0ull)
		return __atomic_exchange_n(&src[k], 0, __ATOMIC_ACQ_REL);
	return __atomic_fetch_and(&src[k], ~mask, __ATOMIC_ACQ_REL) & mask;
}

/*
 * OR the 64 bits v into dst at bit position pos (any alignment). Returns the
 * bits that were newly set, as (lo word new bits, hi word new bits) folded
 * into a popcount. pos + 64 may run past nbits only where v is zero.
 */
static inline uint64_t lm__or_bits_at(lm_bitmap *dst, uint64_t pos, uint64_t v)
{
	uint64_t w = pos >> 6;
	unsigned sh = (unsigned)(pos & 63);
	uint64_t lo = v << sh;
	uint64_t fresh = lo & ~dst->words[w];
	dst->words[w] |= lo;
	uint64_t n = (uint64_t)__builtin_popcountll(fresh);
	if (sh) {
		uint64_t hi = v >> (64 - sh);
		if (hi) {
			uint64_t fresh_hi = hi & ~dst->words[w + 1];
			dst->words[w + 1] |= hi;
			n += (uint64_t)__builtin_popcountll(fresh_hi);
		}
	}
	return n;
}

#endif
