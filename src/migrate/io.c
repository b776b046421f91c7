/*
 * Connection I/O for the engine: whole writes and exact reads on a
 * non-blocking fd, each wait a poll() that also watches the cancel eventfd,
 * with an optional idle timeout and a rate limit on writes (QEMU's
 * max-bandwidth: the sender never runs ahead of rate * elapsed bytes, and
 * time it spent not writing is not banked for a later burst).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/internal.h"

/* Rate-limited writes go out in slices of this size so the pacing is smooth. */
#define RATE_SLICE (64u << 10)

double lm__now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *lm__fmt_ms(char *buf, size_t cap, uint64_t ms)
{
	if (ms && ms % 1000 == 0)
		snprintf(buf, cap, "%llu s", (unsigned long long)(ms / 1000));
	else
		snprintf(buf, cap, "%llu ms", (unsigned long long)ms);
	return buf;
}

int lm__io_open(struct lm__io *io, int fd, int cancel_fd)
{
	*io = (struct lm__io){ .fd = fd, .cancel_fd = cancel_fd, .abort_fd = -1 };
	io->saved_flags = fcntl(fd, F_GETFL);
	if (io->saved_flags < 0)
		return -errno;
	if (fcntl(fd, F_SETFL, io->saved_flags | O_NONBLOCK) < 0)
		return -errno;
	int type;
	socklen_t len = sizeof(type);
	io->use_send = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
	return 0;
}

void lm__io_close(struct lm__io *io)
{
	if (io->fd >= 0 && io->saved_flags >= 0)
		(void)fcntl(io->fd, F_SETFL, io->saved_flags);
}

void lm__io_set_rate(struct lm__io *io, uint64_t bytes_per_sec)
{
	io->rate = bytes_per_sec;
	io->rate_t0 = lm__now();
	io->rate_b0 = io->bytes_out;
}

/* -ECANCELED (cancel fd), -ESHUTDOWN (abort fd) or 0. */
static int cancelled(const struct lm__io *io)
{
	struct pollfd p[2] = {{.fd = io->cancel_fd, .events = POLLIN}, {.fd = io->abort_fd, .events = POLLIN}};
	if (io->cancel_fd < 0 && io->abort_fd < 0)
		return 0;
	if (poll(p, 2, 0) <= 0)
		return 0;
	return p[0].revents ? -ECANCELED : -ESHUTDOWN;
}

/* Wait for `events` on the fd; 0 when ready, -ECANCELED, -ESHUTDOWN (the
 * abort fd: a sibling connection failed), -ETIMEDOUT, -errno. Negative fds
 * in the poll set are ignored. */
static int wait_fd(struct lm__io *io, short events, int timeout_ms)
{
	struct pollfd p[3] = {
		{ .fd = io->fd, .events = events },
		{ .fd = io->cancel_fd, .events = POLLIN },
		{ .fd = io->abort_fd, .events = POLLIN },
	};
	for (;;) {
		int n = poll(p, 3, timeout_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			io->stall_ms = (uint64_t)timeout_ms;
			io->stall_write = (events & POLLOUT) != 0;
			return -ETIMEDOUT;
		}
		if (io->cancel_fd >= 0 && p[1].revents)
			return -ECANCELED;
		if (io->abort_fd >= 0 && p[2].revents)
			return -ESHUTDOWN;
		return 0;
	}
}

static int idle_ms(const struct lm__io *io)
{
	return io->timeout_ms ? (int)(io->timeout_ms > 0x7fffffff ? 0x7fffffff : io->timeout_ms) : -1;
}

/* Idle time a rate-limited writer may make up at once, in seconds. */
#define RATE_CREDIT_S 0.01

/* Sleep until the rate limit allows `n` more bytes (cancellable). */
static int pace(struct lm__io *io, size_t n)
{
	if (!io->rate)
		return 0;
	double due = io->rate_t0 + (double)(io->bytes_out - io->rate_b0 + n) / (double)io->rate;
	for (;;) {
		double wait = due - lm__now();
		if (wait <= 0)
			return 0;
		if (io->cancel_fd < 0) {
			struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
			nanosleep(&ts, NULL);
			continue;
		}
		/* To the microsecond: rounding each wait up to a whole
		 * millisecond cost about a tenth of a capped link. */
		struct pollfd p = { .fd = io->cancel_fd, .events = POLLIN };
		struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
		int r = ppoll(&p, 1, &ts, NULL);
		if (r > 0)
			return -ECANCELED;
	}
}

int lm__io_write(struct lm__io *io, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	int stop = cancelled(io);
	if (stop)
		return stop;
	/*
	 * Little credit for idle time: if the writer fell behind the schedule
	 * (it was scanning, harvesting or paused), the schedule moves up so
	 * that at most RATE_CREDIT_S worth of bytes (or one slice) may go out
	 * at once, instead of letting the next megabytes out in a burst. QEMU's
	 * limiter does not carry unused budget over either (it counts per
	 * 100 ms window). The credit covers the sender's own work between two
	 * writes (encoding a batch takes about a millisecond): with only one
	 * slice of credit that time was lost every call, about a tenth of a
	 * 1 Gbit/s link. A call of B bytes still takes at least
	 * (B - credit) / rate, which keeps the sender's bandwidth estimate
	 * honest over a round.
	 */
	if (io->rate) {
		double rate = (double)io->rate;
		double behind = lm__now() - (io->rate_t0 + (double)(io->bytes_out - io->rate_b0) / rate);
		double credit = (double)RATE_SLICE / rate;
		if (credit < RATE_CREDIT_S)
			credit = RATE_CREDIT_S;
		if (behind > credit)
			io->rate_t0 += behind - credit;
	}
	/* A quarter second's worth at most, so that even a very low cap keeps
	 * bytes flowing well within the receiver's idle timeout. */
	size_t slice = RATE_SLICE;
	if (io->rate && io->rate / 4 < slice)
		slice = io->rate / 4 ? (size_t)(io->rate / 4) : 1;
	while (n) {
		size_t part = n;
		if (io->rate && part > slice)
			part = slice;
		int err = pace(io, part);
		if (err)
			return err;
		ssize_t w = io->use_send ? send(io->fd, p, part, MSG_NOSIGNAL) : write(io->fd, p, part);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				err = wait_fd(io, POLLOUT, idle_ms(io));
				if (err)
					return err;
				continue;
			}
			if (errno == ETIMEDOUT)
				io->stall_ms = 0; /* the kernel's verdict, not our timeout */
			return errno == ECONNRESET ? -EPIPE : -errno;
		}
		p += w;
		n -= (size_t)w;
		io->bytes_out += (uint64_t)w;
	}
	return 0;
}

int lm__io_read(struct lm__io *io, void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t r = read(io->fd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				int err = wait_fd(io, POLLIN, idle_ms(io));
				if (err)
					return err;
				continue;
			}
			if (errno == ETIMEDOUT)
				io->stall_ms = 0; /* the kernel's verdict, not our timeout */
			return -errno;
		}
		if (r == 0)
			return -ECONNRESET;
		p += r;
		n -= (size_t)r;
		io->bytes_in += (uint64_t)r;
	}
	return 0;
}

int lm__io_wait_input(struct lm__io *io, uint64_t ms)
{
	int err = wait_fd(io, POLLIN, (int)ms);
	if (err == -ETIMEDOUT)
		return 0;
	return err ? err : 1;
}
