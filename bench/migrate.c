/*
 * livemig bench migrate: whole migrations of idle memory through the real
 * engine to a receiver thread in this process, for several region sizes,
 * kinds of content, links, compression settings and channel counts. The
 * kinds (--kinds):
 *
 *   mostly-zero  one page in 64 holds random data, the rest was never
 *                written (a freshly booted guest: the common big case)
 *   half-random  blocks of 64 random pages alternating with 64 zero pages
 *   all-random   every page random (incompressible, the worst case)
 *   text         every page text-like: words drawn pseudo-randomly from 64
 *                common English words, with a two-digit number now and
 *                then; zstd level 1 makes it about 3.4x smaller (not in
 *                the default set)
 *
 * Each row is one migration (handshake, round 1, final pass, digest check,
 * COMMIT): total time, GB/s of guest memory and of wire bytes, bytes on
 * the wire, downtime, and whether the receiver's digest matched. The
 * source is not written during the run, so this measures the copy
 * pipeline, not convergence. The dirty source is userfaultfd (--source
 * uffd, the default where the kernel has it): it knows which pages were
 * never touched, and those are neither read nor sent. --source sim (the
 * software log) makes the engine read every page, as QEMU does.
 *
 * Memory: a case needs its data pages resident twice (source and
 * destination; zero pages are never written on either side), or with
 * --dest-memory reused its data pages and all of the destination's
 * memory (the raw baselines of --baselines map the wire bytes once more,
 * after the destination's memory is gone, so no more than that). Cases over
 * --max-resident (default 10 GiB: the machine has 24 GiB and is shared)
 * are skipped with the reason printed; with the default sizes that is 16G
 * half-random (16 GiB) and 16G all-random (32 GiB).
 *
 * The lists --links, --compress, --channels and --dest-memory multiply
 * the cases; the loops nest as size, kind, link, compression, channels,
 * destination memory, so that rows which differ in one of them only are
 * neighbours.
 *
 * --links loopback (the default) is TCP loopback in this process's own
 * network namespace. veth is two network namespaces joined by a veth pair:
 * the sender (the main thread, and the channel connections it opens) joins
 * lmb-a-PID, 10.241.0.1, the receiver thread joins lmb-b-PID, 10.241.0.2,
 * each with setns() before it opens its sockets (a socket stays in the
 * namespace it was created in; setns changes the calling thread only). A
 * rate (500mbit, 1gbit, 10gbit: bit, kbit, mbit, gbit or tbit, at least
 * 1mbit) is the same veth pair with a tbf qdisc at that rate on the
 * sender's end, whose egress is the data direction; its burst is 10 ms at
 * the rate, at least 256 KiB. Such rows show the wire payload rate as a
 * fraction of the link rate (util). The benchmark creates the namespaces
 * (with `ip`; it needs root) the first time a row needs them, changes the
 * qdisc between rows with `tc`, and deletes them at the end, at exit and
 * on SIGINT, SIGTERM and SIGHUP (deleting a namespace deletes its veth
 * end). Without root, or when `ip netns add` fails, those rows are skipped
 * with the reason; --transport unix skips them too (a UNIX socket does not
 * go through the veth pair).
 *
 * --compress off,zstd runs every case once without compression and once
 * with zstd offered for data runs (--zstd is --compress zstd).
 * With --channels 1,2,4 each case runs once per channel count (multifd:
 * the extra connections go to the same listener, docs/stream.md 3.16).
 * --transport unix runs over a UNIX socket instead of TCP loopback.
 * --baselines measures, right after each loopback case, the same number of
 * wire bytes from the same source memory over one raw connection of the
 * same kind (bench/raw.c: into a discard buffer, into fresh memory
 * populated ahead, into reused memory) and prints livemig's wire rate as a
 * ratio of the one into memory of the row's kind (/same); the raw
 * baselines run over loopback only, so veth and rate rows have none.
 * --dest-memory fresh,reused: the receiver's memory mapped on HELLO
 * (fresh, the default), or mapped and made present (zero) before the
 * migration starts (reused, a destination that preallocates its RAM).
 *
 *   livemig bench migrate [--sizes 1G,4G,16G] [--kinds mostly-zero,...]
 *                         [--links loopback,veth,1gbit,...]
 *                         [--compress off,zstd] [--zstd] [--channels 1,2,4]
 *                         [--source uffd|sim] [--transport tcp|unix]
 *                         [--dest-memory fresh,reused] [--baselines]
 *                         [--max-resident 10G] [--repeat N] [--no-warmup] [--json]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "cli/cli.h"
#include "livemig/migrate.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum kind { MOSTLY_ZERO, HALF_RANDOM, ALL_RANDOM, TEXT, NKINDS };
static const char *const kind_names[NKINDS] = { "mostly-zero", "half-random", "all-random", "text" };

/* Data pages of a case, for the resident-memory estimate and the fill. */
static uint64_t data_pages(enum kind k, uint64_t npages)
{
	switch (k) {
	case MOSTLY_ZERO:
		return npages / 64;
	case HALF_RANDOM:
		return npages / 2;
	default:
		return npages;
	}
}

static bool is_data(enum kind k, uint64_t page)
{
	switch (k) {
	case MOSTLY_ZERO:
		return page % 64 == 0;
	case HALF_RANDOM:
		return (page / 64) % 2 == 0;
	default:
		return true;
	}
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return *x * 0x2545F4914F6CDD1Dull;
}

static const char *const text_words[64] = {
	"the", "of", "and", "to", "in", "is", "that", "it",
	"was", "for", "on", "are", "with", "as", "his", "they",
	"be", "at", "one", "have", "this", "from", "or", "had",
	"by", "word", "but", "what", "some", "we", "can", "out",
	"other", "were", "all", "there", "when", "up", "use", "your",
	"how", "said", "an", "each", "she", "which", "do", "their",
	"time", "if", "will", "way", "about", "many", "then", "them",
	"write", "would", "like", "so", "these", "her", "long", "make",
};

/*
 * The text kind, page after page: five words from every 64-bit draw, 12
 * bits each. A word's index is the AND of two 6-bit fields, so the first
 * words of the list come up more often, as common words do in prose; one
 * word in 32 is a two-digit number instead. Every word is copied as 16
 * bytes padded with spaces and the position moves on by its length plus
 * one, which keeps the fill at about 0.5 s per GiB (plus the page faults).
 * zstd level 1 compresses it about 2.9x page by page and 3.4x in runs of
 * 256 pages.
 */
