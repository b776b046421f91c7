/*
 * A QMP client: the one client of livemig's control socket (and of QEMU's
 * QMP socket, which frames the same way), used by `livemig migrate`, the
 * benchmarks (livemig-bench) and the tests.
 *
 * The workload: a handful of commands a second on one UNIX stream socket,
 * with asynchronous events (STOP, RESUME, MIGRATION, ...) arriving between
 * the replies, from a server that may be slow, stuck or gone. So every wait
 * has a deadline, the socket is non-blocking (a server that reads nothing
 * cannot block a send past its deadline), and messages are framed by JSON
 * value with json-c's incremental tokener: a newline after a value is
 * allowed but not needed, several values may come in one read and one value
 * may be split across reads. Bytes that do not parse are skipped up to the
 * next newline (or the next '{'), so one bad value does not lose the rest.
 *
 * Ownership: lm_qmp_new() returns a handle the caller frees with
 * lm_qmp_free(), which closes the socket. Objects returned through an
 * out-parameter are new references the caller puts; the greeting, the
 * event passed to the callback and lm_qmp_text() belong to the handle.
 * One thread uses a handle at a time; the event callback must not call
 * back into the same handle's reading functions.
 *
 * Errors: every fallible call returns 0 or -errno and leaves a message in
 * lm_qmp_error() (without the command's name: the caller knows it).
 * -ETIMEDOUT: the deadline passed; -EPIPE: the server closed the
 * connection; -EREMOTEIO: the server answered with an error (its "desc" is
 * the message, its "class" lm_qmp_error_class()); -EPROTO: not a QMP
 * greeting or reply; -EMSGSIZE: a value larger than the limit (the
 * connection is then unusable).
 */
#ifndef LIVEMIG_CLI_QMP_CLIENT_H
#define LIVEMIG_CLI_QMP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct json_object;
struct lm_qmp;

/* The largest value accepted from the server. */
#define LM_QMP_MAX_VALUE (64u << 20)

/* Called for every event read, whichever call is waiting: name is its
 * "event" member, event the whole object (borrowed: json_object_get() it to
 * keep it); lm_qmp_text(q) is its text as received. */
typedef void lm_qmp_event_fn(struct lm_qmp *q, const char *name, struct json_object *event,
			     void *arg);

/* A handle, not connected. NULL when out of memory. */
struct lm_qmp *lm_qmp_new(void);
/* Closes the connection and frees the handle (NULL is a no-op). */
void lm_qmp_free(struct lm_qmp *q);
/* Closes the connection (if open); the handle may connect again. */
void lm_qmp_close(struct lm_qmp *q);

void lm_qmp_set_event_cb(struct lm_qmp *q, lm_qmp_event_fn *fn, void *arg);
/* While lm_qmp_connect() retries, it calls give_up(arg) before each new
 * try; a negative return (-errno, e.g. -ECHILD when the server's process
 * has exited) ends the retries with that error. */
void lm_qmp_set_give_up(struct lm_qmp *q, int (*give_up)(void *arg), void *arg);
/* Prints every value sent ("TAG -> ...") and received ("TAG <- ...") to
 * f (NULL: off). tag must outlive the handle. */
void lm_qmp_set_trace(struct lm_qmp *q, FILE *f, const char *tag);

/*
 * Connects to the UNIX socket at path and reads the greeting. While the
 * socket does not exist or refuses connections, retries for retry_s
 * seconds (0: one try). Then waits at most timeout_s for the greeting, an
 * object with a "QMP" member. On failure the handle stays unconnected.
 */
int lm_qmp_connect(struct lm_qmp *q, const char *path, double retry_s, double timeout_s);
bool lm_qmp_connected(const struct lm_qmp *q);
/* The socket (-1 when not connected): for poll(), or for a test that
 * writes bytes by hand. It is non-blocking. */
int lm_qmp_fd(const struct lm_qmp *q);
/* The greeting, NULL when not connected. */
struct json_object *lm_qmp_greeting(const struct lm_qmp *q);

/*
 * Sends {"execute": cmd, "arguments": args, "id": N} (args consumed, may be
 * NULL) and waits at most timeout_s for its reply. On success *ret (if not
 * NULL) is the reply's "return" member. Replies carrying another id (late
 * answers to a request that timed out) are skipped.
 */
int lm_qmp_exec(struct lm_qmp *q, const char *cmd, struct json_object *args, double timeout_s,
		struct json_object **ret);
/*
 * Sends the request object req as it is (borrowed; with or without "id")
 * and waits at most timeout_s for its reply: with an id, the next reply
 * that carries the same id or none (a server that could not read the
 * request answers without one); without, the next reply. *reply is the
 * whole reply, a "return" or an "error" alike (0 both times).
 */
int lm_qmp_request(struct lm_qmp *q, struct json_object *req, double timeout_s,
		   struct json_object **reply);
/* Sends len bytes as they are (a test's malformed request, or a request
 * already serialised), within timeout_s. */
int lm_qmp_send_raw(struct lm_qmp *q, const void *buf, size_t len, double timeout_s);
/* The next reply (not an event) within timeout_s, whole. */
int lm_qmp_read_reply(struct lm_qmp *q, double timeout_s, struct json_object **reply);
/* Reads what arrives within timeout_s (0: only what has arrived already),
 * passing events to the callback and dropping stray replies. Returns 0
 * when the time is up, -EPIPE once the server has closed and everything
 * it sent has been read, or another -errno. */
int lm_qmp_poll(struct lm_qmp *q, double timeout_s);
/* Like lm_qmp_poll() until an event called name arrives: returns 0 with
 * *event (if not NULL) a new reference, -ETIMEDOUT when none came in
 * timeout_s. The callback sees that event too. */
int lm_qmp_wait_event(struct lm_qmp *q, const char *name, double timeout_s,
		      struct json_object **event);

/* The text of the last value read (reply, event or greeting) as the server
 * sent it, without surrounding white space; "" before any. Valid until the
 * next call on the handle. */
const char *lm_qmp_text(const struct lm_qmp *q);
/* What the last failed call failed on; "" after none. */
const char *lm_qmp_error(const struct lm_qmp *q);
/* The "class" of the last error reply (e.g. "GenericError"); "" if none. */
const char *lm_qmp_error_class(const struct lm_qmp *q);

/* An event's "timestamp" {seconds, microseconds} in seconds of the
 * server's wall clock; 0 when it has none. */
double lm_qmp_event_time(struct json_object *event);

#endif
