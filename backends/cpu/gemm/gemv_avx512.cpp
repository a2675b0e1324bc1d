// AVX-512 GEMV kernels: y[m, n] = sum_k x[m, k] W[n, k] for m <= 8 rows of
// x, reading a group of R consecutive rows of W in 64-byte chunks, widening
// each chunk to f32 in registers and accumulating R x m dot products in f32
// vector registers, reduced once at the end of the rows.
//
// Widening, per dtype (a chunk is 16 f32 or 32 narrower elements):
//   bf16  the upper 16 bits of an f32: the even elements of a 32-bit lane
//         are `lane << 16`, the odd ones `lane & 0xffff0000`.  x is prepared
//         de-interleaved to match (each 32-chunk: its 16 even elements, then
//         its 16 odd ones), so no shuffle is needed.
//   f16   vcvtph2ps.
//   e4m3  rebuilt as an f16 with the same sign, exponent and mantissa bits,
//         which is the e4m3 value times 2^-8 (the biases differ by 8, and the
//         f16 subnormals cover e4m3's), then vcvtph2ps.  The 2^8 and the
//         block scale are folded into x, prepared per block row of W.  The
//         e4m3 NaN codes (0x7f, 0xff) are detected and make the row NaN.
//   packed int8, int4, mxfp4 (packed_avx512.h): 32 columns of one group
//         per chunk, decoded with the group's scale; x is de-interleaved as
//         for bf16 for the 4-bit formats.  Groups that are not whole chunks
//         take a row dequantised to f32 (packed.h) first.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemv_kernels.h"
#include "isa.h"
#include "packed.h"
#include "packed_avx512.h"
#include "simd.h"

namespace moert::cpu::gemm::detail {
namespace {

// Software prefetch: each 64 bytes of a row read also ask for the same
// bytes two groups (2R rows) further on, into L2.  The hardware prefetchers
// alone follow the R short interleaved streams of a group poorly (rows of
// 1-4 KiB): measured +25% (bf16, K = 1024) to +50% (e4m3) of weight
// bandwidth at M = 1 with two threads; into L2 and two groups ahead beat
// into L1 and one group ahead by a further ~5%.
constexpr bool kPrefetch = true;

struct LoadF32 {
  static constexpr int kElems = 16;  // elements per chunk
  static constexpr int kVecs = 1;    // f32 vectors per chunk
  static constexpr int kBytes = 4;   // bytes per element
  static constexpr bool kNan = false;
  MOERT_AVX512 static void load(const unsigned char* p, __m512* v, __m256i&) {
    v[0] = _mm512_loadu_ps(p);
  }
  MOERT_AVX512 static void load_tail(const unsigned char* p, int64_t n, __m512* v, __m256i&) {
    v[0] = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
};

struct LoadBf16 {
  static constexpr int kElems = 32;
  static constexpr int kVecs = 2;
  static constexpr int kBytes = 2;
  static constexpr bool kNan = false;
  MOERT_AVX512 static void widen(__m512i raw, __m512* v) {
    v[0] = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
    v[1] = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(-65536)));
  }
  MOERT_AVX512 static void load(const unsigned char* p, __m512* v, __m256i&) {
    widen(_mm512_loadu_si512(p), v);
  }
  MOERT_AVX512 static void load_tail(const unsigned char* p, int64_t n, __m512* v, __m256i&) {
    widen(_mm512_maskz_loadu_epi16(static_cast<__mmask32>((uint64_t{1} << n) - 1), p), v);
  }
};

struct LoadF16 {
  static constexpr int kElems = 32;
  static constexpr int kVecs = 2;
  static constexpr int kBytes = 2;
  static constexpr bool kNan = false;
  MOERT_AVX512 static void load(const unsigned char* p, __m512* v, __m256i&) {
    v[0] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    v[1] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
  }
  MOERT_AVX512 static void load_tail(const unsigned char* p, int64_t n, __m512* v, __m256i&) {
    const __m512i raw = _mm512_maskz_loadu_epi16(static_cast<__mmask32>((uint64_t{1} << n) - 1), p);
    v[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(raw));
    v[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(raw, 1));
  }
};

struct LoadE4m3 {
  static constexpr int kElems = 32;
  static constexpr int kVecs = 2;
  static constexpr int kBytes = 1;
  static constexpr bool kNan = true;
  MOERT_AVX512 static void widen(__m256i raw, __m512* v, __m256i& nan) {
    // NaN codes have all of bits 0..6 set, the largest such value: a
    // running byte maximum finds them with no mask traffic in the loop.
    nan = _mm256_max_epu8(nan, _mm256_and_si256(raw, _mm256_set1_epi8(0x7f)));
    // Sign-extended to 16 bits and shifted left by 7: sign in bits 15 and
    // 14, exponent in 13..10, mantissa in 9..7; clearing bit 14 leaves the f16.
    const __m512i h = _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(raw), 7),
                                       _mm512_set1_epi16(static_cast<short>(0xbf80)));
    v[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    v[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
  }
  MOERT_AVX512 static void load(const unsigned char* p, __m512* v, __m256i& nan) {
    widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), v, nan);
  }
  MOERT_AVX512 static void load_tail(const unsigned char* p, int64_t n, __m512* v, __m256i& nan) {
    widen(_mm256_maskz_loadu_epi8(static_cast<__mmask32>((uint64_t{1} << n) - 1), p), v, nan);
  }
};

