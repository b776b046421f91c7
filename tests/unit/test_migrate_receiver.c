/*
 * The receiver end against bad input: streams truncated at many points,
 * with single bits flipped, and crafted ones whose checksums are right but
 * whose contents are hostile (huge counts, pages past the end of the
 * layout, unknown capabilities, a wrong version, a second HELLO, records
 * after END, no digest, ...). Each must be rejected with an error that
 * names what was wrong, without a crash (the test runs under ASan+UBSan),
 * without a write outside the destination regions (each sits between
 * PROT_NONE guard pages, so a stray write kills the test), and finish()
 * must never report success. A well-formed stream, built with the same
 * tools, must still go through.
 *
 * The same for the VMM's destination (lm_vm_incoming, with a real KVM VM
 * built around the received RAM): layouts valid on the wire that the VM
 * cannot take are refused with REFUSE before any page is written, and
 * vm-setup blobs that do not fit the layout fail the receive, each with a
 * message naming what is wrong; layouts the VMM makes go through, with the
 * pages written while the VM was being built.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>
#include <cmocka.h>

#include "livemig/migrate.h"
#include "livemig/vmm_migrate.h"
#include "migrate/internal.h"
#include "support/dirty_check.h"
#include "support/mig_helpers.h"

/* The layout every stream announces: two regions far apart. */
#define R0_FIRST 0u
#define R0_PAGES 64u
#define R1_FIRST 1000u
#define R1_PAGES 32u

/* ---- destination workload with guard pages ---- */

struct gdest {
	void *base[4];
	size_t len[4];
	struct lm_mem_region r[4];
	size_t n;
	int finish_calls, finish_err;
	char finish_msg[256];
	int devices;
};

static int gd_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct gdest *d = ctx;
	if (l->nregions > 4)
		return -E2BIG;
	for (uint32_t i = 0; i < l->nregions; i++) {
		size_t len = (out[i].npages + 2) * LM_PAGE_SIZE;
		uint8_t *b = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (b == MAP_FAILED)
			return -ENOMEM;
		d->base[i] = b;
		d->len[i] = len;
		d->n = i + 1;
		if (mprotect(b + LM_PAGE_SIZE, out[i].npages * LM_PAGE_SIZE, PROT_READ | PROT_WRITE))
			return -errno;
		out[i].host = b + LM_PAGE_SIZE;
		d->r[i] = out[i];
	}
	return 0;
}

static int gd_load(void *ctx, const char *name, const void *blob, size_t len)
{
	struct gdest *d = ctx;
	d->devices++;
	return strcmp(name, "bad") == 0 ? -EINVAL : 0;
}

static void gd_finish(void *ctx, int err, const char *msg)
{
	struct gdest *d = ctx;
	d->finish_calls++;
	d->finish_err = err;
	snprintf(d->finish_msg, sizeof(d->finish_msg), "%s", msg);
}

/* Post-copy: the "guest" runs from here on (it touches nothing). */
static int gd_postcopy_start(void *ctx)
{
	(void)ctx;
	return 0;
}

static const struct lm_workload_ops gd_ops = {
	.setup = gd_setup,
	.load_state = gd_load,
	.finish = gd_finish,
	.postcopy_start = gd_postcopy_start,
};

static void gd_free(struct gdest *d)
{
	for (size_t i = 0; i < d->n; i++)
		munmap(d->base[i], d->len[i]);
	d->n = 0;
}

/* ---- feeding a stream to the receiver ---- */

struct feed {
	int fd;
	const uint8_t *p;
	size_t n;
	uint8_t back[4096]; /* what the receiver answered */
	size_t nback;
	size_t pause_at; /* nonzero: stop after this many bytes for pause_ms */
	unsigned pause_ms;
};

static void *feeder(void *arg)
{
	struct feed *f = arg;
	size_t off = 0;
	while (off < f->n) {
		size_t upto = f->pause_at && off < f->pause_at ? f->pause_at : f->n;
		ssize_t w = send(f->fd, f->p + off, upto - off, MSG_NOSIGNAL);
		if (w <= 0)
			break;
		off += (size_t)w;
		if (off == f->pause_at)
			usleep(f->pause_ms * 1000);
	}
	/* End of the stream: the receiver sees the connection close here. */
	shutdown(f->fd, SHUT_WR);
	for (;;) {
		ssize_t r = read(f->fd, f->back + f->nback, sizeof(f->back) - f->nback);
		if (r <= 0 || (f->nback += (size_t)r) == sizeof(f->back))
			break;
	}
	return NULL;
}

struct outcome {
	int err;
	char msg[256];
	struct lm_receive_stats st;
	int finish_calls, finish_err;
	/* the receiver's last answer: type and status (REFUSE/RESULT) */
	uint16_t last_type;
	int32_t last_code;
	char last_text[256];
	int readies; /* READY frames among the answers */
};

/* The source memory the valid stream carries (pages of R0 then R1). */
static uint8_t *src_mem;

static void decode_answers(const struct feed *fd, struct outcome *o);

static void feed_one(const uint8_t *p, size_t n, uint64_t caps_disabled, struct outcome *o, bool check_mem)
{
	int sv[2];
	pthread_t th;
	struct gdest d;
	struct feed f = { 0 };
	memset(&d, 0, sizeof(d));
	memset(o, 0, sizeof(*o));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f.fd = sv[0];
	f.p = p;
	f.n = n;
	assert_int_equal(pthread_create(&th, NULL, feeder, &f), 0);
	struct lm_receive_params rp = { .caps_disabled = caps_disabled, .idle_timeout_ms = 20000 };
	o->err = lm_migrate_receive(sv[1], &rp, &gd_ops, &d, &o->st);
	snprintf(o->msg, sizeof(o->msg), "%s", o->st.error);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	o->finish_calls = d.finish_calls;
	o->finish_err = d.finish_err;
	if (check_mem && o->err == 0) {
		assert_memory_equal(d.r[0].host, src_mem, R0_PAGES * LM_PAGE_SIZE);
		assert_memory_equal(d.r[1].host, src_mem + R0_PAGES * LM_PAGE_SIZE, R1_PAGES * LM_PAGE_SIZE);
	}
	gd_free(&d);
	decode_answers(&f, o);
}

/* Decode what the receiver answered, frame by frame. */
static void decode_answers(const struct feed *fd, struct outcome *o)
{
	const struct feed f = *fd;
	lm_stream s;
	lm_stream_init(&s);
	s.caps = LM_CAP_KNOWN; /* decode every answer the receiver may give */
	size_t off = 0;
	while (off < f.nback) {
		lm_record rec;
		int64_t k = lm_stream_decode(&s, f.back + off, f.nback - off, &rec, NULL);
		if (k <= 0)
			break;
		o->last_type = rec.frame.type;
		if (rec.frame.type == LM_REC_READY)
			o->readies++;
		if (rec.frame.type == LM_REC_REFUSE || rec.frame.type == LM_REC_RESULT) {
			o->last_code = rec.u.status.code;
			snprintf(o->last_text, sizeof(o->last_text), "%s", rec.u.status.text);
		}
		off += (size_t)k;
	}
	lm_stream_destroy(&s);
}

/* A failed receive: an error, a message, finish never ok. */
static void assert_rejected(const struct outcome *o, const char *what)
{
	if (o->err == 0)
		fail_msg("%s: accepted", what);
	if (!o->msg[0])
		fail_msg("%s: rejected without a message", what);
	assert_false(o->st.digest_ok && o->err == 0);
	assert_true(o->finish_calls <= 1);
	if (o->finish_calls)
		assert_int_not_equal(o->finish_err, 0);
}

static void assert_rejected_with(const struct outcome *o, const char *what, const char *substr)
{
	assert_rejected(o, what);
	if (!strstr(o->msg, substr))
		fail_msg("%s: message \"%s\" does not mention \"%s\"", what, o->msg, substr);
}

/* ---- building streams ---- */

struct sb {
	lm_buf b;
	lm_stream s; /* encoder state: caps for zstd runs */
	size_t frames[64];
	size_t nframes;
};

static void sb_init(struct sb *x)
{
	memset(x, 0, sizeof(*x));
	lm_buf_init(&x->b);
	lm_stream_init(&x->s);
}

static void sb_fini(struct sb *x)
{
	lm_buf_destroy(&x->b);
	lm_stream_destroy(&x->s);
}

static void mark(struct sb *x)
{
	if (x->nframes < 64)
		x->frames[x->nframes++] = x->b.len;
}

/* A frame with any type, flags and payload, and a correct checksum. */
static void raw_frame(struct sb *x, uint16_t type, uint16_t flags, const void *payload, uint32_t len)
{
	mark(x);
	assert_int_equal(lm_buf_reserve(&x->b, LM_FRAME_HDR + len), 0);
	uint8_t *h = x->b.data + x->b.len;
	lm_frame f = { .type = type, .flags = flags, .payload_len = len };
	h[0] = (uint8_t)type;
	h[1] = (uint8_t)(type >> 8);
	h[2] = (uint8_t)flags;
	h[3] = (uint8_t)(flags >> 8);
	for (int i = 0; i < 4; i++)
		h[4 + i] = (uint8_t)(len >> (8 * i));
	uint32_t c = lm_stream_checksum(&f, payload, len);
	for (int i = 0; i < 4; i++)
		h[8 + i] = (uint8_t)(c >> (8 * i));
	if (len)
		memcpy(h + LM_FRAME_HDR, payload, len);
	x->b.len += LM_FRAME_HDR + len;
}

