/*
 * The body of one lm__hash_ops entry: included once per instruction set
 * by src/stream/hash.c (baseline) and src/stream/hash_avx2.c (compiled
 * with -mavx2), each defining LM__HASH_OPS and LM__HASH_NAME first.
 * XXH_INLINE_ALL makes every XXH3 function static to the including file,
 * so each copy is compiled for that file's instruction set.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "stream/hash.h"

_Static_assert(sizeof(XXH3_state_t) <= sizeof(((lm_stream_csum *)0)->state),
	       "lm_stream_csum too small");
_Static_assert(_Alignof(XXH3_state_t) <= 64, "lm_stream_csum alignment");

static uint64_t impl_h64(const void *p, size_t n, uint64_t seed)
{
	return XXH3_64bits_withSeed(p, n, seed);
}

static lm_hash128 impl_h128(const void *p, size_t n, uint64_t seed)
{
	XXH128_hash_t h = XXH3_128bits_withSeed(p, n, seed);
	return (lm_hash128){h.low64, h.high64};
}

static void impl_reset(lm_stream_csum *c, uint64_t seed)
{
	/* XXH3 wants a fresh state zeroed (XXH3_INITSTATE) before its first
	 * reset: stack garbage that happens to equal the seed would make the
	 * reset skip deriving the secret. */
	memset(c->state, 0, sizeof(c->state));
	XXH3_64bits_reset_withSeed((XXH3_state_t *)(void *)c->state, seed);
}

static void impl_update(lm_stream_csum *c, const void *p, size_t n)
{
	XXH3_64bits_update((XXH3_state_t *)(void *)c->state, p, n);
}

static uint64_t impl_digest(const lm_stream_csum *c)
{
	return XXH3_64bits_digest((const XXH3_state_t *)(const void *)c->state);
}

const struct lm__hash_ops LM__HASH_OPS = {
    .name = LM__HASH_NAME,
    .h64 = impl_h64,
    .h128 = impl_h128,
    .reset = impl_reset,
    .update = impl_update,
    .digest = impl_digest,
};
