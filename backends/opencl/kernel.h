// The OpenCL backend's kernel interface.  Each op family is one file of ops/
// that registers KernelDefs: a check (can this node, with these dtypes,
// shapes and attributes, run on this device?) and a factory that builds the
// node's Kernel at prepare, when it creates its cl_kernel objects (building
// the programs they come from) and may read constant inputs.  At execute,
// Kernel::run() sees every input and output bound to a device buffer and a
// byte offset, with its shape resolved for this call's T and P, and enqueues
// its work on the device's in-order queue.
//
// Errors that only the device can see (an id out of range in a device
// buffer, a non-finite router logit) are reported through error slots: a
// kernel that asks for slots at create gets an int per slot in a buffer the
// executable reads back after each execute.  A device kernel records a
// failure with atomic_min(&errors[slot], position), so the smallest failing
// position wins, as in the reference kernels' loops; the host then formats
// the message (describe_error) and may read the offending value back.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "plugin_support.h"

namespace moert::ocl {

using plugin::fail;
using plugin::NodeDesc;
using plugin::require;
using plugin::Symbols;
using plugin::TensorDesc;

// The value of an error slot that recorded nothing.
inline constexpr int32_t kNoError = std::numeric_limits<int32_t>::max();

// A tensor bound for one execution: dense, row-major, at `offset` bytes into
// `mem`.
struct Tensor {
  moert_dtype dtype = MOERT_DTYPE_F32;
  uint32_t rank = 0;
  std::array<int64_t, MOERT_MAX_RANK> shape{};
  cl_mem mem = nullptr;  // nullptr: an absent optional input
  uint64_t offset = 0;

  bool present() const { return mem != nullptr; }
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
};

// An owned cl_kernel.
class ClKernel {
 public:
  ClKernel() = default;
  explicit ClKernel(cl_kernel k) : k_(k) {}
  ~ClKernel() {
    if (k_) clReleaseKernel(k_);
  }
  ClKernel(ClKernel&& o) noexcept : k_(o.k_) { o.k_ = nullptr; }
  ClKernel& operator=(ClKernel&& o) noexcept {
    if (this != &o) {
      if (k_) clReleaseKernel(k_);
      k_ = o.k_;
      o.k_ = nullptr;
    }
    return *this;
  }
  ClKernel(const ClKernel&) = delete;
  ClKernel& operator=(const ClKernel&) = delete;
  cl_kernel get() const { return k_; }
  explicit operator bool() const { return k_ != nullptr; }

 private:
  cl_kernel k_ = nullptr;
};

// An owned cl_mem.
class ClBuffer {
 public:
  ClBuffer() = default;
  explicit ClBuffer(cl_mem m) : m_(m) {}
  ~ClBuffer() {
    if (m_) clReleaseMemObject(m_);
  }
  ClBuffer(ClBuffer&& o) noexcept : m_(o.m_) { o.m_ = nullptr; }
  ClBuffer& operator=(ClBuffer&& o) noexcept {
    if (this != &o) {
      if (m_) clReleaseMemObject(m_);
      m_ = o.m_;
      o.m_ = nullptr;
    }
    return *this;
  }
  ClBuffer(const ClBuffer&) = delete;
  ClBuffer& operator=(const ClBuffer&) = delete;
  cl_mem get() const { return m_; }

 private:
  cl_mem m_ = nullptr;
};

// Sets a kernel's arguments in order:
//   Args(k).tensor(x).tensor(y).i64(n);
// A tensor is two arguments: the buffer and the byte offset (ulong).  An
// absent tensor passes a placeholder buffer so the kernel signature holds.
class Args {
 public:
  explicit Args(cl_kernel k, cl_mem placeholder = nullptr) : k_(k), placeholder_(placeholder) {}
  Args& mem(cl_mem m) { return set(sizeof(cl_mem), &m); }
  Args& tensor(const Tensor& t) {
    mem(t.present() ? t.mem : placeholder_);
    return u64(t.offset);
  }
  Args& i32(int32_t v) { return set(sizeof(v), &v); }
  Args& u32(uint32_t v) { return set(sizeof(v), &v); }
  Args& i64(int64_t v) {
    const cl_long x = v;
    return set(sizeof(x), &x);
  }
  Args& u64(uint64_t v) {
    const cl_ulong x = v;
    return set(sizeof(x), &x);
  }
  Args& f32(float v) { return set(sizeof(v), &v); }
  Args& f64(double v) { return set(sizeof(v), &v); }
  Args& long8(const std::array<int64_t, 8>& v) {
    cl_long8 x;
    for (size_t i = 0; i < 8; ++i) x.s[i] = v[i];
    return set(sizeof(x), &x);
  }
  Args& local(size_t bytes) { return set(bytes, nullptr); }

