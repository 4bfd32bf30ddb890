#!/usr/bin/env bash
# Soak test of the policy-server on loopback over TLS: wrk sends a mix of
# the sample policies (component, upstream-SDK waPC, mutating, settings, a
# group) at about SOAK_LOAD percent (default 80) of the maximum measured at
# the start, for SOAK_SECONDS (default 600). Every 30 s the policies file
# (other settings, a policy added or removed, another group expression) and
# the serving certificate are replaced; every 5 s a policy that loops
# forever is asked and must answer with its time-limit rejection.
#
# The load runs in 10 s rounds of wrk: after each round the script prints
# requests/s, p50/p99, failed requests (non-2xx and socket errors), the
# server's resident memory and open descriptors. The pause between requests
# of each round is set from the previous round's latency so that the rate
# stays at the target. At the end: totals, p99 and memory/descriptor trends
# after the first minute (least-squares slope), a CSV and a PNG plot in
# SOAK_OUT (default $CARGO_TARGET_DIR/soak). Exits non-zero if a request
# failed or a time-limit answer was wrong.
set -euo pipefail

source "$(dirname "$0")/load-common.sh"
seconds=${SOAK_SECONDS:-600}
load=${SOAK_LOAD:-80}
out=${SOAK_OUT:-$CARGO_TARGET_DIR/soak}
connections=64
round=10
swap_every=30
ensure_tool wrk wrk
ensure_tool gnuplot gnuplot-nox
cargo build --release -q -p palisade-host --bin policy-server
server="$CARGO_TARGET_DIR/release/policy-server"
mkdir -p "$out"

self_signed a soak-a
self_signed b soak-b
cp "$work/a.crt" "$work/tls.crt"
cp "$work/a.key" "$work/tls.key"

m="file://$PALISADE_POLICY_DIR"
# Two configurations with the same served ids: every 30 s one replaces the other.
policies() { # labels expression [extra policy]
  cat <<YAML
privileged:
  module: $m/pod-privileged.wasm
privileged-wapc:
  module: $m/pod-privileged-wapc-unknown.wasm
security-context:
  module: $m/default-security-context.wasm
  allowedToMutate: true
labels:
  module: $m/required-labels.wasm
  settings: {labels: [$1]}
group:
  expression: "$2"
  message: "unprivileged or labelled pods only"
  policies:
    privileged: {module: "$m/pod-privileged.wasm"}
    labelled: {module: "$m/required-labels.wasm", settings: {labels: [$1]}}
slow:
  module: $m/endless-loop.wasm
  timeoutEvalSeconds: 1
$3
YAML
}
policies app "privileged() || labelled()" "" > "$work/policies-a.yml"
policies team "privileged() && labelled()" \
  "$(printf 'registries:\n  module: %s/allowed-registries.wasm\n  settings: {registries: [registry.example.com]}' "$m")" \
  > "$work/policies-b.yml"
cp "$work/policies-a.yml" "$work/policies.yml"

cat > "$work/mix.lua" <<LUA
-- Cycles through every served policy with an unprivileged and a privileged pod.
local paths = {"privileged", "privileged-wapc", "security-context", "labels", "group"}
local fixtures = {"pod-create-unprivileged", "pod-create-privileged"}
local requests = {}
local pause = tonumber(os.getenv("SOAK_PAUSE_MS") or "0")
local whole = math.floor(pause)
local fraction = pause - whole
local next_request = 0

init = function(args)
  local headers = {["Content-Type"] = "application/json"}
  for _, fixture in ipairs(fixtures) do
    local f = io.open("$FIXTURES/" .. fixture .. ".json", "rb")
    local body = f:read("*a")
    f:close()
    for _, path in ipairs(paths) do
      table.insert(requests, wrk.format("POST", "/validate/" .. path, headers, body))
    end
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  next_request = math.random(#requests) - 1
end

request = function()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

delay = function()
  if fraction > 0 and math.random() < fraction then return whole + 1 end
  return whole
end
LUA

"$server" --addr 127.0.0.1 --port 3700 --readiness-probe-port 3701 \
  --policies "$work/policies.yml" --policies-download-dir "$work" \
  --cert-file "$work/tls.crt" --key-file "$work/tls.key" --log-level "warn,rustls=error,palisade_host::server=info,palisade_host::server::http=warn" \
  2> "$out/policy-server.log" &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 1 300); do
  curl -sf http://127.0.0.1:3701/readiness >/dev/null && break
  sleep 0.1
