/*
 * Handshake: HELLO (sender -> receiver), ACCEPT or REFUSE back, and the
 * capability negotiation both sides run on them.
 *
 * HELLO payload (v1), little-endian:
 *   0  u64 magic "livemig\0"     8  u32 version       12 u32 page_size
 *   16 u64 offered               24 u64 mandatory     32 u64 total_pages
 *   40 u32 nregions              44 u32 reserved (0)  48 regions[nregions]
 *      each {u64 first_page, u64 npages}
 * Magic and version come first and never move, so any version can read
 * enough of any other version's HELLO to refuse it by name.
 */
#include <errno.h>
#include <string.h>

#include "stream/wire.h"

#define HELLO_FIXED 48u

int lm_stream_put_hello(lm_buf *b, const lm_stream_hello *h)
{
	const lm_stream_layout *l = &h->layout;
	if (l->nregions == 0 || l->nregions > LM_STREAM_MAX_REGIONS)
		return -EINVAL;
	size_t len = HELLO_FIXED + 16u * l->nregions;
	size_t off;
	int r = lm__frame_start(b, LM_REC_HELLO, len, &off);
	if (r)
		return r;
	uint8_t *p = b->data + b->len;
	st64(p, LM_STREAM_MAGIC);
	st32(p + 8, h->version ? h->version : LM_STREAM_VERSION);
	st32(p + 12, h->page_size ? h->page_size : (uint32_t)LM_PAGE_SIZE);
	st64(p + 16, h->offered);
	st64(p + 24, h->mandatory);
	st64(p + 32, l->total_pages);
	st32(p + 40, l->nregions);
	st32(p + 44, 0);
	for (uint32_t i = 0; i < l->nregions; i++) {
		st64(p + HELLO_FIXED + 16u * i, l->regions[i].first_page);
		st64(p + HELLO_FIXED + 16u * i + 8, l->regions[i].npages);
	}
	b->len += len;
	lm__frame_finish(b, off);
	return 0;
}

int lm__stream_hello_decode(const uint8_t *p, size_t len, lm_stream_hello *h, lm_stream_err *err)
{
	if (len < 12)
		return lm__stream_fail(err, -ENODATA, "HELLO: %zu bytes, magic and version need 12",
				       len);
	uint64_t magic = ld64(p);
	if (magic != LM_STREAM_MAGIC)
		return lm__stream_fail(err, -EPROTO,
				       "HELLO: bad magic 0x%016llx, not a livemig stream",
				       (unsigned long long)magic);
	h->version = ld32(p + 8);
	if (h->version != LM_STREAM_VERSION)
		return lm__stream_fail(err, -EPROTONOSUPPORT,
				       "HELLO: stream version %u, this side speaks %u", h->version,
				       LM_STREAM_VERSION);
	if (len < HELLO_FIXED)
		return lm__stream_fail(err, -EBADMSG,
				       "HELLO: %zu bytes, version 1 needs at least %u", len,
				       HELLO_FIXED);
	h->page_size = ld32(p + 12);
	h->offered = ld64(p + 16);
	h->mandatory = ld64(p + 24);
	uint64_t total = ld64(p + 32);
	uint32_t n = ld32(p + 40);
	if (h->page_size != LM_PAGE_SIZE)
		return lm__stream_fail(err, -EBADMSG, "HELLO: page size %u, only %llu is supported",
				       h->page_size, (unsigned long long)LM_PAGE_SIZE);
	if (h->mandatory & ~h->offered)
		return lm__stream_fail(
		    err, -EBADMSG, "HELLO: mandatory capabilities 0x%llx not all offered (0x%llx)",
		    (unsigned long long)h->mandatory, (unsigned long long)h->offered);
	if (ld32(p + 44))
		return lm__stream_fail(err, -EBADMSG, "HELLO: reserved field is not zero");
	if (n > LM_STREAM_MAX_REGIONS)
		return lm__stream_fail(err, -EMSGSIZE, "HELLO: %u regions, at most %u allowed", n,
				       LM_STREAM_MAX_REGIONS);
	if (len != HELLO_FIXED + 16ull * n)
		return lm__stream_fail(err, -EBADMSG, "HELLO: %zu bytes for %u regions (need %llu)",
				       len, n, HELLO_FIXED + 16ull * n);
	lm_stream_region r[LM_STREAM_MAX_REGIONS];
	for (uint32_t i = 0; i < n; i++) {
		r[i].first_page = ld64(p + HELLO_FIXED + 16u * i);
		r[i].npages = ld64(p + HELLO_FIXED + 16u * i + 8);
	}
	int rc = lm_stream_layout_init(&h->layout, r, n, err);
	if (rc)
		return rc;
	if (h->layout.total_pages != total)
		return lm__stream_fail(
		    err, -EBADMSG, "HELLO: total_pages %llu but the regions hold %llu",
		    (unsigned long long)total, (unsigned long long)h->layout.total_pages);
	return 0;
}

/* Lowest set bit of m as a name for messages. */
static void first_cap(uint64_t m, char *out, size_t cap)
{
	lm_stream_caps_format(m & -m, out, cap);
}

int lm_stream_negotiate(lm_stream *s, const lm_stream_hello *h, uint64_t allowed,
			uint64_t *accepted, lm_stream_err *err)
{
	char name[32];
	if (h->version != LM_STREAM_VERSION)
		return lm__stream_fail(err, -EPROTONOSUPPORT,
				       "stream version %u, this side speaks %u", h->version,
				       LM_STREAM_VERSION);
	allowed &= LM_CAP_KNOWN;
	if (!(h->mandatory & LM_CAP_RECORD_CSUM))
		return lm__stream_fail(err, -ENOTSUP, "record-csum must be mandatory in version %u",
				       LM_STREAM_VERSION);
	uint64_t unknown = h->mandatory & ~LM_CAP_KNOWN;
	if (unknown) {
		first_cap(unknown, name, sizeof(name));
		return lm__stream_fail(err, -ENOTSUP, "mandatory capability %s is unknown here",
				       name);
	}
	uint64_t off = h->mandatory & ~allowed;
	if (off) {
		first_cap(off, name, sizeof(name));
		return lm__stream_fail(err, -ENOTSUP,
				       "mandatory capability %s is switched off here", name);
	}
	if (h->layout.nregions == 0)
		return lm__stream_fail(err, -EBADMSG, "HELLO without a memory layout");
	*accepted = h->offered & allowed;
	s->caps = *accepted;
	s->layout = h->layout;
	return 0;
}

int lm_stream_accepted(lm_stream *s, const lm_stream_hello *h, uint64_t accepted,
		       lm_stream_err *err)
{
	char name[32];
	uint64_t extra = accepted & ~h->offered;
	if (extra) {
		first_cap(extra, name, sizeof(name));
		return lm__stream_fail(err, -ENOTSUP, "receiver accepted %s, which was not offered",
				       name);
	}
	uint64_t missing = h->mandatory & ~accepted;
	if (missing) {
		first_cap(missing, name, sizeof(name));
		return lm__stream_fail(err, -ENOTSUP,
				       "receiver did not accept mandatory capability %s", name);
	}
	s->caps = accepted;
	s->layout = h->layout;
	return 0;
}
