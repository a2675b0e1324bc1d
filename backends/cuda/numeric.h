// Element conversions and index math shared by the device kernels and the
// host.  Every function here is plain C++ that nvcc compiles for both sides
// (MOERT_HD), so the unit test checks on the CPU exactly the arithmetic the
// kernels run: the storage formats against the runtime's own conversions,
// the fp8 block-scale indexing against the reference dequantisation (the
// packed formats' decoding is plain C++ too, checkable the same way against
// ops/weight_format.h).
//
// Rounding matches moert/dtype.h: nearest even, NaN kept, f16/bf16
// overflowing to infinity, e4m3fn saturating to +-448.  Float sources are
// exact in f32, so float-to-float conversions go through f32; integer
// sources go through double (cast), rounded once to the target.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "moert/backend_abi.h"

#if defined(__CUDACC__)
#define MOERT_HD __host__ __device__ __forceinline__
#else
#define MOERT_HD inline
#endif

namespace moert::cuda {

MOERT_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

MOERT_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

MOERT_HD uint64_t double_bits(double d) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
#endif
}

// Round to the nearest integer, ties to even (the default rounding mode).
MOERT_HD float round_even(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::rint(v);
#endif
}

MOERT_HD float bf16_to_f32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

MOERT_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

MOERT_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in f32
    const float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

MOERT_HD uint16_t f32_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  // 65520 is halfway between 65504 (the largest f16) and 65536: from there
  // on, and for infinity, the result is infinity.
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a >= 0x38800000u) {  // a normal f16 (>= 2^-14): rebias, round 13 bits away
    const uint32_t m = a & 0x7fffffu;
    uint32_t r = (((a >> 23) - 112u) << 10) | (m >> 13);
    const uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // Subnormal: a count of 2^-24 units (scaling by 2^24 is exact); a count of
  // 1024 is the smallest normal's pattern.
  const float units = bits_float(a) * 16777216.0f;
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(round_even(units)));
}

// e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; 0x7f/0xff are NaN.
MOERT_HD float e4m3_to_f32(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu, man = b & 7u;
  if (exp == 0xfu && man == 7u) return bits_float(sign | 0x7fc00000u);
  if (exp == 0) {  // man * 2^-9
    const float v = static_cast<float>(man) * 0.001953125f;
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 120u) << 23) | (man << 20));
}

MOERT_HD uint8_t f32_to_e4m3(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);  // NaN
  // 448 is the largest finite value; anything that would round past it
  // (infinity included) saturates.
  if (a >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);
  if (a >= 0x3c800000u) {  // normal (>= 2^-6): rebias, round 20 bits away
    const uint32_t m = a & 0x7fffffu;
    uint32_t r = (((a >> 23) - 120u) << 3) | (m >> 20);
    const uint32_t rest = m & 0xfffffu;
    if (rest > 0x80000u || (rest == 0x80000u && (r & 1u))) ++r;
    return static_cast<uint8_t>(sign | r);
  }
  const float units = bits_float(a) * 512.0f;  // subnormal: 2^-9 units
  return static_cast<uint8_t>(sign | static_cast<uint32_t>(round_even(units)));
}

// Element i of a float tensor of any float dtype, as f32 (exact).
MOERT_HD float load_float(moert_dtype t, const void* p, int64_t i) {
  switch (t) {
    case MOERT_DTYPE_F32:
      return static_cast<const float*>(p)[i];
    case MOERT_DTYPE_BF16:
      return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case MOERT_DTYPE_F16:
      return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case MOERT_DTYPE_F8_E4M3:
      return e4m3_to_f32(static_cast<const uint8_t*>(p)[i]);
    default:
      return 0.0f;
  }
}

// Stores v into element i of a float tensor, rounded once to its dtype.
MOERT_HD void store_float(moert_dtype t, void* p, int64_t i, float v) {
  switch (t) {
    case MOERT_DTYPE_F32:
      static_cast<float*>(p)[i] = v;
      break;
    case MOERT_DTYPE_BF16:
      static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
      break;
    case MOERT_DTYPE_F16:
      static_cast<uint16_t*>(p)[i] = f32_to_f16(v);
      break;
    case MOERT_DTYPE_F8_E4M3:
      static_cast<uint8_t*>(p)[i] = f32_to_e4m3(v);
      break;
    default:
      break;
  }
}

MOERT_HD bool is_float_dtype(moert_dtype t) {
  return t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_BF16 || t == MOERT_DTYPE_F16 ||
         t == MOERT_DTYPE_F8_E4M3;
}

