// linear: every weight dtype (f8_e4m3 with block scales, default and odd
// block sizes, matrices not a multiple of the block), every activation dtype,
// bias, the output dtype attribute, leading dims, a symbolic T stepping
// across the decode/prefill boundary, K not a multiple of any vector width,
// and M from one token to a few hundred so both the GEMV kernels (few rows)
// and the GEMM path (many rows) are checked.
//
// Tolerances.  For f32 x, up to 8 rows of x, and for f32 weights, at any M, a
// backend computes products of the exact operands in f32: tolerance_for(out).
// (f32 activations promise f32 products: a bf16 rounding of a prompt's hidden
// states can flip a router's choice of expert.)  For bf16 or f16 x beyond 8
// rows a backend may take a bf16 matrix unit: x is rounded to bf16 (exact
// when x is bf16 already) and f16 / f8_e4m3 weights (their block scale
// applied) are rounded to bf16 too, each a relative error of at most
// u = 2^-9 per operand, roughly uniform, so std u/sqrt(3).  An output's error
// is then a sum of K independent terms x_k w_k (d_k + e_k): its std is at
// most u sqrt(2/3) sqrt(sum x_k^2 w_k^2), about 0.82 u times the RMS of the
// outputs (random signs).  Judged against |want| + RMS(output) (the floor),
// the largest of ~10^5 outputs stays below ~5 std, with up to 2x for an
// output's own sum of squares above the mean: 2 u sqrt(2/3) * 5 ~ 8u = 1.6e-2
// for two rounded operands, 1.2e-2 for one; 2e-2 and 1.5e-2 are used.
// For the exact paths the floor is 0.05 RMS(y) rather than the default
// 1e-3 max|y|: f32 accumulation in any order errs by ~sqrt(K) 2^-24 RMS(y),
// which at K = 1024 is 2e-6 RMS(y), above 1e-4 * 1e-3 max|y|.
#include <cmath>
#include <optional>

#include "conformance.h"
#include "packed_weights.h"

