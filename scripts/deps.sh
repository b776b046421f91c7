#!/usr/bin/env bash
# The Debian packages livemig needs, in three sets:
#   lib    the library and the livemig command (plain `make`, `make install`)
#   build  lib + what the tests and fuzzers build with (cmocka, clang)
#   all    build + what the e2e tests and benchmarks run (QEMU, gnuplot, socat)
#
# Usage:
#   scripts/deps.sh [lib|build|all]    install the missing packages of a set
#                                      (default: all; as root or with sudo)
#   scripts/deps.sh missing SET        print the missing ones, one line,
#                                      install nothing (empty: none missing)
#   scripts/deps.sh removable          the packages a fresh machine of this
#                                      kind lacks and CI removes first: the
#                                      libraries, cmocka, QEMU, gnuplot, socat,
#                                      not the compilers and build tools
set -eu

tools="build-essential pkg-config"
libs="libzstd-dev libxxhash-dev libjson-c-dev"
test_tools="clang libclang-rt-dev"
test_libs="libcmocka-dev"
run_tools="qemu-system-x86 gnuplot-nox socat"

set_pkgs() {
	case "$1" in
	lib) echo "$tools $libs" ;;
	build) echo "$tools $libs $test_tools $test_libs" ;;
	all) echo "$tools $libs $test_tools $test_libs $run_tools" ;;
	*) echo "deps.sh: unknown package set '$1' (lib, build or all)" >&2; return 2 ;;
	esac
}

missing_of() {
	local p out=""
	for p in $(set_pkgs "$1"); do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
			out="$out $p"
		fi
	done
	echo "${out# }"
}

mode=${1:-all}
case "$mode" in
missing)
	missing_of "${2:?usage: $0 missing lib|build|all}"
	exit 0
	;;
removable)
	echo "$libs $test_libs $run_tools"
	exit 0
	;;
-h | --help)
	sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

set_pkgs "$mode" >/dev/null || { echo "usage: $0 [lib|build|all] | missing SET | removable" >&2; exit 2; }
missing=$(missing_of "$mode")
[ -z "$missing" ] && exit 0
echo "deps: installing: $missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
left=$(missing_of "$mode")
if [ -n "$left" ]; then
	echo "deps: still missing after apt-get install: $left" >&2
	exit 1
fi
