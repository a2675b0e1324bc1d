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
#include "attention_simd.h"
#include "kernel.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

using attn::num;

// Tokens between direct computations of cos / sin in a run of consecutive
// positions.
constexpr int64_t kReseed = 32;

struct RopeTable {
  int64_t rotary_dim = 0;
  bool interleaved = false;
  std::vector<double> inv_freq;  // rotary_dim / 2 entries
  double attention_scaling = 1.0;
};

double yarn_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

// Validates the attributes for head size d and builds the table; on an
// invalid attribute sets *problem and returns an empty table.
RopeTable make_table(const NodeDesc& node, int64_t d, std::string* problem) {
  RopeTable t;
  auto bad = [&](const std::string& why) {
    *problem = why;
    return RopeTable{};
  };
  if (!node.attr("theta")) return bad("attribute 'theta' is required");
  const double theta = node.attr_float("theta", 0.0);
  if (!(theta > 0.0) || !std::isfinite(theta))
    return bad("attribute 'theta' must be a finite number > 0, got " + num(theta));
  t.rotary_dim = node.attr_int("rotary_dim", d);
  if (t.rotary_dim < 2 || t.rotary_dim > d || t.rotary_dim % 2 != 0)
    return bad("attribute 'rotary_dim' must be even and in [2, " + std::to_string(d) +
               "] (the head size), got " + std::to_string(t.rotary_dim));
  const std::string pairing = node.attr_string("pairing", "half");
  if (pairing != "half" && pairing != "interleaved")
    return bad("attribute 'pairing' must be \"half\" or \"interleaved\", got \"" + pairing + "\"");
  t.interleaved = pairing == "interleaved";
  const std::string scaling = node.attr_string("scaling", "none");
  if (scaling != "none" && scaling != "linear" && scaling != "yarn")
    return bad("attribute 'scaling' must be \"none\", \"linear\" or \"yarn\", got \"" + scaling +
               "\"");
  double factor = 1.0;
  if (scaling != "none") {
    if (!node.attr("factor"))
      return bad("attribute 'factor' is required when 'scaling' is \"" + scaling + "\"");
    factor = node.attr_float("factor", 1.0);
    if (!(factor > 0.0) || !std::isfinite(factor))
      return bad("attribute 'factor' must be a finite number > 0, got " + num(factor));
  }
  const int64_t r = t.rotary_dim;
  const int64_t half = r / 2;
  t.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j)
    t.inv_freq[static_cast<size_t>(j)] =
        std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(r));
  if (scaling == "linear") {
    for (double& f : t.inv_freq) f /= factor;
  } else if (scaling == "yarn") {
    if (!node.attr("original_max_position_embeddings"))
      return bad(
          "attribute 'original_max_position_embeddings' is required when 'scaling' is "
          "\"yarn\"");
    const int64_t l0 = node.attr_int("original_max_position_embeddings", 0);
    if (l0 <= 0)
      return bad("attribute 'original_max_position_embeddings' must be > 0, got " +
                 std::to_string(l0));
    const double beta_fast = node.attr_float("beta_fast", 32.0);
    const double beta_slow = node.attr_float("beta_slow", 1.0);
    if (!(beta_fast > 0.0) || !(beta_slow > 0.0))
      return bad("attributes 'beta_fast' and 'beta_slow' must be > 0, got " + num(beta_fast) +
                 " and " + num(beta_slow));
    const double mscale = node.attr_float("mscale", 1.0);
    const double mscale_all_dim = node.attr_float("mscale_all_dim", 0.0);
    const int64_t truncate = node.attr_int("truncate", 1);
    if (truncate != 0 && truncate != 1)
      return bad("attribute 'truncate' must be 0 or 1, got " + std::to_string(truncate));
    const double rd = static_cast<double>(r);
    auto corr = [&](double n) {
      return rd * std::log(static_cast<double>(l0) / (2.0 * std::numbers::pi * n)) /
             (2.0 * std::log(theta));
    };
    double low = corr(beta_fast);
    double high = corr(beta_slow);
    if (truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::clamp(low, 0.0, rd - 1.0);
    high = std::clamp(high, 0.0, rd - 1.0);
    if (low == high) high += 0.001;
    for (int64_t j = 0; j < half; ++j) {
      const double ramp = std::clamp((static_cast<double>(j) - low) / (high - low), 0.0, 1.0);
      double& f = t.inv_freq[static_cast<size_t>(j)];
      f = (1.0 - ramp) * f + ramp * f / factor;
    }
    if (node.attr("attention_factor")) {
      t.attention_scaling = node.attr_float("attention_factor", 1.0);
    } else if (mscale != 0.0 && mscale_all_dim != 0.0) {
      t.attention_scaling = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim);
    } else {
      t.attention_scaling = yarn_mscale(factor, 1.0);
    }
  }
  return t;
}

std::string check(const NodeDesc& node) {
  const TensorDesc x = node.input(0), pos = node.input(1);
  if (!attn::is_activation(x.dtype()))
    return std::string("rope of ") + plugin::dtype_name(x.dtype());
  if (x.rank() != 3 || x.static_dim(1) < 0 || x.static_dim(2) < 0)
    return "rope needs x [T, nh, d] with static nh and d";
  if (!pos.present() || (pos.dtype() != MOERT_DTYPE_I32 && pos.dtype() != MOERT_DTYPE_I64))
    return "rope positions must be i32 or i64";
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from x's";
  std::string problem;
  make_table(node, x.static_dim(2), &problem);
  return problem;
}

class Rope final : public Kernel {
 public:
  explicit Rope(const NodeDesc& node) {
    std::string problem;
    table_ = make_table(node, node.input(0).static_dim(2), &problem);
    if (!problem.empty()) fail(problem);
    for (double f : table_.inv_freq) {
      step_cos_.push_back(std::cos(f));
      step_sin_.push_back(std::sin(f));
    }
  }

  void run(const ExecContext& ctx) override {
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
    float* bufs = bufs_.get(static_cast<int64_t>(num_threads()) * stride);
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
                     attn::widen(x.dtype, x.data, t * width, width, row);
                     attn::rotate_pairs(row, heads, dim, half, interleaved, cs, sn);
                     attn::narrow(row, width, y.dtype, y.data, t * width);
                   }
                 });
  }

 private:
  RopeTable table_;
  std::vector<double> step_cos_, step_sin_;  // cos / sin of inv_freq
  std::vector<double> angles_;               // per thread: cos, sin of the last token
  attn::FloatBuffer bufs_;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<Rope>(node); }

const KernelRegistration registration({"rope", check, create});

}  // namespace
}  // namespace moert::cpu
