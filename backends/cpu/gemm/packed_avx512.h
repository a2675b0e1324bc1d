// AVX-512 decoding of packed weights (packed.h): one chunk of 32 columns of
// a row, all in one group, widened to 32 exact f32 values in two vectors.
//   int4   16 bytes: the low nibbles (the even columns) in v[0], the high
//          ones (odd columns) in v[1]: the order of the GEMV's prepared x,
//          which de-interleaves each 32-chunk as it does for bf16.
//          (code - zero) * scale as one fmsub of code * scale and
//          zero * scale: both products are exact, so is the result.
//   mxfp4  16 bytes, the same order; each code looked up in a 16-entry
//          table of e2m1 values (vpermps) and multiplied by 2^(e - 127).
//   int8   32 bytes, in column order: v[0] columns 0-15, v[1] 16-31.
// `bytes` < the chunk's size reads only that many (a row's last chunk); the
// rest decode as code 0, which the zero-padded x multiplies by 0.
#pragma once

#include <cstdint>

#include "packed.h"
#include "simd.h"
#include "weight.h"
#include "weight_format.h"

namespace moert::cpu::gemm {

// Stored bytes of one 32-column chunk.
inline constexpr int64_t packed_chunk_bytes(ops::WeightFormat f) {
  return f == ops::WeightFormat::int8 ? 32 : 16;
}

template <ops::WeightFormat F>
MOERT_AVX512 inline void decode_chunk(const unsigned char* p, int64_t bytes, __m512 scale,
                                      __m512 zero_scale, __m512* v) {
  if constexpr (F == ops::WeightFormat::int8) {
    const __m256i raw = bytes >= 32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                    : _mm256_maskz_loadu_epi8(
                                          static_cast<__mmask32>((uint64_t{1} << bytes) - 1), p);
    v[0] =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(raw))), scale);
    v[1] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(raw, 1))),
                         scale);
  } else {
    const __m128i raw = bytes >= 16
                            ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                            : _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << bytes) - 1), p);
    const __m512i b = _mm512_cvtepu8_epi32(raw);
    const __m512i lo = _mm512_and_si512(b, _mm512_set1_epi32(15));
    const __m512i hi = _mm512_srli_epi32(b, 4);
    if constexpr (F == ops::WeightFormat::int4) {
      v[0] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(lo), scale, zero_scale);
      v[1] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(hi), scale, zero_scale);
    } else {
      const __m512 table = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f,
                                          -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f);
      v[0] = _mm512_mul_ps(_mm512_permutexvar_ps(lo, table), scale);
      v[1] = _mm512_mul_ps(_mm512_permutexvar_ps(hi, table), scale);
    }
  }
}

// The group scales of one row of W (its block row's), read group by group
// without divisions: scale and zero point of group g.
struct RowGroups {
  const unsigned char* at = nullptr;
  ops::WeightFormat format = ops::WeightFormat::none;
  bool zero_points = false;

  RowGroups() = default;
  RowGroups(const WeightMatrix& w, int64_t n) : format(w.format), zero_points(w.zero_points) {
    const size_t bytes = format == ops::WeightFormat::mxfp4 ? 1 : (zero_points ? 4 : 2);
    at = static_cast<const unsigned char*>(w.groups) +
         static_cast<size_t>((n / w.block_rows) * w.scale_cols()) * bytes;
  }
  // Sets scale and zero * scale of group g.
  MOERT_AVX512 void get(int64_t g, float& scale, float& zero_scale) const {
    if (format == ops::WeightFormat::mxfp4) {
      scale = e8m0_to_f32(at[g]);
      zero_scale = 0.0f;
      return;
    }
    const uint16_t* h = reinterpret_cast<const uint16_t*>(at);
    if (zero_points) {
      scale = _cvtsh_ss(h[2 * g]);
      zero_scale = _cvtsh_ss(h[2 * g + 1]) * scale;
    } else {
      scale = _cvtsh_ss(h[g]);
      zero_scale = format == ops::WeightFormat::int4 ? 8.0f * scale : 0.0f;
    }
  }
};

// The zero point of int4 group g of a RowGroups (8 when symmetric).
MOERT_AVX512 inline float zero_point(const RowGroups& rg, int64_t g) {
  if (!rg.zero_points) return 8.0f;
  return _cvtsh_ss(reinterpret_cast<const uint16_t*>(rg.at)[2 * g + 1]);
}

// Whether the AVX-512 chunk kernels serve this matrix: groups of whole
// chunks.
inline bool packed_chunks(const WeightMatrix& w) { return w.block_cols % 32 == 0; }

}  // namespace moert::cpu::gemm
