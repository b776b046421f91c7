/*
 * Records: encoding and decoding of every frame payload after the
 * handshake (RAM runs, ROUND, DEVICE, DIGEST, END, RESULT, TABLE), and
 * zstd for page runs.
 *
 * Workload: the sender emits one RAM record per run of up to 256 pages,
 * millions of them for a big guest, so encoding appends to one buffer with
 * no allocation in steady state; the receiver decodes records of an
 * untrusted peer, so every field is checked before it is used and every
 * write goes through a destination whose length is checked first.
 */
#include <errno.h>
#include <string.h>
#include <stdlib.h>

#include <zstd.h>

#include "stream/wire.h"

#define RUN_BYTES(n) ((size_t)(n)*LM_PAGE_SIZE)

/* ---- zstd contexts ------------------------------------------------------------ */

void lm__stream_free_zstd(lm_stream *s)
{
	ZSTD_freeCCtx(s->zc);
	ZSTD_freeDCtx(s->zd);
	s->zc = NULL;
	s->zd = NULL;
}

static ZSTD_DCtx *dctx(lm_stream *s)
{
	if (!s->zd) {
		ZSTD_DCtx *d = ZSTD_createDCtx();
		if (!d)
			return NULL;
		/* A run is at most 1 MiB, so a window above 2^20 is never
		 * needed; refusing bigger windows bounds the decoder's memory
		 * whatever a hostile frame header claims. */
		if (ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 20))) {
			ZSTD_freeDCtx(d);
			return NULL;
		}
		s->zd = d;
	}
	return s->zd;
}

static ZSTD_CCtx *cctx(lm_stream *s)
{
	if (!s->zc)
		s->zc = ZSTD_createCCtx();
	return s->zc;
}

/* ---- encoders -------------------------------------------------------------------- */

static int put_simple(lm_buf *b, uint16_t type, const void *payload, size_t len)
{
	size_t off;
	int r = lm__frame_start(b, type, len, &off);
	if (r)
		return r;
	if (len)
		memcpy(b->data + b->len, payload, len);
	b->len += len;
	lm__frame_finish(b, off);
	return 0;
}

static int put_status(lm_buf *b, uint16_t type, int code, const char *text)
{
	uint8_t p[4 + LM_STREAM_MAX_TEXT];
	size_t n = text ? strlen(text) : 0;
	if (n > LM_STREAM_MAX_TEXT)
		n = LM_STREAM_MAX_TEXT; /* long messages are cut, never refused */
	if (code < 0)
		code = -code;
	st32(p, (uint32_t)code);
	if (n)
		memcpy(p + 4, text, n);
	return put_simple(b, type, p, 4 + n);
}

int lm_stream_put_accept(lm_buf *b, uint64_t accepted)
{
	uint8_t p[16];
	st32(p, LM_STREAM_VERSION);
	st32(p + 4, 0);
	st64(p + 8, accepted);
	return put_simple(b, LM_REC_ACCEPT, p, sizeof(p));
}

int lm_stream_put_refuse(lm_buf *b, int code, const char *text)
{
	/* A refusal always carries a reason: 0 would read as "no error". */
	return put_status(b, LM_REC_REFUSE, code ? code : EPROTO, text);
}

int lm_stream_put_result(lm_buf *b, int code, const char *text)
{
	return put_status(b, LM_REC_RESULT, code, text);
}

int lm_stream_put_round(lm_buf *b, uint64_t round)
{
	uint8_t p[8];
	st64(p, round);
	return put_simple(b, LM_REC_ROUND, p, sizeof(p));
}

