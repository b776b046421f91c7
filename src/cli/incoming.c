/*
 * livemig incoming: wait for one live migration, build the VM from the
 * stream, check it, and only then resume the guest here.
 *
 * Connections, one migration at a time. The main thread polls the
 * listening socket and every connection that has not yet said anything: a
 * connection becomes the migration once its first bytes arrive, and is
 * received in a thread of its own, while the main thread keeps accepting.
 * A connection that stays silent for the handshake timeout is dropped
 * (one idle client cannot hold the door); one that arrives or speaks while
 * a migration is being received gets a REFUSE record ("another migration
 * is in progress") and is closed, and the running one never notices.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/control.h"
#include "livemig/stream.h"
#include "livemig/vmm_migrate.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig incoming --listen URI [options]\n"
		"\n"
		"Listens on URI (tcp:HOST:PORT or unix:PATH) for a live migration\n"
		"(`livemig migrate`, or `migrate` on a VM's control socket), builds the VM\n"
		"from the stream (memory size, layout and vCPU count come from it), checks\n"
		"every record and the digest of all guest RAM, and only then resumes the\n"
		"guest, whose console continues here. A failed or incomplete migration never\n"
		"runs: the error is printed and the next connection is awaited (--once: exit 1).\n"
		"Then it behaves like `livemig run`: exits with the guest's poweroff status,\n"
		"or 10 once the VM migrated on (livemig migrate from its control socket).\n"
		"\n"
		"options:\n"
		"  --listen URI      where to listen (required); tcp port 0 picks a free port\n"
		"  --control PATH    serve the JSON control socket (QMP-like) at PATH\n"
		"  --console FILE    write the guest's serial output to FILE (default stdout)\n"
		"  --once            exit 1 after a failed migration instead of waiting again\n"
		"  --timeout SEC     give up (exit 1) if no migration completed by then; a\n"
		"                    migration still in progress then is cancelled\n"
		"  --idle-timeout MS\n"
		"                    fail a migration whose sender sends (or reads) nothing\n"
		"                    for MS ms (default 10000; 0: never)\n"
		"  --handshake-timeout SEC\n"
		"                    drop a connection that sends nothing for SEC s after it\n"
		"                    connected, and wait on (default 10; 0: never; livemig's\n"
		"                    own, QEMU has none)\n"
		"  --mem SIZE        build the VM (SIZE of RAM, paused) before listening, as\n"
		"                    QEMU's destination is started with its -m: KVM's work to\n"
		"                    register a big guest's memory (0.5-6 s per TiB here)\n"
		"                    then happens before the migration, not in it; a stream\n"
		"                    of another size is refused. Without it the VM is built\n"
		"                    when the stream says its size\n"
		"  --cpus N          with --mem: its vCPUs (default 1); must match the stream\n"
		"  --dirty-source auto|ring|log\n"
		"  --dirty-ring-size N\n"
		"                    how the VM built here tracks writes for a migration\n"
		"                    onward, as for `livemig run` (default auto)\n"
		"  --no-compress     refuse zstd-compressed page data\n"
		"  --require-digest  refuse a stream without the RAM digest (a sender with\n"
		"                    --verify none then sends it anyway)\n"
		"  --json            print the receive report as JSON on stderr\n"
		"  -h, --help        this text\n"
		"\n"
		"When listening, prints `livemig incoming: listening on URI` on stderr\n"
		"(with the real port for tcp port 0). One migration at a time: a sender that\n"
		"connects while one is being received is refused (\"another migration is in\n"
		"progress\"). unix:PATH and --control PATH replace only a stale socket (one\n"
		"nobody listens on); a file or a live socket there is refused. Both sockets\n"
		"are created with mode 0600.\n");
}

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "livemig incoming: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see livemig incoming --help)\n");
	return 2;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A termination signal is pending (they are blocked: see lm_cli_block_signals). */
static bool terminated(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	struct timespec zero = {0, 0};
	return sigtimedwait(&set, NULL, &zero) > 0;
}

/*
 * What cancels a migration in progress: --timeout expiring (a timerfd
 * armed for the deadline) or a termination signal (a signalfd: it only
 * watches, terminated() still takes the signal). Both behind one epoll fd,
 * which is readable when either is, for the receiver's cancel_fd. Returns
 * the epoll fd (the others in *tfd, *sfd; -1 when unused) or -1 after
 * printing why.
 */
