// moe and routing_dense: checked against a float64 MoE block written here
// (per-token loops, its own fp8 block dequantization), and the moe
// decomposition run as a graph against the fused op.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "moert/graph.h"
#include "support/graph_runner.h"
#include "support/op_runner.h"

namespace moert {
namespace {

using testing::max_abs_error;
using testing::max_rel_error;
using testing::random_tensor;
using testing::run_graph;
using testing::run_op;

// A weight matrix (stacked [E, rows, cols] or plain [rows, cols]) and, for
// f8_e4m3, its f32 block scale.
struct Weight {
  Tensor w, scale;
  int64_t rows = 0, cols = 0;
  std::vector<int64_t> block{128, 128};

  // Element [r, c] of matrix e, dequantized.
  double at(int64_t e, int64_t r, int64_t c) const {
    double v = w.at(static_cast<size_t>((e * rows + r) * cols + c));
    if (scale.defined()) {
      const int64_t sr = (rows + block[0] - 1) / block[0], sc = (cols + block[1] - 1) / block[1];
      v *= scale.at(static_cast<size_t>(e * sr * sc + (r / block[0]) * sc + c / block[1]));
    }
    return v;
  }
};

Weight make_weight(DType dtype, int64_t experts, int64_t rows, int64_t cols,
                   std::vector<int64_t> block, std::mt19937& rng) {
  Weight w;
  w.rows = rows;
  w.cols = cols;
  w.block = block;
  std::vector<int64_t> shape{rows, cols};
  if (experts > 0) shape.insert(shape.begin(), experts);
  if (dtype == DType::f8_e4m3) {
    // e4m3 values spread over several binades; the scales bring the product
    // back to ~1/sqrt(cols).
    w.w = random_tensor(dtype, shape, rng, 16.0);
    std::vector<int64_t> sshape{(rows + block[0] - 1) / block[0], (cols + block[1] - 1) / block[1]};
    if (experts > 0) sshape.insert(sshape.begin(), experts);
    std::uniform_real_distribution<double> u(0.5, 1.5);
    std::vector<double> s(static_cast<size_t>(num_elements(sshape)));
    for (double& v : s) v = u(rng) / (16.0 * std::sqrt(static_cast<double>(cols)));
    w.scale = Tensor::from_doubles(DType::f32, sshape, s);
  } else {
    w.w = random_tensor(dtype, shape, rng, 1.0 / std::sqrt(static_cast<double>(cols)));
  }
  return w;
}

struct Block {
  Weight gate, up, down;
  int64_t inter = 0;
};

Block make_block(DType dtype, int64_t experts, int64_t hidden, int64_t inter,
                 std::vector<int64_t> block, std::mt19937& rng) {
  return {make_weight(dtype, experts, inter, hidden, block, rng),
          make_weight(dtype, experts, inter, hidden, block, rng),
          make_weight(dtype, experts, hidden, inter, block, rng), inter};
}

// down(silu(gate x) * up x) for matrix e of the block.
std::vector<double> reference_mlp(const Block& b, int64_t e, const std::vector<double>& x) {
  const int64_t hidden = static_cast<int64_t>(x.size());
  std::vector<double> act(static_cast<size_t>(b.inter));
  for (int64_t i = 0; i < b.inter; ++i) {
    double g = 0, u = 0;
    for (int64_t c = 0; c < hidden; ++c) {
      g += b.gate.at(e, i, c) * x[static_cast<size_t>(c)];
      u += b.up.at(e, i, c) * x[static_cast<size_t>(c)];
    }
    act[static_cast<size_t>(i)] = g / (1 + std::exp(-g)) * u;
  }
  std::vector<double> y(static_cast<size_t>(hidden), 0.0);
  for (int64_t c = 0; c < hidden; ++c)
    for (int64_t i = 0; i < b.inter; ++i)
      y[static_cast<size_t>(c)] += b.down.at(e, c, i) * act[static_cast<size_t>(i)];
  return y;
}

struct MoeCase {
  Tensor x, ids, weights;
  Block experts;
  bool shared = false;
  Block shared_block;
  Tensor shared_gate;  // [1, H] or undefined
  std::vector<int64_t> block{128, 128};

