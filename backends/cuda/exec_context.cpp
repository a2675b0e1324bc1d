// The helpers of kernel.h: ExecBase's copies and the element reads of error
// messages.
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernel.h"
#include "numeric.h"

namespace moert::cuda {

void ExecBase::copy(void* dst, const void* src, uint64_t bytes) const {
  if (bytes == 0 || dst == src) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()),
             "copying " + std::to_string(bytes) + " bytes on the device");
}

void ExecBase::read(void* dst, const void* src, uint64_t bytes) const {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()),
             "reading " + std::to_string(bytes) + " bytes from the device");
  device().synchronize("reading from the device");
}

double read_element(const ExecContext& ctx, const Tensor& t, int64_t i) {
  const uint64_t es = t.elem_size();
  unsigned char raw[8] = {};
  ctx.read(raw, t.bytes() + static_cast<uint64_t>(i) * es, es);
  if (is_float(t.dtype)) return load_float(t.dtype, raw, 0);
  return load_integer(t.dtype, raw, 0);
}

}  // namespace moert::cuda
