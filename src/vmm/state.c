/*
 * The VM state blob: every vCPU's and device's state, not RAM.
 *
 * Workload: written once on the source when the guest is paused for
 * stop-and-copy, carried in the stream's device-state section, read once
 * on the destination, which must not trust it. A few tens of KiB for a
 * small VM (XSAVE and LAPIC pages dominate), so the format favours being
 * easy to validate over being compact:
 *
 *   header   magic "LMVS", u16 version, u16 flags (0), u32 vCPUs,
 *            u32 sections, u32 reserved (0)                      16 bytes
 *   section  u32 tag, u32 vCPU (LM__VM_WIDE for per-VM state),
 *            u64 length, then length bytes, zero-padded to 8     16+ bytes
 *
 * Every tag has a size rule (exact, or a multiple of an entry size with a
 * maximum); every per-vCPU section must appear once for each vCPU and
 * every per-VM section once. A tag with bit 31 set is optional: a reader
 * that does not know it skips it, so later versions can add state without
 * breaking older readers. All integers are little-endian (the format is
 * x86-only, like the KVM structures it carries).
 *
 * The loader parses and checks the whole blob before it changes anything,
 * then restores in the order DESIGN.md gives (Firecracker's): CPUID,
 * MP state, regs, sregs, XSAVE, XCRs, debug registers, LAPIC, MSRs with
 * the TSC deadline last, events. The per-VM irqchip and PIT go in before
 * the vCPUs (so that LAPIC state meets a consistent IOAPIC) and the KVM
 * clock last.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/state.h"
#include "vmm/vmm_int.h"

#define MSR_IA32_TSC 0x10u
#define MSR_IA32_TSC_DEADLINE 0x6e0u
#define MAX_MSRS 4096u
#define MAX_CPUID 4096u

struct rule {
	uint32_t tag;
	bool per_vcpu;
	uint32_t size; /* exact size, or entry size if max > 0 */
	uint32_t max;  /* 0: exact; else max entries */
	const char *name;
};

static const struct rule rules[LM__ST_NTAGS] = {
    [LM__ST_PIC_MASTER] = {LM__ST_PIC_MASTER, false, sizeof(struct kvm_irqchip), 0, "pic-master"},
    [LM__ST_PIC_SLAVE] = {LM__ST_PIC_SLAVE, false, sizeof(struct kvm_irqchip), 0, "pic-slave"},
    [LM__ST_IOAPIC] = {LM__ST_IOAPIC, false, sizeof(struct kvm_irqchip), 0, "ioapic"},
    [LM__ST_PIT] = {LM__ST_PIT, false, sizeof(struct kvm_pit_state2), 0, "pit"},
    [LM__ST_CLOCK] = {LM__ST_CLOCK, false, sizeof(struct kvm_clock_data), 0, "clock"},
    [LM__ST_SERIAL] = {LM__ST_SERIAL, false, LM__ST_SERIAL_SIZE, 0, "serial"},
    [LM__ST_PV] = {LM__ST_PV, false, LM__ST_PV_SIZE, 0, "pv"},
    [LM__ST_CPUID] = {LM__ST_CPUID, true, sizeof(struct kvm_cpuid_entry2), MAX_CPUID, "cpuid"},
    [LM__ST_MP_STATE] = {LM__ST_MP_STATE, true, sizeof(struct kvm_mp_state), 0, "mp-state"},
    [LM__ST_REGS] = {LM__ST_REGS, true, sizeof(struct kvm_regs), 0, "regs"},
    [LM__ST_SREGS] = {LM__ST_SREGS, true, sizeof(struct kvm_sregs), 0, "sregs"},
    /* XSAVE: its size depends on the host's features; checked separately. */
    [LM__ST_XSAVE] = {LM__ST_XSAVE, true, 1, 0, "xsave"},
    [LM__ST_XCRS] = {LM__ST_XCRS, true, sizeof(struct kvm_xcrs), 0, "xcrs"},
    [LM__ST_DEBUGREGS] = {LM__ST_DEBUGREGS, true, sizeof(struct kvm_debugregs), 0, "debugregs"},
    [LM__ST_LAPIC] = {LM__ST_LAPIC, true, sizeof(struct kvm_lapic_state), 0, "lapic"},
    [LM__ST_MSRS] = {LM__ST_MSRS, true, sizeof(struct kvm_msr_entry), MAX_MSRS, "msrs"},
    [LM__ST_EVENTS] = {LM__ST_EVENTS, true, sizeof(struct kvm_vcpu_events), 0, "events"},
};

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}

