// Row kernels: one block per row of the last axis (rms_norm, softmax,
// argmax, masked_softmax), reductions in f32 through shared memory; and the
// rotary embedding, one thread per element.
#include "common.cuh"

namespace moert::cuda::launch {
namespace {

// Rows are at most 65535 * 65535 blocks: x by y.
__device__ __forceinline__ int64_t row_index() {
  return static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
}
dim3 row_grid(int64_t rows) {
  const int64_t x = rows < 65535 ? rows : 65535;
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>((rows + x - 1) / x));
}

__global__ void rms_norm_kernel(moert_dtype x_t, const void* x, moert_dtype w_t, const void* w,
                                void* y, int64_t rows, int64_t dim, float eps) {
  __shared__ float red[32];
  const int64_t r = row_index();
  if (r >= rows) return;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = load_float(x_t, x, r * dim + i);
    sum += v * v;
  }
  sum = block_sum(sum, red);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    store_float(x_t, y, r * dim + i, load_float(x_t, x, r * dim + i) * inv * load_float(w_t, w, i));
}

__global__ void softmax_kernel(moert_dtype t, const void* x, void* y, int64_t rows, int64_t n) {
  __shared__ float red[32];
  const int64_t r = row_index();
  if (r >= rows) return;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, load_float(t, x, r * n + i));
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    sum += expf(load_float(t, x, r * n + i) - mx);
  sum = block_sum(sum, red);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    store_float(t, y, r * n + i, expf(load_float(t, x, r * n + i) - mx) / sum);
}

// Whether (va, ia) beats (vb, ib) for argmax: NaN beats numbers, the larger
// number wins, and ties (NaN against NaN too) go to the lower index.
__device__ __forceinline__ bool argmax_better(float va, int64_t ia, float vb, int64_t ib) {
  const bool na = va != va, nb = vb != vb;
  if (na || nb) return na && (!nb || ia < ib);
  return va > vb || (va == vb && ia < ib);
}

__global__ void argmax_kernel(moert_dtype t, const void* x, int32_t* y, int64_t rows, int64_t n) {
  __shared__ float best_v[kThreads];
  __shared__ int64_t best_i[kThreads];
  const int64_t r = row_index();
  if (r >= rows) return;
  float v = -INFINITY;
  int64_t at = n;  // no candidate yet
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float c = load_float(t, x, r * n + i);
    if (at == n || argmax_better(c, i, v, at)) {
      v = c;
      at = i;
    }
  }
  best_v[threadIdx.x] = v;
  best_i[threadIdx.x] = at;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) {
      const int o = threadIdx.x + half;
      if (best_i[o] < n &&
          (best_i[threadIdx.x] == n ||
           argmax_better(best_v[o], best_i[o], best_v[threadIdx.x], best_i[threadIdx.x]))) {
        best_v[threadIdx.x] = best_v[o];
        best_i[threadIdx.x] = best_i[o];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) y[r] = static_cast<int32_t>(best_i[0]);
}

__device__ __forceinline__ bool allowed(const Mask& m, int64_t kv, int64_t p) {
  if (m.causal && kv > p) return false;
  if (m.window > 0 && kv <= p - m.window) return false;
  return true;
}

__global__ void masked_softmax_kernel(moert_dtype t, const void* scores, moert_dtype sinks_t,
                                      const void* sinks, void* y, int64_t heads, int64_t tokens,
                                      int64_t len, Mask m) {
  __shared__ float red[32];
  const int64_t r = row_index();  // h * tokens + i
  if (r >= heads * tokens) return;
  const int64_t h = r / tokens, i = r % tokens;
  const int64_t p = len - tokens + i;
  const float sink = sinks ? load_float(sinks_t, sinks, h) : -INFINITY;
  float mx = sink;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x)
    if (allowed(m, j, p)) mx = fmaxf(mx, m.scale * load_float(t, scores, r * len + j));
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x)
    if (allowed(m, j, p)) sum += expf(m.scale * load_float(t, scores, r * len + j) - mx);
  sum = block_sum(sum, red);
  if (sinks) sum += expf(sink - mx);
  // A row with no allowed key and no sink stays 0.
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    const float e =
        allowed(m, j, p) ? expf(m.scale * load_float(t, scores, r * len + j) - mx) : 0.0f;
    store_float(t, y, r * len + j, e * inv);
  }
}

