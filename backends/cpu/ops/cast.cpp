// cast (ops/cast.cpp): every dtype to every dtype, bit for bit as the
// runtime converts (moert/dtype.h): an element is read as its exact value
// (i64 beyond 2^53 rounded to the nearest double first) and written rounded
// once to nearest even for floats, with NaN kept as NaN (the target's
// canonical quiet NaN with the sign the runtime reads; an f32 NaN into f32
// keeps its payload, quieted), f16/bf16 overflowing to infinity, f8_e4m3
// saturating to ±448, and integers truncated toward zero with saturation
// (NaN gives 0, bool is "nonzero and not NaN").
//
// Float sources hold values exact in f32, so those casts run through f32
// with branch-free conversions the compiler vectorises (built for AVX-512
// and AVX2 beside the baseline, for f16's hardware conversions).  Integer
// sources go through double, the one type that holds them exactly (or, for
// i64, rounded as the runtime rounds them), with a rounding from double that
// is exact for integer values.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "convert.h"
#include "kernel.h"
#include "op_checks.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

using u8 = uint8_t;
using u16 = uint16_t;
using u32 = uint32_t;
using u64 = uint64_t;

[[gnu::always_inline]] inline u32 select(bool c, u32 a, u32 b) {
  const u32 m = 0u - static_cast<u32>(c);
  return (a & m) | (b & ~m);
}
[[gnu::always_inline]] inline float select(bool c, float a, float b) {
  return bits_to_f32(select(c, f32_to_bits(a), f32_to_bits(b)));
}

// ---- float sources, read as f32 ---------------------------------------------
// NaNs come out as the runtime reads them: an f32 NaN as it is; bf16 and f16
// NaNs as the canonical quiet NaN with their sign; e4m3 NaNs (0x7f, 0xff) as
// +NaN, as the runtime drops their sign.

struct SrcF32 {
  using T = float;
  static float load(float v) { return v; }
};
struct SrcBF16 {
  using T = u16;
  static float load(u16 h) {
    const u32 sign = static_cast<u32>(h & 0x8000u) << 16;
    const bool nan = (h & 0x7fffu) > 0x7f80u;
    return bits_to_f32(select(nan, sign | 0x7fc00000u, static_cast<u32>(h) << 16));
  }
};
struct SrcF16 {
  using T = u16;
  static float load(u16 h) {
    const u32 sign = static_cast<u32>(h & 0x8000u) << 16;
    const bool nan = (h & 0x7fffu) > 0x7c00u;
    return bits_to_f32(select(nan, sign | 0x7fc00000u, f32_to_bits(f16_to_f32(h))));
  }
};

// The 256 e4m3fn values with both NaN codes read as +NaN.
const float* e4m3_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i)
      t[static_cast<size_t>(i)] = (i & 0x7f) == 0x7f ? std::numeric_limits<float>::quiet_NaN()
                                                     : e4m3_to_f32(static_cast<u8>(i));
    return t;
  }();
  return table.data();
}

// ---- f32 values written to every dtype ---------------------------------------

struct DstF32 {
  using T = float;
  // The runtime passes values through double: a NaN comes back quieted.
  static float store(float v) {
    const u32 u = f32_to_bits(v);
    return bits_to_f32(select((u & 0x7fffffffu) > 0x7f800000u, u | 0x00400000u, u));
  }
};
struct DstBF16 {
  using T = u16;
  static u16 store(float v) {
    const u32 u = f32_to_bits(v);
    const u32 sign16 = (u >> 16) & 0x8000u;
    // Round to nearest even on the bit pattern; carries into the exponent
    // (and up to infinity) are the right results.
    const u32 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return static_cast<u16>(select((u & 0x7fffffffu) > 0x7f800000u, sign16 | 0x7fc0u, rounded));
  }
};
struct DstF16 {
  using T = u16;
  static u16 store(float v) {
    const u32 u = f32_to_bits(v);
    const u32 sign16 = (u >> 16) & 0x8000u;
    // The hardware (or libgcc) conversion rounds to nearest even.
    return static_cast<u16>(
        select((u & 0x7fffffffu) > 0x7f800000u, sign16 | 0x7e00u, f32_to_f16(v)));
  }
};
struct DstE4M3 {
  using T = u8;
  static u8 store(float v) {
    const u32 u = f32_to_bits(v);
    const u32 sign = (u >> 24) & 0x80u;
    const u32 a = u & 0x7fffffffu;
    const float af = bits_to_f32(a);
    // Normal results (|v| >= 2^-6): round the f32 mantissa to 3 bits, nearest
    // even, then move the exponent from bias 127 to bias 7.
    const u32 normal = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - (120u << 3);
    // Subnormal results: the multiple of 2^-9 nearest |v|, ties to even (the
    // 1.5 * 2^23 shift rounds in the current, nearest-even mode); 8 there is
    // the smallest normal, whose code is 8 as well.
    // (Other lanes shift 0, keeping the float-to-int conversion in range.)
    const bool small = af < 0.015625f;
    const float shifted = (select(small, af, 0.0f) * 512.0f + 12582912.0f) - 12582912.0f;
    const u32 sub = static_cast<u32>(static_cast<int32_t>(shifted));
    u32 code = select(small, sub, normal);
    code = select(af >= 448.0f, 0x7eu, code);  // saturate, infinity included
    code = select(a > 0x7f800000u, 0x7fu, code);
    return static_cast<u8>(sign | code);
  }
};

