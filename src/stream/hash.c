/*
 * XXH3 for the x86-64 baseline, and the choice of the ops table this CPU
 * runs fastest (src/stream/hash.h says why there are two).
 */
#include <stdatomic.h>
#include <string.h>

#define LM__HASH_OPS lm__hash_sse2
#define LM__HASH_NAME "sse2"
#include "stream/hash_impl.h"

static _Atomic(const struct lm__hash_ops *) chosen;

const struct lm__hash_ops *lm__hash(void)
{
	const struct lm__hash_ops *h = atomic_load_explicit(&chosen, memory_order_relaxed);
	if (h)
		return h;
	h = &lm__hash_sse2;
#if defined(__x86_64__)
	/* Checks the OS saves the AVX registers (XCR0) as well as CPUID. */
	__builtin_cpu_init();
	if (lm__hash_avx2.name && __builtin_cpu_supports("avx2"))
		h = &lm__hash_avx2;
#endif
	atomic_store_explicit(&chosen, h, memory_order_relaxed);
	return h;
}
