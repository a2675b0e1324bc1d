// The weight matrix the GEMM engine multiplies by: W [N, K] row-major, as
// checkpoints store a linear layer's weight (out features by in features),
// in f32, bf16, f16 or f8_e4m3.  An f8_e4m3 matrix carries f32 block scales
// [ceil(N / b0), ceil(K / b1)] with W[n, k] = e4m3(q[n, k]) * scale[n / b0,
// k / b1] (DeepSeek-V3's weight_scale_inv).  Or a packed matrix (int8,
// int4, mxfp4; ops/weight_format.h) with its group scales.  A matrix may be one expert's
// slice of a stacked [E, N, K] tensor; it only points into memory it does
// not own (a mapped checkpoint, an activation buffer).
#pragma once

#include <cstdint>

#include "kernel.h"
#include "weight_format.h"

namespace moert::cpu::gemm {

struct WeightMatrix {
  moert_dtype dtype = MOERT_DTYPE_F32;
  const void* data = nullptr;  // element [0, 0]
  int64_t rows = 0;            // N
  int64_t cols = 0;            // K
  int64_t stride = 0;          // elements between rows (>= cols)
  // f8_e4m3 only: [ceil(rows / block_rows), ceil(cols / block_cols)], dense.
  const float* scale = nullptr;
  int64_t block_rows = 128;
  int64_t block_cols = 128;

  size_t element_bytes() const { return plugin::dtype_size(dtype); }
  const unsigned char* row_bytes(int64_t n) const {
    return static_cast<const unsigned char*>(data) +
           static_cast<size_t>(n * stride) * element_bytes();
  }
  int64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  int64_t scale_rows() const { return (rows + block_rows - 1) / block_rows; }
  // The block scales of row n's block row: scale_cols() values.
  const float* scale_row(int64_t n) const { return scale + (n / block_rows) * scale_cols(); }
  bool scaled() const { return dtype == MOERT_DTYPE_F8_E4M3; }

  // Packed formats (format != none): `data` holds the stored rows (i8, or u8
  // with two 4-bit codes per byte; `stride` counts stored bytes), `groups`
  // the group scales [scale_rows(), scale_cols()]: f16 for int8 and int4
  // (with `zero_points`, f16 (scale, zero) pairs), e8m0 bytes for mxfp4.
  ops::WeightFormat format = ops::WeightFormat::none;
  const void* groups = nullptr;
  bool zero_points = false;

  bool packed() const { return format != ops::WeightFormat::none; }
  // Bytes of one stored row (the bytes a product streams per row of W).
  size_t stored_row_bytes() const {
    return static_cast<size_t>(ops::stored_cols(format, cols)) * element_bytes();
  }
};

// Packed matrix `index` of a stacked [E, rows, stored cols] tensor and its
// [E, R, C(, 2)] group scales (index 0 and no E for a single matrix).
inline WeightMatrix packed_matrix(ops::WeightFormat format, moert_dtype dtype, const void* data,
                                  const void* groups, bool zero_points, int64_t index, int64_t rows,
                                  int64_t cols, int64_t block_rows, int64_t block_cols) {
  WeightMatrix w;
  w.format = format;
  w.dtype = dtype;
  w.rows = rows;
  w.cols = cols;
  w.stride = ops::stored_cols(format, cols);
  w.data = static_cast<const unsigned char*>(data) + static_cast<size_t>(index * rows * w.stride);
  w.block_rows = block_rows;
  w.block_cols = block_cols;
  w.zero_points = zero_points;
  const size_t per_group = format == ops::WeightFormat::mxfp4 ? 1 : (zero_points ? 4 : 2);
  w.groups = static_cast<const unsigned char*>(groups) +
             static_cast<size_t>(index * w.scale_rows() * w.scale_cols()) * per_group;
  return w;
}

// A dense [rows, cols] matrix (no scale).
inline WeightMatrix dense_matrix(moert_dtype dtype, const void* data, int64_t rows, int64_t cols) {
  WeightMatrix w;
  w.dtype = dtype;
  w.data = data;
  w.rows = rows;
  w.cols = cols;
  w.stride = cols;
  return w;
}

// Matrix `index` of a stacked [E, rows, cols] tensor (and its [E, ceil(rows /
// b0), ceil(cols / b1)] scales when `scale` is given).
inline WeightMatrix stacked_matrix(moert_dtype dtype, const void* data, const float* scale,
                                   int64_t index, int64_t rows, int64_t cols, int64_t block_rows,
                                   int64_t block_cols) {
  WeightMatrix w = dense_matrix(dtype, nullptr, rows, cols);
  w.data = static_cast<const unsigned char*>(data) +
           static_cast<size_t>(index * rows * cols) * plugin::dtype_size(dtype);
  w.block_rows = block_rows;
  w.block_cols = block_cols;
  if (scale)
    w.scale = scale + index * ((rows + block_rows - 1) / block_rows) *
                          ((cols + block_cols - 1) / block_cols);
  return w;
}

}  // namespace moert::cpu::gemm
