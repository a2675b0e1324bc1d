// The gated activation of swiglu (ops/elementwise.cpp) and of moe's experts
// (ops/moe.cpp), with its three parameters:
//   g' = min(g, limit), u' = clamp(u, -limit, limit)   (limit > 0; 0: none)
//   y  = g' * sigmoid(alpha * g') * (u' + up_offset)
// The defaults (alpha 1, limit 0, up_offset 0) give SwiGLU, silu(g) * u.
// GPT-OSS uses alpha 1.702, limit 7, up_offset 1 (its config's swiglu_alpha
// and swiglu_limit; the clamp is asymmetric: g has no lower bound).
// One definition for the reference kernels and the in-tree plugins.
// Header-only, standard library only; `A` reads attributes as in
// rope_table.h (has, real).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "op_number.h"

namespace moert::ops {

struct SwigluParams {
  double alpha = 1.0;
  double limit = 0.0;  // 0: no clamp
  double up_offset = 0.0;

  bool plain() const { return alpha == 1.0 && limit == 0.0 && up_offset == 0.0; }

  // y for one (gate, up) pair, in T's arithmetic (double in the reference,
  // float in the plugins' kernels).
  template <typename T>
  T apply(T g, T u) const {
    if (limit > 0) {
      const T l = static_cast<T>(limit);
      g = std::min(g, l);
      u = std::clamp(u, -l, l);
    }
    const T a = static_cast<T>(alpha);
    return g / (T(1) + std::exp(-a * g)) * (u + static_cast<T>(up_offset));
  }
};

// Validates the attributes named `prefix`alpha, `prefix`limit and
// `prefix`up_offset ("" for swiglu, "swiglu_" for moe) into *p; "" or why
// they are invalid (naming the attribute and its value).
template <class A>
std::string swiglu_params(const A& a, const std::string& prefix, SwigluParams* p) {
  p->alpha = a.real((prefix + "alpha").c_str(), 1.0);
  p->limit = a.real((prefix + "limit").c_str(), 0.0);
  p->up_offset = a.real((prefix + "up_offset").c_str(), 0.0);
  if (!std::isfinite(p->alpha))
    return "attribute '" + prefix + "alpha' must be finite, got " + number_text(p->alpha);
  if (!(p->limit >= 0.0) || !std::isfinite(p->limit))
    return "attribute '" + prefix + "limit' must be finite and >= 0 (0: no clamp), got " +
           number_text(p->limit);
  if (!std::isfinite(p->up_offset))
    return "attribute '" + prefix + "up_offset' must be finite, got " + number_text(p->up_offset);
  return "";
}

}  // namespace moert::ops
