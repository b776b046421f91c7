/*
 * The receiver: applies one migration stream to destination memory.
 *
 * Everything that arrives is untrusted. Each frame header is validated
 * (type, flags, length bound) before anything is allocated or read; RAM
 * runs are checked against the layout before their pages are read straight
 * into destination memory (or, with the filler, into a staging buffer
 * placed by UFFDIO_COPY, unless the filler knows every page of the run is
 * populated already: see fill.c), and their checksum is verified before the pages
 * count as applied (a bad checksum fails the whole migration, so bytes
 * already written into memory that will never run do no harm). The digest
 * is kept over what was written into destination memory and compared with
 * the sender's at END: it hashes the destination pages themselves where a
 * run is read straight into them, and the staging buffer where the placer
 * thread places it (the bytes placed; a placement that fails fails the
 * migration, but the digest does not re-read what UFFDIO_COPY wrote).
 * TABLE records (skip-balloon with the table stream) are applied to the
 * workload's skip map; every skipped page they carry is zero at the source,
 * so it is zeroed here too (only if a DATA run wrote it) and contributes
 * zero to the digest, as the sender counts it.
 * Success (return 0, finish(0)) only after RESULT ok went out and the
 * sender's COMMIT came back (see wait_commit); COMMITTED then tells the
 * sender so (commit-ack). Verified but without COMMIT, the copy is neither
 * run nor dropped: -ENOLINK, and the caller keeps it paused.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/thread.h"
#include "migrate/internal.h"

/* Waiting for COMMIT after RESULT ok when the caller set no idle timeout. */
#define COMMIT_TIMEOUT_MS 60000
/* At most this long for a failure report the sender may never read. */
#define STATUS_TIMEOUT_MS 1000

struct recv;

/*
 * A connection pages arrive on: the main one (index -1: its errors are the
 * receive's, its I/O is recv.io) or a channel (docs/stream.md 3.16: its own
 * thread, connection, stream state, staging buffers, partial digest and
 * counters; errors go to `error` first and fail the receive from there).
 */
/*
 * The placer: with the filler on, a lane's RAW runs are placed in
 * destination memory (UFFDIO_COPY, the first touch of fresh memory and the
 * larger part of a page's cost on the receiver) by a thread of their own
 * while the lane reads, checks and digests the next run. Two staging
 * buffers: the lane fills one while the placer empties the other. One job
 * at a time, in stream order, so versions of a page are placed in order;
 * everything else the lane does (other runs, records, barriers, the end)
 * waits until the placer is idle (placer_drain), so nothing else on this
 * connection sees destination memory with a placement in flight. Other
 * connections' placers may still run: with channels, only the barriers
 * (SYNC, and END, PENDING and POSTCOPY after the LAST SYNC) order them
 * against the main connection, so DEVICE and PREPARE, which come before
 * the LAST SYNC, must not read guest RAM. The digest is taken from the
 * staging buffer: the bytes that are placed.
 */
struct placer {
	pthread_t th;
	bool on, failed_start;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool job, stop;
	uint64_t first;
	uint32_t n;
	uint8_t *dst;
	const uint8_t *src;
	uint8_t *buf[2];
	int cur;
	int err; /* the first failure, with its pages */
	uint64_t err_first;
	uint32_t err_n;
};

struct lane {
	struct recv *r;
	struct placer pl;
	int index;
	struct lm__io *io;
	lm_stream *s;
	lm_digest *digest;
	uint8_t *stage; /* the filler's staging buffer (channels: their own) */
	uint8_t *payload;
	size_t payload_cap;
	uint64_t pages_data, pages_zero, records;
	/* channels only */
	struct lm__io own_io;
	bool io_on;
	int fd;
	lm_stream own_s;
	lm_digest own_dig;
	pthread_t th;
	bool th_on;
	int err;
	char error[256];
	/* under recv.chan_lock */
	uint64_t synced;      /* the last SYNC seq read */
	uint32_t sync_flags;  /* its flags */
	bool done;	      /* the thread ended (LAST SYNC, failure or stop) */
};

struct recv {
	struct lm__io io;
	const struct lm_receive_params *p;
	int own_fd; /* a recovery connection, ours to close (-1: the caller's) */
	lm_stream s;
	lm_digest digest;
	bool digest_ok;
	/* Pages a DATA run wrote. The rest still hold the zeros setup()
	 * provided, so a ZERO run over them needs neither a write nor a read
	 * (reading fresh memory costs a page fault per page). */
	lm_bitmap written;
	bool written_ok;
	struct lm_mem_region *mem; /* per layout region, from setup() */
	const struct lm_workload_ops *ops;
	void *ctx;
	struct lm_receive_stats *st;
	uint64_t records;
	uint64_t round;
	bool have_digest;
	bool use_digest; /* not no-digest (docs/stream.md 5.3) */
	bool prepared; /* PREPARE answered with READY */
	bool setup_called;
	bool accept_sent; /* after ACCEPT, failures are answered with RESULT */
	int placers_unstarted; /* connections whose placer thread could not start (atomic) */
	/* RAW runs with the filler on, and those read straight into pages it
	 * knew present (atomic: every lane counts) */
	uint64_t runs_filled, runs_in_place;
	uint64_t dig_lo, dig_hi, dig_npages;
	lm_skip_map *skip; /* the workload's, when skip-balloon was accepted */
	struct lm__filler fill; /* UFFDIO_COPY into fresh destination memory */
	/* Post-copy (postcopy-ram): the pending pages from PENDING records,
	 * then, after the switch, the fault thread. in_postcopy: COMMIT of the
	 * switch was read, the guest may run here. */
	struct lm__pc_dst *pc;
	bool switched; /* POSTCOPY read */
	uint64_t session; /* its session, for a recovery */
	bool in_postcopy;
	double pc_t0; /* when the guest started here */
	uint8_t *pc_stage; /* the post-copy staging buffer */
	/* Channels (docs/stream.md 3.16). The main connection's lane is
	 * main; lanes[nchan] are the channels. Under chan_lock: the
	 * lanes' sync state, released (the SYNC the channels may read on
	 * past), chan_failed / chan_first (the first failed lane) and
	 * chan_stop. main_sync is the main connection's last SYNC;
	 * chan_last: the LAST SYNC was applied. */
	struct lane main;
	unsigned nchan;
	uint32_t stripe;
	uint64_t chan_session;
	struct lane *lanes;
	pthread_mutex_t chan_lock;
	pthread_cond_t chan_cv;
	bool chan_lock_on;
	int abort_fd;
	uint64_t main_sync, released;
	bool chan_last, chan_failed, chan_stop;
	int chan_first;
};

static int rfail(struct recv *r, int err, const char *fmt, ...)
{
	if (!r->st->error[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->st->error, sizeof(r->st->error), fmt, ap);
		va_end(ap);
	}
	return err;
}

/* A failure on lane l: the receive's own for the main connection; a
 * channel's goes to its lane (the first cause wins there too). */
static int lfail(struct lane *l, int err, const char *fmt, ...)
{
	char msg[224];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (l->index < 0)
		return rfail(l->r, err, "%s", msg);
	if (!l->error[0]) {
		snprintf(l->error, sizeof(l->error), "channel %d: %s", l->index, msg);
		l->err = err;
	}
	return err;
}

static const char *where(struct recv *r, char *buf, size_t cap);

/* Where on lane l: the main connection's round, or the channel's count. */
static const char *lwhere(struct lane *l, char *buf, size_t cap)
{
	if (l->index < 0)
		return where(l->r, buf, cap);
	snprintf(buf, cap, "after %llu records on the channel", (unsigned long long)l->records);
	return buf;
}

static int io_rfail(struct recv *r, int err);

/* A failed read on lane l. */
static int lio_fail(struct lane *l, int err)
{
	char w[80], t[32];
	if (l->index < 0)
		return io_rfail(l->r, err);
	if (err == -ECONNRESET)
		return lfail(l, -ECONNABORTED, "incomplete stream: sender closed the connection (%s)",
			     lwhere(l, w, sizeof(w)));
	if (err == -ETIMEDOUT && l->io->stall_ms) {
		lm__fmt_ms(t, sizeof(t), l->io->stall_ms);
		return lfail(l, err, "incomplete stream: no data from the sender for %s (%s)", t,
			     lwhere(l, w, sizeof(w)));
	}
	return lfail(l, err, "connection error: %s (%s)", lm_strerror(err), lwhere(l, w, sizeof(w)));
}

/* The receive fails with the first failed channel's cause. */
static int chan_error(struct recv *r)
{
	pthread_mutex_lock(&r->chan_lock);
	int i = r->chan_first;
	pthread_mutex_unlock(&r->chan_lock);
	if (i < 0)
		return rfail(r, -ESHUTDOWN, "a channel stopped");
	/* The lane's thread wrote its error before it said it failed. A
	 * channel's lost connection is not the main one's: the sender still
	 * hears why (RESULT), so it is no -ECONNABORTED here. */
	int err = r->lanes[i].err ? r->lanes[i].err : -EIO;
	return rfail(r, err == -ECONNABORTED ? -EPIPE : err, "%s", r->lanes[i].error);
}

static const char *where(struct recv *r, char *buf, size_t cap)
{
	if (r->in_postcopy)
		snprintf(buf, cap, "post-copy, after %llu records", (unsigned long long)r->records);
	else if (r->round)
		snprintf(buf, cap, "round %llu, after %llu records", (unsigned long long)r->round,
			 (unsigned long long)r->records);
	else
		snprintf(buf, cap, "after %llu records", (unsigned long long)r->records);
	return buf;
}

