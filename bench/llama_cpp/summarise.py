"""Summarises a side_by_side.sh run: per pair of llama.cpp weights and moert
weights, precision mode and round, llama.cpp's and moert's pp512 and tg32
tokens/s, and moert's ratio to llama.cpp (measured back to back, so the
ratio is the figure to trust on a shared machine)."""
import glob
import json
import os
import sys

out = sys.argv[1]
print("| llama.cpp weights | moert weights | moert precision | round | llama.cpp pp512 | moert pp512 "
      "| ratio | llama.cpp tg32 | moert tg32 | ratio | moert tg % of read bw |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "moert-*.json"))):
    parts = os.path.basename(path)[len("moert-"):-len(".json")].split("-")
    if len(parts) != 4:  # a run of the older layout (moert-DTYPE-ACT-ROUND)
        continue
    ggml, dtype, mode, round_ = parts
    llama_path = os.path.join(out, f"llama-{ggml}-{round_}.json")
    if not os.path.exists(llama_path):
        continue
    llama = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.load(open(llama_path))}
    results = json.load(open(path)).get("results") or [{}]
    row = results[0]
    if "pp" not in row:
        print(f"| {ggml} | {dtype} | {mode} | {round_} | {llama['pp']:.1f} | failed | | "
              f"{llama['tg']:.1f} | failed | | |")
        continue
    pp, tg = row["pp"]["mean_tok_s"], row["tg"]["mean_tok_s"]
    bw = row.get("bandwidth_fraction")
    print(f"| {ggml} | {dtype} | {mode} | {round_} | {llama['pp']:.1f} | {pp:.1f} "
          f"| {pp / llama['pp']:.2f}x | {llama['tg']:.1f} | {tg:.1f} | {tg / llama['tg']:.2f}x "
          f"| {'' if bw is None else f'{bw * 100:.0f}%'} |")
