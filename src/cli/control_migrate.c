/*
 * Control-socket migration commands for a process that holds a VM:
 * migrate, migrate-cancel, query-migrate, migrate-set-parameters and
 * query-migrate-parameters, with QEMU's names and units (downtime-limit in
 * ms, max-bandwidth in bytes/s), plus skip-balloon (on by default: leave
 * ballooned pages out when the guest promised must-tell-host).
 *
 * `migrate` returns at once, like QEMU's: a waiter thread follows the
 * migration, sends a MIGRATION event with the final stats and then, when
 * it completed, asks the VM to quit (the guest now runs on the
 * destination; this process exits with status 0, its VM paused). After a
 * failure or a cancel the VM keeps running as before.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/control.h"
#include "livemig/vmm_migrate.h"

struct lm_control_migrate {
	struct lm_control *ctl; /* the VM is the one attached to it */
	pthread_mutex_t lock; /* guards everything below; never held over I/O */
	struct lm_migrate_params params;
	struct lm_vm_migration *cur; /* the running migration, or NULL */
	int fd;
	pthread_t waiter;
	bool waiter_started;
	struct lm_migrate_stats last; /* of the last finished migration */
	bool have_last;
	bool completed; /* a migration completed: the VM is gone from here */
};

static struct json_object *stats_object(const struct lm_migrate_stats *st)
{
	char *s = lm_migrate_stats_json(st);
	struct json_object *o = s ? json_tokener_parse(s) : NULL;
	free(s);
	return o ? o : json_object_new_object();
}

/* The migration paused the VM for its switchover: say so, as `stop` does. */
static void paused_for_switchover(void *arg)
{
	struct lm_control_migrate *cm = arg;
	lm_control_event(cm->ctl, "STOP", NULL);
}

static void *waiter_main(void *arg)
{
	struct lm_control_migrate *cm = arg;
	int err = lm_vm_migration_wait(cm->cur);
	struct lm_migrate_stats st;
	lm_vm_migration_query(cm->cur, &st);
	pthread_mutex_lock(&cm->lock);
	struct lm_vm_migration *m = cm->cur;
	cm->cur = NULL;
	cm->last = st;
	cm->have_last = true;
	/*
	 * Completed and checked: the guest runs on the destination, this
	 * process goes. Unconfirmed (no COMMITTED), or completed with pages
	 * that differ from what was sent: the paused copy stays for the
	 * operator, who may `cont` it (after looking at the destination) or
	 * `quit` (docs/stream.md 3.13, 5.2).
	 */
	bool mismatch = err == 0 && st.verify == LM_VERIFY_MISMATCH;
	bool hold = mismatch || err == -ENOLINK;
	cm->completed = err == 0 && !mismatch;
	int fd = cm->fd;
	cm->fd = -1;
	pthread_mutex_unlock(&cm->lock);
	lm_vm_migration_free(m);
	close(fd);
	struct lm_vm *vm = lm_control_vm(cm->ctl);
	if (hold) {
		lm_control_set_run_state(cm->ctl, "postmigrate");
		lm_vm_hold_paused(vm, false);
	}
	if (err == -ENOLINK)
		fprintf(stderr,
			"livemig: %s. The guest waits here paused (query-status: postmigrate): if the "
			"destination is not running it, `cont` runs it here; otherwise `quit`\n",
			st.error);
	if (mismatch)
		fprintf(stderr,
			"livemig: MIGRATION VERIFY FAILED: %llu page(s) of this paused guest differ from what "
			"reached the destination (first: page %llu). The destination runs a damaged copy; this "
			"one is right and waits paused (query-status: postmigrate): stop the destination, then "
			"`cont` here; or `quit`\n",
			(unsigned long long)st.verify_mismatches, (unsigned long long)st.verify_first[0]);
	lm_control_event(cm->ctl, "MIGRATION", stats_object(&st));
	if (err == 0 && !mismatch)
		lm_vm_quit(vm, 0);
	return NULL;
}

