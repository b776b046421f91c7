/*
 * livemig bench stream: the per-page costs of the wire format, on memory
 * of three kinds (all zero, compressible text, random): the digest update,
 * RAW and ZSTD encoding of 256-page runs, and decoding plus applying them
 * into destination memory (the decode column includes the receiver's
 * digest of what it wrote). These set the ceiling of what the engine can
 * push through one core, before any socket is involved.
 *
 *   livemig bench stream [--mib N] [--level L]   (default 64 MiB, zstd level 1)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli/cli.h"
#include "livemig/stream.h"

#define RUN LM_STREAM_MAX_RUN_PAGES

static uint64_t rng = 0x6a09e667f3bcc909ull;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1Dull;
}

static void fill(uint8_t *m, size_t len, int kind)
{
	static const char words[] = "the quick brown fox jumps over the lazy dog 0123456789 ";
	if (kind == 0) {
		memset(m, 0, len);
	} else if (kind == 1) {
		for (size_t i = 0; i < len; i++)
			m[i] = (uint8_t)words[(i + (i >> 12) * 7) % (sizeof(words) - 1)];
		for (size_t i = 0; i < len; i += 512)
			m[i] = (uint8_t)rnd(); /* not a single repeated pattern */
	} else {
		for (size_t i = 0; i < len; i += 8) {
			uint64_t v = rnd();
			memcpy(m + i, &v, 8);
		}
	}
}

struct row {
	double digest_s, enc_s, dec_s;
	size_t wire;
	bool ok;
};

/* Encode all of src as runs with enc, decode and apply into dst, digest on both sides. */
static int one(uint8_t *src, uint8_t *dst, uint64_t npages, uint8_t enc, int level, struct row *r)
{
	lm_stream s;
	lm_stream_err e;
	lm_stream_region reg = {0, npages};
	lm_buf b;
	lm_digest ds, dd;
	int err;
	lm_stream_init(&s);
	lm_buf_init(&b);
	s.zstd_level = level;
	s.caps = LM_CAP_RECORD_CSUM | LM_CAP_ZSTD;
	memset(r, 0, sizeof(*r));
	err = lm_stream_layout_init(&s.layout, &reg, 1, &e);
	if (err)
		goto out;
	err = lm_digest_init(&ds, npages);
	if (err)
		goto out;
	err = lm_digest_init(&dd, npages);
	if (err)
		goto out_ds;
	err = lm_buf_reserve(&b, (size_t)npages * LM_PAGE_SIZE + npages * 64);
	if (err)
		goto out_dd;
	/* A sender reuses its buffer: fault it in now, not inside the timing. */
	memset(b.data, 0, b.cap);

	double t0 = bench_now();
	lm_digest_pages(&ds, 0, npages, src);
	r->digest_s = bench_now() - t0;

	t0 = bench_now();
	for (uint64_t p = 0; p < npages; p += RUN) {
		uint32_t n = (uint32_t)(npages - p < RUN ? npages - p : RUN);
		err = lm_stream_put_run_data(&s, &b, p, n, src + p * LM_PAGE_SIZE, enc, NULL);
		if (err)
			goto out_dd;
	}
	r->enc_s = bench_now() - t0;
	r->wire = b.len;

	t0 = bench_now();
	size_t off = 0;
	while (off < b.len) {
		lm_record rec;
		int64_t n = lm_stream_decode(&s, b.data + off, b.len - off, &rec, &e);
		if (n < 0) {
			err = (int)n;
			goto out_dd;
		}
		const lm_run *run = &rec.u.run;
		uint8_t *d = dst + run->first_page * LM_PAGE_SIZE;
		err = lm_stream_run_apply(&s, run, run->data, run->data_len, d,
					  (size_t)run->npages * LM_PAGE_SIZE, &e);
		if (err)
			goto out_dd;
		lm_digest_pages(&dd, run->first_page, run->npages, d);
		off += (size_t)n;
	}
	r->dec_s = bench_now() - t0;
	r->ok = lm_hash128_eq(lm_digest_value(&ds), lm_digest_value(&dd)) &&
		!memcmp(src, dst, (size_t)npages * LM_PAGE_SIZE);
out_dd:
	lm_digest_destroy(&dd);
out_ds:
	lm_digest_destroy(&ds);
out:
	lm_buf_destroy(&b);
	lm_stream_destroy(&s);
	return err;
}

int lm_bench_stream(int argc, char **argv)
{
	uint64_t mib = 64;
	int level = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc) {
			uint64_t v;
			if (lm_cli_parse_size(argv[++i], &v) || v == 0 || v > (1u << 16)) {
				fprintf(stderr, "bench stream: bad --mib\n");
				return 2;
			}
			mib = v;
		} else if (!strcmp(argv[i], "--level") && i + 1 < argc) {
			level = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: livemig bench stream [--mib N] [--level L]\n");
			return strcmp(argv[i], "--help") ? 2 : 0;
		}
	}
	uint64_t npages = mib << 8;
	size_t len = (size_t)npages * LM_PAGE_SIZE;
	uint8_t *src = malloc(len), *dst = malloc(len);
	if (!src || !dst) {
		free(src);
		free(dst);
		fprintf(stderr, "bench stream: %s\n", lm_strerror(-ENOMEM));
		return 1;
	}
	static const char *kinds[] = {"zero", "text", "random"};
	printf("stream: %llu MiB per case, runs of %u pages, zstd level %d; GB/s of guest memory\n",
	       (unsigned long long)mib, RUN, level);
	printf("%-7s %-5s %9s %9s %9s %10s %s\n", "memory", "enc", "digest", "encode", "decode",
	       "wire/mem", "check");
	int rc = 0;
	for (int k = 0; k < 3; k++) {
		fill(src, len, k);
		for (uint8_t enc = LM_ENC_RAW; enc <= LM_ENC_ZSTD; enc++) {
			struct row r;
			memset(dst, 0xa5, len);
			int err = one(src, dst, npages, enc, level, &r);
			if (err) {
				fprintf(stderr, "bench stream: %s\n", lm_strerror(err));
				rc = 1;
				continue;
			}
			printf("%-7s %-5s %9.2f %9.2f %9.2f %10.4f %s\n", kinds[k],
			       enc ? "zstd" : "raw", len / r.digest_s / 1e9, len / r.enc_s / 1e9,
			       len / r.dec_s / 1e9, (double)r.wire / len, r.ok ? "ok" : "MISMATCH");
			if (!r.ok)
				rc = 1;
		}
	}
	free(src);
	free(dst);
	return rc;
}
