/* Internal to src/migrate: connection I/O shared by the sender and receiver. */
#ifndef LIVEMIG_MIGRATE_INTERNAL_H
#define LIVEMIG_MIGRATE_INTERNAL_H

#include "livemig/migrate.h"
#include "common/testpoint.h"

/*
 * One side of a connection. The fd is switched to non-blocking for the
 * duration so that every wait is a poll() that also watches cancel_fd (an
 * eventfd, readable once cancelled) and honours the read timeout.
 */
struct lm__io {
	int fd;
	int cancel_fd;       /* -1: none */
	int abort_fd;        /* -1: none; readable: a sibling connection failed (-ESHUTDOWN) */
	int saved_flags;     /* fd's flags before lm__io_open */
	uint64_t timeout_ms; /* reads (and writes) give up after this long idle; 0: never */
	/* Why the last -ETIMEDOUT: stall_ms is the idle timeout that expired
	 * (0: the kernel timed the connection out, e.g. keepalive), and
	 * stall_write whether a write could not progress (else a read). */
	uint64_t stall_ms;
	bool stall_write;
	uint64_t bytes_out;
	uint64_t bytes_in;
	/* rate limit: bytes/s, 0 = none; measured from rate_t0 / rate_b0 */
	uint64_t rate;
	double rate_t0;
	uint64_t rate_b0;
	bool use_send; /* fd is a socket: send(MSG_NOSIGNAL), no SIGPIPE */
};

int lm__io_open(struct lm__io *io, int fd, int cancel_fd);
void lm__io_close(struct lm__io *io); /* restores the fd flags, does not close it */
/* All n bytes, or -errno: -ECANCELED, -EPIPE (peer closed), -ETIMEDOUT, ... */
int lm__io_write(struct lm__io *io, const void *p, size_t n);
/* Exactly n bytes, or -errno; end of stream is -ECONNRESET. */
int lm__io_read(struct lm__io *io, void *p, size_t n);
/* Wait up to ms for input; 1 readable, 0 not, -errno. */
int lm__io_wait_input(struct lm__io *io, uint64_t ms);
/* Change the rate limit (0: none), restarting its measurement. */
void lm__io_set_rate(struct lm__io *io, uint64_t bytes_per_sec);

double lm__now(void);
/* "10 s" for whole seconds, else "250 ms": for messages. Returns buf. */
const char *lm__fmt_ms(char *buf, size_t cap, uint64_t ms);

/*
 * Filling fresh destination memory (src/migrate/fill.c). Writing into a
 * never-touched anonymous page makes the kernel allocate it, zero it, then
 * take our copy: here the zeroing is most of the receiver's time. With
 * userfaultfd's UFFDIO_COPY the kernel allocates the page and copies our
 * bytes into it, with no zeroing and no page fault. The regions are
 * registered for missing-page faults while the stream is applied, so no
 * thread may touch an unpopulated page of them meanwhile (the receiver
 * only reads pages after placing them); lm__filler_destroy() unregisters.
 * Where userfaultfd is unavailable, the filler is off and callers write
 * into destination memory directly.
 */
struct lm__filler {
	int uffd;        /* -1: off */
	uint8_t *stage;  /* staging buffer of LM_STREAM_MAX_RUN_PAGES pages */
	lm_bitmap populated; /* pages known to be populated */
	const char *off_why; /* when off: why (a string literal) */
	int off_err;         /* and the errno, if one caused it (positive) */
};
/* Never fails: on any problem the filler is just off, and says why. */
void lm__filler_init(struct lm__filler *f, const struct lm_mem_region *mem, size_t n,
		     uint64_t end_page);
void lm__filler_destroy(struct lm__filler *f);
static inline bool lm__filler_on(const struct lm__filler *f)
{
	return f->uffd >= 0;
}
/* Put npages pages from src at dst (guest pages first..): UFFDIO_COPY where
 * the page is unpopulated, memcpy where it is. 0 or -errno. */
int lm__filler_place(struct lm__filler *f, uint64_t first, uint8_t *dst, const uint8_t *src,
		     uint32_t npages);
/*
 * Whether every page of [first, first + npages) is known populated, so a
 * thread may write them directly (a receiver reads a run straight into
 * them). May say false for a page whose placing is finishing in another
 * thread, never true for a page that is not populated. The populated
 * bits are read and set atomically: a lane asks while its placer places.
 */
bool lm__filler_present(const struct lm__filler *f, uint64_t first, uint32_t npages);

/*
 * Post-copy on the destination (src/migrate/postcopy_dst.c): the pending
 * pages, the userfaultfd over guest RAM and the fault thread that asks
 * the source for pending pages and zero-fills the rest.
 */
