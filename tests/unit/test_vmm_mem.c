/*
 * The VM object without running a guest: configuration checks, the RAM
 * slot layout and accessors, the write hook, dirty logging and the dirty
 * ring as the migration code will use them, port ranges, and the Multiboot
 * loader on images built by the test (entry state, info structure, memory
 * map, command line, and refusal of bad images).
 */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <cmocka.h>

#include "livemig/guest_abi.h"
#include "livemig/vmm.h"

static struct lm_vm *vm_with(uint64_t mem, uint64_t slot, unsigned ncpus)
{
	struct lm_vm_config cfg = {
	    .mem_size = mem, .slot_size = slot, .ncpus = ncpus, .console_fd = -1};
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&cfg, &vm), 0);
	return vm;
}

static void test_bad_config(void **state)
{
	struct lm_vm *vm = NULL;
	struct lm_vm_config c = {.mem_size = 64ull << 20, .console_fd = -1};
	c.mem_size = 1ull << 20; /* below 2 MiB */
	assert_int_equal(lm_vm_new(&c, &vm), -EINVAL);
	c.mem_size = (64ull << 20) + 100;
	assert_int_equal(lm_vm_new(&c, &vm), -EINVAL);
	c.mem_size = 64ull << 20;
	c.slot_size = 3ull << 20;
	assert_int_equal(lm_vm_new(&c, &vm), -EINVAL);
	c.slot_size = 0;
	c.ncpus = LM_VM_MAX_CPUS + 1;
	assert_int_equal(lm_vm_new(&c, &vm), -EINVAL);
	c.ncpus = 1;
	c.dirty_ring_entries = 1000;
	assert_int_equal(lm_vm_new(&c, &vm), -EINVAL);
	c.dirty_ring_entries = 4096; /* a power of two, but below LM_VM_RING_MIN */
	assert_int_equal(lm_vm_new(&c, &vm), -EINVAL);
	c.dirty_ring_entries = 0;
	c.dirty_mode = (enum lm_vm_dirty_mode)7;
	assert_int_equal(lm_vm_new(&c, &vm), -EINVAL);
	c.dirty_mode = LM_VM_DIRTY_AUTO;
	/* A VM whose KVM metadata alone exceeds any host here (16 TiB needs ~40 GiB). */
	c.mem_size = 1ull << 52;
	assert_int_equal(lm_vm_new(&c, &vm), -ENOMEM);
	c.mem_size = 64ull << 20;
	uint64_t need = 0, avail = 0;
	assert_int_equal(lm_vm_host_check(64ull << 20, &need, &avail), 0);
	assert_int_equal(need, (64ull << 20) / 4096 * LM_VM_KVM_BYTES_PER_PAGE);
	enum lm_vm_dirty_mode m;
	assert_int_equal(lm_vm_dirty_mode_parse("ring", &m), 0);
	assert_int_equal(m, LM_VM_DIRTY_RING);
	assert_int_equal(lm_vm_dirty_mode_parse("bitmap", &m), -EINVAL);
	/* Slots: 1 GiB up to 256 of them, then doubling. */
	assert_int_equal(lm_vm_auto_slot_size(256ull << 30, 0), 1ull << 30);
	assert_int_equal(lm_vm_auto_slot_size(257ull << 30, 0), 2ull << 30);
	assert_int_equal(lm_vm_auto_slot_size(16ull << 40, 0), 64ull << 30);
	assert_int_equal(lm_vm_auto_slot_size(16ull << 40, 2ull << 20), 2ull << 20);
	c.kernel = "/nonexistent/guest.elf";
	assert_int_equal(lm_vm_new(&c, &vm), -ENOENT);
	c.kernel = "/etc/hostname";
	assert_int_equal(lm_vm_new(&c, &vm), -ENOEXEC);
	assert_null(vm);
}

static uint64_t written_bytes;
static uint64_t written_first = ~0ull;

static void on_write(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque;
	written_bytes += len;
	if (gpa < written_first)
		written_first = gpa;
}

