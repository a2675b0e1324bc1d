// OpenCL device discovery, capabilities, contexts, queues and programs.
#include "device.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "embedded_kernels.h"
#include "kernel.h"
#include "kit/device.h"
#include "program_cache.h"

namespace moert::ocl {

const char* cl_status_name(cl_int status) {
  switch (status) {
#define MOERT_CL_STATUS(name) \
  case name:                  \
    return #name;
    MOERT_CL_STATUS(CL_SUCCESS)
    MOERT_CL_STATUS(CL_DEVICE_NOT_FOUND)
    MOERT_CL_STATUS(CL_DEVICE_NOT_AVAILABLE)
    MOERT_CL_STATUS(CL_COMPILER_NOT_AVAILABLE)
    MOERT_CL_STATUS(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    MOERT_CL_STATUS(CL_OUT_OF_RESOURCES)
    MOERT_CL_STATUS(CL_OUT_OF_HOST_MEMORY)
    MOERT_CL_STATUS(CL_PROFILING_INFO_NOT_AVAILABLE)
    MOERT_CL_STATUS(CL_MEM_COPY_OVERLAP)
    MOERT_CL_STATUS(CL_IMAGE_FORMAT_MISMATCH)
    MOERT_CL_STATUS(CL_IMAGE_FORMAT_NOT_SUPPORTED)
    MOERT_CL_STATUS(CL_BUILD_PROGRAM_FAILURE)
    MOERT_CL_STATUS(CL_MAP_FAILURE)
    MOERT_CL_STATUS(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    MOERT_CL_STATUS(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    MOERT_CL_STATUS(CL_COMPILE_PROGRAM_FAILURE)
    MOERT_CL_STATUS(CL_LINKER_NOT_AVAILABLE)
    MOERT_CL_STATUS(CL_LINK_PROGRAM_FAILURE)
    MOERT_CL_STATUS(CL_DEVICE_PARTITION_FAILED)
    MOERT_CL_STATUS(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    MOERT_CL_STATUS(CL_INVALID_VALUE)
    MOERT_CL_STATUS(CL_INVALID_DEVICE_TYPE)
    MOERT_CL_STATUS(CL_INVALID_PLATFORM)
    MOERT_CL_STATUS(CL_INVALID_DEVICE)
    MOERT_CL_STATUS(CL_INVALID_CONTEXT)
    MOERT_CL_STATUS(CL_INVALID_QUEUE_PROPERTIES)
    MOERT_CL_STATUS(CL_INVALID_COMMAND_QUEUE)
    MOERT_CL_STATUS(CL_INVALID_HOST_PTR)
    MOERT_CL_STATUS(CL_INVALID_MEM_OBJECT)
    MOERT_CL_STATUS(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
    MOERT_CL_STATUS(CL_INVALID_IMAGE_SIZE)
    MOERT_CL_STATUS(CL_INVALID_SAMPLER)
    MOERT_CL_STATUS(CL_INVALID_BINARY)
    MOERT_CL_STATUS(CL_INVALID_BUILD_OPTIONS)
    MOERT_CL_STATUS(CL_INVALID_PROGRAM)
    MOERT_CL_STATUS(CL_INVALID_PROGRAM_EXECUTABLE)
    MOERT_CL_STATUS(CL_INVALID_KERNEL_NAME)
    MOERT_CL_STATUS(CL_INVALID_KERNEL_DEFINITION)
    MOERT_CL_STATUS(CL_INVALID_KERNEL)
    MOERT_CL_STATUS(CL_INVALID_ARG_INDEX)
    MOERT_CL_STATUS(CL_INVALID_ARG_VALUE)
    MOERT_CL_STATUS(CL_INVALID_ARG_SIZE)
    MOERT_CL_STATUS(CL_INVALID_KERNEL_ARGS)
    MOERT_CL_STATUS(CL_INVALID_WORK_DIMENSION)
    MOERT_CL_STATUS(CL_INVALID_WORK_GROUP_SIZE)
    MOERT_CL_STATUS(CL_INVALID_WORK_ITEM_SIZE)
    MOERT_CL_STATUS(CL_INVALID_GLOBAL_OFFSET)
    MOERT_CL_STATUS(CL_INVALID_EVENT_WAIT_LIST)
    MOERT_CL_STATUS(CL_INVALID_EVENT)
    MOERT_CL_STATUS(CL_INVALID_OPERATION)
    MOERT_CL_STATUS(CL_INVALID_GL_OBJECT)
    MOERT_CL_STATUS(CL_INVALID_BUFFER_SIZE)
    MOERT_CL_STATUS(CL_INVALID_MIP_LEVEL)
    MOERT_CL_STATUS(CL_INVALID_GLOBAL_WORK_SIZE)
    MOERT_CL_STATUS(CL_INVALID_PROPERTY)
    MOERT_CL_STATUS(CL_INVALID_IMAGE_DESCRIPTOR)
    MOERT_CL_STATUS(CL_INVALID_COMPILER_OPTIONS)
    MOERT_CL_STATUS(CL_INVALID_LINKER_OPTIONS)
    MOERT_CL_STATUS(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef MOERT_CL_STATUS
    case -1001:
      return "CL_PLATFORM_NOT_FOUND_KHR";
    default:
      return "unknown OpenCL status";
  }
}

void fail_cl(cl_int status, const std::string& what) {
  const std::string message =
      what + ": " + cl_status_name(status) + " (" + std::to_string(status) + ")";
  if (status == CL_MEM_OBJECT_ALLOCATION_FAILURE || status == CL_OUT_OF_RESOURCES ||
      status == CL_OUT_OF_HOST_MEMORY)
    plugin::fail(message, MOERT_ERR_OUT_OF_MEMORY);
  plugin::fail(message, MOERT_ERR_DEVICE);
}

namespace {

std::string device_string(cl_device_id d, cl_device_info what) {
  size_t size = 0;
  if (clGetDeviceInfo(d, what, 0, nullptr, &size) != CL_SUCCESS || size == 0) return "";
  std::string s(size, '\0');
  if (clGetDeviceInfo(d, what, size, s.data(), nullptr) != CL_SUCCESS) return "";
  while (!s.empty() && (s.back() == '\0' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string platform_string(cl_platform_id p, cl_platform_info what) {
  size_t size = 0;
  if (clGetPlatformInfo(p, what, 0, nullptr, &size) != CL_SUCCESS || size == 0) return "";
  std::string s(size, '\0');
  if (clGetPlatformInfo(p, what, size, s.data(), nullptr) != CL_SUCCESS) return "";
  while (!s.empty() && (s.back() == '\0' || s.back() == ' ')) s.pop_back();
  return s;
}

template <typename T>
T device_value(cl_device_id d, cl_device_info what, T fallback = T{}) {
  T v{};
  return clGetDeviceInfo(d, what, sizeof(T), &v, nullptr) == CL_SUCCESS ? v : fallback;
}

bool has_extension(const std::string& list, const char* name) {
  const size_t n = std::strlen(name);
  for (size_t pos = list.find(name); pos != std::string::npos; pos = list.find(name, pos + 1)) {
    const bool start = pos == 0 || list[pos - 1] == ' ';
    const bool end = pos + n == list.size() || list[pos + n] == ' ';
    if (start && end) return true;
  }
  return false;
}

// "OpenCL C 1.2 PoCL" -> 120.
int opencl_c_version_number(const std::string& v) {
  const char* prefix = "OpenCL C ";
  if (v.rfind(prefix, 0) != 0) return 0;
  const int major = std::atoi(v.c_str() + std::strlen(prefix));
  const size_t dot = v.find('.', std::strlen(prefix));
  const int minor = dot == std::string::npos ? 0 : std::atoi(v.c_str() + dot + 1);
  return major * 100 + minor * 10;
}

}  // namespace

std::string Capabilities::summary() const {
  std::string s = opencl_c_version;
  s += ", fp16 " + std::string(fp16 ? "yes" : "no");
  s += ", fp64 " + std::string(fp64 ? "yes" : "no");
  s += ", subgroups " + std::string(subgroups ? "yes" : "no");
  s += ", " + std::to_string(compute_units) + " compute units";
  s += ", work-groups up to " + std::to_string(max_work_group_size);
  s += ", local memory " + std::to_string(local_mem_bytes / 1024) + " KiB";
  s += ", max allocation " + std::to_string(max_alloc_bytes >> 20) + " MiB";
  return s;
}

Device::Device(cl_platform_id platform, cl_device_id id) : platform_(platform), id_(id) {
  name_ = device_string(id, CL_DEVICE_NAME);
  vendor_ = device_string(id, CL_DEVICE_VENDOR);
  driver_version_ = device_string(id, CL_DRIVER_VERSION);
  device_version_ = device_string(id, CL_DEVICE_VERSION);
  platform_name_ = platform_string(platform, CL_PLATFORM_NAME);
  type_ = device_value<cl_device_type>(id, CL_DEVICE_TYPE, CL_DEVICE_TYPE_DEFAULT);

  Capabilities& c = caps_;
  c.extensions = device_string(id, CL_DEVICE_EXTENSIONS);
  c.opencl_c_version = device_string(id, CL_DEVICE_OPENCL_C_VERSION);
  c.fp16 = has_extension(c.extensions, "cl_khr_fp16");
  c.fp64 = has_extension(c.extensions, "cl_khr_fp64") ||
           device_value<cl_device_fp_config>(id, CL_DEVICE_DOUBLE_FP_CONFIG) != 0;
  c.subgroups = has_extension(c.extensions, "cl_khr_subgroups") ||
                has_extension(c.extensions, "cl_intel_subgroups");
  c.int64_atomics = has_extension(c.extensions, "cl_khr_int64_base_atomics");
  c.max_work_group_size = device_value<size_t>(id, CL_DEVICE_MAX_WORK_GROUP_SIZE, 1);
  c.local_mem_bytes = device_value<cl_ulong>(id, CL_DEVICE_LOCAL_MEM_SIZE);
  c.global_mem_bytes = device_value<cl_ulong>(id, CL_DEVICE_GLOBAL_MEM_SIZE);
  c.max_alloc_bytes = device_value<cl_ulong>(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
  c.compute_units = device_value<cl_uint>(id, CL_DEVICE_MAX_COMPUTE_UNITS, 1);
  c.base_addr_align_bytes = device_value<cl_uint>(id, CL_DEVICE_MEM_BASE_ADDR_ALIGN) / 8;

  style_ = (type_ & CL_DEVICE_TYPE_CPU) ? KernelStyle::cpu : KernelStyle::gpu;
  // MOERT_OPENCL_KERNEL_STYLE=cpu|gpu overrides the choice (to test both
  // kernel families on one device).
  if (const char* s = std::getenv("MOERT_OPENCL_KERNEL_STYLE")) {
    if (std::strcmp(s, "cpu") == 0) style_ = KernelStyle::cpu;
    if (std::strcmp(s, "gpu") == 0) style_ = KernelStyle::gpu;
  }
}

Device::~Device() {
  scratch_.reset();
  for (auto& [key, p] : programs_) clReleaseProgram(p);
  if (queue_) clReleaseCommandQueue(queue_);
  if (context_) clReleaseContext(context_);
}

moert_device_kind Device::kind() const {
  if (type_ & CL_DEVICE_TYPE_GPU) return MOERT_DEVICE_GPU;
  if (type_ & CL_DEVICE_TYPE_CPU) return MOERT_DEVICE_CPU;
  if (type_ & CL_DEVICE_TYPE_ACCELERATOR) return MOERT_DEVICE_ACCELERATOR;
  return MOERT_DEVICE_OTHER;
}

std::string Device::build_options() const {
  std::string o;
  if (opencl_c_version_number(caps_.opencl_c_version) >= 120) o += "-cl-std=CL1.2 ";
  o += "-DMOERT_FP64=" + std::string(caps_.fp64 ? "1" : "0");
  o += " -DMOERT_FP16=" + std::string(caps_.fp16 ? "1" : "0");
  o += " -DMOERT_CPU_STYLE=" + std::string(style_ == KernelStyle::cpu ? "1" : "0");
  o += " -DMOERT_ROW_WG=" + std::to_string(row_wg());
  return o;
}

size_t Device::row_wg() const {
  size_t wg = style_ == KernelStyle::cpu ? 64 : 256;
  while (wg > 1 && wg > caps_.max_work_group_size) wg /= 2;
  return wg;
}

cl_context Device::context() {
  if (!context_) {
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM,
                                     reinterpret_cast<cl_context_properties>(platform_), 0};
    cl_int status = CL_SUCCESS;
    context_ = clCreateContext(props, 1, &id_, nullptr, nullptr, &status);
    check_cl(status, "creating an OpenCL context on '" + name_ + "'");
  }
  return context_;
}

cl_command_queue Device::queue() {
  if (!queue_) {
    cl_int status = CL_SUCCESS;
    queue_ = clCreateCommandQueue(context(), id_, 0, &status);
    check_cl(status, "creating a command queue on '" + name_ + "'");
  }
  return queue_;
}

cl_program Device::program(const std::string& file, const std::string& extra_options) {
  const std::string key = file + "|" + extra_options;
  auto it = programs_.find(key);
  if (it != programs_.end()) return it->second;
  // common.cl comes first in every program; the weight kernels also build
  // on weights.cl.
  std::vector<std::string> parts{"common.cl"};
  if (file == "linear.cl" || file == "moe.cl") parts.push_back("weights.cl");
  parts.push_back(file);
  std::string source;
  for (const std::string& part : parts) {
    const embedded::Source* found = nullptr;
    for (const embedded::Source& s : embedded::kSources)
      if (part == s.name) found = &s;
    if (!found)
      plugin::fail("the OpenCL backend has no kernel source '" + part + "'", MOERT_ERR_INTERNAL);
    source += "#line 1 \"" + part + "\"\n";
    source.append(reinterpret_cast<const char*>(found->text), found->size);
    source += "\n";
  }
  std::string options = build_options();
  if (!extra_options.empty()) options += " " + extra_options;
  cl_program p = build_program(*this, file, source, options);
  programs_[key] = p;
  return p;
}

cl_kernel Device::kernel(const std::string& file, const char* name,
                         const std::string& extra_options) {
  cl_program p = program(file, extra_options);
  cl_int status = CL_SUCCESS;
  cl_kernel k = clCreateKernel(p, name, &status);
  check_cl(status, "creating kernel '" + std::string(name) + "' of " + file);
  return k;
}

cl_mem Device::allocate(uint64_t bytes, cl_mem_flags flags, void* host) {
  const uint64_t size = bytes == 0 ? 1 : bytes;
  if (caps_.max_alloc_bytes && size > caps_.max_alloc_bytes)
    plugin::fail("cannot allocate " + std::to_string(bytes) + " bytes on '" + name_ +
                     "': its largest single allocation is " +
                     std::to_string(caps_.max_alloc_bytes) + " bytes",
                 MOERT_ERR_OUT_OF_MEMORY);
  cl_int status = CL_SUCCESS;
  cl_mem m = clCreateBuffer(context(), flags, size, host, &status);
  if (status != CL_SUCCESS)
    fail_cl(status, "allocating " + std::to_string(bytes) + " bytes on '" + name_ + "'");
  return m;
}

Device::ScratchBlock Device::scratch(uint64_t bytes, const std::string& what) {
  if (!scratch_)
    scratch_ = std::make_unique<kit::ScratchStack<cl_mem>>(
        [this](uint64_t size, const std::string& name) {
          try {
            return allocate(size);
          } catch (const plugin::Failure& e) {
            plugin::fail(std::string(e.what()) + " for " + name, e.status());
          }
        },
        [](cl_mem m) { clReleaseMemObject(m); }, caps_.max_alloc_bytes);
  return scratch_->take(bytes, what);
}

std::vector<std::unique_ptr<Device>>& devices() { return kit::DeviceList<Device>::all(); }

Device& device(int32_t index) { return Backend::device(index); }

void discover_devices() {
  auto& list = devices();
  list.clear();
  cl_uint num_platforms = 0;
  cl_int status = clGetPlatformIDs(0, nullptr, &num_platforms);
  if (status == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ ||
      (status == CL_SUCCESS && num_platforms == 0))
    plugin::fail(
        "no OpenCL platform: the ICD loader found no driver (install one, e.g. pocl-opencl-icd, "
        "or check /etc/OpenCL/vendors and OCL_ICD_VENDORS)",
        MOERT_ERR_NO_DEVICE);
  if (status != CL_SUCCESS)
    plugin::fail(
        std::string("no OpenCL platform: clGetPlatformIDs failed with ") + cl_status_name(status),
        MOERT_ERR_NO_DEVICE);
  std::vector<cl_platform_id> platforms(num_platforms);
  clGetPlatformIDs(num_platforms, platforms.data(), nullptr);
  std::string skipped;
  for (cl_platform_id p : platforms) {
    cl_uint num_devices = 0;
    status = clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, nullptr, &num_devices);
    const std::string pname = platform_string(p, CL_PLATFORM_NAME);
    if (status != CL_SUCCESS || num_devices == 0) {
      skipped += " platform '" + pname + "' has no device;";
      continue;
    }
    std::vector<cl_device_id> ids(num_devices);
    clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, num_devices, ids.data(), nullptr);
    for (cl_device_id id : ids) {
      const std::string dname = device_string(id, CL_DEVICE_NAME);
      if (!device_value<cl_bool>(id, CL_DEVICE_AVAILABLE)) {
        skipped += " device '" + dname + "' is not available;";
        continue;
      }
      if (!device_value<cl_bool>(id, CL_DEVICE_COMPILER_AVAILABLE)) {
        skipped += " device '" + dname + "' has no OpenCL C compiler;";
        continue;
      }
      list.push_back(std::make_unique<Device>(p, id));
    }
  }
  if (list.empty())
    plugin::fail("no usable OpenCL device (" + std::to_string(num_platforms) +
                     " platform(s):" + skipped + ")",
                 MOERT_ERR_NO_DEVICE);
}

}  // namespace moert::ocl
