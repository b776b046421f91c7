/*
 * livemig bench migrate: whole migrations of idle memory through the real
 * engine, over TCP loopback to a receiver thread in this process, for
 * several region sizes and three kinds of content:
 *
 *   mostly-zero  one page in 64 holds random data, the rest was never
 *                written (a freshly booted guest: the common big case)
 *   half-random  blocks of 64 random pages alternating with 64 zero pages
 *   all-random   every page random (incompressible, the worst case)
 *
 * Each row is one migration (handshake, round 1, final pass, digest check,
 * COMMIT): total time, GB/s of guest memory and of wire bytes, bytes on
 * the wire, downtime, and whether the receiver's digest matched. The
 * source is not written during the run, so this measures the copy
 * pipeline, not convergence. The dirty source is userfaultfd (--source
 * uffd, the default where the kernel has it): it knows which pages were
 * never touched, and those are neither read nor sent. --source sim (the
 * software log) makes the engine read every page, as QEMU does.
 *
 * Memory: a case needs its data pages resident twice (source and
 * destination; zero pages are never written on either side). Cases over
 * --max-resident (default 10 GiB: the machine has 24 GiB and is shared)
 * are skipped with the reason printed; with the default sizes that is 16G
 * half-random (16 GiB) and 16G all-random (32 GiB).
 *
 * With --channels 1,2,4 each case runs once per channel count (multifd:
 * the extra connections go to the same listener, docs/stream.md 3.16).
 * --transport unix runs over a UNIX socket instead of TCP loopback.
 * --baselines measures, right after each case, the same number of wire
 * bytes from the same source memory over one raw connection of the same
 * kind (bench/raw.c: into a discard buffer, into fresh memory populated
 * ahead, into reused memory) and prints livemig's wire rate as a ratio of
 * the fresh one (its destination memory is fresh too).
 *
 *   livemig bench migrate [--sizes 1G,4G,16G] [--kinds mostly-zero,...]
 *                         [--source uffd|sim] [--zstd] [--channels 1,2,4]
 *                         [--transport tcp|unix] [--baselines]
 *                         [--max-resident 10G] [--json]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
#include "cli/cli.h"
#include "livemig/migrate.h"

enum kind { MOSTLY_ZERO, HALF_RANDOM, ALL_RANDOM, NKINDS };
static const char *const kind_names[NKINDS] = { "mostly-zero", "half-random", "all-random" };

/* Data pages of a case, for the resident-memory estimate and the fill. */
static uint64_t data_pages(enum kind k, uint64_t npages)
{
	switch (k) {
	case MOSTLY_ZERO:
		return npages / 64;
	case HALF_RANDOM:
		return npages / 2;
	default:
		return npages;
	}
}

static bool is_data(enum kind k, uint64_t page)
{
	switch (k) {
	case MOSTLY_ZERO:
		return page % 64 == 0;
	case HALF_RANDOM:
		return (page / 64) % 2 == 0;
	default:
		return true;
	}
}

static void fill(uint8_t *mem, uint64_t npages, enum kind k)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (uint64_t p = 0; p < npages; p++) {
		if (!is_data(k, p))
			continue;
		uint64_t *w = (uint64_t *)(mem + p * LM_PAGE_SIZE);
		for (size_t i = 0; i < LM_PAGE_SIZE / 8; i++) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			w[i] = x * 0x2545F4914F6CDD1Dull;
		}
	}
}

/* ---- the workloads: nothing runs on the source; the destination maps ---- */

static int idle_pause(void *ctx)
{
	return 0;
}

static int idle_resume(void *ctx)
{
	return 0;
}

static const struct lm_workload_ops source_ops = {
	.pause = idle_pause,
	.resume = idle_resume,
};

struct dest {
	void *mem;
	size_t len;
	int finish_err;
};

