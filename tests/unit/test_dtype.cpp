// Element types: every bit pattern of the 8- and 16-bit float formats against
// a decoding formula written here from the format definitions, round-to-
// nearest-even checked at every midpoint between adjacent values, and the
// saturating/truncating integer stores.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "moert/dtype.h"

namespace {

using moert::DType;

// A binary float format as its definition states it.
struct Format {
  const char* name;
  int exponent_bits;
  int mantissa_bits;
  int bias;
  bool fn;                      // "finite": no infinities, only S.1111.111 is NaN (e4m3fn)
  uint32_t max_finite_pattern;  // largest positive finite value
  DType dtype;
};

constexpr Format kF16{"f16", 5, 10, 15, false, 0x7BFF, DType::f16};
constexpr Format kBF16{"bf16", 8, 7, 127, false, 0x7F7F, DType::bf16};
constexpr Format kE4M3{"e4m3", 4, 3, 7, true, 0x7E, DType::f8_e4m3};
const Format* const kFormats[] = {&kF16, &kBF16, &kE4M3};

uint32_t sign_bit(const Format& f) { return 1u << (f.exponent_bits + f.mantissa_bits); }
uint32_t pattern_count(const Format& f) { return sign_bit(f) << 1; }

// (-1)^s * 2^(e - bias) * 1.m for normals, (-1)^s * 2^(1 - bias) * 0.m for
// subnormals; all-ones exponent: infinity (m = 0) or NaN, except e4m3fn.
double expected_value(const Format& f, uint32_t bits) {
  const uint32_t exponent_mask = (1u << f.exponent_bits) - 1;
  const uint32_t mantissa_mask = (1u << f.mantissa_bits) - 1;
  const double sign = (bits & sign_bit(f)) ? -1.0 : 1.0;
  const uint32_t e = (bits >> f.mantissa_bits) & exponent_mask;
  const uint32_t m = bits & mantissa_mask;
  if (f.fn) {
    if (e == exponent_mask && m == mantissa_mask) return std::numeric_limits<double>::quiet_NaN();
  } else if (e == exponent_mask) {
    return m == 0 ? sign * std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  }
  const double fraction = static_cast<double>(m) / std::pow(2.0, f.mantissa_bits);
  if (e == 0) return sign * fraction * std::pow(2.0, 1 - f.bias);
  return sign * (1.0 + fraction) * std::pow(2.0, static_cast<int>(e) - f.bias);
}

float decode(const Format& f, uint32_t bits) {
  switch (f.dtype) {
    case DType::f16:
      return moert::f16_to_f32(static_cast<uint16_t>(bits));
    case DType::bf16:
      return moert::bf16_to_f32(static_cast<uint16_t>(bits));
    default:
      return moert::e4m3_to_f32(static_cast<uint8_t>(bits));
  }
}

uint32_t encode(const Format& f, float v) {
  switch (f.dtype) {
    case DType::f16:
      return moert::f32_to_f16(v);
    case DType::bf16:
      return moert::f32_to_bf16(v);
    default:
      return moert::f32_to_e4m3(v);
  }
}

// store_element to a one-element buffer of the format, returning the bits.
uint32_t store_bits(const Format& f, double v) {
  uint16_t storage = 0;
  moert::store_element(f.dtype, &storage, 0, v);
  return f.dtype == DType::f8_e4m3 ? *reinterpret_cast<uint8_t*>(&storage) : storage;
}

double load_bits(const Format& f, uint32_t bits) {
  if (f.dtype == DType::f8_e4m3) {
    uint8_t b = static_cast<uint8_t>(bits);
    return moert::load_element(f.dtype, &b, 0);
  }
  uint16_t b = static_cast<uint16_t>(bits);
  return moert::load_element(f.dtype, &b, 0);
}

bool is_nan_pattern(const Format& f, uint32_t bits) {
  return std::isnan(expected_value(f, bits & (pattern_count(f) - 1)));
}

float bits_to_float(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

std::string hex(uint32_t bits) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%X", bits);
  return buf;
}

// ---------------------------------------------------------------------------

TEST(DTypeFormula, AnchorsOfTheFormulaItself) {
  // The formula is what everything else is checked against: pin it to values
  // from the format specifications.
  EXPECT_EQ(expected_value(kF16, 0x3C00), 1.0);
  EXPECT_EQ(expected_value(kF16, 0xC000), -2.0);
  EXPECT_EQ(expected_value(kF16, 0x7BFF), 65504.0);
  EXPECT_EQ(expected_value(kF16, 0x0400), std::ldexp(1.0, -14));
  EXPECT_EQ(expected_value(kF16, 0x0001), std::ldexp(1.0, -24));
  EXPECT_EQ(expected_value(kF16, 0x3555), 0.333251953125);
  EXPECT_TRUE(std::isinf(expected_value(kF16, 0x7C00)));
  EXPECT_TRUE(std::isnan(expected_value(kF16, 0x7E00)));
  EXPECT_EQ(expected_value(kBF16, 0x3F80), 1.0);
  EXPECT_EQ(expected_value(kBF16, 0x7F7F), 3.3895313892515355e38);
  EXPECT_EQ(expected_value(kBF16, 0x0001), std::ldexp(1.0, -133));
  EXPECT_EQ(expected_value(kBF16, 0x4049), 3.140625);
  EXPECT_TRUE(std::isinf(expected_value(kBF16, 0xFF80)));
  EXPECT_EQ(expected_value(kE4M3, 0x38), 1.0);
  EXPECT_EQ(expected_value(kE4M3, 0x7E), 448.0);
  EXPECT_EQ(expected_value(kE4M3, 0x78), 256.0);  // all-ones exponent is finite
  EXPECT_EQ(expected_value(kE4M3, 0xFE), -448.0);
  EXPECT_EQ(expected_value(kE4M3, 0x08), std::ldexp(1.0, -6));
  EXPECT_EQ(expected_value(kE4M3, 0x01), std::ldexp(1.0, -9));
  EXPECT_TRUE(std::isnan(expected_value(kE4M3, 0x7F)));
  EXPECT_TRUE(std::isnan(expected_value(kE4M3, 0xFF)));
}

TEST(DTypeNarrow, EveryBitPatternDecodesToTheFormula) {
  for (const Format* f : kFormats) {
    SCOPED_TRACE(f->name);
    int nans = 0, infs = 0;
    for (uint32_t bits = 0; bits < pattern_count(*f); ++bits) {
      const double want = expected_value(*f, bits);
      const float got = decode(*f, bits);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(got)) << hex(bits) << " decodes to " << got;
        ++nans;
        continue;
      }
      ASSERT_EQ(static_cast<double>(got), want) << hex(bits);
      ASSERT_EQ(std::signbit(got), (bits & sign_bit(*f)) != 0) << hex(bits);  // -0 stays -0
      ASSERT_EQ(load_bits(*f, bits), want) << hex(bits);
      infs += std::isinf(got);
    }
    if (f->fn) {
      EXPECT_EQ(nans, 2);  // S.1111.111 only
      EXPECT_EQ(infs, 0);
    } else {
      EXPECT_EQ(nans, 2 * ((1 << f->mantissa_bits) - 1));
      EXPECT_EQ(infs, 2);
    }
  }
}

