#!/usr/bin/env bash
# install-deps.sh installs the Debian packages that autonode's build and
# tests need (see shared/DESIGN.md, "Test environment"), and only those
# that are missing, so that repeated runs cost a dpkg query.
set -euo pipefail

packages=(clang libbpf-dev bpftool iputils-ping iptables iproute2 xfsprogs btrfs-progs e2fsprogs util-linux mount
  libsystemd-dev systemd-journal-remote containerd runc containernetworking-plugins rpm systemd)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} apt packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed"
