/* Migration test helpers (see mig_helpers.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mig_helpers.h"
#include "dirty_check.h"

void *lm_test_map(uint64_t pages)
{
	void *p = mmap(NULL, pages * LM_PAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void nap_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

static void *writer_main(void *arg)
{
	struct lm_test_writer *w = arg;
	uint64_t rs = w->seed | 1;
	double t0 = now();
	uint64_t done = 0;
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(&w->pause_req, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&w->paused, 1, __ATOMIC_RELEASE);
			while (__atomic_load_n(&w->pause_req, __ATOMIC_ACQUIRE) &&
			       !__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
				nap_us(100);
			__atomic_store_n(&w->paused, 0, __ATOMIC_RELEASE);
			t0 = now();
			done = 0;
			continue;
		}
		if (w->bytes_per_sec) {
			double due = t0 + (double)(done * LM_PAGE_SIZE) / (double)w->bytes_per_sec;
			double d = due - now();
			if (d > 0) {
				nap_us((long)(d * 1e6) + 1);
				continue;
			}
		}
		const struct lm_mem_region *r = &w->regions[lm_test_rand(&rs) % w->n];
		uint64_t page = lm_test_rand(&rs) % r->npages;
		uint64_t *p = (uint64_t *)((uint8_t *)r->host + page * LM_PAGE_SIZE);
		/* Content you can check: page index, a sequence number, noise. */
		uint64_t seq = __atomic_load_n(&w->writes, __ATOMIC_RELAXED) + 1;
		__atomic_store_n(&p[0], r->first_page + page, __ATOMIC_RELAXED);
		__atomic_store_n(&p[1 + seq % 500], lm_test_rand(&rs) | 1, __ATOMIC_RELAXED);
		__atomic_store_n(&p[511], seq, __ATOMIC_RELAXED);
		if (w->mark)
			lm_sim_mark(w->mark, r->first_page + page);
		__atomic_store_n(&w->writes, seq, __ATOMIC_RELAXED);
		done++;
	}
	return NULL;
}

int lm_test_writer_start(struct lm_test_writer *w)
{
	w->stop = w->pause_req = w->paused = 0;
	return pthread_create(&w->th, NULL, writer_main, w) ? -EAGAIN : 0;
}

void lm_test_writer_stop(struct lm_test_writer *w)
{
	__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
	pthread_join(w->th, NULL);
}

uint64_t lm_test_writer_count(struct lm_test_writer *w)
{
	return __atomic_load_n(&w->writes, __ATOMIC_RELAXED);
}

static int writer_pause(void *ctx)
{
	struct lm_test_writer *w = ctx;
	__atomic_store_n(&w->pause_req, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&w->paused, __ATOMIC_ACQUIRE))
		nap_us(50);
	w->pauses++;
	return 0;
}

static int writer_resume(void *ctx)
{
	struct lm_test_writer *w = ctx;
	__atomic_store_n(&w->pause_req, 0, __ATOMIC_RELEASE);
	w->resumes++;
	return 0;
}

static int writer_save(void *ctx, lm_state_writer *sw)
{
	struct lm_test_writer *w = ctx;
	uint64_t blob[2] = { lm_test_writer_count(w), 0x1234 };
	w->save_state_calls++;
	return lm_state_put(sw, "test.writer", blob, sizeof(blob));
}

const struct lm_workload_ops lm_test_writer_ops = {
	.pause = writer_pause,
	.resume = writer_resume,
	.save_state = writer_save,
};

static int dest_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct lm_test_dest *d = ctx;
	if (d->setup_delay_ms)
		usleep(d->setup_delay_ms * 1000u);
	if (l->nregions > 8)
		return -E2BIG;
	for (uint32_t i = 0; i < l->nregions; i++) {
		out[i].host = lm_test_map(out[i].npages);
		if (!out[i].host)
			return -ENOMEM;
		d->r[i] = out[i];
		d->n = i + 1;
	}
	return 0;
}

static int dest_load(void *ctx, const char *name, const void *blob, size_t len)
{
	(void)ctx;
	return strcmp(name, "test.writer") == 0 && len == 16 ? 0 : -EINVAL;
}

void lm_test_dest_compare_with(struct lm_test_dest *d, const struct lm_mem_region *src, size_t n)
{
	d->compare = src;
	d->compare_n = n;
	d->mismatch = UINT64_MAX;
}

/* Pages of d that differ from d->compare (regions matched by index). */
static uint64_t dest_mismatch(const struct lm_test_dest *d)
{
	if (d->n != d->compare_n)
		return UINT64_MAX;
	uint64_t bad = 0;
	for (size_t i = 0; i < d->n; i++) {
		if (d->r[i].npages != d->compare[i].npages)
			return UINT64_MAX;
		for (uint64_t p = 0; p < d->r[i].npages; p++)
			if (memcmp((const uint8_t *)d->r[i].host + p * LM_PAGE_SIZE,
				   (const uint8_t *)d->compare[i].host + p * LM_PAGE_SIZE, LM_PAGE_SIZE))
				bad++;
	}
	return bad;
}

static void dest_finish(void *ctx, int err, const char *msg)
{
	struct lm_test_dest *d = ctx;
	d->finish_calls++;
	d->finish_err = err;
	snprintf(d->finish_msg, sizeof(d->finish_msg), "%s", msg);
	if (d->compare && err == 0)
		d->mismatch = dest_mismatch(d);
	if (d->on_finish)
		d->on_finish(d, err);
}

