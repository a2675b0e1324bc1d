#include "decoder_builder.h"

#include <algorithm>
#include <cstring>

#include "moert/error.h"
#include "weight_format.h"

namespace moert {

namespace {

using Ints = std::vector<int64_t>;

// Linear weights as the graph consumes them.
struct LinearWeights {
  ValueId weight = kNoValue;
  ValueId scale = kNoValue;  // fp8 block scale, or a packed weight's group scale
  ValueId bias = kNoValue;
  ops::WeightFormat format = ops::WeightFormat::none;
  Ints block;           // the scale's groups {b0, b1}; empty without a scale
  Ints shape;           // [out, in] (per expert)
  std::string name;     // the checkpoint name, for messages
  bool narrow = false;  // stored narrower than f32 (bf16, f16, fp8, packed)
  bool router = false;  // a router's linear: products stay exact
};

// The groups one node's block_size attribute must give every scaled weight of
// a moe node: each weight's own, or any larger one where its groups already
// span the whole dim (one scale per row or column either way).  Throws naming
// the weights when none fits.
Ints common_block(const std::string& node, const std::vector<const LinearWeights*>& weights) {
  Ints block;
  for (const LinearWeights* w : weights)
    if (!w->block.empty()) {
      if (block.empty()) block = w->block;
      block[0] = std::max(block[0], w->block[0]);
      block[1] = std::max(block[1], w->block[1]);
    }
  if (block.empty()) return block;
  auto label = [](const LinearWeights& w) {
    return w.name + " (" +
           (w.format == ops::WeightFormat::none ? std::string("fp8")
                                                : std::string(ops::weight_format_name(w.format))) +
           " groups [" + std::to_string(w.block[0]) + ", " + std::to_string(w.block[1]) + "])";
  };
  for (const LinearWeights* w : weights) {
    if (w->block.empty()) continue;
    for (size_t d = 0; d < 2; ++d)
      if (w->block[d] != block[d] && w->block[d] < w->shape[d]) {
        std::string all;
        for (const LinearWeights* o : weights)
          if (!o->block.empty()) all += (all.empty() ? "" : ", ") + label(*o);
        throw Error(node +
                    ": the weights of one moe node must share their scale groups (its "
                    "block_size), but they are " +
                    all);
      }
  }
  return block;
}

class Builder {
 public:
  Builder(const ArchSpec& a, WeightSource& w, const BuildOptions& o) : a_(a), src_(w), opt_(o) {}

  Graph build();

