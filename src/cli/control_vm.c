/*
 * Control-socket commands that act on the VM: query-status, stop, cont,
 * quit and guest-verify. The vCPU threads never wait for the control
 * thread, so a handler may block (stop waits until every vCPU is parked).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "cli/control.h"
#include "livemig/vmm.h"


static int cmd_query_status(void *ctx, struct json_object *args, struct json_object **ret,
			    char *err, size_t errlen)
{
	struct lm_control *ctl = ctx;
	struct lm_vm *vm = lm_control_vm(ctl);
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	if (!vm) {
		/* livemig incoming before the VM arrived (QEMU says the same). */
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "status", json_object_new_string("inmigrate"));
		json_object_object_add(o, "running", json_object_new_boolean(false));
		json_object_object_add(o, "singlestep", json_object_new_boolean(false));
		*ret = o;
		return 0;
	}
	int st;
	bool stopped = lm_vm_wait(vm, 0, &st) != -EINTR;
	bool paused = lm_vm_is_paused(vm);
	const char *state = lm_control_run_state(ctl);
	const char *status = stopped ? "shutdown" : paused ? (state ? state : "paused") : "running";
	uint32_t req, done, res;
	lm_vm_verify_status(vm, &req, &done, &res);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "status", json_object_new_string(status));
	json_object_object_add(o, "running", json_object_new_boolean(!stopped && !paused));
	json_object_object_add(o, "singlestep", json_object_new_boolean(false));
	struct json_object *vf = json_object_new_object();
	json_object_object_add(vf, "requested", json_object_new_int64(req));
	json_object_object_add(vf, "done", json_object_new_int64(done));
	json_object_object_add(vf, "result",
			       json_object_new_string(done == 0	 ? "none"
						      : res == 0 ? "ok"
								 : "fail"));
	json_object_object_add(o, "verify", vf);
	*ret = o;
	return 0;
}

static int cmd_stop(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		    size_t errlen)
{
	struct lm_control *ctl = ctx;
	struct lm_vm *vm = lm_control_vm(ctl);
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	bool was = lm_vm_is_paused(vm);
	int r = lm_vm_pause(vm);
	if (r == 0 && !was)
		lm_control_event(ctl, "STOP", NULL);
	return r;
}

static int cmd_cont(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		    size_t errlen)
{
	struct lm_control *ctl = ctx;
	struct lm_vm *vm = lm_control_vm(ctl);
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	bool was = lm_vm_is_paused(vm);
	int r = lm_vm_resume(vm);
	if (r == -EBUSY) {
		snprintf(err, errlen, "The VM is held paused by a migration (switchover in progress or completed)");
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen, "The VM is not running any more");
		return r;
	}
	lm_control_set_run_state(ctl, NULL);
	if (was)
		lm_control_event(ctl, "RESUME", NULL);
	return 0;
}

static int cmd_quit(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		    size_t errlen)
{
	struct lm_control *ctl = ctx;
	struct lm_vm *vm = lm_control_vm(ctl);
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	if (!vm) {
		/* Still waiting for a migration: end that wait the way a
		 * signal does (the accept loop takes it). */
		kill(getpid(), SIGTERM);
		return 0;
	}
	lm_vm_quit(vm, 0);
	return 0;
}

static int cmd_guest_verify(void *ctx, struct json_object *args, struct json_object **ret,
			    char *err, size_t errlen)
{
	struct lm_control *ctl = ctx;
	struct lm_vm *vm = lm_control_vm(ctl);
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	uint32_t n = lm_vm_request_verify(vm);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "request", json_object_new_int64(n));
	*ret = o;
	return 0;
}

int lm_control_vm_commands(struct lm_control *c)
{
	int r;
	if ((r = lm_control_register(c, "query-status", cmd_query_status, c)) < 0 ||
	    (r = lm_control_register_vm(c, "stop", cmd_stop, c)) < 0 ||
	    (r = lm_control_register_vm(c, "cont", cmd_cont, c)) < 0 ||
	    (r = lm_control_register(c, "quit", cmd_quit, c)) < 0 ||
	    (r = lm_control_register_vm(c, "guest-verify", cmd_guest_verify, c)) < 0)
		return r;
	return 0;
}