static void test_slots(void **state)
{
	/* 5 GiB in 1 GiB slots: three below the hole, two above it. */
	struct lm_vm *vm = vm_with(5ull << 30, 0, 1);
	assert_int_equal(lm_vm_mem_size(vm), 5ull << 30);
	assert_int_equal(lm_vm_slot_count(vm), 5);
	uint64_t expect_gpa[] = {0, 1ull << 30, 2ull << 30, 4ull << 30, 5ull << 30};
	for (unsigned i = 0; i < 5; i++) {
		const struct lm_vm_slot *s = lm_vm_slot(vm, i);
		assert_int_equal(s->index, i);
		assert_int_equal(s->gpa, expect_gpa[i]);
		assert_int_equal(s->size, 1ull << 30);
		/* Logged from creation (ring or log alike). */
		assert_int_equal(s->flags, 1u /* KVM_MEM_LOG_DIRTY_PAGES */);
		assert_ptr_equal(lm_vm_gpa_to_host(vm, s->gpa, 4096), s->host);
	}
	assert_null(lm_vm_slot(vm, 5));
	/* The hole and the end are not RAM; a range may not span slots. */
	assert_null(lm_vm_gpa_to_host(vm, 3ull << 30, 1));
	assert_null(lm_vm_gpa_to_host(vm, 6ull << 30, 1));
	assert_null(lm_vm_gpa_to_host(vm, (1ull << 30) - 8, 16));

	/* Writes go through the host mapping and are reported. */
	lm_vm_set_write_hook(vm, on_write, NULL);
	static uint8_t buf[8192];
	memset(buf, 0x5a, sizeof(buf));
	written_bytes = 0;
	written_first = ~0ull;
	assert_int_equal(lm_vm_write_guest(vm, (1ull << 30) - 4096, buf, sizeof(buf)), 0);
	assert_int_equal(written_bytes, 8192);
	assert_int_equal(written_first, (1ull << 30) - 4096);
	uint8_t *a = lm_vm_gpa_to_host(vm, (1ull << 30) - 4096, 4096);
	uint8_t *b = lm_vm_gpa_to_host(vm, 1ull << 30, 4096);
	assert_int_equal(a[0], 0x5a);
	assert_int_equal(b[4095], 0x5a);
	/* Up to the hole is RAM, into it is not; nothing is written then. */
	written_bytes = 0;
	assert_int_equal(lm_vm_write_guest(vm, (3ull << 30) - 4096, buf, sizeof(buf)), -EFAULT);
	assert_int_equal(written_bytes, 0);
	uint8_t *c = lm_vm_gpa_to_host(vm, (3ull << 30) - 4096, 4096);
	assert_int_equal(c[0], 0);

	/* Dirty logging per slot, on from creation: the log reads in log
	 * mode (a ring VM refuses KVM_GET_DIRTY_LOG: its writes go to rings). */
	assert_int_equal(lm_vm_slot_set_flags(vm, 3, KVM_MEM_LOG_DIRTY_PAGES), 0);
	assert_int_equal(lm_vm_slot(vm, 3)->flags, KVM_MEM_LOG_DIRTY_PAGES);
	uint64_t *bits = calloc((1ull << 30) / 4096 / 64, 8);
	struct kvm_dirty_log log = {.slot = lm_vm_slot(vm, 3)->kvm_slot, .dirty_bitmap = bits};
	if (lm_vm_dirty_mode(vm) == LM_VM_DIRTY_LOG)
		assert_int_equal(ioctl(lm_vm_fd(vm), KVM_GET_DIRTY_LOG, &log), 0);
	free(bits);
	assert_int_equal(lm_vm_slot_set_flags(vm, 3, 0), 0);
	assert_int_equal(lm_vm_slot_set_flags(vm, 9, 0), -EINVAL);
	lm_vm_free(vm);

	/* A small guest with smaller slots, the last one partial. */
	vm = vm_with(10ull << 20, 4ull << 20, 2);
	assert_int_equal(lm_vm_slot_count(vm), 3);
	assert_int_equal(lm_vm_slot(vm, 2)->gpa, 8ull << 20);
	assert_int_equal(lm_vm_slot(vm, 2)->size, 2ull << 20);
	assert_int_equal(lm_vm_vcpu_count(vm), 2);
	assert_true(lm_vm_vcpu_fd(vm, 1) >= 0);
	assert_int_equal(lm_vm_vcpu_fd(vm, 2), -EINVAL);
	if (lm_vm_dirty_mode(vm) == LM_VM_DIRTY_RING)
		assert_non_null(lm_vm_vcpu_dirty_ring(vm, 0, NULL));
	else
		assert_null(lm_vm_vcpu_dirty_ring(vm, 0, NULL));
	lm_vm_free(vm);
}

