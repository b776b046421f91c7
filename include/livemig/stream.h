/*
 * livemig stream layer: the wire format of a migration (spec: docs/stream.md).
 *
 * A migration is one bidirectional byte stream. Every message in either
 * direction is a frame: a 12-byte header {u16 type, u16 flags,
 * u32 payload_len, u32 checksum} followed by payload_len bytes. All integers
 * are little-endian. The sender opens with HELLO, the receiver answers
 * ACCEPT or REFUSE, then the sender sends records (RAM runs, ROUND, DEVICE,
 * DIGEST, END) and the receiver ends with RESULT.
 *
 * What lives here: encoders that append whole frames to a growable (or
 * fixed, caller-provided) lm_buf; decoders that take (buf, len), validate
 * every field against the negotiated capabilities and the memory layout and
 * fail with -errno plus an lm_stream_err naming what was wrong; the
 * handshake and capability negotiation; zstd for page runs; and the
 * incremental XXH3-128 digest of guest RAM (lm_digest).
 *
 * Incremental use from a socket (receiver):
 *   1. read LM_FRAME_HDR (12) bytes; lm_stream_frame_parse() validates type,
 *      flags and payload_len against the per-type maximum BEFORE the caller
 *      allocates or reads anything; the frame needs 12 + payload_len bytes.
 *   2. RAM runs: read LM_RUN_HDR (16) bytes, lm_stream_run_parse() checks
 *      kind, encoding, page count, layout and the exact payload length and
 *      says where the pages go (region, offset). RAW data may then be read
 *      straight into destination memory; begin an lm_stream_csum with the
 *      frame, feed it the run header, then every page in order through
 *      lm_stream_csum_page() (which follows the rule the connection
 *      negotiated: page-hash-csum hashes each page's digest contribution,
 *      else its bytes; it also returns that contribution for the digest),
 *      and check it before considering the pages applied (a failed check
 *      aborts the migration: the destination never runs a guest from a
 *      failed stream). ZSTD data: read it into a bounded buffer, feed the
 *      run header and the data bytes, check, then lm_stream_run_apply().
 *   3. Any other record: read the payload (its size is already bounded by
 *      step 1) and call lm_stream_decode_payload(), which verifies the
 *      checksum and decodes.
 * lm_stream_decode() does all of it on one contiguous buffer (tests, fuzzer).
 *
 * Ownership: lm_stream and lm_buf and lm_digest are caller-owned structs
 * with _init/_destroy. Decoded records point into the caller's input
 * buffer (run data, device blobs); they never own memory.
 * Thread safety: none; one lm_stream per connection and thread.
 *
 * API changes after the first version are noted here:
 *   - lm_stream.scratch removed (it was never used).
 *   - lm_digest_* accept pages at any alignment (pages inside an lm_buf
 *     frame are not 8-byte aligned).
 *   - LM_REC_COMMIT and lm_stream_put_commit() added (the switchover's
 *     last step, docs/stream.md 3.11).
 *   - LM_CAP_PREPARE with LM_REC_PREPARE / LM_REC_READY and their
 *     encoders added (the destination gets ready before the pause).
 *   - LM_CAP_COMMIT_ACK with LM_REC_COMMITTED and lm_stream_put_committed()
 *     (the sender learns that the destination took over, 3.13).
 *   - LM_CAP_NO_DIGEST (a stream without DIGEST, 5.3).
 *   - LM_CAP_POSTCOPY with LM_REC_PENDING / LM_REC_POSTCOPY /
 *     LM_REC_PAGE_REQ and their encoders (post-copy, 3.14).
 *   - LM_CAP_PAGE_HASH_CSUM (RAW runs checksummed over their pages'
 *     digest contributions, docs/stream.md 2), lm_stream_csum_page() and
 *     lm_digest_set(); lm_stream_put_raw_begin()/_end() take the stream
 *     (the rule is the connection's), and _begin_csum()/_end_csum()
 *     checksum as the caller copies. A receiver that feeds RAW pages to
 *     lm_stream_csum_update() itself must not allow LM_CAP_PAGE_HASH_CSUM.
 */
#ifndef LIVEMIG_STREAM_H
#define LIVEMIG_STREAM_H

