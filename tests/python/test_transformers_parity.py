"""moert against transformers' own model classes (AutoModelForCausalLM).

For every family of FAMILIES that moert_reference.configs has, and every
checkpoint format the family comes in, a tiny random checkpoint
(moert_reference.make_checkpoint) is run by transformers in float32 on the
values its weights stand for, and by moert (f32 activations,
precision="exact") on each backend: a 40-token prompt in one session append
(prefill, every row compared), then 8 more tokens appended one at a time (KV
cached decode, each step's row compared).  transformers runs the 48 tokens in
one forward.  The tokens are spread over the vocabulary and outnumber the
sliding windows of the configs (Mistral's 16 applies; Qwen2's 32 must not).

Formats: f32; bf16 (transformers widens the bf16 weights to f32); fp8 (e4m3
with 128x128 block scales), GPTQ (int4 with zero points), AWQ (int4 gemm)
and MXFP4 (routed experts), for which transformers loads an f32 "twin"
checkpoint holding the dequantised weights under the same config without
quantization_config.  VARIANTS change one config option each (f32 only).
Known differences are strict xfails, each with a test showing that moert
matches transformers changed in the stated way.

Run with the Python of scripts/parity-env.sh (CPU PyTorch and transformers).
The module skips without torch, transformers or the compiled moert module,
and fails instead when MOERT_PARITY_REQUIRED is set (CTest sets it).  The
compiled module is looked for in $MOERT_PYTHON_DIR, else <repo>/build/python.
"""

import functools
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# torch before moert: moert's CUDA plugin, where built, must not bring in the
# system's CUDA libraries ahead of those torch was set up with.
if os.environ.get("MOERT_PARITY_REQUIRED"):
    import torch  # noqa: E402
    import transformers  # noqa: E402
else:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (scripts/parity-env.sh)")
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (scripts/parity-env.sh)")

from moert_reference import make_checkpoint, safetensors_io  # noqa: E402
from moert_reference.configs import ARCHITECTURES  # noqa: E402

try:
    import moert  # noqa: E402
except ImportError as exc:
    if os.environ.get("MOERT_PARITY_REQUIRED"):
        raise
    pytest.skip(f"the moert Python module is not importable ({exc}); build it and set "
                f"MOERT_PYTHON_DIR to <build>/python", allow_module_level=True)

# The families compared; one missing from moert_reference.configs is left out.
FAMILIES = [
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "deepseek_v2",
    "deepseek_v2_grouped",
    "deepseek_v3",
    "llama",
    "mistral",
    "qwen2",
    "gpt_oss",
    "glm4_moe",
]
BACKENDS = ["reference", "cpu", "opencl"]
SEED = 11
PROMPT_TOKENS = 40
DECODE_TOKENS = 8
# Both sides compute in f32 from identical weight values: every format's
# weights are exact in f32 (bf16 widened; GPTQ/AWQ (q - z) * an f16 scale,
# at most 15 significant bits; MXFP4 e2m1 * 2^e; fp8 e4m3 * its f32 block
# scale, rounded once to f32 on both sides), so the formats add no error and
# only summation order separates the logits: ~1e-6 of the row's scale
# through 2-4 layers (at most 3e-6 measured, every family, format and
# backend).  1e-4 of the row's max |logit| leaves room for that; a wrong op
# or a different routing decision is off by 1e-2 or more.
TOLERANCE = 1e-4
# GPTQ with zero points (asymmetric) and AWQ, groups of 32 along K.
GROUP_SIZE = 32
PACKED_SUFFIXES = (".qweight", ".qzeros", ".scales", ".g_idx", "_blocks", "_scales")


def mxfp4_experts(arch):
    """Whether `arch` has routed experts that MXFP4 can pack (every K, the
    second dimension of [out, in] and of GPT-OSS's fused [E, in, out], a
    multiple of its 32-column blocks; OLMoE's intermediate 48 is not)."""
    config = make_checkpoint.build_config(arch, "f32")
    shapes = [shape for name, shape, kind in make_checkpoint.tensor_specs(config)
              if kind in ("linear", "fused") and ".experts." in name]
    return bool(shapes) and all(shape[1] % 32 == 0 for shape in shapes)


def formats(arch):
    """The checkpoint formats `arch` is compared in."""
    out = ["f32", "bf16", "fp8", "gptq", "awq"]
    if mxfp4_experts(arch):
        out.append("mxfp4")
    return out


