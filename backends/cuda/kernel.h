// The CUDA backend's kernel interface.  Each op family is one file of ops/
// that registers KernelDefs: a check (can this node, with these dtypes,
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
#include "plugin_support.h"

namespace moert::cuda {

using plugin::fail;
using plugin::NodeDesc;
using plugin::require;
using plugin::Symbols;
using plugin::TensorDesc;

// The value of an error slot that recorded nothing.
inline constexpr unsigned long long kNoError = std::numeric_limits<unsigned long long>::max();

// A tensor bound for one execution: dense, row-major device memory.
struct Tensor {
  moert_dtype dtype = MOERT_DTYPE_F32;
  uint32_t rank = 0;
  std::array<int64_t, MOERT_MAX_RANK> shape{};
  void* data = nullptr;
  bool bound = false;  // false: an absent optional input

  bool present() const { return bound; }
  int64_t numel() const {
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  // Dim i; negative i counts from the end.
  int64_t dim(int i) const {
    return shape[static_cast<size_t>(i < 0 ? i + static_cast<int>(rank) : i)];
  }
  // The number of rows of a [..., N] tensor.
  int64_t rows() const { return rank == 0 ? 1 : (dim(-1) ? numel() / dim(-1) : 0); }
  uint64_t elem_size() const { return plugin::dtype_size(dtype); }
  uint64_t nbytes() const { return static_cast<uint64_t>(numel()) * elem_size(); }
  char* bytes() const { return static_cast<char*>(data); }
};

class ExecContext;

class Kernel {
 public:
  virtual ~Kernel() = default;
  // Enqueues the node's work.  Throws plugin::Failure on bad input found on
  // the host (a context overflow); the caller prefixes the node's name.
  virtual void run(ExecContext& ctx) = 0;
  // The message for error slot `slot` (0-based within this kernel's slots)
  // having recorded `position`; `ctx` is bound as in the failing run and the
  // stream is idle.
  virtual std::string describe_error(ExecContext& ctx, int slot, int64_t position) {
    (void)ctx;
    return "device kernel error " + std::to_string(slot) + " at position " +
           std::to_string(position);
  }
  // Whether run() enqueues different work for another past-token count P
  // (beyond what the shapes of its tensors say, which the executable checks
  // itself).  `device_past`: ExecContext::device_past is set, and a kernel
  // that reads P from there instead answers false.  A CUDA graph of steps
  // that all answer false is replayed unchanged as P grows.
  virtual bool launches_depend_on_past(bool device_past) const {
    (void)device_past;
    return false;
  }
  // The host-side checks of run() that depend on P (a context overflow),
  // made before a graph is replayed without calling run().
  virtual void check_past(int64_t past) const { (void)past; }
};

// What a kernel factory gets at prepare.
class PrepareContext {
 public:
  PrepareContext(Device& device, const NodeDesc& node, int error_base)
      : device_(device), node_(node), error_base_(error_base) {}
  Device& device() const { return device_; }
  const NodeDesc& node() const { return node_; }
  // Reserves `count` error slots; returns the first one's index in the
  // executable's error array (ExecContext::error_slot turns it into a pointer).
  int reserve_error_slots(int count) {
    const int first = error_base_ + error_slots_;
    error_slots_ += count;
    return first;
  }
  int error_slots() const { return error_slots_; }

 private:
  Device& device_;
  const NodeDesc& node_;
  int error_base_;
  int error_slots_ = 0;
};

class ExecContext {
 public:
  explicit ExecContext(Device& device) : device_(&device) {}
  Device& device() const { return *device_; }
  cudaStream_t stream() const { return device_->stream(); }

  std::vector<Tensor> inputs;  // absent optional inputs: bound == false
  std::vector<Tensor> outputs;
  Symbols symbols;
  unsigned long long* errors = nullptr;  // the executable's error slots (device)

  bool has(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const Tensor& in(size_t i) const { return inputs[i]; }
  const Tensor& out(size_t i) const { return outputs[i]; }
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

struct KernelDef {
  const char* op;
  // Empty when the node can run here; otherwise the reason it cannot
  // (reported by supports_node and in the runtime's fallback list).  Looks
  // at the description only, so it needs no device.
  std::string (*check)(const NodeDesc& node);
  // Builds the node's kernel; called only for nodes check() accepted.
  std::unique_ptr<Kernel> (*create)(PrepareContext& ctx);
};

const KernelDef* find_kernel(const char* op);
void register_kernel(const KernelDef& def);
// Every registered op name, for the testing interface.
std::vector<std::string> kernel_ops();

struct KernelRegistration {
  explicit KernelRegistration(const KernelDef& def) { register_kernel(def); }
};

// Why node `n` of `g` cannot run on this backend, or "" when it can.
std::string unsupported_reason(const moert_graph_desc& g, size_t n);

// Helpers shared by the op files.
inline bool is_activation(moert_dtype t) {
  return t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_BF16 || t == MOERT_DTYPE_F16;
}
inline bool is_weight_dtype(moert_dtype t) { return is_activation(t) || t == MOERT_DTYPE_F8_E4M3; }
inline bool is_float(moert_dtype t) { return plugin::dtype_is_float(t); }
inline bool is_index(moert_dtype t) { return t == MOERT_DTYPE_I32 || t == MOERT_DTYPE_I64; }
inline std::string dtype_str(moert_dtype t) { return plugin::dtype_name(t); }
// Resolves an axis attribute that may count from the end.
inline size_t resolve_axis(int64_t axis, size_t rank) {
  return static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis);
}
// Product of dims [begin, end) of a bound tensor.
inline int64_t prod(const Tensor& t, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= t.shape[i];
  return n;
}
// "[2, 3]" of a bound tensor's shape, for messages.
std::string shape_str(const Tensor& t);
// A number as the reference kernels print it in messages ("nan", "1.5").
std::string number_str(double v);
// Element `i` of a bound tensor, read back from the device and widened (for
// error messages; waits for the stream).
double read_element(const ExecContext& ctx, const Tensor& t, int64_t i);

}  // namespace moert::cuda
