/*
 * Channels (QEMU's multifd; docs/stream.md 3.16) and the page encoder every
 * connection shares.
 *
 * Workload: rounds of dirty page runs, from a few pages to all of guest
 * RAM, that must leave at the speed of the link. One thread copying,
 * hashing and writing tops out below what a fast link carries, so with N
 * channels the migration thread only harvests, re-arms and hands out runs;
 * each channel has its own thread and connection and does the zero test,
 * the copy, the digest, the compression and the write for the runs of its
 * stripes. A stripe (stripe_pages pages) belongs to one channel for the
 * whole migration, so every version of a page travels through one ordered
 * connection and no reordering can happen between versions.
 *
 * Hand-over: a bounded queue per channel (at most QUEUE_PAGES pages queued,
 * QUEUE_ITEMS runs), under the channel's mutex; the migration thread waits
 * when a channel's queue is full, which is how a slow link pushes back.
 * A barrier (lm__txc_sync) queues SYNC on every channel and waits until each
 * has written it: then every run queued before it is on the wire, the
 * channels' partial digests are folded into the migration's and nothing
 * runs on the channels until the next put. The skip map's TABLE records,
 * DIGEST and the post-copy switch come only after such a barrier.
 *
 * A channel that fails (write error, stalled link, encoding error) records
 * why, wakes the migration thread (its waits here, and its connection I/O
 * through the abort eventfd, which makes them fail with -ESHUTDOWN) and
 * stops; the migration then fails naming the channel.
 *
 * The encoder (lm__lane_put): zero runs as headers; data runs copied once
 * from guest memory into the output buffer and hashed there, a page at a
 * time while it is in cache (the digest describes exactly what was sent;
 * with page-hash-csum the same hash serves the frame checksum); with zstd,
 * compression where it pays
 * (lm__zstd_next, a pure policy: runs that do not shrink make the encoder
 * stop trying for a growing number of runs, and try again later).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/thread.h"
#include "migrate/internal.h"

/* Flush a channel's output buffer beyond this many bytes. */
#define CH_FLUSH (1u << 20)
/* A channel's queue: at most this many runs and pages waiting. */
#define QUEUE_ITEMS 256u
#define QUEUE_PAGES 2048u

/* ---- the compression policy ------------------------------------------------ */

bool lm__zstd_next(struct lm__zstd_pol *z)
{
	if (z->plain)
		return false;
	if (z->skip) {
		z->skip--;
		return false;
	}
	return true;
}

void lm__zstd_result(struct lm__zstd_pol *z, size_t raw, size_t packed)
{
	/* A run pays when it saved at least an eighth: below that the CPU
	 * time costs more than the bytes saved on any link this runs on. */
	if (packed && packed <= raw - raw / 8) {
		z->backoff = 0;
		return;
	}
	z->backoff = z->backoff ? z->backoff * 2 : 1;
	if (z->backoff > LM__ZSTD_MAX_BACKOFF)
		z->backoff = LM__ZSTD_MAX_BACKOFF;
	z->skip = z->backoff;
}

static uint64_t zstd_window(const struct lm__zstd_pol *z)
{
	if (z->trying || !z->rate[z->plain])
		return z->plain ? LM__ZSTD_WIN_TRY_PLAIN : LM__ZSTD_WIN_TRY_ZSTD;
	return LM__ZSTD_WIN;
}

/* The window's raw bytes per busy second (internal.h: the first zstd
 * window after plain ones is charged plain's write time per wire byte). */
static double window_rate(const struct lm__zstd_pol *z)
{
	double t = z->win_enc + z->win_write;
	if (!z->plain && z->switched && z->plain_write > 0)
		t = z->win_enc + (double)z->win_wire * z->plain_write;
	return t > 0 ? (double)z->win_bytes / t : 1e18;
}

static void set_mode(struct lm__zstd_pol *z, bool plain)
{
	z->switched = plain != z->plain;
	if (plain && z->switched)
		z->fill = LM__ZSTD_FILL;
	z->plain = plain;
}

