#!/usr/bin/env bash
# Runs every Rust test of the workspace and ends with one summary line
# ("N passed, N failed") over all test binaries and doctests.
set -euo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --release 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
