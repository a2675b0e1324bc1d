// rope: the frequency table (ops/rope.cpp's none / linear / YaRN scaling)
// is computed once at prepare in double and uploaded; the kernel rotates
// with angles in double.  x f32, bf16 or f16; positions i32 or i64.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

class Rope final : public Kernel {
 public:
  explicit Rope(PrepareContext& pc)
      : table_(plugin::rope_table(pc.node(), pc.node().input(0).static_dim(2))) {
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
  plugin::RopeTable table_;
  DeviceBlock inv_freq_;
};

std::unique_ptr<Kernel> create_rope(PrepareContext& pc) { return std::make_unique<Rope>(pc); }

const KernelRegistration rope_reg({"rope", plugin::check_rope, create_rope});

}  // namespace
}  // namespace moert::cuda
