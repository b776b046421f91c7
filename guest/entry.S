/*
 * Multiboot v1 entry, the switch to long mode, the GDT and the interrupt
 * entry stubs of the livemig guest image.
 *
 * The loader enters _start in 32-bit protected mode with paging off,
 * EAX = 0x2BADB002 and EBX = the Multiboot information. Everything here
 * runs in ring 0, which is emulated (slow) on this project's machines, so
 * the stub does the minimum: clear .bss, map the first 4 GiB (four 1 GiB
 * pages when the CPU has them, else 2048 2 MiB pages), enable long mode
 * and call boot_main in C.
 */

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-aligned modules, memory information */

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .text.boot, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	movl %eax, boot_mb_magic
	movl %ebx, boot_mb_info
	rdtsc
	movl %eax, boot_tsc_entry
	movl %edx, boot_tsc_entry + 4

	/* Loaders clear .bss already; doing it again costs little. */
	movl $__bss_start, %edi
	movl $_end, %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl

	movl $boot_stack_top, %esp

	movl $0x80000000, %eax
	cpuid
	cmpl $0x80000001, %eax
	jb no_long_mode
	movl $0x80000001, %eax
	cpuid
	btl $29, %edx
	jnc no_long_mode

	/* PML4[0] -> boot_pdpt. */
	movl $boot_pdpt, %eax
	orl $7, %eax
	movl %eax, boot_pml4

	btl $26, %edx /* 1 GiB pages */
	jnc 2f
	movl $boot_pdpt, %edi
	movl $0x87, %eax /* present, writable, user, page size */
	movl $4, %ecx
1:	movl %eax, (%edi)
	addl $0x40000000, %eax
	addl $8, %edi
	loop 1b
	jmp 5f

2:	movl $boot_pdpt, %edi
	movl $boot_pd, %eax
	orl $7, %eax
	movl $4, %ecx
3:	movl %eax, (%edi)
	addl $4096, %eax
	addl $8, %edi
	loop 3b
	movl $boot_pd, %edi
	movl $0x87, %eax
	movl $2048, %ecx
4:	movl %eax, (%edi)
	addl $0x200000, %eax
	addl $8, %edi
	loop 4b

5:	movl %cr4, %eax
	orl $0x20, %eax /* PAE */
	movl %eax, %cr4
	movl $boot_pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx /* EFER */
	rdmsr
	orl $0x100, %eax /* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax /* PG, PE */
	movl %eax, %cr0
	lgdt gdt_ptr
	ljmp $0x08, $start64

no_long_mode:
	movl $msg_no_long_mode, %esi
	movw $0x3f8, %dx
6:	lodsb
	testb %al, %al
	jz 7f
	outb %al, %dx
	jmp 6b
7:	hlt
	jmp 7b

	.code64
start64:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorw %ax, %ax
	movw %ax, %fs
	movw %ax, %gs
	movq $boot_stack_top, %rsp
	call boot_main
8:	hlt
	jmp 8b

	.text
/* enter_user(rip, rsp): drop to ring 3 with interrupts off. */
	.globl enter_user
enter_user:
	pushq $0x1b
	pushq %rsi
	pushq $0x2
	pushq $0x23
	pushq %rdi
	iretq

/* Exceptions: push a zero error code where the CPU pushes none, then the
 * vector, then every general register, and hand the frame to C. */
.macro EXC num, haserr
exc_\num:
	.if \haserr == 0
	pushq $0
	.endif
	pushq $\num
	jmp exc_common
.endm

EXC 0, 0
EXC 1, 0
EXC 2, 0
EXC 3, 0
EXC 4, 0
EXC 5, 0
EXC 6, 0
EXC 7, 0
EXC 8, 1
EXC 9, 0
EXC 10, 1
EXC 11, 1
EXC 12, 1
EXC 13, 1
EXC 14, 1
EXC 15, 0
EXC 16, 0
EXC 17, 1
EXC 18, 0
EXC 19, 0
EXC 20, 0
EXC 21, 1
EXC 22, 0
EXC 23, 0
EXC 24, 0
EXC 25, 0
EXC 26, 0
EXC 27, 0
EXC 28, 0
EXC 29, 1
EXC 30, 1
EXC 31, 0

exc_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	call exc_handler
	/* exc_handler returns only for a ring-3 service call (ud2, see
	 * boot.c), with the frame updated. */
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp
	iretq

/* Local APIC timer: acknowledge and return; the sleeping code rereads
 * the TSC to see whether its deadline has passed. */
	.globl timer_entry
timer_entry:
	pushq %rax
	movq $0xfee000b0, %rax
	movl $0, (%rax)
	popq %rax
	iretq

	.globl spurious_entry
spurious_entry:
	iretq

	.section .rodata
	.globl exc_stubs
	.align 8
exc_stubs:
	.quad exc_0, exc_1, exc_2, exc_3, exc_4, exc_5, exc_6, exc_7
	.quad exc_8, exc_9, exc_10, exc_11, exc_12, exc_13, exc_14, exc_15
	.quad exc_16, exc_17, exc_18, exc_19, exc_20, exc_21, exc_22, exc_23
	.quad exc_24, exc_25, exc_26, exc_27, exc_28, exc_29, exc_30, exc_31
msg_no_long_mode:
	.asciz "livemig-guest: this CPU has no long mode\r\n"

	.data
	.globl boot_tsc_entry
	.align 8
boot_tsc_entry:
	.quad 0
	.globl boot_mb_magic, boot_mb_info
	.align 4
boot_mb_magic:
	.long 0
boot_mb_info:
	.long 0

/* 0x08 ring-0 code, 0x10 ring-0 data, 0x18 ring-3 data, 0x20 ring-3 code,
 * 0x28 the TSS (16 bytes, filled in by boot_main). */
	.globl gdt
	.align 16
gdt:
	.quad 0
	.quad 0x00af9a000000ffff
	.quad 0x00cf92000000ffff
	.quad 0x00cff2000000ffff
	.quad 0x00affa000000ffff
	.quad 0
	.quad 0
gdt_end:
	.align 4
	.word 0
gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt

	.bss
	.align 4096
	.globl boot_pml4, boot_pdpt, boot_pd
boot_pml4:
	.skip 4096
boot_pdpt:
	.skip 4096
boot_pd:
	.skip 4 * 4096
	.align 16
	.globl boot_stack_top
boot_stack:
	.skip 16384
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
