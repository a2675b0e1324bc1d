// Choosing the next token from a row of logits.
#pragma once

#include <cstdint>
#include <random>

namespace moert {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax, lowest index on ties)
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;        // nucleus: smallest set with probability >= top_p
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // `logits` has `vocab` f32 values.  Throws moert::Error for bad options.
  int32_t sample(const float* logits, int64_t vocab);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace moert
