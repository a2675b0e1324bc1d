// softmax(x [..., N]) -> y [..., N], over the last axis:
//   y[r, i] = exp(x[r, i] - m) / sum_j exp(x[r, j] - m),  m = max_j x[r, j].
// Subtracting the row max keeps exp() from overflowing; the result is the same
// mathematically.  x is f32, bf16 or f16 (N may be symbolic); y has x's dtype.
// A row whose entries are all -inf gives NaN (masking belongs to
// masked_softmax).
#include <algorithm>
#include <cmath>

#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

void register_softmax(OpRegistry& registry) {
  OpDef d;
  d.name = "softmax";
  d.summary = "numerically stable softmax over the last axis";
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    require_activation(ctx, 0, "input 'x'");
    ctx.require(x.shape.rank() >= 1, "input 'x' must have rank >= 1, got " + x.shape.str());
    return std::vector<ValueInfo>{x};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    const int64_t n = x.dim(-1);
    const int64_t rows = n ? x.numel() / n : 0;
    for (int64_t r = 0; r < rows; ++r) {
      double row_max = -INFINITY;
      for (int64_t i = 0; i < n; ++i) row_max = std::max(row_max, x.get(r * n + i));
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += std::exp(x.get(r * n + i) - row_max);
      for (int64_t i = 0; i < n; ++i) y.set(r * n + i, std::exp(x.get(r * n + i) - row_max) / sum);
    }
  };
  registry.add(std::move(d));
}

}  // namespace moert::ops
