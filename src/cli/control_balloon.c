/*
 * Control-socket commands for the balloon device, shaped like QEMU's:
 *
 *   balloon        {"value": BYTES}  the guest size wanted, in bytes; the
 *                  balloon's target is (RAM - value) / 4 KiB pages. A value
 *                  above RAM means an empty balloon, as in QEMU.
 *   query-balloon  {"actual": BYTES (RAM minus the ballooned pages),
 *                   "ballooned-pages": N, "target-pages": M,
 *                   "must-tell-host": BOOL, "driver": BOOL (the guest
 *                   acknowledged the device), "guest-actual-pages": N (what
 *                   the guest last reported), "refused": N}
 *
 * The guest polls the target a few times a second, so `balloon` returns at
 * once and query-balloon shows the progress.
 *
 * Where there is no balloon device, both fail with QEMU's DeviceNotActive
 * ("No balloon device has been activated"): every livemig VM has one, so
 * that is `livemig incoming` before the VM arrived.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli/control.h"
#include "livemig/balloon.h"

/* No VM yet (or a VM without the device): QEMU's answer for a missing
 * balloon. */
static int not_active(struct lm_control *ctl, char *err, size_t errlen)
{
	lm_control_error_class(ctl, LM_CONTROL_DEVICE_NOT_ACTIVE);
	snprintf(err, errlen, "No balloon device has been activated%s",
		 lm_control_vm(ctl) ? "" : " (no VM here yet: waiting for an incoming migration)");
	return -ENODEV;
}

static int cmd_balloon(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		       size_t errlen)
{
	struct lm_control *ctl = ctx;
	struct lm_vm *vm = lm_control_vm(ctl);
	int64_t value = 0;
	if (!vm)
		return not_active(ctl, err, errlen);
	if (lm_control_only_arg(args, "value", err, errlen) < 0)
		return -EINVAL;
	int r = lm_control_arg_int(args, "value", &value, err, errlen);
	if (r == -ENOENT) {
		snprintf(err, errlen, "Parameter 'value' is missing");
		return -EINVAL;
	}
	if (r < 0)
		return r;
	if (value <= 0) {
		snprintf(err, errlen, "Parameter 'value' expects a size greater than 0");
		return -EINVAL;
	}
	uint64_t mem = lm_vm_mem_size(vm);
	uint64_t want = (uint64_t)value > mem ? mem : (uint64_t)value;
	r = lm_vm_balloon_set_target(vm, (mem - want) >> 12);
	if (r == -ENODEV)
		return not_active(ctl, err, errlen);
	if (r < 0) {
		snprintf(err, errlen, "Cannot set the balloon target: %s", lm_strerror(r));
		return r;
	}
	return 0;
}

static int cmd_query_balloon(void *ctx, struct json_object *args, struct json_object **ret,
			     char *err, size_t errlen)
{
	struct lm_control *ctl = ctx;
	struct lm_vm *vm = lm_control_vm(ctl);
	if (!vm)
		return not_active(ctl, err, errlen);
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	struct lm_balloon_stats st;
	lm_vm_balloon_stats(vm, &st);
	uint64_t mem = lm_vm_mem_size(vm);
	uint64_t ballooned = st.actual << 12;
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "actual",
			       json_object_new_int64((int64_t)(ballooned < mem ? mem - ballooned : 0)));
	json_object_object_add(o, "ballooned-pages", json_object_new_int64((int64_t)st.actual));
	json_object_object_add(o, "target-pages", json_object_new_int64((int64_t)st.target));
	json_object_object_add(o, "must-tell-host", json_object_new_boolean(st.must_tell_host));
	json_object_object_add(o, "driver", json_object_new_boolean(st.acked));
	json_object_object_add(o, "guest-actual-pages",
			       json_object_new_int64((int64_t)st.guest_actual));
	json_object_object_add(o, "refused", json_object_new_int64((int64_t)st.refused));
	*ret = o;
	return 0;
}

int lm_control_balloon_commands(struct lm_control *c)
{
	int r;
	/* Not lm_control_register_vm: without a VM they answer
	 * DeviceNotActive themselves, as QEMU does for a missing balloon. */
	if ((r = lm_control_register(c, "balloon", cmd_balloon, c)) < 0 ||
	    (r = lm_control_register(c, "query-balloon", cmd_query_balloon, c)) < 0)
		return r;
	return 0;
}
