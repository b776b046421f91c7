/*
 * livemig VMM <-> migration engine glue (src/vmm/migration.c).
 *
 * Source side: lm_vm_migration wraps an engine migration (livemig/migrate.h)
 * of a running lm_vm: one region per KVM slot, the KVM dirty-log source
 * (livemig/track_kvm.h) with the VMM's own RAM writes logged in software,
 * and a workload whose pause/resume stop and restart the vCPUs and whose
 * device state is the VM's state blob (lm_vm_state_save) sent as the
 * device "vm".
 *
 * Destination side: lm_vm_incoming() receives one migration from a
 * connected fd and builds the VM from the stream: memory size and layout
 * from the HELLO, the vCPU count and every register and device from the
 * "vm" blob. It returns a paused VM only when the whole stream checked out,
 * the RAM digest matched and the sender committed; the caller resumes it.
 * It takes only layouts its VM reproduces slot for slot (RAM from gpa 0
 * without gaps, skipping [3 GiB, 4 GiB), cut as lm_vm_new cuts it; see
 * docs/cli.md) and refuses any other with REFUSE before a page is written.
 * When all of that holds but COMMIT never came (the connection broke after
 * RESULT ok), it returns -ENOLINK and still hands out the paused VM: the
 * source may have resumed, or may be gone, so the caller must neither run
 * it by itself nor free it, but wait for an operator's decision
 * (docs/stream.md 3.11).
 *
 * Ownership: lm_vm_migration borrows the VM (which must outlive it) and the
 * fd (not closed). lm_vm_incoming() gives the caller a new VM (lm_vm_free).
 */
#ifndef LIVEMIG_VMM_MIGRATE_H
#define LIVEMIG_VMM_MIGRATE_H

#include "livemig/migrate.h"
#include "livemig/vmm.h"

struct lm_vm_migration;

/* Prepares a migration of vm (running or paused) with parameters p (NULL:
 * defaults). Nothing is tracked yet. */
int lm_vm_migration_new(struct lm_vm *vm, const struct lm_migrate_params *p,
			struct lm_vm_migration **out);
/* Called from the migration thread right after the VM paused for the
 * switchover (e.g. to send a STOP event). Set before starting. */
void lm_vm_migration_set_pause_hook(struct lm_vm_migration *m, void (*fn)(void *), void *opaque);
/* Starts the migration thread on a connected fd. */
int lm_vm_migration_start(struct lm_vm_migration *m, int fd);
/* 0: completed, the VM stays paused (it runs on the destination now).
 * -errno: failed or cancelled; the VM runs as before, dirty logging off. */
int lm_vm_migration_wait(struct lm_vm_migration *m);
void lm_vm_migration_cancel(struct lm_vm_migration *m);
/* Recovering a paused post-copy over fd (lm_migration_resume; the engine
 * owns fd on success). */
int lm_vm_migration_resume(struct lm_vm_migration *m, int fd);
/* migrate-start-postcopy (lm_migration_start_postcopy). */
int lm_vm_migration_start_postcopy(struct lm_vm_migration *m);
void lm_vm_migration_query(struct lm_vm_migration *m, struct lm_migrate_stats *out);
const char *lm_vm_migration_error(struct lm_vm_migration *m);
void lm_vm_migration_free(struct lm_vm_migration *m);

struct lm_vm_incoming_config {
	int console_fd; /* as in lm_vm_config */
	lm_vm_console_fn console_fn;
	void *console_opaque;
	struct lm_receive_params recv; /* capabilities refused, idle timeout */
	/* How the VM built here tracks writes, for a migration onward
	 * (lm_vm_config.dirty_mode, dirty_ring_entries). */
	enum lm_vm_dirty_mode dirty_mode;
	uint32_t dirty_ring_entries;
	/*
	 * Optional: a VM built ahead (lm_vm_new without a kernel, paused,
	 * never started) to receive into, as QEMU's destination is started
	 * with its -m: registering a big VM's slots costs KVM O(size) (its
	 * reverse maps, ~2 GiB zeroed per TiB here: 0.5-6 s per TiB), which
	 * then happens before the migration instead of inside it. A stream of
	 * another RAM size or vCPU count is refused. lm_vm_incoming consumes
	 * it: it is *out on success (and on -ENOLINK), freed on failure (its
	 * RAM holds part of a stream).
	 */
	struct lm_vm *vm;
};

/*
 * Receive one migration from fd and build the VM. On success *out is a
 * paused VM (lm_vm_start() then lm_vm_resume() to run it: the vCPUs start
 * paused). -ENOLINK (st->wait_commit): verified but uncommitted, *out is
 * the paused VM all the same, to be kept until an operator decides. After
 * a post-copy (st->postcopy_started) the VM is running already; if every
 * page arrived but the check at the end failed (st->postcopy_complete),
 * -errno and *out is that running VM. On other failures -errno, *out
 * untouched, the cause in st->error.
 */
int lm_vm_incoming(int fd, const struct lm_vm_incoming_config *cfg, struct lm_vm **out,
		   struct lm_receive_stats *st);

#endif
