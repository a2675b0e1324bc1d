// linear(x [..., K], weight [N, K], bias [N] optional, weight_scale optional)
//   -> y [..., N];  y[r, n] = sum_k x[r, k] * W[n, k] (+ bias[n]).
//   Attributes: block_size (ints, two entries > 0, default [128, 128]) and
//   dtype (string, optional: the output dtype, f32/bf16/f16; default x's).
//   x is f32, bf16 or f16, its leading dims may be symbolic; N and K must be
//   static.  weight is f32, bf16, f16 or f8_e4m3.  An f8_e4m3 weight requires
//   weight_scale, f32 [ceil(N / b0), ceil(K / b1)] with [b0, b1] = block_size,
//   and is dequantised as W[n, k] = e4m3(weight[n, k]) * scale[n / b0, k / b1]
//   (DeepSeek-V3's weight_scale_inv); other weight dtypes take no scale.
//   Attribute quant (string, since version 2, default "none"): the weight is
//   packed, "int8", "int4" or "mxfp4", with weight_scale as ops/weight_format.h
//   defines them; weight is then [N, stored K] (ceil(K / 2) bytes for the
//   4-bit formats) and K is x's last dim.
//   Attribute products (string, since version 2, default "exact"): how the
//   products may be formed.  "exact": f32 products of x as given (bf16/f16
//   x may still be taken by a bf16 matrix unit as they are; f32 x never is
//   rounded).  "bf16": the backend may round x and the (dequantised) weight
//   to bf16 before multiplying, a relative error of at most 2^-9 each,
//   accumulating in f32 -- the products a bf16 matrix unit forms, as
//   llama.cpp forms them for narrow weights.  "int8" (for packed weights):
//   what "bf16" permits, and x may instead be quantised to int8 in blocks
//   of 32 consecutive elements along K (scale = the block's max |x| / 127,
//   round to nearest) and multiplied by the packed codes exactly, in
//   integers, as llama.cpp forms Q4_0/Q8_0 products: an error of at most
//   (block max |x|) / 254 per element of x.  The reference computes exact
//   products in every case: a mode permits a rounding, it does not require
//   one.
//   bias may be any float dtype.
//
// matmul(a [B..., M, K], b [B..., K, N]) -> y [B..., M, N], attribute
//   transpose_b (int 0/1, default 0; when 1, b is [B..., N, K]):
//   y[.., m, n] = sum_k a[.., m, k] * b[.., k, n].  a and b have equal rank
//   >= 2 and equal batch dims (no broadcasting); any dim may be symbolic (dims
//   are compared as such).  a and b are f32, bf16 or f16 (not necessarily the
//   same); y has a's dtype.
#include <optional>

#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

