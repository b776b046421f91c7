/*
 * Raw socket baselines for `livemig bench migrate --baselines` (issue 14):
 * the same bytes livemig moves, over one connection of the same kind (TCP
 * loopback or a UNIX socket), with nothing but the copy: the sender writes
 * the populated source memory in 1 MiB writes, the receiver reads them
 *
 *   discard  into one 1 MiB buffer, over and over (the socket alone);
 *   fresh    into fresh anonymous memory that a helper thread makes present
 *            with MADV_POPULATE_WRITE a few MiB ahead of the reader (the
 *            fastest way this host allows to get fresh memory: the first
 *            write to a fresh page costs ~3.5 us here, DESIGN.md);
 *   reused   into memory that was written before the timed transfer.
 *
 * bench migrate compares livemig's rate with the baseline into memory of
 * the kind its destination had (--dest-memory fresh or reused: /same).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"
#include "livemig/migrate.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define CHUNK (1u << 20)
/* How far ahead of the reader the helper populates. */
#define AHEAD (8u << 20)

const char *const lm_bench_raw_names[LM_BENCH_RAW_N] = {"discard", "fresh", "reused"};

struct raw_tx {
	int fd;
	const uint8_t *src;
	size_t len;
	int err;
};

static void *tx_main(void *arg)
{
	struct raw_tx *t = arg;
	for (size_t off = 0; off < t->len;) {
		size_t n = t->len - off < CHUNK ? t->len - off : CHUNK;
		ssize_t w = write(t->fd, t->src + off, n);
		if (w < 0) {
			t->err = -errno;
			return NULL;
		}
		off += (size_t)w;
	}
	return NULL;
}

/* The populate-ahead helper: keeps `done` up to AHEAD past the reader. */
struct ahead {
	uint8_t *mem;
	size_t len;
	size_t done; /* populated up to here (atomic) */
	size_t read; /* the reader is here (atomic) */
	int stop;
};

static void *ahead_main(void *arg)
{
	struct ahead *a = arg;
	while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
		size_t done = __atomic_load_n(&a->done, __ATOMIC_ACQUIRE);
		if (done >= a->len)
			break;
		if (done > __atomic_load_n(&a->read, __ATOMIC_ACQUIRE) + AHEAD) {
			usleep(20);
			continue;
		}
		size_t n = a->len - done < CHUNK ? a->len - done : CHUNK;
		if (madvise(a->mem + done, n, MADV_POPULATE_WRITE) < 0)
			memset(a->mem + done, 0, n); /* an older kernel: touch it */
		__atomic_store_n(&a->done, done + n, __ATOMIC_RELEASE);
	}
	return NULL;
}

static int connect_pair(bool unix_sock, int *tx, int *rx, char *why, size_t cap)
{
	struct lm_uri u;
	char path[108];
	if (unix_sock) {
		snprintf(path, sizeof(path), "unix:/tmp/lm-bench-raw-%d.sock", (int)getpid());
		lm_uri_parse(path, &u);
		unlink(u.path);
	} else {
		lm_uri_parse("tcp:127.0.0.1:0", &u);
	}
	int lfd = lm_transport_listen(&u);
	if (lfd < 0) {
		snprintf(why, cap, "listen: %s", lm_strerror(lfd));
		return lfd;
	}
	if (!unix_sock)
		snprintf(u.port, sizeof(u.port), "%d", lm_transport_local_port(lfd));
	*tx = lm_transport_connect(&u);
	*rx = *tx >= 0 ? lm_transport_accept(lfd, 10000) : -1;
	close(lfd);
	if (unix_sock)
		unlink(u.path);
	if (*tx < 0 || *rx < 0) {
		int err = *tx < 0 ? *tx : *rx;
		snprintf(why, cap, "connect: %s", lm_strerror(err));
		if (*tx >= 0)
			close(*tx);
		return err;
	}
	return 0;
}

int lm_bench_raw(const void *src, size_t len, bool unix_sock, enum lm_bench_raw_dest dest, double *gbps,
		 char *why, size_t cap)
{
	int tx, rx, err = connect_pair(unix_sock, &tx, &rx, why, cap);
	if (err)
		return err;
	uint8_t *mem = NULL;
	size_t mlen = dest == LM_BENCH_RAW_DISCARD ? CHUNK : len;
	mem = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		close(tx);
		close(rx);
		snprintf(why, cap, "cannot map %zu MiB", mlen >> 20);
		return -ENOMEM;
	}
	if (dest != LM_BENCH_RAW_FRESH)
		memset(mem, 1, mlen); /* present before the clock starts */
	struct ahead a = {.mem = mem, .len = len};
	pthread_t ath, tth;
	bool ath_on = false;
	struct raw_tx t = {.fd = tx, .src = src, .len = len};
	double t0 = bench_now();
	if (dest == LM_BENCH_RAW_FRESH)
		ath_on = pthread_create(&ath, NULL, ahead_main, &a) == 0;
	if (pthread_create(&tth, NULL, tx_main, &t)) {
		err = -EAGAIN;
		goto out;
	}
	for (size_t off = 0; off < len && !err;) {
		size_t n = len - off < CHUNK ? len - off : CHUNK;
		uint8_t *dst = dest == LM_BENCH_RAW_DISCARD ? mem : mem + off;
		ssize_t r = read(rx, dst, n);
		if (r <= 0)
			err = r < 0 ? -errno : -ECONNRESET;
		else
			off += (size_t)r;
		__atomic_store_n(&a.read, off, __ATOMIC_RELEASE);
	}
	pthread_join(tth, NULL);
	*gbps = (double)len / (bench_now() - t0) / 1e9;
	if (!err && t.err)
		err = t.err;
	if (err)
		snprintf(why, cap, "transfer: %s", lm_strerror(err));
out:
	__atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
	if (ath_on)
		pthread_join(ath, NULL);
	munmap(mem, mlen);
	close(tx);
	close(rx);
	return err;
}
