/*
 * The control socket: QEMU's QMP on a UNIX socket. The server greets each
 * client with {"QMP":{"version":{"qemu":{...},"package":"livemig X.Y.Z"},
 * "capabilities":[]}}, then answers every request
 *     {"execute":"NAME", "arguments":{...}, "id":ANY}
 * with {"return":{...}} or {"error":{"class":CLASS,"desc":"..."}} (the id
 * echoed when given), and may send {"event":"NAME", "data":{...},
 * "timestamp":{"seconds":S,"microseconds":US}} at any time. Requests are
 * framed by JSON value (a newline is optional; several in one write, or one
 * in several, are fine); every message the server sends ends with a
 * newline, for clients that read lines. docs/cli.md has the details.
 *
 * Commands are a table: each subcommand registers the ones it serves
 * (`run` registers query-status, stop, cont, quit; migration adds its own)
 * with lm_control_register() before lm_control_start().
 *
 * Threads: one server thread polls the listening socket and every client
 * (non-blocking sockets, one bounded output queue per client: a client
 * that does not read what it asked for is disconnected when its queue
 * passes 1 MiB) and runs the handlers, one request at a time, holding no
 * lock: a handler may block briefly (e.g. until the vCPUs have paused).
 * lm_control_event() may be called from any thread, including a handler:
 * it only queues the event and wakes the server thread, which sends it.
 *
 * Ownership: lm_control_new() creates the server and the socket file
 * (mode 0600; it replaces only a stale socket, see lm_transport_unix_listen),
 * lm_control_free() stops the thread (queued output gets up to 0.5 s to go
 * out), closes clients and removes the file if it is still the one it
 * created.
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
 * (errlen bytes); the client receives it as a GenericError, or with the
 * class the handler set with lm_control_error_class().
 */
typedef int (*lm_control_fn)(void *ctx, struct json_object *args, struct json_object **ret,
			     char *err, size_t errlen);

/* QEMU's error classes (qapi ErrorClass) that livemig uses. */
#define LM_CONTROL_GENERIC_ERROR "GenericError"
#define LM_CONTROL_COMMAND_NOT_FOUND "CommandNotFound" /* no such command */
/* A device the command needs is not there or not active (QEMU: query-balloon
 * without a balloon device, "No balloon device has been activated"). */
#define LM_CONTROL_DEVICE_NOT_ACTIVE "DeviceNotActive"

/* -EEXIST (a file that is not a socket is at path), -EADDRINUSE (another
 * process serves a socket there), -ENAMETOOLONG, other -errno. */
int lm_control_new(const char *path, struct lm_control **out);
/* For a handler about to fail: its error's class (one of the LM_CONTROL_
 * strings above; a string literal). Only from a handler, on the server
 * thread; it applies to the reply of the request being handled. */
void lm_control_error_class(struct lm_control *c, const char *cls);
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
/* Queues an event for every connected client (the server thread sends it;
 * the caller never waits for a client); takes ownership of data (may be
 * NULL). Any thread. */
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
 * query-migrate-parameters (the parameters: src/cli/params.h). `migrate`
 * answers at once and connects in the migration's thread. After a
 * completed migration the VM is asked to quit with LM_CLI_EXIT_MIGRATED
 * (cli.h). Shut down in this order: lm_control_migrate_stop() (cancels and
 * joins a running migration, a connect in progress included),
 * lm_control_free(), then lm_control_migrate_free().
 */
struct lm_control_migrate;
int lm_control_migrate_new(struct lm_control *c, struct lm_control_migrate **out);
void lm_control_migrate_stop(struct lm_control_migrate *cm);
void lm_control_migrate_free(struct lm_control_migrate *cm);

#endif