 private:
  // Weight `name` with the shape config.json implies, as a graph constant.
  ValueId constant(const std::string& name, const Ints& shape, WeightRole role) {
    return g_.add_constant(name, src_.tensor(name, shape, role));
  }
  // A LinearTensor as graph constants named after `weight_name`: an fp8
  // scale "<name>_scale_inv", a packed weight's scale "<name>_scale".
  LinearWeights constants(const std::string& weight_name, const LinearTensor& t, int64_t out,
                          int64_t in) {
    LinearWeights w;
    w.name = weight_name;
    w.shape = {out, in};
    w.format = t.format;
    w.block = t.block;
    w.narrow = t.packed() || t.weight.dtype() != DType::f32;
    w.weight = g_.add_constant(weight_name, t.weight);
    if (t.scale.defined())
      w.scale = g_.add_constant(weight_name + (t.packed() ? "_scale" : "_scale_inv"), t.scale);
    return w;
  }
  LinearWeights linear(const std::string& prefix, int64_t out, int64_t in, bool bias,
                       WeightRole role = WeightRole::linear) {
    LinearWeights w =
        constants(prefix + ".weight", src_.linear(prefix + ".weight", out, in, role), out, in);
    if (bias) w.bias = constant(prefix + ".bias", {out}, WeightRole::bias);
    w.router = role == WeightRole::router;
    return w;
  }
  // The products attribute of a node with these weights (BuildOptions):
  // "int8" when one is packed, "bf16" when one is otherwise narrower than
  // f32, "" (exact, the default) otherwise or for routers.
  std::string fast_products(const std::vector<const LinearWeights*>& weights) const {
    if (!opt_.bf16_products || opt_.activation_dtype != DType::f32) return "";
    std::string out;
    for (const LinearWeights* w : weights) {
      if (w->router) continue;
      if (w->format != ops::WeightFormat::none) return "int8";
      if (w->narrow) out = "bf16";
    }
    return out;
  }
  // A linear node; a packed weight sets the op's quant and block_size (a
  // plain or fp8 one nothing, so that the node stays op version 1).
  ValueId apply(const std::string& name, ValueId x, const LinearWeights& w, Attributes attrs = {}) {
    if (w.format != ops::WeightFormat::none) {
      attrs.set("quant", std::string(ops::weight_format_name(w.format)));
      attrs.set("block_size", w.block);
    }
    if (const std::string p = fast_products({&w}); !p.empty()) attrs.set("products", p);
    return g_.add("linear", name, {x, w.weight, w.bias, w.scale}, std::move(attrs));
  }
  // Per-expert [out, in] tensors stacked into [E, out, in], with their scales.
  LinearWeights stacked(const std::string& layer, const std::string& proj, int64_t out,
                        int64_t in) {
    const std::string base = layer + a_.moe_prefix + ".experts.";
    std::vector<std::string> names;
    for (int64_t e = 0; e < a_.experts; ++e)
      names.push_back(base + std::to_string(e) + "." + proj + ".weight");
    return constants(base + "*." + proj + ".weight", src_.stacked(names, out, in), out, in);
  }

  Attributes rope_attrs() const {
    const RopeSpec& r = a_.rope;
    Attributes at{{"theta", r.theta}, {"rotary_dim", r.rotary_dim}, {"pairing", r.pairing}};
    if (r.scaling == "linear") {
      at.set("scaling", std::string("linear"));
      at.set("factor", r.factor);
    } else if (r.scaling == "yarn") {
      at.set("scaling", std::string("yarn"));
      at.set("factor", r.factor);
      at.set("original_max_position_embeddings",
             static_cast<int64_t>(r.original_max_position_embeddings));
      at.set("beta_fast", r.beta_fast);
      at.set("beta_slow", r.beta_slow);
      at.set("mscale", r.mscale);
      at.set("mscale_all_dim", r.mscale_all_dim);
      at.set("truncate", int64_t{r.truncate ? 1 : 0});
      if (r.attention_factor) at.set("attention_factor", *r.attention_factor);
    }
    return at;
  }
  Attributes attention_attrs(int64_t layer) const {
    Attributes at{{"scale", a_.attention_scale}, {"block_size", opt_.kv_block_size}};
    if (a_.sliding(layer)) at.set("window", a_.sliding_window);
    return at;
  }
  Attributes eps(double e) const { return Attributes{{"eps", e}}; }
  ValueId reshape(const std::string& name, ValueId x, Ints shape) {
    return g_.add("reshape", name, {x}, {{"shape", std::move(shape)}});
  }
  ValueId slice(const std::string& name, ValueId x, int64_t axis, int64_t start, int64_t length) {
    return g_.add("slice", name, {x}, {{"axis", axis}, {"start", start}, {"length", length}});
  }

  // Qwen2-MoE's shared-expert gate [1, H], a float input of moe: stored
  // fp8 (with its weight_scale_inv) or packed, it is dequantised to f32
  // here (H values, exactly: every such value is an f32).
  ValueId gate_vector(const std::string& name, int64_t h) {
    const LinearTensor t = src_.linear(name, 1, h, WeightRole::router);
    if (!t.scale.defined()) return g_.add_constant(name, t.weight);
    Tensor f = Tensor::empty(DType::f32, {1, h});
    float* out = f.data_as<float>();
    const int64_t b1 = t.block.size() == 2 ? t.block[1] : 128;
    for (int64_t c = 0; c < h; ++c)
      out[c] = t.packed()
                   ? static_cast<float>(ops::packed_value(t.format, t.weight.data(), t.scale.data(),
                                                          0, c, h, t.block[0], b1, t.has_zeros()))
                   : static_cast<float>(
                         load_element(t.weight.dtype(), t.weight.data(), static_cast<size_t>(c)) *
                         t.scale.data_as<float>()[c / b1]);
    return g_.add_constant(name, f);
  }

