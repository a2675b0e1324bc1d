// linear (ops/linear.cpp): y = x · W^T (+ bias) for a weight of any dtype
// (f8_e4m3 with its block scales) or packed format (int8, int4, mxfp4) through the GEMM engine
// (gemm/gemm.h): GEMV kernels for a few rows of x, oneDNN beyond.  x is widened to f32 and the
// result stored in the output dtype; both in chunks of rows, so the f32 scratch stays bounded for
// long prompts.
#include <algorithm>
#include <string>
#include <vector>

#include "convert.h"
#include "gemm/gemm.h"
#include "gemm/scratch.h"
#include "kernel.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

// Rows per chunk are chosen so the f32 copies of x and y stay near this.
constexpr int64_t kChunkFloats = int64_t{8} << 20;

ops::WeightFormat format_of(const NodeDesc& node) {
  ops::WeightFormat f = ops::WeightFormat::none;
  ops::weight_format_from(node.attr_string("quant", "none"), &f);
  return f;
}

std::string check(const NodeDesc& node) {
  const TensorDesc x = node.input(0), w = node.input(1);
  if (!is_activation(x.dtype()))
    return std::string("linear of x in ") + plugin::dtype_name(x.dtype());
  if (w.rank() != 2 || !w.all_static()) return "linear with a weight that is not a static [N, K]";
  if (!plugin::dim_is_static(x.dim(x.rank() - 1))) return "linear with a symbolic K";
  if (format_of(node) != ops::WeightFormat::none) {
    // Inference has checked the packed layout; the kernels need the scales.
    if (!node.has_input(3)) return "linear with a packed weight but no weight_scale";
  } else {
    if (!is_activation(w.dtype()) && w.dtype() != MOERT_DTYPE_F8_E4M3)
      return std::string("linear with a weight in ") + plugin::dtype_name(w.dtype());
    if (w.dtype() == MOERT_DTYPE_F8_E4M3 &&
        (!node.has_input(3) || node.input(3).dtype() != MOERT_DTYPE_F32))
      return "linear with an f8_e4m3 weight but no f32 weight_scale";
  }
  if (node.has_input(2) && !plugin::dtype_is_float(node.input(2).dtype()))
    return std::string("linear with a bias in ") + plugin::dtype_name(node.input(2).dtype());
  if (!is_activation(node.output(0).dtype()))
    return std::string("linear with output in ") + plugin::dtype_name(node.output(0).dtype());
  const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0)
    return "linear with a block_size that is not two sizes > 0";
  return "";
}

class Linear final : public Kernel {
 public:
  explicit Linear(const NodeDesc& node) {
    const TensorDesc x = node.input(0);
    n_ = node.input(1).static_dim(0);
    k_ = x.static_dim(x.rank() - 1);  // the weight's last dim is packed for 4-bit formats
    const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
    block_rows_ = block[0];
    block_cols_ = block[1];
    format_ = format_of(node);
    products_attr_ = node.attr_string("products", "exact");
    zero_points_ = node.has_input(3) && node.input(3).rank() == 3;
  }

  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t n = n_, k = k_;
    const int64_t rows = n > 0 ? y.numel() / n : 0;
    if (rows == 0 || n == 0) return;
    require(x.numel() == rows * k, "input 'x' has " + std::to_string(x.numel()) +
                                       " elements, not " + std::to_string(rows) + " rows of " +
                                       std::to_string(k));

    gemm::WeightMatrix wm = gemm::dense_matrix(w.dtype, w.data, n, k);
    if (format_ != ops::WeightFormat::none) {
      wm = gemm::packed_matrix(format_, w.dtype, w.data, ctx.in(3).data, zero_points_, 0, n, k,
                               block_rows_, block_cols_);
    } else if (ctx.has(3)) {
      wm.scale = ctx.in(3).as<float>();
      wm.block_rows = block_rows_;
      wm.block_cols = block_cols_;
    }
    const float* bias = nullptr;
    if (ctx.has(2)) {
      float* b = gemm::scratch<float>(gemm::Slot::kernel_small, static_cast<size_t>(n));
      to_f32(ctx.in(2).dtype, ctx.in(2).data, 0, n, b);
      bias = b;
    }

    const bool x_f32 = x.dtype == MOERT_DTYPE_F32, y_f32 = y.dtype == MOERT_DTYPE_F32;
    // f32 activations get f32 products unless the node permits bf16 ones;
    // bf16/f16 activations may take bf16 (gemm.h).
    const gemm::Products products =
        products_attr_ == "int8"
            ? gemm::Products::int8
            : (x_f32 && products_attr_ == "exact" ? gemm::Products::exact : gemm::Products::bf16);
    const int64_t chunk = std::max<int64_t>(1024, kChunkFloats / std::max<int64_t>(1, n + k));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t m = std::min(chunk, rows - r0);
      const float* xf = x.as<float>() + r0 * k;
      if (!x_f32) {
        float* buf = gemm::scratch<float>(gemm::Slot::kernel_input, static_cast<size_t>(m * k));
        parallel_for(m * k, 16384, [&](int64_t i0, int64_t i1) {
          to_f32(x.dtype, x.data, r0 * k + i0, i1 - i0, buf + i0);
        });
        xf = buf;
      }
      float* yf = y_f32
                      ? y.as<float>() + r0 * n
                      : gemm::scratch<float>(gemm::Slot::kernel_output, static_cast<size_t>(m * n));
      gemm::gemm(xf, m, k, wm, yf, n, products);
      if (bias || !y_f32)
        parallel_for(m, std::max<int64_t>(1, 16384 / n), [&](int64_t i0, int64_t i1) {
          for (int64_t r = i0; r < i1; ++r) {
            float* row = yf + r * n;
            if (bias)
              for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
            if (!y_f32) from_f32(row, n, y.dtype, y.data, (r0 + r) * n);
          }
        });
    }
  }

 private:
  int64_t n_ = 0, k_ = 0, block_rows_ = 128, block_cols_ = 128;
  ops::WeightFormat format_ = ops::WeightFormat::none;
  bool zero_points_ = false;
  std::string products_attr_ = "exact";  // attribute products
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<Linear>(node); }

// Version 2: packed weights (attribute quant).
const KernelRegistration registration(KernelDef("linear", check, create).at_version(2));

}  // namespace
}  // namespace moert::cpu
