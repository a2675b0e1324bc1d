"""Checks of the Python reference: safetensors I/O, checkpoint generator and
float64 forward pass (sections refer to the MoE architecture reference)."""

import json
import math
import os
import struct
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from moert_reference import configs, reference
from moert_reference import make_checkpoint as mc
from moert_reference import safetensors_io as st
from moert_reference.reference import (
    apply_rope_adjacent, apply_rope_half, causal_mask, decode_bf16,
    decode_e4m3, dequantize_fp8, mla_softmax_scale, rms_norm, route_deepseek,
    route_softmax_topk, yarn_attention_scaling, yarn_correction_range,
    yarn_inv_freq)

ARCHS = configs.ARCHITECTURES
DTYPES = ("bf16", "f32", "fp8")
MOE_ARCHS = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
             "deepseek_v2_grouped", "deepseek_v3")
PROMPT = [int(t) for t in np.random.default_rng(123).integers(0, 512, 40)]
PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                          "..", "python"))


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """Factory writing (once per session) and returning checkpoint dirs."""
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}

    def get(arch, dtype="bf16", shards=1, seed=0, overrides=None):
        key = (arch, dtype, shards, seed,
               json.dumps(overrides, sort_keys=True))
        if key not in made:
            name = "%s-%s-%d-%d-%d" % (arch, dtype, shards, seed, len(made))
            path = root / name
            mc.make_checkpoint(arch, str(path), dtype=dtype, shards=shards,
                               seed=seed, overrides=overrides)
            made[key] = str(path)
        return made[key]
    return get


@pytest.fixture(scope="session")
def model(checkpoint_dir):
    """Factory returning loaded reference models, cached per variant."""
    loaded = {}

    def get(arch, dtype="bf16"):
        if (arch, dtype) not in loaded:
            loaded[(arch, dtype)] = reference.load(checkpoint_dir(arch, dtype))
        return loaded[(arch, dtype)]
    return get


# ---------------------------------------------------------------------------
# §1 safetensors container
# ---------------------------------------------------------------------------

def _sample_tensors():
    rng = np.random.default_rng(7)
    return {
        "f32": ("F32", rng.standard_normal((3, 5)).astype(np.float32)),
        "f16": ("F16", rng.standard_normal((4,)).astype(np.float16)),
        "bf16": ("BF16", rng.standard_normal((2, 3, 4)).astype(np.float32)),
        "fp8": ("F8_E4M3", (rng.standard_normal((5, 3)) * 50)
                .astype(np.float32)),
        "i32": ("I32", np.arange(-3, 4, dtype=np.int32)),
        "i64": ("I64", np.array([[2 ** 40, -5]], dtype=np.int64)),
        "u8": ("U8", np.arange(250, 256, dtype=np.uint8)),
        "i8": ("I8", np.array([-128, 0, 127], dtype=np.int8)),
        "bool": ("BOOL", np.array([True, False, True])),
        "scalar": ("F32", np.array(2.5, dtype=np.float32)),
        "empty": ("BF16", np.zeros((0, 4), dtype=np.float32)),
        "a_also_f32": ("F32", np.ones((1,), dtype=np.float32)),
    }


def test_safetensors_layout_and_roundtrip(tmp_path):
    tensors = _sample_tensors()
    path = str(tmp_path / "x.safetensors")
    st.write_safetensors(path, tensors, metadata={"format": "pt"})
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header_text = raw[8:8 + n].decode("utf-8")
    assert header_text == header_text.rstrip(" ") + " " * (
        len(header_text) - len(header_text.rstrip(" ")))
    assert len(header_text) - len(header_text.rstrip(" ")) < 8
    header = json.loads(header_text)
    keys = list(header)
    assert keys[0] == "__metadata__"
    assert header["__metadata__"] == {"format": "pt"}
    # Descending alignment, ties in dtype order, then by name.
    assert keys[1:] == ["i64", "a_also_f32", "f32", "scalar", "i32", "bf16",
                        "empty", "f16", "fp8", "i8", "u8", "bool"]
    position = 0
    for name in keys[1:]:
        begin, end = header[name]["data_offsets"]
        assert begin == position
        position = end
    assert 8 + n + position == len(raw)
    assert header["scalar"]["shape"] == []
    assert header["empty"]["data_offsets"][0] == \
        header["empty"]["data_offsets"][1]

    typed = st.read_safetensors_typed(path)
    assert set(typed) == set(tensors)
    for name, (dtype_str, array) in tensors.items():
        got_dtype, got = typed[name]
        assert got_dtype == dtype_str
        want = st.to_storage(dtype_str, array)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()

    plain = st.read_safetensors(path)
    assert plain["bf16"].dtype == np.float32
    assert plain["fp8"].dtype == np.float32
    np.testing.assert_array_equal(
        plain["bf16"],
        tensors["bf16"][1].astype(ml_dtypes.bfloat16).astype(np.float32))
    assert plain["i64"].dtype == np.int64 and plain["i64"][0, 0] == 2 ** 40


def _write_raw(path, header, data):
    body = json.dumps(header).encode()
    body += b" " * ((8 - len(body) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body + data)


@pytest.mark.parametrize("case", ["gap", "size", "short", "dup", "dtype"])
def test_safetensors_reader_rejects_bad_files(tmp_path, case):
    path = str(tmp_path / "bad.safetensors")
    good = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}
    data = bytes(12)
    if case == "gap":
        good["b"]["data_offsets"] = [9, 13]
        data = bytes(13)
    elif case == "size":
        good["a"]["shape"] = [3]
    elif case == "short":
        data = bytes(11)
    elif case == "dtype":
        good["a"]["dtype"] = "F33"
    if case == "dup":
        body = (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(body)) + body + bytes(2))
    else:
        _write_raw(path, good, data)
    with pytest.raises(ValueError):
        st.read_safetensors(path)


