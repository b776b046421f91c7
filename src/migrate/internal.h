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

#endif