#include "livemig/common.h"

/* ---- constants ----------------------------------------------------------- */

/* First 8 bytes of the HELLO payload: "livemig\0" read as a little-endian u64. */
#define LM_STREAM_MAGIC 0x0067696d6576696cull
#define LM_STREAM_VERSION 1u

#define LM_FRAME_HDR 12u /* frame header bytes */
#define LM_RUN_HDR 16u	 /* RAM run header bytes at the start of a RAM payload */

#define LM_STREAM_MAX_RUN_PAGES 256u	       /* pages in one RAM record (1 MiB) */
#define LM_STREAM_MAX_REGIONS 256u	       /* regions in a layout */
#define LM_STREAM_MAX_CHANNELS 16u	       /* channels of a multifd migration */
#define LM_STREAM_MIN_STRIPE 64u	       /* pages per stripe (3.16), at least */
#define LM_STREAM_MAX_STRIPE 65536u	       /* and at most */
#define LM_SYNC_LAST 1u			       /* SYNC flag: the channel's last record */
#define LM_STREAM_MAX_TEXT 255u		       /* REFUSE / RESULT text bytes */
#define LM_STREAM_MAX_DEVICE_NAME 63u	       /* DEVICE name bytes */
#define LM_STREAM_MAX_DEVICE_BLOB (16u << 20)  /* DEVICE blob bytes */
#define LM_STREAM_MAX_TABLE_PAYLOAD (1u << 20) /* TABLE record payload bytes */
/* Page indices (first_page + npages) stay below 2^52 so byte offsets fit in u64. */
#define LM_STREAM_PAGE_LIMIT (1ull << 52)

/* Record types (frame header "type"). */
enum lm_rec_type {
	LM_REC_HELLO = 0x0001,	/* sender -> receiver, first frame */
	LM_REC_ACCEPT = 0x0002, /* receiver -> sender */
	LM_REC_REFUSE = 0x0003, /* receiver -> sender, then close */
	LM_REC_RAM = 0x0010,	/* a run of pages */
	LM_REC_ROUND = 0x0011,	/* start of pre-copy round n */
	LM_REC_DEVICE = 0x0012, /* named opaque device-state blob */
	LM_REC_DIGEST = 0x0013, /* XXH3-128 digest of all guest RAM */
	LM_REC_END = 0x0014,	/* end of the sender's stream */
	LM_REC_COMMIT = 0x0015, /* sender -> receiver after RESULT ok: the destination may run */
	LM_REC_PREPARE = 0x0016, /* sender -> receiver: about to pause, get ready (LM_CAP_PREPARE) */
	/* Post-copy (LM_CAP_POSTCOPY, docs/stream.md 3.14). */
	LM_REC_PENDING = 0x0017,  /* sender -> receiver: pages still to come after the switch */
	LM_REC_POSTCOPY = 0x0018, /* sender -> receiver: the switch to post-copy */
	LM_REC_PAGE_REQ = 0x0023, /* receiver -> sender: something waits for these pages */
	/* Recovering a post-copy (docs/stream.md 3.15). */
	LM_REC_RESUME = 0x0019,	 /* sender -> receiver: first frame of a recovery connection */
	LM_REC_MISSING = 0x0025, /* receiver -> sender: pending pages not placed */
	LM_REC_RESUMED = 0x0024, /* receiver -> sender: the recovery is accepted */
	/* Channels (LM_CAP_MULTIFD, docs/stream.md 3.16). */
	LM_REC_CHANNELS = 0x001A, /* sender -> receiver, main connection: N channels follow */
	LM_REC_CHANNEL = 0x001B,  /* sender -> receiver: first frame of a channel connection */
	LM_REC_SYNC = 0x001C,	  /* sender -> receiver: a barrier across the channels */
	LM_REC_READY = 0x0021,	 /* receiver -> sender: ready to take over (answers PREPARE) */
	LM_REC_COMMITTED = 0x0022, /* receiver -> sender: COMMIT read, the guest runs here (LM_CAP_COMMIT_ACK) */
	LM_REC_RESULT = 0x0020, /* receiver -> sender after END */
	/* Table stream (needs LM_CAP_TABLE_STREAM; payload per livemig/table.h). */
	LM_REC_TABLE = 0x0030,
};

