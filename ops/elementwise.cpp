// Elementwise ops.  Every input is f32, bf16 or f16; outputs keep the dtype.
//
// add(a, b) -> y = a + b;  mul(a, b) -> y = a * b.
//   b broadcasts to a's shape as in NumPy but one way only: rank(b) <=
//   rank(a), the shapes are aligned on the right, and each dim of b equals the
//   matching dim of a or is 1.  y has a's shape and dtype; a and b must have
//   the same dtype.
// sigmoid(x) -> y = 1 / (1 + exp(-x)).
// silu(x) -> y = x * sigmoid(x).
// swiglu(gate, up optional):
//   with two inputs (same shape and dtype): y = act(gate, up);
//   with one input x [..., 2I] (last dim static and even): gate = x[..., :I],
//   up = x[..., I:], y [..., I] = act(gate, up).
//   act(g, u) = silu(g) * u by default.  Attributes alpha (float, default 1),
//   limit (float >= 0, default 0 = none) and up_offset (float, default 0),
//   since version 2, give the clamped form of ops/swiglu_params.h:
//   g' = min(g, limit), u' = clamp(u, -limit, limit),
//   act = g' sigmoid(alpha g') (u' + up_offset)  (GPT-OSS: 1.702, 7, 1).
#include <cmath>
#include <functional>

#include "kernel_util.h"
#include "ops.h"
#include "swiglu_params.h"

namespace moert::ops {

namespace {

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
double silu(double v) { return v * sigmoid(v); }

void register_binary(OpRegistry& registry, const std::string& name, const std::string& summary,
                     std::function<double(double, double)> fn) {
  OpDef d;
  d.name = name;
  d.summary = summary;
  d.inputs = {{"a"}, {"b"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& a = ctx.in(0);
    const ValueInfo& b = ctx.in(1);
    require_activation(ctx, 0, "input 'a'");
    require_activation(ctx, 1, "input 'b'");
    ctx.require(a.dtype == b.dtype, "inputs 'a' (" + std::string(dtype_name(a.dtype)) +
                                        ") and 'b' (" + std::string(dtype_name(b.dtype)) +
                                        ") must have the same dtype");
    const size_t ra = a.shape.rank();
    const size_t rb = b.shape.rank();
    bool ok = rb <= ra;
    for (size_t i = 0; ok && i < rb; ++i) {
      const Dim& db = b.shape[rb - 1 - i];
      ok = db == a.shape[ra - 1 - i] || db == Dim(1);
    }
    ctx.require(ok, "input 'b' " + b.shape.str() + " does not broadcast to input 'a' " +
                        a.shape.str() +
                        " (b's dims, aligned on the right, must equal a's or be 1)");
    return std::vector<ValueInfo>{{a.dtype, a.shape}};
  };
  d.reference = [fn](KernelContext& ctx) {
    const TensorView& a = ctx.in(0);
    const TensorView& b = ctx.in(1);
    const TensorView& y = ctx.out(0);
    // b's stride along each of a's axes: 0 where b is broadcast (missing or 1).
    const size_t ra = a.shape.size();
    const size_t rb = b.shape.size();
    std::vector<int64_t> b_stride(ra, 0);
    int64_t stride = 1;
    for (size_t i = 0; i < rb; ++i) {
      const int64_t db = b.shape[rb - 1 - i];
      if (db != 1) b_stride[ra - 1 - i] = stride;
      stride *= db;
    }
    for (int64_t flat = 0; flat < a.numel(); ++flat) {
      int64_t rest = flat;
      int64_t bi = 0;
      for (size_t axis = ra; axis-- > 0;) {
        bi += (rest % a.shape[axis]) * b_stride[axis];
        rest /= a.shape[axis];
      }
      y.set(flat, fn(a.get(flat), b.get(bi)));
    }
  };
  registry.add(std::move(d));
}

void register_unary(OpRegistry& registry, const std::string& name, const std::string& summary,
                    double (*fn)(double)) {
  OpDef d;
  d.name = name;
  d.summary = summary;
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    require_activation(ctx, 0, "input 'x'");
    return std::vector<ValueInfo>{ctx.in(0)};
  };
  d.reference = [fn](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    for (int64_t i = 0; i < x.numel(); ++i) y.set(i, fn(x.get(i)));
  };
  registry.add(std::move(d));
}

void register_swiglu(OpRegistry& registry) {
  OpDef d;
  d.name = "swiglu";
  d.summary = "silu(gate) * up (or its clamped form), from two tensors or the halves of one";
  d.inputs = {{"gate"}, {"up", true}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    SwigluParams p;
    if (const std::string problem = swiglu_params(AttrReader{ctx.attrs()}, "", &p);
        !problem.empty())
      ctx.fail(problem);
    const ValueInfo& gate = ctx.in(0);
    require_activation(ctx, 0, "input 'gate'");
    if (ctx.has(1)) {
      const ValueInfo& up = ctx.in(1);
      ctx.require(up.dtype == gate.dtype && up.shape == gate.shape,
                  "input 'up' " + std::string(dtype_name(up.dtype)) + up.shape.str() +
                      " must have the dtype and shape of input 'gate' " +
                      std::string(dtype_name(gate.dtype)) + gate.shape.str());
      return std::vector<ValueInfo>{gate};
    }
    ctx.require(gate.shape.rank() >= 1,
                "input 'gate' alone must be [..., 2I], got " + gate.shape.str());
    const Dim& last = gate.shape.at(-1);
    ctx.require(last.is_static() && last.fixed % 2 == 0,
                "input 'gate' alone must be [..., 2I] with a static, even last dim, got " +
                    gate.shape.str());
    std::vector<Dim> dims = gate.shape.dims();
    dims.back() = Dim(last.fixed / 2);
    return std::vector<ValueInfo>{{gate.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    SwigluParams p;
    swiglu_params(AttrReader{ctx.attrs()}, "", &p);
    const TensorView& gate = ctx.in(0);
    const TensorView& y = ctx.out(0);
    if (ctx.has(1)) {
      const TensorView& up = ctx.in(1);
      for (int64_t i = 0; i < gate.numel(); ++i) y.set(i, p.apply(gate.get(i), up.get(i)));
      return;
    }
    const int64_t half = y.dim(-1);
    const int64_t rows = half ? y.numel() / half : 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < half; ++i)
        y.set(r * half + i, p.apply(gate.get(r * 2 * half + i), gate.get(r * 2 * half + half + i)));
  };
  registry.add(std::move(d));
}

}  // namespace

void register_elementwise(OpRegistry& registry) {
  register_binary(registry, "add", "a + b, b broadcast to a's shape",
                  [](double a, double b) { return a + b; });
  register_binary(registry, "mul", "a * b, b broadcast to a's shape",
                  [](double a, double b) { return a * b; });
  register_unary(registry, "sigmoid", "1 / (1 + exp(-x))", sigmoid);
  register_unary(registry, "silu", "x * sigmoid(x)", silu);
  register_swiglu(registry);
}

}  // namespace moert::ops
