// moe(x [T, H], expert_ids [T, k] i32|i64, expert_weights [T, k] float,
//     gate [E, I, H], up [E, I, H], down [E, H, I],
//     gate_scale?, up_scale?, down_scale?,
//     shared_gate? [Is, H], shared_up? [Is, H], shared_down? [H, Is],
//     shared_gate_scale?, shared_up_scale?, shared_down_scale?,
//     shared_expert_gate? [1, H],
//     gate_bias? [E, I], up_bias? [E, I], down_bias? [E, H]) -> out [T, H],
//     x's dtype.
//   SwiGLU experts, weights stored [out, in] as in the checkpoints:
//     expert_e(v) = down_e act(gate_e v + gb_e, up_e v + ub_e) + db_e
//   with act(g, u) = silu(g) * u, silu(z) = z sigmoid(z), and the biases
//   gb, ub, db 0 unless given (since version 3, any of the three, f32, bf16
//   or f16; routed experts only: GPT-OSS).  Attributes swiglu_alpha,
//   swiglu_limit and swiglu_up_offset (since version 3; defaults 1, 0, 0)
//   give act the clamped form of ops/swiglu_params.h, for routed and shared
//   experts alike.
//     out[t] = sum_j expert_weights[t, j] expert_{expert_ids[t, j]}(x[t])
//              + g_t shared(x[t])
//   where shared is the same SwiGLU with the shared_* matrices (all three or
//   none) and g_t = sigmoid(x[t] . shared_expert_gate[0]) when that input is
//   given (Qwen2-MoE), else 1.  Routed and shared weights are f32, bf16, f16 or
//   f8_e4m3; an f8_e4m3 matrix requires its f32 block scale (and others take
//   none): [E, ceil(I/b0), ceil(H/b1)] for gate and up, [E, ceil(H/b0),
//   ceil(I/b1)] for down, 2-D without E for the shared ones, with [b0, b1] =
//   attribute block_size (ints, default [128, 128]); W[r, c] = e4m3(Wq[r, c]) *
//   scale[r / b0, c / b1].  x is f32, bf16 or f16; shared_expert_gate too.  H,
//   I, E, Is are static; T may be symbolic.  An expert id outside [0, E) is an
//   error.  Computed in double, rounded once on store.
//   Attributes quant and shared_quant (strings, since version 2, default
//   "none"): routed and shared weights packed as ops/weight_format.h
//   defines (scales then f16, or e8m0 u8 for mxfp4; gate, up and down of
//   each set in one format).  Attribute products (since version 2, default
//   "exact"): as linear's, for every product of the op (the SwiGLU
//   activations included).
//
// routing_dense(expert_ids [T, k] i32|i64, expert_weights [T, k] float)
//     -> dense [T, E] f32, E = attribute num_experts (int, required, > 0):
//   dense[t, e] = sum of expert_weights[t, j] over the slots j with
//   expert_ids[t, j] == e (0 for unchosen experts).
//
// moe decomposes into the dense formulation (every expert runs on every
// token; for backends without a fused moe): routing_dense, then per expert
// slice/reshape of the stacked weights, linear, swiglu, a mul by the expert's
// dense column and an add.
#include <cmath>

#include "kernel_util.h"
#include "ops.h"
#include "swiglu_params.h"

