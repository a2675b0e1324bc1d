"""Tiny random checkpoints in exact Hugging Face hub layout.

``make_checkpoint(arch, directory, dtype, shards, seed)`` writes
``config.json`` and the weights of one of the tiny configs of
:mod:`moert_reference.configs`, using the hub tensor names and shapes of
reference doc §2–§7 (one 2-D tensor per expert, §3).

Weights are drawn from a normal distribution in a fixed order that depends
only on the config and the seed, so the BF16, F32 and FP8 variants and the
sharded and single-file variants of one seed hold the same underlying values:

* Linear weights: N(0, (0.8/sqrt(fan_in))²), routers N(0, 0.3²), biases
  N(0, 0.1²), embeddings N(0, 0.5²), lm_head N(0, 0.15²), norms
  1 + N(0, 0.05²), DeepSeek-V3 ``e_score_correction_bias`` U(0, 0.2).

Storage dtypes:

* ``bf16``: every tensor BF16 except ``e_score_correction_bias`` (F32, §6.4).
* ``f32``: every tensor F32.
* ``fp8``: the 2-D Linear weights inside decoder layers (attention
  projections, dense MLPs, experts, shared experts) are F8_E4M3 with an F32
  ``weight_scale_inv`` per 128×128 block; embeddings, lm_head, norms, the
  router, the Qwen2-MoE shared-expert gate and the score bias stay as in the
  BF16 variant (§6.5).  config.json gets the DeepSeek-V3
  ``quantization_config``.

Packed checkpoints (``make_quantized_checkpoint``) store the same draw in
the real serialisations of GPTQ (AutoGPTQ / GPTQModel v1: qweight, qzeros,
scales, g_idx), AWQ (AutoAWQ gemm) or MXFP4 (GPT-OSS's ``_blocks`` /
``_scales``, here per expert), written with NumPy from those formats'
definitions alone, and return the dequantised values each packed weight
stands for.

Command line::

    python -m moert_reference.make_checkpoint ARCH DIR [--dtype bf16|f32|fp8]
        [--shards N] [--seed S] [--quant gptq|awq|mxfp4 [--group-size G] [--asym]]
"""

import argparse
import json
import math
import os

import numpy as np

from .configs import ARCHITECTURES, get_config
from .safetensors_io import DTYPE_SIZES, write_safetensors

try:
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None


FP8_MAX = 448.0
FP8_BLOCK = (128, 128)
FP8_QUANTIZATION_CONFIG = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "activation_scheme": "dynamic",
    "weight_block_size": [128, 128],
}
TORCH_DTYPE = {"bf16": "bfloat16", "f32": "float32", "fp8": "bfloat16"}


# ---------------------------------------------------------------------------
# Layout: (name, shape, kind) for every tensor of the hub checkpoint.
# kind is one of: embed, norm, linear, bias, router, score_bias, lm_head,
# and extra (an unquantised 2-D weight of the DeepSeek MTP module).
# ---------------------------------------------------------------------------

def _head_dim(config):
    """head_dim from config.json, falling back to hidden/heads (§4, §5.2)."""
    hd = config.get("head_dim")
    if hd is None:
        hd = config["hidden_size"] // config["num_attention_heads"]
    return hd


def _num_kv_heads(config):
    """num_key_value_heads, defaulting to num_attention_heads (§7)."""
    nkv = config.get("num_key_value_heads")
    return config["num_attention_heads"] if nkv is None else nkv


def _is_moe_layer(config, i):
    """Whether decoder layer i holds an MoE block in the hub checkpoint.

    Mixtral and OLMoE: every layer (§4, §7).  Qwen2/3-MoE: i not in
    mlp_only_layers, num_experts > 0 and (i+1) % decoder_sparse_step == 0
    (§5.1).  DeepSeek: i >= first_k_dense_replace (§6.4).  Dense families:
    never.
    """
    model_type = config["model_type"]
    if model_type in ("mixtral", "olmoe", "gpt_oss"):
        return True
    if model_type == "glm4_moe":
        return i >= config.get("first_k_dense_replace", 1)
    if model_type in ("qwen2_moe", "qwen3_moe"):
        return (i not in config.get("mlp_only_layers", [])
                and config["num_experts"] > 0
                and (i + 1) % config.get("decoder_sparse_step", 1) == 0)
    if model_type in ("deepseek_v2", "deepseek_v3"):
        return i >= config.get("first_k_dense_replace", 0)
    return False