TEST(DTypeNarrow, EveryBitPatternReencodesToItself) {
  for (const Format* f : kFormats) {
    SCOPED_TRACE(f->name);
    for (uint32_t bits = 0; bits < pattern_count(*f); ++bits) {
      const float v = decode(*f, bits);
      const uint32_t back = encode(*f, v);
      const uint32_t stored = store_bits(*f, load_bits(*f, bits));
      if (is_nan_pattern(*f, bits)) {
        ASSERT_TRUE(is_nan_pattern(*f, back)) << hex(bits) << " -> " << hex(back);
        ASSERT_TRUE(is_nan_pattern(*f, stored)) << hex(bits) << " -> " << hex(stored);
      } else {
        ASSERT_EQ(back, bits) << hex(bits);
        ASSERT_EQ(stored, bits) << hex(bits);
      }
    }
  }
}

// For every pair of adjacent finite values lo < hi (by magnitude, both signs):
// the exact midpoint rounds to the one with an even mantissa, and the f32
// values on either side of it round to the nearer one.  Through store_element
// the same holds for doubles closer to the midpoint than any f32, which a
// conversion that goes through f32 first (double rounding) gets wrong.
TEST(DTypeNarrow, RoundsToNearestEvenAtEveryMidpoint) {
  for (const Format* f : kFormats) {
    SCOPED_TRACE(f->name);
    for (uint32_t sign : {0u, sign_bit(*f)}) {
      const float outward = sign ? -INFINITY : INFINITY;
      for (uint32_t k = 0; k < f->max_finite_pattern; ++k) {
        const uint32_t lo_bits = sign | k, hi_bits = sign | (k + 1);
        const double lo = expected_value(*f, lo_bits), hi = expected_value(*f, hi_bits);
        const double mid = (lo + hi) / 2;
        const float mid_f = static_cast<float>(mid);
        ASSERT_EQ(static_cast<double>(mid_f), mid) << "midpoint not exact in f32: " << hex(k);
        const uint32_t even_bits = (k % 2 == 0) ? lo_bits : hi_bits;

        ASSERT_EQ(encode(*f, mid_f), even_bits) << "midpoint of " << hex(lo_bits);
        ASSERT_EQ(encode(*f, std::nextafter(mid_f, outward)), hi_bits)
            << "just beyond the midpoint of " << hex(lo_bits);
        ASSERT_EQ(encode(*f, std::nextafter(mid_f, 0.0f)), lo_bits)
            << "just short of the midpoint of " << hex(lo_bits);

        const double tiny = std::fabs(mid) * std::ldexp(1.0, -40);
        const double away = sign ? -tiny : tiny;
        ASSERT_EQ(store_bits(*f, mid), even_bits) << hex(lo_bits);
        ASSERT_EQ(store_bits(*f, mid + away), hi_bits) << "double beyond " << hex(lo_bits);
        ASSERT_EQ(store_bits(*f, mid - away), lo_bits) << "double short of " << hex(lo_bits);
      }
    }
  }
}

