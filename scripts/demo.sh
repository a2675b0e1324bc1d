#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then run a
# small MoE model on every backend found and print the latency comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/bin/moert-demo "$@"