static int cancel_fds(const struct timespec *deadline, int *tfd, int *sfd)
{
	*tfd = *sfd = -1;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		goto fail;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	*sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN};
	if (*sfd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, *sfd, &ev) < 0)
		goto fail;
	if (deadline) {
		struct itimerspec its = {.it_value = *deadline};
		*tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (*tfd < 0 || timerfd_settime(*tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0 ||
		    epoll_ctl(ep, EPOLL_CTL_ADD, *tfd, &ev) < 0)
			goto fail;
	}
	return ep;
fail:
	fprintf(stderr, "livemig incoming: cannot set up the timeout: %s\n", strerror(errno));
	if (*tfd >= 0)
		close(*tfd);
	if (*sfd >= 0)
		close(*sfd);
	if (ep >= 0)
		close(ep);
	*tfd = *sfd = -1;
	return -1;
}

static void report(const struct lm_receive_stats *st, bool json)
{
	if (json) {
		fprintf(stderr,
			"{\"status\":\"completed\",\"total-time\":%llu,\"received\":%llu,"
			"\"pages-data\":%llu,\"pages-zero\":%llu,\"rounds\":%llu,\"devices\":%llu,"
			"\"capabilities\":%llu,\"digest\":\"%s\",\"fill\":\"%s\",\"postcopy\":%s,"
			"\"postcopy-pending\":%llu,\"postcopy-requests\":%llu,\"postcopy-faults\":%llu,"
			"\"postcopy-zero-faults\":%llu,\"postcopy-blocktime\":%llu,"
			"\"postcopy-latency-p50-us\":%llu,\"postcopy-latency-p99-us\":%llu,"
			"\"postcopy-latency-max-us\":%llu,\"postcopy-time\":%llu,\"multifd-channels\":%u,"
			"\"catch-ups\":%llu}\n",
			(unsigned long long)st->total_time_ms, (unsigned long long)st->received,
			(unsigned long long)st->pages_data, (unsigned long long)st->pages_zero,
			(unsigned long long)st->rounds, (unsigned long long)st->devices,
			(unsigned long long)st->caps, st->digest_ok ? "ok" : "none", st->fill,
			st->postcopy ? "true" : "false", (unsigned long long)st->postcopy_pending,
			(unsigned long long)st->postcopy_requests, (unsigned long long)st->postcopy_faults,
			(unsigned long long)st->postcopy_zero_faults, (unsigned long long)st->postcopy_blocktime_us / 1000,
			(unsigned long long)st->postcopy_latency_p50_us, (unsigned long long)st->postcopy_latency_p99_us,
			(unsigned long long)st->postcopy_latency_max_us, (unsigned long long)st->postcopy_time_ms,
			st->channels, (unsigned long long)st->catch_ups);
		return;
	}
	fprintf(stderr,
		"livemig incoming: migration received in %llu ms: %.1f MiB on the wire, %llu data "
		"pages, %llu zero pages, %llu rounds, %s, pages placed by %s%s%.0u%s; resuming the guest\n",
		(unsigned long long)st->total_time_ms, (double)st->received / 1048576.0,
		(unsigned long long)st->pages_data, (unsigned long long)st->pages_zero,
		(unsigned long long)st->rounds,
		st->digest_ok ? "digest ok" : "no digest (the sender asked for none)", st->fill,
		st->channels ? ", " : "", st->channels, st->channels ? " channels" : "");
	if (st->postcopy)
		fprintf(stderr,
			"livemig incoming: post-copy: the guest ran here %llu ms before its last page; %llu pages "
			"followed it, %llu asked for (%llu faults on them, %llu on never-written pages), page "
			"wait p50 %llu us, p99 %llu us, max %llu us, blocktime %llu us\n",
			(unsigned long long)st->postcopy_time_ms, (unsigned long long)st->postcopy_pending,
			(unsigned long long)st->postcopy_requests, (unsigned long long)st->postcopy_faults,
			(unsigned long long)st->postcopy_zero_faults, (unsigned long long)st->postcopy_latency_p50_us,
			(unsigned long long)st->postcopy_latency_p99_us, (unsigned long long)st->postcopy_latency_max_us,
			(unsigned long long)st->postcopy_blocktime_us);
}

static bool readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return fd >= 0 && poll(&p, 1, 0) > 0;
}

