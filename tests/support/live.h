/*
 * Helpers for the end-to-end live-migration tests (tests/e2e/test_live_*.c).
 *
 * The tests drive the real `livemig` command (env LIVEMIG) running the real
 * guest image (env GUEST_ELF): `livemig run` as the source, `livemig
 * incoming` as the destination, `livemig migrate` in between, each a child
 * process whose console and output go to files in a private temporary
 * directory. These helpers spawn and reap those children, read the files,
 * speak QMP on the control socket (through the command's own client,
 * src/cli/qmp_client.h), and provide a small TCP proxy that cuts a
 * connection after a chosen number of bytes.
 *
 * Ownership: every child spawned here, every control-socket client opened here
 * and every proxy started here is registered in a global list, so that
 * lm_live_cleanup() (called from each test's teardown) kills, reaps, closes
 * and joins whatever a failing test left behind. cmocka leaves a failing
 * test with a longjmp, so nothing a test holds on its stack is trusted to be
 * cleaned up by the test itself.
 *
 * Deadlines only turn a hang into a failure; no helper judges how fast
 * anything ran.
 */
#ifndef LIVEMIG_TEST_LIVE_H
#define LIVEMIG_TEST_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* LM_CLI_EXIT_MIGRATED: the source's exit status after a completed migration. */
#include "cli/cli.h"

/* Generous upper bound for any single wait, in seconds. */
#define LM_LIVE_DEADLINE_S 120.0

/* ---- environment -------------------------------------------------------- */

/* Reads LIVEMIG and GUEST_ELF and creates the temporary directory
 * /tmp/lm-<tag>-XXXXXX. Returns 0, or -1 when the environment is missing
 * (the caller should skip). */
int lm_live_setup(const char *tag);
/* Whether the last lm_live_setup() succeeded: tests skip when it did not. */
bool lm_live_ready(void);
/* Kills (SIGKILL) and reaps every child still alive, closes every control
 * connection and stops every proxy. Safe to call any number of times. */
void lm_live_cleanup(void);
/* lm_live_cleanup(), then removes the temporary directory and its files. */
void lm_live_finish(void);
const char *lm_live_livemig(void);
/* The livemig the next processes run (e.g. the test build, LIVEMIG_HOOKS);
 * returns the one before. The string must outlive its use. */
const char *lm_live_set_livemig(const char *path);
const char *lm_live_guest(void);
/* A path in the temporary directory, from a printf format. The result lives
 * in one of 32 rotating static buffers: copy it if it must live long. */
const char *lm_live_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double lm_live_now(void);
void lm_live_msleep(int ms);
/* Prints to stderr only when LIVEMIG_TEST_VERBOSE is set. */
void lm_live_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- child processes ---------------------------------------------------- */

/* Starts `livemig ARGS...` (args is NULL-terminated, without argv[0]) with
 * stdout into out and stderr into err (err NULL: into out too). The child
 * is registered for cleanup. Returns its pid, or -errno. */
pid_t lm_live_spawn(const char *out, const char *err, const char *const *args);
/* Exit status of a child: its exit code, 128+signal when killed, or -1 when
 * it did not end within deadline_s (it is then killed and reaped). */
int lm_live_wait(pid_t pid, double deadline_s);
/* True while the child has not exited (reaps it, remembering its status,
 * when it has). */
bool lm_live_alive(pid_t pid);
/* Sends sig to the child if it has not been reaped yet. */
void lm_live_kill(pid_t pid, int sig);

/* ---- files and text ----------------------------------------------------- */

/* The whole file as a NUL-terminated string (empty if missing); free it. */
char *lm_live_slurp(const char *path);
/* Number of complete lines of text containing needle; the last such line
 * is copied into last (if not NULL). */
int lm_live_count(const char *text, const char *needle, char *last, size_t lastlen);
/* Same, on a file. */
int lm_live_count_file(const char *path, const char *needle, char *last, size_t lastlen);
/* Waits until the file holds more than `have` lines containing needle;
 * copies the last one into line. Gives up early when pid (> 0) has exited
 * and the line is still not there. */
