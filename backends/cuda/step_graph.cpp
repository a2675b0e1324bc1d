#include "step_graph.h"

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

}  // namespace moert::cuda
