// rms_norm: f32, bf16 and f16 activations computed in f32, a weight of any
// float dtype.
#include <cmath>

#include "kernel.h"
#include "kernels/launch.h"

namespace moert::cuda {
namespace {

std::string check_rms_norm(const NodeDesc& node) {
  const TensorDesc x = node.input(0), w = node.input(1);
  if (!is_activation(x.dtype())) return "rms_norm of " + dtype_str(x.dtype());
  if (!is_float(w.dtype())) return "rms_norm weight must be a float tensor";
  if (x.rank() < 1 || w.rank() != 1) return "rms_norm needs x [..., D] and weight [D]";
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from x's";
  const double eps = node.attr_float("eps", 1e-6);
  if (!std::isfinite(eps) || eps < 0) return "attribute 'eps' must be finite and >= 0";
  return "";
}

class RmsNorm final : public Kernel {
 public:
  explicit RmsNorm(const NodeDesc& n) : eps_(static_cast<float>(n.attr_float("eps", 1e-6))) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    require(w.numel() == x.dim(-1), "weight " + shape_str(w) + " does not match x " + shape_str(x));
    launch::rms_norm(ctx.stream(), x.dtype, x.data, w.dtype, w.data, ctx.out(0).data, x.rows(),
                     x.dim(-1), eps_);
  }

 private:
  float eps_;
};

std::unique_ptr<Kernel> create_rms_norm(PrepareContext& pc) {
  return std::make_unique<RmsNorm>(pc.node());
}

const KernelRegistration rms_norm_reg({"rms_norm", check_rms_norm, create_rms_norm});

}  // namespace
}  // namespace moert::cuda
