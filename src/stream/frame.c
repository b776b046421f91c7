/*
 * Framing: the 12-byte header every message carries, its checksum, the
 * output buffer frames are built in, the memory layout runs are checked
 * against, and capability names.
 *
 * Workload: a receiver reads a header from an untrusted socket and must
 * decide how many bytes to read (and allocate) next before it has seen
 * any of them, so every bound is a property of the record type and is
 * checked here, first. Frames are built in one contiguous buffer so the
 * sender hands the socket one write per batch.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/hash.h"
#include "stream/wire.h"

int lm__stream_fail(lm_stream_err *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		err->code = code;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- lm_buf ---------------------------------------------------------------- */

void lm_buf_init(lm_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void lm_buf_init_fixed(lm_buf *b, void *mem, size_t cap)
{
	b->data = mem;
	b->len = 0;
	b->cap = cap;
	b->fixed = true;
}

void lm_buf_destroy(lm_buf *b)
{
	if (!b->fixed)
		free(b->data);
	memset(b, 0, sizeof(*b));
}

int lm_buf_reserve(lm_buf *b, size_t extra)
{
	if (extra <= b->cap - b->len)
		return 0;
	if (b->fixed)
		return -ENOSPC;
	if (extra > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	size_t want = b->len + extra;
	size_t ncap = b->cap ? b->cap : 4096;
	while (ncap < want)
		ncap *= 2;
	uint8_t *p = realloc(b->data, ncap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = ncap;
	return 0;
}

/* ---- per-connection state --------------------------------------------------- */

void lm_stream_init(lm_stream *s)
{
	memset(s, 0, sizeof(*s));
	s->zstd_level = 1;
}

void lm_stream_destroy(lm_stream *s)
{
	lm__stream_free_zstd(s);
	memset(s, 0, sizeof(*s));
}

/* ---- record types and their payload bounds ---------------------------------- */

struct type_info {
	uint16_t type;
	const char *name;
	uint32_t min, max;
};

/*
 * HELLO's bound is generous on purpose: its first 12 bytes (magic,
 * version) are frozen for all versions, and a receiver must be able to
 * read a future version's HELLO far enough to refuse it by version rather
 * than by size.
 */
static const struct type_info types[] = {
    {LM_REC_HELLO, "HELLO", 12, 65536},
    {LM_REC_ACCEPT, "ACCEPT", 16, 16},
    {LM_REC_REFUSE, "REFUSE", 4, 4 + LM_STREAM_MAX_TEXT},
    {LM_REC_RAM, "RAM", LM_RUN_HDR, LM_RUN_HDR + LM_STREAM_MAX_RUN_PAGES * 4096u},
    {LM_REC_ROUND, "ROUND", 8, 8},
    {LM_REC_DEVICE, "DEVICE", 2, 1 + LM_STREAM_MAX_DEVICE_NAME + LM_STREAM_MAX_DEVICE_BLOB},
    {LM_REC_DIGEST, "DIGEST", 24, 24},
    {LM_REC_END, "END", 0, 0},
    {LM_REC_COMMIT, "COMMIT", 0, 0},
    {LM_REC_PREPARE, "PREPARE", 0, 0},
    {LM_REC_READY, "READY", 0, 0},
    {LM_REC_COMMITTED, "COMMITTED", 0, 0},
    {LM_REC_PENDING, "PENDING", 16, 16 * LM_STREAM_MAX_PENDING_RUNS},
    {LM_REC_POSTCOPY, "POSTCOPY", 16, 16},
    {LM_REC_PAGE_REQ, "PAGE_REQ", 16, 16},
    {LM_REC_RESUME, "RESUME", 24, 24},
    {LM_REC_MISSING, "MISSING", 16, 16 * LM_STREAM_MAX_PENDING_RUNS},
    {LM_REC_RESUMED, "RESUMED", 16, 16},
    {LM_REC_CHANNELS, "CHANNELS", 16, 16},
    {LM_REC_CHANNEL, "CHANNEL", 24, 24},
    {LM_REC_SYNC, "SYNC", 16, 16},
    {LM_REC_RESULT, "RESULT", 4, 4 + LM_STREAM_MAX_TEXT},
    {LM_REC_TABLE, "TABLE", 0, LM_STREAM_MAX_TABLE_PAYLOAD},
};

static const struct type_info *type_info(uint16_t type)
{
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (types[i].type == type)
			return &types[i];
	return NULL;
}

const char *lm_stream_type_name(uint16_t type)
{
	const struct type_info *t = type_info(type);
	return t ? t->name : "unknown";
}

uint32_t lm_stream_max_payload(uint16_t type)
{
	const struct type_info *t = type_info(type);
	return t ? t->max : 0;
}

int lm_stream_frame_parse(const lm_stream *s, const void *hdr, size_t len, lm_frame *f,
			  lm_stream_err *err)
{
	const uint8_t *p = hdr;
	if (len < LM_FRAME_HDR)
		return lm__stream_fail(err, -ENODATA, "truncated frame header: %zu of %u bytes",
				       len, LM_FRAME_HDR);
	f->type = ld16(p);
	f->flags = ld16(p + 2);
	f->payload_len = ld32(p + 4);
	f->checksum = ld32(p + 8);
	const struct type_info *t = type_info(f->type);
	if (!t)
		return lm__stream_fail(err, -EPROTO, "unknown record type 0x%04x", f->type);
	if (f->type == LM_REC_TABLE && !(s->caps & LM_CAP_TABLE_STREAM))
		return lm__stream_fail(err, -ENOTSUP,
				       "TABLE record but table-stream was not negotiated");
	if ((f->type == LM_REC_PENDING || f->type == LM_REC_POSTCOPY || f->type == LM_REC_PAGE_REQ ||
	     f->type == LM_REC_RESUME || f->type == LM_REC_MISSING || f->type == LM_REC_RESUMED) &&
	    !(s->caps & LM_CAP_POSTCOPY))
		return lm__stream_fail(err, -ENOTSUP, "%s record but postcopy-ram was not negotiated",
				       t->name);
	if ((f->type == LM_REC_CHANNELS || f->type == LM_REC_CHANNEL || f->type == LM_REC_SYNC) &&
	    !(s->caps & LM_CAP_MULTIFD))
		return lm__stream_fail(err, -ENOTSUP, "%s record but multifd was not negotiated", t->name);
	/* v1 defines no flags for any type: a newer sender must not set one
	 * unless a capability says the receiver understands it. */
	if (f->flags)
		return lm__stream_fail(err, -EPROTO, "%s record: unknown flags 0x%04x", t->name,
				       f->flags);
	if (f->payload_len > t->max)
		return lm__stream_fail(err, -EMSGSIZE,
				       "%s record: payload_len %u above the maximum %u", t->name,
				       f->payload_len, t->max);
	if (f->payload_len < t->min)
		return lm__stream_fail(err, -EBADMSG,
				       "%s record: payload_len %u below the minimum %u", t->name,
				       f->payload_len, t->min);
	return 0;
}

/* ---- checksums ------------------------------------------------------------- */

static uint64_t frame_seed(const lm_frame *f)
{
	return (uint64_t)f->type | ((uint64_t)f->flags << 16) | ((uint64_t)f->payload_len << 32);
}

void lm_stream_csum_begin(lm_stream_csum *c, const lm_frame *f)
{
	lm__hash()->reset(c, frame_seed(f));
}

void lm_stream_csum_update(lm_stream_csum *c, const void *p, size_t n)
{
	lm__hash()->update(c, p, n);
}

uint32_t lm_stream_csum_end(lm_stream_csum *c)
{
	return (uint32_t)lm__hash()->digest(c);
}

int lm_stream_csum_check(lm_stream_csum *c, const lm_frame *f, lm_stream_err *err)
{
	uint32_t got = lm_stream_csum_end(c);
	if (got != f->checksum)
		return lm__stream_fail(
		    err, -EBADMSG,
		    "%s record: checksum mismatch (frame says 0x%08x, data gives 0x%08x)",
		    lm_stream_type_name(f->type), f->checksum, got);
	return 0;
}

uint32_t lm_stream_checksum(const lm_frame *f, const void *payload, size_t len)
{
	return (uint32_t)lm__hash()->h64(payload, len, frame_seed(f));
}

/* ---- building frames --------------------------------------------------------- */

int lm__frame_start(lm_buf *b, uint16_t type, size_t payload_hint, size_t *off)
{
	if (payload_hint > SIZE_MAX - LM_FRAME_HDR)
		return -EMSGSIZE;
	int r = lm_buf_reserve(b, LM_FRAME_HDR + payload_hint);
	if (r)
		return r;
	*off = b->len;
	uint8_t *p = b->data + b->len;
	st16(p, type);
	st16(p + 2, 0);
	st32(p + 4, 0);
	st32(p + 8, 0);
	b->len += LM_FRAME_HDR;
	return 0;
}

void lm__frame_finish_with(lm_buf *b, size_t off, uint32_t checksum)
{
	uint8_t *p = b->data + off;
	st32(p + 4, (uint32_t)(b->len - off - LM_FRAME_HDR));
	st32(p + 8, checksum);
}

void lm__frame_finish(lm_buf *b, size_t off)
{
	uint8_t *p = b->data + off;
	lm_frame f = {.type = ld16(p), .flags = ld16(p + 2)};
	f.payload_len = (uint32_t)(b->len - off - LM_FRAME_HDR);
	lm__frame_finish_with(b, off, lm_stream_checksum(&f, p + LM_FRAME_HDR, f.payload_len));
}

/* ---- layout ------------------------------------------------------------------- */

int lm_stream_layout_init(lm_stream_layout *l, const lm_stream_region *r, uint32_t n,
			  lm_stream_err *err)
{
	memset(l, 0, offsetof(lm_stream_layout, regions));
	if (n == 0)
		return lm__stream_fail(err, -EBADMSG, "layout has no regions");
	if (n > LM_STREAM_MAX_REGIONS)
		return lm__stream_fail(err, -EMSGSIZE, "layout has %u regions, at most %u allowed",
				       n, LM_STREAM_MAX_REGIONS);
	uint64_t prev_end = 0, total = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t a = r[i].first_page, c = r[i].npages;
		if (c == 0)
			return lm__stream_fail(err, -EBADMSG, "layout region %u is empty", i);
		if (a >= LM_STREAM_PAGE_LIMIT || c > LM_STREAM_PAGE_LIMIT - a)
			return lm__stream_fail(
			    err, -ERANGE,
			    "layout region %u (first_page %llu, npages %llu) ends past page 2^52",
			    i, (unsigned long long)a, (unsigned long long)c);
		if (i > 0 && a < prev_end)
			return lm__stream_fail(
			    err, -EBADMSG,
			    "layout region %u (first_page %llu) overlaps or precedes region %u", i,
			    (unsigned long long)a, i - 1);
		prev_end = a + c;
		total += c;
		l->regions[i] = r[i];
	}
	l->nregions = n;
	l->total_pages = total;
	l->end_page = prev_end;
	return 0;
}

int lm_stream_layout_find(const lm_stream_layout *l, uint64_t first_page, uint64_t npages,
			  lm_stream_err *err)
{
	/* Binary search for the last region starting at or before first_page. */
	uint32_t lo = 0, hi = l->nregions;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (l->regions[mid].first_page <= first_page)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0) {
		const lm_stream_region *r = &l->regions[lo - 1];
		uint64_t off = first_page - r->first_page;
		if (off < r->npages && npages <= r->npages - off)
			return (int)(lo - 1);
	}
	return lm__stream_fail(err, -ERANGE, "RAM run pages [%llu, %llu) outside the layout",
			       (unsigned long long)first_page,
			       (unsigned long long)(first_page + npages));
}

/* ---- capability names ------------------------------------------------------------ */

static const struct {
	uint64_t bit;
	const char *name;
} cap_names[] = {
    {LM_CAP_RECORD_CSUM, "record-csum"},
    {LM_CAP_ZSTD, "zstd"},
    {LM_CAP_SKIP_BALLOON, "skip-balloon"},
    {LM_CAP_TABLE_STREAM, "table-stream"},
    {LM_CAP_PREPARE, "prepare"},
    {LM_CAP_COMMIT_ACK, "commit-ack"},
    {LM_CAP_NO_DIGEST, "no-digest"},
    {LM_CAP_POSTCOPY, "postcopy-ram"},
    {LM_CAP_MULTIFD, "multifd"},
    {LM_CAP_CATCH_UP, "catch-up"},
    {LM_CAP_PAGE_HASH_CSUM, "page-hash-csum"},
};

const char *lm_stream_cap_name(uint64_t bit)
{
	for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++)
		if (cap_names[i].bit == bit)
			return cap_names[i].name;
	return NULL;
}

