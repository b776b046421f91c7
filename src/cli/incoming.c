/*
 * livemig incoming: wait for one live migration, build the VM from the
 * stream, check it, and only then resume the guest here.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
		"  --timeout SEC     give up (exit 1) if no migration completed by then\n"
		"  --no-compress     refuse zstd-compressed page data\n"
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

static void report(const struct lm_receive_stats *st, bool json)
{
	if (json) {
		fprintf(stderr,
			"{\"status\":\"completed\",\"total-time\":%llu,\"received\":%llu,"
			"\"pages-data\":%llu,\"pages-zero\":%llu,\"rounds\":%llu,\"devices\":%llu,"
			"\"capabilities\":%llu,\"digest\":\"ok\"}\n",
			(unsigned long long)st->total_time_ms, (unsigned long long)st->received,
			(unsigned long long)st->pages_data, (unsigned long long)st->pages_zero,
			(unsigned long long)st->rounds, (unsigned long long)st->devices,
			(unsigned long long)st->caps);
		return;
	}
	fprintf(stderr,
		"livemig incoming: migration received in %llu ms: %.1f MiB on the wire, %llu data "
		"pages, %llu zero pages, %llu rounds, digest ok; resuming the guest\n",
		(unsigned long long)st->total_time_ms, (double)st->received / 1048576.0,
		(unsigned long long)st->pages_data, (unsigned long long)st->pages_zero,
		(unsigned long long)st->rounds);
}

int lm_cli_incoming(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_CONTROL, O_CONSOLE, O_ONCE, O_TIMEOUT, O_NOCOMP, O_JSON };
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, O_LISTEN},
	    {"control", required_argument, NULL, O_CONTROL},
	    {"console", required_argument, NULL, O_CONSOLE},
	    {"once", no_argument, NULL, O_ONCE},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"no-compress", no_argument, NULL, O_NOCOMP},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_s = NULL, *control = NULL, *console = NULL;
	bool once = false, json = false;
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
		case O_NOCOMP: cfg.recv.caps_disabled |= LM_CAP_ZSTD; break;
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

	int ret = 1, console_fd = -1, lfd = -1;
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

	double start = now_s();
	for (;;) {
		if (terminated())
			goto out;
		if (timeout > 0 && now_s() - start > timeout) {
			fprintf(stderr, "livemig incoming: no migration completed within %.0f s\n", timeout);
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
	ret = lm_cli_serve_vm("incoming", vm, &ctl, true);
out:
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
