"""Per-op and per-node times of a model's runs: Model.profile().

    with model.profile() as prof:
        model.generate(ids, max_new_tokens=32)
    print(prof)                 # per op: calls, total ms, ms/call, % of the node time
    prof.nodes()                # per node, in the order they first ran
    prof.to_dict()              # plain data (JSON-serialisable)

Every run of the model inside the block is timed and the times add up: a
generate() of 32 tokens contributes 32 runs (the prefill, which gives the
first token, and 31 decode steps).  While the block is open the backends time each
node, finishing one before starting the next, so a profiled run is a little
slower than an unprofiled one.  Runs by other threads on the same model inside
the block are counted too; one profile per model at a time.
"""

import json
import time


class Profile:
    """The timings of the runs inside a `with model.profile()` block,
    available once the block has ended."""

    def __init__(self, model):
        self._model = model
        self.runs = 0              # model runs (prefills and decode steps) inside the block
        self.wall_seconds = 0.0    # the block's wall-clock time
        self._nodes = []
        self._t0 = None

    def __enter__(self):
        self._model._profile_start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.wall_seconds = time.perf_counter() - self._t0
        data = self._model._profile_stop()
        self.runs = data["runs"]
        self._nodes = data["nodes"]
        return False

    @property
    def total_seconds(self):
        """Time spent inside nodes, summed over every timed node and run."""
        return sum(n["seconds"] for n in self._nodes if n["seconds"] is not None)

    def _percent(self, seconds):
        total = self.total_seconds
        return 100.0 * seconds / total if seconds is not None and total > 0 else None

    def nodes(self):
        """One dict per node of the placed graph that ran, in the order they
        first ran: node, op, device, calls (runs it took part in), seconds
        (summed; None when its backend does not time nodes), percent (of
        total_seconds)."""
        return [dict(n, percent=self._percent(n["seconds"])) for n in self._nodes]

    def ops(self):
        """Node times summed per op, the most expensive first: dicts with op,
        calls (node executions), seconds (None when no node of it was timed)
        and percent."""
        by_op = {}
        for n in self._nodes:
            e = by_op.setdefault(n["op"], {"op": n["op"], "calls": 0, "seconds": None})
            e["calls"] += n["calls"]
            if n["seconds"] is not None:
                e["seconds"] = (e["seconds"] or 0.0) + n["seconds"]
        rows = sorted(by_op.values(), key=lambda e: -(e["seconds"] or 0.0))
        for e in rows:
            e["percent"] = self._percent(e["seconds"])
        return rows

    def to_dict(self):
        return {"runs": self.runs, "wall_seconds": self.wall_seconds,
                "total_seconds": self.total_seconds, "ops": self.ops(), "nodes": self.nodes()}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def table(self, by="op", limit=None):
        """A readable table, per op (by="op") or per node (by="node", the
        slowest first); `limit` keeps the first rows only."""
        if by == "op":
            rows = self.ops()
            header = ["op", "calls", "total ms", "ms/call", "%"]
            cells = [[r["op"]] for r in rows]
        elif by == "node":
            rows = sorted(self.nodes(), key=lambda n: -(n["seconds"] or 0.0))
            header = ["node", "op", "device", "calls", "total ms", "ms/call", "%"]
            cells = [[r["node"], r["op"], r["device"]] for r in rows]
        else:
            raise ValueError(f"table: by must be 'op' or 'node', got {by!r}")
        if limit is not None:
            rows, cells = rows[:limit], cells[:limit]
        for r, c in zip(rows, cells):
            s = r["seconds"]
            c += [str(r["calls"]),
                  "-" if s is None else f"{s * 1e3:.3f}",
                  "-" if s is None or not r["calls"] else f"{s * 1e3 / r['calls']:.4f}",
                  "-" if r["percent"] is None else f"{r['percent']:.1f}"]
        widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
        text_cols = 1 if by == "op" else 3

        def line(c):
            return "  ".join(v.ljust(w) if i < text_cols else v.rjust(w)
                             for i, (v, w) in enumerate(zip(c, widths))).rstrip()

        share = (f" ({100 * self.total_seconds / self.wall_seconds:.0f}%)"
                 if self.wall_seconds > 0 else "")
        out = [f"profile: {self.runs} runs, {self.total_seconds * 1e3:.3f} ms in nodes of "
               f"{self.wall_seconds * 1e3:.3f} ms wall{share}", line(header)]
        out += [line(c) for c in cells]
        untimed = sum(1 for n in self._nodes if n["seconds"] is None)
        if untimed:
            out.append(f"({untimed} nodes not timed by their backend)")
        return "\n".join(out)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return (f"<moert.Profile {self.runs} runs, {len(self._nodes)} nodes, "
                f"{self.total_seconds * 1e3:.3f} ms>")
