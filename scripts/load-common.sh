# Sourced by the load scripts (bench-server.sh, bench-policies.sh, soak.sh):
# the project's paths, Debian tools installed when missing, a work directory
# removed on exit with the processes listed in `pids`, self-signed
# certificates, wrk scripts that post a fixture, and wrk's figures in ms.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
: "${CARGO_TARGET_DIR:=$root/target}"
: "${PALISADE_POLICY_DIR:=$CARGO_TARGET_DIR/policies}"
: "${FIXTURES:=$root/fixtures/admission}"
export CARGO_TARGET_DIR

# ensure_tool <command> <Debian package>
ensure_tool() {
  command -v "$1" >/dev/null && return 0
  echo "==> installing $2"
  apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
}

# to_ms <wrk duration>: wrk prints 1.23ms, 456.78us or 1.02s
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# A work directory; on exit the processes in `pids` are stopped and it is removed.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# post_fixture_script <fixture> <lua file>: a wrk script that POSTs
# $FIXTURES/<fixture>.json
post_fixture_script() {
  cat > "$2" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$FIXTURES/$1.json", "rb")
wrk.body = f:read("*a")
f:close()
LUA
}

# self_signed <name> <common name>: $work/<name>.crt and .key for 127.0.0.1
self_signed() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=$2" -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/$1.key" -out "$work/$1.crt" 2>/dev/null
}
