"""Packed weights: GPTQ, AWQ and MXFP4 checkpoints in their real layouts, and
quantize on load (moert.load(..., quantize=...), moert.random_model, the CLI's
--quantize).

The checkpoints are written by moert_reference.make_checkpoint's packed
writer (NumPy, from the formats' definitions; test_writer_* check its bytes
against the dequantisation formulas of AutoGPTQ, AutoAWQ and transformers'
MXFP4 integration), loaded with device "reference", and compared with the
NumPy reference model (moert_reference.reference) run on the dequantised
weights each packed tensor stands for.  moert's reference backend computes
in double from the exact packed values and rounds activations to f32, the
reference in float64 from the same values, so only f32 rounding separates
them: the f32 checkpoints' tolerance of test_cpp_models (1e-4 of the logit
scale) applies, and the greedy tokens must agree.

Quantize on load is compared the same way with the reference run on weights
quantized by the definitions in NumPy (rtn_quantize), and with the
unquantised model within bounds that come from the quantizers' steps.

Device "cpu" (strict: its own packed linear and moe kernels, no fallback)
joins the comparisons wherever its backend is available.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from moert_reference import make_checkpoint, reference, safetensors_io

ROOT = pathlib.Path(__file__).resolve().parents[2]
moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

PROMPT = [3, 17, 101, 7, 42, 250, 9, 64]
NEW_TOKENS = 6
# moert (f32 activations, exact weights, precision="exact") against float64:
# f32 rounding only.
TOLERANCE = 1e-4
# precision="fast" (the default): a prompt's products may round x and the
# weight to bf16 (2^-9 relative each, std 2^-9/sqrt(3) per operand); through
# a few layers of attention and experts the logits' error stays a few times
# 2^-9 of their scale (2e-3 measured on these models); 2e-2 leaves the
# compounding of three layers and a spread of 5 std.
FAST_TOLERANCE = 2e-2
PACKED_SUFFIXES = (".qweight", ".qzeros", ".scales", ".g_idx", "_blocks", "_scales")


def devices():
    """reference, and cpu (strict: no fallback) when its backend is available."""
    cpu = [b for b in moert.backends() if b["name"] == "cpu"]
    reason = cpu[0]["reason"] if cpu else "the cpu backend plugin was not found"
    return [pytest.param("reference"),
            pytest.param("cpu", marks=pytest.mark.skipif(
                not (cpu and cpu[0]["available"]),
                reason="cpu backend unavailable: " + reason))]


def scaled_error(got, want):
    """Largest |got - want| over the largest |want|, per row, worst row."""
    got = np.asarray(got, dtype=np.float64)
    err = np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)
    return float(err.max())


def reference_model(directory, dequantised):
    """The NumPy reference of a packed checkpoint: its plain tensors as
    stored, each packed weight replaced by the values it stands for."""
    typed = {name: value
             for name, value in safetensors_io.read_checkpoint_typed(str(directory)).items()
             if not name.endswith(PACKED_SUFFIXES)}
    for name, values in dequantised.items():
        typed[name] = ("F64", values)
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config.pop("quantization_config", None)
    return reference.Model(config, typed)


def check_against_reference(directory, dequantised, device="reference", **load):
    model = moert.load(str(directory), backend=device, strict=device != "reference",
                       precision="exact", **load)
    ref = reference_model(directory, dequantised)
    tokens = model.generate(PROMPT, max_new_tokens=NEW_TOKENS)
    assert tokens == ref.greedy(PROMPT, NEW_TOKENS)
    fed = PROMPT + tokens[:-1]
    want = ref.forward(fed)
    err = scaled_error(model.forward(fed), want)
    assert err <= TOLERANCE, f"logits differ by {err:.3g} (tolerance {TOLERANCE})"
    # The default precision: bf16 products allowed, within their bound.
    fast = moert.load(str(directory), backend=device, strict=device != "reference", **load)
    err = scaled_error(fast.forward(fed), want)
    assert err <= FAST_TOLERANCE, f"fast logits differ by {err:.3g} (tolerance {FAST_TOLERANCE})"
    return model


def load_error(directory, **load):
    with pytest.raises(moert.Error) as info:
        moert.load(str(directory), **load)
    return str(info.value)


def set_quantization_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["quantization_config"].update(changes)
    path.write_text(json.dumps(config))


# ---------------------------------------------------------------------------
# The writer against the upstream dequantisation formulas
# ---------------------------------------------------------------------------

def _unpack_words(words, shifts=range(0, 32, 4)):
    """int32 [R, C] -> nibbles [R, C, 8] in bit order (AutoGPTQ's and
    AutoAWQ's torch.bitwise_right_shift(x[..., None], [0, 4, ..., 28]) & 15)."""
    w = np.asarray(words).astype(np.int64) & 0xFFFFFFFF
    return (w[:, :, None] >> np.array(list(shifts))[None, None, :]) & 15


def test_writer_gptq_is_autogptq_v1(tmp_path):
    # AutoGPTQ's dequantisation: zeros = unpack(qzeros) + 1, weight =
    # unpack(qweight) along K, W[k, n] = scales[g_idx[k], n] * (weight[k, n] -
    # zeros[g_idx[k], n]); moert's W is its transpose.
    _, deq = make_checkpoint.make_quantized_checkpoint(
        "qwen3_moe", str(tmp_path), "gptq", group_size=32, sym=False, seed=4)
    typed = safetensors_io.read_checkpoint_typed(str(tmp_path))
    base = "model.layers.0.self_attn.o_proj"
    qweight, qzeros = typed[base + ".qweight"][1], typed[base + ".qzeros"][1]
    scales, g_idx = typed[base + ".scales"][1].astype(np.float64), typed[base + ".g_idx"][1]
    zeros = _unpack_words(qzeros).reshape(qzeros.shape[0], -1) + 1
    weight = _unpack_words(qweight.T).reshape(qweight.shape[1], -1).T  # [K, N]
    w = scales[g_idx] * (weight - zeros[g_idx])
    np.testing.assert_array_equal(w.T, deq[base + ".weight"])
    assert typed[base + ".qweight"][0] == "I32" and qweight.shape == (128 // 8, 64)


def test_writer_awq_is_autoawq_gemm(tmp_path):
    # AutoAWQ's unpack_awq + reverse_awq_order: nibbles in bit order, columns
    # reordered by [0, 4, 1, 5, 2, 6, 3, 7]; W[k, n] = (w - z) * s per group.
    _, deq = make_checkpoint.make_quantized_checkpoint(
        "mixtral", str(tmp_path), "awq", group_size=32, seed=5)
    typed = safetensors_io.read_checkpoint_typed(str(tmp_path))
    base = "model.layers.1.block_sparse_moe.experts.2.w2"
    qweight, qzeros = typed[base + ".qweight"][1], typed[base + ".qzeros"][1]
    scales = typed[base + ".scales"][1].astype(np.float64)
    reverse = np.arange(qweight.shape[1] * 8).reshape(-1, 8)[:, [0, 4, 1, 5, 2, 6, 3, 7]].ravel()
    iweight = _unpack_words(qweight).reshape(qweight.shape[0], -1)[:, reverse]
    izeros = _unpack_words(qzeros).reshape(qzeros.shape[0], -1)[:, reverse]
    group = np.arange(qweight.shape[0]) // 32
    w = (iweight - izeros[group]) * scales[group]
    np.testing.assert_array_equal(w.T, deq[base + ".weight"])


def test_writer_mxfp4_is_gpt_oss(tmp_path):
    # transformers' convert_moe_packed_tensors: low nibble = even element,
    # FP4_VALUES lookup, ldexp by scales - 127.
    _, deq = make_checkpoint.make_quantized_checkpoint("qwen3_moe", str(tmp_path), "mxfp4",
                                                       seed=6)
    typed = safetensors_io.read_checkpoint_typed(str(tmp_path))
    name = "model.layers.2.mlp.experts.5.down_proj.weight"
    blocks, scales = typed[name + "_blocks"][1], typed[name + "_scales"][1]
    assert blocks.shape == (64, 1, 16) and scales.shape == (64, 1)
    lut = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
    out = np.empty(blocks.shape[:-1] + (32,))
    out[..., 0::2] = lut[blocks & 0x0F]
    out[..., 1::2] = lut[blocks >> 4]
    out = np.ldexp(out, scales.astype(np.int32)[..., None] - 127)
    np.testing.assert_array_equal(out.reshape(64, 32), deq[name])
    assert "model.layers.0.self_attn.q_proj.weight" in typed  # attention stays bf16


# ---------------------------------------------------------------------------
# Packed checkpoints against the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("arch,sym,group", [
    ("qwen2_moe", True, 32),     # shared expert, its sigmoid gate, qkv biases
    ("qwen2_moe", False, 32),
    ("qwen3_moe", True, -1),     # one group per row: K = 64, 128 or 32
    ("qwen3_moe", False, -1),
    ("llama", False, 64),
])
def test_gptq_matches_reference(tmp_path, arch, sym, group, device):
    _, deq = make_checkpoint.make_quantized_checkpoint(arch, str(tmp_path), "gptq",
                                                       group_size=group, sym=sym, seed=7)
    model = check_against_reference(tmp_path, deq, device)
    info = model.info["weight_dtype"]
    assert "int4" in info and "bf16" in info, info
    if group > 0:
        assert "int4 g%d" % group in info
    assert "int4" in model.summary(roofline=False)["text"]