/* Where a stall or cancel struck: "during round 3 (after 57 records)". */
static const char *phase(struct recv *r, char *buf, size_t cap)
{
	if (r->in_postcopy)
		snprintf(buf, cap, "in post-copy (after %llu records)", (unsigned long long)r->records);
	else if (!r->accept_sent)
		snprintf(buf, cap, "during the handshake");
	else if (r->round)
		snprintf(buf, cap, "during round %llu (after %llu records)", (unsigned long long)r->round,
			 (unsigned long long)r->records);
	else
		snprintf(buf, cap, "before round 1 (after %llu records)", (unsigned long long)r->records);
	return buf;
}

static int io_rfail(struct recv *r, int err)
{
	char w[80], t[32];
	if (err == -ESHUTDOWN && r->nchan)
		return chan_error(r);
	if (err == -ECONNRESET)
		return rfail(r, -ECONNABORTED, "incomplete stream: sender closed the connection (%s)",
			     where(r, w, sizeof(w)));
	if (err == -ECANCELED)
		return rfail(r, err, "cancelled %s", phase(r, w, sizeof(w)));
	if (err == -ETIMEDOUT && r->io.stall_ms) {
		lm__fmt_ms(t, sizeof(t), r->io.stall_ms);
		if (r->io.stall_write)
			return rfail(r, err, "the sender read nothing for %s %s: it stopped reading or the "
					     "connection is dead", t, phase(r, w, sizeof(w)));
		return rfail(r, err, "incomplete stream: no data from the sender for %s %s", t,
			     phase(r, w, sizeof(w)));
	}
	if (err == -ETIMEDOUT)
		return rfail(r, err, "incomplete stream: the connection timed out %s: the sender's host "
				     "stopped acknowledging (dead peer or link)", phase(r, w, sizeof(w)));
	return rfail(r, err, "connection error: %s (%s)", lm_strerror(err), where(r, w, sizeof(w)));
}

/* The workload's own reason for the op it just failed, or NULL. */
static const char *explained(struct recv *r)
{
	const char *why = r->ops && r->ops->explain ? r->ops->explain(r->ctx) : NULL;
	return why && why[0] ? why : NULL;
}

/* That reason, or the errno's text. */
static const char *why_failed(struct recv *r, int err)
{
	const char *why = explained(r);
	return why ? why : lm_strerror(err);
}

static int lane_payload(struct lane *l, const lm_frame *f)
{
	if (f->payload_len > l->payload_cap) {
		uint8_t *p = realloc(l->payload, f->payload_len);
		if (!p)
			return lfail(l, -ENOMEM, "out of memory for a %u-byte %s record", f->payload_len,
				     lm_stream_type_name(f->type));
		l->payload = p;
		l->payload_cap = f->payload_len;
	}
	int err = lm__io_read(l->io, l->payload, f->payload_len);
	return err ? lio_fail(l, err) : 0;
}

/* A non-RAW payload of the main connection, into its lane's buffer. */
static int read_payload(struct recv *r, const lm_frame *f)
{
	return lane_payload(&r->main, f);
}

static int send_status(struct recv *r, uint16_t type, int code, const char *text)
{
	uint8_t mem[LM_FRAME_HDR + 8 + LM_STREAM_MAX_TEXT + 8];
	lm_buf b;
	lm_buf_init_fixed(&b, mem, sizeof(mem));
	char t[LM_STREAM_MAX_TEXT + 1];
	snprintf(t, sizeof(t), "%s", text);
	int err = type == LM_REC_REFUSE ? lm_stream_put_refuse(&b, code, t) : lm_stream_put_result(&b, code, t);
	if (err)
		return err;
	if (!code)
		return lm__io_write(&r->io, b.data, b.len);
	/* A failure report is best effort: the cancel that may have caused it
	 * must not stop it, and a sender that stopped reading must not hold
	 * us for another idle timeout. */
	int cancel_fd = r->io.cancel_fd, abort_fd = r->io.abort_fd;
	uint64_t timeout = r->io.timeout_ms;
	r->io.cancel_fd = -1;
	r->io.abort_fd = -1; /* a failed channel may be what is reported */
	if (!timeout || timeout > STATUS_TIMEOUT_MS)
		r->io.timeout_ms = STATUS_TIMEOUT_MS;
	err = lm__io_write(&r->io, b.data, b.len);
	r->io.cancel_fd = cancel_fd;
	r->io.abort_fd = abort_fd;
	r->io.timeout_ms = timeout;
	return err;
}

static int send_ready(struct recv *r)
{
	uint8_t mem[LM_FRAME_HDR];
	lm_buf b;
	lm_buf_init_fixed(&b, mem, sizeof(mem));
	int err = lm_stream_put_ready(&b);
	return err ? err : lm__io_write(&r->io, b.data, b.len);
}

static int handshake(struct recv *r, uint64_t allowed)
{
	uint8_t hdr[LM_FRAME_HDR];
	lm_frame f;
	lm_stream_err e = { 0 };
	lm_record rec;
	int err = lm__io_read(&r->io, hdr, sizeof(hdr));
	if (err)
		return io_rfail(r, err);
	err = lm_stream_frame_parse(&r->s, hdr, sizeof(hdr), &f, &e);
	if (err)
		return rfail(r, err, "bad first frame: %s", e.msg);
	if (f.type != LM_REC_HELLO)
		return rfail(r, -EPROTO, "stream does not start with HELLO but with %s", lm_stream_type_name(f.type));
	err = read_payload(r, &f);
	if (err)
		return err;
	err = lm_stream_decode_payload(&r->s, &f, r->main.payload, f.payload_len, &rec, &e);
	if (err)
		return rfail(r, err, "bad HELLO: %s", e.msg);
	if (rec.u.hello.page_size != LM_PAGE_SIZE)
		return rfail(r, -EPROTO, "bad HELLO: page size %u, this side uses %llu", rec.u.hello.page_size,
			     (unsigned long long)LM_PAGE_SIZE);
	/* Post-copy needs a workload that can run before its memory is
	 * complete, and kernel faults through userfaultfd. */
	if (rec.u.hello.offered & LM_CAP_POSTCOPY & allowed) {
		char why[200] = "this destination cannot run a guest before its memory is complete";
		if (!r->ops || !r->ops->postcopy_start || !lm__pc_dst_possible(why, sizeof(why))) {
			if (rec.u.hello.mandatory & LM_CAP_POSTCOPY)
				return rfail(r, -ENOTSUP, "refused HELLO: the sender wants postcopy-ram, and %s", why);
			allowed &= ~LM_CAP_POSTCOPY;
		}
	}
	if (!r->p->accept_channel)
		allowed &= ~LM_CAP_MULTIFD;
	uint64_t accepted;
	err = lm_stream_negotiate(&r->s, &rec.u.hello, allowed, &accepted, &e);
	if (err)
		return rfail(r, err, "refused HELLO: %s", e.msg);
	r->st->caps = accepted;

	const lm_stream_layout *l = &r->s.layout;
	r->mem = calloc(l->nregions, sizeof(*r->mem));
	if (!r->mem)
		return rfail(r, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < l->nregions; i++)
		r->mem[i] = (struct lm_mem_region){ l->regions[i].first_page, l->regions[i].npages, NULL };
	if (!r->ops || !r->ops->setup)
		return rfail(r, -EINVAL, "no destination memory (workload has no setup)");
	r->setup_called = true;
	err = r->ops->setup(r->ctx, l, r->mem);
	if (err && explained(r))
		return rfail(r, err, "refused HELLO: %s", explained(r));
	if (err)
		return rfail(r, err, "could not set up %llu MiB of destination memory: %s",
			     (unsigned long long)(l->total_pages >> 8), lm_strerror(err));
	for (uint32_t i = 0; i < l->nregions; i++)
		if (!r->mem[i].host)
			return rfail(r, -EINVAL, "setup gave no memory for region %u", i);
	lm__filler_init(&r->fill, r->mem, l->nregions, l->end_page);
	r->main.stage = r->fill.stage;
	if (lm__filler_on(&r->fill))
		snprintf(r->st->fill, sizeof(r->st->fill), "uffdio-copy%s",
			 getenv("LIVEMIG_NO_PLACER") ? " (in line: LIVEMIG_NO_PLACER)" : ", a placer thread per connection");
	else if (r->fill.off_err)
		snprintf(r->st->fill, sizeof(r->st->fill), "write (%s: %s)", r->fill.off_why,
			 lm_strerror(-r->fill.off_err));
	else
		snprintf(r->st->fill, sizeof(r->st->fill), "write (%s)", r->fill.off_why);
	/* The skip map needs somewhere to go: without one, ballooned pages
	 * come as ordinary pages. */
	const uint64_t skipcaps = LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM;
	if (accepted & skipcaps) {
		r->skip = r->ops->skip_map ? r->ops->skip_map(r->ctx) : NULL;
		if (!r->skip) {
			if (rec.u.hello.mandatory & skipcaps)
				return rfail(r, -ENOTSUP, "refused HELLO: the sender requires skip-balloon, "
							  "this destination keeps no skip map");
			accepted &= ~skipcaps;
			r->s.caps = accepted;
			r->st->caps = accepted;
		} else {
			/* The table stream's first pass assumes a clear map. */
			lm_skip_map_clear(r->skip, 0, lm_skip_map_npages(r->skip));
		}
	}
	r->use_digest = (accepted & LM_CAP_NO_DIGEST) == 0;
	if ((accepted & LM_CAP_POSTCOPY) && lm__pc_dst_new(&r->pc, r->mem, l->nregions, l->end_page) < 0)
		return rfail(r, -ENOMEM, "out of memory for the post-copy page map");
	err = lm_digest_init(&r->digest, l->end_page);
	if (err)
		return rfail(r, err, "out of memory for the digest");
	r->digest_ok = true;
	err = lm_bitmap_init(&r->written, l->end_page);
	if (err)
		return rfail(r, err, "out of memory for the page map");
	r->written_ok = true;

	uint8_t mem[64];
	lm_buf b;
	lm_buf_init_fixed(&b, mem, sizeof(mem));
	err = lm_stream_put_accept(&b, accepted);
	if (!err)
		err = lm__io_write(&r->io, b.data, b.len);
	if (err)
		return io_rfail(r, err);
	r->accept_sent = true;
	return 0;
}

