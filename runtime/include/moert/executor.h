// Runs a graph on a device.
//
// Placement: every node goes to the chosen device when its backend supports
// it.  A node it does not support is first decomposed into simpler ops when
// the op has a decomposition (moe, attention); whatever is still unsupported
// falls back to the reference backend, with copies at the partition
// boundaries.  Every fallback is recorded (fallbacks()); in strict mode any
// fallback is an error instead.
//
// Memory: activations live in one arena per device, laid out by a
// liveness-based planner (memory_planner.h) for each (T, P) bucket; state
// values (KV caches) get their own buffers, zeroed at creation, that persist
// between runs.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/graph.h"
#include "moert/tensor.h"

namespace moert {

struct ExecutorOptions {
  std::string device = "reference";  // "cpu", "cuda:1", "opencl", "reference"
  bool strict = false;               // a fallback to the reference backend is an error
  bool decompose = true;             // try an op's decomposition before falling back
  // Fill every activation arena with 0xFF bytes (NaN in every float dtype,
  // -1 in the integer ones) before each run, so an element a kernel forgets
  // to write shows up.  For tests; costs a write of the arena per run.
  bool poison = false;
};

// The time one node took in the last profiled run.
struct NodeTiming {
  std::string node;
  std::string op;
  std::string device;
  double seconds = 0;  // negative when the backend does not time nodes
};

struct Fallback {
  std::string node;  // node name
  std::string op;
  std::string reason;  // what the backend said, or "op not supported"
};

// One contiguous run of nodes on one device.
struct PartitionInfo {
  std::string device;  // "cpu:0"
  size_t num_nodes = 0;
};

struct MemoryReport {
  std::map<std::string, uint64_t> arena_bytes;  // per device: activation arena used by the last run
  uint64_t naive_bytes = 0;                     // sum of every activation, no reuse
  uint64_t state_bytes = 0;                     // KV caches and other state
};

class Executor {
 public:
  // Validates `graph`, places it and prepares every partition.  Throws
  // moert::Error for an invalid graph, an unknown or unavailable device, a
  // state value used on two devices, or (strict) any fallback.
  Executor(const Graph& graph, ExecutorOptions options = {},
           BackendRegistry& registry = BackendRegistry::global());
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs the graph for T = symbols.tokens() new tokens after P =
  // symbols.past() cached ones.  `inputs` are host tensors, one per graph
  // input in creation order, with shapes matching the resolved input shapes.
  // Returns the graph outputs as host tensors.  On error (bad input, context
  // overflow, backend failure) throws moert::Error; state is unchanged when
  // the error is detected before any node runs (input and capacity checks).
  std::vector<Tensor> run(const std::vector<Tensor>& inputs, SymbolValues symbols);

  // The graph as placed (after decompositions).
  const Graph& placed_graph() const;
  const std::vector<Fallback>& fallbacks() const;
  const std::vector<PartitionInfo>& partitions() const;
  MemoryReport memory() const;
  std::string placement_report() const;  // readable summary of the above

  // Per-node timing: while enabled, each run asks the backends to time every
  // node (they then finish one node before starting the next, so a run is a
  // little slower) and profile() returns the last run's times in run order.
  void set_profiling(bool enabled);
  const std::vector<NodeTiming>& profile() const;

  // Largest P + T the state values allow (their first dimension); 0 if none.
  int64_t state_capacity() const;
  // Zeroes every state value (a new sequence).
  void reset_state();
  // A host copy of a state value, by name (for tests and debugging).
  Tensor read_state(const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moert
