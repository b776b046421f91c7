/*
 * livemig VMM: a small KVM virtual machine (src/vmm).
 *
 * What it is for: running the project's Multiboot guest images, and being
 * the source and the destination of a live migration. The migration engine
 * (src/migrate) sees the VM only through this header: the RAM slots (to turn
 * on dirty logging per slot and to read and write pages through the host
 * mapping), pause/resume, the state blob, and a hook that reports the
 * VMM's own writes into guest RAM (KVM does not log those).
 *
 * Ownership: struct lm_vm is an opaque handle, lm_vm_new() creates it and
 * lm_vm_free() destroys it (stopping its vCPU threads first). Slot
 * descriptors returned by lm_vm_slot() point into the VM and live as long
 * as it does. Buffers returned by lm_vm_state_save() belong to the caller
 * (free()).
 *
 * Threads: every vCPU runs in its own thread, started by lm_vm_start().
 * lm_vm_pause/resume/quit/request_verify may be called from any thread
 * (the control socket's, the migration thread) but not from a vCPU thread
 * (i.e. not from a pio handler or a console callback). What vCPU threads
 * read while other threads may change it is either fixed before
 * lm_vm_start() (slots, pio ranges, console, the balloon and its skip map,
 * which live as long as the VM) or published atomically: the write hook
 * (lm_vm_set_write_hook: one pointer to an immutable fn/opaque pair, and
 * a grace period on removal), the run flags (under the VM's lock).
 *
 * Guest physical layout: RAM starts at 0; above 3 GiB it continues at
 * 4 GiB, leaving the usual PCI hole free. RAM is split into slots of at
 * most slot_size bytes (default 1 GiB), so that dirty-log harvesting can be
 * done slot by slot. The whole RAM is one MAP_NORESERVE mapping: a 1 TiB
 * guest costs only what it touches.
 */
#ifndef LIVEMIG_VMM_H
#define LIVEMIG_VMM_H

#include "livemig/common.h"

#define LM_VM_MAX_CPUS 64
#define LM_VM_DEFAULT_SLOT_SIZE (1ull << 30)
/* With the default slot size (slot_size 0), RAM is cut into 1 GiB slots
 * while that makes at most this many; a bigger guest gets the smallest
 * power-of-two multiple of 1 GiB that does (1 TiB: 4 GiB slots, 16 TiB:
 * 64 GiB). Fewer, bigger slots cost the same to register and to harvest
 * with the ring, and keep the per-slot ioctls of the log few. */
#define LM_VM_AUTO_SLOTS 256
/* The largest slot this VMM makes: KVM takes at most 2^31 - 1 pages. */
#define LM_VM_MAX_SLOT_SIZE (4ull << 40)
/* Default dirty ring entries per vCPU, and the memory all rings may take
 * together (16 bytes an entry), above LM_VM_RING_MIN. */
#define LM_VM_RING_ENTRIES_DEFAULT 65536u
#define LM_VM_RING_BUDGET (16ull << 20)
/* The smallest ring this VMM makes. Measured here (kernel 6.18, PVM
 * flavour, 2026-12): with 4096 or 16384 entries a vCPU stops making
 * progress once its ring first fills (KVM keeps reporting it full with
 * no entry left to collect: its reserved margin apparently exceeds such
 * a ring), with 65536 it runs on. So no smaller ring until that is
 * understood. */
#define LM_VM_RING_MIN 65536u
/*
 * KVM's own memory per page of guest RAM (reverse maps, large-page info,
 * dirty bitmaps), allocated when a slot is registered even if the page is
 * never touched: measured here as ~2.5 GiB per TiB (about 10 bytes per
 * 4 KiB page). lm_vm_new refuses a VM whose estimate exceeds the host's
 * available memory (lm_vm_host_check).
 */
#define LM_VM_KVM_BYTES_PER_PAGE 10u
/* Start of the hole between RAM below and above 4 GiB. */
#define LM_VM_HOLE_START (3ull << 30)
#define LM_VM_HOLE_END (4ull << 30)

struct lm_vm;
struct lm_dirty_source;

/* Called for every complete line the guest writes to COM1 (without the
 * newline), from a vCPU thread. Must not block for long. */
typedef void (*lm_vm_console_fn)(void *opaque, const char *line, size_t len);