TEST(DTypeNarrow, F16OverflowsToInfinityFrom65520) {
  EXPECT_EQ(moert::f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(moert::f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(moert::f32_to_f16(65520.0f), 0x7C00);  // tie; 65504 is odd
  EXPECT_EQ(moert::f32_to_f16(-65520.0f), 0xFC00);
  EXPECT_EQ(moert::f32_to_f16(1e6f), 0x7C00);
  EXPECT_EQ(moert::f32_to_f16(std::numeric_limits<float>::max()), 0x7C00);
  EXPECT_EQ(moert::f32_to_f16(INFINITY), 0x7C00);
  EXPECT_EQ(moert::f32_to_f16(-INFINITY), 0xFC00);
  EXPECT_EQ(store_bits(kF16, 1e300), 0x7C00u);
  EXPECT_EQ(store_bits(kF16, -1e300), 0xFC00u);
  EXPECT_EQ(store_bits(kF16, 65519.999999), 0x7BFFu);
}

TEST(DTypeNarrow, BF16OverflowsToInfinityAboveTheLastMidpoint) {
  const float mid = bits_to_float(0x7F7F8000);  // between 0x7F7F and 2^128
  EXPECT_EQ(moert::f32_to_bf16(bits_to_float(0x7F7F0000)), 0x7F7F);
  EXPECT_EQ(moert::f32_to_bf16(std::nextafter(mid, 0.0f)), 0x7F7F);
  EXPECT_EQ(moert::f32_to_bf16(mid), 0x7F80);
  EXPECT_EQ(moert::f32_to_bf16(-mid), 0xFF80);
  EXPECT_EQ(moert::f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(moert::f32_to_bf16(INFINITY), 0x7F80);
  EXPECT_EQ(moert::f32_to_bf16(-INFINITY), 0xFF80);
  EXPECT_EQ(store_bits(kBF16, 1e300), 0x7F80u);
  EXPECT_EQ(store_bits(kBF16, -1e300), 0xFF80u);
}

TEST(DTypeNarrow, E4M3SaturatesTo448) {
  for (float v : {448.0f, 449.0f, 464.0f, 479.0f, 480.0f, 500.0f, 1e4f, 1e30f,
                  std::numeric_limits<float>::max(), INFINITY}) {
    SCOPED_TRACE(v);
    EXPECT_EQ(moert::f32_to_e4m3(v), 0x7E);
    EXPECT_EQ(moert::f32_to_e4m3(-v), 0xFE);
  }
  EXPECT_EQ(store_bits(kE4M3, 1e300), 0x7Eu);
  EXPECT_EQ(store_bits(kE4M3, -std::numeric_limits<double>::infinity()), 0xFEu);
  EXPECT_EQ(moert::e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(moert::f32_to_e4m3(432.0f), 0x7E);  // tie between 416 (odd) and 448
  EXPECT_EQ(moert::f32_to_e4m3(431.0f), 0x7D);
}

TEST(DTypeNarrow, NegativeZeroAndUnderflow) {
  EXPECT_EQ(moert::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(moert::f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(moert::f32_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(moert::f32_to_f16(0.0f), 0x0000);
  EXPECT_TRUE(std::signbit(moert::f16_to_f32(0x8000)));
  EXPECT_TRUE(std::signbit(moert::bf16_to_f32(0x8000)));
  EXPECT_TRUE(std::signbit(moert::e4m3_to_f32(0x80)));
  // Too small for the format: a zero of the same sign.
  EXPECT_EQ(moert::f32_to_f16(1e-10f), 0x0000);
  EXPECT_EQ(moert::f32_to_f16(-1e-10f), 0x8000);
  EXPECT_EQ(moert::f32_to_bf16(-1e-45f), 0x8000);  // an f32 subnormal
  EXPECT_EQ(moert::f32_to_e4m3(-1e-4f), 0x80);
  EXPECT_EQ(store_bits(kF16, -0.0), 0x8000u);
  EXPECT_EQ(store_bits(kE4M3, -1e-300), 0x80u);
}

TEST(DTypeNarrow, NaNStaysNaN) {
  const uint32_t nans[] = {0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,
                           0x7FBFFFFF, 0x7F800100, 0x7FFFFFFF, 0x7F80FFFF};
  for (uint32_t bits : nans) {
    const float nan = bits_to_float(bits);
    ASSERT_TRUE(std::isnan(nan));
    SCOPED_TRACE(hex(bits));
    for (const Format* f : kFormats) {
      SCOPED_TRACE(f->name);
      // Truncating 0x7F800001 to bf16 would give infinity.
      EXPECT_TRUE(is_nan_pattern(*f, encode(*f, nan))) << hex(encode(*f, nan));
      EXPECT_TRUE(is_nan_pattern(*f, store_bits(*f, static_cast<double>(nan))));
      EXPECT_TRUE(std::isnan(decode(*f, encode(*f, nan))));
    }
  }
}

// ---------------------------------------------------------------------------

template <typename T>
T stored(DType t, double v) {
  T out{};
  moert::store_element(t, &out, 0, v);
  return out;
}

TEST(DTypeInteger, StoresTruncateTowardZeroAndSaturate) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();

  EXPECT_EQ(stored<int8_t>(DType::i8, 1.9), 1);
  EXPECT_EQ(stored<int8_t>(DType::i8, -1.9), -1);
  EXPECT_EQ(stored<int8_t>(DType::i8, -0.5), 0);
  EXPECT_EQ(stored<int8_t>(DType::i8, 127.9), 127);
  EXPECT_EQ(stored<int8_t>(DType::i8, 128.0), 127);
  EXPECT_EQ(stored<int8_t>(DType::i8, 1e10), 127);
  EXPECT_EQ(stored<int8_t>(DType::i8, -128.9), -128);
  EXPECT_EQ(stored<int8_t>(DType::i8, -129.0), -128);
  EXPECT_EQ(stored<int8_t>(DType::i8, inf), 127);
  EXPECT_EQ(stored<int8_t>(DType::i8, -inf), -128);
  EXPECT_EQ(stored<int8_t>(DType::i8, nan), 0);

  EXPECT_EQ(stored<uint8_t>(DType::u8, 255.9), 255);
  EXPECT_EQ(stored<uint8_t>(DType::u8, 256.0), 255);
  EXPECT_EQ(stored<uint8_t>(DType::u8, 200.5), 200);
  EXPECT_EQ(stored<uint8_t>(DType::u8, -0.9), 0);
  EXPECT_EQ(stored<uint8_t>(DType::u8, -1.0), 0);
  EXPECT_EQ(stored<uint8_t>(DType::u8, -1e10), 0);
  EXPECT_EQ(stored<uint8_t>(DType::u8, inf), 255);
  EXPECT_EQ(stored<uint8_t>(DType::u8, nan), 0);

  const int32_t i32_max = std::numeric_limits<int32_t>::max();
  const int32_t i32_min = std::numeric_limits<int32_t>::min();
  EXPECT_EQ(stored<int32_t>(DType::i32, 2147483646.7), 2147483646);
  EXPECT_EQ(stored<int32_t>(DType::i32, 2147483647.9), i32_max);
  EXPECT_EQ(stored<int32_t>(DType::i32, 2147483648.0), i32_max);
  EXPECT_EQ(stored<int32_t>(DType::i32, 1e20), i32_max);
  EXPECT_EQ(stored<int32_t>(DType::i32, -2147483647.5), -2147483647);
  EXPECT_EQ(stored<int32_t>(DType::i32, -2147483648.9), i32_min);
  EXPECT_EQ(stored<int32_t>(DType::i32, -2147483649.0), i32_min);
  EXPECT_EQ(stored<int32_t>(DType::i32, -inf), i32_min);
  EXPECT_EQ(stored<int32_t>(DType::i32, nan), 0);

  const int64_t i64_max = std::numeric_limits<int64_t>::max();
  const int64_t i64_min = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(stored<int64_t>(DType::i64, 123456789012.7), 123456789012);
  EXPECT_EQ(stored<int64_t>(DType::i64, -123456789012.7), -123456789012);
  EXPECT_EQ(stored<int64_t>(DType::i64, 9223372036854774784.0), 9223372036854774784);
  EXPECT_EQ(stored<int64_t>(DType::i64, 9223372036854775808.0), i64_max);  // 2^63
  EXPECT_EQ(stored<int64_t>(DType::i64, 1e19), i64_max);
  EXPECT_EQ(stored<int64_t>(DType::i64, -9223372036854775808.0), i64_min);
  EXPECT_EQ(stored<int64_t>(DType::i64, -1e19), i64_min);
  EXPECT_EQ(stored<int64_t>(DType::i64, inf), i64_max);
  EXPECT_EQ(stored<int64_t>(DType::i64, nan), 0);

  EXPECT_EQ(stored<uint8_t>(DType::boolean, 0.0), 0);
  EXPECT_EQ(stored<uint8_t>(DType::boolean, -0.0), 0);
  EXPECT_EQ(stored<uint8_t>(DType::boolean, 0.5), 1);
  EXPECT_EQ(stored<uint8_t>(DType::boolean, -3.0), 1);
  EXPECT_EQ(stored<uint8_t>(DType::boolean, 1e-300), 1);
  EXPECT_EQ(stored<uint8_t>(DType::boolean, inf), 1);
  EXPECT_EQ(stored<uint8_t>(DType::boolean, nan), 0);
  const uint8_t raw_true = 7;
  EXPECT_EQ(moert::load_element(DType::boolean, &raw_true, 0), 1.0);
}

TEST(DTypeElements, StoreThenLoadRoundTrips) {
  // Values each type represents exactly come back unchanged, at any index.
  struct Case {
    DType t;
    std::vector<double> values;
  };
  const std::vector<Case> cases = {
      {DType::f32, {0.0, -0.0, 1.0, -2.5, 0.1f, 3.4028234663852886e38, 1e-45f, -INFINITY}},
      {DType::f16, {0.0, 1.0, -65504.0, 0.333251953125, std::ldexp(1.0, -24), INFINITY}},
      {DType::bf16, {0.0, 3.140625, -3.3895313892515355e38, std::ldexp(1.0, -133)}},
      {DType::f8_e4m3, {0.0, 448.0, -448.0, 0.875, std::ldexp(1.0, -9), 256.0}},
      {DType::i8, {0.0, -128.0, 127.0, -1.0, 42.0}},
      {DType::u8, {0.0, 255.0, 128.0, 1.0}},
      {DType::i32, {-2147483648.0, 2147483647.0, -1.0, 123456789.0}},
      {DType::i64, {-9223372036854775808.0, 9007199254740992.0, -9007199254740992.0, -1.0}},
      {DType::boolean, {0.0, 1.0, 1.0, 0.0}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(moert::dtype_name(c.t)));
    std::vector<unsigned char> buffer(c.values.size() * moert::dtype_size(c.t), 0xA5);
    for (size_t i = 0; i < c.values.size(); ++i)
      moert::store_element(c.t, buffer.data(), i, c.values[i]);
    for (size_t i = 0; i < c.values.size(); ++i) {
      const double back = moert::load_element(c.t, buffer.data(), i);
      EXPECT_EQ(back, c.values[i]) << "index " << i;
      EXPECT_EQ(std::signbit(back), std::signbit(c.values[i])) << "index " << i;
    }
  }
}

// ---------------------------------------------------------------------------

TEST(DTypeNames, EveryDTypeHasANameThatParsesBack) {
  struct Expected {
    DType t;
    moert_dtype abi;
    const char* name;
    size_t size;
    bool is_float;
  };
  const Expected expected[] = {
      {DType::f32, MOERT_DTYPE_F32, "f32", 4, true},
      {DType::f16, MOERT_DTYPE_F16, "f16", 2, true},
      {DType::bf16, MOERT_DTYPE_BF16, "bf16", 2, true},
      {DType::f8_e4m3, MOERT_DTYPE_F8_E4M3, "f8_e4m3", 1, true},
      {DType::i8, MOERT_DTYPE_I8, "i8", 1, false},
      {DType::u8, MOERT_DTYPE_U8, "u8", 1, false},
      {DType::i32, MOERT_DTYPE_I32, "i32", 4, false},
      {DType::i64, MOERT_DTYPE_I64, "i64", 8, false},
      {DType::boolean, MOERT_DTYPE_BOOL, "bool", 1, false},
  };
  ASSERT_EQ(std::size(moert::kAllDTypes), std::size(expected));
  std::set<std::string> names;
  for (size_t i = 0; i < std::size(expected); ++i) {
    const Expected& e = expected[i];
    SCOPED_TRACE(e.name);
    EXPECT_EQ(moert::kAllDTypes[i], e.t);
    EXPECT_EQ(static_cast<int>(e.t), static_cast<int>(e.abi));  // stable across the ABI
    EXPECT_EQ(moert::dtype_name(e.t), e.name);
    EXPECT_EQ(moert::dtype_from_name(e.name), e.t);
    EXPECT_EQ(moert::dtype_size(e.t), e.size);
    EXPECT_EQ(moert::dtype_is_float(e.t), e.is_float);
    EXPECT_EQ(moert::dtype_is_integer(e.t), !e.is_float);
    names.insert(e.name);
  }
  EXPECT_EQ(names.size(), std::size(expected));
  for (const char* bad : {"", "F32", "float32", "float", "e4m3", "f8", "boolean", "f32 ", "int8"})
    EXPECT_EQ(moert::dtype_from_name(bad), std::nullopt) << "'" << bad << "'";
}

}  // namespace
