/*
 * The SSE/AVX canary: ring 3 loads a known pattern into xmm8-15 (ymm8-15
 * when AVX is on) once and compares it at every progress line and every
 * check. The C code is built with -mgeneral-regs-only, so nothing else
 * ever writes these registers; a difference means the vector state was
 * lost or mangled (by a migration, say).
 *
 * fpu_canary_load(const void *buf, int avx), fpu_canary_store(void *buf, int avx)
 */
	.text
	.globl fpu_canary_load
fpu_canary_load:
	testl %esi, %esi
	jz 1f
	vmovdqu 0(%rdi), %ymm8
	vmovdqu 32(%rdi), %ymm9
	vmovdqu 64(%rdi), %ymm10
	vmovdqu 96(%rdi), %ymm11
	vmovdqu 128(%rdi), %ymm12
	vmovdqu 160(%rdi), %ymm13
	vmovdqu 192(%rdi), %ymm14
	vmovdqu 224(%rdi), %ymm15
	ret
1:	movdqu 0(%rdi), %xmm8
	movdqu 16(%rdi), %xmm9
	movdqu 32(%rdi), %xmm10
	movdqu 48(%rdi), %xmm11
	movdqu 64(%rdi), %xmm12
	movdqu 80(%rdi), %xmm13
	movdqu 96(%rdi), %xmm14
	movdqu 112(%rdi), %xmm15
	ret

	.globl fpu_canary_store
fpu_canary_store:
	testl %esi, %esi
	jz 1f
	vmovdqu %ymm8, 0(%rdi)
	vmovdqu %ymm9, 32(%rdi)
	vmovdqu %ymm10, 64(%rdi)
	vmovdqu %ymm11, 96(%rdi)
	vmovdqu %ymm12, 128(%rdi)
	vmovdqu %ymm13, 160(%rdi)
	vmovdqu %ymm14, 192(%rdi)
	vmovdqu %ymm15, 224(%rdi)
	ret
1:	movdqu %xmm8, 0(%rdi)
	movdqu %xmm9, 16(%rdi)
	movdqu %xmm10, 32(%rdi)
	movdqu %xmm11, 48(%rdi)
	movdqu %xmm12, 64(%rdi)
	movdqu %xmm13, 80(%rdi)
	movdqu %xmm14, 96(%rdi)
	movdqu %xmm15, 112(%rdi)
	ret

	.section .note.GNU-stack, "", @progbits
