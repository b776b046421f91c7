/*
 * livemig bench scan: the figures that tell whether the bitmap layer is good.
 *
 * For a bitmap of N pages (2^28 = 1 TiB of 4 KiB pages by default) and each
 * dirty pattern, time every way of finding the dirty pages: bit by bit (the
 * naive loop), a byte per page (the old client-mask map), word at a time
 * (lm_bitmap_iter), the summary scan as shipped (lm_sbitmap_iter, AUTO) and
 * the summary forced on (to show what the AUTO choice avoids). Every method
 * must find the same pages: each visit folds the index into a count, a sum
 * and a sum of squares, and the bench fails (exit 1) if any method's triple
 * differs from the others. Then the word sync per GiB of guest, and the
 * zero-page test next to memcpy/memchr bandwidth as the physical reference.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"
#include "bitmap/bitmap_impl.h"
#include "cli/cli.h"

enum { M_BIT, M_BYTE, M_WORD, M_SUMMARY, M_SUMMARY_FORCED, NMETHODS };
static const char *const method_name[NMETHODS] = {"bit", "byte", "word", "summary",
						  "summary-forced"};

enum { C_CLEAN, C_DIRTY, C_BLOCK, C_ALT, C_UNIFORM, C_CLUSTER, C_RANDOM, NCONDS };
static const char *const cond_name[NCONDS] = {
    "all clean",    "all dirty",	  "256 MiB block", "alternating",
    "0.2% uniform", "0.2% in 2 MiB runs", "50% random",
};
static const char *const cond_key[NCONDS] = {
    "clean", "dirty", "block", "alternating", "uniform_0.2", "clustered_0.2", "random_50",
};

struct found {
	uint64_t count, sum, sumsq;
};

/*
 * What every method does with a page it found: append it to a batch, as the
 * engine collects a batch of pages to send. The batch is folded into the
 * count/sum/sum-of-squares check when it fills, so the per-page work is one
 * store for every method and the checking cost is the same for all.
 */
#define BATCH 1024

struct batch {
	uint64_t n;
	uint64_t idx[BATCH];
	struct found f;
};

static __attribute__((noinline)) void flush(struct batch *b)
{
	for (uint64_t k = 0; k < b->n; k++) {
		uint64_t i = b->idx[k];
		b->f.count++;
		b->f.sum += i;
		b->f.sumsq += i * i;
	}
	b->n = 0;
}

static inline void visit(struct batch *b, uint64_t i)
{
	b->idx[b->n++] = i;
	if (b->n == BATCH)
		flush(b);
}

static uint64_t rng = 0x1234567;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Fraction of pages the uniform condition dirties (0.2%; --sweep varies it). */
static double uniform_density = 0.002;

struct ctx {
	uint64_t n;
	lm_sbitmap s;
	uint8_t *bytes;
};

static void fill(struct ctx *c, int cond)
{
	lm_bitmap *b = &c->s.bits;
	uint64_t n = c->n;
	lm_bitmap_clear_range(b, 0, n);
	switch (cond) {
	case C_CLEAN:
		break;
	case C_DIRTY:
		lm_bitmap_set_range(b, 0, n);
		break;
	case C_BLOCK: {
		uint64_t len = 65536 < n / 4 ? 65536 : n / 4;
		lm_bitmap_set_range(b, n / 3, len ? len : 1);
		break;
	}
	case C_ALT:
		for (uint64_t w = 0; w < b->nwords; w++)
			b->words[w] = 0x5555555555555555ull;
		break;
	case C_UNIFORM:
		for (uint64_t k = 0; k < (uint64_t)((double)n * uniform_density); k++)
			lm_bitmap_set(b, rnd() % n);
		break;
	case C_CLUSTER: {
		uint64_t run = 512 < n ? 512 : n;
		for (uint64_t k = 0; k < n / 500 / run; k++)
			lm_bitmap_set_range(b, rnd() % (n - run + 1), run);
		break;
	}
	case C_RANDOM:
		for (uint64_t w = 0; w < b->nwords; w++)
			b->words[w] = rnd();
		break;
	}
	/* keep the zero-tail invariant after whole-word fills */
	if (n & 63)
		b->words[b->nwords - 1] &= (1ull << (n & 63)) - 1;
	lm_sbitmap_rebuild(&c->s);
	for (uint64_t i = 0; i < n; i++)
		c->bytes[i] = lm_bitmap_test(b, i) ? 1 : 0;
}

