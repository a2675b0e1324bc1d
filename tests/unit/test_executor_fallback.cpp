// The executor across backends: a plugin that runs only `add` ("testdev",
// tests/plugins) gets the tiny MoE model; attention and moe are decomposed,
// everything else falls back to the reference backend with copies at the
// boundaries, and the logits still match the reference backend's.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "moert/error.h"
#include "moert/executor.h"
#include "tiny_moe.h"

using moert::BackendRegistry;
using moert::DType;
using moert::Executor;
using moert::ExecutorOptions;
using moert::SymbolValues;
using moert::Tensor;
using ::testing::HasSubstr;

namespace {

BackendRegistry& registry() {
  static BackendRegistry r({std::string(MOERT_TEST_PLUGIN_DIR) + "/libmoert_backend_testdev.so"},
                           /*use_default_paths=*/false);
  return r;
}

Tensor ints(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty(DType::i32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

// Prefill of 5 tokens, then 3 decode steps: the logits of every call.
std::vector<Tensor> run_sequence(Executor& exe) {
  std::vector<Tensor> out;
  out.push_back(
      exe.run({ints({3, 141, 59, 26, 5}), ints({0, 1, 2, 3, 4})}, SymbolValues::of(5, 0))[0]);
  int32_t next[] = {35, 89, 79};
  for (int32_t s = 0; s < 3; ++s)
    out.push_back(exe.run({ints({next[s]}), ints({5 + s})}, SymbolValues::of(1, 5 + s))[0]);
  return out;
}

// Largest |a - b| relative to the largest |b|: the decomposed ops sum in
// another order and round intermediates (scores, expert outputs) to f32, so
// elementwise relative error is meaningless near zero; 1e-5 of the logit
// scale is ~100 f32 ulps, far below any real bug.
double scaled_error(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_doubles(), y = b.to_doubles();
  double worst = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) return INFINITY;
    worst = std::max(worst, std::fabs(x[i] - y[i]));
    scale = std::max(scale, std::fabs(y[i]));
  }
  return worst / scale;
}

}  // namespace

TEST(ExecutorFallback, TestPluginLoads) {
  ASSERT_NE(registry().find("testdev"), nullptr) << registry().describe();
  EXPECT_TRUE(registry().find("testdev")->available());
}

TEST(ExecutorFallback, DecomposesAndFallsBackWithMatchingLogits) {
  moert::Graph g = moert::demo::build_tiny_moe({});
  Executor reference(g, {"reference"}, registry());
  Executor mixed(g, {"testdev"}, registry());

  // The residual adds ran on testdev; the rest fell back, each reported.
  std::vector<moert::PartitionInfo> parts = mixed.partitions();
  size_t on_testdev = 0;
  for (const auto& p : parts)
    if (p.device == "testdev:0") on_testdev += p.num_nodes;
  EXPECT_GE(on_testdev, 4u) << mixed.placement_report();
  EXPECT_GT(parts.size(), 4u) << "expected alternating partitions";
  const auto& fb = mixed.fallbacks();
  ASSERT_FALSE(fb.empty());
  for (const auto& f : fb) {
    EXPECT_NE(f.op, "add");
    EXPECT_NE(f.op, "attention") << "attention should have been decomposed";
    EXPECT_NE(f.op, "moe") << "moe should have been decomposed";
    EXPECT_THAT(f.reason, HasSubstr("only 'add' is supported"));
  }
  auto has_op = [&](const std::string& op) {
    return std::any_of(fb.begin(), fb.end(), [&](const moert::Fallback& f) { return f.op == op; });
  };
  EXPECT_TRUE(has_op("masked_softmax"));  // from attention's decomposition
  EXPECT_TRUE(has_op("routing_dense"));   // from moe's decomposition
  EXPECT_THAT(mixed.placement_report(), HasSubstr("fell back to the reference backend"));

  std::vector<Tensor> want = run_sequence(reference), got = run_sequence(mixed);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].shape(), want[i].shape());
    EXPECT_LE(scaled_error(got[i], want[i]), 1e-5) << "call " << i;
  }
}

TEST(ExecutorFallback, WithoutDecompositionTheFusedOpsFallBack) {
  moert::Graph g = moert::demo::build_tiny_moe({});
  ExecutorOptions o;
  o.device = "testdev";
  o.decompose = false;
  Executor exe(g, o, registry());
  bool attention = false;
  for (const auto& f : exe.fallbacks()) attention |= f.op == "attention";
  EXPECT_TRUE(attention);
  Executor reference(g, {"reference"}, registry());
  std::vector<Tensor> want = run_sequence(reference), got = run_sequence(exe);
  // Same kernels for everything but the adds: tight agreement.
  for (size_t i = 0; i < want.size(); ++i) EXPECT_LE(scaled_error(got[i], want[i]), 1e-6);
}

TEST(ExecutorFallback, StrictModeNamesEveryFallback) {
  moert::Graph g = moert::demo::build_tiny_moe({});
  ExecutorOptions o;
  o.device = "testdev";
  o.strict = true;
  try {
    Executor exe(g, o, registry());
    FAIL() << "strict placement should have failed";
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("strict placement on testdev:0"));
    EXPECT_THAT(e.what(), HasSubstr("would fall back to the reference backend"));
    EXPECT_THAT(e.what(), HasSubstr("lm_head (linear): only 'add' is supported"));
  }
}
