/*
 * The migration digest: an XXH3-128 fingerprint of all guest RAM that the
 * sender and the receiver maintain as pages go by, compared after END.
 *
 * Workload: the sender hashes each page it sends, the receiver each page
 * it writes, and pages are resent many times across rounds. A digest
 * that had to be recomputed over all RAM during the pause would cost a
 * full pass of guest memory exactly when time matters most, so it is a sum
 * (mod 2^128) of independent per-page contributions c(i): replacing a page
 * subtracts its old c(i) and adds the new one. c(i) = XXH3-128(page,
 * seed = i) binds content to position; an all-zero page contributes 0
 * instead of its hash, so pages never written (or ballooned, or zero)
 * cost nothing on either side, which matters for a 1 TiB guest with a few
 * GiB touched. The old contributions are kept in a 16-byte-per-page array
 * mapped with MAP_NORESERVE: only entries of pages that were ever nonzero
 * become resident.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "livemig/stream.h"
#include "stream/hash.h"

static inline lm_hash128 add128(lm_hash128 a, lm_hash128 b)
{
	lm_hash128 r;
	r.lo = a.lo + b.lo;
	r.hi = a.hi + b.hi + (r.lo < a.lo);
	return r;
}

static inline lm_hash128 sub128(lm_hash128 a, lm_hash128 b)
{
	lm_hash128 r;
	r.lo = a.lo - b.lo;
	r.hi = a.hi - b.hi - (a.lo < b.lo);
	return r;
}

/*
 * All-zero test, a word at a time; most nonzero pages fail on the first
 * block. Pages need not be aligned (a page inside an outgoing frame sits
 * 28 bytes past the frame start), so words are loaded with memcpy, which
 * compiles to plain loads.
 */
static bool page_is_zero(const void *page)
{
	const uint8_t *p = page;
	for (size_t i = 0; i < LM_PAGE_SIZE; i += 64) {
		uint64_t w[8];
		memcpy(w, p + i, sizeof(w));
		if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
			return false;
	}
	return true;
}

lm_hash128 lm_digest_contrib(uint64_t i, const void *page)
{
	if (page_is_zero(page))
		return (lm_hash128){0, 0};
	return lm__hash()->h128(page, LM_PAGE_SIZE, i);
}

int lm_digest_init(lm_digest *d, uint64_t end_page)
{
	memset(d, 0, sizeof(*d));
	if (end_page == 0 || end_page > LM_STREAM_PAGE_LIMIT)
		return -EINVAL;
	size_t len = (size_t)end_page * sizeof(lm_hash128);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	d->contrib = p;
	d->map_len = len;
	d->end_page = end_page;
	return 0;
}

void lm_digest_destroy(lm_digest *d)
{
	if (d->contrib && d->map_len)
		munmap(d->contrib, d->map_len);
	memset(d, 0, sizeof(*d));
}

void lm_digest_share(lm_digest *part, const lm_digest *d)
{
	*part = *d;
	part->sum = (lm_hash128){0, 0};
	part->map_len = 0; /* not the owner */
}

void lm_digest_fold(lm_digest *d, lm_digest *part)
{
	d->sum = add128(d->sum, part->sum);
	part->sum = (lm_hash128){0, 0};
}

static inline void replace(lm_digest *d, uint64_t i, lm_hash128 c)
{
	lm_hash128 *old = &d->contrib[i];
	/* Reading a never-touched entry maps the shared zero page; writing
	 * only when the value changes keeps the common zero-over-zero case
	 * from allocating memory for the entry. */
	if (old->lo == c.lo && old->hi == c.hi)
		return;
	d->sum = add128(sub128(d->sum, *old), c);
	*old = c;
}

void lm_digest_page(lm_digest *d, uint64_t i, const void *page)
{
	if (i >= d->end_page)
		return;
	replace(d, i, lm_digest_contrib(i, page));
}

void lm_digest_set(lm_digest *d, uint64_t i, lm_hash128 c)
{
	if (i < d->end_page)
		replace(d, i, c);
}

void lm_digest_pages(lm_digest *d, uint64_t i, uint64_t n, const void *pages)
{
	const uint8_t *p = pages;
	for (uint64_t k = 0; k < n; k++)
		lm_digest_page(d, i + k, p + k * LM_PAGE_SIZE);
}

void lm_digest_zero(lm_digest *d, uint64_t i, uint64_t n)
{
	lm_hash128 z = {0, 0};
	if (i >= d->end_page)
		return;
	if (n > d->end_page - i)
		n = d->end_page - i;
	for (uint64_t k = 0; k < n; k++)
		replace(d, i + k, z);
}

void lm_digest_add_memory(lm_hash128 *acc, uint64_t first_page, uint64_t npages, const void *mem)
{
	const uint8_t *p = mem;
	for (uint64_t k = 0; k < npages; k++)
		*acc = add128(*acc, lm_digest_contrib(first_page + k, p + k * LM_PAGE_SIZE));
}
