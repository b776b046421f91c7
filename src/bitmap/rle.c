/*
 * Run-length codec for page sets.
 *
 * Workload: page sets that cross the wire or are kept across migrations
 * (the ballooned-page skip map, dirty sets handed between rounds) are
 * mostly long runs: a balloon gives back megabytes at a time, a guest
 * dirties its stack and a few buffers. A flat bitmap for 1 TiB is 32 MiB
 * whatever it holds; the same set as runs is a few bytes per run. Where
 * pages are scattered one by one the run form costs about two bytes per
 * page, which is still fine for the sparse sets this is used for.
 *
 * Format: for each maximal run of set bits, in increasing order,
 * varint(start - end of previous run) then varint(length - 1); the first
 * run's gap counts from 0. Varints are unsigned LEB128 (7 bits per byte,
 * low group first, high bit = more follows). The empty set is zero bytes.
 *
 * The decoder takes untrusted input, (buf, len), and checks everything the
 * encoder guarantees: varints minimal and at most 10 bytes without
 * overflowing 64 bits, runs maximal (a gap of 0 after the first run would
 * mean two adjacent runs), every run inside the destination, no partial
 * varint or lone gap at the end.
 */
#include <errno.h>

#include "bitmap/bitmap_impl.h"

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* Read one varint at *pos; 0 or -EINVAL (truncated, overlong, not minimal). */
static int get_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < 10; i++) {
		if (*pos >= len)
			return -EINVAL;
		uint8_t b = buf[(*pos)++];
		/* The tenth byte holds bit 63 only: anything more overflows. */
		if (i == 9 && b > 1)
			return -EINVAL;
		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			/* A final zero byte after others adds nothing: a longer
			 * spelling of a shorter varint. */
			if (b == 0 && i > 0)
				return -EINVAL;
			*out = v;
			return 0;
		}
	}
	return -EINVAL;
}

/* Walk the runs of b, writing them to buf (or only counting bytes when buf
 * is NULL): encode and size share one loop so they cannot disagree. */
static int64_t walk_runs(const lm_bitmap *b, uint8_t *buf, size_t cap)
{
	uint64_t prev_end = 0;
	size_t n = 0;
	uint64_t i = lm_bitmap_find_next_set(b, 0);
	while (i < b->nbits) {
		uint64_t j = lm_bitmap_find_next_clear(b, i);
		uint64_t gap = i - prev_end, lm1 = j - i - 1;
		size_t need = varint_len(gap) + varint_len(lm1);
		if (buf) {
			if (cap - n < need)
				return -ENOSPC;
			n += put_varint(buf + n, gap);
			n += put_varint(buf + n, lm1);
		} else {
			n += need;
		}
		prev_end = j;
		i = lm_bitmap_find_next_set(b, j);
	}
	return (int64_t)n;
}

int64_t lm_rle_encoded_size(const lm_bitmap *b)
{
	return walk_runs(b, NULL, 0);
}

int64_t lm_rle_encode(const lm_bitmap *b, uint8_t *buf, size_t cap)
{
	if (!buf && cap)
		return -EINVAL;
	if (!buf)
		return lm_rle_encoded_size(b) == 0 ? 0 : -ENOSPC;
	return walk_runs(b, buf, cap);
}

int lm_rle_decode(const uint8_t *buf, size_t len, lm_bitmap *out)
{
	if (len && !buf)
		return -EINVAL;
	size_t pos = 0;
	uint64_t prev_end = 0;
	bool first = true;
	while (pos < len) {
		uint64_t gap, lm1;
		int rc = get_varint(buf, len, &pos, &gap);
		if (rc < 0)
			return rc;
		rc = get_varint(buf, len, &pos, &lm1);
		if (rc < 0)
			return rc;
		if (!first && gap == 0)
			return -EINVAL;
		if (gap >= out->nbits - prev_end)
			return -ERANGE;
		uint64_t start = prev_end + gap;
		/* start + lm1 + 1 <= nbits, written so that nothing overflows */
		if (lm1 >= out->nbits - start)
			return -ERANGE;
		lm_bitmap_set_range(out, start, lm1 + 1);
		prev_end = start + lm1 + 1;
		first = false;
	}
	return 0;
}
