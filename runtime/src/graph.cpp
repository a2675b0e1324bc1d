#include "moert/graph.h"

#include <queue>
#include <sstream>

#include "moert/error.h"
#include "moert/op_registry.h"

namespace moert {

std::string_view value_kind_name(ValueKind k) {
  switch (k) {
    case ValueKind::input:
      return "input";
    case ValueKind::constant:
      return "constant";
    case ValueKind::state:
      return "state";
    case ValueKind::intermediate:
      return "intermediate";
  }
  return "?";
}

ValueId Graph::new_value(Value v) {
  values_.push_back(std::move(v));
  return static_cast<ValueId>(values_.size() - 1);
}

ValueId Graph::add_input(const std::string& name, DType dtype, Shape shape) {
  return new_value({name, dtype, std::move(shape), ValueKind::input, {}, -1});
}

ValueId Graph::add_constant(const std::string& name, Tensor data) {
  check(data.defined() && data.on_host(), "constant '" + name + "' needs host data");
  Shape shape = Shape::of(data.shape());
  DType dtype = data.dtype();
  return new_value({name, dtype, std::move(shape), ValueKind::constant, std::move(data), -1});
}

ValueId Graph::add_state(const std::string& name, DType dtype, std::vector<int64_t> shape) {
  return new_value({name, dtype, Shape::of(shape), ValueKind::state, {}, -1});
}

const Value& Graph::value(ValueId id) const {
  check(id >= 0 && static_cast<size_t>(id) < values_.size(),
        "value id " + std::to_string(id) + " out of range (graph has " +
            std::to_string(values_.size()) + " values)");
  return values_[static_cast<size_t>(id)];
}

std::vector<ValueId> Graph::add_node(const std::string& op, const std::string& name,
                                     const std::vector<ValueId>& inputs, Attributes attrs) {
  Node node{op, name, std::move(attrs), inputs, {}};
  std::vector<const ValueInfo*> infos;
  std::vector<ValueInfo> storage(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == kNoValue) {
      infos.push_back(nullptr);
      continue;
    }
    if (inputs[i] < 0 || static_cast<size_t>(inputs[i]) >= values_.size())
      throw Error("node '" + name + "' (" + op + "): input " + std::to_string(i) +
                  " refers to unknown value id " + std::to_string(inputs[i]));
    const Value& v = values_[static_cast<size_t>(inputs[i])];
    storage[i] = {v.dtype, v.shape};
    infos.push_back(&storage[i]);
  }
  std::vector<ValueInfo> outs = OpRegistry::global().infer(node, infos);
  const OpDef& def = OpRegistry::global().get(op);
  for (size_t i = 0; i < inputs.size() && i < def.inputs.size(); ++i)
    if (def.inputs[i].mutated && inputs[i] != kNoValue &&
        values_[static_cast<size_t>(inputs[i])].kind != ValueKind::state)
      throw Error("node '" + name + "' (" + op + "): input '" + def.inputs[i].name +
                  "' is written in place and must be a state value, got " +
                  std::string(value_kind_name(values_[static_cast<size_t>(inputs[i])].kind)) +
                  " '" + values_[static_cast<size_t>(inputs[i])].name + "'");
  std::vector<ValueId> ids;
  int32_t index = static_cast<int32_t>(nodes_.size());
  for (size_t i = 0; i < outs.size(); ++i) {
    std::string vname = outs.size() == 1 ? name : name + "." + def.outputs.at(i);
    ids.push_back(
        new_value({vname, outs[i].dtype, outs[i].shape, ValueKind::intermediate, {}, index}));
  }
  node.outputs = ids;
  nodes_.push_back(std::move(node));
  return ids;
}

ValueId Graph::add(const std::string& op, const std::string& name,
                   const std::vector<ValueId>& inputs, Attributes attrs) {
  std::vector<ValueId> outs = add_node(op, name, inputs, std::move(attrs));
  check(outs.size() == 1, "node '" + name + "' (" + op + ") has " + std::to_string(outs.size()) +
                              " outputs; use add_node");
  return outs[0];
}