/*
 * Called when the VMM itself changes guest RAM [gpa, gpa+len): through
 * lm_vm_write_guest() (the Multiboot loader does) or by freeing pages (the
 * balloon); KVM's dirty log does not see such changes. Install it before
 * the writes you need to see. It is called from vCPU threads and from any
 * thread that calls lm_vm_write_guest(), possibly several at once, so it
 * must be thread-safe, short and non-blocking: lm_vm_set_write_hook()
 * waits for calls in progress.
 */
typedef void (*lm_vm_write_fn)(void *opaque, uint64_t gpa, uint64_t len);

/*
 * Extra port I/O device (e.g. the balloon at LM_PV_BALLOON_BASE). Called
 * from a vCPU thread with size 1, 2 or 4; for an in, fill *val. Return 0,
 * or -errno to stop the VM with an error.
 */
typedef int (*lm_vm_pio_fn)(void *opaque, uint16_t port, unsigned size, bool is_write,
			    uint32_t *val);

enum lm_vm_dirty_mode {
	LM_VM_DIRTY_AUTO = 0,
	LM_VM_DIRTY_LOG,  /* KVM_GET_DIRTY_LOG per slot, manual-protect clears */
	LM_VM_DIRTY_RING, /* per-vCPU dirty rings */
};
/* "auto", "log", "ring"; and back (-EINVAL for anything else). */
const char *lm_vm_dirty_mode_name(enum lm_vm_dirty_mode m);
int lm_vm_dirty_mode_parse(const char *name, enum lm_vm_dirty_mode *out);

struct lm_vm_config {
	uint64_t mem_size;   /* bytes of RAM, a multiple of 4 KiB, >= 2 MiB */
	uint64_t slot_size;  /* max bytes per KVM slot (multiple of 2 MiB); 0 = 1 GiB */
	unsigned ncpus;	     /* 1..LM_VM_MAX_CPUS; 0 means 1 */
	const char *kernel;  /* Multiboot v1 ELF, or NULL: RAM and state come from elsewhere */
	const char *cmdline; /* Multiboot command line, may be NULL */
	int console_fd;	     /* guest serial output is written here; -1: nowhere */
	lm_vm_console_fn console_fn; /* optional, per line */
	void *console_opaque;
	/*
	 * How KVM tracks the guest's writes for migration. Chosen at creation:
	 * the ring must exist before the vCPUs, and both kinds register every
	 * slot with KVM_MEM_LOG_DIRTY_PAGES from the start, so a migration
	 * never pays KVM's walk of the slots to turn logging on (~80 ms per
	 * TiB here) or off (~115 ms). LM_VM_DIRTY_AUTO: the ring when the
	 * kernel has it, else the log.
	 */
	enum lm_vm_dirty_mode dirty_mode;
	/*
	 * Dirty ring entries per vCPU (power of two) in ring mode; 0: the
	 * default (LM_VM_RING_ENTRIES_DEFAULT within LM_VM_RING_BUDGET and
	 * KVM's maximum). Ignored in log mode.
	 */
	uint32_t dirty_ring_entries;
	/* Optional write hook from the start, so that it sees the loader's
	 * writes too (see lm_vm_set_write_hook). */
	lm_vm_write_fn write_fn;
	void *write_opaque;
	/*
	 * Optional: guest RAM already mapped by the caller (mem_size bytes,
	 * MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, RAM below the hole first,
	 * then the part above 4 GiB). On success the VM owns it and munmaps it
	 * in lm_vm_free(); on failure it stays the caller's. A migration
	 * destination fills RAM before it knows the vCPU count.
	 */
	void *ram;
	/*
	 * Optional: the balloon's skip map (livemig/balloon.h), already
	 * filled by the caller (a migration destination receives it with
	 * RAM), made for this VM's page space (lm_skip_map_npages ==
	 * (mem_size <= 3 GiB ? mem_size : mem_size + 1 GiB) / 4 KiB). On
	 * success the VM owns it; on failure it stays the caller's. NULL: the
	 * VM makes an empty one.
	 */
	struct lm_skip_map *skip_map;
};

/* A guest RAM slot as KVM knows it. */
struct lm_vm_slot {
	unsigned index;	   /* 0 .. lm_vm_slot_count()-1, ascending gpa */
	uint32_t kvm_slot; /* KVM's slot id */
	uint64_t gpa;	   /* guest physical base */
	uint64_t size;	   /* bytes */
	void *host;	   /* host mapping of gpa .. gpa+size */
	uint32_t flags;	   /* KVM_MEM_* flags currently registered */
};