/* Capability bits (HELLO offered/mandatory masks, ACCEPT accepted mask). */
#define LM_CAP_RECORD_CSUM (1ull << 0)	/* per-frame checksums: mandatory in v1 */
#define LM_CAP_ZSTD (1ull << 1)		/* RAM DATA runs may be zstd-compressed */
#define LM_CAP_SKIP_BALLOON (1ull << 2) /* RAM SKIPPED runs (ballooned pages) */
#define LM_CAP_TABLE_STREAM (1ull << 3) /* LM_REC_TABLE records */
#define LM_CAP_PREPARE (1ull << 4)	/* PREPARE / READY before the switchover */
#define LM_CAP_COMMIT_ACK (1ull << 5)	/* COMMITTED answers COMMIT */
#define LM_CAP_NO_DIGEST (1ull << 6)	/* no DIGEST: per-frame checksums only (docs/stream.md 5.3) */
#define LM_CAP_POSTCOPY (1ull << 7)	/* "postcopy-ram": the switch to post-copy (docs/stream.md 3.14) */
#define LM_CAP_MULTIFD (1ull << 8)	/* "multifd": page data on channels (docs/stream.md 3.16) */
#define LM_CAP_CATCH_UP (1ull << 9)	/* "catch-up": PREPARE again after READY (docs/stream.md 3.12) */
#define LM_CAP_PAGE_HASH_CSUM (1ull << 10) /* "page-hash-csum": RAW runs checksummed over page hashes (docs/stream.md 2) */
/* Every capability this build understands. */
#define LM_CAP_KNOWN                                                                               \
	(LM_CAP_RECORD_CSUM | LM_CAP_ZSTD | LM_CAP_SKIP_BALLOON | LM_CAP_TABLE_STREAM |            \
	 LM_CAP_PREPARE | LM_CAP_COMMIT_ACK | LM_CAP_NO_DIGEST | LM_CAP_POSTCOPY | LM_CAP_MULTIFD |   \
	 LM_CAP_CATCH_UP | LM_CAP_PAGE_HASH_CSUM)
/* Runs in one PENDING record at most (65536 payload bytes). */
#define LM_STREAM_MAX_PENDING_RUNS 4096u

/* RAM run kinds and encodings (bytes of the run header). */
enum lm_run_kind {
	LM_RUN_DATA = 0, /* page contents follow */
	LM_RUN_ZERO = 1, /* pages are all zero; no bytes */
	/* Ballooned: zero, neither scanned nor sent; no bytes (LM_CAP_SKIP_BALLOON). */
	LM_RUN_SKIPPED = 2,
};
enum lm_run_enc {
	LM_ENC_RAW = 0,	 /* npages * 4096 bytes */
	LM_ENC_ZSTD = 1, /* one zstd frame of exactly npages * 4096 bytes (LM_CAP_ZSTD) */
};

/* ---- errors ----------------------------------------------------------- */

/*
 * Every decoder fills one of these (if non-NULL) when it fails: code is the
 * negative errno it returned, msg names the field and the values, e.g.
 * "RAM run pages [4096, 4352) outside the layout". Codes used:
 *   -ENODATA          truncated input (fewer bytes than the frame needs)
 *   -EBADMSG          checksum mismatch, malformed field, nonzero reserved bytes
 *   -EPROTO           unknown record type or flags, bad magic, record not allowed
 *   -EPROTONOSUPPORT  unsupported version
 *   -ENOTSUP          capability unknown, disabled or not negotiated
 *   -EMSGSIZE         length or count above the limit
 *   -ERANGE           page indices outside the layout
 *   -EILSEQ           zstd data corrupt or not exactly the announced size
 *   -ENOSPC           (encoders) fixed output buffer too small
 */
typedef struct lm_stream_err {
	int code;
	char msg[200];
} lm_stream_err;

/* ---- growable output buffer ---------------------------------------------- */

typedef struct lm_buf {
	uint8_t *data;
	size_t len; /* bytes in use */
	size_t cap; /* bytes allocated (or provided) */
	bool fixed; /* caller-provided memory: never reallocated, -ENOSPC when full */
} lm_buf;

