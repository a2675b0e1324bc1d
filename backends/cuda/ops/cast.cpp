// cast between every pair of dtypes (round to nearest even, fp8 saturating),
// as the reference kernel converts.
#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

class CastKernel final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    require(x.numel() == y.numel(), "output size differs from the input's");
    if (x.dtype == y.dtype)
      ctx.copy(y.data, x.data, x.nbytes());
    else
      launch::cast(ctx.stream(), x.dtype, x.data, y.dtype, y.data, x.numel());
  }
};

std::unique_ptr<Kernel> create_cast(PrepareContext&) { return std::make_unique<CastKernel>(); }

const KernelRegistration cast_reg({"cast", plugin::check_cast, create_cast});

}  // namespace
}  // namespace moert::cuda
