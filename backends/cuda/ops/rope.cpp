// rope: the frequency table (ops/rope.cpp's none / linear / YaRN scaling)
// is computed once at prepare in double and uploaded; the kernel rotates
// with angles in double.  x f32, bf16 or f16; positions i32 or i64.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernel.h"
#include "kernels/launch.h"

namespace moert::cuda {
namespace {

struct RopeTable {
  int64_t rotary_dim = 0;
  bool interleaved = false;
  std::vector<double> inv_freq;
  double attention_scaling = 1.0;
};

double yarn_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

// Validates the attributes for head size d and builds the table; throws
// with the reason when an attribute is out of range.
RopeTable make_table(const NodeDesc& n, int64_t d) {
  RopeTable t;
  require(n.attr("theta") != nullptr, "attribute 'theta' is required");
  const double theta = n.attr_float("theta", 0.0);
  require(theta > 0.0 && std::isfinite(theta), "attribute 'theta' must be a finite number > 0");
  t.rotary_dim = n.attr_int("rotary_dim", d);
  require(t.rotary_dim >= 2 && t.rotary_dim <= d && t.rotary_dim % 2 == 0,
          "attribute 'rotary_dim' must be even and in [2, " + std::to_string(d) + "]");
  const std::string pairing = n.attr_string("pairing", "half");
  require(pairing == "half" || pairing == "interleaved",
          "attribute 'pairing' must be \"half\" or \"interleaved\"");
  t.interleaved = pairing == "interleaved";
  const std::string scaling = n.attr_string("scaling", "none");
  require(scaling == "none" || scaling == "linear" || scaling == "yarn",
          "attribute 'scaling' must be \"none\", \"linear\" or \"yarn\"");
  double factor = 1.0;
  if (scaling != "none") {
    require(n.attr("factor") != nullptr, "attribute 'factor' is required with scaling");
    factor = n.attr_float("factor", 1.0);
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
    const int64_t l0 = n.attr_int("original_max_position_embeddings", 0);
    require(l0 > 0, "attribute 'original_max_position_embeddings' must be given and > 0");
    const double beta_fast = n.attr_float("beta_fast", 32.0);
    const double beta_slow = n.attr_float("beta_slow", 1.0);
    require(beta_fast > 0.0 && beta_slow > 0.0, "attributes 'beta_fast', 'beta_slow' must be > 0");
    const double mscale = n.attr_float("mscale", 1.0);
    const double mscale_all_dim = n.attr_float("mscale_all_dim", 0.0);
    const int64_t truncate = n.attr_int("truncate", 1);
    require(truncate == 0 || truncate == 1, "attribute 'truncate' must be 0 or 1");
    const double rd = static_cast<double>(r);
    auto corr = [&](double b) {
      return rd * std::log(static_cast<double>(l0) / (2.0 * std::numbers::pi * b)) /
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
    if (n.attr("attention_factor"))
      t.attention_scaling = n.attr_float("attention_factor", 1.0);
    else if (mscale != 0.0 && mscale_all_dim != 0.0)
      t.attention_scaling = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim);
    else
      t.attention_scaling = yarn_mscale(factor, 1.0);
  }
  return t;
}

std::string check_rope(const NodeDesc& node) {
  const TensorDesc x = node.input(0), pos = node.input(1);
  if (!is_activation(x.dtype())) return "rope of " + dtype_str(x.dtype());
  if (x.rank() != 3 || x.static_dim(1) < 0 || x.static_dim(2) < 0)
    return "rope needs x [T, nh, d] with static nh and d";
  if (!is_index(pos.dtype())) return "rope positions must be i32 or i64";
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from x's";
  try {
    make_table(node, x.static_dim(2));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

class Rope final : public Kernel {
 public:
  explicit Rope(PrepareContext& pc)
      : table_(make_table(pc.node(), pc.node().input(0).static_dim(2))) {
    const uint64_t bytes = sizeof(double) * table_.inv_freq.size();
    inv_freq_ = DeviceBlock(pc.device(), bytes, "the rope frequency table");
    check_cuda(cudaMemcpyAsync(inv_freq_.get(), table_.inv_freq.data(), bytes,
                               cudaMemcpyHostToDevice, pc.device().stream()),
               "uploading the rope frequency table");
    pc.device().synchronize("uploading the rope frequency table");
  }
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& pos = ctx.in(1);
    require(pos.numel() == x.dim(0), "input 'positions' has " + std::to_string(pos.numel()) +
                                         " entries, input 'x' has " + std::to_string(x.dim(0)) +
                                         " tokens");
    launch::rope(ctx.stream(), x.dtype, x.data, pos.dtype, pos.data, ctx.out(0).data, x.dim(0),
                 x.dim(1), x.dim(2), inv_freq_.as<double>(), table_.rotary_dim / 2,
                 table_.interleaved, table_.attention_scaling);
  }

 private:
  RopeTable table_;
  DeviceBlock inv_freq_;
};

std::unique_ptr<Kernel> create_rope(PrepareContext& pc) { return std::make_unique<Rope>(pc); }

const KernelRegistration rope_reg({"rope", check_rope, create_rope});

}  // namespace
}  // namespace moert::cuda
