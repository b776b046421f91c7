/*
 * Migrating an lm_vm: the VMM's side of the engine's workload ops table,
 * the KVM dirty-log source wired to the VM's slots, and the destination
 * that builds a VM from the stream. See livemig/vmm_migrate.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <linux/kvm.h>

#include "livemig/balloon.h"
#include "livemig/track_kvm.h"
#include "livemig/vmm_migrate.h"
#include "vmm/vmm_int.h"

/* Device blobs: "vm-setup" before round 1 (the machine's shape), "vm" at
 * the switchover (every vCPU and device register). */
#define SETUP_DEVICE "vm-setup"
#define STATE_DEVICE "vm"
#define SETUP_MAGIC 0x43564d4cu /* "LMVC" */
#define SETUP_VERSION 2u
#define SETUP_LEN_V1 16u
#define SETUP_LEN_V2 24u

/*
 * vm-setup, version 2: u32 magic, u32 version, u32 vCPU count, u32
 * reserved (0), u64 RAM bytes. Version 1 (from older sources) is the same
 * without the RAM size; the destination still reads it, and then has only
 * the layout to go by.
 */
static void setup_blob(uint8_t out[SETUP_LEN_V2], unsigned ncpus, uint64_t mem_size)
{
	const uint32_t v[4] = {SETUP_MAGIC, SETUP_VERSION, ncpus, 0};
	for (int i = 0; i < 4; i++)
		for (int b = 0; b < 4; b++)
			out[i * 4 + b] = (uint8_t)(v[i] >> (8 * b));
	for (int b = 0; b < 8; b++)
		out[16 + b] = (uint8_t)(mem_size >> (8 * b));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int b = 0; b < n; b++)
		v |= (uint64_t)p[b] << (8 * b);
	return v;
}

/* *mem_size is 0 for a version 1 blob (it does not say). */
static int setup_blob_parse(const uint8_t *p, size_t len, unsigned *ncpus, uint64_t *mem_size,
			    char *why, size_t cap)
{
	if (len < 8 || get_le(p, 4) != SETUP_MAGIC) {
		snprintf(why, cap, "the vm-setup blob (%zu bytes) is not one (bad magic)", len);
		return -EINVAL;
	}
	uint32_t version = (uint32_t)get_le(p + 4, 4);
	if (version != 1 && version != SETUP_VERSION) {
		snprintf(why, cap, "vm-setup blob version %u, this side reads 1 and 2", version);
		return -EPROTO;
	}
	size_t want = version == 1 ? SETUP_LEN_V1 : SETUP_LEN_V2;
	if (len != want) {
		snprintf(why, cap, "vm-setup blob version %u of %zu bytes, it has %zu", version, len, want);
		return -EINVAL;
	}
	uint32_t n = (uint32_t)get_le(p + 8, 4);
	if (get_le(p + 12, 4) != 0) {
		snprintf(why, cap, "vm-setup blob: reserved field 0x%08x", (unsigned)get_le(p + 12, 4));
		return -EINVAL;
	}
	if (n == 0 || n > LM_VM_MAX_CPUS) {
		snprintf(why, cap, "vm-setup blob: %u vCPUs, this VMM takes 1 to %u", n, LM_VM_MAX_CPUS);
		return -EINVAL;
	}
	*ncpus = n;
	*mem_size = version == 1 ? 0 : get_le(p + 16, 8);
	return 0;
}

struct lm_vm_migration {
	struct lm_vm *vm;
	struct lm_dirty_source *src; /* the VM's ring source, or our log source */
	bool own_src;
	lm_migration *mig;
	struct lm_mem_region regions[2]; /* RAM below the hole, then from 4 GiB */
	size_t nregions;
	struct lm_kvm_log_slot *slots;
	size_t n;
	bool was_paused; /* paused by the user before the switchover */
	uint64_t switchover_us; /* the rehearsal's measure (rehearse), 0: none */
	void (*on_pause)(void *);
	void *on_pause_opaque;
};

