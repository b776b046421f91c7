/*
 * livemig skip map: the guest pages that need neither scanning nor sending
 * (src/migrate/skip.c).
 *
 * A balloon device marks the pages its guest gave back to the host (after
 * freeing them with MADV_DONTNEED, so they read as zero) and unmarks them
 * when the guest takes them back. The migration engine leaves marked pages
 * out of every round (no read, no header) and sends the map itself to the
 * destination as an incremental table stream (livemig/table.h): the bitmap's
 * words seen as 16-byte entries of 128 pages each, so an all-zero stretch
 * of 128 pages is an invalid entry that costs nothing on the wire, and a
 * read after the first pass carries only entries changed since the last
 * read. The destination applies those records to its own skip map, which
 * then belongs to the VM there: a later migration from there keeps the
 * benefit.
 *
 * Ownership: an opaque handle made by lm_skip_map_new and freed by
 * lm_skip_map_free; the owner (a VMM's balloon, a test) keeps it alive while
 * any migration that borrowed it runs.
 *
 * Thread safety: every call takes the map's mutex, so a device may change
 * the map from vCPU threads while the migration thread reads it. No call
 * blocks on anything but that mutex, and none holds it over I/O.
 */
#ifndef LIVEMIG_SKIP_H
#define LIVEMIG_SKIP_H

#include "livemig/common.h"
#include "livemig/bitmap.h"

/* Pages per table-stream entry (16 bytes of bitmap). */
#define LM_SKIP_PAGES_PER_ENTRY 128u
/* The table stream's 32-bit entry index bounds the map: 2^39 pages (2 PiB). */
#define LM_SKIP_MAX_PAGES (1ull << 39)

typedef struct lm_skip_map lm_skip_map;

/* ---- the device's side ----------------------------------------------------- */

/* A map for guest pages [0, npages), all clear. 0, -EINVAL (npages 0 or
 * above LM_SKIP_MAX_PAGES) or -ENOMEM. */
int lm_skip_map_new(uint64_t npages, lm_skip_map **out);
void lm_skip_map_free(lm_skip_map *m);
/* Mark (unmark) pages [first, first + n) as skipped. 0 or -ERANGE. Call
 * set after the pages were freed, clear before the guest reuses them. */
int lm_skip_map_set(lm_skip_map *m, uint64_t first, uint64_t n);
int lm_skip_map_clear(lm_skip_map *m, uint64_t first, uint64_t n);
/* Is page skipped? false past the end. */
bool lm_skip_map_test(lm_skip_map *m, uint64_t page);
/* Pages marked now (exact). */
uint64_t lm_skip_map_count(lm_skip_map *m);
/* The npages the map was made for. */
uint64_t lm_skip_map_npages(const lm_skip_map *m);
/* Copy the marks of pages [first, first + n) into out (bit k of out[k/64]
 * for page first + k, bits past n zero); out holds (n + 63) / 64 words.
 * -ERANGE if the range leaves the map. */
int lm_skip_map_get(lm_skip_map *m, uint64_t first, uint64_t n, uint64_t *out);

/* ---- the migration engine's side ----------------------------------------- */

/* Called for each run of skipped pages [first, first + n) that a table read
 * carried or a table write applied. */
typedef void (*lm_skip_run_fn)(void *arg, uint64_t first, uint64_t n);

/*
 * Clear from dirty the skipped pages of [first, first + n) (under the map's
 * lock, so the set removed is one consistent snapshot). Returns how many
 * dirty bits were removed. Pages past the map's end are left alone.
 */
uint64_t lm_skip_map_remove_from(lm_skip_map *m, lm_sbitmap *dirty, uint64_t first, uint64_t n);

/* Begin a new first pass of the table stream (a new migration). */
void lm_skip_map_table_restart(lm_skip_map *m);
/*
 * lm_table_read over the map: fill buf (cap >= LM_TABLE_READ_MIN) with table
 * records; 0 ends a pass (see livemig/table.h). If fn is not NULL it is
 * called, with the lock held, for every run of skipped pages in the entries
 * read: their contents as the destination will see them.
 */
int64_t lm_skip_map_table_read(lm_skip_map *m, void *buf, size_t cap, lm_skip_run_fn fn, void *arg);
/* Entries changed and not yet read. */
uint64_t lm_skip_map_table_pending(lm_skip_map *m);
/*
 * Destination: apply len bytes of table records (lm_table_write; a bad
 * buffer changes nothing and returns -EINVAL or -ERANGE with the cause in
 * err). Then fn, if not NULL, is called with the lock held for every run of
 * skipped pages in the entries written. Returns len or -errno.
 */
int64_t lm_skip_map_table_write(lm_skip_map *m, const void *buf, size_t len, lm_skip_run_fn fn, void *arg,
				char *err, size_t errcap);

#endif
