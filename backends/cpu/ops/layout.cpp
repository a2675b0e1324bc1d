// Layout kernels (ops/layout.cpp): reshape, slice, transpose, repeat and
// concat.  They move elements without looking at them, so every dtype runs
// (floats, i8/u8/i32/i64, bool) and bytes are copied exactly.  Contiguous
// runs go through memcpy; transpose handles any rank and permutation, with
// square tiles when the innermost axis moves, so that both the reads and the
// writes stay within a few cache lines.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "kernel.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

// Bytes per thread below which a copy stays on one thread.
constexpr int64_t kCopyGrain = 256 * 1024;

// Copies `count` runs of `run` bytes: run i from src + i * src_stride to
// dst + i * dst_stride.  Splits the total bytes between threads, so one long
// run is shared as well as many short ones; runs of one element of 1, 2, 4
// or 8 bytes are copied as integers rather than through memcpy.
void copy_runs(char* dst, int64_t dst_stride, const char* src, int64_t src_stride, int64_t count,
               int64_t run) {
  if (count <= 0 || run <= 0) return;
  auto element_runs = [&](auto tag) {
    using T = decltype(tag);
    parallel_for(count, kCopyGrain / static_cast<int64_t>(sizeof(T)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        T v;
        std::memcpy(&v, src + i * src_stride, sizeof(T));
        std::memcpy(dst + i * dst_stride, &v, sizeof(T));
      }
    });
  };
  switch (run) {
    case 1:
      return element_runs(uint8_t{});
    case 2:
      return element_runs(uint16_t{});
    case 4:
      return element_runs(uint32_t{});
    case 8:
      return element_runs(uint64_t{});
    default:
      break;
  }
  parallel_for(count * run, kCopyGrain, [&](int64_t begin, int64_t end) {
    for (int64_t pos = begin; pos < end;) {
      const int64_t i = pos / run, off = pos - i * run;
      const int64_t len = std::min(run - off, end - pos);
      std::memcpy(dst + i * dst_stride + off, src + i * src_stride + off, static_cast<size_t>(len));
      pos += len;
    }
  });
}

int64_t prod(const Tensor& t, uint32_t begin, uint32_t end) {
  int64_t n = 1;
  for (uint32_t i = begin; i < end; ++i) n *= t.shape[i];
  return n;
}

size_t element_size(const Tensor& t) { return plugin::dtype_size(t.dtype); }

// A possibly negative axis attribute resolved against the rank, checked.
uint32_t resolve_axis(const NodeDesc& node, size_t rank) {
  const int64_t r = static_cast<int64_t>(rank);
  const int64_t axis = node.attr_int("axis", 0);
  require(axis >= -r && axis < r, "attribute 'axis' = " + std::to_string(axis) +
                                      " is out of range for rank " + std::to_string(rank));
  return static_cast<uint32_t>(axis < 0 ? axis + r : axis);
}

// Every dtype of the ABI; layout ops never look at the values.
std::string check_any(const NodeDesc& node) {
  for (size_t i = 0; i < node.num_inputs(); ++i)
    if (node.has_input(i) && node.input(i).rank() > MOERT_MAX_RANK)
      return "rank above MOERT_MAX_RANK";
  return "";
}

// ---- reshape ------------------------------------------------------------

class Reshape final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    if (x.numel() != y.numel())
      fail("input 'x' has " + std::to_string(x.numel()) + " elements, the output " +
           std::to_string(y.numel()));
    if (x.data == y.data) return;
    const int64_t bytes = static_cast<int64_t>(x.nbytes());
    copy_runs(static_cast<char*>(y.data), 0, static_cast<const char*>(x.data), 0, 1, bytes);
  }
};

// ---- slice --------------------------------------------------------------

