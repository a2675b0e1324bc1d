#include "step_graph.h"

#include <algorithm>
#include <memory>

#include "kernel.h"
#include "kernels/launch.h"
#include "kit/executable.h"
#include "options.h"

namespace moert::cuda {

StepGraph::~StepGraph() {
  if (exec_) cudaGraphExecDestroy(exec_);
}

namespace {

// Ends a capture that an exception interrupted; true when the capture had
// been invalidated by a call it does not allow.
bool end_failed_capture(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(stream, &status);
  cudaGraph_t partial = nullptr;
  cudaStreamEndCapture(stream, &partial);
  if (partial) cudaGraphDestroy(partial);
  cudaGetLastError();  // the capture's error is reported by the caller
  return status == cudaStreamCaptureStatusInvalidated;
}

}  // namespace

StepGraphStats& step_graph_stats() {
  static StepGraphStats stats;
  return stats;
}

void StepGraph::disable(const std::string& why) {
  if (!enabled_) return;
  ++step_graph_stats().disabled;
  enabled_ = false;
  disabled_reason_ = why;
  if (exec_) cudaGraphExecDestroy(exec_);
  exec_ = nullptr;
  key_.clear();
  // Launches of the old graph may still be queued: the pool hands this
  // memory out again only to work that runs after them on the same stream.
  scratch_.clear();
}

bool StepGraph::run(Device& d, const std::vector<uint64_t>& key,
                    const std::function<void(std::vector<DeviceBlock>* keep)>& enqueue) {
  if (!enabled_) return false;
  cudaStream_t stream = d.stream();
  if (exec_ && key == key_) {
    check_cuda(cudaGraphLaunch(exec_, stream), "replaying the step's CUDA graph");
    ++step_graph_stats().replayed;
    return true;
  }

  // Relaxed: the pool may call cudaMalloc while a step is captured.
  check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed),
             "starting to capture a CUDA graph");
  std::vector<DeviceBlock> kept;
  try {
    enqueue(&kept);
  } catch (const std::exception& e) {
    // A call the capture does not allow (one that synchronises) invalidates
    // it and fails; anything else is the step's own error (a context
    // overflow), thrown on with nothing enqueued.
    if (!end_failed_capture(stream)) throw;
    disable(std::string("a call of the step cannot be captured: ") + e.what());
    return false;
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (ended != cudaSuccess || !graph) {
    // Something in the step cannot be captured (an implicitly synchronising
    // call); nothing was enqueued.
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    disable("capturing the step failed: " + cuda_error_text(ended));
    return false;
  }

  bool ready = false;
  if (exec_) {
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(exec_, graph, &info) == cudaSuccess) {
      ready = true;
      ++step_graph_stats().updated;
    } else {
      cudaGetLastError();  // another topology: instantiate anew below
      cudaGraphExecDestroy(exec_);
      exec_ = nullptr;
    }
  }
  if (!ready) {
    const cudaError_t made = cudaGraphInstantiate(&exec_, graph, 0);
    if (made != cudaSuccess) {
      exec_ = nullptr;
      cudaGraphDestroy(graph);
      cudaGetLastError();
      disable("instantiating the step's graph failed: " + cuda_error_text(made));
      return false;
    }
    ++step_graph_stats().instantiated;
  }
  cudaGraphDestroy(graph);
  key_ = key;
  // The previous graph's scratch may still be in use by launches queued on
  // the stream; released now, the pool gives it only to later work.
  scratch_ = std::move(kept);
  check_cuda(cudaGraphLaunch(exec_, stream), "launching the step's CUDA graph");
  return true;
}

// ---------------------------------------------------------------------------
// The executable's side: planning the segments at prepare, and running a
// step through their graphs.

Backend::Plan::Plan() = default;
Backend::Plan::~Plan() = default;
Backend::Plan::Plan(Plan&&) noexcept = default;
Backend::Plan& Backend::Plan::operator=(Plan&&) noexcept = default;

