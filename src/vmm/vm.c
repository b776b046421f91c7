/*
 * The VM object: KVM setup, guest RAM slots, vCPU threads and run control
 * (start, pause, resume, quit, wait).
 *
 * Run control in one paragraph: every vCPU thread loops "check the run
 * flags under vm->lock, then KVM_RUN without the lock". To pause, the
 * caller sets pause_req under the lock, sets immediate_exit in every
 * vCPU's kvm_run and sends each thread a signal: a thread inside KVM_RUN
 * returns with EINTR, a thread about to enter it returns at once because of
 * immediate_exit. Each thread then parks on the condition variable and the
 * caller waits until all are parked. A thread that left KVM_RUN for port
 * I/O completes that I/O (one more KVM_RUN with immediate_exit set) before
 * it parks, so the saved state never holds half an instruction.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/thread.h"
#include "livemig/track_kvm.h"
#include "vmm/vmm_int.h"

#define TSS_ADDR 0xfffbd000ull
#define IDENTITY_MAP_ADDR 0xfffbc000ull

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

static void kick_handler(int sig)
{
	(void)sig;
}

static int kick_signal(void)
{
	return SIGRTMIN + 4;
}

/* The kick signal only has to interrupt KVM_RUN: an empty handler without
 * SA_RESTART does that. */
static void install_kick(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(kick_signal(), &sa, NULL);
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;
	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

static int get_supported_cpuid(struct lm_vm *vm)
{
	for (unsigned n = 128; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = n;
		int r = xioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
		if (r == 0) {
			vm->cpuid = c;
			return 0;
		}
		free(c);
		if (r != -E2BIG)
			return r;
	}
	return -E2BIG;
}

static int get_msr_list(struct lm_vm *vm)
{
	struct kvm_msr_list probe = {.nmsrs = 0};
	int r = xioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe);
	if (r < 0 && r != -E2BIG)
		return r;
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
	if (!l)
		return -ENOMEM;
	l->nmsrs = probe.nmsrs;
	r = xioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l);
	if (r < 0) {
		free(l);
		return r;
	}
	vm->msr_list = malloc((l->nmsrs ? l->nmsrs : 1) * sizeof(uint32_t));
	if (!vm->msr_list) {
		free(l);
		return -ENOMEM;
	}
	memcpy(vm->msr_list, l->indices, l->nmsrs * sizeof(uint32_t));
	vm->nmsrs = l->nmsrs;
	free(l);
	return 0;
}

/* Host address for a gpa inside RAM (the caller checked it is RAM). */
static uint8_t *host_of(const struct lm_vm *vm, uint64_t gpa)
{
	return vm->ram + (gpa >= LM_VM_HOLE_END ? gpa - (LM_VM_HOLE_END - LM_VM_HOLE_START) : gpa);
}

static int add_slots(struct lm_vm *vm, uint64_t gpa, uint64_t size, uint64_t slot_size, unsigned *n,
		     bool count_only)
{
	while (size) {
		uint64_t s = size < slot_size ? size : slot_size;
		if (!count_only) {
			struct lm_vm_slot *sl = &vm->slots[*n];
			sl->index = *n;
			sl->kvm_slot = *n;
			sl->gpa = gpa;
			sl->size = s;
			sl->host = host_of(vm, gpa);
			sl->flags = 0;
		}
		(*n)++;
		gpa += s;
		size -= s;
	}
	return 0;
}

uint64_t lm_vm_auto_slot_size(uint64_t mem_size, uint64_t s)
{
	if (s)
		return s;
	s = LM_VM_DEFAULT_SLOT_SIZE;
	/* Slots below the hole are at most 3; count the part above. */
	while (s < LM_VM_MAX_SLOT_SIZE && mem_size / s > LM_VM_AUTO_SLOTS)
		s <<= 1;
	return s;
}

/* MemAvailable from /proc/meminfo in bytes, or 0 if it cannot be read. */
static uint64_t mem_available(void)
{
	int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	const char *p = strstr(buf, "MemAvailable:");
	if (!p)
		return 0;
	return strtoull(p + strlen("MemAvailable:"), NULL, 10) << 10;
}

int lm_vm_host_check(uint64_t mem_size, uint64_t *need, uint64_t *avail)
{
	uint64_t want = (mem_size / LM_PAGE_SIZE) * LM_VM_KVM_BYTES_PER_PAGE;
	uint64_t have = mem_available();
	if (need)
		*need = want;
	if (avail)
		*avail = have;
	return have && want > have ? -ENOMEM : 0;
}

