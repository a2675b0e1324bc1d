// The packed GEMV with int8 activations (gemv_kernels.h), for int8, int4
// and mxfp4 weights whose groups are whole 32-column chunks, when the caller
// permits it (linear/moe attribute products = "int8", the default precision
// for packed weights with f32 activations) and the CPU has AVX512-VNNI.
// The exact kernel (gemv_avx512.cpp) widens every code to f32 and is
// compute-bound at one row; here a chunk of 32 codes meets 32 int8 values
// of x in one vpdpbusd, as llama.cpp forms Q4_0 and Q8_0 products.
//
// x is quantised once per pass, per block of 32 columns (the chunk): scale
// d = max |x| / 127, q = round(x / d), stored in the chunk order the codes
// are read in (the 4-bit formats: the 16 even columns, then the 16 odd
// ones), with d and d * sum(q) per block.  vpdpbusd multiplies unsigned
// bytes by signed ones, so each code is read as an unsigned u = code +
// offset and the offset's share is taken off with the block's sum of q:
//   int4   u = the nibble (0..15);         W = (u - z) s
//   int8   u = q_w + 128 (the sign bit flipped); W = (u - 128) s
//   mxfp4  u = 2 e2m1(code) + 12 (0..24, a table lookup); W = (u - 12) s / 2
// so, per chunk, sum_k W_k x_k ~ s' d (sum_k u_k q_k - off sum_k q_k) with
// s' the group's scale (halved for mxfp4).  Products and their sums are
// exact integers; the error is x's quantisation, at most d / 2 per element.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemv_kernels.h"
#include "isa.h"
#include "packed_avx512.h"

namespace moert::cpu::gemm::detail {
namespace {

// A prepared x row of ld floats: ld int8 codes (ld / 4 floats), then the
// blocks' scales d and d * sum(q) (ld / 32 floats each).
inline const int8_t* x_codes(const float* row) { return reinterpret_cast<const int8_t*>(row); }
inline int64_t scales_at(int64_t ld) { return ld / 4; }
inline int64_t sums_at(int64_t ld) { return ld / 4 + ld / 32; }

// The 32 unsigned codes of a chunk (see above), in x's order.
template <ops::WeightFormat F>
MOERT_AVX512_VNNI inline __m256i chunk_codes(const unsigned char* p, int64_t bytes) {
  if constexpr (F == ops::WeightFormat::int8) {
    const __m256i raw = bytes >= 32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                    : _mm256_maskz_loadu_epi8(
                                          static_cast<__mmask32>((uint64_t{1} << bytes) - 1), p);
    return _mm256_xor_si256(raw, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    const __m128i raw = bytes >= 16
                            ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                            : _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << bytes) - 1), p);
    const __m128i mask = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(raw, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    __m256i codes = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    if constexpr (F == ops::WeightFormat::mxfp4) {
      // 2 e2m1 + 12 for codes 0..15 (both 128-bit lanes hold the table).
      const __m256i table =
          _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0, 12, 13, 14,
                           15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
      codes = _mm256_shuffle_epi8(table, codes);
    }
    return codes;
  }
}

// Four chunks' dot products (8 int32 lanes each) summed within 128-bit
// halves: lane j of the low half and lane j of the high half of the result
// add up to the sum of v[j] (vphaddd twice).
MOERT_AVX512_VNNI inline __m256i sum4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  return _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
}

// Lane j: the sum of chunk j of two sum4 results (chunks 0-3, then 4-7).
MOERT_AVX512_VNNI inline __m256i sum8(__m256i q0, __m256i q1) {
  return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                          _mm256_permute2x128_si256(q0, q1, 0x31));
}

// Scales (times kScale) and offsets of 8 consecutive groups of 32 columns
// from group g of a row.
template <ops::WeightFormat F>
MOERT_AVX512_VNNI inline void scales8(const RowGroups& rg, int64_t g, __m256& scale,
                                      __m256& offset) {
  if constexpr (F == ops::WeightFormat::mxfp4) {
    const __m256i e =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(rg.at + g)));
    __m256i bits = _mm256_slli_epi32(e, 23);
    bits = _mm256_mask_mov_epi32(bits, _mm256_cmpeq_epi32_mask(e, _mm256_setzero_si256()),
                                 _mm256_set1_epi32(0x00400000));
    bits = _mm256_mask_mov_epi32(bits, _mm256_cmpeq_epi32_mask(e, _mm256_set1_epi32(255)),
                                 _mm256_set1_epi32(0x7fc00000));
    scale = _mm256_mul_ps(_mm256_castsi256_ps(bits), _mm256_set1_ps(0.5f));
    offset = _mm256_set1_ps(12.0f);
  } else {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(rg.at);
    if (F == ops::WeightFormat::int4 && rg.zero_points) {
      const __m512 pairs =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + 2 * g)));
      const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
      const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
      scale = _mm512_castps512_ps256(_mm512_permutexvar_ps(even, pairs));
      offset = _mm512_castps512_ps256(_mm512_permutexvar_ps(odd, pairs));
    } else {
      scale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + g)));
      offset = _mm256_set1_ps(F == ops::WeightFormat::int8 ? 128.0f : 8.0f);
    }
  }
}

