#include "moert/op_registry.h"

#include "moert/error.h"

namespace moert {

const ValueInfo& InferContext::in(size_t i) const {
  if (!has(i)) fail("input " + std::to_string(i) + " is required");
  return *inputs[i];
}

void InferContext::fail(const std::string& message) const {
  throw Error("node '" + node.name + "' (" + node.op + "): " + message);
}

void KernelContext::fail(const std::string& message) const {
  throw Error("node '" + node.name + "' (" + node.op + "): " + message);
}

int64_t TensorView::numel() const { return num_elements(shape); }

int64_t TensorView::dim(int64_t i) const {
  int64_t r = static_cast<int64_t>(shape.size());
  int64_t j = i < 0 ? i + r : i;
  check(j >= 0 && j < r, "dimension " + std::to_string(i) + " out of range for " + dims_str(shape));
  return shape[static_cast<size_t>(j)];
}

std::vector<double> TensorView::to_doubles() const {
  std::vector<double> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_element(dtype, data, i);
  return out;
}

const OpRegistry& OpRegistry::global() {
  static const OpRegistry registry = [] {
    OpRegistry r;
    register_builtin_ops(r);
    return r;
  }();
  return registry;
}

void OpRegistry::add(OpDef def) {
  check(!def.name.empty(), "op without a name");
  check(ops_.count(def.name) == 0, "op '" + def.name + "' registered twice");
  check(static_cast<bool>(def.infer), "op '" + def.name + "' has no inference function");
  check(static_cast<bool>(def.reference), "op '" + def.name + "' has no reference kernel");
  ops_.emplace(def.name, std::move(def));
}

const OpDef* OpRegistry::find(const std::string& name) const {
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : &it->second;
}

const OpDef& OpRegistry::get(const std::string& name) const {
  if (const OpDef* d = find(name)) return *d;
  std::string known;
  for (const auto& [k, v] : ops_) known += (known.empty() ? "" : ", ") + k;
  throw Error("unknown op '" + name + "'; known ops: " + known);
}

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : ops_) out.push_back(k);
  return out;
}

std::vector<ValueInfo> OpRegistry::infer(const Node& node,
                                         const std::vector<const ValueInfo*>& inputs) const {
  auto where = [&] { return "node '" + node.name + "' (" + node.op + "): "; };
  const OpDef* def = find(node.op);
  if (!def) {
    try {
      get(node.op);
    } catch (const Error& e) {
      throw Error(where() + e.what());
    }
  }
  size_t required = 0;
  for (const InputSpec& s : def->inputs)
    if (!s.optional) ++required;
  if (inputs.size() > def->inputs.size() || inputs.size() < required)
    throw Error(where() + "takes " +
                (required == def->inputs.size()
                     ? std::to_string(required)
                     : std::to_string(required) + " to " + std::to_string(def->inputs.size())) +
                " inputs, got " + std::to_string(inputs.size()));
  for (size_t i = 0; i < inputs.size(); ++i)
    if (!inputs[i] && !def->inputs[i].optional)
      throw Error(where() + "input '" + def->inputs[i].name + "' is required");
  for (const auto& [name, value] : node.attrs.items()) {
    const AttrSpec* spec = nullptr;
    for (const AttrSpec& s : def->attrs)
      if (s.name == name) spec = &s;
    if (!spec) {
      std::string known;
      for (const AttrSpec& s : def->attrs) known += (known.empty() ? "" : ", ") + s.name;
      throw Error(where() + "unknown attribute '" + name + "'" +
                  (known.empty() ? " (the op takes none)" : "; it takes: " + known));
    }
    AttrType t = attr_type(value);
    bool ok = t == spec->type || (spec->type == AttrType::real && t == AttrType::integer) ||
              (spec->type == AttrType::reals && t == AttrType::integers);
    if (!ok)
      throw Error(where() + "attribute '" + name + "' must be " + attr_type_name(spec->type) +
                  ", got " + attr_type_name(t) + " " + attr_value_str(value));
  }
  for (const AttrSpec& s : def->attrs)
    if (s.required && !node.attrs.has(s.name))
      throw Error(where() + "missing required attribute '" + s.name + "'");
  InferContext ctx{node, inputs};
  std::vector<ValueInfo> outs;
  try {
    outs = def->infer(ctx);
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind("node '", 0) == 0) throw;
    throw Error(where() + msg);
  }
  if (outs.size() != def->outputs.size())
    throw Error(where() + "inference gave " + std::to_string(outs.size()) +
                " outputs, schema has " + std::to_string(def->outputs.size()));
  return outs;
}

}  // namespace moert
