#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then run
# MoE models on every backend found and print the latency comparison:
#  1. a tiny random Mixtral (bf16) and DeepSeek-V3 (fp8 blocks) checkpoint in
#     Hugging Face layout, written by the checkpoint generator: latency and
#     logit agreement with the reference backend, per device (moert-demo);
#  2. the comparison report of the Python API on the same checkpoint
#     (python -m moert bench: load s, prefill/decode tok/s, p50/p95, agreement);
#  3. bench-moe-s (640 M parameters, 8 experts top-2, random bf16 weights
#     built in memory) on every available device but the reference one:
#     pp128 / tg16 against the host's read bandwidth (moert-bench).
# Extra arguments go to moert-demo (e.g. --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
export PYTHONPATH="$PWD/build/python:$PWD/python"
models=build/demo-models
for spec in mixtral:bf16 deepseek_v3:fp8; do
  arch=${spec%%:*} dtype=${spec##*:}
  dir=$models/$arch-$dtype
  if [ ! -f "$dir/config.json" ]; then
    python3 -m moert_reference.make_checkpoint "$arch" "$dir" --dtype "$dtype" >/dev/null
  fi
  echo "=== $arch ($dtype) ==="
  build/bin/moert-demo --model "$dir" "$@"
  echo
  python3 -m moert bench "$dir" --new-tokens 16
  echo
done
devices=$(python3 -c "import moert; print(','.join(b['name'] for b in moert.backends() if b['available'] and b['name'] != 'reference'))")
models_json=../shared/bench/models.json
if [ -n "$devices" ] && [ ! -f "$models_json" ]; then
  echo "=== bench-moe-s skipped: $models_json (the benchmark shapes) is not beside the checkout ==="
elif [ -n "$devices" ]; then
  echo "=== bench-moe-s (bf16 weights, random) on $devices ==="
  build/bin/moert-bench --config bench-moe-s --backend "$devices" --dtype bf16 -p 128 -n 16 -r 2 \
    2>/dev/null
fi
