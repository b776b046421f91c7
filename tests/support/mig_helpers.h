/*
 * Test helpers for the migration engine: a writer workload that scribbles on
 * guest memory (optionally at a fixed rate) and can be paused, a destination
 * workload that maps fresh memory, a receiver thread, and a byte-counting
 * proxy that cuts the connection at a chosen point.
 */
#ifndef LIVEMIG_TEST_MIG_HELPERS_H
#define LIVEMIG_TEST_MIG_HELPERS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "livemig/migrate.h"

/* ---- source workload: one writer thread ---- */
struct lm_test_writer {
	struct lm_mem_region *regions;
	size_t n;
	struct lm_dirty_source *mark; /* sim source to mark, or NULL */
	uint64_t bytes_per_sec;       /* page writes * 4096 per second; 0: flat out */
	uint64_t seed;
	/* state */
	pthread_t th;
	int stop, pause_req, paused;
	uint64_t writes;
	uint64_t pauses, resumes;
	int save_state_calls;
};
int lm_test_writer_start(struct lm_test_writer *w);
void lm_test_writer_stop(struct lm_test_writer *w);
/* Workload ops for a writer (ctx = the writer); save_state adds a "test" blob. */
extern const struct lm_workload_ops lm_test_writer_ops;
/* Writes so far (any thread). */
uint64_t lm_test_writer_count(struct lm_test_writer *w);

/* ---- destination workload ---- */
struct lm_test_dest {
	struct lm_mem_region r[8];
	size_t n;
	int finish_calls;
	int finish_err;
	char finish_msg[256];
	/* Optional hook: runs in finish() before memory is compared (e.g. hash it). */
	void (*on_finish)(struct lm_test_dest *d, int err);
	void *user;
	/* setup (HELLO) takes this long first, as a VMM building its VM then. */
	unsigned setup_delay_ms;
	/* What the prepare op returns (0: ready); prepares counts its calls. */
	int prepare_err;
	int prepares;
	/* Optional: runs in the (first) successful prepare, before READY. */
	void (*on_prepare)(struct lm_test_dest *d);
	/* Post-copy: called when the guest would start running here, with
	 * pages still missing (postcopy_start); NULL: nothing runs. */
	int (*on_postcopy)(struct lm_test_dest *d);
	int postcopy_starts;
	/* Set by lm_test_dest_compare_with: a finish with err 0 compares
	 * every page with the source's (still paused) memory; mismatch
	 * stays UINT64_MAX if that never happened. */
	const struct lm_mem_region *compare;
	size_t compare_n;
	uint64_t mismatch;
};
extern const struct lm_workload_ops lm_test_dest_ops;
void lm_test_dest_free(struct lm_test_dest *d);
/* Compare with src[0..n) at a successful finish (d->mismatch). A failed
 * finish does not compare: the source's workload runs on then. */
void lm_test_dest_compare_with(struct lm_test_dest *d, const struct lm_mem_region *src, size_t n);

/* ---- receiver thread ---- */
struct lm_test_receiver {
	int fd;
	struct lm_receive_params p;
	struct lm_test_dest dest;
	struct lm_receive_stats st;
	int result;
	pthread_t th;
};
int lm_test_receiver_start(struct lm_test_receiver *r, int fd);
int lm_test_receiver_join(struct lm_test_receiver *r);
/*
 * Joins the receiver once the sender, writing on sender_fd, has returned
 * send_err. After a sender error the receiver may wait for data that never
 * comes: sender_fd is shut down first, as a sender process exiting would,
 * so that the receiver returns and the test fails instead of hanging.
 */
int lm_test_receiver_join_after(struct lm_test_receiver *r, int sender_fd, int send_err);

/* ---- channel connections handed over through a pipe ---- */
/* A receive's accept_channel over pipe[0], where a test writes the fds of
 * the channel connections (an int each): the next one, -ETIMEDOUT, or
 * -EIO. */
int lm_test_fd_pipe_accept(int rfd, int timeout_ms);
/* Closes the fds still waiting in the pipe (connections never taken). */
void lm_test_fd_pipe_drain(int rfd);

/* ---- cutting proxy ---- */
enum lm_test_cut_mode {
	LM_CUT_BOTH = 0,     /* close both sides */
	LM_CUT_SENDER = 1,   /* close only the sender's side */
	LM_CUT_RECEIVER = 2, /* close only the receiver's side */
};
struct lm_test_proxy {
	int a, b;              /* a: sender side, b: receiver side (proxy ends) */
	uint64_t cut_fwd;      /* cut after this many sender->receiver bytes (UINT64_MAX: never) */
	uint64_t cut_back;     /* cut after this many receiver->sender bytes */
	enum lm_test_cut_mode mode;
	uint64_t fwd, back;    /* bytes forwarded */
	bool cut;
	pthread_t th;
};
/* Creates two socketpairs: *sender_fd and *receiver_fd are the engine ends. */
int lm_test_proxy_start(struct lm_test_proxy *p, int *sender_fd, int *receiver_fd);
void lm_test_proxy_join(struct lm_test_proxy *p);

/* Anonymous MAP_NORESERVE memory, or NULL. */
void *lm_test_map(uint64_t pages);

#endif
