/*
 * Tests for the incremental table stream (src/stream/table.c).
 *
 * The main tests run random tables through random change programs and after
 * every pass compare the source table with the destination built only from
 * the stream, and the set of entries the pass mentioned with the set the
 * program marked (an oracle kept by the test). Streams are parsed here by an
 * independent decoder so that a bug shared by the reader and the writer
 * cannot hide.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "livemig/table.h"

#define ES LM_TABLE_ENTRY_SIZE

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure can be replayed by seed. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

static void random_entry(unsigned char *e)
{
	uint64_t a = rnd(), b = rnd();
	/* Sometimes only one half is non-zero: validity looks at all bytes. */
	switch (rnd_below(4)) {
	case 0: a = 0; break;
	case 1: b = 0; break;
	default: break;
	}
	if ((a | b) == 0)
		b = 1ull << 63;
	memcpy(e, &a, 8);
	memcpy(e + 8, &b, 8);
}

static bool is_zero(const unsigned char *e)
{
	for (unsigned k = 0; k < ES; k++)
		if (e[k])
			return false;
	return true;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/*
 * Independent decoder: check that buf holds whole records, each within the
 * table, and count in seen[] how often each entry is mentioned.
 */
static void parse_records(const unsigned char *buf, size_t len, uint64_t n, unsigned char *seen)
{
	size_t off = 0;
	while (off < len) {
		assert_true(len - off >= LM_TABLE_RECORD_HDR);
		uint64_t idx = le32(buf + off), nv = le16(buf + off + 4), ni = le16(buf + off + 6);
		assert_true(nv + ni > 0);
		assert_true(idx + nv + ni <= n);
		assert_true(len - off - LM_TABLE_RECORD_HDR >= nv * ES);
		for (uint64_t k = 0; k < nv; k++)
			assert_false(is_zero(buf + off + LM_TABLE_RECORD_HDR + k * ES));
		for (uint64_t k = idx; k < idx + nv + ni; k++)
			if (seen)
				seen[k]++;
		off += LM_TABLE_RECORD_HDR + nv * ES;
	}
}

/* cap 0 means a random size per read, from tiny to large. */
static size_t pick_cap(size_t cap)
{
	if (cap)
		return cap;
	switch (rnd_below(3)) {
	case 0: return LM_TABLE_READ_MIN + rnd_below(40);
	case 1: return LM_TABLE_READ_MIN + rnd_below(2000);
	default: return 1 << 20;
	}
}

typedef void (*between_fn)(void *ctx);

/*
 * Read one whole pass from src into dst, ending with the 0-byte read.
 * Returns the bytes that went over the "wire".
 */
static uint64_t run_pass(lm_table_src *src, lm_table_dst *dst, uint64_t n, size_t cap, unsigned char *seen,
			 between_fn between, void *ctx)
{
	static unsigned char buf[1 << 20];
	uint64_t total = 0;
	if (seen)
		memset(seen, 0, n);
	for (;;) {
		size_t c = pick_cap(cap);
		int64_t got = lm_table_read(src, buf, c);
		assert_true(got >= 0);
		assert_true((size_t)got <= c);
		if (got == 0)
			break;
		parse_records(buf, (size_t)got, n, seen);
		assert_int_equal(lm_table_write(dst, buf, (size_t)got), got);
		total += (uint64_t)got;
		if (between)
			between(ctx);
	}
	return total;
}

struct world {
	uint64_t n;
	unsigned char *s, *d; /* source and destination tables */
	unsigned char *marked, *seen;
	lm_table_src *src;
	lm_table_dst *dst;
};

static void world_open(struct world *w, uint64_t n, double p_valid, unsigned src_flags)
{
	w->n = n;
	w->s = calloc(n, ES);
	w->d = calloc(n, ES);
	w->marked = calloc(n, 1);
	w->seen = calloc(n, 1);
	assert_non_null(w->s);
	assert_non_null(w->d);
	assert_non_null(w->marked);
	assert_non_null(w->seen);
	for (uint64_t i = 0; i < n; i++)
		if ((double)rnd_below(1000000) < p_valid * 1e6)
			random_entry(w->s + i * ES);
	assert_int_equal(lm_table_src_open(&w->src, w->s, n, src_flags), 0);
	assert_int_equal(lm_table_dst_open(&w->dst, w->d, n, 0), 0);
}

static void world_close(struct world *w)
{
	lm_table_src_close(w->src);
	lm_table_dst_close(w->dst);
	free(w->s);
	free(w->d);
	free(w->marked);
	free(w->seen);
}

/* Change entry i (to a value, or invalid) and mark it, as a table owner does. */
static void change(struct world *w, uint64_t i, bool valid)
{
	if (valid)
		random_entry(w->s + i * ES);
	else
		memset(w->s + i * ES, 0, ES);
	assert_int_equal(lm_table_src_mark(w->src, i), 0);
	w->marked[i] = 1;
}

/* One random change program: scattered edits, runs, and marks of unchanged entries. */
static void change_program(struct world *w)
{
	uint64_t ops = rnd_below(w->n / 4 + 8);
	for (uint64_t k = 0; k < ops; k++) {
		uint64_t i = rnd_below(w->n);
		switch (rnd_below(6)) {
		case 0:
		case 1:
			change(w, i, true);
			break;
		case 2:
			change(w, i, false);
			break;
		case 3: {
			/* a run of mixed entries, as a hashed table's bucket */
			uint64_t len = 1 + rnd_below(200);
			if (len > w->n - i)
				len = w->n - i;
			for (uint64_t j = i; j < i + len; j++)
				change(w, j, rnd_below(3) != 0);
			break;
		}
		case 4:
			/* marked but unchanged: must be resent, harmlessly */
			assert_int_equal(lm_table_src_mark(w->src, i), 0);
			w->marked[i] = 1;
			break;
		default: {
			uint64_t len = 1 + rnd_below(100);
			if (len > w->n - i)
				len = w->n - i;
			assert_int_equal(lm_table_src_mark_range(w->src, i, len), 0);
			memset(w->marked + i, 1, len);
			break;
		}
		}
	}
}

static void assert_same(const struct world *w)
{
	assert_memory_equal(w->s, w->d, w->n * ES);
}

static uint64_t count_marked(const struct world *w)
{
	uint64_t c = 0;
	for (uint64_t i = 0; i < w->n; i++)
		c += w->marked[i];
	return c;
}

/* ---- random programs against the oracle --------------------------------- */

static void random_programs(size_t cap)
{
	static const uint64_t sizes[] = { 1, 2, 63, 64, 65, 1000, 4097, 70000 };
	static const double occupancy[] = { 0.0, 0.1, 0.5, 0.97, 1.0 };

	for (unsigned si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		for (unsigned oi = 0; oi < sizeof(occupancy) / sizeof(occupancy[0]); oi++) {
			struct world w;
			rng_state = 0x9e3779b97f4a7c15ull ^ (si * 131 + oi * 7 + cap);
			world_open(&w, sizes[si], occupancy[oi], 0);
			assert_int_equal(lm_table_src_pending(w.src), w.n);
			assert_true(lm_table_src_first_pass(w.src));

			/* First pass: exactly the valid entries are mentioned. */
			run_pass(w.src, w.dst, w.n, cap, w.seen, NULL, NULL);
			assert_false(lm_table_src_first_pass(w.src));
			assert_int_equal(lm_table_src_pending(w.src), 0);
			for (uint64_t i = 0; i < w.n; i++)
				assert_int_equal(w.seen[i], !is_zero(w.s + i * ES));
			assert_same(&w);

			unsigned rounds = sizes[si] > 10000 ? 3 : 12;
			for (unsigned r = 0; r < rounds; r++) {
				memset(w.marked, 0, w.n);
				change_program(&w);
				assert_int_equal(lm_table_src_pending(w.src), count_marked(&w));
				/* Later passes: exactly the marked entries, each once. */
				run_pass(w.src, w.dst, w.n, cap, w.seen, NULL, NULL);
				assert_memory_equal(w.seen, w.marked, w.n);
				assert_int_equal(lm_table_src_pending(w.src), 0);
				assert_same(&w);
			}
			/* A quiet table gives an empty pass. */
			assert_int_equal(run_pass(w.src, w.dst, w.n, cap, NULL, NULL, NULL), 0);
			world_close(&w);
		}
	}
}

static void test_random_large_buffers(void **state)
{
	(void)state;
	random_programs(1 << 20);
}

static void test_random_tiny_buffers(void **state)
{
	(void)state;
	random_programs(LM_TABLE_READ_MIN);
	random_programs(LM_TABLE_READ_MIN + 1);
	random_programs(LM_TABLE_READ_MIN + ES + 7);
}

static void test_random_mixed_buffers(void **state)
{
	(void)state;
	random_programs(0);
}

/* Changes made while a pass is in progress (ahead of and behind the read
 * position) all arrive by the end of the next pass. */
static void change_between(void *ctx)
{
	struct world *w = ctx;
	change_program(w);
}

static void test_changes_during_pass(void **state)
{
	(void)state;
	static const uint64_t sizes[] = { 5, 300, 5000 };
	for (unsigned si = 0; si < 3; si++) {
		for (unsigned first = 0; first < 2; first++) {
			struct world w;
			rng_state = 0x1234567ull + si * 2 + first;
			world_open(&w, sizes[si], 0.5, 0);
			if (!first) {
				run_pass(w.src, w.dst, w.n, 0, NULL, NULL, NULL);
				change_program(&w);
			}
			/* Small reads so that many changes land mid-pass. */
			run_pass(w.src, w.dst, w.n, LM_TABLE_READ_MIN + 3 * ES, NULL, change_between, &w);
			/* Whatever was marked during the pass is pending now. */
			run_pass(w.src, w.dst, w.n, 0, NULL, NULL, NULL);
			assert_same(&w);
			assert_int_equal(lm_table_src_pending(w.src), 0);
			world_close(&w);
		}
	}
}

/* ---- exact bytes ---------------------------------------------------------- */

static void fill(unsigned char *e, unsigned char v)
{
	memset(e, v, ES);
}

static void test_record_format(void **state)
{
	(void)state;
	unsigned char s[8 * ES] = { 0 }, d[8 * ES] = { 0 }, buf[256];
	lm_table_src *src;
	lm_table_dst *dst;

	fill(s + 0 * ES, 0xa0);
	fill(s + 1 * ES, 0xa1);
	fill(s + 3 * ES, 0xa3);
	assert_int_equal(lm_table_src_open(&src, s, 8, 0), 0);
	assert_int_equal(lm_table_dst_open(&dst, d, 8, 0), 0);

	/* First pass: [0,1] valid, 2 omitted, [3] valid, the rest omitted. */
	int64_t got = lm_table_read(src, buf, sizeof(buf));
	assert_int_equal(got, 8 + 2 * ES + 8 + ES);
	static const unsigned char h0[8] = { 0, 0, 0, 0, 2, 0, 0, 0 };
	static const unsigned char h1[8] = { 3, 0, 0, 0, 1, 0, 0, 0 };
	assert_memory_equal(buf, h0, 8);
	assert_memory_equal(buf + 8, s, 2 * ES);
	assert_memory_equal(buf + 8 + 2 * ES, h1, 8);
	assert_memory_equal(buf + 16 + 2 * ES, s + 3 * ES, ES);
	assert_int_equal(lm_table_write(dst, buf, (size_t)got), got);
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 0);
	assert_memory_equal(s, d, sizeof(s));

	/* Entry 1 invalidated, 2 created, 5 marked while still invalid. */
	fill(s + 1 * ES, 0);
	fill(s + 2 * ES, 0xb2);
	assert_int_equal(lm_table_src_mark(src, 1), 0);
	assert_int_equal(lm_table_src_mark(src, 2), 0);
	assert_int_equal(lm_table_src_mark(src, 5), 0);
	got = lm_table_read(src, buf, sizeof(buf));
	assert_int_equal(got, 8 + 8 + ES + 8);
	static const unsigned char r0[8] = { 1, 0, 0, 0, 0, 0, 1, 0 };
	static const unsigned char r1[8] = { 2, 0, 0, 0, 1, 0, 0, 0 };
	static const unsigned char r2[8] = { 5, 0, 0, 0, 0, 0, 1, 0 };
	assert_memory_equal(buf, r0, 8);
	assert_memory_equal(buf + 8, r1, 8);
	assert_memory_equal(buf + 16, s + 2 * ES, ES);
	assert_memory_equal(buf + 16 + ES, r2, 8);
	assert_int_equal(lm_table_write(dst, buf, (size_t)got), got);
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 0);
	assert_memory_equal(s, d, sizeof(s));

	/* A valid run followed by an invalid run shares one header. */
	fill(s + 6 * ES, 0xc6);
	lm_table_src_mark_range(src, 6, 2);
	got = lm_table_read(src, buf, sizeof(buf));
	static const unsigned char r3[8] = { 6, 0, 0, 0, 1, 0, 1, 0 };
	assert_int_equal(got, 8 + ES);
	assert_memory_equal(buf, r3, 8);

	lm_table_src_close(src);
	lm_table_dst_close(dst);
}

