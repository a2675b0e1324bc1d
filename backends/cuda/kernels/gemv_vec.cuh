// The bandwidth-bound decode GEMV shared by linear_gemv (gemv.cu) and
// expert_gemv (expert_gemv.cu).  At batch 1 a GEMV does one multiply-add per
// weight element, so its speed is the speed at which the weights stream in
// from HBM; everything here serves that:
//   - weights are read as 16-byte chunks (uint4) with ld.global.nc and
//     L1::no_allocate (they are read exactly once, so caching them in L1
//     would only evict x), each lane holding kUnroll chunks of each of its
//     columns in flight;
//   - the weight dtype is a template parameter, so converting a chunk is a
//     few shifts (bf16), packed hardware conversions (f16, e4m3 through f16;
//     exact for every non-NaN value) and no per-element dtype switch;
//   - a warp computes C columns at once (and the gate and up rows together),
//     so each x value it loads serves C (or 2C) weight rows; x is tiny and
//     stays in L1/L2, so it is read from global memory directly, which works
//     for any k (no shared-memory staging and no block-wide barriers in the
//     main loop);
//   - when there are few columns (k/v projections, small experts) `split`
//     warps share a column group, each taking every split-th stretch of 32
//     chunks, so enough warps are in flight to saturate HBM; their partial
//     sums meet in shared memory in a fixed order (deterministic).
// Products are f32 of the exact operands (x as f32, weights as stored) and
// accumulation is f32, as in the scalar kernels; only the order of the sum
// differs.  f8_e4m3 chunks (16 elements) lie within one scale block
// (b1 % 16 == 0, checked on the host), so a chunk's products are summed
// and then multiplied by the chunk's scale once.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "common.cuh"

