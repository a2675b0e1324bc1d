// libmoert_backend_opencl: the OpenCL backend plugin.  One moert device per
// OpenCL device of every platform ("opencl:0", ...).  Buffers are cl_mem
// objects moved through the device's in-order queue; constants are uploaded
// once at prepare (wrapped in place on CPU devices when the runtime keeps
// them alive); kernels are OpenCL C programs (kernels/*.cl) built at
// prepare and cached on disk (program_cache.h).  The kernels of each op live
// in ops/ (see kernel.h); the ABI glue is the plugin kit's
// (backends/common/kit), and this file says what an OpenCL device is.
#include <string>
#include <vector>

#include "kernel.h"
#include "kit/plugin.h"

namespace moert::ocl {

void Backend::init() { discover_devices(); }

void Backend::describe(Device& d, kit::DeviceDescription& out) {
  const Capabilities& c = d.caps();
  out.name = d.name() + " (" + d.platform_name() + ")";
  out.kind = d.kind();
  out.total_memory = c.global_mem_bytes;  // OpenCL has no portable free-memory query
  out.capabilities = c.opencl_c_version + ", fp16=" + (c.fp16 ? "yes" : "no") +
                     ", fp64=" + (c.fp64 ? "yes" : "no") +
                     ", subgroups=" + (c.subgroups ? "yes" : "no") +
                     ", compute_units=" + std::to_string(c.compute_units) +
                     ", max_work_group=" + std::to_string(c.max_work_group_size) +
                     ", local_mem_kib=" + std::to_string(c.local_mem_bytes / 1024) +
                     ", max_alloc_mib=" + std::to_string(c.max_alloc_bytes >> 20) +
                     ", kernels=" + (d.style() == KernelStyle::cpu ? "cpu" : "gpu") +
                     ", weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16";
}

void* Backend::allocate(Device& d, uint64_t bytes) { return d.allocate(bytes); }

void Backend::release(Device&, void* mem) { clReleaseMemObject(static_cast<cl_mem>(mem)); }

void Backend::write(Device& d, void* dst, uint64_t offset, const void* src, uint64_t bytes) {
  check_cl(clEnqueueWriteBuffer(d.queue(), static_cast<cl_mem>(dst), CL_TRUE, offset, bytes, src, 0,
                                nullptr, nullptr),
           "writing " + std::to_string(bytes) + " bytes to the device");
}

void Backend::read(Device& d, const void* src, uint64_t offset, void* dst, uint64_t bytes) {
  check_cl(clEnqueueReadBuffer(d.queue(), static_cast<cl_mem>(const_cast<void*>(src)), CL_TRUE,
                               offset, bytes, dst, 0, nullptr, nullptr),
           "reading " + std::to_string(bytes) + " bytes from the device");
}

void Backend::copy(Device& d, const void* src, uint64_t src_offset, void* dst, uint64_t dst_offset,
                   uint64_t bytes) {
  check_cl(clEnqueueCopyBuffer(d.queue(), static_cast<cl_mem>(const_cast<void*>(src)),
                               static_cast<cl_mem>(dst), src_offset, dst_offset, bytes, 0, nullptr,
                               nullptr),
           "copying " + std::to_string(bytes) + " bytes on the device");
}

void Backend::finish(Device& d) { check_cl(clFinish(d.queue()), "waiting for '" + d.name() + "'"); }

ClBuffer Backend::make_constant(Device& d, const moert_tensor_desc& t, bool persist) {
  // A CPU device reads host memory anyway: when the runtime keeps the
  // constants alive, the buffer wraps them instead of copying the weights.
  if (persist && d.kind() == MOERT_DEVICE_CPU && t.data_bytes && t.data)
    return ClBuffer(d.allocate(t.data_bytes, CL_MEM_READ_ONLY | CL_MEM_USE_HOST_PTR,
                               const_cast<void*>(t.data)));
  // Otherwise uploaded once; the executable owns the device copy.
  ClBuffer b(d.allocate(t.data_bytes, CL_MEM_READ_ONLY));
  if (t.data_bytes)
    check_cl(clEnqueueWriteBuffer(d.queue(), b.get(), CL_TRUE, 0, t.data_bytes, t.data, 0, nullptr,
                                  nullptr),
             "uploading constant '" + std::string(t.name ? t.name : "") + "' (" +
                 std::to_string(t.data_bytes) + " bytes)");
  return b;
}

void Backend::ErrorSlots::allocate(Device& d, int n) {
  count = n;
  if (n == 0) return;
  slots = ClBuffer(d.allocate(sizeof(int32_t) * static_cast<size_t>(n)));
  clear(d);
}

std::vector<int64_t> Backend::ErrorSlots::read(Device& d) {
  std::vector<int32_t> raw(static_cast<size_t>(count));
  check_cl(clEnqueueReadBuffer(d.queue(), slots.get(), CL_TRUE, 0, raw.size() * sizeof(int32_t),
                               raw.data(), 0, nullptr, nullptr),
           "reading the error slots");
  std::vector<int64_t> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = raw[i] == kNoError ? kit::kNoError : raw[i];
  return out;
}

void Backend::ErrorSlots::clear(Device& d) {
  const std::vector<int32_t> none(static_cast<size_t>(count), kNoError);
  check_cl(clEnqueueWriteBuffer(d.queue(), slots.get(), CL_TRUE, 0, none.size() * sizeof(int32_t),
                                none.data(), 0, nullptr, nullptr),
           "clearing the error slots");
}

}  // namespace moert::ocl

MOERT_KIT_PLUGIN(moert::ocl::Backend)
