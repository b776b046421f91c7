/*
 * Post-copy on the destination (docs/stream.md 3.14).
 *
 * Workload: the guest runs here while the pages that were dirty at the
 * pause arrive, from a few thousand to a few hundred thousand of them, in
 * runs: most pushed in order by the source, some asked for because a vCPU
 * or the VMM touched them first. Two threads share the state. The receiver
 * thread places arriving pages; the fault thread answers userfaultfd
 * missing-page faults over all guest RAM: a pending page is asked for
 * (PAGE_REQ) and its faulting thread waits until the page is placed; any
 * other missing page was never written on either side and is filled with
 * zeros at once.
 *
 * The pending map is one bit per page in plain 64-bit words, read and
 * cleared atomically, mapped with MAP_NORESERVE so that a 1 TiB guest's
 * 32 MiB of words cost memory only where pages are pending. A page's bit
 * is cleared only after its UFFDIO_COPY has returned, so a fault thread
 * that reads it clear finds the page present (UFFDIO_ZEROPAGE fails with
 * EEXIST, and it only wakes the waiter): a page is never placed twice and
 * never zero-filled in front of its data. Pages are placed without waking
 * their waiters, hashed for the digest, and only then woken, so the
 * digest sees exactly what arrived, before the guest can change it.
 *
 * Outstanding requests (asked for, not yet placed) sit in a small table
 * under a mutex, for the request latency and the blocktime.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "common/thread.h"
#include "migrate/internal.h"

/* Requests outstanding at once that are timed (more are still served). */
#define OUTSTANDING_MAX 1024
/* Fault messages read per read(). */
#define MSGS 32

struct outstanding {
	uint64_t page;
	double t;	  /* when it was asked for */
	unsigned waiters; /* faults on it since */
};

struct lm__pc_dst {
	const struct lm_mem_region *mem;
	uint32_t nmem;
	uint64_t end_page;
	uint64_t *pending; /* bit per page; atomic loads and and-nots */
	size_t pending_len;
	uint64_t npending; /* distinct pages marked */
	uint64_t left;	   /* pending pages not placed yet (receiver thread) */
	lm_stream_region *runs; /* the PENDING runs as they came, for the discard */
	size_t nruns, capruns;
	int uffd;
	bool armed;
	/* the fault thread */
	struct lm__io io; /* the connection's writing side, for PAGE_REQ only (under wlock) */
	pthread_mutex_t wlock;
	bool link_up; /* under wlock: false while the connection is broken (3.15) */
	int stop_fd;
	pthread_t thread;
	bool thread_on;
	int thread_err;
	char thread_why[160];
	lm_bitmap asked;  /* pages asked for (fault thread only) */
	lm_bitmap placed; /* pending pages placed (receiver thread only) */
	bool asked_ok;
	double t_start;
	/* under lock */
	pthread_mutex_t lock;
	struct outstanding out[OUTSTANDING_MAX];
	unsigned nout;
	uint64_t requests, zero_faults, faults;
	double blocktime;
	uint32_t *lat_us;
	size_t nlat, caplat;
};

bool lm__pc_dst_possible(char *why, size_t cap)
{
	/* Kernel faults (a vCPU inside KVM_RUN) must wait too: no
	 * UFFD_USER_MODE_ONLY. That needs privilege unless the sysctl
	 * vm.unprivileged_userfaultfd allows it. */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		snprintf(why, cap, "userfaultfd for kernel faults is not available here: %s%s", strerror(errno),
			 errno == EPERM ? " (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd = 1)" : "");
		return false;
	}
	struct uffdio_api api = {.api = UFFD_API};
	bool ok = ioctl(fd, UFFDIO_API, &api) == 0 && (api.ioctls & (1ull << _UFFDIO_REGISTER));
	if (!ok)
		snprintf(why, cap, "userfaultfd refused UFFDIO_API: %s", strerror(errno));
	close(fd);
	return ok;
}

int lm__pc_dst_new(struct lm__pc_dst **out, const struct lm_mem_region *mem, uint32_t n, uint64_t end_page)
{
	struct lm__pc_dst *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->mem = mem;
	d->nmem = n;
	d->end_page = end_page;
	d->uffd = -1;
	d->stop_fd = -1;
	d->pending_len = ((end_page + 63) / 64) * sizeof(uint64_t);
	void *p = mmap(NULL, d->pending_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (p == MAP_FAILED) {
		free(d);
		return -ENOMEM;
	}
	d->pending = p;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->wlock, NULL);
	*out = d;
	return 0;
}

