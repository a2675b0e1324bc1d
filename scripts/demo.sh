#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then run
# MoE models on every backend found and print the latency comparison: a tiny
# random Mixtral (bf16) and DeepSeek-V3 (fp8 blocks) checkpoint in Hugging
# Face layout, written by the checkpoint generator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
models=build/demo-models
for spec in mixtral:bf16 deepseek_v3:fp8; do
  arch=${spec%%:*} dtype=${spec##*:}
  dir=$models/$arch-$dtype
  if [ ! -f "$dir/config.json" ]; then
    PYTHONPATH=python python3 -m moert_reference.make_checkpoint "$arch" "$dir" --dtype "$dtype" >/dev/null
  fi
  echo "=== $arch ($dtype) ==="
  build/bin/moert-demo --model "$dir" "$@"
  echo
done
