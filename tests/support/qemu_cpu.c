/* Asks `livemig bench qemu-cpu` once which QEMU -cpu model to use; see qemu_cpu.h. */
#include "qemu_cpu.h"
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char model[256];
static bool asked;
static bool found;

/* Runs the probe with stdout into buf (stderr stays the test's); returns its exit status or -errno. */
static int run_probe(const char *livemig, const char *qemu, const char *guest_elf, char *buf, size_t cap)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(p[0]);
		close(p[1]);
		return err;
	}
	if (pid == 0) {
		lm_test_die_with_parent(parent);
		int null = open("/dev/null", O_RDONLY);
		if (null < 0 || dup2(null, 0) < 0 || dup2(p[1], 1) < 0)
			_exit(127);
		char *argv[] = { (char *)livemig, "bench", "qemu-cpu", "--qemu", (char *)qemu,
				 "--guest", (char *)guest_elf, NULL };
		execv(livemig, argv);
		fprintf(stderr, "qemu-cpu: cannot run %s: %s\n", livemig, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	size_t len = 0;
	ssize_t n;
	while ((n = read(p[0], buf + len, cap - 1 - len)) > 0 || (n < 0 && errno == EINTR))
		if (n > 0)
			len += (size_t)n;
	close(p[0]);
	buf[len] = 0;
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -EINTR;
}

const char *lm_test_qemu_cpu(const char *qemu, const char *guest_elf)
{
	if (asked)
		return found ? model : NULL;
	asked = true;
	const char *livemig = getenv("LIVEMIG");
	if (!livemig || !*livemig)
		livemig = "build/livemig";
	int rc = run_probe(livemig, qemu, guest_elf, model, sizeof(model));
	model[strcspn(model, "\n")] = 0;
	found = rc == 0 && model[0];
	if (found)
		fprintf(stderr, "QEMU -cpu model for this host: %s (probed by %s bench qemu-cpu)\n", model,
			livemig);
	else
		fprintf(stderr, "%s bench qemu-cpu failed (%s %d): no usable QEMU -cpu model (messages above)\n",
			livemig, rc < 0 ? "error" : "exit status", rc);
	return found ? model : NULL;
}
