// argmax over the last axis (kernels/rows.cl), one work-group per row:
// i32 indices, the lowest on ties.
#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "rows.cl";

class Argmax final : public Kernel {
 public:
  explicit Argmax(PrepareContext& pc) : k_(pc.kernel(kFile, "argmax_rows")) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    const int64_t n = x.dim(-1);
    require(n > 0 && n <= INT32_MAX,
            "the last dim of input 'x' " + shape_str(x) + " must be in [1, 2^31)");
    const size_t wg = ctx.device().row_wg();
    ctx.args(k_).tensor(x).tensor(y).i32(x.dtype).u64(static_cast<uint64_t>(n));
    ctx.launch(k_, {static_cast<size_t>(x.rows()) * wg}, {wg});
  }

 private:
  ClKernel k_;
};

std::unique_ptr<Kernel> create_argmax(PrepareContext& pc) { return std::make_unique<Argmax>(pc); }

const KernelRegistration argmax_reg({"argmax", plugin::check_rows, create_argmax});

}  // namespace
}  // namespace moert::ocl
