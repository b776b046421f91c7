/*
 * The pre-copy sender: one migration thread per migration.
 *
 * Workload: guest memory of any size written by a running workload. The
 * thread owns everything it touches (dirty bitmap, digest, output buffer,
 * the connection); the only state shared with other threads is the
 * published stats snapshot (a mutex held just for a struct copy, never over
 * I/O) and the cancel flag/eventfd. The workload never waits on us except
 * inside pause(), which it implements.
 *
 * Per round: for each sync unit (a region, or sync_pages of it) harvest the
 * dirty source just before scanning the unit; for each chunk re-arm, then
 * copy its dirty pages (harvest, clear, copy). Runs of consecutive dirty
 * pages become one record of up to LM_STREAM_MAX_RUN_PAGES: zero runs carry
 * no bytes, data runs are copied once from guest memory straight into the
 * output buffer, and the digest hashes that copy, so the digest describes
 * exactly what was sent. After the round one more harvest of everything
 * counts what is left; the convergence policy (converge.c, called by
 * decide()) weighs that with the bandwidth measured on the round's data
 * pages (estimate()), the round trip, the workload's own switchover cost
 * and the downtime limit: another round (with auto-converge, a slower
 * workload), getting the destination ready, the switchover, or giving up.
 * With downtime-guard the pause itself is watched and undone if it would
 * break the limit (guard_ok, guard_resume).
 *
 * Ballooned pages (lm_migration_set_skip_map): when skip-balloon and the
 * table stream are negotiated, each chunk's skipped pages are removed from
 * the dirty set after the chunk is re-armed and before it is copied, under
 * the skip map's lock, so they are neither read nor mentioned on the wire.
 * After every round (and after the final pass) the skip map's table stream
 * is drained into TABLE records: the first pass carries the whole map, later
 * ones only the 128-page entries that changed. A page marked after it was
 * sent with data is zero at the source now (the balloon freed it), so every
 * skipped page a TABLE record carries gets a zero digest contribution here,
 * and the receiver zeroes it and its contribution there; both digests agree.
 * A page unmarked (deflated) is an ordinary page again: the guest writes it
 * only after the host unmarked it, the dirty source logs the write and a
 * later pass sends it.
 *
 * The switchover ends with a commit: the receiver answers END with RESULT
 * ok once every page and the digest checked out, the sender answers that
 * with COMMIT, the receiver lets the guest run only after it has read
 * COMMIT and (commit-ack) says so with COMMITTED, and only then does the
 * sender report success. Whatever point the connection drops at, at most one
 * side runs the guest, and once COMMIT is out the workload is never resumed
 * here: without COMMITTED the migration is "unconfirmed" and the operator
 * decides (docs/stream.md 3.13).
 *
 * The completeness check (verify full, docs/stream.md 5.2) runs after that,
 * on the workload that stays paused: every page that may hold data (present
 * per the dirty source, or ever sent: the `sent` bitmap) is hashed
 * again and compared with the digest contribution of what was sent, so a
 * write the dirty source missed is found by page number. It costs a read of
 * the populated memory, outside the pause.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/thread.h"
#include "migrate/converge.h"
#include "migrate/internal.h"

/* Flush the output buffer to the connection beyond this many bytes. */
#define OUT_FLUSH (1u << 20)
/* Dirty page indices taken from the bitmap per step. */
#define TAKE_MAX 512
/* One TABLE record's payload at most (the skip map's table stream). */
#define TABLE_BUF (256u << 10)
/* The dirty rate is averaged over about this much of the recent past: a
 * last round of a few milliseconds, in which the vCPU may not even have
 * been scheduled, is no sample of its own (it read 0 while the guest
 * dirtied 12.8k pages/s). QEMU measures over periods of 1 s too. */
#define DIRTY_RATE_WINDOW_S 1.0

struct lm_state_writer {
	lm_buf *out;
	uint64_t count;
};

struct lm_migration {
	struct lm_mem_region *regions;
	size_t nregions;
	struct lm_dirty_source *src;
	const struct lm_workload_ops *ops;
	void *ctx;
	struct lm_migrate_params p;
	uint64_t end_page, total_pages;

	int fd;
	int cancel_fd;
	int cancel_flag;
	pthread_t thread;
	bool thread_on;
	int result;

	pthread_mutex_t lock; /* guards pub and error only */
	struct lm_migrate_stats pub;

	/* migration thread only */
	struct lm_migrate_stats st;
	char phase[48];
	double t_start, t_pause;
	struct lm__io io;
	lm_stream s;
	lm_buf out;
	lm_sbitmap dirty;
	lm_digest digest;
	lm_sbitmap sent; /* pages ever sent, as data or zero (only these may have a nonzero contribution) */
	uint64_t sent_pages; /* set bits of sent */
	uint64_t initial_marked; /* pages round 1 set out to send */
	bool dirty_ok, digest_ok, sent_ok, tracking, paused, io_ok;
	bool committed; /* COMMIT written: the workload is never resumed from here on */
	/* PREPARE answered (or not negotiated): the destination can take over,
	 * and (with catch-up) has applied every page sent before it. */
	bool prepared;
	bool ready_seen; /* a READY came: a PREPARE now is a catch-up */
	double rtt;	/* the shortest round trip seen, s (note_rtt) */
	double workload_s; /* the workload's part of a switchover (ops->switchover_cost_us) */
	/* downtime-guard: checking the pause as it goes (guard_ok); the
	 * device state held back until the last pages are out; when the
	 * workload was stopped and its state read. */
	bool guarding;
	bool throttled; /* ops->throttle was called: undone when the migration ends */
	lm_buf held;
	double t_state;
	bool use_digest; /* not no-digest (docs/stream.md 5.3) */
	bool use_zstd;
	uint8_t *scratch;
	/* Ballooned pages: the borrowed skip map, and whether it is used. */
	lm_skip_map *skip;
	bool skip_trusted; /* must-tell-host: the map may be used */
	bool use_skip;
	uint8_t *tbuf; /* TABLE_BUF bytes while use_skip */
	uint64_t pause_bytes_out;
	double pause_harvest_s; /* harvesting in this pause (sync_unit) */
	uint64_t take[TAKE_MAX];
	bool zero[TAKE_MAX];
	/* per-round accounting */
	uint64_t round_pages;
	uint64_t round_new_dirty;
	/* The dirty rate's window: pages newly dirtied and seconds, both
	 * halved whenever the window grows past DIRTY_RATE_WINDOW_S. */
	double rate_pages, rate_time;
	/* Pages encoded into `out` but not yet written: they count as sent
	 * (normal, duplicate) once the write succeeded, so that a cancel
	 * that drops the buffer never leaves normal-bytes above transferred. */
	uint64_t out_normal, out_duplicate;
	/* The bandwidth estimator (see estimate()): data pages sent this round
	 * and the seconds spent copying them and pushing bytes into the
	 * connection; the harvest cost of the last count_remaining(). */
	uint64_t round_data_pages;
	double round_data_time;
	double sync_time;
	double round_fixed; /* the last round's seconds beyond copying its pages (lm__conv_in.fixed_s) */
	double bw; /* bytes/s of guest data pages, last estimate (0: none yet) */
	double last_publish;
	/* Post-copy: asked for by lm_migration_start_postcopy (any thread);
	 * in_postcopy from COMMIT of the switch on (the workload is never
	 * resumed here again, the pending pages are in `dirty`). */
	int postcopy_now;
	bool in_postcopy;
	uint64_t pc_bytes0; /* bytes_out at COMMIT of the switch */
	uint64_t bytes_base; /* bytes written on connections given up for a recovery */
	/* Recovery (docs/stream.md 3.15): the session named in POSTCOPY, the
	 * whole pending set as it was at the switch (what MISSING may name),
	 * and the connection lm_migration_resume() hands over (under lock;
	 * resume_cond wakes the waiting thread). Connections handed over
	 * are ours: the one in use is io_fd_owned. */
	uint64_t session;
	lm_sbitmap pc_all;
	bool pc_all_ok;
	pthread_cond_t resume_cond;
	int resume_fd;
	bool waiting_resume; /* under lock: the thread waits for resume_fd */
	int io_fd_owned;
	/* Channels (docs/stream.md 3.16): while txc_live, page runs go to
	 * them (send_chunk); each barrier is SYNC sync_seq. The main
	 * connection's page encoder is `lane`. */
	struct lm__txc *txc;
	bool txc_live;
	uint64_t sync_seq;
	struct lm__lane lane;
};

/* Pages per stripe of the channels (docs/stream.md 3.16): 2 MiB, the
 * size of a re-armed chunk by default. */
#define CHANNEL_STRIPE 512u

void lm_migrate_params_default(struct lm_migrate_params *p)
{
	*p = (struct lm_migrate_params){
		.downtime_limit_ms = 300,
		.max_rounds = 30,
		.on_nonconverge = LM_NONCONVERGE_SWITCHOVER,
		.chunk_pages = 512,
		.result_timeout_ms = 60000,
		.idle_timeout_ms = LM_IDLE_TIMEOUT_DEFAULT_MS,
		.throttle_initial = 20,
		.throttle_increment = 10,
	};
}

/* The io layer's idle timeout for the params' idle_timeout_ms (0: never). */
static uint64_t idle_of(const struct lm_migrate_params *p)
{
	return p->idle_timeout_ms == LM_TIMEOUT_NEVER ? 0 : p->idle_timeout_ms;
}

/* Bytes written on the main connection and the channels. */
static uint64_t out_bytes(struct lm_migration *m)
{
	return m->io.bytes_out + (m->txc ? lm__txc_bytes(m->txc) : 0);
}

/* What the channels encoded since the last look: sent pages and their
 * rate sample (the busiest channel's time). */
static void chan_account(struct lm_migration *m, uint64_t *queued)
{
	struct lm__txc_stats t;
	if (!m->txc) {
		if (queued)
			*queued = 0;
		return;
	}
	lm__txc_take(m->txc, &t);
	m->st.normal += t.data_pages;
	m->st.normal_bytes += t.data_pages * LM_PAGE_SIZE;
	m->st.duplicate += t.zero_pages;
	m->round_data_pages += t.data_pages;
	m->round_data_time += t.busy_max;
	if (queued)
		*queued = t.queued_pages;
}

static void publish(struct lm_migration *m)
{
	chan_account(m, NULL);
	m->st.transferred = m->bytes_base + out_bytes(m);
	/* Never touched (or ballooned): the pages round 1 had no reason to
	 * send, less those sent since; exact once everything is sent. */
	if (m->sent_ok && m->st.status != LM_MIG_NONE)
		m->st.skipped = m->total_pages - (m->sent_pages > m->initial_marked ? m->sent_pages
											: m->initial_marked);
	if (m->skip)
		m->st.ballooned = lm_skip_map_count(m->skip);
	m->st.total_time_us = (uint64_t)((lm__now() - m->t_start) * 1e6);
	m->st.total_time_ms = m->st.total_time_us / 1000;
	pthread_mutex_lock(&m->lock);
	m->pub = m->st;
	pthread_mutex_unlock(&m->lock);
	m->last_publish = lm__now();
}

