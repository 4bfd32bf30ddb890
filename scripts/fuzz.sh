#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default FUZZ_SECONDS or
# 60) and prints executions per target and in total. Corpora grow in the
# cache directory, seeded from fuzz/seeds/<target> and, for AdmissionReviews,
# the fixtures. A crash, a hang (one input over 10 s) or memory over 2 GiB
# stops the run with the input saved and a non-zero exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-${FUZZ_SECONDS:-60}}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/palisade/fuzz
: "${FIXTURES:=$root/fixtures/admission}"
# The wit_imports target loads the host-calls test policy from here (make policies).
: "${PALISADE_POLICY_DIR:=${CARGO_TARGET_DIR:-$root/target}/policies}"
export PALISADE_POLICY_DIR
"$root/scripts/ensure-fuzz-tools.sh"

cd "$root/fuzz"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/fuzz"
fuzz=(cargo +nightly fuzz)
options=(-O --sanitizer none)
echo "==> building the fuzz targets (nightly, in $CARGO_TARGET_DIR)"
"${fuzz[@]}" build "${options[@]}"

total=0
summary=()
for target in $("${fuzz[@]}" list); do
  corpus="$cache/corpus/$target"
  artifacts="$cache/artifacts/$target/"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [ -d "seeds/$target" ] && seeds+=("seeds/$target")
  [ "$target" = admission_review ] && seeds+=("$FIXTURES")
  log="$cache/$target.log"
  echo "==> $target for ${seconds}s"
  if ! "${fuzz[@]}" run "${options[@]}" "$target" "$corpus" "${seeds[@]}" -- \
      -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "error: $target failed; the input is in $artifacts" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
  summary+=("$(printf '%-26s %12s executions in %ss' "$target" "${runs:-0}" "$seconds")")
  total=$((total + ${runs:-0}))
done
printf '%s\n' "${summary[@]}"
printf '%-26s %12s executions, 0 crashes\n' "total" "$total"