namespace moert::cuda::launch::gemv_vec {

inline constexpr int kWarps = 8;
inline constexpr int kThreads = 32 * kWarps;
// 16-byte chunks of each weight row a lane loads before using any of them.
inline constexpr int kUnroll = 2;
// Warps the column split aims to have in flight: about 32 per multiprocessor
// of a 132-SM H100/H200, which keeps enough loads outstanding to cover the
// HBM latency.
inline constexpr int64_t kTargetWarps = 4096;
// Blocks per multiprocessor the kernels are compiled for.  It matters
// beyond occupancy: without a minimum, ptxas schedules for the fewest
// registers and issues each weight load just before its first use, one load
// in flight per thread; with it, all kUnroll * M * C loads of an iteration
// are issued together.  Two blocks (16 warps, <= 128 registers) keep about
// 64 KiB of loads in flight per multiprocessor.  fp8 weights against 8 rows
// need more registers (and are bound by arithmetic, not by loads): one block.
__host__ __device__ constexpr int min_blocks(moert_dtype w, int rows) {
  return w == MOERT_DTYPE_F8_E4M3 && rows > 4 ? 1 : 2;
}
// The largest chunk count per row the kernels index with int (with room for
// the unrolled step).
inline constexpr int64_t kMaxChunks = int64_t{1} << 30;

// Elements of a 16-byte chunk of weights of dtype t (a float dtype).
__host__ __device__ constexpr int chunk_elems(moert_dtype t) {
  return t == MOERT_DTYPE_F32 ? 4 : (t == MOERT_DTYPE_F8_E4M3 ? 16 : 8);
}
__host__ __device__ constexpr int64_t elem_bytes(moert_dtype t) {
  return t == MOERT_DTYPE_F32 ? 4 : (t == MOERT_DTYPE_F8_E4M3 ? 1 : 2);
}

// q / d for 0 <= q < 2^31 as a multiply-high and a shift (the scale column of
// chunk q is q / (b1 / 16); a division per chunk would cost as much as the
// chunk's arithmetic).  With l = ceil(log2 d), p = 31 + l and
// mul = ceil(2^p / d) < 2^32, the error mul * d - 2^p < d keeps
// floor(q * mul / 2^p) == floor(q / d) for every q < 2^31.
struct ChunkDiv {
  uint32_t mul = 0;
  int shift = 0;
  bool one = true;  // d == 1: q itself
};
inline ChunkDiv chunk_div(uint32_t d) {
  ChunkDiv r;
  if (d <= 1) return r;
  int l = 0;
  while ((uint64_t{1} << l) < d) ++l;
  const int p = 31 + l;
  r.mul = static_cast<uint32_t>(((uint64_t{1} << p) + d - 1) / d);
  r.shift = p - 32;
  r.one = false;
  return r;
}
__device__ __forceinline__ int divide(int q, const ChunkDiv& d) {
  return d.one ? q : static_cast<int>(__umulhi(static_cast<unsigned>(q), d.mul) >> d.shift);
}

// What every block of a call shares.  fp8 block scales: the scale of chunk
// q of column `col` of a matrix is scale[(col / b0) * scols + q / (b1 / 16)],
// with `scale` already offset to the matrix.
struct Shape {
  int64_t n = 0, k = 0;
  int nchunks = 0;  // k / chunk_elems
  int split = 1;    // warps per column group: 1, 2, 4 or 8
  int rows = 1;     // rows of x, <= the kernel's R
  int64_t b0 = 1, scols = 1;
  ChunkDiv div;
};

// Host side: whether a weight matrix [.., k] of this call can be read as
// 16-byte chunks: a float dtype, the base 16-byte aligned and k a multiple
// of the chunk (so every row starts aligned), and for f8_e4m3 a scale with
// b1 a multiple of 16 (a chunk within one scale block).  Anything else keeps
// the scalar kernel.
inline bool weights_fit(const Weights& w, int64_t k) {
  if (!is_float_dtype(w.t) || !w.w) return false;
  const int v = chunk_elems(w.t);
  if (k % v != 0 || k / v >= kMaxChunks) return false;
  if (reinterpret_cast<uintptr_t>(w.w) % 16 != 0) return false;
  if (w.t == MOERT_DTYPE_F8_E4M3)
    return w.scale && w.b0 > 0 && w.b1 > 0 && w.b1 % v == 0 && w.b1 / v <= INT32_MAX;
  return w.scale == nullptr;  // only fp8 weights carry a scale
}
// x rows are read 4 elements at a time (16 or 8 bytes); rows start
// k * size bytes apart, and k is a multiple of 4 once weights_fit holds.
inline bool x_fits(moert_dtype t, const void* x) {
  return (t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_BF16 || t == MOERT_DTYPE_F16) &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

// The column split for `groups` column groups (over all units) of rows of
// `nchunks` chunks: doubled while there are fewer warps than kTargetWarps
// and every lane still gets at least kUnroll chunks per row.
inline int choose_split(int64_t groups, int64_t nchunks) {
  int split = 1;
  while (split < kWarps && groups * split < kTargetWarps &&
         nchunks >= int64_t{32} * kUnroll * split * 2)
    split *= 2;
  return split;
}

inline Shape make_shape(const Weights& w, int64_t n, int64_t k, int rows) {
  Shape s;
  s.n = n;
  s.k = k;
  s.nchunks = static_cast<int>(k / chunk_elems(w.t));
  s.rows = rows;
  if (w.t == MOERT_DTYPE_F8_E4M3) {
    s.b0 = w.b0;
    s.scols = ceil_div(k, w.b1);
    s.div = chunk_div(static_cast<uint32_t>(w.b1 / chunk_elems(w.t)));
  }
  return s;
}

template <moert_dtype T>
using dtype_c = std::integral_constant<moert_dtype, T>;

// f(dtype_c<W>) for a float weight dtype W (the launchers instantiate each
// kernel once per weight dtype).
template <class F>
inline void with_weight_dtype(moert_dtype t, F&& f) {
  switch (t) {
    case MOERT_DTYPE_F32:
      f(dtype_c<MOERT_DTYPE_F32>{});
      break;
    case MOERT_DTYPE_BF16:
      f(dtype_c<MOERT_DTYPE_BF16>{});
      break;
    case MOERT_DTYPE_F16:
      f(dtype_c<MOERT_DTYPE_F16>{});
      break;
    default:
      f(dtype_c<MOERT_DTYPE_F8_E4M3>{});
      break;
  }
}

// f(dtype_c<X>) for an activation dtype X (f32, bf16, f16).
template <class F>
inline void with_x_dtype(moert_dtype t, F&& f) {
  switch (t) {
    case MOERT_DTYPE_BF16:
      f(dtype_c<MOERT_DTYPE_BF16>{});
      break;
    case MOERT_DTYPE_F16:
      f(dtype_c<MOERT_DTYPE_F16>{});
      break;
    default:
      f(dtype_c<MOERT_DTYPE_F32>{});
      break;
  }
}

// f(std::integral_constant<int, R>) with R = rows rounded up to 1, 2, 4 or 8:
// the row counts the multi-row kernels are instantiated for (their extra
// rows repeat the last row of x and are not stored).
template <class F>
inline void with_row_count(int rows, F&& f) {
  if (rows == 1)
    f(std::integral_constant<int, 1>{});
  else if (rows == 2)
    f(std::integral_constant<int, 2>{});
  else if (rows <= 4)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 8>{});
}

// ---- device side ------------------------------------------------------------

// A weight chunk: read once, so not kept in L1 (x stays there); the L2
// prefetch hint fetches the rest of the 256-byte line a warp is about to
// read anyway.  volatile keeps the compiler from sinking a load towards its
// first use, which would serialise the loads of an iteration.  Callers only
// pass addresses inside the weights.
__device__ __forceinline__ uint4 load_chunk(const uint4* p) {
  uint4 v;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // The L2 prefetch size modifier needs sm_80.
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
#else
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
#endif
  return v;
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

__device__ __forceinline__ float2 f16x2_to_float2(uint32_t bits) {
  __half2_raw raw;
  raw.x = static_cast<unsigned short>(bits & 0xffffu);
  raw.y = static_cast<unsigned short>(bits >> 16);
  return __half22float2(__half2(raw));
}

// Two e4m3 bytes (the first in the low byte) as f32.  sm_89 and newer
// convert them to f16 in one instruction (exact: every e4m3 value is an
// f16), then to f32 (exact).  A NaN comes out as a NaN of another payload
// than e4m3_to_f32's; it only ever enters an FMA, whose NaN result does not
// depend on it.
__device__ __forceinline__ float2 e4m3x2_to_float2(uint32_t bits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits & 0xffffu), __NV_E4M3);
  return __half22float2(__half2(h));
#else
  return make_float2(e4m3_to_f32(static_cast<uint8_t>(bits & 0xffu)),
                     e4m3_to_f32(static_cast<uint8_t>((bits >> 8) & 0xffu)));
#endif
}

