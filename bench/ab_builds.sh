#!/usr/bin/env bash
# Compares two builds of moert on the same shapes, interleaved, in one run:
# each round runs moert-bench from build A, then from build B, so that the
# machine's drift hits both alike; two rounds of A also measure the noise
# between runs of one binary.
#
#   bench/ab_builds.sh A_DIR B_DIR OUT_DIR [moert-bench options...]
#
# A_DIR and B_DIR each hold bin/moert-bench and lib/ (libmoert and the
# plugins; copy a build's bin/ and lib/ aside to keep it).  Options default
# to the plugin-kit check: bench-moe-s on cpu and opencl, bf16 and fp8
# weights, pp512/tg32, 2 threads, 3 repetitions.  Writes OUT_DIR/{a,b}-N.json
# and prints the per-row ratio B/A next to A's own spread.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,13p' "$0"; exit 2; }
a=$(cd "$1" && pwd) b=$(cd "$2" && pwd) out=$3
shift 3
opts=("$@")
[ ${#opts[@]} -gt 0 ] || opts=(--config bench-moe-s --backend cpu,opencl --dtype bf16,fp8 -t 2
                              -p 512 -n 32 -r 3)
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
for round in 1 2; do
  for side in a b; do
    dir=$a; [ $side = b ] && dir=$b
    echo "round $round: $side ($dir)" >&2
    # The library path wins over the binary's run path, so each side loads
    # its own libmoert and, beside it, its own plugins.
    LD_LIBRARY_PATH=$dir/lib "$dir/bin/moert-bench" --models-json "$root/../shared/bench/models.json" \
      "${opts[@]}" --bandwidth-mib 0 --json "$out/$side-$round.json" >/dev/null
  done
done
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def rows(name):
    d = json.load(open(os.path.join(out, name)))
    return {(r["backend"], r["weight_dtype"]): r for r in d["results"]}
runs = {k: rows(f"{k}.json") for k in ("a-1", "a-2", "b-1", "b-2")}
print(f"{'backend':8} {'weights':8} {'test':5} {'A tok/s':>18} {'B tok/s':>18} {'B/A':>6} {'A2/A1':>6}")
for key in runs["a-1"]:
    for test in ("pp", "tg"):
        a = [runs[f"a-{i}"][key][test]["mean_tok_s"] for i in (1, 2)]
        b = [runs[f"b-{i}"][key][test]["mean_tok_s"] for i in (1, 2)]
        ma, mb = sum(a) / 2, sum(b) / 2
        print(f"{key[0]:8} {key[1]:8} {test:5} {a[0]:8.1f} {a[1]:8.1f} {b[0]:8.1f} {b[1]:8.1f} "
              f"{mb / ma:6.3f} {a[1] / a[0]:6.3f}")
PY