  std::vector<Tensor> inputs() const {
    std::vector<Tensor> in{x,
                           ids,
                           weights,
                           experts.gate.w,
                           experts.up.w,
                           experts.down.w,
                           experts.gate.scale,
                           experts.up.scale,
                           experts.down.scale};
    if (shared || shared_gate.defined()) {
      for (const Weight* w : {&shared_block.gate, &shared_block.up, &shared_block.down})
        in.push_back(w->w);
      for (const Weight* w : {&shared_block.gate, &shared_block.up, &shared_block.down})
        in.push_back(w->scale);
      in.push_back(shared_gate);
    }
    while (!in.back().defined()) in.pop_back();
    return in;
  }

  Attributes attrs() const { return {{"block_size", block}}; }

  std::vector<double> reference() const {
    const int64_t tokens = x.dim(0), hidden = x.dim(1), k = ids.dim(1);
    std::vector<double> out;
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<double> xt(static_cast<size_t>(hidden));
      for (int64_t c = 0; c < hidden; ++c)
        xt[static_cast<size_t>(c)] = x.at(static_cast<size_t>(t * hidden + c));
      std::vector<double> acc(static_cast<size_t>(hidden), 0.0);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = static_cast<int64_t>(ids.at(static_cast<size_t>(t * k + j)));
        const double w = weights.at(static_cast<size_t>(t * k + j));
        std::vector<double> y = reference_mlp(experts, e, xt);
        for (size_t c = 0; c < acc.size(); ++c) acc[c] += w * y[c];
      }
      if (shared) {
        double g = 1;
        if (shared_gate.defined()) {
          double z = 0;
          for (int64_t c = 0; c < hidden; ++c)
            z += shared_gate.at(static_cast<size_t>(c)) * xt[static_cast<size_t>(c)];
          g = 1 / (1 + std::exp(-z));
        }
        std::vector<double> y = reference_mlp(shared_block, 0, xt);
        for (size_t c = 0; c < acc.size(); ++c) acc[c] += g * y[c];
      }
      out.insert(out.end(), acc.begin(), acc.end());
    }
    return out;
  }
};

// Distinct experts per token, positive weights.
void make_routing(MoeCase& m, DType id_dtype, int64_t tokens, int64_t k, int64_t experts,
                  std::mt19937& rng) {
  std::vector<double> ids, w;
  std::uniform_real_distribution<double> u(0.1, 1.0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int64_t> all(static_cast<size_t>(experts));
    for (int64_t e = 0; e < experts; ++e) all[static_cast<size_t>(e)] = e;
    std::shuffle(all.begin(), all.end(), rng);
    for (int64_t j = 0; j < k; ++j) {
      ids.push_back(static_cast<double>(all[static_cast<size_t>(j)]));
      w.push_back(u(rng));
    }
  }
  m.ids = Tensor::from_doubles(id_dtype, {tokens, k}, ids);
  m.weights = Tensor::from_doubles(DType::f32, {tokens, k}, w);
}

struct Config {
  DType act = DType::f32, weight = DType::f32;
  int64_t tokens = 3, hidden = 7, inter = 5, experts = 4, k = 2;
  std::vector<int64_t> block{128, 128};
  int64_t shared_inter = 0;  // 0: no shared expert
  bool shared_gated = false;
  DType id_dtype = DType::i32;
};

MoeCase make_case(const Config& c, uint32_t seed) {
  std::mt19937 rng(seed);
  MoeCase m;
  m.block = c.block;
  m.x = random_tensor(c.act, {c.tokens, c.hidden}, rng);
  make_routing(m, c.id_dtype, c.tokens, c.k, c.experts, rng);
  m.experts = make_block(c.weight, c.experts, c.hidden, c.inter, c.block, rng);
  if (c.shared_inter > 0) {
    m.shared = true;
    m.shared_block = make_block(c.weight, 0, c.hidden, c.shared_inter, c.block, rng);
    if (c.shared_gated) m.shared_gate = random_tensor(c.act, {1, c.hidden}, rng, 0.5);
  }
  return m;
}

// f32 output of a kernel computing in double like the reference: one f32
// rounding (relative 6e-8).  Relative to the output's scale, since a sum of
// expert outputs can land near zero.
double scaled_error(const std::vector<double>& got, const std::vector<double>& want) {
  double scale = 0;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  return max_abs_error(got, want) / scale;
}

