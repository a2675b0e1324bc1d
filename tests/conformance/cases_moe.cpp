// moe and routing_dense: every expert dtype (f8_e4m3 with block scales of
// default and odd sizes, matrices not a multiple of the block), one token to
// a few hundred (so an expert gets one row or many), a symbolic T, bf16 and
// f16 activations, i64 ids, bf16 routing weights, the same expert twice in a
// token's slots (its output counts twice), experts nobody chose, every token
// on one expert, one busy expert beside little-used ones (a backend may
// treat them differently), and shared experts with and without the sigmoid
// gate.
//
// Tolerances.  For f32 x (f32 activations promise f32 products, see
// cases_linear.cpp), and when every product a backend runs has at most 8 rows
// of x or f32 weights (decode), it computes f32 products of exact operands:
// tolerance_for(x's dtype).  Otherwise (bf16 / f16 x) a bf16 matrix unit may round x, the
// weights and the SwiGLU activations to bf16 (u = 2^-9 each, std u/sqrt(3)):
// gate and up each err by <= 0.82u of their RMS (see cases_linear.cpp),
// silu(g) * u by about 1.2u of its RMS, the down projection adds its own
// roundings of the activation and the weights (0.58u each) in quadrature:
// ~1.6u of the output's RMS per expert, summed with random signs over the
// slots.  Judged against |want| + RMS(out), 5 std with a 2x spread is ~16u
// = 3.1e-2; 4e-2 is used.  The floor is the RMS of the exact outputs, which
// this file computes in double with its own dequantisation (0.05 of it for
// the exact paths: f32 sums of K terms err by ~sqrt(K) 2^-24 RMS, above the
// default floor's 1e-7 max|out| once products chain).
#include <cmath>
#include <optional>

#include "conformance.h"
#include "packed_weights.h"
#include "swiglu_params.h"

