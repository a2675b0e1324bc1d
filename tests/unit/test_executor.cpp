// The executor on the reference backend: results equal the op-by-op
// reference, memory is reused, state persists between runs, and bad calls
// fail with clear messages without touching state.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "moert/error.h"
#include "moert/executor.h"
#include "support/op_runner.h"

using moert::Attributes;
using moert::Dim;
using moert::DType;
using moert::Executor;
using moert::Graph;
using moert::Shape;
using moert::SymbolValues;
using moert::Tensor;
using moert::testing::error_of;
using moert::testing::max_rel_error;
using moert::testing::random_tensor;
using moert::testing::run_op;
using ::testing::HasSubstr;

namespace {

// x[T, 16] -> linear -> silu -> linear -> add(x) -> rms_norm : a block whose
// activations can share memory.
struct MlpGraph {
  Graph g;
  Tensor w1, w2, norm;
  MlpGraph(std::mt19937& rng, int layers) {
    w1 = random_tensor(DType::f32, {24, 16}, rng, 0.3);
    w2 = random_tensor(DType::f32, {16, 24}, rng, 0.3);
    norm = random_tensor(DType::f32, {16}, rng, 1.0);
    moert::ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 16});
    moert::ValueId cw1 = g.add_constant("w1", w1), cw2 = g.add_constant("w2", w2),
                   cn = g.add_constant("norm", norm);
    for (int l = 0; l < layers; ++l) {
      std::string p = "l" + std::to_string(l) + ".";
      moert::ValueId h = g.add("linear", p + "up", {x, cw1});
      h = g.add("silu", p + "act", {h});
      h = g.add("linear", p + "down", {h, cw2});
      h = g.add("add", p + "residual", {h, x});
      x = g.add("rms_norm", p + "norm", {h, cn}, Attributes{{"eps", 1e-5}});
    }
    g.mark_output(x);
  }
  // The same computation op by op.
  Tensor expected(const Tensor& x0, int layers) {
    Tensor x = x0;
    for (int l = 0; l < layers; ++l) {
      Tensor h = run_op("linear", {x, w1})[0];
      h = run_op("silu", {h})[0];
      h = run_op("linear", {h, w2})[0];
      h = run_op("add", {h, x})[0];
      x = run_op("rms_norm", {h, norm}, Attributes{{"eps", 1e-5}})[0];
    }
    return x;
  }
};

}  // namespace

TEST(Executor, ReferenceMatchesOpByOp) {
  std::mt19937 rng(1);
  MlpGraph m(rng, 3);
  Executor exe(m.g);
  EXPECT_TRUE(exe.fallbacks().empty());
  for (int64_t t : {5, 1, 7}) {
    Tensor x = random_tensor(DType::f32, {t, 16}, rng);
    std::vector<Tensor> out = exe.run({x}, SymbolValues::of(t));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].shape(), (std::vector<int64_t>{t, 16}));
    // Same kernels, same order: identical up to f32 rounding of the same math.
    EXPECT_LE(max_rel_error(out[0].to_doubles(), m.expected(x, 3).to_doubles()), 1e-6);
  }
}

TEST(Executor, PlannerReusesActivationMemory) {
  std::mt19937 rng(2);
  MlpGraph m(rng, 6);
  Executor exe(m.g);
  Tensor x = random_tensor(DType::f32, {32, 16}, rng);
  exe.run({x}, SymbolValues::of(32));
  moert::MemoryReport mem = exe.memory();
  ASSERT_EQ(mem.arena_bytes.count("reference:0"), 1u);
  EXPECT_GT(mem.arena_bytes["reference:0"], 0u);
  // 6 layers of 5 activations each; a chain needs only a few at once.
  EXPECT_LT(mem.arena_bytes["reference:0"] * 4, mem.naive_bytes);
}

TEST(Executor, InputErrorsNameTheInput) {
  std::mt19937 rng(3);
  MlpGraph m(rng, 1);
  Executor exe(m.g);
  EXPECT_THAT(error_of([&] { exe.run({}, SymbolValues::of(2)); }),
              HasSubstr("takes 1 inputs, got 0"));
  Tensor wrong = random_tensor(DType::f32, {3, 16}, rng);
  EXPECT_THAT(error_of([&] { exe.run({wrong}, SymbolValues::of(2)); }),
              HasSubstr("input 'x' must be f32[2, 16]"));
  Tensor bf = random_tensor(DType::bf16, {2, 16}, rng);
  EXPECT_THAT(error_of([&] { exe.run({bf}, SymbolValues::of(2)); }), HasSubstr("got bf16[2, 16]"));
}

TEST(Executor, UnknownDeviceListsWhatIsAvailable) {
  std::mt19937 rng(4);
  MlpGraph m(rng, 1);
  std::string msg = error_of([&] { Executor exe(m.g, {"no-such-backend"}); });
  EXPECT_THAT(msg, HasSubstr("no-such-backend"));
  EXPECT_THAT(msg, HasSubstr("reference"));
}

