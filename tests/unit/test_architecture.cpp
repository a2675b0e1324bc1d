// The architecture specs of the real GPT-OSS and GLM-4.5 shapes of
// ../shared/bench/models.json (their config.json bodies), and of config
// variants: what each key turns into, and errors naming the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "models/architecture.h"
#include "moert/error.h"

namespace moert {
namespace {

using ::testing::HasSubstr;

HfConfig config(nlohmann::json j) { return HfConfig(std::move(j), "config.json"); }

// gpt-oss-20b's config.json as models.json holds it (the keys that matter).
nlohmann::json gpt_oss_20b() {
  nlohmann::json types = nlohmann::json::array();
  for (int i = 0; i < 24; ++i) types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  return {{"architectures", {"GptOssForCausalLM"}},
          {"model_type", "gpt_oss"},
          {"vocab_size", 201088},
          {"hidden_size", 2880},
          {"intermediate_size", 2880},
          {"head_dim", 64},
          {"num_hidden_layers", 24},
          {"num_attention_heads", 64},
          {"num_key_value_heads", 8},
          {"num_local_experts", 32},
          {"num_experts_per_tok", 4},
          {"layer_types", types},
          {"sliding_window", 128},
          {"attention_bias", true},
          {"swiglu_limit", 7.0},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 150000},
          {"rope_scaling",
           {{"rope_type", "yarn"},
            {"factor", 32.0},
            {"beta_fast", 32.0},
            {"beta_slow", 1.0},
            {"original_max_position_embeddings", 4096},
            {"truncate", false}}},
          {"max_position_embeddings", 131072},
          {"tie_word_embeddings", false}};
}

nlohmann::json glm_45_air() {
  return {{"architectures", {"Glm4MoeForCausalLM"}},
          {"model_type", "glm4_moe"},
          {"vocab_size", 151552},
          {"hidden_size", 4096},
          {"intermediate_size", 10944},
          {"moe_intermediate_size", 1408},
          {"head_dim", 128},
          {"partial_rotary_factor", 0.5},
          {"num_hidden_layers", 46},
          {"num_attention_heads", 96},
          {"num_key_value_heads", 8},
          {"n_routed_experts", 128},
          {"n_shared_experts", 1},
          {"num_experts_per_tok", 8},
          {"first_k_dense_replace", 1},
          {"n_group", 1},
          {"topk_group", 1},
          {"norm_topk_prob", true},
          {"routed_scaling_factor", 1.0},
          {"use_qk_norm", false},
          {"attention_bias", true},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 1000000},
          {"max_position_embeddings", 131072},
          {"num_nextn_predict_layers", 1},
          {"tie_word_embeddings", false}};
}

TEST(Architecture, GptOss20b) {
  const HfConfig c = config(gpt_oss_20b());
  const ArchSpec a = arch_from_config(c);
  check_sizes(c, a);
  EXPECT_EQ(a.model_type, "gpt_oss");
  EXPECT_TRUE(a.qkv_bias && a.o_bias && a.attention_sinks);
  EXPECT_TRUE(a.sliding(0) && !a.sliding(1) && a.sliding(22) && !a.sliding(23));
  EXPECT_EQ(a.sliding_window, 128);
  EXPECT_EQ(a.head_dim, 64);
  EXPECT_EQ(a.rope.rotary_dim, 64);
  EXPECT_EQ(a.rope.scaling, "yarn");
  EXPECT_FALSE(a.rope.truncate);
  EXPECT_DOUBLE_EQ(a.rope.theta, 150000);
  EXPECT_DOUBLE_EQ(a.attention_scale, 0.125);
  EXPECT_EQ(a.experts, 32);
  EXPECT_EQ(a.router.top_k, 4);
  EXPECT_EQ(a.router.scoring, "softmax_topk");
  EXPECT_TRUE(a.router_bias && a.fused_experts);
  EXPECT_EQ(a.router_name, "router");
  EXPECT_DOUBLE_EQ(a.activation.alpha, 1.702);
  EXPECT_DOUBLE_EQ(a.activation.limit, 7.0);
  EXPECT_DOUBLE_EQ(a.activation.up_offset, 1.0);
  EXPECT_EQ(a.shared_intermediate, 0);
  EXPECT_TRUE(a.notes.empty());
}

