/*
 * XXH3, the one hash of the stream layer (frame checksums, the RAM digest),
 * behind an ops table with one entry per instruction set.
 *
 * Workload: every page a migration moves is hashed on each side (for the
 * digest, and for the frame checksum: the same hash with page-hash-csum,
 * a second pass without) while it streams at GB/s, so the hash is on the
 * data path's critical path. Debian's libxxhash is built for the
 * x86-64 baseline (SSE2) and called out of line; the same algorithm
 * compiled inline for AVX2 took 2.7x less time per page here (2026-12-07,
 * 1 GiB, copy + XXH3-128 per page + XXH3-64 per 1 MiB: 869 ns against
 * 324 ns a page). XXH3 gives the same values whatever vector code
 * computes it, so the choice never reaches the wire. Not part of the
 * public API.
 */
#ifndef LIVEMIG_STREAM_HASH_H
#define LIVEMIG_STREAM_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "livemig/stream.h"

struct lm__hash_ops {
	const char *name; /* "avx2", "sse2"; NULL: not built (no -mavx2) */
	uint64_t (*h64)(const void *p, size_t n, uint64_t seed);
	lm_hash128 (*h128)(const void *p, size_t n, uint64_t seed);
	/* Streaming XXH3-64 over lm_stream_csum storage. */
	void (*reset)(lm_stream_csum *c, uint64_t seed);
	void (*update)(lm_stream_csum *c, const void *p, size_t n);
	uint64_t (*digest)(const lm_stream_csum *c);
};

extern const struct lm__hash_ops lm__hash_sse2;
extern const struct lm__hash_ops lm__hash_avx2;

/* The fastest this CPU runs (chosen once). */
const struct lm__hash_ops *lm__hash(void);

#endif