static void fill_text(uint8_t *mem, uint64_t npages, uint64_t *x)
{
	struct {
		char s[16];
		size_t n;
	} w[64];
	char buf[LM_PAGE_SIZE + 16];

	for (size_t i = 0; i < 64; i++) {
		size_t len = strlen(text_words[i]);
		memset(w[i].s, ' ', sizeof(w[i].s));
		memcpy(w[i].s, text_words[i], len);
		w[i].n = len + 1;
	}
	for (uint64_t p = 0; p < npages; p++) {
		size_t pos = 0;
		while (pos < LM_PAGE_SIZE) {
			uint64_t r = xorshift(x);
			for (int j = 0; j < 5 && pos < LM_PAGE_SIZE; j++, r >>= 12) {
				unsigned a = r & 63, b = (r >> 6) & 63;
				if ((b & 31) == 31) {
					buf[pos] = (char)('0' + a % 10);
					buf[pos + 1] = (char)('0' + a / 10);
					buf[pos + 2] = ' ';
					pos += 3;
				} else {
					memcpy(buf + pos, w[a & b].s, 16);
					pos += w[a & b].n;
				}
			}
		}
		memcpy(mem + p * LM_PAGE_SIZE, buf, LM_PAGE_SIZE);
	}
}

static void fill(uint8_t *mem, uint64_t npages, enum kind k)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	if (k == TEXT) {
		fill_text(mem, npages, &x);
		return;
	}
	for (uint64_t p = 0; p < npages; p++) {
		if (!is_data(k, p))
			continue;
		uint64_t *w = (uint64_t *)(mem + p * LM_PAGE_SIZE);
		for (size_t i = 0; i < LM_PAGE_SIZE / 8; i++)
			w[i] = xorshift(&x);
	}
}

/* ---- links: loopback, or two network namespaces joined by a veth pair ---- */

enum link_type { LINK_LOOPBACK, LINK_VETH, LINK_RATE };

struct link {
	char name[16]; /* as given: loopback, veth, 1gbit, ... */
	enum link_type type;
	uint64_t bps;  /* LINK_RATE: the tbf rate in bits per second */
};

#define NETNS_DIR "/var/run/netns"
#define VETH_SRC "lmbva"
#define VETH_DST "lmbvb"
#define ADDR_SRC "10.241.0.1"
#define ADDR_DST "10.241.0.2"
/* The sender's side is namespace 0, the receiver's namespace 1. */
enum { NS_SRC, NS_DST };

/*
 * The namespaces of the run, created the first time a row needs them.
 * made says which names may exist: a bit is set before `ip netns add`
 * runs, so that a signal arriving meanwhile removes it too. The signal
 * handler reads name and path only, which are written before made.
 */
static struct {
	char name[2][32];
	char path[2][64];
	volatile sig_atomic_t made;
	int fd[2];    /* open namespace files, or -1 */
	int home;     /* this process's own namespace, or -1 */
	int state;    /* 0 not tried yet, 1 up, -errno could not be made (why says it) */
	char why[240];
	uint64_t bps; /* the tbf on VETH_SRC: 0 none, UINT64_MAX not known */
	bool handlers;
	struct sigaction old[3];
} ns = { .fd = { -1, -1 }, .home = -1 };

static const int ns_signals[3] = { SIGINT, SIGTERM, SIGHUP };

/*
 * Runs a command line (words separated by spaces, no quoting) with its
 * standard output and error captured in out. 0 when it exited 0, else
 * -ECHILD (it failed: out says why, and unless quiet the command and its
 * output go to stderr) or -errno when it could not be started.
 */
static int run_cmd(bool quiet, char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int run_cmd(bool quiet, char *out, size_t cap, const char *fmt, ...)
{
	char line[512], *argv[32], *save = NULL;
	size_t argc = 0, len = 0;
	int pfd[2], status, err = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	char words[sizeof(line)];
	memcpy(words, line, sizeof(line));
	for (char *t = strtok_r(words, " ", &save); t && argc + 1 < sizeof(argv) / sizeof(argv[0]);
	     t = strtok_r(NULL, " ", &save))
		argv[argc++] = t;
	argv[argc] = NULL;
	out[0] = 0;
	/* Made before the fork: the child only writes it. */
	char noexec[96];
	int noexec_len = snprintf(noexec, sizeof(noexec), "cannot run %.60s (not installed?)", argv[0]);
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		err = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return err;
	}
	if (pid == 0) {
		dup2(pfd[1], STDOUT_FILENO);
		dup2(pfd[1], STDERR_FILENO);
		execvp(argv[0], argv);
		ssize_t w = write(STDERR_FILENO, noexec, (size_t)noexec_len);
		(void)w;
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		char tmp[256];
		ssize_t n = read(pfd[0], tmp, sizeof(tmp));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n && len + 1 < cap; i++)
			out[len++] = tmp[i] == '\n' ? ' ' : tmp[i];
	}
	close(pfd[0]);
	while (len && out[len - 1] == ' ')
		len--;
	out[len] = 0;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (!len)
		snprintf(out, cap, WIFEXITED(status) ? "exit status %d" : "killed by signal %d",
			 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	if (!quiet)
		fprintf(stderr, "    + %s: %s\n", line, out);
	return -ECHILD;
}

/* Async-signal-safe: what `ip netns del` does (detach the bind mount that
 * keeps the namespace, remove the file); the process dies next, and with
 * it the last references to the namespaces and their veth ends. */
static void netns_on_signal(int sig)
{
	for (int i = 0; i < 2; i++) {
		if (ns.made & (1 << i)) {
			umount2(ns.path[i], MNT_DETACH);
			unlink(ns.path[i]);
		}
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void netns_remove(void)
{
	char out[160];
	for (int i = 0; i < 2; i++) {
		if (ns.fd[i] >= 0)
			close(ns.fd[i]);
		ns.fd[i] = -1;
	}
	if (ns.home >= 0)
		close(ns.home);
	ns.home = -1;
	for (int i = 0; i < 2; i++) {
		if (!(ns.made & (1 << i)))
			continue;
		/* quiet: the add may have failed, leaving nothing to delete */
		run_cmd(true, out, sizeof(out), "ip netns del %s", ns.name[i]);
		ns.made &= ~(1 << i);
	}
	if (ns.handlers) {
		for (int i = 0; i < 3; i++)
			sigaction(ns_signals[i], &ns.old[i], NULL);
		ns.handlers = false;
	}
	if (ns.state > 0)
		ns.state = 0;
}

static void netns_catch_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = netns_on_signal;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++) {
		sigaction(ns_signals[i], NULL, &ns.old[i]);
		/* A signal ignored (nohup) stays ignored. */
		if (ns.old[i].sa_handler != SIG_IGN)
			sigaction(ns_signals[i], &sa, NULL);
	}
	ns.handlers = true;
}

