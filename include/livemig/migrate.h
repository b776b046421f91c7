/*
 * livemig migration engine: pre-copy sender, receiver, stats, transports.
 *
 * The engine knows guest memory only as regions (struct lm_mem_region:
 * guest page numbers and the host address they live at) plus a dirty source
 * (livemig/track.h), and the thing that runs in that memory only as a
 * "workload" ops table the embedder provides (a VMM: its vCPUs and devices;
 * a test: a writer thread).
 *
 * Sender (lm_migration_*): a migration thread runs pre-copy rounds while the
 * workload keeps running, never holding a lock the workload or the caller
 * needs. Round 1 sends every page that may hold data (zero pages as zero
 * runs, never-touched pages not at all); later rounds send what the dirty
 * source reports, harvesting each sync unit just before scanning it and
 * re-arming each chunk just before copying it. After each round the
 * remaining dirty pages are counted; when they fit the downtime limit at the
 * measured bandwidth (or the round/time limits are hit and the policy says
 * switch over) the workload is paused, the rest is sent with the device
 * state, the RAM digest and END, and the sender waits for the receiver's
 * RESULT; after RESULT ok it sends COMMIT and, with commit-ack, waits for
 * COMMITTED before it reports success, leaving the workload paused; then
 * (verify full) it compares the paused memory with what it sent, page by
 * page, and reports any page whose last version never went out. Downtime is
 * measured from pause() to RESULT ok.
 *
 * Post-copy (params.postcopy, docs/stream.md 3.14-3.15): instead of the
 * last pass the paused sender lists the pages still dirty; once the
 * receiver answered RESULT ok and COMMIT is out, the receiver runs the
 * workload (ops->postcopy_start) with those pages missing, asks for the
 * ones it waits on, and the sender sends those first and the rest in
 * order, then the digest; a broken connection is recovered with
 * lm_migration_resume() and lm_receive_params.reconnect.
 *
 * Receiver (lm_migrate_receive): applies the stream to the memory the
 * workload's setup() provides, checks every record and the digest, answers
 * RESULT, and returns 0 only after a RESULT ok was sent and the sender's
 * COMMIT was read. If the connection drops in between, the sender may have
 * missed the RESULT and resumed its copy, so the receiver fails ("no commit
 * from the sender") and the guest must not run on the destination.
 *
 * Ownership: lm_migration is an opaque handle (_new/_free) that borrows the
 * regions' memory, the dirty source, the workload and the fd for its whole
 * life; it copies the region table and params. The fd is not closed by the
 * engine. Thread safety: lm_migration_query() and lm_migration_cancel() may
 * be called from any thread while the migration runs; the rest from the
 * owning thread.
 */
#ifndef LIVEMIG_MIGRATE_H
#define LIVEMIG_MIGRATE_H

#include "livemig/common.h"
#include "livemig/track.h"
#include "livemig/stream.h"
#include "livemig/skip.h"

/* ---- the workload ops table ---------------------------------------------- */

/* Where the workload writes its device state on the source. */
typedef struct lm_state_writer lm_state_writer;
/* Append one named blob (name 1..63 bytes of [A-Za-z0-9_.:-]). 0 or -errno. */
int lm_state_put(lm_state_writer *w, const char *name, const void *blob, size_t len);

struct lm_workload_ops {
	/* ---- source side ---- */
	/* Stop every writer of guest memory (a VMM kicks its vCPUs out of
	 * KVM_RUN and keeps them out). Returns when they are stopped. */
	int (*pause)(void *ctx);
	/* Let the writers run again (after a failed or cancelled migration). */
	int (*resume)(void *ctx);
	/* Device state, called while paused (may be NULL: no devices). */
	int (*save_state)(void *ctx, lm_state_writer *w);
	/* Optional blobs sent once before round 1, while the workload runs:
	 * what the destination needs to prepare early (a VMM: the machine's
	 * shape, so the VM is built before the pause, not during it). */
	int (*save_setup)(void *ctx, lm_state_writer *w);
	/* Optional, called once after save_setup while the workload runs:
	 * how long its own part of a switchover takes, in microseconds, as
	 * measured on it (stopping its writers, saving its device state and
	 * loading that state on the destination), or 0 if unknown. The
	 * downtime estimate adds it to the harvest, the pages and a round
	 * trip (src/migrate/converge.c). */
	uint64_t (*switchover_cost_us)(void *ctx);
	/* Optional (auto-converge): slow the writers so that they run only
	 * (100 - pct) percent of the time; 0 lets them run freely again (the
	 * engine calls it with 0 when the migration ends, however it ends). */
	int (*throttle)(void *ctx, unsigned pct);