def _attention_specs(config, prefix):
    """Attention tensors of one decoder layer (§2, §5, §6.2, §7)."""
    model_type = config["model_type"]
    H = config["hidden_size"]
    p = prefix + "self_attn."
    if model_type in ("deepseek_v2", "deepseek_v3"):
        nh = config["num_attention_heads"]
        dq = config["qk_nope_head_dim"] + config["qk_rope_head_dim"]
        r = config["kv_lora_rank"]
        dr = config["qk_rope_head_dim"]
        dkv = config["qk_nope_head_dim"] + config["v_head_dim"]
        specs = []
        if config.get("q_lora_rank") is None:
            specs.append((p + "q_proj.weight", [nh * dq, H], "linear"))
        else:
            qr = config["q_lora_rank"]
            specs += [
                (p + "q_a_proj.weight", [qr, H], "linear"),
                (p + "q_a_layernorm.weight", [qr], "norm"),
                (p + "q_b_proj.weight", [nh * dq, qr], "linear"),
            ]
        specs += [
            (p + "kv_a_proj_with_mqa.weight", [r + dr, H], "linear"),
            (p + "kv_a_layernorm.weight", [r], "norm"),
            (p + "kv_b_proj.weight", [nh * dkv, r], "linear"),
            (p + "o_proj.weight", [H, nh * config["v_head_dim"]], "linear"),
        ]
        return specs

    nh = config["num_attention_heads"]
    nkv = _num_kv_heads(config)
    hd = _head_dim(config)
    if model_type in ("qwen2", "qwen2_moe"):
        qkv_bias = config.get("qkv_bias", True)
        o_bias = False
    else:
        qkv_bias = bool(config.get("attention_bias", False))
        o_bias = qkv_bias and model_type != "glm4_moe"
    specs = []
    for proj, rows in (("q_proj", nh * hd), ("k_proj", nkv * hd),
                       ("v_proj", nkv * hd)):
        specs.append((p + proj + ".weight", [rows, H], "linear"))
        if qkv_bias:
            specs.append((p + proj + ".bias", [rows], "bias"))
    specs.append((p + "o_proj.weight", [H, nh * hd], "linear"))
    if o_bias:
        specs.append((p + "o_proj.bias", [H], "bias"))
    if model_type == "qwen3_moe" or (model_type == "glm4_moe"
                                     and config.get("use_qk_norm")):
        specs += [(p + "q_norm.weight", [hd], "norm"),
                  (p + "k_norm.weight", [hd], "norm")]
    if model_type == "gpt_oss":
        specs.append((p + "sinks", [nh], "sinks"))
    if model_type == "olmoe":
        specs += [(p + "q_norm.weight", [nh * hd], "norm"),
                  (p + "k_norm.weight", [nkv * hd], "norm")]
    return specs


def _swiglu_specs(prefix, hidden, inter, names=("gate_proj", "up_proj",
                                                "down_proj")):
    """gate [I,H], up [I,H], down [H,I] of one SwiGLU MLP (§2)."""
    gate, up, down = names
    return [
        (prefix + gate + ".weight", [inter, hidden], "linear"),
        (prefix + up + ".weight", [inter, hidden], "linear"),
        (prefix + down + ".weight", [hidden, inter], "linear"),
    ]


