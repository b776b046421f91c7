/*
 * livemig bench table: the incremental table stream on a table of 16-byte
 * entries (default 1M, the size of a hashed page table), compared with the
 * simple alternative of sending a 4-byte index with every changed entry
 * (20 bytes per entry, invalid ones included).
 *
 * Cases: the first pass over a half-full and a full table, then incremental
 * passes after 0.1%, 1% and 10% of the entries changed at scattered places
 * (three in four get a new value, one in four become invalid), 1% with new
 * values only, and 1% changed in runs of 8 adjacent entries (a hashed page
 * table's group).
 * Every pass is read in 64 KiB buffers, applied to a destination table, and
 * the two tables are compared afterwards.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli/cli.h"
#include "livemig/bitmap.h"
#include "livemig/table.h"

#define ES LM_TABLE_ENTRY_SIZE
#define CHUNK (64u << 10)

static uint64_t rng = 0x853c49e6748fea9bull;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1Dull;
}

static void set_valid(unsigned char *e)
{
	uint64_t a = rnd() | 1, b = rnd();
	memcpy(e, &a, 8);
	memcpy(e + 8, &b, 8);
}

struct bench {
	uint64_t n;
	unsigned char *s, *d, *alt_d; /* source, destination, alternative's destination */
	unsigned char *buf;
	lm_table_src *src;
	lm_table_dst *dst;
	lm_bitmap alt_changed; /* the alternative's own changed bits */
};

struct result {
	uint64_t changed;
	uint64_t records;
	uint64_t bytes;
	double read_s, write_s;
	uint64_t alt_bytes;
	double alt_read_s, alt_write_s;
	bool ok;
};

static void mark(struct bench *b, uint64_t i)
{
	lm_table_src_mark(b->src, i);
	lm_bitmap_set(&b->alt_changed, i);
}

static uint64_t count_records(const unsigned char *p, size_t len)
{
	uint64_t recs = 0;
	for (size_t off = 0; off < len; recs++) {
		unsigned nv = (unsigned)(p[off + 4] | p[off + 5] << 8);
		off += LM_TABLE_RECORD_HDR + (size_t)nv * ES;
	}
	return recs;
}

/*
 * The alternative encoding: for each changed entry, u32 index + 16 bytes.
 * Read and applied in the same 64 KiB chunks, so the times compare.
 */
static void alt_pass(struct bench *b, struct result *r)
{
	uint64_t i = 0;
	double rt = 0, wt = 0;
	for (;;) {
		double t0 = bench_now();
		size_t used = 0;
		while (used + 4 + ES <= CHUNK && (i = lm_bitmap_find_next_set(&b->alt_changed, i)) < b->n) {
			uint32_t idx = (uint32_t)i;
			memcpy(b->buf + used, &idx, 4);
			memcpy(b->buf + used + 4, b->s + i * ES, ES);
			lm_bitmap_clear(&b->alt_changed, i);
			used += 4 + ES;
			i++;
		}
		double t1 = bench_now();
		for (size_t off = 0; off < used; off += 4 + ES) {
			uint32_t idx;
			memcpy(&idx, b->buf + off, 4);
			if (idx < b->n)
				memcpy(b->alt_d + (uint64_t)idx * ES, b->buf + off + 4, ES);
		}
		double t2 = bench_now();
		rt += t1 - t0;
		wt += t2 - t1;
		r->alt_bytes += used;
		if (used == 0)
			break;
	}
	r->alt_read_s = rt;
	r->alt_write_s = wt;
}

static int stream_pass(struct bench *b, struct result *r)
{
	r->changed = lm_table_src_pending(b->src);
	for (;;) {
		double t0 = bench_now();
		int64_t got = lm_table_read(b->src, b->buf, CHUNK);
		double t1 = bench_now();
		if (got < 0)
			return (int)got;
		r->read_s += t1 - t0;
		if (got == 0)
			break;
		int64_t put = lm_table_write(b->dst, b->buf, (size_t)got);
		r->write_s += bench_now() - t1;
		if (put != got)
			return put < 0 ? (int)put : -EIO;
		r->bytes += (uint64_t)got;
		r->records += count_records(b->buf, (size_t)got);
	}
	alt_pass(b, r);
	r->ok = !memcmp(b->s, b->d, b->n * ES) && !memcmp(b->s, b->alt_d, b->n * ES);
	return 0;
}

/* Change `count` scattered entries (in runs of `run`); with `invalidate`,
 * 1 in 4 become invalid. */
static void scatter(struct bench *b, uint64_t count, uint64_t run, bool invalidate)
{
	for (uint64_t k = 0; k < count; k += run) {
		uint64_t start = rnd() % (b->n - run + 1);
		for (uint64_t i = start; i < start + run; i++) {
			if (invalidate && rnd() % 4 == 0)
				memset(b->s + i * ES, 0, ES);
			else
				set_valid(b->s + i * ES);
			mark(b, i);
		}
	}
}

