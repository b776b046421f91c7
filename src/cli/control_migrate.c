/*
 * Control-socket migration commands for a process that holds a VM:
 * migrate, migrate-cancel, query-migrate, migrate-set-parameters and
 * query-migrate-parameters, with QEMU's names and units. The parameters
 * are src/cli/params.c's table.
 *
 * `migrate` returns at once, like QEMU's: it checks the request, prepares
 * the migration with the parameters as they are now (later changes do not
 * touch it) and starts a waiter thread. That thread connects to the
 * destination (bounded by connect-timeout, cancellable; query-migrate says
 * "setup" meanwhile), runs the migration, sends a MIGRATION event with the
 * final stats and then, when it completed, asks the VM to quit (the guest
 * now runs on the destination; this process exits with
 * LM_CLI_EXIT_MIGRATED, its VM paused). After a failure or a cancel, a
 * failed connect included, the VM keeps running as before.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/control.h"
#include "cli/params.h"
#include "livemig/vmm_migrate.h"

struct lm_control_migrate {
	struct lm_control *ctl; /* the VM is the one attached to it */
	pthread_mutex_t lock; /* guards everything below; never held over I/O */
	struct lm_cli_params params;
	/* The migration from `migrate` until the waiter has seen its end, or
	 * NULL. While connecting it exists but has not started. */
	struct lm_vm_migration *cur;
	struct lm_uri uri;
	char uri_s[400];
	uint64_t connect_timeout_ms;
	bool connecting;
	bool cancel_req;   /* migrate-cancel came while connecting */
	int cancel_fd;     /* eventfd: readable to give up the connect */
	double t0;         /* when `migrate` was accepted (CLOCK_MONOTONIC, s) */
	int fd;
	pthread_t waiter;
	bool waiter_started;
	struct lm_migrate_stats last; /* of the last finished migration */
	bool have_last;
	bool completed; /* a migration completed: the VM is gone from here */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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

/*
 * The migration never started: the connect failed, timed out or was
 * cancelled. It ends like any other, with stats and a MIGRATION event.
 */
static void connect_failed(struct lm_control_migrate *cm, int err, const char *why)
{
	struct lm_migrate_stats st;
	pthread_mutex_lock(&cm->lock);
	struct lm_vm_migration *m = cm->cur;
	lm_vm_migration_query(m, &st);
	st.status = err == -ECANCELED ? LM_MIG_CANCELLED : LM_MIG_FAILED;
	st.total_time_ms = (uint64_t)((now_s() - cm->t0) * 1000);
	snprintf(st.error, sizeof(st.error), "cannot connect to %.100s: %.120s", cm->uri_s, why);
	cm->cur = NULL;
	cm->connecting = false;
	cm->last = st;
	cm->have_last = true;
	pthread_mutex_unlock(&cm->lock);
	lm_vm_migration_free(m);
	lm_control_event(cm->ctl, "MIGRATION", stats_object(&st));
}

/* The engine opens its channels (multifd) to the address `migrate` went to. */
static int connect_channel(void *arg, unsigned index)
{
	struct lm_control_migrate *cm = arg;
	char why[200];
	(void)index;
	return lm_transport_connect_opts(&cm->uri, cm->connect_timeout_ms, cm->cancel_fd, why, sizeof(why));
}

