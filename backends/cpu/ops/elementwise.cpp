// Elementwise kernels (ops/elementwise.cpp): add and mul with b broadcast one
// way to a's shape, sigmoid, silu and swiglu (two tensors, or the two halves
// of one; plain, or the clamped form of ops/swiglu_params.h, chosen once per
// node).  Tensors are f32, bf16 or f16; the math is f32 with one rounding
// to the output dtype.  Spans of contiguous elements go through loops the
// compiler vectorises, built for AVX-512 and AVX2 beside the baseline so that
// the math uses the wide vector units, and f16 converts in hardware, when the
// CPU has them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "convert.h"
#include "kernel.h"
#include "op_params.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

// Element access per storage dtype: widen to f32, round back once.
// `blocked`: the compiler (gcc 12) converts f16 one element at a time, which
// would keep a whole loop scalar; such dtypes run the f32 math on blocks.
struct F32 {
  using T = float;
  static constexpr bool blocked = false;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};
struct BF16 {
  using T = uint16_t;
  static constexpr bool blocked = false;
  static float load(uint16_t v) { return bf16_to_f32(v); }
  static uint16_t store(float v) { return f32_to_bf16(v); }
};
struct F16 {
  using T = uint16_t;
  static constexpr bool blocked = true;
  static float load(uint16_t v) { return f16_to_f32(v); }
  static uint16_t store(float v) { return f32_to_f16(v); }
};

// c ? a : b through bit masks.  A float compare feeding ?: stays a branch
// under the default -ftrapping-math, which keeps the loop scalar; as a mask
// it vectorises.
[[gnu::always_inline]] inline float select(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return bits_to_f32((f32_to_bits(a) & m) | (f32_to_bits(b) & ~m));
}

// e^x in f32, branch-free so that loops over it vectorise: x = n ln2 + r with
// n = round(x / ln2) and |r| <= ln2 / 2, e^r by its degree-7 Taylor
// polynomial (truncation below 1e-8 relative), 2^n put in the exponent field.
// Overflow gives +inf, NaN stays NaN; below e^-86.5 (~2.6e-38, where 2^n
// would need a subnormal) the result is 0, which only the sigmoid family
// sees, as 1 + e^x.
[[gnu::always_inline]] inline float exp_f32(float x) {
  constexpr float lo = -86.5f, hi = 88.72283f;  // ln(FLT_MAX) ~ 88.722839
  float xc = select(x > lo, x, lo);             // NaN becomes lo here ...
  xc = select(xc < hi, xc, hi);
  // Round to nearest (even) by the 1.5 * 2^23 shift.
  const float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;
  // Cody-Waite: ln2 split in a head exact in few bits and a tail.
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n as 2^(n-1) * 2, so that n = 128 (x near ln(FLT_MAX)) stays finite.
  const int32_t e = static_cast<int32_t>(n) + 126;  // in [1, 254]
  const float scale = bits_to_f32(static_cast<uint32_t>(e) << 23);
  float y = p * scale * 2.0f;
  y = select(x < lo, 0.0f, y);
  y = select(x > hi, std::numeric_limits<float>::infinity(), y);
  return select(x != x, x, y);  // ... and is restored here
}

[[gnu::always_inline]] inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
// x * sigmoid(x); silu(-inf) is NaN (-inf * 0) as in the reference.
[[gnu::always_inline]] inline float silu_f32(float x) { return x / (1.0f + exp_f32(-x)); }

// The clamped activation of ops/swiglu_params.h in f32: limit is +inf when
// the node has none (min and clamp against +-inf change nothing, NaN and
// infinities included), so one body serves every parameter set.
struct Act {
  float alpha = 1.0f, limit = std::numeric_limits<float>::infinity(), up_offset = 0.0f;
};

Act act_of(const plugin::SwigluParams& p) {
  Act a;
  a.alpha = static_cast<float>(p.alpha);
  if (p.limit > 0) a.limit = static_cast<float>(p.limit);
  a.up_offset = static_cast<float>(p.up_offset);
  return a;
}

