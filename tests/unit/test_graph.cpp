// Graph IR: construction with inference, validation errors that name the
// node, topological order, dump, symbolic shapes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "moert/error.h"
#include "moert/graph.h"
#include "moert/op_registry.h"
#include "support/op_runner.h"

using moert::Attributes;
using moert::Dim;
using moert::DType;
using moert::Graph;
using moert::Node;
using moert::Shape;
using moert::ValueId;
using moert::testing::error_of;
using ::testing::HasSubstr;

namespace {

moert::Tensor weight(std::vector<int64_t> shape) {
  std::mt19937 rng(0);
  return moert::testing::random_tensor(DType::f32, std::move(shape), rng);
}

}  // namespace

TEST(Shape, SymbolicDims) {
  Dim t = Dim::tokens();
  Dim pt = Dim::past_plus_tokens(1);
  EXPECT_EQ(t.str(), "T");
  EXPECT_EQ(pt.str(), "P+T+1");
  EXPECT_EQ(t.resolve(moert::SymbolValues::of(5, 7)), 5);
  EXPECT_EQ(pt.resolve(moert::SymbolValues::of(5, 7)), 13);
  Shape s{Dim::tokens(), 64};
  EXPECT_FALSE(s.is_static());
  EXPECT_EQ(s.str(), "[T, 64]");
  EXPECT_EQ(s.resolve(moert::SymbolValues::of(3)), (std::vector<int64_t>{3, 64}));
  EXPECT_THAT(error_of([&] { s.static_dims(); }), HasSubstr("[T, 64] is not static"));
}

TEST(Graph, InferenceThroughTheRegistry) {
  Graph g;
  ValueId x = g.add_input("x", DType::bf16, Shape{Dim::tokens(), 64});
  ValueId w = g.add_constant("w", weight({96, 64}));
  ValueId y = g.add("linear", "proj", {x, w});
  EXPECT_EQ(g.value(y).dtype, DType::bf16);
  EXPECT_EQ(g.value(y).shape, (Shape{Dim::tokens(), 96}));
  ValueId z = g.add("cast", "to_f32", {y}, {{"dtype", std::string("f32")}});
  EXPECT_EQ(g.value(z).dtype, DType::f32);
  g.mark_output(z);
  EXPECT_NO_THROW(g.validate());
}

TEST(Graph, ErrorsNameTheNode) {
  Graph g;
  ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 64});
  ValueId w = g.add_constant("w", weight({96, 65}));
  EXPECT_THAT(error_of([&] {
                g.add("linear", "bad_proj", {x, w});
              }),
              HasSubstr("node 'bad_proj' (linear)"));
  EXPECT_THAT(error_of([&] { g.add("no_such_op", "n1", {x}); }),
              HasSubstr("unknown op 'no_such_op'; known ops: "));
  EXPECT_THAT(error_of([&] {
                g.add("silu", "n2", {x}, {{"alpha", 1.0}});
              }),
              HasSubstr("node 'n2' (silu): unknown attribute 'alpha'"));
  EXPECT_THAT(error_of([&] {
                g.add("silu", "n3", {x, x});
              }),
              HasSubstr("node 'n3' (silu): takes 1 inputs, got 2"));
  EXPECT_THAT(error_of([&] { g.add("cast", "n4", {x}); }),
              HasSubstr("node 'n4' (cast): missing required attribute 'dtype'"));
  EXPECT_THAT(error_of([&] {
                g.add("cast", "n5", {x}, {{"dtype", int64_t{3}}});
              }),
              HasSubstr("attribute 'dtype' must be string, got int 3"));
  EXPECT_THAT(error_of([&] { g.add("silu", "n6", {ValueId{99}}); }),
              HasSubstr("node 'n6' (silu): input 0 refers to unknown value id 99"));
  EXPECT_EQ(g.num_nodes(), 0u) << "a failed add_node must leave the graph unchanged";
}

TEST(Graph, MutatedInputsMustBeState) {
  Graph g;
  ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 2, 8});
  ValueId not_state = g.add_input("cache", DType::f32, Shape{16, 2, 8});
  EXPECT_THAT(error_of([&] {
                g.add("cache_update", "upd", {not_state, x});
              }),
              HasSubstr("must be a state value"));
  ValueId state = g.add_state("kc", DType::f32, {16, 2, 8});
  ValueId y = g.add("cache_update", "upd", {state, x});
  EXPECT_EQ(g.value(y).shape, (Shape{Dim::past_plus_tokens(), 2, 8}));
}

