// CUDA-graph replay of small steps (decode).  A decode step is a few
// hundred short kernels; launched one by one, the gaps between them cost as
// much as the kernels themselves on a fast GPU.  So a step with few tokens
// is captured from the stream into graphs and launched as such.
//
// A step is cut into segments of kGraphSegmentSteps nodes, one graph each:
// while the GPU runs one segment the host captures the next, so capturing
// overlaps the GPU's work as launching node by node does (one graph of the
// whole step would leave the GPU idle while the host captures it).
//
// A graph bakes in its kernels' arguments.  The past-token count P grows by
// one every decode step, so the kernels whose launches would depend on it
// read it on the device instead (attention writes its cache rows and
// attends at *past, stored before each step): a segment whose kernels all
// do (Kernel::launches_depend_on_past) and whose shapes have no P in them
// is keyed on T and its tensors' bindings only, and is replayed unchanged
// step after step.  Any other segment is captured again when its key
// changes (the host work of capturing is that of launching), and the
// instantiated graph is updated in place with cudaGraphExecUpdate, which is
// much cheaper than instantiating.  When the topology changes (another path
// was chosen) the graph is instantiated anew; when a step cannot be
// captured at all, the executable falls back to launching node by node for
// good.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "device.h"

namespace moert::cuda {

// The most tokens a step may have to run as a graph: decode and short
// speculative steps, whose scratch memory is small (a graph keeps its
// scratch allocated while it may be replayed).
inline constexpr int64_t kGraphMaxTokens = 8;
// Nodes per graph: enough to amortise a graph launch (a few microseconds),
// few enough that the GPU starts on a step while the host captures the rest.
inline constexpr size_t kGraphSegmentSteps = 48;

class StepGraph {
 public:
  StepGraph() = default;
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Whether this graph is still in use.
  bool enabled() const { return enabled_; }
  // Why it was turned off ("" while enabled).
  const std::string& disabled_reason() const { return disabled_reason_; }
  // Turns it off for good (another segment of the step cannot be captured).
  void disable(const std::string& why);

  // Runs one step on `d`'s stream.  `key` identifies the step's launches
  // (the same key launches the same kernels with the same arguments);
  // `enqueue(keep)` enqueues the step's work, putting its scratch memory in
  // `keep`.  Returns false when the step could not be captured: nothing was
  // enqueued, graphs are now disabled, and the caller runs it node by node.
  // Throws what enqueue throws (nothing is enqueued then either).
  bool run(Device& d, const std::vector<uint64_t>& key,
           const std::function<void(std::vector<DeviceBlock>* keep)>& enqueue);

 private:
  bool enabled_ = true;
  std::string disabled_reason_;
  std::vector<uint64_t> key_;
  cudaGraphExec_t exec_ = nullptr;
  std::vector<DeviceBlock> scratch_;  // what exec_'s kernels use
};

// What the step graphs of this process did, for the tests.
struct StepGraphStats {
  std::atomic<uint64_t> instantiated{0}, updated{0}, replayed{0}, disabled{0};
};
StepGraphStats& step_graph_stats();

}  // namespace moert::cuda
