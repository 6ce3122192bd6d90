#!/usr/bin/env bash
# Prints the closing line of `make test`: how many Swift tests passed (Swift Testing
# runs them all; the XCTest runner that precedes it has none and reports 0).
set -euo pipefail
log=${1:?usage: scripts/summary.sh TEST_LOG}
# One line per `swift test` run (make test runs two); add them up.
passed=$(sed -nE 's/.*Test run with ([0-9]+) tests? .*passed.*/\1/p' "$log" | awk '{ s += $1 } END { if (NR) print s }')
if [[ -z "$passed" ]]; then
    echo "no Swift Testing summary found in $log" >&2
    exit 1
fi
python=""
if [[ -n "${2:-}" && -f "$2" ]]; then
    python=$(sed -nE 's/^(.* )?([0-9]+) passed.*/\2/p' "$2" | tail -1)
fi
if [[ -n "$python" ]]; then
    echo "$passed Swift tests and $python Python tests passed, 0 failed"
else
    echo "$passed passed, 0 failed"
fi
