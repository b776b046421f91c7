/*
 * cmocka assertions on top of live.h; see live_assert.h.
 */
#include "live_assert.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* ---- fixtures ----------------------------------------------------------- */

int lm_live_group_teardown(void **state)
{
	lm_live_finish();
	return 0;
}

int lm_live_test_teardown(void **state)
{
	lm_live_cleanup();
	return 0;
}

/* ---- processes ---------------------------------------------------------- */

pid_t lm_live_expect_spawn(const char *out, const char *const *args)
{
	pid_t pid = lm_live_spawn(out, NULL, args);
	if (pid < 0)
		fprintf(stderr, "spawn %s: %s\n", args[0], strerror((int)-pid));
	assert_true(pid >= 0);
	return pid;
}

/* ---- control socket ----------------------------------------------------- */

void lm_live_expect_ctl_open(struct lm_live_ctl *c, const char *path, double deadline_s)
{
	int r = lm_live_ctl_open(c, path, deadline_s);
	if (r < 0)
		fprintf(stderr, "control socket %s: %s\n", path, strerror(-r));
	assert_int_equal(r, 0);
}

struct lm_live_ctl *lm_live_expect_vm_ctl(struct lm_live_vm *vm)
{
	struct lm_live_ctl *c = lm_live_vm_ctl(vm);
	if (!c)
		fprintf(stderr, "%s: no control connection on %s\n", vm->name, vm->sock);
	assert_non_null(c);
	return c;
}

void lm_live_expect_reply(struct lm_live_ctl *c, const char *req, char *reply, size_t replylen)
{
	int r = lm_live_ctl_cmd(c, req, reply, replylen);
	if (r < 0)
		fprintf(stderr, "request %s: %s\n", req, strerror(-r));
	assert_int_equal(r, 0);
}

void lm_live_expect_ok(struct lm_live_ctl *c, const char *req, char *reply, size_t replylen)
{
	char own[4096];
	if (!reply) {
		reply = own;
		replylen = sizeof(own);
	}
	lm_live_expect_reply(c, req, reply, replylen);
	if (!strstr(reply, "\"return\""))
		fprintf(stderr, "request %s -> %s\n", req, reply);
	assert_non_null(strstr(reply, "\"return\""));
}

void lm_live_expect_error(struct lm_live_ctl *c, const char *req)
{
	char reply[4096];
	lm_live_expect_reply(c, req, reply, sizeof(reply));
	if (!strstr(reply, "\"error\""))
		fprintf(stderr, "request %s -> %s (an error was expected)\n", req, reply);
	assert_non_null(strstr(reply, "\"error\""));
	assert_non_null(strstr(reply, "\"GenericError\""));
	assert_non_null(strstr(reply, "\"desc\""));
}

void lm_live_expect_status(struct lm_live_ctl *c, const char *status)
{
	char reply[4096], want[64];
	lm_live_expect_reply(c, "{\"execute\":\"query-status\"}", reply, sizeof(reply));
	snprintf(want, sizeof(want), "\"status\":\"%s\"", status);
	if (!strstr(reply, want))
		fprintf(stderr, "query-status -> %s\n", reply);
	assert_non_null(strstr(reply, want));
}

void lm_live_expect_balloon(struct lm_live_ctl *c, uint64_t bytes)
{
	char req[128];
	snprintf(req, sizeof(req), "{\"execute\":\"balloon\",\"arguments\":{\"value\":%llu}}",
		 (unsigned long long)bytes);
	lm_live_expect_ok(c, req, NULL, 0);
}

/* ---- numbers in text ---------------------------------------------------- */

uint64_t lm_live_line_u64(const char *line, const char *key)
{
	const char *p = strstr(line, key);
	if (!p)
		fprintf(stderr, "no '%s' in: %s\n", key, line);
	assert_non_null(p);
	return strtoull(p + strlen(key), NULL, 10);
}

uint64_t lm_live_json_u64(const char *text, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(text, k);
	if (!p)
		fprintf(stderr, "no %s in: %s\n", k, text);
	assert_non_null(p);
	p += strlen(k);
	while (*p == ' ')
		p++;
	if (!strncmp(p, "true", 4))
		return 1;
	if (!strncmp(p, "false", 5))
		return 0;
	return strtoull(p, NULL, 10);
}

/* ---- VMs and migrations ------------------------------------------------- */

void lm_live_expect_running(struct lm_live_vm *vm, const char *name, const char *mem,
			    const char *append, const char *const *extra, int have)
{
	assert_int_equal(lm_live_run(vm, name, mem, append, extra), 0);
	bool ok = lm_live_vm_wait_progress(vm, have);
	if (!ok) {
		lm_live_dump(vm->out, 4096);
		lm_live_dump(vm->console, 4096);
	}
	assert_true(ok);
}

void lm_live_expect_switchover(struct lm_live_vm *src, struct lm_live_vm *dst, const char *key)
{
	const char *why = lm_live_check_switchover(src, dst, key);
	if (why) {
		fprintf(stderr, "%s\n", why);
		lm_live_dump(src->console, 2048);
		lm_live_dump(dst->console, 4096);
		lm_live_dump(dst->out, 4096);
	}
	assert_null(why);
}

void lm_live_expect_hop(struct lm_live_mig *m, struct lm_live_vm *from, struct lm_live_vm *to,
			const char *const *opts, const char *label)
{
	int rc = lm_live_migrate(m, from, to->uri, opts);
	struct lm_live_figures f;
	lm_live_mig_figures(m, &f);
	print_message("      %s -> %s%s: exit %d, total %.0f ms, downtime %.1f ms, %.0f rounds, %.1f MiB\n",
		      from->name, to->name, label ? label : "", rc, f.total_ms, f.downtime_ms, f.rounds,
		      f.transferred / 1048576.0);
	if (rc != 0) {
		fprintf(stderr, "%s%s", m->json ? m->json : "", m->errtext ? m->errtext : "");
		lm_live_dump(from->out, 4096);
		lm_live_dump(to->out, 4096);
	}
	assert_int_equal(rc, 0);
	assert_non_null(strstr(m->json, "\"completed\""));
}

void lm_live_expect_survived(struct lm_live_vm *src, const char *key)
{
	const char *why = lm_live_check_survived(src, key);
	if (why) {
		fprintf(stderr, "%s\n", why);
		lm_live_dump(src->out, 4096);
		lm_live_dump(src->console, 4096);
	}
	assert_null(why);
}

void lm_live_expect_never_ran(struct lm_live_vm *dst)
{
	char *t = lm_live_slurp(dst->console);
	if (t[0])
		lm_live_dump(dst->console, 4096);
	assert_string_equal(t, "");
	free(t);
}

void lm_live_expect_waiting_again(struct lm_live_vm *dst, int have)
{
	assert_true(lm_live_wait_line(dst->out, "waiting for another migration", have, NULL, 0,
				      dst->pid, LM_LIVE_DEADLINE_S));
	assert_true(lm_live_alive(dst->pid));
	lm_live_expect_never_ran(dst);
}