static bool device_name_ok(const char *name, size_t n)
{
	if (n == 0 || n > LM_STREAM_MAX_DEVICE_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

int lm_stream_put_device(lm_buf *b, const char *name, const void *blob, size_t len)
{
	size_t n = name ? strlen(name) : 0;
	if (!device_name_ok(name, n))
		return -EINVAL;
	if (len > LM_STREAM_MAX_DEVICE_BLOB)
		return -EMSGSIZE;
	size_t off;
	int r = lm__frame_start(b, LM_REC_DEVICE, 1 + n + len, &off);
	if (r)
		return r;
	uint8_t *p = b->data + b->len;
	p[0] = (uint8_t)n;
	memcpy(p + 1, name, n);
	if (len)
		memcpy(p + 1 + n, blob, len);
	b->len += 1 + n + len;
	lm__frame_finish(b, off);
	return 0;
}

int lm_stream_put_digest(lm_buf *b, uint64_t lo, uint64_t hi, uint64_t npages)
{
	uint8_t p[24];
	st64(p, lo);
	st64(p + 8, hi);
	st64(p + 16, npages);
	return put_simple(b, LM_REC_DIGEST, p, sizeof(p));
}

int lm_stream_put_end(lm_buf *b)
{
	return put_simple(b, LM_REC_END, NULL, 0);
}

int lm_stream_put_commit(lm_buf *b)
{
	return put_simple(b, LM_REC_COMMIT, NULL, 0);
}

int lm_stream_put_prepare(lm_buf *b)
{
	return put_simple(b, LM_REC_PREPARE, NULL, 0);
}

int lm_stream_put_ready(lm_buf *b)
{
	return put_simple(b, LM_REC_READY, NULL, 0);
}

int lm_stream_put_committed(lm_buf *b)
{
	return put_simple(b, LM_REC_COMMITTED, NULL, 0);
}

static int put_runs(lm_buf *b, uint16_t type, const lm_stream_region *runs, uint32_t n)
{
	if (n == 0 || n > LM_STREAM_MAX_PENDING_RUNS)
		return -EINVAL;
	size_t off;
	int r = lm__frame_start(b, type, (size_t)n * 16, &off);
	if (r)
		return r;
	for (uint32_t i = 0; i < n; i++) {
		st64(b->data + b->len, runs[i].first_page);
		st64(b->data + b->len + 8, runs[i].npages);
		b->len += 16;
	}
	lm__frame_finish(b, off);
	return 0;
}

int lm_stream_put_pending(lm_buf *b, const lm_stream_region *runs, uint32_t n)
{
	return put_runs(b, LM_REC_PENDING, runs, n);
}

int lm_stream_put_missing(lm_buf *b, const lm_stream_region *runs, uint32_t n)
{
	return put_runs(b, LM_REC_MISSING, runs, n);
}

int lm_stream_put_postcopy(lm_buf *b, uint64_t npending, uint64_t session)
{
	if (!session)
		return -EINVAL;
	uint8_t p[16];
	st64(p, npending);
	st64(p + 8, session);
	return put_simple(b, LM_REC_POSTCOPY, p, sizeof(p));
}

int lm_stream_put_resume(lm_buf *b, uint64_t session)
{
	uint8_t p[24];
	st64(p, LM_STREAM_MAGIC);
	st32(p + 8, LM_STREAM_VERSION);
	st32(p + 12, 0);
	st64(p + 16, session);
	return put_simple(b, LM_REC_RESUME, p, sizeof(p));
}

int lm_stream_put_resumed(lm_buf *b, uint64_t session, uint64_t nmissing)
{
	uint8_t p[16];
	st64(p, session);
	st64(p + 8, nmissing);
	return put_simple(b, LM_REC_RESUMED, p, sizeof(p));
}

static bool stripe_ok(uint64_t stripe)
{
	return stripe >= LM_STREAM_MIN_STRIPE && stripe <= LM_STREAM_MAX_STRIPE && !(stripe & (stripe - 1));
}

int lm_stream_put_channels(lm_buf *b, uint32_t nchannels, uint32_t stripe_pages, uint64_t session)
{
	if (nchannels == 0 || nchannels > LM_STREAM_MAX_CHANNELS || !stripe_ok(stripe_pages) || !session)
		return -EINVAL;
	uint8_t p[16];
	st32(p, nchannels);
	st32(p + 4, stripe_pages);
	st64(p + 8, session);
	return put_simple(b, LM_REC_CHANNELS, p, sizeof(p));
}

int lm_stream_put_channel(lm_buf *b, uint32_t index, uint64_t session)
{
	if (index >= LM_STREAM_MAX_CHANNELS || !session)
		return -EINVAL;
	uint8_t p[24];
	st64(p, LM_STREAM_MAGIC);
	st32(p + 8, LM_STREAM_VERSION);
	st32(p + 12, index);
	st64(p + 16, session);
	return put_simple(b, LM_REC_CHANNEL, p, sizeof(p));
}

int lm_stream_put_sync(lm_buf *b, uint64_t seq, uint32_t flags)
{
	if (!seq || (flags & ~LM_SYNC_LAST))
		return -EINVAL;
	uint8_t p[16];
	st64(p, seq);
	st32(p + 8, flags);
	st32(p + 12, 0);
	return put_simple(b, LM_REC_SYNC, p, sizeof(p));
}

int lm_stream_put_page_req(lm_buf *b, uint64_t first_page, uint32_t npages)
{
	if (npages == 0 || npages > LM_STREAM_MAX_RUN_PAGES)
		return -EINVAL;
	uint8_t p[16];
	st64(p, first_page);
	st32(p + 8, npages);
	st32(p + 12, 0);
	return put_simple(b, LM_REC_PAGE_REQ, p, sizeof(p));
}

lm_stream_region lm_stream_pending_run(const lm_record *rec, uint32_t i)
{
	const uint8_t *p = rec->u.pending.runs + (size_t)i * 16;
	return (lm_stream_region){ ld64(p), ld64(p + 8) };
}

int lm_stream_put_table(lm_buf *b, const void *payload, size_t len)
{
	if (len > LM_STREAM_MAX_TABLE_PAYLOAD)
		return -EMSGSIZE;
	return put_simple(b, LM_REC_TABLE, payload, len);
}

static void put_run_header(uint8_t *p, uint64_t first_page, uint32_t npages, uint8_t kind,
			   uint8_t enc)
{
	st64(p, first_page);
	st32(p + 8, npages);
	p[12] = kind;
	p[13] = enc;
	st16(p + 14, 0);
}

static int check_run_args(uint64_t first_page, uint32_t npages)
{
	if (npages == 0 || npages > LM_STREAM_MAX_RUN_PAGES)
		return -EINVAL;
	if (first_page >= LM_STREAM_PAGE_LIMIT || npages > LM_STREAM_PAGE_LIMIT - first_page)
		return -ERANGE;
	return 0;
}

int lm_stream_put_run_empty(lm_buf *b, uint8_t kind, uint64_t first_page, uint32_t npages)
{
	if (kind != LM_RUN_ZERO && kind != LM_RUN_SKIPPED)
		return -EINVAL;
	int r = check_run_args(first_page, npages);
	if (r)
		return r;
	uint8_t p[LM_RUN_HDR];
	put_run_header(p, first_page, npages, kind, LM_ENC_RAW);
	return put_simple(b, LM_REC_RAM, p, sizeof(p));
}

int lm_stream_put_raw_begin(const lm_stream *s, lm_buf *b, uint64_t first_page, uint32_t npages,
			    uint8_t **pages, size_t *frame_off)
{
	(void)s; /* the rule matters at the end */
	int r = check_run_args(first_page, npages);
	if (r)
		return r;
	r = lm__frame_start(b, LM_REC_RAM, LM_RUN_HDR + RUN_BYTES(npages), frame_off);
	if (r)
		return r;
	put_run_header(b->data + b->len, first_page, npages, LM_RUN_DATA, LM_ENC_RAW);
	b->len += LM_RUN_HDR;
	*pages = b->data + b->len;
	b->len += RUN_BYTES(npages);
	return 0;
}

/* Whether the frame f with this payload is checksummed over its pages'
 * hashes (docs/stream.md 2): a well-formed RAW DATA run under the rule. */
static bool by_page_hash(const lm_stream *s, const lm_frame *f, const uint8_t *p, size_t len)
{
	return (s->caps & LM_CAP_PAGE_HASH_CSUM) && f->type == LM_REC_RAM && len >= LM_RUN_HDR &&
	       p[12] == LM_RUN_DATA && p[13] == LM_ENC_RAW && (len - LM_RUN_HDR) % LM_PAGE_SIZE == 0 &&
	       (len - LM_RUN_HDR) / LM_PAGE_SIZE == ld32(p + 8);
}

void lm_stream_csum_page(const lm_stream *s, lm_stream_csum *c, uint64_t i, const void *page,
			 lm_hash128 *contrib)
{
	if (s->caps & LM_CAP_PAGE_HASH_CSUM) {
		lm_hash128 h = lm_digest_contrib(i, page);
		uint8_t le[16];
		st64(le, h.lo);
		st64(le + 8, h.hi);
		lm_stream_csum_update(c, le, sizeof(le));
		if (contrib)
			*contrib = h;
		return;
	}
	lm_stream_csum_update(c, page, LM_PAGE_SIZE);
	if (contrib)
		*contrib = lm_digest_contrib(i, page);
}

/* The checksum of frame f with this payload, by the rule s negotiated. */
static uint32_t frame_checksum(const lm_stream *s, const lm_frame *f, const uint8_t *p, size_t len)
{
	if (!by_page_hash(s, f, p, len))
		return lm_stream_checksum(f, p, len);
	lm_stream_csum c;
	lm_stream_csum_begin(&c, f);
	lm_stream_csum_update(&c, p, LM_RUN_HDR);
	uint64_t first = ld64(p);
	for (size_t k = 0; k < (len - LM_RUN_HDR) / LM_PAGE_SIZE; k++)
		lm_stream_csum_page(s, &c, first + k, p + LM_RUN_HDR + k * LM_PAGE_SIZE, NULL);
	return lm_stream_csum_end(&c);
}

void lm_stream_put_raw_end(const lm_stream *s, lm_buf *b, size_t frame_off)
{
	uint8_t *p = b->data + frame_off;
	lm_frame f = {.type = ld16(p), .flags = ld16(p + 2)};
	f.payload_len = (uint32_t)(b->len - frame_off - LM_FRAME_HDR);
	lm__frame_finish_with(b, frame_off, frame_checksum(s, &f, p + LM_FRAME_HDR, f.payload_len));
}

int lm_stream_put_raw_begin_csum(const lm_stream *s, lm_buf *b, uint64_t first_page, uint32_t npages,
				 uint8_t **pages, size_t *frame_off, lm_stream_csum *c)
{
	int r = lm_stream_put_raw_begin(s, b, first_page, npages, pages, frame_off);
	if (r)
		return r;
	lm_frame f = {.type = LM_REC_RAM, .payload_len = (uint32_t)(LM_RUN_HDR + RUN_BYTES(npages))};
	lm_stream_csum_begin(c, &f);
	lm_stream_csum_update(c, b->data + *frame_off + LM_FRAME_HDR, LM_RUN_HDR);
	return 0;
}

void lm_stream_put_raw_end_csum(lm_buf *b, size_t frame_off, lm_stream_csum *c)
{
	lm__frame_finish_with(b, frame_off, lm_stream_csum_end(c));
}

int lm_stream_put_run_data(lm_stream *s, lm_buf *b, uint64_t first_page, uint32_t npages,
			   const void *pages, uint8_t enc, uint8_t *enc_used)
{
	size_t raw = RUN_BYTES(npages);
	size_t off;
	int r = check_run_args(first_page, npages);
	if (r)
		return r;
	if (enc == LM_ENC_ZSTD) {
		if (!(s->caps & LM_CAP_ZSTD))
			return -ENOTSUP;
		ZSTD_CCtx *c = cctx(s);
		if (!c)
			return -ENOMEM;
		size_t bound = ZSTD_compressBound(raw);
		r = lm__frame_start(b, LM_REC_RAM, LM_RUN_HDR + bound, &off);
		if (r)
			return r;
		uint8_t *h = b->data + b->len;
		size_t z = ZSTD_compressCCtx(c, h + LM_RUN_HDR, bound, pages, raw, s->zstd_level);
		/* Incompressible data goes out RAW: the receiver's bound on a
		 * ZSTD payload is the raw size, and RAW costs no CPU there. */
		if (!ZSTD_isError(z) && z < raw) {
			put_run_header(h, first_page, npages, LM_RUN_DATA, LM_ENC_ZSTD);
			b->len += LM_RUN_HDR + z;
			lm__frame_finish(b, off);
			if (enc_used)
				*enc_used = LM_ENC_ZSTD;
			return 0;
		}
		b->len = off; /* drop the frame, write it RAW below */
	} else if (enc != LM_ENC_RAW) {
		return -EINVAL;
	}
	uint8_t *dst;
	r = lm_stream_put_raw_begin(s, b, first_page, npages, &dst, &off);
	if (r)
		return r;
	memcpy(dst, pages, raw);
	lm_stream_put_raw_end(s, b, off);
	if (enc_used)
		*enc_used = LM_ENC_RAW;
	return 0;
}

/* ---- RAM runs: parse and apply ------------------------------------------------------ */

int lm_stream_run_parse(const lm_stream *s, const lm_frame *f, const void *rh, size_t len,
			lm_run *run, lm_stream_err *err)
{
	const uint8_t *p = rh;
	if (f->type != LM_REC_RAM)
		return lm__stream_fail(err, -EINVAL, "run header of a %s record",
				       lm_stream_type_name(f->type));
	if (len < LM_RUN_HDR || f->payload_len < LM_RUN_HDR)
		return lm__stream_fail(err, -ENODATA, "truncated RAM run header: %zu of %u bytes",
				       len, LM_RUN_HDR);
	memset(run, 0, sizeof(*run));
	run->first_page = ld64(p);
	run->npages = ld32(p + 8);
	run->kind = p[12];
	run->enc = p[13];
	uint16_t reserved = ld16(p + 14);
	if (run->kind > LM_RUN_SKIPPED)
		return lm__stream_fail(err, -EPROTO, "RAM run: unknown kind %u", run->kind);
	if (run->kind == LM_RUN_SKIPPED && !(s->caps & LM_CAP_SKIP_BALLOON))
		return lm__stream_fail(
		    err, -ENOTSUP, "RAM run: SKIPPED pages but skip-balloon was not negotiated");
	if (run->enc > LM_ENC_ZSTD)
		return lm__stream_fail(err, -EPROTO, "RAM run: unknown encoding %u", run->enc);
	if (run->enc == LM_ENC_ZSTD && run->kind != LM_RUN_DATA)
		return lm__stream_fail(err, -EBADMSG,
				       "RAM run: ZSTD encoding on a run without data (kind %u)",
				       run->kind);
	if (run->enc == LM_ENC_ZSTD && !(s->caps & LM_CAP_ZSTD))
		return lm__stream_fail(err, -ENOTSUP,
				       "RAM run: ZSTD data but zstd was not negotiated");
	if (reserved)
		return lm__stream_fail(err, -EBADMSG, "RAM run: reserved field 0x%04x is not zero",
				       reserved);
	if (run->npages == 0)
		return lm__stream_fail(err, -EBADMSG, "RAM run: zero pages");
	if (run->npages > LM_STREAM_MAX_RUN_PAGES)
		return lm__stream_fail(err, -EMSGSIZE, "RAM run: %u pages, at most %u per record",
				       run->npages, LM_STREAM_MAX_RUN_PAGES);
	int reg = lm_stream_layout_find(&s->layout, run->first_page, run->npages, err);
	if (reg < 0)
		return reg;
	run->region = (uint32_t)reg;
	run->region_off = run->first_page - s->layout.regions[reg].first_page;
	run->data_len = f->payload_len - LM_RUN_HDR;
	size_t raw = RUN_BYTES(run->npages);
	if (run->kind != LM_RUN_DATA) {
		if (run->data_len)
			return lm__stream_fail(err, -EBADMSG, "RAM run: %zu data bytes on a %s run",
					       run->data_len,
					       run->kind == LM_RUN_ZERO ? "ZERO" : "SKIPPED");
	} else if (run->enc == LM_ENC_RAW) {
		if (run->data_len != raw)
			return lm__stream_fail(
			    err, -EBADMSG, "RAM run: %zu data bytes for %u RAW pages (need %zu)",
			    run->data_len, run->npages, raw);
	} else {
		if (run->data_len == 0 || run->data_len > raw)
			return lm__stream_fail(
			    err, -EBADMSG, "RAM run: %zu ZSTD bytes for %u pages (must be 1..%zu)",
			    run->data_len, run->npages, raw);
	}
	return 0;
}

int lm_stream_run_apply(lm_stream *s, const lm_run *run, const void *data, size_t data_len,
			void *dst, size_t dst_len, lm_stream_err *err)
{
	size_t raw = RUN_BYTES(run->npages);
	if (run->kind != LM_RUN_DATA)
		return lm__stream_fail(err, -EINVAL, "RAM run apply: run has no data (kind %u)",
				       run->kind);
	if (dst_len != raw || data_len != run->data_len)
		return lm__stream_fail(
		    err, -EINVAL, "RAM run apply: destination %zu / data %zu bytes for %u pages",
		    dst_len, data_len, run->npages);
	if (run->enc == LM_ENC_RAW) {
		memcpy(dst, data, raw);
		return 0;
	}
	/* Exactly one zstd frame, announcing exactly the run's size. */
	size_t fsz = ZSTD_findFrameCompressedSize(data, data_len);
	if (ZSTD_isError(fsz))
		return lm__stream_fail(err, -EILSEQ, "RAM run at page %llu: bad zstd frame (%s)",
				       (unsigned long long)run->first_page, ZSTD_getErrorName(fsz));
	if (fsz != data_len)
		return lm__stream_fail(err, -EILSEQ,
				       "RAM run at page %llu: zstd frame is %zu of %zu bytes",
				       (unsigned long long)run->first_page, fsz, data_len);
	unsigned long long csz = ZSTD_getFrameContentSize(data, data_len);
	if (csz != raw)
		return lm__stream_fail(
		    err, -EILSEQ,
		    "RAM run at page %llu: zstd frame announces %lld bytes, run needs %zu",
		    (unsigned long long)run->first_page,
		    csz == ZSTD_CONTENTSIZE_UNKNOWN ? -1ll : (long long)csz, raw);
	ZSTD_DCtx *d = dctx(s);
	if (!d)
		return lm__stream_fail(err, -ENOMEM, "zstd: cannot create a decompression context");
	/* The output bound is dst_len: zstd stops with an error rather than
	 * write past it, whatever the frame says. */
	size_t out = ZSTD_decompressDCtx(d, dst, dst_len, data, data_len);
	if (ZSTD_isError(out))
		return lm__stream_fail(err, -EILSEQ, "RAM run at page %llu: zstd: %s",
				       (unsigned long long)run->first_page, ZSTD_getErrorName(out));
	if (out != raw)
		return lm__stream_fail(err, -EILSEQ,
				       "RAM run at page %llu: zstd gave %zu bytes, run needs %zu",
				       (unsigned long long)run->first_page, out, raw);
	return 0;
}

/* ---- whole-record decoding ------------------------------------------------------------ */

static int decode_status(const lm_frame *f, const uint8_t *p, size_t len, lm_stream_status *st,
			 lm_stream_err *err)
{
	const char *name = lm_stream_type_name(f->type);
	uint32_t code = ld32(p);
	if (code > 4095)
		return lm__stream_fail(err, -EBADMSG, "%s record: status %u is not an errno value",
				       name, code);
	if (f->type == LM_REC_REFUSE && code == 0)
		return lm__stream_fail(err, -EBADMSG, "REFUSE record with status 0");
	size_t n = len - 4;
	for (size_t i = 0; i < n; i++)
		if (p[4 + i] == 0)
			return lm__stream_fail(err, -EBADMSG, "%s record: NUL byte in text at %zu",
					       name, i);
	st->code = (int32_t)code;
	memcpy(st->text, p + 4, n);
	st->text[n] = 0;
	return 0;
}

int lm_stream_decode_payload(lm_stream *s, const lm_frame *f, const void *payload, size_t len,
			     lm_record *rec, lm_stream_err *err)
{
	const uint8_t *p = payload;
	const char *name = lm_stream_type_name(f->type);
	if (len != f->payload_len)
		return lm__stream_fail(err, len < f->payload_len ? -ENODATA : -EINVAL,
				       "%s record: payload is %zu bytes, frame says %u", name, len,
				       f->payload_len);
	uint32_t sum = frame_checksum(s, f, p, len);
	if (sum != f->checksum)
		return lm__stream_fail(
		    err, -EBADMSG,
		    "%s record: checksum mismatch (frame says 0x%08x, data gives 0x%08x)", name,
		    f->checksum, sum);
	memset(rec, 0, offsetof(lm_record, u));
	rec->frame = *f;
	switch (f->type) {
	case LM_REC_HELLO:
		return lm__stream_hello_decode(p, len, &rec->u.hello, err);
	case LM_REC_ACCEPT: {
		uint32_t v = ld32(p);
		if (v != LM_STREAM_VERSION)
			return lm__stream_fail(err, -EPROTONOSUPPORT,
					       "ACCEPT: version %u, this side speaks %u", v,
					       LM_STREAM_VERSION);
		if (ld32(p + 4))
			return lm__stream_fail(err, -EBADMSG, "ACCEPT: reserved field is not zero");
		rec->u.accept.version = v;
		rec->u.accept.accepted = ld64(p + 8);
		return 0;
	}
	case LM_REC_REFUSE:
	case LM_REC_RESULT:
		return decode_status(f, p, len, &rec->u.status, err);
	case LM_REC_RAM: {
		int r = lm_stream_run_parse(s, f, p, len, &rec->u.run, err);
		if (r)
			return r;
		rec->u.run.data = rec->u.run.data_len ? p + LM_RUN_HDR : NULL;
		return 0;
	}
	case LM_REC_ROUND:
		rec->u.round = ld64(p);
		return 0;
	case LM_REC_DEVICE: {
		size_t n = p[0];
		if (n == 0 || n > LM_STREAM_MAX_DEVICE_NAME)
			return lm__stream_fail(err, -EBADMSG,
					       "DEVICE record: name length %zu (must be 1..%u)", n,
					       LM_STREAM_MAX_DEVICE_NAME);
		if (1 + n > len)
			return lm__stream_fail(
			    err, -EBADMSG, "DEVICE record: name of %zu bytes in a %zu-byte payload",
			    n, len);
		if (!device_name_ok((const char *)p + 1, n))
			return lm__stream_fail(
			    err, -EBADMSG,
			    "DEVICE record: name has a byte outside [A-Za-z0-9_.:-]");
		memcpy(rec->u.device.name, p + 1, n);
		rec->u.device.name[n] = 0;
		rec->u.device.len = len - 1 - n;
		rec->u.device.blob = p + 1 + n;
		if (rec->u.device.len > LM_STREAM_MAX_DEVICE_BLOB)
			return lm__stream_fail(err, -EMSGSIZE,
					       "DEVICE record: blob of %zu bytes above %u",
					       rec->u.device.len, LM_STREAM_MAX_DEVICE_BLOB);
		return 0;
	}
	case LM_REC_DIGEST:
		rec->u.digest.lo = ld64(p);
		rec->u.digest.hi = ld64(p + 8);
		rec->u.digest.npages = ld64(p + 16);
		if (s->layout.nregions && rec->u.digest.npages != s->layout.total_pages)
			return lm__stream_fail(err, -EBADMSG,
					       "DIGEST covers %llu pages, the layout has %llu",
					       (unsigned long long)rec->u.digest.npages,
					       (unsigned long long)s->layout.total_pages);
		return 0;
	case LM_REC_END:
	case LM_REC_COMMIT:
		return 0;
	case LM_REC_PREPARE:
	case LM_REC_READY:
		if (!(s->caps & LM_CAP_PREPARE))
			return lm__stream_fail(err, -ENOTSUP, "%s record but prepare was not negotiated",
					       f->type == LM_REC_PREPARE ? "PREPARE" : "READY");
		return 0;
	case LM_REC_COMMITTED:
		if (!(s->caps & LM_CAP_COMMIT_ACK))
			return lm__stream_fail(err, -ENOTSUP,
					       "COMMITTED record but commit-ack was not negotiated");
		return 0;
	case LM_REC_PENDING:
	case LM_REC_MISSING:
		if (len % 16)
			return lm__stream_fail(err, -EBADMSG,
					       "%s record: %zu bytes, not a whole number of runs", name, len);
		for (size_t i = 0; i < len; i += 16) {
			uint64_t first = ld64(p + i), n = ld64(p + i + 8);
			if (n == 0)
				return lm__stream_fail(err, -EBADMSG, "%s record: run %zu is empty", name,
						       i / 16);
			if (n > LM_STREAM_PAGE_LIMIT || first >= LM_STREAM_PAGE_LIMIT ||
			    lm_stream_layout_find(&s->layout, first, n, NULL) < 0)
				return lm__stream_fail(err, -ERANGE,
						       "%s run pages [%llu, %llu) outside the layout", name,
						       (unsigned long long)first,
						       (unsigned long long)(first + n));
		}
		rec->u.pending.runs = p;
		rec->u.pending.nruns = (uint32_t)(len / 16);
		return 0;
	case LM_REC_POSTCOPY:
		rec->u.postcopy.npending = ld64(p);
		rec->u.postcopy.session = ld64(p + 8);
		if (rec->u.postcopy.npending > s->layout.total_pages)
			return lm__stream_fail(err, -EBADMSG,
					       "POSTCOPY announces %llu pending pages, the layout has %llu",
					       (unsigned long long)rec->u.postcopy.npending,
					       (unsigned long long)s->layout.total_pages);
		if (!rec->u.postcopy.session)
			return lm__stream_fail(err, -EBADMSG, "POSTCOPY record: session 0");
		return 0;
	case LM_REC_RESUME:
		if (ld64(p) != LM_STREAM_MAGIC)
			return lm__stream_fail(err, -EPROTO, "RESUME: bad magic 0x%016llx, not a livemig stream",
					       (unsigned long long)ld64(p));
		if (ld32(p + 8) != LM_STREAM_VERSION)
			return lm__stream_fail(err, -EPROTONOSUPPORT, "RESUME: stream version %u, this side speaks %u",
					       ld32(p + 8), LM_STREAM_VERSION);
		if (ld32(p + 12))
			return lm__stream_fail(err, -EBADMSG, "RESUME: reserved field is not zero");
		rec->u.session = ld64(p + 16);
		return 0;
	case LM_REC_RESUMED:
		rec->u.resumed.session = ld64(p);
		rec->u.resumed.nmissing = ld64(p + 8);
		if (rec->u.resumed.nmissing > s->layout.total_pages)
			return lm__stream_fail(err, -EBADMSG,
					       "RESUMED announces %llu missing pages, the layout has %llu",
					       (unsigned long long)rec->u.resumed.nmissing,
					       (unsigned long long)s->layout.total_pages);
		return 0;
	case LM_REC_PAGE_REQ:
		rec->u.page_req.first_page = ld64(p);
		rec->u.page_req.npages = ld32(p + 8);
		if (ld32(p + 12))
			return lm__stream_fail(err, -EBADMSG, "PAGE_REQ record: reserved field is not zero");
		if (rec->u.page_req.npages == 0 || rec->u.page_req.npages > LM_STREAM_MAX_RUN_PAGES)
			return lm__stream_fail(err, -EBADMSG, "PAGE_REQ record: %u pages (must be 1..%u)",
					       rec->u.page_req.npages, LM_STREAM_MAX_RUN_PAGES);
		if (rec->u.page_req.first_page >= LM_STREAM_PAGE_LIMIT ||
		    lm_stream_layout_find(&s->layout, rec->u.page_req.first_page, rec->u.page_req.npages,
					  NULL) < 0)
			return lm__stream_fail(err, -ERANGE, "PAGE_REQ pages [%llu, %llu) outside the layout",
					       (unsigned long long)rec->u.page_req.first_page,
					       (unsigned long long)(rec->u.page_req.first_page +
								    rec->u.page_req.npages));
		return 0;
	case LM_REC_CHANNELS:
		rec->u.channels.nchannels = ld32(p);
		rec->u.channels.stripe_pages = ld32(p + 4);
		rec->u.channels.session = ld64(p + 8);
		if (rec->u.channels.nchannels == 0 || rec->u.channels.nchannels > LM_STREAM_MAX_CHANNELS)
			return lm__stream_fail(err, -EMSGSIZE, "CHANNELS record: %u channels (must be 1..%u)",
					       rec->u.channels.nchannels, LM_STREAM_MAX_CHANNELS);
		if (!stripe_ok(rec->u.channels.stripe_pages))
			return lm__stream_fail(err, -EBADMSG,
					       "CHANNELS record: stripe of %u pages (must be a power of two, %u..%u)",
					       rec->u.channels.stripe_pages, LM_STREAM_MIN_STRIPE, LM_STREAM_MAX_STRIPE);
		if (!rec->u.channels.session)
			return lm__stream_fail(err, -EBADMSG, "CHANNELS record: session 0");
		return 0;
	case LM_REC_CHANNEL:
		if (ld64(p) != LM_STREAM_MAGIC)
			return lm__stream_fail(err, -EPROTO, "CHANNEL: bad magic 0x%016llx, not a livemig stream",
					       (unsigned long long)ld64(p));
		if (ld32(p + 8) != LM_STREAM_VERSION)
			return lm__stream_fail(err, -EPROTONOSUPPORT, "CHANNEL: stream version %u, this side speaks %u",
					       ld32(p + 8), LM_STREAM_VERSION);
		rec->u.channel.index = ld32(p + 12);
		rec->u.channel.session = ld64(p + 16);
		if (rec->u.channel.index >= LM_STREAM_MAX_CHANNELS)
			return lm__stream_fail(err, -EMSGSIZE, "CHANNEL: index %u (at most %u channels)",
					       rec->u.channel.index, LM_STREAM_MAX_CHANNELS);
		if (!rec->u.channel.session)
			return lm__stream_fail(err, -EBADMSG, "CHANNEL: session 0");
		return 0;
	case LM_REC_SYNC:
		rec->u.sync.seq = ld64(p);
		rec->u.sync.flags = ld32(p + 8);
		if (!rec->u.sync.seq)
			return lm__stream_fail(err, -EBADMSG, "SYNC record: seq 0");
		if (rec->u.sync.flags & ~LM_SYNC_LAST)
			return lm__stream_fail(err, -EPROTO, "SYNC record: unknown flags 0x%x", rec->u.sync.flags);
		if (ld32(p + 12))
			return lm__stream_fail(err, -EBADMSG, "SYNC record: reserved field is not zero");
		return 0;
	case LM_REC_TABLE:
		if (!(s->caps & LM_CAP_TABLE_STREAM))
			return lm__stream_fail(err, -ENOTSUP,
					       "TABLE record but table-stream was not negotiated");
		rec->u.table.payload = len ? p : NULL;
		rec->u.table.len = len;
		return 0;
	default:
		return lm__stream_fail(err, -EPROTO, "unknown record type 0x%04x", f->type);
	}
}

int64_t lm_stream_decode(lm_stream *s, const void *buf, size_t len, lm_record *rec,
			 lm_stream_err *err)
{
	lm_frame f;
	int r = lm_stream_frame_parse(s, buf, len, &f, err);
	if (r)
		return r;
	if (len - LM_FRAME_HDR < f.payload_len)
		return lm__stream_fail(
		    err, -ENODATA, "truncated %s record: %zu of %u payload bytes",
		    lm_stream_type_name(f.type), len - LM_FRAME_HDR, f.payload_len);
	r = lm_stream_decode_payload(s, &f, (const uint8_t *)buf + LM_FRAME_HDR, f.payload_len, rec,
				     err);
	if (r)
		return r;
	return (int64_t)LM_FRAME_HDR + f.payload_len;
}