/* Empty growable buffer (no allocation until first use). */
void lm_buf_init(lm_buf *b);
/* Wrap caller memory of cap bytes; the caller keeps ownership. */
void lm_buf_init_fixed(lm_buf *b, void *mem, size_t cap);
/* Frees a growable buffer's memory; does nothing to fixed memory. */
void lm_buf_destroy(lm_buf *b);
/* Make room for extra more bytes. 0, -ENOMEM, or -ENOSPC (fixed). */
int lm_buf_reserve(lm_buf *b, size_t extra);
/* Forget the contents, keep the memory. */
static inline void lm_buf_reset(lm_buf *b)
{
	b->len = 0;
}

/* ---- memory layout -------------------------------------------------------- */

/* One guest RAM region in page-index space. */
typedef struct lm_stream_region {
	uint64_t first_page;
	uint64_t npages;
} lm_stream_region;

/*
 * The page-index space a stream may touch: regions sorted by first_page,
 * non-empty, non-overlapping, below LM_STREAM_PAGE_LIMIT. Stored inline
 * (no allocation): a decoded HELLO is a plain value.
 */
typedef struct lm_stream_layout {
	uint32_t nregions;
	uint64_t total_pages; /* sum of npages */
	uint64_t end_page;    /* first_page + npages of the last region */
	lm_stream_region regions[LM_STREAM_MAX_REGIONS];
} lm_stream_layout;

/* Build a layout from n regions; validates as described above. */
int lm_stream_layout_init(lm_stream_layout *l, const lm_stream_region *r, uint32_t n,
			  lm_stream_err *err);
/* The region index holding pages [first_page, first_page + npages) entirely,
 * or -ERANGE (message in err) if no single region holds them. */
int lm_stream_layout_find(const lm_stream_layout *l, uint64_t first_page, uint64_t npages,
			  lm_stream_err *err);

/* ---- per-connection state ------------------------------------------------ */

typedef struct lm_stream {
	uint64_t caps;		 /* negotiated capabilities; 0 before the handshake */
	lm_stream_layout layout; /* set by the sender's setup / receiver's HELLO */
	int zstd_level;		 /* compression level for LM_ENC_ZSTD (default 1) */
	void *zc;		 /* ZSTD_CCtx, created on first use */
	void *zd;		 /* ZSTD_DCtx, created on first use */
} lm_stream;

/* Empty state: caps 0, no regions. */
void lm_stream_init(lm_stream *s);
void lm_stream_destroy(lm_stream *s);

/* ---- frames and checksums ------------------------------------------------ */

typedef struct lm_frame {
	uint16_t type;
	uint16_t flags;
	uint32_t payload_len;
	uint32_t checksum;
} lm_frame;

/*
 * Validate a frame header (the first LM_FRAME_HDR bytes of hdr, len >= 12
 * else -ENODATA): known type, allowed by s->caps (TABLE needs
 * TABLE_STREAM), flags zero (no flags are defined in v1), payload_len within
 * the bounds of the type (see docs/stream.md). The frame then needs
 * LM_FRAME_HDR + f->payload_len bytes in all.
 */
int lm_stream_frame_parse(const lm_stream *s, const void *hdr, size_t len, lm_frame *f,
			  lm_stream_err *err);
/* Largest payload_len allowed for a record type (0 if the type is unknown). */
uint32_t lm_stream_max_payload(uint16_t type);

/*
 * Checksum of a frame: the low 32 bits of XXH3-64 over the payload, seeded
 * with the first 8 header bytes (type, flags, payload_len) read as a
 * little-endian u64, so a flipped header bit changes it too. Can be fed
 * in pieces (run header, then pages read straight into guest memory).
 * With LM_CAP_PAGE_HASH_CSUM a RAW DATA run's pages are fed through
 * lm_stream_csum_page() instead (docs/stream.md 2); lm_stream_checksum()
 * is always the byte rule.
 * The state is opaque storage for an XXH3 streaming state.
 */
