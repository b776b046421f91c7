/*
 * The peer processes a benchmark starts and drives end to end (`livemig
 * run`, `livemig incoming`, qemu-system-x86_64), shared by the benchmarks
 * that migrate real VMs through the real command line (bench/vs_qemu.c,
 * bench/sizes.c): starting and stopping child processes, their QMP control
 * sessions through the command's one client (src/cli/qmp_client.h),
 * polling a migration to its end, and reading what the guest printed.
 *
 * Every child dies with the benchmark (PR_SET_PDEATHSIG), so an
 * interrupted run leaves no VM behind. The caller owns every struct here;
 * strings given to the functions are borrowed for the call (a QMP
 * session's tag for its lifetime).
 *
 * Errors: -errno, with a message in the caller's buffer where one is taken.
 */
#ifndef LIVEMIG_BENCH_PEER_H
#define LIVEMIG_BENCH_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;

#define LM_BENCH_GIB (1ull << 30)
#define LM_BENCH_MIB (1ull << 20)

void lm_bench_sleep(double s);

/* ---- child processes ---------------------------------------------------- */

/* Starts argv (argv[0] through PATH) with stdin from /dev/null and
 * stdout+stderr appended to out_path; the child gets SIGKILL if the
 * benchmark dies. The pid, or -errno. */
pid_t lm_bench_spawn(char *const argv[], const char *out_path);
/* Waits up to timeout_s for pid to exit; true if it did (and was reaped). */
bool lm_bench_wait_exit(pid_t pid, double timeout_s, int *wstatus);
/* Whether pid still runs (reaps it if not: see lm_bench_gone_desc). */
bool lm_bench_alive(pid_t pid);
/* "exit status N" or "killed by signal S" for the last child that
 * lm_bench_alive() found gone. */
const char *lm_bench_gone_desc(char *buf, size_t cap);
/* Stops a child for good: it has grace_s to exit by itself, then SIGTERM,
 * then SIGKILL. *pid becomes -1. */
void lm_bench_reap(pid_t *pid, double grace_s);

