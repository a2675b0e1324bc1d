// The attributes of a router node (ops/router.cpp defines the op), validated
// for E experts: scoring, selection method, groups, normalisation, scaling.
// One definition for the reference kernel and inference (ops/router.cpp) and
// the in-tree plugins (which check them in supports_node and read them at
// prepare).  Header-only, standard library only; `A` reads attributes as in
// rope_table.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "op_number.h"

namespace moert::ops {

// Codes as the device kernels take them (ints).
enum class RouterScoring : int { softmax = 0, sigmoid = 1, softmax_topk = 2 };
enum class RouterMethod : int { greedy = 0, group_limited_greedy = 1, noaux_tc = 2 };

struct RouterParams {
  int64_t top_k = 1;
  RouterScoring scoring = RouterScoring::softmax;
  RouterMethod method = RouterMethod::greedy;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool normalize = false;
  double normalize_eps = 0.0;
  double scaling_factor = 1.0;
};

// Validates the attributes for E experts into *p; "" or why they are invalid
// (naming the attribute and its value).
template <class A>
std::string router_params(const A& a, int64_t experts, RouterParams* p) {
  if (!a.has("top_k")) return "attribute 'top_k' is required";
  p->top_k = a.integer("top_k", 1);
  if (p->top_k < 1 || p->top_k > experts)
    return "attribute 'top_k' must be in [1, " + std::to_string(experts) +
           "] (the number of experts), got " + std::to_string(p->top_k);
  const std::string scoring = a.text("scoring", "softmax");
  if (scoring == "softmax")
    p->scoring = RouterScoring::softmax;
  else if (scoring == "sigmoid")
    p->scoring = RouterScoring::sigmoid;
  else if (scoring == "softmax_topk")
    p->scoring = RouterScoring::softmax_topk;
  else
    return "attribute 'scoring' must be \"softmax\", \"sigmoid\" or \"softmax_topk\", got \"" +
           scoring + "\"";
  const std::string method = a.text("topk_method", "greedy");
  if (method == "greedy")
    p->method = RouterMethod::greedy;
  else if (method == "group_limited_greedy")
    p->method = RouterMethod::group_limited_greedy;
  else if (method == "noaux_tc")
    p->method = RouterMethod::noaux_tc;
  else
    return "attribute 'topk_method' must be \"greedy\", \"group_limited_greedy\" or "
           "\"noaux_tc\", got \"" +
           method + "\"";
  p->n_group = a.integer("n_group", 1);
  if (p->n_group < 1 || experts % p->n_group != 0)
    return "attribute 'n_group' must be >= 1 and divide the number of experts " +
           std::to_string(experts) + ", got " + std::to_string(p->n_group);
  p->topk_group = a.integer("topk_group", 1);
  if (p->topk_group < 1 || p->topk_group > p->n_group)
    return "attribute 'topk_group' must be in [1, n_group = " + std::to_string(p->n_group) +
           "], got " + std::to_string(p->topk_group);
  const int64_t group_size = experts / p->n_group;
  if (p->n_group > 1) {
    if (p->top_k > p->topk_group * group_size)
      return "attribute 'top_k' = " + std::to_string(p->top_k) + " exceeds the " +
             std::to_string(p->topk_group * group_size) +
             " experts of the topk_group = " + std::to_string(p->topk_group) + " kept groups of " +
             std::to_string(group_size);
    if (p->method == RouterMethod::noaux_tc && group_size < 2)
      return "topk_method \"noaux_tc\" scores a group by its two best experts, but n_group = " +
             std::to_string(p->n_group) + " leaves " + std::to_string(group_size) +
             " expert per group";
  }
  const int64_t normalize = a.integer("normalize", 0);
  if (normalize != 0 && normalize != 1)
    return "attribute 'normalize' must be 0 or 1, got " + std::to_string(normalize);
  p->normalize = normalize == 1;
  p->normalize_eps = a.real("normalize_eps", 0.0);
  if (!(p->normalize_eps >= 0.0) || !std::isfinite(p->normalize_eps))
    return "attribute 'normalize_eps' must be a finite number >= 0, got " +
           number_text(p->normalize_eps);
  p->scaling_factor = a.real("scaling_factor", 1.0);
  if (!std::isfinite(p->scaling_factor))
    return "attribute 'scaling_factor' must be finite, got " + number_text(p->scaling_factor);
  return "";
}

}  // namespace moert::ops
