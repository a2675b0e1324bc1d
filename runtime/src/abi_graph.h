// Conversion between the C++ graph and the plugin ABI's C descriptions.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "moert/backend_abi.h"
#include "moert/graph.h"

namespace moert {

// Owns the C description of some nodes of a graph and of every value they
// touch.  The description stays valid as long as this object and the graph
// (whose constant data it points into) live.
class AbiGraph {
 public:
  AbiGraph(const Graph& graph, const std::vector<size_t>& node_indices);
  AbiGraph(const AbiGraph&) = delete;
  AbiGraph& operator=(const AbiGraph&) = delete;

  const moert_graph_desc* desc() const { return &desc_; }
  // The graph value behind tensor index i of the description, and back.
  const std::vector<ValueId>& tensor_values() const { return tensor_values_; }
  uint32_t tensor_index(ValueId id) const { return index_.at(id); }

 private:
  uint32_t add_tensor(const Graph& graph, ValueId id);
  const char* keep(const std::string& s);

  std::deque<std::string> strings_;
  std::vector<std::unique_ptr<moert_tensor_desc>> tensor_storage_;
  std::vector<std::unique_ptr<moert_attr>> attr_storage_;
  std::vector<std::unique_ptr<moert_node_desc>> node_storage_;
  std::deque<std::vector<int64_t>> ints_;
  std::deque<std::vector<double>> floats_;
  std::deque<std::vector<uint32_t>> indices_;
  std::deque<std::vector<const moert_attr*>> attr_lists_;
  std::vector<const moert_tensor_desc*> tensors_;
  std::vector<const moert_node_desc*> nodes_;
  std::vector<ValueId> tensor_values_;
  std::unordered_map<ValueId, uint32_t> index_;
  moert_graph_desc desc_{};
};

// Back from C to C++: attributes and shapes as a backend written in C++
// (the reference backend) wants them.  Reading respects struct_size.
Attributes attributes_from_abi(const moert_node_desc& node);
Shape shape_from_abi(const moert_tensor_desc& tensor);

}  // namespace moert
