// rope (kernels/rope.cl): the frequency table (with linear or YaRN scaling)
// is computed on the host in double at prepare, exactly as ops/rope.cpp
// defines it, and uploaded once; per call the device computes cos and sin
// once per (token, pair) and rotates every head with them.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "kernel.h"

namespace moert::ocl {
namespace {

double yarn_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

struct RopeTable {
  int64_t rotary_dim = 0;
  bool interleaved = false;
  std::vector<double> inv_freq;
  double attention_scaling = 1.0;
};

// The table of ops/rope.cpp for head size d, validating the attributes.
RopeTable make_table(const NodeDesc& node, int64_t d) {
  RopeTable t;
  const double theta = node.attr_float("theta", 0.0);
  require(theta > 0.0 && std::isfinite(theta), "attribute 'theta' must be a finite number > 0");
  t.rotary_dim = node.attr_int("rotary_dim", d);
  require(t.rotary_dim >= 2 && t.rotary_dim <= d && t.rotary_dim % 2 == 0,
          "attribute 'rotary_dim' must be even and in [2, " + std::to_string(d) + "]");
  const std::string pairing = node.attr_string("pairing", "half");
  require(pairing == "half" || pairing == "interleaved",
          "attribute 'pairing' must be \"half\" or \"interleaved\"");
  t.interleaved = pairing == "interleaved";
  const std::string scaling = node.attr_string("scaling", "none");
  require(scaling == "none" || scaling == "linear" || scaling == "yarn",
          "attribute 'scaling' must be \"none\", \"linear\" or \"yarn\"");
  double factor = 1.0;
  if (scaling != "none") {
    require(node.attr("factor") != nullptr, "attribute 'factor' is required with scaling");
    factor = node.attr_float("factor", 1.0);
    require(factor > 0.0 && std::isfinite(factor), "attribute 'factor' must be finite and > 0");
  }
  const int64_t r = t.rotary_dim, half = r / 2;
  t.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j)
    t.inv_freq[static_cast<size_t>(j)] =
        std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(r));
  if (scaling == "linear") {
    for (double& f : t.inv_freq) f /= factor;
  } else if (scaling == "yarn") {
    const int64_t l0 = node.attr_int("original_max_position_embeddings", 0);
    require(l0 > 0, "attribute 'original_max_position_embeddings' must be > 0 with yarn");
    const double beta_fast = node.attr_float("beta_fast", 32.0);
    const double beta_slow = node.attr_float("beta_slow", 1.0);
    const double mscale = node.attr_float("mscale", 1.0);
    const double mscale_all_dim = node.attr_float("mscale_all_dim", 0.0);
    const int64_t truncate = node.attr_int("truncate", 1);
    const double rd = static_cast<double>(r);
    auto corr = [&](double n) {
      return rd * std::log(static_cast<double>(l0) / (2.0 * std::numbers::pi * n)) /
             (2.0 * std::log(theta));
    };
    double low = corr(beta_fast), high = corr(beta_slow);
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

std::string check_rope(const NodeDesc& node, const Device&) {
  const TensorDesc x = node.input(0), pos = node.input(1);
  if (!is_activation(x.dtype())) return "rope of " + dtype_str(x.dtype());
  if (pos.dtype() != MOERT_DTYPE_I32 && pos.dtype() != MOERT_DTYPE_I64)
    return "rope positions of " + dtype_str(pos.dtype());
  if (x.rank() != 3 || x.static_dim(1) < 0 || x.static_dim(2) < 0)
    return "rope input must be [T, nh, d] with static nh and d";
  return "";
}

class Rope final : public Kernel {
 public:
  explicit Rope(PrepareContext& pc)
      : angles_(pc.kernel("rope.cl", "rope_angles")), k_(pc.kernel("rope.cl", "rope")) {
    const int64_t d = pc.node().input(0).static_dim(2);
    const RopeTable t = make_table(pc.node(), d);
    rotary_ = static_cast<int32_t>(t.rotary_dim);
    interleaved_ = t.interleaved ? 1 : 0;
    // inv_freq then the attention scaling, in the kernels' `wide` type.
    std::vector<double> values = t.inv_freq;
    values.push_back(t.attention_scaling);
    Device& dev = pc.device();
    if (dev.caps().fp64) {
      table_ = ClBuffer(dev.allocate(values.size() * sizeof(double), CL_MEM_READ_ONLY));
      check_cl(
          clEnqueueWriteBuffer(dev.queue(), table_.get(), CL_TRUE, 0,
                               values.size() * sizeof(double), values.data(), 0, nullptr, nullptr),
          "uploading the rope table");
    } else {
      const std::vector<float> narrow(values.begin(), values.end());
      table_ = ClBuffer(dev.allocate(narrow.size() * sizeof(float), CL_MEM_READ_ONLY));
      check_cl(
          clEnqueueWriteBuffer(dev.queue(), table_.get(), CL_TRUE, 0, narrow.size() * sizeof(float),
                               narrow.data(), 0, nullptr, nullptr),
          "uploading the rope table");
    }
  }
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &pos = ctx.in(1), &y = ctx.out(0);
    require(pos.dim(0) == x.dim(0), "input 'positions' has " + std::to_string(pos.dim(0)) +
                                        " entries, input 'x' has " + std::to_string(x.dim(0)) +
                                        " tokens");
    Device& d = ctx.device();
    const uint64_t pairs = static_cast<uint64_t>(x.dim(0)) * static_cast<uint64_t>(rotary_ / 2);
    const size_t wide = d.caps().fp64 ? 8 : 4;
    cl_mem cs = d.scratch(kScratchRope, std::max<uint64_t>(pairs, 1) * 2 * wide);
    ctx.args(angles_)
        .tensor(pos)
        .i32(pos.dtype == MOERT_DTYPE_I64 ? 1 : 0)
        .mem(table_.get())
        .mem(cs)
        .u64(pairs)
        .i32(rotary_ / 2);
    ctx.launch(angles_, {pairs}, {d.elementwise_wg()});
    const uint64_t n = static_cast<uint64_t>(x.numel());
    ctx.args(k_)
        .tensor(x)
        .tensor(y)
        .i32(x.dtype)
        .mem(cs)
        .u64(n)
        .i32(static_cast<int32_t>(x.dim(1)))
        .i32(static_cast<int32_t>(x.dim(2)))
        .i32(rotary_)
        .i32(interleaved_);
    ctx.launch(k_, {n}, {ctx.device().elementwise_wg()});
  }

 private:
  ClKernel angles_, k_;
  ClBuffer table_;
  int32_t rotary_ = 0, interleaved_ = 0;
};

std::unique_ptr<Kernel> create_rope(PrepareContext& pc) { return std::make_unique<Rope>(pc); }

const KernelRegistration rope_reg({"rope", check_rope, create_rope});

}  // namespace
}  // namespace moert::ocl