def test_safetensors_reader_accepts_valid_raw_file(tmp_path):
    path = str(tmp_path / "ok.safetensors")
    header = {"b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]},
              "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    data = struct.pack("<ff", 1.5, -2.0) + b"\x01\x02\x03\x04"
    _write_raw(path, header, data)
    out = st.read_safetensors(path)
    np.testing.assert_array_equal(out["a"], [1.5, -2.0])
    np.testing.assert_array_equal(out["b"], [1, 2, 3, 4])


def test_bf16_writer_matches_ml_dtypes(tmp_path):
    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.standard_normal(1000).astype(np.float32) * 10.0,
        np.array([0.0, -0.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
                  1.0 + 2.0 ** -8 + 2.0 ** -20, 3.0e38, 1e-40, np.inf,
                  -np.inf], dtype=np.float32)])
    path = str(tmp_path / "b.safetensors")
    st.write_safetensors(path, {"x": ("BF16", values)})
    (n,) = struct.unpack("<Q", open(path, "rb").read(8))
    raw = open(path, "rb").read()[8 + n:]
    bits = np.frombuffer(raw, dtype="<u2")
    expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    np.testing.assert_array_equal(bits, expected)
    # Round to nearest even by hand: a half-ulp tie goes to the even
    # mantissa, anything above half rounds up.
    assert list(bits[1002:1005]) == [0x3F80, 0x3F82, 0x3F81]
    # BF16 is the top half of an f32: exact values keep their top bits.
    exact = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    assert np.array_equal(
        exact.astype(ml_dtypes.bfloat16).view(np.uint16),
        (exact.view(np.uint32) >> 16).astype(np.uint16))
    # The reference's own decoder reads the same values back.
    np.testing.assert_array_equal(
        decode_bf16(bits)[:1000],
        values[:1000].astype(ml_dtypes.bfloat16).astype(np.float64))


def test_e4m3_decoder_matches_format():
    codes = np.arange(256, dtype=np.uint8)
    mine = decode_e4m3(codes)
    theirs = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    nan = np.isnan(theirs)
    assert list(np.nonzero(nan)[0]) == [0x7F, 0xFF]
    np.testing.assert_array_equal(np.isnan(mine), nan)
    np.testing.assert_array_equal(mine[~nan], theirs[~nan])
    assert mine[0x7E] == 448.0 and mine[0xFE] == -448.0
    assert mine[0x01] == 2.0 ** -9
    assert mine[0x38] == 1.0 and mine[0x41] == 2.25 and mine[0xB8] == -1.0


# ---------------------------------------------------------------------------
# §6.5 FP8 blocks
# ---------------------------------------------------------------------------

def test_fp8_dequantisation_of_known_block():
    # Hand-written bytes: 0x38 = 1.0, 0x41 = 2.25, 0x01 = 2^-9, 0xB8 = -1.0.
    q = np.zeros((130, 200), dtype=np.uint8)
    q[0, 0] = 0x38
    q[129, 0] = 0x41
    q[5, 150] = 0x01
    q[129, 199] = 0xB8
    scale_inv = np.array([[3.0, 5.0], [7.0, 0.5]], dtype=np.float32)
    w = dequantize_fp8(decode_e4m3(q), scale_inv)
    assert w[0, 0] == 3.0
    assert w[129, 0] == 2.25 * 7.0
    assert w[5, 150] == 2.0 ** -9 * 5.0
    assert w[129, 199] == -0.5
    assert np.count_nonzero(w) == 4
    with pytest.raises(ValueError):
        dequantize_fp8(decode_e4m3(q), scale_inv[:1])


def test_fp8_quantiser_blocks_and_edges():
    w = np.zeros((130, 200), dtype=np.float32)
    w[128, 128] = 224.0          # amax of block (1, 1): scale 0.5
    w[129, 150] = 1.125          # 2.25 after scaling
    w[3, 4] = -0.875             # only entry of block (0, 0): scale 0.875/448
    q, scale_inv = mc.quantize_fp8_blockwise(w)
    assert q.dtype == ml_dtypes.float8_e4m3fn and q.shape == (130, 200)
    assert scale_inv.shape == (2, 2) and scale_inv.dtype == np.float32
    assert scale_inv[1, 1] == 0.5
    assert scale_inv[0, 0] == np.float32(np.float32(0.875) / np.float32(448))
    bits = q.view(np.uint8)
    assert bits[128, 128] == 0x7E and bits[129, 150] == 0x41
    assert bits[3, 4] == 0xFE  # -448
    back = dequantize_fp8(decode_e4m3(bits), scale_inv)
    assert back[128, 128] == 224.0 and back[129, 150] == 1.125
    assert abs(back[3, 4] + 0.875) < 1e-6


def test_fp8_checkpoint_weights(checkpoint_dir, model):
    path = checkpoint_dir("deepseek_v3", "fp8")
    typed = st.read_checkpoint_typed(path)
    name = "model.layers.0.mlp.gate_proj.weight"        # [160, 64]
    assert typed[name][0] == "F8_E4M3"
    scale_dtype, scale = typed[name + "_scale_inv"]
    assert scale_dtype == "F32" and scale.shape == (2, 1)
    down = "model.layers.0.mlp.down_proj.weight"        # [64, 160]
    assert typed[down + "_scale_inv"][1].shape == (1, 2)
    m = model("deepseek_v3", "fp8")
    gate = m.layers[0]["mlp"][0]
    byte = int(typed[name][1].view(np.uint8)[130, 7])
    assert gate[130, 7] == reference.e4m3_value(byte) * float(scale[1, 0])
    # Each block's largest magnitude maps to ±448 and the dequantised weight
    # stays within e4m3 precision of the original values.
    original = mc.random_values(m.config, 0)[name].astype(np.float64)
    for bi in range(2):
        blk = original[bi * 128:(bi + 1) * 128]
        assert scale[bi, 0] == np.float32(np.float32(np.abs(blk).max())
                                          / np.float32(448))
    err = np.abs(gate - original)
    assert np.all(err <= 2.0 ** -4 * np.abs(original) + 2.0 ** -9 * 448
                  * float(scale.max()) / 448)
    assert m.config["quantization_config"] == {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
        "weight_block_size": [128, 128]}


