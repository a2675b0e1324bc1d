// Checkpoints for C++ tests that load a whole model: a writer of random f32
// safetensors files (tests/unit/test_model.cpp), and a tiny random Mixtral in
// Hugging Face layout (test_concurrency.cpp, test_error_contract.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace moert_test {

using TensorShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// Writes `tensors` as F32 into one safetensors file: normal(0, 0.3) values,
// 1 + normal(0, 0.03) for norms, from `seed`.
inline void write_random_safetensors(const std::filesystem::path& file, const TensorShapes& tensors,
                                     uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  nlohmann::json header = nlohmann::json::object();
  std::vector<float> data;
  for (const auto& [name, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const uint64_t begin = data.size() * 4;
    const bool norm = name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < n; ++i) data.push_back(norm ? 1.0f + 0.1f * normal(rng) : normal(rng));
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {begin, data.size() * 4}}};
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream out(file, std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h;
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * 4));
}

constexpr int64_t kVocab = 89, kHidden = 32, kInter = 40, kLayers = 2, kHeads = 4, kKvHeads = 2,
                  kExperts = 4;
// Writes config.json and model.safetensors (f32, random) for a tiny Mixtral.
inline void write_tiny_mixtral(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  nlohmann::json config = {{"architectures", {"MixtralForCausalLM"}},
                           {"model_type", "mixtral"},
                           {"vocab_size", kVocab},
                           {"hidden_size", kHidden},
                           {"intermediate_size", kInter},
                           {"num_hidden_layers", kLayers},
                           {"num_attention_heads", kHeads},
                           {"num_key_value_heads", kKvHeads},
                           {"num_local_experts", kExperts},
                           {"num_experts_per_tok", 2},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", 10000.0},
                           {"max_position_embeddings", 64},
                           {"tie_word_embeddings", false}};
  std::ofstream(dir / "config.json") << config.dump();
  TensorShapes tensors = {{"model.embed_tokens.weight", {kVocab, kHidden}},
                          {"model.norm.weight", {kHidden}},
                          {"lm_head.weight", {kVocab, kHidden}}};
  const int64_t hd = kHidden / kHeads;
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (auto [n, s] : TensorShapes{{"input_layernorm.weight", {kHidden}},
                                    {"post_attention_layernorm.weight", {kHidden}},
                                    {"self_attn.q_proj.weight", {kHeads * hd, kHidden}},
                                    {"self_attn.k_proj.weight", {kKvHeads * hd, kHidden}},
                                    {"self_attn.v_proj.weight", {kKvHeads * hd, kHidden}},
                                    {"self_attn.o_proj.weight", {kHidden, kHeads * hd}},
                                    {"block_sparse_moe.gate.weight", {kExperts, kHidden}}})
      tensors.push_back({p + n, s});
    for (int64_t e = 0; e < kExperts; ++e) {
      const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      tensors.push_back({x + "w1.weight", {kInter, kHidden}});
      tensors.push_back({x + "w2.weight", {kHidden, kInter}});
      tensors.push_back({x + "w3.weight", {kInter, kHidden}});
    }
  }
  write_random_safetensors(dir / "model.safetensors", tensors, 11);
}

}  // namespace moert_test
