// cast between any two dtypes (kernels/elementwise.cl); exact for i32/i64
// only on devices with fp64.
#include "kernel.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "elementwise.cl";

bool is_wide_int(moert_dtype t) { return t == MOERT_DTYPE_I32 || t == MOERT_DTYPE_I64; }

std::string check_cast(const NodeDesc& node, const Device& d) {
  const moert_dtype from = node.input(0).dtype(), to = node.output(0).dtype();
  if (!d.caps().fp64 && (is_wide_int(from) || is_wide_int(to)))
    return "cast from " + dtype_str(from) + " to " + dtype_str(to) +
           " is exact only with fp64, which this device lacks";
  return "";
}

class Cast final : public Kernel {
 public:
  explicit Cast(PrepareContext& pc) : k_(pc.kernel(kFile, "cast_any")) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    const uint64_t n = static_cast<uint64_t>(x.numel());
    if (x.dtype == y.dtype) {
      ctx.copy(x.mem, x.offset, y.mem, y.offset, x.nbytes());
      return;
    }
    ctx.args(k_).tensor(x).i32(x.dtype).tensor(y).i32(y.dtype).u64(n);
    ctx.launch(k_, {n}, {ctx.device().elementwise_wg()});
  }

 private:
  ClKernel k_;
};

std::unique_ptr<Kernel> create_cast(PrepareContext& pc) { return std::make_unique<Cast>(pc); }

const KernelRegistration cast_reg({"cast", check_cast, create_cast});

}  // namespace
}  // namespace moert::ocl
