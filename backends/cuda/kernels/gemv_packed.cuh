// The decode GEMV over packed weights (linear's and moe's attribute quant:
// int8, int4 with or without zero points, mxfp4; numeric.h), shared by
// linear_gemv (gemv.cu) and expert_gemv (expert_gemv.cu).  It is
// gemv_vec.cuh's scheme with another chunk decoder: every packed byte is
// read once, as 16-byte chunks (16 int8 values or 32 nibbles) with
// ld.global.nc, kUnroll chunks per column in flight per lane, C columns per
// warp (gate and up together), split warps per column group for narrow
// matrices, the partial sums met in shared memory in a fixed order.
//
// A chunk lies in one scale group (b1 a multiple of the chunk's elements,
// checked on the host), so its products with x are summed over the values
// (integer q - zero, or e2m1) and multiplied by the group's scale once, as
// the fp8 chunks are.  Values are decoded exactly in f32: an integer v < 2^23
// is the float with bits 0x4b000000 | v minus 2^23 (no int-to-float
// conversion); the nibble order is weight_format.h's (the even column in the
// low nibble, so element j of a little-endian word is bits 4j .. 4j + 3).
// Products are f32 of exactly dequantised weights, f32 sums: the precision
// of the float GEMV.  Other block widths, odd K or unaligned weights take the
// scalar kernels (weight_at).
#pragma once

#include <cuda_fp16.h>

#include "gemv_vec.cuh"

namespace moert::cuda::launch::gemv_vec {

// The kinds the packed kernels are instantiated for: int4 with (scale, zero)
// pairs loads its zero point with its scale, symmetric int4 has 8.
enum class Packed { int8, int4, int4_zeros, mxfp4 };

template <Packed P>
using packed_c = std::integral_constant<Packed, P>;

// Elements of a 16-byte chunk.
__host__ __device__ constexpr int packed_chunk_elems(Packed p) {
  return p == Packed::int8 ? 16 : 32;
}
// Bytes of a stored row of k columns (k a multiple of the chunk).
__host__ __device__ constexpr int64_t packed_stride(Packed p, int64_t k) {
  return p == Packed::int8 ? k : k / 2;
}
// Bytes of one group's scale entry: an f16, an f16 (scale, zero) pair or an
// e8m0 byte.
__host__ __device__ constexpr int64_t group_bytes(Packed p) {
  return p == Packed::mxfp4 ? 1 : (p == Packed::int4_zeros ? 4 : 2);
}
// Like min_blocks: 8 rows of x need the registers of one block per
// multiprocessor.
__host__ __device__ constexpr int packed_min_blocks(int rows) { return rows > 4 ? 1 : 2; }

// Host side: the kind of a packed weight.
inline Packed packed_kind(const Weights& w) {
  switch (w.quant) {
    case Quant::int8:
      return Packed::int8;
    case Quant::mxfp4:
      return Packed::mxfp4;
    default:
      return w.zeros ? Packed::int4_zeros : Packed::int4;
  }
}

// Host side: whether a packed weight matrix [.., k] can be read as 16-byte
// chunks: k a multiple of the chunk (so every row starts aligned, and no row
// ends in a half-used byte), the base 16-byte aligned, and b1 a multiple of
// the chunk (a chunk within one scale group).
inline bool packed_fits(const Weights& w, int64_t k) {
  if (w.quant == Quant::none || !w.w || !w.qscale) return false;
  const int v = packed_chunk_elems(packed_kind(w));
  if (k % v != 0 || k / v >= kMaxChunks) return false;
  if (reinterpret_cast<uintptr_t>(w.w) % 16 != 0) return false;
  return w.b0 > 0 && w.b1 > 0 && w.b1 % v == 0 && w.b1 / v <= INT32_MAX;
}

inline Shape make_packed_shape(const Weights& w, int64_t n, int64_t k, int rows) {
  const int v = packed_chunk_elems(packed_kind(w));
  Shape s;
  s.n = n;
  s.k = k;
  s.nchunks = static_cast<int>(k / v);
  s.rows = rows;
  s.b0 = w.b0;
  s.scols = ceil_div(k, w.b1);
  s.div = chunk_div(static_cast<uint32_t>(w.b1 / v));
  return s;
}

// f(packed_c<P>{}) for the kind of w (the launchers instantiate each kernel
// once per kind).
template <class F>
inline void with_packed_kind(const Weights& w, F&& f) {
  switch (packed_kind(w)) {
    case Packed::int8:
      f(packed_c<Packed::int8>{});
      break;
    case Packed::int4:
      f(packed_c<Packed::int4>{});
      break;
    case Packed::int4_zeros:
      f(packed_c<Packed::int4_zeros>{});
      break;
    default:
      f(packed_c<Packed::mxfp4>{});
      break;
  }
}

// ---- device side ------------------------------------------------------------

// 2^23 + v as f32, for 0 <= v < 2^23.
__device__ __forceinline__ float magic_float(uint32_t v) {
  return __uint_as_float(0x4b000000u | v);
}

// The scale (and int4 zero point) of group g of a row of groups starting at
// `srow` (bytes).
template <Packed P>
__device__ __forceinline__ void load_group(const unsigned char* srow, int g, float& scale,
                                           float& zero_point) {
  if constexpr (P == Packed::mxfp4) {
    scale = e8m0_to_f32(__ldg(srow + g));
    zero_point = 0.0f;
  } else if constexpr (P == Packed::int4_zeros) {
    const unsigned short* pair = reinterpret_cast<const unsigned short*>(srow) + 2 * g;
    scale = __half2float(__ushort_as_half(__ldg(pair)));
    zero_point = __half2float(__ushort_as_half(__ldg(pair + 1)));
  } else {
    scale =
        __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(srow) + g)));
    zero_point = 8.0f;  // int4's; int8 has none
  }
}

