/*
 * Migrating an lm_vm: the VMM's side of the engine's workload ops table,
 * the KVM dirty-log source wired to the VM's slots, and the destination
 * that builds a VM from the stream. See livemig/vmm_migrate.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/kvm.h>

#include "livemig/balloon.h"
#include "livemig/track_kvm.h"
#include "livemig/vmm_migrate.h"

/* Device blobs: "vm-setup" before round 1 (the machine's shape), "vm" at
 * the switchover (every vCPU and device register). */
#define SETUP_DEVICE "vm-setup"
#define STATE_DEVICE "vm"
#define SETUP_MAGIC 0x43564d4cu /* "LMVC" */
#define SETUP_VERSION 1u

/* vm-setup: u32 magic, u32 version, u32 vCPU count, u32 reserved (0). */
static void setup_blob(uint8_t out[16], unsigned ncpus)
{
	const uint32_t v[4] = {SETUP_MAGIC, SETUP_VERSION, ncpus, 0};
	for (int i = 0; i < 4; i++)
		for (int b = 0; b < 4; b++)
			out[i * 4 + b] = (uint8_t)(v[i] >> (8 * b));
}

static int setup_blob_parse(const uint8_t *p, size_t len, unsigned *ncpus)
{
	uint32_t v[4] = {0};
	if (len != 16)
		return -EINVAL;
	for (int i = 0; i < 4; i++)
		for (int b = 0; b < 4; b++)
			v[i] |= (uint32_t)p[i * 4 + b] << (8 * b);
	if (v[0] != SETUP_MAGIC || v[3] != 0)
		return -EINVAL;
	if (v[1] != SETUP_VERSION)
		return -EPROTO;
	if (v[2] == 0 || v[2] > LM_VM_MAX_CPUS)
		return -EINVAL;
	*ncpus = v[2];
	return 0;
}

struct lm_vm_migration {
	struct lm_vm *vm;
	struct lm_dirty_source *src;
	lm_migration *mig;
	struct lm_mem_region *regions;
	struct lm_kvm_log_slot *slots;
	size_t n;
	bool was_paused; /* paused by the user before the switchover */
	void (*on_pause)(void *);
	void *on_pause_opaque;
};

static int set_logging(void *opaque, uint32_t kvm_slot, bool on)
{
	struct lm_vm *vm = opaque;
	for (unsigned i = 0; i < lm_vm_slot_count(vm); i++) {
		const struct lm_vm_slot *s = lm_vm_slot(vm, i);
		if (s->kvm_slot != kvm_slot)
			continue;
		uint32_t flags = on ? s->flags | KVM_MEM_LOG_DIRTY_PAGES
				    : s->flags & ~(uint32_t)KVM_MEM_LOG_DIRTY_PAGES;
		return lm_vm_slot_set_flags(vm, i, flags);
	}
	return -ENOENT;
}

static void vmm_wrote(void *opaque, uint64_t gpa, uint64_t len)
{
	struct lm_vm_migration *m = opaque;
	if (len)
		lm_kvm_log_mark(m->src, gpa >> LM_PAGE_SHIFT,
				((gpa + len - 1) >> LM_PAGE_SHIFT) - (gpa >> LM_PAGE_SHIFT) + 1);
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

static int src_save_setup(void *ctx, lm_state_writer *w)
{
	struct lm_vm_migration *m = ctx;
	uint8_t blob[16];
	setup_blob(blob, lm_vm_vcpu_count(m->vm));
	return lm_state_put(w, SETUP_DEVICE, blob, sizeof(blob));
}

static const struct lm_workload_ops vm_source_ops = {
    .pause = src_pause,
    .resume = src_resume,
    .save_state = src_save_state,
    .save_setup = src_save_setup,
};

int lm_vm_migration_new(struct lm_vm *vm, const struct lm_migrate_params *p,
			struct lm_vm_migration **out)
{
	int err = -ENOMEM;
	struct lm_vm_migration *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->vm = vm;
	m->n = lm_vm_slot_count(vm);
	m->regions = calloc(m->n, sizeof(*m->regions));
	m->slots = calloc(m->n, sizeof(*m->slots));
	if (!m->regions || !m->slots)
		goto fail;
	for (size_t i = 0; i < m->n; i++) {
		const struct lm_vm_slot *s = lm_vm_slot(vm, (unsigned)i);
		m->regions[i] = (struct lm_mem_region){s->gpa >> LM_PAGE_SHIFT,
						       s->size >> LM_PAGE_SHIFT, s->host};
		m->slots[i] = (struct lm_kvm_log_slot){s->kvm_slot, s->gpa >> LM_PAGE_SHIFT,
						       s->size >> LM_PAGE_SHIFT, s->host};
	}
	struct lm_kvm_log_config kc = {
	    .vm_fd = lm_vm_fd(vm),
	    .slots = m->slots,
	    .nslots = m->n,
	    .enable = set_logging,
	    .opaque = vm,
	};
	if ((err = lm_kvm_log_source_new(&kc, &m->src)) < 0)
		goto fail;
	if ((err = lm_migration_new(&m->mig, m->regions, m->n, m->src, &vm_source_ops, m, p)) < 0)
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
	lm_dirty_source_free(m->src);
	free(m->regions);
	free(m->slots);
	free(m);
}

/* ---- destination ------------------------------------------------------- */

struct incoming {
	const struct lm_vm_incoming_config *cfg;
	uint8_t *ram;
	uint64_t ram_size;
	uint64_t slot_size;
	lm_stream_layout layout;
	struct lm_vm *vm;
	bool have_state; /* the "vm" blob was loaded */
	bool committed;
	lm_skip_map *skip; /* received before the VM exists; the VM adopts it */
	/* The VM is built in its own thread while pages keep arriving, so a
	 * short migration does not wait for it (creating a VM takes 5-20 ms
	 * here); the "vm" blob joins it. While it runs, only it touches
	 * ram, skip and vm above. */
	pthread_t builder;
	bool building;
	int build_err;
	unsigned build_ncpus;
};

/* Guest physical address of RAM byte offset off, in the VMM's layout:
 * RAM below the hole, then from 4 GiB on. */
static uint64_t ram_off_to_gpa(uint64_t off)
{
	return off < LM_VM_HOLE_START ? off : off + (LM_VM_HOLE_END - LM_VM_HOLE_START);
}

static int in_setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	struct incoming *in = ctx;
	uint64_t size = 0, slot = 0;
	/* The layout must be one our VMM produces: slots covering RAM from 0
	 * without gaps, skipping only the hole. */
	for (uint32_t i = 0; i < l->nregions; i++) {
		uint64_t gpa = l->regions[i].first_page << LM_PAGE_SHIFT;
		uint64_t len = l->regions[i].npages << LM_PAGE_SHIFT;
		if (gpa != ram_off_to_gpa(size) ||
		    (gpa < LM_VM_HOLE_START && gpa + len > LM_VM_HOLE_START))
			return -EPROTO;
		size += len;
		if (len > slot)
			slot = len;
	}
	if (size < (2ull << 20))
		return -EPROTO;
	/* Round the slot size up to 2 MiB as the VMM requires; the VM built
	 * later is checked against the layout region by region. */
	slot = (slot + (2ull << 20) - 1) & ~((2ull << 20) - 1);
	void *ram = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ram == MAP_FAILED)
		return -errno;
	in->ram = ram;
	in->ram_size = size;
	in->slot_size = slot;
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
	if (!in->skip && lm_skip_map_new(in->layout.end_page, &in->skip) < 0)
		return NULL;
	return in->skip;
}

