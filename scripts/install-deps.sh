#!/usr/bin/env bash
# Installs what diffode needs to build, test and plot, from Debian 12's packages (run as root).
# Idempotent: when every package is present it only asks dpkg, and returns in about a second.
set -euo pipefail

packages=(
  g++ cmake make ninja-build pkg-config git ca-certificates
  libboost-dev libeigen3-dev librandom123-dev libfmt-dev
  libtorch-dev libhdf5-dev zlib1g-dev libpng-dev
  libgtest-dev googletest libbenchmark-dev
  libtomlplusplus-dev libcli11-dev
  libopenmpi-dev openmpi-bin
  python3 python3-numpy python3-h5py python3-matplotlib python3-torch
  dataset-fashion-mnist
)

missing=()
for p in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" for a package that is fully installed.
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run this script as root (or install them with apt-get)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