typedef struct lm_stream_csum {
	_Alignas(64) unsigned char state[640];
} lm_stream_csum;
void lm_stream_csum_begin(lm_stream_csum *c, const lm_frame *f);
void lm_stream_csum_update(lm_stream_csum *c, const void *p, size_t n);
uint32_t lm_stream_csum_end(lm_stream_csum *c);
/* Compare with f->checksum: 0 or -EBADMSG naming the record type. */
int lm_stream_csum_check(lm_stream_csum *c, const lm_frame *f, lm_stream_err *err);
/* One-shot checksum of a contiguous payload for the frame f. */
uint32_t lm_stream_checksum(const lm_frame *f, const void *payload, size_t len);

/* ---- records --------------------------------------------------------------- */

/* A RAM run: the decoded run header plus where it lands. */
typedef struct lm_run {
	uint64_t first_page;
	uint32_t npages;     /* 1 .. LM_STREAM_MAX_RUN_PAGES */
	uint8_t kind;	     /* enum lm_run_kind */
	uint8_t enc;	     /* enum lm_run_enc; LM_ENC_RAW unless DATA */
	uint32_t region;     /* decoder output: layout region holding the run */
	uint64_t region_off; /* decoder output: page offset of first_page in that region */
	size_t data_len;     /* bytes after the run header (0 for ZERO/SKIPPED) */
	const uint8_t *data; /* lm_stream_decode only: points into the input */
} lm_run;

typedef struct lm_stream_hello {
	uint32_t version;
	uint64_t offered;   /* capabilities the sender can use */
	uint64_t mandatory; /* subset of offered the receiver must accept */
	uint32_t page_size; /* 4096 */
	lm_stream_layout layout;
} lm_stream_hello;

/* REFUSE and RESULT: a status (0 = ok, else a positive errno value) and text. */
typedef struct lm_stream_status {
	int32_t code;
	char text[LM_STREAM_MAX_TEXT + 1]; /* NUL-terminated */
} lm_stream_status;

typedef struct lm_record {
	lm_frame frame;
	union {
		lm_stream_hello hello;
		struct {
			uint32_t version;
			uint64_t accepted;
		} accept;
		lm_stream_status status; /* REFUSE, RESULT */
		lm_run run;
		uint64_t round;
		struct {
			char name[LM_STREAM_MAX_DEVICE_NAME + 1]; /* NUL-terminated */
			const uint8_t *blob;			  /* points into the input */
			size_t len;
		} device;
		struct {
			uint64_t lo, hi; /* lm_hash128 */
			uint64_t npages;
		} digest;
		struct {
			const uint8_t *payload; /* opaque to this layer, points into the input */
			size_t len;
		} table;
		struct {
			const uint8_t *runs; /* nruns validated runs, points into the input:
						read them with lm_stream_pending_run() */
			uint32_t nruns;
		} pending; /* PENDING and MISSING */
		struct {
			uint64_t npending;
			uint64_t session; /* nonzero */
		} postcopy;
		uint64_t session; /* RESUME (magic and version checked) */
		struct {
			uint64_t session;
			uint64_t nmissing;
		} resumed;
		struct {
			uint64_t first_page;
			uint32_t npages;
		} page_req;
		struct {
			uint32_t nchannels;    /* 1 .. LM_STREAM_MAX_CHANNELS */
			uint32_t stripe_pages; /* a power of two, 64 .. 65536 */
			uint64_t session;      /* nonzero */
		} channels;
		struct {
			uint32_t index; /* below LM_STREAM_MAX_CHANNELS (the count is checked by the receiver) */
			uint64_t session;
		} channel; /* CHANNEL (magic and version checked) */
		struct {
			uint64_t seq; /* nonzero */
			uint32_t flags; /* LM_SYNC_LAST or 0 */
		} sync;
	} u;
} lm_record;

/*
 * Parse a RAM run header (rh, len >= LM_RUN_HDR bytes) of the frame f:
 * kind and encoding known and negotiated, reserved bytes zero, 1 <= npages
 * <= LM_STREAM_MAX_RUN_PAGES, the run inside one region of s->layout, and
 * f->payload_len consistent (RAW: exactly 16 + npages*4096; ZERO/SKIPPED:
 * exactly 16; ZSTD: 16 < len <= 16 + npages*4096).
 */
int lm_stream_run_parse(const lm_stream *s, const lm_frame *f, const void *rh, size_t len,
			lm_run *run, lm_stream_err *err);