// Whether an e4m3 NaN code went through LoadE4m3's running maximum.
MOERT_AVX512 inline int has_nan(__m256i max) {
  return _mm256_cmpeq_epi8_mask(max, _mm256_set1_epi8(0x7f)) != 0;
}

// The sum of v's lanes.
MOERT_AVX512 inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// The lane sums of a, b, c and d, in that order.
MOERT_AVX512 inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Within each 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], likewise c, d.
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // [a, b, c, d] partial sums per 128-bit lane, then across the four lanes.
  __m512 v = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xee));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4e));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xb1));
  return _mm512_castps512_ps128(v);
}

// R rows of W (`ldw` bytes apart) against M rows of prepared x; U chunks
// per step, each into its own accumulators (independent FMA chains).
template <class L, int R, int M, int U>
MOERT_AVX512 void rows(const unsigned char* w, size_t ldw, int64_t k, const float* x, int64_t ldx,
                       float* y, int64_t ldy) {
  __m512 acc[U][R][M];
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) acc[u][r][m] = _mm512_setzero_ps();
  __m256i nan[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) nan[r] = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + U * L::kElems <= k; i += U * L::kElems) {
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const int64_t iu = i + u * L::kElems;
      __m512 v[R][L::kVecs];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const unsigned char* p = w + r * ldw + static_cast<size_t>(iu) * L::kBytes;
        if constexpr (kPrefetch)
          if (L::kBytes * L::kElems >= 64 || u % 2 == 0)
            _mm_prefetch(reinterpret_cast<const char*>(p + 2 * R * ldw), _MM_HINT_T1);
        L::load(p, v[r], nan[r]);
      }
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m)
#pragma GCC unroll 2
        for (int j = 0; j < L::kVecs; ++j) {
          const __m512 xv = _mm512_load_ps(x + m * ldx + iu + 16 * j);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) acc[u][r][m] = _mm512_fmadd_ps(v[r][j], xv, acc[u][r][m]);
        }
    }
  }
  for (; i < k; i += L::kElems) {
    __m512 v[R][L::kVecs];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const unsigned char* p = w + r * ldw + static_cast<size_t>(i) * L::kBytes;
      if (i + L::kElems <= k)
        L::load(p, v[r], nan[r]);
      else
        L::load_tail(p, k - i, v[r], nan[r]);
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 2
      for (int j = 0; j < L::kVecs; ++j) {
        const __m512 xv = _mm512_load_ps(x + m * ldx + i + 16 * j);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[0][r][m] = _mm512_fmadd_ps(v[r][j], xv, acc[0][r][m]);
      }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
      for (int u = 1; u < U; ++u) acc[0][r][m] = _mm512_add_ps(acc[0][r][m], acc[u][r][m]);
  if constexpr (R == 4) {
    // Four consecutive outputs of each row of y at once.
    const __m128 nan4 = _mm_castsi128_ps(
        _mm_set_epi32(-has_nan(nan[3]), -has_nan(nan[2]), -has_nan(nan[1]), -has_nan(nan[0])));
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      __m128 s = hsum4(acc[0][0][m], acc[0][1][m], acc[0][2][m], acc[0][3][m]);
      if (L::kNan) s = _mm_blendv_ps(s, _mm_set1_ps(NAN), nan4);
      _mm_storeu_ps(y + m * ldy, s);
    }
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        float s = hsum(acc[0][r][m]);
        if (L::kNan && has_nan(nan[r])) s = NAN;
        y[m * ldy + r] = s;
      }
  }
}