std::vector<ValueId> Graph::add_node_unchecked(Node node, const std::vector<ValueInfo>& outputs) {
  int32_t index = static_cast<int32_t>(nodes_.size());
  node.outputs.clear();
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string vname = outputs.size() == 1 ? node.name : node.name + "." + std::to_string(i);
    node.outputs.push_back(
        new_value({vname, outputs[i].dtype, outputs[i].shape, ValueKind::intermediate, {}, index}));
  }
  nodes_.push_back(node);
  return nodes_.back().outputs;
}

void Graph::mark_output(ValueId id) {
  value(id);  // range check
  outputs_.push_back(id);
}

std::vector<ValueId> Graph::inputs() const {
  std::vector<ValueId> ids;
  for (size_t i = 0; i < values_.size(); ++i)
    if (values_[i].kind == ValueKind::input) ids.push_back(static_cast<ValueId>(i));
  return ids;
}

ValueId Graph::find(const std::string& name) const {
  for (size_t i = 0; i < values_.size(); ++i)
    if (values_[i].name == name) return static_cast<ValueId>(i);
  return kNoValue;
}

std::vector<size_t> Graph::topological_order() const {
  // Kahn's algorithm over node -> node edges, taking the lowest index first
  // so that a graph built in order keeps its order.
  const size_t n = nodes_.size();
  std::vector<std::vector<size_t>> users(n);
  std::vector<size_t> pending(n, 0);
  for (size_t i = 0; i < n; ++i) {
    for (ValueId in : nodes_[i].inputs) {
      if (in == kNoValue || in < 0 || static_cast<size_t>(in) >= values_.size()) continue;
      int32_t p = values_[static_cast<size_t>(in)].producer;
      if (p < 0) continue;
      users[static_cast<size_t>(p)].push_back(i);
      ++pending[i];
    }
  }
  std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
  for (size_t i = 0; i < n; ++i)
    if (pending[i] == 0) ready.push(i);
  std::vector<size_t> order;
  while (!ready.empty()) {
    size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t u : users[i])
      if (--pending[u] == 0) ready.push(u);
  }
  if (order.size() != n) {
    for (size_t i = 0; i < n; ++i)
      if (pending[i] != 0)
        throw Error("graph has a cycle through node '" + nodes_[i].name + "' (" + nodes_[i].op +
                    ")");
  }
  return order;
}

