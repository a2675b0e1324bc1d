"""The Python package's extras: Model.profile(), text prompts through the
checkpoint's tokenizer.json, load progress (callbacks and bars), the decode
roofline in Model.summary() and moert.compare(), and the type stubs.

A tiny random Mixtral checkpoint (f32) is written once; the text tests add a
WordLevel tokenizer.json of the model's 512-token vocabulary beside a copy of
it (they are skipped when the `tokenizers` package is not installed).
"""

import ast
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from moert_reference import make_checkpoint

moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)
from moert import _moert, _progress, text as moert_text

PROMPT = [3, 17, 101, 7, 42, 250, 9, 64]
VOCAB = 512
WORDS = ["<unk>", "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]

try:
    import tokenizers
except ImportError:
    tokenizers = None
needs_tokenizers = pytest.mark.skipif(
    tokenizers is None, reason="the optional 'tokenizers' package is not installed "
                               "(pip install tokenizers; scripts/install-deps.sh installs it)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("extra") / "mixtral"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="f32", seed=21)
    return d


@pytest.fixture(scope="module")
def model(checkpoint):
    return moert.load(str(checkpoint), progress=False)


def write_tokenizer(directory):
    """A WordLevel tokenizer covering ids 0..511: a few English words, then
    w9 ... w511; whitespace pre-tokenisation, decoded joined by spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(len(WORDS), VOCAB)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))


@pytest.fixture(scope="module")
def text_checkpoint(checkpoint, tmp_path_factory):
    if tokenizers is None:
        pytest.skip("the optional 'tokenizers' package is not installed")
    d = tmp_path_factory.mktemp("extra_text") / "mixtral"
    shutil.copytree(checkpoint, d)
    write_tokenizer(d)
    return d


# -- profiling -----------------------------------------------------------------


def test_profile_forward(model):
    prompt = (PROMPT * 4)[:32]
    model.forward(prompt)  # warm: arenas of this size exist
    with model.profile() as prof:
        model.forward(prompt)
    assert prof.runs == 1
    nodes = prof.nodes()
    assert nodes, "no node was timed"
    for n in nodes:
        assert set(n) == {"node", "op", "device", "calls", "seconds", "percent"}
        assert n["calls"] == 1
        assert n["device"] == "reference:0"
        assert n["seconds"] is not None and n["seconds"] >= 0.0
    assert len({n["node"] for n in nodes}) == len(nodes)
    total = prof.total_seconds
    assert total == pytest.approx(sum(n["seconds"] for n in nodes))
    # Nodes run inside the call: their sum is most of the block's time.
    assert 0 < total <= prof.wall_seconds * 1.01
    assert total >= 0.25 * prof.wall_seconds, (total, prof.wall_seconds)

    ops = prof.ops()
    assert [o["op"] for o in ops] == sorted({n["op"] for n in nodes},
                                            key=lambda op: -sum(n["seconds"] for n in nodes
                                                                if n["op"] == op))
    assert sum(o["calls"] for o in ops) == len(nodes)
    assert sum(o["percent"] for o in ops) == pytest.approx(100.0)
    assert {"linear", "moe", "attention", "rms_norm"} <= {o["op"] for o in ops}

    table = prof.table()
    assert str(prof) == table
    lines = table.splitlines()
    assert lines[0].startswith("profile: 1 runs")
    assert lines[1].split() == ["op", "calls", "total", "ms", "ms/call", "%"]
    assert len(lines) == 2 + len(ops)
    assert lines[2].split()[0] == ops[0]["op"]
    by_node = prof.table(by="node", limit=3).splitlines()
    assert len(by_node) == 2 + 3 and by_node[1].split()[:3] == ["node", "op", "device"]
    with pytest.raises(ValueError, match="by must be"):
        prof.table(by="layer")

    d = json.loads(prof.to_json())
    assert d["runs"] == 1 and len(d["nodes"]) == len(nodes) and len(d["ops"]) == len(ops)
    assert d["total_seconds"] == pytest.approx(total)


def test_profile_accumulates_over_generate(model):
    n = 5
    with model.profile() as prof:
        tokens = model.generate(PROMPT, max_new_tokens=n)
    assert len(tokens) == n
    assert prof.runs == n  # the prefill and n - 1 decode steps
    assert all(node["calls"] == n for node in prof.nodes())
    with model.profile() as streamed:
        assert list(model.stream(PROMPT, max_new_tokens=3)) == tokens[:3]
        s = model.session()
        s.append(PROMPT)
        s.append([1])
    assert streamed.runs == 3 + 2
    # Outside a block nothing is recorded, and the data of a block stays.
    runs, total = prof.runs, prof.total_seconds
    model.forward(PROMPT)
    assert prof.runs == runs and prof.total_seconds == total


def test_profile_one_at_a_time_and_after_errors(model):
    with model.profile():
        with pytest.raises(moert.Error, match="already running"):
            with model.profile():
                pass
    with pytest.raises(ValueError):
        with model.profile():
            raise ValueError("inside the block")
    with pytest.raises(moert.Error, match="outside the vocabulary"):
        with model.profile() as prof:
            model.forward(PROMPT)
            model.forward([VOCAB])
    assert prof.runs == 1  # the failed run is not counted
    with model.profile() as prof:  # profiling stopped cleanly each time
        model.forward(PROMPT)
    assert prof.runs == 1
    assert repr(prof).startswith("<moert.Profile 1 runs")


def test_profile_survives_to(checkpoint):
    m = moert.load(str(checkpoint), progress=False)
    with m.profile() as prof:
        m.forward(PROMPT)
        m.to("reference:0")
        m.forward(PROMPT)
    assert prof.runs == 2
    devices = {n["device"] for n in prof.nodes()}
    assert devices == {"reference:0"}


# -- text ----------------------------------------------------------------------


@needs_tokenizers
def test_text_round_trip(text_checkpoint):
    m = moert.load(str(text_checkpoint), progress=False)
    ids = m.encode("the quick brown fox")
    assert ids == [1, 2, 3, 4]
    assert m.decode(ids) == "the quick brown fox"
    assert m.decode(np.array(ids, dtype=np.int64)) == "the quick brown fox"
    with pytest.raises(TypeError):
        m.encode(ids)

    text = "the quick brown fox jumps over the lazy dog"
    ids = m.encode(text)
    want = m.generate(ids, max_new_tokens=8)
    assert m.generate(text, max_new_tokens=8) == want
    out = m.generate(text, max_new_tokens=8, text=True)
    assert isinstance(out, str)
    assert out == m.decode(want)
    assert out.split() == [f"w{t}" if t >= len(WORDS) else WORDS[t] for t in want]
    # Ids in, text out works too; sampling arguments pass through.
    kw = dict(max_new_tokens=6, temperature=0.9, seed=4)
    assert m.generate(ids, text=True, **kw) == m.decode(m.generate(text, **kw))

    assert list(m.stream(text, max_new_tokens=8)) == want
    pieces = list(m.stream(text, max_new_tokens=8, text=True))
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == out


def test_text_pieces_hold_incomplete_characters():
    """Byte-level ids: a multi-byte character is yielded once complete."""
    text = "héllo wörld ✓"
    ids = list(text.encode("utf-8"))

    def decode(seq):
        return bytes(seq).decode("utf-8", errors="replace")

    pieces = list(moert_text.text_pieces(iter(ids), decode))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # A stream ending inside a character still yields what decodes.
    assert "".join(moert_text.text_pieces(iter(ids[:-1]), decode)) == decode(ids[:-1])


def test_text_without_tokenizer_file(model, checkpoint):
    with pytest.raises(moert.Error, match=r"tokenizer\.json not found") as e:
        model.generate("the quick brown fox")
    assert str(checkpoint) in str(e.value)
    with pytest.raises(moert.Error, match="tokenizer.json"):
        model.stream("the fox")
    with pytest.raises(moert.Error, match="tokenizer.json"):
        model.generate(PROMPT, text=True)
    with pytest.raises(moert.Error, match="tokenizer.json"):
        model.stream(PROMPT, text=True)
    with pytest.raises(moert.Error, match="tokenizer.json"):
        model.encode("the fox")
    # Ids still work, and forward takes ids only.
    assert len(model.generate(PROMPT, max_new_tokens=2)) == 2
    with pytest.raises(TypeError):
        model.forward("the fox")


def test_text_without_tokenizers_package(checkpoint, tmp_path, monkeypatch):
    d = tmp_path / "mixtral"
    shutil.copytree(checkpoint, d)
    (d / "tokenizer.json").write_text("{}")  # never read: the package is missing
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import now fails
    m = moert.load(str(d), progress=False)
    with pytest.raises(moert.Error, match=r"needs the 'tokenizers' package \(pip install "
                                          r"tokenizers\)"):
        m.generate("the fox")
    assert len(m.generate(PROMPT, max_new_tokens=2)) == 2


@needs_tokenizers
def test_unreadable_tokenizer_file(checkpoint, tmp_path):
    d = tmp_path / "mixtral"
    shutil.copytree(checkpoint, d)
    (d / "tokenizer.json").write_text("not json")
    m = moert.load(str(d), progress=False)
    with pytest.raises(moert.Error, match="cannot be read by tokenizers"):
        m.encode("the fox")


# -- progress ------------------------------------------------------------------


def check_stages(calls, stages):
    assert [c[0] for c in calls if c[1] == 0] == stages, calls
    for stage in stages:
        mine = [(done, total) for s, done, total in calls if s == stage]
        totals = {t for _, t in mine}
        assert len(totals) == 1, (stage, totals)
        total = totals.pop()
        done = [d for d, _ in mine]
        assert done[0] == 0 and done[-1] == total, (stage, mine)
        assert all(a <= b for a, b in zip(done, done[1:])), (stage, done)
        assert all(0 <= d <= total for d in done)


def test_progress_callback(checkpoint):
    calls = []
    m = moert.load(str(checkpoint), progress=lambda *a: calls.append(a))
    check_stages(calls, ["read", "build", "prepare"])
    # "read" counts every tensor's bytes: the file less its header (8 bytes
    # of length, then the JSON).
    data = sum(len(b) - 8 - int.from_bytes(b[:8], "little")
               for b in (f.read_bytes() for f in checkpoint.glob("*.safetensors")))
    assert calls[0] == ("read", 0, data)
    weight_bytes = m.summary(roofline=False)["weight_bytes"]
    assert calls[-1] == ("prepare", weight_bytes, weight_bytes)
    assert len([c for c in calls if c[0] == "read"]) > 2  # it does report progress within

    calls.clear()
    assert m.to("reference", progress=lambda *a: calls.append(a)) is m
    check_stages(calls, ["prepare"])
    np.testing.assert_array_equal(m.forward(PROMPT), moert.load(str(checkpoint),
                                                                progress=False).forward(PROMPT))


def test_progress_sharded(tmp_path):
    d = tmp_path / "qwen3"
    make_checkpoint.make_checkpoint("qwen3_moe", str(d), dtype="bf16", shards=3, seed=2)
    calls = []
    moert.load(str(d), progress=lambda *a: calls.append(a))
    check_stages(calls, ["read", "build", "prepare"])


def test_progress_errors(checkpoint):
    for bad in ("yes", 1, 0.5, [print]):
        with pytest.raises(TypeError, match="progress must be True, False, None or a callable"):
            moert.load(str(checkpoint), progress=bad)
    with pytest.raises(TypeError, match="progress must be a callable"):
        _moert.load(str(checkpoint), "reference", "f32", 0, False, "yes")

    class Stop(Exception):
        pass

    def stop_at_build(stage, done, total):
        if stage == "build":
            raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        moert.load(str(checkpoint), progress=stop_at_build)
    def always_stop(stage, done, total):
        raise Stop("no")

    m = moert.load(str(checkpoint), progress=False)
    with pytest.raises(Stop):
        m.to("reference:0", progress=always_stop)
    assert m.device == "reference"  # a failed move leaves the model where it was
    assert m.forward(PROMPT).shape == (len(PROMPT), VOCAB)
    with pytest.raises(TypeError):  # a callback with the wrong signature
        moert.load(str(checkpoint), progress=lambda stage: None)


def test_progress_bars(checkpoint, capsys):
    out = io.StringIO()
    moert.load(str(checkpoint), progress=_progress.make_bar(out, use_tqdm=False))
    lines = out.getvalue().split("\n")
    assert [l.rsplit("\r", 1)[-1].split()[0] for l in lines if l] == ["read", "build", "prepare"]
    assert all(l.rstrip().endswith("MB") and "100%" in l.rsplit("\r", 1)[-1]
               for l in lines if l)
    # An error mid-load ends the bar's line.
    bar = _progress.make_bar(io.StringIO(), use_tqdm=False)
    bar("read", 0, 100)
    _progress.close(bar)
    assert bar.stream.getvalue().endswith("\n")
    # Not a terminal (pytest captures stderr): no bar by default; False: none.
    moert.load(str(checkpoint))
    moert.load(str(checkpoint), progress=False)
    assert capsys.readouterr().err == ""
    moert.load(str(checkpoint), progress=True)
    assert "prepare" in capsys.readouterr().err
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return
    out = io.StringIO()
    moert.load(str(checkpoint), progress=_progress.make_bar(out, use_tqdm=True))
    assert "read" in out.getvalue() and "prepare" in out.getvalue()


# -- roofline --------------------------------------------------------------------


def test_summary_roofline(model):
    bw = moert.read_bandwidth()
    assert bw > 1e8  # any machine reads faster than 100 MB/s
    assert moert.read_bandwidth() == bw  # measured once per process
    s = model.summary()
    assert s["read_bandwidth"] == bw
    assert s["roofline_s_per_token"] == pytest.approx(s["bytes_per_token"] / bw)
    assert s["roofline_tok_s"] == pytest.approx(1 / s["roofline_s_per_token"])
    assert "decode roofline (host CPU)" in s["text"]
    plain = model.summary(roofline=False)
    assert "read_bandwidth" not in plain and "roofline" not in plain["text"]
    assert s["text"].startswith(plain["text"])


def test_compare_implied_bandwidth(checkpoint):
    report = moert.compare(str(checkpoint), backends=["reference"], prompt_tokens=4, new_tokens=2,
                           repeat=1)
    (row,) = report.rows
    assert row["bytes_per_token"] == moert.load(str(checkpoint), progress=False) \
        .summary(roofline=False)["bytes_per_token"]
    assert row["implied_bandwidth"] == pytest.approx(row["bytes_per_token"] * row["decode_tok_s"])
    assert row["bandwidth_fraction"] == pytest.approx(row["implied_bandwidth"] /
                                                      moert.read_bandwidth())
    assert report.meta["host_read_bandwidth"] == moert.read_bandwidth()
    text = str(report)
    assert "GB/s" in text and "% host BW" in text and "host read bandwidth" in text
    assert json.loads(report.to_json())["rows"][0]["bandwidth_fraction"] > 0


# -- command line ----------------------------------------------------------------


def run_cli(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-m", "moert", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_roofline_and_text_errors(checkpoint):
    r = run_cli("info", str(checkpoint))
    assert r.returncode == 0, r.stderr
    assert "decode roofline (host CPU)" in r.stdout
    r = run_cli("info", str(checkpoint), "--no-roofline")
    assert r.returncode == 0, r.stderr
    assert "active per token" in r.stdout and "roofline" not in r.stdout
    r = run_cli("run", str(checkpoint), "--prompt", "the fox", "--max-new-tokens", "2")
    assert r.returncode == 1
    assert "tokenizer.json not found" in r.stderr
    r = run_cli("run", str(checkpoint), "--prompt", "x", "--prompt-ids", "1,2")
    assert r.returncode == 2 and "not allowed with" in r.stderr


@needs_tokenizers
def test_cli_text_prompt(text_checkpoint):
    r = run_cli("run", str(text_checkpoint), "--prompt", "the quick brown fox", "--max-new-tokens",
                "4")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    tokens = [int(t) for t in lines[0].split()[1:]]
    assert len(tokens) == 4
    m = moert.load(str(text_checkpoint), progress=False)
    assert tokens == m.generate([1, 2, 3, 4], max_new_tokens=4)
    assert lines[1] == "text: " + m.decode(tokens)
    assert "prefill 4 tokens" in lines[2]
    r = run_cli("run", str(text_checkpoint), "--prompt-ids", "1,2,3,4", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == lines[0]


# -- type stubs ------------------------------------------------------------------


def test_stubs_cover_the_module():
    """Every public function and class of moert._moert, and every method and
    property of its classes, is declared in _moert.pyi (shipped beside the
    module, with py.typed)."""
    stub = pathlib.Path(_moert.__file__).with_name("_moert.pyi")
    assert stub.is_file(), f"{stub} is missing"
    assert stub.with_name("py.typed").is_file()
    tree = ast.parse(stub.read_text())
    declared = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            declared[node.name] = set()
        elif isinstance(node, ast.AnnAssign):
            declared[node.target.id] = set()
    for name in dir(_moert):
        if name.startswith("__") and name != "__version__":
            continue
        assert name in declared, f"moert._moert.{name} is not in the stub"
        obj = getattr(_moert, name)
        if isinstance(obj, type) and not issubclass(obj, BaseException):
            for attr in vars(obj):
                if attr.startswith("_pybind11") or (attr.startswith("__") and attr not in (
                        "__next__", "__iter__")):
                    continue
                assert attr in declared[name], f"moert._moert.{name}.{attr} is not in the stub"
    assert "__init__" in declared["Model"]  # Model(other): how moert.Model wraps a load


def test_load_in_threads_with_callbacks(checkpoint):
    """Loads in two threads at once, each calling back into Python (the GIL
    is released around the load and taken back for each call)."""
    import threading
    seen = {0: [], 1: []}
    models = {}

    def work(i):
        models[i] = moert.load(str(checkpoint), progress=lambda *a: seen[i].append(a))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        check_stages(seen[i], ["read", "build", "prepare"])
    np.testing.assert_array_equal(models[0].forward(PROMPT), models[1].forward(PROMPT))


def test_docstrings_of_the_extras():
    for obj in (moert.load, moert.Model.profile, moert.Model.encode, moert.Model.decode,
                moert.Model.tokenizer, moert.Model.to, moert.Model.summary, moert.read_bandwidth,
                moert.Profile, moert.Profile.table, moert.Profile.nodes, moert.Profile.ops):
        assert obj.__doc__ and len(obj.__doc__) > 20, obj
    assert "progress" in moert.load.__doc__
    assert "text" in moert.Model.generate.__doc__ and "text" in moert.Model.stream.__doc__
    assert "roofline" in moert.Model.summary.__doc__


def test_ctrl_c_interrupts_a_load(checkpoint):
    """SIGINT during a load with a progress callback raises KeyboardInterrupt
    (in a child process, so that the signal cannot reach the test runner)."""
    script = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import moert\n"
        "calls = []\n"
        "def progress(stage, done, total):\n"
        "    calls.append(stage)\n"
        "    if len(calls) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "try:\n"
        "    moert.load(sys.argv[1], progress=progress)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', len(calls))\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, "-c", script, str(checkpoint)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "interrupted" and int(r.stdout.split()[1]) <= 3, r.stdout