static void *waiter_main(void *arg)
{
	struct lm_control_migrate *cm = arg;
	char why[200];
	int fd = lm_transport_connect_opts(&cm->uri, cm->connect_timeout_ms, cm->cancel_fd, why, sizeof(why));
	int r = fd;
	pthread_mutex_lock(&cm->lock);
	if (fd >= 0 && cm->cancel_req) {
		close(fd);
		r = -ECANCELED;
		snprintf(why, sizeof(why), "cancelled while connecting");
	} else if (fd >= 0) {
		/* Under the lock: a cancel from now on reaches the engine. */
		r = lm_vm_migration_start(cm->cur, fd);
		if (r < 0) {
			close(fd);
			snprintf(why, sizeof(why), "connected, but the migration could not start: %s", lm_strerror(r));
		} else {
			cm->fd = fd;
			cm->connecting = false;
		}
	}
	pthread_mutex_unlock(&cm->lock);
	if (r < 0) {
		connect_failed(cm, r, why);
		return NULL;
	}

	int err = lm_vm_migration_wait(cm->cur);
	struct lm_migrate_stats st;
	lm_vm_migration_query(cm->cur, &st);
	/*
	 * Completed and checked: the guest runs on the destination, this
	 * process goes. Unconfirmed (no COMMITTED), or completed with pages
	 * that differ from what was sent: the paused copy stays for the
	 * operator, who may `cont` it (after looking at the destination) or
	 * `quit` (docs/stream.md 3.13, 5.2). The VM's state is set before
	 * query-migrate shows the end (cmd_query_migrate hides it while
	 * cur is set), so a client that saw it finds `cont` allowed.
	 */
	bool mismatch = err == 0 && st.verify == LM_VERIFY_MISMATCH;
	bool hold = mismatch || err == -ENOLINK;
	struct lm_vm *vm = lm_control_vm(cm->ctl);
	if (hold) {
		lm_control_set_run_state(cm->ctl, "postmigrate");
		lm_vm_hold_paused(vm, false);
	}
	pthread_mutex_lock(&cm->lock);
	struct lm_vm_migration *m = cm->cur;
	cm->cur = NULL;
	cm->last = st;
	cm->have_last = true;
	cm->completed = err == 0 && !mismatch;
	fd = cm->fd;
	cm->fd = -1;
	pthread_mutex_unlock(&cm->lock);
	lm_vm_migration_free(m);
	close(fd);
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
	/* The guest lives on at the destination: this process exits with its
	 * own status, distinct from any the guest powers off with (cli.h). */
	if (err == 0 && !mismatch)
		lm_vm_quit(vm, LM_CLI_EXIT_MIGRATED);
	return NULL;
}

/*
 * migrate with "resume": true (QEMU's name): a post-copy whose connection
 * broke (postcopy-paused) goes on over a new connection to uri
 * (docs/stream.md 3.15). The connect is bounded by connect-timeout.
 */
static int resume_postcopy(struct lm_control_migrate *cm, const struct lm_uri *uri, const char *uri_s, char *err,
			   size_t errlen)
{
	struct lm_migrate_stats st;
	pthread_mutex_lock(&cm->lock);
	bool paused = false;
	if (cm->cur) {
		lm_vm_migration_query(cm->cur, &st);
		paused = st.status == LM_MIG_POSTCOPY_PAUSED;
	}
	uint64_t timeout = cm->params.connect_timeout_ms;
	pthread_mutex_unlock(&cm->lock);
	if (!paused) {
		snprintf(err, errlen, "No post-copy is paused here (query-migrate: %s): nothing to resume",
			 cm->cur ? lm_migrate_status_name(st.status) : "none");
		return -EINVAL;
	}
	char why[200];
	int fd = lm_transport_connect_opts(uri, timeout, -1, why, sizeof(why));
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s", uri_s, why);
		return fd;
	}
	pthread_mutex_lock(&cm->lock);
	int r = cm->cur ? lm_vm_migration_resume(cm->cur, fd) : -EINVAL;
	if (r == 0)
		snprintf(cm->uri_s, sizeof(cm->uri_s), "%s", uri_s);
	pthread_mutex_unlock(&cm->lock);
	if (r < 0) {
		close(fd);
		snprintf(err, errlen, "The post-copy is no longer paused: nothing to resume");
	}
	return r;
}