def test_gptq_desc_act(tmp_path):
    # desc_act with the trivial g_idx (k // group) loads; a g_idx that
    # permutes the groups (act order) is refused naming the tensor.
    _, deq = make_checkpoint.make_quantized_checkpoint("mixtral", str(tmp_path / "ok"), "gptq",
                                                       group_size=32, desc_act=True, seed=8)
    check_against_reference(tmp_path / "ok", deq)
    permuted = np.argsort(np.random.default_rng(0).random(64)) // 32
    make_checkpoint.make_quantized_checkpoint("mixtral", str(tmp_path / "bad"), "gptq",
                                              group_size=32, desc_act=True, seed=8,
                                              g_idx=permuted)
    msg = load_error(tmp_path / "bad")
    assert "model.layers.0.self_attn.q_proj.g_idx" in msg
    assert "act-order (desc_act)" in msg


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("arch,group", [("mixtral", 32), ("qwen2_moe", -1)])
def test_awq_matches_reference(tmp_path, arch, group, device):
    _, deq = make_checkpoint.make_quantized_checkpoint(arch, str(tmp_path), "awq",
                                                       group_size=group, seed=9)
    model = check_against_reference(tmp_path, deq, device)
    assert "int4" in model.info["weight_dtype"]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("arch", ["qwen3_moe", "qwen2_moe", "gpt_oss"])
