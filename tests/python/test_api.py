"""The Python package moert (python/moert, module moert._moert).

A tiny random Mixtral checkpoint (moert_reference.make_checkpoint, f32) is
loaded through moert.load and checked for self-consistency: forward against
KV-cached session appends, generate against the argmax chain over forward,
stream against generate, stop tokens, seeded sampling, and the errors the
runtime reports, which must reach Python as moert.Error with its message.

The compiled module is looked for in $MOERT_PYTHON_DIR (a build's python/
directory), else in <repo>/build/python, else wherever `moert` is installed.
"""

import os
import sys
import threading

import numpy as np
import pytest

from moert_reference import make_checkpoint

moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

PROMPT = [3, 17, 101, 7, 42, 250, 9, 64]
VOCAB = 512


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("api") / "mixtral"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="f32", seed=11)
    return d


@pytest.fixture(scope="module")
def model(checkpoint):
    return moert.load(str(checkpoint))


def test_backends_list_reference():
    backends = moert.backends()
    ref = [b for b in backends if b["name"] == "reference"]
    assert len(ref) == 1, backends
    ref = ref[0]
    assert ref["available"] is True
    assert ref["reason"] == ""
    assert ref["path"] == "(built-in)"
    assert len(ref["devices"]) >= 1
    dev = ref["devices"][0]
    assert set(dev) == {"name", "kind", "total_memory", "free_memory", "capabilities"}
    assert dev["kind"] == "cpu"
    assert "ops=all" in dev["capabilities"]
    for b in backends:
        assert set(b) == {"name", "available", "reason", "path", "devices"}
        for d in b["devices"]:
            # every in-tree backend says what its devices support (ABI 1.2)
            assert "weights=" in d["capabilities"], (b["name"], d)
    for f in moert.plugin_failures():
        assert set(f) == {"path", "reason"}


def test_info(model):
    info = model.info
    assert info["architecture"] == "MixtralForCausalLM"
    assert info["model_type"] == "mixtral"
    assert info["vocab_size"] == VOCAB
    assert info["hidden_size"] == 64
    assert info["num_layers"] == 2
    assert info["num_experts"] == 4
    assert info["experts_per_token"] == 2
    assert info["max_context"] == 256  # min(max_position_embeddings, 4096)
    assert info["weight_dtype"] == "f32"
    assert model.fallbacks == []
    assert isinstance(model.placement_report(), str)
    assert model.placement_report()
    assert "mixtral" in repr(model)


def test_forward_shape_and_token_types(model):
    logits = model.forward(PROMPT)
    assert logits.dtype == np.float32
    assert logits.shape == (len(PROMPT), VOCAB)
    assert np.isfinite(logits).all()
    for ids in (np.array(PROMPT, dtype=np.int32), np.array(PROMPT, dtype=np.int64),
                np.array(PROMPT, dtype=np.uint16), tuple(PROMPT),
                [np.int64(t) for t in PROMPT]):
        np.testing.assert_array_equal(model.forward(ids), logits)


def test_forward_equals_session_appends(model):
    extra = [5, 77, 300]
    full = model.forward(PROMPT + extra)
    s = model.session()
    assert s.position == 0
    rows = [s.append(PROMPT)]
    assert s.position == len(PROMPT)
    rows.append(s.append([extra[0]]))
    rows.append(s.append(np.array([extra[1]], dtype=np.int64)))
    rows.append(s.append(extra[2:]))
    assert s.position == len(PROMPT) + len(extra)
    cached = np.concatenate(rows)
    assert cached.shape == full.shape
    err = float(np.abs(cached - full).max())
    assert err <= 1e-5, f"session rows differ from forward by {err:.3g}"


def test_generate_greedy_is_argmax_chain(model):
    n = 8
    tokens = model.generate(PROMPT, max_new_tokens=n)
    assert isinstance(tokens, list) and len(tokens) == n
    seq = list(PROMPT)
    for _ in range(n):
        seq.append(int(np.argmax(model.forward(seq)[-1])))
    assert tokens == seq[len(PROMPT):]


def test_stream_equals_generate(model):
    it = model.stream(PROMPT, max_new_tokens=10)
    assert iter(it) is it
    assert list(it) == model.generate(PROMPT, max_new_tokens=10)
    kw = dict(max_new_tokens=12, temperature=0.8, top_k=50, top_p=0.9, seed=7)
    assert list(model.stream(PROMPT, **kw)) == model.generate(PROMPT, **kw)
    assert list(model.stream(PROMPT, max_new_tokens=0)) == []
    assert model.generate(PROMPT, max_new_tokens=0) == []