/* The two namespaces, the veth pair between them, addresses, lo and the
 * veth ends up, and open files for setns. 0, or -errno with ns.why. */
static int netns_make(void)
{
	static bool at_exit;
	char out[160];
	int err = 0;

	if (geteuid() != 0) {
		snprintf(ns.why, sizeof(ns.why), "network namespaces need root (ip netns add)");
		return -EPERM;
	}
	if (!at_exit && atexit(netns_remove) == 0)
		at_exit = true;
	if (!ns.handlers)
		netns_catch_signals();
	for (int i = 0; i < 2; i++) {
		snprintf(ns.name[i], sizeof(ns.name[i]), "lmb-%c-%d", i == NS_SRC ? 'a' : 'b', (int)getpid());
		snprintf(ns.path[i], sizeof(ns.path[i]), NETNS_DIR "/%s", ns.name[i]);
		ns.made |= 1 << i;
		err = run_cmd(false, out, sizeof(out), "ip netns add %s", ns.name[i]);
		if (err) {
			snprintf(ns.why, sizeof(ns.why), "ip netns add failed: %s", out);
			goto fail;
		}
	}
	const char *a = ns.name[NS_SRC], *b = ns.name[NS_DST];
	if ((err = run_cmd(false, out, sizeof(out), "ip -n %s link add " VETH_SRC " type veth peer name " VETH_DST
				   " netns %s", a, b)) ||
	    (err = run_cmd(false, out, sizeof(out), "ip -n %s link set lo up", a)) ||
	    (err = run_cmd(false, out, sizeof(out), "ip -n %s link set lo up", b)) ||
	    (err = run_cmd(false, out, sizeof(out), "ip -n %s addr add " ADDR_SRC "/30 dev " VETH_SRC, a)) ||
	    (err = run_cmd(false, out, sizeof(out), "ip -n %s addr add " ADDR_DST "/30 dev " VETH_DST, b)) ||
	    (err = run_cmd(false, out, sizeof(out), "ip -n %s link set " VETH_SRC " up", a)) ||
	    (err = run_cmd(false, out, sizeof(out), "ip -n %s link set " VETH_DST " up", b))) {
		snprintf(ns.why, sizeof(ns.why), "setting up the veth pair failed: %s", out);
		goto fail;
	}
	for (int i = 0; i < 2; i++) {
		ns.fd[i] = open(ns.path[i], O_RDONLY | O_CLOEXEC);
		if (ns.fd[i] < 0) {
			err = -errno;
			snprintf(ns.why, sizeof(ns.why), "cannot open " NETNS_DIR "/%.31s: %.120s", ns.name[i],
				 lm_strerror(err));
			goto fail;
		}
	}
	ns.home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns.home < 0) {
		err = -errno;
		snprintf(ns.why, sizeof(ns.why), "cannot open /proc/self/ns/net: %.120s", lm_strerror(err));
		goto fail;
	}
	ns.bps = 0;
	return 0;
fail:
	netns_remove();
	return err;
}

/*
 * Makes link l ready for a row: for veth and rates the namespaces (made
 * once per run; a failure is remembered and skips every such row) and the
 * qdisc on the sender's veth end. 0, or -errno with why (the row is
 * skipped).
 */
static int link_prepare(const struct link *l, char *why, size_t cap)
{
	char out[160];
	int err;

	if (l->type == LINK_LOOPBACK)
		return 0;
	if (ns.state == 0) {
		err = netns_make();
		ns.state = err ? err : 1;
	}
	if (ns.state < 0) {
		snprintf(why, cap, "%s", ns.why);
		return ns.state;
	}
	uint64_t bps = l->type == LINK_RATE ? l->bps : 0;
	if (bps == ns.bps)
		return 0;
	const char *a = ns.name[NS_SRC];
	if (!bps) {
		bool known = ns.bps != UINT64_MAX;
		err = run_cmd(!known, out, sizeof(out), "tc -n %s qdisc del dev " VETH_SRC " root", a);
		if (err && known) {
			ns.bps = UINT64_MAX;
			snprintf(why, cap, "tc qdisc del failed: %s", out);
			return err;
		}
		ns.bps = 0;
		return 0;
	}
	/* tbf needs a bucket of several packets (GSO makes them up to 64
	 * KiB): 10 ms of the rate, at least 256 KiB. */
	uint64_t burst = bps / 8 / 100;
	if (burst < (256u << 10))
		burst = 256u << 10;
	err = run_cmd(false, out, sizeof(out),
		      "tc -n %s qdisc replace dev " VETH_SRC " root tbf rate %llubit burst %llu latency 50ms", a,
		      (unsigned long long)bps, (unsigned long long)burst);
	if (err) {
		ns.bps = UINT64_MAX;
		snprintf(why, cap, "tc qdisc replace ... tbf rate %s failed: %s", l->name, out);
		return err;
	}
	ns.bps = bps;
	return 0;
}

/* "loopback", "veth" or a rate: a number (decimals allowed) with bit, kbit,
 * mbit, gbit or tbit, from 1mbit to 1tbit. 0 or -EINVAL. */
static int parse_link(const char *s, struct link *l)
{
	static const struct {
		const char *unit;
		double mul;
	} units[] = { { "bit", 1 }, { "kbit", 1e3 }, { "mbit", 1e6 }, { "gbit", 1e9 }, { "tbit", 1e12 } };

	memset(l, 0, sizeof(*l));
	if (strlen(s) >= sizeof(l->name))
		return -EINVAL;
	snprintf(l->name, sizeof(l->name), "%s", s);
	if (!strcmp(s, "loopback")) {
		l->type = LINK_LOOPBACK;
		return 0;
	}
	if (!strcmp(s, "veth")) {
		l->type = LINK_VETH;
		return 0;
	}
	if (*s < '0' || *s > '9')
		return -EINVAL;
	char *e;
	double v = strtod(s, &e);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(e, units[i].unit))
			continue;
		double bps = v * units[i].mul;
		if (!(bps >= 1e6 && bps <= 1e12))
			return -EINVAL;
		l->type = LINK_RATE;
		l->bps = (uint64_t)(bps + 0.5);
		return 0;
	}
	return -EINVAL;
}

/* ---- the workloads: nothing runs on the source; the destination maps ---- */