static bool is_pending(const struct lm__pc_dst *d, uint64_t p)
{
	return (__atomic_load_n(&d->pending[p >> 6], __ATOMIC_ACQUIRE) >> (p & 63)) & 1;
}

int lm__pc_dst_add(struct lm__pc_dst *d, uint64_t first, uint64_t n)
{
	if (d->nruns == d->capruns) {
		size_t c = d->capruns ? d->capruns * 2 : 256;
		lm_stream_region *r = realloc(d->runs, c * sizeof(*r));
		if (!r)
			return -ENOMEM;
		d->runs = r;
		d->capruns = c;
	}
	d->runs[d->nruns++] = (lm_stream_region){first, n};
	for (uint64_t p = first; p < first + n; p++) {
		uint64_t bit = 1ull << (p & 63);
		if (!(d->pending[p >> 6] & bit)) {
			d->pending[p >> 6] |= bit;
			d->npending++;
		}
	}
	d->left = d->npending;
	return 0;
}

uint64_t lm__pc_dst_pending(const struct lm__pc_dst *d)
{
	return d->npending;
}

uint64_t lm__pc_dst_left(const struct lm__pc_dst *d)
{
	return d->left;
}

/* The host address of guest page p, or NULL outside the regions. */
static uint8_t *host_of(const struct lm__pc_dst *d, uint64_t p)
{
	for (uint32_t i = 0; i < d->nmem; i++)
		if (p >= d->mem[i].first_page && p - d->mem[i].first_page < d->mem[i].npages)
			return (uint8_t *)d->mem[i].host + (p - d->mem[i].first_page) * LM_PAGE_SIZE;
	return NULL;
}

/* The guest page at host address a, or UINT64_MAX. */
static uint64_t page_of(const struct lm__pc_dst *d, uint64_t a)
{
	for (uint32_t i = 0; i < d->nmem; i++) {
		uint64_t base = (uint64_t)(uintptr_t)d->mem[i].host;
		if (a >= base && (a - base) / LM_PAGE_SIZE < d->mem[i].npages)
			return d->mem[i].first_page + (a - base) / LM_PAGE_SIZE;
	}
	return UINT64_MAX;
}

static void wake(struct lm__pc_dst *d, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = {addr, len};
	(void)ioctl(d->uffd, UFFDIO_WAKE, &r);
}

/*
 * PAGE_REQ for page p. A connection that is down (or goes down now) is
 * not this thread's to handle: the receiver reconnects, and relink() asks
 * again for every page still waited on.
 */
static void ask_page(struct lm__pc_dst *d, uint64_t p)
{
	uint8_t mem[LM_FRAME_HDR + 16];
	lm_buf b;
	lm_buf_init_fixed(&b, mem, sizeof(mem));
	if (lm_stream_put_page_req(&b, p, 1))
		return;
	pthread_mutex_lock(&d->wlock);
	if (d->link_up && lm__io_write(&d->io, b.data, b.len) < 0)
		d->link_up = false;
	pthread_mutex_unlock(&d->wlock);
}

/* A fault on page p at host address a (page aligned). 0 or -errno. */
static int fault(struct lm__pc_dst *d, uint64_t p, uint64_t a)
{
	if (p != UINT64_MAX && is_pending(d, p)) {
		double now = lm__now();
		pthread_mutex_lock(&d->lock);
		d->faults++;
		unsigned k;
		for (k = 0; k < d->nout && d->out[k].page != p; k++)
			;
		if (k < d->nout) {
			d->out[k].waiters++;
		} else if (d->nout < OUTSTANDING_MAX) {
			d->out[d->nout++] = (struct outstanding){p, now, 1};
		}
		/* Placed meanwhile (the bit is cleared after the copy, under
		 * this lock's protection of the table): nothing to wait for. */
		if (!is_pending(d, p)) {
			for (k = 0; k < d->nout && d->out[k].page != p; k++)
				;
			if (k < d->nout)
				d->out[k] = d->out[--d->nout];
			pthread_mutex_unlock(&d->lock);
			wake(d, a, LM_PAGE_SIZE);
			return 0;
		}
		bool ask = !lm_bitmap_test(&d->asked, p);
		if (ask)
			d->requests++;
		pthread_mutex_unlock(&d->lock);
		if (!ask)
			return 0; /* on its way */
		lm_bitmap_set(&d->asked, p);
		ask_page(d, p);
		return 0;
	}
	/* Not pending: never written on either side (or placed just now). */
	struct uffdio_zeropage z = {.range = {a, LM_PAGE_SIZE}};
	if (ioctl(d->uffd, UFFDIO_ZEROPAGE, &z) == 0) {
		pthread_mutex_lock(&d->lock);
		d->zero_faults++;
		pthread_mutex_unlock(&d->lock);
		return 0;
	}
	if (errno == EEXIST || errno == EAGAIN) {
		wake(d, a, LM_PAGE_SIZE);
		return 0;
	}
	int err = -errno;
	snprintf(d->thread_why, sizeof(d->thread_why), "could not fill page %#llx with zeros: %s",
		 (unsigned long long)a, lm_strerror(err));
	return err;
}

