"""The error contract, from Python: every bad input, hostile file and
interruption raises moert.Error (KeyboardInterrupt for Ctrl-C) with a
message naming what was wrong, and the model then gives exactly what it
gave before.

Device failures (out of memory at load and at a step, failing prepare,
transfers and execute, through a fault-injecting plugin) are in
tests/unit/test_error_contract.cpp; plugins that are missing, of another
ABI major or failing init in tests/unit/test_plugins.cpp; the server's
request errors in tests/python/test_server.py.
"""

import json
import math
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

from moert_reference import make_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

PROMPT = [3, 17, 101, 7, 42, 250, 9, 64]
VOCAB = 512
MAX_CONTEXT = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract") / "mixtral"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="f32", seed=5)
    return d


@pytest.fixture(scope="module")
def model(checkpoint):
    return moert.load(str(checkpoint), max_context=MAX_CONTEXT, max_sequences=2)


@pytest.fixture(scope="module")
def baseline(model):
    return model.forward(PROMPT), model.generate(PROMPT, max_new_tokens=8)


def assert_usable(model, baseline):
    """The model gives what it gave before the error, bit for bit."""
    logits, tokens = baseline
    np.testing.assert_array_equal(model.forward(PROMPT), logits)
    assert model.generate(PROMPT, max_new_tokens=8) == tokens


# --- Requests ---------------------------------------------------------------

BAD_SAMPLING = [
    ({"temperature": -1.0}, r"temperature must be >= 0, got -1"),
    ({"temperature": math.nan}, r"temperature must be >= 0, got nan"),
    ({"temperature": math.inf}, r"temperature must be >= 0, got inf"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
    ({"top_p": math.nan}, r"top_p must be in \(0, 1\], got nan"),
    ({"top_k": -1}, r"top_k must be >= 0, got -1"),
    ({"max_new_tokens": -1}, r"max_new_tokens must be >= 0"),
]


def _generate(model, kw):
    return model.generate(PROMPT, **kw)


def _stream(model, kw):
    return list(model.stream(PROMPT, **kw))


def _generate_batch(model, kw):
    return model.generate_batch([PROMPT, PROMPT[:3]], **kw)


def _engine(model, kw):
    engine = model.engine()
    args = dict(max_new_tokens=4, temperature=0.0, top_k=0, top_p=1.0, seed=0, stop=[])
    args.update(kw)
    return engine.submit(PROMPT, args["max_new_tokens"], args["temperature"], args["top_k"],
                         args["top_p"], args["seed"], args["stop"])


@pytest.mark.parametrize("call", [_generate, _stream, _generate_batch, _engine],
                         ids=["generate", "stream", "generate_batch", "engine"])
@pytest.mark.parametrize("kw,message", BAD_SAMPLING,
                         ids=[next(iter(k)) + "=" + str(next(iter(k.values()))) for k, _ in BAD_SAMPLING])
def test_invalid_sampling_parameters(model, baseline, call, kw, message):
    with pytest.raises(moert.Error, match=message):
        call(model, kw)
    assert_usable(model, baseline)


@pytest.mark.parametrize("tokens,error,message", [
    ([1, VOCAB], moert.Error, r"token id 512 at position 1 is outside the vocabulary \[0, 512\)"),
    ([-1], moert.Error, r"token id -1 at position 0 is outside the vocabulary"),
    ([1, 2, 2**40], moert.Error, r"token id 1099511627776 at position 2"),
    ([], moert.Error, r"the prompt is empty"),
    ([1.5], TypeError, None),
    ("", moert.Error, r"tokenizer.json not found: text needs the checkpoint's tokenizer"),
], ids=["vocab", "negative", "huge", "empty", "float", "empty-text"])
def test_bad_prompts(model, baseline, tokens, error, message):
    for call in (lambda: model.generate(tokens), lambda: list(model.stream(tokens)),
                 lambda: model.generate_batch([PROMPT, tokens])):
        with pytest.raises(error, match=message):
            call()
    assert_usable(model, baseline)


def test_context_overflow(model, baseline):
    long = list(range(1, MAX_CONTEXT + 2))
    with pytest.raises(moert.Error, match=r"context overflow"):
        model.forward(long)
    with pytest.raises(moert.Error, match=r"max_context 64"):
        model.generate_batch([long])
    s = model.session()
    s.append(PROMPT)
    with pytest.raises(moert.Error, match=r"context overflow: 8 cached \+ 57 new tokens exceed "
                                          r"max_context 64"):
        s.append(long[:57])
    assert s.position == len(PROMPT)
    del s
    assert_usable(model, baseline)


# --- Load options and devices --------------------------------------------------

@pytest.mark.parametrize("kw,message", [
    ({"backend": "nosuch"}, r"unknown backend 'nosuch'.*available: reference"),
    ({"backend": "reference:3"},
     r"^device 'reference:3' does not exist: backend 'reference' has 1 device"),
    ({"backend": "cpu:99"}, r"cpu.*99|unknown backend 'cpu'"),
    ({"dtype": "f64"}, r"unknown dtype 'f64'"),
    ({"max_sequences": 0}, r"max_sequences must be >= 1"),
    ({"kv_cache_tokens": -1}, r"kv_cache_tokens must be >= 0"),
    ({"prefill_chunk": 0}, r"prefill_chunk must be >= 1, got 0"),
    ({"max_context": -5}, r"max_context must be >= 0 .*got -5"),
    ({"quantize": "int3"}, r"quantize"),
    ({"precision": "fastest"}, r"precision"),
    ({"kv_dtype": "f64"}, r"kv_dtype"),
    ({"mla_cache": "compressed"}, r"mla_cache"),
], ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_bad_load_options(checkpoint, model, baseline, kw, message):
    with pytest.raises(moert.Error, match=message):
        moert.load(str(checkpoint), **kw)
    assert_usable(model, baseline)


# --- Hostile checkpoints --------------------------------------------------------

def _header(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write(path, header, body):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + body)


def _truncate(d):
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])


