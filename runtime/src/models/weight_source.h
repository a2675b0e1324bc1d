// Where the decoder builder gets its weights: an interface with one
// implementation per origin — a safetensors checkpoint (CheckpointWeights,
// below) or random values generated on demand (random_weights.h).  The
// builder asks for each tensor by its Hugging Face name with the shape
// config.json implies and the role the tensor plays; a checkpoint checks the
// stored tensor against that shape, a generator makes one of that shape in a
// dtype chosen by the role.  A linear weight may come packed (int8, int4,
// mxfp4: ops/weight_format.h), as a checkpoint stores it (GPTQ, AWQ, MXFP4,
// repacked at load) or quantized at load (quantize_weights.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moert/model.h"
#include "moert/safetensors.h"
#include "moert/tensor.h"
#include "quantization.h"
#include "weight_format.h"

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

// A linear weight [out, in] (or stacked experts [E, out, in]) as the linear
// and moe ops take it (ops/weight_format.h):
//   plain:  f32/bf16/f16 [out, in], no scale;
//   fp8:    f8_e4m3 [out, in] with its f32 block scale [⌈out/128⌉, ⌈in/128⌉],
//           block {128, 128}, format none;
//   packed: format int8 (i8 [out, in]), int4 or mxfp4 (u8 [out, ⌈in/2⌉]) with
//           the format's group scale [⌈out/b0⌉, ⌈in/b1⌉] (int4 also
//           [.., 2] with zero points), block {b0, b1}.
// Stacked experts have a leading E on the weight and the scale.
struct LinearTensor {
  Tensor weight;
  Tensor scale;  // undefined for plain weights
  ops::WeightFormat format = ops::WeightFormat::none;
  std::vector<int64_t> block;  // {b0, b1} when there is a scale, else empty

  bool packed() const { return format != ops::WeightFormat::none; }
  // int4 with (scale, zero) pairs.
  bool has_zeros() const;
  // "bf16", "f8_e4m3", "int4 g32", "int4 g128 with zero points", "mxfp4".
  std::string describe() const;
};

// The label of a packed format with groups `block`: "int4 g32", "int8 g32",
// "mxfp4" (always [1, 32]); "int4 128x128" when groups span rows.
std::string packed_label(ops::WeightFormat format, const std::vector<int64_t>& block);

// An MXFP4 weight as GPT-OSS stores it: `blocks` u8 [lead..., rows, cols/32,
// 16] (two e2m1 values per byte, the low nibble first) and `scales` u8
// [lead..., rows, cols/32] (e8m0) become weight u8 [lead..., rows, cols/2]
// (the same bytes, a view) and scale as stored, block {1, 32}.  Throws
// moert::Error naming `name` (and `where`) when a shape or dtype disagrees.
LinearTensor mxfp4_linear(const std::string& where, const std::string& name, const Tensor& blocks,
                          const Tensor& scales, const std::vector<int64_t>& lead, int64_t rows,
                          int64_t cols);

// Stacks the per-expert weights names[e] ([out, in] each, one format) into one
// LinearTensor [E, ...].  int4 experts with and without zero points are
// stacked with them (the symmetric ones as (scale, 8): the same values).
// Throws moert::Error naming both experts when formats, dtypes or groups
// differ.  `release` (optional) is called with each expert after its bytes
// were copied.
LinearTensor stack_experts(const std::string& where, const std::vector<std::string>& names,
                           const std::vector<LinearTensor>& experts,
                           const std::function<void(const LinearTensor&)>& release = nullptr);

// The routed experts of one layer as the moe op takes them: gate, up [E, I, H]
// and down [E, H, I], each as stacked() gives them.
struct ExpertWeights {
  LinearTensor gate, up, down;
};

