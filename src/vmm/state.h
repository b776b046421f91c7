/*
 * Private to src/vmm (and its tests): the state blob's layout and its
 * validating parser. The format is described in state.c.
 */
#ifndef LIVEMIG_VMM_STATE_H
#define LIVEMIG_VMM_STATE_H

#include <stddef.h>
#include <stdint.h>

#define LM__ST_MAGIC "LMVS"
#define LM__ST_VERSION 1u
#define LM__ST_HDR_SIZE 16u
#define LM__ST_SEC_HDR_SIZE 16u
#define LM__ST_OPTIONAL 0x80000000u /* tag bit: readers may skip it */
#define LM__VM_WIDE 0xffffffffu	    /* vCPU field of a per-VM section */
#define LM__ST_SERIAL_SIZE 8u
#define LM__ST_PV_SIZE 16u
/* Optional per-VM section: the balloon device (balloon.c); older readers
 * skip it, a VM restored without it keeps an idle balloon. */
#define LM__ST_BALLOON (LM__ST_OPTIONAL | 1u)

enum {
	/* per VM */
	LM__ST_PIC_MASTER = 1,
	LM__ST_PIC_SLAVE = 2,
	LM__ST_IOAPIC = 3,
	LM__ST_PIT = 4,
	LM__ST_CLOCK = 5,
	LM__ST_SERIAL = 6,
	LM__ST_PV = 7,
	/* per vCPU, in restore order */
	LM__ST_CPUID = 16,
	LM__ST_MP_STATE = 17,
	LM__ST_REGS = 18,
	LM__ST_SREGS = 19,
	LM__ST_XSAVE = 20,
	LM__ST_XCRS = 21,
	LM__ST_DEBUGREGS = 22,
	LM__ST_LAPIC = 23,
	LM__ST_MSRS = 24,
	LM__ST_EVENTS = 25,
	LM__ST_NTAGS = 26,
};

struct lm__state_sec {
	const uint8_t *data; /* points into the caller's buffer */
	size_t len;
};

/* A parsed blob: sections by (tag, vCPU); data points into the buffer. */
struct lm__state_view {
	uint32_t ncpus;
	struct lm__state_sec *sec;
	struct lm__state_sec balloon; /* optional: data NULL when absent */
};

/*
 * Checks everything (see state.c) and indexes the sections. xsave_max is
 * the largest XSAVE section accepted. On error returns -EINVAL / -EPROTO
 * / -ENOMEM and, if why is given, a message naming what was wrong.
 */
int lm__state_parse(const uint8_t *buf, size_t len, size_t xsave_max, struct lm__state_view *v,
		    char *why, size_t whylen);
const struct lm__state_sec *lm__state_get(const struct lm__state_view *v, uint32_t tag,
					  uint32_t cpu);
void lm__state_view_free(struct lm__state_view *v);

#endif