static void *placer_main(void *arg)
{
	struct lane *l = arg;
	struct placer *p = &l->pl;
	if (l->index < 0)
		lm__thread_name("lm-place");
	else
		lm__thread_name("lm-place/%d", l->index);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->job && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!p->job)
			break;
		uint64_t first = p->first;
		uint32_t n = p->n;
		uint8_t *dst = p->dst;
		const uint8_t *src = p->src;
		pthread_mutex_unlock(&p->mu);
		int err = lm__filler_place(&l->r->fill, first, dst, src, n);
		pthread_mutex_lock(&p->mu);
		if (err && !p->err) {
			p->err = err;
			p->err_first = first;
			p->err_n = n;
		}
		p->job = false;
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* The placer of l, started on its first RAW run; false: place in line
 * (LIVEMIG_NO_PLACER, for measurements side by side, or no thread). */
static bool placer_ready(struct lane *l)
{
	struct placer *p = &l->pl;
	if (p->on)
		return true;
	if (p->failed_start || getenv("LIVEMIG_NO_PLACER")) {
		p->failed_start = true;
		return false;
	}
	size_t len = (size_t)LM_STREAM_MAX_RUN_PAGES * LM_PAGE_SIZE;
	p->buf[0] = aligned_alloc(LM_PAGE_SIZE, len);
	p->buf[1] = aligned_alloc(LM_PAGE_SIZE, len);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (!p->buf[0] || !p->buf[1] || pthread_create(&p->th, NULL, placer_main, l)) {
		free(p->buf[0]);
		free(p->buf[1]);
		p->buf[0] = p->buf[1] = NULL;
		pthread_mutex_destroy(&p->mu);
		pthread_cond_destroy(&p->cv);
		p->failed_start = true;
		/* Placed in line from here on: the report says so (fill). */
		__atomic_add_fetch(&l->r->placers_unstarted, 1, __ATOMIC_RELAXED);
		return false;
	}
	p->on = true;
	return true;
}

/* Until the placer is idle: 0, or its first failure (then failed). */
static int placer_drain(struct lane *l)
{
	struct placer *p = &l->pl;
	if (!p->on)
		return 0;
	pthread_mutex_lock(&p->mu);
	while (p->job)
		pthread_cond_wait(&p->cv, &p->mu);
	int err = p->err;
	pthread_mutex_unlock(&p->mu);
	return err;
}

/* The placer's failure as the lane's. */
static int placer_fail(struct lane *l, int err)
{
	return lfail(l, err, "could not place pages [%llu, %llu) in destination memory: %s",
		     (unsigned long long)l->pl.err_first, (unsigned long long)(l->pl.err_first + l->pl.err_n),
		     lm_strerror(err));
}

/* Hands pages [first, first + n) in the current buffer to the placer (after
 * the previous job is done) and switches buffers. */
static int placer_submit(struct lane *l, uint64_t first, uint8_t *dst, uint32_t n)
{
	struct placer *p = &l->pl;
	pthread_mutex_lock(&p->mu);
	while (p->job)
		pthread_cond_wait(&p->cv, &p->mu);
	int err = p->err;
	if (!err) {
		p->first = first;
		p->n = n;
		p->dst = dst;
		p->src = p->buf[p->cur];
		p->job = true;
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	p->cur ^= 1;
	return err;
}

/* Drains and ends the placer (idempotent); its failure, if any. */
static int placer_stop(struct lane *l)
{
	struct placer *p = &l->pl;
	if (!p->on)
		return 0;
	int err = placer_drain(l);
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->th, NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->buf[0]);
	free(p->buf[1]);
	*p = (struct placer){.err = p->err, .err_first = p->err_first, .err_n = p->err_n};
	return err;
}

/*
 * The pages of a RAW run, read (to pages): each added to the frame's
 * checksum and, with digest, to the digest while it is in cache, then the
 * checksum checked (one pass over the run each was slower here). A page
 * that fails its frame fails the migration, so the digest it entered is
 * moot.
 */
static int take_pages(struct lane *l, lm_stream_csum *c, const lm_frame *f, const lm_run *run,
		      const uint8_t *pages, bool digest)
{
	lm_stream_err e = { 0 };
	char w[80];
	bool dig = digest && l->r->use_digest;
	for (uint32_t k = 0; k < run->npages; k++) {
		lm_hash128 h;
		lm_stream_csum_page(l->s, c, run->first_page + k, pages + (size_t)k * LM_PAGE_SIZE, dig ? &h : NULL);
		if (dig)
			lm_digest_set(l->digest, run->first_page + k, h);
	}
	int err = lm_stream_csum_check(c, f, &e);
	if (err)
		return lfail(l, err, "%s (pages [%llu, %llu), %s)", e.msg, (unsigned long long)run->first_page,
			     (unsigned long long)(run->first_page + run->npages), lwhere(l, w, sizeof(w)));
	return 0;
}

static int ram(struct lane *l, const lm_frame *f)
{
	struct recv *r = l->r;
	uint8_t rh[LM_RUN_HDR];
	lm_run run;
	lm_stream_err e = { 0 };
	char w[80];
	int err;

	if (f->payload_len < LM_RUN_HDR)
		return lfail(l, -EBADMSG, "RAM record of %u bytes is shorter than its run header (%s)",
			     f->payload_len, lwhere(l, w, sizeof(w)));
	err = lm__io_read(l->io, rh, sizeof(rh));
	if (err)
		return lio_fail(l, err);
	err = lm_stream_run_parse(l->s, f, rh, sizeof(rh), &run, &e);
	if (err)
		return lfail(l, err, "%s (%s)", e.msg, lwhere(l, w, sizeof(w)));
	if (l->index >= 0) {
		uint32_t want = lm_stream_channel_of(run.first_page, r->stripe, r->nchan);
		if (want != (uint32_t)l->index || (run.first_page + run.npages - 1) / r->stripe != run.first_page / r->stripe)
			return lfail(l, -EPROTO, "RAM run pages [%llu, %llu) on channel %d belongs to channel %u%s",
				     (unsigned long long)run.first_page, (unsigned long long)(run.first_page + run.npages),
				     l->index, want, want == (uint32_t)l->index ? " and spans two stripes" : "");
	} else if (r->nchan) {
		return lfail(l, -EPROTO, "RAM record on the main connection of a migration with channels (%s)",
			     lwhere(l, w, sizeof(w)));
	}
	const struct lm_mem_region *m = &r->mem[run.region];
	uint8_t *dst = (uint8_t *)m->host + run.region_off * LM_PAGE_SIZE;
	size_t dst_len = (size_t)run.npages * LM_PAGE_SIZE;
	lm_stream_csum c;
	lm_stream_csum_begin(&c, f);
	lm_stream_csum_update(&c, rh, sizeof(rh));

	if (run.kind == LM_RUN_DATA)
		lm_bitmap_set_range(&r->written, run.first_page, run.npages);
	/* Pages the filler knows are populated (a destination that
	 * preallocated its memory, a page resent in a later round) are read
	 * straight into place: no staging copy, no placer. */
	bool raw = run.kind == LM_RUN_DATA && run.enc == LM_ENC_RAW;
	bool fill = raw && lm__filler_on(&r->fill) && !lm__filler_present(&r->fill, run.first_page, run.npages);
	if (raw && lm__filler_on(&r->fill)) {
		__atomic_add_fetch(&r->runs_filled, 1, __ATOMIC_RELAXED);
		if (!fill)
			__atomic_add_fetch(&r->runs_in_place, 1, __ATOMIC_RELAXED);
	}
	if (fill && placer_ready(l)) {
		/* Into a staging buffer, checked and digested, then placed by
		 * the placer while the next run is read. */
		uint8_t *stage = l->pl.buf[l->pl.cur];
		err = lm__io_read(l->io, stage, dst_len);
		if (err)
			return lio_fail(l, err);
		if ((err = take_pages(l, &c, f, &run, stage, true)))
			return err;
		if ((err = placer_submit(l, run.first_page, dst, run.npages)))
			return placer_fail(l, err);
		l->pages_data += run.npages;
		return 0;
	}
	/* Anything else touches destination memory itself: after the
	 * placer's last job. */
	if ((err = placer_drain(l)))
		return placer_fail(l, err);
	if (fill) {
		/* Into the staging buffer, checked, then placed without the
		 * kernel zeroing fresh pages first. */
		err = lm__io_read(l->io, l->stage, dst_len);
		if (err)
			return lio_fail(l, err);
		if ((err = take_pages(l, &c, f, &run, l->stage, false)))
			return err;
		err = lm__filler_place(&r->fill, run.first_page, dst, l->stage, run.npages);
		if (err)
			return lfail(l, err, "could not place pages [%llu, %llu) in destination memory: %s",
				     (unsigned long long)run.first_page,
				     (unsigned long long)(run.first_page + run.npages), lm_strerror(err));
		if (r->use_digest) /* placed in line: what landed (docs/stream.md 5.1) */
			lm_digest_pages(l->digest, run.first_page, run.npages, dst);
		l->pages_data += run.npages;
	} else if (raw) {
		/* Validated: exactly dst_len bytes, inside the region. */
		err = lm__io_read(l->io, dst, dst_len);
		if (err)
			return lio_fail(l, err);
		if ((err = take_pages(l, &c, f, &run, dst, true)))
			return err;
		l->pages_data += run.npages;
	} else if (run.kind == LM_RUN_DATA) {
		err = lane_payload(l, &(lm_frame){ .type = f->type, .payload_len = (uint32_t)run.data_len });
		if (err)
			return err;
		lm_stream_csum_update(&c, l->payload, run.data_len);
		err = lm_stream_csum_check(&c, f, &e);
		/* With the filler on, unpopulated destination pages must not be
		 * written directly: decompress into the staging buffer. */
		uint8_t *out = lm__filler_on(&r->fill) ? l->stage : dst;
		if (!err)
			err = lm_stream_run_apply(l->s, &run, l->payload, run.data_len, out, dst_len, &e);
		if (err)
			return lfail(l, err, "%s (%s)", e.msg, lwhere(l, w, sizeof(w)));
		if (out != dst && (err = lm__filler_place(&r->fill, run.first_page, dst, out, run.npages)) < 0)
			return lfail(l, err, "could not place pages in destination memory: %s", lm_strerror(err));
		if (r->use_digest)
			lm_digest_pages(l->digest, run.first_page, run.npages, dst);
		l->pages_data += run.npages;
	} else {
		err = lm_stream_csum_check(&c, f, &e);
		if (err)
			return lfail(l, err, "%s (%s)", e.msg, lwhere(l, w, sizeof(w)));
		/* Fresh destination memory is zero already: only pages an
		 * earlier DATA run wrote need zeroing, so untouched memory is
		 * neither read nor allocated. */
		if (lm_bitmap_count_range(&r->written, run.first_page, run.npages)) {
			for (uint32_t i = 0; i < run.npages; i++) {
				if (!lm_bitmap_test(&r->written, run.first_page + i))
					continue;
				memset(dst + (size_t)i * LM_PAGE_SIZE, 0, LM_PAGE_SIZE);
				lm_bitmap_clear(&r->written, run.first_page + i);
			}
		}
		if (r->use_digest)
			lm_digest_zero(l->digest, run.first_page, run.npages);
		l->pages_zero += run.npages;
	}
	return 0;
}

