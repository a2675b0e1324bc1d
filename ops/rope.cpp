// rope(x [T, nh, d] f32|bf16|f16, positions [T] i32|i64) -> y [T, nh, d],
//   x's dtype.
//   Rotary position embedding.  Only the first `rotary_dim` features of each
//   head rotate; features rotary_dim..d-1 are copied unchanged.  With
//   r = rotary_dim, the r/2 rotation pairs are
//     pairing "half" (default, NeoX rotate_half): (j, j + r/2)
//     pairing "interleaved" (DeepSeek V2 complex form): (2j, 2j + 1)
//   and pair j of token t rotates by angle a = positions[t] * inv_freq[j]:
//     (u, v) -> (u cos a - v sin a, v cos a + u sin a) * attention_scaling,
//   written back to the same two features (the output keeps x's order).
//   inv_freq[j] = theta^(-2j/r), then by `scaling`:
//     "none" (default): as is;  attention_scaling = 1.
//     "linear": inv_freq /= factor (positions divided by factor); scaling 1.
//     "yarn": with L0 = original_max_position_embeddings,
//       corr(n) = r ln(L0 / (2 pi n)) / (2 ln theta),
//       low = corr(beta_fast), high = corr(beta_slow), floored/ceiled when
//       truncate != 0, both clamped to [0, r-1], high += 0.001 if equal;
//       ramp_j = clamp((j - low) / (high - low), 0, 1);
//       inv_freq_j = (1 - ramp_j) theta^(-2j/r) + ramp_j theta^(-2j/r) / factor;
//       attention_scaling = attention_factor if given, else
//       g(factor, mscale) / g(factor, mscale_all_dim) if both are non-zero,
//       else g(factor, 1), where g(s, m) = 0.1 m ln s + 1 (1 when s <= 1).
//   Attributes: theta (float, required, > 0); rotary_dim (int, default d, even,
//   in [2, d]); pairing; scaling; factor (float > 0, required by "linear" and
//   "yarn"); original_max_position_embeddings (int > 0, required by "yarn");
//   beta_fast (32); beta_slow (1); mscale (1); mscale_all_dim (0); truncate
//   (int 0/1, default 1); attention_factor (float, optional).
//   Everything is computed in double and rounded once on store.  nh and d must
//   be static; T may be symbolic.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernel_util.h"
#include "ops.h"
#include "rope_table.h"

namespace moert::ops {

namespace {

// Validates the attributes and builds the frequency table for head size d
// (rope_table.h).  Ctx is InferContext or KernelContext (both have attrs()
// and fail()).
template <typename Ctx>
RopeTable make_table(const Ctx& ctx, int64_t d) {
  std::string problem;
  RopeTable t = rope_table(AttrReader{ctx.attrs()}, d, &problem);
  if (!problem.empty()) ctx.fail(problem);
  return t;
}

}  // namespace

void register_rope(OpRegistry& r) {
  OpDef d;
  d.name = "rope";
  d.summary = "rotary position embedding (NeoX or interleaved pairs; linear or YaRN scaling)";
  d.inputs = {{"x"}, {"positions"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    const ValueInfo& pos = ctx.in(1);
    require_activation(ctx, 0, "input 'x'");
    require_rank(ctx, 0, 3, "input 'x' [T, nh, d]");
    ctx.require(x.shape[1].is_static() && x.shape[2].is_static(),
                "input 'x' must have static heads and head size, got " + x.shape.str());
    ctx.require(pos.dtype == DType::i32 || pos.dtype == DType::i64,
                "input 'positions' must be i32 or i64, got " + std::string(dtype_name(pos.dtype)));
    require_rank(ctx, 1, 1, "input 'positions' [T]");
    ctx.require(pos.shape[0] == x.shape[0], "input 'positions' " + pos.shape.str() +
                                                " must have one entry per token of input 'x' " +
                                                x.shape.str());
    make_table(ctx, x.shape[2].fixed);
    return std::vector<ValueInfo>{{x.dtype, x.shape}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& pos = ctx.in(1);
    const TensorView& y = ctx.out(0);
    const int64_t tokens = x.dim(0);
    const int64_t heads = x.dim(1);
    const int64_t dim = x.dim(2);
    if (pos.dim(0) != tokens)
      ctx.fail("input 'positions' has " + std::to_string(pos.dim(0)) + " entries, input 'x' has " +
               std::to_string(tokens) + " tokens");
    const RopeTable table = make_table(ctx, dim);
    const int64_t half = table.rotary_dim / 2;
    const std::vector<double> in = load(x);
    std::vector<double> out = in;  // features past rotary_dim pass through
    for (int64_t t = 0; t < tokens; ++t) {
      const double p = pos.get(t);
      for (int64_t j = 0; j < half; ++j) {
        const double angle = p * table.inv_freq[static_cast<size_t>(j)];
        const double c = std::cos(angle) * table.attention_scaling;
        const double s = std::sin(angle) * table.attention_scaling;
        const int64_t i0 = table.interleaved ? 2 * j : j;
        const int64_t i1 = table.interleaved ? 2 * j + 1 : j + half;
        for (int64_t h = 0; h < heads; ++h) {
          const size_t base = static_cast<size_t>((t * heads + h) * dim);
          const double u = in[base + static_cast<size_t>(i0)];
          const double v = in[base + static_cast<size_t>(i1)];
          out[base + static_cast<size_t>(i0)] = u * c - v * s;
          out[base + static_cast<size_t>(i1)] = v * c + u * s;
        }
      }
    }
    store(y, out);
  };
  r.add(std::move(d));
}

}  // namespace moert::ops
