// Mixture-of-experts kernels, all on the device so a decode step never
// waits for the host: the router (scores, grouped selection, top-k and
// weights in double, one block per token), the dense routing matrix, the
// grouping of (token, slot) pairs by expert (counts, prefix sums and the
// permutation, one block), the expert projections (a GEMV form for a few
// rows, a tiled form over the grouping for many; biases and the clamped
// activation of moe version 3 in their epilogues, expert_act) and the
// weighted combine (with the down bias) with the shared expert.
#include "common.cuh"

namespace moert::cuda::launch {
namespace {

// ---- router -----------------------------------------------------------------

__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_max_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ double block_sum_d(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : 0.0;
  return warp_sum_d(v);
}
__device__ double block_max_d(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max_d(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : -INFINITY;
  return warp_max_d(v);
}

constexpr int kNone = 0x7fffffff;

// Whether candidate (va, ia) beats (vb, ib): larger value, ties to the lower
// index; kNone is no candidate.
__device__ __forceinline__ bool pick_better(double va, int ia, double vb, int ib) {
  if (ia == kNone) return false;
  if (ib == kNone) return true;
  return va > vb || (va == vb && ia < ib);
}

// The index of the best value among `n` entries with taken[i] == 0, over the
// block; every thread gets it.
__device__ int block_pick(const double* values, const int* taken, int n, double* red_v,
                          int* red_i) {
  double bv = 0.0;
  int bi = kNone;
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (!taken[i] && pick_better(values[i], i, bv, bi)) {
      bv = values[i];
      bi = i;
    }
  for (int o = 16; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (pick_better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    red_v[warp] = bv;
    red_i[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    bv = lane < warps ? red_v[lane] : 0.0;
    bi = lane < warps ? red_i[lane] : kNone;
    for (int o = 16; o > 0; o >>= 1) {
      const double ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (pick_better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) red_i[0] = bi;
  }
  __syncthreads();
  const int result = red_i[0];
  __syncthreads();
  return result;
}

__global__ void router_kernel(Router r) {
  extern __shared__ double dyn[];
  const int E = static_cast<int>(r.experts), G = static_cast<int>(r.n_group);
  double* s = dyn;                                       // [E] scores
  double* sel = s + E;                                   // [E] selection scores
  double* group_score = sel + E;                         // [G]
  int* taken = reinterpret_cast<int*>(group_score + G);  // [E]
  int* group_taken = taken + E;                          // [G]
  __shared__ double red_v[32];
  __shared__ int red_i[32];
  const int64_t t = blockIdx.x;

  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const double v = load_float(r.logits_t, r.logits, t * E + e);
    if (!isfinite(v)) record_error(r.logits_error, t * E + e);
    if (t == 0 && r.bias && !isfinite(static_cast<double>(load_float(r.bias_t, r.bias, e))))
      record_error(r.bias_error, e);
    s[e] = v;
    taken[e] = 0;
  }
  __syncthreads();
  if (r.scoring == 0) {  // softmax over the experts
    double mx = -INFINITY;
    for (int e = threadIdx.x; e < E; e += blockDim.x) mx = fmax(mx, s[e]);
    mx = block_max_d(mx, red_v);
    double sum = 0.0;
    for (int e = threadIdx.x; e < E; e += blockDim.x) sum += exp(s[e] - mx);
    sum = block_sum_d(sum, red_v);
    for (int e = threadIdx.x; e < E; e += blockDim.x) s[e] = exp(s[e] - mx) / sum;
  } else if (r.scoring == 1) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) s[e] = 1.0 / (1.0 + exp(-s[e]));
  }
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    sel[e] = s[e] + (r.bias ? static_cast<double>(load_float(r.bias_t, r.bias, e)) : 0.0);
  __syncthreads();

  if (G > 1) {
    const int size = E / G;
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
      // The group's best selection score, plus its second best for noaux_tc.
      double b1 = 0.0, b2 = 0.0;
      int i1 = kNone, i2 = kNone;
      for (int i = g * size; i < (g + 1) * size; ++i) {
        if (pick_better(sel[i], i, b1, i1)) {
          b2 = b1;
          i2 = i1;
          b1 = sel[i];
          i1 = i;
        } else if (pick_better(sel[i], i, b2, i2)) {
          b2 = sel[i];
          i2 = i;
        }
      }
      group_score[g] = r.method == 2 ? b1 + b2 : b1;
      group_taken[g] = 0;
    }
    __syncthreads();
    for (int64_t round = 0; round < r.topk_group; ++round) {
      const int g = block_pick(group_score, group_taken, G, red_v, red_i);
      if (threadIdx.x == 0 && g != kNone) group_taken[g] = 1;
      __syncthreads();
    }
    // Experts of the groups left out are excluded.
    for (int e = threadIdx.x; e < E; e += blockDim.x)
      if (!group_taken[e / size]) sel[e] = -INFINITY;
    __syncthreads();
  }

  const int64_t k = r.top_k;
  for (int64_t j = 0; j < k; ++j) {
    const int e = block_pick(sel, taken, E, red_v, red_i);
    if (threadIdx.x == 0) {
      taken[e == kNone ? 0 : e] = 1;
      r.ids[t * k + j] = e == kNone ? 0 : e;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    // Weights: the unbiased scores of the chosen experts, or (softmax_topk)
    // a softmax over their logits; then normalisation and scaling.
    double mx = -INFINITY;
    for (int64_t j = 0; j < k; ++j) mx = fmax(mx, s[r.ids[t * k + j]]);
    double sum = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      const double v = s[r.ids[t * k + j]];
      sum += r.scoring == 2 ? exp(v - mx) : v;
    }
    const double denom = r.scoring == 2 ? sum : 1.0;
    const double norm = r.normalize ? (r.scoring == 2 ? 1.0 : sum) + r.normalize_eps : 1.0;
    for (int64_t j = 0; j < k; ++j) {
      const double v = s[r.ids[t * k + j]];
      double w = r.scoring == 2 ? exp(v - mx) / denom : v;
      w /= norm;
      r.weights[t * k + j] = static_cast<float>(w * r.scaling_factor);
    }
  }
}

__global__ void routing_dense_kernel(moert_dtype ids_t, const void* ids, moert_dtype w_t,
                                     const void* w, float* dense, int64_t tokens, int64_t top_k,
                                     int64_t experts, unsigned long long* error) {
  for (int64_t t = global_index(); t < tokens; t += global_stride())
    for (int64_t j = 0; j < top_k; ++j) {
      const int64_t e = load_id(ids_t, ids, t * top_k + j);
      if (e < 0 || e >= experts) {
        record_error(error, t * top_k + j);
        continue;
      }
      dense[t * experts + e] += load_float(w_t, w, t * top_k + j);
    }
}

// ---- grouping by expert -----------------------------------------------------

__global__ void moe_route_kernel(moert_dtype ids_t, const void* ids, int64_t slots, int experts,
                                 MoeRoute r, unsigned long long* error) {
  extern __shared__ int counts[];  // [experts] counts, then [experts] cursors
  int* cursor = counts + experts;
  __shared__ int tiles_used;
  for (int e = threadIdx.x; e < experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
    const int64_t e = load_id(ids_t, ids, s);
    if (e < 0 || e >= experts)
      record_error(error, s);
    else
      atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int pos = 0, tile = 0;
    for (int e = 0; e < experts; ++e) {
      r.expert_start[e] = pos;
      cursor[e] = pos;
      for (int q = 0; q < counts[e]; q += static_cast<int>(kMoeTileRows)) {
        r.tile_expert[tile] = e;
        r.tile_start[tile] = pos + q;
        ++tile;
      }
      pos += counts[e];
    }
    r.expert_start[experts] = pos;
    tiles_used = tile;
  }
  __syncthreads();
  for (int64_t i = tiles_used + threadIdx.x; i < r.max_tiles; i += blockDim.x)
    r.tile_expert[i] = -1;
  // Positions within an expert come in any order: each row is computed on
  // its own, and the combine sums a token's slots in slot order.
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
    const int64_t e = load_id(ids_t, ids, s);
    if (e >= 0 && e < experts) r.sorted_slot[atomicAdd(&cursor[e], 1)] = static_cast<int32_t>(s);
  }
}

// ---- expert projections -----------------------------------------------------

// The GEMV form (expert_gemv) is in expert_gemv.cu.

constexpr int kTileN = 64, kTileK = 16, kGemmThreads = 256;
constexpr int kTileM = static_cast<int>(kMoeTileRows);

// A 64 x 64 tile of one expert's outputs; each thread computes 4 x 4 of
// them (two such sets for gate and up).  Rows of A are gathered through the
// grouping; weights are dequantised as they are loaded into shared memory.
// Experts with more than `max_rows` rows are left to expert_gemm_tc.
template <bool kGateUp>
__global__ void __launch_bounds__(kGemmThreads)
    expert_gemm_kernel(ExpertProjection p, MoeRoute route, bool identity, int64_t max_rows) {
  __shared__ float as[kTileK][kTileM + 1];
  __shared__ float bs[kTileK][kTileN + 1];
  __shared__ float bs2[kGateUp ? kTileK : 1][kGateUp ? kTileN + 1 : 1];
  const int64_t tile = blockIdx.y;
  int64_t e = 0, row0, row_end;
  if (identity) {
    row0 = tile * kTileM;
    row_end = min(row0 + kTileM, p.units);
  } else {
    e = route.tile_expert[tile];
    if (e < 0) return;
    if (route.expert_start[e + 1] - route.expert_start[e] > max_rows) return;
    row0 = route.tile_start[tile];
    row_end = min(row0 + kTileM, static_cast<int64_t>(route.expert_start[e + 1]));
  }
  if (row0 >= row_end) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int tid = threadIdx.x;

  // The A rows this thread loads (4 of the tile's 64 x 16 elements per step).
  int64_t a_rows[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t pos = row0 + (tid + i * kGemmThreads) / kTileK;
    int64_t a_row = -1;
    if (pos < row_end) {
      const int64_t slot = identity ? pos : route.sorted_slot[pos];
      a_row = kGateUp ? slot / p.top_k : pos;
    }
    a_rows[i] = a_row;
  }

  float acc[4][4] = {}, acc2[4][4] = {};
  const int ty = tid / 16, tx = tid % 16;
  for (int64_t k0 = 0; k0 < p.k; k0 += kTileK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int idx = tid + i * kGemmThreads;
      const int r = idx / kTileK, c = idx % kTileK;
      const int64_t kk = k0 + c;
      as[c][r] = (a_rows[i] >= 0 && kk < p.k) ? load_float(p.a_t, p.a, a_rows[i] * p.k + kk) : 0.0f;
      const int64_t col = n0 + r;  // the same index split serves the weight tile
      const bool in = col < p.n && kk < p.k;
      bs[c][r] = in ? weight_at(p.w1, e, col, kk, p.n, p.k) : 0.0f;
      if (kGateUp) bs2[c][r] = in ? weight_at(p.w2, e, col, kk, p.n, p.k) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kTileK; ++c) {
      float a[4], b[4], b2[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = as[c][ty * 4 + i];
        b[i] = bs[c][tx * 4 + i];
        if (kGateUp) b2[i] = bs2[c][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[i][j] += a[i] * b[j];
          if (kGateUp) acc2[i][j] += a[i] * b2[j];
        }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t pos = row0 + ty * 4 + i;
    if (pos >= row_end) continue;
    const int64_t out_row = kGateUp ? pos : (identity ? pos : route.sorted_slot[pos]);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx * 4 + j;
      if (col >= p.n) continue;
      const float g = acc[i][j];
      p.out[out_row * p.n + col] = kGateUp ? expert_act(p, e, col, g, acc2[i][j]) : g;
    }
  }
}

__global__ void moe_combine_kernel(MoeCombine c) {
  __shared__ float red[32];
  const int64_t t = blockIdx.x;
  float g = 1.0f;
  if (c.shared && c.gate) {
    float dot = 0.0f;
    for (int64_t h = threadIdx.x; h < c.hidden; h += blockDim.x)
      dot += load_float(c.x_t, c.x, t * c.hidden + h) * load_float(c.gate_t, c.gate, h);
    g = sigmoid_f(block_sum(dot, red));
  }
  for (int64_t h = threadIdx.x; h < c.hidden; h += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < c.top_k; ++j) {
      float y = c.routed[(t * c.top_k + j) * c.hidden + h];
      if (c.down_bias) {
        const int64_t e = load_id(c.ids_t, c.ids, t * c.top_k + j);
        if (e >= 0 && e < c.experts) y += load_float(c.down_bias_t, c.down_bias, e * c.hidden + h);
      }
      acc += load_float(c.w_t, c.w, t * c.top_k + j) * y;
    }
    if (c.shared) acc += g * c.shared[t * c.hidden + h];
    store_float(c.out_t, c.out, t * c.hidden + h, acc);
  }
}

}  // namespace

