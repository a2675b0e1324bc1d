"""Summarises a side_by_side.sh run: per dtype and round, llama.cpp's and
moert's pp512 and tg32 tokens/s, and moert's ratio to llama.cpp (measured
back to back, so the ratio is the figure to trust on a shared machine)."""
import glob
import json
import os
import sys

out = sys.argv[1]
print("| weights | moert activations | round | llama.cpp pp512 | moert pp512 | ratio "
      "| llama.cpp tg32 | moert tg32 | ratio | moert tg % of read bw |")
print("|---|---|---|---|---|---|---|---|---|---|")
for dtype in ("f32", "bf16", "f16"):
    for act in ("f32", "bf16"):
        for path in sorted(glob.glob(os.path.join(out, f"moert-{dtype}-{act}-*.json"))):
            round_ = path.rsplit("-", 1)[1].split(".")[0]
            llama_path = os.path.join(out, f"llama-{dtype}-{round_}.json")
            llama = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.load(open(llama_path))}
            row = json.load(open(path))["results"][0]
            pp, tg = row["pp"]["mean_tok_s"], row["tg"]["mean_tok_s"]
            bw = row.get("bandwidth_fraction")
            print(f"| {dtype} | {act} | {round_} | {llama['pp']:.1f} | {pp:.1f} | {pp / llama['pp']:.2f}x "
                  f"| {llama['tg']:.1f} | {tg:.1f} | {tg / llama['tg']:.2f}x "
                  f"| {'' if bw is None else f'{bw * 100:.0f}%'} |")
