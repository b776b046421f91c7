/*
 * Post-copy on the source (docs/stream.md 3.14): after COMMIT the guest
 * runs on the destination and the pages dirty at the switch go out from
 * the paused copy here, each once.
 *
 * Workload: one connection carries both the background push (every
 * pending page, in order, from where the last request was) and the pages
 * a vCPU on the destination waits for (PAGE_REQ). A requested page must
 * not queue behind seconds of background data, so the push keeps at most
 * QUEUE_MAX bytes unsent in the socket (SIOCOUTQ) and writes 64 pages at
 * a time (less on a rate-limited link: about 2 ms of it): a request waits
 * behind at most about QUEUE_MAX + 256 KiB, well under a millisecond on
 * loopback. Requests are read whenever input is
 * waiting, between two pushes, and served first. Measured figures are in
 * docs/bench.md (page-request latency).
 *
 * The caller owns the pending set and the encoding (send callback): this
 * file only decides what goes next.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

#include "migrate/internal.h"

/* Bytes the background push leaves unsent in the socket at most, and how
 * long it waits for them to drain (listening for requests meanwhile): a
 * full queue drains in about 130 us at 2 GB/s, and poll()'s millisecond
 * would cap the push at 256 MB/s (measured: 106 MB/s). */
#define QUEUE_MAX (256u << 10)
#define DRAIN_WAIT_NS 50000
/* Pages per background step; with a rate limit, at most what the link
 * carries in PUSH_STEP_S, since a request waits for the step in progress
 * (64 pages at 8 MB/s would be 32 ms). */
#define PUSH_PAGES 64u
#define PUSH_STEP_S 0.002

static int pfail(struct lm__pc_src *p, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int pfail(struct lm__pc_src *p, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->why, sizeof(p->why), fmt, ap);
	va_end(ap);
	return err;
}

/* Bytes written to the socket that the peer has not taken yet (0 when
 * the fd cannot tell: then the push is not held back). */
static uint64_t queued(int fd)
{
	int v = 0;
	return ioctl(fd, SIOCOUTQ, &v) == 0 && v > 0 ? (uint64_t)v : 0;
}

static const struct lm_mem_region *region_of(const struct lm__pc_src *p, uint64_t page)
{
	for (size_t i = 0; i < p->nregions; i++)
		if (page >= p->regions[i].first_page && page - p->regions[i].first_page < p->regions[i].npages)
			return &p->regions[i];
	return NULL;
}

/* One frame from the destination: a page request, served at once. */
static int request(struct lm__pc_src *p, uint64_t *cursor)
{
	uint8_t hdr[LM_FRAME_HDR], pl[LM_FRAME_HDR + LM_STREAM_MAX_TEXT + 16];
	lm_frame f;
	lm_record rec;
	lm_stream_err e = {0};
	int err = lm__io_read(p->io, hdr, sizeof(hdr));
	if (err)
		return pfail(p, err, "reading the destination's page requests: %s", lm_strerror(err));
	err = lm_stream_frame_parse(p->s, hdr, sizeof(hdr), &f, &e);
	if (err)
		return pfail(p, err, "bad frame from the destination: %s", e.msg);
	if ((f.type != LM_REC_PAGE_REQ && f.type != LM_REC_RESULT) || f.payload_len > sizeof(pl))
		return pfail(p, -EPROTO, "the destination sent %s in post-copy", lm_stream_type_name(f.type));
	err = lm__io_read(p->io, pl, f.payload_len);
	if (!err)
		err = lm_stream_decode_payload(p->s, &f, pl, f.payload_len, &rec, &e);
	if (err)
		return pfail(p, err, "bad %s from the destination: %s", lm_stream_type_name(f.type),
			     e.msg[0] ? e.msg : lm_strerror(err));
	if (f.type == LM_REC_RESULT)
		return pfail(p, rec.u.status.code > 0 ? -rec.u.status.code : -EPROTO,
			     "the destination failed in post-copy: %s", rec.u.status.text);
	p->requests++;
	const struct lm_mem_region *r = region_of(p, rec.u.page_req.first_page);
	if (!r) /* the decoder checked the layout; the regions are the layout */
		return pfail(p, -ERANGE, "page request outside guest RAM");
	int64_t n = p->send(p->arg, r, rec.u.page_req.first_page, rec.u.page_req.npages);
	if (n < 0)
		return (int)n;
	p->pages_requested += (uint64_t)n;
	/* Go on from there: the pages around a fault are likely next. */
	*cursor = rec.u.page_req.first_page + rec.u.page_req.npages;
	return 0;
}

int lm__pc_src_run(struct lm__pc_src *p)
{
	uint64_t cursor = p->nregions ? p->regions[0].first_page : 0;
	uint64_t end = p->nregions ? p->regions[p->nregions - 1].first_page + p->regions[p->nregions - 1].npages : 0;
	uint64_t step = PUSH_PAGES;
	if (p->rate) {
		double fit = (double)p->rate * PUSH_STEP_S / LM_PAGE_SIZE;
		step = fit < 1 ? 1 : fit < PUSH_PAGES ? (uint64_t)fit : PUSH_PAGES;
	}
	/* A receiver that stops reading leaves the queue full: that is a
	 * stall like any other write's, bounded by the idle timeout. */
	uint64_t last_q = 0;
	double last_move = lm__now();
	while (lm_sbitmap_count(p->pending)) {
		int w;
		while ((w = lm__io_wait_input(p->io, 0)) == 1) {
			int err = request(p, &cursor);
			if (err)
				return err;
		}
		if (w < 0)
			return pfail(p, w, "waiting for the destination's page requests: %s", lm_strerror(w));
		if (!lm_sbitmap_count(p->pending))
			break;
		uint64_t q = queued(p->io->fd);
		if (q != last_q) {
			last_q = q;
			last_move = lm__now();
		}
		if (q > QUEUE_MAX) {
			if (p->io->timeout_ms && lm__now() - last_move > (double)p->io->timeout_ms / 1000) {
				p->io->stall_ms = p->io->timeout_ms;
				p->io->stall_write = true;
				return pfail(p, -ETIMEDOUT, "the destination read nothing for %llu ms in post-copy",
					     (unsigned long long)p->io->timeout_ms);
			}
			/* Let the queue drain; a request wakes us at once. */
			struct pollfd pf = {.fd = p->io->fd, .events = POLLIN};
			struct timespec ts = {0, DRAIN_WAIT_NS};
			if (ppoll(&pf, 1, &ts, NULL) < 0 && errno != EINTR)
				return pfail(p, -errno, "waiting for the destination's page requests: %s",
					     lm_strerror(-errno));
			continue;
		}
		uint64_t next = lm_sbitmap_find_next_set(p->pending, cursor);
		if (next >= end)
			next = lm_sbitmap_find_next_set(p->pending, 0);
		const struct lm_mem_region *r = region_of(p, next);
		if (!r)
			return pfail(p, -EINVAL, "a pending page outside guest RAM");
		uint64_t rend = r->first_page + r->npages;
		uint64_t n = rend - next < step ? rend - next : step;
		int64_t k = p->send(p->arg, r, next, n);
		if (k < 0)
			return (int)k;
		p->pages_pushed += (uint64_t)k;
		cursor = next + n;
	}
	return 0;
}