	/* ---- destination side ---- */
	/*
	 * Provide zero-filled host memory for each region of the layout the
	 * sender announced (out[i].host for layout->regions[i]; first_page and
	 * npages are filled in already). The memory stays the workload's; it
	 * must remain mapped until the receive call returns and after.
	 */
	int (*setup)(void *ctx, const lm_stream_layout *layout, struct lm_mem_region *out);
	/* The sender is about to pause the workload: return once this side
	 * can take over quickly (e.g. the VM that save_setup's blobs asked
	 * for is built). May be NULL. */
	int (*prepare)(void *ctx);
	/* One device blob as received (may be NULL: blobs are ignored). */
	int (*load_state)(void *ctx, const char *name, const void *blob, size_t len);
	/* The receiver's final verdict: err 0 means every page and the digest
	 * checked out, RESULT ok was sent and the sender's COMMIT arrived, so
	 * the guest may run here (and nowhere else).
	 * Called exactly once when setup() was called. May be NULL. */
	void (*finish)(void *ctx, int err, const char *msg);
	/*
	 * The skip map the sender's ballooned-page map is written into
	 * (TABLE records), asked for once after setup(); it must cover the
	 * layout's page space and be all clear (the receiver clears it
	 * first). NULL (or a NULL op) refuses the skip-balloon and
	 * table-stream capabilities: ballooned pages then arrive as ordinary
	 * pages. The map stays the workload's, and like the memory it must
	 * stay allocated until the receive call returns.
	 */
	lm_skip_map *(*skip_map)(void *ctx);
	/*
	 * Why the destination op that just failed (setup, prepare,
	 * load_state) failed, e.g. "region 1 (gpa 0x20000000, 1 GiB) does not
	 * match the VM's slot layout ...": a short reason the receiver puts
	 * into its error and into the REFUSE or RESULT it sends, or NULL
	 * (then the errno is all it says). Called right after the failure;
	 * the string need only live until the next op. May be NULL.
	 */
	const char *(*explain)(void *ctx);
	/*
	 * The stream ended and every page and the digest checked out: return
	 * 0 if the workload can take over (the receiver then answers RESULT
	 * ok), or -errno if something it needs never came (a VMM: no vCPU
	 * state), which fails the migration with RESULT so that the sender
	 * resumes; explain() may say why. May be NULL.
	 */
	int (*end)(void *ctx);
	/*
	 * Post-copy (docs/stream.md 3.14): the sender committed to a switch
	 * with pages still missing here: run the guest now. Its accesses to a
	 * missing page wait (userfaultfd) until the page arrives; the
	 * receive call goes on placing pages and returns when all arrived.
	 * end() was called before. NULL: this workload cannot run before its
	 * memory is complete, and the receiver refuses postcopy-ram.
	 */
	int (*postcopy_start)(void *ctx);
	/*
	 * Optional: COMMIT was read, the guest may run here: run it now. Called
	 * before COMMITTED goes out, so that the sender's resume-us figure
	 * covers it; a failure sends no COMMITTED (the sender keeps its copy
	 * paused, unconfirmed) and fails the receive. NULL: the caller runs the
	 * guest after the receive returned. (In a post-copy, postcopy_start
	 * takes its place.)
	 */
	int (*start)(void *ctx);
};

/* ---- parameters ------------------------------------------------------------ */

