// Conversions into bf16 (to_bf16.h): AVX-512 loops where the processor has
// them (isa.h), convert.h's scalar conversions otherwise; both round the
// same way, so the result does not depend on the path.
#include "to_bf16.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "convert.h"
#include "isa.h"
#include "packed.h"
#include "packed_avx512.h"
#include "simd.h"

namespace moert::cpu::gemm {
namespace {

// f32 -> bf16 bits, round to nearest even, NaN made quiet (as f32_to_bf16).
MOERT_AVX512 inline __m256i round_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan,
                            _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

MOERT_AVX512 void f32_rows_to_bf16_avx512(const float* x, int64_t m, int64_t k, int64_t ldx,
                                          uint16_t* dst, int64_t ldd) {
  for (int64_t r = 0; r < m; ++r) {
    const float* s = x + r * ldx;
    uint16_t* d = dst + r * ldd;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), round_bf16(_mm512_loadu_ps(s + i)));
    if (i < k) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (k - i)) - 1);
      _mm256_mask_storeu_epi16(d + i, mask, round_bf16(_mm512_maskz_loadu_ps(mask, s + i)));
    }
  }
}

// 16 weights of row `row` from column i (n < 16 of them when short) as f32,
// times `scale` (the e4m3 block scale; 1 otherwise).
MOERT_AVX512 inline __m512 load16(moert_dtype t, const unsigned char* row, int64_t i, int64_t n,
                                  float scale) {
  const __mmask16 mask = static_cast<__mmask16>(n >= 16 ? 0xffff : (1u << n) - 1);
  switch (t) {
    case MOERT_DTYPE_F32:
      return _mm512_maskz_loadu_ps(mask, row + i * 4);
    case MOERT_DTYPE_BF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row + i * 2)), 16));
    case MOERT_DTYPE_F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, row + i * 2));
    default: {
      // e4m3 as an f16 of the same bits (the value times 2^-8; see
      // gemv_avx512.cpp), NaN codes restored afterwards.
      const __m128i b = _mm_maskz_loadu_epi8(mask, row + i);
      const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7),
                                         _mm256_set1_epi16(static_cast<short>(0xbf80)));
      __m512 v = _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(scale * 256.0f));
      const __mmask16 nan =
          _mm_cmpeq_epi8_mask(_mm_and_si128(b, _mm_set1_epi8(0x7f)), _mm_set1_epi8(0x7f));
      if (nan) v = _mm512_mask_mov_ps(v, nan, _mm512_set1_ps(NAN));
      return v;
    }
  }
}

// Row n of a packed W, columns [0, K), dequantised into f32 `out` in
// column order: 32-column chunks decoded in registers where the groups are
// whole chunks (the 4-bit formats' even/odd halves interleaved back), the
// scalar dequantisation otherwise.
template <ops::WeightFormat F>
MOERT_AVX512 void packed_row_avx512(const WeightMatrix& w, int64_t n, float* out) {
  const int64_t k = w.cols;
  if (!packed_chunks(w)) return packed_row_to_f32(w, n, 0, k, out);
  const unsigned char* row = w.row_bytes(n);
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const RowGroups groups(w, n);
  for (int64_t g0 = 0, gi = 0; g0 < k; g0 += w.block_cols, ++gi) {
    float s, zs;
    groups.get(gi, s, zs);
    const __m512 scale = _mm512_set1_ps(s), zero_scale = _mm512_set1_ps(zs);
    const int64_t g1 = std::min(k, g0 + w.block_cols);
    for (int64_t i = g0; i < g1; i += 32) {
      const int64_t at = F == ops::WeightFormat::int8 ? i : i / 2;
      __m512 v[2];
      decode_chunk<F>(row + at, std::min<int64_t>(packed_chunk_bytes(F), w.stride - at), scale,
                      zero_scale, v);
      if constexpr (F != ops::WeightFormat::int8) {
        const __m512 a = _mm512_permutex2var_ps(v[0], lo_idx, v[1]);
        v[1] = _mm512_permutex2var_ps(v[0], hi_idx, v[1]);
        v[0] = a;
      }
      const int64_t len = std::min<int64_t>(32, k - i);
      if (len == 32) {
        _mm512_storeu_ps(out + i, v[0]);
        _mm512_storeu_ps(out + i + 16, v[1]);
      } else {
        const uint32_t mask = static_cast<uint32_t>((uint64_t{1} << len) - 1);
        _mm512_mask_storeu_ps(out + i, static_cast<__mmask16>(mask & 0xffff), v[0]);
        _mm512_mask_storeu_ps(out + i + 16, static_cast<__mmask16>(mask >> 16), v[1]);
      }
    }
  }
}

MOERT_AVX512 void packed_row_any_avx512(const WeightMatrix& w, int64_t n, float* out) {
  switch (w.format) {
    case ops::WeightFormat::int8:
      return packed_row_avx512<ops::WeightFormat::int8>(w, n, out);
    case ops::WeightFormat::int4:
      return packed_row_avx512<ops::WeightFormat::int4>(w, n, out);
    default:
      return packed_row_avx512<ops::WeightFormat::mxfp4>(w, n, out);
  }
}

