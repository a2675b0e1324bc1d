#!/usr/bin/env bash
# moert-bench and llama-bench on the same bench-moe-s shapes, interleaved in
# one run on this machine, so that both see the same machine state:
#   bench/llama_cpp/side_by_side.sh LLAMA_BENCH GGUF_DIR OUT_DIR [ROUNDS]
# LLAMA_BENCH is a llama-bench binary built separately (CPU build); GGUF_DIR
# holds bench-moe-s-<type>.gguf files written by make_gguf.py (f32, f16,
# bf16) and llama-quantize (q8_0, q4_0, ...).  Each round runs, per pair,
# llama-bench then moert-bench (pp512, tg32, 3 repetitions, 2 threads);
# OUT_DIR gets every JSON and summary.md (summarise.py).
# PAIRS lists "gguf-type:moert-dtype" pairs (default "f32:f32 bf16:bf16
# f16:f16"), e.g. PAIRS="q4_0:int4 q8_0:int8 q4_0:mxfp4" for the packed
# formats.  MOERT_BENCH overrides the moert-bench binary (default
# build/bin/moert-bench); MOERT_ARGS adds arguments to every moert-bench run.
set -euo pipefail
llama_bench=$1 gguf_dir=$2 out=$3 rounds=${4:-2}
here=$(cd "$(dirname "$0")" && pwd)
moert_bench=${MOERT_BENCH:-$here/../../build/bin/moert-bench}
mkdir -p "$out"
pairs=${PAIRS:-"f32:f32 bf16:bf16 f16:f16"}
for round in $(seq 1 "$rounds"); do
  for pair in $pairs; do
    ggml=${pair%%:*} dtype=${pair##*:}
    echo "round $round: $ggml / $dtype" >&2
    "$llama_bench" -m "$gguf_dir/bench-moe-s-$ggml.gguf" -p 512 -n 32 -r 3 -t 2 -o json \
      >"$out/llama-$ggml-$round.json" 2>/dev/null
    # moert as users run it (f32 activations, products in the weights'
    # precision: --precision fast, the default), and with exact f32 products
    # (--precision exact) for narrow weights.
    modes=fast
    [ "$dtype" != f32 ] && modes="fast exact"
    for mode in $modes; do
      # shellcheck disable=SC2086
      "$moert_bench" --config bench-moe-s --backend cpu -t 2 --dtype "$dtype" --precision "$mode" \
        -p 512 -n 32 -r 3 ${MOERT_ARGS:-} --json "$out/moert-$ggml-$dtype-$mode-$round.json" \
        >/dev/null 2>&1
    done
  done
done
python3 "$here/summarise.py" "$out" | tee "$out/summary.md"
