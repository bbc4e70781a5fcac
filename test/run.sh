#!/usr/bin/env bash
# The whole test suite: brings up what it needs (test/setup.sh), runs
# `bun test`, and ends with the plain line `N passed, N failed, N skipped`
# counted from bun's own report. Extra arguments go to `bun test`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash test/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
log=$(mktemp)
# A full run records docs/reliability.md afresh: checks renamed or dropped since do not linger.
if [ "$#" -eq 0 ]; then rm -rf .cache/reliability; fi
node_modules/.bin/bun test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# docs/reliability.md is rendered from what the reliability tests recorded (test/reliability-log.ts).
node_modules/.bin/bun test/reliability-report.ts || true
pass=$(grep -Eo '^ *[0-9]+ pass$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
fail=$(grep -Eo '^ *[0-9]+ fail$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
skip=$(grep -Eo '^ *[0-9]+ skip$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
rm -f "$log"
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
echo "${pass} passed, ${fail} failed, ${skip} skipped"
exit "$status"
