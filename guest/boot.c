/*
 * The ring-0 half of the guest: runs once between the long-mode switch
 * and the drop to ring 3, then only for sys_handler (sleep, halt) and
 * exceptions.
 *
 * Ring 0 is emulated on this project's machines, so the rule here is "as
 * few instructions as possible": the Multiboot data is copied (a few
 * hundred bytes), page tables for RAM above the 4 GiB the entry stub
 * mapped are only set aside (each GiB is mapped when ring 3 first touches
 * it, about 1.3 ms of ring 0 here), and only the IDT
 * vectors in use are filled in. Everything that loops over
 * memory happens later in ring 3.
 */
#include "guest.h"

struct mb_info {
	u32 flags;
	u32 mem_lower, mem_upper;
	u32 boot_device;
	u32 cmdline;
	u32 mods_count, mods_addr;
	u32 syms[4];
	u32 mmap_length, mmap_addr;
};

struct mb_mmap {
	u32 size;
	u64 addr, len;
	u32 type;
} __attribute__((packed));

struct mb_module {
	u32 start, end, string, reserved;
};

/* 64-bit TSS followed by the I/O permission bitmap: a 0 bit opens a port
 * to ring 3. The byte after the bitmap must be 0xff. */
struct tss {
	u32 reserved0;
	u64 rsp[3];
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
	u8 iomap[8192];
	u8 iomap_end;
} __attribute__((packed));

struct idt_entry {
	u16 off_lo, sel;
	u8 ist, type;
	u16 off_mid;
	u32 off_hi, zero;
};

struct exc_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, err, rip, cs, rflags, rsp, ss;
};

extern u32 boot_mb_magic, boot_mb_info;
extern u64 gdt[];
extern u64 boot_pml4[], boot_pdpt[];
extern char boot_stack_top[];
extern char __image_start[], _end[];
extern const u64 exc_stubs[32];
void enter_user(void (*rip)(void), void *rsp) __attribute__((noreturn));
void timer_entry(void);
void spurious_entry(void);
void exc_handler(struct exc_frame *f);
u64 sys_handler(u64 nr, u64 arg);

struct boot_info g_boot;

static struct tss tss __attribute__((aligned(4096))) = {
	.iomap_base = __builtin_offsetof(struct tss, iomap),
	.iomap = { [0 ... 8191] = 0xff },
	.iomap_end = 0xff,
};
static struct idt_entry idt[256];
static u8 user_stack[65536] __attribute__((aligned(16)));

/* Filled in by clock.c from ring 3 before the first SYS_SLEEP: local APIC
 * timer ticks per TSC tick, as a 32.32 fixed-point number. */
u64 g_lapic_per_tsc_q32;

static void panic(const char *msg) __attribute__((noreturn));

static void open_ports(u32 first, u32 count)
{
	for (u32 p = first; p < first + count; p++)
		tss.iomap[p / 8] &= (u8)~(1u << (p % 8));
}

static void set_gate(unsigned vec, u64 handler, unsigned dpl)
{
	struct idt_entry *e = &idt[vec];
	e->off_lo = (u16)handler;
	e->sel = SEL_KCODE;
	e->ist = 0;
	e->type = (u8)(0x8e | (dpl << 5)); /* present, 64-bit interrupt gate */
	e->off_mid = (u16)(handler >> 16);
	e->off_hi = (u32)(handler >> 32);
	e->zero = 0;
}

static u64 align_up(u64 v, u64 a)
{
	return (v + a - 1) & ~(a - 1);
}

static void reserve(u64 end)
{
	if (end > g_boot.heap_end)
		g_boot.heap_end = end;
}

/* Copies what ring 3 needs out of the loader's data (which may sit right
 * after the image, in memory the workload will reuse) and notes where the
 * loader's data ends. */