// Rows [n0, n1), R at a time while they last.  R x M x U accumulators stay
// within 16 registers; e4m3 chunks are 32 bytes, so two per step keep the
// prefetch at one per 64 bytes.
template <class L, int M>
MOERT_AVX512 void row_range(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n0,
                            int64_t n1, float* y, int64_t ldy) {
  constexpr int R = M <= 4 ? 4 : (M <= 5 ? 3 : 2);
  constexpr int U = L::kBytes == 1 && M <= 2 ? 2 : 1;
  const size_t ldw = static_cast<size_t>(w.stride) * L::kBytes;
  int64_t n = n0;
  for (; n + R <= n1; n += R) rows<L, R, M, U>(w.row_bytes(n), ldw, w.cols, x, ldx, y + n, ldy);
  for (; n < n1; ++n) rows<L, 1, M, U>(w.row_bytes(n), ldw, w.cols, x, ldx, y + n, ldy);
}

template <class L>
MOERT_AVX512 void row_range_m(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m,
                              int64_t n0, int64_t n1, float* y, int64_t ldy) {
  with_rows(m, [&](auto rows) { row_range<L, decltype(rows)::value>(w, x, ldx, n0, n1, y, ldy); });
}

// x scaled by block row `nb`'s scales and 2^8 (undoing the e4m3-as-f16 factor).
MOERT_AVX512 void scale_x_e4m3(const WeightMatrix& w, int64_t nb, const float* xp, int64_t m,
                               float* out) {
  const int64_t k = w.cols, ldx = gemv_x_stride(k);
  const float* s = w.scale + nb * w.scale_cols();
  for (int64_t r = 0; r < m; ++r) {
    const float* src = xp + r * ldx;
    float* dst = out + r * ldx;
    for (int64_t kb = 0; kb * w.block_cols < k; ++kb) {
      const float f = s[kb] * 256.0f;
      const int64_t end = std::min(k, (kb + 1) * w.block_cols);
      for (int64_t i = kb * w.block_cols; i < end; ++i) dst[i] = src[i] * f;
    }
    for (int64_t i = k; i < ldx; ++i) dst[i] = 0.0f;
  }
}

// R rows of a packed W from row n against M rows of prepared x, group by
// group (each group's scales read once per row), a chunk at a time.
template <ops::WeightFormat F, int R, int M>
MOERT_AVX512 void packed_rows(const WeightMatrix& w, int64_t n, const float* x, int64_t ldx,
                              float* y, int64_t ldy) {
  constexpr int64_t kChunkBytes = packed_chunk_bytes(F);
  const int64_t k = w.cols;
  const size_t ldw = static_cast<size_t>(w.stride);
  const int64_t row_bytes = w.stride;
  __m512 acc[R][M];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
  const unsigned char* base = w.row_bytes(n);
  RowGroups groups[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) groups[r] = RowGroups(w, n + r);
  for (int64_t g0 = 0, g = 0; g0 < k; g0 += w.block_cols, ++g) {
    __m512 scale[R], zero_scale[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float s, zs;
      groups[r].get(g, s, zs);
      scale[r] = _mm512_set1_ps(s);
      zero_scale[r] = _mm512_set1_ps(zs);
    }
    const int64_t g1 = std::min(k, g0 + w.block_cols);
    for (int64_t i = g0; i < g1; i += 32) {
      const int64_t at = F == ops::WeightFormat::int8 ? i : i / 2;
      const int64_t bytes = std::min<int64_t>(kChunkBytes, row_bytes - at);
      __m512 v[R][2];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const unsigned char* p = base + r * ldw + at;
        if constexpr (kPrefetch)
          if (kChunkBytes == 32 || (i / 32) % 4 == 0)
            _mm_prefetch(reinterpret_cast<const char*>(p + 2 * R * ldw), _MM_HINT_T1);
        decode_chunk<F>(p, bytes, scale[r], zero_scale[r], v[r]);
      }
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m)
#pragma GCC unroll 2
        for (int j = 0; j < 2; ++j) {
          const __m512 xv = _mm512_load_ps(x + m * ldx + i + 16 * j);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) acc[r][m] = _mm512_fmadd_ps(v[r][j], xv, acc[r][m]);
        }
    }
  }
  if constexpr (R == 4) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
      _mm_storeu_ps(y + m * ldy, hsum4(acc[0][m], acc[1][m], acc[2][m], acc[3][m]));
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) y[m * ldy + r] = hsum(acc[r][m]);
  }
}

