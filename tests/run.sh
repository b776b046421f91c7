#!/usr/bin/env bash
# Run cmocka test binaries one after another and add up their summaries.
# Ends with the single line "N passed, N failed" for the whole suite.
# A binary that dies without printing its summary counts as one failure.
set -u
passed=0
failed=0
for t in "$@"; do
  name=$(basename "$t")
  echo "=== $name"
  out=$(mktemp)
  "$t" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\..*/\1/p' "$out" | tail -n 1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' "$out" | tail -n 1)
  rm -f "$out"
  if [ -z "$p" ] && [ -z "$f" ]; then
    echo "=== $name: exited $rc without a cmocka summary"
    failed=$((failed + 1))
    continue
  fi
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  if [ "$rc" != 0 ] && [ -z "$f" ]; then
    echo "=== $name: exited $rc"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