static void read_multiboot(struct range *map, unsigned *nmap)
{
	const struct mb_info *mb = (const struct mb_info *)(uintptr_t)boot_mb_info;
	*nmap = 0;
	reserve((u64)(uintptr_t)mb + sizeof(*mb));
	if (mb->flags & (1u << 2)) {
		const char *s = (const char *)(uintptr_t)mb->cmdline;
		size_t n = 0;
		while (s[n] && n < CMDLINE_MAX - 1) {
			g_boot.cmdline[n] = s[n];
			n++;
		}
		g_boot.cmdline[n] = 0;
		reserve((u64)(uintptr_t)s + n + 1);
	}
	if (mb->flags & (1u << 3)) {
		const struct mb_module *m = (const struct mb_module *)(uintptr_t)mb->mods_addr;
		reserve((u64)(uintptr_t)(m + mb->mods_count));
		for (u32 i = 0; i < mb->mods_count; i++)
			reserve(m[i].end);
	}
	if (mb->flags & (1u << 6)) {
		u64 p = mb->mmap_addr, end = p + mb->mmap_length;
		reserve(end);
		while (p < end && *nmap < MAX_RANGES) {
			const struct mb_mmap *e = (const struct mb_mmap *)(uintptr_t)p;
			if (e->type == 1 && e->len) {
				map[*nmap].start = e->addr;
				map[*nmap].end = e->addr + e->len;
				(*nmap)++;
			}
			p += e->size + 4;
		}
	} else if (mb->flags & 1u) {
		map[0].start = 0x100000;
		map[0].end = 0x100000 + (u64)mb->mem_upper * 1024;
		*nmap = 1;
	}
}

/*
 * RAM above the 4 GiB the entry stub mapped needs more page tables: with
 * 2 MiB pages (this host's KVM offers no 1 GiB pages), one page of tables
 * per GiB, 4 MiB per TiB. Written at boot they would be memory the guest
 * touched in every GiB, sent by every migration whatever the workload. So
 * ring 0 only sets aside the pages, right after the image and the loader's
 * data, and maps a GiB when ring 3 first touches it (map_on_fault): a
 * guest that uses a few GiB of a 1 TiB RAM writes a few table pages (each
 * costs ~1.3 ms of emulated ring 0 here, 512 entries). The
 * table is filled in before it is linked, so the stores go to ordinary
 * memory, and linking it into a non-present entry needs no TLB flush.
 */
static void reserve_high_tables(const struct range *map, unsigned nmap)
{
	const u64 gib = 1ull << 30;
	u64 top = align_up(g_boot.ram_top, gib);
	if (top <= 4 * gib)
		return;
	u64 pages = (top - 1) >> 39; /* PDPTs beyond boot_pdpt */
	if (!g_boot.gbpages)
		pages += (top - 4 * gib) / gib;
	u64 p = align_up(g_boot.heap_end, PAGE_SIZE);
	bool ok = false;
	for (unsigned i = 0; i < nmap; i++)
		if (p >= map[i].start && p + pages * PAGE_SIZE <= map[i].end)
			ok = true;
	if (!ok)
		panic("no RAM for page tables");
	g_boot.pt_pool = g_boot.pt_next = p;
	g_boot.heap_end = p + pages * PAGE_SIZE;
}

/* The next page of the pool (it holds exactly the tables of all of RAM). */
static u64 *table_page(void)
{
	u64 *t = (u64 *)(uintptr_t)g_boot.pt_next;
	g_boot.pt_next += PAGE_SIZE;
	if (g_boot.pt_next > g_boot.heap_end)
		panic("page-table pool exhausted");
	return t;
}

/* Ring 0: a fault from ring 3 on a not-present address of RAM above 4 GiB
 * maps its GiB (a 1 GiB page if the CPU has them, else a table of 2 MiB
 * pages) and returns true: the access is retried. */
