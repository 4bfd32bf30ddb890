#!/usr/bin/env bash
# Many policies on one policy-server: 100 policies over 20 distinct modules
# (five sample policies, component and waPC, each in four variants that
# differ only by a custom section, so that each has its own digest and its
# own compilation), each module used by five policies with other settings.
# Prints the time from start to ready with a cold and with a warm compile
# cache, resident memory when idle, and wrk's requests/s and p99 on one of
# the hundred policies next to a server that serves only that policy.
set -euo pipefail

source "$(dirname "$0")/load-common.sh"
duration=${BENCH_DURATION:-5}
ensure_tool wrk wrk
cargo build --release -q -p palisade-host --bin policy-server
server=${BENCH_SERVER_BIN:-$CARGO_TARGET_DIR/release/policy-server}

# variant <source wasm> <n>: a copy with a custom section `palisade-bench-<n>`
variant() {
  local out="$work/modules/$(basename "$1" .wasm)-$2.wasm"
  local name="palisade-bench-$2"
  cp "$1" "$out"
  # A custom section: id 0, size, name length, name (every size < 128, one LEB byte).
  printf "\\x00\\x$(printf %02x $(( ${#name} + 1 )))\\x$(printf %02x ${#name})%s" "$name" >> "$out"
  echo "$out"
}

mkdir -p "$work/modules"
settings_for() { # <policy> <n>
  case "$1" in
    required-labels) echo "{labels: [run, tier-$2]}" ;;
    allowed-registries) echo "{registries: [registry.example.com, mirror-$2.example.com]}" ;;
    *) echo "{}" ;;
  esac
}
{
  for base in pod-privileged required-labels allowed-registries default-security-context pod-privileged-wapc-wasip1; do
    for v in 1 2 3 4; do
      module=$(variant "$PALISADE_POLICY_DIR/$base.wasm" "$v")
      for s in 1 2 3 4 5; do
        printf '%s-%s-%s:\n  module: file://%s\n  settings: %s\n' "$base" "$v" "$s" "$module" "$(settings_for "$base" "$s")"
        [ "$base" = default-security-context ] && printf '  allowedToMutate: true\n'
      done
    done
  done
} > "$work/many.yml"
printf 'pod-privileged-1-1:\n  module: file://%s/pod-privileged.wasm\n' "$PALISADE_POLICY_DIR" > "$work/one.yml"
echo "==> $(grep -c '^[a-z]' "$work/many.yml") policies on $(ls "$work/modules" | wc -l) modules"

# start <policies file> <cache dir>: starts the server and waits until it
# is ready; sets server_pid and ready_seconds
start() {
  local begin
  begin=$(date +%s.%N)
  "$server" --addr 127.0.0.1 --port 3500 --readiness-probe-port 3501 --policies "$1" \
    --policies-download-dir "$2" --log-level warn >>"$work/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 1 6000); do
    if curl -sf http://127.0.0.1:3501/readiness >/dev/null; then
      ready_seconds=$(awk -v a="$begin" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || { echo "the policy-server exited:" >&2; tail "$work/server.log" >&2; exit 1; }
    sleep 0.01
  done
  echo "the policy-server was not ready within 60 s" >&2
  exit 1
}
stop() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

post_fixture_script pod-create-privileged "$work/request.lua"
load() { # -> "req/s p99"
  local out
  out=$(wrk -t 2 -c 64 -d "${duration}s" --latency -s "$work/request.lua" \
    http://127.0.0.1:3500/validate/pod-privileged-1-1)
  echo "$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out") $(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
}

start "$work/many.yml" "$work/cache"
cold=$ready_seconds
stop
start "$work/many.yml" "$work/cache"
warm=$ready_seconds
sleep 1
idle=$(rss_mib "$server_pid")
read -r many_rps many_p99 < <(load)
stop
start "$work/one.yml" "$work/one"
read -r one_rps one_p99 < <(load)
stop

printf '%-34s %s\n' "start to ready, cold cache" "${cold} s" \
  "start to ready, warm cache" "${warm} s" \
  "resident memory, idle" "${idle} MiB" \
  "one of 100 policies, 64 connections" "${many_rps} req/s, p99 ${many_p99} ms" \
  "the same policy alone" "${one_rps} req/s, p99 ${one_p99} ms"
