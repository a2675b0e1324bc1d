// The launch helpers of kernel.h.
#include <cmath>
#include <cstring>

#include "kernel.h"

namespace moert::ocl {
namespace {

std::string kernel_name(cl_kernel k) {
  char name[128] = {};
  clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof(name) - 1, name, nullptr);
  return name;
}

}  // namespace

Args& Args::set(size_t size, const void* value) {
  const cl_int status = clSetKernelArg(k_, index_, size, value);
  if (status != CL_SUCCESS)
    fail_cl(status,
            "setting argument " + std::to_string(index_) + " of kernel '" + kernel_name(k_) + "'");
  ++index_;
  return *this;
}

void ExecBase::launch(const ClKernel& k, std::initializer_list<size_t> global,
                      std::initializer_list<size_t> local) const {
  require(global.size() == local.size() && global.size() >= 1 && global.size() <= 3,
          "internal: launch dimensions", MOERT_ERR_INTERNAL);
  size_t g[3] = {1, 1, 1}, l[3] = {1, 1, 1};
  const cl_uint dims = static_cast<cl_uint>(global.size());
  size_t i = 0;
  for (size_t v : global) {
    if (v == 0) return;
    g[i++] = v;
  }
  i = 0;
  for (size_t v : local) l[i++] = v;
  for (i = 0; i < dims; ++i) g[i] = round_up(g[i], l[i]);
  const cl_int status =
      clEnqueueNDRangeKernel(queue(), k.get(), dims, nullptr, g, l, 0, nullptr, nullptr);
  if (status != CL_SUCCESS) fail_cl(status, "launching kernel '" + kernel_name(k.get()) + "'");
}

void ExecBase::copy(cl_mem src, uint64_t src_offset, cl_mem dst, uint64_t dst_offset,
                    uint64_t bytes) const {
  if (bytes == 0) return;
  check_cl(
      clEnqueueCopyBuffer(queue(), src, dst, src_offset, dst_offset, bytes, 0, nullptr, nullptr),
      "copying " + std::to_string(bytes) + " bytes on the device");
}

void ExecBase::read(cl_mem src, uint64_t offset, void* dst, uint64_t bytes) const {
  if (bytes == 0) return;
  check_cl(clEnqueueReadBuffer(queue(), src, CL_TRUE, offset, bytes, dst, 0, nullptr, nullptr),
           "reading " + std::to_string(bytes) + " bytes back from the device");
}

double read_element(const ExecContext& ctx, const Tensor& t, int64_t i) {
  const uint64_t es = t.elem_size();
  uint64_t raw = 0;
  ctx.read(t.mem, t.offset + static_cast<uint64_t>(i) * es, &raw, es);
  auto f32 = [](uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    return static_cast<double>(f);
  };
  switch (t.dtype) {
    case MOERT_DTYPE_F32:
      return f32(static_cast<uint32_t>(raw));
    case MOERT_DTYPE_BF16:
      return f32(static_cast<uint32_t>(raw) << 16);
    case MOERT_DTYPE_F16: {
      const uint32_t exp = (raw >> 10) & 0x1f, man = raw & 0x3ff;
      const double sign = (raw & 0x8000) ? -1.0 : 1.0;
      if (exp == 31) return man ? NAN : sign * INFINITY;
      return sign * (exp ? std::ldexp(1024.0 + man, static_cast<int>(exp) - 25)
                         : std::ldexp(static_cast<double>(man), -24));
    }
    case MOERT_DTYPE_F8_E4M3: {
      const uint32_t exp = (raw >> 3) & 0xf, man = raw & 0x7;
      const double sign = (raw & 0x80) ? -1.0 : 1.0;
      if (exp == 15 && man == 7) return NAN;
      return sign * (exp ? std::ldexp(8.0 + man, static_cast<int>(exp) - 10)
                         : std::ldexp(static_cast<double>(man), -9));
    }
    case MOERT_DTYPE_I8:
      return static_cast<int8_t>(raw);
    case MOERT_DTYPE_I32:
      return static_cast<int32_t>(raw);
    case MOERT_DTYPE_I64:
      return static_cast<double>(static_cast<int64_t>(raw));
    default:
      return static_cast<double>(raw);
  }
}

}  // namespace moert::ocl