static void *fault_main(void *arg)
{
	struct lm__pc_dst *d = arg;
	struct uffd_msg msg[MSGS];
	lm__thread_name("lm-pc-fault");
	for (;;) {
		struct pollfd pf[2] = {{.fd = d->uffd, .events = POLLIN}, {.fd = d->stop_fd, .events = POLLIN}};
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			d->thread_err = -errno;
			snprintf(d->thread_why, sizeof(d->thread_why), "poll: %s", strerror(errno));
			break;
		}
		if (pf[1].revents)
			break;
		ssize_t k = read(d->uffd, msg, sizeof(msg));
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (k < 0) {
			d->thread_err = -errno;
			snprintf(d->thread_why, sizeof(d->thread_why), "reading userfaultfd: %s", strerror(errno));
			break;
		}
		int err = 0;
		for (size_t i = 0; i < (size_t)k / sizeof(msg[0]) && !err; i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t a = msg[i].arg.pagefault.address & ~(uint64_t)(LM_PAGE_SIZE - 1);
			err = fault(d, page_of(d, a), a);
		}
		if (err) {
			d->thread_err = err;
			break;
		}
	}
	return NULL;
}

/*
 * Drop the stale copies of the pending pages, so that they read as missing.
 * This is in the pause, and the runs are often single pages (a hot set's
 * random writes): one madvise() each costs 1.4-1.8 us here, one
 * process_madvise() call per 1024 runs 0.39 us a run (45k runs: 63 ms
 * against 17.5 ms, measured 2026-12-02). The latter where the kernel has
 * it (MADV_DONTNEED there needs 6.13 or so), madvise() otherwise.
 */
