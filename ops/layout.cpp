// Layout ops: they move elements without changing them, so they take every
// dtype and copy bytes exactly.  Tensors are dense and row-major.  An "axis"
// attribute may be negative, counting from the end as in Python.
//
// reshape(x) attr shape (ints, required) -> y with x's elements in the same
//   row-major order.  Entry > 0: that size; 0: x's dim at the same index
//   (which may be symbolic); -1 (at most one): inferred from the static
//   element count.  Every symbolic dim of x must be copied by a 0 at its
//   index, and the element counts must match.
// slice(x) attrs axis, start, length (ints, required) -> y: x restricted to
//   indices [start, start + length) along axis.  That dim of x must be
//   static, with 0 <= start, 0 <= length and start + length <= dim.
// transpose(x) attr perm (ints, required, a permutation of 0..rank-1) -> y
//   with y.dim(i) = x.dim(perm[i]) and y[i_0, …] = x[j] where j[perm[k]] = i_k.
// repeat(x) attrs axis, times (ints, required, times >= 1) -> y whose dim
//   along axis is x's times `times` (x's must be static); each slice is
//   repeated `times` times consecutively (repeat_interleave):
//   y[…, i, …] = x[…, i / times, …].
// concat(a, b, c optional, d optional) attr axis (int, required) -> y: the
//   inputs, in order, joined along axis.  Absent optional inputs are skipped.
//   All inputs have the same dtype, rank and dims except along axis, where
//   each must be static; y has a's dtype.
#include <cstring>

#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

namespace {

std::string ints_str(const std::vector<int64_t>& v) { return attr_value_str(AttrValue(v)); }

// Resolves a possibly negative axis attribute against `rank`.
size_t axis_attr(const InferContext& ctx, const Shape& shape) {
  const int64_t axis = ctx.attrs().get_int("axis");
  const int64_t rank = static_cast<int64_t>(shape.rank());
  ctx.require(axis >= -rank && axis < rank, "attribute 'axis' = " + std::to_string(axis) +
                                                " is out of range for shape " + shape.str());
  return static_cast<size_t>(axis < 0 ? axis + rank : axis);
}

size_t axis_attr(const KernelContext& ctx, size_t rank) {
  const int64_t axis = ctx.attrs().get_int("axis");
  return static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis);
}

// Product of dims [begin, end) of a concrete shape.
int64_t prod(const std::vector<int64_t>& shape, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= shape[i];
  return n;
}

// Copies `count` consecutive elements from src[si…] to dst[di…], bit-exact.
void copy_elements(const TensorView& dst, int64_t di, const TensorView& src, int64_t si,
                   int64_t count) {
  const size_t size = dtype_size(src.dtype);
  if (count <= 0) return;
  std::memcpy(static_cast<char*>(dst.data) + static_cast<size_t>(di) * size,
              static_cast<const char*>(src.data) + static_cast<size_t>(si) * size,
              static_cast<size_t>(count) * size);
}