namespace moert::conformance {
namespace {

const char* const kExactWhy =
    " (f32 products of exact operands: f32 x, few rows, or f32/bf16 operands); an f32 sum of K "
    "terms "
    "errs by ~sqrt(K) 2^-24 RMS(y) (2e-6 RMS(y) at K = 1024), so the floor is 0.05 RMS(y)";

struct Spec {
  std::string name;
  DType x = DType::f32, w = DType::f32;
  int64_t n = 131, k = 67;
  std::vector<int64_t> lead{1};  // leading dims of x (static), or ...
  std::vector<int64_t> steps;    // ... T of each step (x [T, K]) when not empty
  std::optional<DType> bias, out;
  std::vector<int64_t> block;  // block_size attribute; empty: absent (128, 128)
  bool weight_input = false;   // weight given per step instead of as a constant
  std::string quant;           // packed weight format (w ignored); empty: none
  bool zeros = false;          // int4 with zero points
  bool bf16_products = false;  // attribute products = "bf16"
  bool int8_products = false;  // attribute products = "int8" (packed weights)
};

// W widened to double, dequantised with its block scales.
std::vector<double> dequantize(const Tensor& w, const Tensor& scale, int64_t b0, int64_t b1) {
  std::vector<double> v = w.to_doubles();
  if (!scale.defined()) return v;
  const std::vector<double> s = scale.to_doubles();
  const int64_t n = w.dim(0), k = w.dim(1), scols = (k + b1 - 1) / b1;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      v[static_cast<size_t>(r * k + c)] *= s[static_cast<size_t>((r / b0) * scols + c / b1)];
  return v;
}

// Positive f32 block scales around 1/64.
Tensor random_scales(std::vector<int64_t> shape, std::mt19937& rng) {
  std::uniform_real_distribution<double> d(0.005, 0.03);
  Tensor t = Tensor::empty(DType::f32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = static_cast<float>(d(rng));
  return t;
}

Case make(const Spec& s, std::mt19937& rng) {
  Case c;
  c.name = s.name;
  c.op = "linear";
  const int64_t b0 = s.block.empty() ? 128 : s.block[0], b1 = s.block.empty() ? 128 : s.block[1];
  if (!s.block.empty()) c.attrs.set("block_size", s.block);
  if (s.out) c.attrs.set("dtype", std::string(dtype_name(*s.out)));
  if (s.bf16_products) c.attrs.set("products", std::string("bf16"));
  if (s.int8_products) c.attrs.set("products", std::string("int8"));

  Tensor w, scale;
  std::vector<double> wd;
  if (!s.quant.empty()) {
    c.attrs.set("quant", s.quant);
    PackedWeight p = random_packed(s.quant, {}, s.n, s.k, b0, b1, s.zeros, 1.0, rng);
    w = p.data;
    scale = p.scale;
    wd = std::move(p.values);
  } else {
    w = random(s.w, {s.n, s.k}, rng, s.w == DType::f8_e4m3 ? 8.0 : 1.0);
    if (s.w == DType::f8_e4m3)
      scale = random_scales({(s.n + b0 - 1) / b0, (s.k + b1 - 1) / b1}, rng);
    wd = dequantize(w, scale, b0, b1);
  }
  Tensor bias;
  if (s.bias) bias = random(*s.bias, {s.n}, rng);

  // x of each step.
  std::vector<Tensor> xs;
  Shape x_shape;
  if (s.steps.empty()) {
    std::vector<int64_t> dims = s.lead;
    dims.push_back(s.k);
    xs.push_back(random(s.x, dims, rng));
    x_shape = Shape::of(dims);
  } else {
    for (int64_t t : s.steps) xs.push_back(random(s.x, {t, s.k}, rng));
    x_shape = Shape{Dim::tokens(), Dim(s.k)};
  }

  c.slots.push_back(activation(s.x, x_shape));
  c.slots.push_back(s.weight_input ? activation(s.w, Shape::of(w.shape())) : constant(w));
  c.slots.push_back(s.bias ? constant(bias) : absent());
  c.slots.push_back(scale.defined() ? constant(scale) : absent());
  int64_t max_rows = 0;
  for (const Tensor& x : xs) {
    Step step;
    step.tokens = s.steps.empty() ? 0 : x.dim(0);
    step.inputs.push_back(x);
    if (s.weight_input) step.inputs.push_back(w);
    c.steps.push_back(std::move(step));
    max_rows = std::max(max_rows, x.numel() / s.k);
  }

  // The RMS of the exact outputs (the floor of the error measure), estimated
  // from at most ~4096 of them, evenly spread, to keep case generation fast.
  const std::vector<double> bd = bias.defined() ? bias.to_doubles() : std::vector<double>{};
  double sum = 0;
  int64_t count = 0;
  for (const Tensor& x : xs) {
    const std::vector<double> xd = x.to_doubles();
    const int64_t outputs = x.numel() / s.k * s.n;
    const int64_t stride = std::max<int64_t>(1, outputs / 4096) | 1;
    for (int64_t o = 0; o < outputs; o += stride) {
      const int64_t r = o / s.n, j = o % s.n;
      double acc = bd.empty() ? 0.0 : bd[static_cast<size_t>(j)];
      for (int64_t i = 0; i < s.k; ++i)
        acc += xd[static_cast<size_t>(r * s.k + i)] * wd[static_cast<size_t>(j * s.k + i)];
      sum += acc * acc;
      ++count;
    }
  }
  const double rms = std::sqrt(sum / static_cast<double>(std::max<int64_t>(count, 1)));

  const DType out = s.out ? *s.out : s.x;
  const bool packed = !s.quant.empty();
  // products = "bf16" permits rounding x and the weight (unless bf16
  // already) at any row count; otherwise f32 x and few rows are exact.
  const int rounded = (s.x != DType::bf16) + (packed || s.w != DType::bf16);
  if (s.int8_products) {
    // x may be quantised to int8 per block of 32 (error uniform within
    // +-max|x_block| / 254, std max/440; the max of 32 normal values is
    // ~2.5 sd, so ~0.0057 RMS(x) per element): the output errs by ~0.0057
    // RMS(y); 5 std with a 2x spread is 0.057, and the GEMM path's bf16
    // bounds are below it: 6e-2.
    c.floor = rms;
    c.tolerance = std::max(tolerance_for(out), 6e-2);
    c.why =
        "x may be quantised to int8 per block of 32 (error <= max|x_block| / 254 per element, "
        "output error std ~0.0057 RMS(y)), 5 std with 2x spread; floor = RMS of the outputs";
    return c;
  }
  const bool exact = s.bf16_products
                         ? false
                         : max_rows <= 8 || (!packed && s.w == DType::f32) || s.x == DType::f32 ||
                               (s.x == DType::bf16 && s.w == DType::bf16);
  if (exact) {
    c.tolerance = tolerance_for(out);
    c.floor = 0.05 * rms;
    c.why = why_for(out) + kExactWhy;
    return c;
  }
  c.floor = rms;
  c.tolerance = std::max(tolerance_for(out), rounded == 2 ? 2e-2 : 1.5e-2);
  c.why =
      std::string(rounded == 2 ? "x and the weights" : (s.x != DType::bf16 ? "x" : "the weights")) +
      " may be rounded to bf16 for a matrix unit (u = 2^-9 each): error std <= 0.82u "
      "RMS(y) per rounded pair, 5 std with 2x spread; floor = RMS of the outputs";
  return c;
}

std::vector<Case> cases() {
  std::mt19937 rng(7);
  std::vector<Case> out;
  const DType weights[] = {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3};
  auto wname = [](DType t) { return std::string(dtype_name(t)); };

  // Every weight dtype across the row counts (odd N and K).
  for (DType w : weights)
    for (int64_t m : {1, 3, 8, 33, 300}) {
      Spec s;
      s.name = wname(w) + "_weight_m" + std::to_string(m);
      s.w = w;
      s.lead = {m};
      out.push_back(make(s, rng));
    }
  // bf16 / f16 activations, with a bias of the same dtype.
  for (DType x : {DType::bf16, DType::f16})
    for (DType w : weights)
      for (int64_t m : {1, 40}) {
        Spec s;
        s.name = wname(x) + "_x_" + wname(w) + "_weight_bias_m" + std::to_string(m);
        s.x = x;
        s.w = w;
        s.lead = {m};
        s.bias = x;
        out.push_back(make(s, rng));
      }
  // The output dtype attribute, biases of other dtypes.
  {
    Spec s;
    s.name = "f32_x_bf16_out_m5";
    s.w = DType::bf16;
    s.lead = {5};
    s.out = DType::bf16;
    s.bias = DType::f32;
    out.push_back(make(s, rng));
    s.name = "f32_x_bf16_out_m50";
    s.lead = {50};
    out.push_back(make(s, rng));
    s.name = "bf16_x_f32_out_f16_weight_m20";
    s.x = DType::bf16;
    s.w = DType::f16;
    s.lead = {20};
    s.out = DType::f32;
    s.bias = DType::bf16;
    out.push_back(make(s, rng));
    s.name = "f16_x_f16_out_f8_weight_f8_bias_m2";
    s.x = DType::f16;
    s.w = DType::f8_e4m3;
    s.lead = {2};
    s.out = DType::f16;
    s.bias = DType::f8_e4m3;
    out.push_back(make(s, rng));
  }
  // A symbolic T stepping from decode to prefill sizes and back.
  for (DType w : weights) {
    Spec s;
    s.name = wname(w) + "_weight_symbolic_t";
    s.w = w;
    s.n = 200;
    s.k = 96;
    s.steps = {1, 3, 13, 64, 2};
    s.bias = DType::f32;
    if (w == DType::f8_e4m3) s.block = {64, 32};
    out.push_back(make(s, rng));
  }
  // Leading dims.
  {
    Spec s;
    s.name = "rank3_x_f16_weight";
    s.w = DType::f16;
    s.lead = {2, 3};
    s.bias = DType::f16;
    out.push_back(make(s, rng));
    s.name = "rank3_x_bf16_weight_many_rows";
    s.w = DType::bf16;
    s.lead = {4, 9};
    out.push_back(make(s, rng));
  }
  // fp8 with small and odd block sizes (scale grids of many blocks).
  for (auto [b0, b1] : {std::pair<int64_t, int64_t>{16, 32}, {3, 5}})
    for (int64_t m : {1, 2, 64}) {
      Spec s;
      s.name = "f8_weight_block_" + std::to_string(b0) + "x" + std::to_string(b1) + "_m" +
               std::to_string(m);
      s.w = DType::f8_e4m3;
      s.n = 100;
      s.k = 75;
      s.block = {b0, b1};
      s.lead = {m};
      out.push_back(make(s, rng));
    }
  // K around and below the vector widths (16 f32, 32 for 16- and 8-bit).
  for (DType w : weights)
    for (int64_t k : {1, 5, 16, 31, 32, 33}) {
      Spec s;
      s.name = wname(w) + "_weight_k" + std::to_string(k);
      s.w = w;
      s.n = 37;
      s.k = k;
      s.lead = {2};
      out.push_back(make(s, rng));
    }
  // Larger matrices: several threads' shares, several tiles of converted
  // weights, K = 1024.
  for (DType w : weights) {
    Spec s;
    s.name = wname(w) + "_weight_wide_m1";
    s.w = w;
    s.n = 512;
    s.k = 1024;
    s.lead = {1};
    out.push_back(make(s, rng));
    s.name = wname(w) + "_weight_wide_m6";
    s.lead = {6};
    out.push_back(make(s, rng));
  }
  for (DType w : {DType::f16, DType::f8_e4m3}) {
    // 2100 x 2048 in bf16 is 8.6 MB: two tiles of converted weights.
    Spec s;
    s.name = wname(w) + "_weight_two_tiles_m25";
    s.w = w;
    s.n = 2100;
    s.k = 2048;
    s.lead = {25};
    out.push_back(make(s, rng));
  }
  // Packed weights (quant): every format, zero points, groups of 32 and 128
  // and odd ones, K odd (a half-filled last byte) and not a multiple of the
  // group, one row to many, bf16 and f16 activations.
  struct Packed {
    const char* quant;
    bool zeros;
    int64_t b0, b1;
  };
  for (const Packed& f : {Packed{"int8", false, 1, 32}, Packed{"int4", false, 1, 32},
                          Packed{"int4", true, 1, 128}, Packed{"mxfp4", false, 1, 32}}) {
    const std::string base =
        std::string(f.quant) + (f.zeros ? "_zeros" : "") + "_g" + std::to_string(f.b1);
    for (int64_t m : {1, 3, 8, 33, 300}) {
      Spec s;
      s.name = base + "_m" + std::to_string(m);
      s.quant = f.quant;
      s.zeros = f.zeros;
      s.block = {f.b0, f.b1};
      s.n = 131;
      s.k = 256;
      s.lead = {m};
      s.bias = DType::f32;
      out.push_back(make(s, rng));
    }
    for (int64_t k : {1, 31, 33, 75, 161}) {
      Spec s;
      s.name = base + "_k" + std::to_string(k);
      s.quant = f.quant;
      s.zeros = f.zeros;
      s.block = {f.b0, f.b1};
      s.n = 37;
      s.k = k;
      s.lead = {2};
      out.push_back(make(s, rng));
    }
    for (DType x : {DType::bf16, DType::f16})
      for (int64_t m : {1, 40}) {
        Spec s;
        s.name = base + "_" + wname(x) + "_x_m" + std::to_string(m);
        s.quant = f.quant;
        s.zeros = f.zeros;
        s.block = {f.b0, f.b1};
        s.x = x;
        s.n = 96;
        s.k = 192;
        s.lead = {m};
        s.bias = x;
        out.push_back(make(s, rng));
      }
    {
      Spec s;
      s.name = base + "_symbolic_t";
      s.quant = f.quant;
      s.zeros = f.zeros;
      s.block = {f.b0, f.b1};
      s.n = 200;
      s.k = 128;
      s.steps = {1, 3, 13, 64, 2};
      out.push_back(make(s, rng));
    }
  }
  // Odd groups: int8 and int4 groups of 3 x 10 and 1 x 24, wide matrices.
  for (const char* quant : {"int8", "int4"})
    for (bool zeros : {false, true}) {
      if (zeros && std::string(quant) == "int8") continue;
      for (auto [b0, b1] : {std::pair<int64_t, int64_t>{3, 10}, {1, 24}})
        for (int64_t m : {1, 20}) {
          Spec s;
          s.name = std::string(quant) + (zeros ? "_zeros" : "") + "_block_" + std::to_string(b0) +
                   "x" + std::to_string(b1) + "_m" + std::to_string(m);
          s.quant = quant;
          s.zeros = zeros;
          s.block = {b0, b1};
          s.n = 50;
          s.k = 77;
          s.lead = {m};
          out.push_back(make(s, rng));
        }
    }
  for (const char* quant : {"int8", "int4", "mxfp4"}) {
    Spec s;
    s.name = std::string(quant) + "_wide_m1";
    s.quant = quant;
    s.block = {1, 32};
    s.n = 512;
    s.k = 1024;
    s.lead = {1};
    out.push_back(make(s, rng));
    s.name = std::string(quant) + "_wide_m6";
    s.lead = {6};
    out.push_back(make(s, rng));
    s.name = std::string(quant) + "_two_tiles_m25";
    s.n = 2100;
    s.k = 2048;
    s.lead = {25};
    out.push_back(make(s, rng));
  }
  // products = "bf16": f32 x that a backend may round to bf16, every weight
  // kind, decode and prefill row counts.
  for (const char* quant : {"", "int4", "mxfp4"})
    for (DType w : {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3}) {
      if (*quant && w != DType::f32) continue;
      for (int64_t m : {1, 9, 16, 24, 200}) {
        Spec s;
        s.name = std::string("bf16_products_") + (*quant ? quant : wname(w).c_str()) + "_m" +
                 std::to_string(m);
        s.w = w;
        s.quant = quant;
        if (*quant) s.block = {1, 32};
        s.bf16_products = true;
        s.n = 160;
        s.k = 256;
        s.lead = {m};
        s.bias = DType::f32;
        out.push_back(make(s, rng));
      }
    }
  // products = "bf16" with a bf16 weight and the row counts of a batched
  // decode step, K not a multiple of 32 (a masked tail), odd N.
  for (int64_t m : {10, 13, 23}) {
    Spec s;
    s.name = "bf16_products_bf16_k270_n77_m" + std::to_string(m);
    s.w = DType::bf16;
    s.bf16_products = true;
    s.n = 77;
    s.k = 270;
    s.lead = {m};
    out.push_back(make(s, rng));
  }
  // products = "int8": every packed format, groups of 32 and 128, odd K,
  // decode row counts (a backend may quantise x per block of 32) and a
  // prefill one.
  for (const char* quant : {"int8", "int4", "mxfp4"})
    for (int64_t m : {1, 3, 8, 40}) {
      Spec s;
      s.name = std::string("int8_products_") + quant + "_m" + std::to_string(m);
      s.quant = quant;
      s.block = {1, 32};
      s.int8_products = true;
      s.n = 150;
      s.k = m == 3 ? 333 : 512;
      s.lead = {m};
      s.bias = DType::f32;
      out.push_back(make(s, rng));
    }
  for (int64_t k : {40, 200})
    for (int64_t m : {1, 2, 40}) {
      // K with a partial last chunk, decode and prefill rows.
      Spec s;
      s.name = "int8_products_int4_k" + std::to_string(k) + "_m" + std::to_string(m);
      s.quant = "int4";
      s.block = {1, 32};
      s.int8_products = true;
      s.n = 48;
      s.k = k;
      s.lead = {m};
      out.push_back(make(s, rng));
    }
  for (int64_t k : {512, 700}) {
    // Groups of 32 with zero points, 8 chunks at a time and a tail.
    Spec s;
    s.name = "int8_products_int4_zeros_g32_k" + std::to_string(k);
    s.quant = "int4";
    s.zeros = true;
    s.block = {1, 32};
    s.int8_products = true;
    s.n = 67;
    s.k = k;
    s.lead = {1};
    out.push_back(make(s, rng));
  }
  for (bool zeros : {false, true}) {
    Spec s;
    s.name = std::string("int8_products_int4") + (zeros ? "_zeros" : "") + "_g128_m2";
    s.quant = "int4";
    s.zeros = zeros;
    s.block = {1, 128};
    s.int8_products = true;
    s.n = 97;
    s.k = 384;
    s.lead = {2};
    out.push_back(make(s, rng));
  }
  // A weight that is an input of the graph, not a constant.
  {
    Spec s;
    s.name = "bf16_weight_as_input";
    s.w = DType::bf16;
    s.lead = {3};
    s.weight_input = true;
    out.push_back(make(s, rng));
  }
  return out;
}

const CaseRegistration registration("linear", cases);

}  // namespace
}  // namespace moert::conformance
