/*
 * livemig guest image: the ring-3 program (parameters, self-verifying
 * memory, workloads). See docs/guest.md for the command line, the output
 * lines and the verification scheme.
 */
#ifndef LIVEMIG_GUEST_WORK_H
#define LIVEMIG_GUEST_WORK_H

#include "guest.h"

enum workload { W_IDLE, W_MEMTOUCH, W_HOTSET, W_STREAM, W_CONTIG, W_ALTERNATE, W_SEQREAD, W_MIXED };
enum selftest { ST_NONE, ST_CORRUPT, ST_STALE, ST_TABLE, ST_ALL };

/* The parsed command line; params.c owns it, everyone reads it. */
struct params {
	int workload;
	u64 mem;          /* bytes of RAM to use (table + pages); 0 = all */
	u64 wss;          /* working set for hotset/contig/alternate */
	u64 rate;         /* bytes per second for paced workloads; 0 = unpaced */
	u64 seed;
	bool verify;      /* check after setup and before exit */
	u64 verify_every; /* seconds between periodic checks; 0 = none */
	u64 exit_after;   /* seconds until power-off; 0 = never */
	int selftest;
	u64 period_ms;    /* contig/alternate rewrite period */
	int zerocheck;    /* check never-written pages read zero; -1 = auto */
	bool hlt;         /* halt (APIC timer) while waiting, else spin */
	u64 progress_ms;  /* progress line interval; 0 = none */
	u32 wpct;         /* mixed: percentage of pages written */
	bool balloon;     /* run the balloon driver when the device is there */
	bool balloon_mtl; /* accept must-tell-host (0: test the host's off path) */
};
extern struct params P;

void params_parse(const char *cmdline);
const char *workload_name(int w);
const char *selftest_name(int s);

/*
 * The checkable memory (pages.c). Data pages are numbered 0..npages-1 in
 * address order over the ranges; the version table holds one u32 per
 * data page (0 = never written) in its own contiguous pages, preceded by
 * the summary, a bit per table page, so that a check skips table pages
 * that were never written.
 */
struct memory {
	struct range r[MAX_RANGES];
	u64 first[MAX_RANGES]; /* index of the first page of r[i] */
	unsigned n;
	u64 npages;
	u32 *table;
	u64 table_pages;
	u64 *summary; /* bit t set: table page t may hold non-zero entries */
	u64 summary_pages;
	/*
	 * The balloon (balloon.c) may take data pages from the top: pages
	 * [limit, npages) are in the balloon, not the workload's. Their table
	 * entries are zeroed when they go in (the host discards the page, so
	 * it comes back zero), and the versions they held are added to
	 * dropped, so that sum(table) + dropped == ctl.writes still holds.
	 */
	u64 limit;
	u64 dropped;
	/* Free RAM pages beyond what the workload uses (the top of RAM): the
	 * balloon takes these first. */
	u64 spare_pages;
};
extern struct memory M;

/*
 * The control block, in .bss at a symbol a host-side tool can look up in
 * the ELF (lm_guest_ctl). Fields are written in the order docs/guest.md
 * describes; a snapshot of guest memory taken at any instant can be
 * checked with the same rules the guest uses.
 */
#define CTL_MAGIC 0x4c4d475545535431ull /* "LMGUEST1" */
#define INFLIGHT_NONE (~0ull)
struct guest_ctl {
	u64 magic;
	u64 table_addr, table_pages, npages, nranges, summary_addr;
	struct range ranges[MAX_RANGES];
	u64 seed_mix;
	volatile u64 inflight_version;
	volatile u64 inflight_index;
	volatile u64 writes; /* completed page writes == sum of the table */
	volatile u64 reads;
	volatile u64 readsum;
	/* Balloon: data pages >= balloon_limit are not the workload's; the
	 * versions their table entries held before going in. */
	volatile u64 balloon_limit;
	volatile u64 balloon_dropped;
};
extern struct guest_ctl lm_guest_ctl;

/* scrub_table: firmware may have left data in RAM (no pv device). */
void memory_init(u64 mem, bool scrub_table);
/* Whether never-written pages are checked to read zero. */
bool memory_zerocheck(void);
u64 page_addr(u64 idx);
void page_write(u64 idx);
void page_read(u64 idx);
/* Checks every page; prints detail lines and "verify ok|FAIL ..."; true if ok. */
bool verify_all(void);
void selftest_run(int kind, u64 rnd);
/* Balloon (balloon.c): moves data pages at the top in or out of the
 * workload's reach, keeping the version table's sum consistent. */
void memory_give(u64 idx);
void memory_take_back(u64 idx);

/* The balloon driver (balloon.c). balloon_init negotiates with the device
 * (if there is one and P.balloon); balloon_service polls the target and
 * moves towards it, returning the TSC time it next wants to run. */
void balloon_init(bool pv);
u64 balloon_service(u64 now);
void fpu_canary_init(u64 seed);
/* true if the vector registers, MXCSR and the x87 control word still hold
 * the canary; prints a "verify FAIL reg=..." line if not and print is set. */
bool fpu_canary_check(bool print);

#endif