static int idle_pause(void *ctx)
{
	return 0;
}

static int idle_resume(void *ctx)
{
	return 0;
}

static const struct lm_workload_ops source_ops = {
	.pause = idle_pause,
	.resume = idle_resume,
};

/* CPU seconds of this process, all threads, user and system: both ends
 * of a migration run here, so on a host with few cores this is what the
 * data path costs, however the wall time swings. */
static double cpu_now(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec * 1e-6;
}

/* The destination's memory: mapped on HELLO (fresh: the receiver's copies
 * make it present), or, for --dest-memory reused, mapped and made present
 * (zero-filled) before the migration starts, as a destination that
 * preallocates its guest RAM (QEMU's -mem-prealloc) has it. */
struct dest {
	void *mem;
	size_t len;
	int finish_err;
};

static int dest_prealloc(struct dest *d, size_t len)
{
	d->mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (d->mem == MAP_FAILED) {
		d->mem = NULL;
		return -ENOMEM;
	}
	d->len = len;
	if (madvise(d->mem, len, MADV_POPULATE_WRITE) < 0) {
		/* Only a kernel without it (before 5.14) is made up for by
		 * touching each page; out of memory is an error. */
		int err = -errno;
		if (err != -EINVAL) {
			munmap(d->mem, len);
			d->mem = NULL;
			return err;
		}
		for (size_t o = 0; o < len; o += LM_PAGE_SIZE)
			((volatile uint8_t *)d->mem)[o] = 0;
	}
	return 0;
}

static int dest_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct dest *d = ctx;
	if (l->nregions != 1)
		return -EINVAL;
	size_t len = (size_t)out[0].npages * LM_PAGE_SIZE;
	if (d->mem) { /* made present ahead (reused) */
		if (len != d->len)
			return -EINVAL;
		out[0].host = d->mem;
		return 0;
	}
	d->len = len;
	d->mem = mmap(NULL, d->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (d->mem == MAP_FAILED) {
		d->mem = NULL;
		return -ENOMEM;
	}
	out[0].host = d->mem;
	return 0;
}

static void dest_finish(void *ctx, int err, const char *msg)
{
	struct dest *d = ctx;
	d->finish_err = err;
}

static const struct lm_workload_ops dest_ops = {
	.setup = dest_setup,
	.finish = dest_finish,
};

/*
 * The receiver thread: joins netns (>= 0) first, listens on u, posts
 * ready (lfd >= 0, and for TCP the port in u, or err), then accepts the
 * main connection and runs the migration. The caller closes lfd after
 * the join.
 */
struct receiver {
	int netns;
	struct lm_uri u;
	sem_t ready;
	int lfd;
	struct dest d;
	struct lm_receive_stats st;
	int err;
};

/* Channels come to the same listener. */
static int rx_accept_channel(void *arg, int timeout_ms)
{
	struct receiver *r = arg;
	return lm_transport_accept(r->lfd, timeout_ms);
}

static int tx_connect_channel(void *arg, unsigned index)
{
	(void)index;
	return lm_transport_connect(arg);
}

static void *receiver_main(void *arg)
{
	struct receiver *r = arg;
	(void)pthread_setname_np(pthread_self(), "bench-recv");
	if (r->netns >= 0 && setns(r->netns, CLONE_NEWNET) < 0) {
		r->err = -errno;
		snprintf(r->st.error, sizeof(r->st.error), "setns into the destination's namespace: %s",
			 lm_strerror(r->err));
		sem_post(&r->ready);
		return NULL;
	}
	int lfd = lm_transport_listen(&r->u);
	if (lfd < 0) {
		r->err = lfd;
		snprintf(r->st.error, sizeof(r->st.error), "listen: %s", lm_strerror(lfd));
		sem_post(&r->ready);
		return NULL;
	}
	if (r->u.kind == LM_URI_TCP)
		snprintf(r->u.port, sizeof(r->u.port), "%d", lm_transport_local_port(lfd));
	r->lfd = lfd;
	sem_post(&r->ready);
	int fd = lm_transport_accept(r->lfd, 60000);
	if (fd < 0) {
		r->err = fd;
		snprintf(r->st.error, sizeof(r->st.error), "accept: %s", lm_strerror(fd));
		return NULL;
	}
	struct lm_receive_params p = { .idle_timeout_ms = 60000, .accept_channel = rx_accept_channel,
				       .channel_arg = r };
	r->err = lm_migrate_receive(fd, &p, &dest_ops, &r->d, &r->st);
	close(fd);
	return NULL;
}

/* ---- one case ---- */

struct row {
	uint64_t size;
	enum kind kind;
	const struct link *link;
	bool zstd;
	unsigned channels;
	bool reused; /* --dest-memory reused: the destination's memory present before the start */
	bool skipped;
	char why[240];
	double fill_s;
	double wall_s; /* lm_migrate_send: connect to COMMIT; with --repeat the best */
	double worst_s; /* with --repeat: the slowest run */
	double cpu_s; /* CPU time of the process (both ends, user + system) from the start of
		       * lm_migrate_send until the receiver thread is joined */
	unsigned runs;
	struct lm_migrate_stats st;
	struct lm_receive_stats rst;
	int err;
	char error[300];
	bool raw_on;
	double raw[LM_BENCH_RAW_N]; /* GB/s, 0: failed */
};

static bool opt_unix, opt_baselines, opt_warmup = true;
static unsigned opt_repeat = 1;
static uint64_t warmed; /* bytes the warm-up touched and freed */

/* Back to this process's namespace after the sender ran in the source's.
 * Should that fail, the rows after this one would run in the wrong
 * namespace: the run ends here (the namespaces go at exit). */
static void netns_go_home(void)
{
	if (setns(ns.home, CLONE_NEWNET) < 0) {
		fprintf(stderr, "livemig bench migrate: cannot return to the home network namespace: %s\n",
			lm_strerror(-errno));
		exit(1);
	}
}

static void size_name(uint64_t size, char *out, size_t cap)
{
	if (size >= (1ull << 30) && size % (1ull << 30) == 0)
		snprintf(out, cap, "%lluG", (unsigned long long)(size >> 30));
	else
		snprintf(out, cap, "%lluM", (unsigned long long)(size >> 20));
}

