"""Determinism: the same inputs, seed and backend give the same tokens, run
after run and across thread counts.

What holds, and why (README.md "Determinism"):
- Within one process, and between processes with the same thread count, a
  backend's logits are bitwise equal run after run: every kernel's order of
  summation is fixed by the shapes, never by timing.  So greedy and seeded
  sampled tokens are equal too.
- Across thread counts on cpu (MOERT_CPU_THREADS), the logits are bitwise
  equal while a decode sees fewer than 512 keys: moert's own kernels split
  work over rows and heads, never over a sum, and oneDNN's matmul splits over
  M and N only (checked here for 1, 2 and 3 threads, on a tiny model and at
  bench-moe-s's shapes with a 195-token prompt).  From 512 keys on, the
  decode attention splits the keys between the threads and merges the
  pieces' softmax sums, so the order of that sum follows the thread count:
  logits then differ in the last bits of f32 (2.9e-6 at most, logits up to
  3.1, at depth 1500 on bench-moe-s, 1 against 2 threads), and tokens only
  where two logits tie that closely.
- Between backends (reference, cpu, opencl) the logits differ within the
  tolerances of tests/python/test_backend_models.py (different summation
  orders and product precisions), so tokens can differ where two logits
  nearly tie; no bitwise claim is made there.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from moert_reference import make_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

AVAILABLE = [b["name"] for b in moert.backends() if b["available"]]

# The child: greedy and seeded sampled tokens (generate, stream_batch's
# batched steps) and the logits of a prompt, twice, written to argv[3].
_CHILD = r"""
import json, sys
import numpy as np
import moert
m = moert.load(sys.argv[1], backend=sys.argv[2], max_context=256)
prompt = [3, 17, 101, 7, 42, 250, 9, 64, 5, 77, 31, 8]
out = {}
for run in range(2):
    out[f"greedy{run}"] = m.generate(prompt, max_new_tokens=24)
    out[f"sampled{run}"] = m.generate(prompt, max_new_tokens=24, temperature=0.9, top_p=0.95,
                                      seed=1234)
    out[f"batch{run}"] = m.generate_batch([prompt, prompt[:5], prompt[3:]], max_new_tokens=16,
                                          temperature=0.7, seed=99)
    np.save(f"{sys.argv[3]}.logits{run}.npy", m.forward(prompt))
json.dump(out, open(sys.argv[3] + ".json", "w"))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("determinism") / "qwen3_moe"
    make_checkpoint.make_checkpoint("qwen3_moe", str(d), dtype="bf16", seed=21)
    return d


def run_child(checkpoint, backend, out, threads=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if threads is not None:
        env["MOERT_CPU_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(checkpoint), backend, str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.load(open(f"{out}.json"))
    result["logits0"] = np.load(f"{out}.logits0.npy")
    result["logits1"] = np.load(f"{out}.logits1.npy")
    return result


def same_run_after_run(r):
    for key in ("greedy", "sampled", "batch"):
        assert r[key + "0"] == r[key + "1"], key
    np.testing.assert_array_equal(r["logits0"], r["logits1"])


def same_results(a, b):
    for key in ("greedy0", "sampled0", "batch0"):
        assert a[key] == b[key], key
    np.testing.assert_array_equal(a["logits0"], b["logits0"])


@pytest.mark.parametrize("backend", ["reference", "cpu", "opencl"])
def test_run_after_run_and_process_after_process(checkpoint, tmp_path, backend):
    if backend not in AVAILABLE:
        pytest.skip(f"backend {backend} is not available here")
    a = run_child(checkpoint, backend, tmp_path / "a")
    b = run_child(checkpoint, backend, tmp_path / "b")
    same_run_after_run(a)
    same_run_after_run(b)
    same_results(a, b)


def test_cpu_across_thread_counts(checkpoint, tmp_path):
    if "cpu" not in AVAILABLE:
        pytest.skip("backend cpu is not available here")
    results = {n: run_child(checkpoint, "cpu", tmp_path / f"t{n}", threads=n) for n in (1, 2, 3)}
    for n, r in results.items():
        same_run_after_run(r)
        if n != 1:
            same_results(results[1], r)


# bench-moe-s's shapes (hidden 1024, 8 experts; bench/models.json), a
# 195-token prompt: the sizes where oneDNN and the kernels do split work.
_CHILD_BENCH = r"""
import json, sys
import numpy as np
import moert
config = json.load(open(sys.argv[1]))["bench-moe-s"]
m = moert.random_model(config.get("config", config), backend="cpu", max_context=512)
prompt = list(range(5, 200))
np.save(sys.argv[2] + ".npy", m.forward(prompt))
json.dump(m.generate(prompt[:20], max_new_tokens=16), open(sys.argv[2] + ".json", "w"))
"""


def test_cpu_across_thread_counts_at_benchmark_shapes(tmp_path):
    models = ROOT.parent / "shared" / "bench" / "models.json"
    if "cpu" not in AVAILABLE or not models.exists():
        pytest.skip("needs the cpu backend and ../shared/bench/models.json")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = {}
    for n in (1, 2, 3):
        env["MOERT_CPU_THREADS"] = env["OMP_NUM_THREADS"] = str(n)
        r = subprocess.run([sys.executable, "-c", _CHILD_BENCH, str(models), str(tmp_path / str(n))],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        out[n] = (np.load(tmp_path / f"{n}.npy"), json.load(open(tmp_path / f"{n}.json")))
    for n in (2, 3):
        np.testing.assert_array_equal(out[n][0], out[1][0])
        assert out[n][1] == out[1][1]
