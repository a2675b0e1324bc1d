// router: every scoring (softmax, sigmoid, softmax_topk), every top-k method
// with and without groups (greedy, group_limited_greedy, noaux_tc), bias,
// normalize with and without eps, scaling_factor, k = E, logits of every
// float dtype, a negative bias that lets masked experts (sel = 0) win, and
// enough tokens for the parallel path.
//
// The logits of each token are a permutation of distinct multiples of 1/8
// (exact in bf16, f16 and, for E = 16, f8_e4m3), so scores differ by >= ~3%
// between experts; a bias is constant within a group (or within one of two
// tiers) and its levels are >= 2 apart, more than any score difference.
// Selection therefore never depends on a near-tie, and f32 against f64
// cannot flip an expert id or a group choice.  The only exact ties are
// between masked experts at exactly 0, resolved to the lower index.
//
// Tolerance: ids exact; weights are f32 (tolerance_for(f32)).
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "conformance.h"

namespace moert::conformance {
namespace {

Tensor distinct_logits(DType t, int64_t tokens, int64_t experts, std::mt19937& rng) {
  Tensor x = Tensor::empty(t, {tokens, experts});
  std::vector<int64_t> perm(static_cast<size_t>(experts));
  for (int64_t r = 0; r < tokens; ++r) {
    std::iota(perm.begin(), perm.end(), int64_t{0});
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t e = 0; e < experts; ++e)
      store_element(t, x.data(), static_cast<size_t>(r * experts + e),
                    (static_cast<double>(perm[static_cast<size_t>(e)]) -
                     static_cast<double>(experts - 1) / 2.0) *
                        0.125);
  }
  return x;
}

// Bias levels 3 apart, one per group in a random order, plus `shift`.
Tensor group_bias(DType t, int64_t experts, int64_t groups, double shift, std::mt19937& rng) {
  std::vector<int64_t> order(static_cast<size_t>(groups));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  Tensor b = Tensor::empty(t, {experts});
  const int64_t size = experts / groups;
  for (int64_t e = 0; e < experts; ++e)
    store_element(t, b.data(), static_cast<size_t>(e),
                  shift + 3.0 * static_cast<double>(order[static_cast<size_t>(e / size)]));
  return b;
}

// Two tiers: a random half of the experts get +2.5, the rest 0.
Tensor tier_bias(int64_t experts, std::mt19937& rng) {
  std::vector<int64_t> order(static_cast<size_t>(experts));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  Tensor b = Tensor::empty(DType::f32, {experts});
  for (int64_t e = 0; e < experts; ++e)
    store_element(DType::f32, b.data(), static_cast<size_t>(e),
                  order[static_cast<size_t>(e)] < experts / 2 ? 2.5 : 0.0);
  return b;
}

struct Spec {
  std::string name;
  DType logits = DType::f32;
  int64_t tokens = 7, experts = 8, k = 2;
  std::vector<std::pair<const char*, AttrValue>> attrs;
  Tensor bias;  // undefined: none
};

Case router_case(Spec s, std::mt19937& rng) {
  Case c;
  c.name = s.name;
  c.op = "router";
  c.attrs.set("top_k", s.k);
  for (const auto& [k, v] : s.attrs) c.attrs.set(k, v);
  c.slots.push_back(activation(s.logits, Shape{Dim::tokens(), Dim(s.experts)}));
  if (s.bias.defined()) c.slots.push_back(constant(s.bias));
  Step step;
  step.tokens = s.tokens;
  step.inputs.push_back(distinct_logits(s.logits, s.tokens, s.experts, rng));
  c.steps.push_back(std::move(step));
  c.tolerance = tolerance_for(DType::f32);
  c.why = "expert ids exact; " + why_for(DType::f32);
  return c;
}

std::vector<Case> cases() {
  std::mt19937 rng(97);
  std::vector<Case> out;
  auto add = [&](Spec s) { out.push_back(router_case(std::move(s), rng)); };
  const AttrValue sigmoid = std::string("sigmoid"), softmax_topk = std::string("softmax_topk");
  const AttrValue noaux = std::string("noaux_tc"), limited = std::string("group_limited_greedy");

  // Mixtral: softmax over 8, top 2, every logits dtype.
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    add({std::string(dtype_name(t)) + "_softmax_top2_of_8", t, 7, 8, 2, {}, {}});
  add({"f8_softmax_top3_of_16", DType::f8_e4m3, 5, 16, 3, {}, {}});
  // DeepSeek-V2-Lite-like: softmax over 64, top 6, scaling factor.
  add({"softmax_top6_of_64_scaled", DType::bf16, 9, 64, 6, {{"scaling_factor", 2.5}}, {}});
  // Qwen3-MoE: softmax, top 8 of 128, normalized.
  add({"softmax_top8_of_128_normalize", DType::f32, 5, 128, 8, {{"normalize", int64_t{1}}}, {}});
  // GPT-OSS: softmax over the selected logits only.
  add({"softmax_topk_top4_of_32", DType::bf16, 6, 32, 4, {{"scoring", softmax_topk}}, {}});
  add({"softmax_topk_top1_of_8", DType::f32, 6, 8, 1, {{"scoring", softmax_topk}}, {}});
  // Sigmoid without bias, normalized.
  add({"sigmoid_top2_of_8_normalize",
       DType::f32,
       7,
       8,
       2,
       {{"scoring", sigmoid}, {"normalize", int64_t{1}}},
       {}});
  // DeepSeek-V3: sigmoid, bias, noaux_tc over 8 groups keeping 4, top 8 of
  // 64, normalize with eps 1e-20, routed scaling 2.5.
  add({"deepseek_v3_noaux_tc",
       DType::f32,
       9,
       64,
       8,
       {{"scoring", sigmoid},
        {"topk_method", noaux},
        {"n_group", int64_t{8}},
        {"topk_group", int64_t{4}},
        {"normalize", int64_t{1}},
        {"normalize_eps", 1e-20},
        {"scaling_factor", 2.5}},
       group_bias(DType::f32, 64, 8, 0.0, rng)});
  add({"noaux_tc_bf16_bias_4_groups_keep2",
       DType::bf16,
       6,
       16,
       4,
       {{"scoring", sigmoid},
        {"topk_method", noaux},
        {"n_group", int64_t{4}},
        {"topk_group", int64_t{2}}},
       group_bias(DType::bf16, 16, 4, 0.5, rng)});
  // Negative bias: every kept expert's sel is < 0, and the experts of the
  // dropped groups still never win (they are excluded, not scored 0).
  add({"noaux_tc_negative_bias_masked_excluded",
       DType::f32,
       4,
       16,
       3,
       {{"scoring", sigmoid},
        {"topk_method", noaux},
        {"n_group", int64_t{4}},
        {"topk_group", int64_t{1}}},
       group_bias(DType::f32, 16, 4, -20.0, rng)});
  // DeepSeek-V2: softmax, group_limited_greedy (group score = its max).
  add({"group_limited_greedy_top3",
       DType::f32,
       8,
       16,
       3,
       {{"topk_method", limited},
        {"n_group", int64_t{4}},
        {"topk_group", int64_t{2}},
        {"scaling_factor", 16.0}},
       {}});
  // Plain greedy with groups (scored by max, as group_limited_greedy).
  add({"greedy_with_groups",
       DType::f16,
       5,
       24,
       2,
       {{"n_group", int64_t{3}}, {"topk_group", int64_t{1}}},
       {}});
  // A bias without groups, with softmax and with noaux_tc at n_group 1.
  add({"softmax_tier_bias", DType::f32, 7, 16, 4, {}, tier_bias(16, rng)});
  add({"noaux_tc_one_group_tier_bias",
       DType::f32,
       7,
       16,
       4,
       {{"scoring", sigmoid}, {"topk_method", noaux}, {"normalize", int64_t{1}}},
       tier_bias(16, rng)});
  // k = E: every expert, in score order.
  add({"all_experts", DType::f32, 3, 4, 4, {{"normalize", int64_t{1}}}, {}});
  // Many tokens: the parallel path.
  add({"many_tokens", DType::bf16, 300, 64, 4, {{"normalize", int64_t{1}}}, {}});
  return out;
}

const CaseRegistration registration("router", cases);

}  // namespace
}  // namespace moert::conformance
