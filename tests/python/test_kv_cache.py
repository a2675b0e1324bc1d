"""The KV cache's element type (LoadOptions::kv_dtype, moert.load(kv_dtype=)).

A tiny checkpoint of each attention kind (GQA, MLA) runs a long session -- a
prompt, then many single-token steps -- with its cache in f32, bf16, f16 and
fp8 (e4m3).  summary() must report the bytes each position takes, and the
logits must stay within the error the cache's rounding explains: keys and
values rounded to bf16 (2^-9 relative), f16 (2^-11) or e4m3 (2^-4) perturb
each score and each attended value by about that much, and the logits
inherit it through the layers.
"""


import numpy as np
import pytest

from moert_reference import make_checkpoint

moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

PROMPT = [3, 17, 101, 7, 42, 250, 9, 64, 11, 300, 5, 77]
STEPS = 60
BYTES = {"f32": 4, "bf16": 2, "f16": 2, "fp8": 1}
# Per row, |logit error| over max |logit| against the f32 cache.  Measured on
# the tiny models (reference backend, 73 rows): bf16 median 1.2e-3, max
# 2.9e-3; f16 median 1.9e-4, max 5e-4; fp8 median 2-2.4e-2, max 0.04-0.62.
# fp8's max is a routing flip: a rounding that moves a token's expert choice
# changes its row by order 1 on these random models, so fp8 is held to its
# median; bf16 and f16 are small enough that no route flips, and are held to
# their max too.  A wrong cache (a row misplaced, a dtype misread) errs by
# order 1 in the median.
MEDIAN_BOUNDS = {"bf16": 5e-3, "f16": 1e-3, "fp8": 6e-2}
MAX_BOUNDS = {"bf16": 1e-2, "f16": 2e-3}


def devices():
    """reference, and cpu and opencl (strict) where available."""
    names = {b["name"] for b in moert.backends() if b["available"] and b["devices"]}
    return ["reference"] + [n for n in ("cpu", "opencl") if n in names]


def session_logits(model):
    """The last row of a prompt, every row of a 7-token chunk appended after
    it (a chunked prefill, P > 0), then one row per decode step."""
    s = model.session()
    rows = [np.asarray(s.append(PROMPT))[-1]]
    rows += list(np.asarray(s.append([5, 99, 250, 13, 480, 2, 77])))
    token = int(np.argmax(rows[-1]))
    for i in range(STEPS):
        rows.append(np.asarray(s.append([(token + 31 * i) % 512]))[-1])
    return np.stack(rows).astype(np.float64)


@pytest.fixture(scope="module", params=["qwen3_moe", "deepseek_v3"])
def checkpoint(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    config = make_checkpoint.make_checkpoint(request.param, str(d), dtype="bf16", seed=5)
    return d, config


def kv_elements_per_position(config, mla_cache="latent"):
    layers = config["num_hidden_layers"]
    if config["model_type"].startswith("deepseek"):
        r, dr = config["kv_lora_rank"], config["qk_rope_head_dim"]
        if mla_cache == "latent":
            # One vector [c_kv, k_pe] per position: the key of one KV head,
            # whose first r features are its value.
            return layers * (r + dr)
        nh = config["num_attention_heads"]
        dk = config["qk_nope_head_dim"] + dr
        return layers * nh * (dk + config["v_head_dim"])
    nkv = config["num_key_value_heads"]
    hd = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return layers * 2 * nkv * hd


@pytest.mark.parametrize("device", devices())
def test_cache_dtypes(checkpoint, device):
    directory, config = checkpoint
    strict = device != "reference"
    base = moert.load(str(directory), backend=device, strict=strict, precision="exact")
    want = session_logits(base)
    scale = np.abs(want).max(axis=1)
    per_position = kv_elements_per_position(config)
    assert base.summary(roofline=False)["kv_bytes_per_token"] == per_position * 4
    for kv in ("bf16", "f16", "fp8"):
        model = moert.load(str(directory), backend=device, strict=strict, precision="exact",
                           kv_dtype=kv)
        assert model.summary(roofline=False)["kv_bytes_per_token"] == per_position * BYTES[kv]
        got = session_logits(model)
        err = np.abs(got - want).max(axis=1) / scale
        median = float(np.median(err))
        assert 0 < median <= MEDIAN_BOUNDS[kv], f"{kv} cache on {device}: median row error " \
                                                f"{median:.3g}"
        if kv in MAX_BOUNDS:
            assert err.max() <= MAX_BOUNDS[kv], f"{kv} cache on {device}: max row error " \
                                                f"{err.max():.3g}"


def test_cache_dtype_defaults_to_the_activations_and_is_checked(checkpoint):
    directory, config = checkpoint
    per_position = kv_elements_per_position(config)
    bf16 = moert.load(str(directory), dtype="bf16")
    assert bf16.summary(roofline=False)["kv_bytes_per_token"] == per_position * 2
    with pytest.raises(moert.Error, match='load option kv_dtype must be .* got "int3"'):
        moert.load(str(directory), kv_dtype="int3")


@pytest.mark.parametrize("device", devices())
def test_mla_latent_cache_matches_the_expanded_one(device, tmp_path):
    # DeepSeek-V3 (q LoRA, YaRN, fp8 weights: kv_b_proj dequantised for the
    # absorbed products) and V2: the latent cache against the expanded one
    # over a long session, f32 and bf16 caches: the same logits up to f32
    # summation order (1e-4 of the scale); the cache a fraction of the size.
    for arch, dtype in (("deepseek_v3", "fp8"), ("deepseek_v2", "bf16")):
        d = tmp_path / arch
        config = make_checkpoint.make_checkpoint(arch, str(d), dtype=dtype, seed=7)
        strict = device != "reference"
        for kv in ("f32", "bf16"):
            models = {m: moert.load(str(d), backend=device, strict=strict, precision="exact",
                                    kv_dtype=kv, mla_cache=m) for m in ("latent", "expanded")}
            for m, model in models.items():
                assert model.summary(roofline=False)["kv_bytes_per_token"] == \
                    kv_elements_per_position(config, m) * BYTES[kv]
            want = session_logits(models["expanded"])
            got = session_logits(models["latent"])
            # bf16 caches round different values (latents vs expanded keys):
            # as the bf16 cache test bounds it.
            bound = 1e-4 if kv == "f32" else MAX_BOUNDS["bf16"]
            err = float((np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)).max())
            assert err <= bound, f"{arch} {kv} cache on {device}: latent differs by {err:.3g}"
    with pytest.raises(moert.Error, match='mla_cache must be "latent" or "expanded"'):
        moert.load(str(d), mla_cache="compressed")
