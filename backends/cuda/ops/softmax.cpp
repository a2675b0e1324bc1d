// softmax over the last axis: f32, bf16 and f16 activations computed in f32.
#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

std::string check_softmax(const NodeDesc& node) {
  if (node.output(0).dtype() != node.input(0).dtype()) return "output dtype differs from x's";
  return plugin::check_rows(node);
}

class Softmax final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    launch::softmax(ctx.stream(), x.dtype, x.data, ctx.out(0).data, x.rows(), x.dim(-1));
  }
};

std::unique_ptr<Kernel> create_softmax(PrepareContext&) { return std::make_unique<Softmax>(); }

const KernelRegistration softmax_reg({"softmax", check_softmax, create_softmax});

}  // namespace
}  // namespace moert::cuda
