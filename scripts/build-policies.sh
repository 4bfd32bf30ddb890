#!/usr/bin/env bash
# Builds every sample policy with `cargo component build --release`, embeds
# its metadata with `palisade annotate`, and puts the results in
# "$CARGO_TARGET_DIR/policies/<name>.wasm" (the host's tests read them there).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${CARGO_TARGET_DIR:=$root/target}"
export CARGO_TARGET_DIR

"$root/scripts/ensure-tools.sh"

policies=(pod-privileged required-labels allowed-registries default-security-context namespace-labels)
test_only=(endless-loop unbounded-alloc dns-lookup panics host-calls)

packages=()
for p in "${policies[@]}" "${test_only[@]}"; do packages+=(-p "$p"); done
echo "==> cargo component build --release ${packages[*]}"
cargo component build --release "${packages[@]}"
# Raw policies apart: their SDK feature `raw` (the `raw-policy` world) would
# unify into the Kubernetes policies' build.
raw_policies=(raw-access)
for p in "${raw_policies[@]}"; do
  echo "==> cargo component build --release -p $p"
  cargo component build --release -p "$p"
done

echo "==> building the palisade CLI to annotate them (a few minutes the first time)"
cargo build --release -p palisade-host --bin palisade
palisade="$CARGO_TARGET_DIR/release/palisade"

out="$CARGO_TARGET_DIR/policies"
mkdir -p "$out"
built="$CARGO_TARGET_DIR/wasm32-wasip1/release"
for p in "${policies[@]}" "${raw_policies[@]}"; do
  "$palisade" annotate "$built/${p//-/_}.wasm" \
    --metadata "sample-policies/$p/metadata.yml" --output "$out/$p.wasm"
done
for p in "${test_only[@]}"; do
  cp "$built/${p//-/_}.wasm" "$out/$p.wasm"
done
# Legacy policies, built as Kubewarden users build theirs (a separate
# workspace with its own lock file, the upstream SDK, plain cargo build).
echo "==> cargo build --release (legacy waPC and WASI policies)"
legacy=sample-policies/legacy/Cargo.toml
cargo build --release --manifest-path "$legacy" --target wasm32-wasip1
cargo build --release --manifest-path "$legacy" --target wasm32-unknown-unknown -p pod-privileged-wapc
"$palisade" annotate "$CARGO_TARGET_DIR/wasm32-wasip1/release/pod_privileged_wapc.wasm" \
  --metadata sample-policies/legacy/pod-privileged-wapc/metadata.yml --output "$out/pod-privileged-wapc-wasip1.wasm"
"$palisade" annotate "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/pod_privileged_wapc.wasm" \
  --metadata sample-policies/legacy/pod-privileged-wapc/metadata.yml --output "$out/pod-privileged-wapc-unknown.wasm"
"$palisade" annotate "$CARGO_TARGET_DIR/wasm32-wasip1/release/pod-privileged-wasi.wasm" \
  --metadata sample-policies/legacy/pod-privileged-wasi/metadata.yml --output "$out/pod-privileged-wasi.wasm"
"$palisade" annotate "$CARGO_TARGET_DIR/wasm32-wasip1/release/raw_access_wapc.wasm" \
  --metadata sample-policies/legacy/raw-access-wapc/metadata.yml --output "$out/raw-access-wapc.wasm"
"$palisade" annotate "$CARGO_TARGET_DIR/wasm32-wasip1/release/host_capabilities_wapc.wasm" \
  --metadata sample-policies/legacy/host-capabilities-wapc/metadata.yml --output "$out/host-capabilities-wapc.wasm"

echo "==> policies in $out:"
ls -l "$out"
