/*
 * Port I/O devices: COM1 (output only, enough of a 16550A that a guest
 * probing it is content), the livemig pv device (guest_abi.h), QEMU's
 * debug-exit port (so that an image written for QEMU powers off here too),
 * and ranges registered by the embedder. Everything else reads as all ones
 * and ignores writes, as an empty ISA bus does.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "livemig/guest_abi.h"
#include "vmm/vmm_int.h"

#define COM1 0x3f8

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* a console that went away must not stop the guest */
		p += w;
		n -= (size_t)w;
	}
}

/* Emits the buffered line. Under dev_lock. */
static void emit_line(struct lm_vm *vm)
{
	struct lm__serial *s = &vm->serial;
	if (vm->cfg.console_fd >= 0) {
		s->line[s->len] = '\n';
		write_all(vm->cfg.console_fd, s->line, s->len + 1);
	}
	if (vm->cfg.console_fn)
		vm->cfg.console_fn(vm->cfg.console_opaque, s->line, s->len);
	s->len = 0;
}

void lm__serial_flush(struct lm_vm *vm)
{
	pthread_mutex_lock(&vm->dev_lock);
	if (vm->serial.len)
		emit_line(vm);
	pthread_mutex_unlock(&vm->dev_lock);
}

static void serial_out(struct lm_vm *vm, unsigned reg, uint8_t v)
{
	struct lm__serial *s = &vm->serial;
	bool dlab = s->lcr & 0x80;
	switch (reg) {
	case 0:
		if (dlab) {
			s->dll = v;
		} else if (v == '\n') {
			emit_line(vm);
		} else if (v != '\r') {
			s->line[s->len++] = (char)v;
			/* One byte stays free for the newline emit_line appends. */
			if (s->len == LM__SERIAL_LINE - 1)
				emit_line(vm);
		}
		break;
	case 1:
		if (dlab)
			s->dlm = v;
		else
			s->ier = v & 0x0f;
		break;
	case 2:
		s->fcr = v;
		break;
	case 3:
		s->lcr = v;
		break;
	case 4:
		s->mcr = v & 0x1f;
		break;
	case 7:
		s->scr = v;
		break;
	default:
		break;
	}
}

static uint8_t serial_in(struct lm_vm *vm, unsigned reg)
{
	struct lm__serial *s = &vm->serial;
	bool dlab = s->lcr & 0x80;
	switch (reg) {
	case 0:
		return dlab ? s->dll : 0;
	case 1:
		return dlab ? s->dlm : s->ier;
	case 2:
		return (uint8_t)(0x01 | ((s->fcr & 1) ? 0xc0 : 0)); /* no interrupt pending */
	case 3:
		return s->lcr;
	case 4:
		return s->mcr;
	case 5:
		return 0x60; /* transmitter empty, holding register empty */
	case 6:
		/* In loopback mode the modem inputs follow the outputs. */
		if (s->mcr & 0x10)
			return (uint8_t)(((s->mcr & 0x0c) << 4) | ((s->mcr & 0x01) << 5) |
					 ((s->mcr & 0x02) << 3));
		return 0xb0; /* DCD, DSR, CTS */
	case 7:
		return s->scr;
	default:
		return 0xff;
	}
}

static void pv_out(struct lm_vm *vm, unsigned off, uint32_t v, bool *poweroff)
{
	struct lm__pv *pv = &vm->pv;
	switch (off) {
	case LM_PV_VERIFY_RESULT - LM_PV_BASE:
		pv->pending_result = v;
		break;
	case LM_PV_VERIFY_DONE - LM_PV_BASE:
		__atomic_store_n(&pv->verify_result, pv->pending_result, __ATOMIC_SEQ_CST);
		__atomic_store_n(&pv->verify_done, v, __ATOMIC_SEQ_CST);
		break;
	case LM_PV_POWEROFF - LM_PV_BASE:
		*poweroff = true;
		break;
	default:
		break;
	}
}

static uint32_t pv_in(struct lm_vm *vm, unsigned off)
{
	switch (off) {
	case LM_PV_ID - LM_PV_BASE:
		return LM_PV_MAGIC;
	case LM_PV_VERIFY_REQ - LM_PV_BASE:
		return __atomic_load_n(&vm->pv.verify_req, __ATOMIC_SEQ_CST);
	case LM_PV_VERIFY_RESULT - LM_PV_BASE:
		return vm->pv.pending_result;
	case LM_PV_VERIFY_DONE - LM_PV_BASE:
		return vm->pv.verify_done;
	default:
		return 0;
	}
}

