// Linear layers outside cuBLASLt: the decode GEMV (a few rows of x against
// every weight row, read once in its stored dtype, f32 products and
// accumulation), the dequantisation of weight rows for the GEMM path (fp8
// blocks times their scale, or a dtype change), and the GEMM epilogue (bias,
// rounding to the output dtype).
//
// The GEMV has two forms: the vectorised one of gemv_vec.cuh (16-byte
// weight chunks, templated on the dtypes and on the row count; packed
// weights through gemv_packed.cuh's decoder), used whenever its alignment
// preconditions hold, and the scalar kernel below, for everything else and
// for MOERT_CUDA_BASELINE_KERNELS=1.
#include "common.cuh"
#include "gemv_packed.cuh"
#include "gemv_vec.cuh"
#include "options.h"

namespace moert::cuda::launch {
namespace {

constexpr int kGemvWarps = 8;

// The scalar (baseline) form: one warp per output column n, lanes stride
// over k, each weight element multiplies every row of x, then the warp
// reduces.
__global__ void linear_gemv_kernel(moert_dtype x_t, const void* x, int rows, int64_t k, Weights w,
                                   int64_t n, moert_dtype bias_t, const void* bias,
                                   moert_dtype out_t, void* y) {
  const int lane = threadIdx.x & 31;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  const int64_t step = static_cast<int64_t>(gridDim.x) * kGemvWarps;
  for (int64_t col = first; col < n; col += step) {
    float acc[kGemvMaxRows];
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; ++r) acc[r] = 0.0f;
    for (int64_t c = lane; c < k; c += 32) {
      const float wv = weight_at(w, 0, col, c, n, k);
#pragma unroll
      for (int r = 0; r < kGemvMaxRows; ++r)
        if (r < rows) acc[r] += load_float(x_t, x, r * k + c) * wv;
    }
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
      const float b = bias ? load_float(bias_t, bias, col) : 0.0f;
      for (int r = 0; r < rows; ++r) store_float(out_t, y, r * n + col, acc[r] + b);
    }
  }
}

// The vectorised form: warps of a block take groups of kLinearCols columns
// (split warps per group, see gemv_vec.cuh), for R >= rows rows of x.
constexpr int kLinearCols = 4;

template <moert_dtype W, moert_dtype X, int R>
__global__ void __launch_bounds__(gemv_vec::kThreads, gemv_vec::min_blocks(W, R))
    linear_gemv_vec_kernel(const void* x, Weights w, gemv_vec::Shape s, int64_t col_blocks,
                           moert_dtype bias_t, const void* bias, moert_dtype out_t, void* y) {
  __shared__ float red[gemv_vec::kWarps * 32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int groups = gemv_vec::kWarps / s.split, part = warp % s.split;
  const int64_t group = warp / s.split;
  const unsigned char* const wb[1] = {static_cast<const unsigned char*>(w.w)};
  const float* const sb[1] = {w.scale};
  for (int64_t cb = blockIdx.x; cb < col_blocks; cb += gridDim.x) {
    const int64_t col0 = (cb * groups + group) * kLinearCols;
    const bool active = col0 < s.n;
    const float v =
        gemv_vec::columns<W, X, R, 1, kLinearCols>(wb, sb, x, s, col0, active, part, lane, red);
    if (part == 0 && active && lane < kLinearCols * R) {
      const int64_t col = col0 + lane / R;
      const int r = lane % R;
      if (col < s.n && r < s.rows) {
        const float b = bias ? load_float(bias_t, bias, col) : 0.0f;
        store_float(out_t, y, r * s.n + col, v + b);
      }
    }
  }
}

// The same over packed weights (gemv_packed.cuh).
template <gemv_vec::Packed P, moert_dtype X, int R>
__global__ void __launch_bounds__(gemv_vec::kThreads, gemv_vec::packed_min_blocks(R))
    linear_gemv_packed_kernel(const void* x, Weights w, gemv_vec::Shape s, int64_t col_blocks,
                              moert_dtype bias_t, const void* bias, moert_dtype out_t, void* y) {
  __shared__ float red[gemv_vec::kWarps * 32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int groups = gemv_vec::kWarps / s.split, part = warp % s.split;
  const int64_t group = warp / s.split;
  const unsigned char* const wb[1] = {static_cast<const unsigned char*>(w.w)};
  const unsigned char* const sb[1] = {static_cast<const unsigned char*>(w.qscale)};
  for (int64_t cb = blockIdx.x; cb < col_blocks; cb += gridDim.x) {
    const int64_t col0 = (cb * groups + group) * kLinearCols;
    const bool active = col0 < s.n;
    const float v = gemv_vec::packed_columns<P, X, R, 1, kLinearCols>(wb, sb, x, s, col0, active,
                                                                      part, lane, red);
    if (part == 0 && active && lane < kLinearCols * R) {
      const int64_t col = col0 + lane / R;
      const int r = lane % R;
      if (col < s.n && r < s.rows) {
        const float b = bias ? load_float(bias_t, bias, col) : 0.0f;
        store_float(out_t, y, r * s.n + col, v + b);
      }
    }
  }
}

// y[r, col] = bias[col] (or 0) for a reduction of length 0, any row count.
__global__ void linear_fill_kernel(int64_t rows, int64_t n, moert_dtype bias_t, const void* bias,
                                   moert_dtype out_t, void* y) {
  for (int64_t i = global_index(); i < rows * n; i += global_stride()) {
    const float b = bias ? load_float(bias_t, bias, i % n) : 0.0f;
    store_float(out_t, y, i, 0.0f + b);
  }
}

// Launches the vectorised form (preconditions checked by the caller).
void linear_gemv_vec(cudaStream_t s, moert_dtype x_t, const void* x, int rows, int64_t k,
                     const Weights& w, int64_t n, moert_dtype bias_t, const void* bias,
                     moert_dtype out_t, void* y) {
  gemv_vec::Shape shape = gemv_vec::make_shape(w, n, k, rows);
  const int64_t groups = ceil_div(n, kLinearCols);
  shape.split = gemv_vec::choose_split(groups, shape.nchunks);
  const int64_t col_blocks = ceil_div(groups, gemv_vec::kWarps / shape.split);
  const unsigned grid = static_cast<unsigned>(col_blocks < (1 << 30) ? col_blocks : (1 << 30));
  gemv_vec::with_weight_dtype(w.t, [&](auto wt) {
    gemv_vec::with_x_dtype(x_t, [&](auto xt) {
      gemv_vec::with_row_count(rows, [&](auto r) {
        linear_gemv_vec_kernel<decltype(wt)::value, decltype(xt)::value, decltype(r)::value>
            <<<grid, gemv_vec::kThreads, 0, s>>>(x, w, shape, col_blocks, bias_t, bias, out_t, y);
      });
    });
  });
}

// Launches the packed form (preconditions checked by the caller).
void linear_gemv_packed(cudaStream_t s, moert_dtype x_t, const void* x, int rows, int64_t k,
                        const Weights& w, int64_t n, moert_dtype bias_t, const void* bias,
                        moert_dtype out_t, void* y) {
  gemv_vec::Shape shape = gemv_vec::make_packed_shape(w, n, k, rows);
  const int64_t groups = ceil_div(n, kLinearCols);
  shape.split = gemv_vec::choose_split(groups, shape.nchunks);
  const int64_t col_blocks = ceil_div(groups, gemv_vec::kWarps / shape.split);
  const unsigned grid = static_cast<unsigned>(col_blocks < (1 << 30) ? col_blocks : (1 << 30));
  gemv_vec::with_packed_kind(w, [&](auto pk) {
    gemv_vec::with_x_dtype(x_t, [&](auto xt) {
      gemv_vec::with_row_count(rows, [&](auto r) {
        linear_gemv_packed_kernel<decltype(pk)::value, decltype(xt)::value, decltype(r)::value>
            <<<grid, gemv_vec::kThreads, 0, s>>>(x, w, shape, col_blocks, bias_t, bias, out_t, y);
      });
    });
  });
}

__global__ void dequantize_rows_kernel(Weights w, int64_t row0, int64_t rows, int64_t cols,
                                       int64_t total_rows, moert_dtype to, void* dst) {
  const int64_t n = rows * cols;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    const int64_t r = i / cols, c = i % cols;
    store_float(to, dst, i, weight_at(w, 0, row0 + r, c, total_rows, cols));
  }
}

__global__ void bias_store_kernel(const float* acc, int64_t rows, int64_t n, moert_dtype bias_t,
                                  const void* bias, moert_dtype out_t, void* y) {
  const int64_t total = rows * n;
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    const float b = bias ? load_float(bias_t, bias, i % n) : 0.0f;
    store_float(out_t, y, i, acc[i] + b);
  }
}

}  // namespace

