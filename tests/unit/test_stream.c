/*
 * Tests for the wire format (src/stream): every record and the handshake
 * round-trip; truncated, bit-flipped and hand-crafted hostile streams are
 * rejected with the specific error the spec (docs/stream.md) names; and the
 * decoder never writes outside its destination, which lives between two
 * PROT_NONE guard pages (any stray byte faults) on top of ASan.
 *
 * Hostile frames are built by hand here with a correct checksum, so that
 * each test reaches the field check it is about rather than stopping at the
 * checksum.
 *
 * With LM_WRITE_SEEDS=dir set, the test also writes a few small valid
 * streams into dir, the seed corpus of fuzz/fuzz_stream.c.
 */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include <zstd.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "livemig/stream.h"

#define PG 4096u

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, so failures replay. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static void fill_random(void *p, size_t n)
{
	uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rnd();
}

/* Compressible but not trivial page content. */
static void fill_text(void *p, size_t n, unsigned salt)
{
	uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)("livemig pages "[i % 14] + ((i / 512 + salt) % 7));
}

/* ---- guarded destination memory ---------------------------------------------------- */

struct guarded {
	uint8_t *map;
	size_t map_len;
	uint8_t *mem; /* len bytes, a PROT_NONE page right before and after */
	size_t len;
};

static void guarded_alloc(struct guarded *g, size_t len)
{
	assert_true(len % PG == 0 && len > 0);
	g->map_len = len + 2 * PG;
	g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g->map != MAP_FAILED);
	assert_int_equal(mprotect(g->map, PG, PROT_NONE), 0);
	assert_int_equal(mprotect(g->map + PG + len, PG, PROT_NONE), 0);
	g->mem = g->map + PG;
	g->len = len;
}