// Angles in double: positions reach 10^5 and more, where an f32 angle would
// be off by more than the f32 tolerance.
__global__ void rope_kernel(moert_dtype t, const void* x, moert_dtype pos_t, const void* pos,
                            void* y, int64_t tokens, int64_t heads, int64_t dim,
                            const double* inv_freq, int64_t half, bool interleaved,
                            double scaling) {
  const int64_t n = tokens * heads * dim;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    const int64_t d = i % dim, base = i - d, tok = i / (heads * dim);
    if (d >= 2 * half) {
      store_float(t, y, i, load_float(t, x, i));
      continue;
    }
    // This element's pair j and its partner.
    int64_t j, i0, i1;
    if (interleaved) {
      j = d / 2;
      i0 = 2 * j;
      i1 = i0 + 1;
    } else {
      j = d < half ? d : d - half;
      i0 = j;
      i1 = j + half;
    }
    const double angle = static_cast<double>(load_id(pos_t, pos, tok)) * inv_freq[j];
    double sn, cs;
    sincos(angle, &sn, &cs);
    cs *= scaling;
    sn *= scaling;
    const double u = load_float(t, x, base + i0), v = load_float(t, x, base + i1);
    const double out = d == i0 ? u * cs - v * sn : v * cs + u * sn;
    store_float(t, y, i, static_cast<float>(out));
  }
}

}  // namespace

void rms_norm(cudaStream_t s, moert_dtype x_t, const void* x, moert_dtype w_t, const void* w,
              void* y, int64_t rows, int64_t dim, float eps) {
  if (rows == 0) return;
  rms_norm_kernel<<<row_grid(rows), kThreads, 0, s>>>(x_t, x, w_t, w, y, rows, dim, eps);
  check_launch("rms_norm");
}

void softmax(cudaStream_t s, moert_dtype t, const void* x, void* y, int64_t rows, int64_t n) {
  if (rows == 0 || n == 0) return;
  softmax_kernel<<<row_grid(rows), kThreads, 0, s>>>(t, x, y, rows, n);
  check_launch("softmax");
}

void argmax(cudaStream_t s, moert_dtype t, const void* x, int32_t* y, int64_t rows, int64_t n) {
  if (rows == 0) return;
  argmax_kernel<<<row_grid(rows), kThreads, 0, s>>>(t, x, y, rows, n);
  check_launch("argmax");
}

void masked_softmax(cudaStream_t s, moert_dtype t, const void* scores, moert_dtype sinks_t,
                    const void* sinks, void* y, int64_t heads, int64_t tokens, int64_t len,
                    const Mask& m) {
  if (heads * tokens == 0 || len == 0) return;
  masked_softmax_kernel<<<row_grid(heads * tokens), kThreads, 0, s>>>(t, scores, sinks_t, sinks, y,
                                                                      heads, tokens, len, m);
  check_launch("masked_softmax");
}

void rope(cudaStream_t s, moert_dtype t, const void* x, moert_dtype pos_t, const void* pos, void* y,
          int64_t tokens, int64_t heads, int64_t dim, const double* inv_freq, int64_t half,
          bool interleaved, double scaling) {
  const int64_t n = tokens * heads * dim;
  if (n == 0) return;
  rope_kernel<<<grid_for(n), kThreads, 0, s>>>(t, x, pos_t, pos, y, tokens, heads, dim, inv_freq,
                                               half, interleaved, scaling);
  check_launch("rope");
}

}  // namespace moert::cuda::launch
