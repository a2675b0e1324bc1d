#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what is missing, build with
# warnings as errors, run every test.  CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/parity-env.sh
scripts/check-format.sh
scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)"