/* The tried mode lost: wait longer before trying it again; the longest
 * wait at once when it lost by half or more (a try costs what the
 * slower mode loses over LM__ZSTD_FILL + LM__ZSTD_WIN_TRY_* bytes). */
static void zstd_lost(struct lm__zstd_pol *z)
{
	int m = z->plain; /* the mode kept */
	bool far = z->rate[m] >= 2 * z->rate[!m];
	z->wait_next = far ? LM__ZSTD_MAX_WAIT : z->wait_next ? z->wait_next * 2 : 1;
	if (z->wait_next > LM__ZSTD_MAX_WAIT)
		z->wait_next = LM__ZSTD_MAX_WAIT;
	z->wait = z->wait_next;
}

static void zstd_window_end(struct lm__zstd_pol *z)
{
	int m = z->plain;
	z->rate[m] = window_rate(z);
	if (m) {
		z->plain_windows++;
		if (z->win_wire)
			z->plain_write = z->win_write / (double)z->win_wire;
	} else {
		z->zstd_windows++;
	}
	z->win_bytes = z->win_wire = 0;
	z->win_enc = z->win_write = 0;
	z->switched = false;
	if (!z->rate[!m]) {
		/* The other mode was never measured: now. */
		set_mode(z, !m);
		z->trying = true;
		return;
	}
	/* Plain only when it is clearly faster: on a tie (a link that both
	 * fill) zstd stays ready for data that shrinks. */
	int best = z->rate[1] > z->rate[0] * 1.02;
	if (z->trying) {
		z->trying = false;
		set_mode(z, best);
		if (best != m)
			zstd_lost(z); /* the tried mode lost: back to the chosen one */
		else
			z->wait = 1; /* it won: the next window confirms it */
		return;
	}
	if (best != m) {
		/* The chosen mode measured slower than the other's last figure
		 * (a switch that did not hold up, or the link changed). */
		set_mode(z, best);
		zstd_lost(z);
		return;
	}
	if (z->wait)
		z->wait--;
	if (!z->wait) {
		set_mode(z, !m);
		z->trying = true;
	}
}

void lm__zstd_encoded(struct lm__zstd_pol *z, uint64_t raw, uint64_t wire, double seconds)
{
	if (z->plain && z->fill) {
		z->fill -= raw < z->fill ? raw : z->fill;
		return;
	}
	z->win_bytes += raw;
	z->win_wire += wire;
	z->win_enc += seconds;
	if (z->win_bytes >= zstd_window(z))
		zstd_window_end(z);
}

void lm__zstd_wrote(struct lm__zstd_pol *z, double seconds)
{
	if (z->plain && z->fill)
		return;
	z->win_write += seconds;
}

/* ---- the encoder ------------------------------------------------------------ */

int lm__lane_put(struct lm__lane *l, uint64_t p, uint32_t n, const uint8_t *host, bool zero)
{
	int err;
	if (zero) {
		err = lm_stream_put_run_empty(l->out, LM_RUN_ZERO, p, n);
		if (err)
			return err;
		if (l->use_digest)
			lm_digest_zero(l->digest, p, n);
		l->zero_pages += n;
		return 0;
	}
	double t0 = lm__now();
	size_t len = (size_t)n * LM_PAGE_SIZE;
	size_t before = l->out->len;
	if (l->use_zstd && lm__zstd_next(&l->zpol)) {
		/* Copy first: compression and digest must see the same bytes. */
		memcpy(l->scratch, host, len);
		if (l->use_digest)
			lm_digest_pages(l->digest, p, n, l->scratch);
		uint8_t used = LM_ENC_RAW;
		err = lm_stream_put_run_data(l->s, l->out, p, n, l->scratch, LM_ENC_ZSTD, &used);
		if (err)
			return err;
		lm__zstd_result(&l->zpol, len, used == LM_ENC_ZSTD ? l->out->len - before - LM_FRAME_HDR - LM_RUN_HDR : 0);
		l->zstd_runs++;
		if (used == LM_ENC_ZSTD)
			l->zstd_packed++;
	} else {
		/* A page at a time: copied, then hashed for the digest and the
		 * frame checksum while it is in cache (one pass over the run
		 * each was 2x slower here, 2026-12-07). */
		uint8_t *dst;
		size_t off;
		lm_stream_csum c;
		err = lm_stream_put_raw_begin_csum(l->s, l->out, p, n, &dst, &off, &c);
		if (err)
			return err;
		for (uint32_t k = 0; k < n; k++) {
			uint8_t *d = dst + (size_t)k * LM_PAGE_SIZE;
			memcpy(d, host + (size_t)k * LM_PAGE_SIZE, LM_PAGE_SIZE);
			lm_hash128 h;
			lm_stream_csum_page(l->s, &c, p + k, d, l->use_digest ? &h : NULL);
			if (l->use_digest)
				lm_digest_set(l->digest, p + k, h);
		}
		lm_stream_put_raw_end_csum(l->out, off, &c);
	}
	double dt = lm__now() - t0;
	l->data_pages += n;
	l->data_time += dt;
	if (l->use_zstd && !l->zstd_always)
		lm__zstd_encoded(&l->zpol, len, l->out->len - before, dt);
	return 0;
}