// Elements 4p .. 4p + 3 of a chunk of weights of dtype W, as f32 (exact).
// Little-endian: the element at the lower address is in the lower bits.
template <moert_dtype W>
__device__ __forceinline__ void weight_piece(const uint4& v, int p, float (&f)[4]) {
  if constexpr (W == MOERT_DTYPE_F32) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  } else if constexpr (W == MOERT_DTYPE_BF16) {
    const uint32_t a = word(v, 2 * p), b = word(v, 2 * p + 1);
    f[0] = __uint_as_float(a << 16);
    f[1] = __uint_as_float(a & 0xffff0000u);
    f[2] = __uint_as_float(b << 16);
    f[3] = __uint_as_float(b & 0xffff0000u);
  } else if constexpr (W == MOERT_DTYPE_F16) {
    const float2 lo = f16x2_to_float2(word(v, 2 * p)), hi = f16x2_to_float2(word(v, 2 * p + 1));
    f[0] = lo.x;
    f[1] = lo.y;
    f[2] = hi.x;
    f[3] = hi.y;
  } else {
    static_assert(W == MOERT_DTYPE_F8_E4M3, "a weight dtype");
    const uint32_t a = word(v, p);
    const float2 lo = e4m3x2_to_float2(a), hi = e4m3x2_to_float2(a >> 16);
    f[0] = lo.x;
    f[1] = lo.y;
    f[2] = hi.x;
    f[3] = hi.y;
  }
}

