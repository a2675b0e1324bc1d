"""Float64 NumPy forward pass of every architecture (reference doc §2–§7).

``load(directory)`` reads a Hugging Face checkpoint directory (config.json
plus safetensors, sharded or not) and returns a :class:`Model` whose
``forward(ids)`` gives the float64 logits of a full causal forward over the
sequence, and ``greedy(ids, n)`` the next ``n`` argmax tokens.

Everything is computed in float64 from the stored weights: BF16 values are
widened exactly and FP8 weights are dequantised exactly as
``e4m3(Wq) * weight_scale_inv[r // 128, c // 128]`` (§6.5).  No intermediate
is rounded to BF16, so this is the exact-arithmetic version of the model
that a BF16 or FP8 runtime approximates.

Supported ``model_type`` values: mixtral, qwen2_moe, qwen3_moe, olmoe,
deepseek_v2, deepseek_v3, llama, mistral, qwen2, gpt_oss (§8; MXFP4 experts
decoded here from their blocks and scales) and glm4_moe.

Command line::

    python -m moert_reference.reference DIR --ids 1 2 3 [--new N]
        [--logits-out FILE]

prints a JSON object with the greedy continuation and writes the logits of
the prompt as raw little-endian float64 ``[len(ids), vocab]`` to FILE.
"""

import argparse
import json
import math
import os

import numpy as np

from .safetensors_io import read_checkpoint_typed


# ---------------------------------------------------------------------------
# Element decoding (§1 dtype table, §6.5)
# ---------------------------------------------------------------------------

