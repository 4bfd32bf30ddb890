#!/usr/bin/env bash
# Installs what the fuzz targets need, only when missing: a nightly Rust
# toolchain (for them only; everything else builds on stable) and a pinned
# cargo-fuzz. Safe to run any number of times.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "==> rustup toolchain install nightly (for the fuzz targets only)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION (once)"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