class Slice final : public Kernel {
 public:
  explicit Slice(const NodeDesc& node)
      : axis_(resolve_axis(node, node.input(0).rank())),
        start_(node.attr_int("start", 0)),
        length_(node.attr_int("length", 0)) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    const int64_t dim = x.shape[axis_];
    if (start_ < 0 || length_ < 0 || start_ + length_ > dim)
      fail("slice [" + std::to_string(start_) + ", " + std::to_string(start_ + length_) +
           ") outside dim " + std::to_string(axis_) + " of size " + std::to_string(dim));
    const int64_t outer = prod(x, 0, axis_);
    const int64_t inner = prod(x, axis_ + 1, x.rank) * static_cast<int64_t>(element_size(x));
    copy_runs(static_cast<char*>(y.data), length_ * inner,
              static_cast<const char*>(x.data) + start_ * inner, dim * inner, outer,
              length_ * inner);
  }

 private:
  uint32_t axis_;
  int64_t start_, length_;
};

// ---- repeat -------------------------------------------------------------

class Repeat final : public Kernel {
 public:
  explicit Repeat(const NodeDesc& node)
      : axis_(resolve_axis(node, node.input(0).rank())), times_(node.attr_int("times", 1)) {
    require(times_ >= 1, "attribute 'times' must be >= 1, got " + std::to_string(times_));
  }
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    // Slice j = (o, i) of x, o over the outer dims and i along axis, lands
    // at slices j * times + t of y for t < times: one pass over the slices
    // of x, each written `times` times.
    const int64_t slices = prod(x, 0, axis_ + 1);
    const int64_t inner = prod(x, axis_ + 1, x.rank) * static_cast<int64_t>(element_size(x));
    if (y.numel() != x.numel() * times_) fail("output size is not input size times 'times'");
    if (inner == 0) return;
    const auto* src = static_cast<const char*>(x.data);
    auto* dst = static_cast<char*>(y.data);
    const int64_t times = times_;
    parallel_for(slices, std::max<int64_t>(1, kCopyGrain / (inner * times)),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t j = begin; j < end; ++j)
                     for (int64_t t = 0; t < times; ++t)
                       std::memcpy(dst + (j * times + t) * inner, src + j * inner,
                                   static_cast<size_t>(inner));
                 });
  }

 private:
  uint32_t axis_;
  int64_t times_;
};

// ---- concat -------------------------------------------------------------

class Concat final : public Kernel {
 public:
  explicit Concat(const NodeDesc& node) : axis_(resolve_axis(node, node.input(0).rank())) {}
  void run(ExecContext& ctx) override {
    const Tensor& y = ctx.out(0);
    const int64_t outer = prod(y, 0, axis_);
    const int64_t inner_elements = prod(y, axis_ + 1, y.rank);
    const int64_t inner = inner_elements * static_cast<int64_t>(element_size(y));
    const int64_t y_dim = y.shape[axis_];
    int64_t offset = 0;  // where the current input starts along axis
    for (size_t k = 0; k < ctx.inputs.size(); ++k) {
      if (!ctx.has(k)) continue;
      const Tensor& v = ctx.in(k);
      const int64_t dim = v.shape[axis_];
      if (v.rank != y.rank || offset + dim > y_dim || v.numel() != outer * dim * inner_elements)
        fail("input " + std::to_string(k) + " does not fit the output");
      copy_runs(static_cast<char*>(y.data) + offset * inner, y_dim * inner,
                static_cast<const char*>(v.data), dim * inner, outer, dim * inner);
      offset += dim;
    }
    if (offset != y_dim) fail("the inputs do not fill the output along the axis");
  }

 private:
  uint32_t axis_;
};

// ---- transpose ----------------------------------------------------------

// The permutation folded: axes of size 1 dropped, and output axes that walk
// consecutive input axes in order merged into one.  Output axis k has size
// size[k] and input stride x_stride[k] (elements); the output is dense.
struct TransposePlan {
  int count = 0;
  std::array<int64_t, MOERT_MAX_RANK> size{};
  std::array<int64_t, MOERT_MAX_RANK> x_stride{};
};