// Groups of exactly one chunk (32 columns, the common case): 8 chunks at a
// time, their 8 integer dot products summed into one vector (lane j: chunk
// j) and scaled by 8 groups' scales times x's 8 block scales at once.
// Returns the first column it did not do.
template <ops::WeightFormat F, int R, int M>
MOERT_AVX512_VNNI int64_t int8_rows_g32(const WeightMatrix& w, int64_t n, const RowGroups* groups,
                                        const float* xp, int64_t ldx, __m256 (&acc)[R][M]) {
  constexpr int64_t kChunkBytes = packed_chunk_bytes(F);
  const int64_t k = w.cols;
  const size_t ldw = static_cast<size_t>(w.stride);
  const unsigned char* base = w.row_bytes(n);
  int64_t i = 0;
  for (; i + 256 <= k; i += 256) {
    const int64_t g = i / 32;
    __m256i halves[R][M][2];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256i dots[R][M][4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const int64_t c = i + 32 * (4 * h + j);
        const int64_t at = F == ops::WeightFormat::int8 ? c : c / 2;
        __m256i codes[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const unsigned char* p = base + r * ldw + at;
          if (kChunkBytes == 32 || j % 4 == 0)
            _mm_prefetch(reinterpret_cast<const char*>(p + 2 * R * ldw), _MM_HINT_T1);
          codes[r] = chunk_codes<F>(p, kChunkBytes);
        }
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) {
          const __m256i xq =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x_codes(xp + m * ldx) + c));
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r)
            dots[r][m][j] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes[r], xq);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
          halves[r][m][h] = sum4(dots[r][m][0], dots[r][m][1], dots[r][m][2], dots[r][m][3]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m256 scale, offset;
      scales8<F>(groups[r], g, scale, offset);
      const __m256 offset_scale = _mm256_mul_ps(offset, scale);
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const float* row = xp + m * ldx;
        const __m256 d = _mm256_loadu_ps(row + scales_at(ldx) + g);
        const __m256 dsum = _mm256_loadu_ps(row + sums_at(ldx) + g);
        const __m256 dot = _mm256_cvtepi32_ps(sum8(halves[r][m][0], halves[r][m][1]));
        acc[r][m] = _mm256_fmadd_ps(dot, _mm256_mul_ps(scale, d), acc[r][m]);
        acc[r][m] = _mm256_fnmadd_ps(offset_scale, dsum, acc[r][m]);
      }
    }
  }
  return i;
}

template <ops::WeightFormat F, int R, int M>
MOERT_AVX512_VNNI void int8_rows(const WeightMatrix& w, int64_t n, const float* xp, int64_t ldx,
                                 float* y, int64_t ldy) {
  constexpr int64_t kChunkBytes = packed_chunk_bytes(F);
  constexpr float kOffset = F == ops::WeightFormat::int8 ? 128.0f : 12.0f;  // int4: z
  constexpr float kScale = F == ops::WeightFormat::mxfp4 ? 0.5f : 1.0f;
  const int64_t k = w.cols;
  const size_t ldw = static_cast<size_t>(w.stride);
  const unsigned char* base = w.row_bytes(n);
  RowGroups groups[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) groups[r] = RowGroups(w, n + r);
  __m256 acc[R][M];
  float corr[R][M];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      acc[r][m] = _mm256_setzero_ps();
      corr[r][m] = 0.0f;
    }
  // Groups of one chunk: 8 at a time, then the rest chunk by chunk.
  const int64_t start =
      w.block_cols == 32 && M * R <= 4 ? int8_rows_g32<F, R, M>(w, n, groups, xp, ldx, acc) : 0;
  for (int64_t g0 = start, g = start / w.block_cols; g0 < k; g0 += w.block_cols, ++g) {
    float s[R], off[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float zs;
      groups[r].get(g, s[r], zs);
      off[r] = F == ops::WeightFormat::int4 ? zero_point(groups[r], g) : kOffset;
      s[r] *= kScale;
    }
    const int64_t g1 = std::min(k, g0 + w.block_cols);
    for (int64_t i = g0; i < g1; i += 32) {
      const int64_t at = F == ops::WeightFormat::int8 ? i : i / 2;
      const int64_t bytes = std::min<int64_t>(kChunkBytes, w.stride - at);
      __m256i codes[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const unsigned char* p = base + r * ldw + at;
        if (kChunkBytes == 32 || (i / 32) % 4 == 0)
          _mm_prefetch(reinterpret_cast<const char*>(p + 2 * R * ldw), _MM_HINT_T1);
        codes[r] = chunk_codes<F>(p, bytes);
      }
      const int64_t b = i / 32;
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const float* row = xp + m * ldx;
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x_codes(row) + i));
        const float d = row[scales_at(ldx) + b], dsum = row[sums_at(ldx) + b];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes[r], xq);
          acc[r][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s[r] * d), acc[r][m]);
          corr[r][m] += s[r] * off[r] * dsum;
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[r][m]), _mm256_extractf128_ps(acc[r][m], 1));
      v = _mm_add_ps(v, _mm_movehl_ps(v, v));
      v = _mm_add_ss(v, _mm_movehdup_ps(v));
      y[m * ldy + r] = _mm_cvtss_f32(v) - corr[r][m];
    }
}