namespace moert::ops {

namespace {

enum : size_t {
  kX,
  kIds,
  kWeights,
  kGate,
  kUp,
  kDown,
  kGateScale,
  kUpScale,
  kDownScale,
  kSharedGate,
  kSharedUp,
  kSharedDown,
  kSharedGateScale,
  kSharedUpScale,
  kSharedDownScale,
  kSharedExpertGate,
  kGateBias,
  kUpBias,
  kDownBias,
  kNumInputs
};

std::string ints_str(const std::vector<int64_t>& v) { return attr_value_str(AttrValue(v)); }
std::string dtype_str(DType t) { return std::string(dtype_name(t)); }

std::vector<int64_t> block_size(const Attributes& a) {
  return a.get_ints("block_size", {128, 128});
}

const std::vector<std::string>& input_names() {
  static const std::vector<std::string> names{"x",
                                              "expert_ids",
                                              "expert_weights",
                                              "gate",
                                              "up",
                                              "down",
                                              "gate_scale",
                                              "up_scale",
                                              "down_scale",
                                              "shared_gate",
                                              "shared_up",
                                              "shared_down",
                                              "shared_gate_scale",
                                              "shared_up_scale",
                                              "shared_down_scale",
                                              "shared_expert_gate",
                                              "gate_bias",
                                              "up_bias",
                                              "down_bias"};
  return names;
}

std::string in_name(size_t i) { return "input '" + input_names()[i] + "'"; }

// Inference of one weight (stacked [E, rows, cols] when experts > 0, else
// [rows, cols]) in format `f` and its optional scale.
void check_weight(const InferContext& ctx, WeightFormat f, size_t wi, size_t si, int64_t experts,
                  int64_t rows, int64_t cols, const std::vector<int64_t>& block) {
  std::vector<int64_t> lead;
  if (experts > 0) lead.push_back(experts);
  check_weight_format(ctx, f, wi, si, lead, rows, cols, block, in_name);
}

// Inference of expert_ids / expert_weights ([T, k] each, T matching x when
// x is given).
void check_routing(const InferContext& ctx, size_t ids_i, size_t w_i) {
  const ValueInfo& ids = ctx.in(ids_i);
  const ValueInfo& w = ctx.in(w_i);
  ctx.require(ids.dtype == DType::i32 || ids.dtype == DType::i64,
              "input 'expert_ids' must be i32 or i64, got " + dtype_str(ids.dtype));
  require_rank(ctx, ids_i, 2, "input 'expert_ids' [T, k]");
  require_float(ctx, w_i, "input 'expert_weights'");
  ctx.require(w.shape == ids.shape, "input 'expert_weights' " + w.shape.str() +
                                        " must have the shape of input 'expert_ids' " +
                                        ids.shape.str());
}

template <typename Ctx>
int64_t expert_id(const Ctx& ctx, const TensorView& ids, int64_t t, int64_t j, int64_t experts) {
  const int64_t k = ids.dim(1);
  const double v = ids.get(t * k + j);
  if (!(v >= 0.0 && v < static_cast<double>(experts)))
    ctx.fail("input 'expert_ids'[" + std::to_string(t) + ", " + std::to_string(j) +
             "] = " + std::to_string(static_cast<int64_t>(v)) + " is out of range [0, " +
             std::to_string(experts) + ")");
  return static_cast<int64_t>(v);
}

const TensorView* scale_of(const KernelContext& ctx, size_t i) {
  return ctx.has(i) ? &ctx.in(i) : nullptr;
}

// y = W v for a dense [rows, cols] matrix.
std::vector<double> matvec(const std::vector<double>& w, const double* v, int64_t rows,
                           int64_t cols) {
  std::vector<double> y(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0.0;
    for (int64_t c = 0; c < cols; ++c) acc += w[static_cast<size_t>(r * cols + c)] * v[c];
    y[static_cast<size_t>(r)] = acc;
  }
  return y;
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// The dequantized matrices (and biases, empty when absent) of one SwiGLU MLP.
struct SwiGlu {
  std::vector<double> gate, up, down;  // [I, H], [I, H], [H, I]
  std::vector<double> gate_bias, up_bias, down_bias;
  int64_t inter = 0, hidden = 0;

  std::vector<double> apply(const double* v, const SwigluParams& act) const {
    std::vector<double> g = matvec(gate, v, inter, hidden);
    std::vector<double> u = matvec(up, v, inter, hidden);
    add_bias(g, gate_bias);
    add_bias(u, up_bias);
    for (size_t i = 0; i < g.size(); ++i) g[i] = act.apply(g[i], u[i]);
    std::vector<double> y = matvec(down, g.data(), hidden, inter);
    add_bias(y, down_bias);
    return y;
  }
  static void add_bias(std::vector<double>& y, const std::vector<double>& b) {
    if (!b.empty())
      for (size_t i = 0; i < y.size(); ++i) y[i] += b[i];
  }
};

// Row e of a [E, n] bias, or nothing when the input is absent.
std::vector<double> bias_row(const KernelContext& ctx, size_t i, int64_t e) {
  if (!ctx.has(i)) return {};
  const TensorView& b = ctx.in(i);
  const int64_t n = b.dim(1);
  std::vector<double> row(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) row[static_cast<size_t>(c)] = b.get(e * n + c);
  return row;
}

template <typename Ctx>
SwigluParams activation(const Ctx& ctx) {
  SwigluParams p;
  if (const std::string problem = swiglu_params(AttrReader{ctx.attrs()}, "swiglu_", &p);
      !problem.empty())
    ctx.fail(problem);
  return p;
}

void register_moe_op(OpRegistry& r) {
  OpDef d;
  d.name = "moe";
  d.summary = "routed SwiGLU experts (optionally fp8 block-scaled) plus optional shared expert";
  for (size_t i = 0; i < kNumInputs; ++i)
    d.inputs.push_back({input_names()[i], i >= kGateScale, false, i >= kGateBias ? 3u : 1u});
  d.outputs = {"out"};
  d.infer = [](const InferContext& ctx) {
    const std::vector<int64_t> block = block_size(ctx.attrs());
    ctx.require(block.size() == 2 && block[0] > 0 && block[1] > 0,
                "attribute 'block_size' must be two sizes > 0, got " + ints_str(block));
    const ValueInfo& x = ctx.in(kX);
    require_activation(ctx, kX, "input 'x'");
    require_rank(ctx, kX, 2, "input 'x' [T, H]");
    ctx.require(x.shape[1].is_static() && x.shape[1].fixed > 0,
                "input 'x' must have a static hidden size > 0, got " + x.shape.str());
    const int64_t hidden = x.shape[1].fixed;
    check_routing(ctx, kIds, kWeights);
    ctx.require(ctx.in(kIds).shape[0] == x.shape[0],
                "input 'expert_ids' " + ctx.in(kIds).shape.str() +
                    " must have one row per token of input 'x' " + x.shape.str());
    const WeightFormat routed = weight_format(ctx.attrs(), "quant");
    const WeightFormat shared_format = weight_format(ctx.attrs(), "shared_quant");
    const Shape& gs = ctx.in(kGate).shape;
    ctx.require(gs.rank() == 3 && gs.is_static() && gs[0].fixed > 0 && gs[1].fixed > 0,
                "input 'gate' must be a static [E, I, H] with E, I > 0, got " + gs.str());
    const int64_t experts = gs[0].fixed, inter = gs[1].fixed;
    activation(ctx);
    for (const auto& [i, n] :
         {std::pair{kGateBias, inter}, {kUpBias, inter}, {kDownBias, hidden}}) {
      if (!ctx.has(i)) continue;
      require_activation(ctx, i, in_name(i));
      ctx.require(ctx.in(i).shape == Shape{Dim(experts), Dim(n)},
                  in_name(i) + " must be [E, " + (i == kDownBias ? "H" : "I") + "] = [" +
                      std::to_string(experts) + ", " + std::to_string(n) + "], got " +
                      ctx.in(i).shape.str());
    }
    check_weight(ctx, routed, kGate, kGateScale, experts, inter, hidden, block);
    check_weight(ctx, routed, kUp, kUpScale, experts, inter, hidden, block);
    check_weight(ctx, routed, kDown, kDownScale, experts, hidden, inter, block);
    const bool shared = ctx.has(kSharedGate) || ctx.has(kSharedUp) || ctx.has(kSharedDown);
    if (shared) {
      ctx.require(ctx.has(kSharedGate) && ctx.has(kSharedUp) && ctx.has(kSharedDown),
                  "inputs 'shared_gate', 'shared_up' and 'shared_down' must be given all or none");
      const Shape& ss = ctx.in(kSharedGate).shape;
      ctx.require(ss.rank() == 2 && ss.is_static() && ss[0].fixed > 0,
                  "input 'shared_gate' must be a static [Is, H] with Is > 0, got " + ss.str());
      const int64_t shared_inter = ss[0].fixed;
      check_weight(ctx, shared_format, kSharedGate, kSharedGateScale, 0, shared_inter, hidden,
                   block);
      check_weight(ctx, shared_format, kSharedUp, kSharedUpScale, 0, shared_inter, hidden, block);
      check_weight(ctx, shared_format, kSharedDown, kSharedDownScale, 0, hidden, shared_inter,
                   block);
    } else {
      for (size_t i : {kSharedGateScale, kSharedUpScale, kSharedDownScale, kSharedExpertGate})
        ctx.require(!ctx.has(i), in_name(i) + " is given without the shared expert");
    }
    if (ctx.has(kSharedExpertGate)) {
      const ValueInfo& sg = ctx.in(kSharedExpertGate);
      ctx.require(is_activation_dtype(sg.dtype),
                  "input 'shared_expert_gate' must be f32, bf16 or "
                  "f16, got " +
                      dtype_str(sg.dtype));
      ctx.require(sg.shape == Shape{Dim(1), Dim(hidden)},
                  "input 'shared_expert_gate' must be [1, H] = [1, " + std::to_string(hidden) +
                      "], got " + sg.shape.str());
    }
    return std::vector<ValueInfo>{x};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(kX);
    const TensorView& ids = ctx.in(kIds);
    const TensorView& w = ctx.in(kWeights);
    const int64_t tokens = x.dim(0), hidden = x.dim(1);
    const int64_t k = ids.dim(1);
    const int64_t experts = ctx.in(kGate).dim(0), inter = ctx.in(kGate).dim(1);
    if (ids.dim(0) != tokens)
      ctx.fail("input 'expert_ids' has " + std::to_string(ids.dim(0)) + " rows, input 'x' has " +
               std::to_string(tokens) + " tokens");
    const std::vector<int64_t> block = block_size(ctx.attrs());
    const WeightFormat routed = weight_format(ctx.attrs(), "quant");
    const WeightFormat shared_format = weight_format(ctx.attrs(), "shared_quant");
    const SwigluParams act = activation(ctx);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < k; ++j) expert_id(ctx, ids, t, j, experts);
    // Experts are dequantized once, when first chosen.
    std::vector<SwiGlu> mlp(static_cast<size_t>(experts));
    auto expert = [&](int64_t e) -> const SwiGlu& {
      SwiGlu& m = mlp[static_cast<size_t>(e)];
      if (m.hidden == 0) {
        m.inter = inter;
        m.hidden = hidden;
        m.gate = dequantize_matrix(ctx.in(kGate), scale_of(ctx, kGateScale), e, inter, hidden,
                                   block[0], block[1], routed);
        m.up = dequantize_matrix(ctx.in(kUp), scale_of(ctx, kUpScale), e, inter, hidden, block[0],
                                 block[1], routed);
        m.down = dequantize_matrix(ctx.in(kDown), scale_of(ctx, kDownScale), e, hidden, inter,
                                   block[0], block[1], routed);
        m.gate_bias = bias_row(ctx, kGateBias, e);
        m.up_bias = bias_row(ctx, kUpBias, e);
        m.down_bias = bias_row(ctx, kDownBias, e);
      }
      return m;
    };
    SwiGlu shared;
    const bool has_shared = ctx.has(kSharedGate);
    if (has_shared) {
      shared.inter = ctx.in(kSharedGate).dim(0);
      shared.hidden = hidden;
      shared.gate = dequantize_matrix(ctx.in(kSharedGate), scale_of(ctx, kSharedGateScale), 0,
                                      shared.inter, hidden, block[0], block[1], shared_format);
      shared.up = dequantize_matrix(ctx.in(kSharedUp), scale_of(ctx, kSharedUpScale), 0,
                                    shared.inter, hidden, block[0], block[1], shared_format);
      shared.down = dequantize_matrix(ctx.in(kSharedDown), scale_of(ctx, kSharedDownScale), 0,
                                      hidden, shared.inter, block[0], block[1], shared_format);
    }
    std::vector<double> shared_gate;
    if (ctx.has(kSharedExpertGate)) shared_gate = load(ctx.in(kSharedExpertGate));
    const std::vector<double> xs = load(x);
    std::vector<double> out(static_cast<size_t>(tokens * hidden), 0.0);
    for (int64_t t = 0; t < tokens; ++t) {
      const double* xt = &xs[static_cast<size_t>(t * hidden)];
      double* ot = &out[static_cast<size_t>(t * hidden)];
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = expert_id(ctx, ids, t, j, experts);
        const double weight = w.get(t * k + j);
        const std::vector<double> y = expert(e).apply(xt, act);
        for (int64_t c = 0; c < hidden; ++c) ot[c] += weight * y[static_cast<size_t>(c)];
      }
      if (has_shared) {
        double g = 1.0;
        if (!shared_gate.empty()) {
          double z = 0.0;
          for (int64_t c = 0; c < hidden; ++c) z += xt[c] * shared_gate[static_cast<size_t>(c)];
          g = sigmoid(z);
        }
        const std::vector<double> y = shared.apply(xt, act);
        for (int64_t c = 0; c < hidden; ++c) ot[c] += g * y[static_cast<size_t>(c)];
      }
    }
    store(ctx.out(0), out);
  };
  d.decompose = [](Graph& g, const Node& node) {
    auto input = [&](size_t i) { return i < node.inputs.size() ? node.inputs[i] : kNoValue; };
    const std::string& name = node.name;
    const ValueId x = input(kX);
    // Copies, not references: adding nodes may move the graph's values.
    const DType x_dtype = g.value(x).dtype;
    const int64_t experts = g.value(input(kGate)).shape[0].fixed;
    const std::vector<int64_t> block = block_size(node.attrs);
    // Expert e's [rows, cols] slice of a stacked [E, rows, cols] weight or scale.
    auto slice_expert = [&](size_t i, int64_t e, const std::string& prefix) {
      const ValueId stacked = input(i);
      if (stacked == kNoValue) return kNoValue;
      const std::vector<int64_t> dims = g.value(stacked).shape.static_dims();
      const std::string base = prefix + "." + input_names()[i];
      const ValueId s = g.add("slice", base + "_slice", {stacked},
                              {{"axis", int64_t{0}}, {"start", e}, {"length", int64_t{1}}});
      return g.add("reshape", base, {s},
                   {{"shape", std::vector<int64_t>(dims.begin() + 1, dims.end())}});
    };
    const WeightFormat routed = weight_format(node.attrs, "quant");
    const WeightFormat shared_format = weight_format(node.attrs, "shared_quant");
    auto linear = [&](ValueId v, ValueId weight, ValueId scale, WeightFormat f,
                      const std::string& nm, ValueId bias = kNoValue) {
      if (scale == kNoValue)
        return bias == kNoValue ? g.add("linear", nm, {v, weight})
                                : g.add("linear", nm, {v, weight, bias});
      Attributes attrs{{"block_size", block}};
      if (f != WeightFormat::none) attrs.set("quant", std::string(weight_format_name(f)));
      return g.add("linear", nm, {v, weight, bias, scale}, attrs);
    };
    // The activation's attributes, set only when they differ from plain SwiGLU
    // (so that the swiglu nodes stay version 1 then).
    SwigluParams act_params;
    swiglu_params(AttrReader{node.attrs}, "swiglu_", &act_params);
    Attributes act_attrs;
    if (!act_params.plain())
      act_attrs = Attributes{{"alpha", act_params.alpha},
                             {"limit", act_params.limit},
                             {"up_offset", act_params.up_offset}};
    // Expert e's row of a [E, n] bias, as [n].
    auto bias_of = [&](size_t i, int64_t e, const std::string& prefix) {
      if (input(i) == kNoValue) return kNoValue;
      const int64_t n = g.value(input(i)).shape[1].fixed;
      const std::string base = prefix + "." + input_names()[i];
      const ValueId s = g.add("slice", base + "_slice", {input(i)},
                              {{"axis", int64_t{0}}, {"start", e}, {"length", int64_t{1}}});
      return g.add("reshape", base, {s}, {{"shape", std::vector<int64_t>{n}}});
    };
    auto swiglu = [&](ValueId wg, ValueId wu, ValueId wd, ValueId sg, ValueId su, ValueId sd,
                      WeightFormat f, const std::string& prefix, int64_t e) {
      const ValueId hg = linear(x, wg, sg, f, prefix + ".gate_proj",
                                e < 0 ? kNoValue : bias_of(kGateBias, e, prefix));
      const ValueId hu =
          linear(x, wu, su, f, prefix + ".up_proj", e < 0 ? kNoValue : bias_of(kUpBias, e, prefix));
      const ValueId act = g.add("swiglu", prefix + ".act", {hg, hu}, act_attrs);
      return linear(act, wd, sd, f, prefix + ".down_proj",
                    e < 0 ? kNoValue : bias_of(kDownBias, e, prefix));
    };
    std::vector<ValueId> terms;
    const ValueId dense = g.add("routing_dense", name + ".dense", {input(kIds), input(kWeights)},
                                {{"num_experts", experts}});
    for (int64_t e = 0; e < experts; ++e) {
      const std::string prefix = name + ".expert" + std::to_string(e);
      const ValueId y = swiglu(slice_expert(kGate, e, prefix), slice_expert(kUp, e, prefix),
                               slice_expert(kDown, e, prefix), slice_expert(kGateScale, e, prefix),
                               slice_expert(kUpScale, e, prefix),
                               slice_expert(kDownScale, e, prefix), routed, prefix, e);
      ValueId col = g.add("slice", prefix + ".weight", {dense},
                          {{"axis", int64_t{1}}, {"start", e}, {"length", int64_t{1}}});
      if (x_dtype != DType::f32)
        col = g.add("cast", prefix + ".weight_cast", {col},
                    {{"dtype", std::string(dtype_name(x_dtype))}});
      terms.push_back(g.add("mul", prefix + ".weighted", {y, col}));
    }
    if (input(kSharedGate) != kNoValue) {
      const std::string prefix = name + ".shared";
      ValueId y =
          swiglu(input(kSharedGate), input(kSharedUp), input(kSharedDown), input(kSharedGateScale),
                 input(kSharedUpScale), input(kSharedDownScale), shared_format, prefix, -1);
      if (input(kSharedExpertGate) != kNoValue) {
        const ValueId logit = linear(x, input(kSharedExpertGate), kNoValue, WeightFormat::none,
                                     prefix + ".gate_logit");
        const ValueId gate = g.add("sigmoid", prefix + ".gate", {logit});
        y = g.add("mul", prefix + ".gated", {y, gate});
      }
      terms.push_back(y);
    }
    ValueId acc = terms[0];
    for (size_t i = 1; i < terms.size(); ++i)
      acc = g.add("add", i + 1 == terms.size() ? name : name + ".sum" + std::to_string(i),
                  {acc, terms[i]});
    return std::vector<ValueId>{acc};
  };
  r.add(std::move(d));
}

void register_routing_dense(OpRegistry& r) {
  OpDef d;
  d.name = "routing_dense";
  d.summary = "scatter top-k routing weights into a dense [T, E] matrix";
  d.inputs = {{"expert_ids"}, {"expert_weights"}};
  d.outputs = {"dense"};
  d.infer = [](const InferContext& ctx) {
    check_routing(ctx, 0, 1);
    const int64_t experts = ctx.attrs().get_int("num_experts");
    ctx.require(experts > 0, "attribute 'num_experts' must be > 0, got " + std::to_string(experts));
    return std::vector<ValueInfo>{{DType::f32, Shape{ctx.in(0).shape[0], Dim(experts)}}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& ids = ctx.in(0);
    const TensorView& w = ctx.in(1);
    const int64_t tokens = ids.dim(0), k = ids.dim(1);
    const int64_t experts = ctx.attrs().get_int("num_experts");
    std::vector<double> dense(static_cast<size_t>(tokens * experts), 0.0);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = expert_id(ctx, ids, t, j, experts);
        dense[static_cast<size_t>(t * experts + e)] += w.get(t * k + j);
      }
    store(ctx.out(0), dense);
  };
  r.add(std::move(d));
}

}  // namespace

void register_moe(OpRegistry& r) {
  register_moe_op(r);
  register_routing_dense(r);
}

}  // namespace moert::ops
