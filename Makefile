# livemig: one Makefile for the library, the command, the guest image,
# the tests, the benchmarks and the fuzzers.
#
#   make            liblivemig (.a and .so), the livemig command, the guest image
#   make install    PREFIX=/usr/local DESTDIR=: command, libraries, headers,
#                   livemig.pc, man page, guest image; make uninstall removes them
#   make check      every test: unit tests under ASan+UBSan, then e2e tests
#   make bench      the benchmarks (bench/scan, bench migrate)
#   make demo       a live migration of a running VM, with its report
#   make fuzz       the libFuzzer targets for a bounded time (FUZZ_SECONDS)
#   V=1             show full commands
#
# Packages. `make demo`, `make check`, `make bench`, `make bench-qemu` and
# the fuzz goals install the Debian packages they need (scripts/deps.sh,
# only what is missing) and then run make again for the real work, so that
# the pkg-config flags are computed once the packages exist. Every other
# goal installs nothing: when a package is missing it stops with one line
# that names the packages and the command that installs them.

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

# Goals that install their packages first (their rules are further down).
INSTALLING_GOALS := demo check bench bench-qemu fuzz fuzz-ci unit e2e
# Goals that need no package at all.
NO_PKG_GOALS := clean deps uninstall format $(INSTALLING_GOALS)
GOALS := $(or $(MAKECMDGOALS),all)
ifneq ($(filter-out $(NO_PKG_GOALS),$(GOALS)),)
# The library and the command need the `lib` set; anything else (a single
# test binary, a fuzzer) the `build` set.
PKG_SET := $(if $(filter-out all install lib _demo _bench,$(GOALS)),build,lib)
MISSING_PKGS := $(shell scripts/deps.sh missing $(PKG_SET))
ifneq ($(MISSING_PKGS),)
$(error missing Debian packages: $(MISSING_PKGS); install them with: scripts/deps.sh $(PKG_SET))
endif
endif

PKGS := libzstd libxxhash json-c
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

