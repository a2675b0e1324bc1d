// The derived tables of ops (ops/rope_table.h, ops/router_params.h) as a
// plugin reads them from a node: the same definitions the reference kernels
// use, with NodeDesc as the attribute reader.
#pragma once

#include <string>

#include "plugin_support.h"
#include "rope_table.h"
#include "router_params.h"

namespace moert::plugin {

using ops::rope_table;
using ops::RopeTable;
using ops::router_params;
using ops::RouterMethod;
using ops::RouterParams;
using ops::RouterScoring;
using ops::yarn_mscale;

// rope_table(), throwing plugin::Failure with the problem.
inline RopeTable rope_table(const NodeDesc& node, int64_t d) {
  std::string problem;
  RopeTable t = ops::rope_table(node, d, &problem);
  if (!problem.empty()) fail(problem);
  return t;
}

}  // namespace moert::plugin
