#!/usr/bin/env bash
# moert-bench and llama-bench on the same bench-moe-s shapes, interleaved in
# one run on this machine, so that both see the same machine state:
#   bench/llama_cpp/side_by_side.sh LLAMA_BENCH GGUF_DIR OUT_DIR [ROUNDS]
# LLAMA_BENCH is a llama-bench binary built separately (CPU build); GGUF_DIR
# holds bench-moe-s-{f32,f16,bf16}.gguf written by make_gguf.py.  Each round
# runs, per dtype, llama-bench then moert-bench (pp512, tg32, 3 repetitions,
# 2 threads); OUT_DIR gets every JSON and summary.md (summarise.py).
# MOERT_BENCH overrides the moert-bench binary (default build/bin/moert-bench).
set -euo pipefail
llama_bench=$1 gguf_dir=$2 out=$3 rounds=${4:-2}
here=$(cd "$(dirname "$0")" && pwd)
moert_bench=${MOERT_BENCH:-$here/../../build/bin/moert-bench}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for dtype in f32 bf16 f16; do
    echo "round $round: $dtype" >&2
    "$llama_bench" -m "$gguf_dir/bench-moe-s-$dtype.gguf" -p 512 -n 32 -r 3 -t 2 -o json \
      >"$out/llama-$dtype-$round.json" 2>/dev/null
    # moert with f32 activations (exact f32 products) and, for narrow weights,
    # with bf16 activations (bf16 products, as llama.cpp forms them for bf16
    # and f16 weights: it rounds the activations to the weights' type).
    acts=f32
    [ "$dtype" != f32 ] && acts="f32 bf16"
    for act in $acts; do
      "$moert_bench" --config bench-moe-s --backend cpu -t 2 --dtype "$dtype" --act-dtype "$act" \
        -p 512 -n 32 -r 3 --json "$out/moert-$dtype-$act-$round.json" >/dev/null 2>&1
    done
  done
done
python3 "$here/summarise.py" "$out" | tee "$out/summary.md"
