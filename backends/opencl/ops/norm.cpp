// rms_norm over the last axis (kernels/rows.cl), one work-group per row.
#include <cmath>

#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "rows.cl";

std::string check_rms_norm(const NodeDesc& node) {
  if (std::string r = plugin::check_rows(node); !r.empty()) return r;
  if (!is_float(node.input(1).dtype()))
    return "rms_norm weight of " + dtype_str(node.input(1).dtype());
  return "";
}

class RmsNorm final : public Kernel {
 public:
  explicit RmsNorm(PrepareContext& pc)
      : k_(pc.kernel(kFile, "rms_norm_rows")),
        eps_(static_cast<float>(pc.node().attr_float("eps", 1e-6))) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &w = ctx.in(1), &y = ctx.out(0);
    const size_t wg = ctx.device().row_wg();
    ctx.args(k_)
        .tensor(x)
        .tensor(w)
        .i32(w.dtype)
        .tensor(y)
        .i32(x.dtype)
        .u64(static_cast<uint64_t>(x.dim(-1)))
        .f32(eps_);
    ctx.launch(k_, {static_cast<size_t>(x.rows()) * wg}, {wg});
  }

 private:
  ClKernel k_;
  float eps_;
};

std::unique_ptr<Kernel> create_rms_norm(PrepareContext& pc) {
  return std::make_unique<RmsNorm>(pc);
}

const KernelRegistration rms_norm_reg({"rms_norm", check_rms_norm, create_rms_norm});

}  // namespace
}  // namespace moert::ocl