namespace moert::conformance {
namespace {

struct Spec {
  std::string name;
  DType x = DType::f32, w = DType::f32;
  std::optional<DType> shared;  // shared expert weights' dtype
  bool shared_gate = false;
  int64_t experts = 8, inter = 48, hidden = 64, shared_inter = 40, k = 2;
  std::vector<int64_t> tokens{1};  // T of each step
  bool symbolic = false;           // x [T, H] with a symbolic T
  DType ids = DType::i32, route_weights = DType::f32;
  int64_t chosen = 0;          // ids drawn from [0, chosen) (0: all experts)
  bool repeats = false;        // a token's slots may name the same expert
  int64_t only = -1;           // every slot on this expert
  int64_t first = -1;          // every token's first slot on this expert
  std::vector<int64_t> block;  // empty: default (128, 128)
  std::string quant;           // routed experts packed (w ignored); empty: none
  std::string shared_quant;    // shared experts packed (shared ignored)
  bool zeros = false;          // int4 with zero points
  bool bf16_products = false;  // attribute products = "bf16"
  bool int8_products = false;  // attribute products = "int8"
  // Version 3: biases of the routed experts (dtype; none when unset) and the
  // clamped activation's attributes (plain SwiGLU when unset).
  std::optional<DType> bias;
  std::optional<ops::SwigluParams> act;
};

Tensor random_scales(std::vector<int64_t> shape, std::mt19937& rng) {
  std::uniform_real_distribution<double> d(0.005, 0.03);
  Tensor t = Tensor::empty(DType::f32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = static_cast<float>(d(rng));
  return t;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A weight [E, rows, cols] (or [rows, cols] when experts == 0) of dtype t,
// its scale when f8_e4m3, and its dequantised values (double).
struct Weight {
  Tensor data, scale;
  std::vector<double> values;
};

Weight make_weight(DType t, int64_t experts, int64_t rows, int64_t cols, int64_t b0, int64_t b1,
                   std::mt19937& rng) {
  Weight w;
  std::vector<int64_t> shape{rows, cols};
  if (experts > 0) shape.insert(shape.begin(), experts);
  // Stddev 1/sqrt(cols) keeps every layer's output near unit scale.
  const double sd = 1.0 / std::sqrt(static_cast<double>(cols));
  if (t != DType::f8_e4m3) {
    w.data = random(t, shape, rng, sd);
    w.values = w.data.to_doubles();
    return w;
  }
  w.data = random(t, shape, rng, 8.0);
  std::vector<int64_t> sshape{ceil_div(rows, b0), ceil_div(cols, b1)};
  if (experts > 0) sshape.insert(sshape.begin(), experts);
  w.scale = random_scales(sshape, rng);
  // Scales around 1/64 times values around 8: rescale to stddev ~ sd.
  for (int64_t i = 0; i < w.scale.numel(); ++i)
    w.scale.data_as<float>()[i] *= static_cast<float>(sd * 8.0);
  w.values = w.data.to_doubles();
  const std::vector<double> sv = w.scale.to_doubles();
  const int64_t mats = std::max<int64_t>(1, experts), sr = sshape[sshape.size() - 2],
                sc = sshape.back();
  for (int64_t e = 0; e < mats; ++e)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        w.values[static_cast<size_t>((e * rows + r) * cols + c)] *=
            sv[static_cast<size_t>((e * sr + r / b0) * sc + c / b1)];
  return w;
}

// y = W_e v for matrix e of a dequantised [E, rows, cols] weight.
std::vector<double> matvec(const std::vector<double>& w, int64_t e, int64_t rows, int64_t cols,
                           const double* v) {
  std::vector<double> y(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t c = 0; c < cols; ++c)
      acc += w[static_cast<size_t>((e * rows + r) * cols + c)] * v[c];
    y[static_cast<size_t>(r)] = acc;
  }
  return y;
}

// Expert e's biases (empty: none).
struct Biases {
  std::vector<double> gate, up, down;
};

std::vector<double> swiglu(const Weight& g, const Weight& u, const Weight& d, int64_t e,
                           int64_t inter, int64_t hidden, const double* v,
                           const ops::SwigluParams& act, const Biases& b) {
  std::vector<double> a = matvec(g.values, e, inter, hidden, v);
  const std::vector<double> up = matvec(u.values, e, inter, hidden, v);
  for (size_t i = 0; i < a.size(); ++i) {
    const double gi = a[i] + (b.gate.empty() ? 0.0 : b.gate[static_cast<size_t>(e * inter) + i]);
    const double ui = up[i] + (b.up.empty() ? 0.0 : b.up[static_cast<size_t>(e * inter) + i]);
    a[i] = act.apply(gi, ui);
  }
  std::vector<double> y = matvec(d.values, e, hidden, inter, a.data());
  if (!b.down.empty())
    for (int64_t h = 0; h < hidden; ++h)
      y[static_cast<size_t>(h)] += b.down[static_cast<size_t>(e * hidden + h)];
  return y;
}

Case make(const Spec& s, std::mt19937& rng) {
  Case c;
  c.name = s.name;
  c.op = "moe";
  const int64_t b0 = s.block.empty() ? 128 : s.block[0], b1 = s.block.empty() ? 128 : s.block[1];
  if (!s.block.empty()) c.attrs.set("block_size", s.block);
  const int64_t E = s.experts, I = s.inter, H = s.hidden, Is = s.shared_inter;
  if (!s.quant.empty()) c.attrs.set("quant", s.quant);
  if (s.bf16_products) c.attrs.set("products", std::string("bf16"));
  if (s.int8_products) c.attrs.set("products", std::string("int8"));
  if (!s.shared_quant.empty()) c.attrs.set("shared_quant", s.shared_quant);
  const ops::SwigluParams act = s.act.value_or(ops::SwigluParams{});
  if (s.act) {
    c.attrs.set("swiglu_alpha", act.alpha);
    c.attrs.set("swiglu_limit", act.limit);
    c.attrs.set("swiglu_up_offset", act.up_offset);
  }
  auto make_expert_weight = [&](const std::string& quant, DType t, int64_t experts, int64_t rows,
                                int64_t cols) {
    if (quant.empty()) return make_weight(t, experts, rows, cols, b0, b1, rng);
    std::vector<int64_t> lead;
    if (experts > 0) lead.push_back(experts);
    PackedWeight p = random_packed(quant, lead, rows, cols, b0, b1, s.zeros,
                                   1.0 / std::sqrt(static_cast<double>(cols)), rng);
    return Weight{p.data, p.scale, std::move(p.values)};
  };
  const Weight gate = make_expert_weight(s.quant, s.w, E, I, H);
  const Weight up = make_expert_weight(s.quant, s.w, E, I, H);
  const Weight down = make_expert_weight(s.quant, s.w, E, H, I);
  Weight sgate, sup, sdown;
  if (s.shared) {
    sgate = make_expert_weight(s.shared_quant, *s.shared, 0, Is, H);
    sup = make_expert_weight(s.shared_quant, *s.shared, 0, Is, H);
    sdown = make_expert_weight(s.shared_quant, *s.shared, 0, H, Is);
  }
  Tensor seg;
  if (s.shared_gate) seg = random(s.x, {1, H}, rng, 1.0 / std::sqrt(static_cast<double>(H)));

  const Shape x_shape = s.symbolic ? Shape{Dim::tokens(), Dim(H)} : Shape::of({s.tokens[0], H});
  const Shape r_shape = s.symbolic ? Shape{Dim::tokens(), Dim(s.k)} : Shape::of({s.tokens[0], s.k});
  c.slots = {
      activation(s.x, x_shape), activation(s.ids, r_shape), activation(s.route_weights, r_shape),
      constant(gate.data),      constant(up.data),          constant(down.data)};
  for (const Weight* w : {&gate, &up, &down})
    c.slots.push_back(w->scale.defined() ? constant(w->scale) : absent());
  for (const Weight* w : {&sgate, &sup, &sdown})
    c.slots.push_back(s.shared ? constant(w->data) : absent());
  for (const Weight* w : {&sgate, &sup, &sdown})
    c.slots.push_back(w->scale.defined() ? constant(w->scale) : absent());
  c.slots.push_back(s.shared_gate ? constant(seg) : absent());
  Biases biases;
  if (s.bias) {
    // Biases of about the size of the products they join (unit RMS).
    const Tensor bg = random(*s.bias, {E, I}, rng, 0.7), bu = random(*s.bias, {E, I}, rng, 0.7),
                 bd = random(*s.bias, {E, H}, rng, 0.5);
    for (const Tensor* b : {&bg, &bu, &bd}) c.slots.push_back(constant(*b));
    biases = Biases{bg.to_doubles(), bu.to_doubles(), bd.to_doubles()};
  }

  // Steps, and the exact outputs for the floor.
  double sum = 0;
  int64_t count = 0, max_rows = 0;
  const int64_t pool = s.chosen > 0 ? s.chosen : E;
  for (int64_t tokens : s.tokens) {
    Step step;
    step.tokens = s.symbolic ? tokens : 0;
    const Tensor x = random(s.x, {tokens, H}, rng);
    std::vector<double> idv(static_cast<size_t>(tokens * s.k)), wts(idv.size());
    std::vector<int64_t> rows(static_cast<size_t>(E), 0);
    std::uniform_int_distribution<int64_t> pick(0, pool - 1);
    std::uniform_real_distribution<double> weight(0.1, 1.0);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < s.k; ++j) {
        int64_t e = s.only >= 0 ? s.only : (j == 0 && s.first >= 0 ? s.first : pick(rng));
        if (s.only < 0 && !s.repeats) {
          // Distinct experts within a token (pool >= k).
          bool again = true;
          while (again) {
            again = false;
            for (int64_t q = 0; q < j; ++q)
              if (idv[static_cast<size_t>(t * s.k + q)] == static_cast<double>(e)) again = true;
            if (again) e = pick(rng);
          }
        }
        idv[static_cast<size_t>(t * s.k + j)] = static_cast<double>(e);
        wts[static_cast<size_t>(t * s.k + j)] = weight(rng);
        ++rows[static_cast<size_t>(e)];
      }
    const Tensor ids = Tensor::from_doubles(s.ids, {tokens, s.k}, idv);
    const Tensor route_w = Tensor::from_doubles(s.route_weights, {tokens, s.k}, wts);
    for (int64_t r : rows) max_rows = std::max(max_rows, r);
    if (s.shared) max_rows = std::max(max_rows, tokens);

    const std::vector<double> xd = x.to_doubles(), rw = route_w.to_doubles();
    const std::vector<double> sg = seg.defined() ? seg.to_doubles() : std::vector<double>{};
    // The RMS of the exact outputs, from at most ~32 tokens per step.
    for (int64_t t = 0; t < tokens; t += std::max<int64_t>(1, tokens / 32)) {
      const double* xt = &xd[static_cast<size_t>(t * H)];
      std::vector<double> o(static_cast<size_t>(H), 0.0);
      for (int64_t j = 0; j < s.k; ++j) {
        const int64_t e = static_cast<int64_t>(idv[static_cast<size_t>(t * s.k + j)]);
        const std::vector<double> y = swiglu(gate, up, down, e, I, H, xt, act, biases);
        for (int64_t h = 0; h < H; ++h)
          o[static_cast<size_t>(h)] +=
              rw[static_cast<size_t>(t * s.k + j)] * y[static_cast<size_t>(h)];
      }
      if (s.shared) {
        double g = 1.0;
        if (!sg.empty()) {
          double z = 0;
          for (int64_t h = 0; h < H; ++h) z += xt[h] * sg[static_cast<size_t>(h)];
          g = 1.0 / (1.0 + std::exp(-z));
        }
        const std::vector<double> y = swiglu(sgate, sup, sdown, 0, Is, H, xt, act, Biases{});
        for (int64_t h = 0; h < H; ++h) o[static_cast<size_t>(h)] += g * y[static_cast<size_t>(h)];
      }
      for (double v : o) sum += v * v;
      count += H;
    }
    step.inputs = {x, ids, route_w};
    c.steps.push_back(std::move(step));
  }

  if (s.int8_products) {
    // x and the SwiGLU activations may be quantised to int8 per block of 32
    // (~0.0057 of their RMS per element, see cases_linear.cpp) before the
    // gate/up and the down products: ~0.01 of RMS(out) per expert, summed
    // with random signs; 5 std with a 2x spread, and the bf16 bounds of the
    // GEMM path: 8e-2.
    c.floor = std::sqrt(sum / static_cast<double>(std::max<int64_t>(1, count)));
    c.tolerance = 8e-2;
    c.why =
        "x and the SwiGLU activations may be quantised to int8 per block of 32 (~0.0057 RMS "
        "each): ~0.01 RMS(out) per expert, 5 std with 2x spread; floor = RMS of the outputs";
    return c;
  }
  const bool exact_products =
      !s.bf16_products && (max_rows <= 8 || s.x == DType::f32 ||
                           (s.quant.empty() && s.w == DType::f32 &&
                            (!s.shared || (*s.shared == DType::f32 && s.shared_quant.empty()))));
  const double rms = std::sqrt(sum / static_cast<double>(std::max<int64_t>(1, count)));
  if (exact_products) {
    c.tolerance = tolerance_for(s.x);
    c.floor = 0.05 * rms;
    c.why = why_for(s.x) +
            " (f32 products of exact operands: f32 x, few rows per expert, or f32 weights); f32 "
            "sums err by "
            "~sqrt(K) 2^-24 RMS(out) per product: floor 0.05 RMS(out)";
  } else {
    c.floor = rms;
    c.tolerance = std::max(tolerance_for(s.x), 4e-2);
    c.why =
        "x, the weights and the SwiGLU activations may be rounded to bf16 for a matrix unit: "
        "~1.6u of RMS(out) per expert, 5 std with 2x spread; floor = RMS of the outputs";
  }
  return c;
}

std::vector<Case> moe_cases() {
  std::mt19937 rng(3);
  std::vector<Case> out;
  const DType weights[] = {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3};
  auto dn = [](DType t) { return std::string(dtype_name(t)); };

  for (DType w : weights)
    for (int64_t t : {1, 5, 300}) {
      Spec s;
      s.name = dn(w) + "_experts_t" + std::to_string(t);
      s.w = w;
      s.tokens = {t};
      out.push_back(make(s, rng));
    }
  // Packed experts (quant): every format, routed and shared, zero points,
  // odd sizes (H and I odd: half-filled last bytes, partial groups), one
  // token to many, bf16 activations, a symbolic T.
  struct Packed {
    const char* quant;
    bool zeros;
    int64_t b1;
  };
  for (const Packed& f : {Packed{"int8", false, 32}, Packed{"int4", false, 32},
                          Packed{"int4", true, 64}, Packed{"mxfp4", false, 32}}) {
    const std::string base = std::string(f.quant) + (f.zeros ? "_zeros" : "");
    for (int64_t t : {1, 5, 300}) {
      Spec s;
      s.name = base + "_experts_t" + std::to_string(t);
      s.quant = f.quant;
      s.zeros = f.zeros;
      s.block = {1, f.b1};
      s.shared = DType::f32;
      s.shared_quant = f.quant;
      s.shared_gate = true;
      s.tokens = {t};
      out.push_back(make(s, rng));
    }
    {
      Spec s;
      s.name = base + "_odd_sizes_t9";
      s.quant = f.quant;
      s.zeros = f.zeros;
      s.block = {1, f.b1};
      s.hidden = 45;
      s.inter = 37;
      s.tokens = {9};
      out.push_back(make(s, rng));
      s.name = base + "_bf16_x_t40";
      s.x = DType::bf16;
      s.hidden = 64;
      s.inter = 96;
      s.tokens = {40};
      s.shared = DType::bf16;
      out.push_back(make(s, rng));
      s.name = base + "_symbolic_t";
      s.x = DType::f32;
      s.shared.reset();
      s.symbolic = true;
      s.tokens = {1, 20, 3};
      out.push_back(make(s, rng));
    }
  }
  // products = "int8": packed experts with x quantised per block of 32.
  for (const char* quant : {"int8", "int4", "mxfp4"})
    for (int64_t t : {1, 3, 50}) {
      Spec s;
      s.name = std::string("int8_products_") + quant + "_t" + std::to_string(t);
      s.quant = quant;
      s.shared_quant = quant;
      s.block = {1, 32};
      s.hidden = 96;
      s.inter = 64;
      s.int8_products = true;
      s.shared = DType::bf16;
      s.shared_gate = true;
      s.tokens = {t};
      out.push_back(make(s, rng));
    }
  for (int64_t t : {1, 4, 40}) {
    // Hidden and intermediate sizes with partial last chunks (DeepSeek's
    // tiny shapes).
    Spec s;
    s.name = "int8_products_int4_odd_t" + std::to_string(t);
    s.quant = "int4";
    s.shared_quant = "int4";
    s.block = {1, 32};
    s.hidden = 200;
    s.inter = 48;
    s.shared_inter = 40;
    s.int8_products = true;
    s.shared = DType::f32;
    s.tokens = {t};
    out.push_back(make(s, rng));
  }
  // products = "bf16": f32 x that a backend may round to bf16.
  for (const char* quant : {"", "int4"})
    for (int64_t t : {1, 64}) {
      Spec s;
      s.name = std::string("bf16_products_") + (*quant ? quant : "bf16") + "_t" + std::to_string(t);
      s.w = DType::bf16;
      s.quant = quant;
      if (*quant) {
        s.block = {1, 32};
        s.shared_quant = quant;
      }
      s.bf16_products = true;
      s.shared = DType::bf16;
      s.shared_gate = true;
      s.tokens = {t};
      out.push_back(make(s, rng));
    }
  // Shared experts (with and without the sigmoid gate; fp8 with scales).
  for (DType sh : {DType::bf16, DType::f8_e4m3, DType::f32})
    for (int64_t t : {1, 40}) {
      Spec s;
      s.name = dn(sh) + "_shared_gated_t" + std::to_string(t);
      s.w = DType::bf16;
      s.shared = sh;
      s.shared_gate = true;
      s.tokens = {t};
      out.push_back(make(s, rng));
    }
  {
    Spec s;
    s.name = "f16_shared_ungated_t3";
    s.w = DType::f8_e4m3;
    s.shared = DType::f16;
    s.tokens = {3};
    out.push_back(make(s, rng));
  }
  // bf16 / f16 activations (and a gate vector of that dtype).
  for (DType x : {DType::bf16, DType::f16})
    for (int64_t t : {4, 50}) {
      Spec s;
      s.name = dn(x) + "_x_t" + std::to_string(t);
      s.x = x;
      s.w = DType::bf16;
      s.shared = DType::bf16;
      s.shared_gate = true;
      s.tokens = {t};
      out.push_back(make(s, rng));
    }
  // Routing: repeated ids in a token, unchosen experts, all on one expert.
  {
    Spec s;
    s.name = "repeated_ids";
    s.k = 4;
    s.experts = 4;
    s.repeats = true;
    s.tokens = {6};
    out.push_back(make(s, rng));
    s.name = "repeated_ids_bf16_many";
    s.w = DType::bf16;
    s.tokens = {64};
    out.push_back(make(s, rng));
  }
  for (int64_t t : {7, 100}) {
    Spec s;
    s.name = "unchosen_experts_t" + std::to_string(t);
    s.w = DType::f16;
    s.experts = 16;
    s.chosen = 6;
    s.tokens = {t};
    out.push_back(make(s, rng));
  }
  {
    Spec s;
    s.name = "one_expert_for_all";
    s.w = DType::f8_e4m3;
    s.k = 1;
    s.only = 3;
    s.tokens = {30};
    out.push_back(make(s, rng));
  }
  // One busy expert (a GEMM) beside little-used ones (GEMV tasks), in both
  // orders of expert ids.
  for (int64_t first : {0, 7}) {
    Spec s;
    s.name = "skewed_routing_busy_expert_" + std::to_string(first);
    s.w = DType::bf16;
    s.first = first;
    s.tokens = {40};
    out.push_back(make(s, rng));
  }
  {
    Spec s;
    s.name = "i64_ids_bf16_weights";
    s.ids = DType::i64;
    s.route_weights = DType::bf16;
    s.w = DType::bf16;
    s.tokens = {3};
    out.push_back(make(s, rng));
  }
  // A symbolic T from decode to prefill and back.
  for (DType w : {DType::bf16, DType::f8_e4m3}) {
    Spec s;
    s.name = dn(w) + "_symbolic_t";
    s.w = w;
    s.shared = w;
    s.symbolic = true;
    s.tokens = {1, 2, 17, 1};
    out.push_back(make(s, rng));
  }
  // fp8 scale grids: odd block sizes, and matrices not a multiple of 128.
  for (int64_t t : {2, 40}) {
    Spec s;
    s.name = "f8_block_32x16_t" + std::to_string(t);
    s.w = DType::f8_e4m3;
    s.shared = DType::f8_e4m3;
    s.hidden = 72;
    s.inter = 40;
    s.shared_inter = 24;
    s.block = {32, 16};
    s.tokens = {t};
    out.push_back(make(s, rng));
    s.name = "f8_default_block_odd_sizes_t" + std::to_string(t);
    s.hidden = 200;
    s.inter = 136;
    s.shared_inter = 130;
    s.block = {};
    s.experts = 4;
    out.push_back(make(s, rng));
  }
  // Version 3 (GPT-OSS): biases on gate, up and down, and the clamped
  // activation.  limit 0.8 (GPT-OSS's is 7) clamps about a third of the unit
  // scale pre-activations, so both sides of the clamp are exercised; also
  // the real parameters, biases alone, the activation alone, a shared expert
  // taking the same activation, every routed format, one token to many.
  const ops::SwigluParams oai{1.702, 0.8, 1.0}, real{1.702, 7.0, 1.0};
  struct V3 {
    const char* name;
    DType w;
    const char* quant;
    bool bias;
    std::optional<ops::SwigluParams> act;
  };
  for (const V3& v :
       {V3{"oai_mxfp4", DType::f32, "mxfp4", true, oai}, V3{"oai_bf16", DType::bf16, "", true, oai},
        V3{"oai_f32_real_limit", DType::f32, "", true, real},
        V3{"biases_only_int4", DType::f32, "int4", true, std::nullopt},
        V3{"clamp_only_f8", DType::f8_e4m3, "", false, oai}})
    for (int64_t t : {1, 5, 120}) {
      Spec s;
      s.name = std::string(v.name) + "_t" + std::to_string(t);
      s.w = v.w;
      s.quant = v.quant;
      if (*v.quant) s.block = {1, 32};
      if (v.bias) s.bias = t == 5 ? DType::bf16 : DType::f32;
      s.act = v.act;
      s.k = 4;
      s.hidden = 96;
      s.inter = 64;
      s.tokens = {t};
      out.push_back(make(s, rng));
    }
  {
    Spec s;
    s.name = "oai_shared_expert_t7";
    s.w = DType::bf16;
    s.bias = DType::f32;
    s.act = oai;
    s.shared = DType::bf16;
    s.shared_gate = true;
    s.tokens = {7};
    out.push_back(make(s, rng));
    s.name = "oai_mxfp4_symbolic_t";
    s.shared.reset();
    s.shared_gate = false;
    s.quant = "mxfp4";
    s.block = {1, 32};
    s.symbolic = true;
    s.tokens = {1, 33, 2};
    out.push_back(make(s, rng));
    s.name = "oai_mxfp4_int8_products_t20";
    s.symbolic = false;
    s.int8_products = true;
    s.tokens = {20};
    out.push_back(make(s, rng));
    s.name = "oai_bf16_x_t40";
    s.int8_products = false;
    s.x = DType::bf16;
    s.bias = DType::bf16;
    s.tokens = {40};
    out.push_back(make(s, rng));
  }
  // Larger matrices (several threads' shares in decode).
  {
    Spec s;
    s.name = "bf16_wide_t1";
    s.w = DType::bf16;
    s.hidden = 1024;
    s.inter = 512;
    s.experts = 2;
    s.shared = DType::bf16;
    s.shared_inter = 256;
    s.tokens = {1};
    out.push_back(make(s, rng));
  }
  return out;
}

const CaseRegistration moe_registration("moe", moe_cases);

// routing_dense: every id repeated or not, i64 ids, bf16 weights, symbolic T.
std::vector<Case> routing_cases() {
  std::mt19937 rng(9);
  std::vector<Case> out;
  for (DType ids : {DType::i32, DType::i64})
    for (DType w : {DType::f32, DType::bf16}) {
      const std::string name =
          std::string(dtype_name(ids)) + "_ids_" + std::string(dtype_name(w)) + "_weights";
      out.push_back(simple_case(
          name, "routing_dense", {random_ints(ids, {9, 3}, 0, 5, rng), random(w, {9, 3}, rng)},
          {{"num_experts", int64_t{6}}}, 1e-6,
          "a sum of at most 3 weights in f32 against double: exact to ~1e-7"));
    }
  {
    Case c;
    c.name = "symbolic_t";
    c.op = "routing_dense";
    c.attrs.set("num_experts", int64_t{7});
    c.slots = {activation(DType::i32, Shape{Dim::tokens(), Dim(2)}),
               activation(DType::f32, Shape{Dim::tokens(), Dim(2)})};
    for (int64_t t : {1, 5}) {
      Step s;
      s.tokens = t;
      s.inputs = {random_ints(DType::i32, {t, 2}, 0, 6, rng), random(DType::f32, {t, 2}, rng)};
      c.steps.push_back(std::move(s));
    }
    c.tolerance = 1e-6;
    c.why = "a sum of at most 2 weights in f32 against double: exact to ~1e-7";
    out.push_back(std::move(c));
  }
  return out;
}

const CaseRegistration routing_registration("routing_dense", routing_cases);

}  // namespace
}  // namespace moert::conformance