// Elements i .. i + 3 of x (dtype X, i a multiple of 4, x 16-byte aligned),
// as f32 (exact).  x is small and read by every warp: through L1.
template <moert_dtype X>
__device__ __forceinline__ void load_x4(const void* x, int64_t i, float (&f)[4]) {
  if constexpr (X == MOERT_DTYPE_F32) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(x) + i));
    f[0] = v.x;
    f[1] = v.y;
    f[2] = v.z;
    f[3] = v.w;
  } else {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(x) + i));
    if constexpr (X == MOERT_DTYPE_BF16) {
      f[0] = __uint_as_float(v.x << 16);
      f[1] = __uint_as_float(v.x & 0xffff0000u);
      f[2] = __uint_as_float(v.y << 16);
      f[3] = __uint_as_float(v.y & 0xffff0000u);
    } else {
      static_assert(X == MOERT_DTYPE_F16, "an activation dtype");
      const float2 lo = f16x2_to_float2(v.x), hi = f16x2_to_float2(v.y);
      f[0] = lo.x;
      f[1] = lo.y;
      f[2] = hi.x;
      f[3] = hi.y;
    }
  }
}

// Sets every sum of a per-lane accumulator array to 0.
template <int M, int C, int R>
__device__ __forceinline__ void zero(float (&a)[M][C][R]) {
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int r = 0; r < R; ++r) a[m][c][r] = 0.0f;
}

// dst[m][c][r] += x[r, c0 .. c0 + V) . chunk v[m][c] (unscaled).
template <moert_dtype W, moert_dtype X, int R, int M, int C>
__device__ __forceinline__ void chunk_products(const uint4 (&v)[M][C], const void* x, int64_t k,
                                               int rows, int64_t c0, float (&dst)[M][C][R]) {
  constexpr int kPieces = chunk_elems(W) / 4;
#pragma unroll
  for (int p = 0; p < kPieces; ++p) {
    float wf[M][C][4];
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int c = 0; c < C; ++c) weight_piece<W>(v[m][c], p, wf[m][c]);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      // Rows past `rows` repeat the last row (sums the caller drops): no
      // branch in the loop body, so the loads of an iteration stay together.
      const int64_t xr = r < rows ? r : rows - 1;
      float xf[4];
      load_x4<X>(x, xr * k + c0 + 4 * p, xf);
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int c = 0; c < C; ++c)
#pragma unroll
          for (int j = 0; j < 4; ++j) dst[m][c][r] = fmaf(xf[j], wf[m][c][j], dst[m][c][r]);
    }
  }
}

