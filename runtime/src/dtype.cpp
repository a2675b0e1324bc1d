#include "moert/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "moert/error.h"

namespace moert {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::f16:
    case DType::bf16:
      return 2;
    case DType::f8_e4m3:
    case DType::i8:
    case DType::u8:
    case DType::boolean:
      return 1;
    case DType::i64:
      return 8;
  }
  throw Error("unknown dtype code " + std::to_string(static_cast<int>(t)));
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
    case DType::f8_e4m3:
      return "f8_e4m3";
    case DType::i8:
      return "i8";
    case DType::u8:
      return "u8";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::boolean:
      return "bool";
  }
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType t : kAllDTypes)
    if (dtype_name(t) == name) return t;
  return std::nullopt;
}

bool dtype_is_float(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f8_e4m3;
}
bool dtype_is_integer(DType t) { return !dtype_is_float(t); }

namespace {

// A binary floating-point format narrower than f32.
struct NarrowFormat {
  int mantissa_bits;  // stored fraction bits
  int exponent_bias;  // min normal exponent is 1 - bias
  int exponent_bits;
  bool saturate;  // e4m3fn: no infinity, clamp to the largest finite
  double max_finite;
  uint32_t quiet_nan;  // canonical NaN pattern without the sign
};

constexpr NarrowFormat kF16{10, 15, 5, false, 65504.0, 0x7E00};
constexpr NarrowFormat kBF16{7, 127, 8, false, 3.3895313892515355e38, 0x7FC0};
constexpr NarrowFormat kE4M3{3, 7, 4, true, 448.0, 0x7F};

// Rounds v to the format (nearest, ties to even) and returns its bit pattern.
// Works in double: every f32 value, and every value a reference kernel
// computes, is exact there, and scaling by powers of two is exact, so
// std::nearbyint (ties-to-even in the default rounding mode) does the one and
// only rounding.
uint32_t encode(double v, const NarrowFormat& f) {
  const int total_bits = 1 + f.exponent_bits + f.mantissa_bits;
  const uint32_t sign = std::signbit(v) ? (1u << (total_bits - 1)) : 0u;
  if (std::isnan(v)) return sign | f.quiet_nan;
  const uint32_t inf = ((1u << f.exponent_bits) - 1) << f.mantissa_bits;
  const uint32_t max_pattern = f.saturate ? 0x7E : inf - 1;
  double a = std::fabs(v);
  if (std::isinf(a)) return sign | (f.saturate ? max_pattern : inf);
  if (a == 0.0) return sign;
  const int min_normal_exp = 1 - f.exponent_bias;
  int e;
  std::frexp(a, &e);  // a = m * 2^e with m in [0.5, 1): floor(log2 a) = e - 1
  int unit_exp = std::max(e - 1, min_normal_exp) - f.mantissa_bits;
  double r = std::ldexp(std::nearbyint(std::ldexp(a, -unit_exp)), unit_exp);
  if (r > f.max_finite) return sign | (f.saturate ? max_pattern : inf);
  if (r < std::ldexp(1.0, min_normal_exp))  // subnormal, or zero
    return sign | static_cast<uint32_t>(std::ldexp(r, f.mantissa_bits - min_normal_exp));
  int re;
  double m = std::frexp(r, &re);
  uint32_t exp_field = static_cast<uint32_t>(re - 1 + f.exponent_bias);
  uint32_t man =
      static_cast<uint32_t>(std::ldexp(m, f.mantissa_bits + 1)) - (1u << f.mantissa_bits);
  return sign | (exp_field << f.mantissa_bits) | man;
}

double decode(uint32_t bits, const NarrowFormat& f) {
  const int total_bits = 1 + f.exponent_bits + f.mantissa_bits;
  const bool negative = (bits >> (total_bits - 1)) & 1u;
  const uint32_t exp_max = (1u << f.exponent_bits) - 1;
  uint32_t exp = (bits >> f.mantissa_bits) & exp_max;
  uint32_t man = bits & ((1u << f.mantissa_bits) - 1);
  double mag;
  if (f.saturate) {
    if (exp == exp_max && man == (1u << f.mantissa_bits) - 1)
      return std::numeric_limits<double>::quiet_NaN();
  } else if (exp == exp_max) {
    mag = man ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    return negative ? -mag : mag;
  }
  if (exp == 0)
    mag = std::ldexp(static_cast<double>(man), 1 - f.exponent_bias - f.mantissa_bits);
  else
    mag = std::ldexp(static_cast<double>((1u << f.mantissa_bits) | man),
                     static_cast<int>(exp) - f.exponent_bias - f.mantissa_bits);
  return negative ? -mag : mag;
}

}  // namespace