static int dest_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct dest *d = ctx;
	if (l->nregions != 1)
		return -EINVAL;
	d->len = (size_t)out[0].npages * LM_PAGE_SIZE;
	d->mem = mmap(NULL, d->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (d->mem == MAP_FAILED) {
		d->mem = NULL;
		return -ENOMEM;
	}
	out[0].host = d->mem;
	return 0;
}

static void dest_finish(void *ctx, int err, const char *msg)
{
	struct dest *d = ctx;
	d->finish_err = err;
}

static const struct lm_workload_ops dest_ops = {
	.setup = dest_setup,
	.finish = dest_finish,
};

struct receiver {
	int lfd;
	struct dest d;
	struct lm_receive_stats st;
	int err;
};

/* Channels come to the same listener. */
static int rx_accept_channel(void *arg, int timeout_ms)
{
	struct receiver *r = arg;
	return lm_transport_accept(r->lfd, timeout_ms);
}

static int tx_connect_channel(void *arg, unsigned index)
{
	(void)index;
	return lm_transport_connect(arg);
}

static void *receiver_main(void *arg)
{
	struct receiver *r = arg;
	int fd = lm_transport_accept(r->lfd, 60000);
	if (fd < 0) {
		r->err = fd;
		snprintf(r->st.error, sizeof(r->st.error), "accept: %s", lm_strerror(fd));
		return NULL;
	}
	struct lm_receive_params p = { .idle_timeout_ms = 60000, .accept_channel = rx_accept_channel,
				       .channel_arg = r };
	r->err = lm_migrate_receive(fd, &p, &dest_ops, &r->d, &r->st);
	close(fd);
	return NULL;
}

/* ---- one case ---- */

struct row {
	uint64_t size;
	enum kind kind;
	unsigned channels;
	bool skipped;
	char why[160];
	double fill_s;
	double wall_s; /* lm_migrate_send: connect to COMMIT */
	struct lm_migrate_stats st;
	struct lm_receive_stats rst;
	int err;
	char error[300];
	bool raw_on;
	double raw[LM_BENCH_RAW_N]; /* GB/s, 0: failed */
};

static bool opt_unix, opt_baselines;