static void vmm_wrote(void *opaque, uint64_t gpa, uint64_t len)
{
	struct lm_vm_migration *m = opaque;
	if (!len)
		return;
	uint64_t first = gpa >> LM_PAGE_SHIFT, n = ((gpa + len - 1) >> LM_PAGE_SHIFT) - first + 1;
	if (m->own_src)
		lm_kvm_log_mark(m->src, first, n);
	else
		lm_kvm_ring_mark(m->src, first, n);
}

static int src_pause(void *ctx)
{
	struct lm_vm_migration *m = ctx;
	m->was_paused = lm_vm_is_paused(m->vm);
	int err = lm_vm_pause(m->vm);
	if (err == 0)
		err = lm_vm_hold_paused(m->vm, true);
	if (err == 0 && m->on_pause)
		m->on_pause(m->on_pause_opaque);
	return err;
}

static int src_resume(void *ctx)
{
	struct lm_vm_migration *m = ctx;
	/* After a failed switchover the VM goes back to how the user left it. */
	lm_vm_hold_paused(m->vm, false);
	return m->was_paused ? 0 : lm_vm_resume(m->vm);
}

static int src_save_state(void *ctx, lm_state_writer *w)
{
	struct lm_vm_migration *m = ctx;
	uint8_t *blob = NULL;
	size_t len = 0;
	int err = lm_vm_state_save(m->vm, &blob, &len);
	if (err < 0)
		return err;
	err = lm_state_put(w, STATE_DEVICE, blob, len);
	free(blob);
	return err;
}

static double mono_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/*
 * The VM's part of a switchover, measured on this VM once per migration
 * (at setup, after tracking started, so that whatever KVM writes into
 * guest memory meanwhile is logged): stop the vCPUs, read their state,
 * let them run again. The guest loses a few hundred microseconds once.
 * The destination's load is the mirror of the save (the same registers,
 * set instead of read), so it counts as the save's time again. A VM the
 * user paused stays paused and costs only the save. Nothing is measured
 * (0) if the state cannot be read; the estimate then leaves it out.
 */
static void rehearse(struct lm_vm_migration *m)
{
	double t0 = mono_s();
	/* Not a pause: a user's stop or cont meanwhile is not undone. */
	lm__vm_quiesce(m->vm, true);
	double t1 = mono_s();
	uint8_t *blob = NULL;
	size_t len = 0;
	int err = lm_vm_state_save(m->vm, &blob, &len);
	double t2 = mono_s();
	lm__vm_quiesce(m->vm, false);
	free(blob);
	if (!err)
		m->switchover_us = (uint64_t)(((t1 - t0) + 2 * (t2 - t1)) * 1e6);
}

static int src_save_setup(void *ctx, lm_state_writer *w)
{
	struct lm_vm_migration *m = ctx;
	uint8_t blob[SETUP_LEN_V2];
	setup_blob(blob, lm_vm_vcpu_count(m->vm), lm_vm_mem_size(m->vm));
	int err = lm_state_put(w, SETUP_DEVICE, blob, sizeof(blob));
	if (!err)
		rehearse(m);
	return err;
}

static uint64_t src_switchover_cost_us(void *ctx)
{
	struct lm_vm_migration *m = ctx;
	return m->switchover_us;
}

static int src_throttle(void *ctx, unsigned pct)
{
	struct lm_vm_migration *m = ctx;
	return lm_vm_set_throttle(m->vm, pct);
}

static const struct lm_workload_ops vm_source_ops = {
    .pause = src_pause,
    .resume = src_resume,
    .save_state = src_save_state,
    .save_setup = src_save_setup,
    .switchover_cost_us = src_switchover_cost_us,
    .throttle = src_throttle,
};