void lm__state_view_free(struct lm__state_view *v)
{
	free(v->sec);
	v->sec = NULL;
}

const struct lm__state_sec *lm__state_get(const struct lm__state_view *v, uint32_t tag,
					  uint32_t cpu)
{
	if (tag >= LM__ST_NTAGS)
		return NULL;
	size_t i = rules[tag].per_vcpu ? (size_t)tag * (v->ncpus + 1) + cpu
				       : (size_t)tag * (v->ncpus + 1) + v->ncpus;
	return v->sec[i].data ? &v->sec[i] : NULL;
}

int lm__state_parse(const uint8_t *buf, size_t len, size_t xsave_max, struct lm__state_view *v,
		    char *why, size_t whylen)
{
	memset(v, 0, sizeof(*v));
#define BAD(code, ...)                                                                             \
	do {                                                                                       \
		if (why)                                                                           \
			snprintf(why, whylen, __VA_ARGS__);                                        \
		r = (code);                                                                        \
		goto fail;                                                                         \
	} while (0)
	int r = 0;
	if (!buf || len < LM__ST_HDR_SIZE)
		BAD(-EINVAL, "state blob shorter than its header");
	if (memcmp(buf, LM__ST_MAGIC, 4) != 0)
		BAD(-EINVAL, "bad state magic");
	uint32_t ver = (uint32_t)buf[4] | (uint32_t)buf[5] << 8;
	uint32_t flags = (uint32_t)buf[6] | (uint32_t)buf[7] << 8;
	if (ver != LM__ST_VERSION)
		BAD(-EPROTO, "state version %u, expected %u", ver, LM__ST_VERSION);
	if (flags != 0)
		BAD(-EINVAL, "unknown state flags 0x%x", flags);
	v->ncpus = rd32(buf + 8);
	uint32_t nsec = rd32(buf + 12);
	if (v->ncpus == 0 || v->ncpus > LM_VM_MAX_CPUS)
		BAD(-EINVAL, "bad vCPU count %u", v->ncpus);
	v->sec = calloc((size_t)LM__ST_NTAGS * (v->ncpus + 1), sizeof(*v->sec));
	if (!v->sec)
		BAD(-ENOMEM, "out of memory");

	size_t off = LM__ST_HDR_SIZE;
	for (uint32_t s = 0; s < nsec; s++) {
		if (len - off < LM__ST_SEC_HDR_SIZE)
			BAD(-EINVAL, "section %u: header truncated", s);
		uint32_t tag = rd32(buf + off), cpu = rd32(buf + off + 4);
		uint64_t slen = rd64(buf + off + 8);
		off += LM__ST_SEC_HDR_SIZE;
		uint64_t padded = (slen + 7) & ~7ull;
		if (slen > len - off || padded > len - off)
			BAD(-EINVAL, "section %u: length %llu past the end", s,
			    (unsigned long long)slen);
		for (uint64_t k = slen; k < padded; k++)
			if (buf[off + k])
				BAD(-EINVAL, "section %u: non-zero padding", s);
		const uint8_t *data = buf + off;
		off += padded;
		if (tag == LM__ST_BALLOON) {
			if (cpu != LM__VM_WIDE || slen != LM__BALLOON_STATE_SIZE)
				BAD(-EINVAL, "section balloon: bad vCPU index or length");
			if (v->balloon.data)
				BAD(-EINVAL, "section balloon repeated");
			v->balloon.data = data;
			v->balloon.len = (size_t)slen;
			continue;
		}
		if (tag & LM__ST_OPTIONAL)
			continue;
		if (tag >= LM__ST_NTAGS || !rules[tag].name)
			BAD(-EINVAL, "section %u: unknown tag %u", s, tag);
		const struct rule *ru = &rules[tag];
		if (ru->per_vcpu ? cpu >= v->ncpus : cpu != LM__VM_WIDE)
			BAD(-EINVAL, "section %s: bad vCPU index %u", ru->name, cpu);
		if (tag == LM__ST_XSAVE) {
			if (slen < sizeof(struct kvm_xsave) || slen > xsave_max || slen % 4)
				BAD(-EINVAL, "section xsave: bad length %llu",
				    (unsigned long long)slen);
		} else if (ru->max) {
			if (slen % ru->size || slen / ru->size > ru->max)
				BAD(-EINVAL, "section %s: bad length %llu", ru->name,
				    (unsigned long long)slen);
		} else if (slen != ru->size) {
			BAD(-EINVAL, "section %s: length %llu, expected %u", ru->name,
			    (unsigned long long)slen, ru->size);
		}
		size_t i = (size_t)tag * (v->ncpus + 1) + (ru->per_vcpu ? cpu : v->ncpus);
		if (v->sec[i].data)
			BAD(-EINVAL, "section %s (vCPU %u) repeated", ru->name, cpu);
		v->sec[i].data = data;
		v->sec[i].len = (size_t)slen;
	}
	if (off != len)
		BAD(-EINVAL, "%zu bytes after the last section", len - off);
	for (uint32_t t = 0; t < LM__ST_NTAGS; t++) {
		if (!rules[t].name)
			continue;
		for (uint32_t c = 0; c < (rules[t].per_vcpu ? v->ncpus : 1); c++)
			if (!lm__state_get(v, t, c))
				BAD(-EINVAL, "section %s (vCPU %u) missing", rules[t].name, c);
	}
	return 0;
fail:
	lm__state_view_free(v);
	return r;
#undef BAD
}