/* A skipped page (a run of them) from a TABLE record: zero here as at the source. */
static void skipped_run(void *arg, uint64_t first, uint64_t n)
{
	struct recv *r = arg;
	const lm_stream_layout *l = &r->s.layout;
	for (uint32_t i = 0; i < l->nregions; i++) {
		uint64_t rs = l->regions[i].first_page, re = rs + l->regions[i].npages;
		uint64_t s = first > rs ? first : rs, e = first + n < re ? first + n : re;
		if (s >= e)
			continue;
		/* Fresh memory is zero: only pages a DATA run wrote need it. */
		if (lm_bitmap_count_range(&r->written, s, e - s)) {
			uint8_t *host = r->mem[i].host;
			for (uint64_t p = s; p < e; p++) {
				if (!lm_bitmap_test(&r->written, p))
					continue;
				memset(host + (p - rs) * LM_PAGE_SIZE, 0, LM_PAGE_SIZE);
				lm_bitmap_clear(&r->written, p);
			}
		}
		if (r->use_digest)
			lm_digest_zero(&r->digest, s, e - s);
	}
}

static int lanes_quiet(struct recv *r);

static int table(struct recv *r, const lm_record *rec)
{
	char w[80], why[200];
	int err = lanes_quiet(r);
	if (err)
		return err;
	if (!r->skip)
		return rfail(r, -EPROTO, "TABLE record without a skip map (%s)", where(r, w, sizeof(w)));
	if (r->have_digest)
		return rfail(r, -EPROTO, "TABLE record after DIGEST");
	int64_t got = lm_skip_map_table_write(r->skip, rec->u.table.payload, rec->u.table.len, skipped_run, r, why,
					      sizeof(why));
	if (got < 0)
		return rfail(r, (int)got, "bad TABLE record: %s (%s)", why, where(r, w, sizeof(w)));
	r->st->table_bytes += LM_FRAME_HDR + rec->u.table.len;
	return 0;
}

/*
 * A RAM run in post-copy: pending pages only, each once, placed whole
 * (never half-written where the running guest could see them) and hashed
 * before their waiters wake.
 */
static int pc_ram(struct recv *r, const lm_frame *f)
{
	uint8_t rh[LM_RUN_HDR];
	lm_run run;
	lm_stream_err e = { 0 };
	char w[80], why[200];
	if (f->payload_len < LM_RUN_HDR)
		return rfail(r, -EBADMSG, "RAM record of %u bytes is shorter than its run header (post-copy)",
			     f->payload_len);
	int err = lm__io_read(&r->io, rh, sizeof(rh));
	if (err)
		return io_rfail(r, err);
	err = lm_stream_run_parse(&r->s, f, rh, sizeof(rh), &run, &e);
	if (err)
		return rfail(r, err, "%s (post-copy)", e.msg);
	if (run.kind == LM_RUN_SKIPPED)
		return rfail(r, -EPROTO, "SKIPPED run in post-copy (pages [%llu, %llu))",
			     (unsigned long long)run.first_page, (unsigned long long)(run.first_page + run.npages));
	uint8_t *dst = (uint8_t *)r->mem[run.region].host + run.region_off * LM_PAGE_SIZE;
	size_t len = (size_t)run.npages * LM_PAGE_SIZE;
	lm_stream_csum c;
	lm_stream_csum_begin(&c, f);
	lm_stream_csum_update(&c, rh, sizeof(rh));
	const uint8_t *src = NULL;
	if (run.kind == LM_RUN_DATA && run.enc == LM_ENC_RAW) {
		err = lm__io_read(&r->io, r->pc_stage, len);
		if (err)
			return io_rfail(r, err);
		/* The placer digests the destination pages itself (5.1). */
		for (uint32_t k = 0; k < run.npages; k++)
			lm_stream_csum_page(&r->s, &c, run.first_page + k, r->pc_stage + (size_t)k * LM_PAGE_SIZE, NULL);
		src = r->pc_stage;
	} else if (run.kind == LM_RUN_DATA) {
		err = read_payload(r, &(lm_frame){ .type = f->type, .payload_len = (uint32_t)run.data_len });
		if (err)
			return err;
		lm_stream_csum_update(&c, r->main.payload, run.data_len);
	}
	err = lm_stream_csum_check(&c, f, &e);
	if (!err && run.kind == LM_RUN_DATA && run.enc != LM_ENC_RAW) {
		err = lm_stream_run_apply(&r->s, &run, r->main.payload, run.data_len, r->pc_stage, len, &e);
		src = r->pc_stage;
	}
	if (err)
		return rfail(r, err, "%s (pages [%llu, %llu), post-copy, %s)", e.msg, (unsigned long long)run.first_page,
			     (unsigned long long)(run.first_page + run.npages), where(r, w, sizeof(w)));
	err = lm__pc_dst_place(r->pc, run.first_page, dst, src, run.npages, r->use_digest ? &r->digest : NULL, why,
			       sizeof(why));
	if (err)
		return rfail(r, err, "%s", why);
	if (src) {
		lm_bitmap_set_range(&r->written, run.first_page, run.npages);
		r->st->pages_data += run.npages;
	} else {
		r->st->pages_zero += run.npages;
	}
	return 0;
}

/* ---- channels (docs/stream.md 3.16) ---------------------------------------- */