def backend_params():
    found = {b["name"]: b for b in moert.backends()}
    params = []
    for name in BACKENDS:
        b = found.get(name)
        ok = b is not None and b["available"] and bool(b["devices"])
        why = "not built" if b is None else (b["reason"] or "no device")
        params.append(pytest.param(name, marks=pytest.mark.skipif(
            not ok, reason=f"backend {name} unavailable: {why}")))
    return params


CASES = [(arch, fmt) for arch in FAMILIES if arch in ARCHITECTURES for fmt in formats(arch)]


def tokens(vocab):
    """PROMPT_TOKENS + DECODE_TOKENS ids spread over the vocabulary: the last
    and the first id, then a stride coprime with the vocabulary size."""
    ids = [vocab - 1, 0] + [(11 + 197 * i) % vocab for i in range(PROMPT_TOKENS + DECODE_TOKENS)]
    return ids[:PROMPT_TOKENS + DECODE_TOKENS]


# ---------------------------------------------------------------------------
# Checkpoints and their f32 twins
# ---------------------------------------------------------------------------

def read_config(directory):
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def write_twin(directory, config, tensors):
    """An f32 checkpoint of `tensors` (name -> float array) under `config`
    without its quantization_config."""
    config = dict(config)
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    safetensors_io.write_safetensors(
        os.path.join(directory, "model.safetensors"),
        {name: ("F32", np.asarray(v, dtype=np.float32)) for name, v in tensors.items()},
        {"format": "pt"})


def fp8_values(typed):
    """The f32 values of an fp8 checkpoint: each e4m3 weight times its
    128x128 block's weight_scale_inv, rounded once to f32."""
    out = {}
    for name, (dtype, array) in typed.items():
        if name.endswith("_scale_inv"):
            continue
        if dtype == "F8_E4M3":
            inv = typed[name + "_scale_inv"][1].astype(np.float32)
            rows = np.arange(array.shape[0]) // 128
            cols = np.arange(array.shape[1]) // 128
            out[name] = array.astype(np.float32) * inv[rows[:, None], cols[None, :]]
        else:
            out[name] = safetensors_io.widen(dtype, array)
    return out


def write_checkpoint(arch, fmt, directory, seed=SEED, overrides=None):
    """Writes `arch` in `fmt` to directory/moert and returns the directory
    transformers loads (the checkpoint itself, or directory/twin)."""
    path = os.path.join(directory, "moert")
    if fmt in ("f32", "bf16", "fp8"):
        make_checkpoint.make_checkpoint(arch, path, dtype=fmt, seed=seed, overrides=overrides)
        if fmt != "fp8":
            return path
        typed = safetensors_io.read_checkpoint_typed(path)
        values = fp8_values(typed)
    else:
        _, dequantised = make_checkpoint.make_quantized_checkpoint(
            arch, path, fmt, group_size=GROUP_SIZE, sym=False, seed=seed, overrides=overrides)
        typed = safetensors_io.read_checkpoint_typed(path)
        values = {name: safetensors_io.widen(dtype, array)
                  for name, (dtype, array) in typed.items()
                  if not name.endswith(PACKED_SUFFIXES)}
        values.update(dequantised)
    twin = os.path.join(directory, "twin")
    write_twin(twin, read_config(path), values)
    return twin