static struct found run_method(struct ctx *c, int m)
{
	static struct batch f;
	memset(&f.f, 0, sizeof(f.f));
	f.n = 0;
	uint64_t n = c->n;
	switch (m) {
	case M_BIT:
		for (uint64_t i = 0; i < n; i++)
			if (lm_bitmap_test(&c->s.bits, i))
				visit(&f, i);
		break;
	case M_BYTE:
		/* The old layout: a byte per page, one bit per client. */
		for (uint64_t i = 0; i < n; i++)
			if (c->bytes[i] & 1)
				visit(&f, i);
		break;
	case M_WORD: {
		uint64_t pos = 0;
		while ((f.n = lm_bitmap_collect(&c->s.bits, &pos, n, f.idx, BATCH)) > 0)
			flush(&f);
		break;
	}
	case M_SUMMARY:
	case M_SUMMARY_FORCED: {
		lm_sbitmap_set_mode(&c->s, m == M_SUMMARY ? LM_SBITMAP_AUTO : LM_SBITMAP_SUMMARY);
		uint64_t pos = 0;
		while ((f.n = lm_sbitmap_collect(&c->s, &pos, n, f.idx, BATCH)) > 0)
			flush(&f);
		lm_sbitmap_set_mode(&c->s, LM_SBITMAP_AUTO);
		break;
	}
	}
	flush(&f);
	return f.f;
}

/* Best time per run: repeat fast methods until 60 ms are spent. */
static double time_method(struct ctx *c, int m, struct found *out)
{
	double best = 1e30, spent = 0;
	int reps = 0;
	while (reps < 3 || (spent < 0.06 && reps < 10000)) {
		double t0 = bench_now();
		struct found f = run_method(c, m);
		double dt = bench_now() - t0;
		__asm__ volatile("" : : "r"(f.sum) : "memory");
		*out = f;
		if (dt < best)
			best = dt;
		spent += dt;
		reps++;
		/* Slow methods: one run is plenty once it took a while. */
		if (spent > 0.25 && reps >= 1)
			break;
	}
	return best;
}

/*
 * The word and summary methods are compared against each other to a few
 * percent (the 0.2% uniform target), which one best-of run per method
 * cannot do on a shared machine. So they get more runs, interleaved, so
 * that a burst of load elsewhere hits them alike: up to 15 rounds or about
 * one second per condition.
 */
static void refine(struct ctx *c, double t[NMETHODS])
{
	static const int fast[] = {M_WORD, M_SUMMARY, M_SUMMARY_FORCED};
	double spent = 0;
	for (int r = 0; r < 15 && spent < 1.0; r++) {
		for (size_t k = 0; k < sizeof(fast) / sizeof(fast[0]); k++) {
			double t0 = bench_now();
			struct found f = run_method(c, fast[k]);
			double dt = bench_now() - t0;
			__asm__ volatile("" : : "r"(f.sum) : "memory");
			if (dt < t[fast[k]])
				t[fast[k]] = dt;
			spent += dt;
		}
	}
}