def test_mxfp4_experts_match_reference(tmp_path, arch, device):
    # Routed experts MXFP4 (per expert, GPT-OSS's _blocks / _scales; for
    # gpt_oss itself its real layout: fused gate_up_proj [E, 2I, H/32, 16]
    # with gate and up interleaved, and down_proj); the attention and
    # Qwen2-MoE's shared expert stay bf16 (the moe node's shared_quant is
    # none).
    _, deq = make_checkpoint.make_quantized_checkpoint(arch, str(tmp_path), "mxfp4", seed=10)
    model = check_against_reference(tmp_path, deq, device)
    info = model.info["weight_dtype"]
    assert "mxfp4" in info and "bf16" in info, info


def test_quantize_packs_what_a_packed_checkpoint_left_plain(tmp_path):
    # MXFP4 experts stay as stored; quantize="int8" packs the attention and
    # the shared expert around them.
    make_checkpoint.make_quantized_checkpoint("qwen2_moe", str(tmp_path), "mxfp4", seed=10)
    info = moert.load(str(tmp_path), quantize="int8").info["weight_dtype"]
    assert "mxfp4" in info and "int8 g32" in info, info


def test_mixed_formats_are_refused_or_packed_when_asked(tmp_path):
    # One plain expert among GPTQ ones: refused naming both, unless quantize
    # packs it (in the checkpoint's groups, so that it stacks).
    odd = "model.layers.1.mlp.experts.3.up_proj.weight"
    _, deq = make_checkpoint.make_quantized_checkpoint("qwen3_moe", str(tmp_path / "a"), "gptq",
                                                       group_size=32, seed=11, plain=(odd,))
    msg = load_error(tmp_path / "a")
    assert odd in msg and "model.layers.1.mlp.experts.0.up_proj.weight" in msg, msg
    assert "quantize=\"int4\"" in msg
    model = moert.load(str(tmp_path / "a"), quantize="int4")
    assert "int4 g32" in model.info["weight_dtype"]
    # Only the odd expert differs from the reference (by int4 rounding).
    ref = reference_model(tmp_path / "a", deq)
    assert scaled_error(model.forward(PROMPT), ref.forward(PROMPT)) < 0.1

    # Every down_proj plain: gate, up and down of the moe node disagree.
    plain = tuple("model.layers.0.mlp.experts.%d.down_proj.weight" % e for e in range(8))
    make_checkpoint.make_quantized_checkpoint("qwen3_moe", str(tmp_path / "b"), "gptq",
                                              group_size=32, seed=11, plain=plain)
    msg = load_error(tmp_path / "b")
    assert "model.layers.0.mlp.moe" in msg
    assert "model.layers.0.mlp.experts.*.down_proj.weight (bf16)" in msg, msg
    assert "model.layers.0.mlp.experts.*.gate_proj.weight (int4)" in msg, msg
    moert.load(str(tmp_path / "b"), quantize="int4")


