// Helpers for backend plugins written in C++: reading the C graph
// description of backend_abi.h (attributes with defaults, symbolic dims) and
// turning C++ exceptions into ABI status codes.  Header-only and dependent on
// nothing but backend_abi.h and the standard library, so a plugin stays a
// self-contained shared library.
#pragma once

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "moert/backend_abi.h"

namespace moert::plugin {

// An error carrying the ABI status to report.
class Failure : public std::runtime_error {
 public:
  Failure(moert_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  moert_status status() const { return status_; }

 private:
  moert_status status_;
};

[[noreturn]] inline void fail(const std::string& message,
                              moert_status status = MOERT_ERR_INVALID_ARGUMENT) {
  throw Failure(status, message);
}

inline void require(bool condition, const std::string& message,
                    moert_status status = MOERT_ERR_INVALID_ARGUMENT) {
  if (!condition) fail(message, status);
}

// Writes `message` into the caller's error struct, respecting its size.
inline moert_status report(moert_error* err, moert_status status, const std::string& message) {
  if (err && err->struct_size > offsetof(moert_error, message)) {
    const size_t room = err->struct_size - offsetof(moert_error, message);
    const size_t cap = room < sizeof(err->message) ? room : sizeof(err->message);
    std::snprintf(err->message, cap, "%s", message.c_str());
  }
  return status;
}

// Runs fn(), mapping exceptions to a status and a message in `err`.
template <typename F>
moert_status guarded(moert_error* err, F&& fn) {
  try {
    fn();
    return MOERT_OK;
  } catch (const Failure& e) {
    return report(err, e.status(), e.what());
  } catch (const std::bad_alloc&) {
    return report(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return report(err, MOERT_ERR_INTERNAL, e.what());
  }
}

inline const char* dtype_name(moert_dtype t) {
  switch (t) {
    case MOERT_DTYPE_F32:
      return "f32";
    case MOERT_DTYPE_F16:
      return "f16";
    case MOERT_DTYPE_BF16:
      return "bf16";
    case MOERT_DTYPE_F8_E4M3:
      return "f8_e4m3";
    case MOERT_DTYPE_I8:
      return "i8";
    case MOERT_DTYPE_U8:
      return "u8";
    case MOERT_DTYPE_I32:
      return "i32";
    case MOERT_DTYPE_I64:
      return "i64";
    case MOERT_DTYPE_BOOL:
      return "bool";
  }
  return "?";
}

inline size_t dtype_size(moert_dtype t) {
  switch (t) {
    case MOERT_DTYPE_F32:
    case MOERT_DTYPE_I32:
      return 4;
    case MOERT_DTYPE_F16:
    case MOERT_DTYPE_BF16:
      return 2;
    case MOERT_DTYPE_I64:
      return 8;
    default:
      return 1;
  }
}

inline bool dtype_is_float(moert_dtype t) {
  return t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_F16 || t == MOERT_DTYPE_BF16 ||
         t == MOERT_DTYPE_F8_E4M3;
}

inline bool is_float(moert_dtype t) { return dtype_is_float(t); }
inline std::string dtype_str(moert_dtype t) { return dtype_name(t); }

// The dtypes of activations (and of weights, which may also be fp8).
inline bool is_activation(moert_dtype t) {
  return t == MOERT_DTYPE_F32 || t == MOERT_DTYPE_BF16 || t == MOERT_DTYPE_F16;
}
inline bool is_weight_dtype(moert_dtype t) { return is_activation(t) || t == MOERT_DTYPE_F8_E4M3; }
inline bool is_index(moert_dtype t) { return t == MOERT_DTYPE_I32 || t == MOERT_DTYPE_I64; }
// A value of the moert_dtype enum (a description may carry anything).
inline bool is_known_dtype(moert_dtype t) {
  return static_cast<uint32_t>(t) <= static_cast<uint32_t>(MOERT_DTYPE_BOOL);
}

// Resolves an axis attribute that may count from the end.
inline size_t resolve_axis(int64_t axis, size_t rank) {
  return static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis);
}

// Symbol values of one execution: T (tokens of the call), P (cached) and
// R (output rows, ABI 1.4).
struct Symbols {
  int64_t tokens = 0;
  int64_t past = 0;
  int64_t rows = 0;
};

inline int64_t resolve_dim(const moert_dim& d, const Symbols& s) {
  int64_t v = d.fixed;
  if (d.symbols & (1u << MOERT_SYM_TOKENS)) v += s.tokens;
  if (d.symbols & (1u << MOERT_SYM_PAST)) v += s.past;
  if (d.symbols & (1u << MOERT_SYM_ROWS)) v += s.rows;
  return v;
}

inline bool dim_is_static(const moert_dim& d) { return d.symbols == 0; }

// A tensor of the graph description, as a C++ plugin reads it.
struct TensorDesc {
  const moert_tensor_desc* desc = nullptr;

