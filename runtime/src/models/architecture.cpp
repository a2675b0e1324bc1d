#include "architecture.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "moert/model.h"

namespace moert {

namespace {

// Far above any released model (DeepSeek-V3 has 61 layers), far below what
// would make per-layer bookkeeping itself a problem: a config beyond it is
// refused instead of allocated and walked layer by layer.
constexpr int64_t kMaxLayers = int64_t{1} << 16;

const std::map<std::string, std::string> kArchitectureToType = {
    {"MixtralForCausalLM", "mixtral"},
    {"Qwen2MoeForCausalLM", "qwen2_moe"},
    {"Qwen3MoeForCausalLM", "qwen3_moe"},
    {"OlmoeForCausalLM", "olmoe"},
    {"DeepseekV2ForCausalLM", "deepseek_v2"},
    {"DeepseekV3ForCausalLM", "deepseek_v3"},
    {"LlamaForCausalLM", "llama"},
    {"MistralForCausalLM", "mistral"},
    {"Qwen2ForCausalLM", "qwen2"},
    {"GptOssForCausalLM", "gpt_oss"},
    {"Glm4MoeForCausalLM", "glm4_moe"},
};

std::string supported_list() {
  std::string s;
  for (const std::string& t : supported_model_types()) s += (s.empty() ? "" : ", ") + t;
  return s;
}

void read_common(const HfConfig& c, ArchSpec& a) {
  a.vocab = c.integer("vocab_size");
  a.hidden = c.integer("hidden_size");
  a.layers = c.integer("num_hidden_layers");
  a.heads = c.integer("num_attention_heads");
  a.kv_heads = c.integer("num_key_value_heads", a.heads);
  a.head_dim = c.integer("head_dim", a.heads > 0 ? a.hidden / a.heads : 0);
  a.max_position_embeddings = c.integer("max_position_embeddings", 4096);
  a.rms_eps = c.real("rms_norm_eps", 1e-6);
  a.tie_embeddings = c.boolean("tie_word_embeddings", false);
  a.rope.theta = c.real("rope_theta", 10000.0);
  a.dense_intermediate = c.integer("intermediate_size", 0);
  for (const char* k : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"})
    if (c.integer(k) <= 0) c.fail(k, "must be positive");
  if (a.layers > kMaxLayers)
    c.fail("num_hidden_layers",
           "must be at most " + std::to_string(kMaxLayers) + ", got " + std::to_string(a.layers));
  if (a.max_position_embeddings <= 0)
    c.fail("max_position_embeddings",
           "must be positive, got " + std::to_string(a.max_position_embeddings));
  if (a.kv_heads <= 0 || a.heads % a.kv_heads != 0)
    c.fail("num_key_value_heads", "must divide num_attention_heads (" + std::to_string(a.heads) +
                                      "), got " + std::to_string(a.kv_heads));
  if (c.string("hidden_act", "silu") != "silu")
    c.fail("hidden_act", "must be \"silu\" (SwiGLU), got \"" + c.string("hidden_act", "") + "\"");
  a.layer_is_moe.assign(static_cast<size_t>(a.layers), false);
}

// rope_scaling (older configs) or rope_parameters (transformers 5).
void read_rope_scaling(const HfConfig& c, ArchSpec& a) {
  const nlohmann::json* rs = &c.object("rope_scaling");
  if (rs->is_null()) rs = &c.object("rope_parameters");
  if (rs->is_null()) return;
  const std::string key = c.object("rope_scaling").is_null() ? "rope_parameters" : "rope_scaling";
  auto text = [&](const char* k, const std::string& fallback) {
    if (!rs->contains(k) || (*rs)[k].is_null()) return fallback;
    if (!(*rs)[k].is_string()) c.fail(key + "." + k, "must be a string, got " + (*rs)[k].dump());
    return (*rs)[k].get<std::string>();
  };
  const std::string type = text("rope_type", text("type", "default"));
  if (type == "default") return;
  auto num = [&](const char* k, double fallback) {
    return rs->contains(k) && (*rs)[k].is_number() ? (*rs)[k].get<double>() : fallback;
  };
  a.rope.factor = num("factor", 1.0);
  if (type == "linear") {
    a.rope.scaling = "linear";
  } else if (type == "yarn") {
    a.rope.scaling = "yarn";
    a.rope.original_max_position_embeddings = num("original_max_position_embeddings", 0);
    a.rope.beta_fast = num("beta_fast", 32);
    a.rope.beta_slow = num("beta_slow", 1);
    a.rope.mscale = num("mscale", 1);
    a.rope.mscale_all_dim = num("mscale_all_dim", 0);
    if (rs->contains("truncate") && (*rs)["truncate"].is_boolean())
      a.rope.truncate = (*rs)["truncate"].get<bool>();
    if (rs->contains("attention_factor") && (*rs)["attention_factor"].is_number())
      a.rope.attention_factor = (*rs)["attention_factor"].get<double>();
  } else {
    c.fail("rope_scaling", "type \"" + type + "\" is not supported (default, linear, yarn are)");
  }
}

void read_softmax_router(const HfConfig& c, ArchSpec& a, const char* experts_key) {
  a.experts = c.integer(experts_key);
  a.router.top_k = c.integer("num_experts_per_tok");
  if (a.router.top_k < 1 || a.router.top_k > a.experts)
    c.fail("num_experts_per_tok", "must be in [1, " + std::to_string(a.experts) + "]");
  a.router.normalize = c.boolean("norm_topk_prob", false);
}

// layer_types (transformers 5 writes it on save; GPT-OSS ships it): which
// layers use the sliding window.  False when the config has none.
bool read_layer_types(const HfConfig& c, ArchSpec& a) {
  if (!c.has("layer_types")) return false;
  const nlohmann::json& types = c.json().at("layer_types");
  if (!types.is_array() || static_cast<int64_t>(types.size()) != a.layers)
    c.fail("layer_types", "must list one type per layer (" + std::to_string(a.layers) + ")");
  a.layer_is_sliding.resize(static_cast<size_t>(a.layers));
  for (int64_t i = 0; i < a.layers; ++i) {
    const nlohmann::json& t = types[static_cast<size_t>(i)];
    const std::string type = t.is_string() ? t.get<std::string>() : "";
    if (type != "sliding_attention" && type != "full_attention")
      c.fail("layer_types", "[" + std::to_string(i) + "] must be \"sliding_attention\" or " +
                                "\"full_attention\", got " + t.dump());
    a.layer_is_sliding[static_cast<size_t>(i)] = type == "sliding_attention";
  }
  return true;
}

// The sliding-window layers of Qwen2 and Qwen2-MoE without layer_types, as
// transformers defines them: Qwen2 windows the layers from
// max_window_layers on, Qwen2-MoE the even layers below max_window_layers.
void qwen_window_layers(const HfConfig& c, ArchSpec& a, bool moe) {
  if (!c.boolean("use_sliding_window", false)) return;
  a.sliding_window = c.integer("sliding_window", 0);
  if (read_layer_types(c, a)) return;
  const int64_t bound = c.integer("max_window_layers", 28);
  a.layer_is_sliding.resize(static_cast<size_t>(a.layers));
  for (int64_t i = 0; i < a.layers; ++i)
    a.layer_is_sliding[static_cast<size_t>(i)] = moe ? i % 2 == 0 && i < bound : i >= bound;
}

// Llama, Mistral, Qwen2: the dense skeleton.  Llama's attention_bias puts a
// bias on q, k, v and o; Qwen2 has q/k/v biases only, Mistral none.
ArchSpec dense(const HfConfig& c, const std::string& type) {
  ArchSpec a;
  read_common(c, a);
  read_rope_scaling(c, a);
  if (a.dense_intermediate <= 0) c.fail("intermediate_size", "must be positive");
  if (type == "llama") {
    a.qkv_bias = a.o_bias = c.boolean("attention_bias", false);
  } else if (type == "qwen2") {
    a.qkv_bias = true;
    qwen_window_layers(c, a, false);
  } else {
    a.sliding_window = c.integer("sliding_window", 0);
  }
  return a;
}

ArchSpec mixtral(const HfConfig& c) {
  ArchSpec a;
  read_common(c, a);
  read_rope_scaling(c, a);
  read_softmax_router(c, a, "num_local_experts");
  a.router.normalize = true;  // Mixtral always renormalises its top-k
  a.expert_intermediate = c.integer("intermediate_size");
  a.layer_is_moe.assign(static_cast<size_t>(a.layers), true);
  a.moe_prefix = "block_sparse_moe";
  a.expert_gate = "w1";
  a.expert_up = "w3";
  a.expert_down = "w2";
  a.sliding_window = c.integer("sliding_window", 0);
  return a;
}

// Qwen2-MoE and Qwen3-MoE: MoE unless listed in mlp_only_layers or off the
// decoder_sparse_step.
void qwen_moe_layers(const HfConfig& c, ArchSpec& a) {
  read_softmax_router(c, a, "num_experts");
  a.expert_intermediate = c.integer("moe_intermediate_size");
  std::vector<int64_t> dense = c.integers("mlp_only_layers");
  int64_t step = c.integer("decoder_sparse_step", 1);
  if (step < 1) c.fail("decoder_sparse_step", "must be >= 1");
  for (int64_t i = 0; i < a.layers; ++i) {
    bool listed = std::find(dense.begin(), dense.end(), i) != dense.end();
    a.layer_is_moe[static_cast<size_t>(i)] = !listed && a.experts > 0 && (i + 1) % step == 0;
  }
}

ArchSpec qwen2_moe(const HfConfig& c) {
  ArchSpec a;
  read_common(c, a);
  read_rope_scaling(c, a);
  qwen_moe_layers(c, a);
  a.qkv_bias = c.boolean("qkv_bias", true);
  qwen_window_layers(c, a, true);
  a.shared_intermediate = c.integer("shared_expert_intermediate_size", 0);
  a.shared_expert_gate = a.shared_intermediate > 0;
  a.shared_prefix = "shared_expert";
  return a;
}

ArchSpec qwen3_moe(const HfConfig& c) {
  ArchSpec a;
  read_common(c, a);
  read_rope_scaling(c, a);
  qwen_moe_layers(c, a);
  a.qkv_bias = a.o_bias = c.boolean("attention_bias", false);
  a.qk_norm = QkNorm::per_head;
  if (c.boolean("use_sliding_window", false)) a.sliding_window = c.integer("sliding_window", 0);
  return a;
}

ArchSpec olmoe(const HfConfig& c) {
  ArchSpec a;
  read_common(c, a);
  read_rope_scaling(c, a);
  read_softmax_router(c, a, "num_experts");
  a.expert_intermediate = c.integer("intermediate_size");
  a.layer_is_moe.assign(static_cast<size_t>(a.layers), true);
  a.qkv_bias = a.o_bias = c.boolean("attention_bias", false);
  a.qk_norm = QkNorm::full_width;
  if (c.has("clip_qkv")) c.fail("clip_qkv", "is not supported (only null is)");
  return a;
}

// DeepSeek-V3's and GLM-4.5's multi-token-prediction layers: stored after
// the decoder's, never run here.
void note_mtp_layers(const HfConfig& c, ArchSpec& a) {
  const int64_t n = c.integer("num_nextn_predict_layers", 0);
  if (n <= 0) return;
  const std::string first = std::to_string(a.layers), last = std::to_string(a.layers + n - 1);
  a.notes.push_back("num_nextn_predict_layers = " + std::to_string(n) +
                    ": the multi-token-prediction " +
                    (n == 1 ? "layer model.layers." + first + ".* is"
                            : "layers model.layers." + first + "-" + last + ".* are") +
                    " not loaded (" + (n == 1 ? "it drafts" : "they draft") +
                    " further tokens for speculative decoding, which moert does not do)");
}

// DeepSeek-style routing keys, shared by deepseek_v2/v3 and glm4_moe: the
// scoring and top-k method (v3-style defaults when `v3`), groups, scaling,
// shared experts of moe_intermediate_size × n_shared_experts.
void read_deepseek_router(const HfConfig& c, ArchSpec& a, bool v3) {
  a.router.top_k = c.integer("num_experts_per_tok");
  a.router.scoring = c.string("scoring_func", v3 ? "sigmoid" : "softmax");
  a.router.method = c.string("topk_method", v3 ? "noaux_tc" : "greedy");
  a.router.n_group = c.integer("n_group", 1);
  a.router.topk_group = c.integer("topk_group", 1);
  a.router.scaling = c.real("routed_scaling_factor", 1.0);
  if (a.router.method == "noaux_tc") {
    a.router.has_bias = true;
    a.router.normalize = c.boolean("norm_topk_prob", true);
    a.router.normalize_eps = 1e-20;
  } else if (a.router.method != "greedy" && a.router.method != "group_limited_greedy") {
    c.fail("topk_method", "\"" + a.router.method +
                              "\" is not supported (greedy, group_limited_greedy, noaux_tc are)");
  }
  if (a.router.method == "greedy") a.router.n_group = a.router.topk_group = 1;
  a.shared_intermediate = a.expert_intermediate * c.integer("n_shared_experts", 0);
  a.shared_prefix = "shared_experts";
}

// g(s, μ) of the YaRN paper as transformers computes it.
double yarn_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

ArchSpec deepseek(const HfConfig& c, bool v3) {
  ArchSpec a;
  read_common(c, a);
  read_rope_scaling(c, a);
  a.mla = true;
  a.q_lora_rank = c.integer("q_lora_rank", 0);
  a.kv_lora_rank = c.integer("kv_lora_rank");
  a.qk_nope_dim = c.integer("qk_nope_head_dim");
  a.qk_rope_dim = c.integer("qk_rope_head_dim");
  a.v_head_dim = c.integer("v_head_dim");
  a.kv_heads = a.heads;
  a.qkv_bias = c.boolean("attention_bias", false);
  if (a.qkv_bias) c.fail("attention_bias", "true is not supported for DeepSeek MLA");
  a.rope.rotary_dim = a.qk_rope_dim;
  a.rope.pairing = "interleaved";
  const double dq = static_cast<double>(a.qk_nope_dim + a.qk_rope_dim);
  a.attention_scale = 1.0 / std::sqrt(dq);
  if (a.rope.scaling == "yarn" && a.rope.mscale_all_dim != 0) {
    double m = yarn_mscale(a.rope.factor, a.rope.mscale_all_dim);
    a.attention_scale *= m * m;
  }
  a.experts = c.integer("n_routed_experts", 0);
  a.expert_intermediate = c.integer("moe_intermediate_size", 0);
  int64_t first_dense = c.integer("first_k_dense_replace", 0);
  int64_t freq = c.integer("moe_layer_freq", 1);
  if (freq < 1) c.fail("moe_layer_freq", "must be >= 1");
  for (int64_t i = 0; i < a.layers; ++i)
    a.layer_is_moe[static_cast<size_t>(i)] = a.experts > 0 && i >= first_dense && i % freq == 0;
  if (a.experts > 0) read_deepseek_router(c, a, v3);
  note_mtp_layers(c, a);
  return a;
}

// GLM-4.5 / 4.6 / 4.5-Air: GQA attention with partial rotary (NeoX halves
// within the rotated part), q/k/v bias without o bias, optional per-head q/k
// norm; DeepSeek-V3's MoE (sigmoid noaux_tc routing, groups, shared experts,
// the first first_k_dense_replace layers dense).
ArchSpec glm4_moe(const HfConfig& c) {
  ArchSpec a;
  read_common(c, a);
  read_rope_scaling(c, a);
  // partial_rotary_factor: top level, or in rope_parameters (transformers 5);
  // 0.5 when absent, as transformers defaults it for this family.
  double partial = 0.5;
  const nlohmann::json& rp = c.object("rope_parameters");
  if (c.has("partial_rotary_factor"))
    partial = c.real("partial_rotary_factor");
  else if (rp.is_object() && rp.contains("partial_rotary_factor") &&
           rp["partial_rotary_factor"].is_number())
    partial = rp["partial_rotary_factor"].get<double>();
  if (!(partial > 0.0 && partial <= 1.0))
    c.fail("partial_rotary_factor", "must be in (0, 1], got " + std::to_string(partial));
  a.rope.rotary_dim = static_cast<int64_t>(static_cast<double>(a.head_dim) * partial);
  a.qkv_bias = c.boolean("attention_bias", false);
  if (c.boolean("use_qk_norm", false)) a.qk_norm = QkNorm::per_head;
  a.experts = c.integer("n_routed_experts", 0);
  a.expert_intermediate = c.integer("moe_intermediate_size", 0);
  const int64_t first_dense = c.integer("first_k_dense_replace", 1);
  for (int64_t i = 0; i < a.layers; ++i)
    a.layer_is_moe[static_cast<size_t>(i)] = a.experts > 0 && i >= first_dense;
  if (a.experts > 0) read_deepseek_router(c, a, true);
  note_mtp_layers(c, a);
  return a;
}

// GPT-OSS (20b, 120b): attention with biases everywhere, learned sinks and
// sliding-window layers by layer_types; a router with a bias whose softmax
// runs over the top-k logits; fused experts with biases and the clamped
// SwiGLU; YaRN.
ArchSpec gpt_oss(const HfConfig& c) {
  ArchSpec a;
  read_common(c, a);
  if (!c.has("rope_theta")) a.rope.theta = 150000.0;
  if (c.object("rope_scaling").is_null() && c.object("rope_parameters").is_null()) {
    // transformers' default for the family.
    a.rope.scaling = "yarn";
    a.rope.factor = 32.0;
    a.rope.original_max_position_embeddings = 4096;
    a.rope.truncate = false;
  } else {
    read_rope_scaling(c, a);
  }
  a.head_dim = c.integer("head_dim", 64);
  a.qkv_bias = a.o_bias = c.boolean("attention_bias", true);
  a.attention_sinks = true;
  a.sliding_window = c.integer("sliding_window", 128);
  if (a.sliding_window < 0) c.fail("sliding_window", "must be >= 0");
  if (!read_layer_types(c, a)) {
    a.layer_is_sliding.resize(static_cast<size_t>(a.layers));
    for (int64_t i = 0; i < a.layers; ++i) a.layer_is_sliding[static_cast<size_t>(i)] = i % 2 == 0;
  }
  read_softmax_router(c, a, "num_local_experts");
  a.router.scoring = "softmax_topk";
  a.router.normalize = false;
  a.router_bias = true;
  a.router_name = "router";
  a.expert_intermediate = c.integer("intermediate_size");
  a.layer_is_moe.assign(static_cast<size_t>(a.layers), true);
  a.fused_experts = true;
  a.activation.alpha = c.real("swiglu_alpha", 1.702);
  a.activation.limit = c.real("swiglu_limit", 7.0);
  a.activation.up_offset = 1.0;
  if (!(a.activation.limit > 0.0)) c.fail("swiglu_limit", "must be positive");
  return a;
}

}  // namespace

void check_sizes(const HfConfig& c, const ArchSpec& a) {
  auto positive = [&](int64_t v, const std::string& key) {
    if (v <= 0) c.fail(key, "must be positive, got " + std::to_string(v));
  };
  // DeepSeek's key names (GLM-4.5 uses them too).
  const bool deepseek = a.mla || a.model_type == "glm4_moe";
  const bool any_moe =
      std::find(a.layer_is_moe.begin(), a.layer_is_moe.end(), true) != a.layer_is_moe.end();
  const bool any_dense =
      std::find(a.layer_is_moe.begin(), a.layer_is_moe.end(), false) != a.layer_is_moe.end();
  positive(a.max_position_embeddings, "max_position_embeddings");
  if (a.mla) {
    positive(a.kv_lora_rank, "kv_lora_rank");
    positive(a.qk_nope_dim, "qk_nope_head_dim");
    positive(a.qk_rope_dim, "qk_rope_head_dim");
    positive(a.v_head_dim, "v_head_dim");
    if (a.q_lora_rank < 0) c.fail("q_lora_rank", "must be null, 0 or positive");
  } else {
    positive(a.head_dim, c.has("head_dim") ? "head_dim" : "hidden_size / num_attention_heads");
  }
  if (a.rope.rotary_dim % 2 != 0)
    c.fail(a.mla ? "qk_rope_head_dim" : "head_dim",
           "must be even (RoPE rotates pairs), got " + std::to_string(a.rope.rotary_dim));
  if (any_dense) positive(a.dense_intermediate, "intermediate_size");
  if (any_moe) {
    const std::string experts_key = a.model_type == "mixtral" || a.model_type == "gpt_oss"
                                        ? "num_local_experts"
                                    : deepseek ? "n_routed_experts"
                                               : "num_experts";
    positive(a.experts, experts_key);
    positive(a.expert_intermediate,
             a.model_type == "mixtral" || a.model_type == "olmoe" || a.model_type == "gpt_oss"
                 ? "intermediate_size"
                 : "moe_intermediate_size");
    if (a.router.top_k < 1 || a.router.top_k > a.experts)
      c.fail("num_experts_per_tok", "must be in [1, " + std::to_string(a.experts) + "], got " +
                                        std::to_string(a.router.top_k));
    if (a.router.method != "greedy") {
      if (a.router.n_group < 1 || a.experts % a.router.n_group != 0)
        c.fail("n_group", "must divide the " + std::to_string(a.experts) + " experts, got " +
                              std::to_string(a.router.n_group));
      if (a.router.topk_group < 1 || a.router.topk_group > a.router.n_group)
        c.fail("topk_group", "must be in [1, n_group = " + std::to_string(a.router.n_group) +
                                 "], got " + std::to_string(a.router.topk_group));
    }
    if (a.shared_intermediate < 0)
      c.fail(deepseek ? "n_shared_experts" : "shared_expert_intermediate_size",
             "must not be negative");
  }
}

std::vector<std::string> supported_model_types() {
  return {"deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss",   "llama",    "mistral",
          "mixtral",     "olmoe",       "qwen2",    "qwen2_moe", "qwen3_moe"};
}

ArchSpec arch_from_config(const HfConfig& c) {
  std::string type = c.string("model_type", "");
  std::string arch;
  if (c.has("architectures") && c.json().at("architectures").is_array() &&
      !c.json().at("architectures").empty() && c.json().at("architectures")[0].is_string())
    arch = c.json().at("architectures")[0].get<std::string>();
  if (type.empty()) {
    auto it = kArchitectureToType.find(arch);
    if (it == kArchitectureToType.end())
      throw Error(c.path() + ": unknown architecture '" + arch +
                  "' and no model_type; supported: " + supported_list());
    type = it->second;
  }
  ArchSpec a;
  if (type == "mixtral")
    a = mixtral(c);
  else if (type == "qwen2_moe")
    a = qwen2_moe(c);
  else if (type == "qwen3_moe")
    a = qwen3_moe(c);
  else if (type == "olmoe")
    a = olmoe(c);
  else if (type == "deepseek_v2")
    a = deepseek(c, false);
  else if (type == "deepseek_v3")
    a = deepseek(c, true);
  else if (type == "llama" || type == "mistral" || type == "qwen2")
    a = dense(c, type);
  else if (type == "glm4_moe")
    a = glm4_moe(c);
  else if (type == "gpt_oss")
    a = gpt_oss(c);
  else
    throw Error(c.path() + ": unknown model_type '" + type + "'" +
                (arch.empty() ? "" : " (architecture " + arch + ")") +
                "; supported: " + supported_list());
  a.model_type = type;
  a.architecture = arch;
  if (a.rope.rotary_dim == 0) a.rope.rotary_dim = a.head_dim;
  if (a.attention_scale == 0) a.attention_scale = 1.0 / std::sqrt(static_cast<double>(a.head_dim));
  return a;
}

}  // namespace moert