# ---------------------------------------------------------------------------
# Generator: names, shapes, dtypes, config
# ---------------------------------------------------------------------------

def _swiglu(prefix, h, i):
    return {prefix + "gate_proj.weight": [i, h],
            prefix + "up_proj.weight": [i, h],
            prefix + "down_proj.weight": [h, i]}


def _expected_layer(arch, layer):
    """Hand-written hub names and shapes of one layer of each tiny config."""
    p = "model.layers.%d." % layer
    out = {p + "input_layernorm.weight": [64],
           p + "post_attention_layernorm.weight": [64]}
    a = p + "self_attn."
    if arch == "mixtral":
        out.update({a + "q_proj.weight": [64, 64],
                    a + "k_proj.weight": [32, 64],
                    a + "v_proj.weight": [32, 64],
                    a + "o_proj.weight": [64, 64],
                    p + "block_sparse_moe.gate.weight": [4, 64]})
        for e in range(4):
            q = p + "block_sparse_moe.experts.%d." % e
            out.update({q + "w1.weight": [96, 64], q + "w2.weight": [64, 96],
                        q + "w3.weight": [96, 64]})
    elif arch == "qwen2_moe":
        out.update({a + "q_proj.weight": [64, 64], a + "q_proj.bias": [64],
                    a + "k_proj.weight": [32, 64], a + "k_proj.bias": [32],
                    a + "v_proj.weight": [32, 64], a + "v_proj.bias": [32],
                    a + "o_proj.weight": [64, 64]})
        if layer == 0:
            out.update(_swiglu(p + "mlp.", 64, 128))
        else:
            out[p + "mlp.gate.weight"] = [8, 64]
            for e in range(8):
                out.update(_swiglu(p + "mlp.experts.%d." % e, 64, 32))
            out.update(_swiglu(p + "mlp.shared_expert.", 64, 96))
            out[p + "mlp.shared_expert_gate.weight"] = [1, 64]
    elif arch == "qwen3_moe":
        out.update({a + "q_proj.weight": [128, 64],
                    a + "k_proj.weight": [64, 64],
                    a + "v_proj.weight": [64, 64],
                    a + "o_proj.weight": [64, 128],
                    a + "q_norm.weight": [32], a + "k_norm.weight": [32],
                    p + "mlp.gate.weight": [8, 64]})
        for e in range(8):
            out.update(_swiglu(p + "mlp.experts.%d." % e, 64, 32))
    elif arch == "olmoe":
        out.update({a + "q_proj.weight": [64, 64],
                    a + "k_proj.weight": [32, 64],
                    a + "v_proj.weight": [32, 64],
                    a + "o_proj.weight": [64, 64],
                    a + "q_norm.weight": [64], a + "k_norm.weight": [32],
                    p + "mlp.gate.weight": [8, 64]})
        for e in range(8):
            out.update(_swiglu(p + "mlp.experts.%d." % e, 64, 48))
    elif arch.startswith("deepseek"):
        if arch == "deepseek_v3":
            out.update({a + "q_a_proj.weight": [48, 64],
                        a + "q_a_layernorm.weight": [48],
                        a + "q_b_proj.weight": [96, 48]})
        else:
            out[a + "q_proj.weight"] = [96, 64]
        out.update({a + "kv_a_proj_with_mqa.weight": [40, 64],
                    a + "kv_a_layernorm.weight": [32],
                    a + "kv_b_proj.weight": [128, 32],
                    a + "o_proj.weight": [64, 64]})
        if layer == 0:
            out.update(_swiglu(p + "mlp.", 64,
                               160 if arch == "deepseek_v3" else 128))
        else:
            out[p + "mlp.gate.weight"] = [8, 64]
            if arch == "deepseek_v3":
                out[p + "mlp.gate.e_score_correction_bias"] = [8]
            for e in range(8):
                out.update(_swiglu(p + "mlp.experts.%d." % e, 64, 32))
            out.update(_swiglu(p + "mlp.shared_experts.", 64,
                               32 if arch == "deepseek_v3" else 64))
    elif arch == "gpt_oss":
        # §8: biases everywhere, sinks, fused input-major experts.
        out.update({a + "q_proj.weight": [64, 64], a + "q_proj.bias": [64],
                    a + "k_proj.weight": [32, 64], a + "k_proj.bias": [32],
                    a + "v_proj.weight": [32, 64], a + "v_proj.bias": [32],
                    a + "o_proj.weight": [64, 64], a + "o_proj.bias": [64],
                    a + "sinks": [4],
                    p + "mlp.router.weight": [8, 64],
                    p + "mlp.router.bias": [8],
                    p + "mlp.experts.gate_up_proj": [8, 64, 128],
                    p + "mlp.experts.gate_up_proj_bias": [8, 128],
                    p + "mlp.experts.down_proj": [8, 64, 64],
                    p + "mlp.experts.down_proj_bias": [8, 64]})
    elif arch == "glm4_moe":
        # q/k/v bias, no o bias, per-head q/k norm (head_dim 32).
        out.update({a + "q_proj.weight": [128, 64], a + "q_proj.bias": [128],
                    a + "k_proj.weight": [64, 64], a + "k_proj.bias": [64],
                    a + "v_proj.weight": [64, 64], a + "v_proj.bias": [64],
                    a + "o_proj.weight": [64, 128],
                    a + "q_norm.weight": [32], a + "k_norm.weight": [32]})
        if layer == 0:
            out.update(_swiglu(p + "mlp.", 64, 160))
        else:
            out[p + "mlp.gate.weight"] = [8, 64]
            out[p + "mlp.gate.e_score_correction_bias"] = [8]
            for e in range(8):
                out.update(_swiglu(p + "mlp.experts.%d." % e, 64, 32))
            out.update(_swiglu(p + "mlp.shared_experts.", 64, 32))
    else:
        nkv = {"llama": 2, "mistral": 1, "qwen2": 2}[arch]
        out.update({a + "q_proj.weight": [64, 64],
                    a + "k_proj.weight": [16 * nkv, 64],
                    a + "v_proj.weight": [16 * nkv, 64],
                    a + "o_proj.weight": [64, 64]})
        if arch == "qwen2":
            out.update({a + "q_proj.bias": [64], a + "k_proj.bias": [32],
                        a + "v_proj.bias": [32]})
        out.update(_swiglu(p + "mlp.", 64, 128))
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_names_and_shapes(checkpoint_dir, arch):
    typed = st.read_checkpoint_typed(checkpoint_dir(arch, "bf16"))
    shapes = {n: list(a.shape) for n, (_, a) in typed.items()}
    assert shapes["model.embed_tokens.weight"] == [512, 64]
    assert shapes["lm_head.weight"] == [512, 64]
    assert shapes["model.norm.weight"] == [64]
    for layer in (0, 1):
        p = "model.layers.%d." % layer
        got = {n: s for n, s in shapes.items() if n.startswith(p)}
        assert got == _expected_layer(arch, layer)
    n_layers = configs.get_config(arch)["num_hidden_layers"]
    if arch in ("deepseek_v3", "glm4_moe"):
        mtp = "model.layers.%d." % n_layers
        assert shapes[mtp + "eh_proj.weight"] == [64, 128]
        assert shapes[mtp + "enorm.weight"] == [64]
        assert shapes[mtp + "hnorm.weight"] == [64]
        assert shapes[mtp + "shared_head.head.weight"] == [512, 64]
        assert shapes[mtp + "mlp.gate.e_score_correction_bias"] == [8]
    else:
        assert not any(n.startswith("model.layers.%d." % n_layers)
                       for n in shapes)
    for name, (dtype_str, _) in typed.items():
        want = "F32" if name.endswith("e_score_correction_bias") else "BF16"
        assert dtype_str == want, name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_config_json(checkpoint_dir, arch, dtype):
    with open(os.path.join(checkpoint_dir(arch, dtype), "config.json")) as f:
        config = json.load(f)
    body = configs.get_config(arch)
    for key, value in body.items():
        assert config[key] == value
    assert config["torch_dtype"] == {"bf16": "bfloat16", "f32": "float32",
                                     "fp8": "bfloat16"}[dtype]
    assert ("quantization_config" in config) == (dtype == "fp8")
    assert config["tie_word_embeddings"] is False