void linear_gemv(cudaStream_t s, moert_dtype x_t, const void* x, int64_t rows, int64_t k,
                 const Weights& w, int64_t n, moert_dtype bias_t, const void* bias,
                 moert_dtype out_t, void* y) {
  if (rows == 0 || n == 0) return;
  if (k == 0) {  // any row count (the GEMM path sends k == 0 here too)
    linear_fill_kernel<<<grid_for(rows * n), kThreads, 0, s>>>(rows, n, bias_t, bias, out_t, y);
    check_launch("linear_gemv");
    return;
  }
  if (!baseline_kernels() && rows <= kGemvMaxRows && gemv_vec::x_fits(x_t, x)) {
    if (gemv_vec::weights_fit(w, k)) {
      linear_gemv_vec(s, x_t, x, static_cast<int>(rows), k, w, n, bias_t, bias, out_t, y);
      check_launch("linear_gemv");
      return;
    }
    if (gemv_vec::packed_fits(w, k)) {
      linear_gemv_packed(s, x_t, x, static_cast<int>(rows), k, w, n, bias_t, bias, out_t, y);
      check_launch("linear_gemv");
      return;
    }
  }
  const int64_t blocks = (n + kGemvWarps - 1) / kGemvWarps;
  linear_gemv_kernel<<<static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16),
                       32 * kGemvWarps, 0, s>>>(x_t, x, static_cast<int>(rows), k, w, n, bias_t,
                                                bias, out_t, y);
  check_launch("linear_gemv");
}

void dequantize_rows(cudaStream_t s, const Weights& w, int64_t row0, int64_t rows, int64_t cols,
                     int64_t total_rows, moert_dtype to, void* dst) {
  if (rows * cols == 0) return;
  dequantize_rows_kernel<<<grid_for(rows * cols), kThreads, 0, s>>>(w, row0, rows, cols, total_rows,
                                                                    to, dst);
  check_launch("dequantize_rows");
}

void bias_store(cudaStream_t s, const float* acc, int64_t rows, int64_t n, moert_dtype bias_t,
                const void* bias, moert_dtype out_t, void* y) {
  if (rows * n == 0) return;
  bias_store_kernel<<<grid_for(rows * n), kThreads, 0, s>>>(acc, rows, n, bias_t, bias, out_t, y);
  check_launch("bias_store");
}

}  // namespace moert::cuda::launch
