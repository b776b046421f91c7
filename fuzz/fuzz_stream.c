/*
 * libFuzzer target for the wire-format decoder (src/stream): arbitrary bytes
 * go through the receiver's path, handshake and records, into small
 * destination memory allocated at its exact size (ASan reports any write
 * outside it).
 *
 * Input: byte 0 selects the mode and the capabilities.
 *   bit 7 clear: the rest is a sender's stream starting with HELLO; bits 0-3
 *                are the receiver's allowed capabilities (negotiation runs).
 *   bit 7 set:   no handshake; a fixed layout of pages [0, 16) and
 *                [100, 108) and capabilities bits 0-3, so that mutations
 *                reach the record decoders directly.
 *   bit 6 set:   before decoding, the checksum of every frame is recomputed
 *                (on a copy), so that mutations get past the checksum to the
 *                field checks behind it.
 *   bit 5 set:   page-hash-csum is allowed (or, with bit 7, on): RAW RAM
 *                runs are checksummed over their pages' hashes
 *                (docs/stream.md 2), and bit 6 recomputes them so.
 * Records are decoded one by one until the first error or END. DATA runs
 * are applied, ZERO runs zero memory, and a digest is kept as the receiver
 * would. Each frame is also decoded the incremental way (header, run
 * header, checksum in pieces); both ways must agree, or the target aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "livemig/stream.h"

#define MAX_REGION_PAGES 64u
#define MAX_TOTAL_PAGES 256u

struct dest {
	uint8_t *mem[LM_STREAM_MAX_REGIONS];
	uint32_t n;
};

static int dest_alloc(struct dest *d, const lm_stream_layout *l)
{
	d->n = 0;
	if (l->total_pages > MAX_TOTAL_PAGES)
		return -1;
	for (uint32_t i = 0; i < l->nregions; i++) {
		if (l->regions[i].npages > MAX_REGION_PAGES)
			return -1;
		/* Exact size: one byte more would hide an overflow from ASan. */
		d->mem[i] = calloc(l->regions[i].npages, LM_PAGE_SIZE);
		if (!d->mem[i])
			return -1;
		d->n = i + 1;
	}
	return 0;
}

static void dest_free(struct dest *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		free(d->mem[i]);
	d->n = 0;
}

/*
 * The socket-style path: parse the header, for RAM the run header, then
 * the checksum over the pieces. Returns 0 if it accepts the frame.
 */
static int incremental(lm_stream *s, const uint8_t *p, size_t len)
{
	lm_frame f;
	if (lm_stream_frame_parse(s, p, len, &f, NULL))
		return -1;
	if (len - LM_FRAME_HDR < f.payload_len)
		return -1;
	const uint8_t *pl = p + LM_FRAME_HDR;
	if (f.type == LM_REC_RAM) {
		lm_run run;
		if (lm_stream_run_parse(s, &f, pl, f.payload_len, &run, NULL))
			return -1;
		lm_stream_csum c;
		lm_stream_csum_begin(&c, &f);
		lm_stream_csum_update(&c, pl, LM_RUN_HDR);
		if (run.kind == LM_RUN_DATA && run.enc == LM_ENC_RAW) {
			/* A page at a time, as a receiver reading into place. */
			for (uint32_t k = 0; k < run.npages; k++)
				lm_stream_csum_page(s, &c, run.first_page + k, pl + LM_RUN_HDR + (size_t)k * LM_PAGE_SIZE, NULL);
		} else {
			lm_stream_csum_update(&c, pl + LM_RUN_HDR, run.data_len);
		}
		return lm_stream_csum_check(&c, &f, NULL) ? -1 : 0;
	}
	lm_record rec;
	return lm_stream_decode_payload(s, &f, pl, f.payload_len, &rec, NULL) ? -1 : 0;
}

/* Walk the frames as their headers say and give each a correct checksum
 * (by the page-hash rule where s has it and the frame is a RAW DATA run). */
