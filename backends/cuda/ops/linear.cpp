// linear and matmul.  linear (op version 2): x f32/bf16/f16; weights f32,
// bf16, f16 or f8_e4m3 with block scales, or packed (attribute quant: int8,
// int4 with or without zero points, mxfp4; packed.h) with their group
// scales; bias of any float dtype; output f32/bf16/f16.
//   Up to 8 rows: the GEMV kernel, exact f32 products with every weight read
//   once in its stored dtype (decode); packed weights stay packed, their
//   bytes read once and dequantised exactly in registers.
//   More rows: cuBLASLt with f32 accumulation.  f32 x or f32 weights
//   multiply in f32 (no TF32: f32 activations promise f32 products, since a
//   rounding of a prompt's hidden states can flip a router's choice of
//   expert); narrower weights are then widened to f32 in slabs of rows.  For
//   bf16 / f16 x: bf16 weights in bf16; f16 weights with f16 x in f16;
//   otherwise (f16 weights with bf16 x, fp8 and packed weights) the weights
//   are dequantised to bf16 in slabs of rows and x is rounded to bf16 for the
//   tensor cores, as tests/conformance/cases_linear.cpp allows.  Packed
//   weights with f32 x are dequantised exactly to f32 slabs.
// matmul: both operands widened to f32 (exact), one strided-batched f32
//   cuBLASLt GEMM.
#include <vector>

#include "gemm.h"
#include "kernel.h"
#include "kernels/launch.h"
#include "packed.h"

namespace moert::cuda {
namespace {

// Dequantised weight slabs hold at most this many bytes.
constexpr uint64_t kSlabBytes = uint64_t{64} << 20;

std::string check_linear(const NodeDesc& node) {
  const TensorDesc x = node.input(0), w = node.input(1);
  if (!is_activation(x.dtype())) return "linear of x in " + dtype_str(x.dtype());
  if (x.rank() < 1) return "linear of a scalar";
  const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0)
    return "linear with a block_size that is not two sizes > 0";
  Quant quant = Quant::none;
  if (!quant_attr(node, "quant", &quant))
    return "linear with quant \"" + node.attr_string("quant", "") + "\", an unknown format";
  if (quant != Quant::none) {
    // K is x's last dim; the weight holds it packed.
    const int64_t k = x.static_dim(x.rank() - 1);
    if (k < 0) return "linear of x with a symbolic last dim and a packed weight";
    if (w.rank() != 2 || !w.all_static()) return "linear with a weight that is not a static [N, K]";
    const std::string r =
        check_packed_weight(node, quant, 1, 3, false, w.static_dim(0), k, block, "linear weight");
    if (!r.empty()) return r;
  } else if (!is_weight_dtype(w.dtype())) {
    return "linear with a weight of " + dtype_str(w.dtype());
  } else if (w.rank() != 2 || !w.all_static()) {
    return "linear with a weight that is not a static [N, K]";
  } else if (w.dtype() == MOERT_DTYPE_F8_E4M3) {
    if (!node.has_input(3) || node.input(3).dtype() != MOERT_DTYPE_F32)
      return "linear with an f8_e4m3 weight but no f32 weight_scale";
  } else if (node.has_input(3)) {
    return "linear with a weight_scale for a weight that is not f8_e4m3 or packed";
  }
  if (node.has_input(2) && !is_float(node.input(2).dtype())) return "linear with a non-float bias";
  if (!is_activation(node.output(0).dtype()))
    return "linear output of " + dtype_str(node.output(0).dtype());
  return "";
}

// The dtype a GEMM of x (x_t) and weights (w_t, or packed) multiplies in.
// Packed weights with bf16/f16 x become bf16, which keeps the range of
// small group scales (f16 would turn their values subnormal).
moert_dtype gemm_dtype(moert_dtype x_t, moert_dtype w_t, bool packed) {
  if (x_t == MOERT_DTYPE_F32) return MOERT_DTYPE_F32;
  if (packed) return MOERT_DTYPE_BF16;
  if (w_t == MOERT_DTYPE_F32) return MOERT_DTYPE_F32;
  if (w_t == MOERT_DTYPE_F16 && x_t == MOERT_DTYPE_F16) return MOERT_DTYPE_F16;
  return MOERT_DTYPE_BF16;
}

class Linear final : public Kernel {
 public:
  explicit Linear(const NodeDesc& n) {
    const std::vector<int64_t> block = n.attr_ints("block_size", {128, 128});
    b0_ = block[0];
    b1_ = block[1];
    quant_attr(n, "quant", &quant_);  // checked by check_linear
  }

  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t n = w.dim(0), k = x.dim(-1), m = x.rows();
    require(w.dim(1) == packed_row_bytes(quant_, k),
            "the last dim of input 'x' " + shape_str(x) + " differs from K of input 'weight' " +
                shape_str(w) + " (quant \"" + quant_name(quant_) + "\")");
    const launch::Weights weights =
        weights_of(w, ctx.has(3) ? &ctx.in(3) : nullptr, quant_, b0_, b1_);
    const moert_dtype bias_t = ctx.has(2) ? ctx.in(2).dtype : MOERT_DTYPE_F32;
    const void* bias = ctx.has(2) ? ctx.in(2).data : nullptr;
    if (m == 0 || n == 0) return;
    if (m <= launch::kGemvMaxRows || k == 0) {
      launch::linear_gemv(ctx.stream(), x.dtype, x.data, m, k, weights, n, bias_t, bias, y.dtype,
                          y.data);
      return;
    }
    Device& d = ctx.device();
    const moert_dtype g = gemm_dtype(x.dtype, w.dtype, quant_ != Quant::none);
    const uint64_t gs = plugin::dtype_size(g);
    // x in the GEMM's dtype.
    DeviceBlock x_conv;
    const void* xg = x.data;
    if (x.dtype != g) {
      x_conv = ctx.scratch(static_cast<uint64_t>(m * k) * gs, "linear input in the GEMM dtype");
      launch::cast(ctx.stream(), x.dtype, x.data, g, x_conv.get(), m * k);
      xg = x_conv.get();
    }
    // The f32 result: y itself when it is f32 and there is no bias.
    DeviceBlock acc_block;
    float* acc = static_cast<float*>(y.data);
    if (y.dtype != MOERT_DTYPE_F32 || bias) {
      acc_block = ctx.scratch(static_cast<uint64_t>(m * n) * 4, "linear f32 result");
      acc = acc_block.as<float>();
    }
    if (w.dtype == g && quant_ == Quant::none) {
      gemm(d, m, n, k, 1, {g, xg, 0}, {g, w.data, 0}, true, acc, n, 0);
    } else {
      // Slabs of weight rows (multiples of 128, so every slab's result
      // columns stay aligned), dequantised and multiplied in turn (packed
      // weights too: only the slab is ever unpacked).
      int64_t slab = static_cast<int64_t>(kSlabBytes / (static_cast<uint64_t>(k) * gs));
      slab = slab >= 128 ? slab / 128 * 128 : (slab < 1 ? 1 : slab);
      if (slab > n) slab = n;
      DeviceBlock wg = ctx.scratch(static_cast<uint64_t>(slab * k) * gs, "dequantised weights");
      for (int64_t r0 = 0; r0 < n; r0 += slab) {
        const int64_t rows = r0 + slab <= n ? slab : n - r0;
        launch::dequantize_rows(ctx.stream(), weights, r0, rows, k, n, g, wg.get());
        gemm(d, m, rows, k, 1, {g, xg, 0}, {g, wg.get(), 0}, true, acc + r0, n, 0);
      }
    }
    if (acc != y.data) launch::bias_store(ctx.stream(), acc, m, n, bias_t, bias, y.dtype, y.data);
  }