/* ---- building ---------------------------------------------------------- */

struct builder {
	uint8_t *buf;
	size_t len, cap;
	uint32_t nsec;
	int err;
};

static void put(struct builder *b, uint32_t tag, uint32_t cpu, const void *data, size_t len)
{
	size_t padded = (len + 7) & ~(size_t)7;
	size_t need = b->len + LM__ST_SEC_HDR_SIZE + padded;
	if (b->err)
		return;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		while (cap < need)
			cap *= 2;
		uint8_t *n = realloc(b->buf, cap);
		if (!n) {
			b->err = -ENOMEM;
			return;
		}
		b->buf = n;
		b->cap = cap;
	}
	uint8_t *p = b->buf + b->len;
	wr32(p, tag);
	wr32(p + 4, cpu);
	wr64(p + 8, len);
	if (len)
		memcpy(p + LM__ST_SEC_HDR_SIZE, data, len);
	memset(p + LM__ST_SEC_HDR_SIZE + len, 0, padded - len);
	b->len = need;
	b->nsec++;
}

static int get(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

/* Reads every MSR KVM lists, skipping those this host refuses to read
 * (KVM_GET_MSRS stops at the first one it cannot read). */
static int read_msrs(struct lm_vm *vm, int fd, struct kvm_msr_entry **out, unsigned *n)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + vm->nmsrs * sizeof(struct kvm_msr_entry));
	struct kvm_msr_entry *res = calloc(vm->nmsrs ? vm->nmsrs : 1, sizeof(*res));
	unsigned got = 0;
	if (!m || !res) {
		free(m);
		free(res);
		return -ENOMEM;
	}
	for (unsigned start = 0; start < vm->nmsrs;) {
		unsigned cnt = vm->nmsrs - start;
		m->nmsrs = cnt;
		for (unsigned i = 0; i < cnt; i++) {
			m->entries[i].index = vm->msr_list[start + i];
			m->entries[i].reserved = 0;
			m->entries[i].data = 0;
		}
		int r = ioctl(fd, KVM_GET_MSRS, m);
		if (r < 0) {
			r = -errno;
			free(m);
			free(res);
			return r;
		}
		memcpy(res + got, m->entries, (size_t)r * sizeof(*res));
		got += (unsigned)r;
		start += (unsigned)r + 1; /* skip the one that failed */
	}
	free(m);
	*out = res;
	*n = got;
	return 0;
}