// Elements 4p .. 4p + 3 of a chunk as f32, before the group's scale: q
// (int8), q - zero (int4) or the e2m1 value (mxfp4).  Exact.
template <Packed P>
__device__ __forceinline__ void packed_piece(const uint4& v, int p, float zero_point,
                                             float (&f)[4]) {
  if constexpr (P == Packed::int8) {
    // Offset binary: byte ^ 0x80 is q + 128.
    const uint32_t u = word(v, p) ^ 0x80808080u;
#pragma unroll
    for (int j = 0; j < 4; ++j) f[j] = magic_float((u >> (8 * j)) & 0xffu) - 8388736.0f;
  } else {
    // Bytes 2p and 2p + 1: the low or high half of word p / 2.
    const uint32_t h = word(v, p >> 1) >> ((p & 1) * 16);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t n = (h >> (4 * j)) & 15u;
      if constexpr (P == Packed::mxfp4)
        f[j] = e2m1_to_f32(n);
      else if constexpr (P == Packed::int4)
        f[j] = magic_float(n) - 8388616.0f;  // 2^23 + 8: q - 8 in one exact subtraction
      else
        f[j] = (magic_float(n) - 8388608.0f) - zero_point;
    }
  }
}

// dst[m][c][r] += x[r, c0 .. c0 + V) . chunk v[m][c] (before the scale).
template <Packed P, moert_dtype X, int R, int M, int C>
__device__ __forceinline__ void packed_chunk_products(const uint4 (&v)[M][C],
                                                      const float (&zero_point)[M][C],
                                                      const void* x, int64_t k, int rows,
                                                      int64_t c0, float (&dst)[M][C][R]) {
  constexpr int kPieces = packed_chunk_elems(P) / 4;
#pragma unroll
  for (int p = 0; p < kPieces; ++p) {
    float wf[M][C][4];
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int c = 0; c < C; ++c) packed_piece<P>(v[m][c], p, zero_point[m][c], wf[m][c]);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      // Rows past `rows` repeat the last row (sums the caller drops).
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
// rows) of rows row[m][c] (scale rows srow[m][c]) with x: every load first,
// then the arithmetic, each chunk's sum times its group's scale.
template <Packed P, moert_dtype X, int R, int M, int C, int U>
__device__ __forceinline__ void packed_chunks(const uint4* const (&row)[M][C],
                                              const unsigned char* const (&srow)[M][C],
                                              const void* x, const Shape& s, int q, int step,
                                              float (&acc)[M][C][R]) {
  uint4 v[U][M][C];
  float sc[U][M][C], zr[U][M][C];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int qu = q + u * step;
    const int g = divide(qu, s.div);
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int c = 0; c < C; ++c) {
        v[u][m][c] = load_chunk(row[m][c] + qu);
        load_group<P>(srow[m][c], g, sc[u][m][c], zr[u][m][c]);
      }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t c0 = static_cast<int64_t>(q + u * step) * packed_chunk_elems(P);
    float part_sum[M][C][R];
    zero(part_sum);
    packed_chunk_products<P, X, R, M, C>(v[u], zr[u], x, s.k, s.rows, c0, part_sum);
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int c = 0; c < C; ++c)
#pragma unroll
        for (int r = 0; r < R; ++r)
          acc[m][c][r] = fmaf(part_sum[m][c][r], sc[u][m][c], acc[m][c][r]);
  }
}

// columns() for packed matrices: w[m] and scale[m] are matrix bases (the
// packed bytes, the scale entries' bytes); the same results, lanes and
// synchronisation as columns().
template <Packed P, moert_dtype X, int R, int M, int C>
__device__ __forceinline__ float packed_columns(const unsigned char* const (&w)[M],
                                                const unsigned char* const (&scale)[M],
                                                const void* x, const Shape& s, int64_t col0,
                                                bool active, int part, int lane, float* red) {
  static_assert(M * C * R <= 32, "one value per lane");
  float acc[M][C][R];
  zero(acc);

  if (active) {
    const uint4* row[M][C];
    const unsigned char* srow[M][C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int64_t col = col0 + c < s.n ? col0 + c : s.n - 1;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        row[m][c] = reinterpret_cast<const uint4*>(w[m] + col * packed_stride(P, s.k));
        srow[m][c] = scale[m] + (col / s.b0) * s.scols * group_bytes(P);
      }
    }
    const int step = 32 * s.split;
    int q = part * 32 + lane;
    for (; q + (kUnroll - 1) * step < s.nchunks; q += kUnroll * step)
      packed_chunks<P, X, R, M, C, kUnroll>(row, srow, x, s, q, step, acc);
    for (; q < s.nchunks; q += step) packed_chunks<P, X, R, M, C, 1>(row, srow, x, s, q, step, acc);
  }

  return finish_columns(acc, s, part, lane, red);
}

}  // namespace moert::cuda::launch::gemv_vec
