// AVX-512 building blocks of the vector library (vec.h) and of the kernels
// that inline them (attention tiles): 16 elements of
// any float dtype loaded as f32 (whole or under a tail mask), stored back
// with convert.h's rounding (bit-exact), and e^x.  Every function carries the AVX-512
// target attribute; callers must carry it too and run only when
// vec::use_avx512() holds.  Include it only where MOERT_CPU_X86 (vec.h) is 1.
#pragma once

// gcc 12 reports -Wuninitialized inside some AVX-512 intrinsics once inlined
// (the headers' `__m512 __Y = __Y;` idiom); silenced for these headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstdint>

#include "convert.h"
#include "vec/vec.h"

namespace moert::cpu::vec::avx512 {

// The first n lanes (n in 0..16).
MOERT_CPU_AVX512 inline __mmask16 tail_mask(int64_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xffffu : (1u << n) - 1u);
}

// e4m3fn bytes to f32: the magnitude bits shifted into an f16 (same layout
// with a wider exponent, bias 15 instead of 7) are the value times 2^-8,
// exactly, subnormals included; 0x7f / 0xff are NaN.
MOERT_CPU_AVX512 inline __m512 e4m3_to_ps(__m128i bytes) {
  const __m256i w = _mm256_cvtepu8_epi16(bytes);
  const __m256i mag = _mm256_and_si256(w, _mm256_set1_epi16(0x7f));
  const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x80)), 8);
  const __m256i h = _mm256_or_si256(_mm256_slli_epi16(mag, 7), sign);
  const __m512 f = _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
  const __mmask16 nan = _mm256_cmpeq_epi16_mask(mag, _mm256_set1_epi16(0x7f));
  return _mm512_mask_mov_ps(f, nan, _mm512_set1_ps(NAN));
}

MOERT_CPU_AVX512 inline __m512 bf16_to_ps(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// f32 to bf16 bits, round to nearest even, NaN kept quiet (as f32_to_bf16).
MOERT_CPU_AVX512 inline __m256i ps_to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i high = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

MOERT_CPU_AVX512 inline __m256i ps_to_f16(__m512 v) {
  return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// f32 to e4m3fn codes as f32_to_e4m3 rounds: to nearest, ties to the even
// code; from 2^-6 up by rounding the f32 mantissa to 3 bits (a carry moves
// to the exponent), below by rounding |x| * 2^9 to an integer (the
// subnormal codes are multiples of 2^-9); >= 448 saturates to 0x7e (sign
// kept), NaN gives 0x7f.
MOERT_CPU_AVX512 inline __m128i ps_to_e4m3(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i abs_bits = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __m512 a = _mm512_castsi512_ps(abs_bits);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(abs_bits, 20), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(abs_bits, _mm512_set1_epi32(0x7ffff)), odd), 20);
  const __m512i normal = _mm512_sub_epi32(rounded, _mm512_set1_epi32(120 << 3));
  const __m512i subnormal = _mm512_cvttps_epi32(_mm512_roundscale_ps(
      _mm512_mul_ps(a, _mm512_set1_ps(512.0f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  __m512i code = _mm512_mask_mov_epi32(
      normal, _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.015625f), _CMP_LT_OQ), subnormal);
  code = _mm512_mask_mov_epi32(code, _mm512_cmp_ps_mask(a, _mm512_set1_ps(448.0f), _CMP_GE_OQ),
                               _mm512_set1_epi32(0x7e));
  code = _mm512_or_si512(code,
                         _mm512_srli_epi32(_mm512_and_si512(u, _mm512_set1_epi32(INT32_MIN)), 24));
  code =
      _mm512_mask_mov_epi32(code, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7f));
  return _mm512_cvtepi32_epi8(code);
}

// 16 elements of `base` (dtype t) from element i on.
MOERT_CPU_AVX512 inline __m512 load(moert_dtype t, const void* base, int64_t i) {
  switch (t) {
    case MOERT_DTYPE_BF16:
      return bf16_to_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
    case MOERT_DTYPE_F16:
      return _mm512_cvtph_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
    case MOERT_DTYPE_F8_E4M3:
      return e4m3_to_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(base) + i)));
    default:
      return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  }
}

// The lanes of m of the same; the others 0 (never read from memory).
MOERT_CPU_AVX512 inline __m512 load_masked(moert_dtype t, const void* base, int64_t i,
                                           __mmask16 m) {
  switch (t) {
    case MOERT_DTYPE_BF16:
      return bf16_to_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i));
    case MOERT_DTYPE_F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i));
    case MOERT_DTYPE_F8_E4M3:
      return _mm512_maskz_mov_ps(
          m, e4m3_to_ps(_mm_maskz_loadu_epi8(m, static_cast<const uint8_t*>(base) + i)));
    default:
      return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
  }
}

// Stores the lanes of m of v into `base` (dtype t) from element i on.
MOERT_CPU_AVX512 inline void store_masked(moert_dtype t, void* base, int64_t i, __m512 v,
                                          __mmask16 m) {
  switch (t) {
    case MOERT_DTYPE_BF16:
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(base) + i, m, ps_to_bf16(v));
      return;
    case MOERT_DTYPE_F16:
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(base) + i, m, ps_to_f16(v));
      return;
    case MOERT_DTYPE_F8_E4M3:
      _mm_mask_storeu_epi8(static_cast<uint8_t*>(base) + i, m, ps_to_e4m3(v));
      return;
    default:
      _mm512_mask_storeu_ps(static_cast<float*>(base) + i, m, v);
  }
}

MOERT_CPU_AVX512 inline void store(moert_dtype t, void* base, int64_t i, __m512 v) {
  switch (t) {
    case MOERT_DTYPE_BF16:
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(base) + i),
                          ps_to_bf16(v));
      return;
    case MOERT_DTYPE_F16:
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(base) + i),
                          ps_to_f16(v));
      return;
    case MOERT_DTYPE_F8_E4M3:
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(base) + i), ps_to_e4m3(v));
      return;
    default:
      _mm512_storeu_ps(static_cast<float*>(base) + i, v);
  }
}

// e^x: x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2; e^r by its
// degree-7 Taylor polynomial (truncation ~5e-9 relative), times 2^n by
// scalef (which also underflows to 0 and overflows to inf correctly).
// -inf gives 0 (well, at most 2^-149); NaN stays NaN.
MOERT_CPU_AVX512 inline __m512 exp(__m512 x) {
  // max/min return their second operand when either is NaN: NaN passes.
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace moert::cpu::vec::avx512
