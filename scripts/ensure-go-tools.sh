#!/usr/bin/env bash
# Builds the Go programs the tests run for real (the CNCF distribution
# registry), from the Go module proxy, into a cache outside the clone. Only
# rebuilds when the pinned version changes; Go's own caches keep it quick.
set -euo pipefail

REGISTRY_VERSION=v3.0.0
bin_dir=${PALISADE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/bin}
mkdir -p "$bin_dir"

stamp="$bin_dir/registry.version"
if [ ! -x "$bin_dir/registry" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$REGISTRY_VERSION" ]; then
  echo "==> building the distribution registry $REGISTRY_VERSION (a few minutes, once)"
  GOBIN="$bin_dir" GOFLAGS=-buildvcs=false go install "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
  echo "$REGISTRY_VERSION" > "$stamp"
fi
