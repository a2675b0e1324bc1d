// What the in-tree plugins check of a node's description before their own
// limits, and the messages of errors found while running, where every
// backend says the same thing (the reference kernels' words).  A backend's
// KernelDef check calls the op's check here, then adds what only it limits.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "kit/kernel.h"
#include "op_params.h"
#include "plugin_support.h"

namespace moert::plugin {

// rope(x [T, nh, d], positions [T]): activations, static nh and d, index
// positions, valid attributes.
inline std::string check_rope(const NodeDesc& node) {
  const TensorDesc x = node.input(0), pos = node.input(1);
  if (!is_activation(x.dtype())) return std::string("rope of ") + dtype_name(x.dtype());
  if (x.rank() != 3 || x.static_dim(1) < 0 || x.static_dim(2) < 0)
    return "rope needs x [T, nh, d] with static nh and d";
  if (!pos.present() || !is_index(pos.dtype())) return "rope positions must be i32 or i64";
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from x's";
  std::string problem;
  rope_table(node, x.static_dim(2), &problem);
  return problem;
}

// embedding(table [V, H], ids [...]): activation table and output, index ids.
inline std::string check_embedding(const NodeDesc& node) {
  const TensorDesc table = node.input(0), ids = node.input(1);
  if (!is_activation(table.dtype()))
    return std::string("embedding table of ") + dtype_name(table.dtype());
  if (!is_index(ids.dtype())) return std::string("embedding ids of ") + dtype_name(ids.dtype());
  if (!is_activation(node.output(0).dtype()))
    return std::string("embedding output of ") + dtype_name(node.output(0).dtype());
  if (table.rank() != 2) return "embedding table of rank " + std::to_string(table.rank());
  return "";
}

// cache_update(cache [C, ...], x [T, ...]): float tensors, a static cache.
inline std::string check_cache_update(const NodeDesc& node) {
  const TensorDesc cache = node.input(0), x = node.input(1);
  if (!dtype_is_float(cache.dtype()))
    return std::string("cache of dtype ") + dtype_name(cache.dtype());
  if (!dtype_is_float(x.dtype())) return std::string("input of dtype ") + dtype_name(x.dtype());
  if (cache.rank() < 1 || !cache.all_static() || x.rank() != cache.rank())
    return "cache must be static [C, ...] and x of its rank";
  if (node.output(0).dtype() != cache.dtype()) return "output dtype differs from the cache's";
  return "";
}

// cast(x) -> y: both dtypes known.
inline std::string check_cast(const NodeDesc& node) {
  const moert_dtype from = node.input(0).dtype(), to = node.output(0).dtype();
  if (!is_known_dtype(from) || !is_known_dtype(to))
    return "cast between dtype codes " + std::to_string(static_cast<int>(from)) + " and " +
           std::to_string(static_cast<int>(to));
  return "";
}

// softmax, argmax and the other row-wise ops over the last axis of an
// activation.
inline std::string check_rows(const NodeDesc& node) {
  const TensorDesc x = node.input(0);
  if (!is_activation(x.dtype())) return std::string(node.op()) + " of " + dtype_str(x.dtype());
  if (x.rank() < 1) return std::string(node.op()) + " of a scalar";
  return "";
}

// "[i, j, ...]": the multi-index of flat position `flat` in a tensor of `t`'s
// shape.
inline std::string position_str(const kit::TensorShape& t, int64_t flat) {
  std::vector<int64_t> index(t.rank);
  for (size_t k = t.rank; k-- > 0;) {
    index[k] = t.shape[k] ? flat % t.shape[k] : 0;
    flat = t.shape[k] ? flat / t.shape[k] : 0;
  }
  std::string s = "[";
  for (size_t k = 0; k < index.size(); ++k) s += (k ? ", " : "") + std::to_string(index[k]);
  return s + "]";
}

// A number as the reference kernels print it in messages ("nan", "1.5").
inline std::string number_str(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// The router's device error slots: 0, a non-finite bias element at
// `position`; 1, a non-finite logit at flat `position` of [T, experts].
inline std::string router_error(int slot, int64_t position, int64_t experts, double value) {
  if (slot == 0)
    return "input 'bias'[" + std::to_string(position) + "] = " + number_str(value) +
           " is not finite";
  return "input 'logits'[" + std::to_string(position / experts) + ", " +
         std::to_string(position % experts) + "] = " + number_str(value) + " is not finite";
}

// The embedding's device error slot: id `id` of `ids` at flat `position` is
// outside the table of `rows` rows.
inline std::string embedding_error(const kit::TensorShape& ids, int64_t position, int64_t id,
                                   int64_t rows) {
  return "input 'ids' holds id " + std::to_string(id) + " at position " +
         position_str(ids, position) + ", outside [0, V) with V = " + std::to_string(rows);
}

// moe's and routing_dense's: expert id `id` at flat `position` of
// expert_ids [T, k] is not in [0, experts).
inline std::string expert_id_error(int64_t position, int64_t k, int64_t id, int64_t experts) {
  return "input 'expert_ids'[" + std::to_string(position / k) + ", " +
         std::to_string(position % k) + "] = " + std::to_string(id) + " is out of range [0, " +
         std::to_string(experts) + ")";
}

}  // namespace moert::plugin