done
curl -sf http://127.0.0.1:3701/readiness >/dev/null || { echo "policy-server not ready" >&2; exit 1; }

# One round of wrk: prints "requests rps p50 p99 avg failed".
wrk_round() { # seconds pause_ms
  local out
  out=$(SOAK_PAUSE_MS=$2 wrk -t 2 -c "$connections" -d "${1}s" --timeout 10s --latency \
    -s "$work/mix.lua" https://127.0.0.1:3700)
  local requests rps p50 p99 avg failed
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  avg=$(to_ms "$(awk '$1 == "Latency" { print $2 }' <<<"$out")")
  failed=$(awk '/Non-2xx/ { n += $5 } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
  echo "$requests $rps $p50 $p99 $avg $failed"
}

# Replaces the policies file and the certificate every 30 s.
(
  turn=b
  while sleep "$swap_every"; do
    cp "$work/policies-$turn.yml" "$work/policies.next" && mv "$work/policies.next" "$work/policies.yml"
    cp "$work/$turn.key" "$work/key.next" && cp "$work/$turn.crt" "$work/crt.next"
    mv "$work/key.next" "$work/tls.key" && mv "$work/crt.next" "$work/tls.crt"
    turn=$([ "$turn" = a ] && echo b || echo a)
  done
) &
pids+=($!)

# Asks the looping policy every 5 s: the answer must be its time-limit rejection.
: > "$work/slow.log"
(
  review=$(cat "$FIXTURES/pod-create-unprivileged.json")
  while sleep 5; do
    answer=$(curl -sk --max-time 10 -H 'Content-Type: application/json' -d "$review" \
      -w ' %{http_code}' https://127.0.0.1:3700/validate/slow || echo " curl-failed")
    if [[ "$answer" == *'"allowed":false'* && "$answer" == *"time limit"* && "$answer" == *" 200" ]]; then
      echo ok >> "$work/slow.log"
    else
      echo "wrong: ${answer: -300}" >> "$work/slow.log"
    fi
  done
) &
pids+=($!)

# The maximum of this workload, reloads and time-limit answers included:
# three rounds of wrk without a pause, averaged.
echo "==> measuring the maximum: 3 rounds of ${round}s, $connections connections, no pause"
max_rps=0
max_avg=0
total=0
total_failed=0
for _ in 1 2 3; do
  read -r requests rps _ p99 avg failed < <(wrk_round "$round" 0)
  echo "  $rps requests/s, p99 $p99 ms, $failed failed"
  max_rps=$(( max_rps + rps / 3 ))
  max_avg=$avg
  total=$(( total + requests ))
  total_failed=$(( total_failed + failed ))
done
target=$(( max_rps * load / 100 ))
echo "maximum $max_rps requests/s; target $target requests/s ($load%)"

csv="$out/soak.csv"
echo "seconds,requests_per_second,p50_ms,p99_ms,failed,rss_mib,open_fds" > "$csv"
pause=$(awk -v c="$connections" -v t="$target" -v a="$max_avg" 'BEGIN { p = 1000 * c / t - a; printf "%.3f", (p > 0 ? p : 0) }')
printf '%8s %9s %8s %8s %7s %8s %5s %8s\n' time "req/s" "p50 ms" "p99 ms" failed "RSS MiB" fds "pause ms"
elapsed=0
started=$(date +%s)
while [ "$elapsed" -lt "$seconds" ]; do
  read -r requests rps p50 p99 avg failed < <(wrk_round "$round" "$pause")
  elapsed=$(( $(date +%s) - started ))
  rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status")
  fds=$(find "/proc/$server_pid/fd" -mindepth 1 | wc -l)
  total=$(( total + requests ))
  total_failed=$(( total_failed + failed ))
  printf '%7ss %9s %8s %8s %7s %8s %5s %8s\n' "$elapsed" "$rps" "$p50" "$p99" "$failed" "$rss" "$fds" "$pause"
  echo "$elapsed,$rps,$p50,$p99,$failed,$rss,$fds" >> "$csv"
  # Each connection sends one request per (pause + latency): move the pause
  # by the difference between the cycle that gives the target and this one's.
  pause=$(awk -v c="$connections" -v t="$target" -v r="$rps" -v p="$pause" 'BEGIN { p += 1000 * c / t - (r > 0 ? 1000 * c / r : 0); printf "%.3f", (p > 0 ? p : 0) }')
done

slow_ok=$(grep -c '^ok$' "$work/slow.log" || true)
slow_wrong=$(grep -c '^wrong' "$work/slow.log" || true)
reloads=$(grep -c "new policy set serving" "$out/policy-server.log" || true)
cert_reloads=$(grep -c "TLS certificate reloaded" "$out/policy-server.log" || true)

# Trends after the first minute: least-squares slope, per 10 minutes.
summary=$(awk -F, 'NR > 1 && $1 > 60 {
    n++; sx += $1; sy += $6; sxx += $1 * $1; sxy += $1 * $6; sf += $7; sxf += $1 * $7
    if (minr == "" || $6 < minr) minr = $6; if ($6 > maxr) maxr = $6
    if (minf == "" || $7 < minf) minf = $7; if ($7 > maxf) maxf = $7
    if (minp == "" || $4 < minp) minp = $4; if ($4 > maxp) maxp = $4; sp += $4; srps += $2
  } END {
    if (n < 2) { print "too short for trends (needs more than 70 s)"; exit }
    d = n * sxx - sx * sx
    printf "after the first minute (%d samples): %.0f requests/s on average\n", n, srps / n
    printf "  p99 %.2f..%.2f ms (mean %.2f)\n", minp, maxp, sp / n
    printf "  RSS %.1f..%.1f MiB, trend %+.2f MiB per 10 min\n", minr, maxr, 600 * (n * sxy - sx * sy) / d
    printf "  open descriptors %d..%d, trend %+.2f per 10 min\n", minf, maxf, 600 * (n * sxf - sx * sf) / d
  }' "$csv")

echo
echo "soak: ${seconds}s at $target requests/s target ($load% of $max_rps), TLS, $connections connections"
echo "  $total requests (the maximum's rounds included), $total_failed failed"
echo "  policies file and certificate replaced every ${swap_every}s: $reloads policy sets and $cert_reloads certificates loaded"
echo "  looping policy: $slow_ok time-limit answers, $slow_wrong wrong"
echo "$summary"

gnuplot <<GNUPLOT
set terminal pngcairo size 900,900 font ",10"
set output "$out/soak.png"
set datafile separator ","
set key off
set grid
set xlabel "seconds"
set multiplot layout 3,1 title "policy-server soak: $target req/s target over TLS, policies and certificate replaced every ${swap_every} s"
set ylabel "requests/s"
set yrange [0:*]
plot "$csv" using 1:2 skip 1 with linespoints pt 7 ps 0.5
set ylabel "latency ms (p50, p99)"
set key top right
plot "$csv" using 1:3 skip 1 with linespoints pt 7 ps 0.5 title "p50", \
     "$csv" using 1:4 skip 1 with linespoints pt 7 ps 0.5 title "p99"
set ylabel "RSS MiB / open fds"
set key bottom right
plot "$csv" using 1:6 skip 1 with linespoints pt 7 ps 0.5 title "RSS MiB", \
     "$csv" using 1:7 skip 1 with linespoints pt 7 ps 0.5 title "open fds"
unset multiplot
GNUPLOT
echo "  CSV $csv, plot $out/soak.png, server log $out/policy-server.log"

[ "$total_failed" -eq 0 ] && [ "$slow_wrong" -eq 0 ] && [ "$slow_ok" -gt 0 ]
