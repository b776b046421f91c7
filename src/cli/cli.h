/*
 * The livemig command: one subcommand per file in src/cli/ (bench: the
 * separate livemig-bench program, bench/).
 * Only src/cli may print to the terminal and exit.
 */
#ifndef LIVEMIG_CLI_H
#define LIVEMIG_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct lm_cli_cmd {
	const char *name;
	const char *summary;
	/* argv[0] is the subcommand name; returns the process exit code. */
	int (*main)(int argc, char **argv);
};

/* Subcommands, each defined in its own file. */
int lm_cli_bench(int argc, char **argv);   /* src/cli/bench.c: runs livemig-bench */
int lm_cli_run(int argc, char **argv);     /* src/cli/run.c */

int lm_cli_incoming(int argc, char **argv); /* src/cli/incoming.c */
int lm_cli_migrate(int argc, char **argv);  /* src/cli/migrate.c */
int lm_cli_status(int argc, char **argv);   /* src/cli/status.c */
int lm_cli_cancel(int argc, char **argv);   /* src/cli/status.c */

/*
 * The exit status of `livemig run` and `livemig incoming` after their VM
 * migrated away (the guest runs at the destination now). A guest that
 * powers off makes the process exit with the guest's own status (0 for
 * the guest image's normal power-off), so scripts can tell the two apart.
 */
#define LM_CLI_EXIT_MIGRATED 10

struct lm_uri;
/* lm_uri_parse() with the reason in words on failure (0 or -errno; err
 * gets e.g. "Bad uri 'unix:...': the UNIX socket path is 150 bytes, at
 * most 107 fit"). src/cli/uri.c. */
int lm_cli_uri_parse(const char *s, struct lm_uri *u, char *err, size_t errlen);

struct lm_vm;
struct lm_control;
struct lm_control_migrate;
/* Block SIGINT/SIGTERM/SIGHUP in the calling thread (and the threads it
 * creates later): call before any thread exists. */
void lm_cli_block_signals(void);
/* A VM process's control socket (src/cli/serve.c): the server with the VM,
 * balloon and migration commands. Opened before the VM may exist. */
struct lm_cli_ctl {
	struct lm_control *ctl;
	struct lm_control_migrate *cm;
};
/* Open (create, truncate) a console log file; -1 after printing why. */
int lm_cli_open_console(const char *prog, const char *path);
/* Why a UNIX socket could not be created at path (err from
 * lm_transport_unix_listen() or lm_control_new()), naming what is there:
 * "PATH is a regular file, not a stale socket: refusing to replace it".
 * Writes into buf and returns it (src/cli/serve.c). */
const char *lm_cli_socket_error(const char *path, int err, char *buf, size_t len);
/* path NULL: no socket (c zeroed, 0). Prints its own errors. */
int lm_cli_ctl_open(const char *prog, const char *path, struct lm_cli_ctl *c);
void lm_cli_ctl_close(struct lm_cli_ctl *c);
/* How lm_cli_serve_vm starts the VM. */
enum lm_cli_serve_mode {
	LM_SERVE_BOOTED,      /* `run`: the VM runs (or stays paused) as created */
	LM_SERVE_MIGRATED_IN, /* resume the vCPUs the migration paused, ask the guest to verify */
	/* Verified but uncommitted (docs/stream.md 3.11): keep it paused,
	 * query-status says inmigrate-wait-commit until an operator's cont. */
	LM_SERVE_WAIT_COMMIT,
};
/* Serve a created VM until it stops: attach it to the control socket c
 * (may be NULL), take the termination signals, run the vCPUs as mode says.
 * Closes c. Returns the process exit code. */
int lm_cli_serve_vm(const char *prog, struct lm_vm *vm, struct lm_cli_ctl *c, enum lm_cli_serve_mode mode);

/* src/cli/parse.c, which livemig-bench links too.
 * Parse a size such as 4096, 64K, 2M, 2G, 1T (binary units). 0 or -EINVAL. */
int lm_cli_parse_size(const char *s, uint64_t *out);
/* A dirty ring size: a power of two in 1024..1048576 entries. */
int lm_cli_parse_ring_size(const char *s, uint32_t *out);
/* Whether this host can hold a VM of mem_size bytes (lm_vm_host_check);
 * prints why not (as "livemig CMD: ...") and returns -ENOMEM. */
int lm_cli_check_host(const char *cmd, uint64_t mem_size);
/* Parse a rate such as 50M (bytes/s) or 1Gbit. */
int lm_cli_parse_rate(const char *s, uint64_t *bytes_per_sec);

#endif