const char *lm_vm_dirty_mode_name(enum lm_vm_dirty_mode m)
{
	switch (m) {
	case LM_VM_DIRTY_AUTO:
		return "auto";
	case LM_VM_DIRTY_LOG:
		return "log";
	case LM_VM_DIRTY_RING:
		return "ring";
	}
	return "?";
}

int lm_vm_dirty_mode_parse(const char *name, enum lm_vm_dirty_mode *out)
{
	static const enum lm_vm_dirty_mode all[] = {LM_VM_DIRTY_AUTO, LM_VM_DIRTY_LOG, LM_VM_DIRTY_RING};
	for (size_t i = 0; name && i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcmp(name, lm_vm_dirty_mode_name(all[i]))) {
			*out = all[i];
			return 0;
		}
	return -EINVAL;
}

static int setup_ram(struct lm_vm *vm)
{
	uint64_t slot_size = lm_vm_auto_slot_size(vm->ram_size, vm->cfg.slot_size);
	uint64_t low = vm->ram_size < LM_VM_HOLE_START ? vm->ram_size : LM_VM_HOLE_START;
	uint64_t high = vm->ram_size - low;
	unsigned n = 0;

	if (vm->cfg.ram) {
		vm->ram = vm->cfg.ram;
	} else {
		vm->ram = mmap(NULL, vm->ram_size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (vm->ram == MAP_FAILED) {
			vm->ram = NULL;
			return -ENOMEM;
		}
	}
	add_slots(vm, 0, low, slot_size, &n, true);
	add_slots(vm, LM_VM_HOLE_END, high, slot_size, &n, true);
	int max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	if (max > 0 && n > (unsigned)max)
		return -E2BIG;
	vm->slots = calloc(n, sizeof(*vm->slots));
	if (!vm->slots)
		return -ENOMEM;
	n = 0;
	add_slots(vm, 0, low, slot_size, &n, false);
	add_slots(vm, LM_VM_HOLE_END, high, slot_size, &n, false);
	vm->nslots = n;
	/* Logged from the start in both modes (see lm_vm_config.dirty_mode):
	 * with the ring nothing is protected until its first reset, with the
	 * log (manual-protect, not initially-set) nothing until the first
	 * clear, so the guest runs at full speed until a migration. */
	for (unsigned i = 0; i < n; i++) {
		int r = lm_vm_slot_set_flags(vm, i, KVM_MEM_LOG_DIRTY_PAGES);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The ring's size: the configured or default entries, within the budget
 * and KVM's maximum (max_bytes), a power of two. */
static uint32_t ring_entries(const struct lm_vm *vm, uint64_t max_bytes)
{
	uint64_t e = vm->cfg.dirty_ring_entries;
	if (!e) {
		e = LM_VM_RING_ENTRIES_DEFAULT;
		while (e > LM_VM_RING_MIN && e * sizeof(struct kvm_dirty_gfn) * vm->ncpus > LM_VM_RING_BUDGET)
			e >>= 1;
	}
	while (e > LM_VM_RING_MIN && e * sizeof(struct kvm_dirty_gfn) > max_bytes)
		e >>= 1;
	return (uint32_t)e;
}

/* Ring or log, as asked (AUTO: the ring when KVM has it). Before slots and vCPUs. */
static int setup_dirty(struct lm_vm *vm)
{
	int cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
	int max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, cap);
	if (max <= 0) {
		cap = KVM_CAP_DIRTY_LOG_RING;
		max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, cap);
	}
	enum lm_vm_dirty_mode m = vm->cfg.dirty_mode;
	if (m == LM_VM_DIRTY_AUTO)
		m = max > 0 ? LM_VM_DIRTY_RING : LM_VM_DIRTY_LOG;
	if (m == LM_VM_DIRTY_RING) {
		if (max <= 0)
			return -EOPNOTSUPP;
		uint32_t e = ring_entries(vm, (uint64_t)max);
		if (vm->cfg.dirty_ring_entries && e != vm->cfg.dirty_ring_entries)
			return -E2BIG;
		struct kvm_enable_cap ec = {.cap = (uint32_t)cap,
					    .args = {(uint64_t)e * sizeof(struct kvm_dirty_gfn)}};
		int r = xioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec);
		if (r < 0)
			return r;
		vm->ring_entries = e;
	} else {
		/* Manual-protect without initially-set: the log starts empty
		 * and nothing is write-protected until a migration clears. */
		int caps = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
		if (caps > 0) {
			struct kvm_enable_cap ec = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {1}};
			if (xioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec) < 0)
				caps = 0;
		}
		vm->log_manual = caps > 0;
	}
	vm->dirty_mode = m;
	return 0;
}