static void test_big_sparse(void **state)
{
	/* 1 TiB costs nothing until touched. Default slots: 4 GiB, so that
	 * there are at most LM_VM_AUTO_SLOTS above the hole (3 GiB below it
	 * fit in one). */
	struct lm_vm *vm = vm_with(1ull << 40, 0, 1);
	assert_int_equal(lm_vm_auto_slot_size(1ull << 40, 0), 4ull << 30);
	assert_int_equal(lm_vm_slot_count(vm), 1 + 256);
	assert_int_equal(lm_vm_slot(vm, 0)->size, 3ull << 30);
	const struct lm_vm_slot *last = lm_vm_slot(vm, 256);
	assert_int_equal(last->gpa + last->size, (1ull << 40) + (1ull << 30));
	uint8_t *p = lm_vm_gpa_to_host(vm, last->gpa + last->size - 4096, 4096);
	assert_non_null(p);
	p[4095] = 1;
	lm_vm_free(vm);
}

static void test_dirty_ring(void **state)
{
	struct lm_vm_config cfg = {
	    .mem_size = 16ull << 20, .ncpus = 2, .console_fd = -1, .dirty_ring_entries = 65536};
	struct lm_vm *vm = NULL;
	int r = lm_vm_new(&cfg, &vm);
	if (r == -EOPNOTSUPP) {
		skip();
		return;
	}
	assert_int_equal(r, 0);
	uint32_t n = 0;
	assert_non_null(lm_vm_vcpu_dirty_ring(vm, 1, &n));
	assert_int_equal(n, 65536);
	lm_vm_free(vm);
}

static int dummy_pio(void *opaque, uint16_t port, unsigned size, bool is_write, uint32_t *val)
{
	return 0;
}

static void test_pio_ranges(void **state)
{
	struct lm_vm *vm = vm_with(4ull << 20, 0, 1);
	assert_int_equal(lm_vm_register_pio(vm, 0x3f8, 1, dummy_pio, NULL), -EBUSY);
	assert_int_equal(lm_vm_register_pio(vm, 0x3f0, 16, dummy_pio, NULL), -EBUSY);
	assert_int_equal(lm_vm_register_pio(vm, LM_PV_BASE, 4, dummy_pio, NULL), -EBUSY);
	/* Every VM's balloon device holds LM_PV_BALLOON_BASE..+12. */
	assert_int_equal(lm_vm_register_pio(vm, LM_PV_BALLOON_BASE, 12, dummy_pio, NULL), -EBUSY);
	assert_int_equal(lm_vm_register_pio(vm, 0x500, 8, dummy_pio, NULL), 0);
	assert_int_equal(lm_vm_register_pio(vm, 0x504, 1, dummy_pio, NULL), -EBUSY);
	assert_int_equal(lm_vm_register_pio(vm, 0x500, 0, dummy_pio, NULL), -EINVAL);
	assert_int_equal(lm_vm_register_pio(vm, 0xfff0, 0x20, dummy_pio, NULL), -EINVAL);
	assert_int_equal(lm_vm_register_pio(vm, 0x500, 8, NULL, NULL), -EINVAL);
	/* The verify counter is host-side state until a guest reads it. */
	assert_int_equal(lm_vm_request_verify(vm), 1);
	assert_int_equal(lm_vm_request_verify(vm), 2);
	uint32_t req = 0, done = 9;
	lm_vm_verify_status(vm, &req, &done, NULL);
	assert_int_equal(req, 2);
	assert_int_equal(done, 0);
	lm_vm_free(vm);
}

