// The plugin's extensions (moert_backend_api::get_extension): its testing
// interface, which tests/unit/test_cuda_backend.cpp looks up by name.  They reach the host
// logic of the plugin (node checks, the kernel table, the GEMM plan cache)
// without going through init(), so that logic is tested on a machine with
// no GPU too; the device ones answer only after a successful init().
#include <cstdio>
#include <string>

#include "kernel.h"
#include "kit/plugin.h"
#include "options.h"
#include "step_graph.h"

namespace {

using Registration = moert::kit::ExtensionRegistration<moert::cuda::Backend>;

void copy_text(const std::string& s, char* text, size_t capacity) {
  if (text && capacity) std::snprintf(text, capacity, "%s", s.c_str());
}

// 1 when node `node` of `graph` can run on this backend, else 0 with the
// reason in `reason`.  Needs no device.
int moert_cuda_testing_check_node(const moert_graph_desc* graph, size_t node, char* reason,
                                  size_t capacity) {
  const std::string why = node < graph->num_nodes ? moert::cuda::unsupported_reason(*graph, node)
                                                  : std::string("node index out of range");
  copy_text(why, reason, capacity);
  return why.empty() ? 1 : 0;
}
const Registration check_node_reg("moert_cuda_testing_check_node", moert_cuda_testing_check_node);

// 1 when the plugin has a kernel for `op`.  Needs no device.
int moert_cuda_testing_has_kernel(const char* op) {
  return moert::cuda::find_kernel(op) != nullptr ? 1 : 0;
}
const Registration has_kernel_reg("moert_cuda_testing_has_kernel", moert_cuda_testing_has_kernel);

// One line describing device `device` (compute capability, SMs, memory,
// shared memory, tensor cores, the architectures built for).
int moert_cuda_testing_capabilities(int32_t device, char* text, size_t capacity) {
  moert_error err{};
  err.struct_size = sizeof(err);
  const moert_status s = moert::plugin::guarded(
      &err, [&] { copy_text(moert::cuda::device(device).caps().summary(), text, capacity); });
  if (s != MOERT_OK) copy_text(err.message, text, capacity);
  return s;
}
const Registration capabilities_reg("moert_cuda_testing_capabilities",
                                    moert_cuda_testing_capabilities);

// The GEMM plan cache of device `device`: plans held, hits and misses.
int moert_cuda_testing_gemm_plans(int32_t device, int64_t* plans, int64_t* hits, int64_t* misses) {
  moert_error err{};
  err.struct_size = sizeof(err);
  return moert::plugin::guarded(&err, [&] {
    auto& cache = moert::cuda::device(device).gemm_plans();
    *plans = static_cast<int64_t>(cache.size());
    *hits = static_cast<int64_t>(cache.hits());
    *misses = static_cast<int64_t>(cache.misses());
  });
}
const Registration gemm_plans_reg("moert_cuda_testing_gemm_plans", moert_cuda_testing_gemm_plans);

// Bytes in use and cached by device `device`'s memory pool.
int moert_cuda_testing_pool(int32_t device, int64_t* in_use, int64_t* cached) {
  moert_error err{};
  err.struct_size = sizeof(err);
  return moert::plugin::guarded(&err, [&] {
    auto& pool = moert::cuda::device(device).pool();
    *in_use = static_cast<int64_t>(pool.in_use_bytes());
    *cached = static_cast<int64_t>(pool.cached_bytes());
  });
}
const Registration pool_reg("moert_cuda_testing_pool", moert_cuda_testing_pool);

// What the CUDA graphs of decode steps did in this process: graphs
// instantiated, updated in place, replayed unchanged, and turned off
// because a step could not be captured (its executable then launches node
// by node).  Needs no device.
void moert_cuda_testing_graph_stats(int64_t* instantiated, int64_t* updated, int64_t* replayed,
                                    int64_t* disabled) {
  const auto& s = moert::cuda::step_graph_stats();
  *instantiated = static_cast<int64_t>(s.instantiated.load());
  *updated = static_cast<int64_t>(s.updated.load());
  *replayed = static_cast<int64_t>(s.replayed.load());
  *disabled = static_cast<int64_t>(s.disabled.load());
}
const Registration graph_stats_reg("moert_cuda_testing_graph_stats",
                                   moert_cuda_testing_graph_stats);

// 1 when decode steps run as CUDA graphs (MOERT_CUDA_GRAPHS and
// MOERT_CUDA_BASELINE_KERNELS allow it).  Needs no device.
int moert_cuda_testing_graphs_enabled() { return moert::cuda::graphs_enabled() ? 1 : 0; }
const Registration graphs_enabled_reg("moert_cuda_testing_graphs_enabled",
                                      moert_cuda_testing_graphs_enabled);

}  // namespace