/* The longest guest command line (lm_vm_config.cmdline), in bytes, its
 * terminating NUL not counted: the loader's page for it holds no more. */
#define LM_VM_CMDLINE_MAX 28671

/*
 * Whether this host can hold a VM of mem_size bytes: KVM's per-page
 * metadata (LM_VM_KVM_BYTES_PER_PAGE) against MemAvailable from
 * /proc/meminfo. 0, or -ENOMEM with *need and *avail (bytes) set; either
 * pointer may be NULL. -ENOENT-style failures to read meminfo count as 0
 * (no estimate: let KVM decide).
 */
int lm_vm_host_check(uint64_t mem_size, uint64_t *need, uint64_t *avail);
/* The slot size lm_vm_new uses for mem_size bytes and cfg.slot_size s. */
uint64_t lm_vm_auto_slot_size(uint64_t mem_size, uint64_t s);

/* Creates the VM, its RAM and its vCPUs (not yet running). With a kernel,
 * loads it and sets the Multiboot entry state on the BSP. 0 or -errno
 * (-ENOENT no such kernel, -EISDIR a directory, -ENOEXEC not a Multiboot
 * ELF, -E2BIG a segment outside RAM or a command line longer than
 * LM_VM_CMDLINE_MAX or more slots than KVM takes, -ENODEV no /dev/kvm,
 * -ENOMEM the host cannot hold it (lm_vm_host_check), -EOPNOTSUPP ring
 * mode asked for on a kernel without the dirty ring). */
int lm_vm_new(const struct lm_vm_config *cfg, struct lm_vm **out);
/* Stops the vCPU threads if running and frees everything. NULL is fine. */
void lm_vm_free(struct lm_vm *vm);

/* Starts the vCPU threads. If lm_vm_pause() was called before, they start
 * paused and wait for lm_vm_resume(). */
int lm_vm_start(struct lm_vm *vm);
/* Kicks every vCPU out of KVM_RUN and returns once all are parked (any
 * port I/O in flight is completed first, so the state is consistent).
 * Idempotent. */
int lm_vm_pause(struct lm_vm *vm);
int lm_vm_resume(struct lm_vm *vm);
bool lm_vm_is_paused(const struct lm_vm *vm);
/*
 * While held, lm_vm_resume() fails with -EBUSY: a migration holds its paused
 * VM during the stop-and-copy (a `cont` then would change pages already
 * sent) and after completing (the guest runs elsewhere now). Holding needs
 * a paused VM (-EINVAL otherwise). Released by lm_vm_hold_paused(vm, false).
 */
int lm_vm_hold_paused(struct lm_vm *vm, bool hold);
/*
 * Throttling (QEMU's auto-converge): the vCPUs sleep pct percent of the
 * time (0..99; 0: not at all). Every vCPU runs a 10 ms slice, is kicked
 * out of KVM_RUN, and sleeps pct / (100 - pct) slices before it runs again,
 * as QEMU's cpu-throttle does; a pause or quit wakes it at once.
 * -EINVAL above 99.
 */
int lm_vm_set_throttle(struct lm_vm *vm, unsigned pct);
unsigned lm_vm_throttle(const struct lm_vm *vm);
/* Asks the VM to stop for good: lm_vm_wait() returns with status. */
void lm_vm_quit(struct lm_vm *vm, int status);
/*
 * Waits until the guest powers off (status = the value it wrote to
 * LM_PV_POWEROFF or QEMU's debug-exit port) or lm_vm_quit() is called.
 * Returns 0, or -EIO if the guest crashed (triple fault, emulation
 * failure), -EINTR if timeout_ms (>= 0) passed first; -1 waits forever.
 */
int lm_vm_wait(struct lm_vm *vm, int timeout_ms, int *status);
/* A short description of why the VM stopped ("poweroff", "quit",
 * "shutdown (triple fault)", ...), or "running". */
const char *lm_vm_stop_reason(const struct lm_vm *vm);

/* ---- memory ------------------------------------------------------------ */