def _huge_header(d):
    f = d / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 2**62) + f.read_bytes()[8:])


def _bad_json(d):
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:8] + b"{\"a\": [" + data[15:])


def _offsets_past_end(d):
    f = d / "model.safetensors"
    header, body = _header(f)
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [len(body) - 4, len(body) + 4096]
    _write(f, header, body)


def _wrong_shape(d):
    f = d / "model.safetensors"
    header, body = _header(f)
    name = "model.embed_tokens.weight"
    r, c = header[name]["shape"]
    header[name]["shape"] = [c, r]
    _write(f, header, body)


def _missing_tensor(d):
    f = d / "model.safetensors"
    header, body = _header(f)
    header["model.norm.weight_"] = header.pop("model.norm.weight")
    _write(f, header, body)


def _config(**changes):
    def edit(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def _config_not_json(d):
    (d / "config.json").write_text("{\"hidden_size\": ")


HOSTILE = [
    (_truncate, r"model.safetensors"),
    (_huge_header, r"model.safetensors.*header"),
    (_bad_json, r"model.safetensors"),
    (_offsets_past_end, r"model.safetensors"),
    (_wrong_shape, r"model.embed_tokens.weight"),
    (_missing_tensor, r"model.norm.weight"),
    (_config_not_json, r"config.json.*invalid JSON"),
    (_config(hidden_size=-4), r"config.json.*hidden_size"),
    (_config(num_hidden_layers=2**40), r"config.json.*num_hidden_layers"),
    (_config(quantization_config={"quant_method": "bitsandbytes", "bits": 4}),
     r"'quantization_config.quant_method' is 'bitsandbytes', which moert does not read"),
    (_config(quantization_config={"quant_method": "gptq", "bits": 4}),
     r"'quantization_config.quant_method' is 'gptq' but no tensor"),
]


@pytest.mark.parametrize("corrupt,message", HOSTILE, ids=[c.__name__.strip("_") if c.__name__ != "edit"
                                                          else m.split(".")[1][:24]
                                                          for c, m in HOSTILE])
def test_hostile_checkpoints(tmp_path, checkpoint, model, baseline, corrupt, message):
    d = tmp_path / "hostile"
    d.mkdir()
    for f in checkpoint.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    corrupt(d)
    with pytest.raises(moert.Error, match=message):
        moert.load(str(d), max_context=MAX_CONTEXT)
    assert_usable(model, baseline)
    # A fresh load of the good checkpoint gives the same.
    assert_usable(moert.load(str(checkpoint), max_context=MAX_CONTEXT, max_sequences=2), baseline)


# --- Ctrl-C ----------------------------------------------------------------------

def _run_child(script, *args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# The child: SIGINT 0.3 s into a long generation; the generation must end with
# KeyboardInterrupt within a fraction of its full length, and the model then
# gives what it gave before.
_CTRL_C_GENERATE = r"""
import json, os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import moert
m = moert.load(sys.argv[1], max_context=4096, max_sequences=2)
prompt = [3, 17, 101, 7]
want = m.generate(prompt, max_new_tokens=8)
call = sys.argv[2]
def long_run():
    if call == "generate":
        m.generate(prompt, max_new_tokens=4000)
    else:
        m.generate_batch([prompt, prompt[:2]], max_new_tokens=4000)
t0 = time.monotonic(); long_run(); full = time.monotonic() - t0
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.monotonic()
try:
    long_run()
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
elapsed = time.monotonic() - t0
print(json.dumps({"full": full, "elapsed": elapsed, "interrupted": interrupted,
                  "usable": m.generate(prompt, max_new_tokens=8) == want}))
"""


@pytest.fixture(scope="module")
def long_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract") / "mixtral-long"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="f32", seed=5,
                                    overrides={"max_position_embeddings": 8192})
    return d


@pytest.mark.parametrize("call", ["generate", "generate_batch"])
def test_ctrl_c_during_generation(long_checkpoint, call):
    r = _run_child(_CTRL_C_GENERATE, long_checkpoint, call)
    assert r["full"] > 1.0, f"the uninterrupted run is too short to interrupt: {r}"
    assert r["interrupted"], r
    assert r["elapsed"] < 0.3 + 0.5 * r["full"], r
    assert r["usable"], r


# SIGINT during a load without a progress callback: the load stops at its next
# check (between layers and stages) with KeyboardInterrupt, before preparing.
_CTRL_C_LOAD = r"""
import json, os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import moert
config = json.load(open(sys.argv[1]))["bench-moe-s"]
config = config.get("config", config)
t0 = time.monotonic(); moert.random_model(config, backend="cpu"); full = time.monotonic() - t0
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.monotonic()
model = None
try:
    model = moert.random_model(config, backend="cpu")
except KeyboardInterrupt:
    pass
elapsed = time.monotonic() - t0
print(json.dumps({"full": full, "elapsed": elapsed, "returned": model is not None}))
"""


def test_ctrl_c_during_a_load_without_progress():
    models = ROOT.parent / "shared" / "bench" / "models.json"
    if not models.exists():
        models = ROOT / "bench" / "models.json"
    if not models.exists() or "cpu" not in [b["name"] for b in moert.backends() if b["available"]]:
        pytest.skip("needs bench/models.json and the cpu backend")
    r = _run_child(_CTRL_C_LOAD, models)
    assert not r["returned"], r
    assert r["elapsed"] < r["full"], r
