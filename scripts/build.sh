#!/usr/bin/env bash
# Configures and builds moert in ./build (warnings are errors).
# Extra arguments go to CMake, e.g. scripts/build.sh -DMOERT_SANITIZE=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} -DMOERT_WERROR=ON "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