static int dest_prepare(void *ctx)
{
	struct lm_test_dest *d = ctx;
	d->prepares++;
	if (d->on_prepare && !d->prepare_err)
		d->on_prepare(d);
	return d->prepare_err;
}

static int dest_postcopy_start(void *ctx)
{
	struct lm_test_dest *d = ctx;
	d->postcopy_starts++;
	return d->on_postcopy ? d->on_postcopy(d) : 0;
}

const struct lm_workload_ops lm_test_dest_ops = {
	.setup = dest_setup,
	.prepare = dest_prepare,
	.load_state = dest_load,
	.finish = dest_finish,
	.postcopy_start = dest_postcopy_start,
};

void lm_test_dest_free(struct lm_test_dest *d)
{
	for (size_t i = 0; i < d->n; i++)
		munmap(d->r[i].host, d->r[i].npages * LM_PAGE_SIZE);
	d->n = 0;
}

static void *receiver_main(void *arg)
{
	struct lm_test_receiver *r = arg;
	r->result = lm_migrate_receive(r->fd, &r->p, &lm_test_dest_ops, &r->dest, &r->st);
	/* As a receiver process exiting would: the sender sees the close. */
	shutdown(r->fd, SHUT_RDWR);
	return NULL;
}

int lm_test_receiver_start(struct lm_test_receiver *r, int fd)
{
	r->fd = fd;
	return pthread_create(&r->th, NULL, receiver_main, r) ? -EAGAIN : 0;
}

int lm_test_receiver_join(struct lm_test_receiver *r)
{
	pthread_join(r->th, NULL);
	return r->result;
}

int lm_test_receiver_join_after(struct lm_test_receiver *r, int sender_fd, int send_err)
{
	if (send_err)
		shutdown(sender_fd, SHUT_RDWR);
	return lm_test_receiver_join(r);
}

/* ---- channel connections handed over through a pipe ---- */

int lm_test_fd_pipe_accept(int rfd, int timeout_ms)
{
	struct pollfd p = {.fd = rfd, .events = POLLIN};
	if (poll(&p, 1, timeout_ms) <= 0)
		return -ETIMEDOUT;
	int fd;
	return read(rfd, &fd, sizeof(fd)) == sizeof(fd) ? fd : -EIO;
}

void lm_test_fd_pipe_drain(int rfd)
{
	int fd;
	struct pollfd p = {.fd = rfd, .events = POLLIN};
	while (poll(&p, 1, 0) > 0 && read(rfd, &fd, sizeof(fd)) == sizeof(fd))
		close(fd);
}

/* ---- proxy ---- */

static void proxy_cut(struct lm_test_proxy *p)
{
	if (p->cut)
		return;
	p->cut = true;
	if (p->mode != LM_CUT_RECEIVER)
		shutdown(p->a, SHUT_RDWR);
	if (p->mode != LM_CUT_SENDER)
		shutdown(p->b, SHUT_RDWR);
}

/* Forward up to the cut point; returns false when this direction is done. */
static bool pump(struct lm_test_proxy *p, int from, int to, uint64_t *count, uint64_t cut_at)
{
	uint8_t buf[65536];
	ssize_t n = read(from, buf, sizeof(buf));
	if (n <= 0)
		return false;
	size_t give = (size_t)n;
	if (*count + give > cut_at)
		give = (size_t)(cut_at - *count);
	size_t off = 0;
	while (off < give) {
		ssize_t w = send(to, buf + off, give - off, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		off += (size_t)w;
	}
	*count += give;
	if (*count >= cut_at) {
		proxy_cut(p);
		return false;
	}
	return true;
}

static void *proxy_main(void *arg)
{
	struct lm_test_proxy *p = arg;
	bool fwd_open = true, back_open = true;
	while ((fwd_open || back_open) && !p->cut) {
		struct pollfd pf[2] = { { .fd = fwd_open ? p->a : -1, .events = POLLIN },
					{ .fd = back_open ? p->b : -1, .events = POLLIN } };
		if (poll(pf, 2, 10000) <= 0)
			break;
		if (pf[0].revents && !pump(p, p->a, p->b, &p->fwd, p->cut_fwd)) {
			fwd_open = false;
			shutdown(p->b, SHUT_WR);
		}
		if (pf[1].revents && !pump(p, p->b, p->a, &p->back, p->cut_back)) {
			back_open = false;
			shutdown(p->a, SHUT_WR);
		}
	}
	/* Whatever happened, the sides learn it: the proxy ends are closed. */
	close(p->a);
	close(p->b);
	return NULL;
}

int lm_test_proxy_start(struct lm_test_proxy *p, int *sender_fd, int *receiver_fd)
{
	int s1[2], s2[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s1) < 0)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s2) < 0) {
		close(s1[0]);
		close(s1[1]);
		return -errno;
	}
	*sender_fd = s1[0];
	p->a = s1[1];
	*receiver_fd = s2[0];
	p->b = s2[1];
	p->fwd = p->back = 0;
	p->cut = false;
	if (pthread_create(&p->th, NULL, proxy_main, p))
		return -EAGAIN;
	return 0;
}

void lm_test_proxy_join(struct lm_test_proxy *p)
{
	pthread_join(p->th, NULL);
}
