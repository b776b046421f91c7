# The guest image: freestanding x86-64 code with a 32-bit Multiboot entry,
# linked at 1 MiB and converted to ELF32 so that Multiboot v1 loaders
# (QEMU's -kernel, livemig's VMM) accept it. Included by the top Makefile,
# which sets GUEST_ELF = guest/guest.elf.
#
# The C code is built with -mgeneral-regs-only: the compiler never uses
# SSE/AVX registers, so the guest can keep a canary pattern in them for the
# whole run (guest/fpu.S) and check that migrations preserve vector state.

GUEST_CC ?= gcc
GUEST_OBJCOPY ?= objcopy
GUEST_CFLAGS := -std=gnu11 -O2 -g -m64 -ffreestanding -fno-builtin -nostdlib -fno-pic -fno-pie \
	-mno-red-zone -mgeneral-regs-only -mcmodel=small -fno-stack-protector \
	-fno-asynchronous-unwind-tables -fno-unwind-tables -fno-tree-loop-distribute-patterns \
	-fno-omit-frame-pointer -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wvla -Iinclude -Iguest
GUEST_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,guest/guest.ld -Wl,-z,max-page-size=0x1000 \
	-Wl,--build-id=none -Wl,--no-warn-rwx-segments
GUEST_SRC := $(sort $(wildcard guest/*.c guest/*.S))
GUEST_OBJ := $(patsubst guest/%,$(BUILD)/guest/%.o,$(GUEST_SRC))
GUEST_ELF64 := $(BUILD)/guest/guest64.elf

$(BUILD)/guest/%.c.o: guest/%.c guest/guest.mk
	$(call say,CC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/guest/%.S.o: guest/%.S guest/guest.mk
	$(call say,AS,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@

$(GUEST_ELF64): $(GUEST_OBJ) guest/guest.ld
	$(call say,LD,$@)
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ $(GUEST_OBJ) -lgcc

$(GUEST_ELF): $(GUEST_ELF64)
	$(call say,OBJCOPY,$@)
	$(Q)$(GUEST_OBJCOPY) -O elf32-i386 $< $@