static void le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A RAM frame from a hand-made run header (and optional data). */
static void raw_run(struct sb *x, uint64_t first, uint32_t npages, uint8_t kind, uint8_t enc, uint16_t reserved,
		    const void *data, size_t dlen)
{
	uint8_t *p = calloc(1, LM_RUN_HDR + dlen);
	assert_non_null(p);
	le(p, first, 8);
	le(p + 8, npages, 4);
	p[12] = kind;
	p[13] = enc;
	le(p + 14, reserved, 2);
	if (dlen)
		memcpy(p + LM_RUN_HDR, data, dlen);
	raw_frame(x, LM_REC_RAM, 0, p, (uint32_t)(LM_RUN_HDR + dlen));
	free(p);
}

struct hello_opts {
	uint64_t magic;
	uint32_t version, page_size;
	uint64_t offered, mandatory;
	int64_t total_delta;
	uint32_t nregions; /* 0: the standard two */
	bool overlap, past_limit;
};

static void hello(struct sb *x, const struct hello_opts *o)
{
	uint32_t n = o && o->nregions ? o->nregions : 2;
	size_t len = 48 + 16 * (size_t)(n > 4 ? 2 : n);
	uint8_t *p = calloc(1, len);
	assert_non_null(p);
	uint64_t r1first = R1_FIRST, r1pages = R1_PAGES;
	if (o && o->overlap)
		r1first = R0_FIRST + 10;
	if (o && o->past_limit)
		r1pages = (1ull << 52);
	le(p, o && o->magic ? o->magic : LM_STREAM_MAGIC, 8);
	le(p + 8, o && o->version ? o->version : LM_STREAM_VERSION, 4);
	le(p + 12, o && o->page_size ? o->page_size : LM_PAGE_SIZE, 4);
	uint64_t offered = LM_CAP_RECORD_CSUM | LM_CAP_ZSTD | (o ? o->offered : 0);
	uint64_t mandatory = o && o->mandatory ? o->mandatory : LM_CAP_RECORD_CSUM;
	le(p + 16, offered | mandatory, 8);
	le(p + 24, mandatory, 8);
	le(p + 32, (uint64_t)((int64_t)(R0_PAGES + r1pages) + (o ? o->total_delta : 0)), 8);
	le(p + 40, n, 4);
	le(p + 48, R0_FIRST, 8);
	le(p + 56, R0_PAGES, 8);
	le(p + 64, r1first, 8);
	le(p + 72, r1pages, 8);
	raw_frame(x, LM_REC_HELLO, 0, p, (uint32_t)len);
	free(p);
	/* The encoder's view of the connection (for zstd runs). */
	lm_stream_region r[2] = { { R0_FIRST, R0_PAGES }, { R1_FIRST, R1_PAGES } };
	assert_int_equal(lm_stream_layout_init(&x->s.layout, r, 2, NULL), 0);
	x->s.caps = LM_CAP_RECORD_CSUM | LM_CAP_ZSTD;
}

static const uint8_t *src_page(uint64_t page)
{
	if (page >= R1_FIRST)
		return src_mem + (R0_PAGES + page - R1_FIRST) * LM_PAGE_SIZE;
	return src_mem + page * LM_PAGE_SIZE;
}

static void round_rec(struct sb *x, uint64_t n)
{
	mark(x);
	assert_int_equal(lm_stream_put_round(&x->b, n), 0);
}

/* The records of a good migration between HELLO and DIGEST: R0 pages
 * [0, 40) RAW data and [40, 64) zero; R1 [1000, 1016) zstd and the rest
 * zero; a second round resends two pages; one device. */
static void body(struct sb *x)
{
	uint8_t used;
	round_rec(x, 1);
	for (uint64_t p = 0; p < 40; p += 20) {
		mark(x);
		assert_int_equal(lm_stream_put_run_data(&x->s, &x->b, p, 20, src_page(p), LM_ENC_RAW, &used), 0);
	}
	mark(x);
	assert_int_equal(lm_stream_put_run_empty(&x->b, LM_RUN_ZERO, 40, 24), 0);
	mark(x);
	assert_int_equal(lm_stream_put_run_data(&x->s, &x->b, R1_FIRST, 16, src_page(R1_FIRST), LM_ENC_ZSTD, &used),
			 0);
	assert_int_equal(used, LM_ENC_ZSTD);
	mark(x);
	assert_int_equal(lm_stream_put_run_empty(&x->b, LM_RUN_ZERO, R1_FIRST + 16, 16), 0);
	round_rec(x, 2);
	mark(x);
	assert_int_equal(lm_stream_put_run_data(&x->s, &x->b, 5, 2, src_page(5), LM_ENC_RAW, &used), 0);
	mark(x);
	uint64_t blob[3] = { 1, 2, 3 };
	assert_int_equal(lm_stream_put_device(&x->b, "dev0", blob, sizeof(blob)), 0);
}

static lm_hash128 src_digest(void)
{
	lm_hash128 acc = { 0, 0 };
	lm_digest_add_memory(&acc, R0_FIRST, R0_PAGES, src_mem);
	lm_digest_add_memory(&acc, R1_FIRST, R1_PAGES, src_mem + R0_PAGES * LM_PAGE_SIZE);
	return acc;
}

static void digest_rec(struct sb *x)
{
	lm_hash128 d = src_digest();
	mark(x);
	assert_int_equal(lm_stream_put_digest(&x->b, d.lo, d.hi, R0_PAGES + R1_PAGES), 0);
}

static void end_rec(struct sb *x)
{
	mark(x);
	assert_int_equal(lm_stream_put_end(&x->b), 0);
}

static void commit_rec(struct sb *x)
{
	mark(x);
	assert_int_equal(lm_stream_put_commit(&x->b), 0);
}

static void prepare_rec(struct sb *x)
{
	mark(x);
	assert_int_equal(lm_stream_put_prepare(&x->b), 0);
}

static void valid(struct sb *x)
{
	hello(x, NULL);
	body(x);
	digest_rec(x);
	end_rec(x);
	commit_rec(x);
}

static int setup(void **state)
{
	src_mem = malloc((R0_PAGES + R1_PAGES) * LM_PAGE_SIZE);
	if (!src_mem)
		return -1;
	memset(src_mem, 0, (R0_PAGES + R1_PAGES) * LM_PAGE_SIZE);
	uint64_t rs = 42;
	for (uint64_t i = 0; i < 40 * LM_PAGE_SIZE / 8; i++)
		((uint64_t *)src_mem)[i] = lm_test_rand(&rs);
	/* R1: compressible pages (their own index, repeated). */
	for (uint64_t p = 0; p < 16; p++)
		for (uint64_t k = 0; k < LM_PAGE_SIZE / 8; k++)
			((uint64_t *)(src_mem + (R0_PAGES + p) * LM_PAGE_SIZE))[k] = R1_FIRST + p;
	return 0;
}

static int teardown(void **state)
{
	free(src_mem);
	return 0;
}

/* ---- tests ---- */