 private:
  int64_t b0_ = 128, b1_ = 128;
  Quant quant_ = Quant::none;
};

std::string check_matmul(const NodeDesc& node) {
  const TensorDesc a = node.input(0), b = node.input(1);
  if (!is_activation(a.dtype()) || !is_activation(b.dtype()))
    return "matmul of " + dtype_str(a.dtype()) + " and " + dtype_str(b.dtype());
  if (a.rank() < 2 || a.rank() != b.rank()) return "matmul of operands of unequal rank";
  const int64_t tb = node.attr_int("transpose_b", 0);
  if (tb != 0 && tb != 1) return "matmul with transpose_b not 0 or 1";
  if (node.output(0).dtype() != a.dtype()) return "output dtype differs from a's";
  return "";
}

class Matmul final : public Kernel {
 public:
  explicit Matmul(const NodeDesc& n) : transpose_b_(n.attr_int("transpose_b", 0) != 0) {}
  void run(ExecContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t m = a.dim(-2), k = a.dim(-1), n = y.dim(-1);
    const int64_t batch = m * n > 0 ? y.numel() / (m * n) : 0;
    require(b.numel() == batch * k * n,
            "input 'b' " + shape_str(b) + " does not match input 'a' " + shape_str(a));
    if (batch == 0) return;
    auto widen = [&](const Tensor& t, DeviceBlock& block) -> const void* {
      if (t.dtype == MOERT_DTYPE_F32) return t.data;
      block = ctx.scratch(static_cast<uint64_t>(t.numel()) * 4, "matmul operand as f32");
      launch::cast(ctx.stream(), t.dtype, t.data, MOERT_DTYPE_F32, block.get(), t.numel());
      return block.get();
    };
    DeviceBlock a32, b32, acc_block;
    const void* ap = widen(a, a32);
    const void* bp = widen(b, b32);
    float* acc = static_cast<float*>(y.data);
    if (y.dtype != MOERT_DTYPE_F32) {
      acc_block = ctx.scratch(static_cast<uint64_t>(y.numel()) * 4, "matmul f32 result");
      acc = acc_block.as<float>();
    }
    if (k == 0) {
      check_cuda(cudaMemsetAsync(acc, 0, static_cast<size_t>(y.numel()) * 4, ctx.stream()),
                 "clearing an empty product");
    } else {
      gemm(ctx.device(), m, n, k, batch, {MOERT_DTYPE_F32, ap, m * k}, {MOERT_DTYPE_F32, bp, k * n},
           transpose_b_, acc, n, m * n);
    }
    if (acc != y.data) launch::cast(ctx.stream(), MOERT_DTYPE_F32, acc, y.dtype, y.data, y.numel());
  }

 private:
  bool transpose_b_;
};

std::unique_ptr<Kernel> create_linear(PrepareContext& pc) {
  return std::make_unique<Linear>(pc.node());
}
std::unique_ptr<Kernel> create_matmul(PrepareContext& pc) {
  return std::make_unique<Matmul>(pc.node());
}

// Version 2: packed weights (attribute quant).
KernelDef linear_def() {
  KernelDef d("linear", check_linear, create_linear);
  d.version = 2;
  return d;
}

const KernelRegistration linear_reg(linear_def());
const KernelRegistration matmul_reg({"matmul", check_matmul, create_matmul});

}  // namespace
}  // namespace moert::cuda
