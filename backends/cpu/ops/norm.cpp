// rms_norm (ops/norm.cpp): y = x / sqrt(mean(x^2) + eps) * weight over the
// last axis.  x and y f32, bf16 or f16; weight any float dtype (widened to
// f32 once per call).  Rows in parallel, f32 math with a 32-lane sum of
// squares.
#include <omp.h>

#include <cmath>

#include "attention_common.h"
#include "kernel.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

std::string eps_problem(const NodeDesc& node) {
  const double eps = node.attr_float("eps", 1e-6);
  if (!std::isfinite(eps) || eps < 0)
    return "attribute 'eps' must be finite and >= 0, got " + attn::num(eps);
  return "";
}

std::string check(const NodeDesc& node) {
  const TensorDesc x = node.input(0), w = node.input(1);
  if (!attn::is_activation(x.dtype()))
    return std::string("rms_norm of ") + plugin::dtype_name(x.dtype());
  if (!w.present() || !plugin::dtype_is_float(w.dtype()))
    return "rms_norm weight must be a float tensor";
  if (x.rank() < 1 || w.rank() != 1) return "rms_norm needs x [..., D] and weight [D]";
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from x's";
  return eps_problem(node);
}

class RmsNorm final : public Kernel {
 public:
  explicit RmsNorm(const NodeDesc& node) {
    const std::string problem = eps_problem(node);
    if (!problem.empty()) fail(problem);
    eps_ = node.attr_float("eps", 1e-6);
  }

  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t dim = x.rank == 0 ? 1 : x.dim(-1);
    require(w.numel() == dim, "input 'weight' has " + std::to_string(w.numel()) +
                                  " elements, the last dim of input 'x' is " + std::to_string(dim));
    if (dim == 0) return;
    const int64_t rows = x.numel() / dim;
    const int64_t stride = (dim + 15) / 16 * 16;
    const auto weight_block =
        ctx.scratch(static_cast<uint64_t>(dim) * sizeof(float), "the weight as f32");
    float* weight = kit::floats(weight_block);
    vec::widen(w.dtype, w.data, 0, dim, weight);
    const auto rows_block =
        ctx.scratch(static_cast<uint64_t>(num_threads() * stride) * sizeof(float), "f32 rows");
    float* bufs = kit::floats(rows_block);
    const double eps = eps_;
    parallel_for(rows, std::max<int64_t>(1, 4096 / dim), [&](int64_t r0, int64_t r1) {
      float* row = bufs + omp_get_thread_num() * stride;
      for (int64_t r = r0; r < r1; ++r) {
        vec::widen(x.dtype, x.data, r * dim, dim, row);
        const double mean = static_cast<double>(vec::sum_squares(row, dim)) / dim;
        const float inv_rms = static_cast<float>(1.0 / std::sqrt(mean + eps));
        vec::scale_mul(row, inv_rms, weight, row, dim);
        vec::narrow(row, dim, y.dtype, y.data, r * dim);
      }
    });
  }

 private:
  double eps_ = 1e-6;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<RmsNorm>(node); }

const KernelRegistration registration({"rms_norm", check, create});

}  // namespace
}  // namespace moert::cpu