/*
 * Write a validated DATA run's pages into dst (dst_len must be exactly
 * run->npages * 4096, else -EINVAL): RAW copies data_len bytes, ZSTD
 * decompresses into dst and fails with -EILSEQ unless the data is one zstd
 * frame producing exactly dst_len bytes. Never writes outside dst. ZERO and
 * SKIPPED runs: -EINVAL (the caller zeroes or discards, it knows how best).
 * On failure dst may be partly written: the caller aborts the migration.
 */
int lm_stream_run_apply(lm_stream *s, const lm_run *run, const void *data, size_t data_len,
			void *dst, size_t dst_len, lm_stream_err *err);

/*
 * Decode a whole frame from payload (exactly f->payload_len bytes) after
 * lm_stream_frame_parse: verifies the checksum, then every field.
 * Pointers in rec point into payload.
 */
int lm_stream_decode_payload(lm_stream *s, const lm_frame *f, const void *payload, size_t len,
			     lm_record *rec, lm_stream_err *err);

/*
 * Decode the frame at the start of buf: header, checksum, payload. Returns
 * the frame's total size in bytes (> 0), or -errno. A buffer shorter than
 * the frame is -ENODATA. Pointers in rec point into buf.
 */
int64_t lm_stream_decode(lm_stream *s, const void *buf, size_t len, lm_record *rec,
			 lm_stream_err *err);

/* ---- encoders: each appends one whole frame to b (0 or -errno) ----------- */

int lm_stream_put_hello(lm_buf *b, const lm_stream_hello *h);
int lm_stream_put_accept(lm_buf *b, uint64_t accepted);
int lm_stream_put_refuse(lm_buf *b, int code, const char *text);
int lm_stream_put_result(lm_buf *b, int code, const char *text);
int lm_stream_put_round(lm_buf *b, uint64_t round);
/* name: 1..63 bytes of [A-Za-z0-9_.:-]; blob up to LM_STREAM_MAX_DEVICE_BLOB. */
int lm_stream_put_device(lm_buf *b, const char *name, const void *blob, size_t len);
int lm_stream_put_digest(lm_buf *b, uint64_t lo, uint64_t hi, uint64_t npages);
int lm_stream_put_end(lm_buf *b);
/* COMMIT (empty): sent after RESULT ok; only then may the destination run. */
int lm_stream_put_commit(lm_buf *b);
/* PREPARE (empty, sender): the switchover comes next; answer READY when the
 * destination can take over. READY (empty, receiver). Both need
 * LM_CAP_PREPARE. */
int lm_stream_put_prepare(lm_buf *b);
int lm_stream_put_ready(lm_buf *b);
/* COMMITTED (empty, receiver): COMMIT was read, the guest runs here. Needs
 * LM_CAP_COMMIT_ACK. */
int lm_stream_put_committed(lm_buf *b);
/* Post-copy (docs/stream.md 3.14; LM_CAP_POSTCOPY). PENDING: n runs
 * (1 .. LM_STREAM_MAX_PENDING_RUNS) of pages still to come; POSTCOPY: the
 * switch, with the number of distinct pages PENDING named; PAGE_REQ
 * (receiver): npages 1 .. LM_STREAM_MAX_RUN_PAGES from first_page. */
int lm_stream_put_pending(lm_buf *b, const lm_stream_region *runs, uint32_t n);
int lm_stream_put_postcopy(lm_buf *b, uint64_t npending, uint64_t session);
int lm_stream_put_page_req(lm_buf *b, uint64_t first_page, uint32_t npages);
/* Recovery (3.15): RESUME (sender) with the POSTCOPY's session; MISSING
 * (receiver, runs as PENDING's); RESUMED (receiver). */
int lm_stream_put_resume(lm_buf *b, uint64_t session);
int lm_stream_put_missing(lm_buf *b, const lm_stream_region *runs, uint32_t n);
int lm_stream_put_resumed(lm_buf *b, uint64_t session, uint64_t nmissing);
/* Channels (docs/stream.md 3.16; LM_CAP_MULTIFD). CHANNELS (main
 * connection): nchannels 1 .. LM_STREAM_MAX_CHANNELS, stripe_pages a power
 * of two in [LM_STREAM_MIN_STRIPE, LM_STREAM_MAX_STRIPE], session nonzero;
 * CHANNEL: the first frame of channel index's connection; SYNC: barrier seq
 * (nonzero), flags LM_SYNC_LAST or 0. -EINVAL for values out of range. */