/* Ring mode: the source that collects the rings, made once the vCPUs exist. */
static int setup_ring_source(struct lm_vm *vm)
{
	if (vm->dirty_mode != LM_VM_DIRTY_RING)
		return 0;
	struct lm_kvm_log_slot *sl = calloc(vm->nslots, sizeof(*sl));
	void **rings = calloc(vm->ncpus, sizeof(*rings));
	int r = -ENOMEM;
	if (sl && rings) {
		for (unsigned i = 0; i < vm->nslots; i++)
			sl[i] = (struct lm_kvm_log_slot){vm->slots[i].kvm_slot, vm->slots[i].gpa >> LM_PAGE_SHIFT,
							 vm->slots[i].size >> LM_PAGE_SHIFT, vm->slots[i].host};
		for (unsigned i = 0; i < vm->ncpus; i++)
			rings[i] = vm->vcpus[i].ring;
		struct lm_kvm_ring_config rc = {
		    .vm_fd = vm->vm_fd,
		    .slots = sl,
		    .nslots = vm->nslots,
		    .rings = rings,
		    .nrings = vm->ncpus,
		    .entries = vm->ring_entries,
		};
		r = lm_kvm_ring_source_new(&rc, &vm->ring_src);
	}
	free(sl);
	free(rings);
	return r;
}

/* Each vCPU gets the host's supported CPUID with its own APIC id. */
static int set_vcpu_cpuid(struct lm_vm *vm, struct lm__vcpu *c)
{
	size_t sz = sizeof(*vm->cpuid) + vm->cpuid->nent * sizeof(vm->cpuid->entries[0]);
	struct kvm_cpuid2 *cp = malloc(sz);
	if (!cp)
		return -ENOMEM;
	memcpy(cp, vm->cpuid, sz);
	for (unsigned i = 0; i < cp->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cp->entries[i];
		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffffu) | (c->index << 24);
		else if (e->function == 0xb || e->function == 0x1f)
			e->edx = c->index;
	}
	int r = xioctl(c->fd, KVM_SET_CPUID2, cp);
	free(cp);
	return r;
}

static int create_vcpu(struct lm_vm *vm, unsigned i)
{
	struct lm__vcpu *c = &vm->vcpus[i];
	c->vm = vm;
	c->index = i;
	c->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
	if (c->fd < 0) {
		c->fd = -1;
		return -errno;
	}
	c->run_size = (size_t)vm->run_size;
	c->run = mmap(NULL, c->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (c->run == MAP_FAILED) {
		c->run = NULL;
		return -errno;
	}
	if (vm->ring_entries) {
		c->ring_size = (size_t)vm->ring_entries * sizeof(struct kvm_dirty_gfn);
		c->ring = mmap(NULL, c->ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd,
			       KVM_DIRTY_LOG_PAGE_OFFSET * LM_PAGE_SIZE);
		if (c->ring == MAP_FAILED) {
			c->ring = NULL;
			return -errno;
		}
	}
	return set_vcpu_cpuid(vm, c);
}

static int check_config(const struct lm_vm_config *cfg)
{
	if (cfg->mem_size < (2ull << 20) || cfg->mem_size % LM_PAGE_SIZE)
		return -EINVAL;
	if (cfg->slot_size && (cfg->slot_size % (2ull << 20)))
		return -EINVAL;
	if (cfg->ncpus > LM_VM_MAX_CPUS)
		return -EINVAL;
	if (cfg->dirty_mode != LM_VM_DIRTY_AUTO && cfg->dirty_mode != LM_VM_DIRTY_LOG &&
	    cfg->dirty_mode != LM_VM_DIRTY_RING)
		return -EINVAL;
	uint32_t e = cfg->dirty_ring_entries;
	if (e && ((e & (e - 1)) || e < LM_VM_RING_MIN))
		return -EINVAL;
	uint64_t slot = lm_vm_auto_slot_size(cfg->mem_size, cfg->slot_size);
	if (slot > LM_VM_MAX_SLOT_SIZE)
		return -EINVAL;
	if (lm_vm_host_check(cfg->mem_size, NULL, NULL) < 0)
		return -ENOMEM;
	return 0;
}

int lm_vm_new(const struct lm_vm_config *cfg, struct lm_vm **out)
{
	int r = check_config(cfg);
	if (r < 0)
		return r;
	pthread_once(&kick_once, install_kick);

	struct lm_vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->cfg = *cfg;
	vm->cfg.kernel = NULL; /* the caller's strings are not kept */
	vm->cfg.cmdline = NULL;
	if (cfg->write_fn) {
		/* Nobody else sees the VM yet: no grace period needed. */
		vm->hook_slot[0] = (struct lm__write_hook){cfg->write_fn, cfg->write_opaque};
		vm->hook_next = 1;
		vm->hook = &vm->hook_slot[0];
	}
	vm->ncpus = cfg->ncpus ? cfg->ncpus : 1;
	vm->ram_size = cfg->mem_size;
	vm->vm_fd = -1;
	vm->stop_reason = "running";
	pthread_mutex_init(&vm->lock, NULL);
	pthread_mutex_init(&vm->dev_lock, NULL);
	pthread_mutex_init(&vm->throttle_lock, NULL);
	pthread_mutex_init(&vm->hook_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		r = errno == ENOENT ? -ENODEV : -errno;
		goto fail;
	}
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		r = -ENOTSUP;
		goto fail;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0UL);
	if (vm->vm_fd < 0) {
		r = -errno;
		goto fail;
	}
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size <= 0) {
		r = -EIO;
		goto fail;
	}
	/* The TSS and identity-map pages matter on Intel hosts only; other
	 * KVM flavours may refuse them, which is harmless. */
	ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)TSS_ADDR);
	uint64_t idmap = IDENTITY_MAP_ADDR;
	ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
	if ((r = xioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, NULL)) < 0)
		goto fail;
	/* SPEAKER_DUMMY: port 0x61 (channel 2 gate and output) in the kernel too. */
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if ((r = xioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit)) < 0)
		goto fail;
	if ((r = setup_dirty(vm)) < 0)
		goto fail;

	int xs = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	vm->xsave2 = xs > (int)sizeof(struct kvm_xsave);
	vm->xsave_size = vm->xsave2 ? (size_t)xs : sizeof(struct kvm_xsave);

	if ((r = setup_ram(vm)) < 0)
		goto fail;
	if ((r = get_supported_cpuid(vm)) < 0 || (r = get_msr_list(vm)) < 0)
		goto fail;
	vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus) {
		r = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < vm->ncpus; i++)
		vm->vcpus[i].fd = -1;
	for (unsigned i = 0; i < vm->ncpus; i++)
		if ((r = create_vcpu(vm, i)) < 0)
			goto fail;
	if ((r = setup_ring_source(vm)) < 0)
		goto fail;
	/* Before the loader, which tells the balloon where the image ends. */
	if ((r = lm__balloon_new(vm, cfg->skip_map)) < 0)
		goto fail;
	if (cfg->kernel && (r = lm__multiboot_load(vm, cfg->kernel, cfg->cmdline)) < 0)
		goto fail;
	*out = vm;
	return 0;