void Graph::validate() const {
  const OpRegistry& registry = OpRegistry::global();
  std::vector<int> defined_by(values_.size(), -1);
  for (size_t i = 0; i < values_.size(); ++i) {
    const Value& v = values_[i];
    if (v.kind == ValueKind::constant) {
      if (!v.data.defined()) throw Error("constant '" + v.name + "' has no data");
      if (Shape::of(v.data.shape()) != v.shape || v.data.dtype() != v.dtype)
        throw Error("constant '" + v.name + "' is declared " + std::string(dtype_name(v.dtype)) +
                    v.shape.str() + " but holds " + v.data.describe());
    }
    if (v.kind == ValueKind::state && !v.shape.is_static())
      throw Error("state '" + v.name + "' must have a static shape, has " + v.shape.str());
    if (v.kind == ValueKind::intermediate && v.producer < 0)
      throw Error("value '" + v.name + "' is intermediate but no node produces it");
  }
  for (size_t n = 0; n < nodes_.size(); ++n) {
    const Node& node = nodes_[n];
    auto where = [&] { return "node '" + node.name + "' (" + node.op + ")"; };
    for (ValueId out : node.outputs) {
      if (out < 0 || static_cast<size_t>(out) >= values_.size())
        throw Error(where() + ": output refers to unknown value id " + std::to_string(out));
      const Value& v = values_[static_cast<size_t>(out)];
      if (v.kind != ValueKind::intermediate || v.producer != static_cast<int32_t>(n))
        throw Error(where() + ": output '" + v.name + "' is already defined elsewhere");
      if (defined_by[static_cast<size_t>(out)] >= 0)
        throw Error(where() + ": output '" + v.name + "' is defined twice");
      defined_by[static_cast<size_t>(out)] = static_cast<int>(n);
    }
  }
  for (size_t i = 0; i < values_.size(); ++i)
    if (values_[i].kind == ValueKind::intermediate && defined_by[i] < 0)
      throw Error("value '" + values_[i].name + "' claims producer node " +
                  std::to_string(values_[i].producer) + " which does not output it");
  topological_order();  // throws on a cycle
  for (const Node& node : nodes_) {
    auto where = [&] { return "node '" + node.name + "' (" + node.op + ")"; };
    const OpDef* def = registry.find(node.op);
    if (!def) registry.get(node.op);  // throws, listing the known ops
    std::vector<const ValueInfo*> infos;
    std::vector<ValueInfo> storage(node.inputs.size());
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      ValueId in = node.inputs[i];
      if (in == kNoValue) {
        infos.push_back(nullptr);
        continue;
      }
      if (in < 0 || static_cast<size_t>(in) >= values_.size())
        throw Error(where() + ": input " + std::to_string(i) + " refers to unknown value id " +
                    std::to_string(in));
      const Value& v = values_[static_cast<size_t>(in)];
      if (def->input_mutated(i) && v.kind != ValueKind::state)
        throw Error(where() + ": input '" + def->inputs[i].name +
                    "' is written in place and must be a state value, got '" + v.name + "'");
      storage[i] = {v.dtype, v.shape};
      infos.push_back(&storage[i]);
    }
    std::vector<ValueInfo> expect = registry.infer(node, infos);
    if (expect.size() != node.outputs.size())
      throw Error(where() + ": has " + std::to_string(node.outputs.size()) +
                  " outputs, the op defines " + std::to_string(expect.size()));
    for (size_t i = 0; i < expect.size(); ++i) {
      const Value& v = values_[static_cast<size_t>(node.outputs[i])];
      if (!(ValueInfo{v.dtype, v.shape} == expect[i]))
        throw Error(where() + ": output '" + v.name + "' is declared " +
                    std::string(dtype_name(v.dtype)) + v.shape.str() + " but the op gives " +
                    std::string(dtype_name(expect[i].dtype)) + expect[i].shape.str());
    }
  }
  for (ValueId out : outputs_) value(out);
}

std::string Graph::dump() const {
  std::ostringstream os;
  auto vstr = [&](ValueId id) {
    if (id == kNoValue) return std::string("-");
    const Value& v = values_[static_cast<size_t>(id)];
    return "%" + v.name;
  };
  auto vtype = [&](ValueId id) {
    const Value& v = values_[static_cast<size_t>(id)];
    return std::string(dtype_name(v.dtype)) + v.shape.str();
  };
  os << "graph: " << values_.size() << " values, " << nodes_.size() << " nodes\n";
  for (size_t i = 0; i < values_.size(); ++i) {
    const Value& v = values_[i];
    if (v.kind == ValueKind::intermediate) continue;
    os << "  " << value_kind_name(v.kind) << " %" << v.name << " : "
       << vtype(static_cast<ValueId>(i)) << "\n";
  }
  for (size_t n : topological_order()) {
    const Node& node = nodes_[n];
    os << "  ";
    for (size_t i = 0; i < node.outputs.size(); ++i)
      os << (i ? ", " : "") << vstr(node.outputs[i]) << " : " << vtype(node.outputs[i]);
    os << " = " << node.op << "(";
    for (size_t i = 0; i < node.inputs.size(); ++i) os << (i ? ", " : "") << vstr(node.inputs[i]);
    os << ")";
    if (!node.attrs.items().empty()) {
      os << " {";
      bool first = true;
      for (const auto& [k, v] : node.attrs.items()) {
        os << (first ? "" : ", ") << k << "=" << attr_value_str(v);
        first = false;
      }
      os << "}";
    }
    os << "\n";
  }
  os << "  outputs:";
  for (ValueId id : outputs_) os << " " << vstr(id);
  os << "\n";
  return os.str();
}

}  // namespace moert