void lm__lane_wrote(struct lm__lane *l, double seconds)
{
	if (l->use_zstd && !l->zstd_always)
		lm__zstd_wrote(&l->zpol, seconds);
}

/* ---- sender channels -------------------------------------------------------- */

struct item {
	const uint8_t *host; /* NULL: SYNC */
	uint64_t first;	     /* page, or the SYNC's seq */
	uint32_t n;	     /* pages, or the SYNC's flags */
};

struct txc_one {
	struct lm__txc *g;
	unsigned index;
	int fd;
	pthread_t th;
	bool th_on;
	struct lm__io io;
	bool io_on;
	uint64_t rate; /* the per-channel rate io was last set to (channel thread only) */
	lm_stream s;
	lm_buf out;
	lm_digest dig; /* a view of the migration's digest */
	struct lm__lane lane;
	uint8_t *zbuf;
	/* under g->lock */
	struct item q[QUEUE_ITEMS];
	unsigned head, count;
	uint64_t queued_pages;
	uint64_t synced; /* the last SYNC seq written */
	bool done;	 /* wrote a LAST SYNC, or failed: the thread ended */
	/* counters, under g->lock */
	uint64_t data_pages, zero_pages, bytes_out;
	double busy; /* seconds spent encoding and writing since the last take */
};

struct lm__txc {
	unsigned n;
	uint32_t stripe;
	lm_digest *digest;
	int abort_fd;
	uint64_t rate; /* bytes/s per channel, 0: none (under lock; lm__txc_set_rate) */
	pthread_mutex_t lock;
	pthread_cond_t cv; /* any change: work queued, space freed, sync written, failure */
	bool failed;
	int err;
	char error[256];
	bool stop;
	struct txc_one ch[];
};

static void ch_fail(struct txc_one *c, int err, const char *fmt, ...)
{
	struct lm__txc *g = c->g;
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&g->lock);
	if (!g->failed) {
		g->failed = true;
		g->err = err;
		snprintf(g->error, sizeof(g->error), "channel %u: %s", c->index, msg);
	}
	c->done = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->lock);
	uint64_t one = 1;
	ssize_t w = write(g->abort_fd, &one, sizeof(one));
	(void)w;
}

static const char *io_why(struct txc_one *c, int err, char *buf, size_t cap)
{
	char t[32];
	if (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN)
		return "the receiver closed the connection";
	if (err == -ETIMEDOUT && c->io.stall_ms) {
		lm__fmt_ms(t, sizeof(t), c->io.stall_ms);
		snprintf(buf, cap, "the receiver read nothing for %s", t);
		return buf;
	}
	if (err == -ETIMEDOUT)
		return "the connection timed out: the receiver's host stopped acknowledging";
	snprintf(buf, cap, "connection error: %s", lm_strerror(err));
	return buf;
}

