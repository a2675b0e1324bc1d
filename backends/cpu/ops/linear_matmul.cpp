// matmul (ops/linear.cpp): batched a [B..., M, K] · b [B..., K, N] (or
// b^T when transpose_b = 1, b [B..., N, K]), every dim possibly symbolic, as
// the attention decomposition uses it.  Computed to f32 accuracy whatever
// the operand dtypes:
//   transpose_b with few rows of a (decode: one query row per head): every
//     batch's product is a GEMV task over b in its own dtype (gemm/gemv.h),
//     all batches sharing one parallel pass;
//   otherwise oneDNN's batched matmul, on bf16 operands when both are bf16
//     (their products are exact in f32) and on f32 copies otherwise.
#include <algorithm>
#include <string>
#include <vector>

#include "convert.h"
#include "gemm/gemv.h"
#include "gemm/onednn.h"
#include "gemm/scratch.h"
#include "kernel.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

std::string check(const NodeDesc& node) {
  const TensorDesc a = node.input(0), b = node.input(1);
  if (!is_activation(a.dtype()) || !is_activation(b.dtype()))
    return std::string("matmul of ") + plugin::dtype_name(a.dtype()) + " and " +
           plugin::dtype_name(b.dtype());
  if (a.rank() < 2 || a.rank() != b.rank()) return "matmul of operands of unequal rank";
  const int64_t tb = node.attr_int("transpose_b", 0);
  if (tb != 0 && tb != 1) return "matmul with transpose_b not 0 or 1";
  return "";
}

// `count` elements of a float tensor as f32: the tensor itself when it is
// f32, else a converted copy in `slot`.
const float* as_f32(const Tensor& t, int64_t count, gemm::Slot slot) {
  if (t.dtype == MOERT_DTYPE_F32) return t.as<float>();
  float* out = gemm::scratch<float>(slot, static_cast<size_t>(count));
  parallel_for(count, 16384,
               [&](int64_t i0, int64_t i1) { to_f32(t.dtype, t.data, i0, i1 - i0, out + i0); });
  return out;
}

class Matmul final : public Kernel {
 public:
  explicit Matmul(const NodeDesc& node) : transpose_b_(node.attr_int("transpose_b", 0) != 0) {}

  void run(ExecContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t m = a.dim(-2), k = a.dim(-1), n = y.dim(-1);
    const int64_t batch = m * n > 0 ? y.numel() / (m * n) : 0;
    if (batch == 0) return;
    require(a.numel() == batch * m * k && b.numel() == batch * k * n,
            "operand sizes do not match the output [.., " + std::to_string(m) + ", " +
                std::to_string(n) + "] with K = " + std::to_string(k));
    const bool y_f32 = y.dtype == MOERT_DTYPE_F32;
    float* yf =
        y_f32 ? y.as<float>()
              : gemm::scratch<float>(gemm::Slot::kernel_output, static_cast<size_t>(batch * m * n));
    if (k == 0) {
      std::fill(yf, yf + batch * m * n, 0.0f);
    } else if (transpose_b_ && m <= gemm::kGemvMaxRows) {
      const float* af = as_f32(a, batch * m * k, gemm::Slot::kernel_input);
      std::vector<gemm::WeightMatrix>& mats = mats_;
      std::vector<gemm::GemvTask>& tasks = tasks_;
      mats.resize(static_cast<size_t>(batch));
      tasks.resize(static_cast<size_t>(batch));
      const size_t bytes = plugin::dtype_size(b.dtype);
      for (int64_t i = 0; i < batch; ++i) {
        const size_t s = static_cast<size_t>(i);
        mats[s] = gemm::dense_matrix(
            b.dtype,
            static_cast<const unsigned char*>(b.data) + static_cast<size_t>(i * n * k) * bytes, n,
            k);
        tasks[s] = {&mats[s], af + i * m * k, k, m, yf + i * m * n, n};
      }
      gemm::gemv(tasks.data(), tasks.size());
    } else if (a.dtype == MOERT_DTYPE_BF16 && b.dtype == MOERT_DTYPE_BF16) {
      gemm::onednn_batched_matmul(MOERT_DTYPE_BF16, a.data, b.data, transpose_b_, batch, m, k, n,
                                  yf);
    } else {
      const float* af = as_f32(a, batch * m * k, gemm::Slot::kernel_input);
      const float* bf = as_f32(b, batch * k * n, gemm::Slot::kernel_input2);
      gemm::onednn_batched_matmul(MOERT_DTYPE_F32, af, bf, transpose_b_, batch, m, k, n, yf);
    }
    if (!y_f32)
      parallel_for(batch * m * n, 16384, [&](int64_t i0, int64_t i1) {
        from_f32(yf + i0, i1 - i0, y.dtype, y.data, i0);
      });
  }

 private:
  bool transpose_b_;
  std::vector<gemm::WeightMatrix> mats_;  // reused between runs
  std::vector<gemm::GemvTask> tasks_;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<Matmul>(node); }

const KernelRegistration registration({"matmul", check, create});

}  // namespace
}  // namespace moert::cpu
