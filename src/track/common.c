/*
 * Region bookkeeping shared by the dirty sources: validate the table the
 * engine hands to start(), keep a private copy, and find the region a range
 * belongs to. Guests have a handful of regions (one per memory slot), so a
 * linear search is the right structure.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "track/internal.h"

int lm__track_set_regions(struct lm_dirty_source *s, const struct lm_mem_region *r, size_t n)
{
	if (s->nregions)
		return -EBUSY;
	if (!r || n == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (r[i].npages == 0 || !r[i].host || ((uintptr_t)r[i].host & (LM_PAGE_SIZE - 1)))
			return -EINVAL;
		if (r[i].first_page + r[i].npages < r[i].first_page)
			return -EINVAL;
		for (size_t j = 0; j < i; j++) {
			uint64_t a0 = r[i].first_page, a1 = a0 + r[i].npages;
			uint64_t b0 = r[j].first_page, b1 = b0 + r[j].npages;
			if (a0 < b1 && b0 < a1)
				return -EINVAL;
		}
	}
	struct lm_mem_region *copy = calloc(n, sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	memcpy(copy, r, n * sizeof(*copy));
	s->regions = copy;
	s->nregions = n;
	return 0;
}

void lm__track_drop_regions(struct lm_dirty_source *s)
{
	free(s->regions);
	s->regions = NULL;
	s->nregions = 0;
}

const struct lm_mem_region *lm__track_find(const struct lm_dirty_source *s, uint64_t first, uint64_t n)
{
	for (size_t i = 0; i < s->nregions; i++) {
		const struct lm_mem_region *r = &s->regions[i];
		if (first >= r->first_page && first - r->first_page < r->npages &&
		    n <= r->npages - (first - r->first_page))
			return r;
	}
	return NULL;
}