/* What proves the migration complete (docs/stream.md 5). */
enum lm_verify_mode {
	/* The digest, and after the switchover the completeness check: the
	 * paused source RAM compared page by page with what was sent. */
	LM_VERIFY_FULL = 0,
	LM_VERIFY_DIGEST = 1, /* the digest only: what was sent arrived intact */
	/* Neither (per-frame checksums only), if the receiver accepts
	 * no-digest; otherwise as LM_VERIFY_DIGEST. */
	LM_VERIFY_NONE = 2,
};

enum lm_nonconverge {
	LM_NONCONVERGE_SWITCHOVER = 0, /* switch over anyway, downtime be what it may */
	LM_NONCONVERGE_CANCEL = 1,     /* give up: -ETIMEDOUT, the workload keeps running */
};

struct lm_migrate_params {
	uint64_t downtime_limit_ms; /* 0: default 300 */
	uint64_t max_bandwidth;     /* bytes/s, 0: unlimited (not applied during the stop-and-copy) */
	unsigned max_rounds;        /* 0: default 30 */
	uint64_t max_time_ms;       /* 0: no limit */
	enum lm_nonconverge on_nonconverge;
	bool compress;              /* offer zstd for data runs */
	bool compress_always;       /* try zstd on every data run that shrinks, however fast the
				       link (bytes cost more than time); false: zstd switches itself
				       off while sending plain is faster (docs/stream.md 3.16) */
	uint64_t caps_disabled;     /* capabilities the user switched off (LM_CAP_*) */
	uint64_t chunk_pages;       /* re-arm/copy granularity, multiple of 64; 0: 512 */
	uint64_t result_timeout_ms; /* waiting for the receiver's answers (ACCEPT, READY, RESULT),
				       which may take it long to prepare; 0: 60000 */
	/* Any other read or write on the connection that makes no progress
	 * for this long fails the migration (a receiver that stopped reading
	 * or a dead link): "the receiver read nothing for 10 s during round
	 * 3". 0: LM_IDLE_TIMEOUT_DEFAULT_MS; LM_TIMEOUT_NEVER: never. */
	uint64_t idle_timeout_ms;
	enum lm_verify_mode verify; /* default (0) LM_VERIFY_FULL */
	/* The downtime limit as a promise: a switchover whose pause would
	 * break it (found after the final harvest, or while the last pages go
	 * out) resumes the workload and pre-copy goes on; out of rounds or
	 * time, the migration is cancelled instead of switching over late. */
	bool downtime_guard;
	/* QEMU's auto-converge: slow the workload (ops->throttle) while it
	 * dirties more than half of what the link carries; first to
	 * throttle_initial percent (0: 20), then throttle_increment (0: 10)
	 * more per round, at most 99. */
	bool auto_converge;
	unsigned throttle_initial;
	unsigned throttle_increment;
	/* QEMU's postcopy-ram: allow the switch to post-copy (docs/stream.md
	 * 3.14) when pre-copy does not converge (src/migrate/converge.c), or
	 * after postcopy_after rounds (0: the policy decides), or when
	 * lm_migration_start_postcopy() asks. The receiver must accept it
	 * (offered as mandatory). From the switch on the guest's memory is
	 * split between both sides until the last page has arrived: if this
	 * process dies meanwhile, the guest is lost. */
	bool postcopy;
	unsigned postcopy_after;
	/* QEMU's multifd-channels (docs/stream.md 3.16): page data on this
	 * many extra connections, each with its own thread on both sides; 0
	 * or 1: the main connection carries everything. The engine opens
	 * them after the handshake with connect_channel(channel_arg, index),
	 * which returns a connected fd to the receiver's address (the engine
	 * owns and closes it) or -errno; without it, or with a receiver that
	 * does not accept multifd, the migration uses the main connection
	 * alone. At most LM_STREAM_MAX_CHANNELS. */
	unsigned channels;
	int (*connect_channel)(void *arg, unsigned index);
	void *channel_arg;
};

/* The idle timeout of both sides when none is set (10 s without a byte). */
#define LM_IDLE_TIMEOUT_DEFAULT_MS 10000u
/* A timeout value that means "wait for ever". */
#define LM_TIMEOUT_NEVER UINT64_MAX

