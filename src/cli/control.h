/*
 * The control socket: JSON lines on a UNIX socket, in the manner of QEMU's
 * QMP. The server greets each client with {"QMP":{...}}, then answers
 * every request line
 *     {"execute":"NAME", "arguments":{...}, "id":ANY}
 * with {"return":{...}} or {"error":{"class":"GenericError","desc":"..."}}
 * (the id echoed when given), and may send {"event":"NAME", "data":{...},
 * "timestamp":{...}} lines at any time.
 *
 * Commands are a table: each subcommand registers the ones it serves
 * (`run` registers query-status, stop, cont, quit; migration adds its own)
 * with lm_control_register() before lm_control_start().
 *
 * Threads: one server thread polls the listening socket and every client
 * and runs the handlers, one request at a time, holding no lock: a handler
 * may block (e.g. until the vCPUs have paused). lm_control_event() may be
 * called from any thread, including a handler.
 *
 * Ownership: lm_control_new() creates the server and the socket file,
 * lm_control_free() stops the thread, closes clients and removes the file.
 */
#ifndef LIVEMIG_CLI_CONTROL_H
#define LIVEMIG_CLI_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

struct lm_control;
struct lm_vm;

/*
 * A command handler. args is the request's "arguments" object (never NULL:
 * an empty object when absent); do not keep it. On success return 0 and
 * optionally set *ret to a new object (ownership passes to the server;
 * NULL means {}). On failure return -errno and write a message into err
 * (errlen bytes); the client receives it as a GenericError.
 */
typedef int (*lm_control_fn)(void *ctx, struct json_object *args, struct json_object **ret,
			     char *err, size_t errlen);

int lm_control_new(const char *path, struct lm_control **out);
/* -EEXIST if the name is taken, -ENOSPC if the table is full. */
int lm_control_register(struct lm_control *c, const char *name, lm_control_fn fn, void *ctx);
/* As lm_control_register, for a command that acts on the VM: until a VM is
 * attached it is answered with an error and not called. Commands may be
 * added while the server runs (from one thread at a time). */
int lm_control_register_vm(struct lm_control *c, const char *name, lm_control_fn fn, void *ctx);
/* The VM the commands act on: `livemig incoming` serves its socket before
 * the VM arrives and attaches it then. lm_control_vm() is NULL until. */
void lm_control_attach_vm(struct lm_control *c, struct lm_vm *vm);
struct lm_vm *lm_control_vm(struct lm_control *c);
int lm_control_start(struct lm_control *c);
/* Sends an event to every connected client; takes ownership of data
 * (may be NULL). */
void lm_control_event(struct lm_control *c, const char *name, struct json_object *data);
void lm_control_free(struct lm_control *c);
/*
 * A migration's state of a paused VM, which query-status reports instead
 * of "paused" (a string literal: "postmigrate", "inmigrate-wait-commit",
 * ...); NULL for none. A successful `cont` clears it.
 */
void lm_control_set_run_state(struct lm_control *c, const char *state);
const char *lm_control_run_state(struct lm_control *c);
/* QEMU's VersionInfo for livemig: {"qemu":{"major","minor","micro"},
 * "package":"livemig X.Y.Z"}, as in the greeting and query-version. */
struct json_object *lm_control_version_json(void);

/*
 * The VM commands every livemig process that holds a VM serves
 * (src/cli/control_vm.c): query-status, stop, cont, quit, and livemig's
 * guest-verify (bump the pv verify counter). stop/cont also send the
 * STOP/RESUME events. The VM must outlive the server.
 */
int lm_control_vm_commands(struct lm_control *c);
/* The balloon commands (src/cli/control_balloon.c): balloon, query-balloon. */
int lm_control_balloon_commands(struct lm_control *c);

/* Helpers for handlers: fetch a typed argument. 0, -ENOENT (absent, *out
 * untouched) or -EINVAL (wrong type; err says so). */
/* -EINVAL (err says which) if args has a member other than `allowed`
 * (NULL: none allowed). */
int lm_control_only_arg(struct json_object *args, const char *allowed, char *err, size_t errlen);
int lm_control_arg_int(struct json_object *args, const char *key, int64_t *out, char *err,
		       size_t errlen);
int lm_control_arg_bool(struct json_object *args, const char *key, bool *out, char *err,
			size_t errlen);
int lm_control_arg_str(struct json_object *args, const char *key, const char **out, char *err,
		       size_t errlen);

/*
 * Migration commands for a VM (src/cli/control_migrate.c): migrate,
 * migrate-cancel, query-migrate, migrate-set-parameters,
 * query-migrate-parameters. After a completed migration the VM is asked to
 * quit (status 0). Shut down in this order: lm_control_migrate_stop()
 * (cancels and joins a running migration), lm_control_free(), then
 * lm_control_migrate_free().
 */
struct lm_control_migrate;
int lm_control_migrate_new(struct lm_control *c, struct lm_control_migrate **out);
void lm_control_migrate_stop(struct lm_control_migrate *cm);
void lm_control_migrate_free(struct lm_control_migrate *cm);

#endif
