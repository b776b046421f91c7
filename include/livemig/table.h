/*
 * livemig incremental table stream (src/stream/table.c).
 *
 * Some state is a big table of fixed 16-byte entries whose changes are
 * scattered: a hashed page table of about a million entries, or the balloon's
 * skip bitmap seen as 16-byte chunks of 128 pages. Such a table is migrated
 * like a file: the source side is read repeatedly, and each read returns only
 * the entries changed since the previous pass; the destination side is
 * written with exactly those bytes. docs/table-stream.md describes the
 * record format and its semantics in full.
 *
 * Wire format: a sequence of records, each
 *
 *     struct { uint32_t index; uint16_t n_valid; uint16_t n_invalid; }
 *
 * in little-endian byte order, followed by n_valid entries of 16 bytes.
 * Entries [index, index + n_valid) take those bytes; entries
 * [index + n_valid, index + n_valid + n_invalid) become invalid (all zero)
 * and cost no bytes. The entries themselves are opaque bytes: the stream
 * copies them as they are and never swaps their byte order.
 *
 * Validity: an entry is invalid exactly when all its 16 bytes are zero.
 * That makes the stream lossless: the destination stores an invalid entry as
 * zeros, so any other rule would let an "invalid but non-zero" entry differ
 * on the two sides.
 *
 * Ownership: the entries belong to the caller on both sides; a handle only
 * keeps a pointer to them and must be closed before they are freed. The
 * source handle owns its changed-entry bitmap. Handles are opaque, made by
 * _open and freed by _close.
 *
 * Thread safety: none. On the source, the caller serializes entry updates,
 * lm_table_src_mark and lm_table_read (for instance under the lock that
 * protects the table); an entry must be marked after it is changed.
 */
#ifndef LIVEMIG_TABLE_H
#define LIVEMIG_TABLE_H

#include "livemig/common.h"

#define LM_TABLE_ENTRY_SIZE 16u
#define LM_TABLE_RECORD_HDR 8u
/* A read buffer of at least this many bytes always makes progress. */
#define LM_TABLE_READ_MIN (LM_TABLE_RECORD_HDR + LM_TABLE_ENTRY_SIZE)
/* Indices are 32-bit on the wire. */
#define LM_TABLE_MAX_ENTRIES (1ull << 32)
/* Longest run of valid (or of invalid) entries in one record. */
#define LM_TABLE_RUN_MAX 0xffffu

/*
 * Source flags. By default the first pass omits invalid entries, which is
 * right when the destination table starts all zero. With
 * LM_TABLE_FULL_FIRST_PASS the first pass also sends the invalid runs (as
 * header-only records), so that a destination holding stale entries ends up
 * equal to the source too.
 */
#define LM_TABLE_FULL_FIRST_PASS (1u << 0)
#define LM_TABLE_SRC_FLAGS (LM_TABLE_FULL_FIRST_PASS)
/* No destination flags are defined yet: flags must be 0. */
#define LM_TABLE_DST_FLAGS 0u

typedef struct lm_table_src lm_table_src;
typedef struct lm_table_dst lm_table_dst;

/* ---- source side -------------------------------------------------------- */

/*
 * Open a source over n entries at `entries` (n * 16 bytes, caller-owned, any
 * alignment). Every entry starts marked, so the first pass covers the whole
 * table. Returns 0 or -EINVAL (unknown flag, n == 0 or n > 2^32, NULL
 * pointer) or -ENOMEM.
 */
int lm_table_src_open(lm_table_src **out, const void *entries, uint64_t n, unsigned flags);
void lm_table_src_close(lm_table_src *src);

/* Record that entry `index` (or [start, start + count)) changed. Marking an
 * entry twice costs nothing. Returns 0 or -ERANGE. */
int lm_table_src_mark(lm_table_src *src, uint64_t index);
int lm_table_src_mark_range(lm_table_src *src, uint64_t start, uint64_t count);

/*
 * Fill buf with whole records and return the number of bytes written.
 * The first pass returns every valid entry; later passes return only entries
 * marked since they were last read. A pass ends with a read that returns 0;
 * the read after that begins the next pass at index 0. A short buffer is
 * fine: the next read resumes where this one stopped. Returns -EINVAL if
 * cap < LM_TABLE_READ_MIN.
 */
int64_t lm_table_read(lm_table_src *src, void *buf, size_t cap);

/* Entries marked and not yet read: what the rest of this pass and the next
 * pass would carry (at most 16 bytes each, plus record headers). */
uint64_t lm_table_src_pending(const lm_table_src *src);
/* True until the first pass has ended (with its 0-byte read). */
bool lm_table_src_first_pass(const lm_table_src *src);
/* Forget the read position and start a new first pass over the whole table,
 * e.g. for a new destination. */
void lm_table_src_restart(lm_table_src *src);

/* ---- destination side --------------------------------------------------- */

/* Open a destination over n caller-owned entries. For the default first
 * pass the table must start all zero. Returns 0, -EINVAL or -ENOMEM. */
int lm_table_dst_open(lm_table_dst **out, void *entries, uint64_t n, unsigned flags);
void lm_table_dst_close(lm_table_dst *dst);

/*
 * Apply len bytes of whole records. Every record is checked before any entry
 * changes: a truncated header, a record with no entries, missing entry bytes,
 * a valid entry that is all zero or a trailing partial record is -EINVAL; a
 * record reaching past the table is -ERANGE. On error nothing changed and
 * lm_table_dst_error() says what was wrong and where. Returns len on success.
 * Records need not be in order; later records win.
 */
int64_t lm_table_write(lm_table_dst *dst, const void *buf, size_t len);
/* The message for the last failed write ("" if none). Owned by dst. */
const char *lm_table_dst_error(const lm_table_dst *dst);

#endif