TransposePlan plan_transpose(const Tensor& x, const std::vector<int64_t>& perm) {
  std::array<int64_t, MOERT_MAX_RANK> stride{};
  int64_t s = 1;
  for (uint32_t i = x.rank; i-- > 0;) {
    stride[i] = s;
    s *= x.shape[i];
  }
  TransposePlan p;
  int64_t last_axis = -2;  // input axis of the previous kept output axis
  for (size_t k = 0; k < perm.size(); ++k) {
    const int64_t a = perm[k];
    const int64_t n = x.shape[static_cast<size_t>(a)];
    if (n == 1) continue;
    // Merge when this axis is the input axis just after the previous one,
    // with only size-1 axes between them.
    bool merge = p.count > 0 && a > last_axis;
    for (int64_t between = last_axis + 1; merge && between < a; ++between)
      merge = x.shape[static_cast<size_t>(between)] == 1;
    if (merge) {
      p.size[static_cast<size_t>(p.count - 1)] *= n;
      p.x_stride[static_cast<size_t>(p.count - 1)] = stride[static_cast<size_t>(a)];
    } else {
      p.size[static_cast<size_t>(p.count)] = n;
      p.x_stride[static_cast<size_t>(p.count++)] = stride[static_cast<size_t>(a)];
    }
    last_axis = a;
  }
  return p;
}

// Copies elements of type T (a same-size stand-in for the dtype).
template <typename T>
void transpose_elements(const TransposePlan& p, const T* x, T* y, int64_t total) {
  const int k = p.count;
  const int64_t inner = p.size[static_cast<size_t>(k - 1)];
  if (p.x_stride[static_cast<size_t>(k - 1)] == 1) {
    // The innermost output axis is contiguous in x as well: copy runs,
    // walking the outer output axes with an odometer.
    const int64_t runs = total / inner;
    parallel_for(runs, std::max<int64_t>(1, kCopyGrain / (inner * int64_t{sizeof(T)})),
                 [&](int64_t begin, int64_t end) {
                   std::array<int64_t, MOERT_MAX_RANK> idx{};
                   int64_t xo = 0, rest = begin;
                   for (int a = k - 1; a-- > 0;) {
                     const size_t as = static_cast<size_t>(a);
                     idx[as] = rest % p.size[as];
                     rest /= p.size[as];
                     xo += idx[as] * p.x_stride[as];
                   }
                   for (int64_t r = begin; r < end; ++r) {
                     std::memcpy(y + r * inner, x + xo, static_cast<size_t>(inner) * sizeof(T));
                     for (int a = k - 1; a-- > 0;) {
                       const size_t as = static_cast<size_t>(a);
                       xo += p.x_stride[as];
                       if (++idx[as] < p.size[as]) break;
                       xo -= idx[as] * p.x_stride[as];
                       idx[as] = 0;
                     }
                   }
                 });
    return;
  }
  // The innermost output axis q = k - 1 is strided in x; axis c, the one
  // contiguous in x, is strided in y.  Tiles of kTile x kTile over (c, q)
  // read and write whole cache lines; the other axes are walked per tile.
  constexpr int64_t kTile = 32;
  int c = 0;
  while (p.x_stride[static_cast<size_t>(c)] != 1) ++c;
  const int q = k - 1;
  std::array<int64_t, MOERT_MAX_RANK> y_stride{};
  int64_t s = 1;
  for (int a = k; a-- > 0;) {
    y_stride[static_cast<size_t>(a)] = s;
    s *= p.size[static_cast<size_t>(a)];
  }
  const int64_t nc = p.size[static_cast<size_t>(c)], nq = p.size[static_cast<size_t>(q)];
  const int64_t tc = (nc + kTile - 1) / kTile, tq = (nq + kTile - 1) / kTile;
  const int64_t others = total / (nc * nq);
  const int64_t xs_q = p.x_stride[static_cast<size_t>(q)];
  const int64_t ys_c = y_stride[static_cast<size_t>(c)];
  parallel_for(others * tc * tq,
               std::max<int64_t>(1, kCopyGrain / (kTile * kTile * int64_t{sizeof(T)})),
               [&](int64_t begin, int64_t end) {
                 for (int64_t task = begin; task < end; ++task) {
                   int64_t rest = task;
                   const int64_t jq = rest % tq;
                   rest /= tq;
                   const int64_t jc = rest % tc;
                   rest /= tc;
                   // Offsets of the other axes' indices, innermost last.
                   int64_t xo = 0, yo = 0;
                   for (int a = k; a-- > 0;) {
                     if (a == c || a == q) continue;
                     const size_t as = static_cast<size_t>(a);
                     const int64_t i = rest % p.size[as];
                     rest /= p.size[as];
                     xo += i * p.x_stride[as];
                     yo += i * y_stride[as];
                   }
                   const int64_t c0 = jc * kTile, c1 = std::min(nc, c0 + kTile);
                   const int64_t q0 = jq * kTile, q1 = std::min(nq, q0 + kTile);
                   for (int64_t ic = c0; ic < c1; ++ic) {
                     const T* xr = x + xo + ic;
                     T* yr = y + yo + ic * ys_c;
                     for (int64_t iq = q0; iq < q1; ++iq) yr[iq] = xr[iq * xs_q];
                   }
                 }
               });
}

