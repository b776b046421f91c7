/*
 * livemig guest image: declarations shared by its files.
 *
 * The image has two halves. The ring-0 half (entry.S, boot.c) runs once at
 * boot and for the few services ring 3 cannot do itself (halt until a
 * timer fires, exceptions); on the machines this project runs on ring 0 is
 * emulated about 100x slower than native, so it does as little as it can.
 * Everything else (parameters, clock calibration, workloads, the checker)
 * runs in ring 3 at native speed. The page tables map all memory with the
 * user bit set, so ring 3 reaches every byte of RAM and the local APIC;
 * the TSS I/O permission bitmap opens the ports listed in guest_abi.h.
 *
 * C code is built with -mgeneral-regs-only: the compiler never touches the
 * SSE/AVX registers, which lets the guest keep a known pattern in them for
 * the whole run (fpu.S) and check that a migration carried them over.
 */
#ifndef LIVEMIG_GUEST_H
#define LIVEMIG_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "livemig/guest_abi.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define PAGE_SIZE 4096ull
#define PAGE_WORDS (PAGE_SIZE / 8)
#define MAX_RANGES 32
#define CMDLINE_MAX 1024

/* Segment selectors (entry.S lays out the GDT). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x1b
#define SEL_UCODE 0x23
#define SEL_TSS 0x28

/* Interrupt vectors besides the exceptions. */
#define VEC_TIMER 0x40
#define VEC_SPURIOUS 0xff

/*
 * Ring-3 services. On this project's hosts neither "int n" nor syscall
 * from ring 3 reaches ring 0 properly (int n raises #UD, syscall stays at
 * CPL 3), but exceptions are delivered faithfully. So a service call is a
 * ud2 instruction with the number in rdi and the argument in rsi; the #UD
 * handler recognises it, does the work, puts the result in rax and
 * resumes after the ud2.
 */
#define SYS_SLEEP 1 /* halt until the TSC reaches the argument */
#define SYS_HALT 2  /* stop for good */
#define SYS_MAGIC 0x4c4d5359534c4cull /* in rax: "this ud2 is a service call" */

#define LAPIC_BASE 0xfee00000ull

/* A range of guest-physical memory, [start, end), page aligned. */
struct range {
	u64 start, end;
};

/*
 * What the ring-0 stub found and hands to ring 3. Written once before the
 * switch to ring 3, read-only afterwards.
 */
struct boot_info {
	char cmdline[CMDLINE_MAX];
	struct range ram[MAX_RANGES]; /* free RAM above heap_end, ascending */
	unsigned nram;
	u64 ram_top;  /* highest RAM address + 1 */
	u64 heap_end; /* image, loader data and extra page tables end here */
	bool gbpages, apic, avx, xsave;
	u32 xcr0;
	u64 pt_pool;  /* page-table pages set aside for RAM above 4 GiB */
	u64 pt_next;  /* the next unused one (map_on_fault) */
	u64 tsc_boot_main, tsc_user; /* TSC at boot_main and at the drop to ring 3 */
};
extern struct boot_info g_boot;

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* Keeps the compiler from moving memory accesses across it; x86 keeps
 * stores in program order, so this is all the ordering a snapshot of
 * guest memory needs. */
static inline void barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline u64 syscall1(u64 nr, u64 arg)
{
	u64 ret;
	__asm__ volatile("ud2" : "=a"(ret) : "a"(SYS_MAGIC), "D"(nr), "S"(arg) : "memory");
	return ret;
}

static inline u64 mix64(u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* lib.c: memory and string helpers, serial output, formatting. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
void serial_init(void);
void serial_write(const char *s, size_t n);
int gvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int gsnprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void gprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "256M", "1G", "4096" */
void fmt_size(char *buf, size_t size, u64 bytes);

/* boot.c (ring 0) */
void boot_main(void);
void user_main(void) __attribute__((noreturn));

/* fpu.S (ring 3): load/store xmm8-15 (or ymm8-15 when avx) from/to buf. */
void fpu_canary_load(const void *buf, int avx);
void fpu_canary_store(void *buf, int avx);

/* clock.c (ring 3) */
extern u64 tsc_hz;
void clock_init(bool use_hlt);
void sleep_until(u64 tsc);
static inline u64 ms_to_tsc(u64 ms)
{
	return tsc_hz / 1000 * ms;
}
bool clock_has_timer(void);
u64 clock_lapic_hz(void);

#endif
