// rms_norm(x [..., D], weight [D]) -> y [..., D], attribute eps (float,
// default 1e-6, must be >= 0):
//   y[r, i] = x[r, i] / sqrt(mean_j(x[r, j]^2) + eps) * weight[i]
// for every row r over the last axis.  x is f32, bf16 or f16 and y has x's
// dtype; weight may be any float dtype.  x's last dim must equal weight's dim
// (both may be symbolic, compared as dims).
#include <cmath>

#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

void register_norm(OpRegistry& registry) {
  OpDef d;
  d.name = "rms_norm";
  d.summary = "root-mean-square normalisation over the last axis, times a weight";
  d.inputs = {{"x"}, {"weight"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    const ValueInfo& w = ctx.in(1);
    require_activation(ctx, 0, "input 'x'");
    require_float(ctx, 1, "input 'weight'");
    ctx.require(x.shape.rank() >= 1, "input 'x' must have rank >= 1, got " + x.shape.str());
    ctx.require(w.shape.rank() == 1, "input 'weight' must be [D] (rank 1), got " + w.shape.str());
    ctx.require(x.shape.at(-1) == w.shape[0], "input 'weight' " + w.shape.str() +
                                                  " must match the last dim of input 'x' " +
                                                  x.shape.str());
    const double eps = ctx.attrs().get_float("eps", 1e-6);
    ctx.require(std::isfinite(eps) && eps >= 0,
                "attribute 'eps' must be finite and >= 0, got " + std::to_string(eps));
    return std::vector<ValueInfo>{{x.dtype, x.shape}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& w = ctx.in(1);
    const TensorView& y = ctx.out(0);
    const double eps = ctx.attrs().get_float("eps", 1e-6);
    const int64_t dim = x.dim(-1);
    const int64_t rows = dim ? x.numel() / dim : 0;
    for (int64_t r = 0; r < rows; ++r) {
      double sum_sq = 0;
      for (int64_t i = 0; i < dim; ++i) sum_sq += x.get(r * dim + i) * x.get(r * dim + i);
      const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps);
      for (int64_t i = 0; i < dim; ++i) y.set(r * dim + i, x.get(r * dim + i) * inv_rms * w.get(i));
    }
  };
  registry.add(std::move(d));
}

}  // namespace moert::ops