// min(g, l) * sigmoid(alpha min(g, l)) * (clamp(u, -l, l) + up_offset), the
// comparisons as std::min / std::clamp make them (a NaN passes through).
[[gnu::always_inline]] inline float clamped_f32(float g, float u, const Act& a) {
  g = select(a.limit < g, a.limit, g);
  u = select(u < -a.limit, -a.limit, select(a.limit < u, a.limit, u));
  return g / (1.0f + exp_f32(-a.alpha * g)) * (u + a.up_offset);
}

enum class Binary { add, mul };
enum class Unary { sigmoid, silu };

template <Binary op>
[[gnu::always_inline]] inline float apply(float a, float b) {
  if constexpr (op == Binary::add)
    return a + b;
  else
    return a * b;
}

template <Unary op>
[[gnu::always_inline]] inline float apply(float x) {
  if constexpr (op == Unary::sigmoid)
    return sigmoid_f32(x);
  else
    return silu_f32(x);
}

// y[i] = a[i] op b[i], or a[i] op b[0] when b_scalar.
template <Binary op, class E>
[[gnu::always_inline]] inline void binary_loop(const void* a_, const void* b_, void* y_, int64_t n,
                                               bool b_scalar) {
  using T = typename E::T;
  const T* __restrict a = static_cast<const T*>(a_);
  const T* __restrict b = static_cast<const T*>(b_);
  T* __restrict y = static_cast<T*>(y_);
  if (b_scalar) {
    const float s = E::load(b[0]);
    for (int64_t i = 0; i < n; ++i) y[i] = E::store(apply<op>(E::load(a[i]), s));
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = E::store(apply<op>(E::load(a[i]), E::load(b[i])));
  }
}

template <Binary op>
[[gnu::always_inline]] inline void binary_dispatch(moert_dtype t, const void* a, const void* b,
                                                   void* y, int64_t n, bool b_scalar) {
  switch (t) {
    case MOERT_DTYPE_F32:
      return binary_loop<op, F32>(a, b, y, n, b_scalar);
    case MOERT_DTYPE_BF16:
      return binary_loop<op, BF16>(a, b, y, n, b_scalar);
    default:
      return binary_loop<op, F16>(a, b, y, n, b_scalar);
  }
}

MOERT_CPU_CLONES void binary_span(Binary op, moert_dtype t, const void* a, const void* b, void* y,
                                  int64_t n, bool b_scalar) {
  if (op == Binary::add)
    binary_dispatch<Binary::add>(t, a, b, y, n, b_scalar);
  else
    binary_dispatch<Binary::mul>(t, a, b, y, n, b_scalar);
}

// Block size of the blocked dtypes: small enough to stay in L1.
constexpr int64_t kBlock = 256;

template <Unary op, class E>
[[gnu::always_inline]] inline void unary_loop(const void* x_, void* y_, int64_t n) {
  using T = typename E::T;
  const T* __restrict x = static_cast<const T*>(x_);
  T* __restrict y = static_cast<T*>(y_);
  if constexpr (E::blocked) {
    float buf[kBlock];
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      const int64_t m = std::min(kBlock, n - i0);
      for (int64_t i = 0; i < m; ++i) buf[i] = E::load(x[i0 + i]);
      for (int64_t i = 0; i < m; ++i) buf[i] = apply<op>(buf[i]);
      for (int64_t i = 0; i < m; ++i) y[i0 + i] = E::store(buf[i]);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = E::store(apply<op>(E::load(x[i])));
  }
}

template <Unary op>
[[gnu::always_inline]] inline void unary_dispatch(moert_dtype t, const void* x, void* y,
                                                  int64_t n) {
  switch (t) {
    case MOERT_DTYPE_F32:
      return unary_loop<op, F32>(x, y, n);
    case MOERT_DTYPE_BF16:
      return unary_loop<op, BF16>(x, y, n);
    default:
      return unary_loop<op, F16>(x, y, n);
  }
}