static void fix_checksums(const lm_stream *s, uint8_t *p, size_t len)
{
	size_t off = 0;
	while (len - off >= LM_FRAME_HDR) {
		uint8_t *h = p + off;
		lm_frame f = {
		    .type = (uint16_t)(h[0] | h[1] << 8),
		    .flags = (uint16_t)(h[2] | h[3] << 8),
		    .payload_len = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
				   (uint32_t)h[7] << 24,
		};
		if (len - off - LM_FRAME_HDR < f.payload_len)
			return;
		/* The encoder's own finish: it picks the rule per frame (a RAW
		 * DATA run under page-hash-csum, else the bytes). */
		lm_buf fb;
		lm_buf_init_fixed(&fb, h, LM_FRAME_HDR + (size_t)f.payload_len);
		fb.len = fb.cap;
		lm_stream_put_raw_end(s, &fb, 0);
		off += LM_FRAME_HDR + f.payload_len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	data++;
	size--;

	lm_stream s;
	lm_stream_init(&s);
	struct dest d = {.n = 0};
	lm_digest dig;
	bool have_digest = false;
	size_t off = 0;
	lm_record *rec = malloc(sizeof(*rec));
	uint8_t *copy = NULL;
	if (!rec)
		return 0;
	uint64_t caps = (sel & 0x0f) | (sel & 0x20 ? LM_CAP_PAGE_HASH_CSUM : 0);
	if (sel & 0x40) {
		copy = malloc(size ? size : 1);
		if (!copy)
			goto out;
		memcpy(copy, data, size);
		lm_stream rule;
		lm_stream_init(&rule);
		rule.caps = caps & LM_CAP_PAGE_HASH_CSUM;
		fix_checksums(&rule, copy, size);
		lm_stream_destroy(&rule);
		data = copy;
	}

	if (sel & 0x80) {
		static const lm_stream_region fixed[] = {{0, 16}, {100, 8}};
		if (lm_stream_layout_init(&s.layout, fixed, 2, NULL))
			abort();
		s.caps = caps;
	} else {
		lm_stream_err err;
		int64_t r = lm_stream_decode(&s, data, size, rec, &err);
		if (r < 0 || rec->frame.type != LM_REC_HELLO)
			goto out;
		uint64_t acc;
		if (lm_stream_negotiate(&s, &rec->u.hello, caps, &acc, &err))
			goto out;
		if ((acc & ~rec->u.hello.offered) || (rec->u.hello.mandatory & ~acc))
			abort();
		off = (size_t)r;
	}
	if (dest_alloc(&d, &s.layout))
		goto out;
	have_digest = lm_digest_init(&dig, s.layout.end_page) == 0;

	while (off < size) {
		lm_stream_err err;
		int64_t r = lm_stream_decode(&s, data + off, size - off, rec, &err);
		int inc = incremental(&s, data + off, size - off);
		if ((r >= 0) != (inc == 0))
			abort(); /* the two decoding paths disagree */
		if (r < 0) {
			if (err.code != r || !err.msg[0])
				abort(); /* every failure names itself */
			break;
		}
		off += (size_t)r;
		if (rec->frame.type == LM_REC_END)
			break;
		if (rec->frame.type != LM_REC_RAM)
			continue;
		const lm_run *run = &rec->u.run;
		if (run->region >= d.n ||
		    run->region_off + run->npages > s.layout.regions[run->region].npages)
			abort(); /* the decoder let a run out of the layout */
		uint8_t *dst = d.mem[run->region] + run->region_off * LM_PAGE_SIZE;
		size_t dlen = (size_t)run->npages * LM_PAGE_SIZE;
		if (run->kind == LM_RUN_DATA) {
			if (lm_stream_run_apply(&s, run, run->data, run->data_len, dst, dlen, &err))
				break;
			if (have_digest)
				lm_digest_pages(&dig, run->first_page, run->npages, dst);
		} else {
			memset(dst, 0, dlen);
			if (have_digest)
				lm_digest_zero(&dig, run->first_page, run->npages);
		}
	}
out:
	if (have_digest)
		lm_digest_destroy(&dig);
	dest_free(&d);
	free(copy);
	free(rec);
	lm_stream_destroy(&s);
	return 0;
}
