// The CUDA backend's kernel interface: the plugin kit's (backends/common/kit)
// over device memory.  Each op family is one file of ops/ that registers
// KernelDefs: a check (can this node, with these dtypes,
// shapes and attributes, run here?) and a factory that builds the node's
// Kernel at prepare.  At execute, Kernel::run() sees every input and output
// bound to device memory with its shape resolved for this call's T and P,
// and enqueues its work on the device's stream (kernels/launch.h).
//
// Errors only the device can see (an id out of range, a non-finite router
// logit) go through error slots: a kernel that reserves slots at create gets
// a 64-bit word per slot in the executable's error array; a device kernel
// records a failure with atomicMin(&slot, position), so the smallest failing
// position wins, as in the reference kernels' loops.  The executable reads
// the slots after each execute and the kernel formats the message
// (describe_error), reading the offending element back if it wants.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "kit/buffers.h"
#include "kit/device.h"
#include "kit/kernel.h"
#include "plugin_support.h"

namespace moert::cuda {

using namespace kit::names;

// The value of an error slot that recorded nothing.
inline constexpr unsigned long long kNoError = std::numeric_limits<unsigned long long>::max();

// A tensor bound for one execution: dense, row-major device memory.
struct Tensor : kit::TensorShape {
  void* data = nullptr;
  bool bound = false;  // false: an absent optional input

  bool present() const { return bound; }
  char* bytes() const { return static_cast<char*>(data); }
};

// The backend's part of a kernel's PrepareContext (nothing beyond the kit's).
struct PrepareBase {
  explicit PrepareBase(Device& device) { device.activate(); }
};

// The backend's part of a kernel's ExecContext: the stream, scratch memory,
// error slots and P on the device.
class ExecBase {
 public:
  explicit ExecBase(Device& device) : device_(&device) {}
  Device& device() const { return *device_; }
  cudaStream_t stream() const { return device_->stream(); }

  unsigned long long* errors = nullptr;  // the executable's error slots (device)
  unsigned long long* error_slot(int index) const { return errors + index; }

  // Scratch device memory for this node's run, back in the pool when the
  // block is destroyed (work already enqueued on the stream still sees it:
  // the next user of the memory runs after it on the same stream).  While a
  // step is captured into a CUDA graph the memory must outlive the call, as
  // the graph is replayed later: the block then goes to `keep` (owned by the
  // graph) and the caller gets a view of it.
  DeviceBlock scratch(uint64_t bytes, const std::string& what) const {
    if (!keep) return DeviceBlock(*device_, bytes, what);
    keep->emplace_back(*device_, bytes, what);
    return DeviceBlock::borrow(keep->back());
  }
  std::vector<DeviceBlock>* keep = nullptr;  // set while capturing a graph
  // Set for graph steps: this call's P on the device (see
  // Kernel::launches_depend_on_past); symbols.past holds it on the host.
  const int64_t* device_past = nullptr;
  // Copies between device memory on the stream (regions may not overlap).
  void copy(void* dst, const void* src, uint64_t bytes) const;
  // Reads bytes back to the host (waits for the stream).
  void read(void* dst, const void* src, uint64_t bytes) const;

 private:
  Device* device_;
};

class StepGraph;
}  // namespace moert::cuda
namespace moert::kit {
template <class B>
class Executable;
}  // namespace moert::kit
namespace moert::cuda {

inline constexpr char kCudaDevice[] = "CUDA";  // in messages: "no CUDA device 3"

// The CUDA backend as the kit sees it; cuda_plugin.cpp defines the device
// functions and step_graph.cpp the CUDA-graph execution (planned, execute).
struct Backend : kit::ListedDevices<cuda::Device, kCudaDevice> {
  static constexpr const char* kName = "cuda";
  static constexpr const char* kVersion =
      "moert CUDA " MOERT_CUDA_PLUGIN_VERSION " (kernels for " MOERT_CUDA_ARCHITECTURES ")";
  static constexpr bool kCopyMayOverlap = false;  // cudaMemcpy leaves overlap undefined
  using Device = cuda::Device;
  using Tensor = cuda::Tensor;
  using Constant = DeviceBlock;  // uploaded once; the executable owns it
  using ExecBase = cuda::ExecBase;
  using PrepareBase = cuda::PrepareBase;
  // A 64-bit word per slot; a device kernel records with atomicMin.
  struct ErrorSlots {
    DeviceBlock slots;
    std::shared_ptr<unsigned long long> host;  // pinned mirror
    int count = 0;
    void allocate(Device& d, int n);
    void attach(ExecBase& ctx) const { ctx.errors = slots.as<unsigned long long>(); }
    std::vector<int64_t> read(Device& d);
    void clear(Device& d);
  };
  // Decode steps as CUDA graphs, one per segment of kGraphSegmentSteps nodes.
  struct Plan {
    std::vector<std::unique_ptr<StepGraph>> graphs;
    // Whether a segment's launches depend on P (then it is captured again as
    // P grows; otherwise replayed unchanged, reading P from step_past).
    std::vector<bool> segment_uses_past;
    // The tensors each segment's nodes read or write (their bindings key it).
    std::vector<std::vector<uint32_t>> segment_tensors;
    DeviceBlock step_past;  // int64: P of the graph step running
    Plan();
    ~Plan();
    Plan(Plan&&) noexcept;
    Plan& operator=(Plan&&) noexcept;
  };

  static void init();
  static void describe(Device& d, kit::DeviceDescription& out);
  MOERT_KIT_DEVICE_HOOKS(Device, Constant);
  static void bind_constant(Tensor& t, const Constant& c) {
    t.data = c.get();
    t.bound = true;
  }
  static void bind_buffer(Tensor& t, const moert_buffer_impl& b, uint64_t offset) {
    t.data = static_cast<char*>(b.handle) + offset;
    t.bound = true;
  }
  // step_graph.cpp: the segments' graphs, and execution through them.
  static void planned(kit::Executable<Backend>& exe);
  static void execute(kit::Executable<Backend>& exe, const moert_execute_args& args,
                      const Symbols& symbols, double* times);
  static void freeing(kit::Executable<Backend>& exe);
};

MOERT_KIT_KERNEL_NAMES(Backend)

// Why node `n` of `g` cannot run on this backend (on no device in particular),
// or "" when it can.
inline std::string unsupported_reason(const moert_graph_desc& g, size_t n) {
  return kit::unsupported_reason<Backend>(g, n, nullptr);
}

// Helpers shared by the op files.
// Element `i` of a bound tensor, read back from the device and widened (for
// error messages; waits for the stream).
double read_element(const ExecContext& ctx, const Tensor& t, int64_t i);

}  // namespace moert::cuda