MOERT_CPU_CLONES void unary_span(Unary op, moert_dtype t, const void* x, void* y, int64_t n) {
  if (op == Unary::sigmoid)
    unary_dispatch<Unary::sigmoid>(t, x, y, n);
  else
    unary_dispatch<Unary::silu>(t, x, y, n);
}

// y = silu(g) * u, or the clamped form when kClamped.
template <bool kClamped>
[[gnu::always_inline]] inline float gated(float g, float u, const Act& a) {
  if constexpr (kClamped)
    return clamped_f32(g, u, a);
  else
    return silu_f32(g) * u;
}

template <class E, bool kClamped>
[[gnu::always_inline]] inline void swiglu_loop(const void* g_, const void* u_, void* y_, int64_t n,
                                               const Act& a) {
  using T = typename E::T;
  const T* __restrict g = static_cast<const T*>(g_);
  const T* __restrict u = static_cast<const T*>(u_);
  T* __restrict y = static_cast<T*>(y_);
  if constexpr (E::blocked) {
    float bg[kBlock], bu[kBlock];
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      const int64_t m = std::min(kBlock, n - i0);
      for (int64_t i = 0; i < m; ++i) {
        bg[i] = E::load(g[i0 + i]);
        bu[i] = E::load(u[i0 + i]);
      }
      for (int64_t i = 0; i < m; ++i) bg[i] = gated<kClamped>(bg[i], bu[i], a);
      for (int64_t i = 0; i < m; ++i) y[i0 + i] = E::store(bg[i]);
    }
  } else {
    for (int64_t i = 0; i < n; ++i)
      y[i] = E::store(gated<kClamped>(E::load(g[i]), E::load(u[i]), a));
  }
}

template <bool kClamped>
[[gnu::always_inline]] inline void swiglu_dispatch(moert_dtype t, const void* g, const void* u,
                                                   void* y, int64_t n, const Act& a) {
  switch (t) {
    case MOERT_DTYPE_F32:
      return swiglu_loop<F32, kClamped>(g, u, y, n, a);
    case MOERT_DTYPE_BF16:
      return swiglu_loop<BF16, kClamped>(g, u, y, n, a);
    default:
      return swiglu_loop<F16, kClamped>(g, u, y, n, a);
  }
}

// `act` null: plain SwiGLU.
MOERT_CPU_CLONES void swiglu_span(moert_dtype t, const void* g, const void* u, void* y, int64_t n,
                                  const Act* act) {
  if (act)
    swiglu_dispatch<true>(t, g, u, y, n, *act);
  else
    swiglu_dispatch<false>(t, g, u, y, n, Act{});
}

// Elements per thread below which a loop stays on one thread: the cheap ops
// are memory bound, the exp-based ones cost ~10x more per element.
constexpr int64_t kCheapGrain = 32768;
constexpr int64_t kExpGrain = 8192;

const char* byte_ptr(const Tensor& t, int64_t element) {
  return static_cast<const char*>(t.data) +
         static_cast<size_t>(element) * plugin::dtype_size(t.dtype);
}
char* byte_ptr_mut(const Tensor& t, int64_t element) {
  return static_cast<char*>(t.data) + static_cast<size_t>(element) * plugin::dtype_size(t.dtype);
}

std::string check_inputs(const NodeDesc& node) {
  for (size_t i = 0; i < node.num_inputs(); ++i) {
    if (!node.has_input(i)) continue;
    const moert_dtype t = node.input(i).dtype();
    if (!is_activation(t))
      return std::string(node.op()) + " of " + plugin::dtype_name(t) + " (f32, bf16, f16 only)";
    if (t != node.input(0).dtype())
      return std::string(node.op()) + " of mixed dtypes " + plugin::dtype_name(t) + " and " +
             plugin::dtype_name(node.input(0).dtype());
  }
  if (node.output(0).dtype() != node.input(0).dtype())
    return std::string(node.op()) + " with output dtype " +
           plugin::dtype_name(node.output(0).dtype()) + " from " +
           plugin::dtype_name(node.input(0).dtype());
  return "";
}