int lm_stream_put_channels(lm_buf *b, uint32_t nchannels, uint32_t stripe_pages, uint64_t session);
int lm_stream_put_channel(lm_buf *b, uint32_t index, uint64_t session);
int lm_stream_put_sync(lm_buf *b, uint64_t seq, uint32_t flags);
/* Which channel of n carries page p with stripes of stripe pages. */
static inline uint32_t lm_stream_channel_of(uint64_t p, uint32_t stripe, uint32_t n)
{
	return (uint32_t)((p / stripe) % n);
}
/* Run i of a decoded PENDING or MISSING record (i < rec->u.pending.nruns). */
lm_stream_region lm_stream_pending_run(const lm_record *rec, uint32_t i);
/* Opaque table payload (needs LM_CAP_TABLE_STREAM on the connection). */
int lm_stream_put_table(lm_buf *b, const void *payload, size_t len);

/* ZERO or SKIPPED run (kind), npages 1..LM_STREAM_MAX_RUN_PAGES. */
int lm_stream_put_run_empty(lm_buf *b, uint8_t kind, uint64_t first_page, uint32_t npages);
/*
 * DATA run from pages (npages * 4096 bytes). With enc == LM_ENC_ZSTD (needs
 * LM_CAP_ZSTD in s->caps) the run is compressed, and sent RAW instead when
 * compression does not make it smaller. pages must not change during the
 * call: copy live guest memory first (the digest must hash what was sent).
 * *enc_used (may be NULL) says which encoding went out.
 */
int lm_stream_put_run_data(lm_stream *s, lm_buf *b, uint64_t first_page, uint32_t npages,
			   const void *pages, uint8_t enc, uint8_t *enc_used);
/*
 * Two-step RAW DATA run, for copying guest memory once: _begin appends the
 * headers and returns (in *pages) where npages * 4096 bytes go; the caller
 * copies them there (and may hash them for the digest); _end computes the
 * checksum by the rule s negotiated (docs/stream.md 2). frame_off
 * identifies the frame. No other put in between.
 */
int lm_stream_put_raw_begin(const lm_stream *s, lm_buf *b, uint64_t first_page, uint32_t npages,
			    uint8_t **pages, size_t *frame_off);
void lm_stream_put_raw_end(const lm_stream *s, lm_buf *b, size_t frame_off);
/*
 * The same with the checksum computed as the caller copies, while each
 * page is still in cache: _begin_csum also starts *c over the run header;
 * the caller feeds every page it has written to *pages to
 * lm_stream_csum_page(), in order, all of them; _end_csum stores *c's
 * checksum, with no second pass over the pages.
 */
int lm_stream_put_raw_begin_csum(const lm_stream *s, lm_buf *b, uint64_t first_page, uint32_t npages,
				 uint8_t **pages, size_t *frame_off, lm_stream_csum *c);
void lm_stream_put_raw_end_csum(lm_buf *b, size_t frame_off, lm_stream_csum *c);

/* ---- handshake ------------------------------------------------------------- */

/*
 * Receiver side: decide the accepted mask for a decoded HELLO given the
 * capabilities this side allows (LM_CAP_KNOWN minus what the user switched
 * off). accepted = offered & allowed. Fails (so the receiver sends REFUSE
 * with err's code and message) if the version is not LM_STREAM_VERSION
 * (-EPROTONOSUPPORT), if a mandatory capability is unknown or not allowed
 * (-ENOTSUP, naming it), or if RECORD_CSUM is not mandatory (v1 rule).
 * On success also installs caps and layout into s.
 */
int lm_stream_negotiate(lm_stream *s, const lm_stream_hello *h, uint64_t allowed,
			uint64_t *accepted, lm_stream_err *err);
/*
 * Sender side: check an ACCEPT against what was offered (accepted must be a
 * subset of offered and contain every mandatory bit) and install the caps.
 */
int lm_stream_accepted(lm_stream *s, const lm_stream_hello *h, uint64_t accepted,
		       lm_stream_err *err);

