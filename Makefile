# livemig: one Makefile for the library, the command, the guest image,
# the tests, the benchmarks and the fuzzers.
#
#   make            liblivemig.a and the livemig command (in $(BUILD)/)
#   make check      every test: unit tests under ASan+UBSan, then e2e tests
#   make bench      the benchmarks (bench/scan, bench migrate)
#   make demo       a live migration of a running VM, with its report
#   make fuzz       the libFuzzer targets for a bounded time (FUZZ_SECONDS)
#   V=1             show full commands
#
# Every make goal that needs packages runs scripts/deps.sh first; it installs
# only what is missing.

BUILD ?= build
CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif

V ?= 0
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-7s %s\n' $(1) $(2);
endif

PKGS := libzstd libxxhash json-c
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

WARN := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes \
        -Wmissing-prototypes -Wvla
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -pthread \
              -Iinclude -Isrc $(PKG_CFLAGS) -MMD -MP
LDLIBS := $(PKG_LIBS) -pthread -lm
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRC := $(sort $(wildcard src/common/*.c src/bitmap/*.c src/track/*.c src/stream/*.c src/migrate/*.c src/vmm/*.c))
CLI_SRC := $(sort $(wildcard src/cli/*.c))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
E2E_SRC := $(sort $(wildcard tests/e2e/test_*.c))
TEST_SUPPORT := $(sort $(wildcard tests/support/*.c))
BENCH_SRC := $(sort $(wildcard bench/*.c))

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/obj/%.o)
SUPPORT_OBJ := $(TEST_SUPPORT:%.c=$(BUILD)/obj/%.o)
ASAN_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/obj/%.o)
ASAN_SUPPORT_OBJ := $(TEST_SUPPORT:%.c=$(BUILD)/asan/obj/%.o)

LIB := $(BUILD)/liblivemig.a
ASAN_LIB := $(BUILD)/asan/liblivemig.a
LIVEMIG := $(BUILD)/livemig
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan/tests/%)
E2E_BIN := $(E2E_SRC:tests/e2e/%.c=$(BUILD)/tests/%)

GUEST_ELF := guest/guest.elf

.PHONY: fuzz-ci all deps deps-all check unit e2e bench bench-qemu demo fuzz clean format
# Objects of the chained test rules are kept, not deleted as intermediates.
.SECONDARY:
all: deps $(LIB) $(LIVEMIG) $(GUEST_ELF)

deps:
	$(Q)scripts/deps.sh build

# The e2e tests and the QEMU benchmark also boot the guest under QEMU.
deps-all:
	$(Q)scripts/deps.sh all

# The guest image has its own rules (freestanding, no libc).
-include guest/guest.mk

$(BUILD)/obj/%.o: %.c
	$(call say,CC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/asan/obj/%.o: %.c
	$(call say,CC-SAN,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -c $< -o $@

$(LIB): $(LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(ASAN_LIB): $(ASAN_LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIVEMIG): $(CLI_OBJ) $(BENCH_OBJ) $(LIB)
	$(call say,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(BENCH_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/asan/tests/%: tests/unit/%.c $(ASAN_SUPPORT_OBJ) $(ASAN_LIB)
	$(call say,LD-SAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -Itests -o $@ $< $(ASAN_SUPPORT_OBJ) $(ASAN_LIB) $(CMOCKA_LIBS) $(LDLIBS)

$(BUILD)/tests/%: tests/e2e/%.c $(SUPPORT_OBJ) $(LIB)
	$(call say,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(SUPPORT_OBJ) $(LIB) $(CMOCKA_LIBS) $(LDLIBS)

# make check: unit tests under AddressSanitizer + UndefinedBehaviorSanitizer,
# then the end-to-end tests against the real livemig command and guest.
check: deps-all all $(UNIT_BIN) $(E2E_BIN)
	$(Q)LIVEMIG=$(abspath $(LIVEMIG)) GUEST_ELF=$(abspath $(GUEST_ELF)) \
	  tests/run.sh $(UNIT_BIN) $(E2E_BIN)

unit: deps $(UNIT_BIN)
	$(Q)tests/run.sh $(UNIT_BIN)

e2e: deps-all all $(E2E_BIN)
	$(Q)LIVEMIG=$(abspath $(LIVEMIG)) GUEST_ELF=$(abspath $(GUEST_ELF)) tests/run.sh $(E2E_BIN)

bench: all
	$(Q)$(LIVEMIG) bench scan
	$(Q)$(LIVEMIG) bench migrate
	$(Q)$(LIVEMIG) bench stream
	$(Q)$(LIVEMIG) bench table

# Side by side with QEMU on the same guests (issue 6); a benchmark, not a test.
bench-qemu: deps-all all
	$(Q)$(LIVEMIG) bench vs-qemu --json $(BUILD)/vs-qemu.json --plot $(BUILD)/vs-qemu.png

demo: all
	$(Q)scripts/demo.sh $(LIVEMIG) $(GUEST_ELF)

# libFuzzer targets: fuzz/fuzz_<name>.c, built with clang against the
# library sources (not the gcc-built archive).
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 30
FUZZ_LIB_SRC := $(sort $(wildcard src/common/*.c src/bitmap/*.c src/stream/*.c))
$(BUILD)/fuzz/%: fuzz/%.c $(FUZZ_LIB_SRC)
	$(call say,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc $(PKG_CFLAGS) \
	  -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIB_SRC) $(PKG_LIBS) -pthread

fuzz: deps $(FUZZ_BIN)
	$(Q)for f in $(FUZZ_BIN); do \
	  echo "fuzz: $$f for $(FUZZ_SECONDS)s"; \
	  mkdir -p $(BUILD)/fuzz/corpus-$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      $(BUILD)/fuzz/corpus-$$(basename $$f) fuzz/seeds/$$(basename $$f) 2>&1 | tail -n 12 || exit 1; \
	done

# CI: the stream decoder for 60 s, the other decoders for 15 s each.
fuzz-ci: deps $(FUZZ_BIN)
	$(Q)for f in $(FUZZ_BIN); do \
	  t=15; [ "$$(basename $$f)" = fuzz_stream ] && t=60; \
	  mkdir -p $(BUILD)/fuzz/corpus-$$(basename $$f); \
	  echo "fuzz: $$(basename $$f) for $${t}s"; \
	  $$f -max_total_time=$$t $(BUILD)/fuzz/corpus-$$(basename $$f) fuzz/seeds/$$(basename $$f) \
	      > $(BUILD)/fuzz/$$(basename $$f).log 2>&1 || { tail -n 40 $(BUILD)/fuzz/$$(basename $$f).log; exit 1; }; \
	  grep -E '^(#[0-9]+|Done)' $(BUILD)/fuzz/$$(basename $$f).log | tail -n 1; \
	done

format:
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(UNIT_SRC) $(E2E_SRC) $(wildcard include/livemig/*.h src/*/*.h)

clean:
	rm -rf $(BUILD) $(GUEST_ELF)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
