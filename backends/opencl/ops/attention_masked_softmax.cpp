// masked_softmax: scaled, causally (and window-) masked softmax of attention
// scores (kernels/rows.cl), one work-group per row.
#include <cmath>

#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "rows.cl";

std::string check_masked_softmax(const NodeDesc& node) {
  if (std::string r = plugin::check_rows(node); !r.empty()) return r;
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

const KernelRegistration masked_softmax_reg({"masked_softmax", check_masked_softmax,
                                             create_masked_softmax});

}  // namespace
}  // namespace moert::ocl
