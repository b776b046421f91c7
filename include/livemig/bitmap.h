/*
 * livemig bitmap layer: the data structures behind dirty-page tracking.
 *
 * Workload: one bit per 4 KiB guest page, guests up to and past 8 TiB
 * (page indices are 64-bit everywhere). Between pre-copy rounds most memory
 * is clean; in round one all of it is dirty; sometimes dirty pages are
 * scattered. Everything here works a 64-bit word (64 pages) at a time.
 *
 * Ownership: caller-owned structs with _init/_destroy. Storage is mmap'ed
 * with MAP_NORESERVE, so a 2^36-bit bitmap costs nothing until touched.
 * Thread safety: none, except where a function says otherwise: the
 * *_sync_from calls take the source words atomically, so writers may keep
 * setting bits in the source (lm_bitmap_set_atomic) while one thread syncs;
 * lm_page_is_zero may be called from any thread.
 */
#ifndef LIVEMIG_BITMAP_H
#define LIVEMIG_BITMAP_H

#include "livemig/common.h"

/* ---- flat bitmap (src/bitmap/bitmap.c) ---------------------------------- */

typedef struct lm_bitmap {
	uint64_t *words; /* nwords words, bits past nbits are always zero */
	uint64_t nbits;
	uint64_t nwords;
	size_t map_len; /* bytes mapped, for munmap */
} lm_bitmap;

/* All clear. Returns 0 or -ENOMEM / -EINVAL (nbits == 0). */
int lm_bitmap_init(lm_bitmap *b, uint64_t nbits);
void lm_bitmap_destroy(lm_bitmap *b);

static inline bool lm_bitmap_test(const lm_bitmap *b, uint64_t i)
{
	return (b->words[i >> 6] >> (i & 63)) & 1;
}
static inline void lm_bitmap_set(lm_bitmap *b, uint64_t i)
{
	b->words[i >> 6] |= 1ull << (i & 63);
}
static inline void lm_bitmap_clear(lm_bitmap *b, uint64_t i)
{
	b->words[i >> 6] &= ~(1ull << (i & 63));
}
/* Atomic set, for writers that log from several threads. */
static inline void lm_bitmap_set_atomic(lm_bitmap *b, uint64_t i)
{
	__atomic_fetch_or(&b->words[i >> 6], 1ull << (i & 63), __ATOMIC_RELAXED);
}

/* Ranges [start, start+n): whole words in the middle, masks at the ends.
 * The range must lie within the bitmap (checked by assert in debug). */
void lm_bitmap_set_range(lm_bitmap *b, uint64_t start, uint64_t n);
void lm_bitmap_clear_range(lm_bitmap *b, uint64_t start, uint64_t n);
/* Set bits in [start, start+n). */
uint64_t lm_bitmap_count_range(const lm_bitmap *b, uint64_t start, uint64_t n);
/* First set (clear) bit at index >= from, or b->nbits if there is none. */
uint64_t lm_bitmap_find_next_set(const lm_bitmap *b, uint64_t from);
uint64_t lm_bitmap_find_next_clear(const lm_bitmap *b, uint64_t from);
/*
 * Word-at-a-time iteration over the set bits from an index on: the scan loop
 * of the engine and of bench/scan. The current word is copied into the
 * iterator and its bits are peeled off with ctz, so a dense bitmap costs a
 * few instructions per set bit; an exhausted word calls
 * lm_bitmap_find_next_set to skip clean words. Bits changed in the current
 * word after it was loaded are not seen; later words are read live.
 *
 *	lm_bitmap_iter it;
 *	lm_bitmap_iter_init(&it, b, 0);
 *	for (uint64_t i; (i = lm_bitmap_iter_next(&it)) < b->nbits;)
 *		...
 */
typedef struct lm_bitmap_iter {
	const lm_bitmap *b;
	uint64_t w;   /* index of the word in cur */
	uint64_t cur; /* bits of word w not yet returned */
} lm_bitmap_iter;

static inline void lm_bitmap_iter_init(lm_bitmap_iter *it, const lm_bitmap *b, uint64_t from)
{
	it->b = b;
	if (from >= b->nbits) {
		it->w = b->nwords - 1;
		it->cur = 0;
		return;
	}
	it->w = from >> 6;
	it->cur = b->words[it->w] & (~0ull << (from & 63));
}

/* The next set bit, or b->nbits when there are no more. */
static inline uint64_t lm_bitmap_iter_next(lm_bitmap_iter *it)
{
	if (!it->cur) {
		uint64_t i = lm_bitmap_find_next_set(it->b, (it->w + 1) << 6);
		if (i >= it->b->nbits)
			return it->b->nbits;
		it->w = i >> 6;
		it->cur = it->b->words[it->w] & (~0ull << (i & 63));
	}
	uint64_t i = (it->w << 6) + (uint64_t)__builtin_ctzll(it->cur);
	it->cur &= it->cur - 1;
	return i;
}