void Backend::planned(kit::Executable<Backend>& exe) {
  Device& d = *exe.device;
  Plan& plan = exe.plan;
  const size_t segments = (exe.steps.size() + kGraphSegmentSteps - 1) / kGraphSegmentSteps;
  for (size_t i = 0; i < segments; ++i) {
    plan.graphs.push_back(std::make_unique<StepGraph>());
    bool uses_past = false;
    std::vector<uint32_t> tensors;
    for (size_t n = i * kGraphSegmentSteps;
         n < std::min(exe.steps.size(), (i + 1) * kGraphSegmentSteps); ++n) {
      const auto& step = exe.steps[n];
      uses_past = uses_past || step.past_in_shapes || step.kernel->launches_depend_on_past(true);
      for (const std::vector<uint32_t>* list : {&step.inputs, &step.outputs})
        for (uint32_t t : *list)
          if (t != MOERT_NO_TENSOR && exe.tensors[t].kind != MOERT_TENSOR_CONSTANT)
            tensors.push_back(t);
    }
    std::sort(tensors.begin(), tensors.end());
    tensors.erase(std::unique(tensors.begin(), tensors.end()), tensors.end());
    plan.segment_uses_past.push_back(uses_past);
    plan.segment_tensors.push_back(std::move(tensors));
  }
  plan.step_past = DeviceBlock(d, sizeof(int64_t), "the step's past-token count");
  // The constants' uploads read host memory that is only valid during prepare.
  d.synchronize("uploading the constants");
}

void Backend::freeing(kit::Executable<Backend>& exe) {
  // Work still queued may use the executable's memory.
  exe.device->activate();
  cudaStreamSynchronize(exe.device->stream());
}

namespace {

// What a segment's launches depend on: T, P where `past` (a kernel or a
// shape of the segment depends on it), and the binding of every tensor the
// segment reads or writes (the constants' are fixed for the executable's
// life), with its buffer's size, so that a replay, which skips bind()'s
// range checks, sees exactly the bindings its capture checked.
void segment_key(const moert_execute_args& args, const Symbols& symbols,
                 const std::vector<uint32_t>& tensors, bool past, std::vector<uint64_t>* key) {
  key->clear();
  key->push_back(static_cast<uint64_t>(symbols.tokens));
  if (past) key->push_back(static_cast<uint64_t>(symbols.past));
  for (uint32_t t : tensors) {
    const moert_buffer_view& v = args.views[t];
    key->push_back(v.buffer ? reinterpret_cast<uint64_t>(v.buffer->handle) + v.offset : 0);
    key->push_back(v.buffer ? v.buffer->bytes : 0);
  }
}

// Enqueues nodes [begin, end) with the graph state of the capture (or none).
void enqueue_steps(kit::Executable<Backend>& exe, const moert_execute_args& args,
                   const Symbols& symbols, size_t begin, size_t end, double* times,
                   std::vector<DeviceBlock>* keep, const int64_t* device_past) {
  for (size_t s = begin; s < end; ++s) {
    exe.steps[s].ctx.keep = keep;
    exe.steps[s].ctx.device_past = device_past;
  }
  try {
    exe.run_steps(args, symbols, begin, end, times);
  } catch (...) {
    for (size_t s = begin; s < end; ++s) exe.steps[s].ctx.keep = nullptr;
    throw;
  }
  for (size_t s = begin; s < end; ++s) exe.steps[s].ctx.keep = nullptr;
}

}  // namespace

void Backend::execute(kit::Executable<Backend>& exe, const moert_execute_args& args,
                      const Symbols& symbols, double* times) {
  Device& d = *exe.device;
  d.activate();
  Plan& plan = exe.plan;
  // A profiled run times each node, so it runs node by node.
  size_t done = 0;  // nodes enqueued
  const size_t total = exe.steps.size();
  if (!times && symbols.tokens <= kGraphMaxTokens && graphs_enabled() && !plan.graphs.empty() &&
      plan.graphs.front()->enabled()) {
    // A replayed segment runs no run(): its P checks first, then P for the
    // kernels that read it on the device.
    for (const auto& step : exe.steps) {
      try {
        step.kernel->check_past(symbols.past);
      } catch (const plugin::Failure& e) {
        plugin::fail(step.where + ": " + e.what(), e.status());
      }
    }
    int64_t* device_past = plan.step_past.as<int64_t>();
    launch::store_int64(d.stream(), device_past, symbols.past);
    std::vector<uint64_t> key;
    for (size_t g = 0; g < plan.graphs.size() && done < total; ++g) {
      const size_t end = std::min(total, done + kGraphSegmentSteps);
      segment_key(args, symbols, plan.segment_tensors[g], plan.segment_uses_past[g], &key);
      const bool ok = plan.graphs[g]->run(d, key, [&](std::vector<DeviceBlock>* keep) {
        enqueue_steps(exe, args, symbols, done, end, nullptr, keep, device_past);
      });
      if (!ok) {  // this segment cannot be captured: none of them run as graphs
        for (auto& other : plan.graphs) other->disable(plan.graphs[g]->disabled_reason());
        break;
      }
      done = end;
    }
  }
  if (times) d.synchronize("waiting before a profiled run");
  enqueue_steps(exe, args, symbols, done, total, times, nullptr, nullptr);
}

}  // namespace moert::cuda