void register_reshape(OpRegistry& registry) {
  OpDef d;
  d.name = "reshape";
  d.summary = "same elements, another shape (0 copies a dim, -1 infers one)";
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    const std::vector<int64_t> spec = ctx.attrs().get_ints("shape");
    const std::string where =
        "attribute 'shape' " + ints_str(spec) + " for input 'x' " + x.shape.str() + ": ";
    std::vector<Dim> dims(spec.size());
    std::vector<bool> copied(x.shape.rank(), false);
    int64_t infer_at = -1;
    int64_t known = 1;  // product of the static output dims other than -1
    for (size_t i = 0; i < spec.size(); ++i) {
      if (spec[i] > 0) {
        dims[i] = Dim(spec[i]);
        known *= spec[i];
      } else if (spec[i] == 0) {
        ctx.require(i < x.shape.rank(),
                    where + "entry " + std::to_string(i) + " is 0 but x has no dim there");
        dims[i] = x.shape[i];
        copied[i] = true;
        if (dims[i].is_static()) known *= dims[i].fixed;
      } else if (spec[i] == -1) {
        ctx.require(infer_at < 0, where + "more than one entry is -1");
        infer_at = static_cast<int64_t>(i);
      } else {
        ctx.fail(where + "entry " + std::to_string(i) + " is " + std::to_string(spec[i]) +
                 "; entries are > 0, 0 or -1");
      }
    }
    int64_t total = 1;  // product of x's static dims
    for (size_t i = 0; i < x.shape.rank(); ++i) {
      if (x.shape[i].is_static())
        total *= x.shape[i].fixed;
      else
        ctx.require(copied[i], where + "symbolic dim " + std::to_string(i) + " (" +
                                   x.shape[i].str() + ") must be copied with 0 at index " +
                                   std::to_string(i));
    }
    if (infer_at >= 0) {
      // With a zero-sized entry any size fits the -1; refuse to guess.
      ctx.require(known != 0, where + "cannot infer the -1 entry beside a zero-sized one");
      ctx.require(total % known == 0,
                  where + "cannot infer the -1 entry: " + std::to_string(total) +
                      " elements are not a multiple of " + std::to_string(known));
      dims[static_cast<size_t>(infer_at)] = Dim(total / known);
      known *= total / known;
    }
    ctx.require(known == total, where + "x has " + std::to_string(total) +
                                    " static elements but the shape holds " +
                                    std::to_string(known));
    return std::vector<ValueInfo>{{x.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    if (x.numel() != y.numel())
      ctx.fail("input 'x' " + dims_str(x.shape) + " and output " + dims_str(y.shape) +
               " have different element counts");
    copy_elements(y, 0, x, 0, x.numel());
  };
  registry.add(std::move(d));
}

void register_slice(OpRegistry& registry) {
  OpDef d;
  d.name = "slice";
  d.summary = "a contiguous range of indices along one axis";
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    const size_t axis = axis_attr(ctx, x.shape);
    const Dim& dim = x.shape[axis];
    ctx.require(dim.is_static(), "input 'x' " + x.shape.str() + " must have a static dim " +
                                     std::to_string(axis) + " to slice it");
    const int64_t start = ctx.attrs().get_int("start");
    const int64_t length = ctx.attrs().get_int("length");
    ctx.require(start >= 0 && length >= 0 && start <= dim.fixed - length,
                "attributes 'start' = " + std::to_string(start) +
                    " and 'length' = " + std::to_string(length) +
                    " must satisfy 0 <= start, 0 <= length, start + "
                    "length <= " +
                    std::to_string(dim.fixed) + " (dim " + std::to_string(axis) + " of input 'x' " +
                    x.shape.str() + ")");
    std::vector<Dim> dims = x.shape.dims();
    dims[axis] = Dim(length);
    return std::vector<ValueInfo>{{x.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    const size_t axis = axis_attr(ctx, x.shape.size());
    const int64_t start = ctx.attrs().get_int("start");
    const int64_t length = ctx.attrs().get_int("length");
    const int64_t outer = prod(x.shape, 0, axis);
    const int64_t inner = prod(x.shape, axis + 1, x.shape.size());
    const int64_t dim = x.shape[axis];
    for (int64_t o = 0; o < outer; ++o)
      copy_elements(y, o * length * inner, x, (o * dim + start) * inner, length * inner);
  };
  registry.add(std::move(d));
}

void register_transpose(OpRegistry& registry) {
  OpDef d;
  d.name = "transpose";
  d.summary = "permute the axes";
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    const std::vector<int64_t> perm = ctx.attrs().get_ints("perm");
    const size_t rank = x.shape.rank();
    std::vector<bool> seen(rank, false);
    bool ok = perm.size() == rank;
    for (size_t i = 0; ok && i < perm.size(); ++i) {
      ok = perm[i] >= 0 && perm[i] < static_cast<int64_t>(rank) &&
           !seen[static_cast<size_t>(perm[i])];
      if (ok) seen[static_cast<size_t>(perm[i])] = true;
    }
    ctx.require(ok, "attribute 'perm' " + ints_str(perm) + " is not a permutation of 0.." +
                        std::to_string(static_cast<int64_t>(rank) - 1) + " for input 'x' " +
                        x.shape.str());
    std::vector<Dim> dims(rank);
    for (size_t i = 0; i < rank; ++i) dims[i] = x.shape[static_cast<size_t>(perm[i])];
    return std::vector<ValueInfo>{{x.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    const std::vector<int64_t> perm = ctx.attrs().get_ints("perm");
    const size_t rank = x.shape.size();
    std::vector<int64_t> x_stride(rank, 1);
    for (size_t i = rank; i-- > 1;) x_stride[i - 1] = x_stride[i] * x.shape[i];
    for (int64_t flat = 0; flat < y.numel(); ++flat) {
      // Output axis i walks input axis perm[i].
      int64_t rest = flat;
      int64_t xi = 0;
      for (size_t i = rank; i-- > 0;) {
        xi += (rest % y.shape[i]) * x_stride[static_cast<size_t>(perm[i])];
        rest /= y.shape[i];
      }
      copy_elements(y, flat, x, xi, 1);
    }
  };
  registry.add(std::move(d));
}

void register_repeat(OpRegistry& registry) {
  OpDef d;
  d.name = "repeat";
  d.summary = "repeat each slice along an axis `times` times consecutively";
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    const size_t axis = axis_attr(ctx, x.shape);
    const int64_t times = ctx.attrs().get_int("times");
    ctx.require(times >= 1, "attribute 'times' must be >= 1, got " + std::to_string(times));
    ctx.require(x.shape[axis].is_static(), "input 'x' " + x.shape.str() +
                                               " must have a static dim " + std::to_string(axis) +
                                               " to repeat it");
    std::vector<Dim> dims = x.shape.dims();
    dims[axis] = Dim(dims[axis].fixed * times);
    return std::vector<ValueInfo>{{x.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    const size_t axis = axis_attr(ctx, x.shape.size());
    const int64_t times = ctx.attrs().get_int("times");
    const int64_t outer = prod(x.shape, 0, axis);
    const int64_t inner = prod(x.shape, axis + 1, x.shape.size());
    const int64_t dim = x.shape[axis];
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < dim * times; ++i)
        copy_elements(y, (o * dim * times + i) * inner, x, (o * dim + i / times) * inner, inner);
  };
  registry.add(std::move(d));
}

void register_concat(OpRegistry& registry) {
  OpDef d;
  d.name = "concat";
  d.summary = "join two to four tensors along an axis";
  d.inputs = {{"a"}, {"b"}, {"c", true}, {"d", true}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    static const char* const kNames[] = {"a", "b", "c", "d"};
    const ValueInfo& a = ctx.in(0);
    const size_t axis = axis_attr(ctx, a.shape);
    std::vector<Dim> dims = a.shape.dims();
    dims[axis] = Dim(0);
    for (size_t k = 0; k < ctx.inputs.size(); ++k) {
      if (!ctx.has(k)) continue;
      const ValueInfo& v = ctx.in(k);
      const std::string name = std::string("input '") + kNames[k] + "' ";
      ctx.require(v.dtype == a.dtype, name + "is " + std::string(dtype_name(v.dtype)) +
                                          ", input 'a' is " + std::string(dtype_name(a.dtype)));
      bool same = v.shape.rank() == a.shape.rank();
      for (size_t i = 0; same && i < a.shape.rank(); ++i)
        same = i == axis || v.shape[i] == a.shape[i];
      ctx.require(same, name + v.shape.str() + " must match input 'a' " + a.shape.str() +
                            " except along axis " + std::to_string(axis));
      ctx.require(v.shape[axis].is_static(), name + v.shape.str() + " must have a static dim " +
                                                 std::to_string(axis) + " to concatenate");
      dims[axis].fixed += v.shape[axis].fixed;
    }
    return std::vector<ValueInfo>{{a.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& y = ctx.out(0);
    const size_t axis = axis_attr(ctx, y.shape.size());
    const int64_t outer = prod(y.shape, 0, axis);
    const int64_t inner = prod(y.shape, axis + 1, y.shape.size());
    const int64_t y_dim = y.shape[axis];
    int64_t offset = 0;  // where the current input starts along axis
    for (size_t k = 0; k < ctx.inputs.size(); ++k) {
      if (!ctx.has(k) && k >= 2) continue;
      const TensorView& v = ctx.in(k);
      const int64_t dim = v.shape[axis];
      for (int64_t o = 0; o < outer; ++o)
        copy_elements(y, (o * y_dim + offset) * inner, v, o * dim * inner, dim * inner);
      offset += dim;
    }
  };
  registry.add(std::move(d));
}

}  // namespace

void register_layout(OpRegistry& registry) {
  register_reshape(registry);
  register_slice(registry);
  register_transpose(registry);
  register_repeat(registry);
  register_concat(registry);
}

}  // namespace moert::ops