/* Fill p with the defaults. */
void lm_migrate_params_default(struct lm_migrate_params *p);

/* ---- stats ----------------------------------------------------------------- */

enum lm_migrate_status {
	LM_MIG_NONE = 0,   /* not started */
	LM_MIG_SETUP,      /* handshake, arming the dirty source */
	LM_MIG_ACTIVE,     /* pre-copy rounds */
	LM_MIG_DEVICE,     /* workload paused: stop-and-copy, waiting for RESULT */
	LM_MIG_COMPLETED,  /* RESULT ok received */
	LM_MIG_FAILED,
	LM_MIG_CANCELLED,
	/* COMMIT went out but the receiver never said COMMITTED: the
	 * destination may run the guest or hold it paused. The workload stays
	 * paused (never resumed by the engine); lm_migration_wait returns
	 * -ENOLINK. The operator decides (docs/stream.md 3.13). */
	LM_MIG_UNCONFIRMED,
	/* Post-copy: the guest runs on the destination, the pages dirty at
	 * the switch follow (on request first, the rest in order). */
	LM_MIG_POSTCOPY_ACTIVE,
	/* Post-copy's connection broke (or the destination died) with pages
	 * still here: the workload stays paused, never resumed by the engine
	 * (it is the guest as it was at the switch), and the migration waits
	 * for lm_migration_resume(). Given up (lm_migration_cancel), it ends
	 * LM_MIG_FAILED, the workload still paused, and lm_migration_wait
	 * returns -ENOLINK; the error says what is where. */
	LM_MIG_POSTCOPY_PAUSED,
	/* A recovery connection was handed over (lm_migration_resume): the
	 * RESUME handshake runs; then postcopy-active again. */
	LM_MIG_POSTCOPY_RECOVER,
};

/* The completeness check's outcome (docs/stream.md 5.2). */
enum lm_verify_state {
	LM_VERIFY_NOT_RUN = 0, /* not asked for, or the migration did not complete */
	LM_VERIFY_OK,          /* every page of the paused source matches what was sent */
	LM_VERIFY_MISMATCH,    /* pages differ: the source's paused copy is the right one */
	LM_VERIFY_INCOMPLETE,  /* interrupted (cancelled) before every page was compared */
};
/* "not-run", "ok", "mismatch", "incomplete" */
const char *lm_verify_state_name(enum lm_verify_state v);
#define LM_VERIFY_LIST 8 /* mismatching pages listed in the stats */
/* QEMU's spelling: "setup", "active", "device", "completed", ... */
const char *lm_migrate_status_name(enum lm_migrate_status st);

/*
 * What query-migrate reports (QEMU's names in the JSON form). Times in
 * milliseconds as QEMU has them, plus microsecond precision for the total
 * and the downtime.
 */