void check(const Config& c, uint32_t seed, double tol) {
  MoeCase m = make_case(c, seed);
  Tensor out = run_op("moe", m.inputs(), m.attrs())[0];
  EXPECT_EQ(out.dtype(), c.act);
  EXPECT_EQ(out.shape(), m.x.shape());
  EXPECT_LT(scaled_error(out.to_doubles(), m.reference()), tol);
}

TEST(Moe, F32TopTwoOfFour) { check({}, 1, 1e-6); }

TEST(Moe, SingleTokenTopOneI64Ids) {
  Config c;
  c.tokens = 1;
  c.k = 1;
  c.id_dtype = DType::i64;
  check(c, 2, 1e-6);
}

TEST(Moe, Bf16) {
  Config c;
  c.act = c.weight = DType::bf16;
  c.hidden = 33;
  c.inter = 17;
  // One bf16 rounding of the exact result: <= 2^-9 relative.
  check(c, 3, 1e-2);
}

TEST(Moe, Fp8SmallBlocks) {
  Config c;
  c.weight = DType::f8_e4m3;
  c.block = {4, 4};
  c.hidden = 9;
  c.inter = 11;
  c.tokens = 4;
  c.experts = 3;
  check(c, 4, 1e-6);
}

TEST(Moe, Fp8DefaultBlocksEdgeBlocks) {
  Config c;
  c.weight = DType::f8_e4m3;
  c.hidden = 131;  // two column blocks of gate/up, two row blocks of down
  c.inter = 20;
  c.tokens = 2;
  check(c, 5, 1e-6);
}

TEST(Moe, GatedSharedExpertQwen2) {
  Config c;
  c.shared_inter = 6;
  c.shared_gated = true;
  check(c, 6, 1e-6);
}

TEST(Moe, Fp8SharedExpertDeepSeek) {
  Config c;
  c.weight = DType::f8_e4m3;
  c.block = {4, 8};
  c.hidden = 13;
  c.inter = 6;
  c.shared_inter = 10;
  c.experts = 5;
  c.k = 3;
  check(c, 7, 1e-6);
}

TEST(Moe, RepeatedExpertAddsTwice) {
  MoeCase m = make_case({}, 8);
  m.ids = Tensor::from_doubles(DType::i32, {3, 2}, {1, 1, 0, 3, 2, 2});
  Tensor out = run_op("moe", m.inputs())[0];
  EXPECT_LT(scaled_error(out.to_doubles(), m.reference()), 1e-6);
}

void expect_error(const std::string& op, const std::vector<Tensor>& inputs, const Attributes& attrs,
                  const std::string& fragment) {
  try {
    run_op(op, inputs, attrs, SymbolValues::of(0, 0), "layer2.moe");
    ADD_FAILURE() << "no error; expected one mentioning " << fragment;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer2.moe"), std::string::npos) << msg;
  }
}

TEST(Moe, ExpertIdOutOfRange) {
  MoeCase m = make_case({}, 9);
  m.ids = Tensor::from_doubles(DType::i32, {3, 2}, {0, 1, 4, 2, 3, 0});
  expect_error("moe", m.inputs(), {}, "'expert_ids'[1, 0] = 4 is out of range [0, 4)");
  m.ids = Tensor::from_doubles(DType::i64, {3, 2}, {0, 1, 2, 3, 3, -1});
  expect_error("moe", m.inputs(), {}, "'expert_ids'[2, 1] = -1 is out of range [0, 4)");
  expect_error("routing_dense", {m.ids, m.weights}, {{"num_experts", int64_t{4}}},
               "'expert_ids'[2, 1] = -1");
}

