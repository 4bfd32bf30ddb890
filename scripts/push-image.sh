#!/usr/bin/env bash
# Pushes an OCI image-layout tar (what scripts/build-images.sh writes) to a
# registry with the distribution API, without a container engine:
#
#   scripts/push-image.sh TAR HOST[:PORT]/REPOSITORY:TAG [--plain-http]
#
# Blobs the registry already has are not sent again. Credentials, when the
# registry needs them, come from REGISTRY_USER and REGISTRY_PASSWORD (basic
# authentication).
set -euo pipefail

tar_file=${1:?usage: push-image.sh TAR HOST/REPOSITORY:TAG [--plain-http]}
reference=${2:?usage: push-image.sh TAR HOST/REPOSITORY:TAG [--plain-http]}
scheme=https
[ "${3:-}" = --plain-http ] && scheme=http
host=${reference%%/*}
rest=${reference#*/}
repository=${rest%:*}
tag=${rest##*:}
[ "$repository" != "$rest" ] || { echo "no tag in $reference" >&2; exit 1; }
base="$scheme://$host/v2/$repository"
auth=()
[ -n "${REGISTRY_USER:-}" ] && auth=(--user "$REGISTRY_USER:${REGISTRY_PASSWORD:-}")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xf "$tar_file" -C "$work"
manifest=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$work/index.json")
[ -n "$manifest" ] || { echo "$tar_file: no manifest in index.json" >&2; exit 1; }

for blob in "$work"/blobs/sha256/*; do
  digest=sha256:$(basename "$blob")
  [ "$(basename "$blob")" = "$manifest" ] && continue
  if curl -fsS -o /dev/null -I "${auth[@]}" "$base/blobs/$digest" 2>/dev/null; then
    continue
  fi
  location=$(curl -fsS -D - -o /dev/null -X POST "${auth[@]}" "$base/blobs/uploads/" \
    | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$location" in
    http*) ;;
    *) location="$scheme://$host$location" ;;
  esac
  separator='?'
  case "$location" in *\?*) separator='&' ;; esac
  curl -fsS -o /dev/null -X PUT "${auth[@]}" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$blob" "$location${separator}digest=$digest"
done
curl -fsS -o /dev/null -X PUT "${auth[@]}" \
  -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "@$work/blobs/sha256/$manifest" "$base/manifests/$tag"
echo "$reference@sha256:$manifest"