struct lm_migrate_stats {
	enum lm_migrate_status status;
	uint64_t total_time_ms;        /* start until completion (or now) */
	uint64_t total_time_us;
	uint64_t setup_time_ms;        /* start until the first round */
	uint64_t downtime_ms;          /* measured: pause() until RESULT ok */
	uint64_t downtime_us;
	uint64_t expected_downtime_ms; /* the last estimate: harvest + remaining at the measured
					  bandwidth + a round trip + the workload's part
					  (ops->switchover_cost_us; src/migrate/converge.c) */
	uint64_t expected_downtime_us;
	/* The measured downtime, part by part (us; they add up to downtime_us):
	 * stopping the workload, saving its device state, the final harvest
	 * and the last pages up to END, then waiting for RESULT ok (the
	 * destination's last placement, digest check and state load, and the
	 * round trip). */
	uint64_t downtime_stop_us;
	uint64_t downtime_state_us;
	uint64_t downtime_ram_us;
	uint64_t downtime_result_us;
	uint64_t downtime_harvest_us;  /* of downtime_ram_us: the final harvest itself (the rest is the
					  last pages, or post-copy's list of pending pages, going out) */
	/* After RESULT ok, not in downtime_us: COMMIT out to COMMITTED back
	 * (commit-ack); a destination with a start op (livemig's VMM) resumes
	 * the guest in between, so the guest runs again at most this much
	 * later than downtime_us says. */
	uint64_t downtime_resume_us;
	uint64_t guard_resumes;	       /* switchovers the downtime guard undid (the workload resumed) */
	uint64_t guard_paused_us;      /* the workload's time stopped in those undone pauses, us */
	unsigned cpu_throttle_pct;     /* auto-converge's throttle now (the highest it reached, once ended) */
	uint64_t transferred;          /* bytes written to the connection */
	uint64_t remaining;            /* bytes of guest pages still dirty */
	uint64_t total;                /* bytes of guest RAM */
	uint64_t duplicate;            /* zero pages sent as zero runs */
	uint64_t normal;               /* pages sent with their contents */
	uint64_t normal_bytes;
	uint64_t skipped;              /* never-touched pages, neither read nor sent */
	uint64_t pages_scanned;        /* pages whose contents were read (zero test or copy) */
	uint64_t ballooned;            /* pages in the skip map (whether skip-balloon is on or not) */
	bool skip_balloon;             /* skip-balloon negotiated: ballooned pages neither read nor sent */
	uint64_t table_bytes;          /* bytes of TABLE records (the skip map on the wire) */
	uint64_t stop_copy_bytes;      /* bytes written from pause() to END */
	uint64_t dirty_sync_count;     /* full harvests of the dirty source */
	uint64_t dirty_sync_us;        /* the last full harvest after a round, us */
	uint64_t dirty_sync_max_us;    /* the longest of them */
	char dirty_source[16];         /* the dirty source's name ("kvm-ring", "kvm-log", ...) */
	uint64_t dirty_pages_rate;     /* pages/s dirtied, last estimate */
	double mbps;                   /* measured bandwidth, Mbit/s of guest data pages: the rate
					  the downtime estimate uses (zero pages, nearly free on the
					  wire, are not counted; see estimate() in sender.c) */
	uint64_t rounds;               /* pre-copy rounds begun (the final pass not counted) */
	uint64_t pages_per_round_last; /* pages sent in the last round */
	bool commit_acked;             /* the receiver answered COMMIT with COMMITTED */
	/* Post-copy (docs/stream.md 3.14): whether it switched, the pages
	 * dirty at the switch, how they went out, the bytes written and the
	 * time from COMMIT to the destination's last RESULT. */
	bool postcopy;
	uint64_t postcopy_pending;
	uint64_t postcopy_requests;        /* PAGE_REQ records received */
	uint64_t postcopy_pages_requested; /* pending pages sent because they were asked for */
	uint64_t postcopy_pages_pushed;    /* pending pages sent by the background push */
	uint64_t postcopy_bytes;
	uint64_t postcopy_time_ms;
	uint64_t postcopy_recoveries;      /* broken connections recovered (docs/stream.md 3.15) */
	unsigned channels;                 /* multifd channels in use (0: the main connection only) */
	/* PREPARE sent again before the pause, each answered by READY once the
	 * destination had applied every page sent (catch-up, docs/stream.md 3.12). */
	uint64_t catch_ups;
	/* The completeness check, run after the switchover (not in the pause). */
	enum lm_verify_state verify;
	uint64_t verify_pages;         /* pages compared */
	uint64_t verify_mismatches;    /* pages whose final contents were not what was sent */
	uint64_t verify_first[LM_VERIFY_LIST]; /* the first mismatching page indices */
	uint64_t verify_time_ms;       /* how long the check took (part of total_time_ms) */
	char error[256];               /* failed/cancelled/unconfirmed: the cause */
};

/* Formatters (library side; printing is the caller's). Both return a
 * malloc'ed NUL-terminated string or NULL on allocation failure. */
char *lm_migrate_stats_json(const struct lm_migrate_stats *st);
char *lm_migrate_stats_table(const struct lm_migrate_stats *st);

/* ---- sender ---------------------------------------------------------------- */

typedef struct lm_migration lm_migration;

/*
 * A migration of regions[0..n) (page aligned, non-overlapping, at most
 * LM_STREAM_MAX_REGIONS) tracked by src (not started: the engine starts and
 * stops it) for the workload. p may be NULL for the defaults.
 */