// ---- add, mul --------------------------------------------------------------

// a's shape with b's broadcast folded in: runs of adjacent axes that are all
// broadcast or all not are merged, axes of size 1 dropped.  The innermost
// merged axis is walked by binary_span (b a vector or a scalar there); the
// outer ones give b's offset per row of that axis.
struct BroadcastPlan {
  int count = 0;  // merged axes
  std::array<int64_t, MOERT_MAX_RANK> size{};
  std::array<int64_t, MOERT_MAX_RANK> b_stride{};  // 0: broadcast along it
};

BroadcastPlan plan_broadcast(const Tensor& a, const Tensor& b) {
  if (b.rank > a.rank) fail("input 'b' has a higher rank than input 'a'");
  BroadcastPlan p;
  std::array<bool, MOERT_MAX_RANK> bcast{};
  for (uint32_t i = 0; i < a.rank; ++i) {
    const int64_t da = a.shape[i];
    const uint32_t lead = a.rank - b.rank;
    const int64_t db = i < lead ? 1 : b.shape[i - lead];
    if (db != da && db != 1)
      fail("input 'b' does not broadcast to input 'a' at axis " + std::to_string(i) + " (" +
           std::to_string(db) + " vs " + std::to_string(da) + ")");
    if (da == 1) continue;
    const bool is_bcast = db == 1;
    if (p.count > 0 && bcast[static_cast<size_t>(p.count - 1)] == is_bcast) {
      p.size[static_cast<size_t>(p.count - 1)] *= da;
    } else {
      bcast[static_cast<size_t>(p.count)] = is_bcast;
      p.size[static_cast<size_t>(p.count++)] = da;
    }
  }
  int64_t stride = 1;
  for (int k = p.count; k-- > 0;) {
    const size_t ks = static_cast<size_t>(k);
    p.b_stride[ks] = bcast[ks] ? 0 : stride;
    if (!bcast[ks]) stride *= p.size[ks];
  }
  return p;
}

class BinaryKernel final : public Kernel {
 public:
  explicit BinaryKernel(Binary op) : op_(op) {}
  void run(ExecContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const BroadcastPlan p = plan_broadcast(a, b);
    const int64_t total = a.numel();
    if (total == 0) return;
    const int64_t inner = p.count ? p.size[static_cast<size_t>(p.count - 1)] : 1;
    const bool b_scalar = p.count == 0 || p.b_stride[static_cast<size_t>(p.count - 1)] == 0;
    const moert_dtype t = a.dtype;
    parallel_for(total, kCheapGrain, [&](int64_t begin, int64_t end) {
      for (int64_t pos = begin; pos < end;) {
        int64_t row = pos / inner;
        const int64_t col = pos - row * inner;
        const int64_t len = std::min(inner - col, end - pos);
        // b's offset of this row: its index along each outer merged axis.
        int64_t b_off = b_scalar ? 0 : col;
        for (int k = p.count - 1; k-- > 0;) {
          const size_t ks = static_cast<size_t>(k);
          b_off += (row % p.size[ks]) * p.b_stride[ks];
          row /= p.size[ks];
        }
        binary_span(op_, t, byte_ptr(a, pos), byte_ptr(b, b_off), byte_ptr_mut(y, pos), len,
                    b_scalar);
        pos += len;
      }
    });
  }

 private:
  Binary op_;
};

// ---- sigmoid, silu -------------------------------------------------------

class UnaryKernel final : public Kernel {
 public:
  explicit UnaryKernel(Unary op) : op_(op) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    parallel_for(x.numel(), kExpGrain, [&](int64_t begin, int64_t end) {
      unary_span(op_, x.dtype, byte_ptr(x, begin), byte_ptr_mut(y, begin), end - begin);
    });
  }

 private:
  Unary op_;
};

