/*
 * Zero-page test.
 *
 * Workload: before sending a dirty page the engine asks whether it is all
 * zeros, because a zero page costs a header on the wire instead of 4 KiB.
 * Two kinds of page dominate: pages with data, which almost always have a
 * non-zero byte in their first few words or at a few spread-out places, and
 * zero pages (never-written or freshly cleared memory), which have to be
 * read to the end. So the test first samples a few words spread over the
 * page (a data page usually exits there, after a handful of loads), then
 * ORs the whole page together with the widest vector unit the CPU has,
 * stopping early at the first non-zero 256-byte block.
 *
 * The vector version is chosen once, on first use, with
 * __builtin_cpu_supports: AVX2 where present, otherwise SSE2 (always there
 * on x86-64). Other architectures use a portable word loop.
 */
#include <string.h>

#include "bitmap/bitmap_impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define WORDS_PER_PAGE (LM_PAGE_SIZE / 8)

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v)); /* any alignment */
	return v;
}

/* A data page usually has something in its first words, its middle or its
 * end; checking these first keeps the common non-zero case short. The
 * first word alone decides most data pages and touches one cache line of a
 * page that is likely cold, so it goes first on its own. */
static inline bool sample_nonzero(const unsigned char *p)
{
	if (load64(p))
		return true;
	return (load64(p + 8) | load64(p + 2048) | load64(p + 4088) | load64(p + 1024) |
		load64(p + 3072)) != 0;
}

static bool is_zero_words(const void *page)
{
	const unsigned char *p = page;
	for (size_t off = 0; off < LM_PAGE_SIZE; off += 64) {
		uint64_t acc = 0;
		for (size_t k = 0; k < 64; k += 8)
			acc |= load64(p + off + k);
		if (acc)
			return false;
	}
	return true;
}

#if defined(__x86_64__)
/* 256 bytes per step, ORed into two accumulators so that the loads are not
 * serialised behind one chain of ORs; a non-zero block ends the loop. */
static bool is_zero_sse2(const void *page)
{
	const __m128i *p = page;
	for (size_t i = 0; i < LM_PAGE_SIZE / 16; i += 16) {
		__m128i a = _mm_loadu_si128(p + i), b = _mm_loadu_si128(p + i + 1);
		for (size_t k = 2; k < 16; k += 2) {
			a = _mm_or_si128(a, _mm_loadu_si128(p + i + k));
			b = _mm_or_si128(b, _mm_loadu_si128(p + i + k + 1));
		}
		a = _mm_or_si128(a, b);
		if (_mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) != 0xffff)
			return false;
	}
	return true;
}

__attribute__((target("avx2"))) static bool is_zero_avx2(const void *page)
{
	const __m256i *p = page;
	for (size_t i = 0; i < LM_PAGE_SIZE / 32; i += 8) {
		__m256i a = _mm256_loadu_si256(p + i), b = _mm256_loadu_si256(p + i + 1);
		for (size_t k = 2; k < 8; k += 2) {
			a = _mm256_or_si256(a, _mm256_loadu_si256(p + i + k));
			b = _mm256_or_si256(b, _mm256_loadu_si256(p + i + k + 1));
		}
		a = _mm256_or_si256(a, b);
		if (!_mm256_testz_si256(a, a))
			return false;
	}
	return true;
}
#endif

typedef bool (*zero_fn)(const void *);

static zero_fn impl;
static const char *impl_name;

static zero_fn choose(void)
{
	zero_fn f = __atomic_load_n(&impl, __ATOMIC_ACQUIRE);
	if (f)
		return f;
	const char *name = "words";
	f = is_zero_words;
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2")) {
		f = is_zero_avx2;
		name = "avx2";
	} else {
		f = is_zero_sse2;
		name = "sse2";
	}
#endif
	/* Racing first callers compute the same answer; either store wins. */
	__atomic_store_n(&impl_name, name, __ATOMIC_RELAXED);
	__atomic_store_n(&impl, f, __ATOMIC_RELEASE);
	return f;
}

bool lm_page_is_zero(const void *p)
{
	if (sample_nonzero(p))
		return false;
	return choose()(p);
}

const char *lm_zero_impl(void)
{
	choose();
	return __atomic_load_n(&impl_name, __ATOMIC_RELAXED);
}

bool lm__page_is_zero_with(const char *name, const void *p)
{
#if defined(__x86_64__)
	if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2"))
		return !sample_nonzero(p) && is_zero_avx2(p);
	if (!strcmp(name, "sse2"))
		return !sample_nonzero(p) && is_zero_sse2(p);
#endif
	if (!strcmp(name, "nosample"))
		return choose()(p);
	return !sample_nonzero(p) && is_zero_words(p);
}