// Element i of an integer (or bool) tensor as a double: exact, except i64
// beyond 2^53, rounded to nearest as the runtime reads it.
MOERT_HD double load_integer(moert_dtype t, const void* p, int64_t i) {
  switch (t) {
    case MOERT_DTYPE_I8:
      return static_cast<const int8_t*>(p)[i];
    case MOERT_DTYPE_U8:
      return static_cast<const uint8_t*>(p)[i];
    case MOERT_DTYPE_I32:
      return static_cast<const int32_t*>(p)[i];
    case MOERT_DTYPE_I64:
      return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case MOERT_DTYPE_BOOL:
      return static_cast<const uint8_t*>(p)[i] ? 1.0 : 0.0;
    default:
      return 0.0;
  }
}

// An integer-valued double rounded (nearest even) to a narrow float format
// with `man` stored mantissa bits and exponent bias `bias`, as its pattern
// without the sign.  Integers of magnitude >= 1 are normal numbers of every
// target, so rounding the double's mantissa and rebiasing is the whole job;
// beyond `max_code` the result is `overflow` (infinity, or e4m3's +-448).
MOERT_HD uint32_t narrow_integer(double v, int man, int bias, uint32_t max_code,
                                 uint32_t overflow) {
  const uint64_t a = double_bits(v) & ~(uint64_t{1} << 63);
  if (a == 0) return 0;
  const int shift = 52 - man;
  const uint64_t rounded = (a + ((uint64_t{1} << (shift - 1)) - 1) + ((a >> shift) & 1u)) >> shift;
  const uint64_t code = rounded - (static_cast<uint64_t>(1023 - bias) << man);
  return code > max_code ? overflow : static_cast<uint32_t>(code);
}

// Truncation toward zero with saturation; NaN gives 0.
MOERT_HD double saturate(double v, double lo, double hi) {
  if (v != v) return 0.0;
  return v <= lo ? lo : (v >= hi ? hi : v);
}

// Stores a double into element i of any dtype as the runtime's cast does.
// `from_integer`: v is an integer value (an integer source), so the narrow
// float formats round it from the double directly.
MOERT_HD void store_any(moert_dtype t, void* p, int64_t i, double v, bool from_integer) {
  const uint32_t sign = double_bits(v) >> 63 ? 1u : 0u;
  switch (t) {
    case MOERT_DTYPE_F32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      return;
    case MOERT_DTYPE_BF16:
      if (from_integer)
        static_cast<uint16_t*>(p)[i] =
            static_cast<uint16_t>((sign << 15) | narrow_integer(v, 7, 127, 0x7f7fu, 0x7f80u));
      else
        static_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(v));
      return;
    case MOERT_DTYPE_F16:
      if (from_integer)
        static_cast<uint16_t*>(p)[i] =
            static_cast<uint16_t>((sign << 15) | narrow_integer(v, 10, 15, 0x7bffu, 0x7c00u));
      else
        static_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(v));
      return;
    case MOERT_DTYPE_F8_E4M3:
      if (from_integer)
        static_cast<uint8_t*>(p)[i] =
            static_cast<uint8_t>((sign << 7) | narrow_integer(v, 3, 7, 0x7eu, 0x7eu));
      else
        static_cast<uint8_t*>(p)[i] = f32_to_e4m3(static_cast<float>(v));
      return;
    case MOERT_DTYPE_I8:
      static_cast<int8_t*>(p)[i] = static_cast<int8_t>(saturate(v, -128.0, 127.0));
      return;
    case MOERT_DTYPE_U8:
      static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(saturate(v, 0.0, 255.0));
      return;
    case MOERT_DTYPE_I32:
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(saturate(v, -2147483648.0, 2147483647.0));
      return;
    case MOERT_DTYPE_I64: {
      // 2^63 is not an i64; at or beyond it the result saturates explicitly.
      const double limit = 9223372036854775808.0;
      int64_t r;
      if (v != v)
        r = 0;
      else if (v >= limit)
        r = INT64_MAX;
      else if (v <= -limit)
        r = INT64_MIN;
      else
        r = static_cast<int64_t>(v);
      static_cast<int64_t*>(p)[i] = r;
      return;
    }
    case MOERT_DTYPE_BOOL:
      static_cast<uint8_t*>(p)[i] = (v != 0.0 && v == v) ? 1 : 0;
      return;
  }
}

// Element i of any tensor converted to `to` in element o of another, as the
// cast op defines it.
MOERT_HD void cast_element(moert_dtype from, const void* src, int64_t i, moert_dtype to, void* dst,
                           int64_t o) {
  if (is_float_dtype(from)) {
    const float v = load_float(from, src, i);
    if (is_float_dtype(to))
      store_float(to, dst, o, v);
    else
      store_any(to, dst, o, static_cast<double>(v), false);
  } else {
    store_any(to, dst, o, load_integer(from, src, i), true);
  }
}

// ---- fp8 block scales -------------------------------------------------------

// The index of the scale of element (r, c) of matrix `matrix` of a stacked
// [E, rows, cols] weight, in its [E, ceil(rows/b0), ceil(cols/b1)] scale
// (a 2-D weight is matrix 0).
MOERT_HD int64_t block_scale_index(int64_t matrix, int64_t r, int64_t c, int64_t rows, int64_t cols,
                                   int64_t b0, int64_t b1) {
  const int64_t srows = (rows + b0 - 1) / b0, scols = (cols + b1 - 1) / b1;
  return (matrix * srows + r / b0) * scols + c / b1;
}