namespace {

// One attention layer with a KV cache of `capacity` positions.
struct AttentionGraph {
  Graph g;
  AttentionGraph(int64_t capacity) {
    moert::ValueId q = g.add_input("q", DType::f32, Shape{Dim::tokens(), 4, 8});
    moert::ValueId k = g.add_input("k", DType::f32, Shape{Dim::tokens(), 2, 8});
    moert::ValueId v = g.add_input("v", DType::f32, Shape{Dim::tokens(), 2, 8});
    moert::ValueId kc = g.add_state("k_cache", DType::f32, {capacity, 2, 8});
    moert::ValueId vc = g.add_state("v_cache", DType::f32, {capacity, 2, 8});
    g.mark_output(g.add("attention", "attn", {q, k, v, kc, vc}));
  }
};

std::vector<Tensor> rows(const std::vector<Tensor>& ts, int64_t begin, int64_t count) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) {
    Tensor c = Tensor::empty(t.dtype(), t.slice0(begin, count).shape());
    std::memcpy(c.data(), t.slice0(begin, count).data(), c.nbytes());
    out.push_back(c);
  }
  return out;
}

}  // namespace

TEST(Executor, StatePersistsAcrossRuns) {
  std::mt19937 rng(5);
  AttentionGraph a(16);
  std::vector<Tensor> qkv = {random_tensor(DType::f32, {6, 4, 8}, rng),
                             random_tensor(DType::f32, {6, 2, 8}, rng),
                             random_tensor(DType::f32, {6, 2, 8}, rng)};
  Executor whole(a.g);
  Tensor all = whole.run(qkv, SymbolValues::of(6, 0))[0];

  Executor steps(a.g);
  EXPECT_EQ(steps.state_capacity(), 16);
  Tensor prefill = steps.run(rows(qkv, 0, 4), SymbolValues::of(4, 0))[0];
  Tensor d1 = steps.run(rows(qkv, 4, 1), SymbolValues::of(1, 4))[0];
  Tensor d2 = steps.run(rows(qkv, 5, 1), SymbolValues::of(1, 5))[0];
  EXPECT_LE(max_rel_error(prefill.to_doubles(), all.slice0(0, 4).to_doubles()), 1e-6);
  EXPECT_LE(max_rel_error(d1.to_doubles(), all.slice0(4, 1).to_doubles()), 1e-6);
  EXPECT_LE(max_rel_error(d2.to_doubles(), all.slice0(5, 1).to_doubles()), 1e-6);

  steps.reset_state();
  for (double v : steps.read_state("k_cache").to_doubles()) ASSERT_EQ(v, 0.0);
}

TEST(Executor, ContextOverflowLeavesStateUntouched) {
  std::mt19937 rng(6);
  AttentionGraph a(8);
  Executor exe(a.g);
  std::vector<Tensor> qkv = {random_tensor(DType::f32, {6, 4, 8}, rng),
                             random_tensor(DType::f32, {6, 2, 8}, rng),
                             random_tensor(DType::f32, {6, 2, 8}, rng)};
  exe.run(qkv, SymbolValues::of(6, 0));
  std::vector<double> before = exe.read_state("k_cache").to_doubles();
  std::vector<Tensor> more = {random_tensor(DType::f32, {3, 4, 8}, rng),
                              random_tensor(DType::f32, {3, 2, 8}, rng),
                              random_tensor(DType::f32, {3, 2, 8}, rng)};
  EXPECT_THAT(
      error_of([&] { exe.run(more, SymbolValues::of(3, 6)); }),
      HasSubstr("context overflow: 6 cached + 3 new tokens exceed the KV cache capacity of 8"));
  EXPECT_EQ(exe.read_state("k_cache").to_doubles(), before);
}

TEST(Executor, InvalidGraphIsRejected) {
  Graph g;
  moert::ValueId x = g.add_input("x", DType::f32, Shape{4});
  moert::Node bad{"silu", "broken", {}, {x}, {}};
  g.add_node_unchecked(bad, {{DType::f32, Shape{5}}});  // silu cannot change the shape
  g.mark_output(static_cast<moert::ValueId>(g.num_values() - 1));
  EXPECT_THAT(error_of([&] { Executor exe(g); }), HasSubstr("node 'broken' (silu)"));
}

TEST(Executor, ProfileTimesEveryNodeOfTheLastRun) {
  std::mt19937 rng(7);
  MlpGraph m(rng, 2);
  Executor exe(m.g);
  Tensor x = random_tensor(DType::f32, {9, 16}, rng);
  exe.run({x}, SymbolValues::of(9));
  EXPECT_TRUE(exe.profile().empty());  // off by default
  exe.set_profiling(true);
  exe.run({x}, SymbolValues::of(9));
  const std::vector<moert::NodeTiming>& p = exe.profile();
  ASSERT_EQ(p.size(), exe.placed_graph().num_nodes());
  EXPECT_EQ(p[0].node, "l0.up");
  EXPECT_EQ(p[0].op, "linear");
  EXPECT_EQ(p[0].device, "reference:0");
  for (const moert::NodeTiming& t : p) EXPECT_GE(t.seconds, 0.0) << t.node;
  // The next run replaces the table rather than appending to it.
  exe.run({x}, SymbolValues::of(9));
  EXPECT_EQ(exe.profile().size(), p.size());
}

TEST(Executor, PoisonedArenaGivesTheSameResults) {
  std::mt19937 rng(8);
  MlpGraph m(rng, 2);
  moert::ExecutorOptions o;
  o.poison = true;
  Executor poisoned(m.g, o);
  Executor plain(m.g);
  Tensor x = random_tensor(DType::f32, {4, 16}, rng);
  const Tensor a = poisoned.run({x}, SymbolValues::of(4))[0];
  const Tensor b = plain.run({x}, SymbolValues::of(4))[0];
  EXPECT_EQ(max_rel_error(a.to_doubles(), b.to_doubles()), 0.0);
}