int lm_migration_new(lm_migration **out, const struct lm_mem_region *regions, size_t n,
		     struct lm_dirty_source *src, const struct lm_workload_ops *ops, void *ctx,
		     const struct lm_migrate_params *p);
/*
 * Before lm_migration_start: the pages marked in map are the guest's
 * ballooned pages (they read as zero). trusted says the guest promised to
 * tell the host before it reuses one (must-tell-host); only then, and
 * unless the user disabled LM_CAP_SKIP_BALLOON, the sender offers
 * skip-balloon and table-stream, and with both accepted, marked pages are
 * neither read nor sent and the map itself travels as TABLE records.
 * Otherwise ballooned pages are ordinary pages and the map only feeds the
 * "ballooned" stat. The map is borrowed for the migration's life; only the
 * migration thread reads its table stream (restarted at the start).
 * 0, -EINVAL (no map) or -EBUSY (started).
 */
int lm_migration_set_skip_map(lm_migration *m, lm_skip_map *map, bool trusted);
/* Start the migration thread on fd (a connected stream). 0 or -errno. */
int lm_migration_start(lm_migration *m, int fd);
/*
 * Wait for the end. 0 when the receiver answered RESULT ok, COMMIT went out
 * and (with commit-ack) COMMITTED came back: the workload is left paused, it
 * now runs on the destination; the stats say whether the completeness check
 * found pages that differ (the paused copy is then the right one: keep it).
 * -ENOLINK when COMMIT went out but COMMITTED did not come back
 * (LM_MIG_UNCONFIRMED): the workload is left paused too. Otherwise -errno,
 * with the workload resumed and the dirty source stopped, and the cause in
 * lm_migration_error() (e.g. "receiver closed the connection during round 3").
 */
int lm_migration_wait(lm_migration *m);
/*
 * Recovering a post-copy (docs/stream.md 3.15): while the status is
 * LM_MIG_POSTCOPY_PAUSED (its connection broke; the thread waits, the
 * workload stays paused), hand over fd, a new connection to the same
 * receiver; the engine owns it from then on (closes it). 0, or -EINVAL
 * when not paused. lm_migration_cancel() while paused gives up: the
 * migration ends -ENOLINK, LM_MIG_POSTCOPY_PAUSED, the workload paused.
 */
int lm_migration_resume(lm_migration *m, int fd);
/* migrate-start-postcopy: switch to post-copy at the next decision (the
 * end of the round in progress). 0, -EINVAL (post-copy not allowed by the
 * params), -EALREADY (switched, or the migration is over). Any thread. */
int lm_migration_start_postcopy(lm_migration *m);
/* Ask the migration to stop (any thread, any time). It ends with -ECANCELED
 * unless it already completed. In post-copy it cannot stop (the guest runs
 * on the destination, its pages are here): the cancel is ignored. */
void lm_migration_cancel(lm_migration *m);
/* A consistent snapshot of the stats (any thread, any time). */
void lm_migration_query(lm_migration *m, struct lm_migrate_stats *out);
/* The cause of the failure ("" while running or after success). */
const char *lm_migration_error(lm_migration *m);
/* Waits for the thread if it runs (after cancelling it), frees. */
void lm_migration_free(lm_migration *m);

/* Start + wait in one call, for embedders without a control thread. */
int lm_migrate_send(int fd, const struct lm_mem_region *regions, size_t n, struct lm_dirty_source *src,
		    const struct lm_workload_ops *ops, void *ctx, const struct lm_migrate_params *p,
		    struct lm_migrate_stats *stats);

/* ---- receiver -------------------------------------------------------------- */

