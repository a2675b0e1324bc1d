// The derived tables of ops (ops/rope_table.h, ops/router_params.h,
// ops/swiglu_params.h) as a plugin reads them from a node: the same definitions the reference
// kernels use, with NodeDesc as the attribute reader.
#pragma once

#include <string>

#include "plugin_support.h"
#include "rope_table.h"
#include "router_params.h"
#include "swiglu_params.h"

namespace moert::plugin {

using ops::rope_table;
using ops::RopeTable;
using ops::router_params;
using ops::RouterMethod;
using ops::RouterParams;
using ops::RouterScoring;
using ops::SwigluParams;
using ops::yarn_mscale;

// rope_table(), throwing plugin::Failure with the problem.
inline RopeTable rope_table(const NodeDesc& node, int64_t d) {
  std::string problem;
  RopeTable t = ops::rope_table(node, d, &problem);
  if (!problem.empty()) fail(problem);
  return t;
}

// The gated activation's parameters of a swiglu node (prefix "") or a moe
// node (prefix "swiglu_"), throwing plugin::Failure when they are invalid.
inline SwigluParams swiglu_params(const NodeDesc& node, const char* prefix) {
  SwigluParams p;
  if (std::string problem = ops::swiglu_params(node, prefix, &p); !problem.empty()) fail(problem);
  return p;
}

}  // namespace moert::plugin
