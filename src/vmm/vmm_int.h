/*
 * Private to src/vmm: the VM object and what its files share.
 *
 * vm.c owns the object, RAM and vCPU threads; devices.c the port I/O
 * devices (COM1, the pv device, registered ranges); multiboot.c the
 * loader; state.c the state blob.
 */
#ifndef LIVEMIG_VMM_INT_H
#define LIVEMIG_VMM_INT_H

#include <pthread.h>
#include <linux/kvm.h>

#include "livemig/vmm.h"

#define LM__MAX_PIO 8
#define LM__SERIAL_LINE 512

struct lm__vcpu {
	struct lm_vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	void *ring; /* dirty ring mapping, or NULL */
	size_t ring_size;
	pthread_t thread;
	bool thread_started;
	bool parked; /* under vm->lock: waiting, state consistent */
	bool exited; /* under vm->lock: thread has left its loop */
	bool throttle_due; /* under vm->lock: kicked by the throttle, sleep before KVM_RUN */
};

/* COM1: just enough of a 16550A for output and for a guest that probes it. */
struct lm__serial {
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	char line[LM__SERIAL_LINE];
	unsigned len;
};

/* The livemig pv device (include/livemig/guest_abi.h). */
struct lm__pv {
	uint32_t verify_req;	/* atomic: written by callers, read by the guest */
	uint32_t verify_result; /* last value the guest wrote to VERIFY_RESULT */
	uint32_t verify_done;	/* last request the guest completed */
	uint32_t pending_result;
};

struct lm__pio_range {
	uint16_t base, len;
	lm_vm_pio_fn fn;
	void *opaque;
};

/* A published write hook: never changed while a thread may read it. */
struct lm__write_hook {
	lm_vm_write_fn fn;
	void *opaque;
};

struct lm_vm {
	struct lm_vm_config cfg;
	int kvm_fd, vm_fd;
	int run_size;

	/* RAM: one mapping; slots point into it. */
	uint8_t *ram;
	uint64_t ram_size;
	struct lm_vm_slot *slots;
	unsigned nslots;
	enum lm_vm_dirty_mode dirty_mode; /* LOG or RING, from creation */
	uint32_t ring_entries;		  /* per vCPU, ring mode */
	bool log_manual;		  /* log mode: manual-protect enabled */
	struct lm_dirty_source *ring_src; /* ring mode: collects ring-full exits */

	/*
	 * The write hook, read by vCPU threads (balloon) and any caller of
	 * lm_vm_write_guest while the migration thread or the control path
	 * installs and removes it (vm.c, "The write hook", has the rules).
	 * hook: atomic; NULL or one of hook_slot[], whose fn and opaque go
	 * out together and never change while published. hook_users: atomic
	 * count of threads between announcing a call and finishing it.
	 * hook_lock serialises the setters and guards hook_slot and
	 * hook_next (the slot the next setter fills).
	 */
	struct lm__write_hook *hook;
	unsigned hook_users;
	pthread_mutex_t hook_lock;
	struct lm__write_hook hook_slot[2];
	unsigned hook_next;

	struct kvm_cpuid2 *cpuid;
	size_t xsave_size; /* bytes of struct kvm_xsave to use (>= 4096) */
	bool xsave2;
	uint32_t *msr_list;
	unsigned nmsrs;

	unsigned ncpus;
	struct lm__vcpu *vcpus;

	/* Run control, all under lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started;
	bool pause_req;
	bool pause_held; /* lm_vm_hold_paused: resume refused */
	unsigned quiesce; /* lm__vm_quiesce: parked without a pause, the user's run state untouched */
	bool stopped; /* poweroff, quit or crash: never runs again */
	/* lm_vm_set_throttle, under lock: the share of time (percent) the
	 * vCPUs sleep, and the thread that kicks them into it. */
	unsigned throttle_pct; /* written atomically: lm_vm_throttle reads it without the lock */
	bool throttle_on, throttle_stop;
	pthread_t throttle_thread;
	pthread_mutex_t throttle_lock; /* serializes lm_vm_set_throttle */
	bool crashed;
	int exit_status;
	const char *stop_reason;

	/* Devices; the serial and pv state is touched by vCPU threads and by
	 * state save/load (with every vCPU parked), so it needs no lock of its
	 * own beyond dev_lock for several vCPUs writing at once. */
	pthread_mutex_t dev_lock;
	struct lm__serial serial;
	struct lm__pv pv;
	struct lm__pio_range pio[LM__MAX_PIO];
	unsigned npio;

	/* balloon.c: the balloon device and the VM's skip map. */
	struct lm__balloon *balloon;
};

/* vm.c: the slow path of lm__vm_wrote. */
void lm__vm_call_write_hook(struct lm_vm *vm, uint64_t gpa, uint64_t len);

/*
 * Report the VMM's own write of guest RAM [gpa, gpa+len) to the write hook,
 * from any thread (a vCPU's device, the loader). Without a hook this is one
 * atomic load: a write made while no hook is published needs no report,
 * since a migration publishes its hook before its first pass reads any
 * page.
 */
static inline void lm__vm_wrote(struct lm_vm *vm, uint64_t gpa, uint64_t len)
{
	if (__atomic_load_n(&vm->hook, __ATOMIC_ACQUIRE))
		lm__vm_call_write_hook(vm, gpa, len);
}

/* devices.c: handles one KVM_EXIT_IO. 0, or -errno to stop the VM. */
int lm__vm_handle_pio(struct lm_vm *vm, struct kvm_run *run);
void lm__serial_flush(struct lm_vm *vm);
/* vm.c: stop the VM for good (from a vCPU thread too). */
void lm__vm_stop(struct lm_vm *vm, int status, bool crashed, const char *reason);
/* vm.c: started, not stopped and not paused (read under vm->lock: a vCPU
 * thread may stop the VM at any time). */
bool lm__vm_running(struct lm_vm *vm);
/*
 * Park the vCPUs for a moment (on) and let them go (off), without touching
 * the run state a user sees: a `stop` or `cont` meanwhile takes effect as
 * usual once the vCPUs are let go. State may be saved while quiesced.
 * Nests.
 */
void lm__vm_quiesce(struct lm_vm *vm, bool on);
/* vm.c: lm_vm_free, but cfg.ram and cfg.skip_map stay the caller's. */
void lm__vm_free_keep_memory(struct lm_vm *vm);
/*
 * balloon.c: the balloon device, made with every VM (adopting a skip map
 * the caller filled, or a new one) and freed with it (map included,
 * unless disowned first: a failed lm_vm_new leaves cfg->skip_map the
 * caller's). The state section is LM__BALLOON_STATE_SIZE bytes.
 */
#define LM__BALLOON_STATE_SIZE 32u
struct lm_skip_map;
int lm__balloon_new(struct lm_vm *vm, struct lm_skip_map *adopt);
void lm__balloon_disown_map(struct lm_vm *vm);
void lm__balloon_free(struct lm_vm *vm);
/* multiboot.c: the loaded image ends here; the balloon refuses pages below. */
void lm__balloon_set_image_end(struct lm_vm *vm, uint64_t end);
void lm__balloon_save(struct lm_vm *vm, uint8_t out[LM__BALLOON_STATE_SIZE]);
/* Validates a state section against this VM; 0 or -EINVAL. */
int lm__balloon_check_state(const struct lm_vm *vm, const uint8_t *p, size_t len);
void lm__balloon_load(struct lm_vm *vm, const uint8_t *p);
/* multiboot.c: loads cfg->kernel and sets the BSP's entry state. */
int lm__multiboot_load(struct lm_vm *vm, const char *path, const char *cmdline);

#endif