static void set_phase(struct lm_migration *m, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->phase, sizeof(m->phase), fmt, ap);
	va_end(ap);
}

/* Record the cause of a failure once (the first cause wins) and return err. */
static int fail(struct lm_migration *m, int err, const char *fmt, ...)
{
	if (!m->st.error[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(m->st.error, sizeof(m->st.error), fmt, ap);
		va_end(ap);
	}
	return err;
}

/*
 * After a failed write or read: the receiver usually says why before it
 * closes (a RESULT or REFUSE with its error). Look for one briefly.
 */
static bool peer_reason(struct lm_migration *m, char *text, size_t cap)
{
	uint8_t hdr[LM_FRAME_HDR];
	lm_frame f;
	lm_stream_err e;
	struct lm__io *io = &m->io;
	uint64_t saved = io->timeout_ms;
	int abort_fd = io->abort_fd; /* a failed channel's alarm is why we look */
	bool found = false;
	io->timeout_ms = 200;
	io->abort_fd = -1;
	for (int i = 0; i < 4 && !found; i++) {
		if (lm__io_wait_input(io, 200) != 1 || lm__io_read(io, hdr, sizeof(hdr)))
			break;
		if (lm_stream_frame_parse(&m->s, hdr, sizeof(hdr), &f, &e))
			break;
		uint8_t *pl = malloc(f.payload_len ? f.payload_len : 1);
		if (!pl || lm__io_read(io, pl, f.payload_len)) {
			free(pl);
			break;
		}
		lm_record rec;
		if ((f.type == LM_REC_RESULT || f.type == LM_REC_REFUSE) &&
		    lm_stream_decode_payload(&m->s, &f, pl, f.payload_len, &rec, &e) == 0 && rec.u.status.code) {
			snprintf(text, cap, "%s", rec.u.status.text);
			found = true;
		}
		free(pl);
	}
	io->timeout_ms = saved;
	io->abort_fd = abort_fd;
	return found;
}

static int chan_fail(struct lm_migration *m, int err);

static int io_fail(struct lm_migration *m, int err)
{
	if (err == -ESHUTDOWN)
		return chan_fail(m, err);
	char why[LM_STREAM_MAX_TEXT + 1];
	if (err == -ECANCELED)
		return fail(m, err, "cancelled during %s", m->phase);
	if (err == -ETIMEDOUT && m->io.stall_ms) {
		/* Our own idle timeout: name the direction, the time, the phase
		 * ("while waiting for the result", "during round 3"). */
		char t[32];
		const char *how = strncmp(m->phase, "waiting", 7) ? "during" : "while";
		lm__fmt_ms(t, sizeof(t), m->io.stall_ms);
		if (m->io.stall_write)
			return fail(m, err, "the receiver read nothing for %s %s %s: it stopped reading or the "
					    "connection is dead", t, how, m->phase);
		return fail(m, err, "the receiver sent nothing for %s %s %s", t, how, m->phase);
	}
	if (err == -ETIMEDOUT)
		return fail(m, err, "the connection timed out during %s: the receiver's host stopped "
				    "acknowledging (dead peer or link)", m->phase);
	if (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN) {
		if (peer_reason(m, why, sizeof(why)))
			return fail(m, err, "receiver failed during %s: %s", m->phase, why);
		return fail(m, err, "receiver closed the connection during %s", m->phase);
	}
	return fail(m, err, "connection error during %s: %s", m->phase, lm_strerror(err));
}

static int flush(struct lm_migration *m)
{
	if (!m->out.len)
		return 0;
	double t0 = lm__now();
	int err = lm__io_write(&m->io, m->out.data, m->out.len);
	double dt = lm__now() - t0;
	m->round_data_time += dt;
	lm__lane_wrote(&m->lane, dt);
	lm_buf_reset(&m->out);
	if (!err) {
		m->st.normal += m->out_normal;
		m->st.normal_bytes += m->out_normal * LM_PAGE_SIZE;
		m->st.duplicate += m->out_duplicate;
	}
	m->out_normal = m->out_duplicate = 0;
	if (err)
		return io_fail(m, err);
	return 0;
}

static int maybe_flush(struct lm_migration *m)
{
	if (m->out.len >= OUT_FLUSH)
		return flush(m);
	return 0;
}

static bool is_cancelled(struct lm_migration *m)
{
	return __atomic_load_n(&m->cancel_flag, __ATOMIC_ACQUIRE) != 0;
}

static int put_fail(struct lm_migration *m, int err, const char *what)
{
	return fail(m, err, "encoding %s failed during %s: %s", what, m->phase, lm_strerror(err));
}

/* Pages [p, p + n) went out (the completeness check and `skipped` count them). */
static void mark_sent(struct lm_migration *m, uint64_t p, uint32_t n)
{
	m->sent_pages += n - lm_bitmap_count_range(&m->sent.bits, p, n);
	lm_sbitmap_set_range(&m->sent, p, n);
}

/* Send the run pages [p, p + n) of region r, all zero or all data, on
 * the main connection. */
static int emit_run(struct lm_migration *m, const struct lm_mem_region *r, uint64_t p, uint32_t n, bool zero)
{
	mark_sent(m, p, n);
	const uint8_t *host = (const uint8_t *)r->host + (p - r->first_page) * LM_PAGE_SIZE;
	struct lm__lane *l = &m->lane;
	uint64_t d0 = l->data_pages;
	double t0 = l->data_time;
	int err = lm__lane_put(l, p, n, host, zero);
	if (err)
		return put_fail(m, err, zero ? "a zero run" : "a data run");
	if (zero) {
		m->out_duplicate += n;
	} else {
		m->out_normal += n;
		m->round_data_pages += l->data_pages - d0;
		m->round_data_time += l->data_time - t0;
	}
	m->round_pages += n;
	return maybe_flush(m);
}

/* A channel failed (or was stopped by a cancel): the migration fails,
 * naming it, with the receiver's own reason when it sent one. */
static int chan_fail(struct lm_migration *m, int err)
{
	char msg[256], why[200];
	if (is_cancelled(m) || err == -ECANCELED)
		return fail(m, -ECANCELED, "cancelled during %s", m->phase);
	int cerr = m->txc ? lm__txc_error(m->txc, msg, sizeof(msg)) : 0;
	if (!cerr)
		return fail(m, err, "a channel stopped during %s", m->phase);
	/* The receiver's account names the channel that broke first. */
	if (peer_reason(m, why, sizeof(why)))
		return fail(m, cerr, "receiver failed during %s: %s (here: %s)", m->phase, why, msg);
	return fail(m, cerr, "%s during %s", msg, m->phase);
}

/* Dirty pages [p, p + n) of region r (consecutive) to their channels. */
static int chan_run(struct lm_migration *m, const struct lm_mem_region *r, uint64_t p, uint32_t n)
{
	mark_sent(m, p, n);
	m->round_pages += n;
	int err = lm__txc_put(m->txc, (const uint8_t *)r->host + (p - r->first_page) * LM_PAGE_SIZE, p, n);
	return err ? chan_fail(m, err) : 0;
}

/*
 * The channels' barrier (docs/stream.md 3.16), first half: SYNC on every
 * channel, written; the channels are idle until the next put, so the skip
 * map's TABLE records (and their digest updates) may follow. The second
 * half, chan_barrier_end, puts the same SYNC on the main connection after
 * them. last: the channels end; from now on pages go on the main
 * connection.
 */
static int chan_barrier(struct lm_migration *m, bool last)
{
	if (!m->txc_live)
		return 0;
	m->sync_seq++;
	int err = lm__txc_sync(m->txc, m->sync_seq, last ? LM_SYNC_LAST : 0);
	if (err)
		return chan_fail(m, err);
	chan_account(m, NULL);
	return 0;
}

static int chan_barrier_end(struct lm_migration *m, bool last)
{
	if (!m->txc_live)
		return 0;
	if (last)
		m->txc_live = false;
	int err = lm_stream_put_sync(&m->out, m->sync_seq, last ? LM_SYNC_LAST : 0);
	return err ? put_fail(m, err, "SYNC") : 0;
}

/* Copy the dirty pages of chunk [first, first + n) of region r. */
static int send_chunk(struct lm_migration *m, const struct lm_mem_region *r, uint64_t first, uint64_t n)
{
	uint64_t k;
	while ((k = lm_sbitmap_take(&m->dirty, first, n, m->take, TAKE_MAX)) > 0) {
		m->st.pages_scanned += k;
		if (m->txc_live) {
			/* The channels test for zero pages themselves. */
			for (uint64_t j = 0; j < k;) {
				uint64_t len = 1;
				while (j + len < k && len < LM_STREAM_MAX_RUN_PAGES && m->take[j + len] == m->take[j] + len)
					len++;
				int err = chan_run(m, r, m->take[j], (uint32_t)len);
				if (err)
					return err;
				j += len;
			}
			continue;
		}
		for (uint64_t j = 0; j < k; j++)
			m->zero[j] = lm_page_is_zero((const uint8_t *)r->host +
						     (m->take[j] - r->first_page) * LM_PAGE_SIZE);
		for (uint64_t j = 0; j < k;) {
			uint64_t len = 1;
			while (j + len < k && len < LM_STREAM_MAX_RUN_PAGES && m->take[j + len] == m->take[j] + len &&
			       m->zero[j + len] == m->zero[j])
				len++;
			int err = emit_run(m, r, m->take[j], (uint32_t)len, m->zero[j]);
			if (err)
				return err;
			j += len;
		}
	}
	return 0;
}

static int sync_unit(struct lm_migration *m, uint64_t first, uint64_t n)
{
	double t0 = m->paused ? lm__now() : 0;
	int64_t got = lm_dirty_source_sync(m->src, first, n, &m->dirty);
	/* In the pause: the final harvest's share of the downtime. */
	if (m->paused)
		m->pause_harvest_s += lm__now() - t0;
	if (got < 0)
		return fail(m, (int)got, "dirty source '%s' failed to report pages [%llu, %llu) during %s: %s",
			    m->src->ops->name, (unsigned long long)first, (unsigned long long)(first + n), m->phase,
			    lm_strerror((int)got));
	m->round_new_dirty += (uint64_t)got;
	return 0;
}

/* send_pass() in a guarded pause: the pause would break the limit. */
#define GUARD_TRIPPED 1

/*
 * A guarded pause may go on (converge.c: lm__converge_guard_ok). harvest_s:
 * harvests still to come in this pause (the pass's own, before it starts).
 * Bytes already encoded but not yet written count as pages to send.
 */
static bool guard_ok(struct lm_migration *m, double harvest_s)
{
	double now = lm__now();
	uint64_t queued;
	chan_account(m, &queued);
	uint64_t pending = (m->out.len + m->held.len + LM_PAGE_SIZE - 1) / LM_PAGE_SIZE + queued;
	struct lm__guard_in g = {
		.elapsed_s = now - m->t_pause + harvest_s,
		.remaining = lm_sbitmap_count(&m->dirty) + pending,
		.bw = m->bw,
		.rtt_s = m->rtt,
		.workload_left_s = m->workload_s - (m->t_state - m->t_pause),
		.limit_s = (double)m->p.downtime_limit_ms / 1000,
	};
	return lm__converge_guard_ok(&g);
}

/*
 * One pass over all memory: harvest each unit, then re-arm and copy each
 * chunk that holds a dirty page. Clean chunks are skipped through the
 * bitmap's summary level, so a pass over a 1 TiB guest with a few dirty
 * pages costs those pages, not 2^19 chunks. Skipping is lossless for every
 * source: a chunk with nothing dirty has nothing harvested either (each
 * harvested page is in `dirty` until the copy that follows its chunk's
 * re-arm), so there is nothing to re-arm; the one exception, pages the
 * skip map removed after a harvest without a re-arm, stay reported by the
 * source (never re-armed), which errs on the side of sending.
 */
static int send_pass(struct lm_migration *m)
{
	for (size_t i = 0; i < m->nregions; i++) {
		const struct lm_mem_region *r = &m->regions[i];
		uint64_t unit = m->src->sync_pages ? m->src->sync_pages : r->npages;
		for (uint64_t u = 0; u < r->npages; u += unit) {
			uint64_t un = r->npages - u < unit ? r->npages - u : unit;
			uint64_t base = r->first_page + u, end = base + un;
			int err = sync_unit(m, base, un);
			if (err)
				return err;
			for (uint64_t next = base;;) {
				uint64_t d = lm_sbitmap_find_next_set(&m->dirty, next);
				if (d >= end)
					break;
				uint64_t c = base + (d - base) / m->p.chunk_pages * m->p.chunk_pages;
				uint64_t cn = end - c < m->p.chunk_pages ? end - c : m->p.chunk_pages;
				if (is_cancelled(m))
					return fail(m, -ECANCELED, "cancelled during %s", m->phase);
				err = lm_dirty_source_clear(m->src, c, cn);
				if (err)
					return fail(m, err, "dirty source '%s' failed to re-arm pages during %s: %s",
						    m->src->ops->name, m->phase, lm_strerror(err));
				/* After the re-arm, so a page deflated and written
				 * from now on is logged again; before the copy, so a
				 * skipped page is never read. */
				if (m->use_skip)
					lm_skip_map_remove_from(m->skip, &m->dirty, c, cn);
				err = send_chunk(m, r, c, cn);
				if (err)
					return err;
				if (m->guarding && !guard_ok(m, 0))
					return GUARD_TRIPPED;
				next = c + cn;
				if (lm__now() - m->last_publish > 0.05) {
					m->st.remaining = lm_sbitmap_count(&m->dirty) * LM_PAGE_SIZE;
					publish(m);
				}
			}
		}
	}
	return 0;
}

/* Harvest everything without copying: how much is dirty right now. */
static int count_remaining(struct lm_migration *m, uint64_t *pages)
{
	double t0 = lm__now();
	for (size_t i = 0; i < m->nregions; i++) {
		const struct lm_mem_region *r = &m->regions[i];
		uint64_t unit = m->src->sync_pages ? m->src->sync_pages : r->npages;
		for (uint64_t u = 0; u < r->npages; u += unit) {
			int err = sync_unit(m, r->first_page + u, r->npages - u < unit ? r->npages - u : unit);
			if (err)
				return err;
		}
	}
	m->st.dirty_sync_count++;
	/* Skipped pages will not be sent: they are not part of what remains.
	 * Only the chunks that hold dirty pages are looked up: walking the
	 * whole skip map would read a bit per guest page (32 MiB, most of it
	 * never touched, per TiB) every round. */
	if (m->use_skip && lm_skip_map_count(m->skip))
		for (uint64_t d = lm_sbitmap_find_next_set(&m->dirty, 0); d < m->end_page;) {
			uint64_t c = d & ~(uint64_t)(m->p.chunk_pages - 1);
			lm_skip_map_remove_from(m->skip, &m->dirty, c, m->p.chunk_pages);
			d = lm_sbitmap_find_next_set(&m->dirty, c + m->p.chunk_pages);
		}
	*pages = lm_sbitmap_count(&m->dirty);
	m->sync_time = lm__now() - t0;
	m->st.dirty_sync_us = (uint64_t)(m->sync_time * 1e6);
	if (m->st.dirty_sync_us > m->st.dirty_sync_max_us)
		m->st.dirty_sync_max_us = m->st.dirty_sync_us;
	return 0;
}

/* A skipped page the table stream carries reads as zero at the source. */
static void table_run(void *arg, uint64_t first, uint64_t n)
{
	struct lm_migration *m = arg;
	if (m->use_digest)
		lm_digest_zero(&m->digest, first, n);
}

/*
 * Drain one pass of the skip map's table stream into TABLE records: the
 * whole map the first time, then only the entries changed since.
 */
static int send_table(struct lm_migration *m, bool last)
{
	/* The channels' pages before the map: a TABLE record may zero a
	 * page that a RAM record of this round wrote. The main connection's
	 * SYNC follows the TABLE records (docs/stream.md 3.16). */
	int err = chan_barrier(m, last);
	if (err)
		return err;
	if (!m->use_skip)
		return chan_barrier_end(m, last);
	for (;;) {
		int64_t got = lm_skip_map_table_read(m->skip, m->tbuf, TABLE_BUF, table_run, m);
		if (got < 0)
			return fail(m, (int)got, "reading the skip map failed during %s: %s", m->phase,
				    lm_strerror((int)got));
		if (got == 0)
			return chan_barrier_end(m, last);
		err = lm_stream_put_table(&m->out, m->tbuf, (size_t)got);
		if (err)
			return put_fail(m, err, "a TABLE record");
		m->st.table_bytes += LM_FRAME_HDR + (uint64_t)got;
		err = maybe_flush(m);
		if (err)
			return err;
	}
}

/* A round needs this many data pages (256 KiB) before its rate is trusted:
 * a handful of pages fits in socket buffers and would time only memcpy. */
#define BW_MIN_SAMPLE_PAGES 64

/*
 * The bandwidth estimate that decides when to stop the workload.
 *
 * What has to be predicted is the stop-and-copy: one more harvest, then
 * copying the pages still dirty (pages the workload wrote, so nearly all of
 * them hold data) and pushing them into the connection. So the rate is
 * measured on exactly that work: guest bytes of the data pages sent in the
 * round divided by the time spent copying, hashing and encoding them plus
 * the time spent writing to the connection (which includes waiting for a
 * slow link or receiver, and the rate limit's pacing). Zero pages are left
 * out of the rate: they cost a 28-byte header, so a round 1 of mostly zero
 * pages would otherwise claim gigabytes per second that the dirty pages at
 * the end can never reach. Scanning, zero tests and harvesting are left
 * out of it too; the harvest's cost is added separately, as measured by
 * the last count_remaining(). A round with too few data pages for a
 * meaningful sample keeps the previous estimate; before any sample exists
 * the round's full-size rate (zero pages at 4 KiB) is the fallback.
 *
 * With a rate limit the estimate is the limited rate, although the
 * stop-and-copy runs unlimited (as in QEMU): the prediction errs on the
 * long side, which costs at most an extra round.
 */

static void estimate(struct lm_migration *m, double round_s)
{
	if (m->round_data_pages >= BW_MIN_SAMPLE_PAGES && m->round_data_time > 1e-6)
		m->bw = (double)m->round_data_pages * LM_PAGE_SIZE / m->round_data_time;
	else if (m->bw == 0 && m->round_pages)
		m->bw = (double)m->round_pages * LM_PAGE_SIZE / round_s;
	m->st.mbps = m->bw * 8 / 1e6;
}

/* Ask the policy (converge.c) what next, and publish its estimate. */
static void decide(struct lm_migration *m, unsigned round, uint64_t left, struct lm__conv_out *d)
{
	struct lm__conv_in in = {
		.bw = m->bw,
		.dirty_rate = (double)m->st.dirty_pages_rate,
		.remaining = left,
		.sync_s = m->sync_time,
		.fixed_s = m->round_fixed,
		.rtt_s = m->rtt,
		.workload_s = m->workload_s,
		.round = round,
		.max_rounds = m->p.max_rounds,
		.elapsed_s = lm__now() - m->t_start,
		.max_time_s = (double)m->p.max_time_ms / 1000,
		.limit_s = (double)m->p.downtime_limit_ms / 1000,
		.prepared = m->prepared,
		.cancel = m->p.on_nonconverge == LM_NONCONVERGE_CANCEL,
		.guard = m->p.downtime_guard,
		.auto_converge = m->p.auto_converge && m->ops && m->ops->throttle,
		.throttle_pct = m->st.cpu_throttle_pct,
		.throttle_initial = m->p.throttle_initial,
		.throttle_increment = m->p.throttle_increment,
		.postcopy = (m->s.caps & LM_CAP_POSTCOPY) != 0,
		.postcopy_after = m->p.postcopy_after,
		.postcopy_now = __atomic_load_n(&m->postcopy_now, __ATOMIC_ACQUIRE) != 0,
	};
	lm__converge(&in, d);
	if (d->throttle_pct != m->st.cpu_throttle_pct && in.auto_converge) {
		/* A workload that cannot be slowed is simply not slowed. */
		if (m->ops->throttle(m->ctx, d->throttle_pct) == 0)
			m->st.cpu_throttle_pct = d->throttle_pct;
		m->throttled = true;
	}
	m->st.remaining = left * LM_PAGE_SIZE;
	m->st.expected_downtime_ms = (uint64_t)(d->expected_s * 1000);
	m->st.expected_downtime_us = (uint64_t)(d->expected_s * 1e6);
	publish(m);
}

static void dirty_run(void *arg, uint64_t first, uint64_t n)
{
	struct lm_migration *m = arg;
	lm_sbitmap_set_range(&m->dirty, first, n);
	m->initial_marked += n;
}

/*
 * Round 1's dirty set: every page that may hold data. From the source's
 * runs where it has them (a sparse 1 TiB guest then costs its populated
 * pages), else from a bitmap of present pages, else every page.
 */
static int mark_initial(struct lm_migration *m)
{
	m->initial_marked = 0;
	int err = -EOPNOTSUPP;
	if ((m->src->flags & LM_DIRTY_KNOWS_PRESENT) && m->src->ops->present_runs) {
		err = 0;
		for (size_t i = 0; i < m->nregions && !err; i++)
			err = m->src->ops->present_runs(m->src, m->regions[i].first_page, m->regions[i].npages,
						       dirty_run, m);
		if (err && err != -EOPNOTSUPP)
			return fail(m, err, "dirty source '%s' could not tell present pages: %s", m->src->ops->name,
				    lm_strerror(err));
	}
	if (err == 0) {
		/* done */
	} else if ((m->src->flags & LM_DIRTY_KNOWS_PRESENT) && m->src->ops->present) {
		lm_bitmap present;
		err = lm_bitmap_init(&present, m->end_page);
		if (err)
			return fail(m, err, "out of memory during %s", m->phase);
		for (size_t i = 0; i < m->nregions && !err; i++)
			err = m->src->ops->present(m->src, m->regions[i].first_page, m->regions[i].npages, &present);
		if (err) {
			lm_bitmap_destroy(&present);
			return fail(m, err, "dirty source '%s' could not tell present pages: %s", m->src->ops->name,
				    lm_strerror(err));
		}
		for (uint64_t i = lm_bitmap_find_next_set(&present, 0); i < m->end_page;
		     i = lm_bitmap_find_next_set(&present, i)) {
			uint64_t e = lm_bitmap_find_next_clear(&present, i);
			dirty_run(m, i, e - i);
			i = e;
		}
		lm_bitmap_destroy(&present);
	} else {
		for (size_t i = 0; i < m->nregions; i++)
			dirty_run(m, m->regions[i].first_page, m->regions[i].npages);
	}
	/* Never-touched pages are zero on both sides: neither read nor sent.
	 * publish() keeps the figure true as pages are sent later. */
	m->st.skipped = m->total_pages - m->initial_marked;
	return 0;
}

/*
 * A round trip the sender waited for: HELLO to ACCEPT, PREPARE to READY.
 * Both include some work of the receiver's, so the shortest one is the
 * closest to the link's own round trip, which every pause pays once (END
 * to RESULT).
 */
static void note_rtt(struct lm_migration *m, double s)
{
	if (m->rtt == 0 || s < m->rtt)
		m->rtt = s;
}

static int handshake(struct lm_migration *m)
{
	lm_stream_hello h = { .version = LM_STREAM_VERSION, .page_size = LM_PAGE_SIZE };
	lm_stream_region lr[LM_STREAM_MAX_REGIONS];
	lm_stream_err e = { 0 };
	int err;

	for (size_t i = 0; i < m->nregions; i++)
		lr[i] = (lm_stream_region){ m->regions[i].first_page, m->regions[i].npages };
	err = lm_stream_layout_init(&h.layout, lr, (uint32_t)m->nregions, &e);
	if (err)
		return fail(m, err, "bad memory layout: %s", e.msg);
	h.mandatory = LM_CAP_RECORD_CSUM;
	h.offered = LM_CAP_RECORD_CSUM | LM_CAP_PAGE_HASH_CSUM | LM_CAP_PREPARE | LM_CAP_CATCH_UP | LM_CAP_COMMIT_ACK |
		    (m->p.compress ? LM_CAP_ZSTD : 0) |
		    (m->p.verify == LM_VERIFY_NONE ? LM_CAP_NO_DIGEST : 0);
	/* Asked for, so required: a destination that cannot do it says so
	 * now, not when pre-copy turns out not to converge. */
	if (m->p.postcopy && !(m->p.caps_disabled & LM_CAP_POSTCOPY)) {
		h.offered |= LM_CAP_POSTCOPY;
		h.mandatory |= LM_CAP_POSTCOPY;
	}
	/* Ballooned pages are skipped only with the map on the wire too: the
	 * destination must learn which pages to zero and keep the map. */
	if (m->skip && m->skip_trusted)
		h.offered |= LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM;
	if (m->p.caps_disabled & LM_CAP_SKIP_BALLOON)
		h.offered &= ~(LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM);
	/* Optional: a receiver without it takes everything on this
	 * connection. */
	if (m->p.channels > 1 && m->p.connect_channel)
		h.offered |= LM_CAP_MULTIFD;
	h.offered &= ~(m->p.caps_disabled & ~LM_CAP_RECORD_CSUM);
	if (!(h.offered & LM_CAP_PREPARE))
		h.offered &= ~LM_CAP_CATCH_UP;
	m->s.layout = h.layout;
	err = lm_stream_put_hello(&m->out, &h);
	if (err)
		return put_fail(m, err, "HELLO");
	err = flush(m);
	if (err)
		return err;

	uint8_t hdr[LM_FRAME_HDR], pl[LM_FRAME_HDR + LM_STREAM_MAX_TEXT + 16];
	lm_frame f;
	lm_record rec;
	m->io.timeout_ms = m->p.result_timeout_ms;
	double t0 = lm__now();
	err = lm__io_read(&m->io, hdr, sizeof(hdr));
	if (err)
		return io_fail(m, err);
	note_rtt(m, lm__now() - t0);
	err = lm_stream_frame_parse(&m->s, hdr, sizeof(hdr), &f, &e);
	if (err)
		return fail(m, err, "bad answer to HELLO: %s", e.msg);
	if ((f.type != LM_REC_ACCEPT && f.type != LM_REC_REFUSE) || f.payload_len > sizeof(pl))
		return fail(m, -EPROTO, "receiver answered HELLO with %s", lm_stream_type_name(f.type));
	err = lm__io_read(&m->io, pl, f.payload_len);
	if (err)
		return io_fail(m, err);
	err = lm_stream_decode_payload(&m->s, &f, pl, f.payload_len, &rec, &e);
	if (err)
		return fail(m, err, "bad answer to HELLO: %s", e.msg);
	if (f.type == LM_REC_REFUSE)
		return fail(m, rec.u.status.code > 0 ? -rec.u.status.code : -EPROTO, "receiver refused: %s",
			    rec.u.status.text);
	err = lm_stream_accepted(&m->s, &h, rec.u.accept.accepted, &e);
	if (err)
		return fail(m, err, "bad ACCEPT: %s", e.msg);
	m->io.timeout_ms = idle_of(&m->p);
	m->use_zstd = (m->s.caps & LM_CAP_ZSTD) != 0;
	m->use_digest = (m->s.caps & LM_CAP_NO_DIGEST) == 0;
	const uint64_t both = LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM;
	m->use_skip = m->skip && m->skip_trusted && (m->s.caps & both) == both;
	m->st.skip_balloon = m->use_skip;
	if (m->use_skip) {
		m->tbuf = malloc(TABLE_BUF);
		if (!m->tbuf)
			return fail(m, -ENOMEM, "out of memory during %s", m->phase);
		lm_skip_map_table_restart(m->skip);
	}
	if (m->use_zstd) {
		m->scratch = malloc((size_t)LM_STREAM_MAX_RUN_PAGES * LM_PAGE_SIZE);
		if (!m->scratch)
			return fail(m, -ENOMEM, "out of memory during %s", m->phase);
	}
	m->lane = (struct lm__lane){.s = &m->s, .out = &m->out, .digest = &m->digest, .scratch = m->scratch,
				    .use_digest = m->use_digest, .use_zstd = m->use_zstd,
				    .zstd_always = m->p.compress_always};
	return 0;
}

/*
 * With multifd accepted (docs/stream.md 3.16): CHANNELS on the main
 * connection, then the channel connections, each announced by CHANNEL.
 * After the digest exists (the channels share it).
 */
static int open_channels(struct lm_migration *m)
{
	if (!(m->s.caps & LM_CAP_MULTIFD))
		return 0;
	unsigned n = m->p.channels;
	int fds[LM_STREAM_MAX_CHANNELS];
	while (getrandom(&m->session, sizeof(m->session), 0) != sizeof(m->session) || !m->session)
		m->session = (uint64_t)(lm__now() * 1e9) ^ (uint64_t)getpid() << 32;
	int err = lm_stream_put_channels(&m->out, n, CHANNEL_STRIPE, m->session);
	if (err)
		return put_fail(m, err, "CHANNELS");
	if ((err = flush(m)))
		return err;
	for (unsigned i = 0; i < n; i++) {
		set_phase(m, "opening channel %u", i);
		fds[i] = m->p.connect_channel(m->p.channel_arg, i);
		if (fds[i] < 0) {
			err = fds[i];
			for (unsigned k = 0; k < i; k++)
				close(fds[k]);
			if (is_cancelled(m))
				return fail(m, -ECANCELED, "cancelled while opening channel %u of %u", i, n);
			return fail(m, err, "could not open channel %u of %u: %s", i, n, lm_strerror(err));
		}
	}
	set_phase(m, "the handshake");
	struct lm__txc_cfg cfg = {
		.s = &m->s,
		.digest = m->use_digest ? &m->digest : NULL,
		.use_zstd = m->use_zstd,
		.zstd_always = m->p.compress_always,
		.session = m->session,
		.cancel_fd = m->cancel_fd,
		.idle_ms = idle_of(&m->p),
		.rate = m->p.max_bandwidth,
	};
	err = lm__txc_start(&m->txc, fds, n, CHANNEL_STRIPE, &cfg);
	if (err) {
		char msg[256];
		if (lm__txc_error(m->txc, msg, sizeof(msg)))
			return fail(m, err, "%s while opening the channels", msg);
		return fail(m, err, "could not start the channels: %s", lm_strerror(err));
	}
	m->txc_live = true;
	m->io.abort_fd = lm__txc_abort_fd(m->txc);
	m->st.channels = n;
	return 0;
}

/*
 * The receiver's next frame, which must be `want`: READY (answering
 * PREPARE) or RESULT. A RESULT that carries an error is the receiver's
 * failure, whatever we waited for.
 */
static int wait_reply(struct lm_migration *m, uint16_t want)
{
	uint8_t hdr[LM_FRAME_HDR], pl[LM_FRAME_HDR + LM_STREAM_MAX_TEXT + 16];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = { 0 };
	const char *wname = lm_stream_type_name(want);
	uint64_t saved_timeout = m->io.timeout_ms;
	m->io.timeout_ms = m->p.result_timeout_ms;
again:;
	int err = lm__io_read(&m->io, hdr, sizeof(hdr));
	if (!err) {
		err = lm_stream_frame_parse(&m->s, hdr, sizeof(hdr), &f, &e);
		if (err)
			return fail(m, err, "bad %s from the receiver: %s", wname, e.msg);
		/* Post-copy: requests sent before the receiver had read the
		 * pages (docs/stream.md 3.14); they are on their way. */
		if (f.type == LM_REC_PAGE_REQ && m->in_postcopy) {
			err = lm__io_read(&m->io, pl, f.payload_len);
			if (err) {
				m->io.timeout_ms = saved_timeout;
				return io_fail(m, err);
			}
			if ((err = lm_stream_decode_payload(&m->s, &f, pl, f.payload_len, &rec, &e)))
				return fail(m, err, "bad PAGE_REQ from the receiver: %s", e.msg);
			goto again;
		}
		if ((f.type != want && f.type != LM_REC_RESULT) || f.payload_len > sizeof(pl))
			return fail(m, -EPROTO, "receiver sent %s instead of %s", lm_stream_type_name(f.type),
				    wname);
		err = lm__io_read(&m->io, pl, f.payload_len);
	}
	m->io.timeout_ms = saved_timeout;
	if (err)
		return io_fail(m, err);
	err = lm_stream_decode_payload(&m->s, &f, pl, f.payload_len, &rec, &e);
	if (err)
		return fail(m, err, "bad %s from the receiver: %s", lm_stream_type_name(f.type), e.msg);
	if (f.type == LM_REC_RESULT && rec.u.status.code)
		return fail(m, rec.u.status.code > 0 ? -rec.u.status.code : -EPROTO,
			    "receiver reported failure: %s", rec.u.status.text);
	if (f.type != want)
		return fail(m, -EPROTO, "receiver sent RESULT ok instead of %s", wname);
	return 0;
}

static int wait_result(struct lm_migration *m)
{
	set_phase(m, "waiting for the result");
	return wait_reply(m, LM_REC_RESULT);
}

/*
 * Before the pause: tell the destination the switchover comes, and wait
 * until it says it can take over (a VMM has built its VM by then). Whatever
 * it still had to prepare is then not part of the downtime.
 */
static int prepare_destination(struct lm_migration *m)
{
	bool again = m->ready_seen;
	m->prepared = true;
	if (!(m->s.caps & LM_CAP_PREPARE))
		return 0;
	m->ready_seen = true;
	if (again)
		m->st.catch_ups++;
	set_phase(m, again ? "waiting for the destination to catch up" : "waiting for the destination to get ready");
	int err = lm_stream_put_prepare(&m->out);
	if (err)
		return put_fail(m, err, "PREPARE");
	err = flush(m);
	if (err)
		return err;
	double t0 = lm__now();
	err = wait_reply(m, LM_REC_READY);
	note_rtt(m, lm__now() - t0);
	return err;
}

static int wait_committed(struct lm_migration *m);
static int read_committed(struct lm_migration *m);

/* switchover(): the downtime guard resumed the workload; go on (not an
 * error: the one positive return of this file's steps, with GUARD_TRIPPED). */
#define GUARD_RESUMED 1

/*
 * The guard stops a pause that would break the limit: nothing of it is
 * final yet (the device state was held back, the pages sent so far are
 * ordinary pre-copy pages), so the workload runs on and pre-copy goes on.
 * Out of rounds or time there is nothing to go on with: cancelled.
 */
static int guard_resume(struct lm_migration *m, bool last)
{
	double pause_ms = (lm__now() - m->t_pause) * 1000;
	m->guarding = false;
	lm_buf_reset(&m->held);
	if (m->ops && m->ops->resume) {
		int err = m->ops->resume(m->ctx);
		if (err)
			return fail(m, err, "the downtime guard could not resume the workload: %s", lm_strerror(err));
	}
	m->paused = false;
	m->st.guard_resumes++;
	m->st.guard_paused_us += (uint64_t)(pause_ms * 1000);
	m->st.status = LM_MIG_ACTIVE;
	lm__io_set_rate(&m->io, m->p.max_bandwidth);
	if (m->txc)
		lm__txc_set_rate(m->txc, m->p.max_bandwidth);
	publish(m);
	if (last)
		return fail(m, -ETIMEDOUT,
			    "downtime guard: the pause would have broken the %llu ms limit (%.1f ms when it was "
			    "stopped, %llu MiB still dirty), and no rounds or time are left; the workload runs on",
			    (unsigned long long)m->p.downtime_limit_ms, pause_ms,
			    (unsigned long long)(lm_sbitmap_count(&m->dirty) * LM_PAGE_SIZE >> 20));
	return GUARD_RESUMED;
}

/* The last of the stream: DIGEST (unless no-digest) and END, written. */
static int send_end(struct lm_migration *m)
{
	int err = 0;
	if (m->use_digest) {
		lm_hash128 d = lm_digest_value(&m->digest);
		err = lm_stream_put_digest(&m->out, d.lo, d.hi, m->total_pages);
	}
	if (!err)
		err = lm_stream_put_end(&m->out);
	if (err)
		return put_fail(m, err, "END");
	return flush(m);
}

/* The pause begins (the switchover, or the switch to post-copy): the
 * workload stops; *t_stopped when it had. Everything left goes out at
 * full speed. */
static int pause_workload(struct lm_migration *m, double *t_stopped)
{
	m->st.status = LM_MIG_DEVICE;
	lm__io_set_rate(&m->io, 0);
	if (m->txc)
		lm__txc_set_rate(m->txc, 0);
	m->t_pause = lm__now();
	if (m->ops && m->ops->pause) {
		int err = m->ops->pause(m->ctx);
		if (err)
			return fail(m, err, "could not pause the workload: %s", lm_strerror(err));
	}
	m->paused = true;
	m->pause_bytes_out = out_bytes(m);
	m->pause_harvest_s = 0;
	*t_stopped = lm__now();
	publish(m);
	lm__test_point("sender-in-pause");
	return 0;
}

/* RESULT ok ended the pause: the downtime and its parts (the workload
 * stopped at t_stopped, its state read by t_state, the last frame before
 * the answer out at t_end). */
static void note_downtime(struct lm_migration *m, double t_stopped, double t_state, double t_end)
{
	double t = lm__now();
	m->st.downtime_us = (uint64_t)((t - m->t_pause) * 1e6);
	m->st.downtime_ms = m->st.downtime_us / 1000;
	m->st.downtime_stop_us = (uint64_t)((t_stopped - m->t_pause) * 1e6);
	m->st.downtime_state_us = (uint64_t)((t_state - t_stopped) * 1e6);
	m->st.downtime_ram_us = (uint64_t)((t_end - t_state) * 1e6);
	m->st.downtime_result_us = m->st.downtime_us - m->st.downtime_stop_us - m->st.downtime_state_us -
				   m->st.downtime_ram_us;
	m->st.downtime_harvest_us = (uint64_t)(m->pause_harvest_s * 1e6);
}

/* Stop the workload, send the rest, device state, digest, END; wait for
 * RESULT. last: no rounds or time left (the guard then cancels). */
static int switchover(struct lm_migration *m, bool last)
{
	int err;
	if (!m->prepared && (err = prepare_destination(m)))
		return err;
	set_phase(m, "the stop-and-copy");
	double t_stopped;
	if ((err = pause_workload(m, &t_stopped)))
		return err;
	/*
	 * Device state before the final harvest, not after: reading vCPU
	 * state can make the kernel write guest memory (KVM updates a
	 * paravirtual steal-time area when it puts a vCPU), and such a write
	 * must still be harvested and sent, or the completeness check would
	 * rightly find the page stale. The DEVICE records simply precede the
	 * last RAM runs on the wire (any order is valid before DIGEST); with
	 * the downtime guard they follow them, held back until the pause is
	 * sure to fit (a receiver takes one VM state only).
	 */
	set_phase(m, "sending device state");
	bool guard = m->p.downtime_guard;
	lm_buf_reset(&m->held);
	if (m->ops && m->ops->save_state) {
		lm_state_writer w = { .out = guard ? &m->held : &m->out };
		err = m->ops->save_state(m->ctx, &w);
		if (err)
			return fail(m, err, "saving device state failed: %s", lm_strerror(err));
	}
	set_phase(m, "the stop-and-copy");
	double t_state = lm__now();
	m->t_state = t_state;
	m->round_pages = 0;
	if (guard) {
		/* What the pause has to carry, before any of it is sent. */
		uint64_t left;
		if ((err = count_remaining(m, &left)))
			return err;
		m->guarding = true;
		if (!guard_ok(m, m->sync_time))
			return guard_resume(m, last);
	}
	err = send_pass(m);
	if (err == GUARD_TRIPPED)
		return guard_resume(m, last);
	m->guarding = false;
	if (!err && guard && m->held.len) {
		err = lm_buf_reserve(&m->out, m->held.len);
		if (!err) {
			memcpy(m->out.data + m->out.len, m->held.data, m->held.len);
			m->out.len += m->held.len;
		}
		if (err)
			return fail(m, err, "out of memory during %s", m->phase);
	}
	if (!err)
		err = send_table(m, true);
	if (err)
		return err;
	m->st.dirty_sync_count++;
	m->st.remaining = 0;
	err = send_end(m);
	if (err)
		return err;
	m->st.stop_copy_bytes = out_bytes(m) - m->pause_bytes_out;
	double t_end = lm__now();
	err = wait_result(m);
	if (err)
		return err;
	lm__test_point("sender-after-result");
	note_downtime(m, t_stopped, t_state, t_end);

	/*
	 * COMMIT: the receiver runs the guest only once it has read this, so a
	 * connection that drops between its RESULT ok and here leaves the
	 * destination stopped while we resume (one copy runs, never two). If
	 * the write fails the receiver cannot have read a whole COMMIT, so
	 * failing and resuming is still safe. A COMMIT that is written but
	 * lost on the way leaves both copies stopped: safe, and visible.
	 */
	set_phase(m, "the commit");
	err = lm_stream_put_commit(&m->out);
	if (err)
		return put_fail(m, err, "COMMIT");
	err = flush(m);
	if (err)
		return err;
	m->committed = true;
	lm__test_point("sender-after-commit");
	if (!(m->s.caps & LM_CAP_COMMIT_ACK))
		return 0;
	err = wait_committed(m);
	if (err)
		return err;
	m->st.commit_acked = true;
	lm__test_point("sender-after-committed");
	return 0;
}

/* COMMITTED came: the destination started the guest between COMMIT and
 * its answer (with a start op), the downtime's tail after RESULT ok. */
static int wait_committed(struct lm_migration *m)
{
	double t0 = lm__now();
	int err = read_committed(m);
	if (!err)
		m->st.downtime_resume_us = (uint64_t)((lm__now() - t0) * 1e6);
	return err;
}

/*
 * COMMITTED, the receiver's answer to COMMIT (docs/stream.md 3.13). Any
 * other outcome leaves us not knowing whether the destination runs the
 * guest: the caller reports the migration unconfirmed.
 */
static int read_committed(struct lm_migration *m)
{
	uint8_t hdr[LM_FRAME_HDR];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = { 0 };
	set_phase(m, "waiting for COMMITTED");
	int err = lm__io_read(&m->io, hdr, sizeof(hdr));
	if (err)
		return io_fail(m, err);
	err = lm_stream_frame_parse(&m->s, hdr, sizeof(hdr), &f, &e);
	if (err)
		return fail(m, err, "bad answer to COMMIT: %s", e.msg);
	if (f.type != LM_REC_COMMITTED)
		return fail(m, -EPROTO, "receiver answered COMMIT with %s", lm_stream_type_name(f.type));
	err = lm_stream_decode_payload(&m->s, &f, hdr, 0, &rec, &e);
	if (err)
		return fail(m, err, "bad COMMITTED: %s", e.msg);
	return 0;
}

/* Compare page i of region r now (paused) with the contribution sent. */
static void verify_page(struct lm_migration *m, const struct lm_mem_region *r, uint64_t i)
{
	const uint8_t *host = (const uint8_t *)r->host + (i - r->first_page) * LM_PAGE_SIZE;
	lm_hash128 now = lm_digest_contrib(i, host), sent = m->digest.contrib[i];
	m->st.verify_pages++;
	if (now.lo == sent.lo && now.hi == sent.hi)
		return;
	if (m->st.verify_mismatches < LM_VERIFY_LIST)
		m->st.verify_first[m->st.verify_mismatches] = i;
	m->st.verify_mismatches++;
}

static void sent_run(void *arg, uint64_t first, uint64_t n)
{
	lm_sbitmap_set_range(arg, first, n);
}

/*
 * The completeness check (docs/stream.md 5.2), on the paused workload after
 * the commit: pages that may hold data (present now, or sent with data at
 * some point) are compared with what was sent; every other page is
 * unpopulated, reads as zero and was never sent with data, so it matches
 * without being read.
 */
static void verify_memory(struct lm_migration *m)
{
	double t0 = lm__now();
	set_phase(m, "the completeness check");
	bool knows_present = m->src->flags & LM_DIRTY_KNOWS_PRESENT;
	int err = knows_present ? -EOPNOTSUPP : -ENOENT;
	if (knows_present && m->src->ops->present_runs) {
		err = 0;
		for (size_t k = 0; k < m->nregions && !err; k++)
			err = m->src->ops->present_runs(m->src, m->regions[k].first_page, m->regions[k].npages,
						       sent_run, &m->sent);
	}
	if (err == -EOPNOTSUPP && m->src->ops->present) {
		err = 0;
		for (size_t k = 0; k < m->nregions && !err; k++)
			err = m->src->ops->present(m->src, m->regions[k].first_page, m->regions[k].npages,
						   &m->sent.bits);
		lm_sbitmap_rebuild(&m->sent);
	}
	m->st.verify = LM_VERIFY_OK;
	if (err) {
		/* Cannot tell what is populated: read every page. */
		for (size_t k = 0; k < m->nregions; k++)
			lm_sbitmap_set_range(&m->sent, m->regions[k].first_page, m->regions[k].npages);
	}
	for (size_t k = 0; k < m->nregions; k++) {
		const struct lm_mem_region *r = &m->regions[k];
		uint64_t end = r->first_page + r->npages;
		for (uint64_t i = lm_sbitmap_find_next_set(&m->sent, r->first_page); i < end;
		     i = lm_sbitmap_find_next_set(&m->sent, i + 1)) {
			if ((m->st.verify_pages & 4095) == 0 && is_cancelled(m)) {
				m->st.verify = LM_VERIFY_INCOMPLETE;
				goto out;
			}
			/* A ballooned page the guest promised not to touch was
			 * neither sent nor may it be read (skip-balloon): its
			 * TABLE entry gave it a zero contribution on both sides. */
			if (m->use_skip && lm_skip_map_test(m->skip, i))
				continue;
			verify_page(m, r, i);
		}
	}
	if (m->st.verify_mismatches)
		m->st.verify = LM_VERIFY_MISMATCH;
out:
	m->st.verify_time_ms = (uint64_t)((lm__now() - t0) * 1000);
}

/* lm__pc_src's send: the pending pages of [first, first + n), written out. */
static int64_t pc_send(void *arg, const struct lm_mem_region *r, uint64_t first, uint64_t n)
{
	struct lm_migration *m = arg;
	uint64_t before = m->round_pages;
	int err = send_chunk(m, r, first, n);
	if (!err)
		err = flush(m);
	if (err)
		return err;
	if (lm__now() - m->last_publish > 0.05) {
		m->st.remaining = lm_sbitmap_count(&m->dirty) * LM_PAGE_SIZE;
		m->st.postcopy_bytes = m->bytes_base + out_bytes(m) - m->pc_bytes0;
		publish(m);
	}
	return (int64_t)(m->round_pages - before);
}

/* The pending set (the dirty pages after the final harvest) as PENDING
 * records, and POSTCOPY with their number. */
static int send_pending(struct lm_migration *m, uint64_t *npending)
{
	lm_stream_region runs[256];
	uint32_t n = 0;
	int err = 0;
	*npending = 0;
	for (uint64_t i = lm_sbitmap_find_next_set(&m->dirty, 0); i < m->end_page && !err;) {
		/* A run ends where the pages do, or at a region's end. */
		uint64_t e = i + 1;
		while (e < m->end_page && lm_bitmap_test(&m->dirty.bits, e) &&
		       lm_stream_layout_find(&m->s.layout, i, e + 1 - i, NULL) >= 0)
			e++;
		runs[n++] = (lm_stream_region){ i, e - i };
		*npending += e - i;
		lm_sbitmap_set_range(&m->pc_all, i, e - i);
		if (n == sizeof(runs) / sizeof(runs[0])) {
			err = lm_stream_put_pending(&m->out, runs, n);
			n = 0;
			if (!err)
				err = maybe_flush(m);
		}
		i = lm_sbitmap_find_next_set(&m->dirty, e);
	}
	if (!err && n)
		err = lm_stream_put_pending(&m->out, runs, n);
	if (!err)
		err = lm_stream_put_postcopy(&m->out, *npending, m->session);
	return err < 0 && !m->st.error[0] ? put_fail(m, err, "PENDING") : err;
}

/* A failure of the connection itself (a recovery may follow), not a
 * verdict of the receiver's. */
static bool broken_link(int err)
{
	return err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN || err == -ETIMEDOUT ||
	       err == -ECONNABORTED || err == -ENETDOWN || err == -ENETUNREACH || err == -EHOSTUNREACH;
}

/* After COMMIT (or a recovery): the pending pages, then DIGEST, END and
 * the receiver's verdict. */
static int postcopy_send(struct lm_migration *m)
{
	set_phase(m, "post-copy");
	lm__io_set_rate(&m->io, m->p.max_bandwidth);
	struct lm__pc_src pc = {
		.io = &m->io,
		.s = &m->s,
		.pending = &m->dirty,
		.regions = m->regions,
		.nregions = m->nregions,
		.rate = m->p.max_bandwidth,
		.send = pc_send,
		.arg = m,
	};
	int err = lm__pc_src_run(&pc);
	m->st.postcopy_requests += pc.requests;
	m->st.postcopy_pages_requested += pc.pages_requested;
	m->st.postcopy_pages_pushed += pc.pages_pushed;
	if (err)
		return fail(m, err, "%s", pc.why);
	m->st.remaining = 0;
	if ((err = send_end(m)))
		return err;
	m->st.postcopy_bytes = m->bytes_base + out_bytes(m) - m->pc_bytes0;
	set_phase(m, "waiting for the post-copy result");
	return wait_reply(m, LM_REC_RESULT);
}

/*
 * The post-copy connection broke (docs/stream.md 3.15): the workload stays
 * paused, the pages not sent stay here, and the thread waits until
 * lm_migration_resume() hands over a new connection (or a cancel gives
 * up: -ECANCELED). On it: RESUME, the receiver's MISSING pages become the
 * pending set again, and post-copy goes on. A recovery connection that
 * breaks in the handshake just means waiting again.
 */
static int postcopy_resume(struct lm_migration *m);

static int postcopy_wait_resume(struct lm_migration *m)
{
	for (;;) {
		char cause[160];
		snprintf(cause, sizeof(cause), "%.159s", m->st.error);
		snprintf(m->st.error, sizeof(m->st.error),
			 "post-copy paused, %llu of %llu pages not sent: %.160s; waiting for `migrate --resume`",
			 (unsigned long long)lm_sbitmap_count(&m->dirty), (unsigned long long)m->st.postcopy_pending,
			 cause);
		m->st.status = LM_MIG_POSTCOPY_PAUSED;
		set_phase(m, "post-copy, paused");
		/* Before anyone can see the status: a resume then finds us waiting. */
		pthread_mutex_lock(&m->lock);
		m->waiting_resume = true;
		pthread_mutex_unlock(&m->lock);
		publish(m);
		pthread_mutex_lock(&m->lock);
		while (m->resume_fd < 0 && !is_cancelled(m))
			pthread_cond_wait(&m->resume_cond, &m->lock);
		int fd = m->resume_fd;
		m->resume_fd = -1;
		m->waiting_resume = false;
		pthread_mutex_unlock(&m->lock);
		if (fd < 0) {
			snprintf(m->st.error, sizeof(m->st.error), "%.160s; given up waiting for a recovery", cause);
			return -ECANCELED;
		}
		m->bytes_base += m->io.bytes_out;
		lm__io_close(&m->io);
		if (m->io_fd_owned >= 0)
			close(m->io_fd_owned);
		m->io_fd_owned = fd;
		int err = lm__io_open(&m->io, fd, -1);
		if (err)
			return fail(m, err, "the recovery connection is unusable: %s", lm_strerror(err));
		m->io.timeout_ms = idle_of(&m->p);
		m->st.error[0] = 0;
		err = postcopy_resume(m);
		if (!err) {
			m->st.postcopy_recoveries++;
			m->st.status = LM_MIG_POSTCOPY_ACTIVE;
			publish(m);
			return 0;
		}
		if (!broken_link(err))
			return err;
	}
}

/* RESUME on the new connection; the receiver's MISSING pages, checked
 * against the pending set of the switch, are the pending set now. */
static int postcopy_resume(struct lm_migration *m)
{
	set_phase(m, "the post-copy recovery");
	int err = lm_stream_put_resume(&m->out, m->session);
	if (err)
		return put_fail(m, err, "RESUME");
	if ((err = flush(m)))
		return err;
	lm_sbitmap_clear_range(&m->dirty, 0, m->end_page);
	uint64_t listed = 0;
	uint8_t hdr[LM_FRAME_HDR];
	uint8_t *pl = NULL;
	m->io.timeout_ms = m->p.result_timeout_ms;
	for (;;) {
		lm_frame f;
		lm_record rec;
		lm_stream_err e = { 0 };
		if ((err = lm__io_read(&m->io, hdr, sizeof(hdr))))
			break;
		if ((err = lm_stream_frame_parse(&m->s, hdr, sizeof(hdr), &f, &e))) {
			err = fail(m, err, "bad answer to RESUME: %s", e.msg);
			break;
		}
		uint8_t *np = realloc(pl, f.payload_len ? f.payload_len : 1);
		if (!np) {
			err = fail(m, -ENOMEM, "out of memory during the recovery");
			break;
		}
		pl = np;
		if ((err = lm__io_read(&m->io, pl, f.payload_len)))
			break;
		if ((err = lm_stream_decode_payload(&m->s, &f, pl, f.payload_len, &rec, &e))) {
			err = fail(m, err, "bad %s during the recovery: %s", lm_stream_type_name(f.type), e.msg);
			break;
		}
		if (f.type == LM_REC_MISSING) {
			for (uint32_t i = 0; i < rec.u.pending.nruns && !err; i++) {
				lm_stream_region r = lm_stream_pending_run(&rec, i);
				for (uint64_t p = r.first_page; p < r.first_page + r.npages; p++) {
					if (!lm_bitmap_test(&m->pc_all.bits, p)) {
						err = fail(m, -EPROTO, "the receiver misses page %llu, which was not pending",
							   (unsigned long long)p);
						break;
					}
					if (!lm_bitmap_test(&m->dirty.bits, p)) {
						lm_sbitmap_set(&m->dirty, p);
						listed++;
					}
				}
			}
			if (err)
				break;
			continue;
		}
		if (f.type == LM_REC_REFUSE || (f.type == LM_REC_RESULT && rec.u.status.code)) {
			err = fail(m, rec.u.status.code > 0 ? -rec.u.status.code : -EPROTO, "the receiver refused the "
				   "recovery: %s", rec.u.status.text);
			break;
		}
		if (f.type == LM_REC_PAGE_REQ)
			continue; /* sent on the new connection before RESUMED? not by livemig; harmless */
		if (f.type != LM_REC_RESUMED) {
			err = fail(m, -EPROTO, "the receiver answered RESUME with %s", lm_stream_type_name(f.type));
			break;
		}
		if (rec.u.resumed.session != m->session || rec.u.resumed.nmissing != listed)
			err = fail(m, -EPROTO, "bad RESUMED: session %#llx, %llu pages (expected %#llx, %llu)",
				   (unsigned long long)rec.u.resumed.session, (unsigned long long)rec.u.resumed.nmissing,
				   (unsigned long long)m->session, (unsigned long long)listed);
		break;
	}
	free(pl);
	m->io.timeout_ms = idle_of(&m->p);
	if (err && !m->st.error[0])
		io_fail(m, err);
	return err;
}

/*
 * Post-copy (docs/stream.md 3.14): stop the workload, send its state and
 * the list of pages still dirty, and once the destination said it can run
 * with them missing (RESULT ok) and COMMIT is out, send them, asked-for
 * pages first (postcopy_src.c), then DIGEST and END. From COMMIT on the
 * workload is never resumed here and the migration cannot be cancelled:
 * the guest runs on the destination.
 */
static int switchover_postcopy(struct lm_migration *m)
{
	int err;
	if (!m->prepared && (err = prepare_destination(m)))
		return err;
	set_phase(m, "the switch to post-copy");
	double t_stopped;
	if ((err = pause_workload(m, &t_stopped)))
		return err;
	/* The state first, then the final harvest (see switchover()). */
	if (m->ops && m->ops->save_state) {
		lm_state_writer w = { .out = &m->out };
		err = m->ops->save_state(m->ctx, &w);
		if (err)
			return fail(m, err, "saving device state failed: %s", lm_strerror(err));
	}
	double t_state = lm__now();
	uint64_t left, npending;
	if ((err = count_remaining(m, &left)))
		return err;
	if ((err = lm_sbitmap_init(&m->pc_all, m->end_page, 0)))
		return fail(m, err, "out of memory for the post-copy page map");
	m->pc_all_ok = true;
	while (!m->session && getrandom(&m->session, sizeof(m->session), 0) != sizeof(m->session))
		m->session = (uint64_t)(lm__now() * 1e9) ^ (uint64_t)getpid() << 32;
	/* Ballooned pages are zero on both sides: never pending. */
	if (m->use_skip)
		for (size_t i = 0; i < m->nregions; i++)
			lm_skip_map_remove_from(m->skip, &m->dirty, m->regions[i].first_page, m->regions[i].npages);
	if ((err = send_table(m, true)) || (err = send_pending(m, &npending)) || (err = flush(m)))
		return err;
	m->st.dirty_sync_count++;
	m->st.stop_copy_bytes = out_bytes(m) - m->pause_bytes_out;
	m->st.postcopy_pending = npending;
	double t_end = lm__now();
	set_phase(m, "waiting for the destination to take over");
	err = wait_reply(m, LM_REC_RESULT);
	if (err)
		return err;
	note_downtime(m, t_stopped, t_state, t_end);
	set_phase(m, "the commit");
	if ((err = lm_stream_put_commit(&m->out)))
		return put_fail(m, err, "COMMIT");
	if ((err = flush(m)))
		return err;
	m->committed = true;
	m->in_postcopy = true;
	/* The guest runs there now: nothing may stop this side any more. */
	m->io.cancel_fd = -1;
	m->st.postcopy = true;
	m->st.status = LM_MIG_POSTCOPY_ACTIVE;
	m->pc_bytes0 = out_bytes(m);
	double t_commit = lm__now();
	publish(m);
	lm__test_point("sender-postcopy-commit");
	err = 0;
	if (m->s.caps & LM_CAP_COMMIT_ACK) {
		/* A link that breaks before COMMITTED is a break of the
		 * post-copy like any later one: COMMIT was our promise, the
		 * destination may run the guest, so we wait for a recovery
		 * (or the operator) with the pending pages kept. */
		err = wait_committed(m);
		if (err && !broken_link(err))
			return err;
		m->st.commit_acked = !err;
	}
	for (bool broke = err != 0;;) {
		/* The connection broke: wait for another, nothing is lost. */
		if (broke && (err = postcopy_wait_resume(m)))
			break;
		err = postcopy_send(m);
		if (!err || !broken_link(err))
			break;
		broke = true;
	}
	m->st.postcopy_time_ms = (uint64_t)((lm__now() - t_commit) * 1000);
	return err;
}

static int run(struct lm_migration *m)
{
	int err;
	m->st.status = LM_MIG_SETUP;
	set_phase(m, "the handshake");
	publish(m);
	err = handshake(m);
	if (err)
		return err;
	err = lm_sbitmap_init(&m->dirty, m->end_page, 0);
	if (err)
		return fail(m, err, "out of memory for the dirty bitmap");
	m->dirty_ok = true;
	err = lm_digest_init(&m->digest, m->end_page);
	if (err)
		return fail(m, err, "out of memory for the digest");
	m->digest_ok = true;
	err = lm_sbitmap_init(&m->sent, m->end_page, 0);
	if (err)
		return fail(m, err, "out of memory for the sent-pages bitmap");
	m->sent_ok = true;
	err = open_channels(m);
	if (err)
		return err;
	err = lm_dirty_source_start(m->src, m->regions, m->nregions);
	if (err)
		return fail(m, err, "could not start dirty tracking with '%s': %s", m->src->ops->name,
			    lm_strerror(err));
	m->tracking = true;
	err = mark_initial(m);
	if (err)
		return err;
	if (m->ops && m->ops->save_setup) {
		lm_state_writer w = { .out = &m->out };
		err = m->ops->save_setup(m->ctx, &w);
		if (err)
			return fail(m, err, "saving the setup state failed: %s", lm_strerror(err));
	}
	if (m->ops && m->ops->switchover_cost_us)
		m->workload_s = (double)m->ops->switchover_cost_us(m->ctx) / 1e6;
	m->st.setup_time_ms = (uint64_t)((lm__now() - m->t_start) * 1000);
	m->st.status = LM_MIG_ACTIVE;
	lm__io_set_rate(&m->io, m->p.max_bandwidth);
	if (m->txc)
		lm__txc_set_rate(m->txc, m->p.max_bandwidth);

	for (unsigned round = 1;; round++) {
		set_phase(m, "round %u", round);
		m->st.rounds = round;
		m->round_pages = 0;
		m->round_new_dirty = 0;
		m->round_data_pages = 0;
		m->round_data_time = 0;
		double t0 = lm__now();
		err = lm_stream_put_round(&m->out, round);
		if (err)
			return put_fail(m, err, "ROUND");
		/* Out now, not with the round's first megabyte: the receiver's
		 * idle timeout counts from its last byte, and on a big guest the
		 * harvest after the last round plus a pass that finds little
		 * could otherwise be one long silence. */
		err = flush(m);
		if (!err)
			err = send_pass(m);
		if (!err)
			err = send_table(m, false);
		if (!err)
			err = flush(m);
		if (err)
			return err;
		uint64_t left;
		err = count_remaining(m, &left);
		if (err)
			return err;
		double dt = lm__now() - t0;
		if (dt < 1e-6)
			dt = 1e-6;
		estimate(m, dt);
		/* What this round cost beyond its pages: harvests, scans, waits. */
		m->round_fixed = dt - (m->bw > 0 ? (double)m->round_pages * LM_PAGE_SIZE / m->bw : 0);
		if (m->round_fixed < 0)
			m->round_fixed = 0;
		m->rate_pages += (double)m->round_new_dirty;
		m->rate_time += dt;
		m->st.dirty_pages_rate = (uint64_t)(m->rate_pages / m->rate_time);
		if (m->rate_time > DIRTY_RATE_WINDOW_S) {
			m->rate_pages /= 2;
			m->rate_time /= 2;
		}
		m->st.pages_per_round_last = m->round_pages;
		/* Pages sent after READY may still wait in the socket buffers,
		 * to be placed at the destination's speed: with catch-up the
		 * pause waits for one more READY rather than pay for them
		 * unestimated (docs/stream.md 3.12). */
		if (m->ready_seen && m->round_pages && (m->s.caps & LM_CAP_CATCH_UP))
			m->prepared = false;
		struct lm__conv_out d;
		for (;;) {
			decide(m, round, left, &d);
			if (d.act != LM__CONV_PREPARE)
				break;
			bool asked = m->s.caps & LM_CAP_PREPARE;
			err = prepare_destination(m);
			/* The guest ran on while the destination got ready. */
			if (!err && asked)
				err = count_remaining(m, &left);
			if (err)
				return err;
		}
		if (d.act == LM__CONV_ROUND)
			continue;
		if (d.act == LM__CONV_CANCEL)
			return fail(m, -ETIMEDOUT,
				    "%s after %u rounds (%.1f s): %llu MiB still dirty, "
				    "expected downtime %llu ms > limit %llu ms",
				    m->p.on_nonconverge == LM_NONCONVERGE_CANCEL
					? "did not converge"
					: "downtime guard: did not converge, and a late switchover would break the limit",
				    round, lm__now() - m->t_start, (unsigned long long)(m->st.remaining >> 20),
				    (unsigned long long)m->st.expected_downtime_ms,
				    (unsigned long long)m->p.downtime_limit_ms);
		if (d.act == LM__CONV_POSTCOPY)
			return switchover_postcopy(m);
		err = switchover(m, d.last);
		if (err != GUARD_RESUMED)
			return err;
	}
}

static void *thread_main(void *arg)
{
	struct lm_migration *m = arg;
	lm__thread_name("lm-send");
	int err = run(m);
	if (m->txc) {
		/* The channels' bytes stay counted once they are gone. */
		chan_account(m, NULL);
		m->bytes_base += lm__txc_bytes(m->txc);
		lm__txc_free(m->txc);
		m->txc = NULL;
		m->txc_live = false;
	}
	/* Completed: the destination runs the guest. Our copy stays paused;
	 * check it against what was sent (the dirty source still knows which
	 * pages are populated). */
	if (!err && m->p.verify == LM_VERIFY_FULL && m->use_digest)
		verify_memory(m);
	if (m->tracking) {
		lm_dirty_source_stop(m->src);
		m->tracking = false;
	}
	/* The throttle ends with the migration, whatever its outcome (the
	 * stats keep the share it reached). */
	if (m->throttled)
		(void)m->ops->throttle(m->ctx, 0);
	if (err && m->in_postcopy) {
		/* The guest runs on the destination: ours stays paused, and
		 * the pages that did not go out are here only. */
		char why[sizeof(m->st.error)];
		uint64_t left = lm_sbitmap_count(&m->dirty);
		snprintf(why, sizeof(why), "%s", m->st.error[0] ? m->st.error : lm_strerror(err));
		m->st.error[0] = 0;
		if (left)
			fail(m, -ENOLINK, "post-copy broke off with %llu of %llu pages not sent (%.120s); the "
					  "guest cannot run on without them; this copy stays paused, the guest as it "
					  "was at the switch",
			     (unsigned long long)left, (unsigned long long)m->st.postcopy_pending, why);
		else
			fail(m, -ENOLINK, "post-copy sent every page, then: %s; the guest runs on the "
					  "destination, this copy stays paused", why);
		/* Over: postcopy-paused was the wait for a recovery. */
		m->st.status = LM_MIG_FAILED;
		err = -ENOLINK;
	} else if (err && m->committed) {
		/* COMMIT is out: the destination may run the guest, so ours
		 * stays paused whatever went wrong after it. */
		char why[sizeof(m->st.error)];
		snprintf(why, sizeof(why), "%s", m->st.error[0] ? m->st.error : lm_strerror(err));
		m->st.error[0] = 0;
		fail(m, -ENOLINK, "COMMIT sent but not acknowledged (%s): the destination may be running "
				  "the guest; this copy stays paused", why);
		m->st.status = LM_MIG_UNCONFIRMED;
		err = -ENOLINK;
	} else if (err) {
		if (m->paused && m->ops && m->ops->resume)
			m->ops->resume(m->ctx);
		m->paused = false;
		m->st.status = (err == -ECANCELED) ? LM_MIG_CANCELLED : LM_MIG_FAILED;
		if (!m->st.error[0])
			fail(m, err, "%s during %s", lm_strerror(err), m->phase);
	} else {
		m->st.status = LM_MIG_COMPLETED;
	}
	m->result = err;
	publish(m);
	return NULL;
}

static int region_cmp(const void *a, const void *b)
{
	const struct lm_mem_region *x = a, *y = b;
	return x->first_page < y->first_page ? -1 : x->first_page > y->first_page;
}

int lm_migration_new(lm_migration **out, const struct lm_mem_region *regions, size_t n,
		     struct lm_dirty_source *src, const struct lm_workload_ops *ops, void *ctx,
		     const struct lm_migrate_params *p)
{
	if (!out || !regions || n == 0 || n > LM_STREAM_MAX_REGIONS || !src)
		return -EINVAL;
	struct lm_migration *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	lm_migrate_params_default(&m->p);
	if (p) {
		m->p = *p;
		if (!m->p.downtime_limit_ms)
			m->p.downtime_limit_ms = 300;
		if (!m->p.max_rounds)
			m->p.max_rounds = 30;
		if (!m->p.chunk_pages)
			m->p.chunk_pages = 512;
		if (!m->p.result_timeout_ms)
			m->p.result_timeout_ms = 60000;
		if (!m->p.idle_timeout_ms)
			m->p.idle_timeout_ms = LM_IDLE_TIMEOUT_DEFAULT_MS;
		if (!m->p.throttle_initial)
			m->p.throttle_initial = 20;
		if (!m->p.throttle_increment)
			m->p.throttle_increment = 10;
	}
	if (m->p.throttle_initial > 99 || m->p.throttle_increment > 99) {
		free(m);
		return -EINVAL;
	}
	if (m->p.chunk_pages & 63) {
		free(m);
		return -EINVAL;
	}
	m->regions = calloc(n, sizeof(*regions));
	if (!m->regions) {
		free(m);
		return -ENOMEM;
	}
	memcpy(m->regions, regions, n * sizeof(*regions));
	/* The wire layout lists regions in page order. */
	qsort(m->regions, n, sizeof(*regions), region_cmp);
	m->nregions = n;
	for (size_t i = 0; i < n; i++) {
		if (regions[i].first_page + regions[i].npages > m->end_page)
			m->end_page = regions[i].first_page + regions[i].npages;
		m->total_pages += regions[i].npages;
	}
	m->src = src;
	m->ops = ops;
	m->ctx = ctx;
	m->fd = -1;
	m->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->cancel_fd < 0) {
		int err = -errno;
		free(m->regions);
		free(m);
		return err;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->resume_cond, NULL);
	m->resume_fd = -1;
	m->io_fd_owned = -1;
	lm_stream_init(&m->s);
	lm_buf_init(&m->out);
	lm_buf_init(&m->held);
	m->st.total = m->total_pages * LM_PAGE_SIZE;
	snprintf(m->st.dirty_source, sizeof(m->st.dirty_source), "%s", src->ops->name);
	m->pub = m->st;
	*out = m;
	return 0;
}