static void close_fds(int *a, int *b, int *c)
{
	int *fds[] = {a, b, c};
	for (int i = 0; i < 3; i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

/* ---- connections ------------------------------------------------------------ */

/* Connections accepted that have not spoken yet, and refused ones being
 * closed (their last bytes read, so that closing does not reset the
 * connection before the sender has read our REFUSE). */
#define MAX_WAITING 8
#define MAX_REFUSING 8
/* A refused sender gets this long to read the REFUSE and hang up. */
#define REFUSE_LINGER_S 2.0

struct conn {
	int fd;
	double since;
};

/* The migration being received, in its own thread. */
struct rx {
	pthread_t th;
	bool running;
	int fd;
	const struct lm_vm_incoming_config *cfg;
	struct lm_vm *vm;
	/* --mem/--cpus: the VM built ahead for the next receive, and its shape. */
	uint64_t pre_mem;
	unsigned pre_cpus;
	struct lm_vm *ready;
	struct lm_vm *taken; /* ready, handed to the running receive */
	struct lm_receive_stats st;
	int r;
	int done[2]; /* a pipe: readable when the receive ended */
	/* Post-copy recovery (docs/stream.md 3.15): connections that start
	 * with RESUME go to the running receive through this pipe (an int fd
	 * each), which its reconnect callback reads; paused: it waits for
	 * one (atomic); recover_lfd: the listener migrate-recover opened. */
	int conn[2];
	/* Channels (multifd): connections that start with CHANNEL go to the
	 * running receive through this pipe, read by its accept_channel. */
	int chan[2];
	int paused;
	int recover_lfd;
};

/*
 * The receive's reconnect callback: its post-copy connection broke. The
 * guest waits on the pages it still lacks; the next connection to our
 * --listen address that starts with RESUME continues it. A signal or
 * --timeout (cancel_fd) gives up.
 */
static int rx_wait_conn(struct rx *x);

static int rx_reconnect(void *arg, const char *why)
{
	struct rx *x = arg;
	fprintf(stderr,
		"livemig incoming: post-copy paused: %s. The guest waits for its missing pages; waiting for the "
		"source to reconnect (livemig migrate --resume) to this --listen address, or to the one "
		"migrate-recover opens\n",
		why);
	__atomic_store_n(&x->paused, 1, __ATOMIC_RELEASE);
	int fd = rx_wait_conn(x);
	__atomic_store_n(&x->paused, 0, __ATOMIC_RELEASE);
	return fd;
}

/* The receive's accept_channel: the next CHANNEL connection (chan pipe). */
static int rx_accept_channel(void *arg, int timeout_ms)
{
	struct rx *x = arg;
	struct pollfd pf[2] = {{.fd = x->chan[0], .events = POLLIN}, {.fd = x->cfg->recv.cancel_fd, .events = POLLIN}};
	for (;;) {
		int n = poll(pf, 2, timeout_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		if (pf[1].revents)
			return -ECANCELED;
		int fd;
		if (read(x->chan[0], &fd, sizeof(fd)) == (ssize_t)sizeof(fd))
			return fd;
	}
}

/* The next connection handed over (conn pipe), or -ECANCELED. */
static int rx_wait_conn(struct rx *x)
{
	for (;;) {
		struct pollfd pf[2] = {{.fd = x->conn[0], .events = POLLIN},
				       {.fd = x->cfg->recv.cancel_fd, .events = POLLIN}};
		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			return -errno;
		if (pf[1].revents)
			return -ECANCELED;
		int fd;
		if (pf[0].revents && read(x->conn[0], &fd, sizeof(fd)) == (ssize_t)sizeof(fd)) {
			fprintf(stderr, "livemig incoming: the source reconnected; post-copy goes on\n");
			return fd;
		}
	}
}

/* migrate-recover's listener: the first connection it accepts goes to
 * the paused receive (through the conn pipe), then it closes. */
static void *recover_main(void *arg)
{
	struct rx *x = arg;
	int lfd = x->recover_lfd;
	int fd = lm_transport_accept(lfd, 0);
	if (fd >= 0 && write(x->conn[1], &fd, sizeof(fd)) != (ssize_t)sizeof(fd))
		close(fd);
	close(lfd);
	__atomic_store_n(&x->recover_lfd, -1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * QEMU's migrate-recover {"uri": URI} on the destination: a post-copy
 * paused here (its connection broke) also takes the source's recovery
 * connection at URI, for when the --listen address cannot be reached.
 */
static int cmd_migrate_recover(void *ctx, struct json_object *args, struct json_object **ret, char *err,
			       size_t errlen)
{
	struct rx *x = ctx;
	const char *uri_s = NULL;
	if (lm_control_only_arg(args, "uri", err, errlen) < 0)
		return -EINVAL;
	int r = lm_control_arg_str(args, "uri", &uri_s, err, errlen);
	if (r == -ENOENT)
		snprintf(err, errlen, "Parameter 'uri' is missing (tcp:HOST:PORT or unix:PATH)");
	if (r < 0)
		return -EINVAL;
	struct lm_uri uri;
	if ((r = lm_cli_uri_parse(uri_s, &uri, err, errlen)) < 0)
		return r;
	if (!__atomic_load_n(&x->paused, __ATOMIC_ACQUIRE)) {
		snprintf(err, errlen, "No post-copy is paused here: nothing to recover");
		return -EINVAL;
	}
	if (__atomic_load_n(&x->recover_lfd, __ATOMIC_ACQUIRE) >= 0) {
		snprintf(err, errlen, "A migrate-recover listener is open already");
		return -EBUSY;
	}
	int lfd = lm_transport_listen(&uri);
	if (lfd < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", uri_s, lm_strerror(lfd));
		return lfd;
	}
	x->recover_lfd = lfd;
	pthread_t th;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&th, &a, recover_main, x);
	pthread_attr_destroy(&a);
	if (r < 0) {
		close(lfd);
		x->recover_lfd = -1;
		snprintf(err, errlen, "cannot start the listener: %s", lm_strerror(r));
		return r;
	}
	(void)ret;
	return 0;
}

/* Connections handed over that the receive never took. */
static void rx_drain_conns(struct rx *x)
{
	int fd;
	while (read(x->conn[0], &fd, sizeof(fd)) == (ssize_t)sizeof(fd))
		close(fd);
	while (x->chan[0] >= 0 && read(x->chan[0], &fd, sizeof(fd)) == (ssize_t)sizeof(fd))
		close(fd);
}

static void *rx_main(void *arg)
{
	struct rx *x = arg;
	struct lm_vm_incoming_config c = *x->cfg;
	c.vm = x->taken;
	c.recv.reconnect = rx_reconnect;
	c.recv.reconnect_arg = x;
	c.recv.accept_channel = rx_accept_channel;
	c.recv.channel_arg = x;
	x->r = lm_vm_incoming(x->fd, &c, &x->vm, &x->st);
	ssize_t w = write(x->done[1], "d", 1);
	(void)w;
	return NULL;
}

/* --mem: build the next receive's VM now, outside any migration. */
static int prebuild(struct rx *x)
{
	if (!x->pre_mem || x->ready)
		return 0;
	if (lm_cli_check_host("incoming", x->pre_mem) < 0)
		return -ENOMEM;
	struct lm_vm_config vc = {
	    .mem_size = x->pre_mem,
	    .ncpus = x->pre_cpus,
	    .console_fd = x->cfg->console_fd,
	    .console_fn = x->cfg->console_fn,
	    .console_opaque = x->cfg->console_opaque,
	    .dirty_mode = x->cfg->dirty_mode,
	    .dirty_ring_entries = x->cfg->dirty_ring_entries,
	};
	struct lm_vm *vm;
	int err = lm_vm_new(&vc, &vm);
	if (err == 0 && (err = lm_vm_pause(vm)) < 0)
		lm_vm_free(vm);
	if (err < 0) {
		fprintf(stderr, "livemig incoming: cannot build the VM for --mem: %s\n", lm_strerror(err));
		return err;
	}
	x->ready = vm;
	return 0;
}

static int rx_start(struct rx *x, int fd)
{
	int perr = prebuild(x);
	if (perr < 0)
		return perr;
	x->taken = x->ready;
	x->ready = NULL;
	x->fd = fd;
	x->vm = NULL;
	x->r = 0;
	memset(&x->st, 0, sizeof(x->st));
	int err = pthread_create(&x->th, NULL, rx_main, x);
	if (err) {
		x->fd = -1; /* the caller closes it */
		x->ready = x->taken;
		x->taken = NULL;
		return -err;
	}
	x->running = true;
	return 0;
}

/* After done[0] became readable. */
static void rx_join(struct rx *x)
{
	char b[8];
	while (read(x->done[0], b, sizeof(b)) > 0)
		;
	pthread_join(x->th, NULL);
	x->running = false;
	close(x->fd);
	x->fd = -1;
	rx_drain_conns(x);
}

/* Answers a sender that came while a migration is being received: REFUSE
 * with the reason (sent at once: the sender reads it after its HELLO), no
 * more writes, and the connection kept until the sender hangs up or
 * REFUSE_LINGER_S passed. Returns false when fd was closed right away. */
static bool refuse(int fd)
{
	uint8_t mem[LM_FRAME_HDR + 8 + LM_STREAM_MAX_TEXT + 8];
	lm_buf b;
	lm_buf_init_fixed(&b, mem, sizeof(mem));
	if (lm_stream_put_refuse(&b, EBUSY, "another migration is in progress") == 0) {
		ssize_t w = send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)w;
	}
	if (shutdown(fd, SHUT_WR) < 0) {
		close(fd);
		return false;
	}
	return true;
}

/* refuse(), and the connection kept in v (at most MAX_REFUSING) to linger. */
static void refuse_conn(struct conn *v, unsigned *n, int fd, double now)
{
	fprintf(stderr, "livemig incoming: refused a second sender: another migration is in "
			"progress\n");
	if (!refuse(fd))
		return;
	if (*n == MAX_REFUSING) {
		close(fd);
		return;
	}
	v[(*n)++] = (struct conn){fd, now};
}

static void conn_drop(struct conn *v, unsigned *n, unsigned i)
{
	close(v[i].fd);
	v[i] = v[--*n];
}

static void conns_close(struct conn *v, unsigned *n)
{
	while (*n)
		conn_drop(v, n, *n - 1);
}

/* The unix: listening socket's file, removed at the end only if it is
 * still the one we created. */
static void unlink_ours(const char *path, const struct stat *ours)
{
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == ours->st_dev &&
	    st.st_ino == ours->st_ino)
		unlink(path);
}

int lm_cli_incoming(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_CONTROL, O_CONSOLE, O_ONCE, O_TIMEOUT, O_IDLE, O_NOCOMP, O_JSON, O_REQDIGEST,
	       O_HANDSHAKE, O_DIRTY, O_RING, O_MEM, O_CPUS };
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, O_LISTEN},
	    {"control", required_argument, NULL, O_CONTROL},
	    {"console", required_argument, NULL, O_CONSOLE},
	    {"once", no_argument, NULL, O_ONCE},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"idle-timeout", required_argument, NULL, O_IDLE},
	    {"handshake-timeout", required_argument, NULL, O_HANDSHAKE},
	    {"no-compress", no_argument, NULL, O_NOCOMP},
	    {"dirty-source", required_argument, NULL, O_DIRTY},
	    {"mem", required_argument, NULL, O_MEM},
	    {"cpus", required_argument, NULL, O_CPUS},
	    {"dirty-ring-size", required_argument, NULL, O_RING},
	    {"require-digest", no_argument, NULL, O_REQDIGEST},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_s = NULL, *control = NULL, *console = NULL;
	bool once = false, json = false, wait_commit = false;
	double timeout = 0, handshake_timeout = 10;
	struct lm_vm_incoming_config cfg = {.console_fd = STDOUT_FILENO};
	uint64_t pre_mem = 0;
	unsigned pre_cpus = 0;
	int c;
	char *end;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN: listen_s = optarg; break;
		case O_CONTROL: control = optarg; break;
		case O_CONSOLE: console = optarg; break;
		case O_ONCE: once = true; break;
		case O_TIMEOUT:
			timeout = strtod(optarg, &end);
			if (*end || end == optarg || timeout <= 0)
				return bad("bad --timeout '%s' (seconds)", optarg);
			break;
		case O_IDLE: {
			long long ms = strtoll(optarg, &end, 10);
			if (*end || end == optarg || ms < 0 || ms > INT32_MAX)
				return bad("bad --idle-timeout '%s' (milliseconds, 0: never)", optarg);
			cfg.recv.idle_timeout_ms = ms ? (uint64_t)ms : LM_TIMEOUT_NEVER;
			break;
		}
		case O_HANDSHAKE:
			handshake_timeout = strtod(optarg, &end);
			if (*end || end == optarg || !(handshake_timeout >= 0) || handshake_timeout > 86400)
				return bad("bad --handshake-timeout '%s' (seconds, 0: never)", optarg);
			break;
		case O_NOCOMP: cfg.recv.caps_disabled |= LM_CAP_ZSTD; break;
		case O_MEM:
			if (lm_cli_parse_size(optarg, &pre_mem) < 0 || pre_mem < (2ull << 20) ||
			    pre_mem > (16ull << 40) || pre_mem % 4096)
				return bad("bad --mem '%s' (2M..16T, a multiple of 4K)", optarg);
			break;
		case O_CPUS: {
			long v = strtol(optarg, &end, 10);
			if (*end || end == optarg || v < 1 || v > LM_VM_MAX_CPUS)
				return bad("bad --cpus '%s'", optarg);
			pre_cpus = (unsigned)v;
			break;
		}
		case O_DIRTY:
			if (lm_vm_dirty_mode_parse(optarg, &cfg.dirty_mode) < 0)
				return bad("bad --dirty-source '%s' (auto, ring or log)", optarg);
			break;
		case O_RING:
			if (lm_cli_parse_ring_size(optarg, &cfg.dirty_ring_entries) < 0)
				return bad("bad --dirty-ring-size '%s' (a power of two, 65536..1048576)", optarg);
			break;
		case O_REQDIGEST: cfg.recv.caps_disabled |= LM_CAP_NO_DIGEST; break;
		case O_JSON: json = true; break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			return bad("option '%s' needs a value", argv[optind - 1]);
		default:
			return bad("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad("unexpected argument '%s'", argv[optind]);
	if (!listen_s)
		return bad("%s", "--listen URI is required");
	if (pre_cpus && !pre_mem)
		return bad("%s", "--cpus needs --mem (the VM built ahead)");
	struct lm_uri uri;
	char uri_err[256];
	if (lm_cli_uri_parse(listen_s, &uri, uri_err, sizeof(uri_err)) < 0)
		return bad("--listen: %s", uri_err);

	int ret = 1, console_fd = -1, lfd = -1, cancel_fd = -1, timer_fd = -1, sig_fd = -1;
	struct lm_vm *vm = NULL;
	struct lm_cli_ctl ctl = {0};
	struct rx rx = {.fd = -1, .cfg = &cfg, .done = {-1, -1}, .conn = {-1, -1}, .chan = {-1, -1}, .recover_lfd = -1,
			.pre_mem = pre_mem, .pre_cpus = pre_cpus ? pre_cpus : 1};
	struct conn waiting[MAX_WAITING], refusing[MAX_REFUSING];
	unsigned nwaiting = 0, nrefusing = 0;
	struct stat lst;
	bool have_lst = false;
	if (console) {
		console_fd = lm_cli_open_console("incoming", console);
		if (console_fd < 0)
			return 1;
		cfg.console_fd = console_fd;
	}
	/* Before any thread exists: every thread inherits the mask and the
	 * signals are taken where we choose (the accept loop, then the serve
	 * loop's signal thread). */
	lm_cli_block_signals();
	/* The control socket first, so a client can watch the whole thing
	 * (query-status says "inmigrate" until the VM has arrived). */
	if (lm_cli_ctl_open("incoming", control, &ctl) < 0)
		goto out;
	if (ctl.ctl && lm_control_register(ctl.ctl, "migrate-recover", cmd_migrate_recover, &rx) < 0)
		goto out;
	lfd = lm_transport_listen(&uri);
	if (lfd < 0) {
		char why[512];
		if (uri.kind == LM_URI_UNIX)
			fprintf(stderr, "livemig incoming: cannot listen on %s: %s\n", listen_s,
				lm_cli_socket_error(uri.path, lfd, why, sizeof(why)));
		else
			fprintf(stderr, "livemig incoming: cannot listen on %s: %s\n", listen_s,
				lm_strerror(lfd));
		lfd = -1;
		goto out;
	}
	if (uri.kind == LM_URI_UNIX)
		have_lst = lstat(uri.path, &lst) == 0;
	/* Before "listening": a sender that connects finds the VM ready. */
	if (prebuild(&rx) < 0)
		goto out;
	if (pipe2(rx.done, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(rx.conn, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    pipe2(rx.chan, O_CLOEXEC | O_NONBLOCK) < 0) {
		fprintf(stderr, "livemig incoming: pipe: %s\n", strerror(errno));
		goto out;
	}
	/* As a URI `livemig migrate --to` takes: tcp:[::1]:PORT for IPv6. */
	char where[400];
	lm_uri_format(&uri, uri.kind == LM_URI_TCP ? lm_transport_local_port(lfd) : -1, where, sizeof(where));
	fprintf(stderr, "livemig incoming: listening on %s\n", where);

	/* --timeout bounds everything from here: the waits for a connection
	 * and a migration in progress alike (through the cancel fd). */
	double start = now_s();
	struct timespec deadline;
	if (timeout > 0) {
		double at = start + timeout;
		deadline.tv_sec = (time_t)at;
		deadline.tv_nsec = (long)((at - (double)deadline.tv_sec) * 1e9);
	}
	cancel_fd = cancel_fds(timeout > 0 ? &deadline : NULL, &timer_fd, &sig_fd);
	if (cancel_fd < 0)
		goto out;
	cfg.recv.cancel_fd = cancel_fd;
	for (;;) {
		/* While a receive runs, a signal or the --timeout cancel it
		 * (through cancel_fd) and its end is handled below; the
		 * signal must stay pending until then. */
		if (!rx.running) {
			if (terminated())
				goto out;
			if (timeout > 0 && now_s() - start > timeout) {
				fprintf(stderr, "livemig incoming: no migration completed within %g s\n",
					timeout);
				goto out;
			}
		}
		struct pollfd pf[2 + MAX_WAITING + MAX_REFUSING];
		unsigned n = 0, nw = nwaiting, nr = nrefusing;
		pf[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
		pf[n++] = (struct pollfd){.fd = rx.done[0], .events = POLLIN};
		for (unsigned i = 0; i < nw; i++)
			pf[n++] = (struct pollfd){.fd = waiting[i].fd, .events = POLLIN};
		for (unsigned i = 0; i < nr; i++)
			pf[n++] = (struct pollfd){.fd = refusing[i].fd, .events = POLLIN};
		int pr = poll(pf, n, 200);
		if (pr < 0 && errno != EINTR) {
			fprintf(stderr, "livemig incoming: poll: %s\n", strerror(errno));
			goto out;
		}
		if (pr < 0)
			continue;
		double now = now_s();

		/* The migration being received ended. */
		if (rx.running && (pf[1].revents & POLLIN)) {
			rx_join(&rx);
			int r = rx.r;
			vm = rx.vm;
			if (r == 0) {
				report(&rx.st, json);
				break;
			}
			if (r < 0 && vm && rx.st.postcopy_complete) {
				fprintf(stderr,
					"livemig incoming: POST-COPY CHECK FAILED: %s. The guest runs here on "
					"what arrived; the source's copy is paused at the switch\n",
					rx.st.error);
				report(&rx.st, json);
				break;
			}
			if (r == -ENOLINK && vm) {
				/* Verified but uncommitted: never run by itself,
				 * never dropped (docs/stream.md 3.11). */
				fprintf(stderr,
					"livemig incoming: %s. The guest waits here paused (query-status: "
					"inmigrate-wait-commit): `cont` runs it here, only if the source is gone "
					"or not running it; `quit` drops this copy\n",
					rx.st.error);
				wait_commit = true;
				break;
			}
			if (r == -ECANCELED && readable(timer_fd)) {
				fprintf(stderr,
					"livemig incoming: no migration completed within %g s, giving up the one "
					"in progress: %s\n",
					timeout, rx.st.error[0] ? rx.st.error : lm_strerror(r));
				goto out;
			}
			if (r == -ECANCELED && terminated())
				goto out;
			fprintf(stderr, "livemig incoming: migration failed: %s\n",
				rx.st.error[0] ? rx.st.error : lm_strerror(r));
			if (once)
				goto out;
			fprintf(stderr, "livemig incoming: waiting for another migration\n");
		}

		/* Refused senders: read what they still send until they hang up. */
		for (unsigned i = nr; i-- > 0;) {
			bool drop = now - refusing[i].since > REFUSE_LINGER_S;
			if (pf[2 + nw + i].revents) {
				char junk[4096];
				ssize_t k = recv(refusing[i].fd, junk, sizeof(junk), MSG_DONTWAIT);
				drop |= k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR);
			}
			if (drop)
				conn_drop(refusing, &nrefusing, i);
		}

		/* Connections that had not spoken: the first to speak is the
		 * migration (unless one is running: refused); silent for the
		 * handshake timeout, dropped. */
		for (unsigned i = nw; i-- > 0;) {
			if (pf[2 + i].revents) {
				char b;
				ssize_t k = recv(waiting[i].fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
				if (k < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				if (k <= 0) {
					/* Hung up without a word (such as another
					 * livemig checking whether this socket is
					 * live): not a failed migration, --once
					 * included. */
					fprintf(stderr, "livemig incoming: a connection closed before sending "
							"anything; waiting on\n");
					conn_drop(waiting, &nwaiting, i);
					continue;
				}
				int fd = waiting[i].fd;
				waiting[i] = waiting[--nwaiting];
				uint8_t t[2] = {0, 0};
				bool peeked = recv(fd, t, 2, MSG_PEEK | MSG_DONTWAIT) == 2;
				bool resume = peeked && (t[0] | t[1] << 8) == LM_REC_RESUME;
				bool channel = peeked && (t[0] | t[1] << 8) == LM_REC_CHANNEL;
				if (channel) {
					/* A channel of the migration in progress: its
					 * receive checks the session (or closes it). */
					if (!rx.running || write(rx.chan[1], &fd, sizeof(fd)) != (ssize_t)sizeof(fd))
						close(fd);
				} else if (rx.running && resume) {
					/* The source reconnects a post-copy: the
					 * running receive takes it (or refuses it if
					 * the session is not its). */
					if (write(rx.conn[1], &fd, sizeof(fd)) != (ssize_t)sizeof(fd))
						close(fd);
				} else if (!rx.running) {
					int err = rx_start(&rx, fd);
					if (err < 0) {
						fprintf(stderr, "livemig incoming: cannot start the receive: %s\n",
							strerror(-err));
						close(fd);
					}
				} else {
					refuse_conn(refusing, &nrefusing, fd, now);
				}
				continue;
			}
			if (handshake_timeout > 0 && now - waiting[i].since > handshake_timeout) {
				fprintf(stderr,
					"livemig incoming: dropped a connection that sent nothing for %g s "
					"(--handshake-timeout)\n",
					handshake_timeout);
				conn_drop(waiting, &nwaiting, i);
			}
		}

		/* New connections. */
		if (pf[0].revents & POLLIN) {
			int fd = lm_transport_accept(lfd, 1);
			if (fd == -ETIMEDOUT || fd == -EINTR || fd == -EAGAIN || fd == -ECONNABORTED)
				continue;
			if (fd < 0) {
				fprintf(stderr, "livemig incoming: accept: %s\n", lm_strerror(fd));
				goto out;
			}
			/* Even while a receive runs: a post-copy's recovery
			 * connection is told from a second sender by its first
			 * frame (above). */
			if (nwaiting < MAX_WAITING) {
				waiting[nwaiting++] = (struct conn){fd, now};
			} else {
				fprintf(stderr, "livemig incoming: dropped a connection: %d others are "
						"connected and silent\n",
					MAX_WAITING);
				close(fd);
			}
		}
	}
	conns_close(waiting, &nwaiting);
	conns_close(refusing, &nrefusing);
	close(lfd);
	lfd = -1;
	if (have_lst)
		unlink_ours(uri.path, &lst);
	close_fds(&cancel_fd, &timer_fd, &sig_fd);
	close_fds(&rx.done[0], &rx.done[1], &rx.fd);
	if (rx.conn[0] >= 0)
		rx_drain_conns(&rx);
	close_fds(&rx.conn[0], &rx.conn[1], &lfd);
	close_fds(&rx.chan[0], &rx.chan[1], &lfd);
	ret = lm_cli_serve_vm("incoming", vm, &ctl, wait_commit ? LM_SERVE_WAIT_COMMIT : LM_SERVE_MIGRATED_IN);
out:
	if (rx.running) {
		/* Only after a failed poll: the receive ends by itself (its
		 * idle timeout) at the latest. */
		pthread_join(rx.th, NULL);
		rx.running = false;
		if (!vm)
			vm = rx.vm;
	}
	conns_close(waiting, &nwaiting);
	conns_close(refusing, &nrefusing);
	close_fds(&cancel_fd, &timer_fd, &sig_fd);
	close_fds(&rx.done[0], &rx.done[1], &rx.fd);
	/* A migrate-recover listener still waiting: wake its accept. */
	int rl = __atomic_load_n(&rx.recover_lfd, __ATOMIC_ACQUIRE);
	if (rl >= 0)
		shutdown(rl, SHUT_RDWR);
	if (rx.conn[0] >= 0)
		rx_drain_conns(&rx);
	int none = -1;
	close_fds(&rx.conn[0], &rx.conn[1], &none);
	close_fds(&rx.chan[0], &rx.chan[1], &none);
	lm_cli_ctl_close(&ctl);
	if (lfd >= 0) {
		close(lfd);
		if (have_lst)
			unlink_ours(uri.path, &lst);
	}
	lm_vm_free(vm);
	lm_vm_free(rx.ready);
	if (console_fd >= 0)
		close(console_fd);
	return ret;
}