uint64_t lm_vm_mem_size(const struct lm_vm *vm);
unsigned lm_vm_slot_count(const struct lm_vm *vm);
const struct lm_vm_slot *lm_vm_slot(const struct lm_vm *vm, unsigned index);
/* Re-registers a slot with new KVM_MEM_* flags (e.g. LOG_DIRTY_PAGES). */
int lm_vm_slot_set_flags(struct lm_vm *vm, unsigned index, uint32_t flags);
/* Host address of guest physical [gpa, gpa+len), or NULL if that range is
 * not all RAM within one slot. */
void *lm_vm_gpa_to_host(const struct lm_vm *vm, uint64_t gpa, uint64_t len);
/* Copies into guest RAM (may cross slots) and reports it to the write
 * hook. -EFAULT if part of the range is not RAM. */
int lm_vm_write_guest(struct lm_vm *vm, uint64_t gpa, const void *buf, uint64_t len);
/*
 * Installs fn/opaque as the write hook, or removes it (fn NULL), from any
 * thread but a vCPU's or the hook's own. fn and opaque are published as
 * one unit: a caller sees the old pair, the new pair or none, never a mix.
 * It returns only once no thread is still inside the previous hook or
 * about to call it (a grace period), so the previous opaque may be freed
 * as soon as it returns; called from the hook itself it would wait for
 * itself forever. Calls into the hook cost one atomic load while none is
 * installed.
 */
void lm_vm_set_write_hook(struct lm_vm *vm, lm_vm_write_fn fn, void *opaque);

/* ---- KVM handles, for dirty sources (src/track) ------------------------ */

int lm_vm_fd(const struct lm_vm *vm);
unsigned lm_vm_vcpu_count(const struct lm_vm *vm);
int lm_vm_vcpu_fd(const struct lm_vm *vm, unsigned cpu);
/* The vCPU's dirty ring (struct kvm_dirty_gfn[entries]) in ring mode, else
 * NULL. */
void *lm_vm_vcpu_dirty_ring(const struct lm_vm *vm, unsigned cpu, uint32_t *entries);
/* The mode the VM was created with (never AUTO). */
enum lm_vm_dirty_mode lm_vm_dirty_mode(const struct lm_vm *vm);
/* In ring mode, the VM's ring source (livemig/track_kvm.h), which the VM
 * owns and collects on ring-full exits; a migration starts and stops it.
 * NULL in log mode. */
struct lm_dirty_source *lm_vm_ring_source(const struct lm_vm *vm);
/* Log mode: whether KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 was enabled at
 * creation (else KVM_GET_DIRTY_LOG clears as it reads). */
bool lm_vm_log_manual(const struct lm_vm *vm);

/* ---- devices ----------------------------------------------------------- */

/* Registers a port range [base, base+len) before lm_vm_start(). -EBUSY if
 * it overlaps a built-in device or another range. */
int lm_vm_register_pio(struct lm_vm *vm, uint16_t base, uint16_t len, lm_vm_pio_fn fn,
		       void *opaque);
/* Bumps the pv verify-request counter; returns the new value. The guest
 * checks its pages and reports back (lm_vm_verify_status). */
uint32_t lm_vm_request_verify(struct lm_vm *vm);
/* Last request the guest completed and its result (0 ok, 1 failed). */
void lm_vm_verify_status(const struct lm_vm *vm, uint32_t *requested, uint32_t *done,
			 uint32_t *result);

/* ---- state ------------------------------------------------------------- */

/*
 * The complete vCPU and device state (not RAM) as a self-describing,
 * versioned blob: header {magic "LMVS", version, flags, vCPU count,
 * section count}, then sections {tag, vCPU, length, bytes padded to 8}.
 * The VM must be paused (or never started). *buf is malloc'ed.
 */
int lm_vm_state_save(struct lm_vm *vm, uint8_t **buf, size_t *len);
/*
 * Validates the whole blob first (magic, version, every length, tag and
 * vCPU index, nothing missing, nothing repeated, nothing trailing), then
 * restores in the order DESIGN.md gives. -EINVAL (malformed), -EPROTO
 * (unknown version), -ENXIO (vCPU count differs) before anything changes;
 * a KVM error while restoring is returned as is. The VM must be paused or
 * never started.
 */
int lm_vm_state_load(struct lm_vm *vm, const uint8_t *buf, size_t len);
/* The vCPU count a blob describes, from its header (the rest is checked by
 * lm_vm_state_load). -EINVAL or -EPROTO as lm_vm_state_load would say. */
int lm_vm_state_peek(const uint8_t *buf, size_t len, unsigned *ncpus);

#endif
