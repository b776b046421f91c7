#!/usr/bin/env bash
# Install the Debian packages livemig needs, only those that are missing.
# Usage: scripts/deps.sh [build|qemu|all]   (default: build)
set -eu
what=${1:-build}
pkgs="build-essential pkg-config libcmocka-dev libzstd-dev libxxhash-dev libjson-c-dev clang libclang-rt-dev"
case "$what" in
  build) ;;
  qemu) pkgs="$pkgs qemu-system-x86 gnuplot-nox" ;;
  all) pkgs="$pkgs qemu-system-x86 gnuplot-nox" ;;
  *) echo "usage: $0 [build|qemu|all]" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