/* A channel's thread: RAM records of its stripes, and SYNC barriers. */
static void *lane_main(void *arg)
{
	struct lane *l = arg;
	struct recv *r = l->r;
	lm__thread_name("lm-recv/%d", l->index); /* a channel's: the main one runs in the caller */
	uint8_t hdr[LM_FRAME_HDR], pl[16];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = {0};
	char w[80];
	int err = 0;
	for (;;) {
		err = lm__io_read(l->io, hdr, sizeof(hdr));
		if (err) {
			lio_fail(l, err);
			break;
		}
		err = lm_stream_frame_parse(l->s, hdr, sizeof(hdr), &f, &e);
		if (err) {
			lfail(l, err, "%s (%s)", e.msg, lwhere(l, w, sizeof(w)));
			break;
		}
		if (f.type == LM_REC_RAM) {
			if ((err = ram(l, &f)))
				break;
			l->records++;
			continue;
		}
		if (f.type != LM_REC_SYNC) {
			err = lfail(l, -EPROTO, "unexpected %s record on a channel (%s)", lm_stream_type_name(f.type),
				    lwhere(l, w, sizeof(w)));
			break;
		}
		/* A barrier: everything before it is in destination memory. */
		if ((err = placer_drain(l))) {
			placer_fail(l, err);
			break;
		}
		if ((err = lm__io_read(l->io, pl, f.payload_len))) {
			lio_fail(l, err);
			break;
		}
		err = lm_stream_decode_payload(l->s, &f, pl, f.payload_len, &rec, &e);
		if (!err && rec.u.sync.seq != l->synced + 1)
			err = lfail(l, -EBADMSG, "SYNC %llu after SYNC %llu", (unsigned long long)rec.u.sync.seq,
				    (unsigned long long)l->synced);
		else if (err)
			lfail(l, err, "%s (%s)", e.msg, lwhere(l, w, sizeof(w)));
		if (err)
			break;
		l->records++;
		pthread_mutex_lock(&r->chan_lock);
		l->synced = rec.u.sync.seq;
		l->sync_flags = rec.u.sync.flags;
		pthread_cond_broadcast(&r->chan_cv);
		bool last = rec.u.sync.flags & LM_SYNC_LAST;
		/* Nothing past the barrier until the main connection applied
		 * its side of it (the TABLE records before its SYNC). */
		while (!last && r->released < l->synced && !r->chan_stop)
			pthread_cond_wait(&r->chan_cv, &r->chan_lock);
		bool stop = r->chan_stop;
		pthread_mutex_unlock(&r->chan_lock);
		if (last || stop)
			break;
	}
	int perr = placer_stop(l);
	if (perr && !err)
		err = placer_fail(l, perr);
	pthread_mutex_lock(&r->chan_lock);
	if (err && !r->chan_stop && !r->chan_failed) {
		r->chan_failed = true;
		r->chan_first = l->index;
	}
	l->done = true;
	pthread_cond_broadcast(&r->chan_cv);
	pthread_mutex_unlock(&r->chan_lock);
	if (err) {
		/* Wakes the main connection's wait (-ESHUTDOWN) and the other
		 * channels'. */
		uint64_t one = 1;
		ssize_t k = write(r->abort_fd, &one, sizeof(one));
		(void)k;
	}
	return NULL;
}

/* The first frame of a channel connection: CHANNEL. Its index, or -errno
 * (not ours: the caller closes it and waits for another). */
static int lane_hello(struct recv *r, int fd, char *why, size_t cap)
{
	struct lm__io io;
	uint8_t hdr[LM_FRAME_HDR], pl[24];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = {0};
	int err = lm__io_open(&io, fd, r->io.cancel_fd);
	if (err)
		return err;
	io.timeout_ms = r->io.timeout_ms ? r->io.timeout_ms : COMMIT_TIMEOUT_MS;
	err = lm__io_read(&io, hdr, sizeof(hdr));
	if (!err && !(err = lm_stream_frame_parse(&r->s, hdr, sizeof(hdr), &f, &e)) && f.type != LM_REC_CHANNEL) {
		snprintf(e.msg, sizeof(e.msg), "starts with %s, not CHANNEL", lm_stream_type_name(f.type));
		err = -EPROTO;
	}
	if (!err)
		err = lm__io_read(&io, pl, f.payload_len);
	if (!err)
		err = lm_stream_decode_payload(&r->s, &f, pl, f.payload_len, &rec, &e);
	if (!err && rec.u.channel.session != r->chan_session) {
		snprintf(e.msg, sizeof(e.msg), "of session %016llx, not this migration's",
			 (unsigned long long)rec.u.channel.session);
		err = -ESRCH;
	}
	if (!err && rec.u.channel.index >= r->nchan) {
		snprintf(e.msg, sizeof(e.msg), "channel %u of %u", rec.u.channel.index, r->nchan);
		err = -ERANGE;
	}
	if (!err && r->lanes[rec.u.channel.index].fd >= 0) {
		snprintf(e.msg, sizeof(e.msg), "channel %u connected twice", rec.u.channel.index);
		err = -EEXIST;
	}
	lm__io_close(&io);
	if (err)
		snprintf(why, cap, "%s", e.msg[0] ? e.msg : lm_strerror(err));
	return err ? err : (int)rec.u.channel.index;
}

static int lane_start(struct recv *r, struct lane *l, int fd)
{
	l->fd = fd;
	lm_stream_init(&l->own_s);
	l->own_s.caps = r->s.caps;
	l->own_s.layout = r->s.layout;
	l->s = &l->own_s;
	lm_digest_share(&l->own_dig, &r->digest);
	l->digest = &l->own_dig;
	if (lm__filler_on(&r->fill) &&
	    !(l->stage = aligned_alloc(LM_PAGE_SIZE, (size_t)LM_STREAM_MAX_RUN_PAGES * LM_PAGE_SIZE)))
		return rfail(r, -ENOMEM, "out of memory for channel %d", l->index);
	int err = lm__io_open(&l->own_io, fd, r->io.cancel_fd);
	if (err)
		return rfail(r, err, "channel %d: unusable connection: %s", l->index, lm_strerror(err));
	l->io_on = true;
	l->io = &l->own_io;
	l->own_io.timeout_ms = r->io.timeout_ms;
	l->own_io.abort_fd = r->abort_fd;
	err = -pthread_create(&l->th, NULL, lane_main, l);
	if (err)
		return rfail(r, err, "could not start channel %d: %s", l->index, lm_strerror(err));
	l->th_on = true;
	return 0;
}

/* CHANNELS read: wait for every channel connection, start its thread. */
static int lanes_open(struct recv *r, const lm_record *rec)
{
	char w[200];
	unsigned n = rec->u.channels.nchannels;
	if (!r->p->accept_channel)
		return rfail(r, -EPROTO, "CHANNELS record, but this side cannot take channels");
	r->lanes = calloc(n, sizeof(*r->lanes));
	if (!r->lanes)
		return rfail(r, -ENOMEM, "out of memory for %u channels", n);
	for (unsigned i = 0; i < n; i++)
		r->lanes[i] = (struct lane){.r = r, .index = (int)i, .fd = -1};
	r->stripe = rec->u.channels.stripe_pages;
	r->chan_session = rec->u.channels.session;
	r->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->abort_fd < 0)
		return rfail(r, -errno, "cannot set up channels: %s", lm_strerror(-errno));
	pthread_mutex_init(&r->chan_lock, NULL);
	pthread_cond_init(&r->chan_cv, NULL);
	r->chan_lock_on = true;
	r->nchan = n;
	r->st->channels = n;
	r->io.abort_fd = r->abort_fd;
	uint64_t limit_ms = r->io.timeout_ms ? r->io.timeout_ms : COMMIT_TIMEOUT_MS;
	double deadline = lm__now() + (double)limit_ms / 1000;
	for (unsigned have = 0; have < n;) {
		double left = deadline - lm__now();
		/* In slices, so that a sender that gave up (it closed the main
		 * connection) is noticed now rather than at the deadline. */
		int slice = left > 0.05 ? 50 : (int)(left * 1000) + 1;
		int fd = left > 0 ? r->p->accept_channel(r->p->channel_arg, slice) : -ETIMEDOUT;
		if ((fd == -ETIMEDOUT || fd == -EAGAIN) && left > 0.05) {
			struct pollfd pm = {.fd = r->io.fd, .events = POLLRDHUP};
			if (poll(&pm, 1, 0) > 0 && (pm.revents & (POLLRDHUP | POLLHUP | POLLERR)))
				return rfail(r, -ECONNABORTED,
					     "the sender closed the main connection while %u of %u channels were "
					     "connected", have, n);
			continue;
		}
		if (fd == -ETIMEDOUT || fd == -EAGAIN) {
			unsigned missing = 0;
			while (r->lanes[missing].fd >= 0)
				missing++;
			return rfail(r, -ETIMEDOUT, "channel %u of %u never connected (waited %llu ms)", missing, n,
				     (unsigned long long)limit_ms);
		}
		if (fd == -ECANCELED)
			return rfail(r, fd, "cancelled while waiting for the channels");
		if (fd < 0)
			return rfail(r, fd, "waiting for the channels: %s", lm_strerror(fd));
		int k = lane_hello(r, fd, w, sizeof(w));
		if (k == -ECANCELED) {
			close(fd);
			return rfail(r, k, "cancelled while waiting for the channels");
		}
		if (k < 0) {
			/* Not ours (an earlier attempt's, or garbage): ignore it. */
			close(fd);
			continue;
		}
		int err = lane_start(r, &r->lanes[k], fd);
		if (err)
			return err;
		r->st->received += LM_FRAME_HDR + 24; /* its CHANNEL frame */
		have++;
	}
	return 0;
}

/* Under chan_lock: wait until every channel read SYNC seq (true), or one
 * failed (false). */
static bool lanes_at(struct recv *r, uint64_t seq)
{
	for (;;) {
		unsigned behind = 0;
		for (unsigned i = 0; i < r->nchan; i++)
			behind += r->lanes[i].synced < seq;
		if (r->chan_failed)
			return false;
		if (!behind)
			return true;
		pthread_cond_wait(&r->chan_cv, &r->chan_lock);
	}
}