static struct lm__pio_range *find_range(struct lm_vm *vm, uint16_t port)
{
	for (unsigned i = 0; i < vm->npio; i++)
		if (port >= vm->pio[i].base && port - vm->pio[i].base < vm->pio[i].len)
			return &vm->pio[i];
	return NULL;
}

/* Built-in devices a registered range must not cover: COM1 and the pv
 * device's registers (its reserved tail is free for the embedder). */
static bool builtin_overlap(uint16_t base, uint16_t len)
{
	uint32_t end = (uint32_t)base + len;
	if (base < COM1 + 8 && end > COM1)
		return true;
	if (base < LM_PV_BALLOON_BASE && end > LM_PV_BASE)
		return true;
	return false;
}

int lm_vm_register_pio(struct lm_vm *vm, uint16_t base, uint16_t len, lm_vm_pio_fn fn, void *opaque)
{
	if (!len || !fn || (uint32_t)base + len > 0x10000)
		return -EINVAL;
	if (builtin_overlap(base, len))
		return -EBUSY;
	/* vCPU threads read the table without a lock: it may change only
	 * before they exist, and vm->lock orders this against lm_vm_start. */
	int r = 0;
	pthread_mutex_lock(&vm->lock);
	if (vm->started)
		r = -EBUSY;
	for (unsigned i = 0; r == 0 && i < vm->npio; i++) {
		const struct lm__pio_range *p = &vm->pio[i];
		if (base < p->base + p->len && base + len > p->base)
			r = -EBUSY;
	}
	if (r == 0 && vm->npio == LM__MAX_PIO)
		r = -ENOSPC;
	if (r == 0)
		vm->pio[vm->npio++] = (struct lm__pio_range){base, len, fn, opaque};
	pthread_mutex_unlock(&vm->lock);
	return r;
}

uint32_t lm_vm_request_verify(struct lm_vm *vm)
{
	return __atomic_add_fetch(&vm->pv.verify_req, 1, __ATOMIC_SEQ_CST);
}

void lm_vm_verify_status(const struct lm_vm *vm, uint32_t *requested, uint32_t *done,
			 uint32_t *result)
{
	if (requested)
		*requested = __atomic_load_n(&vm->pv.verify_req, __ATOMIC_SEQ_CST);
	if (done)
		*done = __atomic_load_n(&vm->pv.verify_done, __ATOMIC_SEQ_CST);
	if (result)
		*result = __atomic_load_n(&vm->pv.verify_result, __ATOMIC_SEQ_CST);
}

static uint32_t load_val(const uint8_t *p, unsigned size)
{
	uint32_t v = 0;
	memcpy(&v, p, size);
	return v;
}

int lm__vm_handle_pio(struct lm_vm *vm, struct kvm_run *run)
{
	unsigned size = run->io.size;
	bool out = run->io.direction == KVM_EXIT_IO_OUT;
	uint16_t port = run->io.port;
	if (size != 1 && size != 2 && size != 4)
		return -EINVAL;
	if ((uint64_t)run->io.data_offset + (uint64_t)size * run->io.count > (uint64_t)vm->run_size)
		return -EINVAL;

	struct lm__pio_range *ext = find_range(vm, port);
	int r = 0;
	bool poweroff = false;
	uint32_t off_status = 0;

	pthread_mutex_lock(&vm->dev_lock);
	for (uint32_t i = 0; i < run->io.count && r == 0; i++) {
		uint8_t *p = (uint8_t *)run + run->io.data_offset + (size_t)i * size;
		uint32_t v = out ? load_val(p, size) : 0xffffffffu;
		if (ext) {
			pthread_mutex_unlock(&vm->dev_lock);
			r = ext->fn(ext->opaque, port, size, out, &v);
			pthread_mutex_lock(&vm->dev_lock);
		} else if (port >= COM1 && port < COM1 + 8) {
			/* Wider accesses to the UART act on their low byte. */
			if (out)
				serial_out(vm, port - COM1, (uint8_t)v);
			else
				v = serial_in(vm, port - COM1);
		} else if (port >= LM_PV_BASE && port < LM_PV_BASE + LM_PV_SIZE) {
			if (out) {
				pv_out(vm, port - LM_PV_BASE, v, &poweroff);
				if (poweroff)
					off_status = v;
			} else {
				v = pv_in(vm, port - LM_PV_BASE);
			}
		} else if (port == LM_QEMU_DEBUG_EXIT && out) {
			poweroff = true;
			off_status = v;
		}
		if (!out)
			memcpy(p, &v, size);
	}
	pthread_mutex_unlock(&vm->dev_lock);
	if (poweroff)
		lm__vm_stop(vm, (int)off_status, false, "poweroff");
	return r;
}
