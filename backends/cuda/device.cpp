#include "device.h"

#include <cstdio>

#include "kernel.h"
#include "kit/device.h"

namespace moert::cuda {

std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

void fail_cuda(cudaError_t e, const std::string& what) {
  cudaGetLastError();  // clear a non-sticky error
  plugin::fail(what + ": " + cuda_error_text(e),
               e == cudaErrorMemoryAllocation ? MOERT_ERR_OUT_OF_MEMORY : MOERT_ERR_DEVICE);
}

void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_cuda(e, std::string("launching kernel ") + kernel);
}

void check_blas(cublasStatus_t s, const std::string& what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  plugin::fail(what + ": " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")",
               s == CUBLAS_STATUS_ALLOC_FAILED ? MOERT_ERR_OUT_OF_MEMORY : MOERT_ERR_DEVICE);
}

namespace {

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1u << 30));
  return buf;
}

}  // namespace

std::string DeviceCaps::summary() const {
  return "sm_" + std::to_string(major) + std::to_string(minor) + ", " +
         std::to_string(multiprocessors) + " SMs, " + gib(total_memory) + ", " +
         std::to_string(shared_memory_per_block / 1024) + " KiB shared memory per block, " +
         (bf16_tensor_cores ? "bf16 tensor cores" : "no bf16 tensor cores") +
         ", kernels for " MOERT_CUDA_ARCHITECTURES;
}

Device::Device(int index, int ordinal, const DeviceCaps& caps)
    : index_(index), ordinal_(ordinal), caps_(caps) {
  pool_ = std::make_unique<MemoryPool>(
      [this](size_t bytes) -> void* {
        activate();
        void* p = nullptr;
        if (cudaMalloc(&p, bytes) != cudaSuccess) {
          cudaGetLastError();
          return nullptr;
        }
        return p;
      },
      [this](void* p) {
        activate();
        cudaFree(p);
      });
}

Device::~Device() {
  activate();
  if (stream_) cudaStreamSynchronize(stream_);
  if (workspace_) pool_->release(workspace_);
  pool_.reset();
  if (blas_) cublasLtDestroy(blas_);
  if (stream_) cudaStreamDestroy(stream_);
}

void Device::activate() const { cudaSetDevice(ordinal_); }

cudaStream_t Device::stream() {
  if (!stream_) {
    activate();
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
               label() + ": creating a stream");
  }
  return stream_;
}

cublasLtHandle_t Device::blas() {
  if (!blas_) {
    activate();
    check_blas(cublasLtCreate(&blas_), label() + ": creating the cuBLASLt handle");
  }
  return blas_;
}

void* Device::gemm_workspace(size_t* bytes) {
  // 32 MiB: what cuBLASLt's heuristics ask for on Hopper at the most.
  constexpr size_t kWorkspace = size_t{32} << 20;
  if (!workspace_) {
    workspace_ = allocate(kWorkspace, "the cuBLASLt workspace");
    workspace_bytes_ = kWorkspace;
  }
  *bytes = workspace_bytes_;
  return workspace_;
}

void Device::memory_info(uint64_t* free_bytes, uint64_t* total_bytes) const {
  activate();
  size_t f = 0, t = 0;
  if (cudaMemGetInfo(&f, &t) != cudaSuccess) cudaGetLastError();
  *free_bytes = f;
  *total_bytes = t;
}

void* Device::allocate(uint64_t bytes, const std::string& what) {
  void* p = pool_->allocate(static_cast<size_t>(bytes));
  if (p) return p;
  uint64_t free_bytes = 0, total = 0;
  memory_info(&free_bytes, &total);
  plugin::fail("out of memory on " + label() + " allocating " + what + ": " +
                   std::to_string(bytes) + " bytes requested, " + std::to_string(free_bytes) +
                   " bytes free of " + std::to_string(total) + " (this plugin holds " +
                   std::to_string(pool_->in_use_bytes()) + " bytes in use)",
               MOERT_ERR_OUT_OF_MEMORY);
}

void Device::release(void* p) { pool_->release(p); }

void Device::synchronize(const std::string& what) {
  activate();
  check_cuda(cudaStreamSynchronize(stream()), label() + ": " + what);
}

std::vector<std::unique_ptr<Device>>& devices() { return kit::DeviceList<Device>::all(); }

Device& device(int32_t index) { return Backend::device(index); }

void discover_devices() {
  devices().clear();
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    plugin::fail("no CUDA device: cudaGetDeviceCount: " + cuda_error_text(e), MOERT_ERR_NO_DEVICE);
  }
  if (count == 0)
    plugin::fail("no CUDA device: the CUDA driver reports no device", MOERT_ERR_NO_DEVICE);
  std::string skipped;
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    cudaDeviceProp p{};
    const cudaError_t pe = cudaGetDeviceProperties(&p, ordinal);
    if (pe != cudaSuccess) {
      cudaGetLastError();
      skipped += " device " + std::to_string(ordinal) + ": " + cuda_error_text(pe) + ";";
      continue;
    }
    if (p.major * 10 + p.minor < MOERT_CUDA_MIN_ARCH) {
      skipped += " device " + std::to_string(ordinal) + " (" + p.name +
                 ") has compute capability " + std::to_string(p.major) + "." +
                 std::to_string(p.minor) +
                 ", below the kernels' " MOERT_CUDA_ARCHITECTURES
                 " (configure with MOERT_CUDA_ARCHITECTURES to add it);";
      continue;
    }
    DeviceCaps caps;
    caps.name = p.name;
    caps.major = p.major;
    caps.minor = p.minor;
    caps.multiprocessors = p.multiProcessorCount;
    caps.total_memory = p.totalGlobalMem;
    caps.shared_memory_per_block = p.sharedMemPerBlockOptin;
    caps.max_threads_per_block = p.maxThreadsPerBlock;
    caps.bf16_tensor_cores = p.major >= 8;
    const int index = static_cast<int>(devices().size());
    devices().push_back(std::make_unique<Device>(index, ordinal, caps));
  }
  if (devices().empty())
    plugin::fail("no CUDA device this plugin can use:" + skipped, MOERT_ERR_NO_DEVICE);
}

}  // namespace moert::cuda