def _ffn_specs(config, i, prefix):
    """Dense MLP or MoE tensors of decoder layer i (§3–§7)."""
    model_type = config["model_type"]
    H = config["hidden_size"]
    if not _is_moe_layer(config, i):
        return _swiglu_specs(prefix + "mlp.", H, config["intermediate_size"])

    if model_type == "mixtral":
        E = config["num_local_experts"]
        inter = config["intermediate_size"]
        p = prefix + "block_sparse_moe."
        specs = [(p + "gate.weight", [E, H], "router")]
        for e in range(E):
            # w1 = gate, w3 = up, w2 = down (§3); written in name order.
            q = p + "experts.%d." % e
            specs += [(q + "w1.weight", [inter, H], "linear"),
                      (q + "w2.weight", [H, inter], "linear"),
                      (q + "w3.weight", [inter, H], "linear")]
        return specs

    p = prefix + "mlp."
    if model_type == "gpt_oss":
        # Fused experts, input-major as the bf16 checkpoints store them (§8).
        E = config["num_local_experts"]
        inter = config["intermediate_size"]
        q = p + "experts."
        return [(p + "router.weight", [E, H], "router"),
                (p + "router.bias", [E], "bias"),
                (q + "gate_up_proj", [E, H, 2 * inter], "fused"),
                (q + "gate_up_proj_bias", [E, 2 * inter], "bias"),
                (q + "down_proj", [E, inter, H], "fused"),
                (q + "down_proj_bias", [E, H], "bias")]
    if model_type in ("deepseek_v2", "deepseek_v3", "glm4_moe"):
        E = config["n_routed_experts"]
        inter = config["moe_intermediate_size"]
    elif model_type in ("qwen2_moe", "qwen3_moe"):
        E = config["num_experts"]
        inter = config["moe_intermediate_size"]
    else:  # olmoe: intermediate_size is per expert (§7)
        E = config["num_experts"]
        inter = config["intermediate_size"]
    specs = [(p + "gate.weight", [E, H], "router")]
    if model_type in ("deepseek_v3", "glm4_moe"):
        specs.append((p + "gate.e_score_correction_bias", [E], "score_bias"))
    for e in range(E):
        specs += _swiglu_specs(p + "experts.%d." % e, H, inter)
    if model_type == "qwen2_moe":
        specs += _swiglu_specs(p + "shared_expert.", H,
                               config["shared_expert_intermediate_size"])
        specs.append((p + "shared_expert_gate.weight", [1, H], "router"))
    if model_type in ("deepseek_v2", "deepseek_v3", "glm4_moe"):
        n_shared = config.get("n_shared_experts") or 0
        if n_shared > 0:
            specs += _swiglu_specs(p + "shared_experts.", H, inter * n_shared)
    return specs


def _layer_specs(config, i):
    """All tensors of decoder layer i (§2)."""
    H = config["hidden_size"]
    prefix = "model.layers.%d." % i
    specs = [(prefix + "input_layernorm.weight", [H], "norm")]
    specs += _attention_specs(config, prefix)
    specs.append((prefix + "post_attention_layernorm.weight", [H], "norm"))
    specs += _ffn_specs(config, i, prefix)
    return specs


def _mtp_specs(config, i):
    """DeepSeek-V3 MTP module stored as layer i (§3, §6.5): a full decoder
    layer plus embed_tokens, enorm, hnorm, eh_proj and shared_head."""
    H = config["hidden_size"]
    V = config["vocab_size"]
    prefix = "model.layers.%d." % i
    specs = _layer_specs(config, i)
    specs += [
        (prefix + "embed_tokens.weight", [V, H], "embed"),
        (prefix + "enorm.weight", [H], "norm"),
        (prefix + "hnorm.weight", [H], "norm"),
        (prefix + "eh_proj.weight", [H, 2 * H], "extra"),
        (prefix + "shared_head.norm.weight", [H], "norm"),
        (prefix + "shared_head.head.weight", [V, H], "lm_head"),
    ]
    return specs