MOERT_AVX512 void weight_rows_to_bf16_avx512(const WeightMatrix& w, int64_t n0, int64_t n1,
                                             uint16_t* dst, int64_t ldd) {
  if (w.packed()) {
    // Dequantised to f32 in place, then rounded to bf16 (the row's f32 is
    // twice the bytes of its bf16: a row of f32 scratch per call).
    std::vector<float> buf(static_cast<size_t>(w.cols));
    for (int64_t n = n0; n < n1; ++n) {
      packed_row_any_avx512(w, n, buf.data());
      f32_rows_to_bf16_avx512(buf.data(), 1, w.cols, w.cols, dst + (n - n0) * ldd, ldd);
    }
    return;
  }
  const int64_t k = w.cols;
  for (int64_t n = n0; n < n1; ++n) {
    const unsigned char* row = w.row_bytes(n);
    uint16_t* d = dst + (n - n0) * ldd;
    const float* scales = w.scaled() ? w.scale_row(n) : nullptr;
    int64_t i = 0;
    while (i < k) {
      // A run of columns sharing one scale (the whole row when unscaled).
      const int64_t end = scales ? std::min(k, (i / w.block_cols + 1) * w.block_cols) : k;
      const float scale = scales ? scales[i / w.block_cols] : 1.0f;
      for (; i < end; i += 16) {
        const int64_t len = std::min<int64_t>(16, end - i);
        const __m256i v = round_bf16(load16(w.dtype, row, i, len, scale));
        if (len == 16)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), v);
        else
          _mm256_mask_storeu_epi16(d + i, static_cast<__mmask16>((1u << len) - 1), v);
      }
      i = end;
    }
  }
}

MOERT_AVX512 void weight_rows_to_f32_avx512(const WeightMatrix& w, int64_t n0, int64_t n1,
                                            float* dst, int64_t ldd) {
  if (w.packed()) {
    for (int64_t n = n0; n < n1; ++n) packed_row_any_avx512(w, n, dst + (n - n0) * ldd);
    return;
  }
  const int64_t k = w.cols;
  for (int64_t n = n0; n < n1; ++n) {
    const unsigned char* row = w.row_bytes(n);
    float* d = dst + (n - n0) * ldd;
    const float* scales = w.scaled() ? w.scale_row(n) : nullptr;
    int64_t i = 0;
    while (i < k) {
      const int64_t end = scales ? std::min(k, (i / w.block_cols + 1) * w.block_cols) : k;
      const float scale = scales ? scales[i / w.block_cols] : 1.0f;
      for (; i < end; i += 16) {
        const int64_t len = std::min<int64_t>(16, end - i);
        const __m512 v = load16(w.dtype, row, i, len, scale);
        _mm512_mask_storeu_ps(d + i, static_cast<__mmask16>(len == 16 ? 0xffff : (1u << len) - 1),
                              v);
      }
      i = end;
    }
  }
}

}  // namespace

void f32_rows_to_bf16(const float* x, int64_t m, int64_t k, int64_t ldx, uint16_t* dst,
                      int64_t ldd) {
  if (use_avx512()) return f32_rows_to_bf16_avx512(x, m, k, ldx, dst, ldd);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < k; ++i) dst[r * ldd + i] = f32_to_bf16(x[r * ldx + i]);
}

void weight_rows_to_bf16(const WeightMatrix& w, int64_t n0, int64_t n1, uint16_t* dst,
                         int64_t ldd) {
  if (use_avx512()) return weight_rows_to_bf16_avx512(w, n0, n1, dst, ldd);
  if (w.packed()) {
    std::vector<float> buf(static_cast<size_t>(w.cols));
    for (int64_t n = n0; n < n1; ++n) {
      packed_row_to_f32(w, n, 0, w.cols, buf.data());
      for (int64_t i = 0; i < w.cols; ++i) dst[(n - n0) * ldd + i] = f32_to_bf16(buf[i]);
    }
    return;
  }
  const float* table = e4m3_table();
  for (int64_t n = n0; n < n1; ++n) {
    const unsigned char* row = w.row_bytes(n);
    uint16_t* d = dst + (n - n0) * ldd;
    if (w.scaled()) {
      const float* s = w.scale_row(n);
      for (int64_t i = 0; i < w.cols; ++i) d[i] = f32_to_bf16(table[row[i]] * s[i / w.block_cols]);
    } else {
      for (int64_t i = 0; i < w.cols; ++i) d[i] = f32_to_bf16(load_f32(w.dtype, row, i));
    }
  }
}

void weight_rows_to_f32(const WeightMatrix& w, int64_t n0, int64_t n1, float* dst, int64_t ldd) {
  if (use_avx512()) return weight_rows_to_f32_avx512(w, n0, n1, dst, ldd);
  if (w.packed()) {
    for (int64_t n = n0; n < n1; ++n) packed_row_to_f32(w, n, 0, w.cols, dst + (n - n0) * ldd);
    return;
  }
  const float* table = e4m3_table();
  for (int64_t n = n0; n < n1; ++n) {
    const unsigned char* row = w.row_bytes(n);
    float* d = dst + (n - n0) * ldd;
    if (w.scaled()) {
      const float* s = w.scale_row(n);
      for (int64_t i = 0; i < w.cols; ++i) d[i] = table[row[i]] * s[i / w.block_cols];
    } else {
      for (int64_t i = 0; i < w.cols; ++i) d[i] = load_f32(w.dtype, row, i);
    }
  }
}

}  // namespace moert::cpu::gemm