static int cmd_migrate(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		       size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	const char *uri_s = NULL;
	if (lm_control_only_arg(args, "uri", err, errlen) < 0)
		return -EINVAL;
	int r = lm_control_arg_str(args, "uri", &uri_s, err, errlen);
	if (r == -ENOENT)
		snprintf(err, errlen, "Parameter 'uri' is missing (tcp:HOST:PORT or unix:PATH)");
	if (r < 0)
		return -EINVAL;
	struct lm_uri uri;
	if (lm_uri_parse(uri_s, &uri) < 0) {
		snprintf(err, errlen, "Bad uri '%.100s': use tcp:HOST:PORT or unix:PATH", uri_s);
		return -EINVAL;
	}
	if (lm_control_run_state(cm->ctl)) {
		snprintf(err, errlen, "The VM waits for a decision after its last migration (query-status: %s): "
				      "`cont` or `quit` first", lm_control_run_state(cm->ctl));
		return -EBUSY;
	}
	pthread_mutex_lock(&cm->lock);
	bool completed = cm->completed;
	bool busy = cm->cur != NULL || completed;
	bool joinable = cm->waiter_started;
	cm->waiter_started = false;
	pthread_t old = cm->waiter;
	struct lm_migrate_params p = cm->params;
	pthread_mutex_unlock(&cm->lock);
	if (busy) {
		snprintf(err, errlen, completed ? "The VM has already migrated away"
						 : "A migration is already in progress");
		return -EBUSY;
	}
	if (joinable)
		pthread_join(old, NULL);
	int fd = lm_transport_connect(&uri);
	if (fd < 0) {
		snprintf(err, errlen, "Cannot connect to %.100s: %s", uri_s, lm_strerror(fd));
		return fd;
	}
	struct lm_vm_migration *m;
	if ((r = lm_vm_migration_new(lm_control_vm(cm->ctl), &p, &m)) < 0) {
		close(fd);
		snprintf(err, errlen, "Cannot set up the migration: %s", lm_strerror(r));
		return r;
	}
	lm_vm_migration_set_pause_hook(m, paused_for_switchover, cm);
	pthread_mutex_lock(&cm->lock);
	cm->cur = m;
	cm->fd = fd;
	r = lm_vm_migration_start(m, fd);
	if (r == 0) {
		r = -pthread_create(&cm->waiter, NULL, waiter_main, cm);
		if (r == 0)
			cm->waiter_started = true;
		else
			lm_vm_migration_cancel(m);
	}
	if (r < 0) {
		cm->cur = NULL;
		cm->fd = -1;
	}
	pthread_mutex_unlock(&cm->lock);
	if (r < 0) {
		lm_vm_migration_free(m);
		close(fd);
		snprintf(err, errlen, "Cannot start the migration: %s", lm_strerror(r));
		return r;
	}
	return 0;
}

static int cmd_migrate_cancel(void *ctx, struct json_object *args, struct json_object **ret,
			      char *err, size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	pthread_mutex_lock(&cm->lock);
	if (cm->cur)
		lm_vm_migration_cancel(cm->cur);
	pthread_mutex_unlock(&cm->lock);
	return 0;
}

static int cmd_query_migrate(void *ctx, struct json_object *args, struct json_object **ret,
			     char *err, size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	struct lm_migrate_stats st;
	bool any = true;
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	pthread_mutex_lock(&cm->lock);
	if (cm->cur)
		lm_vm_migration_query(cm->cur, &st);
	else if (cm->have_last)
		st = cm->last;
	else
		any = false;
	pthread_mutex_unlock(&cm->lock);
	if (!any) {
		*ret = json_object_new_object(); /* QEMU answers {} before any migration */
		return 0;
	}
	*ret = stats_object(&st);
	return 0;
}

static const char *nonconv_name(enum lm_nonconverge n)
{
	return n == LM_NONCONVERGE_CANCEL ? "cancel" : "switchover";
}

/* Every key is checked before anything changes: a bad request changes no
 * parameter. */
