// The attribute schema of every op: its semantics version and, per
// attribute, type, whether it is required, its default and the values an enum
// string may take.  One table, read by both sides of the plugin ABI:
//  - the runtime (ops/*.cpp build their OpDef::attrs from it; abi_graph.cpp
//    fills defaults in and checks enum strings before a node crosses the ABI);
//  - the in-tree plugins (backends/common/kit), which refuse a node whose op
//    version is newer than this table's, or which carries an attribute the
//    table does not list: a plugin built before an op gained an attribute
//    would otherwise compute something else without a word.
// Header-only, standard library only, so a plugin stays self-contained.
//
// Defaults are written as text in the attribute's own syntax ("1e-6",
// "128,128", "softmax").  An attribute whose default depends on shapes
// (attention's scale, rope's rotary_dim) or whose absence means something
// (linear's dtype: "as x") has none here; the op's docs say what absence means.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

namespace moert::schema {

enum class AttrKind { integer, real, string, integers, reals };

struct Attr {
  const char* name;
  AttrKind kind;
  bool required = false;
  const char* default_value = nullptr;  // text, or nullptr: none
  const char* choices = nullptr;        // enum strings "a|b|c", or nullptr: any
  // The op version that introduced the attribute.  A node is sent at the
  // lowest version that has every attribute it sets, with the defaults of
  // that version's attributes filled in: a node that does not use what a
  // newer version added still runs on a plugin built before it.
  uint32_t since = 1;
};

struct Op {
  const char* name;
  uint32_t version;  // of the op's semantics; see MOERT_OPSET_VERSION
  std::initializer_list<Attr> attrs;
};

// Every op, in docs/ops.md's order.  Adding an attribute to an op, or
// changing what it computes, bumps its version (and MOERT_OPSET_VERSION when
// it becomes the largest).
inline const std::initializer_list<Op>& ops() {
  using K = AttrKind;
  // linear's and moe's packed weight formats (ops/weight_format.h).
  static constexpr const char* kQuantFormats = "none|int8|int4|mxfp4";
  static const std::initializer_list<Op> table = {
      {"add", 1, {}},
      {"mul", 1, {}},
      {"sigmoid", 1, {}},
      {"silu", 1, {}},
      {"swiglu",
       2,
       {{"alpha", K::real, false, "1", nullptr, 2},
        {"limit", K::real, false, "0", nullptr, 2},
        {"up_offset", K::real, false, "0", nullptr, 2}}},
      {"softmax", 1, {}},
      {"argmax", 1, {}},
      {"cast", 1, {{"dtype", K::string, true, nullptr, "f32|f16|bf16|f8_e4m3|i8|u8|i32|i64|bool"}}},
      {"embedding", 1, {{"dtype", K::string, false, nullptr, "f32|f16|bf16"}}},
      {"rms_norm", 1, {{"eps", K::real, false, "1e-6"}}},
      {"linear",
       2,
       {{"block_size", K::integers, false, "128,128"},
        {"dtype", K::string, false, nullptr, "f32|f16|bf16"},
        {"quant", K::string, false, "none", kQuantFormats, 2},
        {"products", K::string, false, "exact", "exact|bf16|int8", 2}}},
      {"matmul", 1, {{"transpose_b", K::integer, false, "0"}}},
      {"reshape", 1, {{"shape", K::integers, true}}},
      {"slice",
       1,
       {{"axis", K::integer, true}, {"start", K::integer, true}, {"length", K::integer, true}}},
      {"transpose", 1, {{"perm", K::integers, true}}},
      {"repeat", 1, {{"axis", K::integer, true}, {"times", K::integer, true}}},
      {"concat", 1, {{"axis", K::integer, true}}},
      {"rope",
       1,
       {{"theta", K::real, true},
        {"rotary_dim", K::integer},
        {"pairing", K::string, false, "half", "half|interleaved"},
        {"scaling", K::string, false, "none", "none|linear|yarn"},
        {"factor", K::real},
        {"original_max_position_embeddings", K::integer},
        {"beta_fast", K::real, false, "32"},
        {"beta_slow", K::real, false, "1"},
        {"mscale", K::real, false, "1"},
        {"mscale_all_dim", K::real, false, "0"},
        {"truncate", K::integer, false, "1"},
        {"attention_factor", K::real}}},
      {"attention",
       3,
       {{"scale", K::real},
        {"causal", K::integer, false, "1"},
        {"window", K::integer, false, "0"},
        {"value_dim", K::integer, false, "0", nullptr, 2},
        {"block_size", K::integer, false, "0", nullptr, 3}}},
      {"masked_softmax",
       1,
       {{"scale", K::real},
        {"causal", K::integer, false, "1"},
        {"window", K::integer, false, "0"}}},
      {"cache_update", 1, {}},
      {"router",
       1,
       {{"top_k", K::integer, true},
        {"scoring", K::string, false, "softmax", "softmax|sigmoid|softmax_topk"},
        {"topk_method", K::string, false, "greedy", "greedy|group_limited_greedy|noaux_tc"},
        {"n_group", K::integer, false, "1"},
        {"topk_group", K::integer, false, "1"},
        {"normalize", K::integer, false, "0"},
        {"normalize_eps", K::real, false, "0"},
        {"scaling_factor", K::real, false, "1"}}},
      {"routing_dense", 1, {{"num_experts", K::integer, true}}},
      {"moe",
       3,
       {{"block_size", K::integers, false, "128,128"},
        {"quant", K::string, false, "none", kQuantFormats, 2},
        {"shared_quant", K::string, false, "none", kQuantFormats, 2},
        {"products", K::string, false, "exact", "exact|bf16|int8", 2},
        {"swiglu_alpha", K::real, false, "1", nullptr, 3},
        {"swiglu_limit", K::real, false, "0", nullptr, 3},
        {"swiglu_up_offset", K::real, false, "0", nullptr, 3}}},
  };
  return table;
}

// The op named `name`, or nullptr.
inline const Op* find_op(const char* name) {
  for (const Op& op : ops())
    if (std::strcmp(op.name, name) == 0) return &op;
  return nullptr;
}

// Attribute `name` of `op`, or nullptr when the op has no such attribute.
inline const Attr* find_attr(const Op& op, const char* name) {
  for (const Attr& a : op.attrs)
    if (std::strcmp(a.name, name) == 0) return &a;
  return nullptr;
}

// Whether `value` is one of `attr`'s enum strings (always, when it has none).
inline bool is_choice(const Attr& attr, const std::string& value) {
  if (!attr.choices) return true;
  const std::string all = std::string("|") + attr.choices + "|";
  return value.find('|') == std::string::npos && all.find("|" + value + "|") != std::string::npos;
}

// "\"a\", \"b\" or \"c\"", for messages.
inline std::string choices_text(const Attr& attr) {
  std::string out, all = attr.choices ? attr.choices : "";
  size_t start = 0;
  while (start <= all.size()) {
    size_t bar = all.find('|', start);
    if (bar == std::string::npos) bar = all.size();
    const std::string item = "\"" + all.substr(start, bar - start) + "\"";
    const bool last = bar == all.size();
    out += out.empty() ? item : (last ? " or " : ", ") + item;
    start = bar + 1;
  }
  return out;
}

}  // namespace moert::schema
