/*
 * Control-socket commands that act on the VM: query-status, stop, cont,
 * quit and guest-verify. The vCPU threads never wait for the control
 * thread, so a handler may block (stop waits until every vCPU is parked).
 */
#include <errno.h>
#include <stdio.h>

#include "cli/control.h"
#include "livemig/vmm.h"

struct vmctx {
	struct lm_control *ctl;
	struct lm_vm *vm;
};

/* One per control server; the server lives as long as the process. */
static struct vmctx ctxs[4];
static unsigned nctx;

static int no_args(struct json_object *args, char *err, size_t errlen)
{
	json_object_object_foreach(args, key, val)
	{
		(void)val;
		snprintf(err, errlen, "Parameter '%.64s' is unexpected", key);
		return -EINVAL;
	}
	return 0;
}

static int cmd_query_status(void *ctx, struct json_object *args, struct json_object **ret,
			    char *err, size_t errlen)
{
	struct vmctx *v = ctx;
	if (no_args(args, err, errlen) < 0)
		return -EINVAL;
	int st;
	bool stopped = lm_vm_wait(v->vm, 0, &st) != -EINTR;
	bool paused = lm_vm_is_paused(v->vm);
	const char *status = stopped ? "shutdown" : paused ? "paused" : "running";
	uint32_t req, done, res;
	lm_vm_verify_status(v->vm, &req, &done, &res);
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
	struct vmctx *v = ctx;
	if (no_args(args, err, errlen) < 0)
		return -EINVAL;
	bool was = lm_vm_is_paused(v->vm);
	int r = lm_vm_pause(v->vm);
	if (r == 0 && !was)
		lm_control_event(v->ctl, "STOP", NULL);
	return r;
}

static int cmd_cont(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		    size_t errlen)
{
	struct vmctx *v = ctx;
	if (no_args(args, err, errlen) < 0)
		return -EINVAL;
	bool was = lm_vm_is_paused(v->vm);
	int r = lm_vm_resume(v->vm);
	if (r == -EBUSY) {
		snprintf(err, errlen, "The VM is held paused by a migration (switchover in progress or completed)");
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen, "The VM is not running any more");
		return r;
	}
	if (was)
		lm_control_event(v->ctl, "RESUME", NULL);
	return 0;
}

static int cmd_quit(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		    size_t errlen)
{
	struct vmctx *v = ctx;
	if (no_args(args, err, errlen) < 0)
		return -EINVAL;
	lm_vm_quit(v->vm, 0);
	return 0;
}

static int cmd_guest_verify(void *ctx, struct json_object *args, struct json_object **ret,
			    char *err, size_t errlen)
{
	struct vmctx *v = ctx;
	if (no_args(args, err, errlen) < 0)
		return -EINVAL;
	uint32_t n = lm_vm_request_verify(v->vm);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "request", json_object_new_int64(n));
	*ret = o;
	return 0;
}

int lm_control_vm_commands(struct lm_control *c, struct lm_vm *vm)
{
	if (nctx == sizeof(ctxs) / sizeof(ctxs[0]))
		return -ENOSPC;
	struct vmctx *v = &ctxs[nctx++];
	v->ctl = c;
	v->vm = vm;
	int r;
	if ((r = lm_control_register(c, "query-status", cmd_query_status, v)) < 0 ||
	    (r = lm_control_register(c, "stop", cmd_stop, v)) < 0 ||
	    (r = lm_control_register(c, "cont", cmd_cont, v)) < 0 ||
	    (r = lm_control_register(c, "quit", cmd_quit, v)) < 0 ||
	    (r = lm_control_register(c, "guest-verify", cmd_guest_verify, v)) < 0)
		return r;
	return 0;
}
