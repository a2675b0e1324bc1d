// Packed weights (linear's and moe's attribute quant, ops/weight_format.h)
// on the host side of the op files: the format of a node's attribute, the
// checks of a packed weight and its scale, and the launch::Weights of a
// bound weight.  The kernels' side is numeric.h (decoding) and
// kernels/gemv_packed.cuh (the decode GEMV).
#pragma once

#include <string>
#include <vector>

#include "kernel.h"
#include "kernels/launch.h"
#include "weight_format.h"

namespace moert::cuda {

inline const char* quant_name(Quant q) {
  switch (q) {
    case Quant::int8:
      return "int8";
    case Quant::int4:
      return "int4";
    case Quant::mxfp4:
      return "mxfp4";
    default:
      return "none";
  }
}

// The format of attribute `attr` ("quant", "shared_quant"; absent: none);
// false when the name is not one of weight_format.h's.
inline bool quant_attr(const NodeDesc& node, const char* attr, Quant* out) {
  ops::WeightFormat f = ops::WeightFormat::none;
  if (!ops::weight_format_from(node.attr_string(attr, "none"), &f)) return false;
  switch (f) {
    case ops::WeightFormat::int8:
      *out = Quant::int8;
      break;
    case ops::WeightFormat::int4:
      *out = Quant::int4;
      break;
    case ops::WeightFormat::mxfp4:
      *out = Quant::mxfp4;
      break;
    default:
      *out = Quant::none;
      break;
  }
  return true;
}

// Why packed weight `wi` ([lead..., rows, packed_row_bytes(cols)], lead = E
// when `stacked`) in format q with its scale `si` cannot run here, or "".
// `what` names the weight in messages ("linear weight", "moe gate").
inline std::string check_packed_weight(const NodeDesc& node, Quant q, size_t wi, size_t si,
                                       bool stacked, int64_t rows, int64_t cols,
                                       const std::vector<int64_t>& block, const std::string& what) {
  const std::string fmt = std::string("quant \"") + quant_name(q) + "\"";
  const TensorDesc w = node.input(wi);
  const moert_dtype stored = q == Quant::int8 ? MOERT_DTYPE_I8 : MOERT_DTYPE_U8;
  if (w.dtype() != stored)
    return what + " must be " + dtype_str(stored) + " for " + fmt + ", got " + dtype_str(w.dtype());
  const size_t rank = stacked ? 3 : 2;
  if (w.rank() != rank || !w.all_static())
    return what + " must be a static " + (stacked ? "[E, rows, bytes]" : "[rows, bytes]") +
           " for " + fmt;
  if (rows < 0 || cols < 0 || w.static_dim(rank - 2) != rows ||
      w.static_dim(rank - 1) != packed_row_bytes(q, cols))
    return what + " does not hold " + std::to_string(rows) + " rows of " + std::to_string(cols) +
           " columns in " + fmt;
  if (q == Quant::mxfp4 && (block[0] != 1 || block[1] != ops::kMxBlock))
    return fmt + " needs block_size [1, 32] (the OCP MX block)";
  if (!node.has_input(si)) return what + " is packed (" + fmt + ") but has no scale";
  const TensorDesc s = node.input(si);
  const moert_dtype st = q == Quant::mxfp4 ? MOERT_DTYPE_U8 : MOERT_DTYPE_F16;
  if (s.dtype() != st)
    return what + "'s scale must be " + dtype_str(st) + " for " + fmt + ", got " +
           dtype_str(s.dtype());
  // [lead..., ceil(rows / b0), ceil(cols / b1)], int4 also with a trailing 2.
  const bool pairs = q == Quant::int4 && s.rank() == rank + 1;
  bool shape_ok = (s.rank() == rank || pairs) && s.all_static() &&
                  s.static_dim(rank - 2) == ceil_div(rows, block[0]) &&
                  s.static_dim(rank - 1) == ceil_div(cols, block[1]) &&
                  (!pairs || s.static_dim(rank) == 2);
  if (stacked) shape_ok = shape_ok && s.static_dim(0) == w.static_dim(0);
  if (!shape_ok) return what + "'s scale does not match its weight and block_size for " + fmt;
  return "";
}

// The kernels' view of a bound weight in format q (scale: its scale tensor,
// or null).
inline launch::Weights weights_of(const Tensor& w, const Tensor* scale, Quant q, int64_t b0,
                                  int64_t b1) {
  launch::Weights r;
  r.t = w.dtype;
  r.w = w.data;
  r.b0 = b0;
  r.b1 = b1;
  r.quant = q;
  if (q == Quant::none) {
    r.scale = scale ? static_cast<const float*>(scale->data) : nullptr;
  } else {
    r.qscale = scale ? scale->data : nullptr;
    r.zeros = scale && scale->rank == w.rank + 1;  // (scale, zero) pairs
  }
  return r;
}

}  // namespace moert::cuda
