"""Latency across devices: moert.compare() runs one checkpoint on several
backends and reports load time, prefill and decode speed, memory and whether
each device's logits agree with the reference backend."""

import json
import statistics
import time

import numpy as np

from . import _moert

# Agreement with the reference backend, by activation dtype: f32 differs by
# summation order only; bf16/f16 round every intermediate (2^-9 / 2^-12
# relative), which compounds through the layers to ~1e-2 of the logit scale.
TOLERANCE = {"f32": 1e-4, "bf16": 3e-2, "f16": 3e-2}

COLUMNS = [("backend", "device", "{}"), ("load_s", "load s", "{:.3f}"),
           ("prefill_tok_s", "prefill tok/s", "{:.1f}"), ("decode_tok_s", "decode tok/s", "{:.1f}"),
           ("decode_ms_p50", "ms/tok p50", "{:.3f}"), ("decode_ms_p95", "ms/tok p95", "{:.3f}"),
           ("peak_bytes", "peak MB", "{:.2f}"), ("max_rel_error", "max err", "{:.2e}"),
           ("agrees", "agrees", "{}")]


class Report:
    """The result of compare(): one row (a dict) per device.  str() gives a
    table, to_dict()/to_json() plain data, plot(path) a bar chart."""

    def __init__(self, rows, meta):
        self.rows = rows
        self.meta = meta

    def to_dict(self):
        return {"meta": dict(self.meta), "rows": [dict(r) for r in self.rows]}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self):
        header = [title for _, title, _ in COLUMNS]
        lines = []
        for r in self.rows:
            if "error" in r:
                lines.append([r["backend"], "failed: " + r["error"]])
                continue
            cells = []
            for key, _, fmt in COLUMNS:
                v = r[key] / 1e6 if key == "peak_bytes" else r[key]
                cells.append(fmt.format(v))
            lines.append(cells)
        widths = [max([len(header[i])] + [len(l[i]) for l in lines if len(l) == len(header)])
                  for i in range(len(header))]
        out = [f"{self.meta['model']}: prompt {self.meta['prompt_tokens']} tokens, "
               f"{self.meta['new_tokens']} decode steps, {self.meta['repeat']} repetitions, "
               f"dtype {self.meta['dtype']}"]
        out.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for l in lines:
            out.append("  ".join(c.rjust(w) for c, w in zip(l, widths)) if len(l) == len(header)
                       else "  ".join(l))
        return "\n".join(out)

    def plot(self, path):
        """Bar chart of decode ms/token (p50) and prefill tokens/s per device,
        written to `path`.  Needs matplotlib."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise _moert.Error("Report.plot needs matplotlib (pip install matplotlib)") from exc
        ok = [r for r in self.rows if "error" not in r]
        names = [r["backend"] for r in ok]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        axes[0].bar(names, [r["decode_ms_p50"] for r in ok])
        axes[0].set_ylabel("decode ms/token (p50)")
        axes[1].bar(names, [r["prefill_tok_s"] for r in ok])
        axes[1].set_ylabel("prefill tokens/s")
        fig.suptitle(self.meta["model"])
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _devices():
    out = []
    for b in _moert.backends():
        if b["available"]:
            out += [f"{b['name']}:{i}" for i in range(len(b["devices"]))]
    return out


def compare(path, backends=None, prompt_tokens=32, new_tokens=16, repeat=3, dtype="f32", seed=0):
    """Runs the checkpoint at `path` on each backend (default: every available
    device) and returns a Report.  Prefill is timed over `prompt_tokens`
    tokens, decode over `new_tokens` greedy KV-cached steps, each `repeat`
    times; logits of the prompt are compared with the reference backend's."""
    backends = list(backends) if backends else _devices()
    reference = _moert.load(path, backend="reference", dtype=dtype)
    vocab = reference.info["vocab_size"]
    prompt = np.random.default_rng(seed).integers(0, vocab, size=prompt_tokens).tolist()
    want = reference.forward(prompt).astype(np.float64)
    del reference
    rows = []
    for backend in backends:
        try:
            t0 = time.perf_counter()
            model = _moert.load(path, backend=backend, dtype=dtype)
            load_s = time.perf_counter() - t0
            prefill, steps = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                got = model.forward(prompt)
                prefill.append(time.perf_counter() - t0)
                stream = model.stream(prompt, max_new_tokens=new_tokens + 1)
                next(stream)  # the prefill
                while True:
                    t0 = time.perf_counter()
                    if next(stream, None) is None:
                        break
                    steps.append(time.perf_counter() - t0)
            err = float((np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)).max())
            mem = model.memory()
            device = model.device
            peak = sum(mem["arena_bytes"].values()) + mem["state_bytes"]
            ms = sorted(s * 1e3 for s in steps) or [0.0]
            rows.append({
                "backend": backend, "device": device, "load_s": load_s,
                "prefill_tok_s": prompt_tokens / statistics.median(prefill),
                "decode_tok_s": 1e3 / statistics.mean(ms) if steps else 0.0,
                "decode_ms_p50": ms[len(ms) // 2], "decode_ms_p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
                "peak_bytes": peak, "max_rel_error": err,
                "agrees": err <= TOLERANCE.get(dtype, 3e-2), "fallbacks": len(model.fallbacks)})
        except _moert.Error as e:
            rows.append({"backend": backend, "error": str(e)})
    meta = {"model": str(path), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "repeat": repeat, "dtype": dtype}
    return Report(rows, meta)
