// What the attention, masked_softmax and cache_update kernels share: the
// masking attributes (scale, causal, window) and the key range a query may
// see, the context-overflow check of a KV cache write.  Semantics: ops/attention.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include "kernel.h"

namespace moert::cpu::attn {

inline bool is_activation(moert_dtype t) {
  return t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_BF16 || t == MOERT_DTYPE_F16;
}

inline std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

struct MaskParams {
  double scale = 1.0;
  bool causal = true;
  int64_t window = 0;  // 0: unlimited

  // Keys [lo, hi) of the `len` keys that the query at absolute position p
  // may attend to: (not causal or kv <= p) and (no window or kv > p - window).
  int64_t lo(int64_t p) const { return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0; }
  int64_t hi(int64_t p, int64_t len) const { return causal ? std::min<int64_t>(len, p + 1) : len; }
};

// "" when the attributes are valid, else why not.
inline std::string mask_problem(const NodeDesc& node) {
  const double scale = node.attr_float("scale", 1.0);
  if (!std::isfinite(scale)) return "attribute 'scale' must be finite, got " + num(scale);
  const int64_t causal = node.attr_int("causal", 1);
  if (causal != 0 && causal != 1)
    return "attribute 'causal' must be 0 or 1, got " + std::to_string(causal);
  const int64_t window = node.attr_int("window", 0);
  if (window < 0)
    return "attribute 'window' must be >= 0 (0 = unlimited), got " + std::to_string(window);
  return "";
}

inline MaskParams mask_params(const NodeDesc& node, double default_scale) {
  const std::string problem = mask_problem(node);
  if (!problem.empty()) fail(problem);
  MaskParams m;
  m.scale = node.attr_float("scale", default_scale);
  m.causal = node.attr_int("causal", 1) == 1;
  m.window = node.attr_int("window", 0);
  return m;
}

// Fails, writing nothing, unless `tokens` new rows fit after `past` rows in
// a cache of `capacity` rows.
inline void check_capacity(int64_t past, int64_t tokens, int64_t capacity) {
  if (past < 0) fail("the past token count P must be >= 0, got " + std::to_string(past));
  if (past + tokens > capacity)
    fail("context overflow: " + std::to_string(past) + " past + " + std::to_string(tokens) +
         " new tokens exceed the cache capacity " + std::to_string(capacity));
}

}  // namespace moert::cpu::attn
