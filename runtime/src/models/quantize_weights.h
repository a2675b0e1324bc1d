// Quantize on load: LoadOptions::quantize and RandomWeights::dtype "int8",
// "int4", "mxfp4".  A WeightSource decorator packs every linear weight inside
// the decoder layers (role `linear`: attention projections, dense MLPs, routed
// and shared experts) that its source gives as float or fp8, and an untied
// lm_head as int8 g32 whatever the format (as llama.cpp keeps its output
// matrix at 6-8 bits); embeddings, routers, norms and biases pass through, and so do weights the
// source already gives packed (a GPTQ, AWQ or MXFP4 checkpoint).
//
// Round to nearest, groups of `group` columns (along K, 32 by default) of one
// row, formats as ops/weight_format.h stores them:
//   int8   symmetric: scale d = amax / 127 stored f16, q = round(w / d)
//          clamped to [-127, 127] (llama.cpp's Q8_0 with d rounded to f16
//          first, so that q is computed with the scale the kernels use).
//   int4   symmetric as llama.cpp's Q4_0: m = the group's value of largest
//          magnitude (with its sign), d = m / -8 stored f16, q = min(15,
//          floor(w / d + 8.5)) (so m itself is q = 0; zero point 8).
//   mxfp4  OCP MX (groups of 32): the shared exponent rounds amax / 6 up to a
//          power of two, 2^(e - 127) with e stored e8m0, as transformers'
//          quantizer (triton_kernels' downcast_to_mxfp, ROUND_UP) does, so no
//          element saturates; each w / 2^(e - 127) rounds to the nearest e2m1
//          value (ties to even, as OCP's conversions do).
// An fp8 weight is dequantised (e4m3 × its block scale) before.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "weight_format.h"
#include "weight_source.h"

namespace moert {

// The format a quantize option names: "" is none, "int8", "int4", "mxfp4";
// anything else throws moert::Error naming `what` and the value.
ops::WeightFormat quantize_format(const std::string& value, const std::string& what);

// Quantizes `rows` rows of `cols` floats (row-major) into `format` with
// groups of `group` columns (mxfp4: 32): `data` receives the stored rows
// [rows, stored_cols(format, cols)] and `scale` the group scales [rows,
// ⌈cols / group⌉] (f16 bits for int8 and int4, e8m0 bytes for mxfp4).
void quantize_rows(const float* w, int64_t rows, int64_t cols, ops::WeightFormat format,
                   int64_t group, void* data, void* scale);

// A float or fp8 weight [lead..., rows, cols] packed as `format` with groups
// of `group` columns (-1: one group per row; mxfp4 always 32), on `threads`
// threads (0: the hardware concurrency).
LinearTensor quantize_linear(const LinearTensor& w, ops::WeightFormat format, int64_t group,
                             int threads = 0);

class QuantizingWeights final : public WeightSource {
 public:
  // `where` names the source in errors (a directory, a config name).
  // `group`: columns per group for int8 and int4 (-1: one group per row).
  QuantizingWeights(WeightSource& inner, std::string where, ops::WeightFormat format,
                    int64_t group = 32, int threads = 0);

  bool has(const std::string& name) const override { return inner_.has(name); }
  Tensor tensor(const std::string& name, const std::vector<int64_t>& shape,
                WeightRole role) override {
    return inner_.tensor(name, shape, role);
  }
  LinearTensor linear(const std::string& name, int64_t out, int64_t in, WeightRole role) override;
  // Each expert packed; experts the source gives packed (a checkpoint mixing
  // packed and plain experts) stay so, and the plain ones are packed in the
  // format and groups of the first packed one, so that they stack.
  LinearTensor stacked(const std::vector<std::string>& names, int64_t out, int64_t in) override;
  // The source's, each of the three packed unless the source gives it packed.
  ExpertWeights fused_experts(const std::string& prefix, int64_t experts, int64_t inter,
                              int64_t hidden) override;
  void before_build(const LoadProgress& progress) override { inner_.before_build(progress); }
  // The source's after_build, then the quantization of what it filled only
  // then (random weights).
  void after_build(const LoadProgress& progress) override;
  void release(const LinearTensor& w) override { inner_.release(w); }
  // Filled (and packed) only after after_build when the source is.
  bool fills_later() const override { return inner_.fills_later(); }

 private:
  // A weight of the source's, packed now, or allocated now and packed after
  // the source's after_build when it fills its tensors only then.
  LinearTensor pack(const LinearTensor& w, ops::WeightFormat format, int64_t group);
  struct Pending {
    LinearTensor source, target;
  };
  WeightSource& inner_;
  std::string where_;
  ops::WeightFormat format_;
  int64_t group_;
  int threads_;
  std::vector<Pending> pending_;
};

}  // namespace moert
