#include "convert.h"

#include <array>
#include <limits>

namespace moert::cpu {

const float* e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = e4m3_to_f32(static_cast<uint8_t>(i));
    return t;
  }();
  return table.data();
}

uint8_t f32_to_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  const float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;  // saturate (e4m3fn has no infinity)
  // Nearest of the 127 non-negative finite codes, ties to the even code.
  const float* t = e4m3_table();
  int lo = 0, hi = 0x7e;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (t[mid] <= a)
      lo = mid;
    else
      hi = mid;
  }
  const float dlo = a - t[lo], dhi = t[hi] - a;
  int code = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
  return static_cast<uint8_t>(sign | code);
}

void to_f32(moert_dtype t, const void* src, int64_t offset, int64_t n, float* dst) {
  switch (t) {
    case MOERT_DTYPE_F32:
      std::memcpy(dst, static_cast<const float*>(src) + offset, static_cast<size_t>(n) * 4);
      return;
    case MOERT_DTYPE_BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case MOERT_DTYPE_F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case MOERT_DTYPE_F8_E4M3: {
      const uint8_t* s = static_cast<const uint8_t*>(src) + offset;
      const float* table = e4m3_table();
      for (int64_t i = 0; i < n; ++i) dst[i] = table[s[i]];
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) dst[i] = std::numeric_limits<float>::quiet_NaN();
  }
}

void from_f32(const float* src, int64_t n, moert_dtype t, void* dst, int64_t offset) {
  switch (t) {
    case MOERT_DTYPE_F32:
      std::memcpy(static_cast<float*>(dst) + offset, src, static_cast<size_t>(n) * 4);
      return;
    case MOERT_DTYPE_BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case MOERT_DTYPE_F16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) store_f32(t, dst, offset + i, src[i]);
  }
}

}  // namespace moert::cpu
