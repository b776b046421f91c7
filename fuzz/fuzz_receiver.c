/*
 * libFuzzer target for the whole receiver (lm_migrate_receive in
 * src/migrate): the input is the sender's side of a connection. A writer
 * thread pushes it into a socketpair and then drains the receiver's
 * answers; the receiver runs its real path (handshake, every record,
 * TABLE records into a skip map, the UFFDIO_COPY filler or plain reads,
 * the digest, RESULT and the wait for COMMIT) against real destination
 * memory that the workload's setup() maps for whatever layout the HELLO
 * announces: each region its own mapping between PROT_NONE guard pages, so
 * a write outside a region faults, and unmapped only after the receive
 * returned.
 *
 * Bounded so that the fuzzer does not run out of memory: setup() refuses
 * (as a small destination would) layouts of more than MAX_TOTAL_PAGES
 * pages (4 MiB) or with page indices at or past MAX_END_PAGE (the receiver
 * keeps maps of end_page bits).
 *
 * Input: byte 0 selects options, the rest is the stream.
 *   bits 1-4: capabilities this receiver refuses (caps_disabled: zstd,
 *             skip-balloon, table-stream, prepare).
 *   bit 0:    the workload's load_state refuses a device named "bad" and
 *             prepare() fails, with a reason (explain).
 *   bit 5:    no skip map (the skip_map op returns NULL).
 *   bit 6:    every frame's checksum is recomputed first (on a copy), so
 *             that mutations get past the checksum to the checks behind it.
 *   bit 7:    no UFFDIO_COPY filler: pages are read straight into memory.
 *
 * FUZZ_RECEIVER_VERBOSE=1 in the environment prints each receive's outcome.
 *
 * Checked after each receive (abort() on a violation): finish() called
 * exactly once when setup() was; success only with finish(0) and, unless
 * no-digest was negotiated, with the digest verified and the memory itself
 * hashing to the stream's DIGEST record (so the receiver's running digest
 * did not drift from what it wrote); a failure always with a message and a
 * failing finish().
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "livemig/migrate.h"

#define MAX_TOTAL_PAGES 1024u	  /* 4 MiB of destination memory */
#define MAX_END_PAGE (1ull << 20) /* page index space: 4 GiB */

struct fz {
	bool strict; /* bit 0: refuse "bad" devices, fail prepare */
	bool no_skip;
	int setup_calls, finish_calls, finish_err;
	uint32_t n;
	uint8_t *base[LM_STREAM_MAX_REGIONS];
	size_t len[LM_STREAM_MAX_REGIONS];
	struct lm_mem_region r[LM_STREAM_MAX_REGIONS];
	lm_skip_map *skip;
	uint64_t end_page;
	const char *why;
};

static int fz_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct fz *z = ctx;
	z->setup_calls++;
	if (l->total_pages > MAX_TOTAL_PAGES || l->end_page > MAX_END_PAGE) {
		z->why = "fuzz: layout too big for this destination";
		return -E2BIG;
	}
	z->end_page = l->end_page;
	for (uint32_t i = 0; i < l->nregions; i++) {
		size_t len = (size_t)(out[i].npages + 2) * LM_PAGE_SIZE;
		uint8_t *b = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (b == MAP_FAILED)
			return -ENOMEM;
		z->base[i] = b;
		z->len[i] = len;
		z->n = i + 1;
		if (mprotect(b + LM_PAGE_SIZE, (size_t)out[i].npages * LM_PAGE_SIZE, PROT_READ | PROT_WRITE))
			return -errno;
		out[i].host = b + LM_PAGE_SIZE;
		z->r[i] = out[i];
	}
	return 0;
}

static lm_skip_map *fz_skip_map(void *ctx)
{
	struct fz *z = ctx;
	if (z->no_skip)
		return NULL;
	if (!z->skip && lm_skip_map_new(z->end_page, &z->skip) < 0)
		return NULL;
	return z->skip;
}

static int fz_load(void *ctx, const char *name, const void *blob, size_t len)
{
	struct fz *z = ctx;
	(void)blob;
	(void)len;
	if (z->strict && !strcmp(name, "bad")) {
		z->why = "fuzz: this device refuses its state";
		return -EINVAL;
	}
	return 0;
}

static int fz_prepare(void *ctx)
{
	struct fz *z = ctx;
	if (z->strict) {
		z->why = "fuzz: not getting ready";
		return -EAGAIN;
	}
	return 0;
}

static void fz_finish(void *ctx, int err, const char *msg)
{
	struct fz *z = ctx;
	(void)msg;
	z->finish_calls++;
	z->finish_err = err;
}