static int run_case(uint64_t size, enum kind k, bool zstd, bool uffd, unsigned channels, struct row *row)
{
	uint64_t npages = size / LM_PAGE_SIZE;
	struct lm_mem_region reg = { 0, npages, NULL };
	struct lm_dirty_source *src = NULL;
	struct receiver rx = { .lfd = -1 };
	pthread_t th;
	bool th_on = false;
	int fd = -1, err;

	reg.host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (reg.host == MAP_FAILED) {
		reg.host = NULL;
		err = -ENOMEM;
		snprintf(row->error, sizeof(row->error), "cannot map %llu MiB", (unsigned long long)(size >> 20));
		goto out;
	}
	double t0 = bench_now();
	fill(reg.host, npages, k);
	row->fill_s = bench_now() - t0;

	err = uffd ? lm_uffd_source_new(&src) : lm_sim_source_new(LM_SIM_EXCHANGE, &src);
	if (err)
		goto out;
	struct lm_uri u;
	char upath[108];
	snprintf(upath, sizeof(upath), "unix:/tmp/lm-bench-migrate-%d.sock", (int)getpid());
	lm_uri_parse(opt_unix ? upath : "tcp:127.0.0.1:0", &u);
	if (opt_unix)
		unlink(u.path);
	rx.lfd = lm_transport_listen(&u);
	if (rx.lfd < 0) {
		err = rx.lfd;
		snprintf(row->error, sizeof(row->error), "listen: %s", lm_strerror(err));
		goto out;
	}
	if (!opt_unix)
		snprintf(u.port, sizeof(u.port), "%d", lm_transport_local_port(rx.lfd));
	if (pthread_create(&th, NULL, receiver_main, &rx)) {
		err = -EAGAIN;
		goto out;
	}
	th_on = true;
	fd = lm_transport_connect(&u);
	if (fd < 0) {
		err = fd;
		snprintf(row->error, sizeof(row->error), "connect: %s", lm_strerror(err));
		goto out;
	}
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.compress = zstd;
	p.channels = channels;
	p.connect_channel = tx_connect_channel;
	p.channel_arg = &u;
	struct lm_migrate_stats st;
	t0 = bench_now();
	err = lm_migrate_send(fd, &reg, 1, src, &source_ops, NULL, &p, &st);
	row->wall_s = bench_now() - t0;
	row->st = st;
	if (err)
		snprintf(row->error, sizeof(row->error), "sender: %s", st.error);
out:
	if (fd >= 0)
		close(fd);
	if (th_on) {
		if (err)
			shutdown(rx.lfd, SHUT_RDWR);
		pthread_join(th, NULL);
		row->rst = rx.st;
		if (!err && rx.err) {
			err = rx.err;
			snprintf(row->error, sizeof(row->error), "receiver: %s", rx.st.error);
		}
	}
	if (rx.lfd >= 0)
		close(rx.lfd);
	if (opt_unix)
		unlink(u.path);
	/* The same wire bytes from the same (populated) source memory. */
	if (!err && opt_baselines) {
		size_t len = row->st.transferred < size ? (size_t)row->st.transferred : (size_t)size;
		row->raw_on = true;
		for (int d = 0; d < LM_BENCH_RAW_N; d++) {
			char why[160];
			if (lm_bench_raw(reg.host, len, opt_unix, (enum lm_bench_raw_dest)d, &row->raw[d], why,
					 sizeof(why)) < 0) {
				row->raw[d] = 0;
				fprintf(stderr, "    raw %s: %s\n", lm_bench_raw_names[d], why);
			}
		}
	}
	if (rx.d.mem)
		munmap(rx.d.mem, rx.d.len);
	lm_dirty_source_free(src);
	if (reg.host)
		munmap(reg.host, size);
	row->err = err;
	if (err && !row->error[0])
		snprintf(row->error, sizeof(row->error), "%s", lm_strerror(err));
	return err;
}

/* ---- output ---- */

static void size_name(uint64_t size, char *out, size_t cap)
{
	if (size >= (1ull << 30) && size % (1ull << 30) == 0)
		snprintf(out, cap, "%lluG", (unsigned long long)(size >> 30));
	else
		snprintf(out, cap, "%lluM", (unsigned long long)(size >> 20));
}

static double secs(const struct row *r)
{
	return r->wall_s > 1e-6 ? r->wall_s : 1e-6;
}

static void print_table(const struct row *rows, size_t n, bool zstd, bool uffd, uint64_t max_res)
{
	printf("bench migrate: %s, receiver thread, idle source, dirty source %s, %s; "
	       "resident limit %llu GiB\n\n", opt_unix ? "UNIX socket" : "TCP loopback",
	       uffd ? "uffd (never-touched pages skipped)" : "sim (every page read)",
	       zstd ? "zstd offered" : "no compression", (unsigned long long)(max_res >> 30));
	printf("%-5s %-12s %3s %9s %11s %11s %12s %10s %7s", "size", "memory", "ch", "total s", "mem GB/s",
	       "wire GB/s", "wire bytes", "downtime", "digest");
	if (opt_baselines)
		printf("  %8s %8s %8s %7s", "raw-disc", "raw-frsh", "raw-reus", "/fresh");
	printf("\n");
	for (size_t i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		char sz[16];
		size_name(r->size, sz, sizeof(sz));
		if (r->skipped) {
			printf("%-5s %-12s skipped: %s\n", sz, kind_names[r->kind], r->why);
			continue;
		}
		if (r->err) {
			printf("%-5s %-12s FAILED: %s\n", sz, kind_names[r->kind], r->error);
			continue;
		}
		double t = secs(r);
		printf("%-5s %-12s %3u %9.3f %11.2f %11.3f %12llu %8.1fms %7s", sz, kind_names[r->kind], r->channels, t,
		       (double)r->size / t / 1e9, (double)r->st.transferred / t / 1e9,
		       (unsigned long long)r->st.transferred, (double)r->st.downtime_us / 1000,
		       r->rst.digest_ok ? "ok" : "BAD");
		if (r->raw_on)
			printf("  %8.2f %8.2f %8.2f %7.2f", r->raw[0], r->raw[1], r->raw[2],
			       r->raw[1] > 0 ? (double)r->st.transferred / t / 1e9 / r->raw[1] : 0);
		printf("\n");
	}
}

