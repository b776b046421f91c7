/*
 * The balloon device without a guest: page frame number validation, and
 * requests made the way a vCPU makes them (the device's port handler
 * called with request pages written into a real, never-run KVM VM's RAM):
 * valid pages are marked in the skip map, freed (they read zero) and
 * reported to the write hook; bad pages and bad requests are refused and
 * counted and change nothing; the state section round-trips and a corrupt
 * one is rejected before anything changes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "livemig/balloon.h"
#include "livemig/guest_abi.h"
#include "vmm/state.h"
#include "vmm/vmm_int.h"

#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define REQ_GPA 0x200000ull

static void test_pfn_valid(void **state)
{
	/* 64 MiB: RAM [0, 64M); nothing below 1 MiB or the image end. */
	uint64_t m = 64 * MIB;
	assert_false(lm_balloon_pfn_valid(0, m, 0));
	assert_false(lm_balloon_pfn_valid(255, m, 0));
	assert_true(lm_balloon_pfn_valid(256, m, 0));
	assert_false(lm_balloon_pfn_valid(511, m, 2 * MIB));
	assert_true(lm_balloon_pfn_valid(512, m, 2 * MIB));
	assert_true(lm_balloon_pfn_valid(m / 4096 - 1, m, 0));
	assert_false(lm_balloon_pfn_valid(m / 4096, m, 0));
	assert_false(lm_balloon_pfn_valid(UINT64_MAX, m, 0));
	assert_false(lm_balloon_pfn_valid(UINT64_MAX >> 12, m, 0));
	/* 5 GiB: 3 GiB below the hole, 2 GiB from 4 GiB. */
	m = 5 * GIB;
	assert_true(lm_balloon_pfn_valid(3 * GIB / 4096 - 1, m, 0));
	assert_false(lm_balloon_pfn_valid(3 * GIB / 4096, m, 0));
	assert_false(lm_balloon_pfn_valid(4 * GIB / 4096 - 1, m, 0));
	assert_true(lm_balloon_pfn_valid(4 * GIB / 4096, m, 0));
	assert_true(lm_balloon_pfn_valid(6 * GIB / 4096 - 1, m, 0));
	assert_false(lm_balloon_pfn_valid(6 * GIB / 4096, m, 0));
}

static struct lm_vm *new_vm(uint64_t mem)
{
	struct lm_vm_config cfg = {.mem_size = mem, .ncpus = 1, .console_fd = -1};
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&cfg, &vm), 0);
	return vm;
}

static struct lm__pio_range *balloon_range(struct lm_vm *vm)
{
	for (unsigned i = 0; i < vm->npio; i++)
		if (vm->pio[i].base == LM_PV_BALLOON_BASE)
			return &vm->pio[i];
	fail();
	return NULL;
}

static uint32_t port_in(struct lm_vm *vm, uint16_t port, unsigned size)
{
	struct lm__pio_range *r = balloon_range(vm);
	uint32_t v = 0x12345678;
	assert_int_equal(r->fn(r->opaque, port, size, false, &v), 0);
	return v;
}

static void port_out(struct lm_vm *vm, uint16_t port, uint32_t v)
{
	struct lm__pio_range *r = balloon_range(vm);
	assert_int_equal(r->fn(r->opaque, port, 4, true, &v), 0);
}

/* Writes a request page and makes the request; returns the refused count. */
static uint32_t request(struct lm_vm *vm, uint32_t op, const uint64_t *pfns, uint32_t count,
			uint32_t zero)
{
	uint64_t page[512] = {0};
	page[0] = count | (uint64_t)zero << 32;
	for (uint32_t i = 0; i < count && i < 511; i++)
		page[1 + i] = pfns[i];
	assert_int_equal(lm_vm_write_guest(vm, REQ_GPA, page, sizeof(page)), 0);
	port_out(vm, LM_PV_BALLOON_REQUEST, (uint32_t)REQ_GPA | op);
	return port_in(vm, LM_PV_BALLOON_REQUEST, 4);
}

