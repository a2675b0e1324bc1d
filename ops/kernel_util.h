// Helpers shared by the op definitions: inference checks and the plain
// load/compute/store style of the reference kernels.
#pragma once

#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/op_registry.h"

namespace moert::ops {

// Inference: input i must have a float dtype (f32, f16, bf16, f8_e4m3).
inline void require_float(const InferContext& ctx, size_t i, const std::string& what) {
  const ValueInfo& v = ctx.in(i);
  ctx.require(dtype_is_float(v.dtype),
              what + " must be a float tensor, got " + std::string(dtype_name(v.dtype)));
}

// Inference: input i must have rank r.
inline void require_rank(const InferContext& ctx, size_t i, size_t r, const std::string& what) {
  const ValueInfo& v = ctx.in(i);
  ctx.require(v.shape.rank() == r,
              what + " must have rank " + std::to_string(r) + ", got " + v.shape.str());
}

// The attribute reader of the headers ops/ shares with the plugins
// (rope_table.h, router_params.h), over a node's Attributes.
struct AttrReader {
  const Attributes& a;
  bool has(const char* name) const { return a.has(name); }
  double real(const char* name, double fallback) const { return a.get_float(name, fallback); }
  int64_t integer(const char* name, int64_t fallback) const { return a.get_int(name, fallback); }
  std::string text(const char* name, const std::string& fallback) const {
    return a.get_string(name, fallback);
  }
};

// Activation dtypes a graph computes in.
inline bool is_activation_dtype(DType t) {
  return t == DType::f32 || t == DType::bf16 || t == DType::f16;
}

// Inference: input i must have an activation dtype (f32, bf16 or f16).
inline void require_activation(const InferContext& ctx, size_t i, const std::string& what) {
  const DType t = ctx.in(i).dtype;
  ctx.require(is_activation_dtype(t),
              what + " must be f32, bf16 or f16, got " + std::string(dtype_name(t)));
}

// Reference kernels read every input widened to double ...
inline std::vector<double> load(const TensorView& v) { return v.to_doubles(); }

// ... and write results rounded to the output dtype.
inline void store(const TensorView& v, const std::vector<double>& values) {
  check(static_cast<int64_t>(values.size()) == v.numel(),
        "internal: storing " + std::to_string(values.size()) + " values into " + dims_str(v.shape));
  for (size_t i = 0; i < values.size(); ++i) v.set(static_cast<int64_t>(i), values[i]);
}

}  // namespace moert::ops

namespace moert::ops {

// The weight matrix [rows, cols] of a linear layer (or one expert's slice of a
// stacked [E, rows, cols] tensor, selected by `matrix`) widened to double.
// fp8 weights are multiplied by their block scale:
//   W[r, c] = e4m3(Wq[r, c]) * scale[r / block_rows, c / block_cols]
// where `scale` is [ceil(rows/block_rows), ceil(cols/block_cols)] per matrix
// (DeepSeek-V3's `weight_scale_inv`).  Other dtypes take no scale.
inline std::vector<double> dequantize_matrix(const TensorView& w, const TensorView* scale,
                                             int64_t matrix, int64_t rows, int64_t cols,
                                             int64_t block_rows = 128, int64_t block_cols = 128) {
  std::vector<double> out(static_cast<size_t>(rows * cols));
  const int64_t base = matrix * rows * cols;
  const int64_t srows = (rows + block_rows - 1) / block_rows;
  const int64_t scols = (cols + block_cols - 1) / block_cols;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double v = w.get(base + r * cols + c);
      if (scale && scale->data)
        v *= scale->get(matrix * srows * scols + (r / block_rows) * scols + c / block_cols);
      out[static_cast<size_t>(r * cols + c)] = v;
    }
  return out;
}

}  // namespace moert::ops