/* ---- Multiboot images made here ----------------------------------------- */

struct image {
	Elf32_Ehdr eh;
	Elf32_Phdr ph[2];
	uint32_t mb[3];
	uint8_t code[64];
};

static void make_image(struct image *im, uint32_t paddr, uint32_t memsz)
{
	memset(im, 0, sizeof(*im));
	memcpy(im->eh.e_ident, ELFMAG, SELFMAG);
	im->eh.e_ident[EI_CLASS] = ELFCLASS32;
	im->eh.e_ident[EI_DATA] = ELFDATA2LSB;
	im->eh.e_ident[EI_VERSION] = EV_CURRENT;
	im->eh.e_type = ET_EXEC;
	im->eh.e_machine = EM_386;
	im->eh.e_version = EV_CURRENT;
	im->eh.e_entry = paddr + (uint32_t)offsetof(struct image, code);
	im->eh.e_phoff = offsetof(struct image, ph);
	im->eh.e_ehsize = sizeof(Elf32_Ehdr);
	im->eh.e_phentsize = sizeof(Elf32_Phdr);
	im->eh.e_phnum = 1;
	im->ph[0].p_type = PT_LOAD;
	im->ph[0].p_offset = 0;
	im->ph[0].p_vaddr = im->ph[0].p_paddr = paddr;
	im->ph[0].p_filesz = sizeof(*im);
	im->ph[0].p_memsz = memsz;
	im->mb[0] = 0x1BADB002u;
	im->mb[1] = 3;
	im->mb[2] = (uint32_t)-(0x1BADB002u + 3);
	memset(im->code, 0xf4, sizeof(im->code)); /* hlt */
}

static const char *write_image(const void *buf, size_t len)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/lm-vmm-mem-%d.elf", (int)getpid());
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
	return path;
}

static int load(const void *img, size_t len, uint64_t mem, const char *cmdline, struct lm_vm **vm)
{
	struct lm_vm_config cfg = {.mem_size = mem,
				   .console_fd = -1,
				   .write_fn = on_write,
				   .kernel = write_image(img, len),
				   .cmdline = cmdline};
	*vm = NULL;
	int r = lm_vm_new(&cfg, vm);
	unlink(cfg.kernel);
	return r;
}

