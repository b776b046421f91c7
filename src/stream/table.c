/*
 * The incremental table stream: a big table of 16-byte entries migrated as a
 * sequence of passes, each carrying only what changed since the last one.
 *
 * Workload: about a million entries (a hashed page table; the balloon's skip
 * bitmap at 128 pages per entry), written rarely and in scattered places
 * while the migration thread reads the table over and over. The first pass
 * must look at every entry anyway; after that the number of changed entries
 * per pass is tiny next to the table, so the cost of a pass has to follow the
 * changes, not the table size.
 *
 * Representation: one "changed" bit per entry in a flat bitmap (1M entries =
 * 128 KiB), found a 64-bit word at a time, so a pass over a quiet table reads
 * 16 K words and no entries. Opening sets every bit: the first pass is then
 * an ordinary pass that omits invalid entries, and a change made during the
 * first pass behind the read position simply stays marked for the next one.
 * A read clears a bit when it copies (or skips) the entry, so an entry
 * changed and marked after that is sent again later; nothing is lost as long
 * as the caller marks an entry after changing it.
 *
 * Runs of adjacent changed entries share one 8-byte record header, which is
 * what makes the first pass and clustered changes cheap; runs of invalid
 * entries cost only a header whatever their length.
 *
 * Validity is tested entry by entry while a run is built. A variant that
 * computed a validity mask per bitmap word and measured runs with
 * count-trailing-zeros was tried and was slower (8.2 vs 7.5 ms for the first
 * pass over a half-full 1M table, 2.6 vs 1.5 ms for a pass after 10%
 * scattered changes): the cost is loading the entries, not the branches.
 */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "livemig/bitmap.h"
#include "livemig/table.h"

struct lm_table_src {
	const unsigned char *entries;
	uint64_t n;
	unsigned flags;
	lm_bitmap changed; /* bit i: entry i must be considered by a read */
	uint64_t pending;  /* exact number of set bits in changed */
	uint64_t pos;      /* next index this pass will look at */
	bool first;        /* still in the first pass */
};

struct lm_table_dst {
	unsigned char *entries;
	uint64_t n;
	char err[200];
};

