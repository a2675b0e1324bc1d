"""Tiny config.json bodies, one per architecture (reference doc §4–§7).

Every body uses the Hugging Face key names of its ``model_type`` so that a
checkpoint written from it loads like a hub checkpoint.  Sizes are small
(hidden 64, 2–4 layers, vocab 512, max_position_embeddings 256) so the NumPy
reference runs a 40-token forward in well under a second.

Choices that exercise specific paths:

* ``mixtral`` is ``tiny-mixtral`` of ``bench/models.json`` verbatim.
* ``qwen2_moe``: shared expert with its sigmoid gate, qkv bias,
  ``norm_topk_prob`` false, layer 0 dense through ``mlp_only_layers``; a
  ``sliding_window`` of 32 that must stay unused because
  ``use_sliding_window`` is false (§5.1).
* ``qwen3_moe``: ``head_dim`` 32 while hidden/heads is 16, per-head q/k norm,
  ``norm_topk_prob`` true, top-3 (§5.2).
* ``olmoe``: full-width q/k norm with GQA, so k_norm has width nkv·hd (§7).
* ``deepseek_v2``: MLA without q LoRA, YaRN with mscale = mscale_all_dim =
  0.707 (attention_scaling 1, softmax scale with m²), greedy softmax routing,
  two shared experts, layer 0 dense, routed_scaling_factor 1.5 (§6).
* ``deepseek_v2_grouped``: as ``deepseek_v2`` with group_limited_greedy,
  n_group 4, topk_group 2, top-3, routed_scaling_factor 3.0 (§6.4).
* ``deepseek_v3``: MLA with q LoRA, sigmoid ``noaux_tc`` routing with
  ``e_score_correction_bias``, n_group 4 / topk_group 2, ``norm_topk_prob``
  true, routed_scaling_factor 2.5, ``rope_interleave`` true, dense
  intermediate 160 (so FP8 weights have a partial 128-block), and one MTP
  layer (``num_nextn_predict_layers`` 1) that is stored but not part of the
  model.  YaRN uses mscale 1.0 with mscale_all_dim 0.8, so both the cos/sin
  attention_scaling (≈1.0246) and the m² softmax correction are non-trivial
  (§6.2, §6.3).
* ``llama``, ``mistral`` (sliding_window 16, MQA), ``qwen2`` (qkv bias):
  dense models sharing the §2 skeleton.
* ``gpt_oss``: sliding window 8 on layers 0 and 2 (``layer_types``), sinks,
  biases on q/k/v/o, router and experts, YaRN with ``truncate`` false, and
  ``swiglu_limit`` 0.5 (GPT-OSS's is 7) so that the tiny model's expert
  pre-activations reach both sides of the clamp (§8).
* ``glm4_moe``: ``head_dim`` 32 while hidden/heads is 16, no
  ``partial_rotary_factor`` (transformers' default 0.5 applies: 16 of 32
  features rotate), q/k/v bias without o bias, per-head q/k norm, DeepSeek-V3
  routing (noaux_tc, 4 groups, top-3), a shared expert, layer 0 dense, and
  one MTP layer that is stored but not part of the model.

In every YaRN config ``factor`` equals ``max_position_embeddings /
original_max_position_embeddings`` so the factor recomputation of §6.3
changes nothing.
"""

import copy


_YARN_V2 = {
    "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
    "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707,
}

_DEEPSEEK_V2_COMMON = {
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
    "moe_intermediate_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": None, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8, "v_head_dim": 16,
    "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 2,
    "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "topk_method": "greedy", "scoring_func": "softmax",
    "n_group": 1, "topk_group": 1, "norm_topk_prob": False,
    "routed_scaling_factor": 1.5, "aux_loss_alpha": 0.001,
    "seq_aux": True, "hidden_act": "silu", "attention_bias": False,
    "attention_dropout": 0.0, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "rope_scaling": _YARN_V2, "max_position_embeddings": 256,
    "initializer_range": 0.02, "use_cache": True,
    "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
}


