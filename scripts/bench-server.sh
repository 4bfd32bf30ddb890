#!/usr/bin/env bash
# Load test of the policy-server on loopback with wrk: pod-privileged as a
# component (fresh instance per request) next to two baselines, over plain
# HTTP and TLS, at 1, 8 and 64 connections, on an accepted and a rejected
# request: `native` runs the same policy code behind the policy-server's own
# HTTP stack and handlers (what WebAssembly costs), `minimal` is the same
# check written directly on hyper and serde_json with nothing else (what the
# whole request path costs). Prints requests/s, p50, p99, resident memory,
# server CPU per request (µs, user + system, from /proc) and the
# policy-server's share of each baseline's requests/s.
set -euo pipefail

source "$(dirname "$0")/load-common.sh"
duration=${BENCH_DURATION:-5}
policy=${BENCH_POLICY:-pod-privileged}
ensure_tool wrk wrk
cargo build --release -q -p palisade-host --bin policy-server --example native-baseline-server --example minimal-webhook
server="$CARGO_TARGET_DIR/release/policy-server"
native="$CARGO_TARGET_DIR/release/examples/native-baseline-server"
minimal="$CARGO_TARGET_DIR/release/examples/minimal-webhook"

self_signed tls localhost
printf 'pod-privileged:\n  module: file://%s/%s.wasm\n' "$PALISADE_POLICY_DIR" "$policy" > "$work/policies.yml"

wait_ready() {
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1/readiness" >/dev/null && return 0
    sleep 0.1
  done
  echo "server on readiness port $1 did not become ready" >&2
  exit 1
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
clock_ticks=$(getconf CLK_TCK)

run_wrk() { # url, connections, lua script, server pid -> "rps p50 p99 cpu-us-per-request errors"
  local threads=$(( $2 > 1 ? 2 : 1 ))
  local out before after
  before=$(cpu_ticks "$4")
  out=$(wrk -t "$threads" -c "$2" -d "${duration}s" --latency -s "$3" "$1")
  after=$(cpu_ticks "$4")
  local rps p50 p99 errors cpu
  rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$clock_ticks" '/requests in/ { printf "%.1f", ($1 > 0 ? t * 1e6 / hz / $1 : 0) }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  errors=$(awk '/Non-2xx/ { print $5 } /Socket errors/ { print "socket:" $0 }' <<<"$out" | tr '\n' ' ')
  echo "$rps $p50 $p99 $cpu ${errors:-0}"
}

rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

printf '%-6s %-12s %5s | %-35s | %-35s | %-35s | %s\n' transport fixture conns \
  "palisade req/s p50 p99 RSS CPU/req" "native req/s p50 p99 RSS CPU/req" "minimal req/s p50 p99 RSS CPU/req" \
  "palisade/native palisade/minimal"
for transport in http tls; do
  tls_args=()
  native_tls=()
  scheme=http
  if [ "$transport" = tls ]; then
    tls_args=(--cert-file "$work/tls.crt" --key-file "$work/tls.key")
    native_tls=("$work/tls.crt" "$work/tls.key")
    scheme=https
  fi
  "$server" --addr 127.0.0.1 --port 3500 --readiness-probe-port 3501 --policies "$work/policies.yml" \
    --policies-download-dir "$work" --log-level "warn,rustls=error" "${tls_args[@]}" &
  pids+=($!); server_pid=$!
  "$native" 3600 3601 "${native_tls[@]}" &
  pids+=($!); native_pid=$!
  "$minimal" 3700 3701 "${native_tls[@]}" &
  pids+=($!); minimal_pid=$!
  wait_ready 3501
  wait_ready 3601
  wait_ready 3701
  for fixture in pod-create-unprivileged pod-create-privileged; do
    post_fixture_script "$fixture" "$work/$fixture.lua"
    for conns in 1 8 64; do
      read -r p_rps p_p50 p_p99 p_cpu p_err < <(run_wrk "$scheme://127.0.0.1:3500/validate/pod-privileged" "$conns" "$work/$fixture.lua" "$server_pid")
      read -r n_rps n_p50 n_p99 n_cpu n_err < <(run_wrk "$scheme://127.0.0.1:3600/validate/pod-privileged" "$conns" "$work/$fixture.lua" "$native_pid")
      read -r m_rps m_p50 m_p99 m_cpu m_err < <(run_wrk "$scheme://127.0.0.1:3700/validate/pod-privileged" "$conns" "$work/$fixture.lua" "$minimal_pid")
      ratio=$(awk -v a="$p_rps" -v b="$n_rps" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }')
      minimal_ratio=$(awk -v a="$p_rps" -v b="$m_rps" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }')
      printf '%-6s %-12s %5s | %7s %6sms %6sms %4sMiB %5sµs | %7s %6sms %6sms %4sMiB %5sµs | %7s %6sms %6sms %4sMiB %5sµs | %15s %16s\n' \
        "$transport" "${fixture#pod-create-}" "$conns" \
        "$p_rps" "$p_p50" "$p_p99" "$(rss_mib "$server_pid")" "$p_cpu" \
        "$n_rps" "$n_p50" "$n_p99" "$(rss_mib "$native_pid")" "$n_cpu" \
        "$m_rps" "$m_p50" "$m_p99" "$(rss_mib "$minimal_pid")" "$m_cpu" "$ratio" "$minimal_ratio"
      [ "$p_err" = 0 ] || echo "  palisade non-2xx/errors: $p_err"
      [ "$n_err" = 0 ] || echo "  native non-2xx/errors: $n_err"
      [ "$m_err" = 0 ] || echo "  minimal non-2xx/errors: $m_err"
    done
  done
  kill "$server_pid" "$native_pid" "$minimal_pid"
  wait "$server_pid" "$native_pid" "$minimal_pid" 2>/dev/null || true
done
