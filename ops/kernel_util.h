// Helpers shared by the op definitions: inference checks and the plain
// load/compute/store style of the reference kernels.
#pragma once

#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/op_registry.h"
#include "weight_format.h"

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
                                             int64_t block_rows = 128, int64_t block_cols = 128,
                                             WeightFormat format = WeightFormat::none) {
  std::vector<double> out(static_cast<size_t>(rows * cols));
  const int64_t srows = (rows + block_rows - 1) / block_rows;
  const int64_t scols = (cols + block_cols - 1) / block_cols;
  if (format != WeightFormat::none) {
    // Packed formats (weight_format.h): read from the stored bytes.
    const bool pairs = scale->shape.size() == static_cast<size_t>(w.shape.size()) + 1;
    const int64_t per_scale = pairs ? 2 : 1;
    const auto* data = static_cast<const uint8_t*>(w.data) +
                       matrix * rows * stored_cols(format, cols) * dtype_size(w.dtype);
    const auto* sdata = static_cast<const uint8_t*>(scale->data) +
                        matrix * srows * scols * per_scale * dtype_size(scale->dtype);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        out[static_cast<size_t>(r * cols + c)] =
            packed_value(format, data, sdata, r, c, cols, block_rows, block_cols, pairs);
    return out;
  }
  const int64_t base = matrix * rows * cols;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double v = w.get(base + r * cols + c);
      if (scale && scale->data)
        v *= scale->get(matrix * srows * scols + (r / block_rows) * scols + c / block_cols);
      out[static_cast<size_t>(r * cols + c)] = v;
    }
  return out;
}

// The weight format of attribute `name` ("quant", "shared_quant") of a node:
// none when absent.  Inference has checked the name.
inline WeightFormat weight_format(const Attributes& a, const char* name = "quant") {
  WeightFormat f = WeightFormat::none;
  weight_format_from(a.get_string(name, "none"), &f);
  return f;
}

// Inference of a (possibly stacked) weight `wi` of logical shape [lead...,
// rows, cols] in format `f` and its scale `si`, as weight_format.h defines
// them; `what(i)` names input i in messages ("input 'gate'").
template <class Name>
void check_weight_format(const InferContext& ctx, WeightFormat f, size_t wi, size_t si,
                         std::vector<int64_t> lead, int64_t rows, int64_t cols,
                         const std::vector<int64_t>& block, const Name& what) {
  const ValueInfo& w = ctx.in(wi);
  const std::string wn = what(wi), sn = what(si);
  auto dims = [&](int64_t r, int64_t c, int64_t extra = 0) {
    std::vector<int64_t> d = lead;
    d.push_back(r);
    d.push_back(c);
    if (extra) d.push_back(extra);
    return d;
  };
  const std::string block_text = attr_value_str(AttrValue(block));
  const int64_t srows = (rows + block[0] - 1) / block[0], scols = (cols + block[1] - 1) / block[1];
  if (f == WeightFormat::none) {
    ctx.require(is_activation_dtype(w.dtype) || w.dtype == DType::f8_e4m3,
                wn + " must be f32, bf16, f16 or f8_e4m3, got " + std::string(dtype_name(w.dtype)));
    ctx.require(w.shape == Shape::of(dims(rows, cols)),
                wn + " must be " + dims_str(dims(rows, cols)) + ", got " + w.shape.str());
    if (w.dtype != DType::f8_e4m3) {
      ctx.require(!ctx.has(si), sn + " is given but " + wn + " is " +
                                    std::string(dtype_name(w.dtype)) +
                                    "; only f8_e4m3 and packed (quant) weights take a scale");
      return;
    }
    ctx.require(ctx.has(si), wn + " is f8_e4m3 and requires " + sn + " (f32 " +
                                 dims_str(dims(srows, scols)) + ")");
    const ValueInfo& s = ctx.in(si);
    ctx.require(s.dtype == DType::f32,
                sn + " must be f32, got " + std::string(dtype_name(s.dtype)));
    ctx.require(s.shape == Shape::of(dims(srows, scols)),
                sn + " must be " + dims_str(dims(srows, scols)) + " for weight " + w.shape.str() +
                    " with block_size " + block_text + ", got " + s.shape.str());
    return;
  }
  const std::string fname = weight_format_name(f);
  const DType stored = f == WeightFormat::int8 ? DType::i8 : DType::u8;
  const std::vector<int64_t> want = dims(rows, stored_cols(f, cols));
  ctx.require(w.dtype == stored && w.shape == Shape::of(want),
              wn + " must be " + std::string(dtype_name(stored)) + " " + dims_str(want) +
                  " for quant \"" + fname + "\" and " + std::to_string(cols) + " columns, got " +
                  std::string(dtype_name(w.dtype)) + " " + w.shape.str());
  if (f == WeightFormat::mxfp4)
    ctx.require(
        block.size() == 2 && block[0] == 1 && block[1] == kMxBlock,
        "quant \"mxfp4\" requires block_size [1, 32] (the OCP MX block), got " + block_text);
  const DType sdt = f == WeightFormat::mxfp4 ? DType::u8 : DType::f16;
  ctx.require(ctx.has(si), wn + " is " + fname + " and requires " + sn + " (" +
                               std::string(dtype_name(sdt)) + " " + dims_str(dims(srows, scols)) +
                               ")");
  const ValueInfo& s = ctx.in(si);
  const bool plain = s.shape == Shape::of(dims(srows, scols));
  const bool pairs = f == WeightFormat::int4 && s.shape == Shape::of(dims(srows, scols, 2));
  ctx.require(s.dtype == sdt && (plain || pairs),
              sn + " must be " + std::string(dtype_name(sdt)) + " " + dims_str(dims(srows, scols)) +
                  (f == WeightFormat::int4
                       ? " (or " + dims_str(dims(srows, scols, 2)) + " with zero points)"
                       : std::string()) +
                  " for " + wn + " with block_size " + block_text + ", got " +
                  std::string(dtype_name(s.dtype)) + " " + s.shape.str());
}
}  // namespace moert::ops