int lm_migration_set_skip_map(lm_migration *m, lm_skip_map *map, bool trusted)
{
	if (!map)
		return -EINVAL;
	if (m->thread_on || m->st.status != LM_MIG_NONE)
		return -EBUSY;
	m->skip = map;
	m->skip_trusted = trusted;
	m->st.ballooned = lm_skip_map_count(map);
	m->pub = m->st;
	return 0;
}

int lm_migration_start(lm_migration *m, int fd)
{
	if (m->thread_on || m->st.status != LM_MIG_NONE)
		return -EBUSY;
	int err = lm__io_open(&m->io, fd, m->cancel_fd);
	if (err)
		return err;
	/* Every read and write, HELLO's included; the waits for the
	 * receiver's answers use result_timeout_ms instead. */
	m->io.timeout_ms = idle_of(&m->p);
	m->io_ok = true;
	m->fd = fd;
	m->t_start = lm__now();
	m->st.status = LM_MIG_SETUP;
	m->pub.status = LM_MIG_SETUP;
	if (pthread_create(&m->thread, NULL, thread_main, m)) {
		lm__io_close(&m->io);
		m->io_ok = false;
		return -EAGAIN;
	}
	m->thread_on = true;
	return 0;
}

int lm_migration_wait(lm_migration *m)
{
	if (!m->thread_on)
		return m->st.status == LM_MIG_NONE ? -EINVAL : m->result;
	pthread_join(m->thread, NULL);
	m->thread_on = false;
	if (m->io_ok) {
		lm__io_close(&m->io);
		m->io_ok = false;
	}
	return m->result;
}

