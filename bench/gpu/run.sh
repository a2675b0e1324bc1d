#!/usr/bin/env bash
# The CUDA benchmark of a GPU machine, in one call: for each GPU shape of
# ../shared/bench/models.json, moert-bench on cuda (random bf16 weights,
# bf16 activations; pp2048, tg64) and then PyTorch + transformers on the
# same shapes (transformers_baseline.py); JSON of both in OUT_DIR.  The
# first config also runs with MOERT_CUDA_BASELINE_KERNELS=1 (the simple
# kernels, no CUDA graphs), so the fast paths' gain is measured in the same
# call.
#   bench/gpu/run.sh BUILD_DIR OUT_DIR [CONFIGS...]
# BUILD_DIR must hold a build with the cuda backend (scripts/gpu-check.sh).
set -euo pipefail
build=$1 out=$2
shift 2
configs=${*:-deepseek-v2-lite qwen3-30b-a3b mixtral-8x7b}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for c in $configs; do
  "$build/bin/moert-bench" --config "$c" --backend cuda --dtype bf16 --act-dtype bf16 \
    -p 2048 -n 64 -r 3 --json "$out/moert-$c.json"
  python3 "$here/transformers_baseline.py" --config "$c" --prompt 2048 --new 64 \
    --json "$out/transformers-$c.json"
done
first=${configs%% *}
MOERT_CUDA_BASELINE_KERNELS=1 "$build/bin/moert-bench" --config "$first" --backend cuda \
  --dtype bf16 --act-dtype bf16 -p 2048 -n 64 -r 3 --json "$out/moert-$first-baseline-kernels.json"