/* SYNC on the main connection: every channel's part of barrier seq applied. */
static int lanes_sync(struct recv *r, const lm_record *rec)
{
	if (!r->nchan)
		return rfail(r, -EPROTO, "SYNC record before CHANNELS");
	if (r->chan_last)
		return rfail(r, -EPROTO, "SYNC record after the last SYNC");
	uint64_t seq = rec->u.sync.seq;
	if (seq != r->main_sync + 1)
		return rfail(r, -EBADMSG, "SYNC %llu after SYNC %llu", (unsigned long long)seq,
			     (unsigned long long)r->main_sync);
	pthread_mutex_lock(&r->chan_lock);
	int bad = -1;
	bool failed = !lanes_at(r, seq);
	for (unsigned i = 0; i < r->nchan && bad < 0; i++)
		if (r->lanes[i].synced != seq || r->lanes[i].sync_flags != rec->u.sync.flags)
			bad = (int)i;
	pthread_mutex_unlock(&r->chan_lock);
	if (failed)
		return chan_error(r);
	if (bad >= 0)
		return rfail(r, -EPROTO, "SYNC %llu%s on the main connection, channel %d is at SYNC %llu%s",
			     (unsigned long long)seq, rec->u.sync.flags & LM_SYNC_LAST ? " (last)" : "", bad,
			     (unsigned long long)r->lanes[bad].synced,
			     r->lanes[bad].sync_flags & LM_SYNC_LAST ? " (last)" : "");
	/* Every channel waits at the barrier (or ended): their sums can be
	 * read. */
	for (unsigned i = 0; i < r->nchan; i++)
		lm_digest_fold(&r->digest, &r->lanes[i].own_dig);
	r->main_sync = seq;
	if (rec->u.sync.flags & LM_SYNC_LAST) {
		r->chan_last = true;
		return 0;
	}
	/* The TABLE records of this barrier came before it: the channels
	 * may read on. */
	pthread_mutex_lock(&r->chan_lock);
	r->released = seq;
	pthread_cond_broadcast(&r->chan_cv);
	pthread_mutex_unlock(&r->chan_lock);
	return 0;
}

/* A TABLE record belongs to the barrier after it: every channel must have
 * applied its pages up to that SYNC first (and waits there). */
static int lanes_quiet(struct recv *r)
{
	if (!r->nchan || r->chan_last)
		return 0;
	pthread_mutex_lock(&r->chan_lock);
	bool ok = lanes_at(r, r->main_sync + 1);
	pthread_mutex_unlock(&r->chan_lock);
	return ok ? 0 : chan_error(r);
}

/* Stop and join the channels, count what they did, free them. */
static void lanes_close(struct recv *r)
{
	if (!r->lanes)
		return;
	if (r->chan_lock_on) {
		pthread_mutex_lock(&r->chan_lock);
		r->chan_stop = true;
		pthread_cond_broadcast(&r->chan_cv);
		pthread_mutex_unlock(&r->chan_lock);
		uint64_t one = 1;
		ssize_t k = write(r->abort_fd, &one, sizeof(one));
		(void)k;
	}
	for (unsigned i = 0; i < r->nchan; i++) {
		struct lane *l = &r->lanes[i];
		if (l->th_on)
			pthread_join(l->th, NULL);
		r->st->pages_data += l->pages_data;
		r->st->pages_zero += l->pages_zero;
		if (l->io_on) {
			r->st->received += l->own_io.bytes_in;
			lm__io_close(&l->own_io);
		}
		if (l->fd >= 0)
			close(l->fd);
		if (l->s == &l->own_s)
			lm_stream_destroy(&l->own_s);
		free(l->stage);
		free(l->payload);
	}
	free(r->lanes);
	r->lanes = NULL;
	r->io.abort_fd = -1;
	if (r->abort_fd >= 0)
		close(r->abort_fd);
	r->abort_fd = -1;
	if (r->chan_lock_on) {
		pthread_cond_destroy(&r->chan_cv);
		pthread_mutex_destroy(&r->chan_lock);
		r->chan_lock_on = false;
	}
}

/* records() read POSTCOPY: the switch (docs/stream.md 3.14). */
#define SWITCHED 1

/* Records until END; returns 0 at a complete, verified stream. */
static int records_loop(struct recv *r);

/* The main connection's records until the end or a failure; the placer
 * is idle and gone when this returns. */
static int records(struct recv *r)
{
	int err = records_loop(r);
	int perr = placer_stop(&r->main);
	if (perr && !err)
		err = placer_fail(&r->main, perr);
	return err;
}

static int records_loop(struct recv *r)
{
	uint8_t hdr[LM_FRAME_HDR];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = { 0 };
	char w[80];
	for (;;) {
		int err = lm__io_read(&r->io, hdr, sizeof(hdr));
		if (err)
			return io_rfail(r, err);
		err = lm_stream_frame_parse(&r->s, hdr, sizeof(hdr), &f, &e);
		if (err)
			return rfail(r, err, "%s (%s)", e.msg, where(r, w, sizeof(w)));
		/* Every record but a pre-copy RAM run waits for the placer. */
		if ((f.type != LM_REC_RAM || r->in_postcopy) && (err = placer_drain(&r->main)))
			return placer_fail(&r->main, err);
		if (f.type == LM_REC_RAM && r->in_postcopy) {
			err = pc_ram(r, &f);
			if (err)
				return err;
			r->records++;
			continue;
		}
		if (f.type == LM_REC_RAM) {
			if (r->switched)
				return rfail(r, -EPROTO, "RAM record after POSTCOPY, before COMMIT");
			err = ram(&r->main, &f);
			if (err)
				return err;
			r->records++;
			continue;
		}
		if (f.type != LM_REC_ROUND && f.type != LM_REC_DEVICE && f.type != LM_REC_DIGEST && f.type != LM_REC_END &&
		    f.type != LM_REC_TABLE && f.type != LM_REC_PREPARE && f.type != LM_REC_PENDING &&
		    f.type != LM_REC_POSTCOPY && f.type != LM_REC_CHANNELS && f.type != LM_REC_SYNC)
			return rfail(r, -EPROTO, "unexpected %s record in the stream (%s)", lm_stream_type_name(f.type),
				     where(r, w, sizeof(w)));
		/* After the switch only the pending pages, DIGEST and END. */
		if (r->in_postcopy && f.type != LM_REC_DIGEST && f.type != LM_REC_END)
			return rfail(r, -EPROTO, "%s record in post-copy", lm_stream_type_name(f.type));
		err = read_payload(r, &f);
		if (err)
			return err;
		err = lm_stream_decode_payload(&r->s, &f, r->main.payload, f.payload_len, &rec, &e);
		if (err)
			return rfail(r, err, "%s (%s)", e.msg, where(r, w, sizeof(w)));
		r->records++;
		if (f.type != LM_REC_CHANNELS && (r->s.caps & LM_CAP_MULTIFD) && !r->nchan)
			return rfail(r, -EPROTO, "%s record before CHANNELS (multifd was accepted)",
				     lm_stream_type_name(f.type));
		/* POSTCOPY too: it arms post-copy over all RAM, which no channel
		 * may still be writing (docs/stream.md 3.16). */
		if ((f.type == LM_REC_END || f.type == LM_REC_PENDING || f.type == LM_REC_POSTCOPY) && r->nchan &&
		    !r->chan_last)
			return rfail(r, -EPROTO, "%s record before the channels' last SYNC", lm_stream_type_name(f.type));
		switch (f.type) {
		case LM_REC_CHANNELS:
			if (r->nchan || r->records != 1)
				return rfail(r, -EPROTO, "CHANNELS record %s", r->nchan ? "twice" : "after other records");
			err = lanes_open(r, &rec);
			if (err)
				return err;
			break;
		case LM_REC_SYNC:
			err = lanes_sync(r, &rec);
			if (err)
				return err;
			break;
		case LM_REC_ROUND:
			if (rec.u.round <= r->round)
				return rfail(r, -EBADMSG, "ROUND %llu after round %llu", (unsigned long long)rec.u.round,
					     (unsigned long long)r->round);
			r->round = rec.u.round;
			r->st->rounds++;
			break;
		case LM_REC_DEVICE:
			if (r->have_digest)
				return rfail(r, -EPROTO, "DEVICE record after DIGEST");
			if (r->pc && lm__pc_dst_pending(r->pc))
				return rfail(r, -EPROTO, "DEVICE record after PENDING");
			if (r->ops && r->ops->load_state) {
				err = r->ops->load_state(r->ctx, rec.u.device.name, rec.u.device.blob, rec.u.device.len);
				if (err)
					return rfail(r, err, "device '%s' rejected its state (%zu bytes): %s",
						     rec.u.device.name, rec.u.device.len, why_failed(r, err));
			}
			r->st->devices++;
			break;
		case LM_REC_TABLE:
			err = table(r, &rec);
			if (err)
				return err;
			break;
		case LM_REC_PENDING:
			if (r->have_digest)
				return rfail(r, -EPROTO, "PENDING record after DIGEST");
			for (uint32_t i = 0; i < rec.u.pending.nruns; i++) {
				lm_stream_region run = lm_stream_pending_run(&rec, i);
				if (lm__pc_dst_add(r->pc, run.first_page, run.npages) < 0)
					return rfail(r, -ENOMEM, "out of memory for the pending pages");
			}
			break;
		case LM_REC_POSTCOPY:
			if (r->have_digest)
				return rfail(r, -EPROTO, "POSTCOPY record after DIGEST");
			if (rec.u.postcopy.npending != lm__pc_dst_pending(r->pc))
				return rfail(r, -EBADMSG, "POSTCOPY announces %llu pending pages, PENDING named %llu",
					     (unsigned long long)rec.u.postcopy.npending,
					     (unsigned long long)lm__pc_dst_pending(r->pc));
			r->switched = true;
			r->session = rec.u.postcopy.session;
			return SWITCHED;
		case LM_REC_PREPARE:
			if (r->have_digest)
				return rfail(r, -EPROTO, "PREPARE record after DIGEST");
			if (r->prepared && !(r->s.caps & LM_CAP_CATCH_UP))
				return rfail(r, -EPROTO, "second PREPARE record");
			/* The switchover comes: finish whatever the workload still
			 * prepares (a VMM builds its VM), then say so. A later
			 * PREPARE (catch-up) only asks whether everything before
			 * it is applied, which it is: records are handled in
			 * order, the placer drained before this one, and with
			 * channels the SYNC before it waited for theirs. */
			if (!r->prepared && r->ops && r->ops->prepare && (err = r->ops->prepare(r->ctx)) < 0)
				return rfail(r, err, "the destination could not get ready: %s", why_failed(r, err));
			if (r->prepared)
				r->st->catch_ups++;
			r->prepared = true;
			err = send_ready(r);
			if (err)
				return io_rfail(r, err);
			break;
		case LM_REC_DIGEST:
			if (!r->use_digest)
				return rfail(r, -EPROTO, "DIGEST record on a no-digest stream");
			if (r->have_digest)
				return rfail(r, -EPROTO, "second DIGEST record");
			r->have_digest = true;
			r->dig_lo = rec.u.digest.lo;
			r->dig_hi = rec.u.digest.hi;
			r->dig_npages = rec.u.digest.npages;
			break;
		case LM_REC_END: {
			if (r->in_postcopy && lm__pc_dst_left(r->pc))
				return rfail(r, -EPROTO, "END with %llu pending pages never sent",
					     (unsigned long long)lm__pc_dst_left(r->pc));
			if (!r->use_digest) {
				/* no-digest: every frame's checksum held, nothing
				 * more can be checked. */
				return 0;
			}
			if (!r->have_digest)
				return rfail(r, -EPROTO, "END without a DIGEST: cannot verify the memory");
			if (r->dig_npages != r->s.layout.total_pages)
				return rfail(r, -EBADMSG, "DIGEST covers %llu pages, the layout has %llu",
					     (unsigned long long)r->dig_npages,
					     (unsigned long long)r->s.layout.total_pages);
			lm_hash128 mine = lm_digest_value(&r->digest);
			if (mine.lo != r->dig_lo || mine.hi != r->dig_hi)
				return rfail(r, -EBADMSG,
					     "RAM digest mismatch: sender %016llx%016llx, received memory %016llx%016llx",
					     (unsigned long long)r->dig_hi, (unsigned long long)r->dig_lo,
					     (unsigned long long)mine.hi, (unsigned long long)mine.lo);
			r->st->digest_ok = true;
			return 0;
		}
		}
	}
}

