// argmax over the last axis of f32, bf16 and f16 activations: i32 indices,
// the lowest on ties.
#include <limits>

#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

std::string check_argmax(const NodeDesc& node) {
  if (node.output(0).dtype() != MOERT_DTYPE_I32) return "argmax output must be i32";
  return plugin::check_rows(node);
}

class Argmax final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t n = x.dim(-1);
    require(n > 0 && n <= std::numeric_limits<int32_t>::max(),
            "the last dim of input 'x' " + shape_str(x) + " must be in [1, 2^31)");
    launch::argmax(ctx.stream(), x.dtype, x.data, static_cast<int32_t*>(ctx.out(0).data),
                   x.numel() / n, n);
  }
};

std::unique_ptr<Kernel> create_argmax(PrepareContext&) { return std::make_unique<Argmax>(); }

const KernelRegistration argmax_reg({"argmax", check_argmax, create_argmax});

}  // namespace
}  // namespace moert::cuda
