// The op registry: every op's schema, shape/dtype inference, reference kernel
// and (optionally) decomposition into other ops.  The op implementations live
// in ops/, one file per family; docs/ops.md describes each op's semantics.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moert/attributes.h"
#include "moert/graph.h"
#include "moert/shape.h"

namespace moert {

struct InputSpec {
  std::string name;
  bool optional = false;
  bool mutated = false;  // the kernel writes this (state) input in place
  uint32_t since = 1;    // the op version that introduced it (optional inputs only)
};

// An attribute of an op's schema.  The schemas of the built-in ops come from
// ops/op_schema.h, which the in-tree plugins read too.
struct AttrSpec {
  std::string name;
  AttrType type = AttrType::integer;
  bool required = false;
  std::optional<AttrValue> default_value;  // filled in when absent (normalized())
  std::vector<std::string> choices;        // an enum string's values; empty: any
  uint32_t since = 1;                      // the op version that introduced it
};

// What inference sees of a node: its attributes and its inputs' info.
struct InferContext {
  const Node& node;
  std::vector<const ValueInfo*> inputs;  // nullptr for an absent optional input

  bool has(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
  const ValueInfo& in(size_t i) const;  // throws (naming the node) if absent
  const Attributes& attrs() const { return node.attrs; }
  // Throws moert::Error("node '<name>' (<op>): <message>").
  [[noreturn]] void fail(const std::string& message) const;
  void require(bool condition, const std::string& message) const {
    if (!condition) fail(message);
  }
};

// A host tensor as a kernel sees it: no ownership.
struct TensorView {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  void* data = nullptr;

  bool present() const { return data != nullptr || numel() == 0; }
  int64_t numel() const;
  int64_t dim(int64_t i) const;  // negative counts from the end
  double get(int64_t i) const { return load_element(dtype, data, static_cast<size_t>(i)); }
  void set(int64_t i, double v) const { store_element(dtype, data, static_cast<size_t>(i), v); }
  std::vector<double> to_doubles() const;  // every element, widened
};

struct KernelContext {
  const Node& node;
  std::vector<TensorView> inputs;  // absent optional inputs: data == nullptr, empty shape
  std::vector<TensorView> outputs;
  SymbolValues symbols;

  bool has(size_t i) const { return i < inputs.size() && inputs[i].data != nullptr; }
  const TensorView& in(size_t i) const { return inputs.at(i); }
  const TensorView& out(size_t i) const { return outputs.at(i); }
  const Attributes& attrs() const { return node.attrs; }
  [[noreturn]] void fail(const std::string& message) const;
};

struct OpDef {
  std::string name;
  uint32_t version = 1;  // of the op's semantics (ops/op_schema.h)
  std::string summary;   // one line, for listings
  std::vector<InputSpec> inputs;
  std::vector<std::string> outputs;
  std::vector<AttrSpec> attrs;  // unknown attributes are rejected
  std::function<std::vector<ValueInfo>(const InferContext&)> infer;
  // Computes outputs from inputs on the host, plainly, accumulating in f64.
  std::function<void(KernelContext&)> reference;
  // Optional: appends nodes to `g` computing `node`'s outputs from its inputs
  // (already ids of `g`) using simpler ops, and returns the new output ids;
  // or returns none, adding nothing, for a node it cannot decompose.
  std::function<std::vector<ValueId>(Graph& g, const Node& node)> decompose;

  bool input_mutated(size_t i) const { return i < inputs.size() && inputs[i].mutated; }
};

class OpRegistry {
 public:
  // The registry holding every op of ops/.
  static const OpRegistry& global();

  // Throws on a duplicate name.  An op listed in ops/op_schema.h takes its
  // attributes and version from there.
  void add(OpDef def);
  const OpDef* find(const std::string& name) const;
  // Throws moert::Error listing the known ops when `name` is unknown.
  const OpDef& get(const std::string& name) const;
  std::vector<std::string> names() const;

  // Checks input count and attributes against the schema, then runs the op's
  // inference.  Throws moert::Error naming the node.
  std::vector<ValueInfo> infer(const Node& node, const std::vector<const ValueInfo*>& inputs) const;

  // The version a node is sent at: the lowest that has every attribute the
  // node sets and every optional input it gives (1 when it uses nothing
  // introduced later), so a node using nothing new still runs on a plugin
  // built before the op's last bump.
  uint32_t node_version(const Node& node) const;

  // The node's attributes as they cross the plugin ABI: every optional
  // attribute of its node_version() with a default present, integers given for reals widened, enum
  // strings checked.  Throws moert::Error naming the node and attribute.
  Attributes normalized(const Node& node) const;

 private:
  std::map<std::string, OpDef> ops_;
};

// Registers every op of ops/ (defined there).
void register_builtin_ops(OpRegistry& registry);

}  // namespace moert