def tensor_specs(config):
    """Every tensor of the hub checkpoint of ``config`` as (name, shape, kind).

    Order: embeddings, decoder layers, MTP layers (DeepSeek-V3), final norm,
    lm_head (omitted when tie_word_embeddings is true, §2).
    """
    V = config["vocab_size"]
    H = config["hidden_size"]
    specs = [("model.embed_tokens.weight", [V, H], "embed")]
    L = config["num_hidden_layers"]
    for i in range(L):
        specs += _layer_specs(config, i)
    if config["model_type"] in ("deepseek_v3", "glm4_moe"):
        for j in range(config.get("num_nextn_predict_layers", 0) or 0):
            specs += _mtp_specs(config, L + j)
    specs.append(("model.norm.weight", [H], "norm"))
    if not config.get("tie_word_embeddings", False):
        specs.append(("lm_head.weight", [V, H], "lm_head"))
    return specs


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

def _draw(rng, shape, kind):
    """Draw float32 values for one tensor of the given kind."""
    if kind == "norm":
        return (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "score_bias":
        return rng.uniform(0.0, 0.2, size=shape).astype(np.float32)
    if kind == "embed":
        std = 0.5
    elif kind == "lm_head":
        std = 0.15
    elif kind == "router":
        std = 0.3
    elif kind == "bias":
        std = 0.1
    elif kind == "sinks":
        std = 1.0
    else:  # linear, extra
        std = 0.8 / math.sqrt(shape[1])
    return (std * rng.standard_normal(shape)).astype(np.float32)


def random_values(config, seed):
    """Float32 values of every tensor of ``config`` for ``seed``, drawn in
    :func:`tensor_specs` order (independent of dtype and sharding)."""
    rng = np.random.default_rng(seed)
    return {name: _draw(rng, shape, kind)
            for name, shape, kind in tensor_specs(config)}


def quantize_fp8_blockwise(weight, block=FP8_BLOCK):
    """Quantise a 2-D float32 weight to e4m3 per block (§6.5).

    For each block (edge blocks are the partial remainder, equivalent to
    zero padding): ``scale = amax / 448`` in float32, ``q = e4m3(w / scale)``.
    Returns ``(q, scale_inv)`` with q as ``ml_dtypes.float8_e4m3fn`` of the
    weight's shape and ``scale_inv`` float32 of shape
    ``[ceil(rows/128), ceil(cols/128)]``; dequantisation is
    ``q * scale_inv[r // 128, c // 128]``.
    """
    weight = np.asarray(weight, dtype=np.float32)
    rows, cols = weight.shape
    br, bc = block
    nr = (rows + br - 1) // br
    nc = (cols + bc - 1) // bc
    scale_inv = np.ones((nr, nc), dtype=np.float32)
    scaled = np.zeros_like(weight)
    for bi in range(nr):
        for bj in range(nc):
            rs = slice(bi * br, min((bi + 1) * br, rows))
            cs = slice(bj * bc, min((bj + 1) * bc, cols))
            blk = weight[rs, cs]
            amax = np.float32(np.max(np.abs(blk))) if blk.size else 0.0
            scale = np.float32(amax / np.float32(FP8_MAX)) if amax > 0 \
                else np.float32(1.0)
            scale_inv[bi, bj] = scale
            scaled[rs, cs] = np.clip(blk / scale, -FP8_MAX, FP8_MAX)
    return scaled.astype(ml_dtypes.float8_e4m3fn), scale_inv


def checkpoint_tensors(config, dtype="bf16", seed=0):
    """Every tensor as written: name -> (safetensors dtype, array).

    ``dtype`` mode picks the storage type of each tensor (module docstring);
    FP8 weights come with their ``weight_scale_inv`` companions (§6.5).
    """
    specs = tensor_specs(config)
    values = random_values(config, seed)
    out = {}
    for name, shape, kind in specs:
        value = values[name]
        if kind == "score_bias" or dtype == "f32":
            out[name] = ("F32", value)
        elif (dtype == "fp8" and kind == "linear"
              and name.startswith("model.layers.")):
            q, scale_inv = quantize_fp8_blockwise(value)
            out[name] = ("F8_E4M3", q)
            out[name + "_scale_inv"] = ("F32", scale_inv)
        else:
            out[name] = ("BF16", value)
    return out


# ---------------------------------------------------------------------------
# Packed checkpoints: GPTQ, AWQ and MXFP4 in their real serialisations
# ---------------------------------------------------------------------------

QUANT_METHODS = ("gptq", "awq", "mxfp4")

# AutoAWQ's pack order: nibble p of an int32 holds column 8j + AWQ_ORDER[p].
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)