void router(cudaStream_t s, const Router& r) {
  if (r.tokens == 0) return;
  const size_t shared = sizeof(double) * static_cast<size_t>(2 * r.experts + r.n_group) +
                        sizeof(int) * static_cast<size_t>(r.experts + r.n_group);
  router_kernel<<<static_cast<unsigned>(r.tokens), 256, shared, s>>>(r);
  check_launch("router");
}

void routing_dense(cudaStream_t s, moert_dtype ids_t, const void* ids, moert_dtype w_t,
                   const void* w, float* dense, int64_t tokens, int64_t top_k, int64_t experts,
                   unsigned long long* error) {
  if (tokens == 0) return;
  check_cuda(cudaMemsetAsync(dense, 0, sizeof(float) * static_cast<size_t>(tokens * experts), s),
             "clearing the dense routing matrix");
  routing_dense_kernel<<<grid_for(tokens), kThreads, 0, s>>>(ids_t, ids, w_t, w, dense, tokens,
                                                             top_k, experts, error);
  check_launch("routing_dense");
}

void moe_route(cudaStream_t s, moert_dtype ids_t, const void* ids, int64_t slots, int64_t experts,
               const MoeRoute& r, unsigned long long* error) {
  const size_t shared = 2 * sizeof(int) * static_cast<size_t>(experts);
  moe_route_kernel<<<1, 1024, shared, s>>>(ids_t, ids, slots, static_cast<int>(experts), r, error);
  check_launch("moe_route");
}

void expert_gemm(cudaStream_t s, const ExpertProjection& p, int64_t max_rows) {
  if (p.units == 0 || p.n == 0) return;
  const bool identity = p.route == nullptr;
  if (identity && p.units > max_rows) return;  // all of it is expert_gemm_tc's
  const MoeRoute route = identity ? MoeRoute{} : *p.route;
  const int64_t tiles = identity ? (p.units + kTileM - 1) / kTileM : route.max_tiles;
  const dim3 grid(static_cast<unsigned>((p.n + kTileN - 1) / kTileN), static_cast<unsigned>(tiles));
  if (p.gate_up)
    expert_gemm_kernel<true><<<grid, kGemmThreads, 0, s>>>(p, route, identity, max_rows);
  else
    expert_gemm_kernel<false><<<grid, kGemmThreads, 0, s>>>(p, route, identity, max_rows);
  check_launch("expert_gemm");
}

void moe_combine(cudaStream_t s, const MoeCombine& c) {
  if (c.tokens == 0) return;
  moe_combine_kernel<<<static_cast<unsigned>(c.tokens), kThreads, 0, s>>>(c);
  check_launch("moe_combine");
}

}  // namespace moert::cuda::launch