static void guarded_free(struct guarded *g)
{
	munmap(g->map, g->map_len);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static void le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* An independent checksum, straight from the spec. */
static uint32_t spec_csum(uint16_t type, uint16_t flags, uint32_t len, const void *payload)
{
	uint64_t seed = (uint64_t)type | ((uint64_t)flags << 16) | ((uint64_t)len << 32);
	return (uint32_t)XXH3_64bits_withSeed(payload, len, seed);
}

/* Append a hand-made frame with a correct checksum to b. */
static void craft(lm_buf *b, uint16_t type, uint16_t flags, const void *payload, uint32_t len)
{
	assert_int_equal(lm_buf_reserve(b, 12 + len), 0);
	uint8_t *p = b->data + b->len;
	le16(p, type);
	le16(p + 2, flags);
	le32(p + 4, len);
	le32(p + 8, spec_csum(type, flags, len, payload));
	if (len)
		memcpy(p + 12, payload, len);
	b->len += 12 + len;
}

/* Recompute the checksum of the frame at p after the test edited it. */
static void fix_csum(uint8_t *p)
{
	uint16_t type = (uint16_t)(p[0] | p[1] << 8);
	uint16_t flags = (uint16_t)(p[2] | p[3] << 8);
	uint32_t len =
	    (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
	le32(p + 8, spec_csum(type, flags, len, p + 12));
}

static void run_header(uint8_t *p, uint64_t first, uint32_t n, uint8_t kind, uint8_t enc,
		       uint16_t reserved)
{
	le64(p, first);
	le32(p + 8, n);
	p[12] = kind;
	p[13] = enc;
	le16(p + 14, reserved);
}

/* The layout every test uses: pages [0, 64) and [100, 132). */
static const lm_stream_region regions[] = {{0, 64}, {100, 32}};

static void setup_stream(lm_stream *s, uint64_t caps)
{
	lm_stream_init(s);
	assert_int_equal(lm_stream_layout_init(&s->layout, regions, 2, NULL), 0);
	s->caps = caps;
}

#define ALL_CAPS (LM_CAP_RECORD_CSUM | LM_CAP_ZSTD | LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM)

/* Decode one frame expecting failure with code; the message must be there. */
static void expect_fail(lm_stream *s, const void *buf, size_t len, int code, const char *needle)
{
	lm_record rec;
	lm_stream_err err = {0};
	int64_t r = lm_stream_decode(s, buf, len, &rec, &err);
	if (r != code)
		fail_msg("expected %d (%s), got %lld: %s", code, lm_strerror(code), (long long)r,
			 err.msg);
	assert_int_equal(err.code, code);
	assert_true(err.msg[0] != 0);
	if (needle && !strstr(err.msg, needle))
		fail_msg("message \"%s\" does not mention \"%s\"", err.msg, needle);
}

static void expect_ram_fail(lm_stream *s, const uint8_t rh[16], const void *data, uint32_t data_len,
			    int code, const char *needle)
{
	lm_buf b;
	lm_buf_init(&b);
	uint8_t *payload = malloc(16 + data_len);
	memcpy(payload, rh, 16);
	if (data_len)
		memcpy(payload + 16, data, data_len);
	craft(&b, LM_REC_RAM, 0, payload, 16 + data_len);
	expect_fail(s, b.data, b.len, code, needle);
	free(payload);
	lm_buf_destroy(&b);
}

static lm_stream_hello make_hello(uint64_t offered, uint64_t mandatory)
{
	lm_stream_hello h;
	memset(&h, 0, sizeof(h));
	h.version = LM_STREAM_VERSION;
	h.page_size = PG;
	h.offered = offered;
	h.mandatory = mandatory;
	assert_int_equal(lm_stream_layout_init(&h.layout, regions, 2, NULL), 0);
	return h;
}

/* ---- the sample stream: one of every record ------------------------------------------------ */

struct sample {
	lm_buf b;
	uint8_t pages_raw[3 * PG];
	uint8_t pages_text[8 * PG];
	uint8_t pages_rand[2 * PG];
	uint8_t blob[300];
	size_t nframes;
	size_t frame_off[32];
};

/* Small pages counts keep "truncate at every offset" fast. */
static void build_sample(lm_stream *s, struct sample *sm)
{
	lm_buf_init(&sm->b);
	fill_random(sm->pages_raw, sizeof(sm->pages_raw));
	fill_text(sm->pages_text, sizeof(sm->pages_text), 3);
	fill_random(sm->pages_rand, sizeof(sm->pages_rand));
	fill_random(sm->blob, sizeof(sm->blob));
	lm_stream_hello h = make_hello(ALL_CAPS, LM_CAP_RECORD_CSUM);
	lm_buf *b = &sm->b;
	uint8_t used;
	size_t n = 0;
/* Note where each frame starts, then append it. */
#define PUT(call)                                                                                  \
	do {                                                                                       \
		sm->frame_off[n++] = b->len;                                                       \
		assert_int_equal((call), 0);                                                       \
	} while (0)
	PUT(lm_stream_put_hello(b, &h));
	PUT(lm_stream_put_accept(b, ALL_CAPS));
	PUT(lm_stream_put_round(b, 1));
	PUT(lm_stream_put_run_data(s, b, 5, 3, sm->pages_raw, LM_ENC_RAW, &used));
	assert_int_equal(used, LM_ENC_RAW);
	PUT(lm_stream_put_run_data(s, b, 100, 8, sm->pages_text, LM_ENC_ZSTD, &used));
	assert_int_equal(used, LM_ENC_ZSTD);
	/* Random data does not compress: it must go out RAW. */
	PUT(lm_stream_put_run_data(s, b, 62, 2, sm->pages_rand, LM_ENC_ZSTD, &used));
	assert_int_equal(used, LM_ENC_RAW);
	PUT(lm_stream_put_run_empty(b, LM_RUN_ZERO, 10, 40));
	PUT(lm_stream_put_run_empty(b, LM_RUN_SKIPPED, 120, 12));
	PUT(lm_stream_put_round(b, 2));
	PUT(lm_stream_put_device(b, "cpu0", sm->blob, sizeof(sm->blob)));
	PUT(lm_stream_put_device(b, "empty.dev-1:x", NULL, 0));
	PUT(lm_stream_put_table(b, sm->blob, 24));
	PUT(lm_stream_put_digest(b, 0x1122334455667788ull, 0x99aabbccddeeff00ull, 96));
	PUT(lm_stream_put_end(b));
	PUT(lm_stream_put_result(b, 0, "ok"));
	PUT(lm_stream_put_result(b, EBADMSG, "digest mismatch"));
	PUT(lm_stream_put_refuse(b, ENOTSUP, "mandatory capability zstd is switched off here"));
#undef PUT
	sm->nframes = n;
	sm->frame_off[n] = b->len;
}

static size_t frame_len(const struct sample *sm, size_t i)
{
	return sm->frame_off[i + 1] - sm->frame_off[i];
}

/* ---- round trips ------------------------------------------------------------------------------
 */

static void test_roundtrip_all_records(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	struct sample *sm = calloc(1, sizeof(*sm));
	build_sample(&s, sm);

	struct guarded dst;
	guarded_alloc(&dst, 132 * PG);
	lm_record rec;
	lm_stream_err err = {0};
	size_t off = 0;
	for (size_t i = 0; i < sm->nframes; i++) {
		int64_t r = lm_stream_decode(&s, sm->b.data + off, sm->b.len - off, &rec, &err);
		if (r < 0)
			fail_msg("frame %zu: %s", i, err.msg);
		assert_int_equal(r, frame_len(sm, i));
		off += (size_t)r;
		switch (i) {
		case 0:
			assert_int_equal(rec.frame.type, LM_REC_HELLO);
			assert_int_equal(rec.u.hello.version, 1);
			assert_int_equal(rec.u.hello.page_size, PG);
			assert_int_equal(rec.u.hello.offered, ALL_CAPS);
			assert_int_equal(rec.u.hello.mandatory, LM_CAP_RECORD_CSUM);
			assert_int_equal(rec.u.hello.layout.nregions, 2);
			assert_int_equal(rec.u.hello.layout.total_pages, 96);
			assert_int_equal(rec.u.hello.layout.end_page, 132);
			assert_int_equal(rec.u.hello.layout.regions[1].first_page, 100);
			assert_int_equal(rec.u.hello.layout.regions[1].npages, 32);
			break;
		case 1:
			assert_int_equal(rec.frame.type, LM_REC_ACCEPT);
			assert_int_equal(rec.u.accept.accepted, ALL_CAPS);
			break;
		case 2:
		case 8:
			assert_int_equal(rec.frame.type, LM_REC_ROUND);
			assert_int_equal(rec.u.round, i == 2 ? 1 : 2);
			break;
		case 3:
		case 4:
		case 5: {
			static const uint64_t first[] = {5, 100, 62};
			static const uint32_t np[] = {3, 8, 2};
			static const uint8_t enc[] = {LM_ENC_RAW, LM_ENC_ZSTD, LM_ENC_RAW};
			const uint8_t *src = i == 3   ? sm->pages_raw
					     : i == 4 ? sm->pages_text
						      : sm->pages_rand;
			lm_run *run = &rec.u.run;
			assert_int_equal(rec.frame.type, LM_REC_RAM);
			assert_int_equal(run->first_page, first[i - 3]);
			assert_int_equal(run->npages, np[i - 3]);
			assert_int_equal(run->kind, LM_RUN_DATA);
			assert_int_equal(run->enc, enc[i - 3]);
			assert_int_equal(run->region, i == 4 ? 1 : 0);
			assert_int_equal(run->region_off, i == 4 ? 0 : first[i - 3]);
			if (run->enc == LM_ENC_ZSTD)
				assert_true(run->data_len < run->npages * PG);
			uint8_t *d = dst.mem + run->first_page * PG;
			assert_int_equal(lm_stream_run_apply(&s, run, run->data, run->data_len, d,
							     (size_t)run->npages * PG, &err),
					 0);
			assert_memory_equal(d, src, (size_t)run->npages * PG);
			break;
		}
		case 6:
		case 7:
			assert_int_equal(rec.frame.type, LM_REC_RAM);
			assert_int_equal(rec.u.run.kind, i == 6 ? LM_RUN_ZERO : LM_RUN_SKIPPED);
			assert_int_equal(rec.u.run.first_page, i == 6 ? 10 : 120);
			assert_int_equal(rec.u.run.npages, i == 6 ? 40 : 12);
			assert_int_equal(rec.u.run.data_len, 0);
			assert_null(rec.u.run.data);
			break;
		case 9:
			assert_int_equal(rec.frame.type, LM_REC_DEVICE);
			assert_string_equal(rec.u.device.name, "cpu0");
			assert_int_equal(rec.u.device.len, sizeof(sm->blob));
			assert_memory_equal(rec.u.device.blob, sm->blob, sizeof(sm->blob));
			break;
		case 10:
			assert_string_equal(rec.u.device.name, "empty.dev-1:x");
			assert_int_equal(rec.u.device.len, 0);
			break;
		case 11:
			assert_int_equal(rec.frame.type, LM_REC_TABLE);
			assert_int_equal(rec.u.table.len, 24);
			assert_memory_equal(rec.u.table.payload, sm->blob, 24);
			break;
		case 12:
			assert_int_equal(rec.frame.type, LM_REC_DIGEST);
			assert_int_equal(rec.u.digest.lo, 0x1122334455667788ull);
			assert_int_equal(rec.u.digest.hi, 0x99aabbccddeeff00ull);
			assert_int_equal(rec.u.digest.npages, 96);
			break;
		case 13:
			assert_int_equal(rec.frame.type, LM_REC_END);
			assert_int_equal(rec.frame.payload_len, 0);
			break;
		case 14:
			assert_int_equal(rec.frame.type, LM_REC_RESULT);
			assert_int_equal(rec.u.status.code, 0);
			assert_string_equal(rec.u.status.text, "ok");
			break;
		case 15:
			assert_int_equal(rec.u.status.code, EBADMSG);
			assert_string_equal(rec.u.status.text, "digest mismatch");
			break;
		case 16:
			assert_int_equal(rec.frame.type, LM_REC_REFUSE);
			assert_int_equal(rec.u.status.code, ENOTSUP);
			assert_string_equal(rec.u.status.text,
					    "mandatory capability zstd is switched off here");
			break;
		}
	}
	assert_int_equal(off, sm->b.len);

	/* Frames carry exactly the checksum the spec defines. */
	for (size_t i = 0; i < sm->nframes; i++) {
		uint8_t *p = sm->b.data + sm->frame_off[i];
		uint32_t want = (uint32_t)p[8] | (uint32_t)p[9] << 8 | (uint32_t)p[10] << 16 |
				(uint32_t)p[11] << 24;
		fix_csum(p);
		uint32_t got = (uint32_t)p[8] | (uint32_t)p[9] << 8 | (uint32_t)p[10] << 16 |
			       (uint32_t)p[11] << 24;
		assert_int_equal(want, got);
	}

	guarded_free(&dst);
	lm_buf_destroy(&sm->b);
	free(sm);
	lm_stream_destroy(&s);
}

/* Long text is cut to the limit, never refused; REFUSE never says "0". */
static void test_status_text(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	char longtext[600];
	memset(longtext, 'x', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = 0;
	lm_buf b;
	lm_buf_init(&b);
	assert_int_equal(lm_stream_put_result(&b, -EIO, longtext), 0);
	size_t first = b.len;
	assert_int_equal(lm_stream_put_refuse(&b, 0, NULL), 0);
	lm_record rec;
	assert_int_equal(lm_stream_decode(&s, b.data, b.len, &rec, NULL), first);
	assert_int_equal(rec.u.status.code, EIO);
	assert_int_equal(strlen(rec.u.status.text), LM_STREAM_MAX_TEXT);
	assert_int_equal(lm_stream_decode(&s, b.data + first, b.len - first, &rec, NULL),
			 b.len - first);
	assert_int_equal(rec.frame.type, LM_REC_REFUSE);
	assert_true(rec.u.status.code != 0);
	assert_string_equal(rec.u.status.text, "");
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* The largest run: 256 pages, both encodings, into an exact guarded destination. */
static void test_max_run(void **state)
{
	(void)state;
	lm_stream s;
	static const lm_stream_region big[] = {{1000, 256}};
	lm_stream_init(&s);
	assert_int_equal(lm_stream_layout_init(&s.layout, big, 1, NULL), 0);
	s.caps = ALL_CAPS;
	size_t n = LM_STREAM_MAX_RUN_PAGES * (size_t)PG;
	uint8_t *src = malloc(n);
	fill_text(src, n, 1);
	fill_random(src + n / 2, 64); /* not entirely regular */
	struct guarded dst;
	guarded_alloc(&dst, n);
	/* RAW, then ZSTD at a fast, the default and a high level: the decoder's
	 * window limit (2^20) must hold for every level the sender may use. */
	static const int levels[] = {0, -5, 1, 19};
	for (int li = 0; li < 4; li++) {
		int enc = li ? LM_ENC_ZSTD : LM_ENC_RAW;
		s.zstd_level = levels[li];
		lm_buf b;
		lm_buf_init(&b);
		uint8_t used;
		assert_int_equal(
		    lm_stream_put_run_data(&s, &b, 1000, 256, src, (uint8_t)enc, &used), 0);
		assert_int_equal(used, enc);
		lm_record rec;
		lm_stream_err err;
		assert_int_equal(lm_stream_decode(&s, b.data, b.len, &rec, &err), b.len);
		memset(dst.mem, 0xee, n);
		assert_int_equal(lm_stream_run_apply(&s, &rec.u.run, rec.u.run.data,
						     rec.u.run.data_len, dst.mem, n, &err),
				 0);
		assert_memory_equal(dst.mem, src, n);
		/* 257 pages cannot be encoded. */
		assert_int_equal(lm_stream_put_run_data(&s, &b, 1000, 257, src, (uint8_t)enc, NULL),
				 -EINVAL);
		lm_buf_destroy(&b);
	}
	guarded_free(&dst);
	free(src);
	lm_stream_destroy(&s);
}

/* A fixed caller buffer: exact size works, one byte less is -ENOSPC. */
static void test_fixed_buffer(void **state)
{
	(void)state;
	uint8_t mem[12 + 8];
	lm_buf b;
	lm_buf_init_fixed(&b, mem, sizeof(mem) - 1);
	assert_int_equal(lm_stream_put_round(&b, 7), -ENOSPC);
	lm_buf_init_fixed(&b, mem, sizeof(mem));
	assert_int_equal(lm_stream_put_round(&b, 7), 0);
	assert_int_equal(b.len, sizeof(mem));
	assert_int_equal(lm_stream_put_end(&b), -ENOSPC);
	lm_buf_destroy(&b); /* must not free caller memory */
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	lm_record rec;
	assert_int_equal(lm_stream_decode(&s, mem, sizeof(mem), &rec, NULL), sizeof(mem));
	assert_int_equal(rec.u.round, 7);
	lm_stream_destroy(&s);
}

/*
 * RAW runs under both checksum rules (docs/stream.md 2): the checksum
 * computed page by page as the caller copies gives the same frame, byte
 * for byte, as the one computed over the finished payload; with
 * page-hash-csum it is XXH3-64 over the run header and the pages' c(i),
 * written out here independently; each rule's frame decodes under its own
 * rule, fails under the other, and fails when one page byte flips.
 */
static void test_raw_csum_rules(void **state)
{
	(void)state;
	uint8_t pages[5 * PG];
	fill_random(pages, sizeof(pages));
	memset(pages + 2 * PG, 0, PG); /* a zero page: c = 0 */
	const uint64_t first = 104;
	for (int rule = 0; rule < 2; rule++) {
		lm_stream s;
		setup_stream(&s, ALL_CAPS | (rule ? LM_CAP_PAGE_HASH_CSUM : 0));
		lm_buf a, c;
		lm_buf_init(&a);
		lm_buf_init(&c);
		uint8_t *dst;
		size_t off;
		assert_int_equal(lm_stream_put_raw_begin(&s, &a, first, 5, &dst, &off), 0);
		memcpy(dst, pages, sizeof(pages));
		lm_stream_put_raw_end(&s, &a, off);

		lm_stream_csum cs;
		assert_int_equal(lm_stream_put_run_empty(&c, LM_RUN_ZERO, 3, 2), 0); /* not at offset 0 */
		size_t before = c.len;
		assert_int_equal(lm_stream_put_raw_begin_csum(&s, &c, first, 5, &dst, &off, &cs), 0);
		assert_int_equal(off, before);
		for (int k = 0; k < 5; k++) {
			memcpy(dst + k * PG, pages + k * PG, PG);
			lm_hash128 h;
			lm_stream_csum_page(&s, &cs, first + k, dst + k * PG, &h);
			lm_hash128 want = lm_digest_contrib(first + k, pages + k * PG);
			assert_true(lm_hash128_eq(h, want));
		}
		lm_stream_put_raw_end_csum(&c, off, &cs);
		assert_int_equal(c.len - before, a.len);
		assert_memory_equal(c.data + before, a.data, a.len);

		/* The rule written out. */
		uint64_t seed = LM_REC_RAM | ((uint64_t)(16 + 5 * PG) << 32);
		uint32_t want;
		if (rule) {
			uint8_t in[16 + 5 * 16];
			memcpy(in, a.data + 12, 16);
			for (int k = 0; k < 5; k++) {
				lm_hash128 h = lm_digest_contrib(first + k, pages + k * PG);
				for (int i = 0; i < 8; i++) {
					in[16 + 16 * k + i] = (uint8_t)(h.lo >> (8 * i));
					in[16 + 16 * k + 8 + i] = (uint8_t)(h.hi >> (8 * i));
				}
			}
			want = (uint32_t)XXH3_64bits_withSeed(in, sizeof(in), seed);
		} else {
			want = (uint32_t)XXH3_64bits_withSeed(a.data + 12, a.len - 12, seed);
		}
		uint32_t got = (uint32_t)a.data[8] | (uint32_t)a.data[9] << 8 | (uint32_t)a.data[10] << 16 |
			       (uint32_t)a.data[11] << 24;
		assert_int_equal(got, want);

		lm_record rec;
		lm_stream_err err = {0};
		assert_int_equal(lm_stream_decode(&s, a.data, a.len, &rec, &err), (int64_t)a.len);
		lm_stream other;
		setup_stream(&other, ALL_CAPS | (rule ? 0 : LM_CAP_PAGE_HASH_CSUM));
		expect_fail(&other, a.data, a.len, -EBADMSG, "checksum mismatch");
		a.data[12 + 16 + 3 * PG + 100] ^= 0x01;
		expect_fail(&s, a.data, a.len, -EBADMSG, "checksum mismatch");

		/* Bad arguments fail before anything is appended. */
		size_t len = c.len;
		assert_int_equal(lm_stream_put_raw_begin_csum(&s, &c, first, 0, &dst, &off, &cs), -EINVAL);
		assert_int_equal(c.len, len);
		lm_buf_destroy(&a);
		lm_buf_destroy(&c);
		lm_stream_destroy(&other);
		lm_stream_destroy(&s);
	}
}

/* ---- incremental (socket-style) decoding -------------------------------------------------- */

static void test_incremental_zero_copy(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	uint8_t pages[4 * PG];
	fill_random(pages, sizeof(pages));
	lm_buf b;
	lm_buf_init(&b);
	uint8_t *dstp;
	size_t off;
	assert_int_equal(lm_stream_put_raw_begin(&s, &b, 104, 4, &dstp, &off), 0);
	memcpy(dstp, pages, sizeof(pages));
	lm_stream_put_raw_end(&s, &b, off);

	struct guarded g;
	guarded_alloc(&g, 32 * PG); /* region 1 */
	for (int corrupt = 0; corrupt < 2; corrupt++) {
		if (corrupt)
			b.data[b.len - 100] ^= 0x20;
		lm_frame f;
		lm_stream_err err;
		/* Header first: the frame size is known before reading more. */
		assert_int_equal(lm_stream_frame_parse(&s, b.data, 11, &f, &err), -ENODATA);
		assert_int_equal(lm_stream_frame_parse(&s, b.data, 12, &f, &err), 0);
		assert_int_equal(f.type, LM_REC_RAM);
		assert_int_equal(f.payload_len, 16 + 4 * PG);
		lm_run run;
		assert_int_equal(lm_stream_run_parse(&s, &f, b.data + 12, 15, &run, &err),
				 -ENODATA);
		assert_int_equal(lm_stream_run_parse(&s, &f, b.data + 12, 16, &run, &err), 0);
		assert_int_equal(run.region, 1);
		assert_int_equal(run.region_off, 4);
		assert_int_equal(run.data_len, 4 * PG);
		/* "Read from the socket" straight into destination memory. */
		uint8_t *d = g.mem + run.region_off * PG;
		memcpy(d, b.data + 28, run.data_len);
		lm_stream_csum c;
		lm_stream_csum_begin(&c, &f);
		lm_stream_csum_update(&c, b.data + 12, 16);
		lm_stream_csum_update(&c, d, 1000); /* pieces of any size */
		lm_stream_csum_update(&c, d + 1000, run.data_len - 1000);
		int r = lm_stream_csum_check(&c, &f, &err);
		if (!corrupt) {
			assert_int_equal(r, 0);
			assert_memory_equal(d, pages, sizeof(pages));
		} else {
			assert_int_equal(r, -EBADMSG);
			assert_non_null(strstr(err.msg, "checksum"));
		}
	}
	guarded_free(&g);
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* ---- handshake
 * ------------------------------------------------------------------------------------ */

static void test_negotiation(void **state)
{
	(void)state;
	lm_stream rx, tx;
	lm_stream_init(&rx);
	lm_stream_init(&tx);
	lm_stream_err err;
	uint64_t acc;

	/* Unknown offered bits are simply not accepted. */
	lm_stream_hello h = make_hello(ALL_CAPS | (1ull << 40), LM_CAP_RECORD_CSUM);
	assert_int_equal(lm_stream_negotiate(&rx, &h, LM_CAP_KNOWN & ~LM_CAP_ZSTD, &acc, &err), 0);
	assert_int_equal(acc, LM_CAP_RECORD_CSUM | LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM);
	assert_int_equal(rx.caps, acc);
	assert_int_equal(rx.layout.total_pages, 96);
	assert_int_equal(lm_stream_accepted(&tx, &h, acc, &err), 0);
	assert_int_equal(tx.caps, acc);

	/* A mandatory capability switched off here is refused by name. */
	h = make_hello(ALL_CAPS, LM_CAP_RECORD_CSUM | LM_CAP_ZSTD);
	assert_int_equal(lm_stream_negotiate(&rx, &h, LM_CAP_KNOWN & ~LM_CAP_ZSTD, &acc, &err),
			 -ENOTSUP);
	assert_non_null(strstr(err.msg, "zstd"));
	assert_non_null(strstr(err.msg, "switched off"));

	/* An unknown mandatory capability is refused. */
	h = make_hello(ALL_CAPS | (1ull << 20), LM_CAP_RECORD_CSUM | (1ull << 20));
	assert_int_equal(lm_stream_negotiate(&rx, &h, LM_CAP_KNOWN, &acc, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "0x100000"));
	assert_non_null(strstr(err.msg, "unknown"));

	/* Version 1 requires record-csum to be mandatory. */
	h = make_hello(ALL_CAPS, 0);
	assert_int_equal(lm_stream_negotiate(&rx, &h, LM_CAP_KNOWN, &acc, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "record-csum"));
	/* ...and switching it off on the receiver refuses every v1 sender. */
	h = make_hello(ALL_CAPS, LM_CAP_RECORD_CSUM);
	assert_int_equal(
	    lm_stream_negotiate(&rx, &h, LM_CAP_KNOWN & ~LM_CAP_RECORD_CSUM, &acc, &err), -ENOTSUP);

	/* Sender side: the ACCEPT must be a subset of the offer, with every mandatory bit. */
	h = make_hello(LM_CAP_RECORD_CSUM | LM_CAP_ZSTD, LM_CAP_RECORD_CSUM);
	assert_int_equal(
	    lm_stream_accepted(&tx, &h, LM_CAP_RECORD_CSUM | LM_CAP_SKIP_BALLOON, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "skip-balloon"));
	assert_int_equal(lm_stream_accepted(&tx, &h, LM_CAP_ZSTD, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "record-csum"));

	/* A wrong version in a hand-built HELLO. */
	h.version = 2;
	assert_int_equal(lm_stream_negotiate(&rx, &h, LM_CAP_KNOWN, &acc, &err), -EPROTONOSUPPORT);

	lm_stream_destroy(&rx);
	lm_stream_destroy(&tx);
}

static void test_hello_version_and_magic(void **state)
{
	(void)state;
	lm_stream s;
	lm_stream_init(&s);
	lm_buf b;
	lm_buf_init(&b);

	/* A future version's HELLO, bigger than v1's: refused by version. */
	uint8_t p[2000];
	memset(p, 0xab, sizeof(p));
	le64(p, LM_STREAM_MAGIC);
	le32(p + 8, 2);
	craft(&b, LM_REC_HELLO, 0, p, sizeof(p));
	expect_fail(&s, b.data, b.len, -EPROTONOSUPPORT, "version 2");

	/* Wrong magic. */
	lm_buf_reset(&b);
	lm_stream_hello h = make_hello(ALL_CAPS, LM_CAP_RECORD_CSUM);
	assert_int_equal(lm_stream_put_hello(&b, &h), 0);
	b.data[12] ^= 1;
	fix_csum(b.data);
	expect_fail(&s, b.data, b.len, -EPROTO, "magic");

	/* An ACCEPT of another version. */
	lm_buf_reset(&b);
	assert_int_equal(lm_stream_put_accept(&b, 1), 0);
	b.data[12] = 7;
	fix_csum(b.data);
	expect_fail(&s, b.data, b.len, -EPROTONOSUPPORT, "version 7");
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* Hostile HELLOs: each field check, with a valid checksum. */
static void test_hello_malicious(void **state)
{
	(void)state;
	lm_stream s;
	lm_stream_init(&s);
	lm_buf b;
	lm_buf_init(&b);
	uint8_t p[48 + 16 * 4];

	struct {
		uint32_t page_size;
		uint64_t offered, mandatory, total;
		uint32_t nregions, reserved, len_regions;
		uint64_t r[4][2];
		int code;
		const char *needle;
	} cases[] = {
	    {4096, 1, 1, 10, 1, 0, 1, {{0, 10}}, 0, NULL},
	    {8192, 1, 1, 10, 1, 0, 1, {{0, 10}}, -EBADMSG, "page size"},
	    {4096, 1, 3, 10, 1, 0, 1, {{0, 10}}, -EBADMSG, "mandatory"},
	    {4096, 1, 1, 10, 1, 5, 1, {{0, 10}}, -EBADMSG, "reserved"},
	    {4096, 1, 1, 10, 0xffffffffu, 0, 1, {{0, 10}}, -EMSGSIZE, "regions"},
	    {4096, 1, 1, 10, 0, 0, 0, {{0, 0}}, -EBADMSG, "no regions"},
	    {4096, 1, 1, 10, 2, 0, 1, {{0, 10}}, -EBADMSG, "for 2 regions"},
	    {4096, 1, 1, 20, 2, 0, 2, {{0, 10}, {5, 10}}, -EBADMSG, "overlaps"},
	    {4096, 1, 1, 20, 2, 0, 2, {{50, 10}, {5, 10}}, -EBADMSG, "overlaps"},
	    {4096, 1, 1, 0, 1, 0, 1, {{0, 0}}, -EBADMSG, "empty"},
	    {4096, 1, 1, 10, 1, 0, 1, {{(1ull << 52) - 5, 10}}, -ERANGE, "2^52"},
	    {4096, 1, 1, 10, 1, 0, 1, {{~0ull, 10}}, -ERANGE, "2^52"},
	    {4096, 1, 1, 10, 2, 0, 2, {{0, ~0ull}, {~0ull, 11}}, -ERANGE, "2^52"},
	    {4096, 1, 1, 11, 1, 0, 1, {{0, 10}}, -EBADMSG, "total_pages"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(p, 0, sizeof(p));
		le64(p, LM_STREAM_MAGIC);
		le32(p + 8, 1);
		le32(p + 12, cases[i].page_size);
		le64(p + 16, cases[i].offered);
		le64(p + 24, cases[i].mandatory);
		le64(p + 32, cases[i].total);
		le32(p + 40, cases[i].nregions);
		le32(p + 44, cases[i].reserved);
		for (uint32_t k = 0; k < cases[i].len_regions; k++) {
			le64(p + 48 + 16 * k, cases[i].r[k][0]);
			le64(p + 56 + 16 * k, cases[i].r[k][1]);
		}
		lm_buf_reset(&b);
		craft(&b, LM_REC_HELLO, 0, p, 48 + 16 * cases[i].len_regions);
		if (cases[i].code == 0) {
			lm_record rec;
			lm_stream_err err;
			if (lm_stream_decode(&s, b.data, b.len, &rec, &err) != (int64_t)b.len)
				fail_msg("case %zu: %s", i, err.msg);
		} else {
			expect_fail(&s, b.data, b.len, cases[i].code, cases[i].needle);
		}
	}
	/* A short HELLO that does have magic and version. */
	lm_buf_reset(&b);
	craft(&b, LM_REC_HELLO, 0, p, 20);
	expect_fail(&s, b.data, b.len, -EBADMSG, "at least");
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* ---- rejection of damaged streams ------------------------------------------------------------ */

/* Every proper prefix of every frame is "truncated", never a success or a crash. */
static void test_truncated_everywhere(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	struct sample *sm = calloc(1, sizeof(*sm));
	build_sample(&s, sm);
	for (size_t i = 0; i < sm->nframes; i++) {
		size_t n = frame_len(sm, i);
		/* An exact-size heap copy: ASan catches a read past the end. */
		for (size_t cut = 0; cut < n; cut++) {
			uint8_t *copy = malloc(cut ? cut : 1);
			memcpy(copy, sm->b.data + sm->frame_off[i], cut);
			lm_record rec;
			lm_stream_err err = {0};
			int64_t r = lm_stream_decode(&s, copy, cut, &rec, &err);
			if (r != -ENODATA)
				fail_msg("frame %zu cut at %zu: got %lld (%s)", i, cut,
					 (long long)r, err.msg);
			assert_non_null(strstr(err.msg, "truncated"));
			free(copy);
		}
	}
	lm_buf_destroy(&sm->b);
	free(sm);
	lm_stream_destroy(&s);
}

/* Every single-bit flip in a header, and in payloads, is caught. */
static void test_bit_flips(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	struct sample *sm = calloc(1, sizeof(*sm));
	build_sample(&s, sm);
	unsigned checked = 0;
	for (size_t i = 0; i < sm->nframes; i++) {
		size_t n = frame_len(sm, i);
		uint8_t *copy = malloc(n);
		/* Header bits: all of them. Payload bits: all for small frames,
		 * a sample for the page runs. */
		size_t step = n > 2000 ? 97 : 1;
		for (size_t bit = 0; bit < n * 8; bit += bit < 96 ? 1 : step) {
			memcpy(copy, sm->b.data + sm->frame_off[i], n);
			copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			lm_record rec;
			lm_stream_err err = {0};
			int64_t r = lm_stream_decode(&s, copy, n, &rec, &err);
			if (r >= 0)
				fail_msg("frame %zu (%s): flip of bit %zu accepted", i,
					 lm_stream_type_name(sm->b.data[sm->frame_off[i]]), bit);
			assert_true(err.msg[0] != 0);
			if (bit >= 64) /* checksum field or payload */
				assert_int_equal(r, -EBADMSG);
			checked++;
		}
		free(copy);
	}
	assert_true(checked > 5000);
	lm_buf_destroy(&sm->b);
	free(sm);
	lm_stream_destroy(&s);
}

static void test_frame_header_rejects(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, LM_CAP_RECORD_CSUM);
	lm_buf b;
	lm_buf_init(&b);
	uint8_t zero[64] = {0};

	/* Unknown type. */
	craft(&b, 0x0099, 0, zero, 8);
	expect_fail(&s, b.data, b.len, -EPROTO, "unknown record type 0x0099");
	/* Unknown flags on a known type. */
	lm_buf_reset(&b);
	craft(&b, LM_REC_ROUND, 0x8000, zero, 8);
	expect_fail(&s, b.data, b.len, -EPROTO, "unknown flags 0x8000");
	/* TABLE without table-stream. */
	lm_buf_reset(&b);
	craft(&b, LM_REC_TABLE, 0, zero, 8);
	expect_fail(&s, b.data, b.len, -ENOTSUP, "table-stream");
	/* Lengths out of the type's bounds, judged from the header alone. */
	uint8_t hdr[12];
	lm_frame f;
	lm_stream_err err;
	struct {
		uint16_t type;
		uint32_t len;
		int code;
	} lens[] = {
	    {LM_REC_RAM, 0xffffffffu, -EMSGSIZE},
	    {LM_REC_RAM, 16 + 256 * PG + 1, -EMSGSIZE},
	    {LM_REC_RAM, 16 + 256 * PG, 0},
	    {LM_REC_RAM, 15, -EBADMSG},
	    {LM_REC_HELLO, 65537, -EMSGSIZE},
	    {LM_REC_DEVICE, 1 + 63 + (16u << 20) + 1, -EMSGSIZE},
	    {LM_REC_END, 1, -EMSGSIZE},
	    {LM_REC_ROUND, 7, -EBADMSG},
	    {LM_REC_DIGEST, 25, -EMSGSIZE},
	    {LM_REC_RESULT, 4 + 256, -EMSGSIZE},
	    {LM_REC_ACCEPT, 15, -EBADMSG},
	};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		le16(hdr, lens[i].type);
		le16(hdr + 2, 0);
		le32(hdr + 4, lens[i].len);
		le32(hdr + 8, 0);
		assert_int_equal(lm_stream_frame_parse(&s, hdr, 12, &f, &err), lens[i].code);
		if (lens[i].code)
			assert_int_equal(err.code, lens[i].code);
	}
	assert_int_equal(lm_stream_max_payload(LM_REC_RAM), 16 + 256 * PG);
	assert_int_equal(lm_stream_max_payload(0x7777), 0);
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* Hostile RAM runs with valid checksums: each check in the spec's order. */
static void test_ram_malicious(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, LM_CAP_RECORD_CSUM); /* no zstd, no skip-balloon */
	uint8_t rh[16];
	static uint8_t data[2 * PG];

	run_header(rh, 0, 1, 3, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -EPROTO, "unknown kind 3");
	run_header(rh, 0, 1, LM_RUN_SKIPPED, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -ENOTSUP, "skip-balloon");
	run_header(rh, 0, 1, LM_RUN_DATA, 9, 0);
	expect_ram_fail(&s, rh, data, PG, -EPROTO, "unknown encoding 9");
	run_header(rh, 0, 1, LM_RUN_DATA, LM_ENC_ZSTD, 0);
	expect_ram_fail(&s, rh, data, 100, -ENOTSUP, "zstd");
	run_header(rh, 0, 1, LM_RUN_ZERO, LM_ENC_ZSTD, 0);
	expect_ram_fail(&s, rh, NULL, 0, -EBADMSG, "ZSTD encoding on a run without data");
	run_header(rh, 0, 1, LM_RUN_ZERO, 0, 1);
	expect_ram_fail(&s, rh, NULL, 0, -EBADMSG, "reserved");
	run_header(rh, 0, 0, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -EBADMSG, "zero pages");
	/* Huge counts. */
	run_header(rh, 0, 0xffffffffu, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -EMSGSIZE, "4294967295 pages");
	run_header(rh, 0, 257, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -EMSGSIZE, "at most 256");
	/* Indices past the end of the layout, in the gap, across regions, wrapping. */
	run_header(rh, 132, 1, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -ERANGE, "[132, 133) outside the layout");
	run_header(rh, 131, 2, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -ERANGE, "outside the layout");
	run_header(rh, 64, 1, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -ERANGE, "outside the layout");
	run_header(rh, 60, 50, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -ERANGE, "outside the layout");
	run_header(rh, ~0ull - 1, 4, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, NULL, 0, -ERANGE, "outside the layout");
	run_header(rh, 1ull << 40, 1, LM_RUN_DATA, 0, 0);
	expect_ram_fail(&s, rh, data, PG, -ERANGE, "outside the layout");
	/* Payload lengths inconsistent with the run. */
	run_header(rh, 0, 2, LM_RUN_DATA, 0, 0);
	expect_ram_fail(&s, rh, data, PG, -EBADMSG, "RAW pages");
	expect_ram_fail(&s, rh, data, 2 * PG - 1, -EBADMSG, "RAW pages");
	run_header(rh, 0, 1, LM_RUN_DATA, 0, 0);
	expect_ram_fail(&s, rh, data, 2 * PG, -EBADMSG, "RAW pages");
	run_header(rh, 0, 1, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&s, rh, data, 1, -EBADMSG, "data bytes on a ZERO run");
	/* No layout at all (before the handshake): every run is outside. */
	lm_stream empty;
	lm_stream_init(&empty);
	run_header(rh, 0, 1, LM_RUN_ZERO, 0, 0);
	expect_ram_fail(&empty, rh, NULL, 0, -ERANGE, "outside the layout");
	lm_stream_destroy(&empty);

	/* The layout edges themselves are fine. */
	lm_buf b;
	lm_buf_init(&b);
	for (int k = 0; k < 4; k++) {
		static const uint64_t first[] = {0, 63, 100, 131};
		lm_buf_reset(&b);
		assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_ZERO, first[k], 1), 0);
		lm_record rec;
		assert_int_equal(lm_stream_decode(&s, b.data, b.len, &rec, NULL), b.len);
	}
	/* Encoders refuse what decoders would. */
	assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_DATA, 0, 1), -EINVAL);
	assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_ZERO, 0, 0), -EINVAL);
	assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_ZERO, ~0ull, 1), -ERANGE);
	assert_int_equal(lm_stream_put_run_data(&s, &b, 0, 1, data, LM_ENC_ZSTD, NULL), -ENOTSUP);
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