static bool entry_is_zero(const unsigned char *e)
{
	uint64_t a, b;
	memcpy(&a, e, 8);
	memcpy(&b, e + 8, 8);
	return (a | b) == 0;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put_le16(unsigned char *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static uint32_t get_le32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint16_t get_le16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return le16toh(v);
}

/* ---- source ------------------------------------------------------------- */

int lm_table_src_open(lm_table_src **out, const void *entries, uint64_t n, unsigned flags)
{
	lm_table_src *src;
	int err;

	if (!out || !entries || n == 0 || n > LM_TABLE_MAX_ENTRIES || (flags & ~LM_TABLE_SRC_FLAGS))
		return -EINVAL;
	src = calloc(1, sizeof(*src));
	if (!src)
		return -ENOMEM;
	err = lm_bitmap_init(&src->changed, n);
	if (err)
		goto fail_free;
	src->entries = entries;
	src->n = n;
	src->flags = flags;
	lm_table_src_restart(src);
	*out = src;
	return 0;

fail_free:
	free(src);
	return err;
}

void lm_table_src_close(lm_table_src *src)
{
	if (!src)
		return;
	lm_bitmap_destroy(&src->changed);
	free(src);
}

void lm_table_src_restart(lm_table_src *src)
{
	lm_bitmap_set_range(&src->changed, 0, src->n);
	src->pending = src->n;
	src->pos = 0;
	src->first = true;
}

int lm_table_src_mark(lm_table_src *src, uint64_t index)
{
	if (index >= src->n)
		return -ERANGE;
	if (!lm_bitmap_test(&src->changed, index)) {
		lm_bitmap_set(&src->changed, index);
		src->pending++;
	}
	return 0;
}

int lm_table_src_mark_range(lm_table_src *src, uint64_t start, uint64_t count)
{
	if (count > src->n || start > src->n - count)
		return -ERANGE;
	if (count == 0)
		return 0;
	/* Count what is already marked so that pending stays exact. */
	uint64_t before = lm_bitmap_count_range(&src->changed, start, count);
	lm_bitmap_set_range(&src->changed, start, count);
	src->pending += count - before;
	return 0;
}

uint64_t lm_table_src_pending(const lm_table_src *src)
{
	return src->pending;
}

bool lm_table_src_first_pass(const lm_table_src *src)
{
	return src->first;
}

/* First marked index >= from, or n. Bits past n are zero in an lm_bitmap. */
static uint64_t next_changed(const lm_bitmap *b, uint64_t from, uint64_t n)
{
	if (from >= n)
		return n;
	uint64_t w = from >> 6;
	uint64_t word = b->words[w] & (~0ull << (from & 63));
	while (!word) {
		if (++w >= b->nwords)
			return n;
		word = b->words[w];
	}
	uint64_t i = (w << 6) + (uint64_t)__builtin_ctzll(word);
	return i < n ? i : n;
}

int64_t lm_table_read(lm_table_src *src, void *buf, size_t cap)
{
	if (!src || !buf || cap < LM_TABLE_READ_MIN)
		return -EINVAL;

	const uint64_t n = src->n;
	const unsigned char *tab = src->entries;
	lm_bitmap *chg = &src->changed;
	/* The default first pass assumes an all-zero destination, so invalid
	 * entries would only repeat what is already there. */
	const bool send_invalid = !src->first || (src->flags & LM_TABLE_FULL_FIRST_PASS);
	unsigned char *out = buf;
	size_t used = 0;
	uint64_t i = src->pos;

	while ((i = next_changed(chg, i, n)) < n) {
		if (cap - used < LM_TABLE_RECORD_HDR)
			break;
		size_t room = (cap - used - LM_TABLE_RECORD_HDR) / LM_TABLE_ENTRY_SIZE;
		unsigned char *data = out + used + LM_TABLE_RECORD_HDR;
		uint64_t j = i;
		uint32_t nv = 0, ni = 0;

		while (j < n && nv < LM_TABLE_RUN_MAX && nv < room && lm_bitmap_test(chg, j) &&
		       !entry_is_zero(tab + j * LM_TABLE_ENTRY_SIZE)) {
			memcpy(data + (size_t)nv * LM_TABLE_ENTRY_SIZE, tab + j * LM_TABLE_ENTRY_SIZE,
			       LM_TABLE_ENTRY_SIZE);
			lm_bitmap_clear(chg, j);
			nv++;
			j++;
		}
		/* The invalid run that follows costs no bytes, so it is taken
		 * even when the buffer is full. */
		if (send_invalid) {
			while (j < n && ni < LM_TABLE_RUN_MAX && lm_bitmap_test(chg, j) &&
			       entry_is_zero(tab + j * LM_TABLE_ENTRY_SIZE)) {
				lm_bitmap_clear(chg, j);
				ni++;
				j++;
			}
		} else if (nv == 0) {
			while (j < n && lm_bitmap_test(chg, j) && entry_is_zero(tab + j * LM_TABLE_ENTRY_SIZE)) {
				lm_bitmap_clear(chg, j);
				j++;
			}
		}
		if (j == i)
			break; /* a valid entry that does not fit: resume here */
		src->pending -= j - i;
		if (nv + ni) {
			put_le32(out + used, (uint32_t)i);
			put_le16(out + used + 4, (uint16_t)nv);
			put_le16(out + used + 6, (uint16_t)ni);
			used += LM_TABLE_RECORD_HDR + (size_t)nv * LM_TABLE_ENTRY_SIZE;
		}
		i = j;
	}
	src->pos = i;

	/*
	 * A buffer of LM_TABLE_READ_MIN bytes always takes at least one entry,
	 * so an empty result means the pass reached the end: report 0 now and
	 * begin the next pass at the next read.
	 */
	if (used == 0) {
		src->pos = 0;
		src->first = false;
	}
	return (int64_t)used;
}

/* ---- destination -------------------------------------------------------- */

int lm_table_dst_open(lm_table_dst **out, void *entries, uint64_t n, unsigned flags)
{
	lm_table_dst *dst;

	if (!out || !entries || n == 0 || n > LM_TABLE_MAX_ENTRIES || (flags & ~LM_TABLE_DST_FLAGS))
		return -EINVAL;
	dst = calloc(1, sizeof(*dst));
	if (!dst)
		return -ENOMEM;
	dst->entries = entries;
	dst->n = n;
	*out = dst;
	return 0;
}

void lm_table_dst_close(lm_table_dst *dst)
{
	free(dst);
}

const char *lm_table_dst_error(const lm_table_dst *dst)
{
	return dst->err;
}

__attribute__((format(printf, 3, 4)))
static int fail(lm_table_dst *dst, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst->err, sizeof(dst->err), fmt, ap);
	va_end(ap);
	return err;
}