struct lm_receive_params {
	uint64_t caps_disabled; /* capabilities this side refuses (LM_CAP_*) */
	/* Give up when a read (or a write of ours) makes no progress for this
	 * long ("no data from the sender for 10 s during round 3"); it also
	 * bounds the wait for COMMIT after RESULT ok. 0:
	 * LM_IDLE_TIMEOUT_DEFAULT_MS; LM_TIMEOUT_NEVER: never (COMMIT is
	 * then awaited for 60 s). */
	uint64_t idle_timeout_ms;
	/* A file descriptor that becomes readable to cancel the receive (an
	 * eventfd written to, a timerfd that expired, ...): every wait
	 * watches it and the receive fails with -ECANCELED. It is only
	 * polled, never read, and stays the caller's. 0 or negative: none
	 * (fd 0 is never taken for a cancel fd, so a zeroed struct has none). */
	int cancel_fd;
	/*
	 * Recovering a post-copy (docs/stream.md 3.15): when its connection
	 * breaks, the receive calls reconnect(reconnect_arg, why) (why says
	 * what broke) and waits in it for the next connection from the
	 * sender: a connected fd, which the receiver owns from then on (it
	 * closes it), or -errno to give up (the receive then fails; pages
	 * still missing stay missing, the guest waits on them). It is called
	 * again after a recovery connection that did not work out. NULL: a
	 * broken post-copy connection fails the receive.
	 */
	int (*reconnect)(void *arg, const char *why);
	void *reconnect_arg;
	/*
	 * Channels (multifd, docs/stream.md 3.16): the sender opens more
	 * connections to the address the main one came to. accept_channel
	 * (channel_arg, timeout_ms) waits up to timeout_ms for the next one
	 * that starts with a CHANNEL frame and returns its fd (the receiver
	 * owns it from then on), or -ETIMEDOUT / -ECANCELED / -errno. The
	 * receiver checks the frame and closes connections that are not its
	 * own (left over from an earlier attempt). NULL: multifd is refused,
	 * the sender then uses the main connection alone.
	 */
	int (*accept_channel)(void *arg, int timeout_ms);
	void *channel_arg;
};

struct lm_receive_stats {
	uint64_t total_time_ms;
	uint64_t received;     /* bytes read */
	uint64_t pages_data;   /* pages written from DATA runs */
	uint64_t pages_zero;   /* pages of ZERO/SKIPPED runs */
	uint64_t rounds;       /* ROUND records seen */
	uint64_t devices;      /* DEVICE records */
	uint64_t caps;         /* negotiated capabilities */
	uint64_t table_bytes;  /* bytes of TABLE records applied to the skip map */
	uint64_t ballooned;    /* pages marked in the skip map at the end */
	bool digest_ok;
	/* Verified and RESULT ok sent (or tried), but no COMMIT came: the
	 * receive returned -ENOLINK and the copy must be kept paused. */
	bool wait_commit;
	bool committed_sent;   /* COMMITTED went out (commit-ack) */
	/* How pages were placed: "uffdio-copy" (fresh memory filled without
	 * zeroing or faults), or "write (why UFFDIO_COPY was off)"; with
	 * "; N/M runs in place" when N of the M RAW runs the filler saw went
	 * straight into pages already present (preallocated memory, pages
	 * resent in a later round). */
	char fill[96];
	/* Post-copy (docs/stream.md 3.14): switched, the guest started here
	 * with pages missing (ops->postcopy_start), and all of them arrived. */
	bool postcopy;
	bool postcopy_started;
	bool postcopy_complete;
	uint64_t postcopy_pending;	/* pages that were missing at the switch */
	uint64_t postcopy_requests;	/* PAGE_REQ records sent (pages asked for) */
	uint64_t postcopy_faults;	/* faults on pending pages (a page waited on twice counts twice) */
	uint64_t postcopy_zero_faults;	/* faults on never-written pages, filled with zeros */
	uint64_t postcopy_blocktime_us; /* time faulting threads waited, summed over them */
	/* request to placement: the time a vCPU waits for a page */
	uint64_t postcopy_latency_p50_us, postcopy_latency_p99_us, postcopy_latency_max_us;
	uint64_t postcopy_time_ms;	/* the guest started here until the last page arrived */
	uint64_t postcopy_recoveries;	/* broken connections recovered */
	unsigned channels;		/* multifd channels the pages came on (0: the main connection) */
	char error[256];       /* the cause when the receive failed */
	uint64_t catch_ups;		/* later PREPARE records answered (catch-up, docs/stream.md 3.12) */
};