static void test_other_records_malicious(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	lm_buf b;
	lm_buf_init(&b);
	uint8_t p[300];

	/* DEVICE: name length 0, 64, longer than the payload, bad bytes. */
	memset(p, 'a', sizeof(p));
	p[0] = 0;
	craft(&b, LM_REC_DEVICE, 0, p, 10);
	expect_fail(&s, b.data, b.len, -EBADMSG, "name length 0");
	lm_buf_reset(&b);
	p[0] = 64;
	craft(&b, LM_REC_DEVICE, 0, p, 100);
	expect_fail(&s, b.data, b.len, -EBADMSG, "name length 64");
	lm_buf_reset(&b);
	p[0] = 20;
	craft(&b, LM_REC_DEVICE, 0, p, 10);
	expect_fail(&s, b.data, b.len, -EBADMSG, "name of 20 bytes");
	lm_buf_reset(&b);
	p[0] = 5;
	p[3] = '/';
	craft(&b, LM_REC_DEVICE, 0, p, 10);
	expect_fail(&s, b.data, b.len, -EBADMSG, "outside");
	assert_int_equal(lm_stream_put_device(&b, "", NULL, 0), -EINVAL);
	assert_int_equal(lm_stream_put_device(&b, "a b", NULL, 0), -EINVAL);
	assert_int_equal(
	    lm_stream_put_device(
		&b, "0123456789012345678901234567890123456789012345678901234567890123", NULL, 0),
	    -EINVAL);

	/* RESULT / REFUSE: NUL in text, a status that is not an errno, REFUSE 0. */
	memset(p, 0, sizeof(p));
	le32(p, 0);
	memcpy(p + 4, "ab\0c", 4);
	lm_buf_reset(&b);
	craft(&b, LM_REC_RESULT, 0, p, 8);
	expect_fail(&s, b.data, b.len, -EBADMSG, "NUL");
	le32(p, 5000);
	lm_buf_reset(&b);
	craft(&b, LM_REC_RESULT, 0, p, 4);
	expect_fail(&s, b.data, b.len, -EBADMSG, "5000");
	le32(p, 0);
	lm_buf_reset(&b);
	craft(&b, LM_REC_REFUSE, 0, p, 4);
	expect_fail(&s, b.data, b.len, -EBADMSG, "status 0");

	/* DIGEST that does not cover the layout. */
	lm_buf_reset(&b);
	assert_int_equal(lm_stream_put_digest(&b, 1, 2, 97), 0);
	expect_fail(&s, b.data, b.len, -EBADMSG, "97 pages");

	/* ACCEPT with reserved bits. */
	memset(p, 0, 16);
	le32(p, 1);
	p[5] = 1;
	lm_buf_reset(&b);
	craft(&b, LM_REC_ACCEPT, 0, p, 16);
	expect_fail(&s, b.data, b.len, -EBADMSG, "reserved");
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* ---- zstd: bombs, size mismatches, garbage -------------------------------------------------- */

/* Offset and size of the Frame_Content_Size field of a zstd frame. */
static void zstd_fcs_field(const uint8_t *z, size_t *off, size_t *size)
{
	uint8_t fhd = z[4];
	unsigned fcs_flag = fhd >> 6, single = (fhd >> 5) & 1, did = fhd & 3;
	static const size_t did_size[] = {0, 1, 2, 4};
	static const size_t fcs_size[] = {0, 2, 4, 8};
	*off = 5 + (single ? 0 : 1) + did_size[did];
	*size = fcs_flag == 0 ? (single ? 1 : 0) : fcs_size[fcs_flag];
}

static void zstd_set_fcs(uint8_t *z, uint64_t v)
{
	size_t off, size;
	zstd_fcs_field(z, &off, &size);
	assert_true(size == 2 || size == 4 || size == 8);
	if (size == 2)
		v -= 256;
	for (size_t i = 0; i < size; i++)
		z[off + i] = (uint8_t)(v >> (8 * i));
}

/*
 * Put a RAM DATA ZSTD record with the given compressed bytes, decode it
 * and apply it into an exact guarded destination; return the apply result
 * (decode must succeed: the run header is valid).
 */
static int apply_zstd(lm_stream *s, uint32_t npages, const void *z, size_t zlen, lm_stream_err *err)
{
	uint8_t *payload = malloc(16 + zlen);
	run_header(payload, 100, npages, LM_RUN_DATA, LM_ENC_ZSTD, 0);
	memcpy(payload + 16, z, zlen);
	lm_buf b;
	lm_buf_init(&b);
	craft(&b, LM_REC_RAM, 0, payload, (uint32_t)(16 + zlen));
	lm_record rec;
	int64_t r = lm_stream_decode(s, b.data, b.len, &rec, err);
	if (r < 0) {
		free(payload);
		lm_buf_destroy(&b);
		return (int)r;
	}
	struct guarded g;
	guarded_alloc(&g, (size_t)npages * PG);
	int rc = lm_stream_run_apply(s, &rec.u.run, rec.u.run.data, rec.u.run.data_len, g.mem,
				     g.len, err);
	guarded_free(&g);
	lm_buf_destroy(&b);
	free(payload);
	return rc;
}

static void test_zstd_hostile(void **state)
{
	(void)state;
	lm_stream s;
	static const lm_stream_region zr[] = {{100, 256}};
	lm_stream_init(&s);
	assert_int_equal(lm_stream_layout_init(&s.layout, zr, 1, NULL), 0);
	s.caps = ALL_CAPS;
	lm_stream_err err;
	size_t cap = ZSTD_compressBound(64u << 20);
	uint8_t *z = malloc(cap);
	uint8_t *src = calloc(1, 64u << 20);

	/* A bomb: 64 MiB of zeros, content size not declared, as a 1-page run. */
	ZSTD_CCtx *c = ZSTD_createCCtx();
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0)));
	size_t zl = ZSTD_compress2(c, z, cap, src, 64u << 20);
	assert_false(ZSTD_isError(zl));
	assert_true(zl < PG);
	assert_int_equal(apply_zstd(&s, 1, z, zl, &err), -EILSEQ);
	assert_non_null(strstr(err.msg, "announces -1 bytes"));

	/* Declared size of 2 pages in a 1-page run. */
	fill_text(src, 2 * PG, 5);
	zl = ZSTD_compress(z, cap, src, 2 * PG, 1);
	assert_int_equal(apply_zstd(&s, 1, z, zl, &err), -EILSEQ);
	assert_non_null(strstr(err.msg, "announces 8192 bytes, run needs 4096"));
	/* ...and a 1-page frame in a 2-page run. */
	zl = ZSTD_compress(z, cap, src, PG, 1);
	assert_int_equal(apply_zstd(&s, 2, z, zl, &err), -EILSEQ);

	/* A frame that lies: declares 1 page, decodes to 2. The output bound
	 * (an exact destination between guard pages) must stop it. */
	zl = ZSTD_compress(z, cap, src, 2 * PG, 1);
	zstd_set_fcs(z, PG);
	assert_int_equal(apply_zstd(&s, 1, z, zl, &err), -EILSEQ);

	/* A frame that declares 2 pages but holds only 1 page of blocks. */
	{
		uint8_t z2[2 * PG];
		size_t l2 = ZSTD_compress(z2, sizeof(z2), src, PG, 1);
		zstd_set_fcs(z2, 2 * PG);
		assert_int_equal(apply_zstd(&s, 2, z2, l2, &err), -EILSEQ);
	}

	/* A 64 MiB bomb that declares its size honestly. */
	memset(src, 0, 64u << 20);
	zl = ZSTD_compress(z, cap, src, 64u << 20, 1);
	assert_true(zl < 256 * PG);
	assert_int_equal(apply_zstd(&s, 256, z, zl, &err), -EILSEQ);

	/* Trailing bytes after a valid frame; a skippable frame; garbage. */
	fill_text(src, PG, 9);
	zl = ZSTD_compress(z, cap, src, PG, 1);
	assert_int_equal(apply_zstd(&s, 1, z, zl, &err), 0);
	z[zl] = 0;
	assert_int_equal(apply_zstd(&s, 1, z, zl + 1, &err), -EILSEQ);
	assert_non_null(strstr(err.msg, "zstd frame is"));
	{
		uint8_t skip[16] = {0x50, 0x2a, 0x4d, 0x18, 8, 0, 0, 0};
		assert_int_equal(apply_zstd(&s, 1, skip, sizeof(skip), &err), -EILSEQ);
	}
	fill_random(z, 300);
	assert_int_equal(apply_zstd(&s, 1, z, 300, &err), -EILSEQ);
	/* Corrupted block content with a good header. */
	zl = ZSTD_compress(z, cap, src, PG, 1);
	for (size_t i = 8; i < zl; i += 3)
		z[i] ^= 0x5a;
	assert_int_equal(apply_zstd(&s, 1, z, zl, &err), -EILSEQ);

	/* A ZSTD payload bigger than the raw pages is refused before decompression. */
	assert_int_equal(apply_zstd(&s, 1, z, PG + 1, &err), -EBADMSG);

	ZSTD_freeCCtx(c);
	free(src);
	free(z);
	lm_stream_destroy(&s);
}