static void *map_bytes(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Sync cost per GiB of guest: a log covering all n pages, 1 GiB at a time. */
struct sync_fig {
	double clean_us, sparse_us, dirty_us;
};

enum { SYNC_FLAT, SYNC_FLAT_UNALIGNED, SYNC_SUMMARY, NSYNC };
static const char *const sync_name[NSYNC] = {"flat, aligned", "flat, dst_start+1", "summary"};

static double sync_once(struct ctx *c, lm_bitmap *dst, int kind, uint64_t *src, uint64_t gib_pages,
			int pattern)
{
	double total = 0;
	uint64_t n = c->n;
	uint64_t off = kind == SYNC_FLAT_UNALIGNED ? 1 : 0;
	for (uint64_t start = 0; start + gib_pages + off <= n; start += gib_pages) {
		uint64_t nw = gib_pages / 64;
		if (pattern == 0) {
			memset(src, 0, nw * 8);
		} else if (pattern == 1) {
			memset(src, 0, nw * 8);
			for (uint64_t k = 0; k < gib_pages / 500; k++) {
				uint64_t i = rnd() % gib_pages;
				src[i >> 6] |= 1ull << (i & 63);
			}
		} else {
			memset(src, 0xff, nw * 8);
		}
		double t0 = bench_now();
		if (kind == SYNC_SUMMARY)
			lm_sbitmap_sync_from(&c->s, start, src, gib_pages);
		else
			lm_bitmap_sync_from(dst, start + off, src, gib_pages);
		total += bench_now() - t0;
	}
	return total;
}

static int bench_sync(struct ctx *c, struct sync_fig fig[NSYNC])
{
	uint64_t gib_pages = (1ull << 30) >> LM_PAGE_SHIFT;
	if (gib_pages > c->n)
		gib_pages = c->n & ~63ull;
	if (gib_pages < 64)
		return -EINVAL;
	uint64_t *src = malloc(gib_pages / 8);
	if (!src)
		return -ENOMEM;
	lm_bitmap dst;
	int rc = lm_bitmap_init(&dst, c->n);
	if (rc < 0) {
		free(src);
		return rc;
	}
	double gibs = (double)(c->n / gib_pages);
	for (int k = 0; k < NSYNC; k++) {
		double t[3] = {1e30, 1e30, 1e30};
		/* best of three passes over the whole guest, as for the scans */
		for (int r = 0; r < 3; r++) {
			for (int pat = 0; pat < 3; pat++) {
				lm_bitmap_clear_range(&dst, 0, c->n);
				lm_sbitmap_clear_range(&c->s, 0, c->n);
				double dt = sync_once(c, &dst, k, src, gib_pages, pat);
				if (dt < t[pat])
					t[pat] = dt;
			}
		}
		fig[k].clean_us = t[0] / gibs * 1e6;
		fig[k].sparse_us = t[1] / gibs * 1e6;
		fig[k].dirty_us = t[2] / gibs * 1e6;
	}
	lm_bitmap_destroy(&dst);
	free(src);
	return 0;
}

/* Zero test and the physical references, in GB/s (1e9 bytes per second). */
struct zero_fig {
	double zero_gbs[4]; /* chosen, avx2, sse2, words: on zero pages */
	double data_ns;	    /* chosen, per data page (sample exits early), cold */
	double data_hot_ns; /* the same with the pages in cache */
	double late_gbs;    /* chosen, pages whose only non-zero byte is last-but-sampled */
	double memcpy_gbs, memchr_gbs;
};

static const char *const zero_impls[4] = {NULL, "avx2", "sse2", "words"};

static int bench_zero(struct zero_fig *z)
{
	const size_t len = 64ull << 20, pages = len / LM_PAGE_SIZE;
	unsigned char *a = map_bytes(len), *b = map_bytes(len);
	if (!a || !b)
		return -ENOMEM;
	memset(a, 0, len); /* real memory, not the shared zero page */
	memset(b, 1, len);
	/* The chosen implementation last, so that it does not pay for
	 * warming up the buffer and the CPU for the others. */
	static const int order[4] = {1, 2, 3, 0};
	for (size_t p = 0; p < pages; p++) /* warm-up, untimed */
		if (!lm_page_is_zero(a + p * LM_PAGE_SIZE))
			return -EIO;
	for (int o = 0; o < 4; o++) {
		int k = order[o];
		double best = 1e30;
		for (int r = 0; r < 3; r++) {
			size_t nz = 0;
			double t0 = bench_now();
			for (size_t p = 0; p < pages; p++)
				nz += k == 0 ? lm_page_is_zero(a + p * LM_PAGE_SIZE)
					     : lm__page_is_zero_with(zero_impls[k],
								     a + p * LM_PAGE_SIZE);
			double dt = bench_now() - t0;
			if (nz != pages)
				return -EIO;
			if (dt < best)
				best = dt;
		}
		z->zero_gbs[k] = (double)len / best / 1e9;
	}
	/* Data pages: every byte non-zero, the sample decides at once. */
	double best = 1e30;
	for (int r = 0; r < 3; r++) {
		size_t nz = 0;
		double t0 = bench_now();
		for (size_t p = 0; p < pages; p++)
			nz += lm_page_is_zero(b + p * LM_PAGE_SIZE);
		double dt = bench_now() - t0;
		if (nz != 0)
			return -EIO;
		if (dt < best)
			best = dt;
	}
	z->data_ns = best / (double)pages * 1e9;
	/* The same on 16 pages that stay in cache: the cost of the test
	 * itself rather than of fetching the page from memory. */
	best = 1e30;
	for (int r = 0; r < 3; r++) {
		size_t nz = 0;
		double t0 = bench_now();
		for (size_t p = 0; p < pages; p++)
			nz += lm_page_is_zero(b + (p & 15) * LM_PAGE_SIZE);
		double dt = bench_now() - t0;
		if (nz != 0)
			return -EIO;
		if (dt < best)
			best = dt;
	}
	z->data_hot_ns = best / (double)pages * 1e9;
	/* Worst case for the sample: one non-zero byte the sample misses,
	 * near the end, so the vector loop reads almost the whole page. */
	for (size_t p = 0; p < pages; p++)
		a[p * LM_PAGE_SIZE + 4000] = 1;
	best = 1e30;
	for (int r = 0; r < 3; r++) {
		size_t nz = 0;
		double t0 = bench_now();
		for (size_t p = 0; p < pages; p++)
			nz += lm_page_is_zero(a + p * LM_PAGE_SIZE);
		double dt = bench_now() - t0;
		if (nz != 0)
			return -EIO;
		if (dt < best)
			best = dt;
	}
	z->late_gbs = (double)len / best / 1e9;
	memset(a, 0, len);
	best = 1e30;
	for (int r = 0; r < 3; r++) {
		double t0 = bench_now();
		memcpy(b, a, len);
		__asm__ volatile("" : : "r"(b) : "memory");
		double dt = bench_now() - t0;
		if (dt < best)
			best = dt;
	}
	z->memcpy_gbs = (double)len / best / 1e9;
	best = 1e30;
	for (int r = 0; r < 3; r++) {
		double t0 = bench_now();
		void *hit = memchr(a, 1, len);
		__asm__ volatile("" : : "r"(hit) : "memory");
		double dt = bench_now() - t0;
		if (hit)
			return -EIO;
		if (dt < best)
			best = dt;
	}
	z->memchr_gbs = (double)len / best / 1e9;
	munmap(a, len);
	munmap(b, len);
	return 0;
}

/*
 * --sweep: flat word scan against the summary forced on, for uniformly
 * scattered pages at several densities: the measurement behind the AUTO
 * threshold in src/bitmap/summary.c.
 */
static int sweep(struct ctx *c)
{
	static const double dens[] = {0.00001, 0.0001, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.02};
	printf("uniform density sweep, %llu pages, ns per page\n", (unsigned long long)c->n);
	printf("%10s %14s %10s %10s %10s %16s\n", "density", "dirty chunks", "word", "summary",
	       "auto", "summary/word");
	for (size_t k = 0; k < sizeof(dens) / sizeof(dens[0]); k++) {
		uniform_density = dens[k];
		fill(c, C_UNIFORM);
		struct found f[3];
		double t[NMETHODS];
		t[M_WORD] = time_method(c, M_WORD, &f[0]);
		t[M_SUMMARY_FORCED] = time_method(c, M_SUMMARY_FORCED, &f[1]);
		t[M_SUMMARY] = time_method(c, M_SUMMARY, &f[2]);
		refine(c, t);
		double tw = t[M_WORD], ts = t[M_SUMMARY_FORCED], ta = t[M_SUMMARY];
		if (f[0].count != f[1].count || f[0].sum != f[1].sum || f[0].count != f[2].count ||
		    f[0].sum != f[2].sum) {
			fprintf(stderr, "bench scan: methods disagree at density %g\n", dens[k]);
			return 1;
		}
		double nsp = 1e9 / (double)c->n;
		printf("%9.3f%% %13.1f%% %10.4f %10.4f %10.4f %16.3f\n", dens[k] * 100,
		       100.0 * (double)c->s.nchunks_set / (double)c->s.nchunks, tw * nsp, ts * nsp,
		       ta * nsp, ts / tw);
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: livemig bench scan [--pages N] [--json] [--sweep]\n"
		   "  --pages N   bitmap size in pages (default 2^28 = 1 TiB of 4 KiB pages; K/M/G "
		   "suffixes)\n"
		   "  --json      print the figures as one JSON object\n"
		   "  --sweep     only the summary-vs-word sweep over uniform densities\n");
}

int lm_bench_scan(int argc, char **argv)
{
	uint64_t n = 1ull << 28;
	bool json = false, do_sweep = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--pages") && i + 1 < argc) {
			if (lm_cli_parse_size(argv[++i], &n) < 0 || n < 1024 || n > (1ull << 36)) {
				fprintf(stderr,
					"bench scan: --pages wants a number from 1024 to 2^36\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--sweep")) {
			do_sweep = true;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}

	struct ctx c = {.n = n};
	int rc = lm_sbitmap_init(&c.s, n, 0);
	if (rc < 0) {
		fprintf(stderr, "bench scan: %s\n", lm_strerror(rc));
		return 1;
	}
	c.bytes = map_bytes(n);
	if (!c.bytes) {
		fprintf(stderr, "bench scan: cannot map %llu bytes\n", (unsigned long long)n);
		lm_sbitmap_destroy(&c.s);
		return 1;
	}

	if (do_sweep) {
		int src = sweep(&c);
		munmap(c.bytes, n);
		lm_sbitmap_destroy(&c.s);
		return src;
	}

	double t[NCONDS][NMETHODS];
	uint64_t dirty[NCONDS];
	int bad = 0;
	for (int cond = 0; cond < NCONDS; cond++) {
		fill(&c, cond);
		dirty[cond] = lm_sbitmap_count(&c.s);
		struct found ref = {0, 0, 0};
		for (int m = 0; m < NMETHODS; m++) {
			struct found f;
			t[cond][m] = time_method(&c, m, &f);
			if (m == 0)
				ref = f;
			if (f.count != ref.count || f.sum != ref.sum || f.sumsq != ref.sumsq ||
			    f.count != dirty[cond]) {
				fprintf(stderr,
					"bench scan: %s: method %s found %llu pages, bit-by-bit "
					"%llu, expected %llu\n",
					cond_name[cond], method_name[m],
					(unsigned long long)f.count, (unsigned long long)ref.count,
					(unsigned long long)dirty[cond]);
				bad = 1;
			}
		}
		refine(&c, t[cond]);
	}

	struct sync_fig sf[NSYNC];
	int src_rc = bench_sync(&c, sf);
	struct zero_fig zf;
	int zrc = bench_zero(&zf);
	if (zrc == -EIO) {
		fprintf(stderr, "bench scan: the zero-page test gave a wrong answer\n");
		bad = 1;
	}

	/* Targets from issue 2. */
	bool beat_bit = true;
	for (int cond = 0; cond < NCONDS; cond++)
		if (t[cond][M_WORD] >= t[cond][M_BIT] || t[cond][M_SUMMARY] >= t[cond][M_BIT])
			beat_bit = false;
	double clean_ratio = t[C_CLEAN][M_WORD] / t[C_CLEAN][M_SUMMARY];
	double uniform_ratio = t[C_UNIFORM][M_SUMMARY] / t[C_UNIFORM][M_WORD];
	bool t_clean = clean_ratio > 50, t_uniform = uniform_ratio <= 1.05;

	if (json) {
		printf("{\"pages\":%llu,\"conditions\":[", (unsigned long long)n);
		for (int cond = 0; cond < NCONDS; cond++) {
			printf("%s{\"name\":\"%s\",\"dirty_pages\":%llu,\"methods\":{",
			       cond ? "," : "", cond_key[cond], (unsigned long long)dirty[cond]);
			for (int m = 0; m < NMETHODS; m++)
				printf("%s\"%s\":{\"ns_per_page\":%.6g,\"pages_per_s\":%.4g}",
				       m ? "," : "", method_name[m], t[cond][m] / (double)n * 1e9,
				       (double)n / t[cond][m]);
			printf("}}");
		}
		printf("]");
		if (src_rc == 0) {
			printf(",\"sync_us_per_gib\":{");
			for (int k = 0; k < NSYNC; k++)
				printf("%s\"%s\":{\"clean\":%.2f,\"uniform_0.2\":%.2f,\"all_"
				       "dirty\":%.2f}",
				       k ? "," : "", sync_name[k], sf[k].clean_us, sf[k].sparse_us,
				       sf[k].dirty_us);
			printf("}");
		}
		if (zrc == 0)
			printf(",\"zero\":{\"impl\":\"%s\",\"zero_pages_gbs\":%.2f,\"avx2_gbs\":%."
			       "2f,\"sse2_gbs\":%.2f,"
			       "\"words_gbs\":%.2f,\"data_page_ns\":%.2f,\"data_page_hot_ns\":%.2f,"
			       "\"late_nonzero_gbs\":%.2f,\"memcpy_gbs\":%.2f,"
			       "\"memchr_gbs\":%.2f}",
			       lm_zero_impl(), zf.zero_gbs[0], zf.zero_gbs[1], zf.zero_gbs[2],
			       zf.zero_gbs[3], zf.data_ns, zf.data_hot_ns, zf.late_gbs,
			       zf.memcpy_gbs, zf.memchr_gbs);
		printf(",\"targets\":{\"beat_bit_by_bit\":%s,\"clean_word_over_summary\":%.1f,"
		       "\"clean_met\":%s,"
		       "\"uniform_summary_over_word\":%.3f,\"uniform_met\":%s},\"methods_agree\":%"
		       "s}\n",
		       beat_bit ? "true" : "false", clean_ratio, t_clean ? "true" : "false",
		       uniform_ratio, t_uniform ? "true" : "false", bad ? "false" : "true");
	} else {
		printf(
		    "bench scan: %llu pages (%.0f GiB of 4 KiB pages), summary chunk %u pages\n\n",
		    (unsigned long long)n, (double)n * LM_PAGE_SIZE / (double)(1ull << 30),
		    1u << c.s.chunk_shift);
		printf("ns per page (pages/s), best of several runs\n");
		printf("%-20s %12s", "condition", "dirty pages");
		for (int m = 0; m < NMETHODS; m++)
			printf(" %22s", method_name[m]);
		printf("\n");
		for (int cond = 0; cond < NCONDS; cond++) {
			printf("%-20s %12llu", cond_name[cond], (unsigned long long)dirty[cond]);
			for (int m = 0; m < NMETHODS; m++) {
				char cell[64];
				snprintf(cell, sizeof(cell), "%.3g (%.3g)",
					 t[cond][m] / (double)n * 1e9, (double)n / t[cond][m]);
				printf(" %22s", cell);
			}
			printf("\n");
		}
		printf("\nword sync (lm_bitmap_sync_from), us per GiB of guest (262144 pages):\n");
		if (src_rc == 0) {
			printf("%-20s %12s %12s %12s\n", "destination", "log clean", "0.2% dirty",
			       "all dirty");
			for (int k = 0; k < NSYNC; k++)
				printf("%-20s %12.2f %12.2f %12.2f\n", sync_name[k], sf[k].clean_us,
				       sf[k].sparse_us, sf[k].dirty_us);
		} else {
			printf("  skipped: %s\n", lm_strerror(src_rc));
		}
		printf("\nzero-page test (GB/s over 64 MiB; chosen implementation: %s)\n",
		       lm_zero_impl());
		if (zrc == 0) {
			printf("  zero pages: chosen %.2f, avx2 %.2f, sse2 %.2f, words %.2f\n",
			       zf.zero_gbs[0], zf.zero_gbs[1], zf.zero_gbs[2], zf.zero_gbs[3]);
			printf("  data pages: %.2f ns/page from memory, %.2f ns/page in cache (the "
			       "sample decides)\n",
			       zf.data_ns, zf.data_hot_ns);
			printf("  one late non-zero byte: %.2f GB/s\n", zf.late_gbs);
			printf("  reference: memcpy %.2f GB/s, memchr %.2f GB/s\n", zf.memcpy_gbs,
			       zf.memchr_gbs);
		} else {
			printf("  failed: %s\n", lm_strerror(zrc));
		}
		printf("\ntargets (issue 2, set for the default 2^28 pages):\n");
		printf("  word and summary beat bit-by-bit in every condition: %s\n",
		       beat_bit ? "met" : "NOT MET");
		printf("  summary scan of all-clean under 1/50 of the word scan: %s (word/summary "
		       "= %.1fx)\n",
		       t_clean ? "met" : "NOT MET", clean_ratio);
		printf("  0.2%% uniform: summary at most 5%% slower than word: %s (summary/word = "
		       "%.3f)\n",
		       t_uniform ? "met" : "NOT MET", uniform_ratio);
		printf("  every method found the same pages: %s\n", bad ? "NO" : "yes");
	}

	munmap(c.bytes, n);
	lm_sbitmap_destroy(&c.s);
	return bad ? 1 : 0;
}