# ---------------------------------------------------------------------------
# Quantize on load
# ---------------------------------------------------------------------------

def rtn_quantize(values, quant):
    """Round to nearest in groups of 32 columns, written here from
    LoadOptions::quantize's definitions in float32 arithmetic (as the runtime
    computes them): int8 d = f16(amax / 127), q = rint(w / d) in [-127, 127];
    int4 (llama.cpp Q4_0) d = f16(m / -8) with m the value of largest
    magnitude, q = min(15, floor(w / d + 8.5)), W = (q - 8) d; mxfp4 scale
    2^e with e = amax / 6 rounded up to a power of two, each w / 2^e to the
    nearest e2m1 (ties to even).  Returns the float64 values W."""
    w = np.asarray(values, dtype=np.float32)
    out = np.zeros(w.shape, dtype=np.float64)
    grid = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    for c0 in range(0, w.shape[1], 32):
        x = w[:, c0:c0 + 32]
        amax = np.abs(x).max(axis=1)
        if quant == "int8":
            d = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
            inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
            q = np.clip(np.rint(x * inv[:, None]), -127, 127)
            out[:, c0:c0 + 32] = q * d[:, None].astype(np.float64)
        elif quant == "int4":
            m = x[np.arange(x.shape[0]), np.argmax(np.abs(x), axis=1)]
            d = (m / np.float32(-8)).astype(np.float16).astype(np.float32)
            inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
            q = np.clip(np.floor(x * inv[:, None] + np.float32(8.5)), 0, 15)
            out[:, c0:c0 + 32] = (q - 8) * d[:, None].astype(np.float64)
        else:  # mxfp4
            bits = (amax / np.float32(6)).astype(np.float32).view(np.uint32).astype(np.uint64)
            e = np.minimum(((bits + 0x7FFFFF) & 0x7F800000) >> 23, 254).astype(np.int64)
            scaled = x.astype(np.float64) * np.exp2(127 - e)[:, None]
            a = np.abs(scaled)
            # nearest of the grid (argmin takes the lower one at a midpoint);
            # at a midpoint the even code (0, 1.0, 2, 4): bf16 weights hit
            # midpoints often
            code = np.argmin(np.abs(a[..., None] - grid), axis=-1)
            mid = (a[..., None] == (grid[:-1] + grid[1:]) / 2).any(-1)
            code = np.where(mid & (code % 2 == 1), code + 1, code)
            code = np.where(a > 6, 7, code)
            out[:, c0:c0 + 32] = np.sign(scaled) * grid[code] * np.exp2(e - 127)[:, None]
    return out


def rtn_reference(directory, quant):
    """The NumPy reference of `directory` with every linear weight inside its
    decoder layers quantized by rtn_quantize (fp8 ones from their e4m3
    values times their block scale, in float32), and lm_head in int8."""
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    typed = safetensors_io.read_checkpoint_typed(str(directory))
    layers = config["num_hidden_layers"]
    for name, _, kind in make_checkpoint.tensor_specs(config):
        if kind not in ("linear", "fused") or int(name.split(".")[2]) >= layers:
            continue
        dtype, array = typed[name]
        if kind == "fused":
            # GPT-OSS's input-major [E, in, out]: each expert's [out, in]
            # rows quantized along in.
            values = array.astype(np.float32)
            typed[name] = ("F64", np.stack([rtn_quantize(v.T, quant).T for v in values]))
            continue
        if dtype == "F8_E4M3":
            _, inv = typed.pop(name + "_scale_inv")
            rows = np.arange(array.shape[0]) // 128
            cols = np.arange(array.shape[1]) // 128
            values = (array.astype(np.float32)
                      * inv.astype(np.float32)[rows[:, None], cols[None, :]])
        else:
            values = array.astype(np.float32)
        typed[name] = ("F64", rtn_quantize(values, quant))
    # An untied lm_head is packed int8 whatever the format.
    if "lm_head.weight" in typed:
        dtype, array = typed["lm_head.weight"]
        typed["lm_head.weight"] = ("F64", rtn_quantize(array.astype(np.float32), "int8"))
    config.pop("quantization_config", None)
    return reference.Model(config, typed)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("quant", ["int8", "int4", "mxfp4"])