namespace {

std::string ints_str(const std::vector<int64_t>& v) { return attr_value_str(AttrValue(v)); }

std::vector<int64_t> block_size(const Attributes& attrs) {
  return attrs.get_ints("block_size", {128, 128});
}

void register_linear_op(OpRegistry& registry) {
  OpDef d;
  d.name = "linear";
  d.summary = "x times the transpose of a (possibly fp8 block-scaled or packed) weight, plus bias";
  d.inputs = {{"x"}, {"weight"}, {"bias", true}, {"weight_scale", true}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& x = ctx.in(0);
    const ValueInfo& w = ctx.in(1);
    require_activation(ctx, 0, "input 'x'");
    ctx.require(x.shape.rank() >= 1, "input 'x' must have rank >= 1, got " + x.shape.str());
    const WeightFormat format = weight_format(ctx.attrs());
    ctx.require(w.shape.rank() == 2 && w.shape.is_static(),
                "input 'weight' must be a static [N, stored K], got " + w.shape.str());
    ctx.require(x.shape.at(-1).is_static(),
                "the last dim of input 'x' " + x.shape.str() + " must be static");
    const int64_t n = w.shape[0].fixed;
    const int64_t k = x.shape.at(-1).fixed;
    ctx.require(
        stored_cols(format, k) == w.shape[1].fixed,
        "the last dim of input 'x' " + x.shape.str() + " must equal K of input 'weight' " +
            w.shape.str() +
            (format == WeightFormat::none ? std::string()
                                          : std::string(" (two columns per byte for quant \"") +
                                                weight_format_name(format) + "\")"));
    const std::vector<int64_t> block = block_size(ctx.attrs());
    ctx.require(block.size() == 2 && block[0] > 0 && block[1] > 0,
                "attribute 'block_size' must be two sizes > 0, got " + ints_str(block));
    if (ctx.has(2)) {
      const ValueInfo& b = ctx.in(2);
      require_float(ctx, 2, "input 'bias'");
      ctx.require(b.shape == Shape{Dim(n)},
                  "input 'bias' must be [N] = [" + std::to_string(n) + "], got " + b.shape.str());
    }
    check_weight_format(ctx, format, 1, 3, {}, n, k, block, [](size_t i) {
      return std::string(i == 1 ? "input 'weight'" : "input 'weight_scale'");
    });
    DType out = x.dtype;
    if (ctx.attrs().has("dtype")) {
      const std::string name = ctx.attrs().get_string("dtype");
      const std::optional<DType> t = dtype_from_name(name);
      ctx.require(t.has_value() && is_activation_dtype(*t),
                  "attribute 'dtype' is '" + name + "'; it must be f32, bf16 or f16");
      out = *t;
    }
    std::vector<Dim> dims = x.shape.dims();
    dims.back() = Dim(n);
    return std::vector<ValueInfo>{{out, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& w = ctx.in(1);
    const TensorView& y = ctx.out(0);
    const int64_t n = w.dim(0);
    const int64_t k = x.dim(-1);
    const std::vector<int64_t> block = block_size(ctx.attrs());
    const TensorView* scale = ctx.has(3) ? &ctx.in(3) : nullptr;
    const std::vector<double> weight =
        dequantize_matrix(w, scale, 0, n, k, block[0], block[1], weight_format(ctx.attrs()));
    const int64_t rows = n ? y.numel() / n : 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double acc = ctx.has(2) ? ctx.in(2).get(j) : 0.0;
        for (int64_t i = 0; i < k; ++i)
          acc += x.get(r * k + i) * weight[static_cast<size_t>(j * k + i)];
        y.set(r * n + j, acc);
      }
  };
  registry.add(std::move(d));
}

void register_matmul(OpRegistry& registry) {
  OpDef d;
  d.name = "matmul";
  d.summary = "batched matrix product, optionally with the second operand transposed";
  d.inputs = {{"a"}, {"b"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& a = ctx.in(0);
    const ValueInfo& b = ctx.in(1);
    require_activation(ctx, 0, "input 'a'");
    require_activation(ctx, 1, "input 'b'");
    const int64_t tb = ctx.attrs().get_int("transpose_b", 0);
    ctx.require(tb == 0 || tb == 1,
                "attribute 'transpose_b' must be 0 or 1, got " + std::to_string(tb));
    const size_t rank = a.shape.rank();
    ctx.require(rank >= 2, "input 'a' must have rank >= 2, got " + a.shape.str());
    ctx.require(b.shape.rank() == rank, "inputs 'a' " + a.shape.str() + " and 'b' " +
                                            b.shape.str() + " must have the same rank");
    for (size_t i = 0; i + 2 < rank; ++i)
      ctx.require(a.shape[i] == b.shape[i], "batch dim " + std::to_string(i) + " of input 'a' " +
                                                a.shape.str() + " differs from input 'b' " +
                                                b.shape.str() + " (no broadcasting)");
    const Dim& k_a = a.shape[rank - 1];
    const Dim& k_b = tb ? b.shape[rank - 1] : b.shape[rank - 2];
    const Dim& n = tb ? b.shape[rank - 2] : b.shape[rank - 1];
    ctx.require(k_a == k_b, "the contracted dim of input 'a' " + a.shape.str() +
                                " differs from that of input 'b' " + b.shape.str() +
                                " (transpose_b = " + std::to_string(tb) + ")");
    std::vector<Dim> dims = a.shape.dims();
    dims.back() = n;
    return std::vector<ValueInfo>{{a.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& a = ctx.in(0);
    const TensorView& b = ctx.in(1);
    const TensorView& y = ctx.out(0);
    const bool tb = ctx.attrs().get_int("transpose_b", 0) != 0;
    const int64_t m = a.dim(-2);
    const int64_t k = a.dim(-1);
    const int64_t n = y.dim(-1);
    const int64_t batches = m > 0 && n > 0 ? y.numel() / (m * n) : 0;
    for (int64_t bi = 0; bi < batches; ++bi)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t p = 0; p < k; ++p) {
            const int64_t b_index = tb ? (bi * n + j) * k + p : (bi * k + p) * n + j;
            acc += a.get((bi * m + i) * k + p) * b.get(b_index);
          }
          y.set((bi * m + i) * n + j, acc);
        }
  };
  registry.add(std::move(d));
}

}  // namespace

void register_linear(OpRegistry& registry) {
  register_linear_op(registry);
  register_matmul(registry);
}

}  // namespace moert::ops