 private:
  Args& set(size_t size, const void* value);
  cl_kernel k_;
  cl_mem placeholder_;
  cl_uint index_ = 0;
};

class ExecContext;

class Kernel {
 public:
  virtual ~Kernel() = default;
  // Enqueues the node's work.  Throws plugin::Failure on bad input found on
  // the host (a context overflow); the caller prefixes the node's name.
  virtual void run(ExecContext& ctx) = 0;
  // The message for error slot `slot` (0-based within this kernel's slots)
  // having recorded `position`; `ctx` is bound as in the failing run.
  virtual std::string describe_error(ExecContext& ctx, int slot, int32_t position) {
    (void)ctx;
    return "device kernel error " + std::to_string(slot) + " at position " +
           std::to_string(position);
  }
};

// What a kernel factory gets at prepare.
class PrepareContext {
 public:
  PrepareContext(Device& device, const NodeDesc& node, int error_base)
      : device_(device), node_(node), error_base_(error_base) {}
  Device& device() const { return device_; }
  const NodeDesc& node() const { return node_; }
  // A kernel object from kernels/<file>.
  ClKernel kernel(const std::string& file, const char* name,
                  const std::string& extra_options = "") const {
    return ClKernel(device_.kernel(file, name, extra_options));
  }
  // Reserves `count` error slots for this node; returns the first one's
  // index in the executable's error buffer (pass it to the kernel).
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
  cl_command_queue queue() const { return device_->queue(); }

  std::vector<Tensor> inputs;  // absent optional inputs: mem == nullptr
  std::vector<Tensor> outputs;
  Symbols symbols;
  cl_mem errors = nullptr;       // the executable's error slots (int32 each)
  cl_mem placeholder = nullptr;  // a small buffer standing in for absent tensors

  bool has(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const Tensor& in(size_t i) const { return inputs[i]; }
  const Tensor& out(size_t i) const { return outputs[i]; }

  Args args(const ClKernel& k) const { return Args(k.get(), placeholder); }
  // Enqueues `k` over `global` work-items (each rounded up to a multiple of
  // the matching `local` size).  A zero-sized range enqueues nothing.
  void launch(const ClKernel& k, std::initializer_list<size_t> global,
              std::initializer_list<size_t> local) const;
  // Copies bytes between buffers on the queue (regions may not overlap).
  void copy(cl_mem src, uint64_t src_offset, cl_mem dst, uint64_t dst_offset, uint64_t bytes) const;
  // Reads bytes back to the host (blocking).
  void read(cl_mem src, uint64_t offset, void* dst, uint64_t bytes) const;

 private:
  Device* device_;
};

struct KernelDef {
  const char* op;
  // Empty when the node can run on `device`; otherwise the reason it cannot
  // (reported by supports_node and in the runtime's fallback list).
  std::string (*check)(const NodeDesc& node, const Device& device);
  // Builds the node's kernel; called only for nodes check() accepted.
  std::unique_ptr<Kernel> (*create)(PrepareContext& ctx);
};

const KernelDef* find_kernel(const char* op);
void register_kernel(const KernelDef& def);

struct KernelRegistration {
  explicit KernelRegistration(const KernelDef& def) { register_kernel(def); }
};

// Scratch slots of Device::scratch, one per buffer a node may hold at once.
enum ScratchSlot : int {
  kScratchGemmX,    // gemm.h: x as f32, or packed panels of x^T
  kScratchMatmulB,  // matmul's b transposed to [batch, N, K]
  kScratchRouter,   // router scores
  kScratchMoeX,     // moe: x as f32
  kScratchMoeH,     // moe: swiglu activations per (token, slot)
  kScratchMoeSharedH,
  kScratchMoeGates,   // moe: shared expert gate per token
  kScratchMoeAcc,     // moe: routed sum in f32
  kScratchMoeRoute,   // moe: the grouping of (token, slot) pairs by expert
  kScratchMoeXp,      // moe: packed panels of x per expert
  kScratchMoeG,       // moe: gate outputs, then activations, in panels
  kScratchMoeU,       // moe: up outputs in panels
  kScratchMoeY,       // moe: down outputs in panels
  kScratchMoeShared,  // moe: shared expert intermediates
  kScratchRope,       // rope: cos and sin per (token, pair)
};

// Helpers shared by the op files.
inline bool is_weight_dtype(moert_dtype t) {
  return t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_BF16 || t == MOERT_DTYPE_F16 ||
         t == MOERT_DTYPE_F8_E4M3;
}
inline bool is_activation(moert_dtype t) {
  return t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_BF16 || t == MOERT_DTYPE_F16;
}
inline bool is_float(moert_dtype t) { return plugin::dtype_is_float(t); }
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
// Element `i` of a bound tensor, read back from the device and widened (for
// error messages: the queue must be idle).
double read_element(const ExecContext& ctx, const Tensor& t, int64_t i);

}  // namespace moert::ocl
