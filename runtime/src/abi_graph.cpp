#include "abi_graph.h"

#include "moert/error.h"
#include "moert/op_registry.h"

namespace moert {

const char* AbiGraph::keep(const std::string& s) {
  strings_.push_back(s);
  return strings_.back().c_str();
}

uint32_t AbiGraph::add_tensor(const Graph& graph, ValueId id) {
  auto it = index_.find(id);
  if (it != index_.end()) return it->second;
  const Value& v = graph.value(id);
  auto t = std::make_unique<moert_tensor_desc>();
  t->struct_size = sizeof(moert_tensor_desc);
  t->name = keep(v.name);
  t->dtype = static_cast<moert_dtype>(v.dtype);
  check(v.shape.rank() <= MOERT_MAX_RANK, "value '" + v.name + "' has rank " +
                                              std::to_string(v.shape.rank()) + ", at most " +
                                              std::to_string(MOERT_MAX_RANK) + " is supported");
  t->rank = static_cast<uint32_t>(v.shape.rank());
  for (size_t i = 0; i < v.shape.rank(); ++i) t->dims[i] = {v.shape[i].fixed, v.shape[i].symbols};
  switch (v.kind) {
    case ValueKind::constant:
      t->kind = MOERT_TENSOR_CONSTANT;
      t->data = v.data.data();
      t->data_bytes = v.data.nbytes();
      break;
    case ValueKind::state:
      t->kind = MOERT_TENSOR_STATE;
      break;
    default:
      t->kind = MOERT_TENSOR_ACTIVATION;
      break;
  }
  uint32_t index = static_cast<uint32_t>(tensors_.size());
  tensors_.push_back(t.get());
  tensor_storage_.push_back(std::move(t));
  tensor_values_.push_back(id);
  index_[id] = index;
  return index;
}

AbiGraph::AbiGraph(const Graph& graph, const std::vector<size_t>& node_indices) {
  for (size_t n : node_indices) {
    const Node& node = graph.node(n);
    auto d = std::make_unique<moert_node_desc>();
    d->struct_size = sizeof(moert_node_desc);
    d->op = keep(node.op);
    d->name = keep(node.name);
    std::vector<uint32_t>& ins = indices_.emplace_back();
    for (ValueId in : node.inputs)
      ins.push_back(in == kNoValue ? MOERT_NO_TENSOR : add_tensor(graph, in));
    std::vector<uint32_t>& outs = indices_.emplace_back();
    for (ValueId out : node.outputs) outs.push_back(add_tensor(graph, out));
    d->inputs = ins.data();
    d->num_inputs = ins.size();
    d->outputs = outs.data();
    d->num_outputs = outs.size();
    d->op_version = OpRegistry::global().node_version(node);
    std::vector<const moert_attr*>& attrs = attr_lists_.emplace_back();
    const Attributes normalized = OpRegistry::global().normalized(node);
    for (const auto& [name, value] : normalized.items()) {
      auto a = std::make_unique<moert_attr>();
      *a = {};
      a->struct_size = sizeof(moert_attr);
      a->name = keep(name);
      a->type = static_cast<moert_attr_type>(attr_type(value));
      switch (attr_type(value)) {
        case AttrType::integer:
          a->i = std::get<int64_t>(value);
          break;
        case AttrType::real:
          a->f = std::get<double>(value);
          break;
        case AttrType::string:
          a->s = keep(std::get<std::string>(value));
          break;
        case AttrType::integers:
          a->ints = ints_.emplace_back(std::get<std::vector<int64_t>>(value)).data();
          a->count = ints_.back().size();
          break;
        case AttrType::reals:
          a->floats = floats_.emplace_back(std::get<std::vector<double>>(value)).data();
          a->count = floats_.back().size();
          break;
      }
      attrs.push_back(a.get());
      attr_storage_.push_back(std::move(a));
    }
    d->attrs = attrs.data();
    d->num_attrs = attrs.size();
    nodes_.push_back(d.get());
    node_storage_.push_back(std::move(d));
  }
  desc_.struct_size = sizeof(moert_graph_desc);
  desc_.tensors = tensors_.data();
  desc_.num_tensors = tensors_.size();
  desc_.nodes = nodes_.data();
  desc_.num_nodes = nodes_.size();
  desc_.flags = MOERT_GRAPH_CONSTANTS_PERSIST;
  desc_.opset_version = MOERT_OPSET_VERSION;
}

Attributes attributes_from_abi(const moert_node_desc& node) {
  Attributes attrs;
  for (size_t i = 0; i < node.num_attrs; ++i) {
    const moert_attr& a = *node.attrs[i];
    switch (a.type) {
      case MOERT_ATTR_INT:
        attrs.set(a.name, a.i);
        break;
      case MOERT_ATTR_FLOAT:
        attrs.set(a.name, a.f);
        break;
      case MOERT_ATTR_STRING:
        attrs.set(a.name, std::string(a.s ? a.s : ""));
        break;
      case MOERT_ATTR_INTS:
        attrs.set(a.name, std::vector<int64_t>(a.ints, a.ints + a.count));
        break;
      case MOERT_ATTR_FLOATS:
        attrs.set(a.name, std::vector<double>(a.floats, a.floats + a.count));
        break;
      default:
        throw Error("node '" + std::string(node.name) + "': attribute '" + a.name +
                    "' has unknown type " + std::to_string(static_cast<int>(a.type)));
    }
  }
  return attrs;
}

Shape shape_from_abi(const moert_tensor_desc& tensor) {
  std::vector<Dim> dims;
  for (uint32_t i = 0; i < tensor.rank && i < MOERT_MAX_RANK; ++i) {
    Dim d(tensor.dims[i].fixed);
    d.symbols = tensor.dims[i].symbols;
    dims.push_back(d);
  }
  return Shape(std::move(dims));
}

}  // namespace moert
