// router: small cases worked out by hand for each scoring function and
// selection method (see the comments for the expected choice), and every
// inference error.
#include <gtest/gtest.h>

#include <cmath>

#include "moert/graph.h"
#include "support/op_runner.h"

namespace moert {
namespace {

using testing::run_op;

struct Routed {
  std::vector<double> ids, weights;
};

Routed route(const std::vector<int64_t>& shape, const std::vector<double>& logits,
             const Attributes& attrs, const std::vector<double>& bias = {}) {
  Tensor l = Tensor::from_doubles(DType::f32, shape, logits);
  Tensor b = bias.empty()
                 ? Tensor()
                 : Tensor::from_doubles(DType::f32, {static_cast<int64_t>(bias.size())}, bias);
  std::vector<Tensor> inputs{l};
  if (b.defined()) inputs.push_back(b);
  std::vector<Tensor> out = run_op("router", inputs, attrs);
  EXPECT_EQ(out[0].dtype(), DType::i32);
  EXPECT_EQ(out[1].dtype(), DType::f32);
  EXPECT_EQ(out[0].shape(), (std::vector<int64_t>{shape[0], attrs.get_int("top_k")}));
  EXPECT_EQ(out[1].shape(), out[0].shape());
  return {out[0].to_doubles(), out[1].to_doubles()};
}

// Logits are f32, so the expected values use the f32-rounded logits; the
// weights are rounded to f32 once (relative 6e-8).
double f32(double v) { return static_cast<double>(static_cast<float>(v)); }

void expect_weights(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-6 * std::fabs(want[i]) + 1e-12) << "weight " << i;
}

TEST(Router, SoftmaxGreedy) {
  // Token 0 prefers experts 1 (3.0) then 2 (2.0); token 1 prefers 0 then 3.
  const std::vector<double> l{1, 3, 2, 0, 0.5, -1, 0.25, 0.4};
  Routed r = route({2, 4}, l, {{"top_k", int64_t{2}}});
  EXPECT_EQ(r.ids, (std::vector<double>{1, 2, 0, 3}));
  const double z0 = std::exp(1) + std::exp(3) + std::exp(2) + 1;
  const double z1 = std::exp(0.5) + std::exp(-1) + std::exp(0.25) + std::exp(f32(0.4));
  expect_weights(r.weights,
                 {std::exp(3) / z0, std::exp(2) / z0, std::exp(0.5) / z1, std::exp(f32(0.4)) / z1});
}

TEST(Router, SoftmaxNormalizedAndScaled) {
  const std::vector<double> l{1, 3, 2, 0};
  Routed r = route({1, 4}, l, {{"top_k", int64_t{2}}, {"normalize", int64_t{1}}});
  EXPECT_EQ(r.ids, (std::vector<double>{1, 2}));
  const double a = std::exp(3), b = std::exp(2);
  expect_weights(r.weights, {a / (a + b), b / (a + b)});
  // scaling_factor multiplies after normalization (DeepSeek's routed_scaling_factor).
  r = route({1, 4}, l, {{"top_k", int64_t{2}}, {"normalize", int64_t{1}}, {"scaling_factor", 2.5}});
  expect_weights(r.weights, {2.5 * a / (a + b), 2.5 * b / (a + b)});
  // normalize_eps joins the denominator.
  r = route({1, 4}, l, {{"top_k", int64_t{2}}, {"normalize", int64_t{1}}, {"normalize_eps", 0.5}});
  const double z = std::exp(1) + a + b + 1;
  expect_weights(r.weights, {(a / z) / (a / z + b / z + 0.5), (b / z) / (a / z + b / z + 0.5)});
}

TEST(Router, TopOne) {
  Routed r = route({3, 3}, {0, 0, 1, 2, 0, 0, -1, 5, 4}, {{"top_k", int64_t{1}}});
  EXPECT_EQ(r.ids, (std::vector<double>{2, 0, 1}));
  const double e = std::exp(1);
  expect_weights(r.weights, {e / (e + 2), std::exp(2) / (std::exp(2) + 2),
                             std::exp(5) / (std::exp(-1) + std::exp(5) + std::exp(4))});
}

TEST(Router, TiesGoToTheLowerIndex) {
  // Experts 1 and 2 tie for first, 0 and 3 for third.
  Routed r = route({1, 4}, {1, 2, 2, 1}, {{"top_k", int64_t{3}}});
  EXPECT_EQ(r.ids, (std::vector<double>{1, 2, 0}));
  r = route({1, 5}, {0, 0, 0, 0, 0}, {{"top_k", int64_t{5}}, {"scoring", "sigmoid"}});
  EXPECT_EQ(r.ids, (std::vector<double>{0, 1, 2, 3, 4}));
  expect_weights(r.weights, {0.5, 0.5, 0.5, 0.5, 0.5});
}

TEST(Router, SigmoidBiasSelectsButDoesNotWeigh) {
  // Equal logits (sigmoid 0.5 each); the bias picks experts 3 then 1, the
  // weights stay the unbiased 0.5.
  Routed r = route({1, 4}, {0, 0, 0, 0}, {{"top_k", int64_t{2}}, {"scoring", "sigmoid"}},
                   {0, 0.1, -0.1, 0.2});
  EXPECT_EQ(r.ids, (std::vector<double>{3, 1}));
  expect_weights(r.weights, {0.5, 0.5});
}

TEST(Router, SoftmaxTopkGptOss) {
  // Top-2 of the raw logits (1: 3.0, 2: 2.0), weights softmax([3, 2]).
  Routed r = route({1, 4}, {1, 3, 2, 0}, {{"top_k", int64_t{2}}, {"scoring", "softmax_topk"}});
  EXPECT_EQ(r.ids, (std::vector<double>{1, 2}));
  const double e = std::exp(1);
  expect_weights(r.weights, {e / (e + 1), 1 / (e + 1)});
}

TEST(Router, GroupLimitedGreedyDeepSeekV2) {
  // 6 experts in 3 groups {0,1} {2,3} {4,5}; group score = max softmax score:
  // group 0 (2.0) beats group 1 (1.5) and group 2 (0).  With one kept group
  // the top-2 are experts 0 and 1; without groups they would be 0 and 2.
  const std::vector<double> l{2.0, 0.0, 1.5, 1.4, 0.0, 0.0};
  Routed plain = route({1, 6}, l, {{"top_k", int64_t{2}}});
  EXPECT_EQ(plain.ids, (std::vector<double>{0, 2}));
  Routed r = route({1, 6}, l,
                   {{"top_k", int64_t{2}},
                    {"topk_method", "group_limited_greedy"},
                    {"n_group", int64_t{3}},
                    {"topk_group", int64_t{1}},
                    {"scaling_factor", 16.0}});
  EXPECT_EQ(r.ids, (std::vector<double>{0, 1}));
  const double z = std::exp(2.0) + 1 + std::exp(1.5) + std::exp(f32(1.4)) + 1 + 1;
  expect_weights(r.weights, {16 * std::exp(2.0) / z, 16 / z});
}

TEST(Router, NoauxTcDeepSeekV3) {
  // 8 experts in 4 groups of 2.  Sigmoid scores, group score = sum of the
  // two best: g0 {3, -3} -> 1.0, g1 {1, 1} -> 1.46, g2 {0.5, 0.5} -> 1.25,
  // g3 {-1, -1} -> 0.54.  Keeping 2 groups (g1, g2) drops expert 0, the
  // single best expert: the top-2 become 2 and 3 (tied, lower index first).
  const std::vector<double> l{3, -3, 1, 1, 0.5, 0.5, -1, -1};
  Attributes a{{"top_k", int64_t{2}},    {"scoring", "sigmoid"},     {"topk_method", "noaux_tc"},
               {"n_group", int64_t{4}},  {"topk_group", int64_t{2}}, {"normalize", int64_t{1}},
               {"normalize_eps", 1e-20}, {"scaling_factor", 2.5}};
  Routed r = route({1, 8}, l, a, std::vector<double>(8, 0.0));
  EXPECT_EQ(r.ids, (std::vector<double>{2, 3}));
  expect_weights(r.weights, {1.25, 1.25});
  // With one group (no masking) expert 0 wins.
  Attributes one = a;
  one.set("n_group", int64_t{1});
  one.set("topk_group", int64_t{1});
  r = route({1, 8}, l, one);
  EXPECT_EQ(r.ids, (std::vector<double>{0, 2}));
  const double s0 = 1 / (1 + std::exp(-3.0)), s2 = 1 / (1 + std::exp(-1.0));
  expect_weights(r.weights, {2.5 * s0 / (s0 + s2), 2.5 * s2 / (s0 + s2)});
  // The bias steers group choice and selection: +1 on expert 7 lifts g3 to
  // 0.27 + 1.27 = 1.54 (kept with g1), and expert 7 (1.27) is chosen first;
  // its weight is the unbiased sigmoid(-1).
  std::vector<double> bias(8, 0.0);
  bias[7] = 1.0;
  r = route({1, 8}, l, a, bias);
  EXPECT_EQ(r.ids, (std::vector<double>{7, 2}));
  const double s7 = 1 / (1 + std::exp(1.0));
  expect_weights(r.weights, {2.5 * s7 / (s7 + s2 + 1e-20), 2.5 * s2 / (s7 + s2 + 1e-20)});
}

TEST(Router, MaskedExpertsAreExcluded) {
  // The experts of dropped groups are excluded (sel -inf, as transformers 5
  // masks them for noaux_tc), so even with negative scores a masked expert
  // never outranks a kept one.  Groups {0,1} {2,3}; softmax_topk (raw
  // logits): g0 max -1 beats g1 max -2; kept g0 holds -1 and -5, which are
  // chosen although the masked -2 and -3 are larger than -5.
  Routed r = route({1, 4}, {-1, -5, -2, -3},
                   {{"top_k", int64_t{2}},
                    {"scoring", "softmax_topk"},
                    {"topk_method", "group_limited_greedy"},
                    {"n_group", int64_t{2}},
                    {"topk_group", int64_t{1}}});
  EXPECT_EQ(r.ids, (std::vector<double>{0, 1}));
  const double e4 = std::exp(4);
  expect_weights(r.weights, {e4 / (e4 + 1), 1 / (e4 + 1)});
}

TEST(Router, GroupTiesGoToTheLowerGroup) {
  // Both groups score max 2; group 0 is kept.
  Routed r = route({1, 4}, {2, 0, 0, 2},
                   {{"top_k", int64_t{1}},
                    {"topk_method", "group_limited_greedy"},
                    {"n_group", int64_t{2}},
                    {"topk_group", int64_t{1}}});
  EXPECT_EQ(r.ids, (std::vector<double>{0}));
}

TEST(Router, SymbolicTokens) {
  Graph g;
  ValueId l = g.add_input("logits", DType::bf16, Shape{Dim::tokens(), 16});
  std::vector<ValueId> out = g.add_node("router", "router", {l}, {{"top_k", int64_t{4}}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(g.value(out[0]).shape, (Shape{Dim::tokens(), 4}));
  EXPECT_EQ(g.value(out[0]).name, "router.expert_ids");
  EXPECT_EQ(g.value(out[1]).dtype, DType::f32);
}

void expect_error(const std::vector<Tensor>& inputs, const Attributes& attrs,
                  const std::string& fragment) {
  try {
    run_op("router", inputs, attrs, SymbolValues::of(0, 0), "moe.router");
    ADD_FAILURE() << "no error; expected one mentioning " << fragment;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_NE(msg.find("moe.router"), std::string::npos) << msg;
  }
}

TEST(Router, Errors) {
  std::mt19937 rng(3);
  Tensor l = testing::random_tensor(DType::f32, {2, 8}, rng);
  auto attrs = [](std::initializer_list<std::pair<const std::string, AttrValue>> extra) {
    Attributes a{{"top_k", int64_t{2}}};
    for (const auto& [k, v] : extra) a.set(k, v);
    return a;
  };
  expect_error({l}, {}, "missing required attribute 'top_k'");
  expect_error({l}, {{"top_k", int64_t{0}}}, "'top_k'");
  expect_error({l}, {{"top_k", int64_t{9}}}, "'top_k'");
  expect_error({l}, attrs({{"scoring", "relu"}}), "'scoring'");
  expect_error({l}, attrs({{"topk_method", "best"}}), "'topk_method'");
  expect_error({l}, attrs({{"n_group", int64_t{3}}}), "'n_group'");
  expect_error({l}, attrs({{"n_group", int64_t{0}}}), "'n_group'");
  expect_error({l}, attrs({{"n_group", int64_t{4}}, {"topk_group", int64_t{5}}}), "'topk_group'");
  expect_error({l}, attrs({{"n_group", int64_t{4}}, {"topk_group", int64_t{0}}}), "'topk_group'");
  // One kept group of 2 cannot supply 3 experts.
  Attributes too_many = attrs({{"n_group", int64_t{4}}, {"topk_group", int64_t{1}}});
  too_many.set("top_k", int64_t{3});
  expect_error({l}, too_many, "kept groups");
  expect_error(
      {l},
      attrs({{"topk_method", "noaux_tc"}, {"n_group", int64_t{8}}, {"topk_group", int64_t{4}}}),
      "two best");
  expect_error({l}, attrs({{"normalize", int64_t{2}}}), "'normalize'");
  expect_error({l}, attrs({{"normalize_eps", -1.0}}), "'normalize_eps'");
  expect_error({l}, attrs({{"scaling_factor", INFINITY}}), "'scaling_factor'");
  expect_error({l}, attrs({{"temperature", 1.0}}), "unknown attribute 'temperature'");
  expect_error({l, testing::random_tensor(DType::f32, {7}, rng)}, attrs({}), "'bias'");
  expect_error({l, testing::random_ints(DType::i32, {8}, 0, 3, rng)}, attrs({}), "'bias'");
  expect_error({testing::random_tensor(DType::f32, {8}, rng)}, attrs({}), "'logits'");
  expect_error({testing::random_ints(DType::i32, {2, 8}, 0, 3, rng)}, attrs({}), "'logits'");
  expect_error({Tensor::from_doubles(DType::f32, {1, 4}, {0, NAN, 1, 2})}, attrs({}),
               "'logits'[0, 1]");
  expect_error({l, Tensor::from_doubles(DType::f32, {8}, {0, 0, 0, INFINITY, 0, 0, 0, 0})},
               attrs({}), "'bias'[3]");
  Graph g;
  ValueId dyn = g.add_input("dyn", DType::f32, Shape{Dim::tokens(), Dim::tokens()});
  EXPECT_THROW(g.add_node("router", "r", {dyn}, {{"top_k", int64_t{1}}}), Error);
}

}  // namespace
}  // namespace moert