  ValueId gqa_attention(const std::string& p, ValueId h, int64_t layer);
  ValueId mla_attention(const std::string& p, ValueId h, int64_t layer);
  ValueId mla_latent(const std::string& attn, ValueId q_nope, ValueId q_pe, ValueId c_kv,
                     ValueId k_pe, int64_t layer);
  ValueId dense_mlp(const std::string& p, ValueId h, int64_t intermediate);
  ValueId moe(const std::string& layer, ValueId h);
  ops::WeightFormat one_format(const std::string& node,
                               const std::vector<const LinearWeights*>& mlp);

  const ArchSpec& a_;
  WeightSource& src_;
  // The paged cache's inputs of every attention node (after k_cache,
  // v_cache, sinks).
  void add_paging(std::vector<ValueId>& in) const {
    in.resize(6, kNoValue);
    in.insert(in.end(), {positions_, sequences_, block_table_});
  }
  int64_t cache_rows() const { return kv_blocks_ * opt_.kv_block_size; }

  const BuildOptions& opt_;
  Graph g_;
  ValueId positions_ = kNoValue, sequences_ = kNoValue, block_table_ = kNoValue;
  int64_t kv_blocks_ = 0;
};

ValueId Builder::gqa_attention(const std::string& p, ValueId h, int64_t layer) {
  const int64_t nh = a_.heads, nkv = a_.kv_heads, hd = a_.head_dim;
  const std::string attn = p + "self_attn.";
  ValueId q = apply(attn + "q_proj", h, linear(attn + "q_proj", nh * hd, a_.hidden, a_.qkv_bias));
  ValueId k = apply(attn + "k_proj", h, linear(attn + "k_proj", nkv * hd, a_.hidden, a_.qkv_bias));
  ValueId v = apply(attn + "v_proj", h, linear(attn + "v_proj", nkv * hd, a_.hidden, a_.qkv_bias));
  if (a_.qk_norm == QkNorm::full_width) {
    q = g_.add("rms_norm", attn + "q_norm",
               {q, constant(attn + "q_norm.weight", {nh * hd}, WeightRole::norm)}, eps(a_.rms_eps));
    k = g_.add("rms_norm", attn + "k_norm",
               {k, constant(attn + "k_norm.weight", {nkv * hd}, WeightRole::norm)},
               eps(a_.rms_eps));
  }
  q = reshape(attn + "q_heads", q, {0, nh, hd});
  k = reshape(attn + "k_heads", k, {0, nkv, hd});
  v = reshape(attn + "v_heads", v, {0, nkv, hd});
  if (a_.qk_norm == QkNorm::per_head) {
    q = g_.add("rms_norm", attn + "q_norm",
               {q, constant(attn + "q_norm.weight", {hd}, WeightRole::norm)}, eps(a_.rms_eps));
    k = g_.add("rms_norm", attn + "k_norm",
               {k, constant(attn + "k_norm.weight", {hd}, WeightRole::norm)}, eps(a_.rms_eps));
  }
  q = g_.add("rope", attn + "q_rope", {q, positions_}, rope_attrs());
  k = g_.add("rope", attn + "k_rope", {k, positions_}, rope_attrs());
  ValueId kc = g_.add_state(attn + "k_cache", opt_.kv_dtype, {cache_rows(), nkv, hd});
  ValueId vc = g_.add_state(attn + "v_cache", opt_.kv_dtype, {cache_rows(), nkv, hd});
  std::vector<ValueId> in = {q, k, v, kc, vc};
  if (a_.attention_sinks) in.push_back(constant(attn + "sinks", {nh}, WeightRole::bias));
  add_paging(in);
  ValueId o = g_.add("attention", attn + "attention", in, attention_attrs(layer));
  o = reshape(attn + "merge_heads", o, {0, nh * hd});
  return apply(attn + "o_proj", o, linear(attn + "o_proj", a_.hidden, nh * hd, a_.o_bias));
}

// DeepSeek's multi-head latent attention in its expanded form: the cache holds
// full per-head keys and values (the compressed-cache form is an optimisation
// a backend may apply; it computes the same values).
ValueId Builder::mla_attention(const std::string& p, ValueId h, int64_t layer) {
  const int64_t nh = a_.heads, dn = a_.qk_nope_dim, dr = a_.qk_rope_dim, dv = a_.v_head_dim;
  const int64_t dq = dn + dr, r = a_.kv_lora_rank;
  const std::string attn = p + "self_attn.";
  ValueId q;
  if (a_.q_lora_rank > 0) {
    q = apply(attn + "q_a_proj", h, linear(attn + "q_a_proj", a_.q_lora_rank, a_.hidden, false));
    q = g_.add("rms_norm", attn + "q_a_layernorm",
               {q, constant(attn + "q_a_layernorm.weight", {a_.q_lora_rank}, WeightRole::norm)},
               eps(1e-6));
    q = apply(attn + "q_b_proj", q, linear(attn + "q_b_proj", nh * dq, a_.q_lora_rank, false));
  } else {
    q = apply(attn + "q_proj", h, linear(attn + "q_proj", nh * dq, a_.hidden, false));
  }
  q = reshape(attn + "q_heads", q, {0, nh, dq});
  ValueId q_nope = slice(attn + "q_nope", q, 2, 0, dn);
  ValueId q_pe = g_.add("rope", attn + "q_rope", {slice(attn + "q_pe", q, 2, dn, dr), positions_},
                        rope_attrs());
  ValueId c = apply(attn + "kv_a_proj_with_mqa", h,
                    linear(attn + "kv_a_proj_with_mqa", r + dr, a_.hidden, false));
  ValueId c_kv = slice(attn + "c_kv", c, 1, 0, r);
  ValueId k_pe = reshape(attn + "k_pe_head", slice(attn + "k_pe", c, 1, r, dr), {0, 1, dr});
  k_pe = g_.add("rope", attn + "k_rope", {k_pe, positions_}, rope_attrs());
  c_kv = g_.add("rms_norm", attn + "kv_a_layernorm",
                {c_kv, constant(attn + "kv_a_layernorm.weight", {r}, WeightRole::norm)}, eps(1e-6));
  if (opt_.mla_cache == "latent") return mla_latent(attn, q_nope, q_pe, c_kv, k_pe, layer);
  k_pe = g_.add("repeat", attn + "k_pe_heads", {k_pe}, {{"axis", int64_t{1}}, {"times", nh}});
  ValueId kv =
      apply(attn + "kv_b_proj", c_kv, linear(attn + "kv_b_proj", nh * (dn + dv), r, false));
  kv = reshape(attn + "kv_heads", kv, {0, nh, dn + dv});
  ValueId k_nope = slice(attn + "k_nope", kv, 2, 0, dn);
  ValueId v = slice(attn + "v", kv, 2, dn, dv);
  ValueId qq = g_.add("concat", attn + "q", {q_nope, q_pe}, {{"axis", int64_t{2}}});
  ValueId kk = g_.add("concat", attn + "k", {k_nope, k_pe}, {{"axis", int64_t{2}}});
  ValueId kc = g_.add_state(attn + "k_cache", opt_.kv_dtype, {cache_rows(), nh, dq});
  ValueId vc = g_.add_state(attn + "v_cache", opt_.kv_dtype, {cache_rows(), nh, dv});
  std::vector<ValueId> in = {qq, kk, v, kc, vc};
  add_paging(in);
  ValueId o = g_.add("attention", attn + "attention", in, attention_attrs(layer));
  o = reshape(attn + "merge_heads", o, {0, nh * dv});
  return apply(attn + "o_proj", o, linear(attn + "o_proj", a_.hidden, nh * dv, false));
}

// MLA with a latent cache (DeepSeek's absorbed form).  With W_UK[h] [dn, r]
// and W_UV[h] [dv, r] head h's rows of kv_b_proj, the expanded form's score
// q_nope·k_nope = q_nope·(W_UK c_kv) = (q_nope W_UK)·c_kv, and its output
// P·v = W_UV (P·c_kv): so attention runs over one KV head whose key is
// [c_kv, k_pe] (r + dr) and whose value is c_kv (r), with the query
// [q_nope W_UK, q_pe] per head and the same softmax scale; each head's
// output [r] then meets W_UV.  The same values as the expanded form up to
// summation order.  The cache holds each position's [c_kv, k_pe] once.
ValueId Builder::mla_latent(const std::string& attn, ValueId q_nope, ValueId q_pe, ValueId c_kv,
                            ValueId k_pe, int64_t layer) {
  const int64_t nh = a_.heads, dn = a_.qk_nope_dim, dr = a_.qk_rope_dim, dv = a_.v_head_dim;
  const int64_t r = a_.kv_lora_rank;
  const LinearTensor kv_b =
      src_.linear(attn + "kv_b_proj.weight", nh * (dn + dv), r, WeightRole::linear);
  // W_UK [nh, dn, r] and W_UV [nh, dv, r]: kv_b_proj's rows per head, in its
  // dtype when plain, else dequantised to f32 (fp8 or packed: exactly, as
  // every such value is an f32).
  const Tensor stored = kv_b.weight, scale = kv_b.scale;
  const ops::WeightFormat format = kv_b.format;
  const std::vector<int64_t> block = kv_b.block;
  const bool plain = !scale.defined(), pairs = kv_b.has_zeros();
  const DType dtype = plain ? stored.dtype() : DType::f32;
  Tensor uk = Tensor::empty(dtype, {nh, dn, r}), uv = Tensor::empty(dtype, {nh, dv, r});
  auto split = [stored, scale, format, block, plain, pairs, uk, uv, nh, dn, dv, r]() {
    const size_t es = dtype_size(uk.dtype());
    for (int64_t row = 0; row < nh * (dn + dv); ++row) {
      const int64_t h = row / (dn + dv), j = row % (dn + dv);
      char* dst =
          j < dn ? static_cast<char*>(uk.data()) + static_cast<size_t>((h * dn + j) * r) * es
                 : static_cast<char*>(uv.data()) + static_cast<size_t>((h * dv + j - dn) * r) * es;
      if (plain) {
        std::memcpy(dst,
                    static_cast<const char*>(stored.data()) + static_cast<size_t>(row * r) * es,
                    static_cast<size_t>(r) * es);
        continue;
      }
      float* out = reinterpret_cast<float*>(dst);
      for (int64_t c = 0; c < r; ++c)
        out[c] =
            format != ops::WeightFormat::none
                ? static_cast<float>(ops::packed_value(format, stored.data(), scale.data(), row, c,
                                                       r, block[0], block[1], pairs))
                : static_cast<float>(
                      load_element(DType::f8_e4m3, stored.data(),
                                   static_cast<size_t>(row * r + c)) *
                      scale.data_as<float>()[(row / block[0]) * ((r + block[1] - 1) / block[1]) +
                                             c / block[1]]);
    }
  };
  if (src_.fills_later() && opt_.after_fill)
    opt_.after_fill->push_back(split);
  else
    split();
  const ValueId w_uk = g_.add_constant(attn + "kv_b_proj.absorbed_k", uk);
  const ValueId w_uv = g_.add_constant(attn + "kv_b_proj.absorbed_v", uv);
  // The query: [q_nope W_UK, q_pe] per head, [T, nh, r + dr].
  ValueId q = g_.add("transpose", attn + "q_nope_by_head", {q_nope}, {{"perm", Ints{1, 0, 2}}});
  q = g_.add("matmul", attn + "q_absorbed", {q, w_uk});
  q = g_.add("transpose", attn + "q_latent", {q}, {{"perm", Ints{1, 0, 2}}});
  q = g_.add("concat", attn + "q", {q, q_pe}, {{"axis", int64_t{2}}});
  // One KV head: key [c_kv, k_pe], value c_kv, its first r features (the
  // attention op's value_dim): each position is cached once, r + dr values.
  const ValueId latent = reshape(attn + "c_kv_head", c_kv, {0, 1, r});
  const ValueId k = g_.add("concat", attn + "k", {latent, k_pe}, {{"axis", int64_t{2}}});
  const ValueId kc = g_.add_state(attn + "kv_cache", opt_.kv_dtype, {cache_rows(), 1, r + dr});
  Attributes at = attention_attrs(layer);
  at.set("value_dim", r);
  std::vector<ValueId> in = {q, k, kNoValue, kc};
  add_paging(in);
  ValueId o = g_.add("attention", attn + "attention", in, at);  // [T, nh, r]
  o = g_.add("transpose", attn + "o_latent_by_head", {o}, {{"perm", Ints{1, 0, 2}}});
  o = g_.add("matmul", attn + "o_absorbed", {o, w_uv}, {{"transpose_b", int64_t{1}}});
  o = g_.add("transpose", attn + "o_heads", {o}, {{"perm", Ints{1, 0, 2}}});
  o = reshape(attn + "merge_heads", o, {0, nh * dv});
  return apply(attn + "o_proj", o, linear(attn + "o_proj", a_.hidden, nh * dv, false));
}

ValueId Builder::dense_mlp(const std::string& p, ValueId h, int64_t inter) {
  ValueId gate = apply(p + "gate_proj", h, linear(p + "gate_proj", inter, a_.hidden, false));
  ValueId up = apply(p + "up_proj", h, linear(p + "up_proj", inter, a_.hidden, false));
  ValueId act = g_.add("swiglu", p + "act", {gate, up});
  return apply(p + "down_proj", act, linear(p + "down_proj", a_.hidden, inter, false));
}

ValueId Builder::moe(const std::string& layer, ValueId h) {
  const int64_t E = a_.experts, I = a_.expert_intermediate, H = a_.hidden;
  const std::string block = layer + a_.moe_prefix + ".";
  LinearWeights router = linear(block + a_.router_name, E, H, a_.router_bias, WeightRole::router);
  ValueId logits = apply(block + "router_logits", h, router, {{"dtype", std::string("f32")}});
  const RouterSpec& rs = a_.router;
  Attributes ra{{"top_k", rs.top_k},
                {"scoring", rs.scoring},
                {"topk_method", rs.method},
                {"n_group", rs.n_group},
                {"topk_group", rs.topk_group},
                {"normalize", int64_t{rs.normalize ? 1 : 0}},
                {"normalize_eps", rs.normalize_eps},
                {"scaling_factor", rs.scaling}};
  ValueId bias = rs.has_bias
                     ? constant(block + "gate.e_score_correction_bias", {E}, WeightRole::score_bias)
                     : kNoValue;
  std::vector<ValueId> route = g_.add_node("router", block + "router", {logits, bias}, ra);
  LinearWeights gate, up, down;
  if (a_.fused_experts) {
    const std::string experts = block + "experts.";
    ExpertWeights w = src_.fused_experts(experts, E, I, H);
    gate = constants(experts + "*.gate_up_proj.gate", w.gate, I, H);
    up = constants(experts + "*.gate_up_proj.up", w.up, I, H);
    down = constants(experts + "*.down_proj", w.down, H, I);
  } else {
    gate = stacked(layer, a_.expert_gate, I, H);
    up = stacked(layer, a_.expert_up, I, H);
    down = stacked(layer, a_.expert_down, H, I);
  }
  std::vector<ValueId> in = {h,           route[0],   route[1], gate.weight, up.weight,
                             down.weight, gate.scale, up.scale, down.scale};
  std::vector<const LinearWeights*> scaled = {&gate, &up, &down};
  const ops::WeightFormat routed = one_format(block + "moe", {&gate, &up, &down});
  ops::WeightFormat shared = ops::WeightFormat::none;
  LinearWeights sg, su, sd;
  if (a_.shared_intermediate > 0) {
    const std::string sp = block + a_.shared_prefix + ".";
    const int64_t Is = a_.shared_intermediate;
    sg = linear(sp + "gate_proj", Is, H, false);
    su = linear(sp + "up_proj", Is, H, false);
    sd = linear(sp + "down_proj", H, Is, false);
    shared = one_format(block + "moe", {&sg, &su, &sd});
    scaled.insert(scaled.end(), {&sg, &su, &sd});
    in.insert(in.end(), {sg.weight, su.weight, sd.weight, sg.scale, su.scale, sd.scale});
    if (a_.shared_expert_gate) in.push_back(gate_vector(block + "shared_expert_gate.weight", H));
  }
  if (a_.fused_experts) {
    // Biases (moe op version 3): gate_up's interleaved like its outputs.
    in.resize(16, kNoValue);
    const std::string experts = block + "experts.";
    const std::string gu = experts + "gate_up_proj_bias";
    Tensor gb, ub;
    if (src_.fills_later()) {
      // Generated values (random weights): the two halves directly.
      gb = src_.tensor(gu + ".gate", {E, I}, WeightRole::bias);
      ub = src_.tensor(gu + ".up", {E, I}, WeightRole::bias);
    } else {
      const Tensor fused = src_.tensor(gu, {E, 2 * I}, WeightRole::bias);
      gb = deinterleave_last(fused, 0);
      ub = deinterleave_last(fused, 1);
    }
    in.push_back(g_.add_constant(experts + "*.gate_up_proj_bias.gate", gb));
    in.push_back(g_.add_constant(experts + "*.gate_up_proj_bias.up", ub));
    in.push_back(constant(experts + "down_proj_bias", {E, H}, WeightRole::bias));
  }
  while (!in.empty() && in.back() == kNoValue) in.pop_back();
  Attributes attrs;
  if (!a_.activation.plain()) {
    attrs.set("swiglu_alpha", a_.activation.alpha);
    attrs.set("swiglu_limit", a_.activation.limit);
    attrs.set("swiglu_up_offset", a_.activation.up_offset);
  }
  if (routed != ops::WeightFormat::none || shared != ops::WeightFormat::none) {
    if (routed != ops::WeightFormat::none)
      attrs.set("quant", std::string(ops::weight_format_name(routed)));
    if (shared != ops::WeightFormat::none)
      attrs.set("shared_quant", std::string(ops::weight_format_name(shared)));
    attrs.set("block_size", common_block(block + "moe", scaled));
  } else {
    // fp8 (or plain): the op's default block_size [128, 128].
    common_block(block + "moe", scaled);
  }
  if (const std::string p = fast_products(scaled); !p.empty()) attrs.set("products", p);
  return g_.add("moe", block + "moe", in, std::move(attrs));
}

// The one packed format (or none) of gate, up and down of a moe node (its
// `quant` or `shared_quant`), or an error naming them when they differ.
ops::WeightFormat Builder::one_format(const std::string& node,
                                      const std::vector<const LinearWeights*>& mlp) {
  const ops::WeightFormat f = mlp[0]->format;
  bool same = true;
  for (const LinearWeights* w : mlp) same = same && w->format == f;
  if (same) return f;
  std::string all;
  bool plain = false;
  ops::WeightFormat packed = ops::WeightFormat::none;
  for (const LinearWeights* w : mlp) {
    const Value& v = g_.value(w->weight);
    all +=
        (all.empty() ? "" : ", ") + w->name + " (" +
        (w->format == ops::WeightFormat::none ? std::string(dtype_name(v.data.dtype()))
                                              : std::string(ops::weight_format_name(w->format))) +
        ")";
    if (w->format == ops::WeightFormat::none)
      plain = true;
    else
      packed = w->format;
  }
  throw Error(node +
              ": gate, up and down must share one format (the moe op takes one quant for "
              "the routed experts and one for the shared ones), but they are " +
              all +
              (plain ? "; load with quantize=\"" + std::string(ops::weight_format_name(packed)) +
                           "\" to pack the plain ones"
                     : std::string("")));
}

Graph Builder::build() {
  const std::string act(dtype_name(opt_.activation_dtype));
  ValueId ids = g_.add_input("ids", DType::i32, Shape{Dim::tokens()});
  positions_ = g_.add_input("positions", DType::i32, Shape{Dim::tokens()});
  sequences_ = g_.add_input("sequences", DType::i32, Shape{Dim::tokens()});
  const int64_t bs = opt_.kv_block_size;
  const int64_t columns = (opt_.max_context + bs - 1) / bs;
  kv_blocks_ = opt_.kv_blocks > 0 ? opt_.kv_blocks : columns;
  block_table_ =
      g_.add_input("block_table", DType::i32, Shape{Dim(opt_.max_sequences), Dim(columns)});
  const ValueId logit_rows = g_.add_input("logit_rows", DType::i32, Shape{Dim::rows()});
  ValueId embed =
      constant("model.embed_tokens.weight", {a_.vocab, a_.hidden}, WeightRole::embedding);
  ValueId x = g_.add("embedding", "model.embed_tokens", {embed, ids}, {{"dtype", act}});
  for (int64_t l = 0; l < a_.layers; ++l) {
    if (opt_.interrupted && opt_.interrupted()) throw Error("the load was interrupted");
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ValueId h = g_.add("rms_norm", p + "input_layernorm",
                       {x, constant(p + "input_layernorm.weight", {a_.hidden}, WeightRole::norm)},
                       eps(a_.rms_eps));
    ValueId attn = a_.mla ? mla_attention(p, h, l) : gqa_attention(p, h, l);
    x = g_.add("add", p + "attn_residual", {x, attn});
    h = g_.add("rms_norm", p + "post_attention_layernorm",
               {x, constant(p + "post_attention_layernorm.weight", {a_.hidden}, WeightRole::norm)},
               eps(a_.rms_eps));
    ValueId ffn = a_.layer_is_moe[static_cast<size_t>(l)]
                      ? moe(p, h)
                      : dense_mlp(p + "mlp.", h, a_.dense_intermediate);
    x = g_.add("add", p + "ffn_residual", {x, ffn});
  }
  // Only the rows whose logits are wanted go on (the last token of each
  // sequence's chunk, or every token for Model::forward).
  x = g_.add("embedding", "logit_rows", {x, logit_rows});
  x = g_.add("rms_norm", "model.norm",
             {x, constant("model.norm.weight", {a_.hidden}, WeightRole::norm)}, eps(a_.rms_eps));
  std::string head = "lm_head.weight";
  if (!src_.has(head) && a_.tie_embeddings) head = "model.embed_tokens.weight";
  LinearWeights lm;
  if (head == "lm_head.weight")
    lm = linear("lm_head", a_.vocab, a_.hidden, false, WeightRole::lm_head);
  else {
    lm.weight = embed;
    lm.narrow = g_.value(embed).dtype != DType::f32;
  }
  g_.mark_output(apply("lm_head", x, lm, {{"dtype", std::string("f32")}}));
  return std::move(g_);
}

}  // namespace

Graph build_decoder(const ArchSpec& arch, WeightSource& weights, const BuildOptions& options) {
  check(options.max_context > 0, "build_decoder: max_context must be positive");
  check(options.kv_block_size > 0 && options.max_sequences > 0 && options.kv_blocks >= 0,
        "build_decoder: kv_block_size and max_sequences must be positive");
  return Builder(arch, weights, options).build();
}

Graph build_decoder(const ArchSpec& arch, const Checkpoint& checkpoint,
                    const BuildOptions& options) {
  CheckpointWeights weights(checkpoint);
  return build_decoder(arch, weights, options);
}

}  // namespace moert