static int cmd_migrate(void *ctx, struct json_object *args, struct json_object **ret, char *err,
		       size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	const char *uri_s = NULL;
	bool resume = false;
	json_object_object_foreach(args, key, val)
	{
		(void)val;
		if (strcmp(key, "uri") && strcmp(key, "resume")) {
			snprintf(err, errlen, "Parameter '%.64s' is unexpected", key);
			return -EINVAL;
		}
	}
	int r = lm_control_arg_str(args, "uri", &uri_s, err, errlen);
	if (r == -ENOENT)
		snprintf(err, errlen, "Parameter 'uri' is missing (tcp:HOST:PORT or unix:PATH)");
	if (r < 0)
		return -EINVAL;
	if ((r = lm_control_arg_bool(args, "resume", &resume, err, errlen)) == -EINVAL)
		return r;
	struct lm_uri uri;
	if ((r = lm_cli_uri_parse(uri_s, &uri, err, errlen)) < 0)
		return r;
	if (resume)
		return resume_postcopy(cm, &uri, uri_s, err, errlen);
	if (lm_control_run_state(cm->ctl)) {
		snprintf(err, errlen, "The VM waits for a decision after its last migration (query-status: %s): "
				      "`cont` or `quit` first", lm_control_run_state(cm->ctl));
		return -EBUSY;
	}
	pthread_mutex_lock(&cm->lock);
	bool completed = cm->completed;
	bool busy = cm->cur != NULL || completed;
	bool joinable = cm->waiter_started && !busy;
	if (joinable)
		cm->waiter_started = false;
	pthread_t old = cm->waiter;
	struct lm_cli_params p = cm->params;
	pthread_mutex_unlock(&cm->lock);
	if (busy) {
		snprintf(err, errlen, completed ? "The VM has already migrated away"
						 : "A migration is already in progress");
		return -EBUSY;
	}
	if (joinable)
		pthread_join(old, NULL);
	/* The parameters are taken now: a change after `migrate` returned
	 * (`livemig migrate` restoring its flags) does not reach this one. */
	struct lm_vm_migration *m;
	if (!p.mig.channels)
		p.mig.channels = lm_cli_default_channels(); /* 0: chosen from the cores */
	p.mig.connect_channel = connect_channel;
	p.mig.channel_arg = cm;
	if ((r = lm_vm_migration_new(lm_control_vm(cm->ctl), &p.mig, &m)) < 0) {
		snprintf(err, errlen, "Cannot set up the migration: %s", lm_strerror(r));
		return r;
	}
	lm_vm_migration_set_pause_hook(m, paused_for_switchover, cm);
	pthread_mutex_lock(&cm->lock);
	uint64_t drain;
	while (read(cm->cancel_fd, &drain, sizeof(drain)) > 0)
		; /* a cancel of an earlier connect */
	cm->cur = m;
	cm->uri = uri;
	snprintf(cm->uri_s, sizeof(cm->uri_s), "%s", uri_s);
	cm->connect_timeout_ms = p.connect_timeout_ms;
	cm->connecting = true;
	cm->cancel_req = false;
	cm->t0 = now_s();
	r = -pthread_create(&cm->waiter, NULL, waiter_main, cm);
	if (r == 0)
		cm->waiter_started = true;
	else {
		cm->cur = NULL;
		cm->connecting = false;
	}
	pthread_mutex_unlock(&cm->lock);
	if (r < 0) {
		lm_vm_migration_free(m);
		snprintf(err, errlen, "Cannot start the migration: %s", lm_strerror(r));
		return r;
	}
	return 0;
}

/* Under cm->lock: stop whatever runs, the connect included. */
static void cancel_locked(struct lm_control_migrate *cm)
{
	if (!cm->cur)
		return;
	if (cm->connecting) {
		uint64_t one = 1;
		cm->cancel_req = true;
		if (write(cm->cancel_fd, &one, sizeof(one)) < 0) {
			/* Only a counter overflow fails, and it is readable then. */
		}
	} else {
		lm_vm_migration_cancel(cm->cur);
	}
}

static int cmd_migrate_cancel(void *ctx, struct json_object *args, struct json_object **ret,
			      char *err, size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	pthread_mutex_lock(&cm->lock);
	cancel_locked(cm);
	pthread_mutex_unlock(&cm->lock);
	return 0;
}