/*
 * Batch scan: append the indices of set bits in [*pos, end) to out, up to
 * max of them, and advance *pos to where the next call should resume (end
 * when the range is exhausted). Returns how many were written. Nothing is
 * cleared. A fully set word is emitted as 64 consecutive indices at once,
 * so round one (everything dirty) costs a vector store per few pages.
 */
uint64_t lm_bitmap_collect(const lm_bitmap *b, uint64_t *pos, uint64_t end, uint64_t *out,
			   uint64_t max);

/* dst op= src, word by word. -EINVAL if the sizes differ. */
int lm_bitmap_and(lm_bitmap *dst, const lm_bitmap *src);
int lm_bitmap_or(lm_bitmap *dst, const lm_bitmap *src);
int lm_bitmap_andnot(lm_bitmap *dst, const lm_bitmap *src);

/*
 * Sync a source log (the kernel's dirty bitmap, or a software log) into dst:
 * source bit k stands for dst bit dst_start + k, for k < nbits. Each
 * non-zero source word is taken atomically (exchanged with 0) and ORed into
 * dst; safe while other threads set bits in src. Returns the number of dst
 * bits that went from 0 to 1. dst_start need not be word aligned.
 */
uint64_t lm_bitmap_sync_from(lm_bitmap *dst, uint64_t dst_start, uint64_t *src, uint64_t nbits);

/* ---- per-client dirty maps (src/bitmap/clients.c) ----------------------- */

enum lm_dirty_client {
	LM_CLIENT_MIGRATION = 0,
	LM_CLIENT_DISPLAY = 1,
	LM_CLIENT_CODE = 2,
	LM_CLIENT_MAX = 8,
};

/* One flat bitmap per client, created on demand; never a byte per page. */
typedef struct lm_dirty_clients {
	uint64_t npages;
	unsigned active; /* mask of clients that have a bitmap */
	lm_bitmap map[LM_CLIENT_MAX];
} lm_dirty_clients;

int lm_dirty_clients_init(lm_dirty_clients *c, uint64_t npages);
void lm_dirty_clients_destroy(lm_dirty_clients *c);
/* Start/stop logging for one client (allocates/frees its bitmap). */
int lm_dirty_clients_enable(lm_dirty_clients *c, unsigned client);
void lm_dirty_clients_disable(lm_dirty_clients *c, unsigned client);
/* Mark a range dirty for every active client. */
void lm_dirty_clients_set_range(lm_dirty_clients *c, uint64_t start, uint64_t n);
/* Sync one source log into every active client (each client gets the same
 * bits; the source words are taken once). Returns bits newly set for the
 * migration client (or 0 if it is not active). */
uint64_t lm_dirty_clients_sync_from(lm_dirty_clients *c, uint64_t start, uint64_t *src,
				    uint64_t nbits);
bool lm_dirty_clients_test_and_clear(lm_dirty_clients *c, unsigned client, uint64_t page);
/* The client's bitmap (owned by c), or NULL if the client is not active. */
lm_bitmap *lm_dirty_clients_map(lm_dirty_clients *c, unsigned client);

/* ---- summary bitmap (src/bitmap/summary.c) ------------------------------ */

/*
 * A flat bitmap plus one summary bit per chunk (default 512 pages = 2 MiB),
 * kept exact: the summary bit is set iff some bit in the chunk is set.
 * Above it, one top bit per summary word (64 chunks, 128 MiB by default),
 * set iff that word is non-zero, so that finding the next dirty chunk reads
 * neither the clean summary words nor their pages. Iteration skips clean
 * chunks. See summary.c for when the summary is consulted and when the flat
 * scan wins.
 */
typedef struct lm_sbitmap {
	lm_bitmap bits;
	lm_bitmap summary;
	lm_bitmap top;	      /* one bit per word of summary */
	unsigned chunk_shift; /* log2(pages per chunk), >= 6 */
	uint64_t nset;	      /* exact count of set bits */
	uint64_t nchunks;     /* summary bits */
	uint64_t nchunks_set; /* exact count of set summary bits (dirty chunks) */
	/* private: representation choice, see summary.c */
	unsigned mode;
} lm_sbitmap;

/*
 * How lm_sbitmap_find_next_set looks for the next bit. AUTO (the default)
 * consults the summary only while few enough chunks are dirty for skipping
 * them to pay; the others force one way (for tests and bench/scan). The
 * summary is kept exact in every mode.
 */
enum lm_sbitmap_mode {
	LM_SBITMAP_AUTO = 0,
	LM_SBITMAP_SUMMARY = 1,
	LM_SBITMAP_FLAT = 2,
};