static void print_json(const struct row *rows, size_t n, bool zstd, bool uffd)
{
	printf("[\n");
	for (size_t i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		char sz[16];
		size_name(r->size, sz, sizeof(sz));
		printf("  {\"size\": \"%s\", \"bytes\": %llu, \"memory\": \"%s\", \"source\": \"%s\", \"zstd\": %s, "
		       "\"channels\": %u",
		       sz, (unsigned long long)r->size, kind_names[r->kind], uffd ? "uffd" : "sim",
		       zstd ? "true" : "false", r->channels);
		if (r->skipped) {
			printf(", \"skipped\": \"%s\"}", r->why);
		} else if (r->err) {
			printf(", \"error\": \"%s\"}", r->error);
		} else {
			double t = secs(r);
			printf(", \"total-time-s\": %.4f, \"mem-gbps\": %.3f, \"wire-gbps\": %.4f, \"wire-bytes\": %llu, "
			       "\"downtime-ms\": %.3f, \"normal\": %llu, \"duplicate\": %llu, \"skipped\": %llu, "
			       "\"rounds\": %llu, \"digest-ok\": %s",
			       t, (double)r->size / t / 1e9, (double)r->st.transferred / t / 1e9,
			       (unsigned long long)r->st.transferred, (double)r->st.downtime_us / 1000,
			       (unsigned long long)r->st.normal, (unsigned long long)r->st.duplicate,
			       (unsigned long long)r->st.skipped, (unsigned long long)r->st.rounds, r->rst.digest_ok ? "true" : "false");
			if (r->raw_on)
				printf(", \"raw-discard-gbps\": %.3f, \"raw-fresh-gbps\": %.3f, \"raw-reused-gbps\": %.3f",
				       r->raw[0], r->raw[1], r->raw[2]);
			printf("}");
		}
		printf("%s\n", i + 1 < n ? "," : "");
	}
	printf("]\n");
}

static void usage(FILE *f)
{
	fprintf(f, "usage: livemig bench migrate [--sizes 1G,4G,16G] [--kinds mostly-zero,half-random,all-random]\n"
		   "                             [--source uffd|sim] [--zstd] [--channels 1,2,4] [--transport tcp|unix]\n"
		   "                             [--baselines] [--max-resident 10G] [--json]\n");
}