/* QEMU's migrate-start-postcopy: switch at the end of the round in progress. */
static int cmd_start_postcopy(void *ctx, struct json_object *args, struct json_object **ret, char *err,
			      size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	if (lm_control_only_arg(args, NULL, err, errlen) < 0)
		return -EINVAL;
	pthread_mutex_lock(&cm->lock);
	int r = cm->cur ? lm_vm_migration_start_postcopy(cm->cur) : -ENOENT;
	pthread_mutex_unlock(&cm->lock);
	if (r == -ENOENT)
		snprintf(err, errlen, "No migration is in progress");
	else if (r == -EINVAL)
		snprintf(err, errlen, "Post-copy is not allowed for this migration: set postcopy-ram "
				      "(migrate-set-parameters) before migrate");
	else if (r == -EALREADY)
		snprintf(err, errlen, "The migration is already in post-copy or ending");
	return r;
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
	if (cm->cur) {
		lm_vm_migration_query(cm->cur, &st);
		if (cm->connecting) {
			/* Not started yet: the engine knows nothing of the time. */
			st.status = LM_MIG_SETUP;
			st.total_time_ms = (uint64_t)((now_s() - cm->t0) * 1000);
		}
		/* The engine ended, the waiter has not taken over yet (it sets
		 * the VM's state first): still the switchover, for a moment. */
		if (st.status == LM_MIG_COMPLETED || st.status == LM_MIG_UNCONFIRMED)
			st.status = LM_MIG_DEVICE;
		/* A post-copy given up: still paused until the VM says postmigrate. */
		if (st.status == LM_MIG_FAILED && st.postcopy)
			st.status = LM_MIG_POSTCOPY_PAUSED;
	} else if (cm->have_last) {
		st = cm->last;
	} else {
		any = false;
	}
	pthread_mutex_unlock(&cm->lock);
	if (!any) {
		*ret = json_object_new_object(); /* QEMU answers {} before any migration */
		return 0;
	}
	*ret = stats_object(&st);
	return 0;
}

/* Every key is checked before anything changes: a bad request changes no
 * parameter. A running migration keeps the values it started with. */
static int cmd_set_parameters(void *ctx, struct json_object *args, struct json_object **ret,
			      char *err, size_t errlen)
{
	struct lm_control_migrate *cm = ctx;
	pthread_mutex_lock(&cm->lock);
	struct lm_cli_params p = cm->params;
	pthread_mutex_unlock(&cm->lock);
	json_object_object_foreach(args, key, val)
	{
		const struct lm_cli_param *d = lm_cli_param_find(key);
		int64_t v;
		if (!d) {
			snprintf(err, errlen, "Parameter '%.64s' is unexpected", key);
			return -EINVAL;
		}
		if (lm_cli_param_from_json(d, val, &v, err, errlen) < 0)
			return -EINVAL;
		d->set(&p, v);
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
	struct lm_cli_params p = cm->params;
	pthread_mutex_unlock(&cm->lock);
	struct json_object *o = json_object_new_object();
	for (size_t i = 0; i < lm_cli_nparams; i++) {
		const struct lm_cli_param *d = &lm_cli_params[i];
		json_object_object_add(o, d->name, lm_cli_param_to_json(d, d->get(&p)));
	}
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
	cm->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cm->cancel_fd < 0) {
		int e = -errno;
		free(cm);
		return e;
	}
	pthread_mutex_init(&cm->lock, NULL);
	lm_cli_params_default(&cm->params);
	int r;
	if ((r = lm_control_register_vm(c, "migrate", cmd_migrate, cm)) < 0 ||
	    (r = lm_control_register_vm(c, "migrate-cancel", cmd_migrate_cancel, cm)) < 0 ||
	    (r = lm_control_register_vm(c, "migrate-start-postcopy", cmd_start_postcopy, cm)) < 0 ||
	    (r = lm_control_register(c, "query-migrate", cmd_query_migrate, cm)) < 0 ||
	    (r = lm_control_register(c, "migrate-set-parameters", cmd_set_parameters, cm)) < 0 ||
	    (r = lm_control_register(c, "query-migrate-parameters", cmd_query_parameters, cm)) < 0) {
		pthread_mutex_destroy(&cm->lock);
		close(cm->cancel_fd);
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
	cancel_locked(cm);
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
	close(cm->cancel_fd);
	free(cm);
}