static void test_valid(void **state)
{
	struct sb x;
	struct outcome o;
	sb_init(&x);
	valid(&x);
	feed_one(x.b.data, x.b.len, 0, &o, true);
	if (o.err)
		print_message("%s\n", o.msg);
	assert_int_equal(o.err, 0);
	assert_true(o.st.digest_ok);
	assert_int_equal(o.finish_calls, 1);
	assert_int_equal(o.finish_err, 0);
	assert_int_equal(o.st.rounds, 2);
	assert_int_equal(o.st.devices, 1);
	assert_int_equal(o.last_type, LM_REC_RESULT);
	assert_int_equal(o.last_code, 0);
	/* An unknown capability that is only offered is simply not accepted. */
	sb_fini(&x);
	sb_init(&x);
	struct hello_opts h = { .offered = 1ull << 40 };
	hello(&x, &h);
	body(&x);
	digest_rec(&x);
	end_rec(&x);
	commit_rec(&x);
	feed_one(x.b.data, x.b.len, 0, &o, true);
	assert_int_equal(o.err, 0);
	assert_int_equal(o.st.caps & (1ull << 40), 0);
	assert_int_equal(o.readies, 0);
	sb_fini(&x);
	/* With prepare negotiated, PREPARE before the stop-and-copy is
	 * answered with READY, and the migration completes as before. */
	sb_init(&x);
	struct hello_opts hp = { .offered = LM_CAP_PREPARE };
	hello(&x, &hp);
	body(&x);
	prepare_rec(&x);
	digest_rec(&x);
	end_rec(&x);
	commit_rec(&x);
	feed_one(x.b.data, x.b.len, 0, &o, true);
	assert_int_equal(o.err, 0);
	assert_true(o.st.caps & LM_CAP_PREPARE);
	assert_int_equal(o.readies, 1);
	assert_int_equal(o.last_type, LM_REC_RESULT);
	assert_int_equal(o.last_code, 0);
	sb_fini(&x);
	/* With catch-up too, PREPARE may come again: each is answered. */
	sb_init(&x);
	struct hello_opts hc = { .offered = LM_CAP_PREPARE | LM_CAP_CATCH_UP };
	hello(&x, &hc);
	prepare_rec(&x);
	body(&x);
	prepare_rec(&x);
	prepare_rec(&x);
	digest_rec(&x);
	end_rec(&x);
	commit_rec(&x);
	feed_one(x.b.data, x.b.len, 0, &o, true);
	if (o.err)
		print_message("%s\n", o.msg);
	assert_int_equal(o.err, 0);
	assert_true(o.st.caps & LM_CAP_CATCH_UP);
	assert_int_equal(o.readies, 3);
	assert_int_equal(o.st.catch_ups, 2);
	assert_true(o.st.digest_ok);
	/* A receiver without it (switched off: an older one) refuses the
	 * second, by name. */
	feed_one(x.b.data, x.b.len, LM_CAP_CATCH_UP, &o, false);
	assert_int_equal(o.err, -EPROTO);
	assert_non_null(strstr(o.msg, "second PREPARE record"));
	assert_int_equal(o.readies, 1);
	sb_fini(&x);
}

/* Cut the stream at every frame boundary and at points inside each frame. */
static void test_truncated(void **state)
{
	struct sb x;
	sb_init(&x);
	valid(&x);
	size_t cuts[512], n = 0;
	size_t deltas[] = { 0, 1, 6, 11, 12, 13, 20, 27, 28, 4096 + 28, 8000 };
	for (size_t i = 0; i < x.nframes; i++) {
		size_t next = i + 1 < x.nframes ? x.frames[i + 1] : x.b.len;
		for (size_t k = 0; k < sizeof(deltas) / sizeof(deltas[0]); k++)
			if (x.frames[i] + deltas[k] < next)
				cuts[n++] = x.frames[i] + deltas[k];
		cuts[n++] = next - 1;
	}
	int no_commit = 0;
	for (size_t i = 0; i < n; i++) {
		struct outcome o;
		char what[64];
		snprintf(what, sizeof(what), "truncated at %zu of %zu", cuts[i], x.b.len);
		feed_one(x.b.data, cuts[i], 0, &o, false);
		/* Cut before END was complete: an incomplete stream. Cut in
		 * COMMIT: the receiver verified everything and said so, but
		 * without COMMIT the guest must not run here. */
		bool in_commit = cuts[i] >= x.frames[x.nframes - 1];
		assert_rejected_with(&o, what, in_commit ? "no commit from the sender" : "incomplete stream");
		if (in_commit) {
			no_commit++;
			assert_int_equal(o.last_type, LM_REC_RESULT);
			assert_int_equal(o.last_code, 0);
		}
	}
	print_message("%zu truncation points, %d inside COMMIT\n", n, no_commit);
	assert_true(n >= 50);
	assert_true(no_commit >= 2);
	sb_fini(&x);
}

/* Flip one bit: in every header byte of every frame, in run headers, and
 * every few hundred bytes of page data. The checksums must catch all. */
static void test_bitflips(void **state)
{
	struct sb x;
	sb_init(&x);
	valid(&x);
	uint8_t *copy = malloc(x.b.len);
	assert_non_null(copy);
	size_t tried = 0;
	/* A flipped run header is caught by the field checks that come before
	 * the checksum (page range, count, kind, encoding, reserved bits); a
	 * flipped type may turn into another known type that is out of place. */
	const char *known[] = { "checksum mismatch", "unknown record type", "unknown flags", "payload_len",
				"incomplete stream", "no commit from the sender", "does not start with HELLO",
				"RAM run", "table-stream was not negotiated", "postcopy-ram was not negotiated",
				"multifd was not negotiated",
				"unexpected" };
	for (size_t off = 0; off < x.b.len; off++) {
		bool in_header = false;
		for (size_t i = 0; i < x.nframes; i++)
			if (off >= x.frames[i] && off < x.frames[i] + LM_FRAME_HDR + LM_RUN_HDR)
				in_header = true;
		if (!in_header && off % 331)
			continue;
		memcpy(copy, x.b.data, x.b.len);
		copy[off] ^= (uint8_t)(1u << (off % 8));
		struct outcome o;
		char what[64];
		snprintf(what, sizeof(what), "bit %zu of byte %zu flipped", off % 8, off);
		feed_one(copy, x.b.len, 0, &o, false);
		assert_rejected(&o, what);
		bool named = false;
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			named |= strstr(o.msg, known[k]) != NULL;
		if (!named)
			fail_msg("%s: unexpected message \"%s\"", what, o.msg);
		tried++;
	}
	print_message("%zu bit flips rejected\n", tried);
	assert_true(tried >= 300);
	free(copy);
	sb_fini(&x);
}

/* One crafted stream: what to build, and the words the error must contain. */
static void crafted(const char *what, void (*build)(struct sb *), uint64_t caps_disabled, const char *expect,
		    uint16_t answer)
{
	struct sb x;
	struct outcome o;
	sb_init(&x);
	build(&x);
	feed_one(x.b.data, x.b.len, caps_disabled, &o, false);
	assert_rejected_with(&o, what, expect);
	/* The sender is told why (REFUSE during the handshake, RESULT after). */
	if (answer) {
		if (o.last_type != answer || o.last_code == 0 || !strstr(o.last_text, expect))
			fail_msg("%s: the answer (type 0x%04x, code %d, \"%s\") does not carry the error", what,
				 o.last_type, o.last_code, o.last_text);
	}
	sb_fini(&x);
}