fail:
	if (cfg->ram)
		vm->ram = NULL; /* still the caller's */
	if (cfg->skip_map)
		lm__balloon_disown_map(vm);
	lm_vm_free(vm);
	return r;
}

/* Kick every vCPU but the caller out of KVM_RUN. Under vm->lock. */
static void kick_all(struct lm_vm *vm)
{
	pthread_t self = pthread_self();
	if (!vm->vcpus)
		return; /* lm_vm_new failed before the vCPUs existed */
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct lm__vcpu *c = &vm->vcpus[i];
		if (!c->run)
			continue;
		__atomic_store_n(&c->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (c->thread_started && !c->exited && !pthread_equal(c->thread, self))
			pthread_kill(c->thread, kick_signal());
	}
}

void lm__vm_stop(struct lm_vm *vm, int status, bool crashed, const char *reason)
{
	pthread_mutex_lock(&vm->lock);
	if (!vm->stopped) {
		vm->stopped = true;
		vm->crashed = crashed;
		vm->exit_status = status;
		/* Atomic: lm_vm_stop_reason reads it without the lock. */
		__atomic_store_n(&vm->stop_reason, reason, __ATOMIC_SEQ_CST);
		kick_all(vm);
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
}

static bool must_park(const struct lm_vm *vm)
{
	return !vm->stopped && (!vm->started || vm->pause_req || vm->quiesce);
}

/* The throttle's slice: every vCPU runs this long between sleeps (QEMU's
 * CPU_THROTTLE_TIMESLICE). */
#define THROTTLE_SLICE_NS 10000000L

static void add_ns(struct timespec *t, long ns)
{
	t->tv_sec += ns / 1000000000L;
	t->tv_nsec += ns % 1000000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

/* The sleep after each slice at pct percent: pct / (100 - pct) slices. */
static long throttle_sleep_ns(unsigned pct)
{
	return THROTTLE_SLICE_NS / (long)(100 - pct) * (long)pct;
}

/* Kicks every vCPU once per slice plus its sleep, so that each runs one
 * slice, then sleeps (vcpu_main), then runs the next. */
static void *throttle_main(void *arg)
{
	struct lm_vm *vm = arg;
	pthread_mutex_lock(&vm->lock);
	while (!vm->throttle_stop && !vm->stopped) {
		struct timespec dl;
		clock_gettime(CLOCK_MONOTONIC, &dl);
		add_ns(&dl, THROTTLE_SLICE_NS + throttle_sleep_ns(vm->throttle_pct));
		while (!vm->throttle_stop && !vm->stopped &&
		       pthread_cond_timedwait(&vm->cond, &vm->lock, &dl) != ETIMEDOUT)
			;
		if (vm->throttle_stop || vm->stopped || !vm->throttle_pct || !vm->started || vm->pause_req)
			continue;
		for (unsigned i = 0; i < vm->ncpus; i++)
			vm->vcpus[i].throttle_due = true;
		kick_all(vm);
	}
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int lm_vm_set_throttle(struct lm_vm *vm, unsigned pct)
{
	if (pct > 99)
		return -EINVAL;
	/* One change at a time (a migration's and lm_vm_free's): the thread
	 * is started or joined by exactly one of them. */
	pthread_mutex_lock(&vm->throttle_lock);
	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&vm->throttle_pct, pct, __ATOMIC_SEQ_CST);
	int r = 0;
	bool join = false;
	if (pct && !vm->throttle_on && !vm->stopped) {
		vm->throttle_stop = false;
		r = -pthread_create(&vm->throttle_thread, NULL, throttle_main, vm);
		vm->throttle_on = r == 0;
	} else if (!pct && vm->throttle_on) {
		vm->throttle_stop = true;
		join = true;
	}
	pthread_cond_broadcast(&vm->cond); /* sleeping vCPUs see the new share */
	pthread_mutex_unlock(&vm->lock);
	if (join) {
		pthread_join(vm->throttle_thread, NULL);
		pthread_mutex_lock(&vm->lock);
		vm->throttle_on = false;
		vm->throttle_stop = false;
		pthread_mutex_unlock(&vm->lock);
	}
	pthread_mutex_unlock(&vm->throttle_lock);
	return r;
}

unsigned lm_vm_throttle(const struct lm_vm *vm)
{
	return __atomic_load_n(&vm->throttle_pct, __ATOMIC_SEQ_CST);
}

/* A vCPU the throttle kicked sleeps its share before KVM_RUN; a pause, a
 * quit or a lower share ends the sleep early. Under vm->lock. */
static void throttle_sleep(struct lm_vm *vm)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	add_ns(&dl, throttle_sleep_ns(vm->throttle_pct));
	while (vm->throttle_pct && !must_park(vm) && !vm->stopped &&
	       pthread_cond_timedwait(&vm->cond, &vm->lock, &dl) != ETIMEDOUT)
		;
}

static void *vcpu_main(void *arg)
{
	struct lm__vcpu *c = arg;
	struct lm_vm *vm = c->vm;
	lm__thread_name("lm-vcpu/%u", c->index);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, kick_signal());
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	pthread_mutex_lock(&vm->lock);
	for (;;) {
		while (must_park(vm)) {
			c->parked = true;
			c->throttle_due = false; /* a parked vCPU has slept enough */
			pthread_cond_broadcast(&vm->cond);
			pthread_cond_wait(&vm->cond, &vm->lock);
		}
		c->parked = false;
		if (vm->stopped)
			break;
		if (c->throttle_due) {
			c->throttle_due = false;
			throttle_sleep(vm);
			continue; /* a pause may have come meanwhile */
		}
		/* Under the lock, so a kick cannot slip in between. */
		c->run->immediate_exit = 0;
		pthread_mutex_unlock(&vm->lock);

		int r = ioctl(c->fd, KVM_RUN, 0);
		int err = r < 0 ? errno : 0;
		bool complete = false;
		if (r < 0) {
			if (err != EINTR && err != EAGAIN)
				lm__vm_stop(vm, -err, true, "KVM_RUN failed");
		} else {
			switch (c->run->exit_reason) {
			case KVM_EXIT_IO:
				complete = true;
				if (lm__vm_handle_pio(vm, c->run) < 0)
					lm__vm_stop(vm, -EIO, true, "device error");
				break;
			case KVM_EXIT_MMIO:
				/* Nothing lives in MMIO space: reads see all ones. */
				complete = true;
				if (!c->run->mmio.is_write)
					memset(c->run->mmio.data, 0xff, sizeof(c->run->mmio.data));
				break;
			case KVM_EXIT_INTR:
			case KVM_EXIT_HLT:
				break;
			case KVM_EXIT_DIRTY_RING_FULL:
				/* The guest cannot run on until the ring is reset:
				 * collect it (into the migration, if one runs). */
				if (lm_kvm_ring_collect(vm->ring_src) < 0)
					lm__vm_stop(vm, -EIO, true, "collecting the dirty ring failed");
				break;
			case KVM_EXIT_SHUTDOWN:
				lm__vm_stop(vm, -EIO, true, "shutdown (triple fault)");
				break;
			case KVM_EXIT_SYSTEM_EVENT:
				lm__vm_stop(vm, 0, false, "system event");
				break;
			case KVM_EXIT_FAIL_ENTRY:
				lm__vm_stop(vm, -EIO, true, "entry failed");
				break;
			case KVM_EXIT_INTERNAL_ERROR:
				lm__vm_stop(vm, -EIO, true,
					    "KVM internal error (emulation failure)");
				break;
			default:
				lm__vm_stop(vm, -EIO, true, "unexpected KVM exit");
				break;
			}
		}
		pthread_mutex_lock(&vm->lock);
		if (complete && (must_park(vm) || c->throttle_due)) {
			/* Finish the I/O instruction inside KVM before parking
			 * or sleeping (the state must be consistent then). */
			c->run->immediate_exit = 1;
			pthread_mutex_unlock(&vm->lock);
			while (ioctl(c->fd, KVM_RUN, 0) == 0)
				if (c->run->exit_reason == KVM_EXIT_DIRTY_RING_FULL &&
				    lm_kvm_ring_collect(vm->ring_src) < 0)
					break;
			pthread_mutex_lock(&vm->lock);
		}
	}
	c->exited = true;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int lm_vm_start(struct lm_vm *vm)
{
	int r = 0;
	pthread_mutex_lock(&vm->lock);
	if (vm->started) {
		r = -EALREADY;
		goto out;
	}
	/* vCPU threads block the kick signal nowhere, but other threads created
	 * by them would inherit our mask; start them with it unblocked. */
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct lm__vcpu *c = &vm->vcpus[i];
		r = -pthread_create(&c->thread, NULL, vcpu_main, c);
		if (r < 0) {
			vm->stopped = true;
			vm->crashed = true;
			__atomic_store_n(&vm->stop_reason, "thread creation failed",
					 __ATOMIC_SEQ_CST);
			pthread_cond_broadcast(&vm->cond);
			goto out;
		}
		c->thread_started = true;
	}
	vm->started = true;
	pthread_cond_broadcast(&vm->cond);
out:
	pthread_mutex_unlock(&vm->lock);
	return r;
}

