// argmax(x [..., N]) -> y i32 [...]: the index along the last axis of the
// largest element of each row.  Ties take the lowest index; a NaN counts as
// larger than every number (as in NumPy and PyTorch), so the first NaN wins.
// x is f32, bf16 or f16 of rank >= 1; a rank-1 x gives a scalar (shape []).
// N may be symbolic but must not be 0 at run time, and must fit in i32.
#include <cmath>
#include <limits>

#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

void register_argmax(OpRegistry& registry) {
  OpDef d;
  d.name = "argmax";
  d.summary = "index of the largest element along the last axis (lowest on ties)";
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    require_activation(ctx, 0, "input 'x'");
    ctx.require(x.shape.rank() >= 1, "input 'x' must have rank >= 1, got " + x.shape.str());
    const Dim& n = x.shape.at(-1);
    ctx.require(!n.is_static() || (n.fixed > 0 && n.fixed <= std::numeric_limits<int32_t>::max()),
                "the last dim of input 'x' " + x.shape.str() + " must be in [1, 2^31)");
    std::vector<Dim> dims = x.shape.dims();
    dims.pop_back();
    return std::vector<ValueInfo>{{DType::i32, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    const int64_t n = x.dim(-1);
    if (n <= 0 || n > std::numeric_limits<int32_t>::max())
      ctx.fail("the last dim of input 'x' " + dims_str(x.shape) + " must be in [1, 2^31)");
    const int64_t rows = x.numel() / n;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t best = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double v = x.get(r * n + i);
        if (std::isnan(v)) {
          best = i;
          break;
        }
        // Strictly greater: a later equal value does not replace the first.
        if (v > x.get(r * n + best)) best = i;
      }
      y.set(r, static_cast<double>(best));
    }
  };
  registry.add(std::move(d));
}

}  // namespace moert::ops