static int ch_flush(struct txc_one *c)
{
	if (!c->out.len)
		return 0;
	/* The rate limit as the migration thread set it last (the pause
	 * lifts it). */
	pthread_mutex_lock(&c->g->lock);
	uint64_t rate = c->g->rate;
	pthread_mutex_unlock(&c->g->lock);
	if (rate != c->rate) {
		lm__io_set_rate(&c->io, rate);
		c->rate = rate;
	}
	double t0 = lm__now();
	int err = lm__io_write(&c->io, c->out.data, c->out.len);
	double dt = lm__now() - t0;
	lm_buf_reset(&c->out);
	lm__lane_wrote(&c->lane, dt);
	pthread_mutex_lock(&c->g->lock);
	c->busy += dt;
	c->bytes_out = c->io.bytes_out;
	pthread_mutex_unlock(&c->g->lock);
	if (err == -ECANCELED || err == -ESHUTDOWN)
		return err; /* the migration's own cancel, or another channel's failure */
	if (err) {
		char b[96];
		ch_fail(c, err, "%s", io_why(c, err, b, sizeof(b)));
	}
	return err;
}

/* One run of dirty pages: zero and data sub-runs, encoded. */
static int ch_run(struct txc_one *c, const struct item *it)
{
	double t0 = lm__now();
	uint64_t d0 = c->lane.data_pages, z0 = c->lane.zero_pages;
	for (uint32_t j = 0; j < it->n;) {
		bool zero = lm_page_is_zero(it->host + (size_t)j * LM_PAGE_SIZE);
		uint32_t len = 1;
		while (j + len < it->n && lm_page_is_zero(it->host + (size_t)(j + len) * LM_PAGE_SIZE) == zero)
			len++;
		int err = lm__lane_put(&c->lane, it->first + j, len, it->host + (size_t)j * LM_PAGE_SIZE, zero);
		if (err) {
			ch_fail(c, err, "encoding pages [%llu, %llu) failed: %s", (unsigned long long)(it->first + j),
				(unsigned long long)(it->first + j + len), lm_strerror(err));
			return err;
		}
		j += len;
	}
	pthread_mutex_lock(&c->g->lock);
	c->data_pages += c->lane.data_pages - d0;
	c->zero_pages += c->lane.zero_pages - z0;
	c->busy += lm__now() - t0;
	pthread_mutex_unlock(&c->g->lock);
	if (c->out.len >= CH_FLUSH)
		return ch_flush(c);
	return 0;
}

