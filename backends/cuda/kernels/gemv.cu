// Linear layers outside cuBLASLt: the decode GEMV (a few rows of x against
// every weight row, read once in its stored dtype, f32 products and
// accumulation), the dequantisation of weight rows for the GEMM path (fp8
// blocks times their scale, or a dtype change), and the GEMM epilogue (bias,
// rounding to the output dtype).
#include "common.cuh"

namespace moert::cuda::launch {
namespace {

constexpr int kGemvWarps = 8;

// One warp per output column n: lanes stride over k, each weight element
// multiplies every row of x, then the warp reduces.
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
      const float wv = weight_element(w.t, w.w, w.scale, 0, col, c, n, k, w.b0, w.b1);
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

__global__ void dequantize_rows_kernel(Weights w, int64_t row0, int64_t rows, int64_t cols,
                                       int64_t total_rows, moert_dtype to, void* dst) {
  const int64_t n = rows * cols;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    const int64_t r = i / cols, c = i % cols;
    store_float(to, dst, i,
                weight_element(w.t, w.w, w.scale, 0, row0 + r, c, total_rows, cols, w.b0, w.b1));
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
