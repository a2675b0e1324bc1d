// Element types and exact conversions between them and float.
//
// Conversions to the narrow float types round to nearest, ties to even, and
// preserve NaN.  f16 and bf16 overflow to infinity as IEEE does; f8_e4m3
// (e4m3fn) has no infinity, so finite values beyond its largest magnitude (448)
// and infinities saturate to ±448 (the OCP "saturating" conversion).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "moert/backend_abi.h"

namespace moert {

enum class DType : uint8_t {
  f32 = MOERT_DTYPE_F32,
  f16 = MOERT_DTYPE_F16,
  bf16 = MOERT_DTYPE_BF16,
  f8_e4m3 = MOERT_DTYPE_F8_E4M3,
  i8 = MOERT_DTYPE_I8,
  u8 = MOERT_DTYPE_U8,
  i32 = MOERT_DTYPE_I32,
  i64 = MOERT_DTYPE_I64,
  boolean = MOERT_DTYPE_BOOL,
};

inline constexpr DType kAllDTypes[] = {DType::f32,     DType::f16, DType::bf16,
                                       DType::f8_e4m3, DType::i8,  DType::u8,
                                       DType::i32,     DType::i64, DType::boolean};

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);  // "f32", "bf16", "f8_e4m3", "bool" …
std::optional<DType> dtype_from_name(std::string_view name);
bool dtype_is_float(DType t);    // f32, f16, bf16, f8_e4m3
bool dtype_is_integer(DType t);  // i8, u8, i32, i64, bool

// Bit-level conversions.
uint16_t f32_to_f16(float v);
float f16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float v);
float bf16_to_f32(uint16_t bits);
uint8_t f32_to_e4m3(float v);
float e4m3_to_f32(uint8_t bits);

// Element i of a buffer of type t, widened to double (exact for every type
// except i64 values beyond 2^53, which round to nearest).
double load_element(DType t, const void* data, size_t i);
// Stores v, rounded/converted as described above (f32 overflows to ±inf;
// integers: truncation toward zero with saturation to the type's range; NaN
// stores 0).
void store_element(DType t, void* data, size_t i, double v);

}  // namespace moert
