#!/usr/bin/env bash
# Builds a real Kubernetes for the tests (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl, and the pod
# sandbox's pause program) from the Go module proxy, into a cache outside
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

# The stamp names the versions and the build recipe: a change of either
# rebuilds (Go's caches make a relink take seconds).
RECIPE=3
stamp="$bin_dir/kube.version"
want="$KUBE_VERSION $ETCD_VERSION recipe $RECIPE"
programs=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
complete=yes
for program in "${programs[@]}" etcd pause; do
  [ -x "$bin_dir/$program" ] || complete=no
done
if [ "$complete" = yes ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
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
  if [ ! -x "$bin_dir/etcd" ] || ! "$bin_dir/etcd" --version 2>/dev/null | grep -q "${ETCD_VERSION#v}"; then
    go build -o "$bin_dir/etcd" .
  fi
)

echo "==> building ${programs[*]} $KUBE_VERSION (several minutes, once)"
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
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
# Without these the programs say v0.0.0-master, and clients that check the
# server's version (Helm's kubeVersion) refuse it.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
(
  cd "$kube_dir"
  go mod tidy >/dev/null
  for program in "${programs[@]}"; do
    echo "    $program"
    go build -ldflags "$ldflags" -o "$bin_dir/$program" "k8s.io/kubernetes/cmd/$program"
  done
  # The pod sandbox's pause program, from the same Kubernetes source: no
  # registry is needed for the node's sandbox image.
  source_dir=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  gcc -static -Os -DVERSION="3.10" -o "$bin_dir/pause" "$source_dir/build/pause/linux/pause.c"
)
echo "$want" > "$stamp"