bool lm_live_wait_line(const char *path, const char *needle, int have, char *line, size_t linelen,
		       pid_t pid, double deadline_s);
/* Parses the number that follows key in text (e.g. key "writes=" or
 * "\"transferred\":"), the first occurrence. Returns false if key is absent. */
bool lm_live_num(const char *text, const char *key, double *out);
/* The string value of "key":"VALUE" in JSON text, copied into out. */
bool lm_live_str(const char *text, const char *key, char *out, size_t outlen);
/* Prints the file to stderr, for a failing test's diagnosis (only the last
 * maxbytes bytes when it is longer). */
void lm_live_dump(const char *path, size_t maxbytes);

/* ---- control socket client ---------------------------------------------- */

struct lm_qmp;
struct lm_live_ctl {
	struct lm_qmp *qmp; /* the client (registered for cleanup) */
	int fd;		    /* its socket, for a test that writes bytes by hand */
	double deadline_s;  /* bounds each wait (lm_live_ctl_open's) */
	int migration_events; /* MIGRATION events seen so far */
	char last_event[4096];
};

/* Connects to the control socket at path (retrying until it exists or the
 * deadline passes) and reads the greeting. The same deadline then bounds
 * every wait on this connection. Returns 0 or -errno. */
int lm_live_ctl_open(struct lm_live_ctl *c, const char *path, double deadline_s);
void lm_live_ctl_close(struct lm_live_ctl *c);
/* Sends req as it is, with a newline, and copies the text of the next
 * reply that is not an event into reply (events on the way are counted).
 * Returns 0, or -errno (-ETIMEDOUT, -EPIPE when the server went away). */
int lm_live_ctl_cmd(struct lm_live_ctl *c, const char *req, char *reply, size_t replylen);

/* ---- VMs ---------------------------------------------------------------- */

struct lm_live_vm {
	pid_t pid;
	char name[32];
	char console[256]; /* the guest's serial output */
	char out[256];	   /* the process's stdout and stderr */
	char sock[256];	   /* its control socket */
	char uri[300];	   /* incoming: where it listens */
	struct lm_live_ctl ctl;
	bool ctl_open;
};

/* `livemig run GUEST --mem MEM --append APPEND --console .. --control ..`,
 * plus extra arguments (NULL-terminated, may be NULL); files are named after
 * name. Does not wait for the guest. Returns 0 or -errno. */
int lm_live_run(struct lm_live_vm *vm, const char *name, const char *mem, const char *append,
		const char *const *extra);
/* `livemig incoming --listen tcp:127.0.0.1:0|unix:TMP/NAME.mig ...` (transport
 * "tcp" or "unix"), plus extra arguments; waits for its "listening on" line
 * and fills vm->uri. Returns 0 or -errno. */
int lm_live_incoming(struct lm_live_vm *vm, const char *name, const char *transport,
		     const char *const *extra);
/* The VM's control connection, opened on first use (NULL on failure). */
struct lm_live_ctl *lm_live_vm_ctl(struct lm_live_vm *vm);
/* Closes the VM's control connection if it is open (the next use opens a
 * new one). */
void lm_live_vm_ctl_close(struct lm_live_vm *vm);
/* One request on the VM's control socket; returns 0 if the reply is a
 * "return", -EIO if it is an "error", other -errno on transport failure. */
int lm_live_vm_cmd(struct lm_live_vm *vm, const char *req, char *reply, size_t replylen);
/* query-status's "status" ("running", "paused", ...), or false. */
bool lm_live_vm_status(struct lm_live_vm *vm, char *status, size_t len);
/* Asks the guest to check all its pages (guest-verify) and waits for the
 * answer in query-status. Returns 1 for "ok", 0 for "fail", -errno when no
 * answer came. */
int lm_live_vm_verify(struct lm_live_vm *vm);
/* Waits for the guest's first progress line (it comes after setup). */
bool lm_live_vm_wait_progress(struct lm_live_vm *vm, int have);
/* The value of key ("writes=", "reads=", "t=") in the guest's last progress
 * line; false if there is none. */
