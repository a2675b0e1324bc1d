// argmax (ops/argmax.cpp): per row of the last axis, the index of the largest
// element as i32; ties take the lowest index and the first NaN wins.  One
// pass keeps a running maximum and its index in each of 16 lanes (element i
// goes to lane i % 16, so every lane sees its elements in order and keeps
// the first of equal values), a loop the compiler vectorises; the lanes are
// then merged taking the lowest index among the equal maxima.  A row with a
// NaN is looked at again for its first NaN.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "convert.h"
#include "kernel.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

struct F32 {
  using T = float;
  static float load(float v) { return v; }
};
struct BF16 {
  using T = uint16_t;
  static float load(uint16_t v) { return bf16_to_f32(v); }
};
struct F16 {
  using T = uint16_t;
  static float load(uint16_t v) { return f16_to_f32(v); }
};

constexpr int kLanes = 16;

template <class E>
[[gnu::always_inline]] inline int32_t argmax_row(const typename E::T* __restrict x, int32_t n) {
  float best[kLanes];
  int32_t at[kLanes];
  int32_t nan = 0;
  for (int l = 0; l < kLanes; ++l) {
    best[l] = -std::numeric_limits<float>::infinity();
    at[l] = 0;
  }
  const int32_t full = n - n % kLanes;
  for (int32_t i = 0; i < full; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float v = E::load(x[i + l]);
      // Strict: a later equal value loses.  Masks rather than ?:, which a
      // float compare would keep a branch (under -ftrapping-math).
      const uint32_t m = 0u - static_cast<uint32_t>(v > best[l]);
      best[l] = bits_to_f32((f32_to_bits(v) & m) | (f32_to_bits(best[l]) & ~m));
      at[l] = static_cast<int32_t>((static_cast<uint32_t>(i + l) & m) |
                                   (static_cast<uint32_t>(at[l]) & ~m));
      nan |= static_cast<int32_t>(v != v);
    }
  for (int32_t i = full; i < n; ++i) {
    const float v = E::load(x[i]);
    const int l = i - full;
    if (v > best[l]) {
      best[l] = v;
      at[l] = i;
    }
    nan |= v != v;
  }
  if (nan) {
    for (int32_t i = 0; i < n; ++i) {
      const float v = E::load(x[i]);
      if (v != v) return i;
    }
  }
  float m = best[0];
  for (int l = 1; l < kLanes; ++l) m = std::max(m, best[l]);
  // Every element -inf: no lane moved, and index 0 is the first maximum.
  if (m == -std::numeric_limits<float>::infinity()) return 0;
  int32_t first = std::numeric_limits<int32_t>::max();
  for (int l = 0; l < kLanes; ++l)
    if (best[l] == m) first = std::min(first, at[l]);
  return first;
}

// Rows [r0, r1) of an [rows, n] tensor x into y.
MOERT_CPU_CLONES void argmax_rows(moert_dtype t, const void* x, int32_t* y, int64_t r0, int64_t r1,
                                  int32_t n) {
  for (int64_t r = r0; r < r1; ++r) {
    switch (t) {
      case MOERT_DTYPE_F32:
        y[r] = argmax_row<F32>(static_cast<const float*>(x) + r * n, n);
        break;
      case MOERT_DTYPE_BF16:
        y[r] = argmax_row<BF16>(static_cast<const uint16_t*>(x) + r * n, n);
        break;
      default:
        y[r] = argmax_row<F16>(static_cast<const uint16_t*>(x) + r * n, n);
        break;
    }
  }
}

std::string check(const NodeDesc& node) {
  const moert_dtype t = node.input(0).dtype();
  if (t != MOERT_DTYPE_F32 && t != MOERT_DTYPE_BF16 && t != MOERT_DTYPE_F16)
    return std::string("argmax of ") + plugin::dtype_name(t);
  if (node.input(0).rank() < 1) return "argmax of a scalar";
  if (node.output(0).dtype() != MOERT_DTYPE_I32)
    return std::string("argmax into ") + plugin::dtype_name(node.output(0).dtype());
  return "";
}

class Argmax final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    const int64_t n = x.dim(-1);
    if (n <= 0 || n > std::numeric_limits<int32_t>::max())
      fail("the last dim of input 'x' is " + std::to_string(n) + ", outside [1, 2^31)");
    const int64_t rows = x.numel() / n;
    if (y.numel() != rows) fail("output size is not the number of rows of x");
    parallel_for(rows, std::max<int64_t>(1, 32768 / n), [&](int64_t r0, int64_t r1) {
      argmax_rows(x.dtype, x.data, y.as<int32_t>(), r0, r1, static_cast<int32_t>(n));
    });
  }
};

std::unique_ptr<Kernel> create(const NodeDesc&) { return std::make_unique<Argmax>(); }

const KernelRegistration registration({"argmax", check, create});

}  // namespace
}  // namespace moert::cpu