/*
 * Check every record of buf before touching the table, so that a bad buffer
 * changes nothing. Returns 0 or -EINVAL / -ERANGE with dst->err set.
 */
static int validate(lm_table_dst *dst, const unsigned char *p, size_t len)
{
	size_t off = 0;
	uint64_t rec = 0;

	while (off < len) {
		size_t left = len - off;
		if (left < LM_TABLE_RECORD_HDR)
			return fail(dst, -EINVAL, "record %llu at offset %zu: truncated header (%zu of %u bytes)",
				    (unsigned long long)rec, off, left, LM_TABLE_RECORD_HDR);
		uint64_t index = get_le32(p + off);
		uint64_t nv = get_le16(p + off + 4);
		uint64_t ni = get_le16(p + off + 6);
		if (nv + ni == 0)
			return fail(dst, -EINVAL, "record %llu at offset %zu: no entries (index %llu)",
				    (unsigned long long)rec, off, (unsigned long long)index);
		if (index + nv + ni > dst->n)
			return fail(dst, -ERANGE,
				    "record %llu at offset %zu: entries %llu..%llu past the table's %llu entries",
				    (unsigned long long)rec, off, (unsigned long long)index,
				    (unsigned long long)(index + nv + ni - 1), (unsigned long long)dst->n);
		size_t need = (size_t)nv * LM_TABLE_ENTRY_SIZE;
		if (left - LM_TABLE_RECORD_HDR < need)
			return fail(dst, -EINVAL,
				    "record %llu at offset %zu: %llu valid entries need %zu bytes, only %zu left",
				    (unsigned long long)rec, off, (unsigned long long)nv, need,
				    left - LM_TABLE_RECORD_HDR);
		const unsigned char *data = p + off + LM_TABLE_RECORD_HDR;
		for (uint64_t k = 0; k < nv; k++)
			if (entry_is_zero(data + k * LM_TABLE_ENTRY_SIZE))
				return fail(dst, -EINVAL,
					    "record %llu at offset %zu: entry %llu is sent as valid but is all zero",
					    (unsigned long long)rec, off, (unsigned long long)(index + k));
		off += LM_TABLE_RECORD_HDR + need;
		rec++;
	}
	return 0;
}

int64_t lm_table_write(lm_table_dst *dst, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t off = 0;
	int err;

	if (!dst || (!buf && len) || len > (size_t)INT64_MAX)
		return -EINVAL;
	err = validate(dst, p, len);
	if (err)
		return err;
	while (off < len) {
		uint64_t index = get_le32(p + off);
		size_t nv = get_le16(p + off + 4);
		size_t ni = get_le16(p + off + 6);
		unsigned char *e = dst->entries + index * LM_TABLE_ENTRY_SIZE;
		memcpy(e, p + off + LM_TABLE_RECORD_HDR, nv * LM_TABLE_ENTRY_SIZE);
		memset(e + nv * LM_TABLE_ENTRY_SIZE, 0, ni * LM_TABLE_ENTRY_SIZE);
		off += LM_TABLE_RECORD_HDR + nv * LM_TABLE_ENTRY_SIZE;
	}
	dst->err[0] = 0;
	return (int64_t)len;
}
