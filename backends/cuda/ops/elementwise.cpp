// add, mul (b broadcast to a), silu, sigmoid and swiglu (version 2: the
// clamped form, chosen once per node): f32, bf16 and f16 activations
// computed in f32.
#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"
#include "op_params.h"

namespace moert::cuda {
namespace {

std::string check_activations(const NodeDesc& node) {
  for (size_t i = 0; i < node.num_inputs(); ++i)
    if (node.has_input(i) && !is_activation(node.input(i).dtype()))
      return std::string(node.op()) + " of " + dtype_str(node.input(i).dtype()) +
             " (f32, bf16 or f16 only)";
  if (node.output(0).dtype() != node.input(0).dtype())
    return "output dtype differs from the input's";
  return "";
}

std::string check_binary(const NodeDesc& node) {
  if (node.num_inputs() < 2 || !node.has_input(1)) return "needs inputs a and b";
  if (node.input(0).dtype() != node.input(1).dtype()) return "inputs of different dtypes";
  if (node.input(1).rank() > node.input(0).rank()) return "b of higher rank than a";
  return check_activations(node);
}

class BinaryKernel final : public Kernel {
 public:
  explicit BinaryKernel(launch::Binary op) : op_(op) {}
  void run(ExecContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    launch::Broadcast bc;
    bc.rank = static_cast<int>(a.rank);
    bc.same = a.rank == b.rank && a.shape == b.shape;
    int64_t stride = 1;
    for (uint32_t i = 0; i < a.rank; ++i) bc.shape[i] = a.shape[i];
    for (uint32_t i = 0; i < b.rank; ++i) {
      const int64_t db = b.shape[b.rank - 1 - i], da = a.shape[a.rank - 1 - i];
      require(db == da || db == 1,
              "input 'b' " + shape_str(b) + " does not broadcast to input 'a' " + shape_str(a));
      if (db != 1) bc.b_stride[a.rank - 1 - i] = stride;
      stride *= db;
    }
    launch::binary(ctx.stream(), op_, a.dtype, a.data, b.data, ctx.out(0).data, a.numel(), bc);
  }

 private:
  launch::Binary op_;
};

class UnaryKernel final : public Kernel {
 public:
  explicit UnaryKernel(launch::Unary op) : op_(op) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    launch::unary(ctx.stream(), op_, x.dtype, x.data, ctx.out(0).data, x.numel());
  }

 private:
  launch::Unary op_;
};

std::string check_swiglu(const NodeDesc& node) {
  if (node.has_input(1)) {
    if (node.input(1).dtype() != node.input(0).dtype()) return "gate and up of different dtypes";
  } else {
    const TensorDesc g = node.input(0);
    if (g.rank() < 1 || g.static_dim(g.rank() - 1) < 0 || g.static_dim(g.rank() - 1) % 2 != 0)
      return "swiglu of one input needs a static, even last dim";
  }
  plugin::swiglu_params(node, "");  // throws (a reason) when invalid
  return check_activations(node);
}

class SwigluKernel final : public Kernel {
 public:
  explicit SwigluKernel(const plugin::SwigluParams& p) : clamped_(!p.plain()) {
    act_.alpha = static_cast<float>(p.alpha);
    if (p.limit > 0) act_.limit = static_cast<float>(p.limit);
    act_.up_offset = static_cast<float>(p.up_offset);
  }
  void run(ExecContext& ctx) override {
    const Tensor& g = ctx.in(0);
    const Tensor& y = ctx.out(0);
    const launch::SwigluAct* act = clamped_ ? &act_ : nullptr;
    if (ctx.has(1)) {
      require(ctx.in(1).numel() == g.numel(), "inputs 'gate' and 'up' differ in size");
      launch::swiglu(ctx.stream(), g.dtype, g.data, ctx.in(1).data, y.data, 1, g.numel(), act);
    } else {
      launch::swiglu(ctx.stream(), g.dtype, g.data, nullptr, y.data, y.rows(), y.dim(-1), act);
    }
  }

 private:
  bool clamped_;
  launch::SwigluAct act_;
};

std::unique_ptr<Kernel> create_add(PrepareContext&) {
  return std::make_unique<BinaryKernel>(launch::Binary::add);
}
std::unique_ptr<Kernel> create_mul(PrepareContext&) {
  return std::make_unique<BinaryKernel>(launch::Binary::mul);
}
std::unique_ptr<Kernel> create_silu(PrepareContext&) {
  return std::make_unique<UnaryKernel>(launch::Unary::silu);
}
std::unique_ptr<Kernel> create_sigmoid(PrepareContext&) {
  return std::make_unique<UnaryKernel>(launch::Unary::sigmoid);
}
std::unique_ptr<Kernel> create_swiglu(PrepareContext& pc) {
  return std::make_unique<SwigluKernel>(plugin::swiglu_params(pc.node(), ""));
}

const KernelRegistration add_reg({"add", check_binary, create_add});
const KernelRegistration mul_reg({"mul", check_binary, create_mul});
const KernelRegistration silu_reg({"silu", check_activations, create_silu});
const KernelRegistration sigmoid_reg({"sigmoid", check_activations, create_sigmoid});
// Version 2: the clamped form (attributes alpha, limit, up_offset).
const KernelRegistration swiglu_reg(KernelDef("swiglu", check_swiglu, create_swiglu).at_version(2));

}  // namespace
}  // namespace moert::cuda
