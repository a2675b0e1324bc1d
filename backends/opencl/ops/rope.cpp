// rope (kernels/rope.cl): the frequency table (with linear or YaRN scaling)
// is computed on the host in double at prepare, exactly as ops/rope.cpp
// defines it, and uploaded once; per call the device computes cos and sin
// once per (token, pair) and rotates every head with them.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

class Rope final : public Kernel {
 public:
  explicit Rope(PrepareContext& pc)
      : angles_(pc.kernel("rope.cl", "rope_angles")), k_(pc.kernel("rope.cl", "rope")) {
    const int64_t d = pc.node().input(0).static_dim(2);
    const plugin::RopeTable t = plugin::rope_table(pc.node(), d);
    rotary_ = static_cast<int32_t>(t.rotary_dim);
    interleaved_ = t.interleaved ? 1 : 0;
    // inv_freq then the attention scaling, in the kernels' `wide` type.
    std::vector<double> values = t.inv_freq;
    values.push_back(t.attention_scaling);
    Device& dev = pc.device();
    if (dev.caps().fp64) {
      table_ = ClBuffer(dev.allocate(values.size() * sizeof(double), CL_MEM_READ_ONLY));
      check_cl(
          clEnqueueWriteBuffer(dev.queue(), table_.get(), CL_TRUE, 0,
                               values.size() * sizeof(double), values.data(), 0, nullptr, nullptr),
          "uploading the rope table");
    } else {
      const std::vector<float> narrow(values.begin(), values.end());
      table_ = ClBuffer(dev.allocate(narrow.size() * sizeof(float), CL_MEM_READ_ONLY));
      check_cl(
          clEnqueueWriteBuffer(dev.queue(), table_.get(), CL_TRUE, 0, narrow.size() * sizeof(float),
                               narrow.data(), 0, nullptr, nullptr),
          "uploading the rope table");
    }
  }
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &pos = ctx.in(1), &y = ctx.out(0);
    require(pos.dim(0) == x.dim(0), "input 'positions' has " + std::to_string(pos.dim(0)) +
                                        " entries, input 'x' has " + std::to_string(x.dim(0)) +
                                        " tokens");
    Device& d = ctx.device();
    const uint64_t pairs = static_cast<uint64_t>(x.dim(0)) * static_cast<uint64_t>(rotary_ / 2);
    const size_t wide = d.caps().fp64 ? 8 : 4;
    const auto cs_block = ctx.scratch(std::max<uint64_t>(pairs, 1) * 2 * wide, "cos and sin");
    cl_mem cs = cs_block.get();
    ctx.args(angles_)
        .tensor(pos)
        .i32(pos.dtype == MOERT_DTYPE_I64 ? 1 : 0)
        .mem(table_.get())
        .mem(cs)
        .u64(pairs)
        .i32(rotary_ / 2);
    ctx.launch(angles_, {pairs}, {d.elementwise_wg()});
    const uint64_t n = static_cast<uint64_t>(x.numel());
    ctx.args(k_)
        .tensor(x)
        .tensor(y)
        .i32(x.dtype)
        .mem(cs)
        .u64(n)
        .i32(static_cast<int32_t>(x.dim(1)))
        .i32(static_cast<int32_t>(x.dim(2)))
        .i32(rotary_)
        .i32(interleaved_);
    ctx.launch(k_, {n}, {ctx.device().elementwise_wg()});
  }

 private:
  ClKernel angles_, k_;
  ClBuffer table_;
  int32_t rotary_ = 0, interleaved_ = 0;
};

std::unique_ptr<Kernel> create_rope(PrepareContext& pc) { return std::make_unique<Rope>(pc); }

const KernelRegistration rope_reg({"rope", plugin::check_rope, create_rope});

}  // namespace
}  // namespace moert::ocl
