"""Quality of the packed weight formats on random weights: each format's
logits against the unquantised (bf16) model with the same seed, which the
packed models are rounded from (moert.random_model(weights="int4") packs
exactly the bf16 values), on the cpu backend with exact products, so the
figures measure the format alone.

    python3 bench/quant_quality.py [CONFIG] [--tokens N] [--seeds S]

CONFIG is an entry of ../shared/bench/models.json (default bench-moe-s).
Prints a markdown table: relative RMS logit error, worst row's relative
max error, and top-1 agreement per position (a prompt of random ids).
Needs the moert Python module: PYTHONPATH=python:build/python.
"""
import argparse
import json
import os

import numpy as np

import moert

here = os.path.dirname(os.path.abspath(__file__))
parser = argparse.ArgumentParser()
parser.add_argument("config", nargs="?", default="bench-moe-s")
parser.add_argument("--tokens", type=int, default=128)
parser.add_argument("--seeds", type=int, default=2)
parser.add_argument("--backend", default="cpu")
parser.add_argument("--layers", type=int, default=0,
                    help="override num_hidden_layers (random deep models amplify any weight "
                         "perturbation: compare with the bf16-vs-f32 row)")
args = parser.parse_args()

with open(os.path.join(here, "..", "..", "shared", "bench", "models.json")) as f:
    entry = {k: v for k, v in json.load(f)[args.config].items() if k != "tier"}
if args.layers:
    entry["num_hidden_layers"] = args.layers

print(f"| format (against) | seed | relative RMS error | worst row max error / max logit | top-1 agreement |")
print("|---|---|---|---|---|")
for seed in range(args.seeds):
    rng = np.random.default_rng(seed)
    prompt = [int(t) for t in rng.integers(0, entry["vocab_size"], args.tokens)]
    base = moert.random_model(entry, weights="f32", seed=seed, backend=args.backend,
                              precision="exact", name=args.config)
    want = np.asarray(base.forward(prompt), dtype=np.float64)
    del base
    # The scale of the model's own sensitivity: bf16 against f32 (2^-9 per
    # weight), then each packed format against the bf16 model it packs.
    for fmt in ("bf16", "int8", "int4", "mxfp4"):
        if fmt == "int8":
            base = moert.random_model(entry, weights="bf16", seed=seed, backend=args.backend,
                                      precision="exact", name=args.config)
            want = np.asarray(base.forward(prompt), dtype=np.float64)
            del base
        model = moert.random_model(entry, weights=fmt, seed=seed, backend=args.backend,
                                   precision="exact", name=args.config)
        got = np.asarray(model.forward(prompt), dtype=np.float64)
        del model
        rms = np.sqrt(((got - want) ** 2).mean() / (want ** 2).mean())
        worst = (np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)).max()
        top1 = (got.argmax(axis=1) == want.argmax(axis=1)).mean()
        print(f"| {fmt} ({'f32' if fmt == 'bf16' else 'bf16'}) | {seed} | {rms:.2e} | {worst:.2e} | {top1 * 100:.1f}% |", flush=True)
