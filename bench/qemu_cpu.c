/*
 * Which QEMU -cpu model this host can run, found by booting the guest.
 *
 * Machines of this project's kind differ in their host CPU, and a nested
 * host does not pass every MSR through: on an AMD EPYC host under kvm_pvm,
 * QEMU 7.2 with `-cpu host` or `-cpu max` aborts at start ("failed to set
 * MSR 0x10a", IA32_ARCH_CAPABILITIES), while `host,-arch-capabilities` and
 * QEMU's default model work. So the model is probed, never assumed: each
 * candidate in turn boots guest/guest.elf (a small idle guest) and counts
 * as working once the guest prints its banner on the serial port; QEMU
 * exiting, a guest exception or no banner within the time limit moves on
 * to the next candidate, and every candidate's messages are kept for the
 * report. A probe costs one guest boot (about 3 s here) when `host` works.
 *
 * One implementation for every user: `livemig bench vs-qemu` probes when
 * --qemu-cpu is auto (its default), and the e2e tests that start QEMU ask
 * `livemig bench qemu-cpu`, which prints the model on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* In order of preference: the host's own model first (what a user of
 * `-cpu host` measures), the default model (qemu64) last. */
static const char *const candidates[] = { "host", "host,-arch-capabilities", "max", LM_QEMU_CPU_DEFAULT };
_Static_assert(sizeof(candidates) / sizeof(candidates[0]) <= LM_QEMU_CPU_MAX_TRIES, "too many candidates");

/* The guest's second banner line: it is printed from ring 3 after paging,
 * the clock and guest memory are set up, so the CPU model really ran it. */
#define BANNER "livemig-guest: ram_top="
#define EXCEPTION "livemig-guest: exception"

/* Appends text's lines to msg (trailing blanks dropped), as room allows. */
static void append_lines(char *msg, size_t cap, const char *text)
{
	size_t used = strlen(msg);
	for (const char *line = text; line && *line && used + 1 < cap;) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);
		while (n && (line[n - 1] == ' ' || line[n - 1] == '\r'))
			n--;
		if (n) {
			int w = snprintf(msg + used, cap - used, "%s%.*s", used ? "\n" : "", (int)n, line);
			if (w < 0)
				break;
			used += (size_t)w < cap - used ? (size_t)w : cap - used - 1;
		}
		line = end ? end + 1 : NULL;
	}
}

