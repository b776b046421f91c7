#!/usr/bin/env bash
# make demo: a live migration of a running VM on this machine, with its report.
#
# Starts a 2 GiB guest running `hotset` (rewriting random pages of a 256 MiB
# working set at 50 MB/s, self-verifying), starts the incoming side on
# loopback, migrates while the guest writes, and prints the report. Exits 0
# only if the migration completed, the destination verified the RAM digest,
# the source's completeness check found every page of its paused copy equal
# to what was sent, and the guest's own check of every page passed on the
# destination.
set -u -o pipefail
LIVEMIG=${1:-build/livemig}
GUEST=${2:-guest/guest.elf}
MEM=${DEMO_MEM:-2G}
APPEND=${DEMO_APPEND:-"workload=hotset wss=256M rate=50M verify=1 seed=7"}
dir=$(mktemp -d /tmp/livemig-demo.XXXXXX)
src_pid=""
dst_pid=""
cleanup() {
	[ -n "$src_pid" ] && kill "$src_pid" 2>/dev/null
	[ -n "$dst_pid" ] && kill "$dst_pid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
fail() {
	echo "demo: FAILED: $*" >&2
	for f in src.log dst.log dst.err; do
		[ -s "$dir/$f" ] && { echo "--- $f (last lines)" >&2; tail -n 5 "$dir/$f" >&2; }
	done
	exit 1
}
# wait_for FILE REGEX SECONDS
wait_for() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		grep -qE "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

echo "== source: livemig run $GUEST --mem $MEM --append \"$APPEND\""
"$LIVEMIG" run "$GUEST" --mem "$MEM" --append "$APPEND" \
	--console "$dir/src.log" --control "$dir/src.sock" &
src_pid=$!
wait_for "$dir/src.log" '^progress ' 30 || fail "the source guest did not start"
grep -m1 '^verify ' "$dir/src.log" | sed 's/^/   source guest: /'
grep -m1 '^progress ' "$dir/src.log" | sed 's/^/   source guest: /'

echo "== destination: livemig incoming --listen tcp:127.0.0.1:0"
"$LIVEMIG" incoming --listen tcp:127.0.0.1:0 --once \
	--console "$dir/dst.log" --control "$dir/dst.sock" 2>"$dir/dst.err" &
dst_pid=$!
wait_for "$dir/dst.err" 'listening on tcp:' 10 || fail "the destination did not listen"
port=$(sed -n 's/.*listening on tcp:127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/dst.err" | head -n1)

sleep 1 # let the guest write for a while: this is a live migration
echo "== livemig migrate --control src.sock --to tcp:127.0.0.1:$port"
"$LIVEMIG" migrate --control "$dir/src.sock" --to "tcp:127.0.0.1:$port" | tee "$dir/report" ||
	fail "the migration did not complete, or did not verify"
grep -qE '^ +verify\.status +ok$' "$dir/report" ||
	fail "the source's completeness check did not report every page ok"
wait "$src_pid"
src_rc=$?
src_pid=""
# 10: the source's VM migrated away (docs/cli.md, exit status); 0 would mean
# the guest powered off there.
[ "$src_rc" = 10 ] || fail "the source exited with $src_rc after the migration (10: migrated away)"
last_src=$(grep '^progress ' "$dir/src.log" | tail -n1 | sed -n 's/.* writes=\([0-9]*\).*/\1/p')

echo "== destination"
grep 'livemig incoming: migration received' "$dir/dst.err" | sed 's/^/   /'
grep -q 'digest ok' "$dir/dst.err" || fail "the destination did not verify the RAM digest"
wait_for "$dir/dst.log" '^verify (ok|FAIL)' 60 || fail "the guest did not check its pages on the destination"
grep -m1 -E '^verify (ok|FAIL)' "$dir/dst.log" | sed 's/^/   destination guest: /'
grep -q '^verify FAIL' "$dir/dst.log" && fail "the guest found a bad page after the migration"
wait_for "$dir/dst.log" '^progress ' 10 || fail "the guest does not make progress on the destination"
sleep 1.2
last_dst=$(grep '^progress ' "$dir/dst.log" | tail -n1 | sed -n 's/.* writes=\([0-9]*\).*/\1/p')
grep '^progress ' "$dir/dst.log" | tail -n1 | sed 's/^/   destination guest: /'
[ -n "$last_src" ] && [ -n "$last_dst" ] && [ "$last_dst" -gt "$last_src" ] ||
	fail "the guest's write counter did not continue (source $last_src, destination $last_dst)"
echo "   the guest's write counter went on from $last_src (source) to $last_dst (destination)"
kill "$dst_pid" 2>/dev/null
wait "$dst_pid" 2>/dev/null
dst_pid=""
echo "demo: OK: migrated live, digest verified, guest self-check passed on the destination"