TEST(Moe, InferenceErrors) {
  std::mt19937 rng(10);
  Config fp8;
  fp8.weight = DType::f8_e4m3;
  fp8.block = {4, 4};
  fp8.shared_inter = 3;
  fp8.shared_gated = true;
  const MoeCase m = make_case(fp8, 11);
  const std::vector<Tensor> good = m.inputs();
  ASSERT_EQ(good.size(), 16u);
  const Attributes attrs = m.attrs();
  EXPECT_NO_THROW(run_op("moe", good, attrs));
  auto replace = [&](size_t i, Tensor t) {
    std::vector<Tensor> in = good;
    in[i] = std::move(t);
    return in;
  };
  auto f32 = [&](std::vector<int64_t> shape) { return random_tensor(DType::f32, shape, rng); };
  // Scale pairing and shapes ([3, 5, 7] experts of [E=4, I=5, H=7], blocks of 4).
  expect_error("moe", replace(6, Tensor()), attrs, "requires input 'gate_scale' (f32 [4, 2, 2])");
  expect_error("moe", replace(8, f32({4, 2, 3})), attrs, "input 'down_scale' must be [4, 2, 2]");
  expect_error("moe", replace(7, random_tensor(DType::bf16, {4, 2, 2}, rng)), attrs,
               "input 'up_scale' must be f32");
  expect_error("moe", good, {{"block_size", std::vector<int64_t>{4, 8}}}, "'gate_scale' must be");
  expect_error("moe", good, {{"block_size", std::vector<int64_t>{4}}}, "'block_size'");
  expect_error("moe", good, {{"block_size", std::vector<int64_t>{0, 4}}}, "'block_size'");
  expect_error("moe", replace(3, f32({4, 5, 7})), attrs,
               "input 'gate_scale' is given but input 'gate' is f32");
  expect_error("moe", replace(12, Tensor()), attrs, "requires input 'shared_gate_scale'");
  expect_error("moe", replace(11, f32({7, 3})), attrs, "input 'shared_down_scale' is given");
  // Shapes.
  expect_error("moe", replace(7, Tensor()), attrs, "requires input 'up_scale'");
  expect_error("moe", replace(4, random_tensor(DType::f8_e4m3, {4, 5, 8}, rng)), attrs,
               "input 'up' must be [4, 5, 7]");
  expect_error("moe", replace(5, random_tensor(DType::f8_e4m3, {4, 5, 7}, rng)), attrs,
               "input 'down' must be [4, 7, 5]");
  expect_error("moe", replace(3, random_tensor(DType::f8_e4m3, {4, 5}, rng)), attrs, "'gate'");
  expect_error("moe", replace(3, random_tensor(DType::i8, {4, 5, 7}, rng)), attrs,
               "input 'gate' must be f32, bf16, f16 or f8_e4m3");
  expect_error("moe", replace(0, random_tensor(DType::f8_e4m3, {3, 7}, rng)), attrs,
               "input 'x' must be f32, bf16 or f16");
  expect_error("moe", replace(0, f32({3, 7, 1})), attrs, "input 'x'");
  expect_error("moe", replace(1, f32({3, 2})), attrs, "'expert_ids' must be i32 or i64");
  expect_error("moe", replace(2, f32({3, 3})), attrs, "'expert_weights'");
  std::vector<Tensor> short_routing =
      replace(1, Tensor::from_doubles(DType::i32, {2, 2}, {0, 1, 2, 3}));
  short_routing[2] = f32({2, 2});
  expect_error("moe", short_routing, attrs, "one row per token");
  expect_error("moe", replace(15, f32({2, 7})), attrs, "'shared_expert_gate' must be [1, H]");
  expect_error("moe", replace(15, random_tensor(DType::f8_e4m3, {1, 7}, rng)), attrs,
               "'shared_expert_gate' must be f32, bf16 or f16");
  // Shared experts are all or nothing; their extras need them.
  std::vector<Tensor> partial = good;
  partial[10] = Tensor();
  partial[13] = Tensor();
  expect_error("moe", partial, attrs, "all or none");
  std::vector<Tensor> routed_only(good.begin(), good.begin() + 9);
  EXPECT_NO_THROW(run_op("moe", routed_only, attrs));
  std::vector<Tensor> gate_only = routed_only;
  gate_only.resize(16);
  gate_only[15] = good[15];
  expect_error("moe", gate_only, attrs, "'shared_expert_gate' is given without the shared expert");
  // Expert weights need static shapes.
  Graph g;
  ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 7});
  ValueId ids = g.add_input("ids", DType::i32, Shape{Dim::tokens(), 2});
  ValueId w = g.add_input("w", DType::f32, Shape{Dim::tokens(), 2});
  ValueId gate = g.add_input("gate", DType::f32, Shape{Dim::tokens(), 5, 7});
  ValueId up = g.add_input("up", DType::f32, Shape{4, 5, 7});
  ValueId down = g.add_input("down", DType::f32, Shape{4, 7, 5});
  EXPECT_THROW(g.add("moe", "moe", {x, ids, w, gate, up, down}), Error);
  ValueId gate_ok = g.add_input("gate_ok", DType::f32, Shape{4, 5, 7});
  ValueId out = g.add("moe", "moe", {x, ids, w, gate_ok, up, down});
  EXPECT_EQ(g.value(out).shape, (Shape{Dim::tokens(), 7}));
}