bool lm_live_vm_last_progress(struct lm_live_vm *vm, const char *key, double *val);
/* Waits for a progress line whose key value exceeds above. */
bool lm_live_vm_wait_progress_above(struct lm_live_vm *vm, const char *key, double above);
/* Sends quit and waits for the exit; returns the exit status (see
 * lm_live_wait). Kills the process if the control socket is gone. */
int lm_live_vm_quit(struct lm_live_vm *vm);

/* ---- migrations --------------------------------------------------------- */

struct lm_live_mig {
	pid_t pid;
	char out[256], err[256];
	int rc;	    /* exit status once finished */
	char *json; /* its stdout (the --json report), once finished; freed by lm_live_mig_free */
	char *errtext;
};

/* Starts `livemig migrate --control SRC.sock --to URI --json -q OPTS...`. */
int lm_live_mig_start(struct lm_live_mig *m, const struct lm_live_vm *src, const char *uri,
		      const char *const *opts);
/* Waits for it and reads its output. Returns its exit status. */
int lm_live_mig_finish(struct lm_live_mig *m);
void lm_live_mig_free(struct lm_live_mig *m);
/* Start + finish. */
int lm_live_migrate(struct lm_live_mig *m, const struct lm_live_vm *src, const char *uri,
		    const char *const *opts);
/* The figures the live tests print from a finished migration's --json
 * report (QEMU's names: total-time, downtime, transferred, rounds); a figure
 * the report lacks stays 0. */
struct lm_live_figures {
	double total_ms, downtime_ms, transferred, rounds;
};
void lm_live_mig_figures(const struct lm_live_mig *m, struct lm_live_figures *f);
/* Polls the source's query-migrate until its status is "active" and at
 * least min_bytes have been transferred (or the migration already ended:
 * returns false then). */
bool lm_live_wait_migration_active(struct lm_live_vm *src, double min_bytes);

/* ---- what a test checks ------------------------------------------------ */

/* After a migration from src to dst reported completed: the source process
 * exits LM_CLI_EXIT_MIGRATED; the destination guest prints "verify ok" (the incoming side asks
 * for a check once it resumes the guest); its progress value key ("writes=",
 * "reads=" or "t=") grows past the source's last one; neither console holds
 * "FAIL". Returns NULL, or what went wrong (a static string). */
const char *lm_live_check_switchover(struct lm_live_vm *src, struct lm_live_vm *dst,
				     const char *key);
/* After a migration that did not complete: the source still runs
 * (query-status "running"), its progress value key keeps growing, a
 * guest-verify answers ok, and its console holds no "FAIL". Returns NULL or
 * what went wrong. */
const char *lm_live_check_survived(struct lm_live_vm *src, const char *key);

/* ---- a TCP proxy that cuts the connection ------------------------------- */

struct lm_live_proxy;
/* Listens on 127.0.0.1 (uri filled with tcp:127.0.0.1:PORT), accepts up to
 * 8 connections (a migration's main connection, then its channels), connects
 * each to target_uri (tcp:HOST:PORT) and forwards both ways; after cut_after
 * bytes forwarded towards the target on connection cut_conn (0: the first
 * accepted) it closes that one on both sides. Registered for cleanup. */
int lm_live_proxy_start_conn(struct lm_live_proxy **out, const char *target_uri, unsigned cut_conn,
			     uint64_t cut_after, char *uri, size_t urilen);
/* The same, cutting the first connection. */
int lm_live_proxy_start(struct lm_live_proxy **out, const char *target_uri, uint64_t cut_after,
			char *uri, size_t urilen);
/* Bytes forwarded towards the target on the connection that is cut so far,
 * and whether it cut. */
uint64_t lm_live_proxy_forwarded(struct lm_live_proxy *p, bool *cut);
/* Stops the proxy thread and frees it. */
void lm_live_proxy_stop(struct lm_live_proxy *p);

/* A connected TCP socket to a tcp:A.B.C.D:PORT URI, or -errno. */
int lm_live_tcp_connect(const char *uri);
/* Connects to a tcp: URI, writes len bytes and closes. Returns 0 or -errno. */
int lm_live_send_garbage(const char *uri, const void *buf, size_t len);

#endif
