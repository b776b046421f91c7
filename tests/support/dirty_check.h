/*
 * Test helper: check that a dirty source loses no write. A writer thread
 * scribbles on random pages while the caller's thread runs pre-copy style
 * rounds (sync a unit, clear each chunk, copy its dirty pages into a shadow
 * copy); after the writer stops and a final round runs, the shadow must
 * equal the memory byte for byte.
 */
#ifndef LIVEMIG_TEST_DIRTY_CHECK_H
#define LIVEMIG_TEST_DIRTY_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "livemig/track.h"

struct lm_test_lossless {
	unsigned rounds;      /* harvest rounds while the writer runs */
	uint64_t chunk_pages; /* clear/copy granularity, multiple of 64 */
	bool sim_mark;        /* writer calls lm_sim_mark after each write */
	uint64_t seed;
	/* results */
	uint64_t writes;         /* writes the writer made */
	uint64_t pages_copied;   /* pages copied in all rounds */
	uint64_t pages_mismatch; /* pages that differ at the end: must be 0 */
};

/* 0 or -errno (setup failures); t->pages_mismatch tells the verdict. The
 * source must not be started; it is stopped on return. */
int lm_test_lossless_run(struct lm_dirty_source *src, const struct lm_mem_region *r, size_t n,
			 struct lm_test_lossless *t);

/* xorshift64*, deterministic from a seed. */
static inline uint64_t lm_test_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

#endif