static int discard(struct lm__pc_dst *d, char *why, size_t cap)
{
	struct iovec iov[1024];
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	size_t i = 0;
	while (i < d->nruns) {
		size_t n = 0, first = i;
		uint64_t bytes = 0;
		for (; i < d->nruns && n < sizeof(iov) / sizeof(iov[0]); i++) {
			uint8_t *h = host_of(d, d->runs[i].first_page);
			if (!h)
				continue;
			iov[n++] = (struct iovec){h, d->runs[i].npages * LM_PAGE_SIZE};
			bytes += d->runs[i].npages * LM_PAGE_SIZE;
		}
		long r = pidfd >= 0 ? syscall(SYS_process_madvise, pidfd, iov, n, MADV_DONTNEED, 0) : -1;
		if (r >= 0 && (uint64_t)r == bytes)
			continue;
		for (size_t k = 0; k < n; k++) {
			/* Not supported, or stopped short: each run on its own
			 * (dropping a page twice is harmless). */
			if (madvise(iov[k].iov_base, iov[k].iov_len, MADV_DONTNEED) < 0) {
				int err = -errno;
				snprintf(why, cap, "could not drop the stale copies of %zu pending runs from page %llu: %s",
					 i - first, (unsigned long long)d->runs[first].first_page, lm_strerror(err));
				if (pidfd >= 0)
					close(pidfd);
				return err;
			}
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	return 0;
}

int lm__pc_dst_arm(struct lm__pc_dst *d, const struct lm__io *io, char *why, size_t cap)
{
	int err = discard(d, why, cap);
	if (err)
		return err;
	free(d->runs);
	d->runs = NULL;
	d->nruns = d->capruns = 0;
	if ((err = lm_bitmap_init(&d->asked, d->end_page)) < 0) {
		snprintf(why, cap, "out of memory");
		return err;
	}
	if ((err = lm_bitmap_init(&d->placed, d->end_page)) < 0) {
		lm_bitmap_destroy(&d->asked);
		snprintf(why, cap, "out of memory");
		return err;
	}
	d->asked_ok = true;
	d->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = {.api = UFFD_API};
	if (d->uffd < 0 || ioctl(d->uffd, UFFDIO_API, &api) < 0) {
		err = -errno;
		snprintf(why, cap, "userfaultfd: %s", lm_strerror(err));
		return err;
	}
	for (uint32_t i = 0; i < d->nmem; i++) {
		struct uffdio_register reg = {
		    .range = {(uint64_t)(uintptr_t)d->mem[i].host, d->mem[i].npages * LM_PAGE_SIZE},
		    .mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(d->uffd, UFFDIO_REGISTER, &reg) < 0) {
			err = -errno;
			snprintf(why, cap, "could not register guest RAM region %u for missing pages: %s", i,
				 lm_strerror(err));
			return err;
		}
	}
	d->armed = true;
	d->io = *io;
	d->io.bytes_in = d->io.bytes_out = 0;
	d->link_up = true;
	d->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->stop_fd < 0 || (err = -pthread_create(&d->thread, NULL, fault_main, d)) < 0) {
		err = d->stop_fd < 0 ? -errno : err;
		snprintf(why, cap, "could not start the fault thread: %s", lm_strerror(err));
		return err;
	}
	d->thread_on = true;
	d->t_start = lm__now();
	return 0;
}

static void note_latency(struct lm__pc_dst *d, double s)
{
	if (d->nlat == d->caplat) {
		size_t c = d->caplat ? d->caplat * 2 : 1024;
		uint32_t *l = realloc(d->lat_us, c * sizeof(*l));
		if (!l)
			return; /* the figure loses a sample, nothing else */
		d->lat_us = l;
		d->caplat = c;
	}
	double us = s * 1e6;
	d->lat_us[d->nlat++] = us > 4e9 ? 4000000000u : (uint32_t)us;
}

int lm__pc_dst_place(struct lm__pc_dst *d, uint64_t first, uint8_t *dst, const uint8_t *src, uint32_t n,
		     lm_digest *dg, char *why, size_t cap)
{
	for (uint32_t i = 0; i < n; i++) {
		if (!is_pending(d, first + i)) {
			snprintf(why, cap, "page %llu %s in post-copy", (unsigned long long)(first + i),
				 lm_bitmap_test(&d->placed, first + i) ? "arrived twice" : "is not pending");
			return -EPROTO;
		}
	}
	size_t len = (size_t)n * LM_PAGE_SIZE, done = 0;
	while (done < len) {
		long r;
		if (src) {
			struct uffdio_copy c = {(uint64_t)(uintptr_t)(dst + done), (uint64_t)(uintptr_t)(src + done),
						len - done, UFFDIO_COPY_MODE_DONTWAKE, 0};
			r = ioctl(d->uffd, UFFDIO_COPY, &c);
			if (c.copy > 0)
				done += (size_t)c.copy;
		} else {
			struct uffdio_zeropage z = {{(uint64_t)(uintptr_t)(dst + done), len - done},
						    UFFDIO_ZEROPAGE_MODE_DONTWAKE, 0};
			r = ioctl(d->uffd, UFFDIO_ZEROPAGE, &z);
			if (z.zeropage > 0)
				done += (size_t)z.zeropage;
		}
		if (r == 0)
			break;
		if (errno == EAGAIN)
			continue;
		int err = -errno;
		/* EEXIST: something else filled a pending page, which only a
		 * bug can do; the guest may have seen wrong contents. */
		snprintf(why, cap, "could not place pages [%llu, %llu) in post-copy: %s",
			 (unsigned long long)first, (unsigned long long)(first + n), lm_strerror(err));
		return err;
	}
	lm_bitmap_set_range(&d->placed, first, n);
	if (dg) {
		if (src)
			lm_digest_pages(dg, first, n, dst);
		else
			lm_digest_zero(dg, first, n);
	}
	double now = lm__now();
	pthread_mutex_lock(&d->lock);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t p = first + i;
		__atomic_and_fetch(&d->pending[p >> 6], ~(1ull << (p & 63)), __ATOMIC_RELEASE);
	}
	for (unsigned k = 0; k < d->nout;) {
		if (d->out[k].page - first < n) {
			note_latency(d, now - d->out[k].t);
			d->blocktime += (now - d->out[k].t) * d->out[k].waiters;
			d->out[k] = d->out[--d->nout];
		} else {
			k++;
		}
	}
	pthread_mutex_unlock(&d->lock);
	wake(d, (uint64_t)(uintptr_t)dst, len);
	d->left -= n;
	return 0;
}

