// Element conversions between the storage dtypes and f32, the dtype the CPU
// kernels compute in.  Rounding matches the runtime's (moert/dtype.h): round
// to nearest even, NaN kept, e4m3fn saturating to ±448.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernel.h"

namespace moert::cpu {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}

inline uint16_t f32_to_f16(float f) {
  _Float16 v = static_cast<_Float16>(f);
  uint16_t h;
  std::memcpy(&h, &v, 2);
  return h;
}

// e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; 0x7f/0xff are NaN.
inline float e4m3_to_f32(uint8_t b) {
  const uint32_t sign = (b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu, man = b & 7u;
  if (exp == 0xf && man == 7) return bits_to_f32(sign | 0x7fc00000u);
  if (exp == 0) return (sign ? -1.0f : 1.0f) * std::ldexp(static_cast<float>(man), -9);
  return bits_to_f32(sign | ((exp + 120u) << 23) | (man << 20));
}

// The 256 e4m3 values, for table lookups in hot loops.
const float* e4m3_table();

uint8_t f32_to_e4m3(float f);

// Element i of a float tensor of any float dtype, as f32.
inline float load_f32(moert_dtype t, const void* p, int64_t i) {
  switch (t) {
    case MOERT_DTYPE_F32:
      return static_cast<const float*>(p)[i];
    case MOERT_DTYPE_BF16:
      return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case MOERT_DTYPE_F16:
      return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case MOERT_DTYPE_F8_E4M3:
      return e4m3_table()[static_cast<const uint8_t*>(p)[i]];
    default:
      return NAN;
  }
}

inline void store_f32(moert_dtype t, void* p, int64_t i, float v) {
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

// n elements starting at element `offset` of `src` (any float dtype) into f32.
void to_f32(moert_dtype t, const void* src, int64_t offset, int64_t n, float* dst);
// n f32 values into `dst` (any float dtype) starting at element `offset`.
void from_f32(const float* src, int64_t n, moert_dtype t, void* dst, int64_t offset);

}  // namespace moert::cpu
