"""Latency across devices: moert.compare() runs one checkpoint on several
backends and reports load time, prefill and decode speed, memory, the memory
bandwidth decoding implies and whether each device's logits agree with the
reference backend."""

import json
import os
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
           ("implied_bandwidth", "GB/s", "{:.2f}"), ("bandwidth_fraction", "% host BW", "{:.1f}"),
           ("peak_bytes", "peak MB", "{:.2f}"), ("max_rel_error", "max err", "{:.2e}"),
           ("agrees", "agrees", "{}")]

# Shown scaled: bytes as MB, bytes/s as GB/s, fractions as percent.
SCALE = {"peak_bytes": 1e-6, "implied_bandwidth": 1e-9, "bandwidth_fraction": 100.0}


class Report:
    """The result of compare(): one row (a dict) per device.  str() gives a
    table, to_dict()/to_json() plain data, plot(path) a bar chart.

    Besides the timings, each row has bytes_per_token (weight bytes a decode
    step reads), implied_bandwidth (bytes_per_token x decode tok/s, in
    bytes/s) and, for CPU-kind devices, bandwidth_fraction: that over the
    host's measured read bandwidth (meta["host_read_bandwidth"], see
    moert.read_bandwidth()); None for other devices."""

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
                v = r.get(key)
                if key in SCALE and v is not None:
                    v *= SCALE[key]
                cells.append("-" if v is None else fmt.format(v))
            lines.append(cells)
        widths = [max([len(header[i])] + [len(l[i]) for l in lines if len(l) == len(header)])
                  for i in range(len(header))]
        out = [f"{self.meta['model']}: prompt {self.meta['prompt_tokens']} tokens, "
               f"{self.meta['new_tokens']} decode steps, {self.meta['repeat']} repetitions, "
               f"dtype {self.meta['dtype']}"]
        if self.meta.get("host_read_bandwidth"):
            out.append(f"host read bandwidth {self.meta['host_read_bandwidth'] / 1e9:.1f} GB/s "
                       "(measured); GB/s = weight bytes per token x decode tok/s")
        out.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for l in lines:
            out.append("  ".join(c.rjust(w) for c, w in zip(l, widths)) if len(l) == len(header)
                       else "  ".join(l))
        return "\n".join(out)

    def plot(self, path):
        """Bar chart of decode ms/token (p50) and prefill tokens/s per device,
        written to `path`.  Needs matplotlib."""
        try:
            import matplotlib  # type: ignore  # optional
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # type: ignore
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


def _device_kind(device):
    """The kind ("cpu", "gpu" ...) of a device named "backend[:index]", or
    None when unknown."""
    name, _, index = device.partition(":")
    for b in _moert.backends():
        if b["name"] == name:
            i = int(index) if index.isdigit() else 0
            return b["devices"][i]["kind"] if i < len(b["devices"]) else None
    return None


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
    times; logits of the prompt are compared with the reference backend's.
    For CPU-kind devices the decode speed is also set against the host's
    read bandwidth (measured once per process, about a second)."""
    backends = list(backends) if backends else _devices()
    path = os.fspath(path)
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
            decode_tok_s = 1e3 / statistics.mean(ms) if steps else 0.0
            bytes_per_token = model.summary(roofline=False)["bytes_per_token"]
            implied = bytes_per_token * decode_tok_s
            fraction = None
            if _device_kind(device) == "cpu":
                host_bw = _moert.read_bandwidth()
                fraction = implied / host_bw if host_bw > 0 else None
            rows.append({
                "backend": backend, "device": device, "load_s": load_s,
                "prefill_tok_s": prompt_tokens / statistics.median(prefill),
                "decode_tok_s": decode_tok_s,
                "decode_ms_p50": ms[len(ms) // 2], "decode_ms_p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
                "bytes_per_token": bytes_per_token, "implied_bandwidth": implied,
                "bandwidth_fraction": fraction, "peak_bytes": peak, "max_rel_error": err,
                "agrees": err <= TOLERANCE.get(dtype, 3e-2), "fallbacks": len(model.fallbacks)})
        except _moert.Error as e:
            rows.append({"backend": backend, "error": str(e)})
    measured = any(r.get("bandwidth_fraction") is not None for r in rows)
    meta = {"model": path, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "repeat": repeat, "dtype": dtype,
            "host_read_bandwidth": _moert.read_bandwidth() if measured else None}
    return Report(rows, meta)