/* A growing argument vector for a child. */
struct lm_bench_argv {
	char *v[64];
	int n;
	char store[8192];
	size_t used;
};
void lm_bench_push(struct lm_bench_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- files ---------------------------------------------------------------- */

/* Removes the files in dir (not sub-folders), then dir. */
void lm_bench_remove_tree(const char *dir);
/* The last 120 characters of a log file on one line, for an error message. */
void lm_bench_log_tail(const char *path, char *out, size_t outlen);
/* The largest t of the guest's "progress t=..." lines in text, or -1. */
double lm_bench_last_progress(const char *text);
/*
 * The destination guest's verdict from its console text: "ok", "FAIL(mem)",
 * "FAIL(reg)", "FAIL(mem+reg)", "crash" or "none". *done is set once a check
 * that started on this console has finished, or the guest crashed.
 */
void lm_bench_classify_verify(const char *text, char *out, size_t outlen, bool *done);

/* ---- QMP sessions --------------------------------------------------------- */

struct lm_qmp;

struct lm_bench_qmp {
	struct lm_qmp *c;              /* NULL until connected */
	pid_t pid;                     /* the peer's process, while connecting */
	double stop_ts, resume_ts;     /* first STOP, last RESUME (host wall clock), 0 if none */
	struct json_object *mig_event; /* final stats from a MIGRATION event (livemig), or NULL */
	bool verbose;                  /* trace the QMP traffic on stderr */
	const char *tag;
};

void lm_bench_qmp_init(struct lm_bench_qmp *q, const char *tag, bool verbose);
void lm_bench_qmp_close(struct lm_bench_qmp *q);
/* Connects to path, retrying for timeout_s while the peer starts up (and
 * while pid lives), and reads the greeting. On failure *msg says why;
 * -ECHILD when the process ended first. */
int lm_bench_qmp_connect(struct lm_bench_qmp *q, const char *path, pid_t pid, double timeout_s, char *msg,
			 size_t msglen);
/* Records the events that arrive within timeout_s (0: those already here). */
void lm_bench_qmp_drain(struct lm_bench_qmp *q, double timeout_s);
/* Sends cmd with args (consumed, may be NULL) and returns the "return"
 * member (a new reference), or NULL with *msg set ("cmd: why"). */
struct json_object *lm_bench_qmp_exec(struct lm_bench_qmp *q, const char *cmd, struct json_object *args,
				      double timeout_s, char *msg, size_t msglen);

/* A number member (NAN if absent or not a number) and a string member
 * (NULL if absent); o may be NULL. */
double lm_bench_jnum(struct json_object *o, const char *key);
const char *lm_bench_jstr(struct json_object *o, const char *key);

/* ---- one side of a migration --------------------------------------------- */

struct lm_bench_side {
	pid_t pid;
	struct lm_bench_qmp q;
	char console[4200], sock[4200], log[4200]; /* DIR/NAME.console, .sock, .log */
	const char *name;                          /* "src" or "dst" */
};

/* Sets the paths under dir and an unconnected session. */
void lm_bench_side_init(struct lm_bench_side *s, const char *dir, bool dst, bool verbose);
/* Starts argv with its output in s->log (printed first when verbose). */
int lm_bench_side_spawn(struct lm_bench_side *s, char *const argv[], bool verbose);
/* Connects to s->sock within timeout_s and leaves QMP's capabilities
 * negotiation; on failure *msg says why, with the log's last words. */
int lm_bench_side_connect(struct lm_bench_side *s, const char *peer, double timeout_s, char *msg, size_t msglen);
/* Asks the side to quit (when ask and it is connected), then makes sure it
 * is gone, and closes the session. */
void lm_bench_side_stop(struct lm_bench_side *s, bool ask);

/*
 * Until the destination runs: resumes a paused one (`cont`, as QEMU leaves
 * a migrated paused guest paused). 0 once it runs; else -errno with *msg.
 */
int lm_bench_dest_running(struct lm_bench_side *dst, double timeout_s, char *msg, size_t msglen);
/* The destination guest's verdict from its console (lm_bench_classify_verify)
 * once a check that started there ended, or after timeout_s; "crash" and
 * -ECHILD when the process exited first. */
int lm_bench_guest_verdict(struct lm_bench_side *dst, double timeout_s, char *out, size_t outlen);

/* Until the source guest's progress lines reach guest_s seconds of guest
 * time (and a line containing also, if not NULL, appeared), at most
 * timeout_s; -EIO when it crashed, -ECHILD when the process ended,
 * -ETIMEDOUT, each with *msg. */
int lm_bench_warm_up(const struct lm_bench_side *src, double guest_s, const char *also, double timeout_s, char *msg,
		     size_t msglen);

/* migrate-set-parameters with params (consumed; NULL: none), then migrate
 * to tcp:127.0.0.1:port; *t0 is when migrate was sent. -EPROTO with *msg
 * when a command failed. */
int lm_bench_migrate_start(struct lm_bench_side *src, struct json_object *params, int port, double *t0, char *msg,
			   size_t msglen);
/* Cancels the source's migration (QEMU's migrate_cancel or livemig's
 * migrate-cancel), ignoring the answer. */
void lm_bench_migrate_cancel(struct lm_bench_side *src, bool qemu);

/* The stats of each query-migrate answer while a migration is polled. */
typedef void lm_bench_poll_fn(struct json_object *st, void *arg);

/*
 * Polls query-migrate on the source every interval_s until the migration
 * ends (completed, failed, cancelled) or the deadline (bench_now() time)
 * passes. fn (may be NULL) sees every answer. livemig's source sends its
 * final stats as a MIGRATION event and exits, which may beat the answer to
 * a query: that event then counts as the final answer. *final is the last
 * stats seen (a new reference, or NULL). Returns 0 completed, -EIO failed
 * or cancelled (*msg has the error-desc), -ETIMEDOUT, or -EPROTO when the
 * source stopped answering.
 */
int lm_bench_migrate_poll(struct lm_bench_side *src, double deadline, double interval_s, lm_bench_poll_fn *fn,
			  void *arg, struct json_object **final, char *msg, size_t msglen);

/* ---- command lines --------------------------------------------------------- */

/* What a peer runs: the guest and its machine. */
struct lm_bench_guest {
	const char *image;  /* the guest ELF */
	uint64_t mem;       /* bytes */
	const char *append; /* the guest's command line */
	bool paused;        /* created, never run on the source */
};

/* "64G" or "512M". */
void lm_bench_mem_arg(char *buf, size_t len, uint64_t bytes);
/* A free TCP port on the loopback, or -errno. */
int lm_bench_free_port(void);

/*
 * qemu-system-x86_64 for one side in dir (serial DIR/src.console, QMP
 * DIR/src.sock; the destination with -incoming tcp:127.0.0.1:port). cpu
 * is the -cpu model or LM_QEMU_CPU_DEFAULT. With noreserve, the RAM is a
 * memory-backend-ram with reserve=off (no swap reserved: a sparse guest
 * bigger than the host's memory can exist, as livemig's MAP_NORESERVE).
 */
void lm_bench_qemu_argv(struct lm_bench_argv *a, const char *qemu, const char *cpu, const struct lm_bench_guest *g,
			bool noreserve, const char *dir, bool dst, int port);
/* `livemig run` (source) or `livemig incoming --listen tcp:127.0.0.1:0
 * --once` (destination) in dir, then the NULL-terminated extra arguments
 * (may be NULL). */
void lm_bench_livemig_argv(struct lm_bench_argv *a, const char *livemig, const struct lm_bench_guest *g,
			   const char *dir, bool dst, const char *const *extra);
/* The port `livemig incoming` printed in log_path ("listening on tcp:..."),
 * waiting up to timeout_s while pid lives. */
int lm_bench_livemig_port(const char *log_path, pid_t pid, double timeout_s);

/* ---- the machine ---------------------------------------------------------- */

void lm_bench_machine_info(char *cpu, size_t cpulen, long *ncpu, double *mem_gib);
/* A benchmark's JSON report: {"benchmark", "date", "machine": {"nproc",
 * "cpu", "mem-gib"}}, for the caller to add to and put. */
struct json_object *lm_bench_json_root(const char *benchmark, const char *date);
/* QEMU's version ("7.2.22 (Debian ...)"), or "unknown". */
void lm_bench_qemu_version(const char *qemu, char *out, size_t len);
/* Whether name (a path, or found through PATH) is executable. */
bool lm_bench_in_path(const char *name);

/* ---- numbers -------------------------------------------------------------- */

/* A double >= min from s; -EINVAL otherwise. */
int lm_bench_parse_double(const char *s, double *out, double min);
/* For qsort() of doubles, ascending. */
int lm_bench_cmp_double(const void *a, const void *b);
/* v scaled and printed with prec decimals, or "-" for NAN; returns out. */
const char *lm_bench_fmt(char *out, size_t len, double v, double scale, int prec);

#endif