static int save_vcpu(struct lm_vm *vm, struct lm__vcpu *c, struct builder *b)
{
	int r;
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	memset(&xcrs, 0, sizeof(xcrs));
	memset(&ev, 0, sizeof(ev));

	struct kvm_cpuid2 *cp = calloc(1, sizeof(*cp) + MAX_CPUID * sizeof(cp->entries[0]));
	void *xs = calloc(1, vm->xsave_size);
	struct kvm_msr_entry *msrs = NULL;
	unsigned nmsrs = 0;
	if (!cp || !xs) {
		r = -ENOMEM;
		goto out;
	}
	cp->nent = MAX_CPUID;
	if ((r = get(c->fd, KVM_GET_CPUID2, cp)) < 0 ||
	    (r = get(c->fd, KVM_GET_MP_STATE, &mp)) < 0 ||
	    (r = get(c->fd, KVM_GET_REGS, &regs)) < 0 ||
	    (r = get(c->fd, KVM_GET_SREGS, &sregs)) < 0 ||
	    (r = get(c->fd, vm->xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xs)) < 0 ||
	    (r = get(c->fd, KVM_GET_XCRS, &xcrs)) < 0 ||
	    (r = get(c->fd, KVM_GET_DEBUGREGS, &dbg)) < 0 ||
	    (r = get(c->fd, KVM_GET_LAPIC, &lapic)) < 0 ||
	    (r = get(c->fd, KVM_GET_VCPU_EVENTS, &ev)) < 0 ||
	    (r = read_msrs(vm, c->fd, &msrs, &nmsrs)) < 0)
		goto out;
	put(b, LM__ST_CPUID, c->index, cp->entries, cp->nent * sizeof(cp->entries[0]));
	put(b, LM__ST_MP_STATE, c->index, &mp, sizeof(mp));
	put(b, LM__ST_REGS, c->index, &regs, sizeof(regs));
	put(b, LM__ST_SREGS, c->index, &sregs, sizeof(sregs));
	put(b, LM__ST_XSAVE, c->index, xs, vm->xsave_size);
	put(b, LM__ST_XCRS, c->index, &xcrs, sizeof(xcrs));
	put(b, LM__ST_DEBUGREGS, c->index, &dbg, sizeof(dbg));
	put(b, LM__ST_LAPIC, c->index, &lapic, sizeof(lapic));
	put(b, LM__ST_MSRS, c->index, msrs, nmsrs * sizeof(*msrs));
	put(b, LM__ST_EVENTS, c->index, &ev, sizeof(ev));
	r = b->err;
out:
	free(cp);
	free(xs);
	free(msrs);
	return r;
}

static int save_vm(struct lm_vm *vm, struct builder *b)
{
	int r;
	for (uint32_t chip = 0; chip < 3; chip++) {
		struct kvm_irqchip ic;
		memset(&ic, 0, sizeof(ic));
		ic.chip_id = chip;
		if ((r = get(vm->vm_fd, KVM_GET_IRQCHIP, &ic)) < 0)
			return r;
		put(b, LM__ST_PIC_MASTER + chip, LM__VM_WIDE, &ic, sizeof(ic));
	}
	struct kvm_pit_state2 pit;
	if ((r = get(vm->vm_fd, KVM_GET_PIT2, &pit)) < 0)
		return r;
	put(b, LM__ST_PIT, LM__VM_WIDE, &pit, sizeof(pit));
	struct kvm_clock_data clk;
	memset(&clk, 0, sizeof(clk));
	if ((r = get(vm->vm_fd, KVM_GET_CLOCK, &clk)) < 0)
		return r;
	put(b, LM__ST_CLOCK, LM__VM_WIDE, &clk, sizeof(clk));

	uint8_t ser[LM__ST_SERIAL_SIZE] = {0};
	uint8_t pv[LM__ST_PV_SIZE] = {0};
	pthread_mutex_lock(&vm->dev_lock);
	const struct lm__serial *s = &vm->serial;
	ser[0] = s->ier;
	ser[1] = s->lcr;
	ser[2] = s->mcr;
	ser[3] = s->scr;
	ser[4] = s->dll;
	ser[5] = s->dlm;
	ser[6] = s->fcr;
	wr32(pv, __atomic_load_n(&vm->pv.verify_req, __ATOMIC_SEQ_CST));
	wr32(pv + 4, vm->pv.verify_result);
	wr32(pv + 8, vm->pv.verify_done);
	wr32(pv + 12, vm->pv.pending_result);
	pthread_mutex_unlock(&vm->dev_lock);
	put(b, LM__ST_SERIAL, LM__VM_WIDE, ser, sizeof(ser));
	put(b, LM__ST_PV, LM__VM_WIDE, pv, sizeof(pv));
	if (vm->balloon) {
		uint8_t bl[LM__BALLOON_STATE_SIZE];
		lm__balloon_save(vm, bl);
		put(b, LM__ST_BALLOON, LM__VM_WIDE, bl, sizeof(bl));
	}
	return b->err;
}