/*
 * Receive one migration from fd (blocking). Returns 0 only when the whole
 * stream arrived, every record checked out, the digest matched, RESULT
 * ok was sent and COMMIT was read (then, with commit-ack, COMMITTED is
 * sent, best effort): the guest runs here now. -ENOLINK when everything
 * verified but COMMIT did not come (stats->wait_commit): the memory is a
 * complete copy that must neither run nor be dropped until an operator
 * decides (the sender may have resumed, or died). Otherwise -errno with
 * the cause in stats->error (and a best-effort RESULT/REFUSE with that
 * cause sent to the sender). ops->finish sees the same err.
 * p and stats may be NULL.
 */
int lm_migrate_receive(int fd, const struct lm_receive_params *p, const struct lm_workload_ops *ops, void *ctx,
		       struct lm_receive_stats *stats);

/* ---- transports (src/migrate/transport.c) ----------------------------------- */

/* "tcp:HOST:PORT" (HOST may be [v6]) or "unix:PATH". */
struct lm_uri {
	enum { LM_URI_TCP = 1, LM_URI_UNIX = 2 } kind;
	char host[256];
	char port[16];
	char path[108];
};
/* 0, -ENAMETOOLONG (a UNIX path of 108 bytes or more, a host of 256 or
 * more) or -EINVAL (anything else wrong). */
int lm_uri_parse(const char *s, struct lm_uri *u);
/* u as a URI lm_uri_parse takes back: an IPv6 host in brackets
 * ("tcp:[::1]:4444"); port >= 0 replaces u's port (the one a listener on
 * port 0 got). 0, -ENOSPC (buf too small) or -EINVAL. */
int lm_uri_format(const struct lm_uri *u, int port, char *buf, size_t len);
/*
 * Connected stream socket, or -errno. TCP sockets from here and from
 * lm_transport_accept() have TCP_NODELAY, and keepalive probes after 10 s
 * of silence every 5 s, 4 of them, plus a 30 s TCP_USER_TIMEOUT for
 * unacknowledged data: a dead peer is noticed within about 30 s even while
 * nothing is sent (reads and writes then fail with -ETIMEDOUT).
 */
int lm_transport_connect(const struct lm_uri *u);
/*
 * lm_transport_connect, bounded: gives up with -ETIMEDOUT after timeout_ms
 * (0 or LM_TIMEOUT_NEVER: no bound but the kernel's, about 2 minutes for a
 * peer that drops SYNs) and with -ECANCELED as soon as cancel_fd (>= 0; only
 * polled, never read) becomes readable. On failure why[whylen] (may be
 * NULL) says it in words: getaddrinfo's message for a name that does not
 * resolve ("cannot resolve 'nohost': Name or service not known"),
 * "Connection timed out after 10 s", "Connection refused", ...
 */
int lm_transport_connect_opts(const struct lm_uri *u, uint64_t timeout_ms, int cancel_fd, char *why,
			      size_t whylen);
/* Listening socket, or -errno. TCP port "0" picks a free port:
 * lm_transport_local_port() tells which. unix: as lm_transport_unix_listen. */
int lm_transport_listen(const struct lm_uri *u);
/*
 * A listening UNIX stream socket at path, its file mode 0600. Only a stale
 * socket file (one nobody listens on any more: connecting to it is refused)
 * is replaced; anything else at path is left as it is and refused:
 * -EEXIST when it is not a socket (a regular file, a directory, ...),
 * -EADDRINUSE when a process accepts connections on it, another -errno
 * (-EACCES) when it cannot tell. -ENAMETOOLONG for a path over 107 bytes.
 * The caller removes the file when done (only if it is still the one it
 * created: compare st_dev/st_ino from lstat right after).
 */
int lm_transport_unix_listen(const char *path, int backlog);
int lm_transport_local_port(int lfd);
/* Accept one connection (blocking; timeout_ms 0 = wait forever), or -errno. */
int lm_transport_accept(int lfd, uint64_t timeout_ms);

#endif
