/*
 * The KVM dirty-log source against a real running guest: every page whose
 * contents changed between a clear and a later sync must be reported (the
 * lossless property), in manual-protect mode and in the classic mode, and
 * the VMM's own writes are reported through the software log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/track_kvm.h"
#include "livemig/vmm.h"
#include <linux/kvm.h>

#define MEM (256ull << 20)

struct fixture {
	struct lm_vm *vm;
	struct lm_kvm_log_slot slots[8];
	struct lm_mem_region regions[8];
	size_t n;
	struct lm_dirty_source *src;
};

static int enable_logging(void *opaque, uint32_t kvm_slot, bool on)
{
	struct lm_vm *vm = opaque;
	for (unsigned i = 0; i < lm_vm_slot_count(vm); i++) {
		const struct lm_vm_slot *s = lm_vm_slot(vm, i);
		if (s->kvm_slot == kvm_slot)
			return lm_vm_slot_set_flags(vm, i, on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
	}
	return -22;
}

static void vmm_wrote(void *opaque, uint64_t gpa, uint64_t len)
{
	struct fixture *f = opaque;
	if (f->src)
		lm_kvm_log_mark(f->src, gpa >> 12, ((gpa + len + 4095) >> 12) - (gpa >> 12));
}

static int progress_lines;

static void on_console(void *opaque, const char *line, size_t len)
{
	(void)opaque;
	if (len >= 9 && memcmp(line, "progress ", 9) == 0)
		__atomic_fetch_add(&progress_lines, 1, __ATOMIC_RELAXED);
	if (getenv("TEST_CONSOLE"))
		fprintf(stderr, "guest: %.*s\n", (int)len, line);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void start_vm(struct fixture *f, bool manual)
{
	const char *elf = getenv("GUEST_ELF");
	if (!elf || access(elf, R_OK) != 0 || access("/dev/kvm", R_OK | W_OK) != 0) {
		skip();
	}
	struct lm_vm_config cfg = {
	    .mem_size = MEM,
	    .ncpus = 1,
	    .kernel = elf,
	    .cmdline = "workload=hotset wss=32M rate=40M seed=3 verify=0",
	    .console_fd = -1,
	    .console_fn = on_console,
	    .dirty_mode = LM_VM_DIRTY_LOG, /* this test drives the log source itself */
	};
	assert_int_equal(lm_vm_new(&cfg, &f->vm), 0);
	f->n = lm_vm_slot_count(f->vm);
	assert_true(f->n > 0 && f->n <= 8);
	for (size_t i = 0; i < f->n; i++) {
		const struct lm_vm_slot *s = lm_vm_slot(f->vm, (unsigned)i);
		f->slots[i] = (struct lm_kvm_log_slot){s->kvm_slot, s->gpa >> 12, s->size >> 12, s->host};
		f->regions[i] = (struct lm_mem_region){s->gpa >> 12, s->size >> 12, s->host};
	}
	struct lm_kvm_log_config kc = {
	    .vm_fd = lm_vm_fd(f->vm),
	    .slots = f->slots,
	    .nslots = f->n,
	    .enable = enable_logging,
	    .opaque = f->vm,
	    .no_manual_protect = !manual,
	};
	assert_int_equal(lm_kvm_log_source_new(&kc, &f->src), 0);
	lm_vm_set_write_hook(f->vm, vmm_wrote, f);
	assert_int_equal(lm_vm_start(f->vm), 0);
	/* Wait until the workload runs (its first progress line). */
	int seen = __atomic_load_n(&progress_lines, __ATOMIC_RELAXED);
	for (int i = 0; i < 300 && __atomic_load_n(&progress_lines, __ATOMIC_RELAXED) == seen; i++)
		sleep_ms(100);
	assert_true(__atomic_load_n(&progress_lines, __ATOMIC_RELAXED) > seen);
}

static void stop_vm(struct fixture *f)
{
	lm_dirty_source_free(f->src);
	f->src = NULL;
	lm_vm_free(f->vm);
}

/* Harvest, clear, and return how many pages were reported. */
static uint64_t harvest_all(struct fixture *f, lm_sbitmap *dirty, bool clear)
{
	uint64_t total = 0;
	for (size_t i = 0; i < f->n; i++) {
		int64_t r = lm_dirty_source_sync(f->src, f->regions[i].first_page, f->regions[i].npages, dirty);
		assert_true(r >= 0);
		total += (uint64_t)r;
		if (clear) {
			/* chunk by chunk, as the engine does */
			for (uint64_t off = 0; off < f->regions[i].npages; off += 512) {
				uint64_t n = f->regions[i].npages - off < 512 ? f->regions[i].npages - off : 512;
				assert_int_equal(lm_dirty_source_clear(f->src, f->regions[i].first_page + off, n), 0);
			}
		}
	}
	return total;
}