static void b_huge_count(struct sb *x)
{
	hello(x, NULL);
	round_rec(x, 1);
	raw_run(x, 0, 0xffffffffu, LM_RUN_ZERO, LM_ENC_RAW, 0, NULL, 0);
}
static void b_count_above_max(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, LM_STREAM_MAX_RUN_PAGES + 1, LM_RUN_ZERO, LM_ENC_RAW, 0, NULL, 0);
}
static void b_zero_count(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, 0, LM_RUN_ZERO, LM_ENC_RAW, 0, NULL, 0);
}
static void b_past_region(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, R0_PAGES, 1, LM_RUN_ZERO, LM_ENC_RAW, 0, NULL, 0);
}
static void b_across_region_end(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, R0_PAGES - 4, 8, LM_RUN_ZERO, LM_ENC_RAW, 0, NULL, 0);
}
static void b_data_past_end(struct sb *x)
{
	/* RAW data that would land one page past the last region. */
	hello(x, NULL);
	raw_run(x, R1_FIRST + R1_PAGES - 1, 2, LM_RUN_DATA, LM_ENC_RAW, 0, src_mem, 2 * LM_PAGE_SIZE);
}
static void b_index_wraps(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, UINT64_MAX - 7, 16, LM_RUN_ZERO, LM_ENC_RAW, 0, NULL, 0);
}
static void b_between_regions(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 500, 1, LM_RUN_DATA, LM_ENC_RAW, 0, src_mem, LM_PAGE_SIZE);
}
static void b_unknown_mandatory(struct sb *x)
{
	struct hello_opts h = { .mandatory = LM_CAP_RECORD_CSUM | (1ull << 40) };
	hello(x, &h);
	body(x);
}
static void b_disabled_mandatory(struct sb *x)
{
	struct hello_opts h = { .mandatory = LM_CAP_RECORD_CSUM | LM_CAP_ZSTD };
	hello(x, &h);
	body(x);
}
static void b_csum_optional(struct sb *x)
{
	struct hello_opts h = { .mandatory = LM_CAP_ZSTD };
	hello(x, &h);
}
static void b_version(struct sb *x)
{
	struct hello_opts h = { .version = 2 };
	hello(x, &h);
	body(x);
}
static void b_magic(struct sb *x)
{
	struct hello_opts h = { .magic = 0x1122334455667788ull };
	hello(x, &h);
}
static void b_page_size(struct sb *x)
{
	struct hello_opts h = { .page_size = 8192 };
	hello(x, &h);
}
static void b_total_pages(struct sb *x)
{
	struct hello_opts h = { .total_delta = 1 };
	hello(x, &h);
}
static void b_overlap(struct sb *x)
{
	struct hello_opts h = { .overlap = true };
	hello(x, &h);
}
static void b_past_limit(struct sb *x)
{
	struct hello_opts h = { .past_limit = true };
	hello(x, &h);
}
static void b_many_regions(struct sb *x)
{
	struct hello_opts h = { .nregions = 100000 };
	hello(x, &h);
}
static void b_not_hello(struct sb *x)
{
	round_rec(x, 1);
}
static void b_second_hello(struct sb *x)
{
	hello(x, NULL);
	round_rec(x, 1);
	hello(x, NULL);
}
static void b_after_end(struct sb *x)
{
	hello(x, NULL);
	body(x);
	digest_rec(x);
	end_rec(x);
	round_rec(x, 3);
}
static void b_commit_early(struct sb *x)
{
	hello(x, NULL);
	body(x);
	commit_rec(x);
}
static void b_prepare_not_negotiated(struct sb *x)
{
	hello(x, NULL);
	body(x);
	prepare_rec(x);
}
static void b_prepare_twice(struct sb *x)
{
	struct hello_opts h = { .offered = LM_CAP_PREPARE };
	hello(x, &h);
	body(x);
	prepare_rec(x);
	prepare_rec(x);
}
static void b_prepare_after_digest(struct sb *x)
{
	struct hello_opts h = { .offered = LM_CAP_PREPARE };
	hello(x, &h);
	body(x);
	digest_rec(x);
	prepare_rec(x);
}
static void b_no_digest(struct sb *x)
{
	hello(x, NULL);
	body(x);
	end_rec(x);
	commit_rec(x);
}
static void b_wrong_digest(struct sb *x)
{
	hello(x, NULL);
	body(x);
	lm_hash128 d = src_digest();
	mark(x);
	assert_int_equal(lm_stream_put_digest(&x->b, d.lo ^ 1, d.hi, R0_PAGES + R1_PAGES), 0);
	end_rec(x);
	commit_rec(x);
}
static void b_missing_pages(struct sb *x)
{
	/* The digest is right for the source, but page 5's resend and the
	 * first data run are missing: the destination differs. */
	hello(x, NULL);
	round_rec(x, 1);
	mark(x);
	assert_int_equal(lm_stream_put_run_empty(&x->b, LM_RUN_ZERO, 40, 24), 0);
	digest_rec(x);
	end_rec(x);
	commit_rec(x);
}
static void b_digest_npages(struct sb *x)
{
	hello(x, NULL);
	body(x);
	lm_hash128 d = src_digest();
	mark(x);
	assert_int_equal(lm_stream_put_digest(&x->b, d.lo, d.hi, 7), 0);
	end_rec(x);
}
static void b_second_digest(struct sb *x)
{
	hello(x, NULL);
	body(x);
	digest_rec(x);
	digest_rec(x);
	end_rec(x);
}
static void b_device_after_digest(struct sb *x)
{
	hello(x, NULL);
	body(x);
	digest_rec(x);
	mark(x);
	assert_int_equal(lm_stream_put_device(&x->b, "late", "x", 1), 0);
	end_rec(x);
}
static void b_round_backwards(struct sb *x)
{
	hello(x, NULL);
	round_rec(x, 2);
	round_rec(x, 1);
}
static void b_unknown_type(struct sb *x)
{
	hello(x, NULL);
	raw_frame(x, 0x7777, 0, "abcd", 4);
}
static void b_flags(struct sb *x)
{
	hello(x, NULL);
	uint8_t r[8] = { 1 };
	raw_frame(x, LM_REC_ROUND, 0x8000, r, 8);
}
static void b_huge_payload(struct sb *x)
{
	hello(x, NULL);
	/* A header promising 4 GiB of DEVICE blob, and nothing behind it. */
	mark(x);
	uint8_t h[LM_FRAME_HDR] = { 0 };
	le(h, LM_REC_DEVICE, 2);
	le(h + 4, 0xffffffffu, 4);
	assert_int_equal(lm_buf_reserve(&x->b, sizeof(h)), 0);
	memcpy(x->b.data + x->b.len, h, sizeof(h));
	x->b.len += sizeof(h);
}
static void b_table(struct sb *x)
{
	hello(x, NULL);
	raw_frame(x, LM_REC_TABLE, 0, "tbl", 3);
}
static void b_result_from_sender(struct sb *x)
{
	hello(x, NULL);
	mark(x);
	assert_int_equal(lm_stream_put_result(&x->b, 0, "ok"), 0);
}
static void b_zstd_not_negotiated(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, 1, LM_RUN_DATA, LM_ENC_ZSTD, 0, "zzzz", 4);
}
static void b_zstd_garbage(struct sb *x)
{
	hello(x, NULL);
	uint8_t junk[300];
	memset(junk, 0xa5, sizeof(junk));
	raw_run(x, 0, 4, LM_RUN_DATA, LM_ENC_ZSTD, 0, junk, sizeof(junk));
}
static void b_zstd_wrong_size(struct sb *x)
{
	/* A valid zstd frame of one page on a two-page run. */
	hello(x, NULL);
	uint8_t z[1024];
	size_t zl = ZSTD_compress(z, sizeof(z), src_page(R1_FIRST), LM_PAGE_SIZE, 1);
	assert_false(ZSTD_isError(zl));
	raw_run(x, R1_FIRST, 2, LM_RUN_DATA, LM_ENC_ZSTD, 0, z, zl);
}
static void b_zstd_bomb(struct sb *x)
{
	/* A frame that claims 1 page but decompresses to more: 64 KiB of
	 * zeros with the content size left out of the header. */
	hello(x, NULL);
	size_t big = 16 * LM_PAGE_SIZE;
	uint8_t *zeros = calloc(1, big), z[2048];
	assert_non_null(zeros);
	ZSTD_CCtx *c = ZSTD_createCCtx();
	assert_non_null(c);
	ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
	size_t zl = ZSTD_compress2(c, z, sizeof(z), zeros, big);
	assert_false(ZSTD_isError(zl));
	ZSTD_freeCCtx(c);
	free(zeros);
	raw_run(x, R0_PAGES - 1, 1, LM_RUN_DATA, LM_ENC_ZSTD, 0, z, zl);
}
static void b_skipped(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, 4, LM_RUN_SKIPPED, LM_ENC_RAW, 0, NULL, 0);
}
static void b_reserved(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, 1, LM_RUN_ZERO, LM_ENC_RAW, 0x0100, NULL, 0);
}
static void b_short_data(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, 2, LM_RUN_DATA, LM_ENC_RAW, 0, src_mem, LM_PAGE_SIZE);
}
static void b_zero_with_data(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, 1, LM_RUN_ZERO, LM_ENC_RAW, 0, src_mem, 64);
}
static void b_unknown_kind(struct sb *x)
{
	hello(x, NULL);
	raw_run(x, 0, 1, 9, LM_ENC_RAW, 0, NULL, 0);
}
static void b_device_bad_name(struct sb *x)
{
	hello(x, NULL);
	uint8_t p[8] = { 3, 'a', '/', 'b', 1, 2, 3, 4 };
	raw_frame(x, LM_REC_DEVICE, 0, p, sizeof(p));
}
static void b_device_rejected(struct sb *x)
{
	hello(x, NULL);
	mark(x);
	assert_int_equal(lm_stream_put_device(&x->b, "bad", "x", 1), 0);
}

/* ---- post-copy streams (docs/stream.md 3.14) ---- */

/* The pending set of every post-copy stream below: pages 5-6 of R0 and
 * the first 4 of R1, re-sent after COMMIT with their final contents. */
static const lm_stream_region pending_runs[] = { { 5, 2 }, { R1_FIRST, 4 } };
#define NPENDING 6

static void pc_hello(struct sb *x)
{
	struct hello_opts h = { .offered = LM_CAP_POSTCOPY, .mandatory = LM_CAP_RECORD_CSUM | LM_CAP_POSTCOPY };
	hello(x, &h);
	x->s.caps |= LM_CAP_POSTCOPY;
}

/* Up to COMMIT: the pre-copy body, PENDING, POSTCOPY, COMMIT. */
static void pc_switch(struct sb *x, uint64_t npending)
{
	pc_hello(x);
	body(x);
	mark(x);
	assert_int_equal(lm_stream_put_pending(&x->b, pending_runs, 2), 0);
	mark(x);
	assert_int_equal(lm_stream_put_postcopy(&x->b, npending, 0x5e55), 0);
	commit_rec(x);
}

static void pc_page(struct sb *x, uint64_t first, uint32_t n)
{
	uint8_t used;
	mark(x);
	assert_int_equal(lm_stream_put_run_data(&x->s, &x->b, first, n, src_page(first), LM_ENC_RAW, &used), 0);
}

static void pc_valid(struct sb *x)
{
	pc_switch(x, NPENDING);
	pc_page(x, R1_FIRST, 4);
	pc_page(x, 5, 2);
	digest_rec(x);
	end_rec(x);
}

