// A small Mixtral-style MoE transformer built directly as a moert graph with
// random weights: embedding, then per layer RMSNorm -> GQA attention with
// RoPE and a KV cache -> residual -> RMSNorm -> softmax top-k router -> MoE
// of SwiGLU experts -> residual, then RMSNorm and the LM head.  It exercises
// every op a real MoE model uses without needing a checkpoint.
#pragma once

#include <cmath>
#include <random>
#include <string>

#include "moert/graph.h"

namespace moert::demo {

struct TinyMoeConfig {
  int64_t vocab = 256;
  int64_t hidden = 64;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t experts = 4;
  int64_t top_k = 2;
  int64_t expert_hidden = 96;
  int64_t max_context = 128;
  double rope_theta = 10000.0;
  DType dtype = DType::f32;  // weights and activations
};

// Inputs: ids i32[T], positions i32[T].  Output: logits f32[T, vocab].
inline Graph build_tiny_moe(const TinyMoeConfig& c, uint32_t seed = 42) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto weight = [&](std::vector<int64_t> shape, double std) {
    Tensor t = Tensor::empty(c.dtype, std::move(shape));
    for (int64_t i = 0; i < t.numel(); ++i)
      store_element(c.dtype, t.data(), static_cast<size_t>(i), normal(rng) * std);
    return t;
  };
  auto norm_weight = [&](int64_t n) {
    Tensor t = Tensor::empty(c.dtype, {n});
    for (int64_t i = 0; i < n; ++i)
      store_element(c.dtype, t.data(), static_cast<size_t>(i), 1.0 + 0.1 * normal(rng));
    return t;
  };
  const int64_t hd = c.hidden / c.heads, H = c.hidden, I = c.expert_hidden, E = c.experts;
  Graph g;
  ValueId ids = g.add_input("ids", DType::i32, Shape{Dim::tokens()});
  ValueId pos = g.add_input("positions", DType::i32, Shape{Dim::tokens()});
  ValueId x =
      g.add("embedding", "embed", {g.add_constant("embed_tokens", weight({c.vocab, H}, 1.0)), ids});
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    auto cst = [&](const std::string& n, Tensor t) { return g.add_constant(p + n, std::move(t)); };
    const double s = 1.0 / std::sqrt(static_cast<double>(H));
    ValueId h = g.add("rms_norm", p + "input_norm", {x, cst("input_layernorm", norm_weight(H))},
                      {{"eps", 1e-5}});
    ValueId q = g.add("linear", p + "q_proj", {h, cst("q_proj", weight({c.heads * hd, H}, s))});
    ValueId k = g.add("linear", p + "k_proj", {h, cst("k_proj", weight({c.kv_heads * hd, H}, s))});
    ValueId v = g.add("linear", p + "v_proj", {h, cst("v_proj", weight({c.kv_heads * hd, H}, s))});
    q = g.add("reshape", p + "q_heads", {q}, {{"shape", std::vector<int64_t>{0, c.heads, hd}}});
    k = g.add("reshape", p + "k_heads", {k}, {{"shape", std::vector<int64_t>{0, c.kv_heads, hd}}});
    v = g.add("reshape", p + "v_heads", {v}, {{"shape", std::vector<int64_t>{0, c.kv_heads, hd}}});
    q = g.add("rope", p + "q_rope", {q, pos}, {{"theta", c.rope_theta}});
    k = g.add("rope", p + "k_rope", {k, pos}, {{"theta", c.rope_theta}});
    ValueId kc = g.add_state(p + "k_cache", c.dtype, {c.max_context, c.kv_heads, hd});
    ValueId vc = g.add_state(p + "v_cache", c.dtype, {c.max_context, c.kv_heads, hd});
    ValueId a = g.add("attention", p + "attention", {q, k, v, kc, vc});
    a = g.add("reshape", p + "attn_flat", {a}, {{"shape", std::vector<int64_t>{0, c.heads * hd}}});
    a = g.add("linear", p + "o_proj", {a, cst("o_proj", weight({H, c.heads * hd}, s))});
    x = g.add("add", p + "attn_residual", {x, a});
    h = g.add("rms_norm", p + "post_norm", {x, cst("post_attention_layernorm", norm_weight(H))},
              {{"eps", 1e-5}});
    ValueId logits = g.add("linear", p + "router_logits", {h, cst("gate", weight({E, H}, s))},
                           {{"dtype", std::string("f32")}});
    std::vector<ValueId> route = g.add_node("router", p + "router", {logits},
                                            {{"top_k", c.top_k}, {"normalize", int64_t{1}}});
    ValueId m = g.add("moe", p + "moe",
                      {h, route[0], route[1], cst("experts.gate", weight({E, I, H}, s)),
                       cst("experts.up", weight({E, I, H}, s)),
                       cst("experts.down", weight({E, H, I}, 1.0 / std::sqrt(double(I))))});
    x = g.add("add", p + "moe_residual", {x, m});
  }
  x = g.add("rms_norm", "final_norm", {x, g.add_constant("norm", norm_weight(H))}, {{"eps", 1e-5}});
  ValueId logits =
      g.add("linear", "lm_head",
            {x, g.add_constant("lm_head", weight({c.vocab, H}, 1.0 / std::sqrt(double(H))))},
            {{"dtype", std::string("f32")}});
  g.mark_output(logits);
  return g;
}

}  // namespace moert::demo