// Element (r, c) of matrix `matrix` of a stacked weight, dequantised: an
// f8_e4m3 value times its block scale (`scale` non-null), else as stored.
MOERT_HD float weight_element(moert_dtype t, const void* w, const float* scale, int64_t matrix,
                              int64_t r, int64_t c, int64_t rows, int64_t cols, int64_t b0,
                              int64_t b1) {
  const float v = load_float(t, w, (matrix * rows + r) * cols + c);
  if (!scale) return v;
  return v * scale[block_scale_index(matrix, r, c, rows, cols, b0, b1)];
}

// Ceiling division for sizes.
MOERT_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- packed weights (ops/weight_format.h) -----------------------------------
//
// linear's and moe's attribute quant: int8 (i8 values, f16 scales), int4
// (u8 bytes of two columns, the even column in the low nibble; f16 scales
// with zero point 8, or f16 (scale, zero) pairs) and mxfp4 (nibbles as OCP
// e2m1 values, e8m0 exponent bytes as scales).  Every dequantised value
// below is exact in f32: a small integer or e2m1 value times an f16 scale
// or a power of two (the zero points are whole numbers in [0, 15]).

enum class Quant : int { none = 0, int8, int4, mxfp4 };

// Two columns per byte.
MOERT_HD bool is_nibble_quant(Quant q) { return q == Quant::int4 || q == Quant::mxfp4; }

// Bytes of one stored row of `cols` columns: ceil(cols / 2) for the 4-bit
// formats (the last byte's high nibble unused when cols is odd).
MOERT_HD int64_t packed_row_bytes(Quant q, int64_t cols) {
  return is_nibble_quant(q) ? (cols + 1) / 2 : cols;
}

// An e8m0 scale: 2^(e - 127); e = 0 is 2^-127 (an f32 subnormal), 255 NaN.
MOERT_HD float e8m0_to_f32(uint8_t e) {
  if (e == 255) return bits_float(0x7fc00000u);
  return bits_float(e ? static_cast<uint32_t>(e) << 23 : 0x00400000u);
}

// An e2m1 nibble (sign, 2 exponent bits with bias 1, 1 mantissa bit) as f32.
// Its three magnitude bits placed at bits 22..24 of an f32 (exponent field
// e1 e0, top mantissa bit m) make 2^(e - 127) (1 + m/2), or m 2^-127 when
// e = 0 (subnormal): the value times 2^-126 in every case, so one exact
// multiplication by 2^126 gives 0, 0.5, 1, 1.5, 2, 3, 4 or 6.
MOERT_HD float e2m1_to_f32(uint32_t q) {
  return bits_float(((q & 8u) << 28) | ((q & 7u) << 22)) * bits_float(0x7e800000u);
}

// Column c of a packed row (`row`: its first byte) whose group (scale index,
// as block_scale_index gives it) is g, dequantised.  `scale`: f16 scales,
// f16 (scale, zero) pairs (`zeros`, int4 only) or e8m0 bytes (mxfp4).
MOERT_HD float packed_value(Quant q, const uint8_t* row, const void* scale, bool zeros, int64_t g,
                            int64_t c) {
  if (q == Quant::int8)
    return static_cast<float>(static_cast<int8_t>(row[c])) *
           f16_to_f32(static_cast<const uint16_t*>(scale)[g]);
  const uint32_t n = (row[c >> 1] >> ((c & 1) * 4)) & 15u;
  if (q == Quant::mxfp4) return e2m1_to_f32(n) * e8m0_to_f32(static_cast<const uint8_t*>(scale)[g]);
  const uint16_t* s = static_cast<const uint16_t*>(scale);
  const float zero = zeros ? f16_to_f32(s[2 * g + 1]) : 8.0f;
  return (static_cast<float>(n) - zero) * f16_to_f32(zeros ? s[2 * g] : s[g]);
}

// Element (r, c) of matrix `matrix` of a stacked packed weight [E, rows,
// packed_row_bytes(cols)] with its scale [E, ceil(rows/b0), ceil(cols/b1)]
// (a trailing 2 with `zeros`), dequantised.
MOERT_HD float packed_element(Quant q, const void* w, const void* scale, bool zeros, int64_t matrix,
                              int64_t r, int64_t c, int64_t rows, int64_t cols, int64_t b0,
                              int64_t b1) {
  const uint8_t* row =
      static_cast<const uint8_t*>(w) + (matrix * rows + r) * packed_row_bytes(q, cols);
  return packed_value(q, row, scale, zeros, block_scale_index(matrix, r, c, rows, cols, b0, b1), c);
}

}  // namespace moert::cuda