# The version is defined once, in include/livemig/version.h.
version_part = $(shell sed -n 's/^\#define LM_VERSION_$(1) \([0-9]*\)$$/\1/p' include/livemig/version.h)
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION_MINOR := $(call version_part,MINOR)
VERSION_PATCH := $(call version_part,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

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
# The tests speak QMP through the command's own client.
TEST_SUPPORT := $(sort $(wildcard tests/support/*.c)) src/cli/qmp_client.c
BENCH_SRC := $(sort $(wildcard bench/*.c))

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
PIC_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/pic/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/obj/%.o)
SUPPORT_OBJ := $(TEST_SUPPORT:%.c=$(BUILD)/obj/%.o)
ASAN_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/obj/%.o)
ASAN_SUPPORT_OBJ := $(TEST_SUPPORT:%.c=$(BUILD)/asan/obj/%.o)
# Test builds only: the library with its test hooks (src/common/testpoint.h,
# the software dirty source's fault injection). The unit tests' ASan
# library has them, and so does build/hooks/livemig, the command the e2e
# tests kill at named points of the switchover. The product never does.
TEST_HOOKS := -DLM_TEST_HOOKS
HOOKS_OBJ := $(LIB_SRC:%.c=$(BUILD)/hooks/obj/%.o) $(CLI_SRC:%.c=$(BUILD)/hooks/obj/%.o)
HOOKS_LIVEMIG := $(BUILD)/hooks/livemig

# Two kinds of archive. The internal one keeps every global symbol (the
# tests and the livemig command call lm__ internals); the installed one is
# a single relocatable object in which only the public lm_ names stay
# global, as in the shared object (src/liblivemig.map).
LIB := $(BUILD)/obj/liblivemig-internal.a
ASAN_LIB := $(BUILD)/asan/liblivemig.a
DIST_A := $(BUILD)/lib/liblivemig.a
SONAME := liblivemig.so.$(VERSION_MAJOR)
SO_REAL := liblivemig.so.$(VERSION_MAJOR).$(VERSION_MINOR)
DIST_SO := $(BUILD)/lib/$(SO_REAL)
DIST_PC := $(BUILD)/lib/livemig.pc
LIVEMIG := $(BUILD)/livemig
# The benchmarks, a program of their own (`livemig bench` runs it); of the
# command's files only the QMP client and the size parser.
LIVEMIG_BENCH := $(BUILD)/livemig-bench
BENCH_CLI_OBJ := $(BUILD)/obj/src/cli/qmp_client.o $(BUILD)/obj/src/cli/parse.o
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan/tests/%)
E2E_BIN := $(E2E_SRC:tests/e2e/%.c=$(BUILD)/tests/%)
PUBLIC_HEADERS := $(sort $(wildcard include/livemig/*.h))
MAN_PAGE := docs/livemig.1

GUEST_ELF := guest/guest.elf

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/livemig
# livemig-bench goes to LIBEXECDIR/livemig, found from BINDIR/livemig as ../libexec/livemig.
LIBEXECDIR ?= $(PREFIX)/libexec

.PHONY: all lib deps deps-all install uninstall check unit e2e bench bench-qemu demo fuzz fuzz-ci \
	clean format _check _unit _e2e _bench _bench-qemu _demo _fuzz _fuzz-ci
# Objects of the chained test rules are kept, not deleted as intermediates.
.SECONDARY:
all: lib $(LIVEMIG) $(LIVEMIG_BENCH) $(GUEST_ELF)
lib: $(DIST_A) $(DIST_SO) $(DIST_PC)

# Installs nothing; says what is missing (the `build` set).
deps:
	$(Q)m=$$(scripts/deps.sh missing build); [ -z "$$m" ] || \
	  { echo "missing Debian packages: $$m; install them with: scripts/deps.sh build"; exit 1; }

# The guest image has its own rules (freestanding, no libc).
-include guest/guest.mk

# The AVX2 copy of XXH3 (src/stream/hash.h); called only where the CPU has it.
%/src/stream/hash_avx2.o: ALL_CFLAGS += -mavx2

$(BUILD)/obj/%.o: %.c
	$(call say,CC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/asan/obj/%.o: %.c
	$(call say,CC-SAN,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) $(TEST_HOOKS) -c $< -o $@

$(BUILD)/hooks/obj/%.o: %.c
	$(call say,CC-HOOK,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(TEST_HOOKS) -c $< -o $@

$(HOOKS_LIVEMIG): $(HOOKS_OBJ)
	$(call say,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $(HOOKS_OBJ) $(LDLIBS)

$(BUILD)/pic/obj/%.o: %.c
	$(call say,CC-PIC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -fPIC -c $< -o $@

$(LIB): $(LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(ASAN_LIB): $(ASAN_LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

# The installed archive: one object, internal names made local.
$(DIST_A): $(PIC_LIB_OBJ)
	$(call say,AR,$@)
	$(Q)mkdir -p $(@D)
	$(Q)ld -r -o $(BUILD)/pic/livemig.o $^
	$(Q)objcopy --wildcard --keep-global-symbol='lm_[!_]*' $(BUILD)/pic/livemig.o
	$(Q)rm -f $@ && ar rcs $@ $(BUILD)/pic/livemig.o

$(DIST_SO): $(PIC_LIB_OBJ) src/liblivemig.map
	$(call say,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script,src/liblivemig.map \
	  -Wl,--no-undefined -o $@ $(PIC_LIB_OBJ) $(LDLIBS)
	$(Q)ln -sf $(SO_REAL) $(BUILD)/lib/$(SONAME)
	$(Q)ln -sf $(SONAME) $(BUILD)/lib/liblivemig.so

# The .pc for the installed paths (PREFIX and LIBDIR as given to make);
# paths under PREFIX are written relative to ${prefix}, so that
# `pkg-config --define-variable=prefix=...` finds a staged copy.
under_prefix = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
$(DIST_PC): src/livemig.pc.in include/livemig/version.h
	$(call say,GEN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(call under_prefix,$(LIBDIR))|g' \
	  -e 's|@INCLUDEDIR@|$(call under_prefix,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@
.PHONY: $(DIST_PC)

$(LIVEMIG): $(CLI_OBJ) $(LIB)
	$(call say,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(LIVEMIG_BENCH): $(BENCH_OBJ) $(BENCH_CLI_OBJ) $(LIB)
	$(call say,LD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $(BENCH_OBJ) $(BENCH_CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/asan/tests/%: tests/unit/%.c $(ASAN_SUPPORT_OBJ) $(ASAN_LIB)
	$(call say,LD-SAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) $(TEST_HOOKS) -Itests -o $@ $< $(ASAN_SUPPORT_OBJ) $(ASAN_LIB) $(CMOCKA_LIBS) $(LDLIBS)

$(BUILD)/tests/%: tests/e2e/%.c $(SUPPORT_OBJ) $(LIB)
	$(call say,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(SUPPORT_OBJ) $(LIB) $(CMOCKA_LIBS) $(LDLIBS)

install: all
	$(call say,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
	  $(DESTDIR)$(INCLUDEDIR)/livemig $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DATADIR) \
	  $(DESTDIR)$(LIBEXECDIR)/livemig
	$(Q)install -m 755 $(LIVEMIG) $(DESTDIR)$(BINDIR)/livemig
	$(Q)install -m 755 $(LIVEMIG_BENCH) $(DESTDIR)$(LIBEXECDIR)/livemig/livemig-bench
	$(Q)install -m 644 $(DIST_A) $(DESTDIR)$(LIBDIR)/liblivemig.a
	$(Q)install -m 755 $(DIST_SO) $(DESTDIR)$(LIBDIR)/$(SO_REAL)
	$(Q)ln -sf $(SO_REAL) $(DESTDIR)$(LIBDIR)/$(SONAME)
	$(Q)ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/liblivemig.so
	$(Q)install -m 644 $(DIST_PC) $(DESTDIR)$(LIBDIR)/pkgconfig/livemig.pc
	$(Q)install -m 644 $(PUBLIC_HEADERS) $(DESTDIR)$(INCLUDEDIR)/livemig/
	$(Q)install -m 644 $(MAN_PAGE) $(DESTDIR)$(MANDIR)/man1/livemig.1
	$(Q)install -m 644 $(GUEST_ELF) $(DESTDIR)$(DATADIR)/guest.elf

# Removes exactly what install put there (and the folders it made, if empty).
uninstall:
	$(call say,RM,$(DESTDIR)$(PREFIX))
	$(Q)rm -f $(DESTDIR)$(BINDIR)/livemig $(DESTDIR)$(LIBDIR)/liblivemig.a \
	  $(DESTDIR)$(LIBDIR)/$(SO_REAL) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/liblivemig.so \
	  $(DESTDIR)$(LIBDIR)/pkgconfig/livemig.pc $(DESTDIR)$(MANDIR)/man1/livemig.1 \
	  $(DESTDIR)$(DATADIR)/guest.elf $(DESTDIR)$(LIBEXECDIR)/livemig/livemig-bench \
	  $(addprefix $(DESTDIR)$(INCLUDEDIR)/livemig/,$(notdir $(PUBLIC_HEADERS)))
	$(Q)rmdir $(DESTDIR)$(INCLUDEDIR)/livemig $(DESTDIR)$(DATADIR) $(DESTDIR)$(LIBEXECDIR)/livemig \
	  2>/dev/null || true

# The goals that install packages: scripts/deps.sh, then make again (a new
# parse, so pkg-config sees the packages) for the goal's real work, _GOAL.
check e2e bench-qemu:
	$(Q)scripts/deps.sh all
	$(Q)$(MAKE) --no-print-directory _$@
unit fuzz fuzz-ci:
	$(Q)scripts/deps.sh build
	$(Q)$(MAKE) --no-print-directory _$@
demo bench:
	$(Q)scripts/deps.sh lib
	$(Q)$(MAKE) --no-print-directory _$@

# make check: unit tests under AddressSanitizer + UndefinedBehaviorSanitizer,
# then the end-to-end tests against the real livemig command and guest.
# The ThreadSanitizer builds of the threaded tests (see _tsan) run in the
# same suite, so the run ends with one summary line for everything.
_check: all $(UNIT_BIN) $(E2E_BIN) $(HOOKS_LIVEMIG)
	$(Q)LIVEMIG=$(abspath $(LIVEMIG)) GUEST_ELF=$(abspath $(GUEST_ELF)) \
	  LIVEMIG_HOOKS=$(abspath $(HOOKS_LIVEMIG)) LM_SRCDIR=$(CURDIR) LM_BUILD=$(abspath $(BUILD)) \
	  TSAN_OPTIONS="$(TSAN_RUN_OPTIONS)" $(TSAN_SETARCH) tests/run.sh $(UNIT_BIN) $(E2E_BIN) $(TSAN_BIN)

_unit: $(UNIT_BIN)
	$(Q)tests/run.sh $(UNIT_BIN)

_e2e: all $(E2E_BIN) $(HOOKS_LIVEMIG)
	$(Q)LIVEMIG=$(abspath $(LIVEMIG)) GUEST_ELF=$(abspath $(GUEST_ELF)) \
	  LIVEMIG_HOOKS=$(abspath $(HOOKS_LIVEMIG)) LM_SRCDIR=$(CURDIR) LM_BUILD=$(abspath $(BUILD)) \
	  tests/run.sh $(E2E_BIN)

# ---- ThreadSanitizer: make _tsan ------------------------------------------
# The multi-threaded tests built with -fsanitize=thread (and the test hooks,
# as the ASan unit tests have them) against a TSan build of the library and
# the test support: the tests that run the migration thread against a
# receiver and a writer (test_migrate_*), vCPU-like threads against the
# balloon, the skip map and the bitmaps' atomic sync (test_balloon,
# test_skip, test_bitmap), the write hook's publication and grace period
# under cancelled migrations (test_vm_hook), and a running guest (real KVM
# vCPU threads) whose migrations are cancelled in a loop (test_vm_cancel).
# Any report fails the test (TSan's exit code 66). tests/tsan.supp lists
# what is reported but is no race, each entry with its reason. Run with
# address randomisation off where setarch allows it: on kernels with many
# mmap random bits TSan otherwise aborts with "unexpected memory mapping".
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
TSAN_UNIT := test_bitmap test_skip test_balloon test_migrate_basic test_migrate_faults \
	     test_migrate_receiver test_migrate_skip test_vm_hook test_migrate_channels
TSAN_E2E := test_vm_cancel
TSAN_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/tsan/obj/%.o)
TSAN_SUPPORT_OBJ := $(TEST_SUPPORT:%.c=$(BUILD)/tsan/obj/%.o)
TSAN_LIB := $(BUILD)/tsan/liblivemig.a
TSAN_BIN := $(addprefix $(BUILD)/tsan/tests/,$(TSAN_UNIT) $(TSAN_E2E))
# (make check runs them too: its rule is above, so the prerequisite is here.)
_check: $(TSAN_BIN)
TSAN_SUPP := tests/tsan.supp
TSAN_SETARCH = $(shell setarch $$(uname -m) -R true 2>/dev/null && echo setarch $$(uname -m) -R)
.PHONY: _tsan

$(BUILD)/tsan/obj/%.o: %.c
	$(call say,CC-TSAN,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(TSAN_FLAGS) $(TEST_HOOKS) -c $< -o $@

$(TSAN_LIB): $(TSAN_LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/tsan/tests/%: tests/unit/%.c $(TSAN_SUPPORT_OBJ) $(TSAN_LIB)
	$(call say,LD-TSAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(TSAN_FLAGS) $(TEST_HOOKS) -Itests -o $@ $< $(TSAN_SUPPORT_OBJ) \
	  $(TSAN_LIB) $(CMOCKA_LIBS) $(LDLIBS)

$(BUILD)/tsan/tests/%: tests/e2e/%.c $(TSAN_SUPPORT_OBJ) $(TSAN_LIB)
	$(call say,LD-TSAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(TSAN_FLAGS) $(TEST_HOOKS) -Itests -o $@ $< $(TSAN_SUPPORT_OBJ) \
	  $(TSAN_LIB) $(CMOCKA_LIBS) $(LDLIBS)

TSAN_RUN_OPTIONS = suppressions=$(abspath $(TSAN_SUPP)) second_deadlock_stack=1 history_size=7 $(TSAN_OPTIONS)
_tsan: all $(TSAN_BIN)
	$(Q)TSAN_OPTIONS="$(TSAN_RUN_OPTIONS)" \
	  LIVEMIG=$(abspath $(LIVEMIG)) GUEST_ELF=$(abspath $(GUEST_ELF)) \
	  LM_SRCDIR=$(CURDIR) LM_BUILD=$(abspath $(BUILD)) \
	  $(TSAN_SETARCH) tests/run.sh $(TSAN_BIN)
# ---- end of ThreadSanitizer -----------------------------------------------

_bench: all
	$(Q)$(LIVEMIG_BENCH) scan
	$(Q)$(LIVEMIG_BENCH) migrate
	$(Q)$(LIVEMIG_BENCH) stream
	$(Q)$(LIVEMIG_BENCH) table
	$(Q)$(LIVEMIG_BENCH) sizes --quick

# Side by side with QEMU on the same guests (issue 6); a benchmark, not a test.
_bench-qemu: all
	$(Q)$(LIVEMIG_BENCH) vs-qemu --json $(BUILD)/vs-qemu.json --plot $(BUILD)/vs-qemu.png

_demo: all
	$(Q)scripts/demo.sh $(LIVEMIG) $(GUEST_ELF)

# libFuzzer targets: fuzz/fuzz_<name>.c, built with clang against the
# library sources (not the gcc-built archive).
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 30
FUZZ_LIB_SRC := $(sort $(wildcard src/common/*.c src/bitmap/*.c src/stream/*.c))
# The whole receiver (fuzz_receiver) needs the engine too; still no src/vmm.
FUZZ_ENGINE_SRC := $(sort $(wildcard src/migrate/*.c src/track/*.c))
$(BUILD)/fuzz/fuzz_receiver: FUZZ_EXTRA_SRC := $(FUZZ_ENGINE_SRC)
$(BUILD)/fuzz/fuzz_receiver: $(FUZZ_ENGINE_SRC)
$(BUILD)/fuzz/%: fuzz/%.c $(FUZZ_LIB_SRC)
	$(call say,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc $(PKG_CFLAGS) \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -o $@ $< $(FUZZ_LIB_SRC) $(FUZZ_EXTRA_SRC) $(PKG_LIBS) -pthread -lm

_fuzz: $(FUZZ_BIN)
	$(Q)for f in $(FUZZ_BIN); do \
	  echo "fuzz: $$f for $(FUZZ_SECONDS)s"; \
	  mkdir -p $(BUILD)/fuzz/corpus-$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      $(BUILD)/fuzz/corpus-$$(basename $$f) fuzz/seeds/$$(basename $$f) 2>&1 | tail -n 12 || exit 1; \
	done

# CI: the stream decoder for 60 s, the other decoders for 15 s each.
_fuzz-ci: $(FUZZ_BIN)
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
