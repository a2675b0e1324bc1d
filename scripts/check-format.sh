#!/usr/bin/env bash
# Fails when a tracked C/C++ file is not formatted as .clang-format says.
# Fix with: git ls-files '*.cpp' '*.h' '*.c' '*.cu' '*.cuh' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files '*.cpp' '*.h' '*.c' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror
echo "check-format: all C/C++ files formatted"