static void *ch_main(void *arg)
{
	struct txc_one *c = arg;
	struct lm__txc *g = c->g;
	lm__thread_name("lm-send/%u", c->index);
	for (;;) {
		pthread_mutex_lock(&g->lock);
		while (!c->count && !g->stop && !g->failed) {
			if (c->out.len) {
				/* Nothing queued: what is encoded goes out now. */
				pthread_mutex_unlock(&g->lock);
				if (ch_flush(c))
					goto out;
				pthread_mutex_lock(&g->lock);
				continue;
			}
			pthread_cond_wait(&g->cv, &g->lock);
		}
		if (g->stop || g->failed) {
			pthread_mutex_unlock(&g->lock);
			break;
		}
		struct item it = c->q[c->head];
		pthread_mutex_unlock(&g->lock);

		int err;
		if (it.host) {
			err = ch_run(c, &it);
		} else {
			err = lm_stream_put_sync(&c->out, it.first, it.n);
			if (err)
				ch_fail(c, err, "encoding SYNC %llu failed: %s", (unsigned long long)it.first,
					lm_strerror(err));
			else
				err = ch_flush(c);
		}
		pthread_mutex_lock(&g->lock);
		c->head = (c->head + 1) % QUEUE_ITEMS;
		c->count--;
		if (it.host)
			c->queued_pages -= it.n;
		else if (!err)
			c->synced = it.first;
		if (!it.host && !err && (it.n & LM_SYNC_LAST))
			c->done = true;
		pthread_cond_broadcast(&g->cv);
		bool end = c->done;
		pthread_mutex_unlock(&g->lock);
		if (err || end)
			break;
	}
out:
	/* However it ended (LAST SYNC, failure, cancel, stop): nothing more
	 * will be taken from the queue, so nobody may wait for it. */
	pthread_mutex_lock(&g->lock);
	c->done = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int lm__txc_start(struct lm__txc **out, const int *fds, unsigned n, uint32_t stripe, const struct lm__txc_cfg *cfg)
{
	if (n == 0 || n > LM_STREAM_MAX_CHANNELS)
		return -EINVAL;
	struct lm__txc *g = calloc(1, sizeof(*g) + n * sizeof(g->ch[0]));
	if (!g)
		return -ENOMEM;
	g->n = n;
	g->stripe = stripe;
	g->digest = cfg->digest;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int err = g->abort_fd < 0 ? -errno : 0;
	for (unsigned i = 0; i < n; i++)
		g->ch[i].fd = fds[i]; /* ours from here on, whatever happens */
	for (unsigned i = 0; i < n && !err; i++) {
		struct txc_one *c = &g->ch[i];
		c->g = g;
		c->index = i;
		lm_stream_init(&c->s);
		c->s.caps = cfg->s->caps;
		c->s.layout = cfg->s->layout;
		c->s.zstd_level = cfg->s->zstd_level;
		lm_buf_init(&c->out);
		if (cfg->digest)
			lm_digest_share(&c->dig, cfg->digest);
		err = lm__io_open(&c->io, c->fd, cfg->cancel_fd);
		if (err)
			break;
		c->io_on = true;
		c->io.abort_fd = g->abort_fd;
		c->io.timeout_ms = cfg->idle_ms;
		g->rate = cfg->rate ? (cfg->rate / n ? cfg->rate / n : 1) : 0;
		if (cfg->use_zstd && !(c->zbuf = malloc((size_t)LM_STREAM_MAX_RUN_PAGES * LM_PAGE_SIZE))) {
			err = -ENOMEM;
			break;
		}
		c->lane = (struct lm__lane){.s = &c->s, .out = &c->out, .digest = &c->dig, .scratch = c->zbuf,
					    .use_digest = cfg->digest != NULL, .use_zstd = cfg->use_zstd,
					    .zstd_always = cfg->zstd_always};
		/* The channel's first frame: which migration and which channel. */
		err = lm_stream_put_channel(&c->out, i, cfg->session);
		if (!err)
			err = lm__io_write(&c->io, c->out.data, c->out.len);
		lm_buf_reset(&c->out);
		if (err) {
			char b[96];
			snprintf(g->error, sizeof(g->error), "channel %u: %s", i, io_why(c, err, b, sizeof(b)));
			g->err = err;
			g->failed = true;
			break;
		}
		err = -pthread_create(&c->th, NULL, ch_main, c);
		c->th_on = !err;
	}
	*out = g;
	return err;
}

/* Queue one run (inside one stripe) on its channel, waiting for room. */
static int txc_queue(struct lm__txc *g, struct txc_one *c, const struct item *it)
{
	pthread_mutex_lock(&g->lock);
	while (!g->failed && !c->done &&
	       (c->count == QUEUE_ITEMS || (c->queued_pages && c->queued_pages + it->n > QUEUE_PAGES)))
		pthread_cond_wait(&g->cv, &g->lock);
	/* A channel that ended without failing was cancelled (or wrote its
	 * LAST SYNC: nothing may follow). */
	int err = g->failed ? -ESHUTDOWN : c->done ? -ECANCELED : 0;
	if (!err) {
		c->q[(c->head + c->count) % QUEUE_ITEMS] = *it;
		c->count++;
		if (it->host)
			c->queued_pages += it->n;
		pthread_cond_broadcast(&g->cv);
	}
	pthread_mutex_unlock(&g->lock);
	return err;
}

int lm__txc_put(struct lm__txc *g, const uint8_t *host, uint64_t first, uint32_t n)
{
	while (n) {
		uint64_t stripe_end = (first / g->stripe + 1) * g->stripe;
		uint32_t k = stripe_end - first < n ? (uint32_t)(stripe_end - first) : n;
		struct item it = {.host = host, .first = first, .n = k};
		int err = txc_queue(g, &g->ch[lm_stream_channel_of(first, g->stripe, g->n)], &it);
		if (err)
			return err;
		host += (size_t)k * LM_PAGE_SIZE;
		first += k;
		n -= k;
	}
	return 0;
}

int lm__txc_sync(struct lm__txc *g, uint64_t seq, uint32_t flags)
{
	struct item it = {.host = NULL, .first = seq, .n = flags};
	for (unsigned i = 0; i < g->n; i++) {
		int err = txc_queue(g, &g->ch[i], &it);
		if (err)
			return err;
	}
	pthread_mutex_lock(&g->lock);
	for (;;) {
		unsigned behind = 0, gone = 0;
		for (unsigned i = 0; i < g->n; i++) {
			behind += g->ch[i].synced < seq;
			gone += g->ch[i].synced < seq && g->ch[i].done;
		}
		if (g->failed || !behind || gone)
			break;
		pthread_cond_wait(&g->cv, &g->lock);
	}
	int err = g->failed ? -ESHUTDOWN : 0;
	for (unsigned i = 0; i < g->n && !err; i++)
		if (g->ch[i].synced < seq)
			err = -ECANCELED;
	pthread_mutex_unlock(&g->lock);
	/* Every channel waits on its empty queue: their sums can be read. */
	if (!err && g->digest)
		for (unsigned i = 0; i < g->n; i++)
			lm_digest_fold(g->digest, &g->ch[i].dig);
	return err;
}

void lm__txc_take(struct lm__txc *g, struct lm__txc_stats *st)
{
	*st = (struct lm__txc_stats){0};
	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < g->n; i++) {
		struct txc_one *c = &g->ch[i];
		st->data_pages += c->data_pages;
		st->zero_pages += c->zero_pages;
		st->bytes_out += c->bytes_out;
		st->queued_pages += c->queued_pages;
		if (c->busy > st->busy_max)
			st->busy_max = c->busy;
		c->data_pages = c->zero_pages = 0;
		c->busy = 0;
	}
	pthread_mutex_unlock(&g->lock);
}