static bool map_on_fault(u64 addr, u64 err)
{
	const u64 gib = 1ull << 30;
	if ((err & 1) || addr < 4 * gib || addr >= align_up(g_boot.ram_top, gib) || !g_boot.pt_pool)
		return false;
	u64 a = addr & ~(gib - 1);
	unsigned l4 = (unsigned)(a >> 39), l3 = (unsigned)((a >> 30) & 511);
	if (!(boot_pml4[l4] & 1)) {
		u64 *t = table_page();
		for (unsigned i = 0; i < 512; i++)
			t[i] = 0;
		barrier();
		boot_pml4[l4] = (u64)(uintptr_t)t | 7;
	}
	u64 *pdpt = (u64 *)(uintptr_t)(boot_pml4[l4] & ~0xfffull);
	if (pdpt[l3] & 1)
		return false; /* mapped, yet it faulted: a real fault */
	if (g_boot.gbpages) {
		pdpt[l3] = a | 0x87;
	} else {
		u64 *pd = table_page();
		for (unsigned i = 0; i < 512; i++)
			pd[i] = (a + ((u64)i << 21)) | 0x87;
		barrier();
		pdpt[l3] = (u64)(uintptr_t)pd | 7;
	}
	return true;
}

static void setup_cpu_features(void)
{
	u32 a, b, c, d;
	cpuid(0x80000001, 0, &a, &b, &c, &d);
	g_boot.gbpages = d & (1u << 26);
	cpuid(1, 0, &a, &b, &c, &d);
	g_boot.apic = d & (1u << 9);
	g_boot.xsave = c & (1u << 26);
	bool avx = c & (1u << 28);

	/* x87 and SSE for ring 3: no emulation, native FPU errors, FXSAVE
	 * and SSE exceptions enabled by the OS. */
	u64 cr0, cr4;
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	cr0 = (cr0 & ~(1ull << 2)) | (1ull << 1) | (1ull << 5);
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0));
	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	cr4 |= (1ull << 9) | (1ull << 10);
	if (g_boot.xsave)
		cr4 |= 1ull << 18;
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
	__asm__ volatile("fninit");
	if (g_boot.xsave) {
		cpuid(0xd, 0, &a, &b, &c, &d);
		u32 xcr0 = 3;
		if (avx && (a & 4))
			xcr0 |= 4;
		__asm__ volatile("xsetbv" : : "c"(0), "a"(xcr0), "d"(0));
		g_boot.xcr0 = xcr0;
		g_boot.avx = xcr0 & 4;
	}
}

static void setup_tables(void)
{
	u64 base = (u64)(uintptr_t)&tss;
	u64 limit = sizeof(tss) - 1;
	gdt[5] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
		 (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	gdt[6] = base >> 32;
	tss.rsp[0] = (u64)(uintptr_t)boot_stack_top;
	__asm__ volatile("ltr %w0" : : "r"(SEL_TSS));

	open_ports(0x3f8, 8);
	open_ports(0x40, 4);
	open_ports(0x61, 1);
	open_ports(LM_PV_BASE, LM_PV_SIZE);
	open_ports(LM_QEMU_DEBUG_EXIT, 4);

	for (unsigned v = 0; v < 32; v++)
		set_gate(v, exc_stubs[v], 0);
	set_gate(VEC_TIMER, (u64)(uintptr_t)timer_entry, 0);
	set_gate(VEC_SPURIOUS, (u64)(uintptr_t)spurious_entry, 0);
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (u64)(uintptr_t)idt };
	__asm__ volatile("lidt %0" : : "m"(idtr));

	/* A BIOS (SeaBIOS under QEMU) may have left the PICs delivering the
	 * PIT's tick on vectors that are exceptions here: mask them all. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
}

void boot_main(void)
{
	struct range map[MAX_RANGES];
	unsigned nmap;

	g_boot.tsc_boot_main = rdtsc();
	serial_init();
	if (boot_mb_magic != 0x2BADB002u)
		panic("not started by a Multiboot loader");
	g_boot.heap_end = (u64)(uintptr_t)_end;
	read_multiboot(map, &nmap);
	if (!nmap)
		panic("no memory map");
	for (unsigned i = 0; i < nmap; i++)
		if (map[i].end > g_boot.ram_top)
			g_boot.ram_top = map[i].end;

	setup_cpu_features();
	reserve_high_tables(map, nmap);
	setup_tables();

	/* Free RAM for the workload: every RAM range, page aligned, above
	 * 1 MiB and above everything reserved so far. */
	u64 low = align_up(g_boot.heap_end, PAGE_SIZE);
	for (unsigned i = 0; i < nmap && g_boot.nram < MAX_RANGES; i++) {
		u64 s = align_up(map[i].start, PAGE_SIZE), e = map[i].end & ~(PAGE_SIZE - 1);
		if (s < low)
			s = low;
		if (s >= e)
			continue;
		g_boot.ram[g_boot.nram].start = s;
		g_boot.ram[g_boot.nram].end = e;
		g_boot.nram++;
	}
	/* Keep them ascending so that page indices follow addresses. */
	for (unsigned i = 1; i < g_boot.nram; i++)
		for (unsigned j = i; j > 0 && g_boot.ram[j].start < g_boot.ram[j - 1].start; j--) {
			struct range t = g_boot.ram[j];
			g_boot.ram[j] = g_boot.ram[j - 1];
			g_boot.ram[j - 1] = t;
		}

	g_boot.tsc_user = rdtsc();
	enter_user(user_main, user_stack + sizeof(user_stack));
}