// Integers truncate toward zero and saturate; NaN gives 0.  The bounds are
// compared as the runtime compares them, in double (exact for f32 values).
template <typename I>
struct DstInt {
  using T = I;
  static I store(float v) {
    constexpr double lo = static_cast<double>(std::numeric_limits<I>::min());
    constexpr double hi = static_cast<double>(std::numeric_limits<I>::max());
    const double d = v;
    if (d != d) return 0;
    if (d <= lo) return std::numeric_limits<I>::min();
    if (d >= hi) return std::numeric_limits<I>::max();
    return static_cast<I>(d);
  }
};
struct DstBool {
  using T = u8;
  static u8 store(float v) { return (v != 0.0f && v == v) ? 1 : 0; }
};

template <class S, class D>
[[gnu::always_inline]] inline void float_cast_loop(const void* src, void* dst, int64_t n) {
  const typename S::T* __restrict s = static_cast<const typename S::T*>(src);
  typename D::T* __restrict d = static_cast<typename D::T*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = D::store(S::load(s[i]));
}

// e4m3 sources through the table of their values.
template <class D>
[[gnu::always_inline]] inline void e4m3_cast_loop(const void* src, void* dst, int64_t n) {
  const u8* __restrict s = static_cast<const u8*>(src);
  typename D::T* __restrict d = static_cast<typename D::T*>(dst);
  const float* table = e4m3_values();
  for (int64_t i = 0; i < n; ++i) d[i] = D::store(table[s[i]]);
}

template <class S>
[[gnu::always_inline]] inline void float_cast_to(moert_dtype to, const void* src, void* dst,
                                                 int64_t n) {
  switch (to) {
    case MOERT_DTYPE_F32:
      return float_cast_loop<S, DstF32>(src, dst, n);
    case MOERT_DTYPE_BF16:
      return float_cast_loop<S, DstBF16>(src, dst, n);
    case MOERT_DTYPE_F16:
      return float_cast_loop<S, DstF16>(src, dst, n);
    case MOERT_DTYPE_F8_E4M3:
      return float_cast_loop<S, DstE4M3>(src, dst, n);
    case MOERT_DTYPE_I8:
      return float_cast_loop<S, DstInt<int8_t>>(src, dst, n);
    case MOERT_DTYPE_U8:
      return float_cast_loop<S, DstInt<uint8_t>>(src, dst, n);
    case MOERT_DTYPE_I32:
      return float_cast_loop<S, DstInt<int32_t>>(src, dst, n);
    case MOERT_DTYPE_I64:
      return float_cast_loop<S, DstInt<int64_t>>(src, dst, n);
    case MOERT_DTYPE_BOOL:
      return float_cast_loop<S, DstBool>(src, dst, n);
  }
}

[[gnu::always_inline]] inline void e4m3_cast_to(moert_dtype to, const void* src, void* dst,
                                                int64_t n) {
  switch (to) {
    case MOERT_DTYPE_F32:
      return e4m3_cast_loop<DstF32>(src, dst, n);
    case MOERT_DTYPE_BF16:
      return e4m3_cast_loop<DstBF16>(src, dst, n);
    case MOERT_DTYPE_F16:
      return e4m3_cast_loop<DstF16>(src, dst, n);
    case MOERT_DTYPE_F8_E4M3:
      return e4m3_cast_loop<DstE4M3>(src, dst, n);
    case MOERT_DTYPE_I8:
      return e4m3_cast_loop<DstInt<int8_t>>(src, dst, n);
    case MOERT_DTYPE_U8:
      return e4m3_cast_loop<DstInt<uint8_t>>(src, dst, n);
    case MOERT_DTYPE_I32:
      return e4m3_cast_loop<DstInt<int32_t>>(src, dst, n);
    case MOERT_DTYPE_I64:
      return e4m3_cast_loop<DstInt<int64_t>>(src, dst, n);
    case MOERT_DTYPE_BOOL:
      return e4m3_cast_loop<DstBool>(src, dst, n);
  }
}

// n elements from a float dtype to any dtype.
MOERT_CPU_CLONES void float_cast_span(moert_dtype from, moert_dtype to, const void* src, void* dst,
                                      int64_t n) {
  switch (from) {
    case MOERT_DTYPE_F32:
      return float_cast_to<SrcF32>(to, src, dst, n);
    case MOERT_DTYPE_BF16:
      return float_cast_to<SrcBF16>(to, src, dst, n);
    case MOERT_DTYPE_F16:
      return float_cast_to<SrcF16>(to, src, dst, n);
    default:
      return e4m3_cast_to(to, src, dst, n);
  }
}

// ---- integer sources, read as double ------------------------------------------