void lm__pc_dst_unlink(struct lm__pc_dst *d)
{
	pthread_mutex_lock(&d->wlock);
	d->link_up = false;
	pthread_mutex_unlock(&d->wlock);
}

void lm__pc_dst_relink(struct lm__pc_dst *d, const struct lm__io *io)
{
	uint64_t pages[OUTSTANDING_MAX];
	unsigned n = 0;
	pthread_mutex_lock(&d->lock);
	for (unsigned k = 0; k < d->nout; k++)
		pages[n++] = d->out[k].page;
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_lock(&d->wlock);
	d->io = *io;
	d->io.bytes_in = d->io.bytes_out = 0;
	d->link_up = true;
	pthread_mutex_unlock(&d->wlock);
	/* What something waits on is asked for again: the request may have
	 * been lost with the connection. */
	for (unsigned k = 0; k < n; k++)
		ask_page(d, pages[k]);
}

int lm__pc_dst_missing(struct lm__pc_dst *d, void (*fn)(void *arg, uint64_t first, uint64_t n), void *arg)
{
	uint64_t words = (d->end_page + 63) / 64;
	uint64_t run = 0, len = 0;
	for (uint64_t w = 0; w < words; w++) {
		uint64_t v = __atomic_load_n(&d->pending[w], __ATOMIC_ACQUIRE);
		if (!v && !len)
			continue;
		for (unsigned b = 0; b < 64; b++) {
			bool set = (v >> b) & 1;
			uint64_t p = w * 64 + b;
			if (set && len && run + len == p) {
				len++;
			} else if (set) {
				if (len)
					fn(arg, run, len);
				run = p;
				len = 1;
			}
		}
	}
	if (len)
		fn(arg, run, len);
	return 0;
}

int lm__pc_dst_stop(struct lm__pc_dst *d, char *why, size_t cap)
{
	if (d->thread_on) {
		uint64_t one = 1;
		(void)!write(d->stop_fd, &one, sizeof(one));
		pthread_join(d->thread, NULL);
		d->thread_on = false;
	}
	if (d->thread_err && why)
		snprintf(why, cap, "%s", d->thread_why);
	return d->thread_err;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

void lm__pc_dst_stats(struct lm__pc_dst *d, struct lm_receive_stats *st)
{
	pthread_mutex_lock(&d->lock);
	st->postcopy_pending = d->npending;
	st->postcopy_requests = d->requests;
	st->postcopy_faults = d->faults;
	st->postcopy_zero_faults = d->zero_faults;
	st->postcopy_blocktime_us = (uint64_t)(d->blocktime * 1e6);
	if (d->nlat) {
		qsort(d->lat_us, d->nlat, sizeof(*d->lat_us), cmp_u32);
		st->postcopy_latency_p50_us = d->lat_us[(d->nlat - 1) / 2];
		st->postcopy_latency_p99_us = d->lat_us[(d->nlat - 1) * 99 / 100];
		st->postcopy_latency_max_us = d->lat_us[d->nlat - 1];
	}
	pthread_mutex_unlock(&d->lock);
}

void lm__pc_dst_free(struct lm__pc_dst *d, bool guest_ran)
{
	if (!d)
		return;
	lm__pc_dst_stop(d, NULL, 0);
	if (d->uffd >= 0 && d->armed && d->left && guest_ran) {
		/*
		 * Pages are still missing and the guest may run: closing the
		 * userfaultfd would let them fault in as zeros, a silently
		 * corrupt guest. It stays open, its faults never answered, for
		 * the life of the process (the VMM stops the guest).
		 */
		d->uffd = -1;
	}
	if (d->uffd >= 0)
		close(d->uffd);
	if (d->stop_fd >= 0)
		close(d->stop_fd);
	if (d->asked_ok) {
		lm_bitmap_destroy(&d->asked);
		lm_bitmap_destroy(&d->placed);
	}
	munmap(d->pending, d->pending_len);
	free(d->runs);
	free(d->lat_us);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->wlock);
	free(d);
}