TEST(Architecture, GptOssDefaultsAndErrors) {
  // Without layer_types the even layers slide; without rope_scaling the
  // family's YaRN applies.
  nlohmann::json j = gpt_oss_20b();
  j.erase("layer_types");
  j.erase("rope_scaling");
  j.erase("rope_theta");
  ArchSpec a = arch_from_config(config(j));
  EXPECT_TRUE(a.sliding(0) && !a.sliding(1));
  EXPECT_EQ(a.rope.scaling, "yarn");
  EXPECT_DOUBLE_EQ(a.rope.factor, 32.0);
  EXPECT_FALSE(a.rope.truncate);
  EXPECT_DOUBLE_EQ(a.rope.theta, 150000);

  j = gpt_oss_20b();
  j["layer_types"][3] = "chunked_attention";
  EXPECT_THAT([&] { arch_from_config(config(j)); },
              ::testing::ThrowsMessage<Error>(HasSubstr(
                  "'layer_types' [3] must be \"sliding_attention\" or \"full_attention\"")));
  j = gpt_oss_20b();
  j["layer_types"].erase(0);
  EXPECT_THAT([&] { arch_from_config(config(j)); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'layer_types' must list one type per "
                                                        "layer (24)")));
  j = gpt_oss_20b();
  j["swiglu_limit"] = 0;
  EXPECT_THAT([&] { arch_from_config(config(j)); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'swiglu_limit' must be positive")));
}

TEST(Architecture, Glm45Air) {
  const HfConfig c = config(glm_45_air());
  const ArchSpec a = arch_from_config(c);
  check_sizes(c, a);
  EXPECT_EQ(a.model_type, "glm4_moe");
  EXPECT_EQ(a.head_dim, 128);
  EXPECT_EQ(a.rope.rotary_dim, 64);
  EXPECT_EQ(a.rope.pairing, "half");
  EXPECT_TRUE(a.qkv_bias);
  EXPECT_FALSE(a.o_bias);
  EXPECT_EQ(a.qk_norm, QkNorm::none);
  EXPECT_FALSE(a.layer_is_moe[0]);
  EXPECT_TRUE(a.layer_is_moe[1] && a.layer_is_moe[45]);
  EXPECT_EQ(a.experts, 128);
  EXPECT_EQ(a.expert_intermediate, 1408);
  EXPECT_EQ(a.shared_intermediate, 1408);
  EXPECT_EQ(a.shared_prefix, "shared_experts");
  EXPECT_EQ(a.router.scoring, "sigmoid");
  EXPECT_EQ(a.router.method, "noaux_tc");
  EXPECT_TRUE(a.router.has_bias && a.router.normalize);
  EXPECT_EQ(a.dense_intermediate, 10944);
  ASSERT_EQ(a.notes.size(), 1u);
  EXPECT_THAT(a.notes[0], HasSubstr("model.layers.46.* is not loaded"));
}

TEST(Architecture, Glm4MoeRotaryAndQkNorm) {
  // partial_rotary_factor: 0.5 when absent, also read from rope_parameters.
  nlohmann::json j = glm_45_air();
  j.erase("partial_rotary_factor");
  EXPECT_EQ(arch_from_config(config(j)).rope.rotary_dim, 64);
  j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 0.75}};
  EXPECT_EQ(arch_from_config(config(j)).rope.rotary_dim, 96);
  j = glm_45_air();
  j["use_qk_norm"] = true;
  EXPECT_EQ(arch_from_config(config(j)).qk_norm, QkNorm::per_head);
  j["partial_rotary_factor"] = 1.5;
  EXPECT_THAT([&] { arch_from_config(config(j)); },
              ::testing::ThrowsMessage<Error>(
                  HasSubstr("'partial_rotary_factor' must be in (0, 1], got 1.5")));
}

TEST(Architecture, AttentionBiasAndQwenWindows) {
  // attention_bias: q, k, v and o for Llama, Qwen3-MoE, OLMoE; Qwen2 q/k/v only.
  nlohmann::json llama = {{"model_type", "llama"},    {"vocab_size", 64},
                          {"hidden_size", 32},        {"num_hidden_layers", 4},
                          {"num_attention_heads", 4}, {"intermediate_size", 64},
                          {"attention_bias", true}};
  ArchSpec a = arch_from_config(config(llama));
  EXPECT_TRUE(a.qkv_bias && a.o_bias);
  nlohmann::json qwen2 = llama;
  qwen2["model_type"] = "qwen2";
  qwen2.erase("attention_bias");
  a = arch_from_config(config(qwen2));
  EXPECT_TRUE(a.qkv_bias && !a.o_bias);
  EXPECT_FALSE(a.sliding(0));
  // Qwen2 windows the layers from max_window_layers on.
  qwen2["use_sliding_window"] = true;
  qwen2["sliding_window"] = 16;
  qwen2["max_window_layers"] = 2;
  a = arch_from_config(config(qwen2));
  EXPECT_TRUE(!a.sliding(0) && !a.sliding(1) && a.sliding(2) && a.sliding(3));
  // A config's own layer_types wins.
  qwen2["layer_types"] = {"sliding_attention", "full_attention", "full_attention",
                          "sliding_attention"};
  a = arch_from_config(config(qwen2));
  EXPECT_TRUE(a.sliding(0) && !a.sliding(1) && !a.sliding(2) && a.sliding(3));
}

}  // namespace
}  // namespace moert