/*
 * After RESULT ok: the sender's COMMIT, the last frame of the stream. Until
 * it arrives the sender may not know we succeeded and may resume its own
 * copy of the guest, so anything but a valid COMMIT is a failure and the
 * destination must not run the guest.
 */
static int wait_commit(struct recv *r, uint64_t timeout_ms)
{
	uint8_t hdr[LM_FRAME_HDR];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = { 0 };
	r->io.timeout_ms = timeout_ms;
	int err = lm__io_read(&r->io, hdr, sizeof(hdr));
	if (err == -ECONNRESET)
		return rfail(r, -ECONNABORTED, "no commit from the sender: the connection closed after RESULT ok");
	if (err == -ETIMEDOUT)
		return rfail(r, err, "no commit from the sender within %llu ms after RESULT ok",
			     (unsigned long long)timeout_ms);
	if (err)
		return rfail(r, err, "no commit from the sender: %s after RESULT ok", lm_strerror(err));
	err = lm_stream_frame_parse(&r->s, hdr, sizeof(hdr), &f, &e);
	if (err)
		return rfail(r, err, "no commit from the sender: bad frame after RESULT ok: %s", e.msg);
	if (f.type != LM_REC_COMMIT)
		return rfail(r, -EPROTO, "no commit from the sender: %s record after END", lm_stream_type_name(f.type));
	/* COMMIT's payload is empty (frame_parse bounds it), but its checksum
	 * still has to match. */
	err = lm_stream_decode_payload(&r->s, &f, hdr, 0, &rec, &e);
	if (err)
		return rfail(r, err, "no commit from the sender: bad COMMIT: %s", e.msg);
	return 0;
}

/*
 * POSTCOPY was read and the workload can take over: the pending pages'
 * stale copies go, missing-page faults are armed over all guest RAM and
 * the fault thread starts, all before RESULT ok (a failure here still lets
 * the sender resume). The pre-copy filler's userfaultfd goes first: a range
 * takes one userfaultfd at a time.
 */
static int pc_arm(struct recv *r)
{
	char why[200];
	lm__filler_destroy(&r->fill);
	r->pc_stage = aligned_alloc(LM_PAGE_SIZE, (size_t)LM_STREAM_MAX_RUN_PAGES * LM_PAGE_SIZE);
	if (!r->pc_stage)
		return rfail(r, -ENOMEM, "out of memory for post-copy");
	int err = lm__pc_dst_arm(r->pc, &r->io, why, sizeof(why));
	if (err)
		return rfail(r, err, "cannot take over in post-copy: %s", why);
	r->st->postcopy = true;
	r->st->postcopy_pending = lm__pc_dst_pending(r->pc);
	return 0;
}

/* A failure of the connection itself, not of what came over it. */
static bool broken_link(int err)
{
	return err == -ECONNABORTED || err == -ECONNRESET || err == -EPIPE || err == -ENOTCONN || err == -ETIMEDOUT ||
	       err == -ENETDOWN || err == -ENETUNREACH || err == -EHOSTUNREACH;
}

/* MISSING runs into b, flushed as records fill up (pc_recover). */
struct missing_out {
	struct recv *r;
	lm_stream_region runs[256];
	uint32_t n;
	uint64_t pages;
	lm_buf *b;
	int err;
};

static void missing_flush(struct missing_out *mo)
{
	if (mo->n && !mo->err)
		mo->err = lm_stream_put_missing(mo->b, mo->runs, mo->n);
	mo->n = 0;
}

static void missing_run(void *arg, uint64_t first, uint64_t n)
{
	struct missing_out *mo = arg;
	const lm_stream_layout *l = &mo->r->s.layout;
	/* A run never spans two regions. */
	for (uint32_t i = 0; i < l->nregions && n; i++) {
		uint64_t rs = l->regions[i].first_page, re = rs + l->regions[i].npages;
		if (first >= re || first + n <= rs)
			continue;
		uint64_t s = first > rs ? first : rs, e = first + n < re ? first + n : re;
		mo->runs[mo->n++] = (lm_stream_region){ s, e - s };
		mo->pages += e - s;
		if (mo->n == sizeof(mo->runs) / sizeof(mo->runs[0]))
			missing_flush(mo);
	}
}

/*
 * One recovery connection (docs/stream.md 3.15): it must start with RESUME
 * for our session; the answer lists the pending pages not placed. 0 when
 * the post-copy goes on over it.
 */
static int pc_resume_on(struct recv *r, int fd, char *why, size_t cap)
{
	lm__io_close(&r->io);
	if (r->own_fd >= 0)
		close(r->own_fd);
	r->own_fd = fd;
	int err = lm__io_open(&r->io, fd, r->p->cancel_fd > 0 ? r->p->cancel_fd : -1);
	if (err) {
		snprintf(why, cap, "unusable connection: %s", lm_strerror(err));
		return err;
	}
	uint64_t idle = !r->p->idle_timeout_ms ? LM_IDLE_TIMEOUT_DEFAULT_MS
		      : r->p->idle_timeout_ms == LM_TIMEOUT_NEVER ? 0 : r->p->idle_timeout_ms;
	r->io.timeout_ms = idle;
	uint8_t hdr[LM_FRAME_HDR], pl[64];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = { 0 };
	if ((err = lm__io_read(&r->io, hdr, sizeof(hdr)))) {
		snprintf(why, cap, "nothing came: %s", lm_strerror(err));
		return err;
	}
	if ((err = lm_stream_frame_parse(&r->s, hdr, sizeof(hdr), &f, &e)) || f.type != LM_REC_RESUME) {
		snprintf(why, cap, "%s", err ? e.msg : "it did not start with RESUME");
		return err ? err : -EPROTO;
	}
	if ((err = lm__io_read(&r->io, pl, f.payload_len)) ||
	    (err = lm_stream_decode_payload(&r->s, &f, pl, f.payload_len, &rec, &e))) {
		snprintf(why, cap, "bad RESUME: %.180s", e.msg[0] ? e.msg : lm_strerror(err));
		return err;
	}
	if (rec.u.session != r->session) {
		snprintf(why, cap, "RESUME for post-copy %#llx, this one is %#llx", (unsigned long long)rec.u.session,
			 (unsigned long long)r->session);
		(void)send_status(r, LM_REC_REFUSE, ESRCH, why);
		return -ESRCH;
	}
	lm_buf b;
	lm_buf_init(&b);
	struct missing_out mo = { .r = r, .b = &b };
	lm__pc_dst_missing(r->pc, missing_run, &mo);
	missing_flush(&mo);
	err = mo.err ? mo.err : lm_stream_put_resumed(&b, r->session, mo.pages);
	if (!err)
		err = lm__io_write(&r->io, b.data, b.len);
	lm_buf_destroy(&b);
	if (err) {
		snprintf(why, cap, "could not answer RESUME: %s", lm_strerror(err));
		return err;
	}
	lm__pc_dst_relink(r->pc, &r->io);
	return 0;
}

/* The post-copy connection broke: wait for the sender's next connection
 * (r->p->reconnect) and go on over it. */
