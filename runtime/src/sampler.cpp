#include "moert/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "moert/error.h"

namespace moert {

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  check(std::isfinite(options.temperature) && options.temperature >= 0,
        "sampling: temperature must be >= 0, got " + std::to_string(options.temperature));
  check(options.top_k >= 0, "sampling: top_k must be >= 0, got " + std::to_string(options.top_k));
  check(options.top_p > 0 && options.top_p <= 1,
        "sampling: top_p must be in (0, 1], got " + std::to_string(options.top_p));
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  check(vocab > 0, "sampling: empty logits");
  if (options_.temperature == 0.0) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
  }
  // Candidates by descending logit (ties: lower id first), cut to top_k.
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (options_.top_k > 0 && options_.top_k < vocab) ids.resize(static_cast<size_t>(options_.top_k));
  std::vector<double> p(ids.size());
  const double top = logits[ids[0]];
  double sum = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    p[i] = std::exp((logits[ids[i]] - top) / options_.temperature);
    sum += p[i];
  }
  // Nucleus: keep the shortest prefix whose probability reaches top_p.
  size_t keep = ids.size();
  if (options_.top_p < 1.0) {
    double acc = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      acc += p[i] / sum;
      if (acc >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = std::accumulate(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  double r = std::uniform_real_distribution<double>(0.0, kept)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r < 0) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace moert