  bool present() const { return desc != nullptr; }
  moert_dtype dtype() const { return desc->dtype; }
  size_t rank() const { return desc->rank; }
  const moert_dim& dim(size_t i) const { return desc->dims[i]; }
  bool is_constant() const { return desc->kind == MOERT_TENSOR_CONSTANT; }
  bool is_state() const { return desc->kind == MOERT_TENSOR_STATE; }
  // The static size of dim i, or -1 when it depends on a symbol.
  int64_t static_dim(size_t i) const {
    return dim_is_static(desc->dims[i]) ? desc->dims[i].fixed : -1;
  }
  bool all_static() const {
    for (size_t i = 0; i < rank(); ++i)
      if (!dim_is_static(dim(i))) return false;
    return true;
  }
  std::vector<int64_t> resolve(const Symbols& s) const {
    std::vector<int64_t> out(rank());
    for (size_t i = 0; i < rank(); ++i) out[i] = resolve_dim(desc->dims[i], s);
    return out;
  }
};

// A node of the description with typed, defaulted attribute lookup.
class NodeDesc {
 public:
  NodeDesc(const moert_graph_desc& graph, size_t index) : graph_(&graph), index_(index) {
    node_ = graph.nodes[index];
  }

  const char* op() const { return node_->op; }
  const moert_node_desc* desc() const { return node_; }
  // The version of the op's semantics the runtime asks for (1 before ABI 1.3).
  uint32_t op_version() const {
    return MOERT_ABI_HAS_MEMBER(node_, moert_node_desc, op_version) && node_->op_version
               ? node_->op_version
               : 1;
  }
  size_t num_attrs() const { return node_->num_attrs; }
  const char* attr_name(size_t i) const { return node_->attrs[i]->name; }
  std::string name() const { return node_->name ? node_->name : ""; }
  size_t index() const { return index_; }
  size_t num_inputs() const { return node_->num_inputs; }
  size_t num_outputs() const { return node_->num_outputs; }
  // Input i's description; absent (present() false) for a missing optional.
  TensorDesc input(size_t i) const {
    if (i >= node_->num_inputs || node_->inputs[i] == MOERT_NO_TENSOR) return {};
    return {graph_->tensors[node_->inputs[i]]};
  }
  bool has_input(size_t i) const { return input(i).present(); }
  TensorDesc output(size_t i) const { return {graph_->tensors[node_->outputs[i]]}; }
  uint32_t input_index(size_t i) const {
    return i < node_->num_inputs ? node_->inputs[i] : MOERT_NO_TENSOR;
  }
  uint32_t output_index(size_t i) const { return node_->outputs[i]; }

  const moert_attr* attr(const char* name) const {
    for (size_t i = 0; i < node_->num_attrs; ++i)
      if (std::strcmp(node_->attrs[i]->name, name) == 0) return node_->attrs[i];
    return nullptr;
  }
  int64_t attr_int(const char* name, int64_t fallback) const {
    const moert_attr* a = attr(name);
    if (!a) return fallback;
    if (a->type == MOERT_ATTR_INT) return a->i;
    if (a->type == MOERT_ATTR_FLOAT) return static_cast<int64_t>(a->f);
    fail(where() + ": attribute '" + name + "' is not an integer");
  }
  double attr_float(const char* name, double fallback) const {
    const moert_attr* a = attr(name);
    if (!a) return fallback;
    if (a->type == MOERT_ATTR_FLOAT) return a->f;
    if (a->type == MOERT_ATTR_INT) return static_cast<double>(a->i);
    fail(where() + ": attribute '" + name + "' is not a number");
  }
  std::string attr_string(const char* name, const std::string& fallback) const {
    const moert_attr* a = attr(name);
    if (!a) return fallback;
    if (a->type != MOERT_ATTR_STRING) fail(where() + ": attribute '" + name + "' is not a string");
    return a->s ? a->s : "";
  }
  std::vector<int64_t> attr_ints(const char* name, std::vector<int64_t> fallback) const {
    const moert_attr* a = attr(name);
    if (!a) return fallback;
    if (a->type != MOERT_ATTR_INTS) fail(where() + ": attribute '" + name + "' is not a list");
    return std::vector<int64_t>(a->ints, a->ints + a->count);
  }

  // The attribute reader of the headers ops/ shares with the plugins
  // (ops/rope_table.h, ops/router_params.h).
  bool has(const char* name) const { return attr(name) != nullptr; }
  double real(const char* name, double fallback) const { return attr_float(name, fallback); }
  int64_t integer(const char* name, int64_t fallback) const { return attr_int(name, fallback); }
  std::string text(const char* name, const std::string& fallback) const {
    return attr_string(name, fallback);
  }

  // "node 'name' (op)", for messages.
  std::string where() const { return "node '" + name() + "' (" + op() + ")"; }

 private:
  const moert_graph_desc* graph_;
  const moert_node_desc* node_;
  size_t index_;
};

}  // namespace moert::plugin