// An integer-valued double rounded to a narrow float format with `man` stored
// mantissa bits and exponent bias `bias`, nearest even, as a bit pattern
// without the sign.  |v| >= 1 is a normal number of every target format, so
// rounding the double's mantissa and rebiasing the exponent is the whole job;
// `max_code` is the largest finite pattern, `overflow` what beyond it gives
// (infinity, or the saturated maximum for e4m3).
u32 narrow_from_integer(double v, int man, int bias, u32 max_code, u32 overflow) {
  u64 a;
  std::memcpy(&a, &v, 8);
  a &= ~(u64{1} << 63);
  if (a == 0) return 0;
  const int shift = 52 - man;
  const u64 rounded = (a + ((u64{1} << (shift - 1)) - 1) + ((a >> shift) & 1u)) >> shift;
  const u64 code = rounded - (static_cast<u64>(1023 - bias) << man);
  return code > max_code ? overflow : static_cast<u32>(code);
}

template <typename I>
I int_from_double(double v) {
  constexpr double lo = static_cast<double>(std::numeric_limits<I>::min());
  constexpr double hi = static_cast<double>(std::numeric_limits<I>::max());
  if (v <= lo) return std::numeric_limits<I>::min();
  if (v >= hi) return std::numeric_limits<I>::max();
  return static_cast<I>(v);
}

void store_double(moert_dtype to, void* dst, int64_t i, double v) {
  const u32 sign = std::signbit(v) ? 1u : 0u;
  switch (to) {
    case MOERT_DTYPE_F32:
      static_cast<float*>(dst)[i] = static_cast<float>(v);  // |v| <= 2^63: no overflow
      return;
    case MOERT_DTYPE_BF16:
      static_cast<u16*>(dst)[i] =
          static_cast<u16>((sign << 15) | narrow_from_integer(v, 7, 127, 0x7f7f, 0x7f80));
      return;
    case MOERT_DTYPE_F16:
      static_cast<u16*>(dst)[i] =
          static_cast<u16>((sign << 15) | narrow_from_integer(v, 10, 15, 0x7bff, 0x7c00));
      return;
    case MOERT_DTYPE_F8_E4M3:
      static_cast<u8*>(dst)[i] =
          static_cast<u8>((sign << 7) | narrow_from_integer(v, 3, 7, 0x7e, 0x7e));
      return;
    case MOERT_DTYPE_I8:
      static_cast<int8_t*>(dst)[i] = int_from_double<int8_t>(v);
      return;
    case MOERT_DTYPE_U8:
      static_cast<u8*>(dst)[i] = int_from_double<uint8_t>(v);
      return;
    case MOERT_DTYPE_I32:
      static_cast<int32_t*>(dst)[i] = int_from_double<int32_t>(v);
      return;
    case MOERT_DTYPE_I64:
      static_cast<int64_t*>(dst)[i] = int_from_double<int64_t>(v);
      return;
    case MOERT_DTYPE_BOOL:
      static_cast<u8*>(dst)[i] = v != 0.0 ? 1 : 0;
      return;
  }
}

template <typename I>
void int_cast_loop(const void* src, moert_dtype to, void* dst, int64_t begin, int64_t end) {
  const I* s = static_cast<const I*>(src);
  for (int64_t i = begin; i < end; ++i) store_double(to, dst, i, static_cast<double>(s[i]));
}

void int_cast_span(moert_dtype from, moert_dtype to, const void* src, void* dst, int64_t begin,
                   int64_t end) {
  switch (from) {
    case MOERT_DTYPE_I8:
      return int_cast_loop<int8_t>(src, to, dst, begin, end);
    case MOERT_DTYPE_U8:
      return int_cast_loop<uint8_t>(src, to, dst, begin, end);
    case MOERT_DTYPE_I32:
      return int_cast_loop<int32_t>(src, to, dst, begin, end);
    case MOERT_DTYPE_I64:
      return int_cast_loop<int64_t>(src, to, dst, begin, end);
    default: {  // bool: any nonzero byte reads as 1
      const u8* s = static_cast<const u8*>(src);
      for (int64_t i = begin; i < end; ++i) store_double(to, dst, i, s[i] ? 1.0 : 0.0);
    }
  }
}

class Cast final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    if (x.numel() != y.numel()) fail("output size differs from the input's");
    const moert_dtype from = x.dtype, to = y.dtype;
    const size_t sx = plugin::dtype_size(from), sy = plugin::dtype_size(to);
    if (plugin::dtype_is_float(from)) {
      parallel_for(x.numel(), 32768, [&](int64_t begin, int64_t end) {
        float_cast_span(from, to,
                        static_cast<const char*>(x.data) + static_cast<size_t>(begin) * sx,
                        static_cast<char*>(y.data) + static_cast<size_t>(begin) * sy, end - begin);
      });
    } else {
      parallel_for(x.numel(), 16384, [&](int64_t begin, int64_t end) {
        int_cast_span(from, to, x.data, y.data, begin, end);
      });
    }
  }
};

std::unique_ptr<Kernel> create(const NodeDesc&) { return std::make_unique<Cast>(); }

const KernelRegistration registration({"cast", plugin::check_cast, create});

}  // namespace
}  // namespace moert::cpu
