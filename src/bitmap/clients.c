/*
 * Per-client dirty maps.
 *
 * Workload: several consumers want to know which guest pages changed, each
 * on its own schedule: migration (clears what it has sent, every round), a
 * display (clears its framebuffer range every frame), a code cache. A byte
 * per page with one bit per client would make every operation bit-by-bit
 * and cost 8x the memory; instead each client gets its own flat word
 * bitmap, created only while that client logs, so every client keeps the
 * word-at-a-time operations of lm_bitmap.
 *
 * Syncing the kernel's log must take each source word once (the exchange
 * empties it), so sync_from takes a word and ORs it into every active
 * client before moving on, rather than syncing client by client.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "bitmap/bitmap_impl.h"

int lm_dirty_clients_init(lm_dirty_clients *c, uint64_t npages)
{
	memset(c, 0, sizeof(*c));
	if (npages == 0 || npages > (1ull << 58))
		return -EINVAL;
	c->npages = npages;
	return 0;
}

void lm_dirty_clients_destroy(lm_dirty_clients *c)
{
	for (unsigned k = 0; k < LM_CLIENT_MAX; k++)
		lm_dirty_clients_disable(c, k);
	memset(c, 0, sizeof(*c));
}

int lm_dirty_clients_enable(lm_dirty_clients *c, unsigned client)
{
	if (client >= LM_CLIENT_MAX)
		return -EINVAL;
	if (c->active & (1u << client))
		return 0;
	int rc = lm_bitmap_init(&c->map[client], c->npages);
	if (rc < 0)
		return rc;
	c->active |= 1u << client;
	return 0;
}

void lm_dirty_clients_disable(lm_dirty_clients *c, unsigned client)
{
	if (client >= LM_CLIENT_MAX || !(c->active & (1u << client)))
		return;
	lm_bitmap_destroy(&c->map[client]);
	c->active &= ~(1u << client);
}

lm_bitmap *lm_dirty_clients_map(lm_dirty_clients *c, unsigned client)
{
	if (client >= LM_CLIENT_MAX || !(c->active & (1u << client)))
		return NULL;
	return &c->map[client];
}

void lm_dirty_clients_set_range(lm_dirty_clients *c, uint64_t start, uint64_t n)
{
	for (unsigned k = 0; k < LM_CLIENT_MAX; k++)
		if (c->active & (1u << k))
			lm_bitmap_set_range(&c->map[k], start, n);
}

uint64_t lm_dirty_clients_sync_from(lm_dirty_clients *c, uint64_t start, uint64_t *src,
				    uint64_t nbits)
{
	assert(start <= c->npages && nbits <= c->npages - start);
	uint64_t fresh = 0;
	uint64_t nsrc = (nbits + 63) / 64;
	/* A log nobody listens to is still emptied: harvesting re-arms it. */
	for (uint64_t k = 0; k < nsrc; k++) {
		uint64_t v = lm__take_src_word(src, k, nbits);
		if (!v)
			continue;
		for (unsigned cl = 0; cl < LM_CLIENT_MAX; cl++) {
			if (!(c->active & (1u << cl)))
				continue;
			uint64_t f = lm__or_bits_at(&c->map[cl], start + k * 64, v);
			if (cl == LM_CLIENT_MIGRATION)
				fresh += f;
		}
	}
	return fresh;
}

bool lm_dirty_clients_test_and_clear(lm_dirty_clients *c, unsigned client, uint64_t page)
{
	if (client >= LM_CLIENT_MAX || !(c->active & (1u << client)) || page >= c->npages)
		return false;
	lm_bitmap *b = &c->map[client];
	if (!lm_bitmap_test(b, page))
		return false;
	lm_bitmap_clear(b, page);
	return true;
}