# OCP e2m1 magnitudes, codes 0..7 (code | 8 is the negative).
E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _groups(cols, group_size):
    g = cols if group_size == -1 else group_size
    return g, -(-cols // g)


def quantize_int4_groups(weight, group_size, method="gptq", sym=True):
    """Round-to-nearest 4-bit codes of ``weight`` [N, K] per group of
    ``group_size`` columns (-1: the whole row), as the packers store them.

    gptq, sym: ``scale = 2 amax / 15``, zero 8 (GPTQ's symmetric grid);
    gptq, asym: ``scale = (max(x, 0) - min(x, 0)) / 15``, ``zero =
    round(-min / scale)`` kept in [1, 15] (the v1 serialisation stores
    zero - 1 and cannot hold -1); awq: AutoAWQ's ``scale = (max - min) / 15``,
    ``zero = clip(-round(min / scale), 0, 15)``.  Scales are rounded to f16
    before the codes are computed.  Returns ``(q [N, K] ints 0..15, scale
    [N, G] float16, zero [N, G] ints, dequantised [N, K] float64)`` with
    ``dequantised = (q - zero) * scale`` per group.
    """
    w = np.asarray(weight, dtype=np.float64)
    n, k = w.shape
    g, ng = _groups(k, group_size)
    q = np.zeros((n, k), dtype=np.int64)
    scale = np.zeros((n, ng), dtype=np.float16)
    zero = np.zeros((n, ng), dtype=np.int64)
    deq = np.zeros((n, k), dtype=np.float64)
    for j in range(ng):
        sl = slice(j * g, min(k, (j + 1) * g))
        x = w[:, sl]
        if method == "gptq" and sym:
            s = 2.0 * np.max(np.abs(x), axis=1) / 15.0
            z = np.full(n, 8)
        elif method == "gptq":
            lo = np.minimum(x.min(axis=1), 0.0)
            hi = np.maximum(x.max(axis=1), 0.0)
            s = (hi - lo) / 15.0
            z = None
        else:  # awq
            lo, hi = x.min(axis=1), x.max(axis=1)
            s = np.maximum(hi - lo, 1e-5) / 15.0
            z = None
        s16 = s.astype(np.float16)
        s16[s16 == 0] = np.float16(1.0)
        sf = s16.astype(np.float64)
        if z is None:
            if method == "gptq":
                z = np.clip(np.round(-lo / sf), 1, 15).astype(np.int64)
            else:
                z = np.clip(-np.round(lo / sf), 0, 15).astype(np.int64)
        qj = np.clip(np.round(x / sf[:, None]) + z[:, None], 0, 15).astype(np.int64)
        q[:, sl] = qj
        scale[:, j] = s16
        zero[:, j] = z
        deq[:, sl] = (qj - z[:, None]) * sf[:, None]
    return q, scale, zero, deq


def _pack_nibbles(values, order=(0, 1, 2, 3, 4, 5, 6, 7)):
    """Pack ints 0..15 [R, 8m] along the last axis into int32 [R, m]:
    nibble p (bits 4p..4p+3) of word j holds column 8j + order[p]."""
    v = np.asarray(values, dtype=np.uint32) & 0xF
    r, c = v.shape
    assert c % 8 == 0, "8 values per int32"
    v = v.reshape(r, c // 8, 8)
    out = np.zeros((r, c // 8), dtype=np.uint32)
    for p, col in enumerate(order):
        out |= v[:, :, col] << np.uint32(4 * p)
    return out.view(np.int32)


def pack_gptq(q, scale, zero, group_size, g_idx=None):
    """The AutoGPTQ / GPTQModel v1 tensors of one module: ``qweight`` int32
    [K/8, N] (8 consecutive k per word, low bits first), ``qzeros`` int32
    [G, N/8] (zero - 1, 8 consecutive n per word), ``scales`` float16 [G, N],
    ``g_idx`` int32 [K] (k // group_size unless given)."""
    n, k = q.shape
    g, _ = _groups(k, group_size)
    # Pack along K: transpose so K is the packed (last) axis of [N, K], then
    # the words [N, K/8] transposed to [K/8, N].
    qweight = np.ascontiguousarray(_pack_nibbles(q).T)
    qzeros = _pack_nibbles((zero - 1).T)
    if g_idx is None:
        g_idx = np.arange(k) // g
    return {
        "qweight": ("I32", qweight),
        "qzeros": ("I32", qzeros),
        "scales": ("F16", np.ascontiguousarray(scale.T)),
        "g_idx": ("I32", np.asarray(g_idx, dtype=np.int32)),
    }


def pack_awq(q, scale, zero):
    """The AutoAWQ gemm tensors of one module: ``qweight`` int32 [K, N/8]
    packed along N in AWQ_ORDER, ``qzeros`` int32 [G, N/8] likewise,
    ``scales`` float16 [G, N]."""
    return {
        "qweight": ("I32", _pack_nibbles(q.T, AWQ_ORDER)),
        "qzeros": ("I32", _pack_nibbles(zero.T, AWQ_ORDER)),
        "scales": ("F16", np.ascontiguousarray(scale.T)),
    }


def quantize_mxfp4(weight):
    """OCP MXFP4 of ``weight`` [N, K] (K a multiple of 32) in GPT-OSS's
    storage: per block of 32 columns the shared exponent e = floor(log2
    amax) - 2 (the OCP spec's choice; values beyond 6 · 2^e saturate), each
    value the nearest e2m1.  Returns ``(blocks uint8 [N, K/32, 16] (element
    2i in the low nibble of byte i, 2i + 1 in the high), scales uint8
    [N, K/32] (e + 127), dequantised float64 [N, K])``."""
    w = np.asarray(weight, dtype=np.float64)
    n, k = w.shape
    assert k % 32 == 0, "MXFP4 blocks are 32 columns"
    x = w.reshape(n, k // 32, 32)
    amax = np.abs(x).max(axis=2)
    e = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1.0))) - 2, -127)
    e = np.clip(e, -127, 127).astype(np.int64)
    scaled = x / np.exp2(e)[:, :, None]
    mag = np.minimum(np.abs(scaled), 6.0)
    code = np.argmin(np.abs(mag[..., None] - E2M1_MAGNITUDES), axis=-1)
    code = np.where((scaled < 0) & (code > 0), code | 8, code).astype(np.uint8)
    blocks = (code[:, :, 0::2] | (code[:, :, 1::2] << 4)).astype(np.uint8)
    values = np.where(code & 8, -1.0, 1.0) * E2M1_MAGNITUDES[code & 7]
    deq = (values * np.exp2(e)[:, :, None]).reshape(n, k)
    return blocks, (e + 127).astype(np.uint8), deq


def quantization_config(method, group_size=32, sym=True, desc_act=False):
    """config.json's quantization_config of a packed checkpoint."""
    if method == "gptq":
        return {"quant_method": "gptq", "bits": 4, "group_size": group_size,
                "desc_act": desc_act, "sym": sym, "true_sequential": True,
                "damp_percent": 0.01, "checkpoint_format": "gptq"}
    if method == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group_size,
                "zero_point": True, "version": "gemm"}
    if method == "mxfp4":
        return {"quant_method": "mxfp4",
                "modules_to_not_convert": ["model.layers.*.self_attn",
                                           "model.layers.*.mlp.gate",
                                           "model.embed_tokens", "lm_head"]}
    raise ValueError("method must be one of " + ", ".join(QUANT_METHODS))


