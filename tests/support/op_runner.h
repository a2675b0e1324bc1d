// Test support: run one op's reference kernel on host tensors, and make
// random inputs.  Outputs are poisoned (NaN for floats, 0x5A bytes for
// integers) before the kernel runs, so an element the kernel forgets to
// write fails the comparison.
#pragma once

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/op_registry.h"
#include "moert/tensor.h"

namespace moert::testing {

// Fills `t` with a value no kernel writes by accident.
inline void poison(const Tensor& t) {
  if (dtype_is_float(t.dtype())) {
    for (int64_t i = 0; i < t.numel(); ++i)
      store_element(t.dtype(), t.data(), static_cast<size_t>(i), std::nan(""));
  } else {
    std::memset(t.data(), 0x5A, t.nbytes());
  }
}

// Runs op `op` on `inputs` (an undefined Tensor() is an absent optional
// input).  Input shapes are static; `symbols` gives T and P to kernels that
// read them (attention, cache_update).  State inputs are written in place.
// Returns the outputs; inference errors and kernel errors throw moert::Error.
inline std::vector<Tensor> run_op(const std::string& op, const std::vector<Tensor>& inputs,
                                  const Attributes& attrs = {},
                                  SymbolValues symbols = SymbolValues::of(0, 0),
                                  const std::string& name = "test_node") {
  Node node{op, name, attrs, {}, {}};
  std::vector<ValueInfo> infos(inputs.size());
  std::vector<const ValueInfo*> ptrs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) {
      ptrs.push_back(nullptr);
      continue;
    }
    infos[i] = {inputs[i].dtype(), Shape::of(inputs[i].shape())};
    ptrs.push_back(&infos[i]);
  }
  const OpRegistry& reg = OpRegistry::global();
  std::vector<ValueInfo> out_infos = reg.infer(node, ptrs);
  std::vector<Tensor> outputs;
  KernelContext ctx{node, {}, {}, symbols};
  for (const Tensor& t : inputs) {
    if (t.defined())
      ctx.inputs.push_back({t.dtype(), t.shape(), t.data()});
    else
      ctx.inputs.push_back({});
  }
  for (const ValueInfo& info : out_infos) {
    Tensor t = Tensor::empty(info.dtype, info.shape.resolve(symbols));
    poison(t);
    ctx.outputs.push_back({t.dtype(), t.shape(), t.data()});
    outputs.push_back(t);
  }
  reg.get(op).reference(ctx);
  return outputs;
}

// Normal(0, stddev) values rounded to `dtype`.
inline Tensor random_tensor(DType dtype, std::vector<int64_t> shape, std::mt19937& rng,
                            double stddev = 1.0) {
  std::normal_distribution<double> dist(0.0, stddev);
  Tensor t = Tensor::empty(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    store_element(dtype, t.data(), static_cast<size_t>(i), dist(rng));
  return t;
}

// Uniform integers in [lo, hi].
inline Tensor random_ints(DType dtype, std::vector<int64_t> shape, int64_t lo, int64_t hi,
                          std::mt19937& rng) {
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  Tensor t = Tensor::empty(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    store_element(dtype, t.data(), static_cast<size_t>(i), static_cast<double>(dist(rng)));
  return t;
}

// Largest |a-b| / (|b| + floor) over all elements; NaN anywhere gives +inf.
inline double max_rel_error(const std::vector<double>& a, const std::vector<double>& b,
                            double floor = 1e-6) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    worst = std::max(worst, std::fabs(a[i] - b[i]) / (std::fabs(b[i]) + floor));
  }
  return worst;
}

// Largest |a-b| over all elements; NaN anywhere gives +inf.
inline double max_abs_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    worst = std::max(worst, std::fabs(a[i] - b[i]));
  }
  return worst;
}

}  // namespace moert::testing
