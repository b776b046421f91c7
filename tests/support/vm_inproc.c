/*
 * Helpers for the tests that run a VM in the test process; see vm_inproc.h.
 */
#include "vm_inproc.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "live.h"
#include "livemig/bitmap.h"

void lm_test_console_line(void *opaque, const char *line, size_t len)
{
	struct lm_test_console *c = opaque;
	pthread_mutex_lock(&c->lock);
	if (c->len + len + 2 > c->cap) {
		c->cap = (c->cap + len + 2) * 2;
		c->text = realloc(c->text, c->cap);
	}
	memcpy(c->text + c->len, line, len);
	c->len += len;
	c->text[c->len++] = '\n';
	c->text[c->len] = 0;
	pthread_mutex_unlock(&c->lock);
}

int lm_test_console_count(struct lm_test_console *c, const char *needle, char *line, size_t linelen)
{
	pthread_mutex_lock(&c->lock);
	int n = c->text ? lm_live_count(c->text, needle, line, linelen) : 0;
	pthread_mutex_unlock(&c->lock);
	return n;
}

bool lm_test_console_wait(struct lm_test_console *c, const char *needle, int have, char *line,
			  size_t linelen, struct lm_vm *vm, double deadline_s)
{
	double end = lm_live_now() + deadline_s;
	while (lm_live_now() < end) {
		if (lm_test_console_count(c, needle, line, linelen) > have)
			return true;
		/* -EINTR: the zero timeout passed with the VM still running. */
		if (lm_vm_wait(vm, 0, NULL) != -EINTR)
			return lm_test_console_count(c, needle, line, linelen) > have;
		lm_live_msleep(20);
	}
	return false;
}

bool lm_test_vm_wait_verified(struct lm_vm *vm, uint32_t req, uint32_t *done, uint32_t *result,
			      double deadline_s)
{
	double end = lm_live_now() + deadline_s;
	while (lm_live_now() < end) {
		lm_vm_verify_status(vm, NULL, done, result);
		if (*done == req)
			return true;
		lm_live_msleep(20);
	}
	return false;
}

void lm_test_vm_copy_ram(struct lm_vm *dst, struct lm_vm *src)
{
	assert_int_equal(lm_vm_slot_count(dst), lm_vm_slot_count(src));
	for (unsigned i = 0; i < lm_vm_slot_count(src); i++) {
		const struct lm_vm_slot *s = lm_vm_slot(src, i), *d = lm_vm_slot(dst, i);
		assert_int_equal(s->gpa, d->gpa);
		assert_int_equal(s->size, d->size);
		for (uint64_t off = 0; off < s->size; off += LM_PAGE_SIZE) {
			const uint8_t *p = (const uint8_t *)s->host + off;
			if (!lm_page_is_zero(p))
				memcpy((uint8_t *)d->host + off, p, LM_PAGE_SIZE);
		}
	}
}

static void *vm_receiver_main(void *arg)
{
	struct lm_test_vm_receiver *r = arg;
	struct lm_vm_incoming_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.console_fd = -1;
	r->err = lm_vm_incoming(r->fd, &cfg, &r->vm, &r->st);
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

int lm_test_vm_receiver_start(struct lm_test_vm_receiver *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	return -pthread_create(&r->th, NULL, vm_receiver_main, r);
}

bool lm_test_mig_ended(enum lm_migrate_status st)
{
	return st == LM_MIG_COMPLETED || st == LM_MIG_FAILED || st == LM_MIG_CANCELLED;
}