def quantized_checkpoint_tensors(config, method, group_size=32, sym=True,
                                 seed=0, plain=(), g_idx=None):
    """The tensors of a packed checkpoint and the values they stand for.

    Which weights are packed: gptq and awq every 2-D Linear weight inside the
    decoder layers (attention, dense MLPs, experts, shared experts; not the
    router or the Qwen2-MoE shared-expert gate), as AutoGPTQ and AutoAWQ
    quantize them; mxfp4 the routed experts only, as GPT-OSS stores them,
    under ``<weight name>_blocks`` / ``_scales`` per expert (e.g.
    ``model.layers.0.mlp.experts.3.gate_proj.weight_blocks``).  Names in
    ``plain`` stay BF16; ``g_idx`` (an int array) replaces every GPTQ g_idx.
    Everything else is BF16 (F32 for DeepSeek-V3's score bias), drawn as the
    "bf16" checkpoint of the same seed draws it.

    GPT-OSS's fused experts (``experts.gate_up_proj``, ``down_proj``) are
    packed by mxfp4 as its hub checkpoints store them: ``<name>_blocks``
    [E, out, in/32, 16] and ``_scales`` [E, out, in/32] (output-major).

    Returns ``(tensors, dequantised)``: name -> (dtype, array) as written,
    and the packed weights' names (``...q_proj.weight``) -> float64 values
    [out, in] that the packed form stands for (for a fused GPT-OSS tensor,
    its stored input-major [E, in, out]).
    """
    values = random_values(config, seed)
    out, deq = {}, {}
    for name, shape, kind in tensor_specs(config):
        value = values[name]
        layer_linear = (kind == "linear" and name.startswith("model.layers.")
                        and name not in plain)
        if method == "mxfp4":
            packed = layer_linear and ".experts." in name
        else:
            packed = layer_linear
        if kind == "score_bias":
            out[name] = ("F32", value)
        elif kind == "fused" and method == "mxfp4":
            # GPT-OSS: output-major blocks [E, out, in/32, 16] of the
            # input-major [E, in, out] weight.
            parts = [quantize_mxfp4(value[e].T) for e in range(value.shape[0])]
            out[name + "_blocks"] = ("U8", np.stack([b for b, _, _ in parts]))
            out[name + "_scales"] = ("U8", np.stack([sc for _, sc, _ in parts]))
            deq[name] = np.stack([d.T for _, _, d in parts])
        elif not packed:
            out[name] = ("BF16", value)
        elif method == "mxfp4":
            blocks, scales, d = quantize_mxfp4(value)
            out[name + "_blocks"] = ("U8", blocks)
            out[name + "_scales"] = ("U8", scales)
            deq[name] = d
        else:
            q, scale, zero, d = quantize_int4_groups(value, group_size, method, sym)
            parts = (pack_gptq(q, scale, zero, group_size, g_idx) if method == "gptq"
                     else pack_awq(q, scale, zero))
            base = name[:-len(".weight")]
            for suffix, tensor in parts.items():
                out[base + "." + suffix] = tensor
            deq[name] = d
    return out, deq