static void power_off(u32 status)
{
	if (inl(LM_PV_ID) == LM_PV_MAGIC)
		outl(LM_PV_POWEROFF, status);
	outb(LM_QEMU_DEBUG_EXIT, (u8)status);
}

static void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void panic(const char *msg)
{
	gprintf("livemig-guest: panic: %s\n", msg);
	power_off(0x7f);
	halt_forever();
	__builtin_unreachable();
}

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "?", "#TS", "#NP", "#SS",
	"#GP", "#PF", "?", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

void exc_handler(struct exc_frame *f)
{
	if (f->vector == 6 && (f->cs & 3) == 3 && f->rax == SYS_MAGIC &&
	    *(const u16 *)(uintptr_t)f->rip == 0x0b0f) {
		f->rax = sys_handler(f->rdi, f->rsi);
		f->rip += 2;
		return;
	}
	u64 cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	if (f->vector == 14 && (f->cs & 3) == 3 && map_on_fault(cr2, f->err))
		return;
	const char *name = f->vector < 32 && exc_names[f->vector] ? exc_names[f->vector] : "?";
	gprintf("livemig-guest: exception %llu %s err=%#llx rip=%#llx cs=%#llx rsp=%#llx "
		"rflags=%#llx cr2=%#llx\n",
		(unsigned long long)f->vector, name, (unsigned long long)f->err,
		(unsigned long long)f->rip, (unsigned long long)f->cs, (unsigned long long)f->rsp,
		(unsigned long long)f->rflags, (unsigned long long)cr2);
	power_off(0x7f);
	halt_forever();
	__builtin_unreachable();
}

/*
 * Sleep: arm the local APIC timer (one-shot, counts computed from the
 * calibration ring 3 did) and halt until the TSC deadline has passed.
 * "sti; hlt" cannot miss the interrupt: sti takes effect only after hlt.
 */
static void sleep_until_tsc(u64 deadline)
{
	volatile u32 *lapic = (volatile u32 *)(uintptr_t)LAPIC_BASE;
	u64 now;
	while ((now = rdtsc()) < deadline) {
		u64 d = deadline - now;
		/* Short enough that d * ratio cannot overflow. */
		if (d > (1ull << 28))
			d = 1ull << 28;
		u64 count = (d * g_lapic_per_tsc_q32) >> 32;
		if (count == 0)
			count = 1;
		if (count > 0xffffffffull)
			count = 0xffffffffull;
		lapic[0x380 / 4] = (u32)count;
		__asm__ volatile("sti; hlt; cli" ::: "memory");
	}
	lapic[0x380 / 4] = 0;
}

u64 sys_handler(u64 nr, u64 arg)
{
	switch (nr) {
	case SYS_SLEEP:
		if (g_lapic_per_tsc_q32)
			sleep_until_tsc(arg);
		return 0;
	case SYS_HALT:
		halt_forever();
		return 0;
	default:
		return (u64)-1;
	}
}
