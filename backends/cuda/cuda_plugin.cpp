// libmoert_backend_cuda: the CUDA backend plugin.  One moert device per CUDA
// device the kernels were built for ("cuda:0", ...).  Buffers are pooled
// device memory moved through the device's stream; constants are uploaded
// once at prepare; each node's kernels live in ops/ (host side: checks,
// shapes, launch planning) and kernels/ (device code); decode steps run as
// CUDA graphs (step_graph.cpp).  The ABI glue is the plugin kit's
// (backends/common/kit); this file says what a CUDA device is.  Without a
// device or a driver, init() reports MOERT_ERR_NO_DEVICE with the CUDA error
// and the runtime lists the backend as unavailable.
#include <memory>
#include <string>
#include <vector>

#include "kernel.h"
#include "kit/plugin.h"
#include "step_graph.h"

namespace moert::cuda {

void Backend::init() { discover_devices(); }

void Backend::describe(Device& d, kit::DeviceDescription& out) {
  out.name = d.caps().name;
  out.kind = MOERT_DEVICE_GPU;
  uint64_t free_bytes = 0, total = 0;
  d.memory_info(&free_bytes, &total);
  out.total_memory = total ? total : d.caps().total_memory;
  out.free_memory = free_bytes;
  out.capabilities =
      d.caps().summary() + ", weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16";
}

void* Backend::allocate(Device& d, uint64_t bytes) {
  return d.allocate(bytes, "a buffer of " + std::to_string(bytes) + " bytes");
}

void Backend::release(Device& d, void* p) { d.release(p); }

void Backend::write(Device& d, void* dst, uint64_t offset, const void* src, uint64_t bytes) {
  d.activate();
  check_cuda(cudaMemcpyAsync(static_cast<char*>(dst) + offset, src, bytes, cudaMemcpyHostToDevice,
                             d.stream()),
             "writing " + std::to_string(bytes) + " bytes to " + d.label());
  d.synchronize("writing to the device");  // the caller may reuse `src` on return
}

void Backend::read(Device& d, const void* src, uint64_t offset, void* dst, uint64_t bytes) {
  d.activate();
  check_cuda(cudaMemcpyAsync(dst, static_cast<const char*>(src) + offset, bytes,
                             cudaMemcpyDeviceToHost, d.stream()),
             "reading " + std::to_string(bytes) + " bytes from " + d.label());
  d.synchronize("reading from the device");
}

void Backend::copy(Device& d, const void* src, uint64_t src_offset, void* dst, uint64_t dst_offset,
                   uint64_t bytes) {
  d.activate();
  check_cuda(cudaMemcpyAsync(static_cast<char*>(dst) + dst_offset,
                             static_cast<const char*>(src) + src_offset, bytes,
                             cudaMemcpyDeviceToDevice, d.stream()),
             "copying " + std::to_string(bytes) + " bytes on " + d.label());
}

void Backend::finish(Device& d) {
  d.activate();
  d.synchronize("waiting for " + d.caps().name);
}

DeviceBlock Backend::make_constant(Device& d, const moert_tensor_desc& t, bool) {
  d.activate();
  const std::string what = "constant '" + std::string(t.name ? t.name : "") + "' (" +
                           std::to_string(t.data_bytes) + " bytes)";
  DeviceBlock b(d, t.data_bytes, what);
  // Backend::planned waits for the uploads: they read host memory that is
  // only valid during prepare.
  if (t.data_bytes)
    check_cuda(cudaMemcpyAsync(b.get(), t.data, t.data_bytes, cudaMemcpyHostToDevice, d.stream()),
               "uploading " + what);
  return b;
}

void Backend::ErrorSlots::allocate(Device& d, int n) {
  count = n;
  if (n == 0) return;
  const uint64_t bytes = sizeof(unsigned long long) * static_cast<uint64_t>(n);
  slots = DeviceBlock(d, bytes, "the error slots");
  unsigned long long* pinned = nullptr;
  check_cuda(cudaMallocHost(reinterpret_cast<void**>(&pinned), bytes),
             "allocating pinned host memory for the error slots");
  host.reset(pinned, [](unsigned long long* p) { cudaFreeHost(p); });
  check_cuda(cudaMemsetAsync(slots.get(), 0xff, bytes, d.stream()), "clearing the error slots");
}

std::vector<int64_t> Backend::ErrorSlots::read(Device& d) {
  const uint64_t bytes = sizeof(unsigned long long) * static_cast<uint64_t>(count);
  check_cuda(cudaMemcpyAsync(host.get(), slots.get(), bytes, cudaMemcpyDeviceToHost, d.stream()),
             "reading the error slots");
  d.synchronize("running the graph");
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = host.get()[i] == kNoError ? kit::kNoError : static_cast<int64_t>(host.get()[i]);
  return out;
}

void Backend::ErrorSlots::clear(Device& d) {
  const uint64_t bytes = sizeof(unsigned long long) * static_cast<uint64_t>(count);
  check_cuda(cudaMemsetAsync(slots.get(), 0xff, bytes, d.stream()), "clearing the error slots");
  d.synchronize("clearing the error slots");
}

}  // namespace moert::cuda

MOERT_KIT_PLUGIN(moert::cuda::Backend)