def test_fp8_checkpoint_dtypes(checkpoint_dir):
    typed = st.read_checkpoint_typed(checkpoint_dir("deepseek_v3", "fp8"))
    p = "model.layers.1."
    expect = {
        "model.embed_tokens.weight": "BF16", "lm_head.weight": "BF16",
        "model.norm.weight": "BF16",
        p + "input_layernorm.weight": "BF16",
        p + "self_attn.q_a_layernorm.weight": "BF16",
        p + "self_attn.kv_a_layernorm.weight": "BF16",
        p + "mlp.gate.weight": "BF16",
        p + "mlp.gate.e_score_correction_bias": "F32",
        p + "self_attn.q_a_proj.weight": "F8_E4M3",
        p + "self_attn.q_b_proj.weight": "F8_E4M3",
        p + "self_attn.kv_a_proj_with_mqa.weight": "F8_E4M3",
        p + "self_attn.kv_b_proj.weight": "F8_E4M3",
        p + "self_attn.o_proj.weight": "F8_E4M3",
        p + "mlp.experts.5.down_proj.weight": "F8_E4M3",
        p + "mlp.shared_experts.up_proj.weight": "F8_E4M3",
        p + "self_attn.kv_a_proj_with_mqa.weight_scale_inv": "F32",
    }
    for name, dtype_str in expect.items():
        assert typed[name][0] == dtype_str, name
    for name, (dtype_str, array) in typed.items():
        if dtype_str == "F8_E4M3":
            scale = typed[name + "_scale_inv"][1]
            rows, cols = array.shape
            assert scale.shape == (-(-rows // 128), -(-cols // 128))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reader_returns_what_was_written(checkpoint_dir, arch, dtype):
    path = checkpoint_dir(arch, dtype)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    written = mc.checkpoint_tensors(config, dtype, seed=0)
    read = st.read_checkpoint_typed(path)
    assert set(read) == set(written)
    values = mc.random_values(config, 0)
    for name, (dtype_str, array) in written.items():
        got_dtype, got = read[name]
        assert got_dtype == dtype_str
        assert got.shape == array.shape
        assert got.tobytes() == st.to_storage(dtype_str, array).tobytes()
        if dtype_str == "BF16":
            np.testing.assert_array_equal(
                got.astype(np.float32),
                values[name].astype(ml_dtypes.bfloat16).astype(np.float32))
        elif dtype_str == "F32" and not name.endswith("_scale_inv"):
            np.testing.assert_array_equal(got, values[name])


def test_seed_changes_weights(tmp_path):
    config = mc.build_config("mixtral")
    a = mc.random_values(config, 0)
    b = mc.random_values(config, 1)
    c = mc.random_values(config, 0)
    name = "model.layers.1.block_sparse_moe.experts.3.w2.weight"
    assert not np.array_equal(a[name], b[name])
    assert np.array_equal(a[name], c[name])


# ---------------------------------------------------------------------------
# (d) sharded checkpoints
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch,dtype", [("deepseek_v3", "fp8"),
                                        ("deepseek_v3", "bf16"),
                                        ("mixtral", "bf16"),
                                        ("qwen2_moe", "f32")])