static void b_pc_not_pending(struct sb *x)
{
	pc_switch(x, NPENDING);
	pc_page(x, 0, 1);
}
static void b_pc_twice(struct sb *x)
{
	pc_switch(x, NPENDING);
	pc_page(x, 5, 2);
	pc_page(x, 6, 1);
}
static void b_pc_end_early(struct sb *x)
{
	pc_switch(x, NPENDING);
	pc_page(x, 5, 2);
	digest_rec(x);
	end_rec(x);
}
static void b_pc_count(struct sb *x)
{
	pc_switch(x, NPENDING + 1);
}
static void b_pc_device_after_pending(struct sb *x)
{
	pc_hello(x);
	body(x);
	mark(x);
	assert_int_equal(lm_stream_put_pending(&x->b, pending_runs, 2), 0);
	uint64_t blob[1] = { 9 };
	mark(x);
	assert_int_equal(lm_stream_put_device(&x->b, "dev1", blob, sizeof(blob)), 0);
}
static void b_pc_outside(struct sb *x)
{
	pc_hello(x);
	body(x);
	lm_stream_region bad[1] = { { R0_PAGES - 1, 2 } };
	mark(x);
	assert_int_equal(lm_stream_put_pending(&x->b, bad, 1), 0);
}
static void b_pc_not_negotiated(struct sb *x)
{
	hello(x, NULL);
	body(x);
	mark(x);
	assert_int_equal(lm_stream_put_pending(&x->b, pending_runs, 2), 0);
}
static void b_pc_round_after_commit(struct sb *x)
{
	pc_switch(x, NPENDING);
	round_rec(x, 3);
}
static void b_pc_wrong_data(struct sb *x)
{
	pc_switch(x, NPENDING);
	pc_page(x, R1_FIRST, 4);
	uint8_t used;
	mark(x);
	/* Pages 5-6 with page 0's contents: placed, but not what the digest says. */
	assert_int_equal(lm_stream_put_run_data(&x->s, &x->b, 5, 2, src_page(0), LM_ENC_RAW, &used), 0);
	digest_rec(x);
	end_rec(x);
}
static void b_pc_no_commit(struct sb *x)
{
	pc_hello(x);
	body(x);
	mark(x);
	assert_int_equal(lm_stream_put_pending(&x->b, pending_runs, 2), 0);
	mark(x);
	assert_int_equal(lm_stream_put_postcopy(&x->b, NPENDING, 0x5e55), 0);
}

/*
 * Post-copy streams: a valid one is applied (the pending pages dropped
 * after pre-copy and placed again after COMMIT, the guest started, the
 * digest checked at the end) and leaves exactly the source memory; each
 * broken one is rejected by name. A wrong page after the switch cannot be
 * undone (the guest ran on it) but is reported: the final RESULT carries
 * the digest mismatch.
 */
static void test_postcopy(void **state)
{
	(void)state;
	char why[200];
	if (!lm__pc_dst_possible(why, sizeof(why)))
		skip();
	struct sb x;
	struct outcome o;
	sb_init(&x);
	pc_valid(&x);
	feed_one(x.b.data, x.b.len, 0, &o, true);
	if (o.err)
		fail_msg("valid post-copy stream rejected: %s", o.msg);
	assert_true(o.st.postcopy && o.st.postcopy_started && o.st.postcopy_complete);
	assert_int_equal(o.st.postcopy_pending, NPENDING);
	assert_true(o.st.digest_ok);
	assert_int_equal(o.finish_err, 0);
	assert_int_equal(o.last_type, LM_REC_RESULT);
	assert_int_equal(o.last_code, 0);
	sb_fini(&x);

	const uint16_t RS = LM_REC_RESULT;
	crafted("post-copy: a page not pending", b_pc_not_pending, 0, "page 0 is not pending in post-copy", RS);
	crafted("post-copy: a page twice", b_pc_twice, 0, "page 6 arrived twice in post-copy", RS);
	crafted("post-copy: END too early", b_pc_end_early, 0, "END with 4 pending pages never sent", RS);
	crafted("post-copy: POSTCOPY count", b_pc_count, 0, "POSTCOPY announces 7 pending pages, PENDING named 6", RS);
	crafted("post-copy: DEVICE after PENDING", b_pc_device_after_pending, 0, "DEVICE record after PENDING", RS);
	crafted("post-copy: PENDING outside the layout", b_pc_outside, 0, "PENDING run pages [63, 65) outside", RS);
	crafted("post-copy: PENDING not negotiated", b_pc_not_negotiated, 0, "postcopy-ram was not negotiated", RS);
	crafted("post-copy: ROUND after COMMIT", b_pc_round_after_commit, 0, "ROUND record in post-copy", RS);
	crafted("post-copy: a wrong page", b_pc_wrong_data, 0, "RAM digest mismatch", RS);
	crafted("post-copy: no COMMIT", b_pc_no_commit, 0, "the switch to post-copy did not happen", 0);
	/* A destination that switched post-copy off refuses such a sender by name. */
	crafted("post-copy: switched off here", pc_valid, LM_CAP_POSTCOPY,
		"mandatory capability postcopy-ram is switched off here", LM_REC_REFUSE);
}

/* ---- crafted channel connections (multifd, docs/stream.md 3.16) ---- */

/* Layout pages by stripe of 64 with 2 channels: R0 [0, 64) is stripe 0
 * (channel 0); R1 [1000, 1024) is in stripe 15 (channel 1), [1024, 1032)
 * in stripe 16 (channel 0). */
#define CH_STRIPE 64u
#define CH_SESSION 0x5e55104e5e55104eull

struct chnet {
	int pipe[2]; /* receiver ends of the channel connections, in order */
};

static int chnet_accept(void *arg, int timeout_ms)
{
	struct chnet *n = arg;
	return lm_test_fd_pipe_accept(n->pipe[0], timeout_ms);
}

/* The main connection of a two-channel migration: HELLO with multifd,
 * CHANNELS, one round whose pages are all on the channels, the last SYNC,
 * DIGEST, END, COMMIT. */
static void ch_main(struct sb *x)
{
	hello(x, &(struct hello_opts){.offered = LM_CAP_MULTIFD});
	mark(x);
	assert_int_equal(lm_stream_put_channels(&x->b, 2, CH_STRIPE, CH_SESSION), 0);
	round_rec(x, 1);
	mark(x);
	assert_int_equal(lm_stream_put_sync(&x->b, 1, LM_SYNC_LAST), 0);
	digest_rec(x);
	end_rec(x);
	commit_rec(x);
}

static void ch_hello(struct sb *x, uint32_t index, uint64_t session)
{
	lm_stream_region r[2] = {{R0_FIRST, R0_PAGES}, {R1_FIRST, R1_PAGES}};
	assert_int_equal(lm_stream_layout_init(&x->s.layout, r, 2, NULL), 0);
	x->s.caps = LM_CAP_RECORD_CSUM | LM_CAP_ZSTD | LM_CAP_MULTIFD;
	mark(x);
	assert_int_equal(lm_stream_put_channel(&x->b, index, session), 0);
}

static void ch_data(struct sb *x, uint64_t first, uint32_t n, uint8_t enc)
{
	uint8_t used;
	mark(x);
	assert_int_equal(lm_stream_put_run_data(&x->s, &x->b, first, n, src_page(first), enc, &used), 0);
}

static void ch_zero(struct sb *x, uint64_t first, uint32_t n)
{
	mark(x);
	assert_int_equal(lm_stream_put_run_empty(&x->b, LM_RUN_ZERO, first, n), 0);
}

static void ch_sync(struct sb *x, uint64_t seq, uint32_t flags)
{
	mark(x);
	assert_int_equal(lm_stream_put_sync(&x->b, seq, flags), 0);
}

/* Channel 0's and 1's records of the round, without their CHANNEL frames
 * and the last SYNC (cases append to them). */
static void ch0_pages(struct sb *x)
{
	ch_data(x, 0, 40, LM_ENC_RAW);
	ch_zero(x, 40, 24);
	ch_zero(x, 1024, 8);
}

static void ch1_pages(struct sb *x)
{
	ch_data(x, 1000, 16, LM_ENC_ZSTD);
	ch_zero(x, 1016, 8);
}

struct ch_case {
	const char *what;
	/* builds channel k's connection(s); more than one: in this order */
	void (*build[4])(struct sb *);
	const char *expect; /* NULL: the migration completes, memory exact */
};

/*
 * Feeds ch_main() on the main connection and each built channel stream on
 * a connection of its own, queued for accept_channel in the order given,
 * then checks the outcome.
 */