@pytest.mark.parametrize("arch,dtype", [("qwen2_moe", "bf16"), ("deepseek_v3", "fp8"),
                                        ("mixtral", "f32"), ("gpt_oss", "bf16"),
                                        ("glm4_moe", "fp8")])
def test_quantize_on_load_matches_reference(tmp_path, arch, dtype, quant, device):
    # The packed model against the reference on weights quantized by the
    # definitions independently: exact up to f32 activations, as for the
    # packed checkpoints.
    make_checkpoint.make_checkpoint(arch, str(tmp_path), dtype=dtype, seed=2)
    model = moert.load(str(tmp_path), quantize=quant, backend=device,
                       strict=device != "reference", precision="exact")
    label = "mxfp4" if quant == "mxfp4" else quant + " g32"
    assert label in model.info["weight_dtype"]
    ref = rtn_reference(tmp_path, quant)
    tokens = model.generate(PROMPT, max_new_tokens=NEW_TOKENS)
    assert tokens == ref.greedy(PROMPT, NEW_TOKENS)
    fed = PROMPT + tokens[:-1]
    err = scaled_error(model.forward(fed), ref.forward(fed))
    assert err <= TOLERANCE, f"logits differ by {err:.3g} (tolerance {TOLERANCE})"


def relative_error(got, want):
    """||got - want|| / ||want|| over every logit."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


# Bounds on the logits' relative error against the unquantised model.  int8:
# each weight within half a step, amax / 254 per group of 32, an RMS of about
# 0.5% of a normal group's; each matmul passes that on, and the 7 in series of
# the 2-layer dense llama stay ≤ 1e-2 (measured 0.8%); the 3-layer MoE models
# chain more (experts, shared expert: measured 1.0–1.2%), ≤ 2e-2.  int4's
# steps are 16 times coarser (measured 0.13–0.18) and mxfp4's e2m1 grid
# coarser still at its top (0.18–0.28): 0.3 and 0.4 catch a wrong layout or
# scale (errors of order 1) with room for routing flips.
QUANTIZE_BOUNDS = {("llama", "int8"): 1e-2, "int8": 2e-2, "int4": 0.3, "mxfp4": 0.4}


@pytest.mark.parametrize("quant", ["int8", "int4", "mxfp4"])
@pytest.mark.parametrize("arch,dtype", [("llama", "f32"), ("qwen2_moe", "bf16"),
                                        ("qwen3_moe", "bf16")])
def test_quantize_on_load_is_close_to_the_plain_model(tmp_path, arch, dtype, quant):
    make_checkpoint.make_checkpoint(arch, str(tmp_path), dtype=dtype, seed=2)
    plain = moert.load(str(tmp_path))
    packed = moert.load(str(tmp_path), quantize=quant)
    label = "mxfp4" if quant == "mxfp4" else quant + " g32"
    summary = packed.summary(roofline=False)
    assert summary["weight_dtype"] == packed.info["weight_dtype"]
    assert label in summary["weight_dtype"] and label in summary["text"]
    assert summary["total_params"] == plain.summary(roofline=False)["total_params"]
    assert summary["weight_bytes"] < plain.summary(roofline=False)["weight_bytes"]
    err = relative_error(packed.forward(PROMPT), plain.forward(PROMPT))
    bound = QUANTIZE_BOUNDS.get((arch, quant), QUANTIZE_BOUNDS[quant])
    assert 0 < err <= bound, f"{quant}: relative error {err:.3g} (bound {bound})"


def test_random_model_quantized():
    config = make_checkpoint.build_config("mixtral")
    packed = moert.random_model(config, weights="int4", seed=1, name="tiny-mixtral")
    assert "int4 g32" in packed.info["weight_dtype"]
    assert packed.path == "tiny-mixtral"
    same = moert.random_model(json.dumps(config), weights="bf16", seed=1, quantize="int4")
    np.testing.assert_array_equal(packed.forward(PROMPT), same.forward(PROMPT))
    with pytest.raises(moert.Error, match="random weights: dtype must be"):
        moert.random_model(config, weights="int3")
    with pytest.raises(moert.Error, match="random weights: dtype must be"):
        moert.random_model(config, weights="bf16-experts")


def test_random_model_with_packed_experts_only():
    # "<format>-experts": the routed experts packed, everything else (the
    # attention, lm_head) bf16, as GPT-OSS's MXFP4 checkpoints are stored.
    config = make_checkpoint.build_config("gpt_oss")
    model = moert.random_model(config, weights="mxfp4-experts", seed=1)
    info = model.info["weight_dtype"]
    assert "mxfp4" in info and "bf16" in info and "int8" not in info, info
    everything = moert.random_model(config, weights="mxfp4", seed=1).info["weight_dtype"]
    assert "int8 g32" in everything, everything  # lm_head
    logits = model.forward(PROMPT)
    assert np.isfinite(logits).all() and np.abs(logits).max() > 0


# ---------------------------------------------------------------------------
# Errors name the file, the key or the tensor
# ---------------------------------------------------------------------------

@pytest.fixture
def gptq_dir(tmp_path):
    d = tmp_path / "gptq"
    make_checkpoint.make_quantized_checkpoint("mixtral", str(d), "gptq", group_size=32, seed=12)
    return d


def test_unknown_quant_method(gptq_dir):
    set_quantization_config(gptq_dir, quant_method="bitsandbytes")
    msg = load_error(gptq_dir)
    assert str(gptq_dir / "config.json") in msg
    assert "'quantization_config.quant_method' is 'bitsandbytes'" in msg


def test_gptq_bits_8(gptq_dir):
    set_quantization_config(gptq_dir, bits=8)
    msg = load_error(gptq_dir)
    assert str(gptq_dir / "config.json") in msg
    assert "'quantization_config.bits' is 8; moert reads 4-bit GPTQ only" in msg


def test_gptq_v2_format(gptq_dir):
    set_quantization_config(gptq_dir, checkpoint_format="gptq_v2")
    assert "'quantization_config.checkpoint_format' is 'gptq_v2'" in load_error(gptq_dir)


def test_awq_gemv(tmp_path):
    make_checkpoint.make_quantized_checkpoint("mixtral", str(tmp_path), "awq", seed=12)
    set_quantization_config(tmp_path, version="gemv")
    msg = load_error(tmp_path)
    assert str(tmp_path / "config.json") in msg
    assert "'quantization_config.version' is 'gemv'" in msg


@pytest.mark.parametrize("method", ["gptq", "awq", "mxfp4"])
def test_config_naming_a_method_on_plain_tensors(tmp_path, method):
    make_checkpoint.make_checkpoint("mixtral", str(tmp_path), dtype="bf16", seed=1)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = make_checkpoint.quantization_config(method)
    (tmp_path / "config.json").write_text(json.dumps(config))
    msg = load_error(tmp_path)
    assert "'quantization_config.quant_method' is '%s' but no tensor of" % method in msg
    assert "the config and the weights disagree" in msg


def test_packed_tensors_without_config(gptq_dir):
    config = json.loads((gptq_dir / "config.json").read_text())
    del config["quantization_config"]
    (gptq_dir / "config.json").write_text(json.dumps(config))
    msg = load_error(gptq_dir)
    assert "model.layers.0.self_attn.q_proj.qweight" in msg
    assert "quantization_config is absent" in msg


def test_mismatched_packed_shapes(tmp_path):
    # scales of another group size than the config's: named, with the shape
    # config.json implies.
    make_checkpoint.make_quantized_checkpoint("mixtral", str(tmp_path), "gptq", group_size=32,
                                              seed=12)
    set_quantization_config(tmp_path, group_size=16)
    msg = load_error(tmp_path)
    assert "model.layers.0.self_attn.q_proj.qzeros" in msg
    assert "group_size 16" in msg and "needs i32[4, 8]" in msg, msg
    # MXFP4 blocks of the wrong shape.
    mx = tmp_path / "mx"
    make_checkpoint.make_quantized_checkpoint("qwen3_moe", str(mx), "mxfp4", seed=12)
    tensors = safetensors_io.read_checkpoint_typed(str(mx))
    name = "model.layers.0.mlp.experts.0.gate_proj.weight_blocks"
    tensors[name] = ("U8", tensors[name][1][:16])
    safetensors_io.write_safetensors(str(mx / "model.safetensors"), tensors)
    msg = load_error(mx)
    assert name in msg and "u8[32, 2, 16]" in msg, msg


def test_bad_quantize_option(gptq_dir):
    assert "load option quantize must be" in load_error(gptq_dir, quantize="int3")


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------

def cli():
    path = os.environ.get("MOERT_CLI") or str(ROOT / "build" / "bin" / "moert")
    if not os.path.exists(path):
        pytest.skip(f"the moert CLI is not built ({path}); build first or set MOERT_CLI")
    return path


def test_cli_quantize(tmp_path):
    make_checkpoint.make_checkpoint("olmoe", str(tmp_path), dtype="bf16", seed=3)
    run = subprocess.run([cli(), "run", str(tmp_path), "--prompt-ids", "1,2,3",
                          "--max-new-tokens", "2", "--quantize", "int4", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "int4 g32" in run.stdout  # weights bf16 58%, int4 g32 42% (embeddings dominate)
    info = subprocess.run([cli(), "info", str(tmp_path), "--quantize", "mxfp4", "--no-roofline",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    assert "mxfp4" in info.stdout
    bad = subprocess.run([cli(), "run", str(tmp_path), "--quantize", "int3"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "argument --quantize: must be int8, int4 or mxfp4, got 'int3'" in bad.stderr


def test_precision_option(tmp_path):
    # precision="fast" (the default) and "exact" from Python and the CLI; the
    # CPU's prompt logits of a bf16 model differ between them by bf16
    # rounding only (FAST_TOLERANCE), and an unknown mode is named.
    make_checkpoint.make_checkpoint("qwen2_moe", str(tmp_path), dtype="bf16", seed=4)
    prompt = list(range(3, 40))  # past the GEMV rows: the bf16 matrix path
    backends = {b["name"]: b for b in moert.backends()}
    if "cpu" in backends and backends["cpu"]["available"]:
        exact = moert.load(str(tmp_path), backend="cpu", precision="exact").forward(prompt)
        fast = moert.load(str(tmp_path), backend="cpu").forward(prompt)
        err = scaled_error(fast, np.asarray(exact, dtype=np.float64))
        assert 0 < err <= FAST_TOLERANCE, err
    with pytest.raises(moert.Error, match='load option precision must be "fast" or "exact"'):
        moert.load(str(tmp_path), precision="quick")
    run = subprocess.run([cli(), "run", str(tmp_path), "--prompt-ids", "1,2,3",
                          "--max-new-tokens", "1", "--precision", "exact", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    bad = subprocess.run([cli(), "run", str(tmp_path), "--precision", "quick"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "argument --precision: must be fast or exact, got 'quick'" in bad.stderr


@pytest.mark.parametrize("arch,dtype,group", [("qwen2_moe", "bf16", 32),
                                              ("deepseek_v3", "fp8", -1)])
def test_quantize_command_writes_gptq(tmp_path, arch, dtype, group):
    # `python -m moert quantize IN OUT --to int4` writes a GPTQ v1 checkpoint
    # that moert reads back as int4 and that matches the reference on the
    # values the writer's own rule stands for (an independent dequantisation
    # of the tensors written).
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_checkpoint.make_checkpoint(arch, str(src), dtype=dtype, seed=5)
    (src / "tokenizer_config.json").write_text("{}")
    run = subprocess.run([sys.executable, "-m", "moert", "quantize", str(src), str(dst),
                          "--to", "int4", "--group-size", str(group)],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert run.returncode == 0, run.stderr
    assert "as GPTQ int4" in run.stdout
    assert (dst / "tokenizer_config.json").exists()
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "gptq"
    typed = safetensors_io.read_checkpoint_typed(str(dst))
    dequantised = {}
    for name, (dt, qweight) in typed.items():
        if not name.endswith(".qweight"):
            continue
        base = name[:-len(".qweight")]
        words = qweight.view(np.uint32)  # [K/8, N], 8 k per word, low bits first
        q = np.stack([(words >> np.uint32(4 * p)) & 0xF for p in range(8)], axis=1)
        q = q.reshape(-1, words.shape[1]).T.astype(np.float64)  # [N, K]
        zeros_words = typed[base + ".qzeros"][1].view(np.uint32)  # [G, N/8]
        z = np.stack([(zeros_words >> np.uint32(4 * p)) & 0xF for p in range(8)], axis=2)
        z = z.reshape(zeros_words.shape[0], -1).T.astype(np.float64) + 1  # [N, G]
        s = typed[base + ".scales"][1].astype(np.float64).T  # [N, G]
        g = typed[base + ".g_idx"][1]
        dequantised[base + ".weight"] = (q - z[:, g]) * s[:, g]
    assert dequantised, "no GPTQ tensors written"
    model = moert.load(str(dst))
    assert "int4" in model.info["weight_dtype"]
    check_against_reference(dst, dequantised)
    bad = subprocess.run([sys.executable, "-m", "moert", "quantize", str(dst), str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert bad.returncode == 1 and "already quantized ('gptq')" in bad.stderr


@pytest.mark.parametrize("quantize", ["", "int4"])
def test_compare_agrees_in_the_default_precision(tmp_path, quantize):
    # moert.compare (and `moert bench`) with the default precision="fast": a
    # bf16 model's 40-token prompt takes bf16 products on the cpu, a packed
    # one int8 activations; both agree with the reference within the fast
    # tolerance (3e-2), and exact products within 1e-4.
    backends = {b["name"]: b for b in moert.backends()}
    if not ("cpu" in backends and backends["cpu"]["available"]):
        pytest.skip("cpu backend unavailable")
    make_checkpoint.make_checkpoint("qwen2_moe", str(tmp_path), dtype="bf16", seed=6)
    fast = moert.compare(str(tmp_path), backends=["cpu:0"], prompt_tokens=40, new_tokens=4,
                         repeat=1, quantize=quantize)
    assert fast.meta["tolerance"] == 3e-2
    assert fast.rows[0]["agrees"], fast.rows[0]
    exact = moert.compare(str(tmp_path), backends=["cpu:0"], prompt_tokens=40, new_tokens=4,
                          repeat=1, quantize=quantize, precision="exact")
    assert exact.meta["tolerance"] == 1e-4
    assert exact.rows[0]["agrees"], exact.rows[0]


def test_gpt_oss_fused_experts_errors_name_the_tensor(tmp_path):
    # MXFP4 gate_up_proj without its down_proj scales; a bf16 gate_up_proj of
    # the wrong shape; a gate_up_proj stored 2-D per expert.  Each error names
    # the tensor.
    make_checkpoint.make_quantized_checkpoint("gpt_oss", str(tmp_path / "a"), "mxfp4", seed=4)
    path = tmp_path / "a" / "model.safetensors"
    typed = safetensors_io.read_checkpoint_typed(str(tmp_path / "a"))
    del typed["model.layers.1.mlp.experts.down_proj_scales"]
    safetensors_io.write_safetensors(str(path), typed, {"format": "pt"})
    msg = load_error(tmp_path / "a")
    assert "'model.layers.1.mlp.experts.down_proj_scales' is missing" in msg, msg

    make_checkpoint.make_checkpoint("gpt_oss", str(tmp_path / "b"), dtype="bf16", seed=4)
    typed = safetensors_io.read_checkpoint_typed(str(tmp_path / "b"))
    name = "model.layers.2.mlp.experts.gate_up_proj"
    dtype, array = typed[name]
    typed[name] = (dtype, np.ascontiguousarray(array.transpose(0, 2, 1)))  # [E, 2I, H]
    safetensors_io.write_safetensors(str(tmp_path / "b" / "model.safetensors"), typed,
                                     {"format": "pt"})
    msg = load_error(tmp_path / "b")
    assert name in msg and "[8, 64, 128]" in msg, msg

    del typed[name]
    safetensors_io.write_safetensors(str(tmp_path / "b" / "model.safetensors"), typed,
                                     {"format": "pt"})
    msg = load_error(tmp_path / "b")
    assert "'" + name + "' (or its MXFP4 '" + name + "_blocks') is missing" in msg, msg