/* The line of text that starts with prefix, or NULL. */
static const char *line_with(const char *text, const char *prefix)
{
	for (const char *p = text; p && (p = strstr(p, prefix)); p++)
		if (p == text || p[-1] == '\n')
			return p;
	return NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/*
 * Starts QEMU with the candidate and watches the serial file until the
 * banner appears, QEMU exits or timeout_s pass; QEMU is killed on every
 * path. Fills t; returns 0 when the candidate was tried (t->err says how it
 * went), or -errno when QEMU could not be started at all.
 */
static int try_one(struct lm_qemu_cpu_try *t, const char *qemu, const char *guest_elf, const char *dir,
		   double timeout_s)
{
	char serial[4200], log[4200], serial_arg[4300], append[96];
	snprintf(serial, sizeof(serial), "%s/serial", dir);
	snprintf(log, sizeof(log), "%s/qemu.log", dir);
	snprintf(serial_arg, sizeof(serial_arg), "file:%s", serial);
	/* The guest powers itself off in any case, should QEMU outlive us. */
	snprintf(append, sizeof(append), "workload=idle verify=0 zerocheck=0 exit_after=%d", (int)timeout_s + 5);
	unlink(serial);
	unlink(log);

	const char *argv[24];
	int n = 0;
	argv[n++] = qemu;
	argv[n++] = "-enable-kvm";
	if (strcmp(t->model, LM_QEMU_CPU_DEFAULT)) {
		argv[n++] = "-cpu";
		argv[n++] = t->model;
	}
	const char *rest[] = { "-m", "32M", "-nodefaults", "-display", "none", "-monitor", "none", "-serial",
			       serial_arg, "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
			       "-kernel", guest_elf, "-append", append };
	for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++)
		argv[n++] = rest[i];
	argv[n] = NULL;

	/* A close-on-exec pipe tells a failed exec (no QEMU) from a QEMU that
	 * started and failed: the child writes its errno there. */
	int ep[2];
	if (pipe2(ep, O_CLOEXEC))
		return -errno;
	double start = bench_now();
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(ep[0]);
		close(ep[1]);
		return err;
	}
	if (pid == 0) {
		/* Its own process group, so that killing it takes anything it
		 * started (a wrapper script's QEMU) along. */
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int null = open("/dev/null", O_RDONLY);
		int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int e = EIO;
		if (getppid() == parent && null >= 0 && out >= 0) {
			dup2(null, 0);
			dup2(out, 1);
			dup2(out, 2);
			execvp(qemu, (char *const *)argv);
			e = errno;
		}
		ssize_t unused = write(ep[1], &e, sizeof(e));
		(void)unused;
		_exit(127);
	}
	close(ep[1]);
	int exec_err = 0;
	ssize_t got = read(ep[0], &exec_err, sizeof(exec_err));
	close(ep[0]);
	if (got == (ssize_t)sizeof(exec_err)) {
		waitpid(pid, NULL, 0);
		unlink(log);
		return -exec_err;
	}

	int wstatus = 0;
	bool exited = false;
	char *out = NULL;
	t->err = -ETIMEDOUT;
	for (;;) {
		/* Look at the console before QEMU's state: a banner that made it
		 * out counts even if QEMU went away right after. */
		free(out);
		out = lm_bench_slurp(serial);
		if (out && line_with(out, EXCEPTION)) {
			t->err = -EFAULT;
			break;
		}
		if (out && line_with(out, BANNER) && strchr(line_with(out, BANNER), '\n')) {
			t->err = 0;
			break;
		}
		if (exited) {
			t->err = -ECHILD;
			break;
		}
		if (waitpid(pid, &wstatus, WNOHANG) == pid) {
			exited = true;
			continue; /* one more look at the console */
		}
		if (bench_now() - start >= timeout_s)
			break;
		sleep_ms(20);
	}
	t->seconds = bench_now() - start;
	kill(-pid, SIGKILL);
	if (!exited)
		waitpid(pid, NULL, 0);

	if (t->err == 0)
		snprintf(t->outcome, sizeof(t->outcome), "boots (guest banner after %.1f s)", t->seconds);
	else if (t->err == -EFAULT)
		snprintf(t->outcome, sizeof(t->outcome), "guest exception after %.1f s", t->seconds);
	else if (t->err == -ECHILD && WIFSIGNALED(wstatus))
		snprintf(t->outcome, sizeof(t->outcome), "QEMU killed by signal %d (%s) after %.1f s",
			 WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)), t->seconds);
	else if (t->err == -ECHILD)
		snprintf(t->outcome, sizeof(t->outcome), "QEMU exited with status %d after %.1f s, no guest banner",
			 WEXITSTATUS(wstatus), t->seconds);
	else
		snprintf(t->outcome, sizeof(t->outcome), "no guest banner within %.0f s", timeout_s);

	/* QEMU's own messages (warnings too, for a model that boots), then the
	 * guest's last words when it did not get to its banner. */
	char *qlog = lm_bench_slurp(log);
	t->msg[0] = 0;
	append_lines(t->msg, sizeof(t->msg), qlog);
	if (t->err) {
		const char *ex = out ? line_with(out, EXCEPTION) : NULL;
		if (ex)
			append_lines(t->msg, sizeof(t->msg), ex);
		else if (!out || !*out)
			append_lines(t->msg, sizeof(t->msg), "(no output on the guest's serial port)");
	}
	free(qlog);
	free(out);
	unlink(serial);
	unlink(log);
	return 0;
}

int lm_bench_qemu_cpu_probe(struct lm_qemu_cpu_probe *p, const char *qemu, const char *guest_elf,
			    double timeout_s)
{
	memset(p, 0, sizeof(*p));
	p->chosen = -1;
	if (access(guest_elf, R_OK))
		return -errno;
	char dir[] = "/tmp/livemig-qemu-cpu-XXXXXX";
	if (!mkdtemp(dir))
		return -errno;
	int rc = -ENODEV;
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		struct lm_qemu_cpu_try *t = &p->tries[p->n];
		t->model = candidates[i];
		int err = try_one(t, qemu, guest_elf, dir, timeout_s);
		if (err) {
			rc = err;
			break;
		}
		p->n++;
		if (t->err == 0) {
			p->chosen = p->n - 1;
			rc = 0;
			break;
		}
	}
	rmdir(dir);
	return rc;
}