def test_sharded_checkpoint_matches_single_file(checkpoint_dir, arch, dtype):
    single = checkpoint_dir(arch, dtype)
    sharded = checkpoint_dir(arch, dtype, shards=3)
    files = sorted(f for f in os.listdir(sharded)
                   if f.endswith(".safetensors"))
    assert files == ["model-0000%d-of-00003.safetensors" % i
                     for i in (1, 2, 3)]
    assert not os.path.exists(os.path.join(sharded, "model.safetensors"))
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        index = json.load(f)
    total = 0
    seen = set()
    for name_file in files:
        entries, metadata, _ = st.read_header(os.path.join(sharded,
                                                           name_file))
        assert metadata == {"format": "pt"}
        for name, info in entries.items():
            assert index["weight_map"][name] == name_file
            assert name not in seen
            seen.add(name)
            total += info["data_offsets"][1] - info["data_offsets"][0]
    assert seen == set(index["weight_map"])
    assert index["metadata"]["total_size"] == total

    a = st.read_checkpoint_typed(single)
    b = st.read_checkpoint_typed(sharded)
    assert set(a) == set(b)
    for name in a:
        assert a[name][0] == b[name][0]
        assert a[name][1].tobytes() == b[name][1].tobytes()
    logits_a = reference.load(single).forward(PROMPT[:24])
    logits_b = reference.load(sharded).forward(PROMPT[:24])
    assert np.array_equal(logits_a, logits_b)


# ---------------------------------------------------------------------------
# (a) forward, causality, greedy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_is_causal_and_greedy_consistent(model, arch, dtype):
    m = model(arch, dtype)
    full = m.forward(PROMPT)
    assert full.shape == (40, 512) and full.dtype == np.float64
    assert np.all(np.isfinite(full))
    assert np.std(full) > 0.5
    for k in (1, 9, 17, 33):
        np.testing.assert_allclose(full[:k], m.forward(PROMPT[:k]),
                                   rtol=1e-10, atol=1e-10)
    prompt = PROMPT[:12]
    new = m.greedy(prompt, 3)
    assert len(new) == 3 and all(0 <= t < 512 for t in new)
    seq = list(prompt)
    for token in new:
        assert token == int(np.argmax(m.forward(seq)[-1]))
        seq.append(token)


def test_causality_check_detects_a_non_causal_mask(model, monkeypatch):
    m = model("mixtral")
    monkeypatch.setattr(reference, "causal_mask",
                        lambda length, window=None:
                        np.ones((length, length), dtype=bool))
    full = m.forward(PROMPT[:20])
    prefix = m.forward(PROMPT[:10])
    assert not np.allclose(full[:10], prefix, rtol=1e-10, atol=1e-10)


def test_dtype_variants_agree_closely(model):
    # BF16 weights are the F32 weights rounded, so the logits stay close; the
    # F8 variant is coarser but still correlated.
    for arch in ("mixtral", "deepseek_v3"):
        f32 = model(arch, "f32").forward(PROMPT)
        bf16 = model(arch, "bf16").forward(PROMPT)
        fp8 = model(arch, "fp8").forward(PROMPT)

        def rel_rms(a):
            return np.sqrt(np.mean((a - f32) ** 2) / np.mean(f32 ** 2))
        assert 0.0 < rel_rms(bf16) < 0.02
        assert rel_rms(bf16) < rel_rms(fp8) < 0.2


def test_unused_tensor_is_rejected(tmp_path):
    path = str(tmp_path / "m")
    mc.make_checkpoint("llama", path)
    tensors = st.read_checkpoint_typed(path)
    tensors["model.layers.0.self_attn.q_proj.bias"] = (
        "BF16", np.zeros(64, dtype=ml_dtypes.bfloat16))
    st.write_safetensors(os.path.join(path, "model.safetensors"), tensors)
    with pytest.raises(ValueError, match="unused"):
        reference.load(path)


def test_tied_embeddings(checkpoint_dir):
    path = checkpoint_dir("qwen2", "bf16",
                          overrides={"tie_word_embeddings": True})
    typed = st.read_checkpoint_typed(path)
    assert "lm_head.weight" not in typed
    m = reference.load(path)
    h = m.hidden_states(PROMPT[:8])
    embed = decode_bf16(typed["model.embed_tokens.weight"][1].view(np.uint16))
    expected = rms_norm(h, m.final_norm, m.eps) @ embed.T
    np.testing.assert_array_equal(m.forward(PROMPT[:8]), expected)


# ---------------------------------------------------------------------------
# Layer structure
# ---------------------------------------------------------------------------

def test_dense_and_moe_layers(model):
    expected = {
        "mixtral": [True, True], "qwen2_moe": [False, True, True],
        "qwen3_moe": [True, True, True], "olmoe": [True, True],
        "deepseek_v2": [False, True, True],
        "deepseek_v2_grouped": [False, True, True],
        "deepseek_v3": [False, True, True], "llama": [False, False],
        "mistral": [False, False], "qwen2": [False, False],
    }
    for arch, kinds in expected.items():
        assert [layer["moe"] for layer in model(arch).layers] == kinds, arch
    config = dict(configs.get_config("qwen3_moe"), decoder_sparse_step=2,
                  num_hidden_layers=4, mlp_only_layers=[3])
    assert [reference.layer_is_moe(config, i) for i in range(4)] == \
        [False, True, False, False]


def test_sliding_window(model):
    allowed = causal_mask(40, 16)
    assert list(np.nonzero(allowed[30])[0]) == list(range(15, 31))
    assert allowed[5, 0] and not allowed[5, 6]
    m = model("mistral")
    assert all(layer["attention_spec"]["window"] == 16 for layer in m.layers)
    # The window only changes rows whose query sees more than 16 keys.
    windowed = m.forward(PROMPT)
    for layer in m.layers:
        layer["attention_spec"]["window"] = None
    try:
        full = m.forward(PROMPT)
    finally:
        for layer in m.layers:
            layer["attention_spec"]["window"] = 16
    np.testing.assert_allclose(windowed[:16], full[:16], rtol=1e-12,
                               atol=1e-12)
    assert np.max(np.abs(windowed[16:] - full[16:])) > 1e-3
    # Qwen's sliding_window is inert while use_sliding_window is false.
    for arch in ("qwen2", "qwen2_moe"):
        assert all(layer["attention_spec"]["window"] is None
                   for layer in model(arch).layers)


