/* Internal to src/migrate: connection I/O shared by the sender and receiver. */
#ifndef LIVEMIG_MIGRATE_INTERNAL_H
#define LIVEMIG_MIGRATE_INTERNAL_H

#include "livemig/migrate.h"

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

#endif