static int run_case(struct row *row, bool uffd, bool progress)
{
	uint64_t size = row->size, npages = size / LM_PAGE_SIZE;
	bool veth = row->link->type != LINK_LOOPBACK;
	struct lm_mem_region reg = { 0, npages, NULL };
	struct lm_dirty_source *src = NULL;
	struct receiver rx = { .netns = veth ? ns.fd[NS_DST] : -1, .lfd = -1 };
	struct lm_uri u;
	pthread_t th;
	bool th_on = false, away = false;
	int fd = -1, err;
	double cpu0 = 0;
	row->cpu_s = 0; /* a row copied from an earlier run keeps none of its figure */

	if (progress) {
		char sz[16];
		size_name(size, sz, sizeof(sz));
		fprintf(stderr, "  %s %s, %s, %s, %u channel(s), %s destination memory ...\n", sz,
			kind_names[row->kind], row->link->name, row->zstd ? "zstd" : "no compression", row->channels,
			row->reused ? "reused" : "fresh");
	}
	if (sem_init(&rx.ready, 0, 0) < 0) {
		row->err = -errno;
		snprintf(row->error, sizeof(row->error), "sem_init: %s", lm_strerror(row->err));
		return row->err;
	}
	reg.host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (reg.host == MAP_FAILED) {
		reg.host = NULL;
		err = -ENOMEM;
		snprintf(row->error, sizeof(row->error), "cannot map %llu MiB", (unsigned long long)(size >> 20));
		goto out;
	}
	double t0 = bench_now();
	fill(reg.host, npages, row->kind);
	row->fill_s = bench_now() - t0;
	if (row->reused && (err = dest_prealloc(&rx.d, size))) {
		snprintf(row->error, sizeof(row->error), "cannot make the destination's %llu MiB present: %s",
			 (unsigned long long)(size >> 20), lm_strerror(err));
		goto out;
	}

	err = uffd ? lm_uffd_source_new(&src) : lm_sim_source_new(LM_SIM_EXCHANGE, &src);
	if (err)
		goto out;
	char upath[108];
	snprintf(upath, sizeof(upath), "unix:/tmp/lm-bench-migrate-%d.sock", (int)getpid());
	lm_uri_parse(opt_unix ? upath : veth ? "tcp:" ADDR_DST ":0" : "tcp:127.0.0.1:0", &rx.u);
	if (opt_unix)
		unlink(rx.u.path);
	if (pthread_create(&th, NULL, receiver_main, &rx)) {
		err = -EAGAIN;
		goto out;
	}
	th_on = true;
	while (sem_wait(&rx.ready) < 0 && errno == EINTR)
		;
	if (rx.lfd < 0) {
		err = rx.err;
		snprintf(row->error, sizeof(row->error), "receiver: %s", rx.st.error);
		goto out;
	}
	u = rx.u;
	/* The sender's sockets, the channels' included, are made in this
	 * thread: in the source's namespace while it runs. */
	if (veth) {
		if (setns(ns.fd[NS_SRC], CLONE_NEWNET) < 0) {
			err = -errno;
			snprintf(row->error, sizeof(row->error), "setns into the source's namespace: %s",
				 lm_strerror(err));
			goto out;
		}
		away = true;
	}
	fd = lm_transport_connect(&u);
	if (fd < 0) {
		err = fd;
		snprintf(row->error, sizeof(row->error), "connect: %s", lm_strerror(err));
		goto out;
	}
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.compress = row->zstd;
	p.channels = row->channels;
	p.connect_channel = tx_connect_channel;
	p.channel_arg = &u;
	struct lm_migrate_stats st;
	cpu0 = cpu_now();
	t0 = bench_now();
	err = lm_migrate_send(fd, &reg, 1, src, &source_ops, NULL, &p, &st);
	row->wall_s = bench_now() - t0;
	row->st = st;
	if (err)
		snprintf(row->error, sizeof(row->error), "sender: %s", st.error);
out:
	if (away)
		netns_go_home();
	if (fd >= 0)
		close(fd);
	if (th_on) {
		if (err && rx.lfd >= 0)
			shutdown(rx.lfd, SHUT_RDWR);
		pthread_join(th, NULL);
		if (cpu0 > 0)
			row->cpu_s = cpu_now() - cpu0;
		row->rst = rx.st;
		if (!err && rx.err) {
			err = rx.err;
			snprintf(row->error, sizeof(row->error), "receiver: %s", rx.st.error);
		}
	}
	if (rx.lfd >= 0)
		close(rx.lfd);
	if (opt_unix)
		unlink(rx.u.path);
	/* The destination's memory goes before the baselines map theirs. */
	if (rx.d.mem)
		munmap(rx.d.mem, rx.d.len);
	/* The same wire bytes from the same (populated) source memory, over
	 * loopback (lm_bench_raw knows no other link). */
	if (!err && opt_baselines && !veth) {
		size_t len = row->st.transferred < size ? (size_t)row->st.transferred : (size_t)size;
		row->raw_on = true;
		for (int d = 0; d < LM_BENCH_RAW_N; d++) {
			char why[160];
			if (lm_bench_raw(reg.host, len, opt_unix, (enum lm_bench_raw_dest)d, &row->raw[d], why,
					 sizeof(why)) < 0) {
				row->raw[d] = 0;
				fprintf(stderr, "    raw %s: %s\n", lm_bench_raw_names[d], why);
			}
		}
	}
	lm_dirty_source_free(src);
	if (reg.host)
		munmap(reg.host, size);
	sem_destroy(&rx.ready);
	row->err = err;
	if (err && !row->error[0])
		snprintf(row->error, sizeof(row->error), "%s", lm_strerror(err));
	return err;
}

/* Host warm-up. On this nested host the first touch of guest-physical
 * memory the host never backed costs far more than a touch of memory the
 * kernel freed and hands out again, so the first case of a run would be
 * slower than the rest for reasons that are not its own. Touching and
 * freeing as much memory as the biggest case needs, before any case, gives
 * every case the same kind of destination memory: fresh to the process,
 * already backed by the host. Returns the bytes touched. */
static uint64_t warm_up(uint64_t bytes)
{
	if (!bytes)
		return 0;
	uint8_t *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return 0;
	if (madvise(m, bytes, MADV_POPULATE_WRITE))
		for (uint64_t o = 0; o < bytes; o += LM_PAGE_SIZE)
			m[o] = 1;
	munmap(m, bytes);
	return bytes;
}

/* Resident bytes of a case: the data on both sides, or all of the
 * destination's memory when it is made present ahead. */
static uint64_t resident(const struct row *r)
{
	uint64_t data = data_pages(r->kind, r->size / LM_PAGE_SIZE) * LM_PAGE_SIZE;
	return data + (r->reused ? r->size : data);
}