int lm_migration_resume(lm_migration *m, int fd)
{
	pthread_mutex_lock(&m->lock);
	int r = !m->waiting_resume || m->resume_fd >= 0 ? -EINVAL : 0;
	if (!r) {
		m->resume_fd = fd;
		m->pub.status = LM_MIG_POSTCOPY_RECOVER;
		pthread_cond_broadcast(&m->resume_cond);
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

int lm_migration_start_postcopy(lm_migration *m)
{
	if (!m->p.postcopy)
		return -EINVAL;
	struct lm_migrate_stats st;
	lm_migration_query(m, &st);
	if (st.postcopy || (st.status != LM_MIG_NONE && st.status != LM_MIG_SETUP && st.status != LM_MIG_ACTIVE))
		return -EALREADY;
	__atomic_store_n(&m->postcopy_now, 1, __ATOMIC_RELEASE);
	return 0;
}

void lm_migration_cancel(lm_migration *m)
{
	__atomic_store_n(&m->cancel_flag, 1, __ATOMIC_RELEASE);
	uint64_t one = 1;
	ssize_t w = write(m->cancel_fd, &one, sizeof(one));
	(void)w;
	/* A post-copy paused for a recovery gives up waiting. */
	pthread_mutex_lock(&m->lock);
	pthread_cond_broadcast(&m->resume_cond);
	pthread_mutex_unlock(&m->lock);
}

void lm_migration_query(lm_migration *m, struct lm_migrate_stats *out)
{
	pthread_mutex_lock(&m->lock);
	*out = m->pub;
	pthread_mutex_unlock(&m->lock);
	if (out->status == LM_MIG_SETUP || out->status == LM_MIG_ACTIVE || out->status == LM_MIG_DEVICE ||
	    out->status == LM_MIG_POSTCOPY_ACTIVE || out->status == LM_MIG_POSTCOPY_PAUSED ||
	    out->status == LM_MIG_POSTCOPY_RECOVER) {
		out->total_time_us = (uint64_t)((lm__now() - m->t_start) * 1e6);
		out->total_time_ms = out->total_time_us / 1000;
	}
}

const char *lm_migration_error(lm_migration *m)
{
	/* Only read after the thread ended, or a snapshot would be needed. */
	return m->thread_on ? "" : m->st.error;
}

void lm_migration_free(lm_migration *m)
{
	if (!m)
		return;
	if (m->thread_on) {
		lm_migration_cancel(m);
		lm_migration_wait(m);
	}
	if (m->io_ok)
		lm__io_close(&m->io);
	if (m->dirty_ok)
		lm_sbitmap_destroy(&m->dirty);
	if (m->digest_ok)
		lm_digest_destroy(&m->digest);
	if (m->sent_ok)
		lm_sbitmap_destroy(&m->sent);
	if (m->pc_all_ok)
		lm_sbitmap_destroy(&m->pc_all);
	if (m->io_fd_owned >= 0)
		close(m->io_fd_owned);
	if (m->resume_fd >= 0)
		close(m->resume_fd);
	pthread_cond_destroy(&m->resume_cond);
	lm_stream_destroy(&m->s);
	lm_buf_destroy(&m->out);
	lm_buf_destroy(&m->held);
	free(m->scratch);
	free(m->tbuf);
	close(m->cancel_fd);
	pthread_mutex_destroy(&m->lock);
	free(m->regions);
	free(m);
}

int lm_migrate_send(int fd, const struct lm_mem_region *regions, size_t n, struct lm_dirty_source *src,
		    const struct lm_workload_ops *ops, void *ctx, const struct lm_migrate_params *p,
		    struct lm_migrate_stats *stats)
{
	lm_migration *m;
	int err = lm_migration_new(&m, regions, n, src, ops, ctx, p);
	if (err)
		return err;
	err = lm_migration_start(m, fd);
	if (!err)
		err = lm_migration_wait(m);
	if (stats)
		lm_migration_query(m, stats);
	lm_migration_free(m);
	return err;
}

int lm_state_put(lm_state_writer *w, const char *name, const void *blob, size_t len)
{
	int err = lm_stream_put_device(w->out, name, blob, len);
	if (!err)
		w->count++;
	return err;
}
