/*
 * The VM state blob: a save/load round trip between two real KVM VMs
 * (never run, so the test is fast and needs no guest image), and rejection
 * of truncated and corrupted blobs before anything in the VM changes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>
#include <cmocka.h>

#include "livemig/vmm.h"
#include "vmm/state.h"

#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u

static struct lm_vm *new_vm(unsigned ncpus)
{
	struct lm_vm_config cfg = {.mem_size = 8ull << 20, .ncpus = ncpus, .console_fd = -1};
	struct lm_vm *vm = NULL;
	int r = lm_vm_new(&cfg, &vm);
	assert_int_equal(r, 0);
	return vm;
}

static uint64_t get_msr(int fd, uint32_t index)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = {.h.nmsrs = 1, .e.index = index};
	assert_int_equal(ioctl(fd, KVM_GET_MSRS, &m), 1);
	return m.e.data;
}

static void set_msr(int fd, uint32_t index, uint64_t v)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = {.h.nmsrs = 1, .e.index = index, .e.data = v};
	assert_int_equal(ioctl(fd, KVM_SET_MSRS, &m), 1);
}

/* Puts recognisable values in registers, an MSR and an XMM register. */
static void scribble(struct lm_vm *vm, unsigned cpu, uint64_t tag)
{
	int fd = lm_vm_vcpu_fd(vm, cpu);
	struct kvm_regs regs;
	assert_int_equal(ioctl(fd, KVM_GET_REGS, &regs), 0);
	regs.rax = tag;
	regs.r15 = ~tag;
	regs.rip = 0x100000 + cpu;
	assert_int_equal(ioctl(fd, KVM_SET_REGS, &regs), 0);
	set_msr(fd, MSR_STAR, 0x0023001000000000ull | cpu);
	set_msr(fd, MSR_LSTAR, 0xffffffff81000000ull + (tag & 0xfffff));
	struct kvm_xsave xs;
	assert_int_equal(ioctl(fd, KVM_GET_XSAVE, &xs), 0);
	/* Legacy area: XMM0 at byte 160; XSTATE_BV bit 1 (SSE) at 512. */
	memcpy((uint8_t *)xs.region + 160, &tag, 8);
	((uint8_t *)xs.region)[512] |= 2;
	assert_int_equal(ioctl(fd, KVM_SET_XSAVE, &xs), 0);
}

static void check_scribble(struct lm_vm *vm, unsigned cpu, uint64_t tag)
{
	int fd = lm_vm_vcpu_fd(vm, cpu);
	struct kvm_regs regs;
	assert_int_equal(ioctl(fd, KVM_GET_REGS, &regs), 0);
	assert_int_equal(regs.rax, tag);
	assert_int_equal(regs.r15, ~tag);
	assert_int_equal(regs.rip, 0x100000 + cpu);
	assert_int_equal(get_msr(fd, MSR_STAR), 0x0023001000000000ull | cpu);
	assert_int_equal(get_msr(fd, MSR_LSTAR), 0xffffffff81000000ull + (tag & 0xfffff));
	struct kvm_xsave xs;
	assert_int_equal(ioctl(fd, KVM_GET_XSAVE, &xs), 0);
	uint64_t x;
	memcpy(&x, (uint8_t *)xs.region + 160, 8);
	assert_int_equal(x, tag);
}

static void test_round_trip(void **state)
{
	for (unsigned ncpus = 1; ncpus <= 2; ncpus++) {
		struct lm_vm *src = new_vm(ncpus), *dst = new_vm(ncpus);
		for (unsigned c = 0; c < ncpus; c++)
			scribble(src, c, 0x1122334455667700ull + c);
		uint8_t *buf = NULL;
		size_t len = 0;
		assert_int_equal(lm_vm_state_save(src, &buf, &len), 0);
		assert_true(len > LM__ST_HDR_SIZE);
		assert_memory_equal(buf, "LMVS", 4);
		assert_int_equal(lm_vm_state_load(dst, buf, len), 0);
		for (unsigned c = 0; c < ncpus; c++)
			check_scribble(dst, c, 0x1122334455667700ull + c);

		/* Saving the restored VM gives the same registers again. */
		uint8_t *buf2 = NULL;
		size_t len2 = 0;
		assert_int_equal(lm_vm_state_save(dst, &buf2, &len2), 0);
		struct lm__state_view a, b;
		assert_int_equal(lm__state_parse(buf, len, 1u << 20, &a, NULL, 0), 0);
		assert_int_equal(lm__state_parse(buf2, len2, 1u << 20, &b, NULL, 0), 0);
		for (unsigned c = 0; c < ncpus; c++) {
			static const uint32_t same[] = {LM__ST_REGS, LM__ST_SREGS, LM__ST_XCRS,
							LM__ST_MP_STATE, LM__ST_CPUID};
			for (size_t k = 0; k < sizeof(same) / sizeof(same[0]); k++) {
				const struct lm__state_sec *x = lm__state_get(&a, same[k], c);
				const struct lm__state_sec *y = lm__state_get(&b, same[k], c);
				assert_non_null(x);
				assert_non_null(y);
				assert_int_equal(x->len, y->len);
				assert_memory_equal(x->data, y->data, x->len);
			}
		}
		lm__state_view_free(&a);
		lm__state_view_free(&b);
		free(buf);
		free(buf2);
		lm_vm_free(src);
		lm_vm_free(dst);
	}
}

