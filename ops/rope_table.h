// The frequency table of a rope node (ops/rope.cpp defines the op): the
// inverse frequency of each rotated pair, with linear or YaRN scaling, and
// YaRN's attention scaling, computed in double from the node's attributes.
// One definition for both sides of the plugin ABI: the reference kernel and
// inference (ops/rope.cpp) and the in-tree plugins (which build it at prepare
// and check the attributes with it in supports_node).  Header-only, standard
// library only.
//
// `A` reads attributes: has(name), real(name, fallback),
// integer(name, fallback), text(name, fallback) — moert::NodeAttrs over the
// runtime's Attributes (ops/kernel_util.h), plugin::NodeDesc in a plugin.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <string>
#include <vector>

#include "op_number.h"

namespace moert::ops {

struct RopeTable {
  int64_t rotary_dim = 0;
  bool interleaved = false;
  std::vector<double> inv_freq;  // rotary_dim / 2 entries
  double attention_scaling = 1.0;
};

inline double yarn_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

// Validates the attributes for head size d and builds the table; on an
// invalid attribute sets *problem (naming the attribute and its value) and
// returns an empty table.
template <class A>
RopeTable rope_table(const A& a, int64_t d, std::string* problem) {
  RopeTable t;
  auto bad = [&](const std::string& why) {
    *problem = why;
    return RopeTable{};
  };
  if (!a.has("theta")) return bad("attribute 'theta' is required");
  const double theta = a.real("theta", 0.0);
  if (!(theta > 0.0) || !std::isfinite(theta))
    return bad("attribute 'theta' must be a finite number > 0, got " + number_text(theta));
  t.rotary_dim = a.integer("rotary_dim", d);
  if (t.rotary_dim < 2 || t.rotary_dim > d || t.rotary_dim % 2 != 0)
    return bad("attribute 'rotary_dim' must be even and in [2, " + std::to_string(d) +
               "] (the head size), got " + std::to_string(t.rotary_dim));
  const std::string pairing = a.text("pairing", "half");
  if (pairing != "half" && pairing != "interleaved")
    return bad("attribute 'pairing' must be \"half\" or \"interleaved\", got \"" + pairing + "\"");
  t.interleaved = pairing == "interleaved";
  const std::string scaling = a.text("scaling", "none");
  if (scaling != "none" && scaling != "linear" && scaling != "yarn")
    return bad("attribute 'scaling' must be \"none\", \"linear\" or \"yarn\", got \"" + scaling +
               "\"");
  double factor = 1.0;
  if (scaling != "none") {
    if (!a.has("factor"))
      return bad("attribute 'factor' is required when 'scaling' is \"" + scaling + "\"");
    factor = a.real("factor", 1.0);
    if (!(factor > 0.0) || !std::isfinite(factor))
      return bad("attribute 'factor' must be a finite number > 0, got " + number_text(factor));
  }
  const int64_t r = t.rotary_dim;
  const int64_t half = r / 2;
  t.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j)
    t.inv_freq[static_cast<size_t>(j)] =
        std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(r));
  if (scaling == "linear") {
    for (double& f : t.inv_freq) f /= factor;
  } else if (scaling == "yarn") {
    if (!a.has("original_max_position_embeddings"))
      return bad(
          "attribute 'original_max_position_embeddings' is required when 'scaling' is "
          "\"yarn\"");
    const int64_t l0 = a.integer("original_max_position_embeddings", 0);
    if (l0 <= 0)
      return bad("attribute 'original_max_position_embeddings' must be > 0, got " +
                 std::to_string(l0));
    const double beta_fast = a.real("beta_fast", 32.0);
    const double beta_slow = a.real("beta_slow", 1.0);
    if (!(beta_fast > 0.0) || !(beta_slow > 0.0))
      return bad("attributes 'beta_fast' and 'beta_slow' must be > 0, got " +
                 number_text(beta_fast) + " and " + number_text(beta_slow));
    const double mscale = a.real("mscale", 1.0);
    const double mscale_all_dim = a.real("mscale_all_dim", 0.0);
    const int64_t truncate = a.integer("truncate", 1);
    if (truncate != 0 && truncate != 1)
      return bad("attribute 'truncate' must be 0 or 1, got " + std::to_string(truncate));
    const double rd = static_cast<double>(r);
    auto corr = [&](double n) {
      return rd * std::log(static_cast<double>(l0) / (2.0 * std::numbers::pi * n)) /
             (2.0 * std::log(theta));
    };
    double low = corr(beta_fast);
    double high = corr(beta_slow);
    if (truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::clamp(low, 0.0, rd - 1.0);
    high = std::clamp(high, 0.0, rd - 1.0);
    if (low == high) high += 0.001;
    for (int64_t j = 0; j < half; ++j) {
      const double ramp = std::clamp((static_cast<double>(j) - low) / (high - low), 0.0, 1.0);
      double& f = t.inv_freq[static_cast<size_t>(j)];
      f = (1.0 - ramp) * f + ramp * f / factor;
    }
    if (a.has("attention_factor")) {
      t.attention_scaling = a.real("attention_factor", 1.0);
    } else if (mscale != 0.0 && mscale_all_dim != 0.0) {
      t.attention_scaling = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim);
    } else {
      t.attention_scaling = yarn_mscale(factor, 1.0);
    }
  }
  return t;
}

}  // namespace moert::ops