/* Kick the vCPUs (must_park() holds) and wait until all are parked. Under
 * vm->lock. */
static void wait_parked(struct lm_vm *vm)
{
	if (!vm->started || vm->stopped)
		return;
	kick_all(vm);
	pthread_cond_broadcast(&vm->cond); /* throttled vCPUs sleep on it */
	for (;;) {
		bool all = true;
		for (unsigned i = 0; i < vm->ncpus; i++) {
			struct lm__vcpu *c = &vm->vcpus[i];
			if (c->thread_started && !c->parked && !c->exited)
				all = false;
		}
		if (all || vm->stopped)
			break;
		pthread_cond_wait(&vm->cond, &vm->lock);
	}
}

int lm_vm_pause(struct lm_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	/* Atomic (as in lm_vm_resume): lm_vm_is_paused reads it without the
	 * lock, from the control path while the migration thread pauses. */
	__atomic_store_n(&vm->pause_req, true, __ATOMIC_SEQ_CST);
	wait_parked(vm);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

void lm__vm_quiesce(struct lm_vm *vm, bool on)
{
	pthread_mutex_lock(&vm->lock);
	if (on) {
		vm->quiesce++;
		wait_parked(vm);
	} else if (vm->quiesce) {
		vm->quiesce--;
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
}

int lm_vm_resume(struct lm_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	int r = vm->stopped ? -ESRCH : vm->pause_held ? -EBUSY : 0;
	if (r == 0) {
		__atomic_store_n(&vm->pause_req, false, __ATOMIC_SEQ_CST);
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	return r;
}

int lm_vm_hold_paused(struct lm_vm *vm, bool hold)
{
	pthread_mutex_lock(&vm->lock);
	int r = hold && !vm->pause_req ? -EINVAL : 0;
	if (r == 0)
		vm->pause_held = hold;
	pthread_mutex_unlock(&vm->lock);
	return r;
}

bool lm_vm_is_paused(const struct lm_vm *vm)
{
	return __atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST);
}

bool lm__vm_running(struct lm_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	bool r = vm->started && !vm->stopped && !vm->pause_req && !vm->quiesce;
	pthread_mutex_unlock(&vm->lock);
	return r;
}

void lm_vm_quit(struct lm_vm *vm, int status)
{
	lm__vm_stop(vm, status, false, "quit");
}

int lm_vm_wait(struct lm_vm *vm, int timeout_ms, int *status)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	if (timeout_ms > 0)
		add_ns(&dl, (long)timeout_ms * 1000000L);
	int r = 0;
	pthread_mutex_lock(&vm->lock);
	while (!vm->stopped) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&vm->cond, &vm->lock);
		} else if (pthread_cond_timedwait(&vm->cond, &vm->lock, &dl) == ETIMEDOUT) {
			if (!vm->stopped)
				r = -EINTR;
			break;
		}
	}
	if (vm->stopped) {
		if (status)
			*status = vm->exit_status;
		r = vm->crashed ? -EIO : 0;
	}
	pthread_mutex_unlock(&vm->lock);
	return r;
}