struct fixture {
	struct lm_vm *vm;
	uint8_t *buf;
	size_t len;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->vm = new_vm(2);
	scribble(f->vm, 0, 42);
	scribble(f->vm, 1, 43);
	assert_int_equal(lm_vm_state_save(f->vm, &f->buf, &f->len), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	lm_vm_free(f->vm);
	free(f->buf);
	free(f);
	return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* Offsets of every section header in the blob. */
static size_t sections(const uint8_t *buf, size_t len, size_t *off, size_t max)
{
	size_t n = 0, o = LM__ST_HDR_SIZE;
	while (o < len && n < max) {
		off[n++] = o;
		o += LM__ST_SEC_HDR_SIZE + ((get64(buf + o + 8) + 7) & ~7ull);
	}
	return n;
}

/* A load that must fail must leave the VM as it was. */
static void expect_reject(struct fixture *f, const uint8_t *blob, size_t len, int err)
{
	int r = lm_vm_state_load(f->vm, blob, len);
	assert_int_equal(r, err);
	check_scribble(f->vm, 0, 42);
	check_scribble(f->vm, 1, 43);
}

static void test_truncated(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(lm_vm_state_load(f->vm, f->buf, f->len), 0);
	/* Every strict prefix is refused, including the empty one. */
	for (size_t n = 0; n < f->len; n++) {
		uint8_t *copy = malloc(n ? n : 1);
		memcpy(copy, f->buf, n);
		struct lm__state_view v;
		int r = lm__state_parse(copy, n, 1u << 20, &v, NULL, 0);
		assert_int_equal(r, -EINVAL);
		free(copy);
	}
	expect_reject(f, f->buf, f->len - 1, -EINVAL);
	expect_reject(f, f->buf, LM__ST_HDR_SIZE, -EINVAL);
	expect_reject(f, NULL, 0, -EINVAL);
}

static void test_corrupted(void **state)
{
	struct fixture *f = *state;
	uint8_t *b = malloc(f->len + 64);
	size_t off[256];
	size_t ns = sections(f->buf, f->len, off, 256);
	char why[160];
	struct lm__state_view v;

#define FRESH() memcpy(b, f->buf, f->len)
	FRESH();
	b[0] = 'X';
	expect_reject(f, b, f->len, -EINVAL);
	FRESH();
	b[4] = 2; /* version */
	expect_reject(f, b, f->len, -EPROTO);
	FRESH();
	b[6] = 1; /* flags */
	expect_reject(f, b, f->len, -EINVAL);
	FRESH();
	put32(b + 8, 1); /* vCPU count: per-vCPU sections of vCPU 1 now out of range */
	expect_reject(f, b, f->len, -EINVAL);
	FRESH();
	put32(b + 8, 0);
	expect_reject(f, b, f->len, -EINVAL);
	FRESH();
	put32(b + 12, (uint32_t)ns + 1); /* one section more than there is */
	expect_reject(f, b, f->len, -EINVAL);
	FRESH();
	put32(b + 12, (uint32_t)ns - 1); /* the last one is then trailing garbage */
	expect_reject(f, b, f->len, -EINVAL);
	FRESH();
	b[f->len] = 0;
	expect_reject(f, b, f->len + 1, -EINVAL); /* trailing byte */

	for (size_t s = 0; s < ns; s++) {
		uint8_t *h = b + off[s];
		FRESH();
		put32(h, 999); /* unknown mandatory tag */
		expect_reject(f, b, f->len, -EINVAL);
		FRESH();
		put32(h + 4, 7); /* vCPU index out of range (or on a per-VM section) */
		expect_reject(f, b, f->len, -EINVAL);
		FRESH();
		uint64_t big = ~0ull;
		memcpy(h + 8, &big, 8);
		expect_reject(f, b, f->len, -EINVAL);
		FRESH();
		uint64_t l = get64(h + 8) + 8; /* still inside the blob, wrong size */
		memcpy(h + 8, &l, 8);
		assert_true(lm__state_parse(b, f->len, 1u << 20, &v, why, sizeof(why)) < 0);
	}

	/* A section repeated in place of another of a different vCPU. */
	FRESH();
	for (size_t s = 0; s + 1 < ns; s++) {
		uint32_t t0, t1;
		memcpy(&t0, b + off[s], 4);
		memcpy(&t1, b + off[s + 1], 4);
		if (t0 == LM__ST_REGS && t1 == LM__ST_SREGS)
			put32(b + off[s] + 4, 1);
	}
	/* vCPU 0's regs now claim vCPU 1: vCPU 1 has two, vCPU 0 none. */
	assert_int_equal(lm__state_parse(b, f->len, 1u << 20, &v, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "regs"));
	expect_reject(f, b, f->len, -EINVAL);

	/* The wrong number of vCPUs for this VM. */
	struct lm_vm *one = new_vm(1);
	assert_int_equal(lm_vm_state_load(one, f->buf, f->len), -ENXIO);
	lm_vm_free(one);
	free(b);
#undef FRESH
}

/* An optional section (tag bit 31) from a newer writer is skipped. */
static void test_optional_section(void **state)
{
	struct fixture *f = *state;
	uint8_t *b = malloc(f->len + 32);
	memcpy(b, f->buf, f->len);
	uint8_t *h = b + f->len;
	memset(h, 0, 32);
	put32(h, LM__ST_OPTIONAL | 77);
	put32(h + 4, 0);
	uint64_t l = 13;
	memcpy(h + 8, &l, 8);
	memset(h + 16, 0xab, 13);
	uint32_t n;
	memcpy(&n, b + 12, 4);
	put32(b + 12, n + 1);
	assert_int_equal(lm_vm_state_load(f->vm, b, f->len + 32), 0);
	check_scribble(f->vm, 1, 43);
	/* Its padding (3 bytes after the 13) must still be zero. */
	h[16 + 13] = 1;
	expect_reject(f, b, f->len + 32, -EINVAL);
	free(b);
}

/* The view of an accepted blob is complete and lies inside the blob. */
static void check_view(const struct lm__state_view *v, const uint8_t *buf, size_t len)
{
	assert_int_equal(v->ncpus, 2);
	for (uint32_t tag = 1; tag < LM__ST_NTAGS; tag++) {
		if (tag > LM__ST_PV && tag < LM__ST_CPUID)
			continue; /* no such tag */
		for (uint32_t cpu = 0; cpu < (tag >= LM__ST_CPUID ? v->ncpus : 1); cpu++) {
			const struct lm__state_sec *sec = lm__state_get(v, tag, cpu);
			assert_non_null(sec);
			assert_true(sec->data >= buf + LM__ST_HDR_SIZE + LM__ST_SEC_HDR_SIZE);
			assert_true(sec->len <= len && sec->data + sec->len <= buf + len);
		}
	}
}

/*
 * Random damage to the structural bytes (the blob's header and the section
 * headers: tags, vCPU indices, lengths) never crashes the parser and is
 * caught or harmless. Caught: the parser names what was wrong, and loading
 * the same blob fails the same way before anything in the VM changes.
 * Harmless: the damage made another well-formed blob (a vCPU index moved
 * to a free slot, say); its view is complete, inside the buffer, and it
 * loads. Three bit flips never cancel out, so nearly all must be caught.
 */
static void test_random_damage(void **state)
{
	struct fixture *f = *state;
	size_t off[256];
	size_t ns = sections(f->buf, f->len, off, 256);
	uint8_t *b = malloc(f->len);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	const int runs = 5000;
	int caught = 0;
	struct lm__state_view v;
	assert_int_equal(lm__state_parse(f->buf, f->len, 1u << 20, &v, NULL, 0), 0);
	check_view(&v, f->buf, f->len);
	lm__state_view_free(&v);
	for (int i = 0; i < runs; i++) {
		memcpy(b, f->buf, f->len);
		for (int k = 0; k < 3; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			size_t s = x % (ns + 1);
			size_t base = s == ns ? 0 : off[s];
			b[base + (x >> 20) % 16] ^= (uint8_t)(1u << ((x >> 40) % 8));
		}
		char why[160] = "";
		int r = lm__state_parse(b, f->len, 1u << 20, &v, why, sizeof(why));
		if (r < 0) {
			caught++;
			assert_true(r == -EINVAL || r == -EPROTO);
			assert_true(why[0] != 0);
			expect_reject(f, b, f->len, r);
			continue;
		}
		check_view(&v, b, f->len);
		lm__state_view_free(&v);
		assert_int_equal(lm_vm_state_load(f->vm, b, f->len), 0);
		/* Back to the state the next rejections are checked against. */
		assert_int_equal(lm_vm_state_load(f->vm, f->buf, f->len), 0);
		check_scribble(f->vm, 0, 42);
		check_scribble(f->vm, 1, 43);
	}
	print_message("%d of %d damaged blobs caught\n", caught, runs);
	assert_true(caught >= runs - runs / 100);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_optional_section, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random_damage, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
