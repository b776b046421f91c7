/*
 * Helpers for the end-to-end tests that run a VM inside the test process
 * through the lm_vm API (tests/e2e/test_vmm_run.c, test_balloon.c): a
 * console that collects the guest's serial lines in memory, waits on it,
 * the wait for a guest check asked with lm_vm_request_verify(), and a copy
 * of one VM's RAM into another, as a migration would leave it.
 *
 * Ownership: the caller owns the console (text is malloc'ed by the console
 * callback and freed by the caller). A console that a still-running VM may
 * write to must outlive it: a test that can fail with the VM running keeps
 * its consoles in static storage. Waits take their deadline from the caller
 * and only turn a hang into a failure.
 */
#ifndef LIVEMIG_TEST_VM_INPROC_H
#define LIVEMIG_TEST_VM_INPROC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "livemig/vmm.h"
#include "livemig/vmm_migrate.h"

struct lm_test_console {
	pthread_mutex_t lock;
	char *text; /* every line so far, each ended by '\n'; NULL before the first */
	size_t len, cap;
};
#define LM_TEST_CONSOLE_INIT                                                                       \
	{                                                                                          \
		.lock = PTHREAD_MUTEX_INITIALIZER                                                  \
	}

/* The lm_vm_config console_fn; its opaque is the struct lm_test_console. */
void lm_test_console_line(void *opaque, const char *line, size_t len);
/* Lines containing needle so far; the last is copied into line (if not
 * NULL). */
int lm_test_console_count(struct lm_test_console *c, const char *needle, char *line,
			  size_t linelen);
/* Waits until more than `have` lines contain needle; gives up early when
 * the VM has stopped and the line is still not there. */
bool lm_test_console_wait(struct lm_test_console *c, const char *needle, int have, char *line,
			  size_t linelen, struct lm_vm *vm, double deadline_s);

/* Polls lm_vm_verify_status() until the guest has answered request req
 * (its done count reaches req); *done and *result are the last values read.
 * Returns false at the deadline. */
bool lm_test_vm_wait_verified(struct lm_vm *vm, uint32_t req, uint32_t *done, uint32_t *result,
			      double deadline_s);

/* Copies src's RAM into dst slot by slot (the layouts must match: this
 * asserts so, cmocka), leaving zero pages untouched on dst, as a migration
 * would. */
void lm_test_vm_copy_ram(struct lm_vm *dst, struct lm_vm *src);

/* A destination in a thread: lm_vm_incoming() on fd, without a console;
 * done (atomic) is set once it returned, err and vm are its result. The
 * caller joins th and frees vm. */
struct lm_test_vm_receiver {
	int fd;
	int err;
	int done;
	struct lm_vm *vm;
	struct lm_receive_stats st;
	pthread_t th;
};
/* Clears r and starts the thread. 0 or -errno. */
int lm_test_vm_receiver_start(struct lm_test_vm_receiver *r, int fd);

/* A migration status that no longer changes (completed, failed, cancelled). */
bool lm_test_mig_ended(enum lm_migrate_status st);

#endif