const char *lm_vm_stop_reason(const struct lm_vm *vm)
{
	return __atomic_load_n(&vm->stop_reason, __ATOMIC_SEQ_CST);
}

void lm_vm_free(struct lm_vm *vm)
{
	if (!vm)
		return;
	lm_vm_set_throttle(vm, 0);
	pthread_mutex_lock(&vm->lock);
	if (!vm->stopped) {
		vm->stopped = true;
		__atomic_store_n(&vm->stop_reason, "freed", __ATOMIC_SEQ_CST);
	}
	kick_all(vm);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; vm->vcpus && i < vm->ncpus; i++)
		if (vm->vcpus[i].thread_started)
			pthread_join(vm->vcpus[i].thread, NULL);
	lm__serial_flush(vm);
	lm_dirty_source_free(vm->ring_src);
	for (unsigned i = 0; vm->vcpus && i < vm->ncpus; i++) {
		struct lm__vcpu *c = &vm->vcpus[i];
		if (c->ring)
			munmap(c->ring, c->ring_size);
		if (c->run)
			munmap(c->run, c->run_size);
		if (c->fd >= 0)
			close(c->fd);
	}
	free(vm->vcpus);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	if (vm->ram)
		munmap(vm->ram, vm->ram_size);
	lm__balloon_free(vm);
	free(vm->slots);
	free(vm->cpuid);
	free(vm->msr_list);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->lock);
	pthread_mutex_destroy(&vm->dev_lock);
	pthread_mutex_destroy(&vm->throttle_lock);
	pthread_mutex_destroy(&vm->hook_lock);
	free(vm);
}