static int pc_recover(struct recv *r)
{
	char cause[sizeof(r->st->error)], why[200];
	snprintf(cause, sizeof(cause), "%.200s", r->st->error);
	lm__pc_dst_unlink(r->pc);
	for (;;) {
		int fd = r->p->reconnect(r->p->reconnect_arg, cause);
		if (fd < 0) {
			r->st->error[0] = 0;
			return rfail(r, fd, "%s; no recovery: %s", cause, lm_strerror(fd));
		}
		int err = pc_resume_on(r, fd, why, sizeof(why));
		if (!err)
			break;
		snprintf(cause, sizeof(cause), "a recovery connection failed: %s", why);
	}
	r->st->error[0] = 0;
	r->st->postcopy_recoveries++;
	/* The sender sends the digest again after the missing pages. */
	r->have_digest = false;
	return 0;
}

/*
 * pc_start(): COMMIT of the switch was read, the guest runs here from now
 * on (before COMMITTED goes out). Then postcopy(): the
 * pending pages arrive as RAM runs (some because the fault thread asked),
 * then DIGEST and END; the answer is the last RESULT: the digest's verdict
 * over the whole run. Whatever happens the guest is not run anywhere else.
 */
static int pc_start(struct recv *r)
{
	r->in_postcopy = true;
	r->records = 0;
	int err = r->ops->postcopy_start(r->ctx);
	if (err)
		return rfail(r, err, "could not start the guest in post-copy: %s", why_failed(r, err));
	r->st->postcopy_started = true;
	r->pc_t0 = lm__now();
	return 0;
}

static int postcopy(struct recv *r)
{
	char why[200];
	double t0 = r->pc_t0;
	int err;
	lm__test_point("receiver-postcopy-running");
	for (;;) {
		err = records(r);
		if (!err || !r->p->reconnect || !broken_link(err))
			break;
		/* The connection broke: nothing is lost, wait for another. */
		if ((err = pc_recover(r)))
			break;
	}
	int ferr = lm__pc_dst_stop(r->pc, why, sizeof(why));
	if (!err && ferr)
		err = rfail(r, ferr, "post-copy: %s", why);
	r->st->postcopy_complete = lm__pc_dst_left(r->pc) == 0;
	r->st->postcopy_time_ms = (uint64_t)((lm__now() - t0) * 1000);
	lm__pc_dst_stats(r->pc, r->st);
	if (err != -ECONNABORTED && !(err == -ETIMEDOUT && !r->io.stall_ms))
		(void)send_status(r, LM_REC_RESULT, -err, err ? r->st->error : "ok");
	if (err && !r->st->postcopy_complete) {
		size_t k = strlen(r->st->error);
		snprintf(r->st->error + k, sizeof(r->st->error) - k,
			 "; post-copy broke off with %llu of %llu pages still at the source",
			 (unsigned long long)lm__pc_dst_left(r->pc), (unsigned long long)lm__pc_dst_pending(r->pc));
	}
	return err;
}

int lm_migrate_receive(int fd, const struct lm_receive_params *p, const struct lm_workload_ops *ops, void *ctx,
		       struct lm_receive_stats *stats)
{
	struct lm_receive_stats local;
	struct lm_receive_params defp = { 0 };
	struct recv r = { .ops = ops, .ctx = ctx, .st = stats ? stats : &local, .fill = { .uffd = -1 }, .own_fd = -1,
			  .abort_fd = -1, .chan_first = -1 };
	double t0 = lm__now();
	bool set_up = false;
	if (!p)
		p = &defp;
	r.p = p;
	memset(r.st, 0, sizeof(*r.st));
	lm_stream_init(&r.s);
	r.main = (struct lane){.r = &r, .index = -1, .io = &r.io, .s = &r.s, .digest = &r.digest, .fd = -1};
	int err = lm__io_open(&r.io, fd, p->cancel_fd > 0 ? p->cancel_fd : -1);
	if (err) {
		rfail(&r, err, "unusable connection: %s", lm_strerror(err));
		goto out;
	}
	/* The io layer's 0 is "never". */
	uint64_t idle = !p->idle_timeout_ms ? LM_IDLE_TIMEOUT_DEFAULT_MS
		      : p->idle_timeout_ms == LM_TIMEOUT_NEVER ? 0 : p->idle_timeout_ms;
	r.io.timeout_ms = idle;

	err = handshake(&r, LM_CAP_KNOWN & ~p->caps_disabled);
	set_up = r.setup_called;
	if (err) {
		/* Tell the sender why, unless the connection itself is gone. */
		if (err != -ECONNABORTED && err != -ETIMEDOUT)
			(void)send_status(&r, r.accept_sent ? LM_REC_RESULT : LM_REC_REFUSE, -err, r.st->error);
		goto out;
	}
	err = records(&r);
	bool switched = err == SWITCHED;
	if (switched)
		err = 0;
	/* Before RESULT ok: can the workload take over at all? A failure here
	 * still lets the sender resume its copy. */
	if (!err && ops && ops->end && (err = ops->end(ctx)) < 0)
		rfail(&r, err, "the destination cannot take over: %s", why_failed(&r, err));
	if (!err && switched)
		err = pc_arm(&r);
	/* Only now: after a failure the workload may have dropped the map. */
	if (!err && r.skip)
		r.st->ballooned = lm_skip_map_count(r.skip);
	if (err) {
		if (err != -ECONNABORTED)
			(void)send_status(&r, LM_REC_RESULT, -err, r.st->error);
		goto out;
	}
	lm__test_point("receiver-before-result");
	err = send_status(&r, LM_REC_RESULT, 0, "ok");
	/* Every page is in place: the memory behaves as ordinary memory again
	 * before anyone else (the workload, after COMMIT) touches it. After
	 * RESULT, so that unregistering (0.1 ms for a 2 GiB guest here)
	 * overlaps the COMMIT round trip instead of delaying RESULT: the guest
	 * still runs here only after both. */
	lm__filler_destroy(&r.fill);
	lm__test_point("receiver-after-result");
	if (err)
		rfail(&r, err, "verified, but could not send RESULT ok (%s), so no commit can come",
		      lm_strerror(err));
	else
		err = wait_commit(&r, idle ? idle : COMMIT_TIMEOUT_MS);
	if (err && switched) {
		/* Not a complete copy: nothing to keep. The sender either resumes
		 * (it missed RESULT ok) or waits in post-copy with every page. */
		size_t k = strlen(r.st->error);
		snprintf(r.st->error + k, sizeof(r.st->error) - k,
			 "; the switch to post-copy did not happen: this incomplete copy is dropped");
		goto out;
	}
	if (err == -ECANCELED) {
		/* Our own side gave up (a signal, --timeout): no copy is kept.
		 * The sender either never read RESULT ok and resumes, or its
		 * COMMIT goes unanswered and it keeps its copy paused
		 * (unconfirmed): the guest survives there either way. */
		goto out;
	}
	if (err) {
		/*
		 * A complete, verified copy, and no COMMIT: the sender may have
		 * resumed its own (it may not have read RESULT ok), or it may
		 * have died. Neither run it nor drop it: the caller keeps it
		 * paused until an operator decides (docs/stream.md 3.11).
		 */
		r.st->wait_commit = true;
		size_t k = strlen(r.st->error);
		snprintf(r.st->error + k, sizeof(r.st->error) - k,
			 "; the verified copy is kept paused: run it only if the source is gone");
		err = -ENOLINK;
		goto out;
	}
	lm__test_point("receiver-after-commit");
	/* The guest runs from here on: before COMMITTED, so that the sender's
	 * COMMIT-to-COMMITTED time (resume-us) covers its start. */
	if (switched)
		err = pc_start(&r);
	else if (ops && ops->start && (err = ops->start(ctx)) < 0)
		rfail(&r, err, "committed, but the guest could not start here: %s", why_failed(&r, err));
	if (err)
		goto out;
	if (r.s.caps & LM_CAP_COMMIT_ACK) {
		/* We run the guest now whether or not this arrives: COMMIT was
		 * the sender's promise not to. */
		lm_buf b;
		lm_buf_init(&b);
		if (lm_stream_put_committed(&b) == 0 && lm__io_write(&r.io, b.data, b.len) == 0)
			r.st->committed_sent = true;
		lm_buf_destroy(&b);
		lm__test_point("receiver-after-committed");
	}
	if (switched)
		err = postcopy(&r);

out:
	lanes_close(&r);
	if (r.placers_unstarted)
		snprintf(r.st->fill, sizeof(r.st->fill),
			 "uffdio-copy (in line on %d connection(s): no placer thread, out of memory or threads)",
			 r.placers_unstarted);
	if (r.runs_in_place) {
		/* Say what happened to present memory, not only to fresh. */
		size_t k = strlen(r.st->fill);
		snprintf(r.st->fill + k, sizeof(r.st->fill) - k, "; %llu/%llu runs in place",
			 (unsigned long long)r.runs_in_place, (unsigned long long)r.runs_filled);
	}
	r.st->pages_data += r.main.pages_data;
	r.st->pages_zero += r.main.pages_zero;
	free(r.main.payload);
	lm__filler_destroy(&r.fill);
	lm__pc_dst_free(r.pc, r.st->postcopy_started);
	free(r.pc_stage);
	r.st->received += r.io.bytes_in;
	r.st->total_time_ms = (uint64_t)((lm__now() - t0) * 1000);
	if (set_up && ops && ops->finish)
		ops->finish(ctx, err, err ? r.st->error : "ok");
	lm__io_close(&r.io);
	if (r.own_fd >= 0)
		close(r.own_fd);
	if (r.digest_ok)
		lm_digest_destroy(&r.digest);
	if (r.written_ok)
		lm_bitmap_destroy(&r.written);
	lm_stream_destroy(&r.s);
	free(r.mem);
	return err;
}