struct lm__pc_dst;
/* Can this process take kernel faults through userfaultfd? why if not. */
bool lm__pc_dst_possible(char *why, size_t cap);
int lm__pc_dst_new(struct lm__pc_dst **out, const struct lm_mem_region *mem, uint32_t n, uint64_t end_page);
/* A PENDING run (receiver thread, before arm). 0 or -ENOMEM. */
int lm__pc_dst_add(struct lm__pc_dst *d, uint64_t first, uint64_t n);
uint64_t lm__pc_dst_pending(const struct lm__pc_dst *d); /* distinct pages marked */
uint64_t lm__pc_dst_left(const struct lm__pc_dst *d);	  /* of them not placed yet */
/* Drop the stale copies of the pending pages, register guest RAM for
 * missing-page faults and start the fault thread, which writes PAGE_REQ
 * records on io's connection (a copy of io; the caller only reads from
 * then on). 0 or -errno with why. */
int lm__pc_dst_arm(struct lm__pc_dst *d, const struct lm__io *io, char *why, size_t cap);
/* Place n pending pages from src (NULL: zeros) at dst, guest pages first..;
 * digest them into dg (may be NULL) before anything can write them; wake
 * their waiters. -EPROTO if one is not pending (why), else 0 or -errno. */
int lm__pc_dst_place(struct lm__pc_dst *d, uint64_t first, uint8_t *dst, const uint8_t *src, uint32_t n,
		     lm_digest *dg, char *why, size_t cap);
/* Stop the fault thread: its error (-errno, why) if it failed, else 0. */
int lm__pc_dst_stop(struct lm__pc_dst *d, char *why, size_t cap);
/* Recovery (docs/stream.md 3.15): the connection is down (the fault thread
 * stops writing, faults still wait); a new one is up (requests for the
 * pages waited on go out again on it); the pending pages not placed, in
 * runs (scanning the whole map: O(guest size / 64) words). */
void lm__pc_dst_unlink(struct lm__pc_dst *d);
void lm__pc_dst_relink(struct lm__pc_dst *d, const struct lm__io *io);
int lm__pc_dst_missing(struct lm__pc_dst *d, void (*fn)(void *arg, uint64_t first, uint64_t n), void *arg);
void lm__pc_dst_stats(struct lm__pc_dst *d, struct lm_receive_stats *st);
/* Frees. With pages still missing after the guest ran (guest_ran) the
 * userfaultfd stays open (its faults never answered) for the life of the
 * process: they must never read as zeros. */
void lm__pc_dst_free(struct lm__pc_dst *d, bool guest_ran);

/*
 * Post-copy on the source (src/migrate/postcopy_src.c): what goes out next
 * after COMMIT, requested pages first, the rest in order. The caller owns
 * the pending set and the encoding.
 */
struct lm__pc_src {
	struct lm__io *io;
	lm_stream *s;
	lm_sbitmap *pending; /* pages still to send; send() takes them out */
	const struct lm_mem_region *regions;
	size_t nregions;
	uint64_t rate; /* the link's rate limit, bytes/s (0: none) */
	/* Send the pending pages of [first, first + n) (inside region r) and
	 * write them to the connection: how many were pending (>= 0), or
	 * -errno (the caller's own error message is set). */
	int64_t (*send)(void *arg, const struct lm_mem_region *r, uint64_t first, uint64_t n);
	void *arg;
	uint64_t requests, pages_requested, pages_pushed;
	char why[200]; /* the cause of a failure of this file's own */
};
/* Until no page is pending: 0, or -errno with why set (unless send failed). */
int lm__pc_src_run(struct lm__pc_src *p);


/* ---- channels and the page encoder (channel.c) ---------------------------- */

/* Compression where it pays, two pure policies in one table
 * (tests/unit/test_migrate_channels.c):
 *  - per run, does the data shrink? A run that did not shrink by an eighth
 *    makes the encoder skip the next `backoff` runs (1, 2, 4 ... up to
 *    LM__ZSTD_MAX_BACKOFF), a run that did resets it;
 *  - per window of data, is compressing faster than not on this link? The
 *    lane's busy time (encoding and writing) per raw byte is measured in
 *    each mode, in windows of LM__ZSTD_WIN_* raw bytes; the mode with the
 *    higher raw rate is kept and the other one is measured again after 1,
 *    2, 4 ... up to LM__ZSTD_MAX_WAIT windows (a switch that the next
 *    window reverses counts as a loss too). On a link that the CPU
 *    outruns (loopback) compression switches itself off; on a slow link it
 *    stays on; compress-always skips the windows (docs/cli.md).
 * A switch of mode meets the socket's and the link's buffers as the other
 * mode left them, which would bias both tries towards plain on a slow
 * link (measured at 1 Gbit/s here: a zstd try blocked behind plain data
 * still queued, 70 MB/s, against a plain try that filled empty buffers,
 * 215 MB/s; the link carries 125). So the first plain window after zstd
 * sends LM__ZSTD_FILL raw bytes unmeasured first, and the first zstd
 * window after plain is charged its own encoding time plus its wire bytes
 * at the write time per byte that plain measured, not the writes it
 * waited for. */
