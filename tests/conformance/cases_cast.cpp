// cast: every source dtype to every target dtype.  The narrow sources are
// covered exhaustively (all 65536 bf16 and f16 patterns, all 256 f8_e4m3,
// i8, u8 and bool bytes); f32, i32 and i64 sources get the awkward values by
// name (infinities, NaN, signed zeros, exact rounding ties of bf16, f16 and
// e4m3, f16 overflow and subnormals, e4m3 saturation and subnormals, the
// integer saturation bounds, fractions that truncate toward zero, integers
// beyond 2^24 and 2^53 that round) plus random bit patterns.  A symbolic-T
// case and a large one check the threading.
//
// Tolerance 0: a cast is defined bit for bit (moert/dtype.h), so every value
// must equal the reference's; NaN must meet NaN.
#include <cmath>
#include <cstring>
#include <limits>

#include "conformance.h"

namespace moert::conformance {
namespace {

constexpr DType kAll[] = {DType::f32, DType::f16, DType::bf16, DType::f8_e4m3, DType::i8,
                          DType::u8,  DType::i32, DType::i64,  DType::boolean};
const char* const kExact = "cast is defined bit for bit: exact";

// Every bit pattern of a 1- or 2-byte dtype, in order.
Tensor every_pattern(DType t) {
  const int64_t n = dtype_size(t) == 1 ? 256 : 65536;
  Tensor x = Tensor::empty(t, {n});
  for (int64_t i = 0; i < n; ++i) {
    if (dtype_size(t) == 1)
      static_cast<uint8_t*>(x.data())[i] = static_cast<uint8_t>(i);
    else
      static_cast<uint16_t*>(x.data())[i] = static_cast<uint16_t>(i);
  }
  return x;
}

// Named awkward values as f32, then `random_bits` random 32-bit patterns.
Tensor f32_values(std::mt19937& rng, int64_t random_bits) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> v = {
      0.0, -0.0, inf, -inf, nan, -nan, 1.0, -1.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 2.7, -2.7, 0.99,
      -0.99,
      // bf16 ties (8 significant bits) and neighbours
      1.0 + std::ldexp(1.0, -8), 1.0 + 3 * std::ldexp(1.0, -8), -(1.0 + std::ldexp(1.0, -8)),
      1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -20), 3.3895313892515355e38, 3.4e38,
      std::ldexp(1.0, -130), std::ldexp(1.0, -149),
      // f16: ties, largest finite, overflow boundary, subnormals
      1.0 + std::ldexp(1.0, -11), 1.0 + 3 * std::ldexp(1.0, -11), 65504.0, 65519.0, 65520.0,
      -65520.0, 70000.0, std::ldexp(1.0, -14), std::ldexp(1.0, -24), std::ldexp(1.0, -25),
      std::ldexp(1.5, -25), 1e-5, -6e-8,
      // e4m3: ties, saturation, subnormals
      1.0625, 1.1875, 440.0, 448.0, 449.0, 464.0, 465.0, 480.0, 1e4, -1e4, -464.0,
      std::ldexp(1.0, -6), std::ldexp(1.0, -9), std::ldexp(1.0, -10), 3 * std::ldexp(1.0, -10),
      5 * std::ldexp(1.0, -10), std::ldexp(1.0, -11), -std::ldexp(1.0, -10), 0.0175,
      // integer bounds and truncation
      127.0, 127.9, 128.0, -128.0, -128.5, -129.0, 255.0, 255.5, 256.0, -1.0, -0.1, 2147483520.0,
      2147483648.0, -2147483648.0, -2147483904.0, 3e9, -3e9, 16777217.0, 9.2233715e18, 9.3e18,
      -9.3e18, 1e30, -1e30, 123456.789, -98765.4321};
  std::vector<uint32_t> bits;
  for (int64_t i = 0; i < random_bits; ++i) bits.push_back(static_cast<uint32_t>(rng()));
  Tensor x = Tensor::from_doubles(DType::f32, {static_cast<int64_t>(v.size())}, v);
  Tensor y = Tensor::empty(DType::f32, {static_cast<int64_t>(v.size() + bits.size())});
  std::memcpy(y.data(), x.data(), x.nbytes());
  std::memcpy(static_cast<char*>(y.data()) + x.nbytes(), bits.data(), bits.size() * 4);
  return y;
}

