// linear and matmul, both batched products of gemm.h: a linear weight is
// used in place as stored (in its dtype, or packed as attribute quant says:
// version 2 of linear); matmul's b, when not transposed already, is
// transposed into scratch first.
#include <vector>

#include "gemm.h"

namespace moert::ocl {
namespace {

WeightKind linear_weight(const NodeDesc& node) { return weight_kind(node, 1, 3, "quant"); }

std::string check_linear(const NodeDesc& node, const Device&) {
  const TensorDesc x = node.input(0), w = node.input(1);
  if (!is_activation(x.dtype())) return "linear input of " + dtype_str(x.dtype());
  if (w.rank() != 2) return "linear weight must be a static [N, K]";
  if (std::string r = check_weight(node, linear_weight(node), 1, 3, "linear weight"); !r.empty())
    return r;
  if (node.has_input(2) && !is_float(node.input(2).dtype()))
    return "linear bias of " + dtype_str(node.input(2).dtype());
  const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0) return "bad block_size";
  if (!is_activation(node.output(0).dtype()))
    return "linear output of " + dtype_str(node.output(0).dtype());
  // K is x's last dim (a packed weight stores two columns per byte).
  const int64_t k = x.rank() ? x.static_dim(x.rank() - 1) : -1;
  if (k < 0) return "the last dim of linear input x must be static";
  if (w.static_dim(0) > INT32_MAX || k > INT32_MAX) return "linear weight too large";
  return "";
}

class Linear final : public Kernel {
 public:
  explicit Linear(PrepareContext& pc) : gemm_(pc, linear_weight(pc.node())) {
    if (linear_weight(pc.node()).scaled()) {
      const std::vector<int64_t> block = pc.node().attr_ints("block_size", {128, 128});
      b0_ = block[0];
      b1_ = block[1];
    }
  }
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &w = ctx.in(1), &y = ctx.out(0);
    Gemm::Problem p;
    p.x = &x;
    p.w = w.mem;
    p.w_offset = w.offset;
    p.scale = ctx.has(3) ? &ctx.in(3) : nullptr;
    p.bias = ctx.has(2) ? &ctx.in(2) : nullptr;
    p.y = &y;
    p.n = w.dim(0);
    p.k = x.dim(-1);
    p.m = x.rows();
    p.b0 = b0_;
    p.b1 = p.scale ? b1_ : 0;
    gemm_.run(ctx, p);
  }

 private:
  Gemm gemm_;
  int64_t b0_ = 1, b1_ = 0;
};

std::unique_ptr<Kernel> create_linear(PrepareContext& pc) { return std::make_unique<Linear>(pc); }

std::string check_matmul(const NodeDesc& node, const Device&) {
  const TensorDesc a = node.input(0), b = node.input(1);
  if (!is_activation(a.dtype()) || !is_activation(b.dtype()))
    return "matmul of " + dtype_str(a.dtype()) + " and " + dtype_str(b.dtype());
  if (a.rank() < 2 || a.rank() != b.rank()) return "matmul operands of ranks below 2 or unequal";
  return "";
}

class Matmul final : public Kernel {
 public:
  explicit Matmul(PrepareContext& pc)
      : gemm_(pc, WeightKind{pc.node().input(1).dtype()}),
        transpose_b_(pc.node().attr_int("transpose_b", 0) != 0) {
    if (!transpose_b_) {
      const size_t es = plugin::dtype_size(pc.node().input(1).dtype());
      transpose_ = pc.kernel("layout.cl", ("transpose_" + std::to_string(es)).c_str());
    }
  }
  void run(ExecContext& ctx) override {
    const Tensor &a = ctx.in(0), &b = ctx.in(1), &y = ctx.out(0);
    const int64_t m = a.dim(-2), k = a.dim(-1), n = y.dim(-1);
    const int64_t batch = m > 0 && n > 0 ? y.numel() / (m * n) : 0;
    Gemm::Problem p;
    p.x = &a;
    p.y = &y;
    p.batch = batch;
    p.m = m;
    p.n = n;
    p.k = k;
    p.w = b.mem;
    p.w_offset = b.offset;
    Device::ScratchBlock b_transposed;
    if (!transpose_b_ && batch > 0) {
      // b [batch, K, N] -> [batch, N, K].
      const uint64_t count = static_cast<uint64_t>(b.numel());
      b_transposed = ctx.scratch(count * b.elem_size(), "b transposed");
      cl_mem bt = b_transposed.get();
      const std::array<int64_t, 8> dims{batch, n, k, 0, 0, 0, 0, 0};
      const std::array<int64_t, 8> strides{k * n, 1, n, 0, 0, 0, 0, 0};
      ctx.args(transpose_).tensor(b).mem(bt).u64(0).u64(count).long8(dims).long8(strides).i32(3);
      ctx.launch(transpose_, {count}, {ctx.device().elementwise_wg()});
      p.w = bt;
      p.w_offset = 0;
    }
    gemm_.run(ctx, p);
  }

 private:
  Gemm gemm_;
  bool transpose_b_;
  ClKernel transpose_;
};

std::unique_ptr<Kernel> create_matmul(PrepareContext& pc) { return std::make_unique<Matmul>(pc); }

// Version 2: packed weights (attribute quant).
KernelDef linear_def() {
  KernelDef def("linear", check_linear, create_linear);
  def.version = 2;
  return def;
}

const KernelRegistration linear_reg(linear_def());
const KernelRegistration matmul_reg({"matmul", check_matmul, create_matmul});

}  // namespace
}  // namespace moert::ocl