int lm_vm_state_save(struct lm_vm *vm, uint8_t **buf, size_t *len)
{
	struct builder b = {0};
	uint8_t hdr[LM__ST_HDR_SIZE] = {0};
	int r;
	if (lm__vm_running(vm))
		return -EBUSY;
	/* Room for the header, filled in at the end. */
	b.cap = 16384;
	b.buf = malloc(b.cap);
	if (!b.buf)
		return -ENOMEM;
	b.len = LM__ST_HDR_SIZE;
	if ((r = save_vm(vm, &b)) < 0)
		goto fail;
	for (unsigned i = 0; i < vm->ncpus; i++)
		if ((r = save_vcpu(vm, &vm->vcpus[i], &b)) < 0)
			goto fail;
	memcpy(hdr, LM__ST_MAGIC, 4);
	hdr[4] = LM__ST_VERSION & 0xff;
	hdr[5] = LM__ST_VERSION >> 8;
	wr32(hdr + 8, vm->ncpus);
	wr32(hdr + 12, b.nsec);
	memcpy(b.buf, hdr, sizeof(hdr));
	*buf = b.buf;
	*len = b.len;
	return 0;
fail:
	free(b.buf);
	return r;
}

/* ---- restoring --------------------------------------------------------- */

static int set_msrs(int fd, const struct kvm_msr_entry *e, unsigned n)
{
	if (!n)
		return 0;
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(*e));
	if (!m)
		return -ENOMEM;
	m->nmsrs = n;
	memcpy(m->entries, e, n * sizeof(*e));
	int r = ioctl(fd, KVM_SET_MSRS, m);
	r = r < 0 ? -errno : (r == (int)n ? 0 : -EIO);
	free(m);
	return r;
}

static int load_vcpu(struct lm_vm *vm, struct lm__vcpu *c, const struct lm__state_view *v)
{
	unsigned i = c->index;
	int r;
	const struct lm__state_sec *s = lm__state_get(v, LM__ST_CPUID, i);
	struct kvm_cpuid2 *cp = calloc(1, sizeof(*cp) + s->len);
	void *xs = calloc(1, vm->xsave_size);
	struct kvm_msr_entry *msrs = NULL;
	if (!cp || !xs) {
		r = -ENOMEM;
		goto out;
	}
	cp->nent = (uint32_t)(s->len / sizeof(cp->entries[0]));
	memcpy(cp->entries, s->data, s->len);
	if ((r = get(c->fd, KVM_SET_CPUID2, cp)) < 0)
		goto out;

	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	memcpy(&mp, lm__state_get(v, LM__ST_MP_STATE, i)->data, sizeof(mp));
	memcpy(&regs, lm__state_get(v, LM__ST_REGS, i)->data, sizeof(regs));
	memcpy(&sregs, lm__state_get(v, LM__ST_SREGS, i)->data, sizeof(sregs));
	s = lm__state_get(v, LM__ST_XSAVE, i);
	memcpy(xs, s->data, s->len);
	memcpy(&xcrs, lm__state_get(v, LM__ST_XCRS, i)->data, sizeof(xcrs));
	memcpy(&dbg, lm__state_get(v, LM__ST_DEBUGREGS, i)->data, sizeof(dbg));
	memcpy(&lapic, lm__state_get(v, LM__ST_LAPIC, i)->data, sizeof(lapic));
	memcpy(&ev, lm__state_get(v, LM__ST_EVENTS, i)->data, sizeof(ev));
	s = lm__state_get(v, LM__ST_MSRS, i);
	unsigned n = (unsigned)(s->len / sizeof(*msrs));
	msrs = malloc((n ? n : 1) * sizeof(*msrs));
	if (!msrs) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(msrs, s->data, s->len);
	/* The TSC deadline is armed relative to the TSC: it goes last, alone. */
	struct kvm_msr_entry deadline = {0};
	bool have_deadline = false;
	unsigned k = 0;
	for (unsigned j = 0; j < n; j++) {
		if (msrs[j].index == MSR_IA32_TSC_DEADLINE) {
			deadline = msrs[j];
			have_deadline = true;
		} else {
			msrs[k++] = msrs[j];
		}
	}
	/* Ask KVM to restore the pending NMI and SIPI vector too. */
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;

	if ((r = get(c->fd, KVM_SET_MP_STATE, &mp)) < 0 ||
	    (r = get(c->fd, KVM_SET_REGS, &regs)) < 0 ||
	    (r = get(c->fd, KVM_SET_SREGS, &sregs)) < 0 ||
	    (r = get(c->fd, KVM_SET_XSAVE, xs)) < 0 || (r = get(c->fd, KVM_SET_XCRS, &xcrs)) < 0 ||
	    (r = get(c->fd, KVM_SET_DEBUGREGS, &dbg)) < 0 ||
	    (r = get(c->fd, KVM_SET_LAPIC, &lapic)) < 0 || (r = set_msrs(c->fd, msrs, k)) < 0 ||
	    (have_deadline && (r = set_msrs(c->fd, &deadline, 1)) < 0) ||
	    (r = get(c->fd, KVM_SET_VCPU_EVENTS, &ev)) < 0)
		goto out;
	r = 0;
out:
	free(cp);
	free(xs);
	free(msrs);
	return r;
}