/* Name of one capability bit ("zstd", "record-csum", "skip-balloon",
 * "table-stream"), or NULL if unknown. */
const char *lm_stream_cap_name(uint64_t bit);
/* Parse a comma-separated list of names into a mask: 0 or -EINVAL. */
int lm_stream_caps_parse(const char *list, uint64_t *mask);
/* Format a mask as names ("zstd,record-csum", unknown bits as hex). */
void lm_stream_caps_format(uint64_t mask, char *out, size_t cap);
/* Name of a record type ("RAM", ...), or "unknown". */
const char *lm_stream_type_name(uint16_t type);

/* ---- digest of guest RAM (src/stream/digest.c) --------------------------- */

typedef struct lm_hash128 {
	uint64_t lo, hi;
} lm_hash128;

/*
 * The migration digest: the sum modulo 2^128 over every page index i of
 * the layout of c(i), where c(i) = 0 if page i is all zero and otherwise
 * XXH3-128(page, seed = i). Zero pages contributing 0 is the "count trick":
 * a never-written page costs nothing on either side, and a 1 TiB guest with
 * a few GiB touched is digested in proportion to what was touched.
 * Contributions are kept per page (16 bytes per page, mmap'ed with
 * MAP_NORESERVE so untouched pages cost nothing) so a resent page replaces
 * its old contribution instead of needing a second pass at the end.
 */
typedef struct lm_digest {
	lm_hash128 sum;
	uint64_t end_page;   /* page indices 0 .. end_page-1 are valid */
	lm_hash128 *contrib; /* per page, 0 for zero pages */
	size_t map_len;
} lm_digest;

/* All pages zero (sum 0). end_page: one past the last page index. */
int lm_digest_init(lm_digest *d, uint64_t end_page);
void lm_digest_destroy(lm_digest *d);
/* Page i now holds the 4096 bytes at page (zero test, then hash). */
void lm_digest_page(lm_digest *d, uint64_t i, const void *page);
/* Page i's contribution is now c (computed by lm_digest_contrib() or
 * lm_stream_csum_page()). */
void lm_digest_set(lm_digest *d, uint64_t i, lm_hash128 c);
/*
 * Page i of a RAW DATA run (its 4096 bytes at page), the next in the run,
 * added to the frame checksum c by the rule s negotiated: with
 * LM_CAP_PAGE_HASH_CSUM its c(i) (docs/stream.md 2), else its bytes.
 * *contrib (may be NULL) gets c(i), so a page is hashed once for both.
 */
void lm_stream_csum_page(const lm_stream *s, lm_stream_csum *c, uint64_t i, const void *page,
			 lm_hash128 *contrib);
/* n pages starting at i (contiguous in memory). */
void lm_digest_pages(lm_digest *d, uint64_t i, uint64_t n, const void *pages);
/* Pages [i, i+n) are now zero. Indices at or past end_page are ignored
 * by all three updates (the layout was checked before they are called). */
void lm_digest_zero(lm_digest *d, uint64_t i, uint64_t n);
/*
 * Several threads updating one digest (channels, docs/stream.md 3.16):
 * lm_digest_share makes part a view of d (the same per-page
 * contributions, a partial sum of its own starting at 0; never destroy a
 * view); lm_digest_fold adds part's partial sum into d and resets it. The
 * threads must update disjoint pages; fold while none of them runs.
 */
void lm_digest_share(lm_digest *part, const lm_digest *d);
void lm_digest_fold(lm_digest *d, lm_digest *part);
static inline lm_hash128 lm_digest_value(const lm_digest *d)
{
	return d->sum;
}
/* c(i) for one page: 0 for an all-zero page. */
lm_hash128 lm_digest_contrib(uint64_t i, const void *page);
/* The digest of memory in one pass (an oracle for tests, and for checks
 * outside the engine): pages [first_page, first_page + npages) at mem,
 * added to *acc. */
void lm_digest_add_memory(lm_hash128 *acc, uint64_t first_page, uint64_t npages, const void *mem);
static inline bool lm_hash128_eq(lm_hash128 a, lm_hash128 b)
{
	return a.lo == b.lo && a.hi == b.hi;
}

#endif
