// rope (ops/rope.cpp): rotary position embedding of x [T, nh, d] by
// positions [T] (i32 or i64), pairs (j, j + r/2) ("half") or (2j, 2j + 1)
// ("interleaved") of the first r = rotary_dim features, the rest copied.
// The frequency table (none / linear / YaRN scaling) and the attention
// scaling are computed in double from the attributes when the kernel is
// built; per call, each token's cosines and sines are computed in double
// (positions can be large) and rounded to f32, then the heads of the token
// rotate in f32.  Tokens in parallel.  A token whose position follows the
// previous token's gets its cos / sin by rotating the previous ones by the
// per-pair step angle (angle addition, in double: ~1e-16 relative per
// step), recomputed directly every kReseed tokens so the drift stays ~1e-14,
// far below f32; other tokens compute them directly.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "attention_common.h"
#include "kernel.h"
#include "op_checks.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

// Tokens between direct computations of cos / sin in a run of consecutive
// positions.
constexpr int64_t kReseed = 32;

class Rope final : public Kernel {
 public:
  explicit Rope(const NodeDesc& node) {
    table_ = plugin::rope_table(node, node.input(0).static_dim(2));
    for (double f : table_.inv_freq) {
      step_cos_.push_back(std::cos(f));
      step_sin_.push_back(std::sin(f));
    }
  }

  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& pos = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t tokens = x.dim(0), heads = x.dim(1), dim = x.dim(2);
    if (pos.dim(0) != tokens)
      fail("input 'positions' has " + std::to_string(pos.dim(0)) + " entries, input 'x' has " +
           std::to_string(tokens) + " tokens");
    const int64_t half = table_.rotary_dim / 2;
    const int64_t width = heads * dim;
    const int64_t stride = (width + 15) / 16 * 16 + (2 * half + 15) / 16 * 16;
    const auto block =
        ctx.scratch(static_cast<uint64_t>(num_threads() * stride) * sizeof(float), "f32 rows");
    float* bufs = kit::floats(block);
    angles_.resize(static_cast<size_t>(num_threads() * 2 * half));
    const bool i64 = pos.dtype == MOERT_DTYPE_I64;
    const double* inv_freq = table_.inv_freq.data();
    const double* step_cos = step_cos_.data();
    const double* step_sin = step_sin_.data();
    const double scaling = table_.attention_scaling;
    const bool interleaved = table_.interleaved;
    parallel_for(tokens, std::max<int64_t>(1, 2048 / std::max<int64_t>(width, 1)),
                 [&](int64_t t0, int64_t t1) {
                   const int thread = omp_get_thread_num();
                   float* row = bufs + thread * stride;
                   float* cs = row + (width + 15) / 16 * 16;
                   float* sn = cs + half;
                   // cos and sin of the previous token's angles, in double.
                   double* c = angles_.data() + static_cast<size_t>(thread * 2 * half);
                   double* sd = c + half;
                   double prev = 0;
                   int64_t run = 0;  // tokens since cos / sin were computed directly
                   for (int64_t t = t0; t < t1; ++t) {
                     const double p = i64 ? static_cast<double>(pos.as<int64_t>()[t])
                                          : static_cast<double>(pos.as<int32_t>()[t]);
                     if (t > t0 && p == prev + 1 && run < kReseed) {
                       for (int64_t j = 0; j < half; ++j) {
                         const double c1 = c[j] * step_cos[j] - sd[j] * step_sin[j];
                         sd[j] = sd[j] * step_cos[j] + c[j] * step_sin[j];
                         c[j] = c1;
                       }
                       ++run;
                     } else {
                       for (int64_t j = 0; j < half; ++j) {
                         const double angle = p * inv_freq[j];
                         c[j] = std::cos(angle);
                         sd[j] = std::sin(angle);
                       }
                       run = 0;
                     }
                     prev = p;
                     for (int64_t j = 0; j < half; ++j) {
                       cs[j] = static_cast<float>(c[j] * scaling);
                       sn[j] = static_cast<float>(sd[j] * scaling);
                     }
                     vec::widen(x.dtype, x.data, t * width, width, row);
                     vec::rotate_pairs(row, heads, dim, half, interleaved, cs, sn);
                     vec::narrow(row, width, y.dtype, y.data, t * width);
                   }
                 });
  }

 private:
  plugin::RopeTable table_;
  std::vector<double> step_cos_, step_sin_;  // cos / sin of inv_freq
  std::vector<double> angles_;               // per thread: cos, sin of the last token
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<Rope>(node); }

const KernelRegistration registration({"rope", plugin::check_rope, create});

}  // namespace
}  // namespace moert::cpu