// GPT-OSS's fused layout of `experts` of intermediate size `inter` and hidden
// size `hidden` under `prefix` ("model.layers.0.mlp.experts."):
// "gate_up_proj" holds gate and up interleaved along the output (gate the even
// outputs, up the odd ones) and "down_proj" the down projections; plain ones
// are input-major ([E, H, 2I] and [E, I, H], applied as x @ W), MXFP4 ones
// (name + "_blocks" / "_scales") output-major as mxfp4_linear reads them.
// Returns them split and transposed into the moe op's layout (plain ones in
// their stored dtype; MXFP4 rows copied, never widened).  Throws moert::Error
// naming the tensor when one is missing or shaped otherwise.
ExpertWeights split_fused_experts(const std::string& where, const std::string& prefix,
                                  const std::function<Tensor(const std::string&)>& get,
                                  const std::function<bool(const std::string&)>& has,
                                  int64_t experts, int64_t inter, int64_t hidden);

// The even (`part` 0) or odd (1) entries of the last dim of `t` [..., 2n] as
// a new tensor [..., n] of its dtype: GPT-OSS's interleaved gate/up biases.
Tensor deinterleave_last(const Tensor& t, int part);

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
  // GPT-OSS's fused experts under `prefix` (split_fused_experts).  By
  // default, for sources without a stored layout (random weights): stacked()
  // of the per-expert names prefix + "<e>.{gate,up,down}_proj.weight".
  virtual ExpertWeights fused_experts(const std::string& prefix, int64_t experts, int64_t inter,
                                      int64_t hidden);

  // The source's part of loading a model, around the builder: before_build
  // runs before it asks for any tensor, after_build once it has asked for
  // every one.  Each reports its stages to `progress` when it is set (see
  // LoadProgress); between them they report the "build" stage.
  virtual void before_build(const LoadProgress& progress) = 0;
  virtual void after_build(const LoadProgress& progress) = 0;

  // A weight this source gave that the caller no longer needs (it packed a
  // copy): a checkpoint gives its mapped pages back.
  virtual void release(const LinearTensor&) {}

  // Whether the tensors handed out hold their values only after
  // after_build() (random weights, generated then); a checkpoint's are
  // readable at once.
  virtual bool fills_later() const { return false; }
};

// The weights of a checkpoint directory as stored.  Stacking experts copies
// them and gives the mapped pages of each expert back, so the model is not
// held twice in memory.  Packed linears (`quant`, from check_quantization:
// GPTQ, AWQ, MXFP4; see quantization.h) are repacked into the ops' row-major
// layouts: the same 4-bit codes and f16 scales, transposed where the
// checkpoint stores [in, out], never widened.
class CheckpointWeights final : public WeightSource {
 public:
  explicit CheckpointWeights(const Checkpoint& checkpoint, CheckpointQuant quant = {})
      : ckpt_(checkpoint), quant_(std::move(quant)) {}

  bool has(const std::string& name) const override { return ckpt_.has(name); }
  Tensor tensor(const std::string& name, const std::vector<int64_t>& shape,
                WeightRole role) override;
  LinearTensor linear(const std::string& name, int64_t out, int64_t in, WeightRole role) override;
  LinearTensor stacked(const std::vector<std::string>& names, int64_t out, int64_t in) override;
  ExpertWeights fused_experts(const std::string& prefix, int64_t experts, int64_t inter,
                              int64_t hidden) override;
  // With a progress callback: pages every tensor in ("read"), then opens "build".
  void before_build(const LoadProgress& progress) override;
  // Closes "build".
  void after_build(const LoadProgress& progress) override;
  // Gives back the mapped pages of a weight it returned as stored.
  void release(const LinearTensor& w) override;

 private:
  Tensor fetch_scale(const std::string& weight_name, int64_t out, int64_t in);
  // GPTQ / AWQ module `base` (its `.qweight`, `.qzeros`, `.scales`).
  LinearTensor read_gptq(const std::string& base, int64_t out, int64_t in);
  LinearTensor read_awq(const std::string& base, int64_t out, int64_t in);
  // A typed, shaped tensor of a packed module, or an error naming it.
  Tensor packed_part(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                     const std::string& what);
  const Checkpoint& ckpt_;
  CheckpointQuant quant_;
};

}  // namespace moert