static void test_little_endian_index(void **state)
{
	(void)state;
	enum { N = 0x10203 };
	unsigned char *s = calloc(N, ES), buf[64];
	lm_table_src *src;
	fill(s + 0x10202ull * ES, 0x5a);
	assert_int_equal(lm_table_src_open(&src, s, N, 0), 0);
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 8 + ES);
	static const unsigned char h[8] = { 0x02, 0x02, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00 };
	assert_memory_equal(buf, h, 8);
	lm_table_src_close(src);
	free(s);
}

/* Runs longer than 65535 entries are split into several records. */
static void test_long_runs(void **state)
{
	(void)state;
	enum { N = 70000 };
	unsigned char *s = malloc((size_t)N * ES), *d = calloc(N, ES);
	static unsigned char buf[2 << 20];
	lm_table_src *src;
	lm_table_dst *dst;
	memset(s, 0x77, (size_t)N * ES);
	assert_int_equal(lm_table_src_open(&src, s, N, 0), 0);
	assert_int_equal(lm_table_dst_open(&dst, d, N, 0), 0);

	int64_t got = lm_table_read(src, buf, sizeof(buf));
	assert_int_equal(got, 2 * 8 + (int64_t)N * ES);
	assert_int_equal(le32(buf), 0);
	assert_int_equal(le16(buf + 4), 65535);
	assert_int_equal(le32(buf + 8 + 65535 * ES), 65535);
	assert_int_equal(le16(buf + 8 + 65535 * ES + 4), N - 65535);
	assert_int_equal(lm_table_write(dst, buf, (size_t)got), got);
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 0);

	/* Invalidating the whole table costs two headers. */
	memset(s, 0, (size_t)N * ES);
	assert_int_equal(lm_table_src_mark_range(src, 0, N), 0);
	got = lm_table_read(src, buf, sizeof(buf));
	assert_int_equal(got, 16);
	assert_int_equal(le16(buf + 6), 65535);
	assert_int_equal(le16(buf + 14), N - 65535);
	assert_int_equal(lm_table_write(dst, buf, (size_t)got), got);
	assert_memory_equal(s, d, (size_t)N * ES);

	lm_table_src_close(src);
	lm_table_dst_close(dst);
	free(s);
	free(d);
}

