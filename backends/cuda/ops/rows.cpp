// embedding, rms_norm, softmax and argmax: f32, bf16 and f16 activations,
// computed in f32 (rms_norm's weight of any float dtype).
#include <cmath>
#include <limits>

#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

// "[i, j, ...]": the multi-index of flat position `flat` in `t`.
class Embedding final : public Kernel {
 public:
  explicit Embedding(PrepareContext& pc) : slot_(pc.reserve_error_slots(1)) {}
  void run(ExecContext& ctx) override {
    const Tensor& table = ctx.in(0);
    const Tensor& ids = ctx.in(1);
    const Tensor& y = ctx.out(0);
    launch::embedding(ctx.stream(), table.dtype, table.data, ids.dtype, ids.data, y.dtype, y.data,
                      ids.numel(), table.dim(0), table.dim(1), ctx.error_slot(slot_));
  }
  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const Tensor& ids = ctx.in(1);
    const auto id = static_cast<int64_t>(read_element(ctx, ids, position));
    return plugin::embedding_error(ids, position, id, ctx.in(0).dim(0));
  }

 private:
  int slot_;
};

std::string check_rms_norm(const NodeDesc& node) {
  const TensorDesc x = node.input(0), w = node.input(1);
  if (!is_activation(x.dtype())) return "rms_norm of " + dtype_str(x.dtype());
  if (!is_float(w.dtype())) return "rms_norm weight must be a float tensor";
  if (x.rank() < 1 || w.rank() != 1) return "rms_norm needs x [..., D] and weight [D]";
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from x's";
  const double eps = node.attr_float("eps", 1e-6);
  if (!std::isfinite(eps) || eps < 0) return "attribute 'eps' must be finite and >= 0";
  return "";
}

class RmsNorm final : public Kernel {
 public:
  explicit RmsNorm(const NodeDesc& n) : eps_(static_cast<float>(n.attr_float("eps", 1e-6))) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    require(w.numel() == x.dim(-1), "weight " + shape_str(w) + " does not match x " + shape_str(x));
    launch::rms_norm(ctx.stream(), x.dtype, x.data, w.dtype, w.data, ctx.out(0).data, x.rows(),
                     x.dim(-1), eps_);
  }

 private:
  float eps_;
};

std::string check_rows(const NodeDesc& node) {
  const TensorDesc x = node.input(0);
  if (!is_activation(x.dtype())) return std::string(node.op()) + " of " + dtype_str(x.dtype());
  if (x.rank() < 1) return std::string(node.op()) + " of a scalar";
  return "";
}

std::string check_softmax(const NodeDesc& node) {
  if (node.output(0).dtype() != node.input(0).dtype()) return "output dtype differs from x's";
  return check_rows(node);
}

class Softmax final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    launch::softmax(ctx.stream(), x.dtype, x.data, ctx.out(0).data, x.rows(), x.dim(-1));
  }
};

std::string check_argmax(const NodeDesc& node) {
  if (node.output(0).dtype() != MOERT_DTYPE_I32) return "argmax output must be i32";
  return check_rows(node);
}

class Argmax final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t n = x.dim(-1);
    require(n > 0 && n <= std::numeric_limits<int32_t>::max(),
            "the last dim of input 'x' " + shape_str(x) + " must be in [1, 2^31)");
    launch::argmax(ctx.stream(), x.dtype, x.data, static_cast<int32_t*>(ctx.out(0).data),
                   x.numel() / n, n);
  }
};

std::unique_ptr<Kernel> create_embedding(PrepareContext& pc) {
  return std::make_unique<Embedding>(pc);
}
std::unique_ptr<Kernel> create_rms_norm(PrepareContext& pc) {
  return std::make_unique<RmsNorm>(pc.node());
}
std::unique_ptr<Kernel> create_softmax(PrepareContext&) { return std::make_unique<Softmax>(); }
std::unique_ptr<Kernel> create_argmax(PrepareContext&) { return std::make_unique<Argmax>(); }

const KernelRegistration embedding_reg({"embedding", plugin::check_embedding, create_embedding});
const KernelRegistration rms_norm_reg({"rms_norm", check_rms_norm, create_rms_norm});
const KernelRegistration softmax_reg({"softmax", check_softmax, create_softmax});
const KernelRegistration argmax_reg({"argmax", check_argmax, create_argmax});

}  // namespace
}  // namespace moert::cuda