# ---------------------------------------------------------------------------
# (b) hand-checked invariants: norms, RoPE, YaRN, MLA scale, routing
# ---------------------------------------------------------------------------

def test_rms_norm_hand_value():
    y = rms_norm(np.array([3.0, 4.0]), np.array([1.0, 2.0]), 0.0)
    r = math.sqrt(12.5)
    np.testing.assert_allclose(y, [3.0 / r, 8.0 / r], rtol=1e-15)


def test_rope_pairings():
    d = 8
    inv_freq = np.array([1.0, 0.5, 0.25, 0.125])
    cos, sin = reference.rope_cos_sin(np.array([0, 1]), inv_freq, 1.0)
    x = np.zeros((2, 1, d))
    x[:, 0, 0] = 1.0
    half = apply_rope_half(x, cos, sin)
    assert half[1, 0, 0] == pytest.approx(math.cos(1.0))
    assert half[1, 0, 4] == pytest.approx(math.sin(1.0))      # j pairs j+d/2
    np.testing.assert_array_equal(half[0], x[0])              # position 0
    adj = apply_rope_adjacent(x, cos, sin)
    assert adj[1, 0, 0] == pytest.approx(math.cos(1.0))
    assert adj[1, 0, 1] == pytest.approx(math.sin(1.0))       # 2j pairs 2j+1
    # §6.3: de-interleaving then rotate-half equals the adjacent rotation.
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 3, d))
    cos, sin = reference.rope_cos_sin(np.arange(5), inv_freq, 1.3)
    perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
    np.testing.assert_allclose(apply_rope_half(q[..., perm], cos, sin),
                               apply_rope_adjacent(q, cos, sin)[..., perm],
                               rtol=1e-14, atol=1e-14)
    # Scores depend only on the relative position.
    cos, sin = reference.rope_cos_sin(np.arange(12), inv_freq, 1.0)
    a = np.broadcast_to(q[0], (12, 3, d))
    rot = apply_rope_half(a, cos, sin)
    assert np.dot(rot[7, 0], rot[4, 0]) == pytest.approx(
        np.dot(rot[3, 0], rot[0, 0]), rel=1e-12)


def test_yarn_values():
    # DeepSeek-V3 (§6.3): d = 64, θ = 1e4, factor 40, L0 = 4096.
    assert yarn_correction_range(32, 1, 64, 10000.0, 4096) == (10, 23)
    inv = yarn_inv_freq(64, 10000.0, 40.0, 4096)
    base = 1.0 / 10000.0 ** (np.arange(32) * 2 / 64)
    np.testing.assert_allclose(inv[:11], base[:11], rtol=1e-15)
    np.testing.assert_allclose(inv[23:], base[23:] / 40.0, rtol=1e-15)
    ramp = (15 - 10) / 13
    assert inv[15] == pytest.approx((1 - ramp) * base[15]
                                    + ramp * base[15] / 40.0, rel=1e-14)
    assert yarn_attention_scaling(40.0, 1.0, 1.0) == 1.0
    assert yarn_attention_scaling(40.0, 0.707, 0.707) == 1.0
    # Without truncation (GPT-OSS, §8): θ = 150000, factor 32.
    low, high = yarn_correction_range(32, 1, 64, 150000.0, 4096,
                                      truncate=False)
    assert low == pytest.approx(8.0928, abs=2e-4)
    assert high == pytest.approx(17.3980, abs=2e-4)
    assert yarn_attention_scaling(32.0) == pytest.approx(1.346574, abs=1e-6)


def test_mla_softmax_scale_values():
    v3 = mla_softmax_scale(192, {"type": "yarn", "factor": 40,
                                 "mscale": 1.0, "mscale_all_dim": 1.0})
    v2 = mla_softmax_scale(192, {"type": "yarn", "factor": 40,
                                 "mscale": 0.707, "mscale_all_dim": 0.707})
    assert v3 == pytest.approx(0.135234, abs=1e-6)
    assert v2 == pytest.approx(0.114721, abs=1e-6)
    assert v3 * math.sqrt(192) == pytest.approx(1.87385, abs=1e-5)
    assert v2 * math.sqrt(192) == pytest.approx(1.58963, abs=1e-5)
    assert mla_softmax_scale(192, None) == 192 ** -0.5


def test_tiny_deepseek_rope_settings(model):
    m = model("deepseek_v3")
    # d = 8, θ = 1e4, L0 = 64: low = floor(-0.50) -> 0, high = ceil(1.01) = 2.
    assert yarn_correction_range(32, 1, 8, 10000.0, 64) == (0, 2)
    base = 1.0 / 10000.0 ** (np.arange(4) * 2 / 8)
    np.testing.assert_allclose(
        m.inv_freq, [base[0], 0.5 * base[1] + 0.5 * base[1] / 4,
                     base[2] / 4, base[3] / 4], rtol=1e-15)
    g = 0.08 * math.log(4.0) + 1.0
    assert m.attention_scaling == pytest.approx((0.1 * math.log(4) + 1) / g,
                                                rel=1e-14)
    assert m.layers[0]["attention_spec"]["scale"] == pytest.approx(
        24 ** -0.5 * g * g, rel=1e-14)
    assert m.layers[0]["attention_spec"]["rope_adjacent"] is True
    v2 = model("deepseek_v2")
    assert v2.attention_scaling == 1.0
    assert v2.layers[0]["attention_spec"]["scale"] == pytest.approx(
        24 ** -0.5 * (0.0707 * math.log(4.0) + 1) ** 2, rel=1e-14)
    assert model("qwen3_moe").layers[0]["attention_spec"]["head_dim"] == 32


