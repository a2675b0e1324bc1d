// The OpenCL devices of this plugin: every device of every platform the ICD
// loader reports, with its capabilities queried once, a context and an
// in-order command queue per device (created at first use), the programs
// built for it, and a scratch workspace shared by the nodes it runs.
// OpenCL status codes become moert statuses here (fail_cl).
#pragma once

#include <CL/cl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kit/scratch.h"
#include "plugin_support.h"

namespace moert::ocl {

// A readable name for an OpenCL status code ("CL_OUT_OF_RESOURCES").
const char* cl_status_name(cl_int status);

// Throws a plugin::Failure for an OpenCL error: allocation failures map to
// MOERT_ERR_OUT_OF_MEMORY, everything else to MOERT_ERR_DEVICE.
[[noreturn]] void fail_cl(cl_int status, const std::string& what);
inline void check_cl(cl_int status, const std::string& what) {
  if (status != CL_SUCCESS) fail_cl(status, what);
}

// What a device can do, queried once when the plugin initialises.  Kernel
// checks consult it, so that a missing feature is reported by supports_node
// instead of surfacing as a failed build or launch.
struct Capabilities {
  bool fp16 = false;       // cl_khr_fp16: half arithmetic in kernels
  bool fp64 = false;       // cl_khr_fp64 (or OpenCL C 3.0 __opencl_c_fp64)
  bool subgroups = false;  // cl_khr_subgroups / cl_intel_subgroups
  bool int64_atomics = false;
  size_t max_work_group_size = 1;
  uint64_t local_mem_bytes = 0;
  uint64_t global_mem_bytes = 0;
  uint64_t max_alloc_bytes = 0;
  uint32_t compute_units = 1;
  uint32_t base_addr_align_bytes = 0;
  std::string opencl_c_version;  // "OpenCL C 1.2 PoCL"
  std::string extensions;

  std::string summary() const;  // one line for messages and tests
};

// Which family of kernels suits a device: "cpu" kernels give each work-item
// a block of outputs computed with explicit vector types (work-groups of one
// work-item, as a CPU runtime maps them onto threads and SIMD lanes);
// "gpu" kernels use cooperative work-groups with local-memory tiles.
enum class KernelStyle { cpu, gpu };

class Device {
 public:
  Device(cl_platform_id platform, cl_device_id id);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  cl_device_id id() const { return id_; }
  const std::string& name() const { return name_; }
  const std::string& platform_name() const { return platform_name_; }
  const std::string& driver_version() const { return driver_version_; }
  const std::string& device_version() const { return device_version_; }
  cl_device_type type() const { return type_; }
  moert_device_kind kind() const;
  const Capabilities& caps() const { return caps_; }
  KernelStyle style() const { return style_; }
  // "-D..." options every program of this device is built with.
  std::string build_options() const;
  // Work-group size of the row kernels (a power of two) and of the
  // elementwise kernels; fixed per device, because a runtime such as PoCL
  // compiles a kernel once per distinct local size.
  size_t row_wg() const;
  size_t elementwise_wg() const { return style_ == KernelStyle::cpu ? 64 : 256; }

  // The context and queue, created on first use.
  cl_context context();
  cl_command_queue queue();

  // The program built from kernels/<file> with `extra_options`, compiled (or
  // loaded from the disk cache) once per process and device.
  cl_program program(const std::string& file, const std::string& extra_options = "");
  // A new kernel object of that program.
  cl_kernel kernel(const std::string& file, const char* name,
                   const std::string& extra_options = "");

  // Scratch memory for a node's run (kit/scratch.h): a block of at least
  // `bytes`, the node's until the block goes.
  using ScratchBlock = kit::ScratchStack<cl_mem>::Block;
  ScratchBlock scratch(uint64_t bytes, const std::string& what);

  // Allocates a buffer, mapping failures to MOERT_ERR_OUT_OF_MEMORY with
  // the size in the message.
  cl_mem allocate(uint64_t bytes, cl_mem_flags flags = CL_MEM_READ_WRITE, void* host = nullptr);

 private:
  cl_platform_id platform_;
  cl_device_id id_;
  std::string name_, vendor_, platform_name_, driver_version_, device_version_;
  cl_device_type type_ = CL_DEVICE_TYPE_DEFAULT;
  Capabilities caps_;
  KernelStyle style_ = KernelStyle::gpu;
  cl_context context_ = nullptr;
  cl_command_queue queue_ = nullptr;
  std::map<std::string, cl_program> programs_;
  std::unique_ptr<kit::ScratchStack<cl_mem>> scratch_;
};

// The devices found by init(), in platform order.
std::vector<std::unique_ptr<Device>>& devices();
Device& device(int32_t index);

// Enumerates every platform and device of the ICD loader.  Throws a
// Failure with MOERT_ERR_NO_DEVICE (and what was found) when there is none.
void discover_devices();

// Rounds n up to a multiple of m.
inline uint64_t round_up(uint64_t n, uint64_t m) { return (n + m - 1) / m * m; }

}  // namespace moert::ocl