static int cmd_set_parameters(void *ctx, struct json_object *args, struct json_object **ret,
			      char *err, size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	pthread_mutex_lock(&cm->lock);
	struct lm_migrate_params p = cm->params;
	pthread_mutex_unlock(&cm->lock);
	json_object_object_foreach(args, key, val)
	{
		(void)val;
		int64_t i;
		bool b;
		const char *s;
		int r;
		if (!strcmp(key, "downtime-limit")) {
			if ((r = lm_control_arg_int(args, key, &i, err, errlen)) < 0)
				return r;
			if (i < 1 || i > 2000000) {
				snprintf(err, errlen, "Parameter 'downtime-limit' must be 1..2000000 ms");
				return -EINVAL;
			}
			p.downtime_limit_ms = (uint64_t)i;
		} else if (!strcmp(key, "max-bandwidth")) {
			if ((r = lm_control_arg_int(args, key, &i, err, errlen)) < 0)
				return r;
			if (i < 0) {
				snprintf(err, errlen, "Parameter 'max-bandwidth' must be >= 0 (bytes/s, 0 = unlimited)");
				return -EINVAL;
			}
			p.max_bandwidth = (uint64_t)i;
		} else if (!strcmp(key, "max-rounds")) {
			if ((r = lm_control_arg_int(args, key, &i, err, errlen)) < 0)
				return r;
			if (i < 1 || i > 100000) {
				snprintf(err, errlen, "Parameter 'max-rounds' must be 1..100000");
				return -EINVAL;
			}
			p.max_rounds = (unsigned)i;
		} else if (!strcmp(key, "max-time")) {
			if ((r = lm_control_arg_int(args, key, &i, err, errlen)) < 0)
				return r;
			if (i < 0) {
				snprintf(err, errlen, "Parameter 'max-time' must be >= 0 ms (0 = no limit)");
				return -EINVAL;
			}
			p.max_time_ms = (uint64_t)i;
		} else if (!strcmp(key, "on-nonconverge")) {
			if ((r = lm_control_arg_str(args, key, &s, err, errlen)) < 0)
				return r;
			if (!strcmp(s, "switchover"))
				p.on_nonconverge = LM_NONCONVERGE_SWITCHOVER;
			else if (!strcmp(s, "cancel"))
				p.on_nonconverge = LM_NONCONVERGE_CANCEL;
			else {
				snprintf(err, errlen, "Parameter 'on-nonconverge' must be 'switchover' or 'cancel'");
				return -EINVAL;
			}
		} else if (!strcmp(key, "compress")) {
			if ((r = lm_control_arg_bool(args, key, &b, err, errlen)) < 0)
				return r;
			p.compress = b;
		} else if (!strcmp(key, "skip-balloon")) {
			/* On by default; it takes effect only when the guest
			 * promised must-tell-host (src/vmm/migration.c). */
			if ((r = lm_control_arg_bool(args, key, &b, err, errlen)) < 0)
				return r;
			if (b)
				p.caps_disabled &= ~(uint64_t)LM_CAP_SKIP_BALLOON;
			else
				p.caps_disabled |= LM_CAP_SKIP_BALLOON;
		} else if (!strcmp(key, "chunk-pages")) {
			if ((r = lm_control_arg_int(args, key, &i, err, errlen)) < 0)
				return r;
			if (i < 64 || i % 64 || i > (1 << 24)) {
				snprintf(err, errlen, "Parameter 'chunk-pages' must be a multiple of 64, 64..16777216");
				return -EINVAL;
			}
			p.chunk_pages = (uint64_t)i;
		} else if (!strcmp(key, "verify")) {
			/* livemig's own: what proves the migration complete
			 * (docs/stream.md 5): the digest and the completeness
			 * check after the switchover, or the digest alone. */
			if ((r = lm_control_arg_str(args, key, &s, err, errlen)) < 0)
				return r;
			if (!strcmp(s, "full"))
				p.verify = LM_VERIFY_FULL;
			else if (!strcmp(s, "digest"))
				p.verify = LM_VERIFY_DIGEST;
			else if (!strcmp(s, "none"))
				p.verify = LM_VERIFY_NONE;
			else {
				snprintf(err, errlen, "Parameter 'verify' must be 'full', 'digest' or 'none'");
				return -EINVAL;
			}
		} else if (!strcmp(key, "idle-timeout")) {
			/* No QEMU equivalent: ms without progress on the
			 * connection before the migration fails; 0 = never. */
			if ((r = lm_control_arg_int(args, key, &i, err, errlen)) < 0)
				return r;
			if (i < 0 || i > INT32_MAX) {
				snprintf(err, errlen, "Parameter 'idle-timeout' must be 0..2147483647 ms (0 = never)");
				return -EINVAL;
			}
			p.idle_timeout_ms = i ? (uint64_t)i : LM_TIMEOUT_NEVER;
		} else {
			snprintf(err, errlen, "Parameter '%.64s' is unexpected", key);
			return -EINVAL;
		}
	}
	pthread_mutex_lock(&cm->lock);
	cm->params = p;
	pthread_mutex_unlock(&cm->lock);
	return 0;
}