/* Marks r skipped, with the reason, when it cannot run here: too much
 * memory, a UNIX socket on a veth link. Returns whether it did. (A link
 * that cannot be made ready is found just before the case runs: the
 * qdisc is set per case.) */
static bool plan_skip(struct row *r, uint64_t max_res)
{
	uint64_t res = resident(r);
	if (res > max_res) {
		snprintf(r->why, sizeof(r->why),
			 "needs %.1f GiB resident (source data + destination), over the %.1f GiB limit",
			 (double)res / (1ull << 30), (double)max_res / (1ull << 30));
		return r->skipped = true;
	}
	if (r->link->type != LINK_LOOPBACK && opt_unix) {
		snprintf(r->why, sizeof(r->why),
			 "--transport unix: a UNIX socket does not go through the veth pair (TCP only)");
		return r->skipped = true;
	}
	return false;
}

/* ---- output ---- */

static double secs(const struct row *r)
{
	return r->wall_s > 1e-6 ? r->wall_s : 1e-6;
}

/* Wire payload rate over the link's rate, or -1 for a link without one. */
static double util(const struct row *r)
{
	if (r->link->type != LINK_RATE)
		return -1;
	return (double)r->st.transferred * 8 / secs(r) / (double)r->link->bps;
}

static void print_table(const struct row *rows, size_t n, bool uffd, uint64_t max_res)
{
	printf("bench migrate: %s, receiver thread, idle source, dirty source %s; resident limit %llu GiB\n",
	       opt_unix ? "UNIX socket" : "TCP", uffd ? "uffd (never-touched pages skipped)" : "sim (every page read)",
	       (unsigned long long)(max_res >> 30));
	if (warmed)
		printf("host warm-up: %.1f GiB touched and freed before the first case (every case's destination "
		       "memory is fresh to the process, backed by the host; --no-warmup: the first case pays the host's "
		       "first touch)\n",
		       (double)warmed / (1ull << 30));
	else
		printf("no host warm-up: the first case may pay the host's first touch of its memory\n");
	printf("links: loopback in this namespace; veth between two namespaces; a rate: veth with tbf on the "
	       "sender's end (util: wire payload rate / link rate)\n\n");
	printf("%-5s %-12s %-9s %4s %3s %-6s %9s %11s %11s %5s %12s %10s %7s %6s", "size", "memory", "link", "zstd", "ch",
	       "dst", "total s", "mem GB/s", "wire GB/s", "util", "wire bytes", "downtime", "digest", "cpu s");
	if (opt_repeat > 1)
		printf(" %8s", "worst s");
	if (opt_baselines)
		printf("  %8s %8s %8s %7s", "raw-disc", "raw-frsh", "raw-reus", "/same");
	printf("\n");
	for (size_t i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		char sz[16];
		size_name(r->size, sz, sizeof(sz));
		printf("%-5s %-12s %-9s %4s %3u %-6s ", sz, kind_names[r->kind], r->link->name, r->zstd ? "yes" : "no",
		       r->channels, r->reused ? "reused" : "fresh");
		if (r->skipped) {
			printf("skipped: %s\n", r->why);
			continue;
		}
		if (r->err) {
			printf("FAILED: %s\n", r->error);
			continue;
		}
		double t = secs(r), ut = util(r);
		char us[16];
		if (ut < 0)
			snprintf(us, sizeof(us), "-");
		else
			snprintf(us, sizeof(us), "%.2f", ut);
		printf("%9.3f %11.2f %11.3f %5s %12llu %8.1fms %7s", t, (double)r->size / t / 1e9,
		       (double)r->st.transferred / t / 1e9, us, (unsigned long long)r->st.transferred,
		       (double)r->st.downtime_us / 1000, r->rst.digest_ok ? "ok" : "BAD");
		printf(" %6.3f", r->cpu_s);
		if (opt_repeat > 1)
			printf(" %8.3f", r->worst_s);
		/* Against the raw transfer into memory of the same kind. */
		double same = r->raw[r->reused ? LM_BENCH_RAW_REUSED : LM_BENCH_RAW_FRESH];
		if (r->raw_on)
			printf("  %8.2f %8.2f %8.2f %7.2f", r->raw[0], r->raw[1], r->raw[2],
			       same > 0 ? (double)r->st.transferred / t / 1e9 / same : 0);
		else if (opt_baselines)
			printf("  %8s %8s %8s %7s", "-", "-", "-", "-");
		printf("\n");
	}
}