def test_softmax_router_hand_example():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    r = route_softmax_topk(logits, 2, normalize=True)
    assert list(r["experts"][0]) == [3, 2]
    np.testing.assert_allclose(r["weights"][0], [4 / 7, 3 / 7], rtol=1e-14)
    r = route_softmax_topk(logits, 2, normalize=False)
    np.testing.assert_allclose(r["weights"][0], [0.4, 0.3], rtol=1e-14)
    assert r["margin"][0] == pytest.approx(0.1)


def test_group_limited_greedy_hand_example():
    s = np.array([[0.05, 0.30, 0.10, 0.05, 0.22, 0.02, 0.08, 0.18]])
    r = route_deepseek(np.log(s), top_k=3, topk_method="group_limited_greedy",
                       scoring_func="softmax", n_group=4, topk_group=2,
                       norm_topk_prob=False, routed_scaling_factor=3.0)
    # Group maxima .30 .10 .22 .18 keep groups 0 and 2: experts 0, 1, 4, 5;
    # expert 7 (.18) loses to expert 0 (.05) because its group is dropped.
    assert list(r["experts"][0]) == [1, 4, 0]
    np.testing.assert_allclose(r["weights"][0], [0.9, 0.66, 0.15],
                               rtol=1e-13)
    greedy = route_deepseek(np.log(s), 3, "greedy", "softmax", 1, 1, False,
                            3.0)
    assert list(greedy["experts"][0]) == [1, 4, 7]


def test_noaux_tc_hand_example():
    s = np.array([[0.9, 0.1, 0.5, 0.6, 0.2, 0.3, 0.7, 0.75]])
    bias = np.array([0.0, 0.5, 0.0, 0.0, 0.6, 0.05, 0.0, -0.1])
    logits = np.log(s / (1 - s))
    r = route_deepseek(logits, top_k=3, topk_method="noaux_tc",
                       scoring_func="sigmoid", n_group=4, topk_group=2,
                       norm_topk_prob=True, routed_scaling_factor=2.5,
                       score_bias=bias)
    # s + bias = .9 .6 .5 .6 .8 .35 .7 .65; group top-2 sums 1.5 1.1 1.15
    # 1.35 keep groups 0 and 3 (a group max would keep group 2 instead).
    assert list(r["experts"][0]) == [0, 6, 7]
    total = 0.9 + 0.7 + 0.75 + 1e-20
    np.testing.assert_allclose(r["weights"][0],
                               np.array([0.9, 0.7, 0.75]) / total * 2.5,
                               rtol=1e-13)


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_router_invariants_on_model(model, arch):
    m = model(arch, "bf16")
    trace = []
    m.forward(PROMPT, trace)
    moe_layers = [i for i, layer in enumerate(m.layers) if layer["moe"]]
    assert [t["layer"] for t in trace] == moe_layers
    config = m.config
    k = config["num_experts_per_tok"]
    n_experts = (config.get("num_local_experts") or config.get("num_experts")
                 or config.get("n_routed_experts"))
    for t in trace:
        experts, weights = t["experts"], t["weights"]
        assert experts.shape == (40, k) and weights.shape == (40, k)
        for row in experts:
            assert len(set(row.tolist())) == k
            assert all(0 <= e < n_experts for e in row)
        assert np.all(weights > 0) and np.all(t["margin"] > 0)
        sums = weights.sum(axis=-1)
        if arch in ("mixtral", "qwen3_moe"):
            np.testing.assert_allclose(sums, 1.0, rtol=1e-13)
        elif arch == "deepseek_v3":
            np.testing.assert_allclose(sums, 2.5, rtol=1e-13)
        elif arch in ("qwen2_moe", "olmoe"):
            assert np.all(sums < 1.0)
        if arch in ("deepseek_v2_grouped", "deepseek_v3"):
            groups = experts // (n_experts // config["n_group"])
            for row in groups:
                assert len(set(row.tolist())) <= config["topk_group"]


def test_routing_margins(model):
    margins = model("mixtral").routing_margins(PROMPT)
    assert margins.shape == (40,) and np.all(np.isfinite(margins))
    assert np.all(margins > 0) and np.all(margins < 1)
    assert np.all(np.isinf(model("llama").routing_margins(PROMPT[:5])))


def test_router_weights_follow_scores(model):
    # Re-derive one DeepSeek-V3 MoE layer's routing from its input.
    m = model("deepseek_v3")
    ids = PROMPT[:10]
    cos, sin = reference.rope_cos_sin(np.arange(10), m.inv_freq,
                                      m.attention_scaling)
    h = m.embed[ids]
    layer0 = m.layers[0]
    h = h + m.attention(0, rms_norm(h, layer0["input_layernorm"], m.eps),
                        cos, sin)
    h = h + m.feed_forward(0, rms_norm(h, layer0["post_attention_layernorm"],
                                       m.eps))[0]
    layer1 = m.layers[1]
    h = h + m.attention(1, rms_norm(h, layer1["input_layernorm"], m.eps),
                        cos, sin)
    x = rms_norm(h, layer1["post_attention_layernorm"], m.eps)
    w = layer1["moe_weights"]
    s = 1.0 / (1.0 + np.exp(-(x @ w["gate"].T)))
    trace = []
    m.forward(ids, trace)
    experts, weights = trace[0]["experts"], trace[0]["weights"]
    for t in range(10):
        chosen = s[t, experts[t]]
        np.testing.assert_allclose(weights[t], chosen / chosen.sum() * 2.5,
                                   rtol=1e-12)
        biased = s[t] + w["score_bias"]
        pairs = biased.reshape(4, 2)
        best_groups = set(np.argsort(-pairs.sum(axis=1))[:2].tolist())
        allowed = [e for e in range(8) if e // 2 in best_groups]
        want = sorted(allowed, key=lambda e: -biased[e])[:3]
        assert list(experts[t]) == want


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "olmoe",
                                  "deepseek_v2"])
