/* Internal to src/migrate: the convergence policy (converge.c). */
#ifndef LIVEMIG_MIGRATE_CONVERGE_H
#define LIVEMIG_MIGRATE_CONVERGE_H

#include <stdbool.h>
#include <stdint.h>

/* What the sender measured at the end of a round (or after PREPARE). */
struct lm__conv_in {
	double bw;	     /* bytes/s the stop-and-copy's data pages move at; 0: unknown */
	double dirty_rate;   /* pages/s the workload dirties */
	uint64_t remaining;  /* pages dirty now */
	double sync_s;	     /* the last harvest's cost: the pause harvests once more */
	double fixed_s;	     /* the last round's time beyond copying its pages (its
				harvests, scans, waits): what any round costs, 0 unknown */
	double rtt_s;	     /* the shortest round trip seen on this connection */
	double workload_s;   /* the workload's own part (ops->switchover_cost_us) */
	unsigned round;	     /* rounds done, >= 1 */
	unsigned max_rounds; /* 0: no limit */
	double elapsed_s;    /* since the migration started */
	double max_time_s;   /* 0: no limit */
	double limit_s;	     /* the downtime limit */
	bool prepared;	     /* the destination said READY (or needs no PREPARE) */
	bool cancel;	     /* out of rounds or time: cancel rather than switch over */
	bool guard;	     /* downtime-guard: never a pause known to break the limit */
	/* auto-converge: the throttle now and its steps (QEMU's
	 * cpu-throttle-initial and -increment), percent */
	bool auto_converge;
	unsigned throttle_pct, throttle_initial, throttle_increment;
	/* post-copy allowed (and negotiated); switch after postcopy_after
	 * rounds (0: once pre-copy is seen not to converge); postcopy_now:
	 * the user asked for it (migrate-start-postcopy). The user's own
	 * requests switch even when an ordinary switchover would fit. */
	bool postcopy;
	unsigned postcopy_after;
	bool postcopy_now;
};

enum lm__conv_act {
	LM__CONV_ROUND,	     /* send another round */
	LM__CONV_PREPARE,    /* tell the destination, wait for READY, then ask again */
	LM__CONV_SWITCHOVER, /* pause and send the rest */
	LM__CONV_CANCEL,     /* give up: out of rounds or time with cancel set, or with
				the guard and a pause predicted over the limit */
	LM__CONV_POSTCOPY,   /* pause, send the state and the list of dirty pages, let the
				destination run while they follow (docs/stream.md 3.14) */
};

struct lm__conv_out {
	enum lm__conv_act act;
	double expected_s; /* the pause a switchover now would take */
	bool forced;	   /* switching over (or cancelling) because out of rounds or time */
	bool last;	   /* no rounds or time left, whatever the decision */
	unsigned throttle_pct; /* the throttle to apply from now on */
};

/* The highest throttle: the vCPUs still run 1% of the time. */
#define LM__CONV_THROTTLE_MAX 99

/* A post-copy switch's cost per pending page: listing it, and the
 * destination dropping its stale copy (process_madvise, 0.39 us a run of
 * one page here) */
#define LM__CONV_PC_PAGE_S 0.5e-6

/* Pages left below which another round cannot shorten the pause noticeably. */
#define LM__CONV_CONVERGED_PAGES 64

void lm__converge(const struct lm__conv_in *in, struct lm__conv_out *out);

/* During a guarded pause (downtime-guard): may it go on? */
struct lm__guard_in {
	double elapsed_s;	/* the pause so far */
	uint64_t remaining;	/* pages still to send */
	double bw;		/* bytes/s, as in lm__conv_in; 0: unknown */
	double rtt_s;		/* the round trip RESULT still costs */
	double workload_left_s; /* what is left of the workload's part (its state load) */
	double limit_s;
};
bool lm__converge_guard_ok(const struct lm__guard_in *in);
const char *lm__conv_act_name(enum lm__conv_act a);

#endif
