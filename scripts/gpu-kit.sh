#!/usr/bin/env bash
# Prepares .gpukit/ here for scripts/gpu-check.sh on a GPU machine that has
# the CUDA toolkit, CMake, ninja and Python but no network: the Debian
# packages of the build's C++ dependencies the GPU machine may lack
# (GoogleTest and GoogleMock, nlohmann-json), downloaded here with apt and
# unpacked there into .gpukit/root by gpu-check.sh.  Carry .gpukit along
# with the working tree (it is ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpukit
cd .gpukit
rm -f ./*.deb
packages=(libgtest-dev libgmock-dev nlohmann-json3-dev)
apt-get download "${packages[@]}" 2>/dev/null || {
  apt-get update -qq
  apt-get download "${packages[@]}"
}
ls -l ./*.deb
