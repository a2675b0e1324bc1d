"""Latency across devices: moert.compare() runs one checkpoint on several
backends and reports load time, prefill and decode speed, memory, the memory
bandwidth decoding implies and whether each device's logits agree with the
reference backend.  The measurement is the runtime's (moert/compare.h, through
moert._moert.compare_devices); this module adds the host's bandwidth and the
report's table, JSON and chart."""

import json
import os

from . import _moert

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
               f"dtype {self.meta['dtype']}, precision {self.meta.get('precision', 'exact')}"
               + (f", quantize {self.meta['quantize']}" if self.meta.get("quantize") else "")]
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


def compare(path, backends=None, prompt_tokens=32, new_tokens=16, repeat=3, dtype="f32", seed=0,
            quantize="", precision="fast"):
    """Runs the checkpoint at `path` on each backend (default: every available
    device) and returns a Report.  Each device gets one warm-up, then `repeat`
    times a prefill of `prompt_tokens` random ids (`seed`) and `new_tokens`
    KV-cached decode steps fed the reference backend's greedy tokens; the
    logits of the prompt and of every step are compared with the reference
    backend's (max_abs_diff, max_rel_error: the largest difference over the
    largest reference logit of a row, worst row; agrees: max_rel_error within
    1e-4 for f32 activations with precision="exact", 3e-2 otherwise: bf16/f16
    activations, or the default precision="fast", whose products may round
    to bf16 or quantise x to int8 per block of 32; a routed model may then
    pick other experts for a token whose router logits were near a tie,
    which shows as a disagreement: check with precision="exact").  quantize
    and precision are moert.load()'s.  For CPU-kind devices the
    decode speed is also set against the host's read bandwidth (measured once
    per process, about a second)."""
    path = os.fspath(path)
    result = _moert.compare_devices(path, list(backends or []), prompt_tokens, new_tokens, repeat,
                                    dtype, seed, quantize, precision)
    rows = []
    for r in result["rows"]:
        if "error" in r:
            rows.append({"backend": r["device"], "error": r["error"]})
            continue
        implied = r["bytes_per_token"] * r["decode_tok_s"]
        fraction = None
        if r["kind"] == "cpu":
            host_bw = _moert.read_bandwidth()
            fraction = implied / host_bw if host_bw > 0 else None
        row = {"backend": r["device"]}
        row.update(r)
        row.update({"implied_bandwidth": implied, "bandwidth_fraction": fraction})
        rows.append(row)
    measured = any(r.get("bandwidth_fraction") is not None for r in rows)
    meta = {"model": path, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "repeat": repeat, "dtype": dtype, "quantize": quantize, "precision": precision,
            "prompt": result["prompt"],
            "reference_tokens": result["reference_tokens"], "tolerance": result["tolerance"],
            "host_read_bandwidth": _moert.read_bandwidth() if measured else None}
    return Report(rows, meta)
