"""Many sequences on one model: continuous batching (Model.generate_batch,
Model.engine), the shared KV cache pool, and chunked prefill.

Greedy tokens of every prompt in a batch must equal the same prompt run
alone, on every backend with a device.  Both run in precision="exact" with
f32 activations, so a batched step and a lone one differ only in summation
order (~1e-6 relative on these logits of scale ~1): far from the gaps
between the top two logits that greedy choices hinge on here.
"""

import math

import numpy as np
import pytest

from moert_reference import make_checkpoint

moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

# Prompts of several lengths (a chunked one among them), ids within every
# tiny model's vocabulary.
PROMPTS = [[3, 17, 101, 7, 42, 250, 9, 64, 11, 300, 5, 77],
           [5],
           [(13 * i + 7) % 500 for i in range(41)],
           [200, 201, 202],
           [(29 * i + 1) % 480 for i in range(23)],
           [9, 8, 7, 6, 5, 4, 3]]
NEW = 10


def devices():
    """reference, and cpu, opencl and cuda where available."""
    names = {b["name"] for b in moert.backends() if b["available"] and b["devices"]}
    return ["reference"] + [n for n in ("cpu", "opencl", "cuda") if n in names]


@pytest.fixture(scope="module", params=["qwen3_moe", "deepseek_v3", "gpt_oss", "mixtral"])
def checkpoint(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    make_checkpoint.make_checkpoint(request.param, str(d), dtype="bf16", seed=11)
    return d


def load(path, device, **options):
    options.setdefault("max_context", 96)
    options.setdefault("kv_cache_tokens", 1024)
    return moert.load(str(path), backend=device, precision="exact", strict=device != "reference",
                      **options)


@pytest.mark.parametrize("device", devices())
def test_batch_greedy_equals_each_prompt_alone(checkpoint, device):
    model = load(checkpoint, device)
    alone = [model.generate(p, max_new_tokens=NEW) for p in PROMPTS]
    # A step of at most 16 tokens: the long prompts run in chunks across
    # steps, mixed with the others' decode tokens.
    assert model.generate_batch(PROMPTS, max_new_tokens=NEW, step_tokens=16) == alone
    assert model.generate_batch(PROMPTS, max_new_tokens=NEW) == alone


def test_stream_batch_yields_each_prompts_tokens_in_order(checkpoint):
    model = load(checkpoint, "reference")
    got = [[] for _ in PROMPTS]
    for i, token in model.stream_batch(PROMPTS, max_new_tokens=NEW, step_tokens=16):
        got[i].append(token)
    assert got == model.generate_batch(PROMPTS, max_new_tokens=NEW)
    # Closing it early leaves the model usable, its sequences returned.
    stream = model.stream_batch(PROMPTS, max_new_tokens=NEW)
    next(stream)
    stream.close()
    del stream
    assert model.generate_batch(PROMPTS[:2], max_new_tokens=3) == [
        model.generate(p, max_new_tokens=3) for p in PROMPTS[:2]]


def test_sampled_batch_equals_alone_with_the_same_seeds(checkpoint):
    model = load(checkpoint, "reference")
    opts = dict(max_new_tokens=6, temperature=0.8, top_k=20, top_p=0.9)
    batch = model.generate_batch(PROMPTS[:3], seed=40, **opts)
    assert batch == [model.generate(p, seed=40 + i, **opts) for i, p in enumerate(PROMPTS[:3])]


def test_engine_streams_events_and_stops(checkpoint):
    model = load(checkpoint, "reference")
    want = model.generate(PROMPTS[0], max_new_tokens=NEW)
    engine = model.engine()
    a = engine.submit(PROMPTS[0], max_new_tokens=NEW)
    b = engine.submit(PROMPTS[1], max_new_tokens=3, stop=[want[1]])  # may or may not stop early
    c = engine.submit(PROMPTS[2], max_new_tokens=0)
    got = {a: [], b: [], c: []}
    reasons = {}
    while not engine.idle:
        for request, token, finished, reason in engine.step():
            if token is not None:
                got[request].append(token)
            if finished:
                reasons[request] = reason
    assert got[a] == want and reasons[a] == "length"
    assert got[c] == [] and reasons[c] == "length"
    assert reasons[b] in ("stop", "length") and 1 <= len(got[b]) <= 3


def test_full_pool_makes_requests_wait_and_oversized_ones_refused(checkpoint):
    # Two blocks of 64 positions: two requests of up to 64 positions run,
    # the third waits for one to finish.
    model = load(checkpoint, "reference", max_context=128, kv_cache_tokens=128)
    want = [model.generate(p, max_new_tokens=20) for p in PROMPTS[:3]]
    engine = model.engine()
    ids = [engine.submit(p, max_new_tokens=20) for p in PROMPTS[:3]]
    got = {i: [] for i in ids}
    for request, token, _, _ in engine.step():
        got[request].append(token)
    assert engine.running == 2 and engine.waiting == 1
    # One that could never fit is refused, not queued forever.
    with pytest.raises(moert.Error, match="needs 230 cache positions .* the pool holds 128"):
        load(checkpoint, "reference", max_context=256, kv_cache_tokens=128).engine().submit(
            list(range(30)), max_new_tokens=200)
    while not engine.idle:
        for request, token, _, _ in engine.step():
            if token is not None:
                got[request].append(token)
    assert [got[i] for i in ids] == want


def test_cancel_frees_the_sequence_for_the_next_request(checkpoint):
    model = load(checkpoint, "reference", max_context=128, kv_cache_tokens=64)
    want = model.generate(PROMPTS[3], max_new_tokens=8)
    engine = model.engine()
    first = engine.submit(PROMPTS[0], max_new_tokens=40)
    second = engine.submit(PROMPTS[3], max_new_tokens=8)
    for _ in range(3):
        assert all(r == first for r, _, _, _ in engine.step())
    assert engine.running == 1 and engine.waiting == 1
    engine.cancel(first)
    events = engine.step()
    assert (first, None, True, "cancelled") in events
    got = [t for r, t, _, _ in events if r == second and t is not None]
    while not engine.idle:
        got += [t for r, t, _, _ in engine.step() if r == second and t is not None]
    assert got == want


@pytest.mark.parametrize("bad, message", [
    (dict(prompt_ids=[]), "the prompt is empty"),
    (dict(prompt_ids=[1, 10**6]), "outside the vocabulary"),
    (dict(prompt_ids=[1], max_new_tokens=-1), "max_new_tokens must be >= 0"),
    (dict(prompt_ids=[1], temperature=-1.0), "temperature must be >= 0"),
    (dict(prompt_ids=[1], temperature=math.nan), "temperature must be >= 0"),
    (dict(prompt_ids=[1], top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(prompt_ids=[1], top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(prompt_ids=[1], top_k=-1), "top_k must be >= 0"),
    (dict(prompt_ids=list(range(96))), "leave no room for a new one"),
])
def test_bad_requests_are_refused_and_the_engine_goes_on(checkpoint, bad, message):
    model = load(checkpoint, "reference")
    engine = model.engine()
    running = engine.submit(PROMPTS[0], max_new_tokens=4)
    got = [t for _, t, _, _ in engine.step()]
    with pytest.raises(moert.Error, match=message):
        engine.submit(**bad)
    while not engine.idle:
        got += [t for r, t, _, _ in engine.step() if r == running and t is not None]
    assert got == model.generate(PROMPTS[0], max_new_tokens=4)


def test_chunked_prefill_gives_the_same_logits(checkpoint):
    prompt = PROMPTS[2] + PROMPTS[4]  # 64 tokens
    whole = load(checkpoint, "reference")
    chunked = load(checkpoint, "reference", prefill_chunk=10)
    want = whole.forward(prompt)
    got = chunked.forward(prompt)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    last = chunked.session().append(prompt, all_logits=False)
    assert last.shape == (1, want.shape[1])
    np.testing.assert_allclose(last[0], want[-1], rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_generate_does_not_compute_every_prompt_row():
    # 3 000 prompt tokens x a 152k vocabulary would be 1.8 GB of logits; the
    # prompt's last row is all generate() asks for.  Measured through the
    # executor's activation arena, which holds every row it computes.
    config = dict(moert_reference_config("qwen3_moe"), vocab_size=152064,
                  max_position_embeddings=4096)
    model = moert.random_model(config, weights="bf16", backend="cpu"
                               if "cpu" in devices() else "reference", max_context=3200)
    model.generate(list(range(3000)), max_new_tokens=2)
    arena = max(model.memory()["arena_bytes"].values())
    assert arena < 3000 * 152064 * 4 / 8, arena


def moert_reference_config(family):
    from moert_reference import configs
    return dict(configs.CONFIGS[family])
