// Test support: a minimal host interpreter for whole graphs, used to check an
// op's decomposition against the op itself.  Every node runs its op's
// reference kernel in Graph::topological_order(); intermediates are allocated
// from the shapes resolved with the given symbols and poisoned first (as
// run_op does), so an element a kernel forgets to write shows up as NaN.
#pragma once

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/graph.h"
#include "moert/op_registry.h"
#include "moert/tensor.h"
#include "support/op_runner.h"

namespace moert::testing {

// Runs `graph` with `inputs` (one host tensor per input value, by id) and
// `states` (one per state value the graph uses, by id; written in place, so
// a second call continues from the first).  Constants come from the graph.
// Returns the graph's outputs in order.  Throws moert::Error when a tensor is
// missing or does not match its value's dtype and resolved shape, and passes
// on the kernels' errors.
inline std::vector<Tensor> run_graph(const Graph& graph, const std::map<ValueId, Tensor>& inputs,
                                     const std::map<ValueId, Tensor>& states,
                                     SymbolValues symbols) {
  const OpRegistry& reg = OpRegistry::global();
  std::vector<Tensor> values(graph.num_values());
  for (size_t i = 0; i < graph.num_values(); ++i) {
    const ValueId id = static_cast<ValueId>(i);
    const Value& v = graph.value(id);
    const std::map<ValueId, Tensor>* source = nullptr;
    if (v.kind == ValueKind::input) source = &inputs;
    if (v.kind == ValueKind::state) source = &states;
    if (v.kind == ValueKind::constant) values[i] = v.data;
    if (!source) continue;
    auto it = source->find(id);
    if (it == source->end()) {
      // A state no node reads may be left out.
      if (v.kind == ValueKind::state) continue;
      throw Error("run_graph: no tensor for input '" + v.name + "'");
    }
    const std::vector<int64_t> want = v.shape.resolve(symbols);
    check(it->second.dtype() == v.dtype && it->second.shape() == want,
          "run_graph: " + std::string(value_kind_name(v.kind)) + " '" + v.name + "' is " +
              std::string(dtype_name(v.dtype)) + dims_str(want) + ", got " + it->second.describe());
    values[i] = it->second;
  }
  for (size_t n : graph.topological_order()) {
    const Node& node = graph.node(n);
    KernelContext ctx{node, {}, {}, symbols};
    for (ValueId in : node.inputs) {
      if (in == kNoValue) {
        ctx.inputs.push_back({});
        continue;
      }
      const Tensor& t = values[static_cast<size_t>(in)];
      check(t.defined(), "run_graph: node '" + node.name + "' reads '" + graph.value(in).name +
                             "', which has no tensor");
      ctx.inputs.push_back({t.dtype(), t.shape(), t.data()});
    }
    for (ValueId out : node.outputs) {
      const Value& v = graph.value(out);
      Tensor t = Tensor::empty(v.dtype, v.shape.resolve(symbols));
      poison(t);
      ctx.outputs.push_back({t.dtype(), t.shape(), t.data()});
      values[static_cast<size_t>(out)] = t;
    }
    reg.get(node.op).reference(ctx);
  }
  std::vector<Tensor> outputs;
  for (ValueId id : graph.outputs()) {
    check(values[static_cast<size_t>(id)].defined(),
          "run_graph: output '" + graph.value(id).name + "' has no tensor");
    outputs.push_back(values[static_cast<size_t>(id)]);
  }
  return outputs;
}

// A deep copy of a host tensor (states are written in place; tests keep
// copies to compare against or to run a second graph from the same start).
inline Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.dtype(), t.shape());
  if (t.nbytes() > 0) std::memcpy(c.data(), t.data(), t.nbytes());
  return c;
}

}  // namespace moert::testing
