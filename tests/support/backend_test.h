// Test support shared by the unit tests of individual backend plugins
// (test_opencl_backend.cpp, test_cuda_backend.cpp): executor options for
// checks against the reference, a one-node run that returns its error, and
// access to a plugin's testing hooks (its extensions, get_extension).
#pragma once

#include <string>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/executor.h"
#include "moert/graph.h"
#include "support/op_runner.h"

namespace moert::testing {

// Strict (no fallback) and poisoned on a backend device; plain on "reference".
inline ExecutorOptions on(const std::string& device) {
  ExecutorOptions o;
  o.device = device;
  o.strict = device != "reference";
  o.poison = true;
  return o;
}

// The error message of one `op` node run on `device` over `inputs` (a
// tensor of T = 0 symbols: static shapes), or "(no error)".
inline std::string run_error(const std::string& device, const std::string& op,
                             const std::vector<Tensor>& inputs, const Attributes& attrs = {}) {
  Graph g;
  std::vector<ValueId> ids;
  for (size_t i = 0; i < inputs.size(); ++i)
    ids.push_back(
        g.add_input("in" + std::to_string(i), inputs[i].dtype(), Shape::of(inputs[i].shape())));
  for (ValueId out : g.add_node(op, "node", ids, attrs)) g.mark_output(out);
  return error_of([&] {
    Executor dev(g, on(device));
    dev.run(inputs, SymbolValues::of(0, 0));
  });
}

// An extension of a plugin (moert_backend_api::get_extension: its testing
// interface, testing.cpp), or nullptr.
template <typename F>
F testing_symbol(moert::Backend* backend, const char* name) {
  const moert_backend_api& api = backend->api();
  if (!MOERT_ABI_HAS_MEMBER(&api, moert_backend_api, get_extension) || !api.get_extension)
    return nullptr;
  return reinterpret_cast<F>(api.get_extension(name));
}

}  // namespace moert::testing
