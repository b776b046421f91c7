#!/usr/bin/env bash
# Live migration of real guests on this machine: one row per (memory,
# workload), with the figures the source reports (QEMU's names).
# usage: bench/live.sh [LIVEMIG] [GUEST]   env: SIZES="2G 8G" WORKLOADS="idle memtouch hotset"
# (also WORKLOADS=memtouch1g: 1 GiB touched, e.g. with SIZES=64G)
set -u
LIVEMIG=${1:-build/livemig}
GUEST=${2:-guest/guest.elf}
SIZES=${SIZES:-"2G 8G"}
WORKLOADS=${WORKLOADS:-"idle memtouch hotset"}
dir=$(mktemp -d /tmp/livemig-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
wait_for() { local i; for ((i = 0; i < $3 * 10; i++)); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
num() { sed -n "s/.*\"$2\": *\([0-9.]*\).*/\1/p" "$1" | head -n1; }

printf '%-5s %-9s %10s %10s %10s %9s %7s %12s %7s\n' mem workload total_ms downtime_ms expected_ms setup_ms rounds wire_MiB verify
for mem in $SIZES; do
	for w in $WORKLOADS; do
		case $w in
		hotset) app="workload=hotset wss=256M rate=50M verify=1" ;;
		memtouch) app="workload=memtouch verify=1" ;;
		memtouch1g) app="workload=memtouch mem=1G verify=1" ;; # a big guest, 1 GiB touched
		*) app="workload=$w verify=1" ;;
		esac
		rm -f "$dir"/*
		"$LIVEMIG" run "$GUEST" --mem "$mem" --append "$app" --console "$dir/src.log" --control "$dir/src.sock" &
		pids=($!)
		"$LIVEMIG" incoming --listen tcp:127.0.0.1:0 --once --console "$dir/dst.log" 2>"$dir/dst.err" &
		pids+=($!)
		if ! wait_for "$dir/src.log" '^progress ' 60 || ! wait_for "$dir/dst.err" 'listening' 10; then
			echo "$mem $w: the guest or the destination did not start" >&2
			kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; continue
		fi
		[ "${w#memtouch}" != "$w" ] && wait_for "$dir/src.log" '^memtouch done' 120
		sleep 1
		port=$(sed -n 's/.*listening on tcp:127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/dst.err" | head -n1)
		"$LIVEMIG" migrate --control "$dir/src.sock" --to "tcp:127.0.0.1:$port" --json >"$dir/out.json" 2>"$dir/mig.err"
		rc=$?
		v="-"
		if [ $rc = 0 ] && wait_for "$dir/dst.log" '^verify (ok|FAIL)' 60; then
			grep -q '^verify FAIL' "$dir/dst.log" && v=FAIL || v=ok
		fi
		if [ $rc = 0 ]; then
			printf '%-5s %-9s %10s %10s %10s %9s %7s %12.1f %7s\n' "$mem" "$w" "$(num "$dir/out.json" total-time)" \
				"$(sed -n 's/.*"downtime-us": *\([0-9]*\).*/\1/p' "$dir/out.json" | awk '{printf "%.1f", $1/1000}')" \
				"$(num "$dir/out.json" expected-downtime)" "$(num "$dir/out.json" setup-time)" \
				"$(num "$dir/out.json" rounds)" \
				"$(num "$dir/out.json" transferred | awk '{print $1/1048576}')" "$v"
		else
			echo "$mem $w: migration failed: $(cat "$dir/mig.err")"
		fi
		kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null
	done
done
