#!/usr/bin/env bash
# Installs what building policies needs, only when missing: the wasm targets
# and a pinned cargo-component. Safe to run any number of times.
set -euo pipefail

CARGO_COMPONENT_VERSION=0.21.1

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip1 wasm32-wasip2 wasm32-unknown-unknown; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    echo "==> rustup target add $target"
    rustup target add "$target"
  fi
done

if ! cargo component --version 2>/dev/null | grep -q "$CARGO_COMPONENT_VERSION"; then
  echo "==> installing cargo-component $CARGO_COMPONENT_VERSION (takes a few minutes, once)"
  cargo install cargo-component --locked --version "$CARGO_COMPONENT_VERSION"
fi
