#!/usr/bin/env bash
# Installs the Debian packages a real node needs (container runtime, CNI
# plugins, iptables for the Service rule, socat for the relay from the
# host's loopback), only those missing. Safe to run any number of times.
set -euo pipefail

packages=(runc containerd containernetworking-plugins iptables socat)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "the node needs these Debian packages: ${missing[*]} (run this script as root)" >&2
  exit 1
fi
echo "==> installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
