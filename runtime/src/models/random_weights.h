// Random weights for a model built from config.json alone (Model::random):
// a WeightSource that hands the builder uninitialised tensors of the shapes
// and dtypes it asks for, then fills them all in parallel (generate()).
//
// Values: every matrix, router and bias N(0, std²), norm weights 1.0.  Each
// element is a pure function of (seed, tensor name, element index): a
// counter-based hash (SplitMix64's finaliser) turned into an approximately
// normal value (the sum of four uniform 16-bit parts, Irwin–Hall, rescaled to
// unit variance; bounded at ±3.46 std).  So the values do not depend on the
// thread count, stacked experts hold exactly the values of the per-expert
// tensors, and the f32, bf16, f16 and fp8 variants of one seed are roundings
// of the same numbers.
//
// Storage dtypes (mode = RandomWeights::dtype):
//   f32, bf16, f16: every tensor in that dtype, except DeepSeek-V3's
//                   e_score_correction_bias, always f32 (as checkpoints store it);
//   fp8:            linear weights inside decoder layers (attention projections,
//                   dense MLPs, routed and shared experts) e4m3 with an f32
//                   scale per 128×128 block (scale = block amax / 448, weight =
//                   e4m3(value / scale), as DeepSeek-V3 stores them); embeddings,
//                   lm_head, norms, routers and biases bf16.
//   int8, int4, mxfp4: the bf16 model with its linear weights inside decoder
//                   layers packed with groups of 32 (quantize_rows of
//                   quantize_weights.h), exactly as LoadOptions::quantize
//                   packs a bf16 checkpoint; each chunk of rows is generated
//                   in bf16 and packed at once, so only the packed model is
//                   ever held (a 30B-parameter shape fits in its int4 bytes).
//                   An untied lm_head is packed int8 g32 in every such mode.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "architecture.h"
#include "moert/model.h"
#include "weight_format.h"
#include "weight_source.h"

namespace moert {

class RandomWeightSource final : public WeightSource {
 public:
  // Throws moert::Error for an unknown options.dtype or a std that is not finite and >= 0.
  RandomWeightSource(const ArchSpec& arch, const RandomWeights& options);

  // Every name the builder may ask for, except lm_head.weight when the
  // embeddings are tied (the builder then reuses the embedding).
  bool has(const std::string& name) const override;
  Tensor tensor(const std::string& name, const std::vector<int64_t>& shape,
                WeightRole role) override;
  LinearTensor linear(const std::string& name, int64_t out, int64_t in, WeightRole role) override;
  LinearTensor stacked(const std::vector<std::string>& names, int64_t out, int64_t in) override;
  // Nothing to do before the builder; after it, generate() reports "build".
  void before_build(const LoadProgress&) override {}
  void after_build(const LoadProgress& progress) override;
  // Values are generated in after_build.
  bool fills_later() const override { return true; }

  // Fills every tensor handed out so far, on options.threads threads (0: the
  // hardware concurrency).  `progress` (optional) is called on this thread
  // with (bytes done, total) a few times a second and once at the end; an
  // exception it throws stops the workers and propagates.
  void generate(const std::function<void(uint64_t, uint64_t)>& progress = nullptr);

 private:
  // One tensor (or one expert's slice of a stacked tensor) to fill.
  struct Job {
    void* data = nullptr;
    DType dtype = DType::f32;
    int64_t rows = 0, cols = 0;  // viewed as a matrix; 1-D tensors have one row
    uint64_t key = 0;
    bool ones = false;       // norm weights
    float* scale = nullptr;  // f8_e4m3: the block scales [⌈rows/128⌉, ⌈cols/128⌉]
    // Packed (int8, int4, mxfp4): stored rows at `data`, group scales here.
    ops::WeightFormat format = ops::WeightFormat::none;
    void* groups = nullptr;
  };
  DType dtype_for(WeightRole role) const;
  void add_job(const std::string& name, void* data, DType dtype, const std::vector<int64_t>& shape,
               WeightRole role, float* scale);
  void fill(const Job& job, int64_t row_begin, int64_t row_end, std::vector<float>& scratch) const;

  const ArchSpec& arch_;
  std::string mode_;           // "f32", "bf16", "f16", "fp8", "int8", "int4" or "mxfp4"
  bool experts_only_ = false;  // "<format>-experts": only the routed experts packed
  ops::WeightFormat packed_ = ops::WeightFormat::none;  // of the last three
  // Packed weights [out, in], or [E, out, in] when `stacked`, in `format`.
  LinearTensor packed_linear(const std::vector<std::string>& names, int64_t out, int64_t in,
                             bool stacked, ops::WeightFormat format);
  uint64_t seed_;
  float std_;
  int threads_;
  std::vector<Job> jobs_;
};

// The generator's pieces, exposed for tests.
// The key of tensor `name` under `seed` (FNV-1a of the name mixed with the seed).
uint64_t random_weight_key(uint64_t seed, const std::string& name);
// Element `index` of the tensor with `key`: approximately N(0, 1).
float random_weight_value(uint64_t key, uint64_t index);
// Round-to-nearest-even conversions bit-identical to f32_to_bf16, f32_to_f16
// and f32_to_e4m3 of dtype.h, without their generality's cost.
uint16_t fast_f32_to_bf16(float v);
uint16_t fast_f32_to_f16(float v);
uint8_t fast_f32_to_e4m3(float v);

}  // namespace moert
