// The CPU backend's kernel interface.  Each op is one file of kernels/ that
// registers a KernelDef: a check (can this node, with these dtypes, shapes
// and attributes, run here?) and a factory that builds the node's Kernel at
// prepare time, when it may read and pre-pack constant inputs (weights).
// At execute, Kernel::run() sees every input and output bound to host memory
// with its shape resolved for this call's T and P.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin_support.h"

namespace moert::cpu {

using plugin::fail;
using plugin::NodeDesc;
using plugin::require;
using plugin::Symbols;
using plugin::TensorDesc;

// A tensor bound for one execution: dense, row-major host memory.
struct Tensor {
  moert_dtype dtype = MOERT_DTYPE_F32;
  uint32_t rank = 0;
  std::array<int64_t, MOERT_MAX_RANK> shape{};
  void* data = nullptr;  // nullptr: an absent optional input

  bool present() const { return data != nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  // Dim i; negative i counts from the end.
  int64_t dim(int i) const {
    return shape[static_cast<size_t>(i < 0 ? i + static_cast<int>(rank) : i)];
  }
  // Product of the dims before the last: the number of rows of a [..., N] tensor.
  int64_t rows() const { return rank == 0 ? 1 : numel() / shape[rank - 1]; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * plugin::dtype_size(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

struct ExecContext {
  std::vector<Tensor> inputs;  // absent optional inputs: data == nullptr
  std::vector<Tensor> outputs;
  Symbols symbols;

  bool has(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const Tensor& in(size_t i) const { return inputs[i]; }
  const Tensor& out(size_t i) const { return outputs[i]; }
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  // Computes the outputs.  Throws plugin::Failure (or another exception) on
  // bad input found only at run time (an id out of range, a context
  // overflow); the message need not name the node, the caller adds that.
  virtual void run(const ExecContext& ctx) = 0;
};

struct KernelDef {
  const char* op;
  // Empty when the node can run here; otherwise the reason it cannot
  // (reported by supports_node and in the runtime's fallback list).
  std::string (*check)(const NodeDesc& node);
  // Builds the node's kernel; called only for nodes check() accepted.
  std::unique_ptr<Kernel> (*create)(const NodeDesc& node);
};

// The kernels of this backend, by op name.
const KernelDef* find_kernel(const char* op);
void register_kernel(const KernelDef& def);

// Registers a KernelDef at load time, from a kernel file's namespace scope.
struct KernelRegistration {
  explicit KernelRegistration(const KernelDef& def) { register_kernel(def); }
};

}  // namespace moert::cpu
