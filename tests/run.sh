#!/usr/bin/env bash
# Run cmocka test binaries one after another and add up their summaries.
# Ends with the single line "N passed, N failed, N skipped" for the whole
# suite (CI reads that last line).
#
# A binary that dies without printing its summary counts as one failure, and
# so does one that runs longer than LM_TEST_TIMEOUT seconds (default 300: the
# slowest binary, test_live_workloads, takes about 40 s alone on a 2-core
# machine); it gets SIGTERM, then SIGKILL 10 s later. The children a test
# starts die with it (PR_SET_PDEATHSIG, tests/support/child.h). The binary
# stays in the terminal's process group (--foreground), so that Ctrl-C
# stops it and the whole run.
#
# Tests skip when what they need is missing (KVM, QEMU, userfaultfd). On a
# host that has all three, as CI's does, a test has no good reason to skip,
# so there a skipped test counts as failed, named with its binary.
# LM_ALLOW_SKIP=1 lets tests skip anyway (a developer running part of the
# suite).
set -u

timeout_s=${LM_TEST_TIMEOUT:-300}
case $timeout_s in
'' | *[!0-9]*) timeout_s=0 ;;
esac
timeout_s=$((10#$timeout_s))
if [ "$timeout_s" = 0 ]; then
  echo "LM_TEST_TIMEOUT must be a whole number of seconds above 0, not '${LM_TEST_TIMEOUT:-}'" >&2
  exit 2
fi

# /dev/kvm works if it opens read-write and answers KVM_GET_API_VERSION
# (_IO(0xAE, 0)) with 12; a node that exists without the module does not.
probe_kvm() {
  [ -c /dev/kvm ] || return 1
  if command -v perl >/dev/null 2>&1; then
    perl -e 'sysopen(my $k, "/dev/kvm", 2) or exit 1;
             my $v = ioctl($k, 0xAE00, 0); exit(defined $v && $v == 12 ? 0 : 1)'
  else
    [ -r /dev/kvm ] && [ -w /dev/kvm ]
  fi
}

# The QEMU the tests use: $QEMU if set, else qemu-system-x86_64 on PATH.
probe_qemu() {
  if [ -n "${QEMU:-}" ]; then
    [ -x "$QEMU" ] && echo "$QEMU"
  else
    command -v qemu-system-x86_64
  fi
}

# What lm_uffd_supported() (src/track/uffd.c) checks, done the same way:
# a userfaultfd from the syscall (as root, with the sysctl, or user-mode
# only) or from /dev/userfaultfd, the write-protect async features from
# UFFDIO_API, and the PAGEMAP_SCAN ioctl on /proc/self/pagemap. The ioctl
# numbers are the _IOWR/_IO encodings of linux/userfaultfd.h and linux/fs.h.
probe_uffd() {
  if ! command -v perl >/dev/null 2>&1; then
    # Without perl, a guess from what the kernel shows: userfaultfd built
    # in (its sysctl exists) and Linux 6.7 or newer (WP_ASYNC, PAGEMAP_SCAN).
    [ -e /proc/sys/vm/unprivileged_userfaultfd ] || return 1
    local v
    v=$(uname -r)
    local major=${v%%.*} rest=${v#*.}
    local minor=${rest%%[!0-9]*}
    [ "$major" -gt 6 ] || { [ "$major" -eq 6 ] && [ "${minor:-0}" -ge 7 ]; }
    return
  fi
  perl -e '
    my $nr = eval { require "syscall.ph"; &SYS_userfaultfd };
    $nr = 323 if !defined $nr && `uname -m` =~ /^x86_64/;
    exit 1 unless defined $nr;
    my $flags = 0x80000 | 0x800;                       # O_CLOEXEC | O_NONBLOCK
    my $fd = syscall($nr, $flags);
    $fd = syscall($nr, $flags | 1) if $fd < 0;         # UFFD_USER_MODE_ONLY
    if ($fd < 0 && sysopen(my $dev, "/dev/userfaultfd", 2)) {
      $fd = ioctl($dev, 0xAA00, $flags);               # USERFAULTFD_IOC_NEW
      $fd = defined $fd ? $fd + 0 : -1;
    }
    exit 1 if $fd < 0;
    open(my $u, "+<&=", $fd) or exit 1;
    my $api = pack("QQQ", 0xAA, (1 << 15) | (1 << 13), 0); # WP_ASYNC | WP_UNPOPULATED
    ioctl($u, 0xC018AA3F, $api) or exit 1;             # UFFDIO_API
    sysopen(my $pm, "/proc/self/pagemap", 0) or exit 1;
    my $arg = pack("Q12", 96, (0) x 11);               # struct pm_scan_arg, empty range
    ioctl($pm, 0xC0606610, $arg) or exit 1;            # PAGEMAP_SCAN
    exit 0;' 2>/dev/null
}

yes_no() { if [ "$1" = 0 ]; then echo yes; else echo no; fi; }
probe_kvm
kvm=$?
qemu_path=$(probe_qemu)
qemu=$?
probe_uffd
uffd=$?
strict=0
if [ "$kvm$qemu$uffd" = 000 ]; then
  if [ "${LM_ALLOW_SKIP:-0}" = 1 ]; then
    verdict="skips allowed (LM_ALLOW_SKIP=1)"
  else
    strict=1
    verdict="a skipped test counts as failed (LM_ALLOW_SKIP=1 allows skips)"
  fi
else
  verdict="skips allowed"
fi
echo "=== host: KVM $(yes_no $kvm), QEMU $(yes_no $qemu)${qemu_path:+ ($qemu_path)}," \
  "userfaultfd $(yes_no $uffd): $verdict"

# Ctrl-C (or a TERM) stops the binary; the trap runs once it has gone and
# ends the run there, without a summary line that could read as a result.
trap 'echo "=== interrupted"; exit 130' INT TERM

passed=0
failed=0
skipped=0
for t in "$@"; do
  name=$(basename "$t")
  # The ThreadSanitizer builds of tests share their names with the others.
  case $t in */tsan/*) name="tsan/$name" ;; esac
  echo "=== $name"
  out=$(mktemp)
  start=$SECONDS
  timeout --foreground --kill-after=10 "$timeout_s" "$t" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  elapsed=$((SECONDS - start))
  # 124: timeout sent SIGTERM; 137: the binary ignored it and got SIGKILL.
  if [ "$rc" = 124 ] || { [ "$rc" = 137 ] && [ "$elapsed" -ge "$timeout_s" ]; }; then
    echo "=== $name: timed out after $timeout_s s"
    running=$(sed -n 's/^\[ RUN      \] \(.*\)/\1/p' "$out" | tail -n 1)
    if [ -n "$running" ] && ! grep -qE "^\[ +(OK|FAILED|SKIPPED) +\] $running\$" "$out"; then
      echo "=== $name: $running was running"
    fi
    rm -f "$out"
    failed=$((failed + 1))
    continue
  fi
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\..*/\1/p' "$out" | tail -n 1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' "$out" | tail -n 1)
  s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test(s).*/\1/p' "$out" | tail -n 1)
  # The names cmocka lists after "[  SKIPPED ] N test(s), listed below:".
  snames=$(awk '/^\[  SKIPPED \] [0-9]+ test\(s\)/ { list = 1; next }
                list && /^\[  SKIPPED \] / { sub(/^\[  SKIPPED \] /, ""); printf "%s%s", sep, $0; sep = " " }
                list && !/^\[  SKIPPED \] / { list = 0 }' "$out")
  rm -f "$out"
  if [ -z "$p" ] && [ -z "$f" ]; then
    echo "=== $name: exited $rc without a cmocka summary"
    failed=$((failed + 1))
    continue
  fi
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  if [ "${s:-0}" -gt 0 ]; then
    if [ "$strict" = 1 ]; then
      echo "=== $name: $s test(s) skipped on a host that has KVM, QEMU and userfaultfd: $snames"
      failed=$((failed + s))
    else
      skipped=$((skipped + s))
    fi
  fi
  if [ "$rc" != 0 ] && [ -z "$f" ]; then
    echo "=== $name: exited $rc"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
