// What crosses the plugin ABI: nodes carry their op's version, the graph the
// op-set version, and attributes arrive normalised (defaults filled in from
// ops/op_schema.h, integers given for reals widened, enum strings checked).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "abi_graph.h"
#include "moert/graph.h"
#include "moert/op_registry.h"
#include "op_schema.h"
#include "support/op_runner.h"

namespace moert {
namespace {

const moert_attr* find(const moert_node_desc& node, const char* name) {
  for (size_t i = 0; i < node.num_attrs; ++i)
    if (std::strcmp(node.attrs[i]->name, name) == 0) return node.attrs[i];
  return nullptr;
}

TEST(AbiGraph, CarriesVersionsAndDefaultedAttributes) {
  Graph g;
  const ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 8});
  const ValueId w = g.add_input("w", DType::f32, Shape{8});
  const ValueId pos = g.add_input("pos", DType::i32, Shape{Dim::tokens()});
  const ValueId h = g.add("rms_norm", "norm", {x, w});
  const ValueId heads =
      g.add("reshape", "heads", {h}, Attributes{{"shape", std::vector<int64_t>{0, 2, 4}}});
  // theta given as an integer: a real attribute, so it crosses as one.
  g.mark_output(g.add("rope", "rope", {heads, pos}, Attributes{{"theta", int64_t{10000}}}));
  const AbiGraph abi(g, {0, 1, 2});
  const moert_graph_desc& d = *abi.desc();
  EXPECT_EQ(d.opset_version, static_cast<uint32_t>(MOERT_OPSET_VERSION));
  ASSERT_EQ(d.num_nodes, 3u);
  for (size_t n = 0; n < d.num_nodes; ++n)
    EXPECT_EQ(d.nodes[n]->op_version, schema::find_op(d.nodes[n]->op)->version);

  const moert_attr* eps = find(*d.nodes[0], "eps");
  ASSERT_NE(eps, nullptr) << "rms_norm's default eps is filled in";
  EXPECT_EQ(eps->type, MOERT_ATTR_FLOAT);
  EXPECT_EQ(eps->f, 1e-6);

  const moert_node_desc& rope = *d.nodes[2];
  const moert_attr* theta = find(rope, "theta");
  ASSERT_NE(theta, nullptr);
  EXPECT_EQ(theta->type, MOERT_ATTR_FLOAT);
  EXPECT_EQ(theta->f, 10000.0);
  const moert_attr* pairing = find(rope, "pairing");
  ASSERT_NE(pairing, nullptr);
  EXPECT_STREQ(pairing->s, "half");
  const moert_attr* truncate = find(rope, "truncate");
  ASSERT_NE(truncate, nullptr);
  EXPECT_EQ(truncate->i, 1);
  // No default where absence means something (the head size, no override).
  EXPECT_EQ(find(rope, "rotary_dim"), nullptr);
  EXPECT_EQ(find(rope, "attention_factor"), nullptr);
}

TEST(AbiGraph, EveryBuiltinOpIsInTheSchemaAndAgreesWithIt) {
  const OpRegistry& r = OpRegistry::global();
  for (const std::string& name : r.names()) {
    const schema::Op* op = schema::find_op(name.c_str());
    ASSERT_NE(op, nullptr) << name << " has no entry in ops/op_schema.h";
    const OpDef& def = r.get(name);
    EXPECT_EQ(def.version, op->version) << name;
    EXPECT_EQ(def.attrs.size(), op->attrs.size()) << name;
  }
  for (const schema::Op& op : schema::ops()) EXPECT_NE(r.find(op.name), nullptr) << op.name;
}

TEST(AbiGraph, AnEnumStringOutsideItsChoicesIsRefusedNamingThem) {
  Node node{"router",
            "gate",
            Attributes{{"top_k", int64_t{2}}, {"scoring", std::string("cosine")}},
            {},
            {}};
  const std::string msg = testing::error_of([&] { OpRegistry::global().normalized(node); });
  EXPECT_NE(msg.find("node 'gate' (router): attribute 'scoring' must be one of \"softmax\", "
                     "\"sigmoid\", \"softmax_topk\", got \"cosine\""),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace moert