int lm_vm_migration_new(struct lm_vm *vm, const struct lm_migrate_params *p,
			struct lm_vm_migration **out)
{
	int err = -ENOMEM;
	struct lm_vm_migration *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->vm = vm;
	/*
	 * The stream's regions are the VM's RAM as it is laid out, not its
	 * KVM slots: below the hole, and from 4 GiB on. How each side cuts
	 * RAM into slots is its own business (lm_vm_auto_slot_size), so a
	 * guest of any size needs at most two regions on the wire.
	 */
	uint64_t size = lm_vm_mem_size(vm);
	uint64_t low = size < LM_VM_HOLE_START ? size : LM_VM_HOLE_START;
	uint8_t *ram = lm_vm_gpa_to_host(vm, 0, LM_PAGE_SIZE);
	m->regions[0] = (struct lm_mem_region){0, low >> LM_PAGE_SHIFT, ram};
	m->nregions = 1;
	if (size > low)
		m->regions[m->nregions++] =
		    (struct lm_mem_region){LM_VM_HOLE_END >> LM_PAGE_SHIFT, (size - low) >> LM_PAGE_SHIFT, ram + low};
	if (lm_vm_dirty_mode(vm) == LM_VM_DIRTY_RING) {
		m->src = lm_vm_ring_source(vm);
	} else {
		m->n = lm_vm_slot_count(vm);
		m->slots = calloc(m->n, sizeof(*m->slots));
		if (!m->slots)
			goto fail;
		uint64_t unit = 0;
		for (size_t i = 0; i < m->n; i++) {
			const struct lm_vm_slot *s = lm_vm_slot(vm, (unsigned)i);
			m->slots[i] = (struct lm_kvm_log_slot){s->kvm_slot, s->gpa >> LM_PAGE_SHIFT,
							       s->size >> LM_PAGE_SHIFT, s->host};
			if (m->slots[i].npages > unit)
				unit = m->slots[i].npages;
		}
		/* Slots are cut from each region's start at one size: a sync
		 * unit of that size is one slot (the last of a region may be
		 * shorter, and so is its unit). */
		struct lm_kvm_log_config kc = {
		    .vm_fd = lm_vm_fd(vm),
		    .slots = m->slots,
		    .nslots = m->n,
		    .sync_pages = unit,
		    .always_on = true,
		    .manual = lm_vm_log_manual(vm),
		};
		if ((err = lm_kvm_log_source_new(&kc, &m->src)) < 0)
			goto fail;
		m->own_src = true;
	}
	if ((err = lm_migration_new(&m->mig, m->regions, m->nregions, m->src, &vm_source_ops, m, p)) < 0)
		goto fail;
	/*
	 * Ballooned pages may be left out only if the guest promised to
	 * deflate a page before reusing it; otherwise the map just shows in
	 * the stats and the pages go as ordinary (zero) pages. The user can
	 * still switch it off (caps_disabled).
	 */
	bool must_tell_host = false;
	lm_vm_balloon_info(vm, NULL, NULL, &must_tell_host);
	if ((err = lm_migration_set_skip_map(m->mig, lm_vm_skip_map(vm), must_tell_host)) < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	lm_vm_migration_free(m);
	return err;
}

void lm_vm_migration_set_pause_hook(struct lm_vm_migration *m, void (*fn)(void *), void *opaque)
{
	m->on_pause = fn;
	m->on_pause_opaque = opaque;
}

int lm_vm_migration_start(struct lm_vm_migration *m, int fd)
{
	/* The VMM's own writes into guest RAM are invisible to KVM's log. */
	lm_vm_set_write_hook(m->vm, vmm_wrote, m);
	int err = lm_migration_start(m->mig, fd);
	if (err < 0)
		lm_vm_set_write_hook(m->vm, NULL, NULL);
	return err;
}

int lm_vm_migration_wait(struct lm_vm_migration *m)
{
	int err = lm_migration_wait(m->mig);
	lm_vm_set_write_hook(m->vm, NULL, NULL);
	return err;
}

int lm_vm_migration_resume(struct lm_vm_migration *m, int fd)
{
	return lm_migration_resume(m->mig, fd);
}

int lm_vm_migration_start_postcopy(struct lm_vm_migration *m)
{
	return lm_migration_start_postcopy(m->mig);
}

void lm_vm_migration_cancel(struct lm_vm_migration *m)
{
	lm_migration_cancel(m->mig);
}

void lm_vm_migration_query(struct lm_vm_migration *m, struct lm_migrate_stats *out)
{
	lm_migration_query(m->mig, out);
}

const char *lm_vm_migration_error(struct lm_vm_migration *m)
{
	return lm_migration_error(m->mig);
}

void lm_vm_migration_free(struct lm_vm_migration *m)
{
	if (!m)
		return;
	if (m->mig)
		lm_migration_free(m->mig);
	lm_vm_set_write_hook(m->vm, NULL, NULL);
	if (m->own_src)
		lm_dirty_source_free(m->src);
	free(m->slots);
	free(m);
}

/* ---- destination ------------------------------------------------------- */

struct incoming {
	const struct lm_vm_incoming_config *cfg;
	/*
	 * Guest RAM and the skip map as setup() and skip_map() handed them to
	 * the receiver, which writes into them until lm_migrate_receive
	 * returns. They stay here, mapped, until a VM built around them has
	 * taken them over (vm set); a VM that fails to build gives them back.
	 * So nothing unmaps them while the receiver runs, whatever the VM side
	 * does; lm_vm_incoming frees them (or the VM) after it returned.
	 */
	uint8_t *ram;
	uint64_t ram_size;
	lm_stream_layout layout;
	struct lm_vm *vm;
	bool have_setup; /* the "vm-setup" blob arrived */
	bool prebuilt;	 /* vm came built from the config (lm_vm_incoming_config.vm) */
	bool have_state; /* the "vm" blob was loaded */
	bool committed;
	lm_skip_map *skip; /* received before the VM exists; the VM adopts it */
	/* The VM is built in its own thread while pages keep arriving, so a
	 * short migration does not wait for it (creating a VM takes 5-20 ms
	 * here); the "vm" blob joins it. While it runs, only it touches
	 * ram, skip, vm and build_why. */
	pthread_t builder;
	bool building;
	int build_err;
	unsigned build_ncpus;
	char build_why[200]; /* the builder's reason, moved to why when joined */
	char why[200];	     /* why the last op failed, for the receiver (explain) */
};

/* Fails an op with a reason the receiver puts into its message. */
static int refuse(struct incoming *in, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(struct incoming *in, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(in->why, sizeof(in->why), fmt, ap);
	va_end(ap);
	return err;
}

/* v units (0 bytes, 1 KiB, ...) for a message: "1 GiB", "512 MiB", "12 KiB". */
static const char *units_str(char buf[32], uint64_t v, int u)
{
	static const char *const unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	while (u < 6 && v && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	snprintf(buf, 32, "%llu %s", (unsigned long long)v, unit[u]);
	return buf;
}

static const char *size_str(char buf[32], uint64_t bytes)
{
	return units_str(buf, bytes, 0);
}

/* A region's size: up to 2^52 pages, whose byte count would not fit. */
static const char *pages_str(char buf[32], uint64_t pages)
{
	return units_str(buf, pages * (LM_PAGE_SIZE / 1024), 1);
}

/* Guest physical address of RAM byte offset off, in the VMM's layout:
 * RAM below the hole, then from 4 GiB on. */
static uint64_t ram_off_to_gpa(uint64_t off)
{
	return off < LM_VM_HOLE_START ? off : off + (LM_VM_HOLE_END - LM_VM_HOLE_START);
}

/*
 * The layouts this VMM can take: guest RAM from gpa 0 without gaps, below
 * 3 GiB and then from 4 GiB (no region across the hole), at least 2 MiB,
 * in any number of regions (this version sends two; 0.2 sent one per KVM
 * slot). The VM built around it cuts RAM into slots its own way
 * (lm_vm_auto_slot_size). Refused here, before a page is written, is
 * anything else, and a VM this host cannot hold (lm_vm_host_check).
 * Sets *ram_size.
 */
static int check_layout(struct incoming *in, const lm_stream_layout *l, uint64_t *ram_size)
{
	const uint64_t hole_lo = LM_VM_HOLE_START >> LM_PAGE_SHIFT;
	uint64_t pages = 0;
	char a[32], b[32];
	/* In pages: no sum below can wrap (every region ends below 2^52). */
	for (uint32_t i = 0; i < l->nregions; i++) {
		uint64_t fp = l->regions[i].first_page, np = l->regions[i].npages;
		uint64_t next = ram_off_to_gpa(pages << LM_PAGE_SHIFT) >> LM_PAGE_SHIFT;
		if (fp != next && i == 0)
			return refuse(in, -EPROTO, "region 0 (gpa %#llx, %s) does not start at gpa 0 as guest RAM does",
				      (unsigned long long)(fp << LM_PAGE_SHIFT), pages_str(a, np));
		if (fp != next)
			return refuse(in, -EPROTO,
				      "region %u (gpa %#llx, %s) leaves a gap: the VM's RAM continues at gpa %#llx "
				      "(from 0 without gaps, skipping only [3 GiB, 4 GiB))",
				      i, (unsigned long long)(fp << LM_PAGE_SHIFT), pages_str(a, np),
				      (unsigned long long)(next << LM_PAGE_SHIFT));
		if (fp < hole_lo && np > hole_lo - fp)
			return refuse(in, -EPROTO, "region %u (gpa %#llx, %s) crosses the PCI hole at 3 GiB", i,
				      (unsigned long long)(fp << LM_PAGE_SHIFT), pages_str(a, np));
		pages += np;
	}
	uint64_t size = pages << LM_PAGE_SHIFT;
	if (size < (2ull << 20))
		return refuse(in, -EPROTO, "the layout has %s of RAM, the VM needs at least 2 MiB", size_str(a, size));
	uint64_t need = 0, avail = 0;
	char c[32];
	/* A VM built ahead (incoming --mem) holds its KVM memory already:
	 * counting it again against what is left would refuse its own stream. */
	if (!in->prebuilt && lm_vm_host_check(size, &need, &avail) < 0)
		return refuse(in, -ENOMEM,
			      "a VM of %s needs about %s of kernel memory for KVM's page metadata, this host has "
			      "%s available",
			      size_str(a, size), size_str(b, need >> 20 << 20), size_str(c, avail >> 20 << 20));
	*ram_size = size;
	return 0;
}

static int in_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct incoming *in = ctx;
	uint64_t size = 0;
	char a[32];
	in->why[0] = 0;
	int err = check_layout(in, l, &size);
	if (err < 0)
		return err;
	if (in->prebuilt) {
		char b[32];
		if (size != lm_vm_mem_size(in->vm))
			return refuse(in, -EPROTO, "this destination holds a VM of %s (incoming --mem), the stream "
				      "brings %s", size_str(a, lm_vm_mem_size(in->vm)), size_str(b, size));
		uint8_t *base = lm_vm_gpa_to_host(in->vm, 0, LM_PAGE_SIZE);
		in->layout = *l;
		uint64_t off = 0;
		for (uint32_t i = 0; i < l->nregions; i++) {
			out[i].host = base + off;
			off += l->regions[i].npages << LM_PAGE_SHIFT;
		}
		return 0;
	}
	void *ram = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ram == MAP_FAILED) {
		err = -errno;
		return refuse(in, err, "could not map %s of guest RAM: %s", size_str(a, size), lm_strerror(err));
	}
	in->ram = ram;
	in->ram_size = size;
	in->layout = *l;
	uint64_t off = 0;
	for (uint32_t i = 0; i < l->nregions; i++) {
		out[i].host = in->ram + off;
		off += l->regions[i].npages << LM_PAGE_SHIFT;
	}
	return 0;
}

/* The sender's skip map lands here; the VM made at load_state adopts it,
 * so the pages stay known as ballooned after A -> B -> C. */
static lm_skip_map *in_skip_map(void *ctx)
{
	struct incoming *in = ctx;
	if (in->prebuilt)
		return lm_vm_skip_map(in->vm);
	if (!in->skip && lm_skip_map_new(in->layout.end_page, &in->skip) < 0)
		return NULL;
	return in->skip;
}

/*
 * Build the destination VM around the RAM (and skip map) the receiver is
 * filling. The VM takes them over only once it is built and checked; when
 * anything fails they stay in `in`, mapped, since the receiver writes into
 * them until lm_migrate_receive returns. why gets the reason of a failure.
 */
static int build_vm(struct incoming *in, unsigned ncpus, char *why, size_t cap)
{
	struct lm_vm_config vc = {
	    .mem_size = in->ram_size,
	    .ncpus = ncpus,
	    .dirty_mode = in->cfg->dirty_mode,
	    .dirty_ring_entries = in->cfg->dirty_ring_entries,
	    .console_fd = in->cfg->console_fd,
	    .console_fn = in->cfg->console_fn,
	    .console_opaque = in->cfg->console_opaque,
	    .ram = in->ram,
	    .skip_map = in->skip,
	};
	struct lm_vm *vm;
	char a[32];
	int err = lm_vm_new(&vc, &vm); /* on failure ram and skip_map stay ours */
	if (err < 0) {
		snprintf(why, cap, "could not create the VM (%s of RAM, %u vCPUs): %s", size_str(a, in->ram_size),
			 ncpus, lm_strerror(err));
		return err;
	}
	if ((err = lm_vm_pause(vm)) < 0) {
		lm__vm_free_keep_memory(vm);
		snprintf(why, cap, "could not pause the new VM: %s", lm_strerror(err));
		return err;
	}
	in->ram = NULL;	 /* the VM owns it now */
	in->skip = NULL; /* this too (the receiver still writes into it) */
	in->vm = vm;
	return 0;
}

static void *builder_main(void *arg)
{
	struct incoming *in = arg;
	in->build_err = build_vm(in, in->build_ncpus, in->build_why, sizeof(in->build_why));
	return NULL;
}

/* Wait for the builder thread, if one runs; its result (and reason). */
static int join_builder(struct incoming *in)
{
	if (!in->building)
		return 0;
	pthread_join(in->builder, NULL);
	in->building = false;
	if (in->build_err < 0)
		snprintf(in->why, sizeof(in->why), "%s", in->build_why);
	return in->build_err;
}

static int in_load_state(void *ctx, const char *name, const void *blob, size_t len)
{
	struct incoming *in = ctx;
	unsigned ncpus = 0;
	uint64_t mem_size = 0;
	char a[32], b[32];
	int err;
	in->why[0] = 0;
	if (!strcmp(name, SETUP_DEVICE)) {
		/* Early, while the source still runs: build the VM now so that
		 * creating it is not part of the downtime. (building first: while
		 * the builder runs, vm and ram are its own.) */
		if (in->building || (in->vm && !in->prebuilt) || (!in->ram && !in->prebuilt) || in->have_setup)
			return refuse(in, -EPROTO, "a second vm-setup blob");
		in->have_setup = true;
		if ((err = setup_blob_parse(blob, len, &ncpus, &mem_size, in->why, sizeof(in->why))) < 0)
			return err;
		if (in->prebuilt) {
			if (ncpus != lm_vm_vcpu_count(in->vm))
				return refuse(in, -EPROTO, "this destination holds a VM with %u vCPUs (incoming --cpus), "
					      "the stream brings %u", lm_vm_vcpu_count(in->vm), ncpus);
			return 0;
		}
		if (mem_size && mem_size != in->ram_size)
			return refuse(in, -EPROTO, "the vm-setup blob announces a VM of %s, the layout has %s",
				      size_str(a, mem_size), size_str(b, in->ram_size));
		in->build_ncpus = ncpus;
		if (pthread_create(&in->builder, NULL, builder_main, in) == 0) {
			in->building = true;
			return 0;
		}
		return build_vm(in, ncpus, in->why, sizeof(in->why));
	}
	if (strcmp(name, STATE_DEVICE) != 0) /* a device we do not have: never run without it */
		return refuse(in, -EPROTO, "this VMM has no device '%s'", name);
	if (in->have_state)
		return refuse(in, -EPROTO, "a second VM state");
	if ((err = join_builder(in)) < 0)
		return err;
	if ((err = lm_vm_state_peek(blob, len, &ncpus)) < 0)
		return err;
	if (!in->vm && (err = build_vm(in, ncpus, in->why, sizeof(in->why))) < 0)
		return err;
	if (lm_vm_vcpu_count(in->vm) != ncpus)
		return refuse(in, -EPROTO, "the VM state has %u vCPUs, the vm-setup blob announced %u", ncpus,
			      lm_vm_vcpu_count(in->vm));
	if ((err = lm_vm_state_load(in->vm, blob, len)) < 0)
		return err;
	in->have_state = true;
	return 0;
}

static void in_finish(void *ctx, int err, const char *msg)
{
	struct incoming *in = ctx;
	(void)msg;
	in->committed = err == 0;
}

/* The source is about to pause: the VM must be built by then. */
static int in_prepare(void *ctx)
{
	struct incoming *in = ctx;
	in->why[0] = 0;
	return join_builder(in);
}

/* Verified to the end: the guest can run here only with its vCPU state. */
static int in_end(void *ctx)
{
	struct incoming *in = ctx;
	in->why[0] = 0;
	int err = join_builder(in);
	if (err < 0)
		return err;
	if (!in->have_state || !in->vm) {
		snprintf(in->why, sizeof(in->why), "the stream carried no VM state");
		return -EPROTO;
	}
	return 0;
}

/* COMMIT was read: the guest runs here from now on (the incoming side asks
 * it to check its memory once it serves it). */
static int in_start(void *ctx)
{
	struct incoming *in = ctx;
	in->why[0] = 0;
	int err = lm_vm_start(in->vm);
	if (err < 0 && err != -EALREADY)
		return refuse(in, err, "could not start the vCPUs: %s", lm_strerror(err));
	if ((err = lm_vm_resume(in->vm)) < 0)
		return refuse(in, err, "could not resume the guest: %s", lm_strerror(err));
	return 0;
}

/*
 * Post-copy: the source committed, the guest runs here now with pages still
 * missing (they fault into the receiver's handler). The guest checks its
 * memory at once, which touches every page it has: the strongest test of
 * a post-copy, and its result is the guest's own.
 */
static int in_postcopy_start(void *ctx)
{
	struct incoming *in = ctx;
	int err = in_start(ctx);
	if (err == 0)
		lm_vm_request_verify(in->vm);
	return err;
}

/* Why the last op failed (the receiver asks right after), or NULL. */
static const char *in_explain(void *ctx)
{
	struct incoming *in = ctx;
	return in->why[0] ? in->why : NULL;
}

static const struct lm_workload_ops vm_dest_ops = {
    .prepare = in_prepare,
    .setup = in_setup,
    .load_state = in_load_state,
    .finish = in_finish,
    .skip_map = in_skip_map,
    .explain = in_explain,
    .end = in_end,
    .postcopy_start = in_postcopy_start,
    .start = in_start,
};

int lm_vm_incoming(int fd, const struct lm_vm_incoming_config *cfg, struct lm_vm **out,
		   struct lm_receive_stats *st)
{
	struct incoming in = {.cfg = cfg, .vm = cfg->vm, .prebuilt = cfg->vm != NULL};
	struct lm_receive_stats local;
	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	int err = lm_migrate_receive(fd, &cfg->recv, &vm_dest_ops, &in, st);
	/* A stream that failed before the "vm" blob leaves it running. */
	join_builder(&in);
	if (err == 0 && (!in.have_state || !in.committed)) {
		err = -EPROTO;
		snprintf(st->error, sizeof(st->error), "%s",
			 in.have_state ? "the sender did not commit" : "the stream carried no VM state");
	}
	if (err < 0 && st->postcopy_started && st->postcopy_complete && in.vm) {
		/* Every page arrived and the guest runs here; what failed is
		 * the check at the end (the error says so). It keeps running:
		 * the source's copy is paused at the switch, older. */
		*out = in.vm;
		return err;
	}
	if (err == -ENOLINK && in.have_state && in.vm) {
		/* Verified, but no COMMIT: a complete copy of the guest that
		 * must neither run nor be dropped (the source may be gone). */
		*out = in.vm;
		return err;
	}
	if (err < 0) {
		lm_vm_free(in.vm);
		if (in.ram)
			munmap(in.ram, in.ram_size);
		lm_skip_map_free(in.skip);
		return err;
	}
	*out = in.vm;
	return 0;
}