def decode_bf16(bits):
    """BF16 bit patterns (uint16) -> float64: the top 16 bits of an f32."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def e4m3_value(byte):
    """Value of one e4m3fn byte (§1): bias 7, no infinities, S.1111.111 is
    NaN; normal (-1)^s 2^(e-7) (1 + m/8), subnormal (-1)^s 2^-6 m/8."""
    sign = -1.0 if byte & 0x80 else 1.0
    exponent = (byte >> 3) & 0xF
    mantissa = byte & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return math.nan
    if exponent == 0:
        return sign * 2.0 ** -6 * mantissa / 8.0
    return sign * 2.0 ** (exponent - 7) * (1.0 + mantissa / 8.0)


E4M3_TABLE = np.array([e4m3_value(b) for b in range(256)], dtype=np.float64)


def decode_e4m3(bits):
    """e4m3fn bytes (uint8) -> float64 values."""
    return E4M3_TABLE[np.asarray(bits, dtype=np.uint8)]


def dequantize_fp8(values, scale_inv, block=(128, 128)):
    """Blockwise FP8 dequantisation (§6.5).

    ``W[r, c] = values[r, c] * scale_inv[r // block[0], c // block[1]]``;
    ``values`` are the decoded e4m3 values of the 2-D weight.
    """
    values = np.asarray(values, dtype=np.float64)
    scale_inv = np.asarray(scale_inv, dtype=np.float64)
    rows, cols = values.shape
    expected = (-(-rows // block[0]), -(-cols // block[1]))
    if scale_inv.shape != expected:
        raise ValueError("scale_inv shape %s, expected %s"
                         % (scale_inv.shape, expected))
    row_block = np.arange(rows) // block[0]
    col_block = np.arange(cols) // block[1]
    return values * scale_inv[row_block[:, None], col_block[None, :]]


# ---------------------------------------------------------------------------
# Elementwise pieces (§2)
# ---------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """RMSNorm over the last axis (§2): ``w * x / sqrt(mean(x²) + eps)``."""
    x = np.asarray(x, dtype=np.float64)
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return weight * (x * r)


def sigmoid(z):
    """Logistic function σ(z) = 1 / (1 + e^-z), written overflow-free."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def silu(z):
    """SiLU (§2): z · σ(z)."""
    return z * sigmoid(z)


def softmax(x, axis=-1):
    """Softmax along ``axis`` (max-subtracted; -inf entries get 0)."""
    x = np.asarray(x, dtype=np.float64)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def linear(x, weight, bias=None):
    """Linear layer (§2 notation): ``y = x · Wᵀ (+ b)`` with W [out, in]."""
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y


def swiglu_mlp(x, gate_w, up_w, down_w):
    """SwiGLU MLP (§2): ``down(silu(gate(x)) ⊙ up(x))``."""
    return linear(silu(linear(x, gate_w)) * linear(x, up_w), down_w)


# MXFP4 element values (§8): e2m1 codes 0..15.
MXFP4_LUT = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                      -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def decode_mxfp4(blocks, scales):
    """MXFP4 (§8): blocks u8 [..., rows, G, 16] and scales u8 [..., rows, G]
    -> float64 [..., rows, 32 G]; byte t of group g holds element 32g + 2t
    in its low nibble and 32g + 2t + 1 in its high nibble, times
    2^(scale - 127)."""
    blocks = np.asarray(blocks, dtype=np.uint8)
    low = MXFP4_LUT[blocks & 0x0F]
    high = MXFP4_LUT[blocks >> 4]
    values = np.stack([low, high], axis=-1).reshape(blocks.shape[:-1] + (32,))
    values = values * np.ldexp(1.0, np.asarray(scales, dtype=np.int64) - 127)[..., None]
    return values.reshape(blocks.shape[:-2] + (blocks.shape[-2] * 32,))


def gpt_oss_expert(x, gate_up, gate_up_bias, down, down_bias, alpha, limit):
    """One GPT-OSS expert (§8) on x [T, H], with its weights input-major as
    HF applies them (x @ W): gate_up [H, 2I], down [I, H].

    ``g_u = x·W_gu + b``; gate = even columns, up = odd ones; gate clamped
    above at limit, up to [-limit, limit]; ``(up + 1) ⊙ gate ⊙ σ(α·gate)``;
    then ``· W_down + b_down``.
    """
    g_u = x @ gate_up + gate_up_bias
    gate = np.minimum(g_u[:, 0::2], limit)
    up = np.clip(g_u[:, 1::2], -limit, limit)
    return ((up + 1.0) * gate * sigmoid(alpha * gate)) @ down + down_bias


# ---------------------------------------------------------------------------
# RoPE (§2 default, §6.3 YaRN)
# ---------------------------------------------------------------------------

def default_inv_freq(dim, theta):
    """Default RoPE frequencies (§2): ``1 / θ^(2j/d)`` for j < d/2."""
    j = np.arange(dim // 2, dtype=np.float64)
    return 1.0 / theta ** (2.0 * j / dim)


def yarn_correction_dim(num_rotations, dim, theta, original_max_position):
    """§6.3 step 1: ``corr(n) = d · ln(L0 / (2πn)) / (2 ln θ)``."""
    return (dim * math.log(original_max_position
                           / (num_rotations * 2.0 * math.pi))
            / (2.0 * math.log(theta)))


def yarn_correction_range(beta_fast, beta_slow, dim, theta,
                          original_max_position, truncate=True):
    """§6.3 step 2: ``(low, high)`` = (corr(β_fast), corr(β_slow)), floored /
    ceiled when ``truncate``, then clamped to [0, d-1]."""
    low = yarn_correction_dim(beta_fast, dim, theta, original_max_position)
    high = yarn_correction_dim(beta_slow, dim, theta, original_max_position)
    if truncate:
        low = math.floor(low)
        high = math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def yarn_get_mscale(scale, mscale=1.0):
    """§6.3: ``g(s, μ) = 0.1 · μ · ln s + 1``, and 1 when s <= 1."""
    if scale <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(dim, theta, factor, original_max_position, beta_fast=32.0,
                  beta_slow=1.0, truncate=True):
    """YaRN inverse frequencies (§6.3 steps 1–4).

    ``ramp_j = clamp((j - low) / (high - low), 0, 1)`` (high += 0.001 when
    low == high) and
    ``inv_freq_j = (1 - ramp_j) θ^(-2j/d) + ramp_j θ^(-2j/d) / factor``.
    """
    low, high = yarn_correction_range(beta_fast, beta_slow, dim, theta,
                                      original_max_position, truncate)
    if low == high:
        high += 0.001
    j = np.arange(dim // 2, dtype=np.float64)
    ramp = np.clip((j - low) / (high - low), 0.0, 1.0)
    base = default_inv_freq(dim, theta)
    return (1.0 - ramp) * base + ramp * base / factor


def yarn_attention_scaling(factor, mscale=None, mscale_all_dim=None,
                           attention_factor=None):
    """§6.3 step 5: the factor that multiplies cos and sin.

    ``attention_factor`` if given; else ``g(factor, mscale) / g(factor,
    mscale_all_dim)`` when both are non-zero; else ``g(factor)``.
    """
    if attention_factor is not None:
        return float(attention_factor)
    if mscale and mscale_all_dim:
        return (yarn_get_mscale(factor, mscale)
                / yarn_get_mscale(factor, mscale_all_dim))
    return yarn_get_mscale(factor)


def rope_settings(config):
    """``(theta, rope_scaling dict or None)`` from config.json.

    Reads ``rope_theta`` / ``rope_scaling`` (4.x keys, ``type`` or
    ``rope_type``) or the 5.x ``rope_parameters`` form (§6.1).
    """
    scaling = config.get("rope_scaling")
    theta = config.get("rope_theta", 10000.0)
    params = config.get("rope_parameters")
    if params:
        theta = params.get("rope_theta", theta)
        if params.get("rope_type", "default") != "default":
            scaling = params
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            scaling = None
    return float(theta), scaling


def rope_frequencies(config, dim):
    """``(inv_freq [d/2], attention_scaling)`` for a rotary dim ``dim``.

    Default RoPE (§2) or YaRN (§6.3).  For YaRN with
    ``original_max_position_embeddings`` present, the factor is recomputed as
    ``max_position_embeddings / L0`` as HF 4.5x+ does (§6.3).
    """
    theta, scaling = rope_settings(config)
    if scaling is None:
        return default_inv_freq(dim, theta), 1.0
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "yarn":
        raise ValueError("unsupported rope_scaling type %r" % kind)
    factor = float(scaling["factor"])
    if "original_max_position_embeddings" in scaling:
        original = scaling["original_max_position_embeddings"]
        factor = config["max_position_embeddings"] / original
    else:
        original = config["max_position_embeddings"]
    inv_freq = yarn_inv_freq(dim, theta, factor, original,
                             scaling.get("beta_fast") or 32.0,
                             scaling.get("beta_slow") or 1.0,
                             scaling.get("truncate", True))
    scale = yarn_attention_scaling(factor, scaling.get("mscale"),
                                   scaling.get("mscale_all_dim"),
                                   scaling.get("attention_factor"))
    return inv_freq, scale


def rope_cos_sin(positions, inv_freq, attention_scaling):
    """``cos, sin`` of ``pos · inv_freq`` times attention_scaling, [T, d/2]."""
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq
    return (np.cos(angles) * attention_scaling,
            np.sin(angles) * attention_scaling)


def apply_rope_half(x, cos, sin):
    """Rotate-half RoPE (§2) on x [T, heads, d]: element j is paired with
    element j + d/2 and the pair is rotated by angle pos · inv_freq[j]."""
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    c = cos[:, None, :]
    s = sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def apply_rope_adjacent(x, cos, sin):
    """Adjacent-pair RoPE (§6.3, DeepSeek) on x [T, heads, d]: elements
    (2j, 2j+1) form a pair rotated by angle pos · inv_freq[j]; the output
    keeps the natural element order."""
    even = x[..., 0::2]
    odd = x[..., 1::2]
    c = cos[:, None, :]
    s = sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = odd * c + even * s
    return out


# ---------------------------------------------------------------------------
# Attention (§2, §5, §6.2, §7)
# ---------------------------------------------------------------------------

def causal_mask(length, window=None):
    """Allowed-key matrix [T, T] (§2): key kv is visible from query q iff
    kv <= q and, with a sliding window W, kv > q - W."""
    q = np.arange(length)[:, None]
    kv = np.arange(length)[None, :]
    allowed = kv <= q
    if window is not None:
        allowed &= kv > q - window
    return allowed


def attention_core(q, k, v, scale, window=None, sinks=None):
    """Causal softmax attention with GQA (§2).

    q [T, nh, dk], k [T, nkv, dk], v [T, nkv, dv]; query head h uses KV head
    ``h // (nh / nkv)``.  With ``sinks`` [nh] (GPT-OSS, §8) each head's
    softmax gains the extra logit sinks[h] in its denominator only.  Returns
    the concatenated heads [T, nh·dv].
    """
    length, nh, _ = q.shape
    nkv = k.shape[1]
    group = nh // nkv
    allowed = causal_mask(length, window)
    out = np.empty((length, nh, v.shape[-1]), dtype=np.float64)
    for h in range(nh):
        kv_head = h // group
        scores = (q[:, h, :] @ k[:, kv_head, :].T) * scale
        scores = np.where(allowed, scores, -np.inf)
        if sinks is None:
            p = softmax(scores, axis=-1)
        else:
            full = np.concatenate(
                [scores, np.full((length, 1), sinks[h])], axis=-1)
            p = softmax(full, axis=-1)[:, :-1]
        out[:, h, :] = p @ v[:, kv_head, :]
    return out.reshape(length, nh * v.shape[-1])


def standard_attention(x, w, spec, cos, sin):
    """GQA attention of Mixtral / Qwen / OLMoE / Llama / Mistral (§2).

    q/k/v projections (+ bias when the family has it); OLMoE full-width
    q/k RMSNorm then optional clip (§7); reshape to heads; Qwen3 per-head q/k
    RMSNorm (§5.2); rotate-half RoPE; softmax scale hd^-0.5; o_proj.
    ``w`` holds the layer's self_attn tensors without the prefix.
    """
    length = x.shape[0]
    nh, nkv, hd = spec["num_heads"], spec["num_kv_heads"], spec["head_dim"]
    q = linear(x, w["q_proj.weight"], w.get("q_proj.bias"))
    k = linear(x, w["k_proj.weight"], w.get("k_proj.bias"))
    v = linear(x, w["v_proj.weight"], w.get("v_proj.bias"))
    if spec["qk_norm"] == "full":
        q = rms_norm(q, w["q_norm.weight"], spec["eps"])
        k = rms_norm(k, w["k_norm.weight"], spec["eps"])
    if spec["clip_qkv"] is not None:
        c = spec["clip_qkv"]
        q, k, v = np.clip(q, -c, c), np.clip(k, -c, c), np.clip(v, -c, c)
    q = q.reshape(length, nh, hd)
    k = k.reshape(length, nkv, hd)
    v = v.reshape(length, nkv, hd)
    if spec["qk_norm"] == "per_head":
        q = rms_norm(q, w["q_norm.weight"], spec["eps"])
        k = rms_norm(k, w["k_norm.weight"], spec["eps"])
    # Partial rotary (GLM-4.5): rotate-half within the first rd features.
    rd = spec.get("rotary_dim", hd)
    q = np.concatenate([apply_rope_half(q[..., :rd], cos, sin), q[..., rd:]],
                       axis=-1)
    k = np.concatenate([apply_rope_half(k[..., :rd], cos, sin), k[..., rd:]],
                       axis=-1)
    o = attention_core(q, k, v, hd ** -0.5, spec["window"], w.get("sinks"))
    return linear(o, w["o_proj.weight"], w.get("o_proj.bias"))


def mla_softmax_scale(q_head_dim, rope_scaling):
    """MLA softmax scale (§6.2): ``dq^-0.5 · m²`` with
    ``m = g(factor, mscale_all_dim)`` when rope_scaling is set,
    mscale_all_dim is non-zero and factor > 1; else ``dq^-0.5``.
    ``factor`` is ``rope_scaling["factor"]`` as stored."""
    scale = q_head_dim ** -0.5
    if rope_scaling is not None:
        mscale_all_dim = rope_scaling.get("mscale_all_dim", 0) or 0
        factor = float(rope_scaling["factor"])
        if mscale_all_dim:
            m = yarn_get_mscale(factor, mscale_all_dim)
            scale = scale * m * m
    return scale


MLA_NORM_EPS = 1e-6  # §6.2: q_a_layernorm / kv_a_layernorm class default


def mla_attention(x, w, spec, cos, sin):
    """DeepSeek multi-head latent attention, naive form (§6.2).

    1. q = W_qb · RMSNorm(W_qa x) (or W_q x), split per head into
       q_nope [dn] and q_pe [dr].
    2. c = W_kva x split into c_kv [r] and the shared k_pe [dr].
    3. kv = W_kvb · RMSNorm(c_kv), split per head into k_nope [dn], v [dv].
    4. RoPE on q_pe and k_pe (adjacent pairs, or rotate-half for V3 with
       rope_interleave false).
    5. Attention over Q = [q_nope; q_pe], K = [k_nope; k_pe] with the MLA
       softmax scale, then o_proj.
    """
    length = x.shape[0]
    nh = spec["num_heads"]
    dn, dr, dv = spec["qk_nope_head_dim"], spec["qk_rope_head_dim"], \
        spec["v_head_dim"]
    r = spec["kv_lora_rank"]
    if spec["q_lora_rank"] is None:
        q = linear(x, w["q_proj.weight"])
    else:
        q_latent = rms_norm(linear(x, w["q_a_proj.weight"]),
                            w["q_a_layernorm.weight"], MLA_NORM_EPS)
        q = linear(q_latent, w["q_b_proj.weight"])
    q = q.reshape(length, nh, dn + dr)
    q_nope, q_pe = q[..., :dn], q[..., dn:]

    c = linear(x, w["kv_a_proj_with_mqa.weight"])
    c_kv, k_pe = c[:, :r], c[:, r:].reshape(length, 1, dr)
    kv = linear(rms_norm(c_kv, w["kv_a_layernorm.weight"], MLA_NORM_EPS),
                w["kv_b_proj.weight"]).reshape(length, nh, dn + dv)
    k_nope, v = kv[..., :dn], kv[..., dn:]

    rope = apply_rope_adjacent if spec["rope_adjacent"] else apply_rope_half
    q_pe = rope(q_pe, cos, sin)
    k_pe = rope(k_pe, cos, sin)

    q_full = np.concatenate([q_nope, q_pe], axis=-1)
    k_full = np.concatenate([k_nope, np.broadcast_to(k_pe, (length, nh, dr))],
                            axis=-1)
    o = attention_core(q_full, k_full, v, spec["scale"], None)
    return linear(o, w["o_proj.weight"])


# ---------------------------------------------------------------------------
# Routing (§2 generic router, §6.4 DeepSeek methods)
# ---------------------------------------------------------------------------

def topk_indices(scores, k):
    """Indices of the k largest entries of each row, largest first (ties
    broken towards the lower index)."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    return order[:, :k]


def selection_margin(choice, idx):
    """Per token: smallest selected choice score minus the largest
    unselected one (how far the top-k set is from changing)."""
    chosen = np.take_along_axis(choice, idx, axis=-1)
    rest = choice.copy()
    np.put_along_axis(rest, idx, -np.inf, axis=-1)
    return np.min(chosen, axis=-1) - np.max(rest, axis=-1)


def route_softmax_topk(logits, k, normalize):
    """Generic softmax top-k router (§2): p = softmax(logits), top-k of p,
    ``w = p_top / Σ p_top`` when ``normalize`` else ``p_top``.
    Returns a dict with ``experts`` [T, k], ``weights`` [T, k], ``margin``."""
    p = softmax(logits, axis=-1)
    idx = topk_indices(p, k)
    w = np.take_along_axis(p, idx, axis=-1)
    if normalize:
        w = w / np.sum(w, axis=-1, keepdims=True)
    return {"experts": idx, "weights": w, "margin": selection_margin(p, idx)}


def group_mask(group_scores, topk_group, num_experts):
    """Expert mask [T, E] keeping the ``topk_group`` best contiguous groups
    (§6.4)."""
    length, n_group = group_scores.shape
    keep = topk_indices(group_scores, topk_group)
    group_keep = np.zeros((length, n_group), dtype=bool)
    np.put_along_axis(group_keep, keep, True, axis=-1)
    return np.repeat(group_keep, num_experts // n_group, axis=-1)


def route_deepseek(logits, top_k, topk_method, scoring_func, n_group,
                   topk_group, norm_topk_prob, routed_scaling_factor,
                   score_bias=None):
    """DeepSeek router (§6.4) on f32-equivalent logits [T, E].

    * scores s = softmax(l) or σ(l) (scoring_func).
    * greedy: top-k of s; ``w = s_top · rsf``.
    * group_limited_greedy: group score = max of s in each of n_group
      contiguous groups; keep topk_group groups, other experts' s set to
      0.0; top-k; ``w = s_top · rsf``.
    * noaux_tc: s' = s + score_bias; group score = sum of the top-2 s' in
      the group; keep topk_group groups, others masked to -inf (never
      chosen, as transformers 5 masks them); top-k of the masked s';
      ``w = s[idx]`` (unbiased); if norm_topk_prob
      ``w /= Σw + 1e-20``; then ``w *= rsf``.
    Returns a dict with ``experts``, ``weights`` and ``margin``.
    """
    if scoring_func == "softmax":
        s = softmax(logits, axis=-1)
    elif scoring_func == "sigmoid":
        s = sigmoid(logits)
    else:
        raise ValueError("unsupported scoring_func %r" % scoring_func)
    length, num_experts = s.shape

    if topk_method == "greedy":
        idx = topk_indices(s, top_k)
        w = np.take_along_axis(s, idx, axis=-1)
        margin = selection_margin(s, idx)
    elif topk_method == "group_limited_greedy":
        grouped = s.reshape(length, n_group, num_experts // n_group)
        group_scores = np.max(grouped, axis=-1)
        mask = group_mask(group_scores, topk_group, num_experts)
        masked = np.where(mask, s, 0.0)
        idx = topk_indices(masked, top_k)
        w = np.take_along_axis(masked, idx, axis=-1)
        margin = np.minimum(selection_margin(masked, idx),
                            _group_margin(group_scores, topk_group))
    elif topk_method == "noaux_tc":
        biased = s + score_bias
        grouped = biased.reshape(length, n_group, num_experts // n_group)
        top2 = -np.sort(-grouped, axis=-1)[..., :2]
        group_scores = np.sum(top2, axis=-1)
        mask = group_mask(group_scores, topk_group, num_experts)
        masked = np.where(mask, biased, -np.inf)
        idx = topk_indices(masked, top_k)
        w = np.take_along_axis(s, idx, axis=-1)
        if norm_topk_prob:
            w = w / (np.sum(w, axis=-1, keepdims=True) + 1e-20)
        margin = np.minimum(selection_margin(masked, idx),
                            _group_margin(group_scores, topk_group))
    else:
        raise ValueError("unsupported topk_method %r" % topk_method)
    w = w * routed_scaling_factor
    return {"experts": idx, "weights": w, "margin": margin}


def route_gpt_oss(logits, k):
    """GPT-OSS router (§8): top-k of the raw logits, then a softmax over
    those k logits only."""
    idx = topk_indices(logits, k)
    w = softmax(np.take_along_axis(logits, idx, axis=-1), axis=-1)
    return {"experts": idx, "weights": w,
            "margin": selection_margin(logits, idx)}


def gpt_oss_moe(x, spec, w):
    """GPT-OSS MoE block (§8): routed experts with biases and the clamped
    SwiGLU; no shared expert.  Returns ``(output, routing)``."""
    routing = route_gpt_oss(linear(x, w["gate"], w["gate_bias"]),
                            spec["top_k"])
    out = np.zeros_like(x)
    idx, weights = routing["experts"], routing["weights"]
    for e in range(w["gate_up"].shape[0]):
        rows, slots = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        y = gpt_oss_expert(x[rows], w["gate_up"][e], w["gate_up_bias"][e],
                           w["down"][e], w["down_bias"][e], spec["alpha"],
                           spec["limit"])
        out[rows] += weights[rows, slots][:, None] * y
    return out, routing


def _group_margin(group_scores, topk_group):
    """Gap between the last kept and the best dropped group score."""
    if topk_group >= group_scores.shape[-1]:
        return np.full(group_scores.shape[0], np.inf)
    return selection_margin(group_scores,
                            topk_indices(group_scores, topk_group))


def moe_experts(x, routing, experts):
    """``Σ_j w_j · Expert_{idx_j}(x)`` (§2) with SwiGLU experts.

    ``experts[e]`` is (gate [I,H], up [I,H], down [H,I]).
    """
    out = np.zeros_like(x)
    idx, w = routing["experts"], routing["weights"]
    for e, (gate_w, up_w, down_w) in enumerate(experts):
        rows, slots = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        y = swiglu_mlp(x[rows], gate_w, up_w, down_w)
        out[rows] += w[rows, slots][:, None] * y
    return out


def moe_block(x, spec, w):
    """One MoE feed-forward block (§4, §5, §6.4, §7).

    Router: Mixtral / Qwen / OLMoE use the softmax top-k router
    (renormalised always for Mixtral, else by norm_topk_prob); DeepSeek uses
    :func:`route_deepseek`.  Output = routed experts + shared part: Qwen2-MoE
    ``σ(x·g_sᵀ) · SwiGLU_shared(x)``, DeepSeek ungated shared experts.
    Returns ``(output, routing)``.
    """
    if spec["router"] == "gpt_oss":
        return gpt_oss_moe(x, spec, w)
    logits = linear(x, w["gate"])
    if spec["router"] == "softmax_topk":
        routing = route_softmax_topk(logits, spec["top_k"], spec["normalize"])
    else:
        routing = route_deepseek(
            logits, spec["top_k"], spec["topk_method"], spec["scoring_func"],
            spec["n_group"], spec["topk_group"], spec["norm_topk_prob"],
            spec["routed_scaling_factor"], w.get("score_bias"))
    out = moe_experts(x, routing, w["experts"])
    if "shared" in w:
        shared = swiglu_mlp(x, *w["shared"])
        if "shared_gate" in w:
            shared = sigmoid(linear(x, w["shared_gate"])) * shared
        out = out + shared
    return out, routing


# ---------------------------------------------------------------------------
# Per-family layer structure
# ---------------------------------------------------------------------------

STANDARD_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "llama",
                     "mistral", "qwen2", "gpt_oss", "glm4_moe")
MLA_FAMILIES = ("deepseek_v2", "deepseek_v3")


def layer_is_moe(config, i):
    """Whether decoder layer i has an MoE block.

    Mixtral, OLMoE: always (§4, §7).  Qwen2/3-MoE: i ∉ mlp_only_layers,
    num_experts > 0 and (i+1) % decoder_sparse_step == 0 (§5.1).  DeepSeek:
    i >= first_k_dense_replace (§6.4; moe_layer_freq is ignored as in HF).
    Llama, Mistral, Qwen2: never.
    """
    model_type = config["model_type"]
    if model_type in ("mixtral", "olmoe", "gpt_oss"):
        return True
    if model_type == "glm4_moe":
        return i >= config.get("first_k_dense_replace", 1)
    if model_type in ("qwen2_moe", "qwen3_moe"):
        if i in (config.get("mlp_only_layers") or []):
            return False
        if config.get("num_experts", 0) <= 0:
            return False
        return (i + 1) % config.get("decoder_sparse_step", 1) == 0
    if model_type in MLA_FAMILIES:
        return i >= config.get("first_k_dense_replace", 0)
    return False


def sliding_window_for_layer(config, i):
    """Sliding window W of layer i or None (§2, §4, §5.1).

    Mixtral / Mistral: ``sliding_window`` on every layer when set.  Qwen2,
    Qwen2/3-MoE, only when ``use_sliding_window``: the layers that
    ``layer_types`` marks "sliding_attention" when it is given, else (as
    transformers 5 derives it) Qwen2 the layers i >= max_window_layers,
    Qwen2-MoE the even layers i < max_window_layers, Qwen3-MoE every layer.
    GPT-OSS: by ``layer_types``.  Others: none.
    """
    model_type = config["model_type"]
    if model_type in ("mixtral", "mistral"):
        return config.get("sliding_window")
    if model_type == "gpt_oss":
        types = config.get("layer_types") or [
            "sliding_attention" if i % 2 == 0 else "full_attention"
            for i in range(config["num_hidden_layers"])]
        if types[i] == "sliding_attention":
            return config.get("sliding_window", 128)
        return None
    if model_type in ("qwen2", "qwen2_moe", "qwen3_moe"):
        if not config.get("use_sliding_window", False):
            return None
        bound = config.get("max_window_layers", 28)
        if config.get("layer_types") and model_type != "qwen3_moe":
            sliding = config["layer_types"][i] == "sliding_attention"
        elif model_type == "qwen2":
            sliding = i >= bound
        elif model_type == "qwen2_moe":
            sliding = i % 2 == 0 and i < bound
        else:
            sliding = True
        return config.get("sliding_window") if sliding else None
    return None


def standard_attention_spec(config, i):
    """Shapes and options of the standard attention of layer i."""
    model_type = config["model_type"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads") or nh
    hd = config.get("head_dim") or config["hidden_size"] // nh
    if model_type == "olmoe":
        hd = config["hidden_size"] // nh
    qk_norm = {"qwen3_moe": "per_head", "olmoe": "full"}.get(model_type)
    if model_type == "glm4_moe" and config.get("use_qk_norm", False):
        qk_norm = "per_head"
    return {
        "num_heads": nh, "num_kv_heads": nkv, "head_dim": hd,
        "rotary_dim": int(hd * partial_rotary_factor(config)),
        "qk_norm": qk_norm,
        "clip_qkv": config.get("clip_qkv") if model_type == "olmoe" else None,
        "window": sliding_window_for_layer(config, i),
        "eps": config.get("rms_norm_eps", 1e-6),
    }


def partial_rotary_factor(config):
    """Share of each head that rotates: GLM-4.5's partial_rotary_factor (top
    level or in rope_parameters; 0.5 when absent), 1 for other families."""
    if config["model_type"] != "glm4_moe":
        return 1.0
    params = config.get("rope_parameters") or {}
    return float(config.get("partial_rotary_factor",
                            params.get("partial_rotary_factor", 0.5)))


def mla_attention_spec(config):
    """Shapes and options of DeepSeek MLA (§6.2, §6.3)."""
    dn = config["qk_nope_head_dim"]
    dr = config["qk_rope_head_dim"]
    _, scaling = rope_settings(config)
    if config["model_type"] == "deepseek_v3":
        adjacent = config.get("rope_interleave", True)
    else:
        adjacent = True
    return {
        "num_heads": config["num_attention_heads"],
        "qk_nope_head_dim": dn, "qk_rope_head_dim": dr,
        "v_head_dim": config["v_head_dim"],
        "kv_lora_rank": config["kv_lora_rank"],
        "q_lora_rank": config.get("q_lora_rank"),
        "rope_adjacent": adjacent,
        "scale": mla_softmax_scale(dn + dr, scaling),
    }


def moe_spec(config):
    """Router settings of the family's MoE block (§4–§7)."""
    model_type = config["model_type"]
    if model_type == "gpt_oss":
        return {"router": "gpt_oss", "top_k": config["num_experts_per_tok"],
                "alpha": config.get("swiglu_alpha", 1.702),
                "limit": config.get("swiglu_limit", 7.0)}
    if model_type == "glm4_moe":
        return {
            "router": "deepseek", "top_k": config["num_experts_per_tok"],
            "topk_method": "noaux_tc", "scoring_func": "sigmoid",
            "n_group": config.get("n_group") or 1,
            "topk_group": config.get("topk_group") or 1,
            "norm_topk_prob": config.get("norm_topk_prob", True),
            "routed_scaling_factor": config.get("routed_scaling_factor", 1.0),
        }
    if model_type in MLA_FAMILIES:
        return {
            "router": "deepseek",
            "top_k": config["num_experts_per_tok"],
            "topk_method": config.get("topk_method", "greedy"),
            "scoring_func": config.get("scoring_func", "softmax"),
            "n_group": config.get("n_group") or 1,
            "topk_group": config.get("topk_group") or 1,
            "norm_topk_prob": (model_type == "deepseek_v3"
                               and config.get("norm_topk_prob", False)),
            "routed_scaling_factor": config.get("routed_scaling_factor", 1.0),
        }
    if model_type == "mixtral":
        normalize = True
    else:
        normalize = bool(config.get("norm_topk_prob", False))
    return {"router": "softmax_topk",
            "top_k": config["num_experts_per_tok"], "normalize": normalize}


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class Model:
    """A loaded checkpoint; see :func:`load`.

    Attributes: ``config`` (the config.json dict), ``vocab_size``,
    ``layers`` (per layer: ``{"moe": bool, ...}``).
    """

    def __init__(self, config, typed_tensors):
        """Build the model from config.json and name -> (dtype, array)."""
        self.config = config
        model_type = config["model_type"]
        if model_type not in STANDARD_FAMILIES + MLA_FAMILIES:
            raise ValueError("unsupported model_type %r" % model_type)
        if config.get("hidden_act", "silu") != "silu":
            raise ValueError("unsupported hidden_act %r"
                             % config["hidden_act"])
        self._typed = typed_tensors
        self._used = set()
        quant = config.get("quantization_config") or {}
        self._fp8_block = tuple(quant.get("weight_block_size", (128, 128)))

        self.vocab_size = config["vocab_size"]
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.embed = self._take("model.embed_tokens.weight")
        self.final_norm = self._take("model.norm.weight")
        if "lm_head.weight" in typed_tensors:
            self.lm_head = self._take("lm_head.weight")
        elif config.get("tie_word_embeddings", False):
            self.lm_head = self.embed
        else:
            raise ValueError("lm_head.weight missing and embeddings not tied")

        if model_type in MLA_FAMILIES:
            rotary_dim = config["qk_rope_head_dim"]
        else:
            rotary_dim = standard_attention_spec(config, 0)["rotary_dim"]
        self.inv_freq, self.attention_scaling = rope_frequencies(
            config, rotary_dim)

        self.layers = [self._build_layer(i)
                       for i in range(config["num_hidden_layers"])]
        self._check_all_used()

    # -- weight access -----------------------------------------------------

    def _take(self, name):
        """Float64 value of tensor ``name`` (BF16 / FP8 decoded, §6.5)."""
        if name not in self._typed:
            raise KeyError("checkpoint lacks tensor " + name)
        dtype_str, array = self._typed[name]
        self._used.add(name)
        if dtype_str == "BF16":
            return decode_bf16(array.view(np.uint16))
        if dtype_str == "F8_E4M3":
            scale_name = name + "_scale_inv"
            if scale_name not in self._typed:
                raise KeyError("FP8 tensor %s has no %s" % (name, scale_name))
            _, scale_inv = self._typed[scale_name]
            self._used.add(scale_name)
            values = decode_e4m3(array.view(np.uint8))
            return dequantize_fp8(values, scale_inv, self._fp8_block)
        if dtype_str in ("F32", "F16", "F64"):
            return array.astype(np.float64)
        raise ValueError("tensor %s has non-float dtype %s"
                         % (name, dtype_str))

    def _take_prefixed(self, prefix, names):
        """``{suffix: value}`` for the given suffixes under ``prefix``; a
        name that is absent from the checkpoint is skipped."""
        out = {}
        for suffix in names:
            if prefix + suffix in self._typed:
                out[suffix] = self._take(prefix + suffix)
        return out

    def _check_all_used(self):
        """Every stored tensor must be consumed, except the DeepSeek MTP
        layers ``model.layers.{n >= num_hidden_layers}.*`` (§3, §6.5)."""
        n_layers = self.config["num_hidden_layers"]
        unused = []
        for name in self._typed:
            if name in self._used:
                continue
            parts = name.split(".")
            if (len(parts) > 2 and parts[0] == "model"
                    and parts[1] == "layers" and int(parts[2]) >= n_layers):
                continue
            unused.append(name)
        if unused:
            raise ValueError("unused tensors in checkpoint: "
                             + ", ".join(sorted(unused)[:8]))

    # -- structure ----------------------------------------------------------

    def _build_layer(self, i):
        """Collect the weights and options of decoder layer i."""
        config = self.config
        model_type = config["model_type"]
        prefix = "model.layers.%d." % i
        layer = {
            "input_layernorm": self._take(prefix + "input_layernorm.weight"),
            "post_attention_layernorm":
                self._take(prefix + "post_attention_layernorm.weight"),
        }
        attn_prefix = prefix + "self_attn."
        if model_type in MLA_FAMILIES:
            layer["attention"] = "mla"
            layer["attention_spec"] = mla_attention_spec(config)
            layer["attention_weights"] = self._take_prefixed(attn_prefix, [
                "q_proj.weight", "q_a_proj.weight", "q_a_layernorm.weight",
                "q_b_proj.weight", "kv_a_proj_with_mqa.weight",
                "kv_a_layernorm.weight", "kv_b_proj.weight",
                "o_proj.weight"])
        else:
            layer["attention"] = "standard"
            layer["attention_spec"] = standard_attention_spec(config, i)
            layer["attention_weights"] = self._standard_attention_weights(
                attn_prefix)

        layer["moe"] = layer_is_moe(config, i)
        if layer["moe"]:
            layer["moe_spec"] = moe_spec(config)
            layer["moe_weights"] = self._moe_weights(prefix)
        else:
            p = prefix + "mlp."
            layer["mlp"] = (self._take(p + "gate_proj.weight"),
                            self._take(p + "up_proj.weight"),
                            self._take(p + "down_proj.weight"))
        return layer

    def _standard_attention_weights(self, prefix):
        """q/k/v/o weights, the family's biases and q/k norms (§2, §5, §7)."""
        config = self.config
        model_type = config["model_type"]
        names = ["q_proj.weight", "k_proj.weight", "v_proj.weight",
                 "o_proj.weight"]
        if model_type in ("qwen2", "qwen2_moe"):
            if config.get("qkv_bias", True):
                names += ["q_proj.bias", "k_proj.bias", "v_proj.bias"]
        elif config.get("attention_bias", False):
            names += ["q_proj.bias", "k_proj.bias", "v_proj.bias"]
            if model_type != "glm4_moe":  # GLM: no o_proj bias
                names += ["o_proj.bias"]
        if model_type in ("qwen3_moe", "olmoe") or (
                model_type == "glm4_moe" and config.get("use_qk_norm")):
            names += ["q_norm.weight", "k_norm.weight"]
        if model_type == "gpt_oss":
            names += ["sinks"]
        return {n: self._take(prefix + n) for n in names}

    def _moe_weights(self, prefix):
        """Router, experts and shared experts of an MoE layer (§3)."""
        config = self.config
        model_type = config["model_type"]
        if model_type == "mixtral":
            p = prefix + "block_sparse_moe."
            num_experts = config["num_local_experts"]
            experts = [(self._take(p + "experts.%d.w1.weight" % e),
                        self._take(p + "experts.%d.w3.weight" % e),
                        self._take(p + "experts.%d.w2.weight" % e))
                       for e in range(num_experts)]
            return {"gate": self._take(p + "gate.weight"), "experts": experts}

        p = prefix + "mlp."
        if model_type == "gpt_oss":
            return self._gpt_oss_moe_weights(p)
        if model_type in MLA_FAMILIES + ("glm4_moe",):
            num_experts = config["n_routed_experts"]
        else:
            num_experts = config["num_experts"]
        experts = [(self._take(p + "experts.%d.gate_proj.weight" % e),
                    self._take(p + "experts.%d.up_proj.weight" % e),
                    self._take(p + "experts.%d.down_proj.weight" % e))
                   for e in range(num_experts)]
        out = {"gate": self._take(p + "gate.weight"), "experts": experts}
        if model_type == "qwen2_moe":
            q = p + "shared_expert."
            out["shared"] = (self._take(q + "gate_proj.weight"),
                             self._take(q + "up_proj.weight"),
                             self._take(q + "down_proj.weight"))
            out["shared_gate"] = self._take(p + "shared_expert_gate.weight")
        if model_type in MLA_FAMILIES + ("glm4_moe",):
            if (config.get("n_shared_experts") or 0) > 0:
                q = p + "shared_experts."
                out["shared"] = (self._take(q + "gate_proj.weight"),
                                 self._take(q + "up_proj.weight"),
                                 self._take(q + "down_proj.weight"))
            if (config.get("topk_method") == "noaux_tc"
                    or model_type == "glm4_moe"):
                out["score_bias"] = self._take(
                    p + "gate.e_score_correction_bias")
        return out

    def _gpt_oss_moe_weights(self, p):
        """GPT-OSS router and fused experts (§8), input-major [E, in, out]:
        bf16 ``gate_up_proj`` / ``down_proj``, or MXFP4 ``*_blocks`` /
        ``*_scales`` (output-major, decoded and transposed here)."""
        out = {"gate": self._take(p + "router.weight"),
               "gate_bias": self._take(p + "router.bias")}
        e = p + "experts."
        for name in ("gate_up_proj", "down_proj"):
            if e + name + "_blocks" in self._typed:
                self._used.update([e + name + "_blocks", e + name + "_scales"])
                w = decode_mxfp4(self._typed[e + name + "_blocks"][1],
                                 self._typed[e + name + "_scales"][1])
                out[name.split("_proj")[0]] = np.swapaxes(w, 1, 2)
            else:
                out[name.split("_proj")[0]] = self._take(e + name)
            out[name.split("_proj")[0] + "_bias"] = self._take(
                e + name + "_bias")
        return out

    # -- forward ------------------------------------------------------------

    def attention(self, i, x, cos, sin):
        """Attention of layer i on normalised input x [T, H]."""
        layer = self.layers[i]
        if layer["attention"] == "mla":
            return mla_attention(x, layer["attention_weights"],
                                 layer["attention_spec"], cos, sin)
        return standard_attention(x, layer["attention_weights"],
                                  layer["attention_spec"], cos, sin)

    def feed_forward(self, i, x):
        """Dense MLP or MoE block of layer i; returns (output, routing or
        None)."""
        layer = self.layers[i]
        if layer["moe"]:
            return moe_block(x, layer["moe_spec"], layer["moe_weights"])
        return swiglu_mlp(x, *layer["mlp"]), None

    def hidden_states(self, ids, trace=None):
        """Final residual stream [T, H] before the last norm (§2 skeleton).

        ``h = embed[ids]``; per layer ``h += Attn(RMSNorm(h))`` then
        ``h += FFN(RMSNorm(h))``.  When ``trace`` is a list, one dict per MoE
        layer is appended: ``{"layer", "experts", "weights", "margin"}``.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("ids must be a non-empty 1-D sequence")
        if np.any(ids < 0) or np.any(ids >= self.vocab_size):
            raise ValueError("token id out of range")
        positions = np.arange(ids.size)
        cos, sin = rope_cos_sin(positions, self.inv_freq,
                                self.attention_scaling)
        h = self.embed[ids]
        for i, layer in enumerate(self.layers):
            x = rms_norm(h, layer["input_layernorm"], self.eps)
            h = h + self.attention(i, x, cos, sin)
            x = rms_norm(h, layer["post_attention_layernorm"], self.eps)
            y, routing = self.feed_forward(i, x)
            h = h + y
            if trace is not None and routing is not None:
                trace.append(dict(routing, layer=i))
        return h

    def forward(self, ids, trace=None):
        """Logits [len(ids), vocab] in float64 of a full causal forward:
        ``RMSNorm(h; model.norm) · lm_headᵀ`` (§2)."""
        h = self.hidden_states(ids, trace)
        return linear(rms_norm(h, self.final_norm, self.eps), self.lm_head)

    def routing_margins(self, ids):
        """Per token, the smallest routing margin over all MoE layers of a
        forward over ``ids`` (inf for dense models).

        A margin is the gap, in the router's selection scores (softmax
        probabilities, or biased sigmoid scores for noaux_tc), between the
        last selected expert and the best unselected one, or between the last
        kept and best dropped group.  Tokens with a tiny margin may route
        differently in a lower-precision runtime.
        """
        trace = []
        self.forward(ids, trace)
        margins = np.full(len(ids), np.inf)
        for entry in trace:
            margins = np.minimum(margins, entry["margin"])
        return margins

    def greedy(self, ids, n):
        """The next ``n`` tokens by repeated argmax of the last logits row."""
        seq = [int(t) for t in ids]
        new = []
        for _ in range(n):
            token = int(np.argmax(self.forward(seq)[-1]))
            seq.append(token)
            new.append(token)
        return new


def load(directory):
    """Load ``directory`` (config.json + safetensors) as a :class:`Model`."""
    with open(os.path.join(directory, "config.json"), "r",
              encoding="utf-8") as f:
        config = json.load(f)
    return Model(config, read_checkpoint_typed(directory))


def main(argv=None):
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m moert_reference.reference",
        description="Float64 reference forward of a checkpoint.")
    parser.add_argument("directory")
    parser.add_argument("--ids", type=int, nargs="+", required=True)
    parser.add_argument("--new", type=int, default=0,
                        help="number of greedy tokens to generate")
    parser.add_argument("--logits-out",
                        help="write prompt logits as raw little-endian f64")
    args = parser.parse_args(argv)
    model = load(args.directory)
    logits = model.forward(args.ids)
    if args.logits_out:
        logits.astype("<f8").tofile(args.logits_out)
    result = {"ids": args.ids, "logits_shape": list(logits.shape),
              "argmax": [int(t) for t in np.argmax(logits, axis=-1)],
              "greedy": model.greedy(args.ids, args.new)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
