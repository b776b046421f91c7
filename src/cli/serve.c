/*
 * Serving a VM until it stops: the part `livemig run` and `livemig
 * incoming` share. The control socket (VM, balloon and migration commands)
 * is opened first, possibly before the VM exists (incoming answers
 * `query-status` with "inmigrate" while it waits); SIGINT/SIGTERM/SIGHUP are
 * taken in one thread to shut down cleanly; the vCPUs run until the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/control.h"
#include "livemig/vmm.h"

struct sigctx {
	struct lm_vm *vm;
	sigset_t set;
};

static void term_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
}

static void *signal_main(void *arg)
{
	struct sigctx *s = arg;
	int sig = 0;
	if (sigwait(&s->set, &sig) == 0)
		lm_vm_quit(s->vm, 128 + sig);
	return NULL;
}

void lm_cli_block_signals(void)
{
	sigset_t set;
	term_signals(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int lm_cli_open_console(const char *prog, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fprintf(stderr, "livemig %s: cannot open console file %s: %s\n", prog, path,
			strerror(errno));
	return fd;
}

static const char *file_kind(mode_t m)
{
	return S_ISREG(m)    ? "a regular file"
	       : S_ISDIR(m)  ? "a directory"
	       : S_ISLNK(m)  ? "a symbolic link"
	       : S_ISFIFO(m) ? "a FIFO"
	       : S_ISCHR(m)  ? "a character device"
	       : S_ISBLK(m)  ? "a block device"
	       : S_ISSOCK(m) ? "a socket"
			     : "a file of unknown type";
}

const char *lm_cli_socket_error(const char *path, int err, char *buf, size_t len)
{
	struct stat st;
	if (err == -EEXIST && lstat(path, &st) == 0)
		snprintf(buf, len, "%s is %s, not a stale socket: refusing to replace it", path,
			 file_kind(st.st_mode));
	else if (err == -EADDRINUSE)
		snprintf(buf, len,
			 "%s is a live socket (another process accepts connections on it): refusing to "
			 "take it over",
			 path);
	else if (err == -EACCES)
		snprintf(buf, len,
			 "%s: permission denied (a socket this user may not connect to cannot be told "
			 "stale: it is left alone)",
			 path);
	else if (err == -ENAMETOOLONG)
		snprintf(buf, len, "%s: path too long for a UNIX socket (at most 107 bytes)", path);
	else
		snprintf(buf, len, "%s: %s", path, lm_strerror(err));
	return buf;
}

int lm_cli_ctl_open(const char *prog, const char *path, struct lm_cli_ctl *c)
{
	memset(c, 0, sizeof(*c));
	if (!path)
		return 0;
	int r = lm_control_new(path, &c->ctl);
	if (r < 0) {
		char why[512];
		fprintf(stderr, "livemig %s: control socket: %s\n", prog,
			lm_cli_socket_error(path, r, why, sizeof(why)));
		return r;
	}
	if ((r = lm_control_vm_commands(c->ctl)) < 0 || (r = lm_control_balloon_commands(c->ctl)) < 0 ||
	    (r = lm_control_migrate_new(c->ctl, &c->cm)) < 0 || (r = lm_control_start(c->ctl)) < 0) {
		fprintf(stderr, "livemig %s: control socket: %s\n", prog, lm_strerror(r));
		lm_cli_ctl_close(c);
		return r;
	}
	return 0;
}

void lm_cli_ctl_close(struct lm_cli_ctl *c)
{
	/* The migration waiter first: it sends events through the server. */
	lm_control_migrate_stop(c->cm);
	lm_control_free(c->ctl);
	lm_control_migrate_free(c->cm);
	memset(c, 0, sizeof(*c));
}

int lm_cli_serve_vm(const char *prog, struct lm_vm *vm, struct lm_cli_ctl *c, enum lm_cli_serve_mode mode)
{
	int ret = 1, r;
	pthread_t sigthread;
	bool sigthread_started = false;
	struct sigctx sc = {.vm = vm};
	struct lm_control *ctl = c ? c->ctl : NULL;

	term_signals(&sc.set);
	if (ctl && mode == LM_SERVE_WAIT_COMMIT)
		lm_control_set_run_state(ctl, "inmigrate-wait-commit");
	if (ctl)
		lm_control_attach_vm(ctl, vm);
	if (pthread_create(&sigthread, NULL, signal_main, &sc) == 0)
		sigthread_started = true;
	/* A post-copy started it already, in the middle of the receive. */
	if ((r = lm_vm_start(vm)) < 0 && r != -EALREADY) {
		fprintf(stderr, "livemig %s: cannot start the vCPUs: %s\n", prog, lm_strerror(r));
		goto out;
	}
	if (mode == LM_SERVE_MIGRATED_IN) {
		/* The guest continues here; ask it to check every page it has. */
		if ((r = lm_vm_resume(vm)) < 0) {
			fprintf(stderr, "livemig %s: cannot resume the guest: %s\n", prog, lm_strerror(r));
			goto out;
		}
		lm_vm_request_verify(vm);
		if (ctl)
			lm_control_event(ctl, "RESUME", NULL);
	}
	int status = 0;
	r = lm_vm_wait(vm, -1, &status);
	if (ctl) {
		struct json_object *d = json_object_new_object();
		json_object_object_add(d, "reason", json_object_new_string(lm_vm_stop_reason(vm)));
		lm_control_event(ctl, "SHUTDOWN", d);
	}
	if (r < 0) {
		fprintf(stderr, "livemig %s: the VM stopped: %s\n", prog, lm_vm_stop_reason(vm));
		ret = 1;
	} else {
		ret = status < 0 || status > 255 ? 255 : status;
	}
out:
	if (sigthread_started) {
		/* Wakes signal_main if no signal came; quitting again is harmless. */
		pthread_kill(sigthread, SIGTERM);
		pthread_join(sigthread, NULL);
	}
	/* Before the caller frees the VM: no handler may touch it after. */
	if (c)
		lm_cli_ctl_close(c);
	return ret;
}