/* s as a JSON string, quotes included. */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void print_json(const struct row *rows, size_t n, bool uffd)
{
	printf("[\n");
	for (size_t i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		char sz[16];
		size_name(r->size, sz, sizeof(sz));
		printf("  {\"size\": \"%s\", \"bytes\": %llu, \"memory\": \"%s\", \"link\": ", sz,
		       (unsigned long long)r->size, kind_names[r->kind]);
		json_str(r->link->name);
		if (r->link->type == LINK_RATE)
			printf(", \"link-rate-bps\": %llu", (unsigned long long)r->link->bps);
		printf(", \"source\": \"%s\", \"zstd\": %s, \"channels\": %u, \"dest-memory\": \"%s\"",
		       uffd ? "uffd" : "sim", r->zstd ? "true" : "false", r->channels, r->reused ? "reused" : "fresh");
		if (r->skipped) {
			printf(", \"skipped\": ");
			json_str(r->why);
			printf("}");
		} else if (r->err) {
			printf(", \"error\": ");
			json_str(r->error);
			printf("}");
		} else {
			double t = secs(r), ut = util(r);
			printf(", \"total-time-s\": %.4f, \"mem-gbps\": %.3f, \"wire-gbps\": %.4f, \"wire-bytes\": %llu, ",
			       t, (double)r->size / t / 1e9, (double)r->st.transferred / t / 1e9,
			       (unsigned long long)r->st.transferred);
			if (ut < 0)
				printf("\"link-utilisation\": null, ");
			else
				printf("\"link-utilisation\": %.4f, ", ut);
			printf("\"downtime-ms\": %.3f, \"normal\": %llu, \"duplicate\": %llu, \"skipped\": %llu, "
			       "\"rounds\": %llu, \"digest-ok\": %s",
			       (double)r->st.downtime_us / 1000, (unsigned long long)r->st.normal,
			       (unsigned long long)r->st.duplicate, (unsigned long long)r->st.skipped,
			       (unsigned long long)r->st.rounds, r->rst.digest_ok ? "true" : "false");
			printf(", \"runs\": %u, \"worst-time-s\": %.4f, \"cpu-s\": %.4f", r->runs, r->worst_s, r->cpu_s);
			if (r->raw_on)
				printf(", \"raw-discard-gbps\": %.3f, \"raw-fresh-gbps\": %.3f, \"raw-reused-gbps\": %.3f",
				       r->raw[0], r->raw[1], r->raw[2]);
			printf("}");
		}
		printf("%s\n", i + 1 < n ? "," : "");
	}
	printf("]\n");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig bench migrate [--sizes 1G,4G,16G] [--kinds mostly-zero,half-random,all-random,text]\n"
		"                             [--links loopback,veth,RATE] [--compress off,zstd] [--zstd]\n"
		"                             [--channels 1,2,4] [--source uffd|sim] [--transport tcp|unix]\n"
		"                             [--dest-memory fresh,reused] [--baselines] [--max-resident 10G]\n"
		"                             [--repeat N] [--no-warmup] [--json]\n"
		"\n"
		"  --sizes LIST      region sizes (at least 1M, whole pages, at most 16); default 1G,4G,16G\n"
		"  --kinds LIST      mostly-zero, half-random, all-random, text; default the first three\n"
		"  --links LIST      loopback (default), veth (two network namespaces joined by a veth pair,\n"
		"                    made and removed by the benchmark; needs root) or a RATE such as 500mbit,\n"
		"                    1gbit, 10gbit (veth with a tbf qdisc at that rate on the sender's end;\n"
		"                    units bit, kbit, mbit, gbit, tbit; 1mbit..1tbit); at most 8, TCP only\n"
		"  --compress LIST   off, zstd: each case once per item; default off (--zstd: --compress zstd)\n"
		"  --channels LIST   channel counts 1..%u, at most 8; default 1\n"
		"  --source S        dirty source uffd (default where supported) or sim\n"
		"  --transport T     tcp (default) or unix (loopback links only)\n"
		"  --dest-memory LIST fresh (default: mapped when the migration starts) or reused (mapped and\n"
		"                    made present, zero, before it starts, as with QEMU's -mem-prealloc)\n"
		"  --baselines       raw socket baselines after each loopback case; /same: livemig's wire\n"
		"                    rate over the raw one into memory of the same kind (fresh or reused)\n"
		"  --max-resident S  skip cases needing more resident memory; default 10G\n"
		"  --repeat N        run every case N times, interleaved; each row keeps its best (1..20)\n"
		"  --no-warmup       no host warm-up (touching and freeing the biggest case's memory first)\n"
		"  --json            a JSON array instead of the table\n"
		"Loops nest as size, kind, link, compression, channels, destination memory.\n",
		LM_STREAM_MAX_CHANNELS);
}

#define MAX_LINKS 8

/* Splits a comma-separated option value; each item goes to item(), which
 * returns 0 or -1 (it has printed why). An empty list is an error. */
static int for_each_item(const char *opt, const char *val, int (*item)(const char *opt, const char *t, void *arg),
			 void *arg)
{
	char *list = strdup(val), *save = NULL;
	int n = 0;
	if (!list)
		return -1;
	for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save), n++) {
		if (item(opt, t, arg)) {
			free(list);
			return -1;
		}
	}
	free(list);
	if (!n) {
		fprintf(stderr, "livemig bench migrate: %s needs at least one value\n", opt);
		return -1;
	}
	return 0;
}

struct links {
	struct link l[MAX_LINKS];
	size_t n;
};

static int link_item(const char *opt, const char *t, void *arg)
{
	struct links *ls = arg;
	if (ls->n == MAX_LINKS) {
		fprintf(stderr, "livemig bench migrate: %s takes at most %d items\n", opt, MAX_LINKS);
		return -1;
	}
	if (parse_link(t, &ls->l[ls->n])) {
		fprintf(stderr,
			"livemig bench migrate: bad %s item '%s' (loopback, veth, or a rate from 1mbit to 1tbit "
			"such as 500mbit, 1gbit, 10gbit)\n",
			opt, t);
		return -1;
	}
	ls->n++;
	return 0;
}

/* An option whose items are two words, off and on (--compress off,zstd;
 * --dest-memory fresh,reused): each case runs once per item, in order. */
struct two_way {
	const char *off, *on;
	bool v[2];
	size_t n;
};

static int two_way_item(const char *opt, const char *t, void *arg)
{
	struct two_way *w = arg;
	if (strcmp(t, w->off) && strcmp(t, w->on)) {
		fprintf(stderr, "livemig bench migrate: bad %s item '%s' (%s or %s)\n", opt, t, w->off, w->on);
		return -1;
	}
	if (w->n == 2) {
		fprintf(stderr, "livemig bench migrate: %s takes at most 2 items (%s,%s)\n", opt, w->off, w->on);
		return -1;
	}
	w->v[w->n++] = !strcmp(t, w->on);
	return 0;
}