// Named integers of i32 or i64, then random bit patterns.
Tensor int_values(DType t, std::mt19937& rng, int64_t random_bits) {
  std::vector<int64_t> v = {0,
                            1,
                            -1,
                            2,
                            127,
                            128,
                            -128,
                            -129,
                            255,
                            256,
                            447,
                            448,
                            449,
                            463,
                            464,
                            465,
                            479,
                            480,
                            481,
                            1000,
                            -1000,
                            65504,
                            65519,
                            65520,
                            65535,
                            65536,
                            -65520,
                            16777216,
                            16777217,
                            16777219,
                            -16777217,
                            (1 << 30) + 65,
                            std::numeric_limits<int32_t>::max(),
                            std::numeric_limits<int32_t>::min(),
                            std::numeric_limits<int32_t>::max() - 63};
  if (t == DType::i64) {
    const int64_t more[] = {std::numeric_limits<int64_t>::max(),
                            std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max() - 511,
                            (int64_t{1} << 53) + 1,
                            -((int64_t{1} << 53) + 3),
                            (int64_t{1} << 62) + (int64_t{1} << 40) + 1,
                            int64_t{1} << 31,
                            -(int64_t{1} << 31) - 1,
                            int64_t{4294967295}};
    v.insert(v.end(), std::begin(more), std::end(more));
  }
  const size_t size = dtype_size(t);
  Tensor x = Tensor::empty(t, {static_cast<int64_t>(v.size()) + random_bits});
  auto* bytes = static_cast<unsigned char*>(x.data());
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::i64) {
      std::memcpy(bytes + i * size, &v[i], size);
    } else {
      const int32_t w = static_cast<int32_t>(v[i]);
      std::memcpy(bytes + i * size, &w, size);
    }
  }
  for (size_t i = v.size() * size; i < x.nbytes(); ++i)
    bytes[i] = static_cast<unsigned char>(rng());
  return x;
}

Tensor source(DType t, std::mt19937& rng) {
  switch (t) {
    case DType::f32:
      return f32_values(rng, 4000);
    case DType::i32:
    case DType::i64:
      return int_values(t, rng, 2000);
    default:
      return every_pattern(t);  // bool: bytes 2..255 read as true
  }
}

std::vector<Case> cases() {
  std::mt19937 rng(43);
  std::vector<Case> out;
  for (DType from : kAll)
    for (DType to : kAll) {
      const std::string name = std::string(dtype_name(from)) + "_to_" + std::string(dtype_name(to));
      out.push_back(simple_case(name, "cast", {source(from, rng)},
                                {{"dtype", std::string(dtype_name(to))}}, 0.0, kExact));
    }
  // Scalars.
  out.push_back(simple_case("f32_scalar_to_bf16", "cast", {random(DType::f32, {}, rng)},
                            {{"dtype", std::string("bf16")}}, 0.0, kExact));
  out.push_back(simple_case("i64_scalar_to_f32", "cast", {random_ints(DType::i64, {}, -9, 9, rng)},
                            {{"dtype", std::string("f32")}}, 0.0, kExact));
  // Large enough to be shared between threads.
  out.push_back(simple_case("f32_large_to_bf16", "cast",
                            {random(DType::f32, {300, 1999}, rng, 50.0)},
                            {{"dtype", std::string("bf16")}}, 0.0, kExact));
  out.push_back(simple_case("bf16_large_to_f32", "cast",
                            {random(DType::bf16, {300, 1999}, rng, 50.0)},
                            {{"dtype", std::string("f32")}}, 0.0, kExact));
  out.push_back(simple_case("i32_large_to_f16", "cast",
                            {random_ints(DType::i32, {500, 301}, -70000, 70000, rng)},
                            {{"dtype", std::string("f16")}}, 0.0, kExact));
  // Symbolic T across steps.
  {
    Case c;
    c.name = "f32_symbolic_to_bf16";
    c.op = "cast";
    c.attrs = {{"dtype", std::string("bf16")}};
    c.slots = {activation(DType::f32, Shape{Dim::tokens(), Dim(64)})};
    for (int64_t tokens : {1, 9, 700}) {
      Step s;
      s.tokens = tokens;
      s.inputs = {random(DType::f32, {tokens, 64}, rng, 10.0)};
      c.steps.push_back(std::move(s));
    }
    c.tolerance = 0.0;
    c.why = kExact;
    out.push_back(std::move(c));
  }
  return out;
}

const CaseRegistration registration("cast", cases);

}  // namespace
}  // namespace moert::conformance