TEST(Graph, ValidateCatchesDeclaredShapeMismatch) {
  Graph g;
  ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 8});
  g.add_node_unchecked(Node{"silu", "act", {}, {x}, {}}, {{DType::f32, Shape{Dim::tokens(), 9}}});
  EXPECT_THAT(
      error_of([&] { g.validate(); }),
      HasSubstr(
          "node 'act' (silu): output 'act' is declared f32[T, 9] but the op gives f32[T, 8]"));
}

TEST(Graph, ValidateCatchesCycles) {
  Graph g;
  ValueId x = g.add_input("x", DType::f32, Shape{4});
  // Two nodes that consume each other's outputs.
  ValueId a =
      g.add_node_unchecked(Node{"add", "a", {}, {x, ValueId{2}}, {}}, {{DType::f32, Shape{4}}})[0];
  g.add_node_unchecked(Node{"silu", "b", {}, {a}, {}}, {{DType::f32, Shape{4}}});
  EXPECT_THAT(error_of([&] { g.topological_order(); }),
              HasSubstr("graph has a cycle through node 'a' (add)"));
  EXPECT_THAT(error_of([&] { g.validate(); }), HasSubstr("cycle"));
}

TEST(Graph, ConstantDataMustMatch) {
  Graph g;
  ValueId w = g.add_constant("w", weight({4, 4}));
  g.mark_output(w);
  EXPECT_NO_THROW(g.validate());
  EXPECT_THAT(error_of([&] { g.add_constant("host_only", moert::Tensor()); }),
              HasSubstr("constant 'host_only' needs host data"));
}

TEST(Graph, TopologicalOrderRespectsDependencies) {
  Graph g;
  ValueId x = g.add_input("x", DType::f32, Shape{4});
  // Built out of order: node 0 consumes node 1's output.
  g.add_node_unchecked(Node{"silu", "second", {}, {ValueId{2}}, {}}, {{DType::f32, Shape{4}}});
  g.add_node_unchecked(Node{"sigmoid", "first", {}, {x}, {}}, {{DType::f32, Shape{4}}});
  std::vector<size_t> order = g.topological_order();
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(g.node(order[0]).name, "first");
  EXPECT_EQ(g.node(order[1]).name, "second");
  EXPECT_NO_THROW(g.validate());
}

TEST(Graph, DumpIsReadable) {
  Graph g;
  ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 64});
  ValueId w = g.add_constant("w", weight({32, 64}));
  ValueId y = g.add("linear", "proj", {x, w});
  g.mark_output(
      g.add("rms_norm", "norm", {y, g.add_constant("nw", weight({32}))}, {{"eps", 1e-5}}));
  std::string d = g.dump();
  EXPECT_THAT(d, HasSubstr("input %x : f32[T, 64]"));
  EXPECT_THAT(d, HasSubstr("constant %w : f32[32, 64]"));
  EXPECT_THAT(d, HasSubstr("%proj : f32[T, 32] = linear(%x, %w)"));
  EXPECT_THAT(d, HasSubstr("rms_norm(%proj, %nw) {eps=1e-05}"));
  EXPECT_THAT(d, HasSubstr("outputs: %norm"));
}

TEST(OpRegistry, EveryOpHasSchemaInferenceAndReferenceKernel) {
  const moert::OpRegistry& r = moert::OpRegistry::global();
  for (const char* op :
       {"embedding", "rms_norm", "linear",  "matmul",         "add",          "mul",
        "silu",      "swiglu",   "sigmoid", "softmax",        "rope",         "attention",
        "router",    "moe",      "argmax",  "cast",           "reshape",      "slice",
        "transpose", "repeat",   "concat",  "masked_softmax", "cache_update", "routing_dense"}) {
    const moert::OpDef* d = r.find(op);
    ASSERT_NE(d, nullptr) << op;
    EXPECT_TRUE(static_cast<bool>(d->infer)) << op;
    EXPECT_TRUE(static_cast<bool>(d->reference)) << op;
    EXPECT_FALSE(d->summary.empty()) << op;
  }
  EXPECT_TRUE(static_cast<bool>(r.get("attention").decompose));
  EXPECT_TRUE(static_cast<bool>(r.get("moe").decompose));
}
