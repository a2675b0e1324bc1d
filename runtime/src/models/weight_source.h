// Where the decoder builder gets its weights: an interface with one
// implementation per origin — a safetensors checkpoint (CheckpointWeights,
// below) or random values generated on demand (random_weights.h).  The
// builder asks for each tensor by its Hugging Face name with the shape
// config.json implies and the role the tensor plays; a checkpoint checks the
// stored tensor against that shape, a generator makes one of that shape in a
// dtype chosen by the role.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moert/model.h"
#include "moert/safetensors.h"
#include "moert/tensor.h"

namespace moert {

// What a tensor is for; a generator picks its values and dtype from it
// (fp8 mode quantises only `linear`).
enum class WeightRole {
  embedding,   // model.embed_tokens.weight
  lm_head,     // lm_head.weight
  norm,        // RMSNorm weights
  linear,      // projections inside decoder layers: attention, dense MLP, experts
  router,      // MoE router, Qwen2-MoE's shared-expert gate
  bias,        // linear biases
  score_bias,  // DeepSeek-V3's e_score_correction_bias (always f32)
};

// A linear weight [out, in] (or stacked experts [E, out, in]) and, when it is
// fp8, its f32 block scale [⌈out/128⌉, ⌈in/128⌉] (or [E, …]).
struct LinearTensor {
  Tensor weight;
  Tensor scale;  // undefined unless weight is f8_e4m3
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;

  virtual bool has(const std::string& name) const = 0;
  // Tensor `name` with exactly `shape`, in its stored dtype.  Throws
  // moert::Error naming the tensor when it is missing or shaped otherwise.
  virtual Tensor tensor(const std::string& name, const std::vector<int64_t>& shape,
                        WeightRole role) = 0;
  // Linear weight `name` [out, in] with its block scale when stored as fp8.
  virtual LinearTensor linear(const std::string& name, int64_t out, int64_t in,
                              WeightRole role) = 0;
  // The per-expert weights names[e] ([out, in] each) stacked into one
  // [E, out, in] tensor, their scales likewise.
  virtual LinearTensor stacked(const std::vector<std::string>& names, int64_t out, int64_t in) = 0;

  // The source's part of loading a model, around the builder: before_build
  // runs before it asks for any tensor, after_build once it has asked for
  // every one.  Each reports its stages to `progress` when it is set (see
  // LoadProgress); between them they report the "build" stage.
  virtual void before_build(const LoadProgress& progress) = 0;
  virtual void after_build(const LoadProgress& progress) = 0;
};

// The weights of a checkpoint directory as stored.  Stacking experts copies
// them and gives the mapped pages of each expert back, so the model is not
// held twice in memory.
class CheckpointWeights final : public WeightSource {
 public:
  explicit CheckpointWeights(const Checkpoint& checkpoint) : ckpt_(checkpoint) {}

  bool has(const std::string& name) const override { return ckpt_.has(name); }
  Tensor tensor(const std::string& name, const std::vector<int64_t>& shape,
                WeightRole role) override;
  LinearTensor linear(const std::string& name, int64_t out, int64_t in, WeightRole role) override;
  LinearTensor stacked(const std::vector<std::string>& names, int64_t out, int64_t in) override;
  // With a progress callback: pages every tensor in ("read"), then opens "build".
  void before_build(const LoadProgress& progress) override;
  // Closes "build".
  void after_build(const LoadProgress& progress) override;

 private:
  Tensor fetch_scale(const std::string& weight_name, int64_t out, int64_t in);
  const Checkpoint& ckpt_;
};

}  // namespace moert