template <ops::WeightFormat F, int M>
MOERT_AVX512_VNNI void int8_range(const WeightMatrix& w, const float* xp, int64_t ldx, int64_t n0,
                                  int64_t n1, float* y, int64_t ldy) {
  constexpr int R = M <= 2 ? 4 : (M <= 4 ? 2 : 1);
  int64_t n = n0;
  for (; n + R <= n1; n += R) int8_rows<F, R, M>(w, n, xp, ldx, y + n, ldy);
  for (; n < n1; ++n) int8_rows<F, 1, M>(w, n, xp, ldx, y + n, ldy);
}

template <ops::WeightFormat F>
MOERT_AVX512_VNNI void int8_range_m(const WeightMatrix& w, const float* xp, int64_t ldx, int64_t m,
                                    int64_t n0, int64_t n1, float* y, int64_t ldy) {
  with_rows(m,
            [&](auto rows) { int8_range<F, decltype(rows)::value>(w, xp, ldx, n0, n1, y, ldy); });
}

}  // namespace

bool gemv_int8_packed(const WeightMatrix& w) {
  return use_avx512_vnni() && w.packed() && packed_chunks(w);
}

void gemv_prepare_x_int8(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m, float* xp) {
  const int64_t k = w.cols, ld = gemv_x_stride(k);
  const bool nibbles = ops::is_nibble_format(w.format);
  for (int64_t r = 0; r < m; ++r) {
    const float* src = x + r * ldx;
    float* row = xp + r * ld;
    int8_t* codes = reinterpret_cast<int8_t*>(row);
    for (int64_t c = 0, b = 0; c < ld; c += 32, ++b) {
      float amax = 0.0f;
      for (int64_t j = c; j < std::min(k, c + 32); ++j) amax = std::max(amax, std::fabs(src[j]));
      const float d = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      for (int64_t j = 0; j < 32; ++j) {
        // Column of chunk position j: the 4-bit formats read the even
        // columns first, then the odd ones.
        const int64_t col = nibbles ? c + (j < 16 ? 2 * j : 2 * (j - 16) + 1) : c + j;
        const int32_t q = col < k ? static_cast<int32_t>(std::nearbyint(src[col] * inv)) : 0;
        codes[c + j] = static_cast<int8_t>(q);
        sum += q;
      }
      row[scales_at(ld) + b] = d;
      row[sums_at(ld) + b] = d * static_cast<float>(sum);
    }
  }
}

void gemv_rows_int8(const WeightMatrix& w, const float* xp, int64_t m, int64_t n0, int64_t n1,
                    float* y, int64_t ldy) {
  const int64_t ldx = gemv_x_stride(w.cols);
  switch (w.format) {
    case ops::WeightFormat::int8:
      return int8_range_m<ops::WeightFormat::int8>(w, xp, ldx, m, n0, n1, y, ldy);
    case ops::WeightFormat::int4:
      return int8_range_m<ops::WeightFormat::int4>(w, xp, ldx, m, n0, n1, y, ldy);
    default:
      return int8_range_m<ops::WeightFormat::mxfp4>(w, xp, ldx, m, n0, n1, y, ldy);
  }
}

}  // namespace moert::cpu::gemm::detail
