#include "moert/op_registry.h"

#include <algorithm>
#include <sstream>

#include "moert/error.h"
#include "op_schema.h"

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

namespace {

AttrType type_of(schema::AttrKind k) {
  switch (k) {
    case schema::AttrKind::integer:
      return AttrType::integer;
    case schema::AttrKind::real:
      return AttrType::real;
    case schema::AttrKind::string:
      return AttrType::string;
    case schema::AttrKind::integers:
      return AttrType::integers;
    case schema::AttrKind::reals:
      return AttrType::reals;
  }
  return AttrType::integer;
}

// A default written as text in ops/op_schema.h, as a value of type `t`.
AttrValue parse_default(AttrType t, const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  switch (t) {
    case AttrType::integer:
      return static_cast<int64_t>(std::stoll(text));
    case AttrType::real:
      return std::stod(text);
    case AttrType::string:
      return text;
    case AttrType::integers: {
      std::vector<int64_t> v;
      for (const std::string& i : items) v.push_back(std::stoll(i));
      return v;
    }
    case AttrType::reals: {
      std::vector<double> v;
      for (const std::string& i : items) v.push_back(std::stod(i));
      return v;
    }
  }
  return text;
}

std::vector<AttrSpec> attrs_from_schema(const schema::Op& op) {
  std::vector<AttrSpec> out;
  for (const schema::Attr& a : op.attrs) {
    AttrSpec s{a.name, type_of(a.kind), a.required, std::nullopt, {}, a.since};
    if (a.default_value) s.default_value = parse_default(s.type, a.default_value);
    if (a.choices) {
      std::stringstream in(a.choices);
      for (std::string c; std::getline(in, c, '|');) s.choices.push_back(c);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

void OpRegistry::add(OpDef def) {
  check(!def.name.empty(), "op without a name");
  if (const schema::Op* op = schema::find_op(def.name.c_str())) {
    def.attrs = attrs_from_schema(*op);
    def.version = op->version;
  }
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

uint32_t OpRegistry::node_version(const Node& node) const {
  const OpDef* def = find(node.op);
  uint32_t version = 1;
  if (!def) return version;
  for (const AttrSpec& s : def->attrs)
    if (node.attrs.has(s.name)) version = std::max(version, s.since);
  for (size_t i = 0; i < node.inputs.size() && i < def->inputs.size(); ++i)
    if (node.inputs[i] != kNoValue) version = std::max(version, def->inputs[i].since);
  return version;
}

Attributes OpRegistry::normalized(const Node& node) const {
  const OpDef* def = find(node.op);
  if (!def) return node.attrs;
  const uint32_t version = node_version(node);
  Attributes out = node.attrs;
  for (const AttrSpec& s : def->attrs) {
    if (!out.has(s.name)) {
      if (s.default_value && s.since <= version) out.set(s.name, *s.default_value);
      continue;
    }
    const AttrValue& v = out.items().at(s.name);
    if (s.type == AttrType::real && attr_type(v) == AttrType::integer)
      out.set(s.name, static_cast<double>(std::get<int64_t>(v)));
    else if (s.type == AttrType::reals && attr_type(v) == AttrType::integers) {
      const auto& ints = std::get<std::vector<int64_t>>(v);
      out.set(s.name, std::vector<double>(ints.begin(), ints.end()));
    } else if (!s.choices.empty() && attr_type(v) == AttrType::string) {
      const std::string& value = std::get<std::string>(v);
      bool known = false;
      std::string list;
      for (const std::string& c : s.choices) {
        known = known || c == value;
        list += (list.empty() ? "\"" : ", \"") + c + "\"";
      }
      if (!known)
        throw Error("node '" + node.name + "' (" + node.op + "): attribute '" + s.name +
                    "' must be one of " + list + ", got \"" + value + "\"");
    }
  }
  return out;
}

}  // namespace moert