def transformers_model(directory):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def transformers_logits(model, ids):
    """float64 [len(ids), vocab]: one forward over every token."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def moert_logits(directory, backend, ids):
    """float64 [len(ids), vocab]: the prompt in one session append, then one
    append per further token."""
    model = moert.load(directory, backend=backend, strict=backend != "reference",
                       precision="exact", progress=False)
    session = model.session()
    rows = [session.append(ids[:PROMPT_TOKENS])]
    rows += [session.append([t]) for t in ids[PROMPT_TOKENS:]]
    return np.concatenate(rows).astype(np.float64)


def mismatches(got, want, tolerance=TOLERANCE):
    """Lines naming every step whose row differs by more than `tolerance` of
    its max |logit| (the prefill as its worst row), and the worst error."""
    err = np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)
    lines = []

    def describe(step, row):
        j = int(np.argmax(np.abs(got[row] - want[row])))
        return (f"{step}: error {err[row]:.3g} of max |logit| {np.abs(want[row]).max():.3g}; "
                f"token {j}: moert {got[row, j]:.6g}, transformers {want[row, j]:.6g}; "
                f"argmax moert {int(np.argmax(got[row]))}, transformers "
                f"{int(np.argmax(want[row]))}")

    worst = int(np.argmax(err[:PROMPT_TOKENS]))
    if err[worst] > tolerance:
        bad = int(np.sum(err[:PROMPT_TOKENS] > tolerance))
        lines.append(describe(f"prefill ({bad}/{PROMPT_TOKENS} rows off; worst row {worst})",
                              worst))
    for s in range(DECODE_TOKENS):
        row = PROMPT_TOKENS + s
        if err[row] > tolerance:
            lines.append(describe(f"decode step {s + 1} (position {row})", row))
    return lines, float(err.max())


def compare(label, backend, directory, ids, want):
    """Runs `directory` on moert's `backend` and fails, naming `label`,
    backend, step and error, where its logits differ from `want`."""
    try:
        got = moert_logits(directory, backend, ids)
    except moert.Error as exc:
        pytest.fail(f"{label} on {backend}: load or run failed: {exc}")
    assert got.shape == want.shape, f"{label} on {backend}: shape {got.shape}, {want.shape}"
    lines, worst = mismatches(got, want)
    assert not lines, (f"{label} on {backend}: logits differ from transformers "
                       f"(tolerance {TOLERANCE} of the row's max |logit|, worst {worst:.3g}):\n  "
                       + "\n  ".join(lines))


@pytest.fixture(scope="module")
def reference_logits(tmp_path_factory):
    """logits(name, arch, fmt, overrides) -> (moert checkpoint directory,
    token ids, transformers' logits), each written and run once per module.
    `overrides` is a JSON string (hashable) of config changes."""
    root = tmp_path_factory.mktemp("parity")

    @functools.lru_cache(maxsize=None)
    def logits(name, arch, fmt, overrides="{}"):
        directory = str(root / f"{name}-{fmt}")
        twin = write_checkpoint(arch, fmt, directory, overrides=json.loads(overrides))
        ids = tokens(read_config(twin)["vocab_size"])
        return os.path.join(directory, "moert"), ids, transformers_logits(
            transformers_model(twin), ids)

    return logits


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("arch,fmt", CASES, ids=[f"{a}-{f}" for a, f in CASES])
def test_logits_match_transformers(reference_logits, arch, fmt, backend):
    directory, ids, want = reference_logits(arch, arch, fmt)
    compare(f"{arch} {fmt}", backend, directory, ids, want)


# ---------------------------------------------------------------------------
# Config variants (f32): options the tiny configs leave at one value
# ---------------------------------------------------------------------------

# name -> (family, config overrides, None or (why moert differs, a function
# returning transformers' model changed to compute what moert computes)).
# A known difference is a strict xfail plus a test that moert matches the
# changed model, which proves the stated cause; once moert is fixed both
# fail, and the variant's third element goes.
VARIANTS = {
    "mixtral-window16": ("mixtral", {"sliding_window": 16}, None),
    "qwen3_moe-window16": ("qwen3_moe", {"use_sliding_window": True, "sliding_window": 16}, None),
    "qwen2-window16-all-layers": (
        "qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0},
        None),
    # Qwen2 windows the layers >= max_window_layers, Qwen2-MoE the even
    # layers < max_window_layers (transformers' layer_types); a config's own
    # layer_types wins.
    "qwen2-window16-from-layer1": (
        "qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1},
        None),
    "qwen2_moe-window16": (
        "qwen2_moe", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 3},
        None),
    "qwen2-window16-layer-types": (
        "qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0,
                  "layer_types": ["full_attention", "sliding_attention"]}, None),
    # attention_bias: q/k/v and o biases.
    "llama-attention-bias": ("llama", {"attention_bias": True}, None),
    "qwen3_moe-attention-bias": ("qwen3_moe", {"attention_bias": True}, None),
    "olmoe-attention-bias": ("olmoe", {"attention_bias": True}, None),
    "llama-tied-embeddings": ("llama", {"tie_word_embeddings": True}, None),
    "llama-linear-rope": ("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, None),
    "llama-yarn": ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                              "original_max_position_embeddings": 64}}, None),
    "mistral-head-dim32": ("mistral", {"head_dim": 32}, None),
    "olmoe-norm-topk": ("olmoe", {"norm_topk_prob": True}, None),
    "qwen2_moe-sparse-step2": ("qwen2_moe", {"decoder_sparse_step": 2, "mlp_only_layers": [],
                                             "norm_topk_prob": True}, None),
    "qwen3_moe-yarn": ("qwen3_moe", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                      "original_max_position_embeddings": 64}},
                       None),
    # YaRN without mscale / mscale_all_dim: attention factor 0.1 ln(4) + 1 on
    # cos/sin, no softmax factor.
    "deepseek_v2-yarn-default-mscale": (
        "deepseek_v2", {"rope_scaling": {"type": "yarn", "factor": 4.0,
                                         "original_max_position_embeddings": 64,
                                         "beta_fast": 32, "beta_slow": 1}}, None),
    "deepseek_v3-no-rope-scaling": ("deepseek_v3", {"rope_scaling": None}, None),
}
VARIANTS = {name: v for name, v in VARIANTS.items() if v[0] in ARCHITECTURES}


def variant_params():
    params = []
    for name, (_, _, known) in VARIANTS.items():
        marks = [pytest.mark.xfail(strict=True, reason=known[0])] if known else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("variant", variant_params())
def test_variant_matches_transformers(reference_logits, variant, backend):
    arch, overrides, _ = VARIANTS[variant]
    directory, ids, want = reference_logits(variant, arch, "f32", json.dumps(overrides))
    compare(f"{variant} f32", backend, directory, ids, want)


@pytest.mark.parametrize("variant", [n for n, v in VARIANTS.items() if v[2]])
def test_variant_difference_is_the_stated_one(reference_logits, variant):
    arch, overrides, (why, changed) = VARIANTS[variant]
    directory, ids, _ = reference_logits(variant, arch, "f32", json.dumps(overrides))
    want = transformers_logits(changed(directory), ids)
    compare(f"{variant} f32 against transformers changed ({changed.__name__})", "reference",
            directory, ids, want)


# ---------------------------------------------------------------------------
# DeepSeek: YaRN's softmax factor, noaux_tc's masked groups
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", [a for a in ("deepseek_v2", "deepseek_v3") if a in ARCHITECTURES])
def test_transformers_applies_the_yarn_softmax_factor(tmp_path, arch):
    # MLA's softmax scale is qk_head_dim^-0.5 * m^2, m = 0.1 mscale_all_dim
    # ln(factor) + 1 (the models' reference code, as moert applies it).
    # transformers releases before yarn_apply_mscale (PR #47435) leave m^2
    # out for DeepSeek-V2, and every deepseek_v2 comparison above then fails
    # with errors of order 1e-1: this names the cause.
    make_checkpoint.make_checkpoint(arch, str(tmp_path), dtype="f32", seed=SEED)
    config = read_config(tmp_path)
    rope = config["rope_scaling"]
    m = 0.1 * rope["mscale_all_dim"] * np.log(rope["factor"]) + 1.0
    want = (config["qk_nope_head_dim"] + config["qk_rope_head_dim"]) ** -0.5 * m * m
    attention = transformers_model(str(tmp_path)).model.layers[0].self_attn
    assert attention.scaling == pytest.approx(want, rel=1e-12), (
        f"transformers {transformers.__version__} {arch}: softmax scale {attention.scaling}, "
        f"with YaRN's m^2 {want}")


def biased_down(directory, shift):
    """Moves every e_score_correction_bias of the checkpoint in `directory` by
    `shift`."""
    path = os.path.join(directory, "model.safetensors")
    typed = safetensors_io.read_safetensors_typed(path)
    for name, (dtype, array) in typed.items():
        if name.endswith("e_score_correction_bias"):
            typed[name] = (dtype, array + np.float32(shift))
    safetensors_io.write_safetensors(path, typed, {"format": "pt"})


# noaux_tc drops the experts of all but topk_group groups before the top-k
# (transformers masks them with -inf).  With the tiny checkpoints' biases,
# U(0, 0.2), every biased score sigmoid + bias is positive and the kept
# experts outrank dropped ones whatever these are set to; moved down by 1,
# most biased scores are negative, and a dropped expert set to 0 instead of
# -inf would be chosen (as moert's router once did).
NEGATIVE_BIAS = -1.0
NOAUX_TC_FAMILIES = [a for a in ("deepseek_v3", "glm4_moe") if a in ARCHITECTURES]


@pytest.fixture(scope="module")
def negative_bias_logits(tmp_path_factory):
    """logits(arch) -> (directory, ids, transformers' logits) of an f32
    checkpoint of `arch` with its biases moved by NEGATIVE_BIAS."""
    root = tmp_path_factory.mktemp("noaux_tc")

    @functools.lru_cache(maxsize=None)
    def logits(arch):
        directory = str(root / arch)
        make_checkpoint.make_checkpoint(arch, directory, dtype="f32", seed=SEED)
        biased_down(directory, NEGATIVE_BIAS)
        ids = tokens(read_config(directory)["vocab_size"])
        return directory, ids, transformers_logits(transformers_model(directory), ids)

    return logits


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("arch", NOAUX_TC_FAMILIES)
def test_noaux_tc_with_negative_biased_scores(negative_bias_logits, arch, backend):
    directory, ids, want = negative_bias_logits(arch)
    compare(f"{arch} f32 (biases {NEGATIVE_BIAS:+})", backend, directory, ids, want)