TEST(RoutingDense, SumsWeightsPerExpert) {
  Tensor ids = Tensor::from_doubles(DType::i64, {3, 2}, {2, 0, 1, 1, 3, 2});
  Tensor w = Tensor::from_doubles(DType::bf16, {3, 2}, {0.5, 0.25, 0.75, 2.0, 1.5, 0.125});
  Tensor dense = run_op("routing_dense", {ids, w}, {{"num_experts", int64_t{5}}})[0];
  EXPECT_EQ(dense.dtype(), DType::f32);
  EXPECT_EQ(dense.to_doubles(), (std::vector<double>{0.25, 0, 0.5, 0, 0,  //
                                                     0, 2.75, 0, 0, 0,    //
                                                     0, 0, 0.125, 1.5, 0}));
  expect_error("routing_dense", {ids, w}, {}, "missing required attribute 'num_experts'");
  expect_error("routing_dense", {ids, w}, {{"num_experts", int64_t{0}}}, "'num_experts'");
  expect_error("routing_dense", {ids, Tensor::from_doubles(DType::f32, {3, 1}, {1, 2, 3})},
               {{"num_experts", int64_t{4}}}, "'expert_weights'");
}

// The decomposition, run as a graph with symbolic T, matches the fused op.
void check_decomposition(const Config& c, uint32_t seed) {
  const MoeCase m = make_case(c, seed);
  const std::vector<Tensor> tensors = m.inputs();
  auto build = [&](Graph& g) {
    std::vector<ValueId> ids;
    ids.push_back(g.add_input("x", m.x.dtype(), Shape{Dim::tokens(), c.hidden}));
    ids.push_back(g.add_input("ids", m.ids.dtype(), Shape{Dim::tokens(), c.k}));
    ids.push_back(g.add_input("w", m.weights.dtype(), Shape{Dim::tokens(), c.k}));
    for (size_t i = 3; i < tensors.size(); ++i)
      ids.push_back(tensors[i].defined() ? g.add_constant("c" + std::to_string(i), tensors[i])
                                         : kNoValue);
    return ids;
  };
  Graph fused, split;
  const std::vector<ValueId> inputs = build(fused);
  build(split);
  fused.mark_output(fused.add("moe", "layer4.moe", inputs, m.attrs()));
  for (ValueId id : OpRegistry::global().get("moe").decompose(split, fused.node(0)))
    split.mark_output(id);
  ASSERT_NO_THROW(split.validate());
  for (const Node& n : split.nodes()) EXPECT_NE(n.op, "moe");
  const std::map<ValueId, Tensor> feed{
      {inputs[0], m.x}, {inputs[1], m.ids}, {inputs[2], m.weights}};
  const SymbolValues sym = SymbolValues::of(c.tokens, 0);
  Tensor a = run_graph(fused, feed, {}, sym)[0];
  Tensor b = run_graph(split, feed, {}, sym)[0];
  ASSERT_EQ(b.shape(), a.shape());
  // The decomposition rounds every intermediate to f32; 1e-5 of the output
  // scale bounds that.
  EXPECT_LT(scaled_error(b.to_doubles(), a.to_doubles()), 1e-5);
  // And the fused op in the graph agrees with the float64 reference.
  EXPECT_LT(scaled_error(a.to_doubles(), m.reference()), 1e-6);
}

TEST(MoeDecompose, F32GatedSharedExpert) {
  Config c;
  c.shared_inter = 4;
  c.shared_gated = true;
  check_decomposition(c, 12);
}

TEST(MoeDecompose, Fp8WithFp8SharedExpert) {
  Config c;
  c.weight = DType::f8_e4m3;
  c.block = {4, 4};
  c.hidden = 9;
  c.inter = 6;
  c.experts = 3;
  c.k = 2;
  c.tokens = 5;
  c.shared_inter = 5;
  check_decomposition(c, 13);
}

TEST(MoeDecompose, SingleExpertNoShared) {
  Config c;
  c.experts = 1;
  c.k = 1;
  c.tokens = 1;
  check_decomposition(c, 14);
}

}  // namespace
}  // namespace moert