struct hook {
	uint64_t pages;
	uint64_t lo, hi;
};

static void on_write(void *opaque, uint64_t gpa, uint64_t len)
{
	struct hook *h = opaque;
	h->pages += len / 4096;
	if (!h->lo || gpa < h->lo)
		h->lo = gpa;
	if (gpa + len > h->hi)
		h->hi = gpa + len;
}

static void fill(struct lm_vm *vm, uint64_t pfn, uint64_t n)
{
	uint8_t *p = lm_vm_gpa_to_host(vm, pfn * 4096, n * 4096);
	assert_non_null(p);
	memset(p, 0xa5, n * 4096);
}

static bool zero(struct lm_vm *vm, uint64_t pfn, uint64_t n)
{
	const uint8_t *p = lm_vm_gpa_to_host(vm, pfn * 4096, n * 4096);
	for (uint64_t i = 0; i < n * 4096; i++)
		if (p[i])
			return false;
	return true;
}

static void test_requests(void **state)
{
	struct lm_vm *vm = new_vm(64 * MIB);
	lm_skip_map *sm = lm_vm_skip_map(vm);
	assert_non_null(sm);
	assert_int_equal(lm_skip_map_npages(sm), 64 * MIB / 4096);
	struct hook h = {0};
	lm_vm_set_write_hook(vm, on_write, &h);

	uint32_t f = port_in(vm, LM_PV_BALLOON_FEATURES, 4);
	assert_int_equal(f >> 16, LM_PV_BALLOON_MAGIC);
	assert_true(f & LM_PV_BALLOON_F_MUST_TELL_HOST);
	/* Registers are 32-bit: narrow or unaligned accesses read all ones. */
	assert_int_equal(port_in(vm, LM_PV_BALLOON_FEATURES, 1), 0xffffffffu);
	assert_int_equal(port_in(vm, LM_PV_BALLOON_FEATURES + 2, 4), 0xffffffffu);
	bool mth = true;
	lm_vm_balloon_info(vm, NULL, NULL, &mth);
	assert_false(mth); /* not acknowledged yet */
	port_out(vm, LM_PV_BALLOON_FEATURES, 0xffff);
	lm_vm_balloon_info(vm, NULL, NULL, &mth);
	assert_true(mth);

	assert_int_equal(lm_vm_balloon_set_target(vm, 1000), 0);
	assert_int_equal(port_in(vm, LM_PV_BALLOON_TARGET, 4), 1000);
	assert_int_equal(lm_vm_balloon_set_target(vm, 64 * MIB / 4096 + 1), -EINVAL);

	/* A descending run, as the guest driver makes them, plus bad frames:
	 * below 1 MiB, past RAM, far past RAM, and a duplicate. */
	fill(vm, 0x1000, 64);
	uint64_t pfns[80];
	uint32_t n = 0;
	for (uint64_t p = 0x1000 + 63; p >= 0x1000 && p <= 0x1000 + 63; p--)
		pfns[n++] = p;
	pfns[n++] = 0x10;
	pfns[n++] = 64 * MIB / 4096;
	pfns[n++] = UINT64_MAX;
	pfns[n++] = 0x1000 + 5;
	assert_int_equal(request(vm, LM_PV_BALLOON_OP_INFLATE, pfns, n, 0), 3);
	assert_int_equal(lm_skip_map_count(sm), 64);
	assert_true(lm_skip_map_test(sm, 0x1000));
	assert_true(lm_skip_map_test(sm, 0x1000 + 63));
	assert_false(lm_skip_map_test(sm, 0x1000 + 64));
	assert_true(zero(vm, 0x1000, 64));
	/* The write hook saw the 64 freed pages (and the test's own request
	 * page write, which goes through lm_vm_write_guest). */
	assert_int_equal(h.pages, 64 + 1);
	struct lm_balloon_stats st;
	lm_vm_balloon_stats(vm, &st);
	assert_int_equal(st.inflated, 64);
	assert_int_equal(st.refused, 3);
	assert_int_equal(st.requests, 1);

	/* Inflating them again changes nothing. */
	assert_int_equal(request(vm, LM_PV_BALLOON_OP_INFLATE, pfns, 64, 0), 0);
	lm_vm_balloon_stats(vm, &st);
	assert_int_equal(st.inflated, 64);
	assert_int_equal(lm_skip_map_count(sm), 64);

	/* Features are renegotiated only with an empty balloon. */
	port_out(vm, LM_PV_BALLOON_FEATURES, 0);
	lm_vm_balloon_info(vm, NULL, NULL, &mth);
	assert_true(mth);

	/* Bad requests: too many frames, non-zero reserved word, a request
	 * page outside RAM, an unknown operation. Each is one refusal. */
	lm_vm_balloon_stats(vm, &st);
	uint64_t refused = st.refused;
	static const uint64_t many[512];
	assert_int_equal(request(vm, LM_PV_BALLOON_OP_INFLATE, many, 512, 0), 1);
	assert_int_equal(request(vm, LM_PV_BALLOON_OP_INFLATE, pfns, 1, 7), 1);
	port_out(vm, LM_PV_BALLOON_REQUEST, 0xfff00000u | LM_PV_BALLOON_OP_INFLATE);
	assert_int_equal(port_in(vm, LM_PV_BALLOON_REQUEST, 4), 1);
	port_out(vm, LM_PV_BALLOON_REQUEST, (uint32_t)REQ_GPA | 2);
	assert_int_equal(port_in(vm, LM_PV_BALLOON_REQUEST, 4), 1);
	lm_vm_balloon_stats(vm, &st);
	assert_int_equal(st.refused, refused + 4);
	assert_int_equal(lm_skip_map_count(sm), 64);

	/* Deflate half (ascending this time), with one frame that is not in
	 * the balloon: it is fine, not counted. */
	uint64_t back[33];
	for (uint32_t i = 0; i < 32; i++)
		back[i] = 0x1000 + i;
	back[32] = 0x2000;
	assert_int_equal(request(vm, LM_PV_BALLOON_OP_DEFLATE, back, 33, 0), 0);
	assert_int_equal(lm_skip_map_count(sm), 32);
	assert_false(lm_skip_map_test(sm, 0x1000));
	assert_true(lm_skip_map_test(sm, 0x1000 + 32));
	lm_vm_balloon_stats(vm, &st);
	assert_int_equal(st.deflated, 32);

	/* The guest's report is kept as is. */
	port_out(vm, LM_PV_BALLOON_ACTUAL, 32);
	lm_vm_balloon_stats(vm, &st);
	assert_int_equal(st.guest_actual, 32);
	uint64_t target = 0, actual = 0;
	lm_vm_balloon_info(vm, &target, &actual, NULL);
	assert_int_equal(target, 1000);
	assert_int_equal(actual, 32);
	lm_vm_free(vm);
}