/* ---- flags, restart, argument checks ------------------------------------ */

static void test_full_first_pass(void **state)
{
	(void)state;
	struct world w;
	rng_state = 42;
	world_open(&w, 3000, 0.3, LM_TABLE_FULL_FIRST_PASS);
	/* A destination holding stale entries everywhere. */
	for (uint64_t i = 0; i < w.n; i++)
		random_entry(w.d + i * ES);
	run_pass(w.src, w.dst, w.n, 0, w.seen, NULL, NULL);
	for (uint64_t i = 0; i < w.n; i++)
		assert_int_equal(w.seen[i], 1);
	assert_same(&w);
	/* Later passes are ordinary incremental ones. */
	memset(w.marked, 0, w.n);
	change_program(&w);
	run_pass(w.src, w.dst, w.n, 0, w.seen, NULL, NULL);
	assert_memory_equal(w.seen, w.marked, w.n);
	assert_same(&w);
	world_close(&w);
}

static void test_restart(void **state)
{
	(void)state;
	struct world w;
	rng_state = 7;
	world_open(&w, 1000, 0.5, 0);
	run_pass(w.src, w.dst, w.n, 0, NULL, NULL, NULL);
	assert_same(&w);
	/* Start over towards a new, empty destination, half way into a pass. */
	change_program(&w);
	unsigned char buf[LM_TABLE_READ_MIN];
	assert_true(lm_table_read(w.src, buf, sizeof(buf)) > 0);
	lm_table_src_restart(w.src);
	assert_true(lm_table_src_first_pass(w.src));
	assert_int_equal(lm_table_src_pending(w.src), w.n);
	memset(w.d, 0, w.n * ES);
	run_pass(w.src, w.dst, w.n, 0, w.seen, NULL, NULL);
	for (uint64_t i = 0; i < w.n; i++)
		assert_int_equal(w.seen[i], !is_zero(w.s + i * ES));
	assert_same(&w);
	world_close(&w);
}