def make_quantized_checkpoint(arch, directory, method, group_size=32, sym=True,
                              desc_act=False, seed=0, overrides=None, plain=(),
                              g_idx=None):
    """Write a tiny random checkpoint of ``arch`` packed with ``method``
    ("gptq", "awq" or "mxfp4"; see :func:`quantized_checkpoint_tensors`) into
    ``directory``, with its quantization_config.  Returns ``(config,
    dequantised)``: the config written and the float64 values of each packed
    weight, to run :mod:`moert_reference.reference` on."""
    config = build_config(arch, "bf16", overrides)
    config["quantization_config"] = quantization_config(method, group_size, sym, desc_act)
    if method != "mxfp4":
        config["torch_dtype"] = "float16"
    tensors, deq = quantized_checkpoint_tensors(config, method, group_size, sym, seed,
                                                plain, g_idx)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for stale in os.listdir(directory):
        if stale.endswith(".safetensors") or stale.endswith(".index.json"):
            os.remove(os.path.join(directory, stale))
    write_safetensors(os.path.join(directory, "model.safetensors"), tensors, {"format": "pt"})
    return config, deq


def _split_into_shards(names, sizes, shards):
    """Split the ordered tensor list into ``shards`` contiguous groups of
    roughly equal byte size (each group non-empty)."""
    if shards > len(names):
        raise ValueError("more shards than tensors")
    total = sum(sizes)
    groups = [[] for _ in range(shards)]
    running = 0
    g = 0
    for idx, (name, size) in enumerate(zip(names, sizes)):
        remaining_names = len(names) - idx
        remaining_groups = shards - g
        if (groups[g] and g + 1 < shards
                and (running >= total * (g + 1) / shards
                     or remaining_names <= remaining_groups - 1)):
            g += 1
        groups[g].append(name)
        running += size
    return groups