class Transpose final : public Kernel {
 public:
  explicit Transpose(const NodeDesc& node) : perm_(node.attr_ints("perm", {})) {
    const size_t rank = node.input(0).rank();
    std::vector<bool> seen(rank, false);
    bool ok = perm_.size() == rank;
    for (size_t i = 0; ok && i < rank; ++i) {
      ok = perm_[i] >= 0 && perm_[i] < static_cast<int64_t>(rank) &&
           !seen[static_cast<size_t>(perm_[i])];
      if (ok) seen[static_cast<size_t>(perm_[i])] = true;
    }
    require(ok, "attribute 'perm' is not a permutation of the input's axes");
  }
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    const int64_t total = x.numel();
    if (y.numel() != total) fail("output size differs from the input's");
    if (total == 0) return;
    const TransposePlan p = plan_transpose(x, perm_);
    if (p.count <= 1) {  // nothing moves relative to the others
      copy_runs(static_cast<char*>(y.data), 0, static_cast<const char*>(x.data), 0, 1,
                static_cast<int64_t>(x.nbytes()));
      return;
    }
    switch (element_size(x)) {
      case 1:
        return transpose_elements(p, x.as<uint8_t>(), y.as<uint8_t>(), total);
      case 2:
        return transpose_elements(p, x.as<uint16_t>(), y.as<uint16_t>(), total);
      case 4:
        return transpose_elements(p, x.as<uint32_t>(), y.as<uint32_t>(), total);
      default:
        return transpose_elements(p, x.as<uint64_t>(), y.as<uint64_t>(), total);
    }
  }

 private:
  std::vector<int64_t> perm_;
};

std::unique_ptr<Kernel> create_reshape(const NodeDesc&) { return std::make_unique<Reshape>(); }
std::unique_ptr<Kernel> create_slice(const NodeDesc& n) { return std::make_unique<Slice>(n); }
std::unique_ptr<Kernel> create_transpose(const NodeDesc& n) {
  return std::make_unique<Transpose>(n);
}
std::unique_ptr<Kernel> create_repeat(const NodeDesc& n) { return std::make_unique<Repeat>(n); }
std::unique_ptr<Kernel> create_concat(const NodeDesc& n) { return std::make_unique<Concat>(n); }

const KernelRegistration reshape_registration({"reshape", check_any, create_reshape});
const KernelRegistration slice_registration({"slice", check_any, create_slice});
const KernelRegistration transpose_registration({"transpose", check_any, create_transpose});
const KernelRegistration repeat_registration({"repeat", check_any, create_repeat});
const KernelRegistration concat_registration({"concat", check_any, create_concat});

}  // namespace
}  // namespace moert::cpu