static void print_row(const char *name, const struct result *r)
{
	double per = r->changed ? (double)r->bytes / (double)r->changed : 0;
	double ratio = r->alt_bytes ? (double)r->bytes / (double)r->alt_bytes : 0;
	printf("| %-26s | %9llu | %8llu | %11llu | %5.1f | %11llu | %5.2f | %7.2f | %7.2f | %7.2f | %7.2f | %s |\n",
	       name, (unsigned long long)r->changed, (unsigned long long)r->records,
	       (unsigned long long)r->bytes, per, (unsigned long long)r->alt_bytes, ratio, r->read_s * 1e3,
	       r->write_s * 1e3, r->alt_read_s * 1e3, r->alt_write_s * 1e3, r->ok ? "yes" : "NO");
}

static void usage(FILE *f)
{
	fprintf(f, "usage: livemig bench table [--entries N] [--seed S]\n"
		   "  the table stream vs an index per entry: first pass and incremental passes\n");
}

int lm_bench_table(int argc, char **argv)
{
	struct bench b = { .n = 1u << 20 };
	int rc = 1, err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--entries") && i + 1 < argc) {
			if (lm_cli_parse_size(argv[++i], &b.n) || b.n < 64 || b.n > LM_TABLE_MAX_ENTRIES) {
				fprintf(stderr, "livemig bench table: bad --entries '%s' (64 .. 2^32)\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			rng = strtoull(argv[++i], NULL, 0) | 1;
		} else {
			usage(stderr);
			return 2;
		}
	}

	b.s = calloc(b.n, ES);
	b.d = calloc(b.n, ES);
	b.alt_d = calloc(b.n, ES);
	b.buf = malloc(CHUNK);
	if (!b.s || !b.d || !b.alt_d || !b.buf) {
		fprintf(stderr, "livemig bench table: out of memory\n");
		goto out;
	}
	if ((err = lm_bitmap_init(&b.alt_changed, b.n)) != 0) {
		fprintf(stderr, "livemig bench table: %s\n", lm_strerror(err));
		goto out;
	}

	printf("table stream: %llu entries of %u bytes (%.1f MiB), reads of %u KiB\n\n",
	       (unsigned long long)b.n, ES, (double)(b.n * ES) / (1 << 20), CHUNK >> 10);
	printf("| %-26s | %9s | %8s | %11s | %5s | %11s | %5s | %7s | %7s | %7s | %7s | %s |\n", "pass",
	       "entries", "records", "wire bytes", "B/ent", "index+entry", "ratio", "read ms", "write ms",
	       "alt rd", "alt wr", "equal");
	printf("|%s|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n", "----------------------------");

	/* First passes: half-full, then full. Invalid entries cost nothing in
	 * either encoding on a first pass. */
	for (int full = 0; full < 2; full++) {
		memset(b.s, 0, b.n * ES);
		memset(b.d, 0, b.n * ES);
		memset(b.alt_d, 0, b.n * ES);
		lm_bitmap_clear_range(&b.alt_changed, 0, b.n);
		for (uint64_t i = 0; i < b.n; i++) {
			if (full || rnd() % 2) {
				set_valid(b.s + i * ES);
				lm_bitmap_set(&b.alt_changed, i);
			}
		}
		lm_table_src_close(b.src);
		lm_table_dst_close(b.dst);
		b.src = NULL;
		b.dst = NULL;
		if ((err = lm_table_src_open(&b.src, b.s, b.n, 0)) || (err = lm_table_dst_open(&b.dst, b.d, b.n, 0))) {
			fprintf(stderr, "livemig bench table: open: %s\n", lm_strerror(err));
			goto out;
		}
		struct result r = { 0 };
		if ((err = stream_pass(&b, &r))) {
			fprintf(stderr, "livemig bench table: %s\n", lm_strerror(err));
			goto out;
		}
		/* The first pass considers every entry; report the valid ones. */
		r.changed = r.alt_bytes / (4 + ES);
		print_row(full ? "first pass, 100% valid" : "first pass, 50% valid", &r);
	}

	/* Incremental passes on the full table. */
	static const struct {
		const char *name;
		double frac;
		uint64_t run;
		bool invalidate;
	} cases[] = {
		{ "no change", 0, 1, true },
		{ "0.1% scattered", 0.001, 1, true },
		{ "1% scattered", 0.01, 1, true },
		{ "10% scattered", 0.10, 1, true },
		{ "1% scattered, updates only", 0.01, 1, false },
		{ "1% in runs of 8", 0.01, 8, true },
	};
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct result r = { 0 };
		scatter(&b, (uint64_t)((double)b.n * cases[c].frac), cases[c].run, cases[c].invalidate);
		if ((err = stream_pass(&b, &r))) {
			fprintf(stderr, "livemig bench table: %s\n", lm_strerror(err));
			goto out;
		}
		print_row(cases[c].name, &r);
	}
	printf("\nentries: valid entries (first pass) or distinct changed entries; B/ent: wire bytes per entry;\n"
	       "index+entry: the alternative, 20 bytes per entry; ratio: stream / alternative.\n");
	rc = 0;
out:
	lm_table_src_close(b.src);
	lm_table_dst_close(b.dst);
	if (b.alt_changed.words)
		lm_bitmap_destroy(&b.alt_changed);
	free(b.s);
	free(b.d);
	free(b.alt_d);
	free(b.buf);
	return rc;
}