static const char *fz_explain(void *ctx)
{
	struct fz *z = ctx;
	return z->why;
}

static const struct lm_workload_ops fz_ops = {
	.setup = fz_setup,
	.prepare = fz_prepare,
	.load_state = fz_load,
	.finish = fz_finish,
	.skip_map = fz_skip_map,
	.explain = fz_explain,
};

struct writer {
	int fd;
	const uint8_t *p;
	size_t n;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	size_t off = 0;
	while (off < w->n) {
		ssize_t k = send(w->fd, w->p + off, w->n - off, MSG_NOSIGNAL);
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	shutdown(w->fd, SHUT_WR);
	/* Drain the answers so that the receiver never waits on a full buffer. */
	uint8_t sink[4096];
	while (read(w->fd, sink, sizeof(sink)) > 0)
		;
	return NULL;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/*
 * Walks the frames as the receiver would cut them: with fix, rewrites each
 * checksum; returns the first DIGEST record's value in *dig (if any).
 */
static bool walk(uint8_t *p, size_t len, bool fix, lm_hash128 *dig)
{
	bool have = false;
	size_t off = 0;
	while (len - off >= LM_FRAME_HDR) {
		uint8_t *h = p + off;
		lm_frame f = { .type = (uint16_t)(h[0] | h[1] << 8),
			       .flags = (uint16_t)(h[2] | h[3] << 8),
			       .payload_len = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
					      (uint32_t)h[7] << 24 };
		if (f.payload_len > len - off - LM_FRAME_HDR)
			break;
		if (fix) {
			uint32_t c = lm_stream_checksum(&f, h + LM_FRAME_HDR, f.payload_len);
			for (int i = 0; i < 4; i++)
				h[8 + i] = (uint8_t)(c >> (8 * i));
		}
		if (!have && f.type == LM_REC_DIGEST && f.payload_len == 24) {
			dig->lo = le64(h + LM_FRAME_HDR);
			dig->hi = le64(h + LM_FRAME_HDR + 8);
			have = true;
		}
		off += LM_FRAME_HDR + f.payload_len;
	}
	return have;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t opt = data[0];
	size_t n = size - 1;
	uint8_t *in = malloc(n ? n : 1);
	if (!in)
		return 0;
	memcpy(in, data + 1, n);
	lm_hash128 dig = { 0, 0 };
	bool have_dig = walk(in, n, opt & 0x40, &dig);

	if (opt & 0x80)
		setenv("LIVEMIG_NO_UFFDIO_COPY", "1", 1);
	else
		unsetenv("LIVEMIG_NO_UFFDIO_COPY");

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		free(in);
		return 0;
	}
	struct writer w = { .fd = sv[0], .p = in, .n = n };
	pthread_t th;
	if (pthread_create(&th, NULL, writer_main, &w)) {
		close(sv[0]);
		close(sv[1]);
		free(in);
		return 0;
	}
	struct fz z = { .strict = opt & 1, .no_skip = opt & 0x20 };
	struct lm_receive_params rp = { .caps_disabled = (uint64_t)(opt & 0x1e), .idle_timeout_ms = 5000 };
	struct lm_receive_stats st;
	int err = lm_migrate_receive(sv[1], &rp, &fz_ops, &z, &st);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);

	if (getenv("FUZZ_RECEIVER_VERBOSE"))
		fprintf(stderr, "opt %#04x: caps %#llx: %d %s\n", opt, (unsigned long long)st.caps, err, err ? st.error : "ok");
	if (z.setup_calls > 1 || z.finish_calls != (z.setup_calls ? 1 : 0))
		abort();
	if (err == 0 && (st.caps & LM_CAP_NO_DIGEST)) {
		/* A stream without DIGEST: only the checksums were checked. */
		if (z.finish_err != 0)
			abort();
	} else if (err == 0) {
		if (!st.digest_ok || z.finish_err != 0 || !have_dig)
			abort();
		/* The memory itself, hashed in one pass, against the DIGEST
		 * record the receiver says it verified. */
		lm_hash128 acc = { 0, 0 };
		for (uint32_t i = 0; i < z.n; i++)
			lm_digest_add_memory(&acc, z.r[i].first_page, z.r[i].npages, z.r[i].host);
		if (!lm_hash128_eq(acc, dig))
			abort();
	} else {
		if (!st.error[0] || (z.finish_calls && z.finish_err == 0))
			abort();
	}
	for (uint32_t i = 0; i < z.n; i++)
		munmap(z.base[i], z.len[i]);
	lm_skip_map_free(z.skip);
	free(in);
	return 0;
}