/* Apply refuses a destination of the wrong size instead of trusting the run. */
static void test_apply_checks_destination(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	uint8_t pages[2 * PG];
	fill_random(pages, sizeof(pages));
	lm_buf b;
	lm_buf_init(&b);
	assert_int_equal(lm_stream_put_run_data(&s, &b, 0, 2, pages, LM_ENC_RAW, NULL), 0);
	lm_record rec;
	lm_stream_err err;
	assert_int_equal(lm_stream_decode(&s, b.data, b.len, &rec, &err), b.len);
	struct guarded g;
	guarded_alloc(&g, PG);
	assert_int_equal(lm_stream_run_apply(&s, &rec.u.run, rec.u.run.data, rec.u.run.data_len,
					     g.mem, PG, &err),
			 -EINVAL);
	assert_int_equal(
	    lm_stream_run_apply(&s, &rec.u.run, rec.u.run.data, PG, g.mem, 2 * PG, &err), -EINVAL);
	guarded_free(&g);
	lm_run zero = {.first_page = 0, .npages = 1, .kind = LM_RUN_ZERO};
	assert_int_equal(lm_stream_run_apply(&s, &zero, NULL, 0, pages, PG, &err), -EINVAL);
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* ---- random mutations of a valid stream -------------------------------------------------------
 */

/*
 * A small built-in fuzz pass (the real one is fuzz/fuzz_stream.c):
 * mutated streams are decoded frame by frame and DATA runs applied into
 * guarded destination memory; nothing may crash or write outside it.
 */
static void test_random_mutations(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	struct sample *sm = calloc(1, sizeof(*sm));
	build_sample(&s, sm);
	struct guarded g0, g1;
	guarded_alloc(&g0, 64 * PG);
	guarded_alloc(&g1, 32 * PG);
	uint8_t *copy = malloc(sm->b.len);
	unsigned accepted = 0;
	for (int iter = 0; iter < 3000; iter++) {
		memcpy(copy, sm->b.data, sm->b.len);
		int nmut = 1 + (int)(rnd() % 4);
		for (int m = 0; m < nmut; m++) {
			size_t at = rnd() % sm->b.len;
			/* Frame headers are the interesting part: aim there often. */
			if (rnd() % 2)
				at = sm->frame_off[rnd() % sm->nframes] + rnd() % 28;
			if (at < sm->b.len)
				copy[at] = (uint8_t)rnd();
		}
		size_t off = 0;
		while (off < sm->b.len) {
			lm_record rec;
			lm_stream_err err;
			int64_t r = lm_stream_decode(&s, copy + off, sm->b.len - off, &rec, &err);
			if (r < 0)
				break;
			accepted++;
			if (rec.frame.type == LM_REC_RAM && rec.u.run.kind == LM_RUN_DATA) {
				struct guarded *g = rec.u.run.region ? &g1 : &g0;
				lm_stream_run_apply(&s, &rec.u.run, rec.u.run.data,
						    rec.u.run.data_len,
						    g->mem + rec.u.run.region_off * PG,
						    (size_t)rec.u.run.npages * PG, &err);
			}
			off += (size_t)r;
		}
	}
	assert_true(accepted > 0);
	free(copy);
	guarded_free(&g0);
	guarded_free(&g1);
	lm_buf_destroy(&sm->b);
	free(sm);
	lm_stream_destroy(&s);
}

/* ---- names
 * --------------------------------------------------------------------------------------- */

/* PREPARE and READY: empty frames, only where the capability was negotiated. */
static void test_prepare_ready(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS | LM_CAP_PREPARE);
	lm_buf b;
	lm_buf_init(&b);
	assert_int_equal(lm_stream_put_prepare(&b), 0);
	size_t one = b.len;
	assert_int_equal(one, LM_FRAME_HDR);
	assert_int_equal(lm_stream_put_ready(&b), 0);
	lm_record rec;
	lm_stream_err err = {0};
	assert_int_equal(lm_stream_decode(&s, b.data, b.len, &rec, &err), (int64_t)one);
	assert_int_equal(rec.frame.type, LM_REC_PREPARE);
	assert_int_equal(lm_stream_decode(&s, b.data + one, b.len - one, &rec, &err), (int64_t)one);
	assert_int_equal(rec.frame.type, LM_REC_READY);
	assert_string_equal(lm_stream_type_name(LM_REC_PREPARE), "PREPARE");
	assert_string_equal(lm_stream_type_name(LM_REC_READY), "READY");
	/* Without the capability both are refused, by name. */
	s.caps = ALL_CAPS;
	expect_fail(&s, b.data, one, -ENOTSUP, "PREPARE record but prepare was not negotiated");
	expect_fail(&s, b.data + one, one, -ENOTSUP, "READY record but prepare was not negotiated");
	/* A payload is not allowed: the frame bound says 0 bytes. */
	uint8_t bad[LM_FRAME_HDR + 1];
	memcpy(bad, b.data, LM_FRAME_HDR);
	bad[4] = 1;
	bad[LM_FRAME_HDR] = 0;
	fix_csum(bad);
	s.caps = ALL_CAPS | LM_CAP_PREPARE;
	expect_fail(&s, bad, sizeof(bad), -EMSGSIZE, "PREPARE");
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

/* Post-copy's records (docs/stream.md 3.14): round trips, and every field
 * checked against the layout and its bounds. */
/* Channels (docs/stream.md 3.16): CHANNELS, CHANNEL, SYNC round trip, and
 * every bad field refused by name. */
static void test_channel_records(void **state)
{
	(void)state;
	lm_stream s, plain;
	setup_stream(&s, ALL_CAPS | LM_CAP_MULTIFD);
	setup_stream(&plain, ALL_CAPS);
	lm_buf b;
	lm_buf_init(&b);
	lm_record rec;
	lm_stream_err err = {0};
	assert_int_equal(lm_stream_put_channels(&b, 4, 512, 0xc0ffee), 0);
	size_t a = b.len;
	assert_int_equal(lm_stream_put_channel(&b, 3, 0xc0ffee), 0);
	size_t c = b.len;
	assert_int_equal(lm_stream_put_sync(&b, 9, LM_SYNC_LAST), 0);
	assert_int_equal(lm_stream_decode(&s, b.data, a, &rec, &err), (int64_t)a);
	assert_int_equal(rec.u.channels.nchannels, 4);
	assert_int_equal(rec.u.channels.stripe_pages, 512);
	assert_int_equal(rec.u.channels.session, 0xc0ffee);
	assert_int_equal(lm_stream_decode(&s, b.data + a, c - a, &rec, &err), (int64_t)(c - a));
	assert_int_equal(rec.u.channel.index, 3);
	assert_int_equal(rec.u.channel.session, 0xc0ffee);
	assert_int_equal(lm_stream_decode(&s, b.data + c, b.len - c, &rec, &err), (int64_t)(b.len - c));
	assert_int_equal(rec.u.sync.seq, 9);
	assert_int_equal(rec.u.sync.flags, LM_SYNC_LAST);
	assert_string_equal(lm_stream_type_name(LM_REC_SYNC), "SYNC");
	/* Without the capability every one of them is refused. */
	assert_int_equal(lm_stream_decode(&plain, b.data, a, &rec, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "multifd was not negotiated"));
	/* The encoders refuse what the decoder would. */
	assert_int_equal(lm_stream_put_channels(&b, 0, 512, 1), -EINVAL);
	assert_int_equal(lm_stream_put_channels(&b, LM_STREAM_MAX_CHANNELS + 1, 512, 1), -EINVAL);
	assert_int_equal(lm_stream_put_channels(&b, 2, 500, 1), -EINVAL);
	assert_int_equal(lm_stream_put_channels(&b, 2, 32, 1), -EINVAL);
	assert_int_equal(lm_stream_put_channels(&b, 2, 512, 0), -EINVAL);
	assert_int_equal(lm_stream_put_channel(&b, LM_STREAM_MAX_CHANNELS, 1), -EINVAL);
	assert_int_equal(lm_stream_put_sync(&b, 0, 0), -EINVAL);
	assert_int_equal(lm_stream_put_sync(&b, 1, 2), -EINVAL);
	/* Hostile payloads: patch a valid record and fix its checksum. */
	struct {
		uint16_t type;
		size_t off;
		uint32_t val;
		int code;
		const char *msg;
	} bad[] = {
	    {LM_REC_CHANNELS, 0, 17, -EMSGSIZE, "17 channels"},
	    {LM_REC_CHANNELS, 4, 768, -EBADMSG, "stripe of 768 pages"},
	    {LM_REC_CHANNELS, 4, 1u << 20, -EBADMSG, "stripe"},
	    {LM_REC_CHANNELS, 8, 0, -EBADMSG, "session 0"},
	    {LM_REC_CHANNEL, 0, 0, -EPROTO, "bad magic"},
	    {LM_REC_CHANNEL, 8, 2, -EPROTONOSUPPORT, "version 2"},
	    {LM_REC_CHANNEL, 12, 16, -EMSGSIZE, "index 16"},
	    {LM_REC_SYNC, 0, 0, -EBADMSG, "seq 0"},
	    {LM_REC_SYNC, 8, 4, -EPROTO, "unknown flags"},
	    {LM_REC_SYNC, 12, 1, -EBADMSG, "reserved"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t pl[24];
		size_t len = bad[i].type == LM_REC_CHANNEL ? 24 : 16;
		lm_buf_reset(&b);
		if (bad[i].type == LM_REC_CHANNELS)
			assert_int_equal(lm_stream_put_channels(&b, 4, 512, 7), 0);
		else if (bad[i].type == LM_REC_CHANNEL)
			assert_int_equal(lm_stream_put_channel(&b, 1, 7), 0);
		else
			assert_int_equal(lm_stream_put_sync(&b, 1, 0), 0);
		memcpy(pl, b.data + LM_FRAME_HDR, len);
		if (bad[i].off == 8 && bad[i].type == LM_REC_CHANNELS)
			memset(pl + 8, 0, 8);
		else
			memcpy(pl + bad[i].off, &bad[i].val, 4);
		lm_frame f = {.type = bad[i].type, .payload_len = (uint32_t)len,
			      .checksum = spec_csum(bad[i].type, 0, (uint32_t)len, pl)};
		int got = lm_stream_decode_payload(&s, &f, pl, len, &rec, &err);
		if (got != bad[i].code)
			fail_msg("row %zu: %d (%s), not %d", i, got, err.msg, bad[i].code);
		if (!strstr(err.msg, bad[i].msg))
			fail_msg("row %zu: \"%s\" does not say \"%s\"", i, err.msg, bad[i].msg);
	}
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
	lm_stream_destroy(&plain);
}

static void test_postcopy_records(void **state)
{
	(void)state;
	lm_stream s;
	setup_stream(&s, ALL_CAPS | LM_CAP_POSTCOPY);
	lm_buf b;
	lm_buf_init(&b);
	uint64_t r0 = regions[0].first_page, r1 = regions[1].first_page;
	lm_stream_region runs[3] = { { r0, 1 }, { r0 + 10, 5 }, { r1, regions[1].npages } };
	assert_int_equal(lm_stream_put_pending(&b, runs, 3), 0);
	size_t a = b.len;
	assert_int_equal(a, LM_FRAME_HDR + 48);
	assert_int_equal(lm_stream_put_postcopy(&b, 7, 0x5e55), 0);
	size_t c = b.len;
	assert_int_equal(lm_stream_put_page_req(&b, r1 + 3, 2), 0);
	lm_record rec;
	lm_stream_err err = {0};
	assert_int_equal(lm_stream_decode(&s, b.data, a, &rec, &err), (int64_t)a);
	assert_int_equal(rec.frame.type, LM_REC_PENDING);
	assert_int_equal(rec.u.pending.nruns, 3);
	for (uint32_t i = 0; i < 3; i++) {
		lm_stream_region g = lm_stream_pending_run(&rec, i);
		assert_int_equal(g.first_page, runs[i].first_page);
		assert_int_equal(g.npages, runs[i].npages);
	}
	assert_int_equal(lm_stream_decode(&s, b.data + a, c - a, &rec, &err), (int64_t)(c - a));
	assert_int_equal(rec.frame.type, LM_REC_POSTCOPY);
	assert_int_equal(rec.u.postcopy.npending, 7);
	assert_int_equal(rec.u.postcopy.session, 0x5e55);
	assert_int_equal(lm_stream_decode(&s, b.data + c, b.len - c, &rec, &err), (int64_t)(b.len - c));
	assert_int_equal(rec.frame.type, LM_REC_PAGE_REQ);
	assert_int_equal(rec.u.page_req.first_page, r1 + 3);
	assert_int_equal(rec.u.page_req.npages, 2);
	assert_string_equal(lm_stream_type_name(LM_REC_PAGE_REQ), "PAGE_REQ");

	/* Recovery's records. */
	lm_buf_reset(&b);
	assert_int_equal(lm_stream_put_resume(&b, 0x5e55), 0);
	size_t k1 = b.len;
	assert_int_equal(lm_stream_put_missing(&b, runs, 2), 0);
	size_t k2 = b.len;
	assert_int_equal(lm_stream_put_resumed(&b, 0x5e55, 6), 0);
	assert_int_equal(lm_stream_decode(&s, b.data, k1, &rec, &err), (int64_t)k1);
	assert_int_equal(rec.frame.type, LM_REC_RESUME);
	assert_int_equal(rec.u.session, 0x5e55);
	assert_int_equal(lm_stream_decode(&s, b.data + k1, k2 - k1, &rec, &err), (int64_t)(k2 - k1));
	assert_int_equal(rec.frame.type, LM_REC_MISSING);
	assert_int_equal(rec.u.pending.nruns, 2);
	assert_int_equal(lm_stream_pending_run(&rec, 1).first_page, runs[1].first_page);
	assert_int_equal(lm_stream_decode(&s, b.data + k2, b.len - k2, &rec, &err), (int64_t)(b.len - k2));
	assert_int_equal(rec.frame.type, LM_REC_RESUMED);
	assert_int_equal(rec.u.resumed.session, 0x5e55);
	assert_int_equal(rec.u.resumed.nmissing, 6);
	assert_int_equal(lm_stream_put_postcopy(&b, 1, 0), -EINVAL);

	/* Encoders refuse what the format cannot carry. */
	lm_buf_reset(&b);
	assert_int_equal(lm_stream_put_pending(&b, runs, 0), -EINVAL);
	assert_int_equal(lm_stream_put_page_req(&b, r0, 0), -EINVAL);
	assert_int_equal(lm_stream_put_page_req(&b, r0, LM_STREAM_MAX_RUN_PAGES + 1), -EINVAL);

	/* Without the capability: refused by name. */
	assert_int_equal(lm_stream_put_pending(&b, runs, 1), 0);
	s.caps = ALL_CAPS;
	expect_fail(&s, b.data, b.len, -ENOTSUP, "PENDING record but postcopy-ram was not negotiated");
	s.caps = ALL_CAPS | LM_CAP_POSTCOPY;

	/* Hostile contents with right checksums. */
	uint8_t p[LM_FRAME_HDR + 32];
	struct {
		uint16_t type;
		uint32_t len;
		uint64_t a, b2; /* PENDING: first, n; PAGE_REQ: first, n | reserved << 32 */
		int code;
		const char *needle;
	} bad[] = {
		{ LM_REC_PENDING, 16, r0, 0, -EBADMSG, "run 0 is empty" },
		{ LM_REC_PENDING, 16, r0 + regions[0].npages - 1, 2, -ERANGE, "outside the layout" },
		{ LM_REC_PENDING, 16, r1, UINT64_MAX, -ERANGE, "outside the layout" },
		{ LM_REC_PENDING, 16, UINT64_MAX, 1, -ERANGE, "outside the layout" },
		{ LM_REC_PENDING, 24, r0, 1, -EBADMSG, "not a whole number of runs" },
		{ LM_REC_PAGE_REQ, 16, r0, 0, -EBADMSG, "0 pages" },
		{ LM_REC_PAGE_REQ, 16, r0, 1ull << 32 | 1, -EBADMSG, "reserved field" },
		{ LM_REC_PAGE_REQ, 16, r0, 257, -EBADMSG, "257 pages" },
		{ LM_REC_PAGE_REQ, 16, r1 + regions[1].npages, 1, -ERANGE, "outside the layout" },
		{ LM_REC_POSTCOPY, 16, UINT64_MAX, 1, -EBADMSG, "pending pages, the layout has" },
		{ LM_REC_POSTCOPY, 16, 1, 0, -EBADMSG, "session 0" },
		{ LM_REC_MISSING, 16, r1, 0, -EBADMSG, "MISSING record: run 0 is empty" },
		{ LM_REC_RESUMED, 16, 1, UINT64_MAX, -EBADMSG, "missing pages, the layout has" },
		{ LM_REC_RESUME, 24, 0x1234, 0, -EPROTO, "RESUME: bad magic" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(p, 0, sizeof(p));
		le16(p, bad[i].type);
		le32(p + 4, bad[i].len);
		le64(p + 12, bad[i].a);
		if (bad[i].len >= 16)
			le64(p + 20, bad[i].b2);
		fix_csum(p);
		expect_fail(&s, p, LM_FRAME_HDR + bad[i].len, bad[i].code, bad[i].needle);
	}
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

static void test_cap_names(void **state)
{
	(void)state;
	uint64_t m;
	assert_int_equal(lm_stream_caps_parse("zstd,skip-balloon", &m), 0);
	assert_int_equal(m, LM_CAP_ZSTD | LM_CAP_SKIP_BALLOON);
	assert_int_equal(lm_stream_caps_parse("", &m), 0);
	assert_int_equal(m, 0);
	assert_int_equal(lm_stream_caps_parse("zstd,bogus", &m), -EINVAL);
	assert_int_equal(lm_stream_caps_parse("zstd,", &m), -EINVAL);
	char out[256];
	lm_stream_caps_format(LM_CAP_KNOWN | (1ull << 63), out, sizeof(out));
	assert_string_equal(out, "record-csum,zstd,skip-balloon,table-stream,prepare,commit-ack,no-digest,postcopy-ram,"
				 "multifd,catch-up,page-hash-csum,0x8000000000000000");
	assert_int_equal(lm_stream_caps_parse("postcopy-ram", &m), 0);
	assert_int_equal(m, LM_CAP_POSTCOPY);
	lm_stream_caps_format(0, out, sizeof(out));
	assert_string_equal(out, "none");
	assert_string_equal(lm_stream_type_name(LM_REC_DIGEST), "DIGEST");
	assert_string_equal(lm_stream_type_name(LM_REC_COMMITTED), "COMMITTED");
	assert_int_equal(lm_stream_caps_parse("commit-ack", &m), 0);
	assert_int_equal(m, LM_CAP_COMMIT_ACK);
	assert_int_equal(lm_stream_caps_parse("catch-up", &m), 0);
	assert_int_equal(m, LM_CAP_CATCH_UP);
	assert_null(lm_stream_cap_name(1ull << 20));
}

/* ---- seeds for the fuzzer
 * ------------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
}

/* The file holds exactly p[0..n); then it is removed. */
static void check_and_remove_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[512];
	uint8_t got[1025];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	size_t len = fread(got, 1, sizeof(got), f);
	fclose(f);
	assert_int_equal(len, n);
	assert_memory_equal(got, p, n);
	assert_int_equal(unlink(path), 0);
}

/*
 * Seed format (fuzz/fuzz_stream.c): byte 0 selects the receiver's allowed
 * capabilities, then a sender's stream starting with HELLO. With
 * LM_WRITE_SEEDS=dir the seeds are written there for the fuzzer's corpus;
 * without it they go to a temporary directory, are read back and removed,
 * so that the seed writer is tested on every run instead of skipping.
 */
static void test_write_seeds(void **state)
{
	(void)state;
	char tmp[] = "/tmp/lm-seeds-XXXXXX";
	const char *dir = getenv("LM_WRITE_SEEDS");
	int keep = dir != NULL;
	if (!keep) {
		dir = mkdtemp(tmp);
		assert_non_null(dir);
	}
	lm_stream s;
	setup_stream(&s, ALL_CAPS);
	lm_buf b;
	lm_buf_init(&b);
	uint8_t pages[2 * PG];
	lm_stream_hello h = make_hello(ALL_CAPS, LM_CAP_RECORD_CSUM);
	for (int k = 0; k < 5; k++) {
		lm_buf_reset(&b);
		/* Selector byte (see fuzz/fuzz_stream.c): seed 4 uses the fixed
		 * layout without a handshake; seeds 1 and 4 ask for checksums to be
		 * recomputed so that mutations reach the field checks. */
		uint8_t sel = (uint8_t)(k == 3 ? 0x01 : k == 4 ? 0xcf : k == 1 ? 0x4f : 0x0f);
		assert_int_equal(lm_buf_reserve(&b, 1), 0);
		b.data[b.len++] = sel;
		if (k != 4)
			assert_int_equal(lm_stream_put_hello(&b, &h), 0);
		assert_int_equal(lm_stream_put_round(&b, 1), 0);
		switch (k) {
		case 0:
			assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_ZERO, 0, 64), 0);
			assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_SKIPPED, 100, 32), 0);
			break;
		case 1:
			fill_text(pages, 2 * PG, 0);
			assert_int_equal(
			    lm_stream_put_run_data(&s, &b, 100, 2, pages, LM_ENC_ZSTD, NULL), 0);
			break;
		case 2:
			memset(pages, 0x41, 64);
			memset(pages + 64, 0, PG - 64);
			assert_int_equal(
			    lm_stream_put_run_data(&s, &b, 63, 1, pages, LM_ENC_ZSTD, NULL), 0);
			assert_int_equal(lm_stream_put_device(&b, "cpu0", "regs", 4), 0);
			break;
		case 3:
			assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_ZERO, 120, 12), 0);
			break;
		case 4:
			fill_text(pages, 2 * PG, 1);
			assert_int_equal(
			    lm_stream_put_run_data(&s, &b, 14, 2, pages, LM_ENC_ZSTD, NULL), 0);
			assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_ZERO, 100, 8), 0);
			assert_int_equal(lm_stream_put_run_empty(&b, LM_RUN_SKIPPED, 0, 3), 0);
			assert_int_equal(lm_stream_put_table(&b, "0123456789abcdef01234567", 24),
					 0);
			break;
		}
		assert_int_equal(lm_stream_put_digest(&b, 0, 0, k == 4 ? 24 : 96), 0);
		assert_int_equal(lm_stream_put_end(&b), 0);
		assert_true(b.len < 1024);
		char name[32];
		snprintf(name, sizeof(name), "seed%d", k);
		write_file(dir, name, b.data, b.len);
		if (!keep)
			check_and_remove_file(dir, name, b.data, b.len);
	}
	if (!keep)
		assert_int_equal(rmdir(dir), 0);
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_all_records),
	    cmocka_unit_test(test_prepare_ready),
	    cmocka_unit_test(test_status_text),
	    cmocka_unit_test(test_max_run),
	    cmocka_unit_test(test_fixed_buffer),
	    cmocka_unit_test(test_raw_csum_rules),
	    cmocka_unit_test(test_incremental_zero_copy),
	    cmocka_unit_test(test_negotiation),
	    cmocka_unit_test(test_hello_version_and_magic),
	    cmocka_unit_test(test_hello_malicious),
	    cmocka_unit_test(test_truncated_everywhere),
	    cmocka_unit_test(test_bit_flips),
	    cmocka_unit_test(test_frame_header_rejects),
	    cmocka_unit_test(test_ram_malicious),
	    cmocka_unit_test(test_other_records_malicious),
	    cmocka_unit_test(test_zstd_hostile),
	    cmocka_unit_test(test_apply_checks_destination),
	    cmocka_unit_test(test_random_mutations),
	    cmocka_unit_test(test_cap_names),
	    cmocka_unit_test(test_postcopy_records),
	    cmocka_unit_test(test_channel_records),
	    cmocka_unit_test(test_write_seeds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