// ---- swiglu ----------------------------------------------------------------

class Swiglu final : public Kernel {
 public:
  explicit Swiglu(const NodeDesc& node) {
    const plugin::SwigluParams p = plugin::swiglu_params(node, "");
    clamped_ = !p.plain();
    act_ = act_of(p);
  }

  void run(ExecContext& ctx) override {
    const Tensor& g = ctx.in(0);
    const Tensor& y = ctx.out(0);
    const moert_dtype t = g.dtype;
    const Act* act = clamped_ ? &act_ : nullptr;
    if (ctx.has(1)) {
      const Tensor& u = ctx.in(1);
      if (u.numel() != g.numel()) fail("inputs 'gate' and 'up' differ in size");
      parallel_for(g.numel(), kExpGrain, [&](int64_t begin, int64_t end) {
        swiglu_span(t, byte_ptr(g, begin), byte_ptr(u, begin), byte_ptr_mut(y, begin), end - begin,
                    act);
      });
      return;
    }
    // One input [..., 2I]: row r of y is silu(gate row r's first half) times
    // its second half.
    const int64_t half = y.rank == 0 ? 1 : y.dim(-1);
    if (g.rank < 1 || g.dim(-1) != 2 * half || g.numel() != 2 * y.numel())
      fail("input 'gate' is not [..., 2I] for the output's I");
    if (half == 0) return;
    parallel_for(y.numel(), kExpGrain, [&](int64_t begin, int64_t end) {
      for (int64_t pos = begin; pos < end;) {
        const int64_t row = pos / half, col = pos - row * half;
        const int64_t len = std::min(half - col, end - pos);
        const int64_t src = row * 2 * half + col;
        swiglu_span(t, byte_ptr(g, src), byte_ptr(g, src + half), byte_ptr_mut(y, pos), len, act);
        pos += len;
      }
    });
  }

 private:
  bool clamped_ = false;
  Act act_;
};

std::string check_binary(const NodeDesc& node) { return check_inputs(node); }

std::string check_unary(const NodeDesc& node) { return check_inputs(node); }

std::string check_swiglu(const NodeDesc& node) {
  std::string reason = check_inputs(node);
  if (!reason.empty()) return reason;
  if (!node.has_input(1)) {
    const TensorDesc g = node.input(0);
    if (g.rank() == 0 || g.static_dim(g.rank() - 1) < 0 || g.static_dim(g.rank() - 1) % 2 != 0)
      return "swiglu of one input needs a static, even last dim";
  }
  plugin::swiglu_params(node, "");  // throws (a reason) when invalid
  return "";
}

std::unique_ptr<Kernel> create_add(const NodeDesc&) {
  return std::make_unique<BinaryKernel>(Binary::add);
}
std::unique_ptr<Kernel> create_mul(const NodeDesc&) {
  return std::make_unique<BinaryKernel>(Binary::mul);
}
std::unique_ptr<Kernel> create_sigmoid(const NodeDesc&) {
  return std::make_unique<UnaryKernel>(Unary::sigmoid);
}
std::unique_ptr<Kernel> create_silu(const NodeDesc&) {
  return std::make_unique<UnaryKernel>(Unary::silu);
}
std::unique_ptr<Kernel> create_swiglu(const NodeDesc& node) {
  return std::make_unique<Swiglu>(node);
}

const KernelRegistration add_registration({"add", check_binary, create_add});
const KernelRegistration mul_registration({"mul", check_binary, create_mul});
const KernelRegistration sigmoid_registration({"sigmoid", check_unary, create_sigmoid});
const KernelRegistration silu_registration({"silu", check_unary, create_silu});
// Version 2: the clamped form (attributes alpha, limit, up_offset).
const KernelRegistration swiglu_registration(
    KernelDef("swiglu", check_swiglu, create_swiglu).at_version(2));

}  // namespace
}  // namespace moert::cpu