CONFIGS = {
    "mixtral": {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_local_experts": 4,
        "num_experts_per_tok": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "qwen2_moe": {
        "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "moe_intermediate_size": 32, "shared_expert_intermediate_size": 96,
        "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_experts": 8,
        "num_experts_per_tok": 2, "norm_topk_prob": False,
        "decoder_sparse_step": 1, "mlp_only_layers": [0], "qkv_bias": True,
        "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "use_sliding_window": False, "sliding_window": 32,
        "max_window_layers": 3, "max_position_embeddings": 256,
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": False,
    },
    "qwen3_moe": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "vocab_size": 512, "hidden_size": 64, "head_dim": 32,
        "intermediate_size": 128, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_experts": 8,
        "num_experts_per_tok": 3, "norm_topk_prob": True,
        "decoder_sparse_step": 1, "mlp_only_layers": [],
        "attention_bias": False, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": None,
        "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": 3, "max_position_embeddings": 256,
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": False,
    },
    "olmoe": {
        "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_experts": 8,
        "num_experts_per_tok": 3, "norm_topk_prob": False,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "attention_bias": False, "clip_qkv": None,
        "max_position_embeddings": 256, "attention_dropout": 0.0,
        "bos_token_id": None, "eos_token_id": 2, "pad_token_id": 1,
        "tie_word_embeddings": False,
    },
    "deepseek_v2": dict(_DEEPSEEK_V2_COMMON),
    "deepseek_v2_grouped": dict(
        _DEEPSEEK_V2_COMMON, topk_method="group_limited_greedy", n_group=4,
        topk_group=2, num_experts_per_tok=3, routed_scaling_factor=3.0),
    "deepseek_v3": {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 160,
        "moe_intermediate_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8, "v_head_dim": 16,
        "n_routed_experts": 8, "n_shared_experts": 1,
        "num_experts_per_tok": 3, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "topk_method": "noaux_tc",
        "scoring_func": "sigmoid", "n_group": 4, "topk_group": 2,
        "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "num_nextn_predict_layers": 1, "ep_size": 1,
        "hidden_act": "silu", "attention_bias": False,
        "attention_dropout": 0.0, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "rope_interleave": True,
        "rope_scaling": {
            "type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 64, "beta_fast": 32,
            "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.8,
        },
        "max_position_embeddings": 256, "initializer_range": 0.02,
        "use_cache": True, "bos_token_id": 0, "eos_token_id": 1,
        "tie_word_embeddings": False,
    },
    "llama": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "attention_bias": False, "mlp_bias": False,
        "max_position_embeddings": 256, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
    },
    "mistral": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 16, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": 16,
        "max_position_embeddings": 256, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
    },
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": None,
        "use_sliding_window": False, "sliding_window": 32,
        "max_window_layers": 2, "max_position_embeddings": 256,
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": False,
    },
    "gpt_oss": {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 64,
        "head_dim": 16, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_local_experts": 8,
        "num_experts_per_tok": 4, "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention",
                        "sliding_attention"],
        "attention_bias": True, "hidden_act": "silu",
        "swiglu_limit": 0.5, "rms_norm_eps": 1e-5, "rope_theta": 150000.0,
        "rope_scaling": {
            "rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0,
            "beta_slow": 1.0, "truncate": False,
            "original_max_position_embeddings": 64,
        },
        "max_position_embeddings": 256, "attention_dropout": 0.0,
        "initializer_range": 0.02, "router_aux_loss_coef": 0.9,
        "output_router_logits": False, "use_cache": True,
        "bos_token_id": None, "eos_token_id": 2, "pad_token_id": 1,
        "tie_word_embeddings": False,
    },
    "glm4_moe": {
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe",
        "vocab_size": 512, "hidden_size": 64, "head_dim": 32,
        "intermediate_size": 160, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "n_routed_experts": 8,
        "n_shared_experts": 1, "num_experts_per_tok": 3,
        "first_k_dense_replace": 1, "n_group": 4, "topk_group": 2,
        "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "attention_bias": True, "use_qk_norm": True,
        "num_nextn_predict_layers": 1, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True, "bos_token_id": None,
        "eos_token_id": 2, "pad_token_id": 1, "tie_word_embeddings": False,
    },
}

ARCHITECTURES = tuple(CONFIGS)


def get_config(arch):
    """Return a fresh copy of the tiny config.json body for ``arch``."""
    if arch not in CONFIGS:
        raise KeyError("unknown architecture %r; known: %s"
                       % (arch, ", ".join(ARCHITECTURES)))
    return copy.deepcopy(CONFIGS[arch])
