// The OpenCL backend's kernel interface: the plugin kit's
// (backends/common/kit) over cl_mem buffers.  Each op family is one file of
// ops/ that registers KernelDefs: a check (can this node, with these dtypes,
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
#include "kit/buffers.h"
#include "kit/device.h"
#include "kit/kernel.h"
#include "plugin_support.h"

namespace moert::ocl {

using namespace kit::names;

// The value of an error slot that recorded nothing.
inline constexpr int32_t kNoError = std::numeric_limits<int32_t>::max();

// A tensor bound for one execution: dense, row-major, at `offset` bytes into
// `mem`.
struct Tensor : kit::TensorShape {
  cl_mem mem = nullptr;  // nullptr: an absent optional input
  uint64_t offset = 0;

  bool present() const { return mem != nullptr; }
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

// The backend's part of a kernel's PrepareContext: its programs.
class PrepareBase {
 public:
  explicit PrepareBase(Device& device) : device_(&device) {}
  // A kernel object from kernels/<file>.
  ClKernel kernel(const std::string& file, const char* name,
                  const std::string& extra_options = "") const {
    return ClKernel(device_->kernel(file, name, extra_options));
  }

 private:
  Device* device_;
};

// The backend's part of a kernel's ExecContext: the queue and launch helpers.
class ExecBase {
 public:
  explicit ExecBase(Device& device) : device_(&device) {}
  Device& device() const { return *device_; }
  cl_command_queue queue() const { return device_->queue(); }

  cl_mem errors = nullptr;       // the executable's error slots (int32 each)
  cl_mem placeholder = nullptr;  // a small buffer standing in for absent tensors

  Args args(const ClKernel& k) const { return Args(k.get(), placeholder); }
  // Scratch device memory for this node's run: the node's until the block
  // goes (work already enqueued still sees it; kit/scratch.h).
  Device::ScratchBlock scratch(uint64_t bytes, const std::string& what) const {
    return device_->scratch(bytes, what);
  }
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

inline constexpr char kOpenclDevice[] = "OpenCL";  // in messages: "no OpenCL device 3"

// The OpenCL backend as the kit sees it; opencl_plugin.cpp defines the
// functions.
struct Backend : kit::ListedDevices<ocl::Device, kOpenclDevice> {
  static constexpr const char* kName = "opencl";
  static constexpr const char* kVersion = "moert OpenCL " MOERT_OPENCL_PLUGIN_VERSION;
  static constexpr bool kCopyMayOverlap = false;
  using Device = ocl::Device;
  using Tensor = ocl::Tensor;
  using Constant = ClBuffer;  // uploaded, or wrapping the host bytes on a CPU device
  using ExecBase = ocl::ExecBase;
  using PrepareBase = ocl::PrepareBase;
  // An int32 per slot; a device kernel records with atomic_min.
  struct ErrorSlots {
    ClBuffer slots;
    int count = 0;
    void allocate(Device& d, int n);
    void attach(ExecBase& ctx) const { ctx.errors = slots.get(); }
    std::vector<int64_t> read(Device& d);
    void clear(Device& d);
  };
  struct Plan {
    ClBuffer placeholder;  // bound for absent tensors
  };

  static void init();
  static void describe(Device& d, kit::DeviceDescription& out);
  MOERT_KIT_DEVICE_HOOKS(Device, Constant);
  static void bind_constant(Tensor& t, const Constant& c) { t.mem = c.get(); }
  static void bind_buffer(Tensor& t, const moert_buffer_impl& b, uint64_t offset) {
    t.mem = static_cast<cl_mem>(b.handle);
    t.offset = offset;
  }
  template <class Executable>
  static void planned(Executable& exe) {
    exe.plan.placeholder = ClBuffer(exe.device->allocate(64));
    for (auto& step : exe.steps) step.ctx.placeholder = exe.plan.placeholder.get();
  }
};

MOERT_KIT_KERNEL_NAMES(Backend)

// Helpers shared by the op files.
// Element `i` of a bound tensor, read back from the device and widened (for
// error messages: the queue must be idle).
double read_element(const ExecContext& ctx, const Tensor& t, int64_t i);

}  // namespace moert::ocl