static void ch_run(const struct ch_case *c)
{
	struct chnet net;
	struct sb m, ch[4];
	struct feed f[5];
	pthread_t th[5];
	int sv[5][2];
	unsigned n = 0;
	struct gdest d;
	struct outcome o;
	memset(&d, 0, sizeof(d));
	memset(&o, 0, sizeof(o));
	memset(f, 0, sizeof(f));
	assert_int_equal(pipe(net.pipe), 0);
	sb_init(&m);
	ch_main(&m);
	while (n < 4 && c->build[n]) {
		sb_init(&ch[n]);
		c->build[n](&ch[n]);
		n++;
	}
	for (unsigned i = 0; i <= n; i++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv[i]), 0);
		f[i].fd = sv[i][0];
		f[i].p = i == 0 ? m.b.data : ch[i - 1].b.data;
		f[i].n = i == 0 ? m.b.len : ch[i - 1].b.len;
		assert_int_equal(pthread_create(&th[i], NULL, feeder, &f[i]), 0);
		if (i > 0)
			assert_int_equal(write(net.pipe[1], &sv[i][1], sizeof(int)), (ssize_t)sizeof(int));
	}
	struct lm_receive_params rp = {
	    .idle_timeout_ms = 3000, .accept_channel = chnet_accept, .channel_arg = &net};
	o.err = lm_migrate_receive(sv[0][1], &rp, &gd_ops, &d, &o.st);
	snprintf(o.msg, sizeof(o.msg), "%s", o.st.error);
	o.finish_calls = d.finish_calls;
	o.finish_err = d.finish_err;
	if (!c->expect) {
		if (o.err)
			fail_msg("%s: failed: %s", c->what, o.msg);
		assert_true(o.st.digest_ok);
		assert_int_equal(o.st.channels, 2);
		assert_memory_equal(d.r[0].host, src_mem, R0_PAGES * LM_PAGE_SIZE);
		assert_memory_equal(d.r[1].host, src_mem + R0_PAGES * LM_PAGE_SIZE, R1_PAGES * LM_PAGE_SIZE);
	}
	/* Connections the receiver never took are ours to close; the ones
	 * it took it closed. Then every feeder sees its peer gone. */
	lm_test_fd_pipe_drain(net.pipe[0]);
	shutdown(sv[0][1], SHUT_RDWR);
	for (unsigned i = 0; i <= n; i++) {
		pthread_join(th[i], NULL);
		close(sv[i][0]);
	}
	close(sv[0][1]);
	close(net.pipe[0]);
	close(net.pipe[1]);
	gd_free(&d);
	if (c->expect) {
		print_message("        %s\n", o.msg);
		decode_answers(&f[0], &o);
		assert_rejected_with(&o, c->what, c->expect);
		/* The sender is told why, on the main connection. */
		if (o.last_type != LM_REC_RESULT || o.last_code == 0 || !strstr(o.last_text, c->expect))
			fail_msg("%s: the answer (type 0x%04x, code %d, \"%s\") does not carry the error", c->what,
				 o.last_type, o.last_code, o.last_text);
	}
	sb_fini(&m);
	for (unsigned i = 0; i < n; i++)
		sb_fini(&ch[i]);
}

static void c0_ok(struct sb *x)
{
	ch_hello(x, 0, CH_SESSION);
	ch0_pages(x);
	ch_sync(x, 1, LM_SYNC_LAST);
}

static void c1_ok(struct sb *x)
{
	ch_hello(x, 1, CH_SESSION);
	ch1_pages(x);
	ch_sync(x, 1, LM_SYNC_LAST);
}

/* Leftovers a receiver must close without failing the migration. */
static void c_other_session(struct sb *x)
{
	ch_hello(x, 0, CH_SESSION ^ 1);
	ch0_pages(x);
}

static void c_index_out_of_range(struct sb *x)
{
	ch_hello(x, 2, CH_SESSION);
}

static void c_not_channel(struct sb *x)
{
	hello(x, NULL);
}

/* Hostile channel 0 streams. */
static void c0_wrong_stripe(struct sb *x)
{
	ch_hello(x, 0, CH_SESSION);
	ch0_pages(x);
	ch_data(x, 1002, 2, LM_ENC_RAW); /* stripe 15: channel 1's */
	ch_sync(x, 1, LM_SYNC_LAST);
}

static void c1_two_stripes(struct sb *x)
{
	ch_hello(x, 1, CH_SESSION);
	ch_data(x, 1020, 8, LM_ENC_RAW); /* [1020, 1028): stripes 15 and 16 */
	ch_sync(x, 1, LM_SYNC_LAST);
}

static void c0_device(struct sb *x)
{
	ch_hello(x, 0, CH_SESSION);
	ch0_pages(x);
	uint64_t blob[1] = {7};
	mark(x);
	assert_int_equal(lm_stream_put_device(&x->b, "dev0", blob, sizeof(blob)), 0);
	ch_sync(x, 1, LM_SYNC_LAST);
}

static void c0_sync_skips(struct sb *x)
{
	ch_hello(x, 0, CH_SESSION);
	ch0_pages(x);
	ch_sync(x, 2, LM_SYNC_LAST);
}

static void c0_truncated(struct sb *x)
{
	c0_ok(x);
	x->b.len = x->frames[1] + LM_FRAME_HDR + LM_RUN_HDR + 100; /* inside the first RAW run */
}

static void c0_bitflip(struct sb *x)
{
	c0_ok(x);
	x->b.data[x->frames[1] + LM_FRAME_HDR + LM_RUN_HDR + 5000] ^= 0x10; /* page data of the first run */
}

static void c0_zero_after_data(struct sb *x)
{
	/* Pages sent as data, then claimed zero on the same channel: the
	 * later version wins, and the digest (of the data) no longer
	 * matches what was placed. */
	ch_hello(x, 0, CH_SESSION);
	ch0_pages(x);
	ch_zero(x, 0, 4);
	ch_sync(x, 1, LM_SYNC_LAST);
}

/* Crafted channel connections: leftovers are closed without harm, a
 * hostile channel fails the migration with the channel named, on both the
 * receiver and (RESULT on the main connection) the sender. */
