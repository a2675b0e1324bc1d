// The backend-neutral operator graph.
//
// Values are SSA: each is defined once, by the graph (input, constant, state)
// or by exactly one node.  A node names an op of the registry (ops/), carries
// attributes and refers to values by id.  Output dtypes and shapes are inferred
// through the registry when a node is added, so a graph under construction is
// always well-typed; validate() re-checks a finished graph from scratch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moert/attributes.h"
#include "moert/dtype.h"
#include "moert/shape.h"
#include "moert/tensor.h"

namespace moert {

using ValueId = int32_t;
inline constexpr ValueId kNoValue = -1;  // an absent optional input

enum class ValueKind {
  input,         // given by the caller at each execution
  constant,      // weights: host data, possibly memory-mapped
  state,         // persists between executions (KV cache); zero at creation
  intermediate,  // produced by a node
};
std::string_view value_kind_name(ValueKind k);

struct Value {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  ValueKind kind = ValueKind::intermediate;
  Tensor data;            // constants only: the host tensor
  int32_t producer = -1;  // index of the node defining an intermediate
};

struct Node {
  std::string op;
  std::string name;
  Attributes attrs;
  std::vector<ValueId> inputs;  // kNoValue for an absent optional input
  std::vector<ValueId> outputs;
};

// The dtype and shape of a value, as op inference sees it.
struct ValueInfo {
  DType dtype = DType::f32;
  Shape shape;
  bool operator==(const ValueInfo& o) const { return dtype == o.dtype && shape == o.shape; }
};

class Graph {
 public:
  ValueId add_input(const std::string& name, DType dtype, Shape shape);
  ValueId add_constant(const std::string& name, Tensor data);
  ValueId add_state(const std::string& name, DType dtype, std::vector<int64_t> shape);

  // Adds a node computing op(inputs) and returns its outputs, whose dtypes and
  // shapes are inferred by the op.  Output values are named "<name>" when the
  // op has one output, else "<name>.<output name>".  Throws moert::Error
  // naming the node when the op is unknown or the inputs/attributes are wrong;
  // the graph is unchanged then.
  std::vector<ValueId> add_node(const std::string& op, const std::string& name,
                                const std::vector<ValueId>& inputs, Attributes attrs = {});
  // The single output of add_node.
  ValueId add(const std::string& op, const std::string& name, const std::vector<ValueId>& inputs,
              Attributes attrs = {});
  // Adds a node with the given outputs and no inference (for importers and
  // tests of validate()).  Output values are created as given.
  std::vector<ValueId> add_node_unchecked(Node node, const std::vector<ValueInfo>& outputs);

  void mark_output(ValueId id);
  const std::vector<ValueId>& outputs() const { return outputs_; }

  size_t num_values() const { return values_.size(); }
  size_t num_nodes() const { return nodes_.size(); }
  const Value& value(ValueId id) const;
  const Node& node(size_t index) const { return nodes_.at(index); }
  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<ValueId> inputs() const;          // values of kind input, in creation order
  ValueId find(const std::string& name) const;  // kNoValue if none

  // Re-checks the whole graph: value ids in range, each value defined once,
  // inputs defined, no cycles, every node's op known and its outputs equal to
  // what inference gives, mutated inputs are state, constants match their
  // shape.  Throws moert::Error naming the first offending node or value.
  void validate() const;

  // Node indices such that every node comes after the producers of its
  // inputs.  Throws moert::Error naming a node on a cycle.
  std::vector<size_t> topological_order() const;

  // Human-readable listing of values and nodes.
  std::string dump() const;

 private:
  ValueId new_value(Value v);
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> outputs_;
};

}  // namespace moert