// acc += the products of chunks q, q + step, ... (U of them, all inside the
// rows) of rows row[m][c] with x: every load first, then the arithmetic.
// fp8 chunks are summed unscaled, then multiplied by their block's scale.
template <moert_dtype W, moert_dtype X, int R, int M, int C, int U>
__device__ __forceinline__ void chunks(const uint4* const (&row)[M][C],
                                       const float* const (&srow)[M][C], const void* x,
                                       const Shape& s, int q, int step, float (&acc)[M][C][R]) {
  constexpr bool kScaled = W == MOERT_DTYPE_F8_E4M3;
  uint4 v[U][M][C];
  float sc[U][M][C];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int qu = q + u * step;
    const int sq = kScaled ? divide(qu, s.div) : 0;
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int c = 0; c < C; ++c) {
        v[u][m][c] = load_chunk(row[m][c] + qu);
        sc[u][m][c] = kScaled ? __ldg(srow[m][c] + sq) : 0.0f;
      }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t c0 = static_cast<int64_t>(q + u * step) * chunk_elems(W);
    if constexpr (kScaled) {
      float part_sum[M][C][R];
      zero(part_sum);
      chunk_products<W, X, R, M, C>(v[u], x, s.k, s.rows, c0, part_sum);
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int c = 0; c < C; ++c)
#pragma unroll
          for (int r = 0; r < R; ++r)
            acc[m][c][r] = fmaf(part_sum[m][c][r], sc[u][m][c], acc[m][c][r]);
    } else {
      chunk_products<W, X, R, M, C>(v[u], x, s.k, s.rows, c0, acc);
    }
  }
}

// The end of columns() (and of packed_columns()): each per-lane sum reduced
// over the warp, lane (m * C + c) * R + r keeping sum (m, c, r), then the
// group's split warps added, in order, in its first warp.
template <int M, int C, int R>
__device__ __forceinline__ float finish_columns(const float (&acc)[M][C][R], const Shape& s,
                                                int part, int lane, float* red) {
  float mine = 0.0f;
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float t = warp_sum(acc[m][c][r]);
        if (lane == (m * C + c) * R + r) mine = t;
      }
  if (s.split > 1) {  // the group's warps, in order, in its first warp
    const int warp = threadIdx.x >> 5;
    red[warp * 32 + lane] = mine;
    __syncthreads();
    if (part == 0) {
      for (int p = 1; p < s.split; ++p) mine += red[(warp + p) * 32 + lane];
    }
    __syncthreads();  // `red` is written again by the next call
  }
  return mine;
}

// The sums of columns col0 .. col0 + C - 1 of M matrices (w[m], scale[m]:
// matrix bases) against R rows of x, for one warp of a column group.
// Returns, in lane (m * C + c) * R + r of the group's first warp (part 0),
// the sum for matrix m, column col0 + c, row r; other lanes and warps get
// unspecified values.  Columns past n are computed as column n - 1 and must
// be dropped by the caller.  Every thread of the block calls this the same
// number of times (it synchronises the block when split > 1); `red` is
// shared memory of kWarps * 32 floats.
template <moert_dtype W, moert_dtype X, int R, int M, int C>
__device__ __forceinline__ float columns(const unsigned char* const (&w)[M],
                                         const float* const (&scale)[M], const void* x,
                                         const Shape& s, int64_t col0, bool active, int part,
                                         int lane, float* red) {
  static_assert(M * C * R <= 32, "one value per lane");
  constexpr bool kScaled = W == MOERT_DTYPE_F8_E4M3;
  float acc[M][C][R];
  zero(acc);

  if (active) {
    const uint4* row[M][C];
    const float* srow[M][C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int64_t col = col0 + c < s.n ? col0 + c : s.n - 1;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        row[m][c] = reinterpret_cast<const uint4*>(w[m] + col * s.k * elem_bytes(W));
        srow[m][c] = kScaled ? scale[m] + (col / s.b0) * s.scols : nullptr;
      }
    }
    // Full iterations (all kUnroll chunks inside the row) first, then the
    // remaining chunks one at a time: the main loop body has no branch, so
    // all its loads are issued before the first is used.
    const int step = 32 * s.split;
    int q = part * 32 + lane;
    for (; q + (kUnroll - 1) * step < s.nchunks; q += kUnroll * step)
      chunks<W, X, R, M, C, kUnroll>(row, srow, x, s, q, step, acc);
    for (; q < s.nchunks; q += step) chunks<W, X, R, M, C, 1>(row, srow, x, s, q, step, acc);
  }

  return finish_columns(acc, s, part, lane, red);
}

}  // namespace moert::cuda::launch::gemv_vec