static void test_crafted_channels(void **state)
{
	(void)state;
	const struct ch_case cases[] = {
	    {"two valid channels", {c0_ok, c1_ok}, NULL},
	    {"channels in reverse order", {c1_ok, c0_ok}, NULL},
	    {"a leftover of another session first", {c_other_session, c0_ok, c1_ok}, NULL},
	    {"a channel index out of range first", {c_index_out_of_range, c1_ok, c0_ok}, NULL},
	    {"a connection that starts with HELLO", {c0_ok, c_not_channel, c1_ok}, NULL},
	    {"channel 0 connected twice", {c0_ok, c0_wrong_stripe, c1_ok}, NULL},
	    {"a run of another channel's stripe", {c0_wrong_stripe, c1_ok}, "channel 0: RAM run pages [1002, 1004)"},
	    {"a run across two stripes", {c0_ok, c1_two_stripes}, "spans two stripes"},
	    {"DEVICE on a channel", {c0_device, c1_ok}, "channel 0: unexpected DEVICE record on a channel"},
	    {"a SYNC out of sequence", {c0_sync_skips, c1_ok}, "channel 0: SYNC 2 after SYNC 0"},
	    {"a channel cut inside a run", {c0_truncated, c1_ok}, "channel 0"},
	    {"a bit flipped in a channel's page", {c0_bitflip, c1_ok}, "channel 0"},
	    {"data then zero for the same pages", {c0_zero_after_data, c1_ok}, "digest"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("      %s\n", cases[i].what);
		ch_run(&cases[i]);
	}
}

static void test_crafted(void **state)
{
	const uint16_t RF = LM_REC_REFUSE, RS = LM_REC_RESULT;
	crafted("huge page count", b_huge_count, 0, "4294967295 pages, at most 256", RS);
	crafted("count above the maximum", b_count_above_max, 0, "257 pages, at most 256", RS);
	crafted("zero page count", b_zero_count, 0, "zero pages", RS);
	crafted("run past the region", b_past_region, 0, "outside the layout", RS);
	crafted("run across a region end", b_across_region_end, 0, "outside the layout", RS);
	crafted("data past the last region", b_data_past_end, 0, "outside the layout", RS);
	crafted("page index wrapping around", b_index_wraps, 0, "outside the layout", RS);
	crafted("run between regions", b_between_regions, 0, "outside the layout", RS);
	crafted("unknown mandatory capability", b_unknown_mandatory, 0, "is unknown here", RF);
	crafted("mandatory capability switched off", b_disabled_mandatory, LM_CAP_ZSTD,
		"mandatory capability zstd is switched off here", RF);
	crafted("record-csum not mandatory", b_csum_optional, 0, "record-csum must be mandatory", RF);
	crafted("wrong version", b_version, 0, "stream version 2", RF);
	crafted("wrong magic", b_magic, 0, "bad magic", RF);
	crafted("wrong page size", b_page_size, 0, "page size 8192", RF);
	crafted("total_pages disagrees", b_total_pages, 0, "total_pages", RF);
	crafted("overlapping regions", b_overlap, 0, "overlaps", RF);
	crafted("region past 2^52", b_past_limit, 0, "past page 2^52", RF);
	crafted("100000 regions", b_many_regions, 0, "100000 regions", RF);
	crafted("stream without HELLO", b_not_hello, 0, "does not start with HELLO", RF);
	crafted("second HELLO", b_second_hello, 0, "unexpected HELLO record", RS);
	crafted("records after END", b_after_end, 0, "ROUND record after END", 0);
	crafted("COMMIT before END", b_commit_early, 0, "unexpected COMMIT record", RS);
	crafted("END without DIGEST", b_no_digest, 0, "END without a DIGEST", RS);
	crafted("PREPARE not negotiated", b_prepare_not_negotiated, 0, "prepare was not negotiated", RS);
	crafted("second PREPARE", b_prepare_twice, 0, "second PREPARE record", RS);
	crafted("PREPARE after DIGEST", b_prepare_after_digest, 0, "PREPARE record after DIGEST", RS);
	crafted("wrong digest", b_wrong_digest, 0, "RAM digest mismatch", RS);
	crafted("pages missing", b_missing_pages, 0, "RAM digest mismatch", RS);
	crafted("digest page count", b_digest_npages, 0, "DIGEST covers 7 pages", RS);
	crafted("second DIGEST", b_second_digest, 0, "second DIGEST", RS);
	crafted("DEVICE after DIGEST", b_device_after_digest, 0, "DEVICE record after DIGEST", RS);
	crafted("ROUND going back", b_round_backwards, 0, "ROUND 1 after round 2", RS);
	crafted("unknown record type", b_unknown_type, 0, "unknown record type 0x7777", RS);
	crafted("unknown flags", b_flags, 0, "unknown flags 0x8000", RS);
	crafted("4 GiB payload", b_huge_payload, 0, "above the maximum", RS);
	crafted("TABLE not negotiated", b_table, 0, "table-stream was not negotiated", RS);
	crafted("RESULT from the sender", b_result_from_sender, 0, "unexpected RESULT record", RS);
	crafted("zstd not negotiated", b_zstd_not_negotiated, LM_CAP_ZSTD, "zstd was not negotiated", RS);
	crafted("zstd garbage", b_zstd_garbage, 0, "zstd", RS);
	crafted("zstd frame of the wrong size", b_zstd_wrong_size, 0, "announces 4096 bytes, run needs 8192", RS);
	crafted("zstd frame bigger than it says", b_zstd_bomb, 0, "RAM run at page 63", RS);
	crafted("SKIPPED not negotiated", b_skipped, 0, "skip-balloon was not negotiated", RS);
	crafted("reserved bits", b_reserved, 0, "reserved field 0x0100", RS);
	crafted("short RAW data", b_short_data, 0, "4096 data bytes for 2 RAW pages", RS);
	crafted("ZERO run with data", b_zero_with_data, 0, "64 data bytes on a ZERO run", RS);
	crafted("unknown run kind", b_unknown_kind, 0, "unknown kind 9", RS);
	crafted("device name", b_device_bad_name, 0, "name has a byte outside", RS);
	crafted("device refuses its state", b_device_rejected, 0, "device 'bad' rejected its state", RS);
}


/* ---- the VMM's destination (lm_vm_incoming): layouts ---- */

/*
 * lm_vm_incoming builds its VM around the memory the receiver fills, in a
 * thread of its own while pages arrive. A layout that is valid on the wire
 * but not one the VM can take (split differently from the VM's slots, with
 * gaps, across the PCI hole, ...) must be refused with REFUSE before any
 * page is written; before this was checked, such a layout made the VM
 * build fail and unmap guest RAM while the receiver kept writing into it.
 */

#define MIB_PAGES 256ull /* pages per MiB */

/* pause_at: the feeder waits 100 ms after that many bytes (0: never). */
static void feed_vm(const uint8_t *p, size_t n, size_t pause_at, struct outcome *o, struct lm_vm **vm)
{
	int sv[2];
	pthread_t th;
	struct feed f = { 0 };
	memset(o, 0, sizeof(*o));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f.fd = sv[0];
	f.p = p;
	f.n = n;
	f.pause_at = pause_at;
	f.pause_ms = 100;
	assert_int_equal(pthread_create(&th, NULL, feeder, &f), 0);
	struct lm_vm_incoming_config cfg = { .console_fd = -1, .recv = { .idle_timeout_ms = 20000 } };
	*vm = NULL;
	o->err = lm_vm_incoming(sv[1], &cfg, vm, &o->st);
	snprintf(o->msg, sizeof(o->msg), "%s", o->st.error);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	decode_answers(&f, o);
}

static void hello_layout(struct sb *x, const lm_stream_region *r, uint32_t n, uint64_t offered)
{
	lm_stream_hello h = { .version = LM_STREAM_VERSION,
			      .offered = LM_CAP_RECORD_CSUM | offered,
			      .mandatory = LM_CAP_RECORD_CSUM,
			      .page_size = LM_PAGE_SIZE };
	assert_int_equal(lm_stream_layout_init(&h.layout, r, n, NULL), 0);
	mark(x);
	assert_int_equal(lm_stream_put_hello(&x->b, &h), 0);
	x->s.layout = h.layout;
	x->s.caps = LM_CAP_RECORD_CSUM;
}

/* The VMM's vm-setup blob, by hand: version 1 has no RAM size. */
static void vm_setup_rec(struct sb *x, uint32_t version, uint32_t ncpus, uint64_t mem)
{
	uint8_t b[24] = { 0 };
	le(b, 0x43564d4cu, 4);
	le(b + 4, version, 4);
	le(b + 8, ncpus, 4);
	le(b + 16, mem, 8);
	mark(x);
	assert_int_equal(lm_stream_put_device(&x->b, "vm-setup", b, version == 1 ? 16 : 24), 0);
}

static void vm_page(uint8_t *p, uint64_t page)
{
	for (uint64_t k = 0; k < LM_PAGE_SIZE / 8; k++)
		((uint64_t *)p)[k] = page * 0x9e3779b97f4a7c15ull ^ k;
}

/* RAW data runs for pages [first, first + n), added to *acc (the sender's
 * digest: zero pages add nothing, so the pages sent are all it needs). */
static void vm_data(struct sb *x, uint64_t first, uint64_t n, lm_hash128 *acc)
{
	uint8_t *buf = malloc(LM_STREAM_MAX_RUN_PAGES * LM_PAGE_SIZE);
	assert_non_null(buf);
	for (uint64_t p = first; p < first + n; p += LM_STREAM_MAX_RUN_PAGES) {
		uint32_t k = (uint32_t)(first + n - p < LM_STREAM_MAX_RUN_PAGES ? first + n - p : LM_STREAM_MAX_RUN_PAGES);
		for (uint32_t i = 0; i < k; i++)
			vm_page(buf + (size_t)i * LM_PAGE_SIZE, p + i);
		uint8_t used;
		mark(x);
		assert_int_equal(lm_stream_put_run_data(&x->s, &x->b, p, k, buf, LM_ENC_RAW, &used), 0);
		if (acc)
			lm_digest_add_memory(acc, p, k, buf);
	}
	free(buf);
}

static void vm_check_pages(struct lm_vm *vm, uint64_t first, uint64_t n)
{
	uint8_t want[LM_PAGE_SIZE];
	for (uint64_t p = first; p < first + n; p++) {
		const uint8_t *got = lm_vm_gpa_to_host(vm, p << LM_PAGE_SHIFT, LM_PAGE_SIZE);
		assert_non_null(got);
		vm_page(want, p);
		if (memcmp(got, want, LM_PAGE_SIZE))
			fail_msg("page %llu differs on the destination VM", (unsigned long long)p);
	}
}

/* A source VM of mem bytes in slots of slot bytes: its layout and state. */
static void vm_source(uint64_t mem, uint64_t slot, unsigned ncpus, lm_stream_region *r, uint32_t *n,
		      uint8_t **state, size_t *state_len)
{
	struct lm_vm_config c = { .mem_size = mem, .slot_size = slot, .ncpus = ncpus, .console_fd = -1 };
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&c, &vm), 0);
	*n = lm_vm_slot_count(vm);
	for (unsigned i = 0; i < *n; i++) {
		const struct lm_vm_slot *s = lm_vm_slot(vm, i);
		r[i] = (lm_stream_region){ s->gpa >> LM_PAGE_SHIFT, s->size >> LM_PAGE_SHIFT };
	}
	assert_int_equal(lm_vm_state_save(vm, state, state_len), 0);
	lm_vm_free(vm);
}

/* A whole migration of a VM the VMM makes, pages in every slot written
 * while the destination VM is being built; v1: the old vm-setup blob and
 * no PREPARE (the "vm" blob joins the builder). */
static void vm_good(uint64_t mem, uint64_t slot, unsigned ncpus, bool v1)
{
	lm_stream_region r[8];
	uint32_t n;
	uint8_t *state;
	size_t state_len;
	vm_source(mem, slot, ncpus, r, &n, &state, &state_len);
	struct sb x;
	sb_init(&x);
	lm_hash128 acc = { 0, 0 };
	hello_layout(&x, r, n, v1 ? 0 : LM_CAP_PREPARE);
	vm_setup_rec(&x, v1 ? 1 : 2, ncpus, mem);
	size_t pause_at = x.b.len; /* the pages then go into the VM's RAM */
	round_rec(&x, 1);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t k = r[i].npages < 300 ? r[i].npages : 300;
		vm_data(&x, r[i].first_page + r[i].npages - k, k, &acc);
	}
	if (!v1)
		prepare_rec(&x);
	mark(&x);
	assert_int_equal(lm_stream_put_device(&x.b, "vm", state, state_len), 0);
	mark(&x);
	assert_int_equal(lm_stream_put_digest(&x.b, acc.lo, acc.hi, x.s.layout.total_pages), 0);
	end_rec(&x);
	commit_rec(&x);
	struct outcome o;
	struct lm_vm *vm;
	feed_vm(x.b.data, x.b.len, pause_at, &o, &vm);
	if (o.err)
		fail_msg("%llu MiB in %llu MiB slots: %s", (unsigned long long)(mem >> 20),
			 (unsigned long long)(slot >> 20), o.msg);
	assert_non_null(vm);
	assert_int_equal(o.last_type, LM_REC_RESULT);
	assert_int_equal(o.last_code, 0);
	assert_int_equal(lm_vm_mem_size(vm), mem);
	assert_int_equal(lm_vm_vcpu_count(vm), ncpus);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t k = r[i].npages < 300 ? r[i].npages : 300;
		vm_check_pages(vm, r[i].first_page + r[i].npages - k, k);
	}
	lm_vm_free(vm);
	free(state);
	sb_fini(&x);
}

