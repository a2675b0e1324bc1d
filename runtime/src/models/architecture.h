// What distinguishes one Hugging Face decoder family from another, read from
// config.json.  Every family here shares the Llama skeleton (embedding,
// pre-norm attention and feed-forward blocks with residuals, final norm, LM
// head); an ArchSpec names the variations: the attention block (GQA or
// DeepSeek's MLA), q/k norms, biases, RoPE flavour, and which layers are MoE
// with which routing.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hf_config.h"

namespace moert {

struct RopeSpec {
  double theta = 10000.0;
  int64_t rotary_dim = 0;
  std::string pairing = "half";  // "interleaved": DeepSeek's adjacent pairs
  std::string scaling = "none";  // "linear", "yarn"
  double factor = 1.0;
  double original_max_position_embeddings = 0;
  double beta_fast = 32, beta_slow = 1, mscale = 1, mscale_all_dim = 0;
  bool truncate = true;
  std::optional<double> attention_factor;
};

struct RouterSpec {
  std::string scoring = "softmax";  // "sigmoid"
  std::string method = "greedy";    // "group_limited_greedy", "noaux_tc"
  int64_t top_k = 1;
  int64_t n_group = 1, topk_group = 1;
  bool normalize = false;
  double normalize_eps = 0.0;
  double scaling = 1.0;
  bool has_bias = false;  // e_score_correction_bias
};

enum class QkNorm { none, per_head, full_width };

// The experts' gated activation (ops/swiglu_params.h): plain SwiGLU by
// default; GPT-OSS clamps (alpha 1.702, limit 7, up_offset 1).
struct ActivationSpec {
  double alpha = 1.0, limit = 0.0, up_offset = 0.0;
  bool plain() const { return alpha == 1.0 && limit == 0.0 && up_offset == 0.0; }
};

struct ArchSpec {
  std::string architecture, model_type;
  int64_t vocab = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_eps = 1e-6;
  bool tie_embeddings = false;

  // Attention.
  bool mla = false;
  bool qkv_bias = false;
  bool o_bias = false;  // GPT-OSS
  QkNorm qk_norm = QkNorm::none;
  int64_t sliding_window = 0;
  // Per layer: whether it uses sliding_window (GPT-OSS's layer_types);
  // empty: every layer does when sliding_window > 0.
  std::vector<bool> layer_is_sliding;
  bool attention_sinks = false;  // GPT-OSS: self_attn.sinks [heads]
  RopeSpec rope;
  double attention_scale = 0;  // softmax scale
  // MLA (DeepSeek).
  int64_t q_lora_rank = 0, kv_lora_rank = 0, qk_nope_dim = 0, qk_rope_dim = 0, v_head_dim = 0;

  // Feed-forward.
  std::vector<bool> layer_is_moe;
  int64_t dense_intermediate = 0;
  int64_t experts = 0, expert_intermediate = 0;
  RouterSpec router;
  int64_t shared_intermediate = 0;  // 0: no shared expert
  bool shared_expert_gate = false;  // Qwen2-MoE's sigmoid gate
  // GPT-OSS: experts stored fused (experts.gate_up_proj with gate and up
  // interleaved, experts.down_proj, input-major when plain, MXFP4 _blocks /
  // _scales otherwise), with biases, a router with a bias, and the clamped
  // activation.
  bool fused_experts = false;
  bool router_bias = false;
  ActivationSpec activation;

  // Checkpoint names that differ between families.
  std::string moe_prefix = "mlp";  // "block_sparse_moe" for Mixtral
  std::string expert_gate = "gate_proj", expert_up = "up_proj", expert_down = "down_proj";
  std::string shared_prefix = "shared_expert";  // "shared_experts" for DeepSeek
  std::string router_name = "gate";             // "router" for GPT-OSS

  // What loading leaves out, said to the user (ModelInfo::notes): GLM-4.5's
  // and DeepSeek-V3's multi-token-prediction layers.
  std::vector<std::string> notes;

  // Whether layer l attends through the sliding window.
  bool sliding(int64_t l) const {
    return sliding_window > 0 &&
           (layer_is_sliding.empty() || layer_is_sliding[static_cast<size_t>(l)]);
  }
};

// Reads config.json into an ArchSpec, dispatching on model_type (or, when
// absent, on architectures[0]).  Throws moert::Error naming the file and key,
// listing the supported model types for an unknown one.
ArchSpec arch_from_config(const HfConfig& config);

// Checks that every size an ArchSpec takes from config.json gives tensors of
// positive dimensions (and routing that can pick its experts), throwing
// moert::Error naming the file and key otherwise.  A checkpoint's shapes are
// checked against the config tensor by tensor; a model built from the config
// alone (random weights) needs this instead.
void check_sizes(const HfConfig& config, const ArchSpec& arch);

}  // namespace moert
