// Elementwise ops (kernels/elementwise.cl): add and mul with b broadcast to
// a's shape, silu, sigmoid and swiglu (version 2: its clamped form, by the
// *_act kernels, chosen once per node at prepare).
#include <cmath>
#include <vector>

#include "kernel.h"
#include "op_params.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "elementwise.cl";
constexpr int kAdd = 0, kMul = 1;
constexpr int kSilu = 0, kSigmoid = 1;

std::string check_binary(const NodeDesc& node, const Device&) {
  const TensorDesc a = node.input(0), b = node.input(1);
  if (!is_activation(a.dtype()) || a.dtype() != b.dtype())
    return std::string(node.op()) + " of " + dtype_str(a.dtype()) + " and " + dtype_str(b.dtype()) +
           " (both must be the same of f32, bf16, f16)";
  if (b.rank() > a.rank()) return "input 'b' has a higher rank than input 'a'";
  return "";
}

class Binary final : public Kernel {
 public:
  Binary(PrepareContext& pc, int op)
      : op_(op),
        mod_(pc.kernel(kFile, "binary_mod")),
        general_(pc.kernel(kFile, "binary_general")) {}

  void run(ExecContext& ctx) override {
    const Tensor &a = ctx.in(0), &b = ctx.in(1), &y = ctx.out(0);
    const uint64_t n = static_cast<uint64_t>(a.numel());
    // b's stride along each of a's axes, 0 where b broadcasts; then adjacent
    // axes that b walks contiguously (or broadcasts along both) merge, so
    // that the common cases become one period `bn` of a flat index.
    std::vector<int64_t> dims, strides;
    int64_t stride = 1;
    std::vector<int64_t> bstride(a.rank, 0);
    for (uint32_t i = 0; i < b.rank; ++i) {
      const int64_t db = b.shape[b.rank - 1 - i];
      if (db != 1) bstride[a.rank - 1 - i] = stride;
      stride *= db;
    }
    for (uint32_t i = 0; i < a.rank; ++i) {
      if (a.shape[i] == 1) continue;
      if (!dims.empty()) {
        const int64_t s_out = strides.back(), s_in = bstride[i];
        if ((s_out == 0 && s_in == 0) || s_out == s_in * a.shape[i]) {
          dims.back() *= a.shape[i];
          strides.back() = s_in;
          continue;
        }
      }
      dims.push_back(a.shape[i]);
      strides.push_back(bstride[i]);
    }
    bool periodic = !strides.empty() && strides.back() <= 1;
    for (size_t i = 0; i + 1 < strides.size(); ++i) periodic = periodic && strides[i] == 0;
    if (dims.empty() || periodic) {
      const uint64_t bn = dims.empty() || strides.back() == 0 ? 1 : dims.back();
      ctx.args(mod_).tensor(a).tensor(b).tensor(y).i32(a.dtype).i32(op_).u64(n).u64(bn);
      ctx.launch(mod_, {n}, {ctx.device().elementwise_wg()});
      return;
    }
    std::array<int64_t, 8> d{}, s{};
    for (size_t i = 0; i < dims.size(); ++i) {
      d[i] = dims[i];
      s[i] = strides[i];
    }
    ctx.args(general_)
        .tensor(a)
        .tensor(b)
        .tensor(y)
        .i32(a.dtype)
        .i32(op_)
        .u64(n)
        .long8(d)
        .long8(s)
        .i32(static_cast<int32_t>(dims.size()));
    ctx.launch(general_, {n}, {ctx.device().elementwise_wg()});
  }

 private:
  int op_;
  ClKernel mod_, general_;
};

std::unique_ptr<Kernel> create_add(PrepareContext& pc) {
  return std::make_unique<Binary>(pc, kAdd);
}
std::unique_ptr<Kernel> create_mul(PrepareContext& pc) {
  return std::make_unique<Binary>(pc, kMul);
}