static void lossless(bool manual)
{
	struct fixture f = {0};
	start_vm(&f, manual);
	uint64_t npages = 0;
	for (size_t i = 0; i < f.n; i++)
		npages = f.regions[i].first_page + f.regions[i].npages;
	lm_sbitmap dirty;
	assert_int_equal(lm_sbitmap_init(&dirty, npages, 0), 0);
	assert_int_equal(lm_dirty_source_start(f.src, f.regions, f.n), 0);
	assert_int_equal(lm_kvm_log_manual(f.src), manual);

	/* Round one as the engine does it: the pages that may hold data
	 * (present), then harvest and re-arm; the engine copies the union and
	 * takes every other page to be zero. */
	assert_true(f.src->flags & LM_DIRTY_KNOWS_PRESENT);
	lm_bitmap present;
	assert_int_equal(lm_bitmap_init(&present, npages), 0);
	for (size_t i = 0; i < f.n; i++)
		assert_int_equal(f.src->ops->present(f.src, f.regions[i].first_page, f.regions[i].npages, &present), 0);
	uint64_t npresent = lm_bitmap_count_range(&present, 0, npages);
	print_message("present: %llu of %llu pages\n", (unsigned long long)npresent, (unsigned long long)npages);
	assert_true(npresent > 100 && npresent < npages / 2);
	harvest_all(&f, &dirty, true);

	/* The "destination" after round one: copies of present or reported
	 * pages, zero elsewhere. From here on, any page whose contents differ
	 * from it must be reported by a later sync. */
	uint8_t *snap = calloc(1, MEM);
	assert_non_null(snap);
	for (size_t i = 0; i < f.n; i++)
		for (uint64_t p = 0; p < f.regions[i].npages; p++) {
			uint64_t g = f.regions[i].first_page + p;
			if (lm_bitmap_test(&present, g) || lm_sbitmap_test(&dirty, g))
				memcpy(snap + (g << 12), (uint8_t *)f.regions[i].host + (p << 12), 4096);
		}
	lm_bitmap_destroy(&present);
	lm_sbitmap_clear_range(&dirty, 0, npages);

	for (int round = 0; round < 3; round++) {
		sleep_ms(300);
		if (round == 2) {
			/* The VMM's own write, invisible to KVM. */
			uint32_t v = 0xdeadbeef;
			assert_int_equal(lm_vm_write_guest(f.vm, MEM - 4096 * 3, &v, sizeof(v)), 0);
		}
		assert_int_equal(lm_vm_pause(f.vm), 0);
		lm_sbitmap_clear_range(&dirty, 0, npages);
		uint64_t reported = harvest_all(&f, &dirty, true);
		uint64_t changed = 0, missed = 0;
		for (size_t i = 0; i < f.n; i++) {
			for (uint64_t p = 0; p < f.regions[i].npages; p++) {
				uint64_t g = f.regions[i].first_page + p;
				uint8_t *now = (uint8_t *)f.regions[i].host + (p << 12);
				if (memcmp(now, snap + (g << 12), 4096) != 0) {
					changed++;
					if (!lm_sbitmap_test(&dirty, g))
						missed++;
					memcpy(snap + (g << 12), now, 4096);
				}
			}
		}
		print_message("round %d: %llu pages changed, %llu reported, %llu missed\n", round,
			      (unsigned long long)changed, (unsigned long long)reported,
			      (unsigned long long)missed);
		assert_true(changed > 100); /* the guest really ran */
		assert_int_equal(missed, 0);
		if (round == 2)
			assert_true(lm_sbitmap_test(&dirty, (MEM >> 12) - 3));
		assert_int_equal(lm_vm_resume(f.vm), 0);
	}
	assert_int_equal(lm_dirty_source_stop(f.src), 0);
	/* Logging is off again on every slot. */
	for (size_t i = 0; i < f.n; i++)
		assert_int_equal(lm_vm_slot(f.vm, (unsigned)i)->flags & KVM_MEM_LOG_DIRTY_PAGES, 0);
	free(snap);
	lm_sbitmap_destroy(&dirty);
	stop_vm(&f);
}

static void test_lossless_manual(void **state)
{
	(void)state;
	lossless(true);
}

static void test_lossless_classic(void **state)
{
	(void)state;
	lossless(false);
}

static void test_bad_args(void **state)
{
	(void)state;
	struct fixture f = {0};
	start_vm(&f, true);
	/* start with a region table that does not match the slots */
	struct lm_mem_region bad = f.regions[0];
	bad.npages -= 64;
	assert_int_equal(lm_dirty_source_start(f.src, &bad, 1), -22);
	assert_int_equal(lm_dirty_source_start(f.src, f.regions, f.n), 0);
	assert_int_equal(lm_dirty_source_start(f.src, f.regions, f.n), -16);
	lm_sbitmap dirty;
	assert_int_equal(lm_sbitmap_init(&dirty, f.regions[f.n - 1].first_page + f.regions[f.n - 1].npages, 0), 0);
	/* unaligned sync, clear not a multiple of 64 in the middle of a slot */
	assert_true(lm_dirty_source_sync(f.src, f.regions[0].first_page + 1, 64, &dirty) < 0);
	assert_true(lm_dirty_source_sync(f.src, f.regions[0].first_page, 128, &dirty) >= 0);
	assert_int_equal(lm_dirty_source_clear(f.src, f.regions[0].first_page, 100), -22);
	assert_int_equal(lm_dirty_source_clear(f.src, f.regions[0].first_page, 128), 0);
	lm_sbitmap_destroy(&dirty);
	stop_vm(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lossless_manual),
	    cmocka_unit_test(test_lossless_classic),
	    cmocka_unit_test(test_bad_args),
	};
	return cmocka_run_group_tests_name("track_kvm", tests, NULL, NULL);
}
