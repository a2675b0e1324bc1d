// softmax over the last axis (kernels/rows.cl), one work-group per row.
#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "rows.cl";

class Softmax final : public Kernel {
 public:
  explicit Softmax(PrepareContext& pc) : k_(pc.kernel(kFile, "softmax_rows")) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    const size_t wg = ctx.device().row_wg();
    ctx.args(k_).tensor(x).tensor(y).i32(x.dtype).u64(static_cast<uint64_t>(x.dim(-1)));
    ctx.launch(k_, {static_cast<size_t>(x.rows()) * wg}, {wg});
  }

 private:
  ClKernel k_;
};

std::unique_ptr<Kernel> create_softmax(PrepareContext& pc) { return std::make_unique<Softmax>(pc); }

const KernelRegistration softmax_reg({"softmax", plugin::check_rows, create_softmax});

}  // namespace
}  // namespace moert::ocl