int lm_bench_migrate(int argc, char **argv)
{
	uint64_t sizes[16];
	size_t nsizes = 0;
	bool kinds[NKINDS] = { true, true, true };
	bool json = false, zstd = false, uffd = lm_uffd_supported() == 0;
	uint64_t max_res = 10ull << 30;
	const char *size_list = "1G,4G,16G";
	unsigned chans[8] = {1};
	size_t nchans = 1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--zstd")) {
			zstd = true;
		} else if (!strcmp(a, "--baselines")) {
			opt_baselines = true;
		} else if (!strcmp(a, "--transport") && i + 1 < argc) {
			i++;
			if (strcmp(argv[i], "tcp") && strcmp(argv[i], "unix")) {
				fprintf(stderr, "livemig bench migrate: --transport tcp or unix\n");
				return 2;
			}
			opt_unix = !strcmp(argv[i], "unix");
		} else if (!strcmp(a, "--source") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "uffd")) {
				uffd = true;
			} else if (!strcmp(argv[i], "sim")) {
				uffd = false;
			} else {
				fprintf(stderr, "livemig bench migrate: --source uffd or sim\n");
				return 2;
			}
		} else if (!strcmp(a, "--channels") && i + 1 < argc) {
			char *cl = strdup(argv[++i]), *sv = NULL;
			if (!cl)
				return 1;
			nchans = 0;
			for (char *t = strtok_r(cl, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
				char *e;
				long v = strtol(t, &e, 10);
				if (*e || v < 1 || v > (long)LM_STREAM_MAX_CHANNELS || nchans == 8) {
					fprintf(stderr, "livemig bench migrate: bad --channels '%s' (1..%u, at most 8 values)\n",
						t, LM_STREAM_MAX_CHANNELS);
					free(cl);
					return 2;
				}
				chans[nchans++] = (unsigned)v;
			}
			free(cl);
			if (!nchans) {
				fprintf(stderr, "livemig bench migrate: --channels needs a value\n");
				return 2;
			}
		} else if (!strcmp(a, "--sizes") && i + 1 < argc) {
			size_list = argv[++i];
		} else if (!strcmp(a, "--max-resident") && i + 1 < argc) {
			if (lm_cli_parse_size(argv[++i], &max_res)) {
				fprintf(stderr, "livemig bench migrate: bad size '%s'\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(a, "--kinds") && i + 1 < argc) {
			char *list = strdup(argv[++i]), *save = NULL;
			if (!list)
				return 1;
			memset(kinds, 0, sizeof(kinds));
			for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				int k;
				for (k = 0; k < NKINDS && strcmp(t, kind_names[k]); k++)
					;
				if (k == NKINDS) {
					fprintf(stderr, "livemig bench migrate: unknown kind '%s'\n", t);
					free(list);
					return 2;
				}
				kinds[k] = true;
			}
			free(list);
		} else {
			usage(stderr);
			return 2;
		}
	}
	char *list = strdup(size_list), *save = NULL;
	if (!list)
		return 1;
	for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t s;
		if (nsizes == 16 || lm_cli_parse_size(t, &s) || s < (1u << 20) || s % LM_PAGE_SIZE) {
			fprintf(stderr, "livemig bench migrate: bad size '%s' (at least 1M, whole pages, at most 16)\n",
				t);
			free(list);
			return 2;
		}
		sizes[nsizes++] = s;
	}
	free(list);

	static struct row rows[16 * NKINDS * 8];
	size_t n = 0;
	int failed = 0;
	for (size_t i = 0; i < nsizes; i++) {
		for (int kc = 0; kc < NKINDS * (int)nchans; kc++) {
			int k = kc / (int)nchans;
			if (!kinds[k])
				continue;
			struct row *r = &rows[n++];
			memset(r, 0, sizeof(*r));
			r->size = sizes[i];
			r->kind = (enum kind)k;
			r->channels = chans[kc % (int)nchans];
			uint64_t res = 2 * data_pages(r->kind, sizes[i] / LM_PAGE_SIZE) * LM_PAGE_SIZE;
			if (res > max_res) {
				r->skipped = true;
				snprintf(r->why, sizeof(r->why),
					 "needs %.1f GiB resident (source + destination data), over the %.1f GiB limit",
					 (double)res / (1ull << 30), (double)max_res / (1ull << 30));
				continue;
			}
			if (!json) {
				char sz[16];
				size_name(sizes[i], sz, sizeof(sz));
				fprintf(stderr, "  %s %s, %u channel(s) ...\n", sz, kind_names[k], r->channels);
			}
			if (run_case(sizes[i], r->kind, zstd, uffd, r->channels, r) || !r->rst.digest_ok)
				failed++;
		}
	}
	if (json)
		print_json(rows, n, zstd, uffd);
	else
		print_table(rows, n, zstd, uffd, max_res);
	return failed ? 1 : 0;
}