def test_moe_block_matches_per_token_formula(model, arch):
    # Token by token: softmax over the router logits, the k best experts,
    # weights per family, SwiGLU experts, and the family's shared part.
    m = model(arch)
    layer = m.layers[1]
    w = layer["moe_weights"]
    k = m.config["num_experts_per_tok"]
    x = np.random.default_rng(9).standard_normal((6, 64))
    got, _ = reference.moe_block(x, layer["moe_spec"], w)
    for t in range(6):
        logits = w["gate"] @ x[t]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        best = np.argsort(-p)[:k]
        weights = p[best]
        if arch == "mixtral":
            weights = weights / weights.sum()
        if arch == "deepseek_v2":
            weights = weights * 1.5
        want = np.zeros(64)
        for e, wt in zip(best, weights):
            g, u, d = w["experts"][e]
            a = g @ x[t]
            want += wt * (d @ (a / (1 + np.exp(-a)) * (u @ x[t])))
        if arch in ("qwen2_moe", "deepseek_v2"):
            g, u, d = w["shared"]
            a = g @ x[t]
            shared = d @ (a / (1 + np.exp(-a)) * (u @ x[t]))
            if arch == "qwen2_moe":
                shared *= 1 / (1 + np.exp(-(w["shared_gate"] @ x[t])[0]))
            want += shared
        np.testing.assert_allclose(got[t], want, rtol=1e-12, atol=1e-14)


def test_mla_absorbed_form_matches(model):
    # §6.2: caching c_kv and k_pe and absorbing W_kvb into the query and
    # output paths is mathematically identical to the naive form.
    for arch in ("deepseek_v2", "deepseek_v3"):
        m = model(arch)
        spec = m.layers[1]["attention_spec"]
        w = m.layers[1]["attention_weights"]
        rng = np.random.default_rng(5)
        length = 9
        x = rng.standard_normal((length, 64))
        cos, sin = reference.rope_cos_sin(np.arange(length), m.inv_freq,
                                          m.attention_scaling)
        naive = reference.mla_attention(x, w, spec, cos, sin)

        nh, dn, dr, dv, r = 4, 16, 8, 16, 32
        if "q_proj.weight" in w:
            q = x @ w["q_proj.weight"].T
        else:
            qa = x @ w["q_a_proj.weight"].T
            qa = qa / np.sqrt(np.mean(qa ** 2, -1, keepdims=True) + 1e-6) \
                * w["q_a_layernorm.weight"]
            q = qa @ w["q_b_proj.weight"].T
        q = q.reshape(length, nh, dn + dr)
        c = x @ w["kv_a_proj_with_mqa.weight"].T
        c_kv = c[:, :r]
        c_kv = c_kv / np.sqrt(np.mean(c_kv ** 2, -1, keepdims=True) + 1e-6) \
            * w["kv_a_layernorm.weight"]
        k_pe = apply_rope_adjacent(c[:, None, r:], cos, sin)[:, 0]
        q_pe = apply_rope_adjacent(q[..., dn:], cos, sin)
        w_kvb = w["kv_b_proj.weight"].reshape(nh, dn + dv, r)
        out = np.zeros((length, nh, dv))
        for h in range(nh):
            q_abs = q[:, h, :dn] @ w_kvb[h, :dn]          # [T, r]
            scores = (q_abs @ c_kv.T + q_pe[:, h] @ k_pe.T) * spec["scale"]
            for t in range(length):
                row = scores[t, :t + 1]
                p = np.exp(row - row.max())
                p /= p.sum()
                out[t, h] = w_kvb[h, dn:] @ (p @ c_kv[:t + 1])
        absorbed = out.reshape(length, nh * dv) @ w["o_proj.weight"].T
        np.testing.assert_allclose(naive, absorbed, rtol=1e-10, atol=1e-12)


def test_qk_norm_variants(model):
    # Qwen3: per-head q/k norm of width head_dim; OLMoE: full-width norm.
    q3 = model("qwen3_moe").layers[0]
    assert q3["attention_spec"]["qk_norm"] == "per_head"
    assert q3["attention_weights"]["q_norm.weight"].shape == (32,)
    ol = model("olmoe").layers[0]
    assert ol["attention_spec"]["qk_norm"] == "full"
    assert ol["attention_weights"]["k_norm.weight"].shape == (32,)
    assert ol["attention_weights"]["q_norm.weight"].shape == (64,)


# ---------------------------------------------------------------------------
# Command line and the shared bench shapes
# ---------------------------------------------------------------------------

def test_command_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    out = str(tmp_path / "cli")
    subprocess.run([sys.executable, "-m", "moert_reference.make_checkpoint",
                    "olmoe", out, "--dtype", "fp8", "--shards", "2",
                    "--seed", "4"], check=True, env=env, capture_output=True)
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    logits_path = str(tmp_path / "logits.bin")
    result = subprocess.run(
        [sys.executable, "-m", "moert_reference.reference", out, "--ids",
         "5", "6", "7", "--new", "2", "--logits-out", logits_path],
        check=True, env=env, capture_output=True, text=True)
    report = json.loads(result.stdout)
    m = reference.load(out)
    logits = m.forward([5, 6, 7])
    assert report["greedy"] == m.greedy([5, 6, 7], 2)
    assert report["logits_shape"] == [3, 512]
    stored = np.fromfile(logits_path, dtype="<f8").reshape(3, 512)
    assert np.array_equal(stored, logits)


def test_tiny_mixtral_matches_models_json():
    here = os.path.dirname(__file__)
    candidates = [os.environ.get("MOERT_MODELS_JSON", ""),
                  os.path.join(here, "..", "..", "bench", "models.json"),
                  os.path.join(here, "..", "..", "shared", "bench",
                               "models.json"),
                  "/work/shared/bench/models.json"]
    found = [p for p in candidates if p and os.path.exists(p)]
    if not found:
        pytest.skip("bench/models.json not available")
    with open(found[0]) as f:
        body = dict(json.load(f)["tiny-mixtral"])
    body.pop("tier")
    assert configs.get_config("mixtral") == body