int lm_vm_state_peek(const uint8_t *buf, size_t len, unsigned *ncpus)
{
	if (!buf || len < LM__ST_HDR_SIZE || memcmp(buf, LM__ST_MAGIC, 4) != 0)
		return -EINVAL;
	if (((uint32_t)buf[4] | (uint32_t)buf[5] << 8) != LM__ST_VERSION)
		return -EPROTO;
	uint32_t n = rd32(buf + 8);
	if (n == 0 || n > LM_VM_MAX_CPUS)
		return -EINVAL;
	*ncpus = n;
	return 0;
}

int lm_vm_state_load(struct lm_vm *vm, const uint8_t *buf, size_t len)
{
	struct lm__state_view v;
	int r = lm__state_parse(buf, len, vm->xsave_size, &v, NULL, 0);
	if (r < 0)
		return r;
	if (v.ncpus != vm->ncpus) {
		r = -ENXIO;
		goto out;
	}
	if (lm__vm_running(vm)) {
		r = -EBUSY;
		goto out;
	}
	if (v.balloon.data && (!vm->balloon || lm__balloon_check_state(vm, v.balloon.data,
								      v.balloon.len) < 0)) {
		r = -EINVAL;
		goto out;
	}
	for (uint32_t chip = 0; chip < 3; chip++) {
		struct kvm_irqchip ic;
		memcpy(&ic, lm__state_get(&v, LM__ST_PIC_MASTER + chip, 0)->data, sizeof(ic));
		ic.chip_id = chip;
		if ((r = get(vm->vm_fd, KVM_SET_IRQCHIP, &ic)) < 0)
			goto out;
	}
	struct kvm_pit_state2 pit;
	memcpy(&pit, lm__state_get(&v, LM__ST_PIT, 0)->data, sizeof(pit));
	if ((r = get(vm->vm_fd, KVM_SET_PIT2, &pit)) < 0)
		goto out;
	for (unsigned i = 0; i < vm->ncpus; i++)
		if ((r = load_vcpu(vm, &vm->vcpus[i], &v)) < 0)
			goto out;
	/* Only the clock value: the guest's time resumes where it paused, in
	 * step with the TSC, which the MSRs restored the same way. */
	struct kvm_clock_data clk;
	memcpy(&clk, lm__state_get(&v, LM__ST_CLOCK, 0)->data, sizeof(clk));
	clk.flags = 0;
	memset(clk.pad, 0, sizeof(clk.pad));
	if ((r = get(vm->vm_fd, KVM_SET_CLOCK, &clk)) < 0)
		goto out;

	const uint8_t *ser = lm__state_get(&v, LM__ST_SERIAL, 0)->data;
	const uint8_t *pv = lm__state_get(&v, LM__ST_PV, 0)->data;
	pthread_mutex_lock(&vm->dev_lock);
	vm->serial.ier = ser[0] & 0x0f;
	vm->serial.lcr = ser[1];
	vm->serial.mcr = ser[2] & 0x1f;
	vm->serial.scr = ser[3];
	vm->serial.dll = ser[4];
	vm->serial.dlm = ser[5];
	vm->serial.fcr = ser[6];
	__atomic_store_n(&vm->pv.verify_req, rd32(pv), __ATOMIC_SEQ_CST);
	__atomic_store_n(&vm->pv.verify_result, rd32(pv + 4), __ATOMIC_SEQ_CST);
	__atomic_store_n(&vm->pv.verify_done, rd32(pv + 8), __ATOMIC_SEQ_CST);
	vm->pv.pending_result = rd32(pv + 12);
	pthread_mutex_unlock(&vm->dev_lock);
	if (v.balloon.data)
		lm__balloon_load(vm, v.balloon.data);
	r = 0;
out:
	lm__state_view_free(&v);
	return r;
}