static void test_multiboot(void **state)
{
	struct image im;
	make_image(&im, 0x100000, 0x3000);
	struct lm_vm *vm;
	written_bytes = 0;
	assert_int_equal(load(&im, sizeof(im), 5ull << 30, "workload=idle seed=7", &vm), 0);
	/* The loader's writes were reported: the image, the info structure,
	 * the memory map, the loader name and the command line. */
	assert_int_equal(written_bytes, sizeof(im) + 68 + 4 * 24 + 8 + 21);

	uint8_t *seg = lm_vm_gpa_to_host(vm, 0x100000, sizeof(im));
	assert_memory_equal(seg, &im, sizeof(im));

	struct kvm_regs regs;
	assert_int_equal(ioctl(lm_vm_vcpu_fd(vm, 0), KVM_GET_REGS, &regs), 0);
	assert_int_equal(regs.rax, 0x2BADB002u);
	assert_int_equal(regs.rip, im.eh.e_entry);
	struct kvm_sregs sregs;
	assert_int_equal(ioctl(lm_vm_vcpu_fd(vm, 0), KVM_GET_SREGS, &sregs), 0);
	assert_int_equal(sregs.cr0 & 0x80000001u, 1); /* PE on, PG off */
	assert_int_equal(sregs.cs.db, 1);
	assert_int_equal(sregs.cs.base, 0);
	assert_int_equal(sregs.cs.limit, 0xffffffffu);
	assert_int_equal(sregs.ds.type & 2, 2); /* writable */

	uint32_t *info = lm_vm_gpa_to_host(vm, regs.rbx, 88);
	assert_non_null(info);
	assert_true(info[0] & 1);  /* mem_lower/upper */
	assert_true(info[0] & 4);  /* cmdline */
	assert_true(info[0] & 64); /* mmap */
	assert_int_equal(info[1], 639);
	assert_int_equal(info[2], ((3ull << 30) - (1ull << 20)) >> 10);
	const char *cmd = lm_vm_gpa_to_host(vm, info[4], 21);
	assert_string_equal(cmd, "workload=idle seed=7");
	/* The memory map covers all 5 GiB of RAM as available. */
	uint32_t mlen = info[11], maddr = info[12];
	const uint8_t *m = lm_vm_gpa_to_host(vm, maddr, mlen);
	uint64_t avail = 0, top = 0;
	for (uint32_t off = 0; off < mlen;) {
		uint32_t size;
		uint64_t base, len;
		uint32_t type;
		memcpy(&size, m + off, 4);
		memcpy(&base, m + off + 4, 8);
		memcpy(&len, m + off + 12, 8);
		memcpy(&type, m + off + 20, 4);
		if (type == 1) {
			avail += len;
			assert_non_null(lm_vm_gpa_to_host(vm, base, 1));
			assert_non_null(lm_vm_gpa_to_host(vm, base + len - 1, 1));
			if (base + len > top)
				top = base + len;
		}
		off += size + 4;
	}
	assert_int_equal(top, 6ull << 30);
	assert_true(avail > (5ull << 30) - (1ull << 20));
	lm_vm_free(vm);
}

static void test_multiboot_bad(void **state)
{
	struct image im;
	struct lm_vm *vm;
	/* A segment past the end of RAM, or over the loader's data. */
	make_image(&im, 0x100000, 64u << 20);
	assert_int_equal(load(&im, sizeof(im), 16ull << 20, NULL, &vm), -E2BIG);
	make_image(&im, 0x8000, 0x1000);
	assert_int_equal(load(&im, sizeof(im), 16ull << 20, NULL, &vm), -E2BIG);
	/* filesz past the end of the file. */
	make_image(&im, 0x100000, 0x3000);
	im.ph[0].p_filesz = 0x2000;
	assert_int_equal(load(&im, sizeof(im), 16ull << 20, NULL, &vm), -ENOEXEC);
	/* Program headers past the end of the file. */
	make_image(&im, 0x100000, 0x3000);
	im.eh.e_phnum = 1000;
	assert_int_equal(load(&im, sizeof(im), 16ull << 20, NULL, &vm), -ENOEXEC);
	/* A bad checksum: no Multiboot header at all. */
	make_image(&im, 0x100000, 0x3000);
	im.mb[2]++;
	assert_int_equal(load(&im, sizeof(im), 16ull << 20, NULL, &vm), -ENOEXEC);
	/* A 64-bit ELF is not what Multiboot v1 loads. */
	make_image(&im, 0x100000, 0x3000);
	im.eh.e_ident[EI_CLASS] = ELFCLASS64;
	assert_int_equal(load(&im, sizeof(im), 16ull << 20, NULL, &vm), -ENOEXEC);
	/* Every truncation of a good image fails cleanly. */
	make_image(&im, 0x100000, 0x3000);
	for (size_t n = 0; n < sizeof(im); n += 3)
		assert_true(load(&im, n, 16ull << 20, NULL, &vm) < 0);
	/* A command line that does not fit the loader's area. */
	char *longcmd = malloc(40000);
	memset(longcmd, 'x', 39999);
	longcmd[39999] = 0;
	assert_int_equal(load(&im, sizeof(im), 16ull << 20, longcmd, &vm), -E2BIG);
	free(longcmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_config),	 cmocka_unit_test(test_slots),
	    cmocka_unit_test(test_big_sparse),	 cmocka_unit_test(test_dirty_ring),
	    cmocka_unit_test(test_pio_ranges),	 cmocka_unit_test(test_multiboot),
	    cmocka_unit_test(test_multiboot_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
