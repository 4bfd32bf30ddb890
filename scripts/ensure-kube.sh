#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the tests (etcd, kube-apiserver,
# kube-controller-manager) from the Go module proxy, into a cache outside
# the clone. k8s.io/kubernetes builds as a dependency only with its staging
# modules replaced by their published versions; the replace lines are read
# from its own go.mod. Rebuilds only when a pinned version changes.
set -euo pipefail

KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
bin_dir=${PALISADE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/bin}
work=${PALISADE_GO_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/go-build}
mkdir -p "$bin_dir" "$work"
export GOFLAGS=-buildvcs=false

stamp="$bin_dir/kube.version"
want="$KUBE_VERSION $ETCD_VERSION"
if [ -x "$bin_dir/kube-apiserver" ] && [ -x "$bin_dir/kube-controller-manager" ] && [ -x "$bin_dir/etcd" ] \
  && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

echo "==> building etcd $ETCD_VERSION"
etcd_dir="$work/etcd"
mkdir -p "$etcd_dir"
cat > "$etcd_dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
(
  cd "$etcd_dir"
  [ -f go.mod ] || go mod init palisade.local/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  go mod tidy >/dev/null
  go build -o "$bin_dir/etcd" .
)

echo "==> building kube-apiserver and kube-controller-manager $KUBE_VERSION (several minutes, once)"
kube_dir="$work/kube"
mkdir -p "$kube_dir"
gomod_path=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
staging_version="v0.${KUBE_VERSION#v1.}"
{
  echo "module palisade.local/kube"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  grep -E '^\s+k8s.io/[^ ]+ => ./staging/' "$gomod_path" | awk -v v="$staging_version" '{ print "\t" $1 " => " $1 " " v }'
  echo ")"
} > "$kube_dir/go.mod"
cat > "$kube_dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
(
  cd "$kube_dir"
  go mod tidy >/dev/null
  go build -o "$bin_dir/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  go build -o "$bin_dir/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
)
echo "$want" > "$stamp"