static void test_pass_end(void **state)
{
	(void)state;
	unsigned char s[4 * ES] = { 0 }, buf[64];
	lm_table_src *src;
	fill(s, 1);
	assert_int_equal(lm_table_src_open(&src, s, 4, 0), 0);
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 8 + ES);
	assert_true(lm_table_src_first_pass(src));
	/* The pass ends with a 0 read; every read of a quiet table is 0 too. */
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 0);
	assert_false(lm_table_src_first_pass(src));
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 0);
	/* A change behind the position of an ended pass is read next pass. */
	assert_int_equal(lm_table_src_mark(src, 0), 0);
	assert_int_equal(lm_table_src_mark(src, 0), 0);
	assert_int_equal(lm_table_src_pending(src), 1);
	assert_int_equal(lm_table_read(src, buf, sizeof(buf)), 8 + ES);
	assert_int_equal(lm_table_src_pending(src), 0);
	lm_table_src_close(src);
}

static void test_arguments(void **state)
{
	(void)state;
	unsigned char t[4 * ES] = { 0 }, buf[64];
	lm_table_src *src;
	lm_table_dst *dst;

	assert_int_equal(lm_table_src_open(&src, t, 4, 1u << 7), -EINVAL);
	assert_int_equal(lm_table_src_open(&src, t, 4, ~0u), -EINVAL);
	assert_int_equal(lm_table_dst_open(&dst, t, 4, LM_TABLE_FULL_FIRST_PASS), -EINVAL);
	assert_int_equal(lm_table_src_open(&src, t, 0, 0), -EINVAL);
	assert_int_equal(lm_table_dst_open(&dst, t, 0, 0), -EINVAL);
	assert_int_equal(lm_table_src_open(&src, t, LM_TABLE_MAX_ENTRIES + 1, 0), -EINVAL);
	assert_int_equal(lm_table_dst_open(&dst, t, LM_TABLE_MAX_ENTRIES + 1, 0), -EINVAL);
	assert_int_equal(lm_table_src_open(&src, NULL, 4, 0), -EINVAL);

	assert_int_equal(lm_table_src_open(&src, t, 4, 0), 0);
	assert_int_equal(lm_table_read(src, buf, LM_TABLE_READ_MIN - 1), -EINVAL);
	assert_int_equal(lm_table_src_mark(src, 4), -ERANGE);
	assert_int_equal(lm_table_src_mark_range(src, 3, 2), -ERANGE);
	assert_int_equal(lm_table_src_mark_range(src, 1, UINT64_MAX), -ERANGE);
	assert_int_equal(lm_table_src_mark_range(src, 4, 0), 0);
	lm_table_src_close(src);
	lm_table_src_close(NULL);
	lm_table_dst_close(NULL);
}