static void test_vm_incoming(void **state)
{
	vm_good(6ull << 20, 4ull << 20, 2, false);	     /* slots of 4 and 2 MiB */
	vm_good((2ull << 20) + LM_PAGE_SIZE, 0, 1, true);    /* one odd-sized slot */
	vm_good((3ull << 30) + (6ull << 20), 0, 1, true);    /* RAM above 4 GiB too */
	vm_good(10ull << 20, 2ull << 20, 1, false);	     /* five slots */
}

/* One refused case: the layout, and what the REFUSE must say. */
struct layout_case {
	const char *what;
	lm_stream_region r[5];
	uint32_t n;
	const char *expect;
};

static void refused_layout(const struct layout_case *c)
{
	struct sb x;
	sb_init(&x);
	hello_layout(&x, c->r, c->n, 0);
	uint64_t total = x.s.layout.total_pages << LM_PAGE_SHIFT;
	vm_setup_rec(&x, 2, 1, total);
	/* Then, after a pause in which the VM would be built, pages into
	 * every region: had the layout been taken, these are the writes that
	 * used to land in RAM the failed VM build had unmapped. */
	size_t pause_at = x.b.len;
	for (uint64_t round = 1; round <= 2; round++) {
		round_rec(&x, round);
		for (uint32_t i = 0; i < c->n; i++) {
			uint64_t k = c->r[i].npages < 1024 ? c->r[i].npages : 1024;
			vm_data(&x, c->r[i].first_page + c->r[i].npages - k, k, NULL);
		}
	}
	struct outcome o;
	struct lm_vm *vm;
	feed_vm(x.b.data, x.b.len, pause_at, &o, &vm);
	assert_rejected_with(&o, c->what, c->expect);
	assert_null(vm);
	if (o.last_type != LM_REC_REFUSE || o.last_code == 0 || !strstr(o.last_text, c->expect))
		fail_msg("%s: the answer (type 0x%04x, code %d, \"%s\") is not a REFUSE that says why", c->what,
			 o.last_type, o.last_code, o.last_text);
	assert_int_equal(o.st.pages_data, 0);
	print_message("  %-34s %s\n", c->what, o.msg);
	sb_fini(&x);
}

static void test_vm_layouts(void **state)
{
	const uint64_t M = MIB_PAGES, G = 1024 * MIB_PAGES;
	/* Any split of contiguous RAM is taken (0.3: the VM cuts its own
	 * slots), so only layouts that are not guest RAM are refused. */
	const struct layout_case cases[] = {
		{ "a gap", { { 0, 2 * M }, { 4 * M, 2 * M } }, 2,
		  "region 1 (gpa 0x400000, 2 MiB) leaves a gap: the VM's RAM continues at gpa 0x200000" },
		{ "not from gpa 0", { { 2 * M, 2 * M } }, 1, "region 0 (gpa 0x200000, 2 MiB) does not start at gpa 0" },
		{ "across the PCI hole", { { 0, 3 * G + 2 * M } }, 1,
		  "region 0 (gpa 0, 3074 MiB) crosses the PCI hole at 3 GiB" },
		{ "RAM inside the hole", { { 0, G }, { G, G }, { 2 * G, G }, { 3 * G, G } }, 4,
		  "region 3 (gpa 0xc0000000, 1 GiB) leaves a gap: the VM's RAM continues at gpa 0x100000000" },
		{ "high RAM before low RAM is full", { { 0, G }, { 4 * G, G } }, 2,
		  "region 1 (gpa 0x100000000, 1 GiB) leaves a gap: the VM's RAM continues at gpa 0x40000000" },
		{ "less than 2 MiB", { { 0, M } }, 1, "the layout has 1 MiB of RAM, the VM needs at least 2 MiB" },
		{ "the whole page space", { { 0, 1ull << 52 } }, 1,
		  "region 0 (gpa 0, 16 EiB) crosses the PCI hole at 3 GiB" },
		{ "more RAM than the host can hold", { { 0, 3 * G }, { 4 * G, (1ull << 52) - 4 * G } }, 2,
		  "of kernel memory for KVM's page metadata, this host has" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		refused_layout(&cases[i]);
}

/* After the handshake: a vm-setup (or other) blob that does not fit the
 * layout or this VMM fails the receive with RESULT, and no VM comes out. */
static void refused_blob(const char *what, void (*build)(struct sb *, const lm_stream_region *, uint32_t,
							 const uint8_t *, size_t),
			 const char *expect)
{
	lm_stream_region r[8];
	uint32_t n;
	uint8_t *state;
	size_t state_len;
	vm_source(6ull << 20, 4ull << 20, 1, r, &n, &state, &state_len);
	struct sb x;
	sb_init(&x);
	hello_layout(&x, r, n, 0);
	build(&x, r, n, state, state_len);
	struct outcome o;
	struct lm_vm *vm;
	feed_vm(x.b.data, x.b.len, 0, &o, &vm);
	assert_rejected_with(&o, what, expect);
	assert_null(vm);
	if (o.last_type != LM_REC_RESULT || o.last_code == 0 || !strstr(o.last_text, expect))
		fail_msg("%s: the answer (type 0x%04x, code %d, \"%s\") does not say why", what, o.last_type,
			 o.last_code, o.last_text);
	print_message("  %-34s %s\n", what, o.msg);
	free(state);
	sb_fini(&x);
}

static void vb_mem_size(struct sb *x, const lm_stream_region *r, uint32_t n, const uint8_t *st, size_t len)
{
	vm_setup_rec(x, 2, 1, 8ull << 20);
	round_rec(x, 1);
	vm_data(x, r[1].first_page, 16, NULL);
}
static void vb_version(struct sb *x, const lm_stream_region *r, uint32_t n, const uint8_t *st, size_t len)
{
	vm_setup_rec(x, 3, 1, 6ull << 20);
}
static void vb_ncpus(struct sb *x, const lm_stream_region *r, uint32_t n, const uint8_t *st, size_t len)
{
	vm_setup_rec(x, 2, 0, 6ull << 20);
}
static void vb_twice(struct sb *x, const lm_stream_region *r, uint32_t n, const uint8_t *st, size_t len)
{
	vm_setup_rec(x, 2, 1, 6ull << 20);
	round_rec(x, 1);
	vm_data(x, r[1].first_page, 64, NULL);
	vm_setup_rec(x, 2, 1, 6ull << 20);
}
static void vb_cpus_differ(struct sb *x, const lm_stream_region *r, uint32_t n, const uint8_t *st, size_t len)
{
	vm_setup_rec(x, 2, 2, 6ull << 20);
	round_rec(x, 1);
	vm_data(x, r[0].first_page, 300, NULL);
	mark(x);
	assert_int_equal(lm_stream_put_device(&x->b, "vm", st, len), 0);
}
static void vb_unknown(struct sb *x, const lm_stream_region *r, uint32_t n, const uint8_t *st, size_t len)
{
	mark(x);
	assert_int_equal(lm_stream_put_device(&x->b, "gpu0", "x", 1), 0);
}

static void test_vm_blobs(void **state)
{
	refused_blob("vm-setup of another RAM size", vb_mem_size, "the vm-setup blob announces a VM of 8 MiB, "
								   "the layout has 6 MiB");
	refused_blob("vm-setup version 3", vb_version, "vm-setup blob version 3");
	refused_blob("vm-setup without vCPUs", vb_ncpus, "vm-setup blob: 0 vCPUs");
	refused_blob("second vm-setup", vb_twice, "a second vm-setup blob");
	refused_blob("VM state of another vCPU count", vb_cpus_differ,
		     "the VM state has 1 vCPUs, the vm-setup blob announced 2");
	refused_blob("unknown device", vb_unknown, "this VMM has no device 'gpu0'");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bitflips),
		cmocka_unit_test(test_crafted),
		cmocka_unit_test(test_crafted_channels),
		cmocka_unit_test(test_postcopy),
		cmocka_unit_test(test_vm_incoming),
		cmocka_unit_test(test_vm_layouts),
		cmocka_unit_test(test_vm_blobs),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
