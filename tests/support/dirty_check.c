/* Lossless-harvest check shared by the dirty source tests (see dirty_check.h). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dirty_check.h"

struct writer {
	struct lm_dirty_source *src;
	const struct lm_mem_region *r;
	size_t n;
	bool sim_mark;
	uint64_t seed;
	int stop;
	uint64_t writes;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t rs = w->seed | 1;
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		const struct lm_mem_region *r = &w->r[lm_test_rand(&rs) % w->n];
		uint64_t page = lm_test_rand(&rs) % r->npages;
		uint64_t word = lm_test_rand(&rs) % (LM_PAGE_SIZE / 8);
		uint64_t *p = (uint64_t *)((uint8_t *)r->host + page * LM_PAGE_SIZE) + word;
		__atomic_store_n(p, lm_test_rand(&rs) | 1, __ATOMIC_RELAXED);
		if (w->sim_mark)
			lm_sim_mark(w->src, r->first_page + page);
		w->writes++;
	}
	return NULL;
}

/* One round over every region: sync unit by unit, clear and copy chunk by chunk. */
static int round_copy(struct lm_dirty_source *src, const struct lm_mem_region *r, size_t n,
		      uint8_t **shadow, lm_sbitmap *dirty, uint64_t chunk, uint64_t *copied)
{
	uint64_t idx[256];
	for (size_t i = 0; i < n; i++) {
		uint64_t unit = src->sync_pages ? src->sync_pages : r[i].npages;
		for (uint64_t u = 0; u < r[i].npages; u += unit) {
			uint64_t un = r[i].npages - u < unit ? r[i].npages - u : unit;
			int64_t got = lm_dirty_source_sync(src, r[i].first_page + u, un, dirty);
			if (got < 0)
				return (int)got;
			for (uint64_t c = u; c < u + un; c += chunk) {
				uint64_t cn = u + un - c < chunk ? u + un - c : chunk;
				int err = lm_dirty_source_clear(src, r[i].first_page + c, cn);
				if (err)
					return err;
				uint64_t k;
				while ((k = lm_sbitmap_take(dirty, r[i].first_page + c, cn, idx, 256)) > 0) {
					for (uint64_t j = 0; j < k; j++) {
						uint64_t off = idx[j] - r[i].first_page;
						memcpy(shadow[i] + off * LM_PAGE_SIZE,
						       (uint8_t *)r[i].host + off * LM_PAGE_SIZE, LM_PAGE_SIZE);
					}
					*copied += k;
				}
			}
		}
	}
	return 0;
}

int lm_test_lossless_run(struct lm_dirty_source *src, const struct lm_mem_region *r, size_t n,
			 struct lm_test_lossless *t)
{
	int err = 0;
	uint64_t end = 0;
	uint8_t **shadow = calloc(n, sizeof(*shadow));
	lm_sbitmap dirty;
	bool dirty_ok = false, started = false, writer_on = false;
	pthread_t th;
	struct writer w = { .src = src, .r = r, .n = n, .sim_mark = t->sim_mark, .seed = t->seed };

	if (!shadow)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (r[i].first_page + r[i].npages > end)
			end = r[i].first_page + r[i].npages;
		shadow[i] = malloc(r[i].npages * LM_PAGE_SIZE);
		if (!shadow[i]) {
			err = -ENOMEM;
			goto out;
		}
	}
	err = lm_sbitmap_init(&dirty, end, 0);
	if (err)
		goto out;
	dirty_ok = true;
	err = lm_dirty_source_start(src, r, n);
	if (err)
		goto out;
	started = true;
	if (pthread_create(&th, NULL, writer_main, &w)) {
		err = -EAGAIN;
		goto out;
	}
	writer_on = true;

	/* Round 1 copies everything, as the engine does. */
	for (size_t i = 0; i < n; i++)
		lm_sbitmap_set_range(&dirty, r[i].first_page, r[i].npages);
	for (unsigned round = 0; round <= t->rounds; round++) {
		err = round_copy(src, r, n, shadow, &dirty, t->chunk_pages, &t->pages_copied);
		if (err)
			goto out;
		struct timespec ts = { 0, 2 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	writer_on = false;
	t->writes = w.writes;
	/* The final round, with the writer stopped, as at the switchover. */
	err = round_copy(src, r, n, shadow, &dirty, t->chunk_pages, &t->pages_copied);
	if (err)
		goto out;
	t->pages_mismatch = 0;
	for (size_t i = 0; i < n; i++)
		for (uint64_t p = 0; p < r[i].npages; p++)
			if (memcmp(shadow[i] + p * LM_PAGE_SIZE, (uint8_t *)r[i].host + p * LM_PAGE_SIZE,
				   LM_PAGE_SIZE))
				t->pages_mismatch++;

out:
	if (writer_on) {
		__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
		pthread_join(th, NULL);
	}
	if (started)
		lm_dirty_source_stop(src);
	if (dirty_ok)
		lm_sbitmap_destroy(&dirty);
	for (size_t i = 0; i < n; i++)
		free(shadow[i]);
	free(shadow);
	return err;
}