/*
 * lm_vm_free for a VM made around the caller's cfg.ram and cfg.skip_map
 * that leaves both to the caller, mapped and allocated: a migration
 * destination whose receiver still writes into them when the VM built
 * around them turns out unusable.
 */
void lm__vm_free_keep_memory(struct lm_vm *vm)
{
	if (!vm)
		return;
	if (vm->cfg.ram)
		vm->ram = NULL;
	if (vm->cfg.skip_map)
		lm__balloon_disown_map(vm);
	lm_vm_free(vm);
}

/* ---- memory ------------------------------------------------------------ */

uint64_t lm_vm_mem_size(const struct lm_vm *vm)
{
	return vm->ram_size;
}

unsigned lm_vm_slot_count(const struct lm_vm *vm)
{
	return vm->nslots;
}

const struct lm_vm_slot *lm_vm_slot(const struct lm_vm *vm, unsigned index)
{
	return index < vm->nslots ? &vm->slots[index] : NULL;
}

int lm_vm_slot_set_flags(struct lm_vm *vm, unsigned index, uint32_t flags)
{
	if (index >= vm->nslots)
		return -EINVAL;
	struct lm_vm_slot *s = &vm->slots[index];
	struct kvm_userspace_memory_region reg = {
	    .slot = s->kvm_slot,
	    .flags = flags,
	    .guest_phys_addr = s->gpa,
	    .memory_size = s->size,
	    .userspace_addr = (uint64_t)(uintptr_t)s->host,
	};
	int r = xioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &reg);
	if (r == 0)
		s->flags = flags;
	return r;
}

/* The slot holding gpa, by binary search over the ascending slots. */
static const struct lm_vm_slot *find_slot(const struct lm_vm *vm, uint64_t gpa)
{
	unsigned lo = 0, hi = vm->nslots;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const struct lm_vm_slot *s = &vm->slots[mid];
		if (gpa < s->gpa)
			hi = mid;
		else if (gpa - s->gpa >= s->size)
			lo = mid + 1;
		else
			return s;
	}
	return NULL;
}

void *lm_vm_gpa_to_host(const struct lm_vm *vm, uint64_t gpa, uint64_t len)
{
	const struct lm_vm_slot *s = find_slot(vm, gpa);
	if (!s || len > s->size - (gpa - s->gpa))
		return NULL;
	return (uint8_t *)s->host + (gpa - s->gpa);
}