void lm_bench_qemu_cpu_report(const struct lm_qemu_cpu_probe *p, FILE *f, const char *prefix)
{
	for (int i = 0; i < p->n; i++) {
		const struct lm_qemu_cpu_try *t = &p->tries[i];
		fprintf(f, "%s%s: %s\n", prefix, t->model, t->outcome);
		for (const char *line = t->msg; *line;) {
			const char *end = strchr(line, '\n');
			int len = end ? (int)(end - line) : (int)strlen(line);
			fprintf(f, "%s    %.*s\n", prefix, len, line);
			line = end ? end + 1 : line + len;
		}
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig bench qemu-cpu [--qemu PATH] [--guest ELF] [--timeout S]\n"
		"\n"
		"Finds a QEMU -cpu model this host can run: boots the guest image under QEMU\n"
		"with each of host, host,-arch-capabilities, max and QEMU's default model in\n"
		"turn and takes the first whose guest prints its banner on the serial port.\n"
		"Prints that model on stdout (the -cpu argument, or 'default' for no -cpu) and\n"
		"every candidate's outcome and messages on stderr.\n"
		"\n"
		"  --qemu PATH   QEMU binary (default $QEMU or qemu-system-x86_64)\n"
		"  --guest ELF   guest image (default $GUEST_ELF or guest/guest.elf)\n"
		"  --timeout S   time each candidate has to print the banner (default %.0f)\n"
		"\n"
		"Exit status: 0 with a model, 1 when no candidate boots, 2 for bad usage or\n"
		"when QEMU or the guest image cannot be found.\n",
		LM_QEMU_CPU_TIMEOUT_S);
}

int lm_bench_qemu_cpu(int argc, char **argv)
{
	const char *qemu = getenv("QEMU") && *getenv("QEMU") ? getenv("QEMU") : "qemu-system-x86_64";
	const char *guest = getenv("GUEST_ELF") && *getenv("GUEST_ELF") ? getenv("GUEST_ELF") : "guest/guest.elf";
	double timeout_s = LM_QEMU_CPU_TIMEOUT_S;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (strcmp(a, "--qemu") && strcmp(a, "--guest") && strcmp(a, "--timeout")) {
			fprintf(stderr, "livemig bench qemu-cpu: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		}
		if (!v) {
			fprintf(stderr, "livemig bench qemu-cpu: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--qemu")) {
			qemu = v;
		} else if (!strcmp(a, "--guest")) {
			guest = v;
		} else {
			char *end;
			timeout_s = strtod(v, &end);
			if (end == v || *end || !(timeout_s >= 1 && timeout_s <= 600)) {
				fprintf(stderr, "livemig bench qemu-cpu: bad value for --timeout: '%s'\n", v);
				return 2;
			}
		}
	}

	if (access(guest, R_OK)) {
		fprintf(stderr, "livemig bench qemu-cpu: guest image %s: %s (make guest/guest.elf, or --guest)\n",
			guest, strerror(errno));
		return 2;
	}
	struct lm_qemu_cpu_probe p;
	int err = lm_bench_qemu_cpu_probe(&p, qemu, guest, timeout_s);
	lm_bench_qemu_cpu_report(&p, stderr, "qemu-cpu: ");
	if (err == -ENODEV) {
		fprintf(stderr, "livemig bench qemu-cpu: no candidate -cpu model boots the guest under %s\n", qemu);
		return 1;
	}
	if (err) {
		fprintf(stderr, "livemig bench qemu-cpu: cannot run %s: %s\n", qemu, strerror(-err));
		return 2;
	}
	fprintf(stderr, "qemu-cpu: chosen: %s\n", p.tries[p.chosen].model);
	printf("%s\n", p.tries[p.chosen].model);
	return 0;
}
