// Helpers of the device kernels: launch sizes, warp and block reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "device.h"
#include "launch.h"
#include "numeric.h"

namespace moert::cuda::launch {

inline constexpr int kThreads = 256;

// Blocks of `threads` covering n items with a grid-stride loop; capped so
// huge tensors loop instead of exceeding the grid limit.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

__device__ __forceinline__ int64_t global_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t global_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum (or max) of v over the block, returned to every thread.  `shared`
// holds at least 32 floats; the block size is a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read from a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : 0.0f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(v);
}

__device__ __forceinline__ float sigmoid_f(float v) { return 1.0f / (1.0f + expf(-v)); }

// The gate_up output of column `col` of expert e from its gate and up
// products (ExpertProjection): silu(g) * u, or with p.general the biases
// added and the clamped activation.  The branch is uniform (a kernel
// parameter), next to the column's K products.
__device__ __forceinline__ float expert_act(const ExpertProjection& p, int64_t e, int64_t col,
                                            float g, float u) {
  if (!p.general) return g * sigmoid_f(g) * u;
  if (p.gate_bias) g += load_float(p.gate_bias_t, p.gate_bias, e * p.n + col);
  if (p.up_bias) u += load_float(p.up_bias_t, p.up_bias, e * p.n + col);
  return swiglu_act(g, u, p.act);
}

// An integer id of an i32 or i64 tensor.
__device__ __forceinline__ int64_t load_id(moert_dtype t, const void* p, int64_t i) {
  return t == MOERT_DTYPE_I64 ? static_cast<const int64_t*>(p)[i]
                              : static_cast<const int32_t*>(p)[i];
}

// Element (r, c) of matrix e of a stacked weight [E, rows, cols] (cols
// logical: a packed row holds packed_row_bytes bytes), dequantised in f32
// (exact): as stored, an fp8 value times its block scale, or a packed value
// times its group's scale.
__device__ __forceinline__ float weight_at(const Weights& w, int64_t e, int64_t r, int64_t c,
                                           int64_t rows, int64_t cols) {
  if (w.quant != Quant::none)
    return packed_element(w.quant, w.w, w.qscale, w.zeros, e, r, c, rows, cols, w.b0, w.b1);
  return weight_element(w.t, w.w, w.scale, e, r, c, rows, cols, w.b0, w.b1);
}

__device__ __forceinline__ void record_error(unsigned long long* slot, int64_t position) {
  if (slot) atomicMin(slot, static_cast<unsigned long long>(position));
}

}  // namespace moert::cuda::launch
