#!/usr/bin/env bash
# Builds Helm from the Go module proxy into the tools cache, once per
# version. The link flags give it its real version and the Kubernetes
# version it assumes when rendering without a cluster (`helm template`,
# `helm lint`), as Helm's own build does.
set -euo pipefail

HELM_VERSION=v3.19.5
KUBE_MINOR=34
bin_dir=${PALISADE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/bin}
work=${PALISADE_GO_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/go-build}/helm
mkdir -p "$bin_dir" "$work"
export GOFLAGS=-buildvcs=false

stamp="$bin_dir/helm.version"
if [ -x "$bin_dir/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HELM_VERSION" ]; then
  exit 0
fi

echo "==> building helm $HELM_VERSION (a few minutes, once)"
cat >"$work/go.mod" <<GO
module palisade.local/helm

go 1.24

require helm.sh/helm/v3 $HELM_VERSION
GO
cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$KUBE_MINOR"
done
(
  cd "$work"
  go mod tidy >/dev/null
  go build -ldflags "$ldflags" -o "$bin_dir/helm" helm.sh/helm/v3/cmd/helm
)
echo "$HELM_VERSION" >"$stamp"
