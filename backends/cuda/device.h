// The CUDA devices of this plugin: every device the runtime reports whose
// compute capability the kernels were built for.  Each has one stream (all
// of a device's work, copies included, is ordered on it), a pooled
// allocator, a cuBLASLt handle with its workspace, and the GEMM plan cache.
// CUDA and cuBLAS status codes become moert statuses here.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gemm_plan.h"
#include "memory_pool.h"
#include "plugin_support.h"

namespace moert::cuda {

// "cudaErrorNoDevice (no CUDA-capable device is detected)".
std::string cuda_error_text(cudaError_t e);

// Throws plugin::Failure for a CUDA error: an allocation failure is
// MOERT_ERR_OUT_OF_MEMORY, anything else MOERT_ERR_DEVICE.  The error is
// cleared first, so a later call does not report it again (sticky errors,
// such as an illegal address, persist in the driver regardless).
[[noreturn]] void fail_cuda(cudaError_t e, const std::string& what);
inline void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) fail_cuda(e, what);
}
// After a kernel launch: reports a bad launch configuration at once.
void check_launch(const char* kernel);
void check_blas(cublasStatus_t s, const std::string& what);

struct DeviceCaps {
  std::string name;
  int major = 0, minor = 0;
  int multiprocessors = 0;
  uint64_t total_memory = 0;
  size_t shared_memory_per_block = 0;
  int max_threads_per_block = 0;
  bool bf16_tensor_cores = false;  // sm_80 and newer

  std::string summary() const;  // one line: "sm_90, 132 SMs, 139 GiB, ..."
};

struct GemmPlan {
  bool found = false;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

class Device {
 public:
  Device(int index, int ordinal, const DeviceCaps& caps);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  int index() const { return index_; }  // moert's device number
  const DeviceCaps& caps() const { return caps_; }
  std::string label() const { return "cuda:" + std::to_string(index_); }

  // Makes this device current for the calling thread.
  void activate() const;
  cudaStream_t stream();
  cublasLtHandle_t blas();
  PlanCache<GemmPlan>& gemm_plans() { return plans_; }
  // cuBLASLt's workspace, allocated at first use.
  void* gemm_workspace(size_t* bytes);

  // Pooled device memory.  Throws MOERT_ERR_OUT_OF_MEMORY with a message
  // naming `what`, the size and the device's free memory.
  void* allocate(uint64_t bytes, const std::string& what);
  void release(void* p);
  MemoryPool& pool() { return *pool_; }
  // Waits for the stream; throws MOERT_ERR_DEVICE naming `what` on failure.
  void synchronize(const std::string& what);
  // Free and total device memory now.
  void memory_info(uint64_t* free_bytes, uint64_t* total_bytes) const;

 private:
  int index_, ordinal_;
  DeviceCaps caps_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t blas_ = nullptr;
  std::unique_ptr<MemoryPool> pool_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  PlanCache<GemmPlan> plans_;
};

// A block of pooled device memory, returned to the pool on destruction.
class DeviceBlock {
 public:
  DeviceBlock() = default;
  DeviceBlock(Device& d, uint64_t bytes, const std::string& what)
      : device_(&d), data_(d.allocate(bytes, what)), bytes_(bytes) {}
  // A view of memory another block owns (nothing is released on destruction).
  static DeviceBlock borrow(const DeviceBlock& owner) {
    DeviceBlock b;
    b.data_ = owner.data_;
    b.bytes_ = owner.bytes_;
    return b;
  }
  ~DeviceBlock() { reset(); }
  DeviceBlock(DeviceBlock&& o) noexcept : device_(o.device_), data_(o.data_), bytes_(o.bytes_) {
    o.data_ = nullptr;
  }
  DeviceBlock& operator=(DeviceBlock&& o) noexcept {
    if (this != &o) {
      reset();
      device_ = o.device_;
      data_ = o.data_;
      bytes_ = o.bytes_;
      o.data_ = nullptr;
    }
    return *this;
  }
  DeviceBlock(const DeviceBlock&) = delete;
  DeviceBlock& operator=(const DeviceBlock&) = delete;

  void* get() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  uint64_t bytes() const { return bytes_; }
  void reset() {
    if (data_ && device_) device_->release(data_);
    data_ = nullptr;
  }

 private:
  Device* device_ = nullptr;
  void* data_ = nullptr;
  uint64_t bytes_ = 0;
};

// Finds the devices (init); throws MOERT_ERR_NO_DEVICE with the reason when
// there is none this plugin can use.
void discover_devices();
std::vector<std::unique_ptr<Device>>& devices();
Device& device(int32_t index);  // throws for an index out of range

}  // namespace moert::cuda
