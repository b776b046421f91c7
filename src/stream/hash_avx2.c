/*
 * XXH3 compiled for AVX2 (the Makefile builds this file alone with
 * -mavx2); src/stream/hash.c calls it only on a CPU that has AVX2.
 */
#include <string.h>

#ifdef __AVX2__
#define LM__HASH_OPS lm__hash_avx2
#define LM__HASH_NAME "avx2"
#include "stream/hash_impl.h"
#else
#include "stream/hash.h"
/* Built without -mavx2 (the fuzzers compile every file with the same
 * flags): no AVX2 entry, and lm__hash() keeps to the baseline. */
const struct lm__hash_ops lm__hash_avx2 = { .name = NULL };
#endif