std::string check_unary(const NodeDesc& node, const Device&) {
  if (!is_activation(node.input(0).dtype()))
    return std::string(node.op()) + " of " + dtype_str(node.input(0).dtype());
  return "";
}

class Unary final : public Kernel {
 public:
  Unary(PrepareContext& pc, int op) : op_(op), k_(pc.kernel(kFile, "unary")) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    const uint64_t n = static_cast<uint64_t>(x.numel());
    ctx.args(k_).tensor(x).tensor(y).i32(x.dtype).i32(op_).u64(n);
    ctx.launch(k_, {n}, {ctx.device().elementwise_wg()});
  }

 private:
  int op_;
  ClKernel k_;
};

std::unique_ptr<Kernel> create_silu(PrepareContext& pc) {
  return std::make_unique<Unary>(pc, kSilu);
}
std::unique_ptr<Kernel> create_sigmoid(PrepareContext& pc) {
  return std::make_unique<Unary>(pc, kSigmoid);
}

std::string check_swiglu(const NodeDesc& node, const Device&) {
  const moert_dtype t = node.input(0).dtype();
  if (!is_activation(t)) return "swiglu of " + dtype_str(t);
  if (node.has_input(1) && node.input(1).dtype() != t)
    return "swiglu of " + dtype_str(t) + " and " + dtype_str(node.input(1).dtype());
  plugin::swiglu_params(node, "");  // throws (a reason) when invalid
  return "";
}

class Swiglu final : public Kernel {
 public:
  Swiglu(PrepareContext& pc, const plugin::SwigluParams& p)
      : clamped_(!p.plain()),
        alpha_(static_cast<float>(p.alpha)),
        limit_(p.limit > 0 ? static_cast<float>(p.limit) : INFINITY),
        up_offset_(static_cast<float>(p.up_offset)),
        pair_(pc.kernel(kFile, clamped_ ? "swiglu_pair_act" : "swiglu_pair")),
        halves_(pc.kernel(kFile, clamped_ ? "swiglu_halves_act" : "swiglu_halves")) {}
  void run(ExecContext& ctx) override {
    const Tensor &g = ctx.in(0), &y = ctx.out(0);
    const uint64_t n = static_cast<uint64_t>(y.numel());
    if (ctx.has(1)) {
      Args a = ctx.args(pair_);
      a.tensor(g).tensor(ctx.in(1)).tensor(y).i32(g.dtype).u64(n);
      if (clamped_) a.f32(alpha_).f32(limit_).f32(up_offset_);
      ctx.launch(pair_, {n}, {ctx.device().elementwise_wg()});
    } else {
      const uint64_t half = static_cast<uint64_t>(y.dim(-1));
      Args a = ctx.args(halves_);
      a.tensor(g).tensor(y).i32(g.dtype).u64(n).u64(half);
      if (clamped_) a.f32(alpha_).f32(limit_).f32(up_offset_);
      ctx.launch(halves_, {n}, {ctx.device().elementwise_wg()});
    }
  }

 private:
  bool clamped_;
  float alpha_, limit_, up_offset_;  // limit +inf: no clamp
  ClKernel pair_, halves_;
};

std::unique_ptr<Kernel> create_swiglu(PrepareContext& pc) {
  return std::make_unique<Swiglu>(pc, plugin::swiglu_params(pc.node(), ""));
}

const KernelRegistration add_reg({"add", check_binary, create_add});
const KernelRegistration mul_reg({"mul", check_binary, create_mul});
const KernelRegistration silu_reg({"silu", check_unary, create_silu});
const KernelRegistration sigmoid_reg({"sigmoid", check_unary, create_sigmoid});
// Version 2: the clamped form (attributes alpha, limit, up_offset).
const KernelRegistration swiglu_reg(KernelDef("swiglu", check_swiglu, create_swiglu).at_version(2));

}  // namespace
}  // namespace moert::ocl