/* A 5 GiB VM (sparse, never run): frames in the hole are refused, frames
 * above 4 GiB are RAM and their host pages are found across the hole. */
static void test_above_hole(void **state)
{
	struct lm_vm *vm = new_vm(5 * GIB);
	lm_skip_map *sm = lm_vm_skip_map(vm);
	assert_int_equal(lm_skip_map_npages(sm), 6 * GIB / 4096);
	uint64_t hi = 5 * GIB / 4096;
	fill(vm, hi, 4);
	uint64_t pfns[] = {3 * GIB / 4096, 4 * GIB / 4096 - 1, hi, hi + 1, hi + 2, hi + 3,
			   6 * GIB / 4096};
	assert_int_equal(request(vm, LM_PV_BALLOON_OP_INFLATE, pfns, 7, 0), 3);
	assert_int_equal(lm_skip_map_count(sm), 4);
	assert_true(zero(vm, hi, 4));
	lm_vm_free(vm);
}

/* The state section carries target, features and the image end; a bad one
 * fails the whole load before anything changes. */
static void test_state(void **state)
{
	struct lm_vm *a = new_vm(16 * MIB), *b = new_vm(16 * MIB);
	port_out(a, LM_PV_BALLOON_FEATURES, LM_PV_BALLOON_F_MUST_TELL_HOST);
	assert_int_equal(lm_vm_balloon_set_target(a, 77), 0);
	port_out(a, LM_PV_BALLOON_ACTUAL, 5);
	uint8_t *blob = NULL;
	size_t len = 0;
	assert_int_equal(lm_vm_state_save(a, &blob, &len), 0);

	/* Find the section: tag, vCPU, length, data. */
	size_t off = LM__ST_HDR_SIZE, at = 0;
	while (off + LM__ST_SEC_HDR_SIZE <= len) {
		uint32_t tag;
		uint64_t slen;
		memcpy(&tag, blob + off, 4);
		memcpy(&slen, blob + off + 8, 8);
		if (tag == LM__ST_BALLOON)
			at = off + LM__ST_SEC_HDR_SIZE;
		off += LM__ST_SEC_HDR_SIZE + ((slen + 7) & ~7ull);
	}
	assert_true(at > 0);

	/* Unknown feature bit: rejected, b unchanged. */
	blob[at + 8] = 0x3;
	assert_int_equal(lm_vm_state_load(b, blob, len), -EINVAL);
	uint64_t target = 9;
	bool mth = true;
	lm_vm_balloon_info(b, &target, NULL, &mth);
	assert_int_equal(target, 0);
	assert_false(mth);
	/* A target beyond RAM: rejected. */
	blob[at + 8] = 0x1;
	uint32_t big = 16 * MIB / 4096 + 1, t77 = 77;
	memcpy(blob + at, &big, 4);
	assert_int_equal(lm_vm_state_load(b, blob, len), -EINVAL);
	memcpy(blob + at, &t77, 4);

	assert_int_equal(lm_vm_state_load(b, blob, len), 0);
	lm_vm_balloon_info(b, &target, NULL, &mth);
	assert_int_equal(target, 77);
	assert_true(mth);
	struct lm_balloon_stats st;
	lm_vm_balloon_stats(b, &st);
	assert_int_equal(st.guest_actual, 5);
	assert_true(st.acked);
	free(blob);
	lm_vm_free(a);
	lm_vm_free(b);
}

/* A skip map handed to lm_vm_new must fit the VM's page space; on failure
 * it stays the caller's. */
static void test_adopt_map(void **state)
{
	lm_skip_map *m = NULL;
	assert_int_equal(lm_skip_map_new(100, &m), 0);
	struct lm_vm_config cfg = {.mem_size = 8 * MIB, .console_fd = -1, .skip_map = m};
	struct lm_vm *vm = NULL;
	assert_int_equal(lm_vm_new(&cfg, &vm), -EINVAL);
	lm_skip_map_free(m);
	assert_int_equal(lm_skip_map_new(8 * MIB / 4096, &m), 0);
	assert_int_equal(lm_skip_map_set(m, 700, 10), 0);
	cfg.skip_map = m;
	assert_int_equal(lm_vm_new(&cfg, &vm), 0);
	assert_ptr_equal(lm_vm_skip_map(vm), m);
	uint64_t actual = 0;
	lm_vm_balloon_info(vm, NULL, &actual, NULL);
	assert_int_equal(actual, 10);
	lm_vm_free(vm); /* frees m too */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pfn_valid), cmocka_unit_test(test_requests),
	    cmocka_unit_test(test_above_hole), cmocka_unit_test(test_state),
	    cmocka_unit_test(test_adopt_map),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