int lm_bench_migrate(int argc, char **argv)
{
	uint64_t sizes[16];
	size_t nsizes = 0;
	bool kinds[NKINDS] = { true, true, true, false };
	bool json = false, uffd = lm_uffd_supported() == 0;
	uint64_t max_res = 10ull << 30;
	const char *size_list = "1G,4G,16G";
	unsigned chans[8] = {1};
	size_t nchans = 1;
	struct links links = { .n = 1 };
	struct two_way comp = { .off = "off", .on = "zstd", .n = 1 };
	struct two_way dests = { .off = "fresh", .on = "reused", .n = 1 };
	static const char *const valued[] = { "--transport", "--source", "--channels", "--sizes", "--max-resident",
					      "--kinds", "--links", "--compress", "--repeat", "--dest-memory" };

	parse_link("loopback", &links.l[0]);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		for (size_t v = 0; v < sizeof(valued) / sizeof(valued[0]); v++) {
			if (!strcmp(a, valued[v]) && i + 1 >= argc) {
				fprintf(stderr, "livemig bench migrate: %s needs a value\n", a);
				return 2;
			}
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--zstd")) {
			comp.n = 1;
			comp.v[0] = true;
		} else if (!strcmp(a, "--compress")) {
			comp.n = 0;
			if (for_each_item(a, argv[++i], two_way_item, &comp))
				return 2;
		} else if (!strcmp(a, "--dest-memory")) {
			dests.n = 0;
			if (for_each_item(a, argv[++i], two_way_item, &dests))
				return 2;
		} else if (!strcmp(a, "--links")) {
			links.n = 0;
			if (for_each_item(a, argv[++i], link_item, &links))
				return 2;
		} else if (!strcmp(a, "--repeat")) {
			char *e;
			long v = strtol(argv[++i], &e, 10);
			if (*e || v < 1 || v > 20) {
				fprintf(stderr, "livemig bench migrate: bad --repeat '%s' (1..20)\n", argv[i]);
				return 2;
			}
			opt_repeat = (unsigned)v;
		} else if (!strcmp(a, "--no-warmup")) {
			opt_warmup = false;
		} else if (!strcmp(a, "--baselines")) {
			opt_baselines = true;
		} else if (!strcmp(a, "--transport")) {
			i++;
			if (strcmp(argv[i], "tcp") && strcmp(argv[i], "unix")) {
				fprintf(stderr, "livemig bench migrate: bad --transport '%s' (tcp or unix)\n", argv[i]);
				return 2;
			}
			opt_unix = !strcmp(argv[i], "unix");
		} else if (!strcmp(a, "--source")) {
			i++;
			if (!strcmp(argv[i], "uffd")) {
				uffd = true;
			} else if (!strcmp(argv[i], "sim")) {
				uffd = false;
			} else {
				fprintf(stderr, "livemig bench migrate: bad --source '%s' (uffd or sim)\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(a, "--channels")) {
			char *cl = strdup(argv[++i]), *sv = NULL;
			if (!cl)
				return 1;
			nchans = 0;
			for (char *t = strtok_r(cl, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
				char *e;
				long v = strtol(t, &e, 10);
				if (*e || v < 1 || v > (long)LM_STREAM_MAX_CHANNELS || nchans == 8) {
					fprintf(stderr, "livemig bench migrate: bad --channels '%s' (1..%u, at most 8 values)\n",
						t, LM_STREAM_MAX_CHANNELS);
					free(cl);
					return 2;
				}
				chans[nchans++] = (unsigned)v;
			}
			free(cl);
			if (!nchans) {
				fprintf(stderr, "livemig bench migrate: --channels needs a value\n");
				return 2;
			}
		} else if (!strcmp(a, "--sizes")) {
			size_list = argv[++i];
		} else if (!strcmp(a, "--max-resident")) {
			if (lm_cli_parse_size(argv[++i], &max_res)) {
				fprintf(stderr,
					"livemig bench migrate: bad --max-resident '%s' (a size: 10G, 512M, ...)\n",
					argv[i]);
				return 2;
			}
		} else if (!strcmp(a, "--kinds")) {
			char *list = strdup(argv[++i]), *save = NULL;
			if (!list)
				return 1;
			memset(kinds, 0, sizeof(kinds));
			int nk = 0;
			for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save), nk++) {
				int k;
				for (k = 0; k < NKINDS && strcmp(t, kind_names[k]); k++)
					;
				if (k == NKINDS) {
					fprintf(stderr,
						"livemig bench migrate: bad --kinds item '%s' (mostly-zero, "
						"half-random, all-random or text)\n",
						t);
					free(list);
					return 2;
				}
				kinds[k] = true;
			}
			free(list);
			if (!nk) {
				fprintf(stderr, "livemig bench migrate: --kinds needs at least one value\n");
				return 2;
			}
		} else {
			fprintf(stderr, "livemig bench migrate: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	char *list = strdup(size_list), *save = NULL;
	if (!list)
		return 1;
	for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t s;
		if (nsizes == 16 || lm_cli_parse_size(t, &s) || s < (1u << 20) || s % LM_PAGE_SIZE) {
			fprintf(stderr,
				"livemig bench migrate: bad --sizes item '%s' (at least 1M, whole pages, at most 16)\n",
				t);
			free(list);
			return 2;
		}
		sizes[nsizes++] = s;
	}
	free(list);
	if (!nsizes) {
		fprintf(stderr, "livemig bench migrate: --sizes needs at least one value\n");
		return 2;
	}

	size_t cap = nsizes * NKINDS * links.n * comp.n * nchans * dests.n;
	struct row *rows = calloc(cap, sizeof(*rows));
	if (!rows)
		return 1;
	/* The rows in loop order: size, kind, link, compression, channels,
	 * destination memory. */
	size_t n = 0;
	for (size_t i = 0; i < nsizes; i++)
		for (int k = 0; k < NKINDS; k++)
			for (size_t li = 0; li < links.n && kinds[k]; li++)
				for (size_t ci = 0; ci < comp.n; ci++)
					for (size_t ch = 0; ch < nchans; ch++)
						for (size_t di = 0; di < dests.n; di++) {
							struct row *r = &rows[n++];
							r->size = sizes[i];
							r->kind = (enum kind)k;
							r->link = &links.l[li];
							r->zstd = comp.v[ci];
							r->channels = chans[ch];
							r->reused = dests.v[di];
						}
	int failed = 0;
	uint64_t warm = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t res = resident(&rows[i]);
		if (res <= max_res && res > warm)
			warm = res;
	}
	warmed = opt_warmup ? warm_up(warm) : 0;
	for (size_t i = 0; i < n; i++)
		plan_skip(&rows[i], max_res);
	/* With --repeat, every case once, then every case again in another
	 * order (a fixed shuffle: this host's memory is fast and slow in
	 * turns, which a fixed order would pin to the same rows), and each row
	 * keeps its best run (and says its worst). */
	size_t *order = calloc(n ? n : 1, sizeof(*order));
	if (!order) {
		free(rows);
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (unsigned rep = 0; rep < opt_repeat; rep++) {
		for (size_t i = n; rep && i > 1; i--) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			size_t j = (size_t)((seed >> 33) % i), tmp = order[i - 1];
			order[i - 1] = order[j];
			order[j] = tmp;
		}
		for (size_t oi = 0; oi < n; oi++) {
			struct row *r = &rows[order[oi]];
			if (r->skipped || (rep && (r->err || !r->rst.digest_ok)))
				continue;
			if (link_prepare(r->link, r->why, sizeof(r->why))) {
				r->skipped = true;
				continue;
			}
			struct row t = *r;
			bool bad = run_case(&t, uffd, !json) || !t.rst.digest_ok;
			if (bad)
				failed++;
			t.runs = r->runs + 1;
			t.worst_s = r->runs && r->worst_s > t.wall_s ? r->worst_s : t.wall_s;
			if (!r->runs || bad || t.wall_s < r->wall_s)
				*r = t;
			else {
				r->runs = t.runs;
				r->worst_s = t.worst_s;
			}
		}
	}
	free(order);
	netns_remove();
	if (json)
		print_json(rows, n, uffd);
	else
		print_table(rows, n, uffd, max_res);
	free(rows);
	return failed ? 1 : 0;
}