#define LM__ZSTD_MAX_BACKOFF 64u
#define LM__ZSTD_WIN_TRY_ZSTD (1ull << 20)  /* measuring zstd: CPU-bound, short */
#define LM__ZSTD_WIN_TRY_PLAIN (8ull << 20) /* measuring plain, after the fill */
#define LM__ZSTD_FILL (8ull << 20)	    /* a plain try's first bytes: the buffers fill */
#define LM__ZSTD_WIN (16ull << 20)	    /* the chosen mode's windows */
#define LM__ZSTD_MAX_WAIT 32u
struct lm__zstd_pol {
	unsigned skip, backoff; /* per run */
	bool plain;		/* this window sends without trying zstd */
	bool trying;		/* this window measures the mode that is not chosen */
	bool switched;		/* this window's mode differs from the last window's */
	uint64_t fill;		/* raw bytes of this plain window still unmeasured */
	uint64_t win_bytes;	/* raw data bytes in this window */
	uint64_t win_wire;	/* their encoded bytes */
	double win_enc, win_write; /* busy seconds in this window: encoding, writing */
	double rate[2];		/* raw bytes/s last measured: [0] zstd, [1] plain; 0 unknown */
	double plain_write;	/* seconds of writing per wire byte in the last plain window */
	unsigned wait, wait_next; /* chosen-mode windows before the next try */
	uint64_t plain_windows, zstd_windows;
};
bool lm__zstd_next(struct lm__zstd_pol *z); /* try compressing this run? */
void lm__zstd_result(struct lm__zstd_pol *z, size_t raw, size_t packed); /* packed 0: sent raw */
/* The lane spent `seconds` encoding `raw` bytes of page data into `wire`
 * bytes of records. */
void lm__zstd_encoded(struct lm__zstd_pol *z, uint64_t raw, uint64_t wire, double seconds);
/* The lane spent `seconds` writing its output. */
void lm__zstd_wrote(struct lm__zstd_pol *z, double seconds);

/* One connection's page encoder: its stream state, output buffer, digest
 * (or a view of it) and counters. */
struct lm__lane {
	lm_stream *s;
	lm_buf *out;
	lm_digest *digest;
	uint8_t *scratch; /* LM_STREAM_MAX_RUN_PAGES pages, with zstd */
	bool use_digest, use_zstd;
	bool zstd_always; /* compress-always: no speed windows */
	struct lm__zstd_pol zpol;
	uint64_t data_pages, zero_pages, zstd_runs, zstd_packed;
	double data_time; /* copying, hashing and encoding data runs */
};
/* Encode pages [p, p + n) at host (all zero, or all data) into l->out. */
int lm__lane_put(struct lm__lane *l, uint64_t p, uint32_t n, const uint8_t *host, bool zero);
/* The lane's output took `seconds` to write (the compression policy's clock). */
void lm__lane_wrote(struct lm__lane *l, double seconds);

/* The sender's channels (docs/stream.md 3.16). */
struct lm__txc;
struct lm__txc_cfg {
	const lm_stream *s; /* negotiated caps, layout, zstd level */
	lm_digest *digest;  /* the migration's (NULL: no digest); folded at each sync */
	bool use_zstd, zstd_always;
	uint64_t session;
	int cancel_fd;
	uint64_t idle_ms;
	uint64_t rate; /* bytes/s for all channels together, 0: none */
};
struct lm__txc_stats {
	uint64_t data_pages, zero_pages; /* encoded since the last take */
	uint64_t bytes_out;		 /* written, all along */
	uint64_t queued_pages;		 /* waiting in the queues now */
	double busy_max;		 /* the busiest channel's seconds since the last take */
};
/* Start n channels on fds (connected; owned from here on, even on failure:
 * lm__txc_free closes them), each announced with CHANNEL. *out is set even
 * on failure (free it); lm__txc_error says what failed. */
int lm__txc_start(struct lm__txc **out, const int *fds, unsigned n, uint32_t stripe,
		  const struct lm__txc_cfg *cfg);
/* Queue pages [first, first + n) at host on their channels (split at
 * stripes); waits for room. 0, -ESHUTDOWN (a channel failed), -ECANCELED. */
int lm__txc_put(struct lm__txc *g, const uint8_t *host, uint64_t first, uint32_t n);
/* SYNC seq on every channel, written; then the partial digests are folded. */
int lm__txc_sync(struct lm__txc *g, uint64_t seq, uint32_t flags);
void lm__txc_take(struct lm__txc *g, struct lm__txc_stats *st);
uint64_t lm__txc_bytes(struct lm__txc *g);
/* The first channel failure (-errno, "channel 2: ...") or 0. */
int lm__txc_error(struct lm__txc *g, char *buf, size_t cap);
int lm__txc_abort_fd(const struct lm__txc *g);
/* The rate limit for all channels together (0: none), from their next write. */
void lm__txc_set_rate(struct lm__txc *g, uint64_t rate);
void lm__txc_free(struct lm__txc *g);

#endif
