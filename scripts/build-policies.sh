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

policies=(pod-privileged required-labels allowed-registries default-security-context)
test_only=(endless-loop unbounded-alloc dns-lookup)

packages=()
for p in "${policies[@]}" "${test_only[@]}"; do packages+=(-p "$p"); done
echo "==> cargo component build --release ${packages[*]}"
cargo component build --release "${packages[@]}"

echo "==> building the palisade CLI to annotate them"
cargo build --release -q -p palisade-host --bin palisade
palisade="$CARGO_TARGET_DIR/release/palisade"

out="$CARGO_TARGET_DIR/policies"
mkdir -p "$out"
built="$CARGO_TARGET_DIR/wasm32-wasip1/release"
for p in "${policies[@]}"; do
  "$palisade" annotate "$built/${p//-/_}.wasm" \
    --metadata "sample-policies/$p/metadata.yml" --output "$out/$p.wasm"
done
for p in "${test_only[@]}"; do
  cp "$built/${p//-/_}.wasm" "$out/$p.wasm"
done
echo "==> policies in $out:"
ls -l "$out"
