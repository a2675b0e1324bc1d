#include <cstdio>
#include <cstring>
#include <vector>

#include "kernel.h"
#include "numeric.h"

namespace moert::cuda {
namespace {

// A function-local static, so registrations from other files' static
// initialisers never run before the table exists.
std::vector<KernelDef>& table() {
  static std::vector<KernelDef> defs;
  return defs;
}

}  // namespace

void register_kernel(const KernelDef& def) { table().push_back(def); }

const KernelDef* find_kernel(const char* op) {
  for (const KernelDef& d : table())
    if (std::strcmp(d.op, op) == 0) return &d;
  return nullptr;
}

std::vector<std::string> kernel_ops() {
  std::vector<std::string> ops;
  for (const KernelDef& d : table()) ops.emplace_back(d.op);
  return ops;
}

std::string unsupported_reason(const moert_graph_desc& g, size_t n) {
  const NodeDesc node(g, n);
  for (size_t i = 0; i < node.num_inputs(); ++i)
    if (node.has_input(i) && node.input(i).rank() > MOERT_MAX_RANK)
      return "an input has rank above " + std::to_string(MOERT_MAX_RANK);
  const KernelDef* def = find_kernel(node.op());
  if (!def) return std::string("the cuda backend has no kernel for op '") + node.op() + "'";
  try {
    return def->check(node);
  } catch (const std::exception& e) {  // a malformed attribute
    return e.what();
  }
}

void ExecContext::copy(void* dst, const void* src, uint64_t bytes) const {
  if (bytes == 0 || dst == src) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()),
             "copying " + std::to_string(bytes) + " bytes on the device");
}

void ExecContext::read(void* dst, const void* src, uint64_t bytes) const {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()),
             "reading " + std::to_string(bytes) + " bytes from the device");
  device().synchronize("reading from the device");
}

std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (uint32_t i = 0; i < t.rank; ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

std::string number_str(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

double read_element(const ExecContext& ctx, const Tensor& t, int64_t i) {
  const uint64_t es = t.elem_size();
  unsigned char raw[8] = {};
  ctx.read(raw, t.bytes() + static_cast<uint64_t>(i) * es, es);
  if (is_float(t.dtype)) return load_float(t.dtype, raw, 0);
  return load_integer(t.dtype, raw, 0);
}

}  // namespace moert::cuda
