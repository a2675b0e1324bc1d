// Row reductions over the last axis (kernels/rows.cl), one work-group per
// row: softmax, masked_softmax, argmax and rms_norm.
#include <cmath>

#include "kernel.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "rows.cl";

std::string check_activation_input(const NodeDesc& node, const Device&) {
  const TensorDesc x = node.input(0);
  if (!is_activation(x.dtype())) return std::string(node.op()) + " of " + dtype_str(x.dtype());
  if (x.rank() < 1) return std::string(node.op()) + " of a scalar";
  return "";
}

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

std::string check_rms_norm(const NodeDesc& node, const Device& d) {
  if (std::string r = check_activation_input(node, d); !r.empty()) return r;
  if (!is_float(node.input(1).dtype()))
    return "rms_norm weight of " + dtype_str(node.input(1).dtype());
  return "";
}

class RmsNorm final : public Kernel {
 public:
  explicit RmsNorm(PrepareContext& pc)
      : k_(pc.kernel(kFile, "rms_norm_rows")),
        eps_(static_cast<float>(pc.node().attr_float("eps", 1e-6))) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &w = ctx.in(1), &y = ctx.out(0);
    const size_t wg = ctx.device().row_wg();
    ctx.args(k_)
        .tensor(x)
        .tensor(w)
        .i32(w.dtype)
        .tensor(y)
        .i32(x.dtype)
        .u64(static_cast<uint64_t>(x.dim(-1)))
        .f32(eps_);
    ctx.launch(k_, {static_cast<size_t>(x.rows()) * wg}, {wg});
  }

 private:
  ClKernel k_;
  float eps_;
};

std::unique_ptr<Kernel> create_rms_norm(PrepareContext& pc) {
  return std::make_unique<RmsNorm>(pc);
}

std::string check_masked_softmax(const NodeDesc& node, const Device& d) {
  if (std::string r = check_activation_input(node, d); !r.empty()) return r;
  if (node.input(0).rank() != 3) return "masked_softmax scores must be [nh, T, L]";
  if (node.has_input(1) && !is_float(node.input(1).dtype()))
    return "masked_softmax sinks of " + dtype_str(node.input(1).dtype());
  return "";
}

class MaskedSoftmax final : public Kernel {
 public:
  explicit MaskedSoftmax(PrepareContext& pc) : k_(pc.kernel(kFile, "masked_softmax_rows")) {
    const NodeDesc& node = pc.node();
    scale_ = static_cast<float>(node.attr_float("scale", 1.0));
    causal_ = static_cast<int32_t>(node.attr_int("causal", 1));
    window_ = node.attr_int("window", 0);
  }
  void run(ExecContext& ctx) override {
    const Tensor &s = ctx.in(0), &y = ctx.out(0);
    const int64_t heads = s.dim(0), tokens = s.dim(1), len = s.dim(2);
    require(len >= tokens, "input 'scores' " + shape_str(s) + " has fewer keys than queries");
    const size_t wg = ctx.device().row_wg();
    const Tensor none;
    const Tensor& sinks = ctx.has(1) ? ctx.in(1) : none;
    ctx.args(k_)
        .tensor(s)
        .tensor(sinks)
        .i32(sinks.dtype)
        .i32(ctx.has(1) ? 1 : 0)
        .tensor(y)
        .i32(s.dtype)
        .i64(heads)
        .i64(tokens)
        .i64(len)
        .f32(scale_)
        .i32(causal_)
        .i64(window_);
    ctx.launch(k_, {static_cast<size_t>(heads * tokens) * wg}, {wg});
  }

 private:
  ClKernel k_;
  float scale_ = 1.0f;
  int32_t causal_ = 1;
  int64_t window_ = 0;
};

std::unique_ptr<Kernel> create_masked_softmax(PrepareContext& pc) {
  return std::make_unique<MaskedSoftmax>(pc);
}

const KernelRegistration softmax_reg({"softmax", check_activation_input, create_softmax});
const KernelRegistration argmax_reg({"argmax", check_activation_input, create_argmax});
const KernelRegistration rms_norm_reg({"rms_norm", check_rms_norm, create_rms_norm});
const KernelRegistration masked_softmax_reg({"masked_softmax", check_masked_softmax,
                                             create_masked_softmax});

}  // namespace
}  // namespace moert::ocl
