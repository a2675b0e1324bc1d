#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what is missing, build with
# warnings as errors, run every test, then the reliability jobs: the suites
# under ASan+UBSan+LSan and TSan (scripts/sanitize.sh) and every fuzz target
# for MOERT_FUZZ_SECONDS (60) seconds (scripts/fuzz.sh).  CI runs exactly
# this (.ci/run).  MOERT_TEST_QUICK=1 stops after the normal suites.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/parity-env.sh
scripts/check-format.sh
scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)"
if [ "${MOERT_TEST_QUICK:-0}" != 1 ]; then
  time scripts/sanitize.sh all
  time scripts/fuzz.sh all "${MOERT_FUZZ_SECONDS:-60}"
fi