/* ---- malformed input ------------------------------------------------------ */

static size_t put_rec(unsigned char *p, uint32_t idx, uint16_t nv, uint16_t ni, unsigned char val)
{
	p[0] = (unsigned char)idx;
	p[1] = (unsigned char)(idx >> 8);
	p[2] = (unsigned char)(idx >> 16);
	p[3] = (unsigned char)(idx >> 24);
	p[4] = (unsigned char)nv;
	p[5] = (unsigned char)(nv >> 8);
	p[6] = (unsigned char)ni;
	p[7] = (unsigned char)(ni >> 8);
	memset(p + 8, val, (size_t)nv * ES);
	return 8 + (size_t)nv * ES;
}

static void test_malformed(void **state)
{
	(void)state;
	enum { N = 16 };
	unsigned char d[N * ES], snap[N * ES], buf[1024];
	lm_table_dst *dst;
	size_t len;

	rng_state = 99;
	for (unsigned i = 0; i < N; i++)
		random_entry(d + i * ES);
	memcpy(snap, d, sizeof(d));
	assert_int_equal(lm_table_dst_open(&dst, d, N, 0), 0);
	assert_string_equal(lm_table_dst_error(dst), "");
	/* A good record first in every case: it must not be applied either. */
	size_t good = put_rec(buf, 0, 2, 3, 0x11);

	struct {
		const char *what;
		int err;
	} cases[] = {
		{ "truncated header", -EINVAL },
		{ "short entries", -EINVAL },
		{ "past the end", -ERANGE },
		{ "index overflow", -ERANGE },
		{ "empty record", -EINVAL },
		{ "zero valid entry", -EINVAL },
		{ "invalid run past the end", -ERANGE },
		{ "trailing byte", -EINVAL },
	};
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		len = good;
		switch (c) {
		case 0: len += 5; memset(buf + good, 0, 5); buf[good] = 1; break;
		case 1: len += put_rec(buf + len, 4, 2, 0, 0x22) - ES; break;
		case 2: len += put_rec(buf + len, N - 1, 2, 0, 0x22); break;
		case 3: len += put_rec(buf + len, 0xffffffffu, 0, 0xffff, 0); break;
		case 4: len += put_rec(buf + len, 3, 0, 0, 0); break;
		case 5: len += put_rec(buf + len, 3, 1, 0, 0); break;
		case 6: len += put_rec(buf + len, 10, 1, 6, 0x33); break;
		case 7: len += put_rec(buf + len, 10, 1, 0, 0x33) + 1; buf[len - 1] = 0x44; break;
		}
		int64_t r = lm_table_write(dst, buf, len);
		if (r != cases[c].err)
			fail_msg("case '%s': got %lld, want %d", cases[c].what, (long long)r, cases[c].err);
		assert_memory_equal(d, snap, sizeof(d));
		assert_true(strlen(lm_table_dst_error(dst)) > 0);
		/* The message names the record that was wrong: the second one,
		 * or the third for the byte after two good records. */
		assert_non_null(strstr(lm_table_dst_error(dst), c == 7 ? "record 2 " : "record 1 "));
	}

	/* Nothing at all is fine; a good buffer applies and clears the error. */
	assert_int_equal(lm_table_write(dst, buf, 0), 0);
	len = good + put_rec(buf + good, 15, 1, 0, 0x55);
	assert_int_equal(lm_table_write(dst, buf, len), (int64_t)len);
	assert_string_equal(lm_table_dst_error(dst), "");
	for (unsigned i = 0; i < N; i++) {
		if (i < 2)
			assert_int_equal(d[i * ES], 0x11);
		else if (i < 5)
			assert_true(is_zero(d + i * ES));
		else if (i == 15)
			assert_int_equal(d[i * ES + 15], 0x55);
		else
			assert_memory_equal(d + i * ES, snap + i * ES, ES);
	}
	lm_table_dst_close(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_arguments),
		cmocka_unit_test(test_record_format),
		cmocka_unit_test(test_little_endian_index),
		cmocka_unit_test(test_long_runs),
		cmocka_unit_test(test_pass_end),
		cmocka_unit_test(test_restart),
		cmocka_unit_test(test_full_first_pass),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_random_large_buffers),
		cmocka_unit_test(test_random_tiny_buffers),
		cmocka_unit_test(test_random_mixed_buffers),
		cmocka_unit_test(test_changes_during_pass),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
