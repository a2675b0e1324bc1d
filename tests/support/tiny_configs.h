// Small configs of three MoE families for models with random weights
// (Model::random), shared by the tests that build whole models.
#pragma once

#include <nlohmann/json.hpp>

namespace moert::testing {

// tiny-mixtral of bench/models.json.
inline nlohmann::json tiny_mixtral() {
  return nlohmann::json::parse(R"({
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
    "num_experts_per_tok": 2, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
    "max_position_embeddings": 256, "tie_word_embeddings": false})");
}

// A DeepSeek-V3 with q-LoRA, group-limited sigmoid routing with the score
// bias, a dense first layer and a shared expert; 200-wide matrices give fp8
// partial edge blocks.
inline nlohmann::json tiny_deepseek_v3() {
  return nlohmann::json::parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 300, "hidden_size": 200, "intermediate_size": 136, "moe_intermediate_size": 72,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
    "v_head_dim": 16, "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
    "first_k_dense_replace": 1, "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 128, "tie_word_embeddings": false})");
}

// Qwen2-MoE: qkv biases, a gated shared expert, tied embeddings.
inline nlohmann::json tiny_qwen2_moe() {
  return nlohmann::json::parse(R"({
    "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
    "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 128, "tie_word_embeddings": true})");
}

}  // namespace moert::testing