def test_stop_tokens(model):
    greedy = model.generate(PROMPT, max_new_tokens=12)
    stop = greedy[3]
    first = greedy.index(stop)
    want = greedy[:first + 1]
    assert model.generate(PROMPT, max_new_tokens=12, stop=[stop]) == want
    assert model.generate(PROMPT, max_new_tokens=12, stop=(VOCAB - 1, stop)) == want
    assert list(model.stream(PROMPT, max_new_tokens=12, stop=[stop])) == want


def test_seeded_sampling_is_reproducible(model):
    kw = dict(max_new_tokens=12, temperature=1.0)
    a = model.generate(PROMPT, seed=3, **kw)
    assert a == model.generate(PROMPT, seed=3, **kw)
    assert all(0 <= t < VOCAB for t in a)
    others = [model.generate(PROMPT, seed=s, **kw) for s in (4, 5, 6)]
    assert any(o != a for o in others), "different seeds gave identical samples"


def test_threads_share_a_model(model):
    want = model.forward(PROMPT)
    results = [None] * 4

    def work(i):
        results[i] = model.forward(PROMPT)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, want)


def _available_devices():
    return [b["name"] for b in moert.backends() if b["available"] and b["devices"]
            and b["name"] in ("reference", "cpu", "opencl")]


@pytest.mark.parametrize("device", ["reference", "cpu", "opencl"])
def test_threads_with_their_own_models(checkpoint, device):
    """Models on one backend in several threads at once: the runtime
    serialises the calls into the plugin (its ABI promises one thread at a
    time), so each thread gets what a serial run gives."""
    if device not in _available_devices():
        pytest.skip(f"{device} is not available")
    want = moert.load(str(checkpoint), backend=device).generate(PROMPT, max_new_tokens=4)
    results = [None] * 3

    def work(i):
        results[i] = moert.load(str(checkpoint), backend=device).generate(PROMPT, max_new_tokens=4)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [want] * len(results)


def test_error_is_runtime_error():
    assert issubclass(moert.Error, RuntimeError)
    assert moert.Error.__doc__


def test_bad_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(moert.Error, match="not a directory") as e:
        moert.load(str(missing))
    assert str(missing) in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(moert.Error, match="config.json"):
        moert.load(str(tmp_path / "empty"))


def test_unknown_backend_lists_available(checkpoint):
    with pytest.raises(moert.Error) as e:
        moert.load(str(checkpoint), backend="nosuch")
    msg = str(e.value)
    assert "unknown backend 'nosuch'" in msg
    assert "available: reference" in msg


def test_unknown_dtype(checkpoint):
    with pytest.raises(moert.Error, match="unknown dtype 'f64'"):
        moert.load(str(checkpoint), dtype="f64")


