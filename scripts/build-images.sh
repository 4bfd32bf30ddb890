#!/usr/bin/env bash
# Writes the project's container images as OCI image-layout tars, without a
# container engine: one layer holding the binary, the few shared libraries
# it links (found by ldd), the system's CA bundle and a passwd entry for the
# non-root user.
#
#   scripts/build-images.sh BIN_DIR OUT_DIR [NAME...]
#
# NAME is policy-server, controller or audit-scanner (all three when none
# is given), or pause (the node's pod sandbox); BIN_DIR holds the binaries. The same inputs give the
# same digests: files are sorted, owned by 0:0 with time 0, gzip stores no
# name or time, and the JSON is written byte for byte here. The image is
# named $IMAGE_REPOSITORY/NAME:$IMAGE_TAG (default localhost/palisade and
# the workspace version) in the `io.containerd.image.name` annotation, so
# `ctr images import` gives it that name.
set -euo pipefail

bin_dir=${1:?usage: build-images.sh BIN_DIR OUT_DIR [NAME...]}
out_dir=${2:?usage: build-images.sh BIN_DIR OUT_DIR [NAME...]}
shift 2
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(policy-server controller audit-scanner)

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
license=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^license = "\(.*\)"/\1/p' "$root/Cargo.toml")
repository=${IMAGE_REPOSITORY:-localhost/palisade}
tag=${IMAGE_TAG:-$version}
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-modified"
fi
uid=65532

mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# Stores a file as a blob of the layout; prints its digest.
blob() {
  local digest
  digest=$(sha "$1")
  mv "$1" "$layout/blobs/sha256/$digest"
  echo "$digest"
}
describe() {
  case "$1" in
    policy-server) echo "Palisade policy-server: the admission webhook that evaluates policies in a WebAssembly sandbox" ;;
    controller) echo "Palisade controller: reconciles Kubewarden policy resources into policy-servers and webhooks" ;;
    audit-scanner) echo "Palisade audit-scanner: re-evaluates what is in the cluster and writes policy reports" ;;
    pause) echo "The pod sandbox's pause program, built from the Kubernetes source" ;;
    *) echo "unknown image $1" >&2; return 1 ;;
  esac
}

for name in "${names[@]}"; do
  description=$(describe "$name")
  image_tag=$tag
  [ "$name" = pause ] && image_tag=3.10
  binary="$bin_dir/$name"
  [ -x "$binary" ] || { echo "no binary $binary (cargo build --release first)" >&2; exit 1; }
  rootfs="$work/$name/rootfs"
  layout="$work/$name/layout"
  mkdir -p "$rootfs/usr/bin" "$rootfs/etc" "$rootfs/tmp" "$layout/blobs/sha256"
  strip -o "$rootfs/usr/bin/$name" "$binary"
  # The glibc libraries the binary links, at the paths the loader looks.
  for library in $(ldd "$binary" 2>/dev/null | grep -o '/[^ ]*' || true); do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
  done
  # The system's trust roots, for HTTPS policy registries (not the pause image).
  if [ "$name" != pause ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  fi
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/tmp:/sbin/nologin\n' $uid $uid > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' $uid > "$rootfs/etc/group"
  # Modes set here, not left to the umask: part of the digest.
  find "$rootfs" -type d -exec chmod 0755 {} +
  find "$rootfs" -type f -exec chmod 0644 {} +
  chmod 0755 "$rootfs/usr/bin/$name"
  [ -d "$rootfs/lib64" ] && chmod 0755 "$rootfs"/lib64/ld-linux-*
  chmod 1777 "$rootfs/tmp"
  find "$rootfs" -exec touch -h -d @0 {} +

  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$work/$name/layer.tar" .
  diff_id=$(sha "$work/$name/layer.tar")
  gzip -n -6 "$work/$name/layer.tar"
  layer_size=$(size "$work/$name/layer.tar.gz")
  layer=$(blob "$work/$name/layer.tar.gz")

  labels=$(printf '"org.opencontainers.image.title":"%s","org.opencontainers.image.description":"%s","org.opencontainers.image.version":"%s","org.opencontainers.image.revision":"%s","org.opencontainers.image.licenses":"%s","org.opencontainers.image.vendor":"Palisade"' \
    "$name" "$description" "$image_tag" "$revision" "$license")
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"User":"%s:%s","Entrypoint":["/usr/bin/%s"],"Env":["PATH=/usr/bin"],"WorkingDir":"/","Labels":{%s}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/build-images.sh"}]}' \
    $uid $uid "$name" "$labels" "$diff_id" > "$work/$name/config.json"
  config_size=$(size "$work/$name/config.json")
  config=$(blob "$work/$name/config.json")

  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}],"annotations":{%s}}' \
    "$config" "$config_size" "$layer" "$layer_size" "$labels" > "$work/$name/manifest.json"
  manifest_size=$(size "$work/$name/manifest.json")
  manifest=$(blob "$work/$name/manifest.json")

  reference="$repository/$name:$image_tag"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$reference" "$image_tag" > "$layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
  find "$layout" -type d -exec chmod 0755 {} +
  find "$layout" -type f -exec chmod 0644 {} +
  find "$layout" -exec touch -h -d @0 {} +
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$layout" -cf "$out_dir/$name.oci.tar" .
  echo "$reference sha256:$manifest $out_dir/$name.oci.tar"
done
