/*
 * cmocka assertions on top of live.h, for the end-to-end tests that drive
 * the livemig command: the group and test fixtures, requests on a control
 * socket that must succeed or fail in a given way, numbers that must be in
 * a line of text, and the checks after a migration.
 *
 * Every check here fails the running cmocka test instead of returning an
 * error, after printing what it saw to stderr; live.h's own helpers return
 * errors and judge nothing. Whatever these functions open or spawn is
 * registered with live.c, so a failing test leaves nothing behind once
 * lm_live_cleanup() runs.
 */
#ifndef LIVEMIG_TEST_LIVE_ASSERT_H
#define LIVEMIG_TEST_LIVE_ASSERT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "live.h"

/* ---- fixtures ----------------------------------------------------------- */

/* Group teardown: lm_live_finish(). */
int lm_live_group_teardown(void **state);
/* Per-test teardown: lm_live_cleanup(), so that a failing test's children
 * do not run into the next test. */
int lm_live_test_teardown(void **state);

/* ---- processes ---------------------------------------------------------- */

/* lm_live_spawn() with stdout and stderr into out; the spawn must work. */
pid_t lm_live_expect_spawn(const char *out, const char *const *args);

/* ---- control socket ----------------------------------------------------- */

/* lm_live_ctl_open(), which must succeed: connected, and a QMP greeting. */
void lm_live_expect_ctl_open(struct lm_live_ctl *c, const char *path, double deadline_s);
/* The VM's control connection (lm_live_vm_ctl()), which must open. */
struct lm_live_ctl *lm_live_expect_vm_ctl(struct lm_live_vm *vm);
/* Sends req; the connection must carry it and an answer (not an event)
 * must come back, into reply. */
void lm_live_expect_reply(struct lm_live_ctl *c, const char *req, char *reply, size_t replylen);
/* Same, and the answer must be a "return"; reply may be NULL. */
void lm_live_expect_ok(struct lm_live_ctl *c, const char *req, char *reply, size_t replylen);
/* Same, and the answer must be a GenericError with a "desc". */
void lm_live_expect_error(struct lm_live_ctl *c, const char *req);
/* query-status must answer "status":"<status>". */
void lm_live_expect_status(struct lm_live_ctl *c, const char *status);
/* balloon to `bytes` of guest RAM must answer "return". */
void lm_live_expect_balloon(struct lm_live_ctl *c, uint64_t bytes);

/* ---- numbers in text ---------------------------------------------------- */

/* The unsigned number right after key in line (key "writes=" in a progress
 * line); key must be there. */
uint64_t lm_live_line_u64(const char *line, const char *key);
/* The JSON member "key": as an unsigned number, true/false as 1/0; it must
 * be there. */
uint64_t lm_live_json_u64(const char *text, const char *key);

/* ---- VMs and migrations ------------------------------------------------- */

/* lm_live_run() must start the VM and its guest must print more than
 * `have` progress lines (its setup is done and its workload runs). */
void lm_live_expect_running(struct lm_live_vm *vm, const char *name, const char *mem,
			    const char *append, const char *const *extra, int have);
/* lm_live_check_switchover() must find nothing wrong. */
void lm_live_expect_switchover(struct lm_live_vm *src, struct lm_live_vm *dst, const char *key);
/* Migrates from -> to (livemig migrate with opts, may be NULL), prints the
 * figures (label after the names, may be NULL), dumps both sides' output if
 * it failed, and asserts it completed. m stays open for the caller's own
 * checks of m->json; free it with lm_live_mig_free. */
void lm_live_expect_hop(struct lm_live_mig *m, struct lm_live_vm *from, struct lm_live_vm *to,
			const char *const *opts, const char *label);
/* lm_live_check_survived() must find nothing wrong. */
void lm_live_expect_survived(struct lm_live_vm *src, const char *key);
/* An incoming side fed a migration that did not complete: its guest never
 * printed anything. */
void lm_live_expect_never_ran(struct lm_live_vm *dst);
/* An incoming side without --once after a broken migration: it said
 * "waiting for another migration" for the (have+1)-th time, it still runs,
 * and its guest never ran. */
void lm_live_expect_waiting_again(struct lm_live_vm *dst, int have);

#endif
