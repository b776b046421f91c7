/*
 * Internal to src/track: helpers shared by the dirty-source implementations.
 * Not installed; the public interface is include/livemig/track.h.
 */
#ifndef LIVEMIG_TRACK_INTERNAL_H
#define LIVEMIG_TRACK_INTERNAL_H

#include "livemig/track.h"

/*
 * Helpers for source implementations (src/track/common.c).
 * lm__track_set_regions validates (page-aligned hosts, non-empty, no overlap
 * in guest page space) and copies the table into s. lm__track_find returns
 * the region that contains [first, first + n), or NULL.
 */
int lm__track_set_regions(struct lm_dirty_source *s, const struct lm_mem_region *r, size_t n);
void lm__track_drop_regions(struct lm_dirty_source *s);
const struct lm_mem_region *lm__track_find(const struct lm_dirty_source *s, uint64_t first, uint64_t n);

#ifdef LM_TEST_HOOKS
/*
 * Test builds only (src/track/sim.c): the next sync that finds `page`
 * marked drops that mark, so the write is never reported, as a dirty
 * tracker with a bug would lose it. Lets tests prove that the
 * completeness check finds a lost page by number.
 */
void lm__sim_drop_once(struct lm_dirty_source *s, uint64_t page);
#endif

#endif
