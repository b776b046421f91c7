/*
 * livemig incoming: wait for one live migration, build the VM from the
 * stream, check it, and only then resume the guest here.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
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
		"Then it behaves like `livemig run`: exits with the guest's poweroff status.\n"
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
		"  --no-compress     refuse zstd-compressed page data\n"
		"  --require-digest  refuse a stream without the RAM digest (a sender with\n"
		"                    --verify none then sends it anyway)\n"
		"  --json            print the receive report as JSON on stderr\n"
		"  -h, --help        this text\n"
		"\n"
		"When listening, prints `livemig incoming: listening on URI` on stderr\n"
		"(with the real port for tcp port 0).\n");
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
			"\"capabilities\":%llu,\"digest\":\"%s\",\"fill\":\"%s\"}\n",
			(unsigned long long)st->total_time_ms, (unsigned long long)st->received,
			(unsigned long long)st->pages_data, (unsigned long long)st->pages_zero,
			(unsigned long long)st->rounds, (unsigned long long)st->devices,
			(unsigned long long)st->caps, st->digest_ok ? "ok" : "none", st->fill);
		return;
	}
	fprintf(stderr,
		"livemig incoming: migration received in %llu ms: %.1f MiB on the wire, %llu data "
		"pages, %llu zero pages, %llu rounds, %s, pages placed by %s; resuming the guest\n",
		(unsigned long long)st->total_time_ms, (double)st->received / 1048576.0,
		(unsigned long long)st->pages_data, (unsigned long long)st->pages_zero,
		(unsigned long long)st->rounds,
		st->digest_ok ? "digest ok" : "no digest (the sender asked for none)", st->fill);
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

int lm_cli_incoming(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_CONTROL, O_CONSOLE, O_ONCE, O_TIMEOUT, O_IDLE, O_NOCOMP, O_JSON, O_REQDIGEST };
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, O_LISTEN},
	    {"control", required_argument, NULL, O_CONTROL},
	    {"console", required_argument, NULL, O_CONSOLE},
	    {"once", no_argument, NULL, O_ONCE},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"idle-timeout", required_argument, NULL, O_IDLE},
	    {"no-compress", no_argument, NULL, O_NOCOMP},
	    {"require-digest", no_argument, NULL, O_REQDIGEST},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_s = NULL, *control = NULL, *console = NULL;
	bool once = false, json = false, wait_commit = false;
	double timeout = 0;
	struct lm_vm_incoming_config cfg = {.console_fd = STDOUT_FILENO};
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
		case O_NOCOMP: cfg.recv.caps_disabled |= LM_CAP_ZSTD; break;
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
	struct lm_uri uri;
	if (lm_uri_parse(listen_s, &uri) < 0)
		return bad("bad --listen '%s' (tcp:HOST:PORT or unix:PATH)", listen_s);

	int ret = 1, console_fd = -1, lfd = -1, cancel_fd = -1, timer_fd = -1, sig_fd = -1;
	struct lm_vm *vm = NULL;
	struct lm_cli_ctl ctl = {0};
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
	lfd = lm_transport_listen(&uri);
	if (lfd < 0) {
		fprintf(stderr, "livemig incoming: cannot listen on %s: %s\n", listen_s, lm_strerror(lfd));
		goto out;
	}
	if (uri.kind == LM_URI_TCP)
		fprintf(stderr, "livemig incoming: listening on tcp:%s:%d\n", uri.host,
			lm_transport_local_port(lfd));
	else
		fprintf(stderr, "livemig incoming: listening on unix:%s\n", uri.path);

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
		if (terminated())
			goto out;
		if (timeout > 0 && now_s() - start > timeout) {
			fprintf(stderr, "livemig incoming: no migration completed within %g s\n", timeout);
			goto out;
		}
		int fd = lm_transport_accept(lfd, 200);
		if (fd == -ETIMEDOUT || fd == -EINTR)
			continue;
		if (fd < 0) {
			fprintf(stderr, "livemig incoming: accept: %s\n", lm_strerror(fd));
			goto out;
		}
		struct lm_receive_stats st;
		int r = lm_vm_incoming(fd, &cfg, &vm, &st);
		close(fd);
		if (r == 0) {
			report(&st, json);
			break;
		}
		if (r == -ENOLINK && vm) {
			/* Verified but uncommitted: never run by itself, never
			 * dropped (docs/stream.md 3.11). */
			fprintf(stderr,
				"livemig incoming: %s. The guest waits here paused (query-status: "
				"inmigrate-wait-commit): `cont` runs it here, only if the source is gone or "
				"not running it; `quit` drops this copy\n",
				st.error);
			wait_commit = true;
			break;
		}
		if (r == -ECANCELED && readable(timer_fd)) {
			fprintf(stderr,
				"livemig incoming: no migration completed within %g s, giving up the one in "
				"progress: %s\n",
				timeout, st.error[0] ? st.error : lm_strerror(r));
			goto out;
		}
		if (r == -ECANCELED && terminated())
			goto out;
		fprintf(stderr, "livemig incoming: migration failed: %s\n",
			st.error[0] ? st.error : lm_strerror(r));
		if (once)
			goto out;
		fprintf(stderr, "livemig incoming: waiting for another migration\n");
	}
	close(lfd);
	lfd = -1;
	if (uri.kind == LM_URI_UNIX)
		unlink(uri.path);
	close_fds(&cancel_fd, &timer_fd, &sig_fd);
	ret = lm_cli_serve_vm("incoming", vm, &ctl, wait_commit ? LM_SERVE_WAIT_COMMIT : LM_SERVE_MIGRATED_IN);
out:
	close_fds(&cancel_fd, &timer_fd, &sig_fd);
	lm_cli_ctl_close(&ctl);
	if (lfd >= 0) {
		close(lfd);
		if (uri.kind == LM_URI_UNIX)
			unlink(uri.path);
	}
	lm_vm_free(vm);
	if (console_fd >= 0)
		close(console_fd);
	return ret;
}
