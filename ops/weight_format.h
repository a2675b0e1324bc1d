// The packed weight formats of linear and moe (their attribute `quant`):
// how a stored weight and its scale tensor give the matrix W [rows, cols]
// the op multiplies by.  One definition for both sides of the plugin ABI:
// the reference kernels and inference (ops/linear.cpp, ops/moe.cpp) and the
// in-tree plugins.  Header-only, standard library only.
//
// With [b0, b1] = the op's block_size and R = ceil(rows / b0), C = ceil(cols /
// b1) (a stacked weight [E, ...] has a leading E on both tensors):
//
//   none   weight f32/bf16/f16 [rows, cols] (no scale), or f8_e4m3 with an
//          f32 scale [R, C]: W = e4m3(q) * scale[r / b0, c / b1].
//   int8   weight i8 [rows, cols], scale f16 [R, C]:
//          W = q * scale[r / b0, c / b1]  (Q8_0 with b = [1, 32]).
//   int4   weight u8 [rows, ceil(cols / 2)]: column c of row r is the low
//          nibble of byte c / 2 when c is even, the high nibble when odd; q
//          in [0, 15].  scale f16 [R, C] (symmetric, zero point 8) or f16
//          [R, C, 2] holding (scale, zero) pairs with zero in [0, 15]:
//          W = (q - zero) * scale  (GPTQ and AWQ, stored row-major by the
//          loader; RTN quantize-on-load writes the symmetric form).
//   mxfp4  weight u8 [rows, ceil(cols / 2)], nibbles as int4 but each an
//          OCP e2m1 value (sign, 2 exponent bits with bias 1, 1 mantissa
//          bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives); scale u8
//          [R, C] of e8m0 exponents: W = e2m1(q) * 2^(scale - 127) (255 is
//          NaN).  block_size must be [1, 32], the OCP MX block.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace moert::ops {

enum class WeightFormat { none, int8, int4, mxfp4 };

inline const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::int8:
      return "int8";
    case WeightFormat::int4:
      return "int4";
    case WeightFormat::mxfp4:
      return "mxfp4";
    default:
      return "none";
  }
}

// The format named `name` ("none", "int8", "int4", "mxfp4"); false if unknown.
inline bool weight_format_from(std::string_view name, WeightFormat* out) {
  for (WeightFormat f :
       {WeightFormat::none, WeightFormat::int8, WeightFormat::int4, WeightFormat::mxfp4})
    if (name == weight_format_name(f)) {
      *out = f;
      return true;
    }
  return false;
}

// Two weights per byte.
inline bool is_nibble_format(WeightFormat f) {
  return f == WeightFormat::int4 || f == WeightFormat::mxfp4;
}

// Stored columns (elements of the weight tensor's last dim) for `cols`.
inline int64_t stored_cols(WeightFormat f, int64_t cols) {
  return is_nibble_format(f) ? (cols + 1) / 2 : cols;
}

// The OCP MX block.
inline constexpr int64_t kMxBlock = 32;

// Nibble c of a row of packed bytes.
inline unsigned nibble(const uint8_t* row, int64_t c) {
  return (row[c >> 1] >> ((c & 1) * 4)) & 15u;
}

inline float e2m1_value(unsigned q) {
  static const float table[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  return table[q & 15u];
}

inline float e8m0_value(uint8_t e) {
  if (e == 255) return std::nanf("");
  return std::ldexp(1.0f, static_cast<int>(e) - 127);
}

// IEEE binary16 bits to float (exact).
inline float half_value(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float v;
  if (exp == 0)
    v = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31)
    v = man ? std::nanf("") : INFINITY;
  else
    v = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

// The scale (and zero point) of the group holding element (r, c) of one
// matrix, read from its scale tensor (`scale` at the matrix's first scale):
// `pairs` when an int4 scale holds (scale, zero) pairs.
struct GroupScale {
  float scale = 1.0f;
  float zero = 0.0f;
};

inline GroupScale group_scale(WeightFormat f, const void* scale, int64_t r, int64_t c, int64_t cols,
                              int64_t b0, int64_t b1, bool pairs) {
  const int64_t scols = (cols + b1 - 1) / b1;
  const int64_t g = (r / b0) * scols + c / b1;
  GroupScale s;
  switch (f) {
    case WeightFormat::int8:
      s.scale = half_value(static_cast<const uint16_t*>(scale)[g]);
      break;
    case WeightFormat::int4:
      if (pairs) {
        s.scale = half_value(static_cast<const uint16_t*>(scale)[2 * g]);
        s.zero = half_value(static_cast<const uint16_t*>(scale)[2 * g + 1]);
      } else {
        s.scale = half_value(static_cast<const uint16_t*>(scale)[g]);
        s.zero = 8.0f;
      }
      break;
    case WeightFormat::mxfp4:
      s.scale = e8m0_value(static_cast<const uint8_t*>(scale)[g]);
      break;
    default:
      s.scale = static_cast<const float*>(scale)[g];
      break;
  }
  return s;
}

// W[r, c] of a packed matrix (int8, int4 or mxfp4) whose stored rows start at
// `data` and whose scales start at `scale`, as a double (exact).
inline double packed_value(WeightFormat f, const void* data, const void* scale, int64_t r,
                           int64_t c, int64_t cols, int64_t b0, int64_t b1, bool pairs) {
  const GroupScale s = group_scale(f, scale, r, c, cols, b0, b1, pairs);
  const int64_t row_bytes = stored_cols(f, cols);
  const uint8_t* row = static_cast<const uint8_t*>(data) + r * row_bytes;
  switch (f) {
    case WeightFormat::int8:
      return static_cast<double>(reinterpret_cast<const int8_t*>(row)[c]) * s.scale;
    case WeightFormat::int4:
      return (static_cast<double>(nibble(row, c)) - s.zero) * s.scale;
    case WeightFormat::mxfp4:
      return static_cast<double>(e2m1_value(nibble(row, c))) * s.scale;
    default:
      return 0.0;
  }
}

}  // namespace moert::ops