template <ops::WeightFormat F, int M>
MOERT_AVX512 void packed_range(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n0,
                               int64_t n1, float* y, int64_t ldy) {
  constexpr int R = M <= 4 ? 4 : (M <= 5 ? 3 : 2);
  int64_t n = n0;
  for (; n + R <= n1; n += R) packed_rows<F, R, M>(w, n, x, ldx, y + n, ldy);
  for (; n < n1; ++n) packed_rows<F, 1, M>(w, n, x, ldx, y + n, ldy);
}

template <ops::WeightFormat F>
MOERT_AVX512 void packed_range_m(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m,
                                 int64_t n0, int64_t n1, float* y, int64_t ldy) {
  with_rows(m,
            [&](auto rows) { packed_range<F, decltype(rows)::value>(w, x, ldx, n0, n1, y, ldy); });
}

// A packed W whose groups are not whole chunks: each row dequantised into
// `tmp` (column order; x is then prepared in column order too) and dotted
// as an f32 row.
MOERT_AVX512 void packed_rows_by_row(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m,
                                     int64_t n0, int64_t n1, float* y, int64_t ldy, float* tmp) {
  const int64_t k = w.cols;
  for (int64_t i = k; i < ldx; ++i) tmp[i] = 0.0f;
  WeightMatrix row = dense_matrix(MOERT_DTYPE_F32, tmp, 1, k);
  for (int64_t n = n0; n < n1; ++n) {
    packed_row_to_f32(w, n, 0, k, tmp);
    row_range_m<LoadF32>(row, x, ldx, m, 0, 1, y + n, ldy);
  }
}

}  // namespace

MOERT_AVX512 void gemv_prepare_x_avx512(const WeightMatrix& w, const float* x, int64_t ldx,
                                        int64_t m, float* xp) {
  const int64_t k = w.cols, ld = gemv_x_stride(k);
  for (int64_t r = 0; r < m; ++r) {
    const float* src = x + r * ldx;
    float* dst = xp + r * ld;
    if (w.dtype == MOERT_DTYPE_BF16 || (ops::is_nibble_format(w.format) && packed_chunks(w))) {
      // Each 32-chunk de-interleaved: even elements, then odd ones.
      for (int64_t c = 0; c < ld; c += 32)
        for (int64_t j = 0; j < 16; ++j) {
          dst[c + j] = c + 2 * j < k ? src[c + 2 * j] : 0.0f;
          dst[c + 16 + j] = c + 2 * j + 1 < k ? src[c + 2 * j + 1] : 0.0f;
        }
    } else {
      std::memcpy(dst, src, static_cast<size_t>(k) * sizeof(float));
      for (int64_t i = k; i < ld; ++i) dst[i] = 0.0f;
    }
  }
}

MOERT_AVX512 void gemv_rows_avx512(const WeightMatrix& w, const float* xp, int64_t m, int64_t n0,
                                   int64_t n1, float* y, int64_t ldy, float* tmp) {
  const int64_t ldx = gemv_x_stride(w.cols);
  if (w.packed()) {
    if (!packed_chunks(w)) return packed_rows_by_row(w, xp, ldx, m, n0, n1, y, ldy, tmp);
    switch (w.format) {
      case ops::WeightFormat::int8:
        return packed_range_m<ops::WeightFormat::int8>(w, xp, ldx, m, n0, n1, y, ldy);
      case ops::WeightFormat::int4:
        return packed_range_m<ops::WeightFormat::int4>(w, xp, ldx, m, n0, n1, y, ldy);
      default:
        return packed_range_m<ops::WeightFormat::mxfp4>(w, xp, ldx, m, n0, n1, y, ldy);
    }
  }
  switch (w.dtype) {
    case MOERT_DTYPE_F32:
      return row_range_m<LoadF32>(w, xp, ldx, m, n0, n1, y, ldy);
    case MOERT_DTYPE_BF16:
      return row_range_m<LoadBf16>(w, xp, ldx, m, n0, n1, y, ldy);
    case MOERT_DTYPE_F16:
      return row_range_m<LoadF16>(w, xp, ldx, m, n0, n1, y, ldy);
    case MOERT_DTYPE_F8_E4M3:
      // One block row of W at a time, against x scaled for it.
      for (int64_t n = n0; n < n1;) {
        const int64_t nb = n / w.block_rows, end = std::min(n1, (nb + 1) * w.block_rows);
        scale_x_e4m3(w, nb, xp, m, tmp);
        row_range_m<LoadE4m3>(w, tmp, ldx, m, n, end, y, ldy);
        n = end;
      }
      return;
    default:
      return;
  }
}

}  // namespace moert::cpu::gemm::detail