static int cmd_query_parameters(void *ctx, struct json_object *args, struct json_object **ret,
				char *err, size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	pthread_mutex_lock(&cm->lock);
	struct lm_migrate_params p = cm->params;
	pthread_mutex_unlock(&cm->lock);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "downtime-limit", json_object_new_int64((int64_t)p.downtime_limit_ms));
	json_object_object_add(o, "max-bandwidth", json_object_new_int64((int64_t)p.max_bandwidth));
	json_object_object_add(o, "max-rounds", json_object_new_int64(p.max_rounds));
	json_object_object_add(o, "verify", json_object_new_string(p.verify == LM_VERIFY_DIGEST ? "digest"
								   : p.verify == LM_VERIFY_NONE ? "none"
												: "full"));
	json_object_object_add(o, "max-time", json_object_new_int64((int64_t)p.max_time_ms));
	json_object_object_add(o, "on-nonconverge", json_object_new_string(nonconv_name(p.on_nonconverge)));
	json_object_object_add(o, "compress", json_object_new_boolean(p.compress));
	json_object_object_add(o, "chunk-pages", json_object_new_int64((int64_t)p.chunk_pages));
	json_object_object_add(o, "idle-timeout",
			       json_object_new_int64(p.idle_timeout_ms == LM_TIMEOUT_NEVER ? 0
						     : (int64_t)p.idle_timeout_ms));
	json_object_object_add(o, "skip-balloon",
			       json_object_new_boolean(!(p.caps_disabled & LM_CAP_SKIP_BALLOON)));
	*ret = o;
	return 0;
}

int lm_control_migrate_new(struct lm_control *c, struct lm_control_migrate **out)
{
	struct lm_control_migrate *cm = calloc(1, sizeof(*cm));
	if (!cm)
		return -ENOMEM;
	cm->ctl = c;
	cm->fd = -1;
	pthread_mutex_init(&cm->lock, NULL);
	lm_migrate_params_default(&cm->params);
	int r;
	if ((r = lm_control_register_vm(c, "migrate", cmd_migrate, cm)) < 0 ||
	    (r = lm_control_register_vm(c, "migrate-cancel", cmd_migrate_cancel, cm)) < 0 ||
	    (r = lm_control_register(c, "query-migrate", cmd_query_migrate, cm)) < 0 ||
	    (r = lm_control_register(c, "migrate-set-parameters", cmd_set_parameters, cm)) < 0 ||
	    (r = lm_control_register(c, "query-migrate-parameters", cmd_query_parameters, cm)) < 0) {
		pthread_mutex_destroy(&cm->lock);
		free(cm);
		return r;
	}
	*out = cm;
	return 0;
}

void lm_control_migrate_stop(struct lm_control_migrate *cm)
{
	if (!cm)
		return;
	pthread_mutex_lock(&cm->lock);
	if (cm->cur)
		lm_vm_migration_cancel(cm->cur);
	bool joinable = cm->waiter_started;
	cm->waiter_started = false;
	pthread_mutex_unlock(&cm->lock);
	if (joinable)
		pthread_join(cm->waiter, NULL);
}

void lm_control_migrate_free(struct lm_control_migrate *cm)
{
	if (!cm)
		return;
	lm_control_migrate_stop(cm);
	pthread_mutex_destroy(&cm->lock);
	free(cm);
}