def test_token_out_of_range(model):
    with pytest.raises(moert.Error, match=r"token id 512 at position 1 is outside "
                                          r"the vocabulary \[0, 512\)"):
        model.forward([1, VOCAB])
    with pytest.raises(moert.Error, match=r"token id -1 at position 0 is outside"):
        model.session().append(np.array([-1, 2], dtype=np.int64))
    with pytest.raises(moert.Error, match=r"token id 1099511627776 at position 2"):
        model.generate([1, 2, 2**40])
    with pytest.raises(TypeError):
        model.forward([1.5])
    with pytest.raises(TypeError):
        model.forward(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        model.forward("abc")
    with pytest.raises(moert.Error, match="no tokens"):
        model.forward([])
    with pytest.raises(moert.Error, match="the prompt is empty"):
        model.generate([])


def test_bad_sampling_options(model):
    with pytest.raises(moert.Error, match="top_p must be in"):
        model.generate(PROMPT, temperature=1.0, top_p=0.0)
    with pytest.raises(moert.Error, match="temperature must be >= 0"):
        model.stream(PROMPT, temperature=-1.0)


def test_context_overflow(checkpoint):
    small = moert.load(str(checkpoint), max_context=8)
    assert small.info["max_context"] == 8
    s = small.session()
    s.append(PROMPT[:6])
    with pytest.raises(moert.Error, match="context overflow: 6 cached \\+ 3 new tokens "
                                          "exceed max_context 8"):
        s.append([1, 2, 3])
    assert s.position == 6
    assert s.append([1, 2]).shape == (2, VOCAB)
    with pytest.raises(moert.Error, match="context overflow"):
        small.forward(list(range(9)))
    # Generation ends when the cache is full: 6 prompt tokens + 2 fed back.
    tokens = small.generate(PROMPT[:6], max_new_tokens=10)
    assert len(tokens) == 3
    assert list(small.stream(PROMPT[:6], max_new_tokens=10)) == tokens


def test_sessions_share_the_pool_and_the_oldest_gives_way(checkpoint):
    # Room for two sequences of 8: both live, each with its own positions.
    roomy = moert.load(str(checkpoint), max_context=8, kv_cache_tokens=16)
    a, b = roomy.session(), roomy.session()
    a.append(PROMPT[:5])
    b.append(PROMPT[2:6])
    got_a, got_b = a.append([7]), b.append([9])
    np.testing.assert_allclose(got_a[0], roomy.forward(PROMPT[:5] + [7])[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_b[0], roomy.forward(PROMPT[2:6] + [9])[-1], rtol=1e-4, atol=1e-5)
    # Room for one: a newer session takes the older one's positions, and the
    # older one says so when used.
    small = moert.load(str(checkpoint), max_context=8)
    old = small.session()
    old.append(PROMPT[:6])
    new = small.session()
    new.append(PROMPT[:4])
    with pytest.raises(moert.Error, match="replaced by a newer one"):
        old.append([1])
    assert new.append([1]).shape == (1, VOCAB)


def test_docstrings():
    for obj in (moert, moert.load, moert.backends, moert.plugin_failures, moert.Model,
                moert.Model.forward, moert.Model.session, moert.Model.generate,
                moert.Model.stream, moert.Model.placement_report, moert.Session,
                moert.Session.append):
        assert obj.__doc__ and len(obj.__doc__) > 20, obj
    assert "max_new_tokens" in moert.Model.generate.__doc__
    assert "seed" in moert.Model.stream.__doc__


def test_summary_counts_active_experts(tmp_path):
    """Mixtral top-2 of 4 experts: active parameters are below the total, and
    the stored weight bytes equal the checkpoint's tensor bytes."""
    d = tmp_path / "mixtral"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="f32", seed=12)
    s = moert.load(str(d)).summary()
    assert 0 < s["active_params"] < s["total_params"]
    assert s["weight_bytes"] == 4 * s["total_params"]
    assert s["bytes_per_token"] == 4 * s["active_params"]
    assert "active per token" in s["text"]


def test_command_line(tmp_path):
    """python -m moert: make-test-model, info with the summary, run, and an
    error message with a non-zero exit."""
    import subprocess
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    d = tmp_path / "olmoe"
    def moert_cli(*args):
        return subprocess.run([sys.executable, "-m", "moert", *args], capture_output=True, text=True,
                              env=env, timeout=300)
    r = moert_cli("make-test-model", "olmoe", str(d), "--dtype", "bf16")
    assert r.returncode == 0, r.stderr
    r = moert_cli("info", str(d))
    assert r.returncode == 0, r.stderr
    assert "reference" in r.stdout and "active per token" in r.stdout
    r = moert_cli("run", str(d), "--prompt-ids", "1,2,3", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()[0].split()) == 5  # "tokens:" and 4 ids
    r = moert_cli("bench", str(d), "--prompt-tokens", "4", "--new-tokens", "2", "--repeat", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert '"agrees": true' in r.stdout
    r = moert_cli("run", str(d), "--backend", "no-such-backend")
    assert r.returncode == 1
    assert "unknown backend 'no-such-backend'" in r.stderr


def test_to_memory_and_compare(tmp_path):
    """Model.to moves without reloading (same logits; a bad device leaves it
    in place); memory() reports the planner's arena; compare() gives a row per
    device that agrees with the reference and a row with the error for an
    unknown one, printable and JSON-serialisable."""
    import json
    d = tmp_path / "mixtral"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="f32", seed=13)
    model = moert.load(str(d))
    before = model.forward([5, 6, 7])
    with pytest.raises(moert.Error, match="unknown backend 'nowhere'"):
        model.to("nowhere")
    assert model.device == "reference"
    assert model.to("reference:0") is model
    assert np.array_equal(model.forward([5, 6, 7]), before)
    mem = model.memory()
    assert mem["arena_bytes"]["reference:0"] > 0
    assert mem["arena_bytes"]["reference:0"] <= mem["naive_bytes"]
    assert mem["state_bytes"] > 0

    report = moert.compare(str(d), backends=["reference", "nowhere"], prompt_tokens=6, new_tokens=3,
                           repeat=1)
    ok, bad = report.rows
    assert ok["agrees"] and ok["max_rel_error"] == 0.0
    assert ok["prefill_tok_s"] > 0 and ok["decode_ms_p50"] > 0 and ok["peak_bytes"] > 0
    assert "unknown backend 'nowhere'" in bad["error"]
    text = str(report)
    assert "prefill tok/s" in text and "failed: unknown backend" in text
    assert json.loads(report.to_json())["rows"][0]["backend"] == "reference"
    import importlib.util
    if importlib.util.find_spec("matplotlib"):  # optional: plot only where installed
        report.plot(str(tmp_path / "latency.png"))
        assert (tmp_path / "latency.png").stat().st_size > 0
