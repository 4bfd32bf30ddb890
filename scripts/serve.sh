#!/usr/bin/env bash
# Starts the policy-server on 127.0.0.1:3000 (plain HTTP; readiness and
# metrics on :8081) with the sample policies and an embedded default
# configuration, or with your own policies file: POLICIES=path/policies.yml.
# Stop it with Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
: "${CARGO_TARGET_DIR:=$root/target}"
: "${PALISADE_POLICY_DIR:=$CARGO_TARGET_DIR/policies}"
export CARGO_TARGET_DIR
echo "==> building the policy-server"
cargo build --release -p palisade-host --bin policy-server
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -n "${POLICIES:-}" ]]; then
  [[ -f "$POLICIES" ]] || { echo "error: POLICIES=$POLICIES: no such file" >&2; exit 1; }
  echo "==> serving $POLICIES"
  "$CARGO_TARGET_DIR/release/policy-server" --addr 127.0.0.1 --policies "$POLICIES" --policies-download-dir "$work"
  exit
fi
cat > "$work/policies.yml" <<YAML
pod-privileged:
  module: file://$PALISADE_POLICY_DIR/pod-privileged.wasm
required-labels:
  module: file://$PALISADE_POLICY_DIR/required-labels.wasm
  policyMode: monitor
  settings: {labels: [app]}
default-security-context:
  module: file://$PALISADE_POLICY_DIR/default-security-context.wasm
  allowedToMutate: true
YAML
echo "==> policies.yml:"; cat "$work/policies.yml"
echo "==> try: curl -s -XPOST --data-binary @fixtures/admission/pod-create-privileged.json localhost:3000/validate/pod-privileged"
"$CARGO_TARGET_DIR/release/policy-server" --addr 127.0.0.1 --policies "$work/policies.yml" --policies-download-dir "$work"