/* Build the destination VM around the RAM already receiving pages. */
static int build_vm(struct incoming *in, unsigned ncpus)
{
	struct lm_vm_config vc = {
	    .mem_size = in->ram_size,
	    .slot_size = in->slot_size,
	    .ncpus = ncpus,
	    .console_fd = in->cfg->console_fd,
	    .console_fn = in->cfg->console_fn,
	    .console_opaque = in->cfg->console_opaque,
	    .ram = in->ram,
	    .skip_map = in->skip,
	};
	struct lm_vm *vm;
	int err = lm_vm_new(&vc, &vm);
	if (err < 0)
		return err;
	in->ram = NULL;	 /* the VM owns it now */
	in->skip = NULL; /* this too (the receiver still writes into it) */
	/* Same slots as the source, or the dirty tracking of a later
	 * migration from here would not line up. */
	if (lm_vm_slot_count(vm) != in->layout.nregions) {
		lm_vm_free(vm);
		return -EPROTO;
	}
	for (unsigned i = 0; i < in->layout.nregions; i++) {
		const struct lm_vm_slot *s = lm_vm_slot(vm, i);
		if (s->gpa >> LM_PAGE_SHIFT != in->layout.regions[i].first_page ||
		    s->size >> LM_PAGE_SHIFT != in->layout.regions[i].npages) {
			lm_vm_free(vm);
			return -EPROTO;
		}
	}
	if ((err = lm_vm_pause(vm)) < 0) {
		lm_vm_free(vm);
		return err;
	}
	in->vm = vm;
	return 0;
}

static void *builder_main(void *arg)
{
	struct incoming *in = arg;
	in->build_err = build_vm(in, in->build_ncpus);
	return NULL;
}

/* Wait for the builder thread, if one runs; its result. */
static int join_builder(struct incoming *in)
{
	if (!in->building)
		return 0;
	pthread_join(in->builder, NULL);
	in->building = false;
	return in->build_err;
}

static int in_load_state(void *ctx, const char *name, const void *blob, size_t len)
{
	struct incoming *in = ctx;
	unsigned ncpus = 0;
	int err;
	if (!strcmp(name, SETUP_DEVICE)) {
		/* Early, while the source still runs: build the VM now so that
		 * creating it is not part of the downtime. */
		if (in->vm || in->building || !in->ram)
			return -EPROTO;
		if ((err = setup_blob_parse(blob, len, &ncpus)) < 0)
			return err;
		in->build_ncpus = ncpus;
		if (pthread_create(&in->builder, NULL, builder_main, in) == 0) {
			in->building = true;
			return 0;
		}
		return build_vm(in, ncpus);
	}
	if (strcmp(name, STATE_DEVICE) != 0)
		return -EPROTO; /* a device we do not have: never run without it */
	if (in->have_state)
		return -EPROTO; /* a second VM state */
	if ((err = join_builder(in)) < 0)
		return err;
	if ((err = lm_vm_state_peek(blob, len, &ncpus)) < 0)
		return err;
	if (!in->vm && (err = build_vm(in, ncpus)) < 0)
		return err;
	if (lm_vm_vcpu_count(in->vm) != ncpus)
		return -EPROTO; /* the setup blob promised another machine */
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
	return join_builder(ctx);
}

static const struct lm_workload_ops vm_dest_ops = {
    .prepare = in_prepare,
    .setup = in_setup,
    .load_state = in_load_state,
    .finish = in_finish,
    .skip_map = in_skip_map,
};

int lm_vm_incoming(int fd, const struct lm_vm_incoming_config *cfg, struct lm_vm **out,
		   struct lm_receive_stats *st)
{
	struct incoming in = {.cfg = cfg};
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
