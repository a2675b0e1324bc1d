// Reading packed weight matrices (int8, int4, mxfp4; ops/weight_format.h):
// a group's scale and zero point, and rows dequantised to f32, exactly
// (every packed value times its f16 or power-of-two scale is an f32).  The
// portable paths use these as they are; the AVX-512 kernels read the scales
// through RowGroups (packed_avx512.h) and decode the codes themselves.
#pragma once

#include <cstdint>

#include "convert.h"
#include "weight.h"

namespace moert::cpu::gemm {

// 2^(e - 127), NaN for 255, built from the bits (e = 0 is the subnormal 2^-127).
inline float e8m0_to_f32(uint8_t e) {
  if (e == 255) return bits_to_f32(0x7fc00000u);
  if (e == 0) return bits_to_f32(0x00400000u);
  return bits_to_f32(static_cast<uint32_t>(e) << 23);
}

// W[n, c] = (code - zero) * scale for the group holding (n, c), where the
// code is the int8 value, the int4 nibble or the e2m1 value.
struct Group {
  float scale = 1.0f;
  float zero = 0.0f;
};

inline Group group_of(const WeightMatrix& w, int64_t n, int64_t c) {
  const int64_t g = (n / w.block_rows) * w.scale_cols() + c / w.block_cols;
  Group out;
  if (w.format == ops::WeightFormat::mxfp4) {
    out.scale = e8m0_to_f32(static_cast<const uint8_t*>(w.groups)[g]);
  } else if (w.zero_points) {
    const uint16_t* s = static_cast<const uint16_t*>(w.groups) + 2 * g;
    out.scale = f16_to_f32(s[0]);
    out.zero = f16_to_f32(s[1]);
  } else {
    out.scale = f16_to_f32(static_cast<const uint16_t*>(w.groups)[g]);
    out.zero = w.format == ops::WeightFormat::int4 ? 8.0f : 0.0f;
  }
  return out;
}

// out[c - c0] = W[n, c] for c in [c0, c1), in f32.
void packed_row_to_f32(const WeightMatrix& w, int64_t n, int64_t c0, int64_t c1, float* out);

}  // namespace moert::cpu::gemm