uint16_t f32_to_f16(float v) { return static_cast<uint16_t>(encode(v, kF16)); }
float f16_to_f32(uint16_t bits) { return static_cast<float>(decode(bits, kF16)); }
uint16_t f32_to_bf16(float v) { return static_cast<uint16_t>(encode(v, kBF16)); }
float bf16_to_f32(uint16_t bits) { return static_cast<float>(decode(bits, kBF16)); }
uint8_t f32_to_e4m3(float v) { return static_cast<uint8_t>(encode(v, kE4M3)); }
float e4m3_to_f32(uint8_t bits) { return static_cast<float>(decode(bits, kE4M3)); }

double load_element(DType t, const void* data, size_t i) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(data)[i];
    case DType::f16:
      return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::bf16:
      return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::f8_e4m3:
      return e4m3_to_f32(static_cast<const uint8_t*>(data)[i]);
    case DType::i8:
      return static_cast<const int8_t*>(data)[i];
    case DType::u8:
      return static_cast<const uint8_t*>(data)[i];
    case DType::i32:
      return static_cast<const int32_t*>(data)[i];
    case DType::i64:
      return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    case DType::boolean:
      return static_cast<const uint8_t*>(data)[i] ? 1.0 : 0.0;
  }
  throw Error("load_element: unknown dtype");
}

namespace {
// double -> float rounds to nearest even; beyond float's range the cast would
// be undefined, so overflow is made explicit (it rounds to infinity exactly
// where IEEE rounding would).
float to_f32(double v) {
  constexpr double kMax = std::numeric_limits<float>::max();
  // Half an ulp above the largest float: values from here on round to inf.
  const double limit = kMax + std::ldexp(1.0, 127 - 24);
  if (v >= limit) return std::numeric_limits<float>::infinity();
  if (v <= -limit) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(v);
}

template <typename I>
I saturate_int(double v) {
  if (std::isnan(v)) return 0;
  double lo = static_cast<double>(std::numeric_limits<I>::min());
  double hi = static_cast<double>(std::numeric_limits<I>::max());
  if (v <= lo) return std::numeric_limits<I>::min();
  if (v >= hi) return std::numeric_limits<I>::max();
  return static_cast<I>(v);  // truncates toward zero
}
}  // namespace

void store_element(DType t, void* data, size_t i, double v) {
  switch (t) {
    // Narrow floats round once, directly from the double (no double rounding).
    case DType::f32:
      static_cast<float*>(data)[i] = to_f32(v);
      return;
    case DType::f16:
      static_cast<uint16_t*>(data)[i] = static_cast<uint16_t>(encode(v, kF16));
      return;
    case DType::bf16:
      static_cast<uint16_t*>(data)[i] = static_cast<uint16_t>(encode(v, kBF16));
      return;
    case DType::f8_e4m3:
      static_cast<uint8_t*>(data)[i] = static_cast<uint8_t>(encode(v, kE4M3));
      return;
    case DType::i8:
      static_cast<int8_t*>(data)[i] = saturate_int<int8_t>(v);
      return;
    case DType::u8:
      static_cast<uint8_t*>(data)[i] = saturate_int<uint8_t>(v);
      return;
    case DType::i32:
      static_cast<int32_t*>(data)[i] = saturate_int<int32_t>(v);
      return;
    case DType::i64:
      static_cast<int64_t*>(data)[i] = saturate_int<int64_t>(v);
      return;
    case DType::boolean:
      static_cast<uint8_t*>(data)[i] = (v != 0.0 && !std::isnan(v)) ? 1 : 0;
      return;
  }
  throw Error("store_element: unknown dtype");
}

}  // namespace moert