uint64_t lm__txc_bytes(struct lm__txc *g)
{
	uint64_t b = 0;
	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < g->n; i++)
		b += g->ch[i].bytes_out;
	pthread_mutex_unlock(&g->lock);
	return b;
}

int lm__txc_error(struct lm__txc *g, char *buf, size_t cap)
{
	pthread_mutex_lock(&g->lock);
	int err = g->failed ? (g->err ? g->err : -EIO) : 0;
	if (err)
		snprintf(buf, cap, "%s", g->error);
	pthread_mutex_unlock(&g->lock);
	return err;
}

void lm__txc_set_rate(struct lm__txc *g, uint64_t rate)
{
	pthread_mutex_lock(&g->lock);
	g->rate = rate ? (rate / g->n ? rate / g->n : 1) : 0;
	pthread_mutex_unlock(&g->lock);
}

int lm__txc_abort_fd(const struct lm__txc *g)
{
	return g->abort_fd;
}

void lm__txc_free(struct lm__txc *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->stop = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->lock);
	uint64_t one = 1;
	if (g->abort_fd >= 0) {
		/* Wakes a channel blocked on its socket. */
		ssize_t w = write(g->abort_fd, &one, sizeof(one));
		(void)w;
	}
	for (unsigned i = 0; i < g->n; i++) {
		struct txc_one *c = &g->ch[i];
		if (c->th_on)
			pthread_join(c->th, NULL);
		if (c->io_on)
			lm__io_close(&c->io);
		if (c->fd >= 0)
			close(c->fd); /* the channel connections are the engine's */
		lm_buf_destroy(&c->out);
		lm_stream_destroy(&c->s);
		free(c->zbuf);
	}
	if (g->abort_fd >= 0)
		close(g->abort_fd);
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->lock);
	free(g);
}