int lm_vm_write_guest(struct lm_vm *vm, uint64_t gpa, const void *buf, uint64_t len)
{
	const uint8_t *p = buf;
	uint64_t g = gpa, left = len;
	/* Check the whole range first so that a failed write changes nothing. */
	while (left) {
		const struct lm_vm_slot *s = find_slot(vm, g);
		if (!s)
			return -EFAULT;
		uint64_t n = s->size - (g - s->gpa);
		if (n > left)
			n = left;
		g += n;
		left -= n;
	}
	g = gpa;
	left = len;
	while (left) {
		const struct lm_vm_slot *s = find_slot(vm, g);
		uint64_t n = s->size - (g - s->gpa);
		if (n > left)
			n = left;
		memcpy((uint8_t *)s->host + (g - s->gpa), p, n);
		lm__vm_wrote(vm, g, n);
		p += n;
		g += n;
		left -= n;
	}
	return 0;
}

/*
 * The write hook. vCPU threads (the balloon) and the loader call it; the
 * migration thread and the control path install and remove it, and the
 * remover frees what opaque points to (the migration and its dirty
 * source) right after. So fn and opaque are published as one unit, and
 * removal waits out a grace period:
 *
 * - A setter (under hook_lock) fills the slot not published now, then
 *   publishes a pointer to it (or NULL) with one atomic store, then
 *   waits until hook_users is zero.
 * - A caller that sees a hook at all (the one-load fast path in
 *   lm__vm_wrote) announces itself by incrementing hook_users, then loads
 *   the pointer again and calls through what it got, then decrements.
 *
 * Both the increment and the reload, and the setter's store and its
 * reads of hook_users, are sequentially consistent, so of the two orders
 * one holds: the caller's reload comes after the store (it sees the new
 * hook or NULL, never the old), or its increment comes before the
 * setter's first read of hook_users (the setter waits for its decrement,
 * which is a release, so everything the old hook did happens before the
 * setter returns). When lm_vm_set_write_hook returns, no thread is inside
 * the old hook or about to enter it, and the slot it lived in may be
 * filled by the next setter. The wait is short: a hook call is a few
 * atomic bit sets (the migration's lm_kvm_log_mark), and calls are rare
 * (a balloon run, a loader write), so hook_users falls to zero at once.
 */
void lm__vm_call_write_hook(struct lm_vm *vm, uint64_t gpa, uint64_t len)
{
	__atomic_fetch_add(&vm->hook_users, 1, __ATOMIC_SEQ_CST);
	const struct lm__write_hook *h = __atomic_load_n(&vm->hook, __ATOMIC_SEQ_CST);
	if (h)
		h->fn(h->opaque, gpa, len);
	__atomic_fetch_sub(&vm->hook_users, 1, __ATOMIC_RELEASE);
}

void lm_vm_set_write_hook(struct lm_vm *vm, lm_vm_write_fn fn, void *opaque)
{
	pthread_mutex_lock(&vm->hook_lock);
	struct lm__write_hook *h = NULL;
	if (fn) {
		/* The other slot is the published one (or was retired by an
		 * earlier call, grace period included). */
		h = &vm->hook_slot[vm->hook_next];
		vm->hook_next ^= 1;
		h->fn = fn;
		h->opaque = opaque;
	}
	__atomic_store_n(&vm->hook, h, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&vm->hook_users, __ATOMIC_SEQ_CST))
		sched_yield();
	pthread_mutex_unlock(&vm->hook_lock);
}

/* ---- KVM handles ------------------------------------------------------- */

int lm_vm_fd(const struct lm_vm *vm)
{
	return vm->vm_fd;
}

unsigned lm_vm_vcpu_count(const struct lm_vm *vm)
{
	return vm->ncpus;
}

int lm_vm_vcpu_fd(const struct lm_vm *vm, unsigned cpu)
{
	return cpu < vm->ncpus ? vm->vcpus[cpu].fd : -EINVAL;
}

void *lm_vm_vcpu_dirty_ring(const struct lm_vm *vm, unsigned cpu, uint32_t *entries)
{
	if (cpu >= vm->ncpus || !vm->vcpus[cpu].ring)
		return NULL;
	if (entries)
		*entries = vm->ring_entries;
	return vm->vcpus[cpu].ring;
}

enum lm_vm_dirty_mode lm_vm_dirty_mode(const struct lm_vm *vm)
{
	return vm->dirty_mode;
}

struct lm_dirty_source *lm_vm_ring_source(const struct lm_vm *vm)
{
	return vm->ring_src;
}

bool lm_vm_log_manual(const struct lm_vm *vm)
{
	return vm->log_manual;
}
