/*
 * The guest's clock, all in ring 3: the TSC, calibrated against PIT
 * channel 2 (the speaker channel, polled through port 0x61, which KVM's
 * in-kernel PIT and QEMU both provide), and the local APIC timer,
 * calibrated against the TSC, to wake a halted CPU. Halting saves the
 * host a busy core while paced workloads wait; if the APIC timer does not
 * count, or sleep=spin was asked for, waits spin on the TSC instead.
 */
#include "guest.h"

#define PIT_HZ 1193182ull
#define PIT_CAL_TICKS 59659ull /* 50 ms */

u64 tsc_hz;
static u64 lapic_hz;
extern u64 g_lapic_per_tsc_q32;

static u64 calibrate_tsc(void)
{
	u8 gate = inb(0x61);
	outb(0x61, (u8)((gate & ~0x02) | 0x01)); /* gate on, speaker off */
	outb(0x43, 0xb0); /* channel 2, lobyte/hibyte, mode 0 (count down once) */
	outb(0x42, PIT_CAL_TICKS & 0xff);
	outb(0x42, PIT_CAL_TICKS >> 8);
	u64 t0 = rdtsc(), t1;
	/* OUT2 (bit 5) goes high at terminal count. Give up after ~1e10
	 * cycles, several seconds at any plausible frequency. */
	while (!(inb(0x61) & 0x20)) {
		t1 = rdtsc();
		if (t1 - t0 > 10000000000ull)
			return 0;
	}
	t1 = rdtsc();
	outb(0x61, gate);
	return (t1 - t0) * PIT_HZ / PIT_CAL_TICKS;
}

static void calibrate_lapic(void)
{
	volatile u32 *lapic = (volatile u32 *)(uintptr_t)LAPIC_BASE;
	lapic[0xf0 / 4] = 0x100 | VEC_SPURIOUS; /* software enable */
	lapic[0x3e0 / 4] = 0xb;                 /* divide by 1 */
	lapic[0x320 / 4] = 0x10000 | VEC_TIMER; /* one-shot, masked */
	lapic[0x380 / 4] = 0xffffffffu;
	/* Each APIC access leaves the guest and takes a while: time both
	 * reads of the current count by the middle of their TSC brackets. */
	u64 a0 = rdtsc();
	u32 c1 = lapic[0x390 / 4];
	u64 a1 = rdtsc();
	while (rdtsc() - a1 < tsc_hz / 50)
		cpu_relax();
	u64 b0 = rdtsc();
	u32 c2 = lapic[0x390 / 4];
	u64 b1 = rdtsc();
	lapic[0x380 / 4] = 0;
	u64 ticks = (u64)c1 - c2, dt = (b0 + b1) / 2 - (a0 + a1) / 2;
	if (c1 <= c2 || ticks < 1000 || !dt)
		return;
	lapic_hz = ticks * tsc_hz / dt;
	lapic[0x320 / 4] = VEC_TIMER; /* one-shot, unmasked */
	g_lapic_per_tsc_q32 = (ticks << 32) / dt;
}

void clock_init(bool use_hlt)
{
	tsc_hz = calibrate_tsc();
	if (!tsc_hz) {
		gprintf("livemig-guest: warning: PIT calibration failed, assuming a 2 GHz TSC\n");
		tsc_hz = 2000000000ull;
	}
	if (use_hlt && g_boot.apic)
		calibrate_lapic();
}

bool clock_has_timer(void)
{
	return g_lapic_per_tsc_q32 != 0;
}

u64 clock_lapic_hz(void)
{
	return lapic_hz;
}

/* Short waits spin: a trip through ring 0 and a halt costs tens of
 * microseconds here. */
void sleep_until(u64 deadline)
{
	u64 now = rdtsc();
	if (g_lapic_per_tsc_q32 && deadline > now && deadline - now > tsc_hz / 5000) {
		syscall1(SYS_SLEEP, deadline);
		return;
	}
	while (rdtsc() < deadline)
		cpu_relax();
}