def build_config(arch, dtype="bf16", overrides=None):
    """The config.json body written for ``arch`` in ``dtype`` mode."""
    if dtype not in TORCH_DTYPE:
        raise ValueError("dtype must be bf16, f32 or fp8")
    config = get_config(arch)
    if overrides:
        config.update(overrides)
    config["torch_dtype"] = TORCH_DTYPE[dtype]
    if dtype == "fp8":
        config["quantization_config"] = dict(FP8_QUANTIZATION_CONFIG)
    return config


def make_checkpoint(arch, directory, dtype="bf16", shards=1, seed=0,
                    overrides=None):
    """Write a tiny random checkpoint of ``arch`` into ``directory``.

    ``dtype`` is "bf16", "f32" or "fp8"; ``shards`` > 1 writes
    ``model-0000i-of-0000N.safetensors`` plus ``model.safetensors.index.json``
    (metadata.total_size = total tensor bytes, §1); ``overrides`` updates the
    config body before writing (e.g. ``{"tie_word_embeddings": True}``, which
    drops ``lm_head.weight``).  Returns the config dict written.
    """
    config = build_config(arch, dtype, overrides)
    os.makedirs(directory, exist_ok=True)
    tensors = checkpoint_tensors(config, dtype, seed)

    with open(os.path.join(directory, "config.json"), "w",
              encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    for stale in os.listdir(directory):
        if stale.endswith(".safetensors") or stale.endswith(".index.json"):
            os.remove(os.path.join(directory, stale))

    metadata = {"format": "pt"}
    if shards <= 1:
        write_safetensors(os.path.join(directory, "model.safetensors"),
                          tensors, metadata)
        return config

    names = list(tensors)
    sizes = [int(np.asarray(a).size) * DTYPE_SIZES[d]
             for d, a in tensors.values()]
    groups = _split_into_shards(names, sizes, shards)
    weight_map = {}
    for k, group in enumerate(groups):
        filename = "model-%05d-of-%05d.safetensors" % (k + 1, shards)
        write_safetensors(os.path.join(directory, filename),
                          {n: tensors[n] for n in group}, metadata)
        for n in group:
            weight_map[n] = filename
    index = {"metadata": {"total_size": sum(sizes)},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w",
              encoding="utf-8") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return config


def main(argv=None):
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m moert_reference.make_checkpoint",
        description="Write a tiny random Hugging Face checkpoint.")
    parser.add_argument("arch", choices=ARCHITECTURES)
    parser.add_argument("directory")
    parser.add_argument("--dtype", choices=("bf16", "f32", "fp8"),
                        default="bf16")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quant", choices=QUANT_METHODS,
                        help="write a packed checkpoint instead (GPTQ v1, AWQ gemm or "
                             "MXFP4 experts, bf16 elsewhere; --dtype and --shards unused)")
    parser.add_argument("--group-size", type=int, default=32,
                        help="GPTQ / AWQ group size (-1: one group per row)")
    parser.add_argument("--asym", action="store_true", help="GPTQ with zero points")
    args = parser.parse_args(argv)
    if args.quant:
        make_quantized_checkpoint(args.arch, args.directory, args.quant,
                                  group_size=args.group_size, sym=not args.asym,
                                  seed=args.seed)
    else:
        make_checkpoint(args.arch, args.directory, dtype=args.dtype,
                        shards=args.shards, seed=args.seed)
    print(args.directory)


if __name__ == "__main__":
    main()