/* chunk_pages: power of two >= 64, or 0 for the default (512). */
int lm_sbitmap_init(lm_sbitmap *s, uint64_t nbits, uint64_t chunk_pages);
void lm_sbitmap_destroy(lm_sbitmap *s);
bool lm_sbitmap_test(const lm_sbitmap *s, uint64_t i);
void lm_sbitmap_set(lm_sbitmap *s, uint64_t i);
void lm_sbitmap_clear(lm_sbitmap *s, uint64_t i);
void lm_sbitmap_set_range(lm_sbitmap *s, uint64_t start, uint64_t n);
void lm_sbitmap_clear_range(lm_sbitmap *s, uint64_t start, uint64_t n);
uint64_t lm_sbitmap_find_next_set(const lm_sbitmap *s, uint64_t from);
uint64_t lm_sbitmap_count(const lm_sbitmap *s);
/* As lm_bitmap_sync_from, keeping the summary and count exact. */
uint64_t lm_sbitmap_sync_from(lm_sbitmap *s, uint64_t dst_start, uint64_t *src, uint64_t nbits);
/*
 * Take and clear up to max set bits from [start, start+n), appending their
 * indices to out; returns how many were taken. The engine's inner loop:
 * "give me the next dirty pages of this chunk and forget them".
 */
uint64_t lm_sbitmap_take(lm_sbitmap *s, uint64_t start, uint64_t n, uint64_t *out, uint64_t max);
/* Recompute the summary and counts from s->bits, for callers that wrote
 * s->bits directly with lm_bitmap_* calls. Costs one pass over the words. */
void lm_sbitmap_rebuild(lm_sbitmap *s);
/* As lm_bitmap_collect, skipping clean chunks through the summary. */
uint64_t lm_sbitmap_collect(const lm_sbitmap *s, uint64_t *pos, uint64_t end, uint64_t *out,
			    uint64_t max);
/* Choose the scan policy (enum lm_sbitmap_mode); -EINVAL if unknown. */
int lm_sbitmap_set_mode(lm_sbitmap *s, unsigned mode);
/* Is chunk c dirty (summary bit)? For callers that walk chunk by chunk. */
static inline bool lm_sbitmap_chunk_dirty(const lm_sbitmap *s, uint64_t c)
{
	return lm_bitmap_test(&s->summary, c);
}

/* Word-at-a-time iteration as lm_bitmap_iter, skipping via the summary. */
typedef struct lm_sbitmap_iter {
	const lm_sbitmap *s;
	uint64_t w;
	uint64_t cur;
} lm_sbitmap_iter;

static inline void lm_sbitmap_iter_init(lm_sbitmap_iter *it, const lm_sbitmap *s, uint64_t from)
{
	it->s = s;
	if (from >= s->bits.nbits) {
		it->w = s->bits.nwords - 1;
		it->cur = 0;
		return;
	}
	it->w = from >> 6;
	it->cur = s->bits.words[it->w] & (~0ull << (from & 63));
}

static inline uint64_t lm_sbitmap_iter_next(lm_sbitmap_iter *it)
{
	if (!it->cur) {
		uint64_t i = lm_sbitmap_find_next_set(it->s, (it->w + 1) << 6);
		if (i >= it->s->bits.nbits)
			return it->s->bits.nbits;
		it->w = i >> 6;
		it->cur = it->s->bits.words[it->w] & (~0ull << (i & 63));
	}
	uint64_t i = (it->w << 6) + (uint64_t)__builtin_ctzll(it->cur);
	it->cur &= it->cur - 1;
	return i;
}

/* ---- run-length codec (src/bitmap/rle.c) -------------------------------- */

/*
 * A page set as sorted runs: for each run, varint(gap from the end of the
 * previous run) then varint(length - 1). Encoding: returns bytes written,
 * or -ENOSPC if cap is too small (lm_rle_encoded_size tells the need).
 * Decoding validates everything: runs must stay below nbits, varints must be
 * minimal and at most 10 bytes, no trailing garbage; errors are -EINVAL
 * (malformed, including a gap of 0 between runs, which the encoder never
 * writes since runs are maximal) or -ERANGE (past nbits). Decoding ORs the
 * runs into out (normally freshly initialised, i.e. clear); runs decoded
 * before an error stay set, so callers should treat out as undefined on
 * error. An empty buffer (len 0) is the empty set.
 */
int64_t lm_rle_encoded_size(const lm_bitmap *b);
int64_t lm_rle_encode(const lm_bitmap *b, uint8_t *buf, size_t cap);
int lm_rle_decode(const uint8_t *buf, size_t len, lm_bitmap *out);

/* ---- zero page test (src/bitmap/zero.c) --------------------------------- */

/* Is the 4 KiB page at p (any alignment) all zeros? Samples a few words
 * first, then SSE2 or AVX2, chosen once at run time. */
bool lm_page_is_zero(const void *p);
/* Which implementation lm_page_is_zero uses ("avx2", "sse2"). */
const char *lm_zero_impl(void);

#endif