int lm_stream_caps_parse(const char *list, uint64_t *mask)
{
	uint64_t m = 0;
	if (list && *list) {
		const char *p = list;
		for (;;) {
			const char *e = strchr(p, ',');
			size_t n = e ? (size_t)(e - p) : strlen(p);
			bool found = false;
			for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++) {
				if (strlen(cap_names[i].name) == n &&
				    !strncmp(cap_names[i].name, p, n)) {
					m |= cap_names[i].bit;
					found = true;
				}
			}
			/* Empty items ("zstd,", ",,") are typos, not "nothing". */
			if (!found)
				return -EINVAL;
			if (!e)
				break;
			p = e + 1;
		}
	}
	*mask = m;
	return 0;
}

void lm_stream_caps_format(uint64_t mask, char *out, size_t cap)
{
	size_t used = 0;
	if (!cap)
		return;
	out[0] = 0;
	for (unsigned b = 0; b < 64; b++) {
		uint64_t bit = 1ull << b;
		if (!(mask & bit))
			continue;
		const char *name = lm_stream_cap_name(bit);
		char tmp[24];
		if (!name) {
			snprintf(tmp, sizeof(tmp), "0x%llx", (unsigned long long)bit);
			name = tmp;
		}
		int n = snprintf(out + used, cap - used, "%s%s", used ? "," : "", name);
		if (n < 0 || (size_t)n >= cap - used)
			return;
		used += (size_t)n;
	}
	if (!used)
		snprintf(out, cap, "none");
}
