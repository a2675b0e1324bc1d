// Test support: run one op's reference kernel on host tensors, and make
// random inputs.  Outputs are poisoned (NaN for floats, 0x5A bytes for
// integers) before the kernel runs, so an element the kernel forgets to
// write fails the comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
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

// Expects fn() to throw moert::Error whose message contains every one of
// `parts`.
template <typename F>
void expect_error(F fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no moert::Error thrown; expected one mentioning '" << parts.at(0) << "'";
  } catch (const moert::Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nlacks: " << p;
  }
}

// The message of the moert::Error that f() throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const moert::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Output infos of op `op` on inputs that may have symbolic shapes (nullptr is
// an absent optional input).
inline std::vector<ValueInfo> infer(const std::string& op,
                                    const std::vector<const ValueInfo*>& inputs,
                                    const Attributes& attrs = {}) {
  Node node{op, "test_node", attrs, {}, {}};
  return OpRegistry::global().infer(node, inputs);
}

// The same, with every input given by value.
inline std::vector<ValueInfo> infer(const std::string& op, std::initializer_list<ValueInfo> inputs,
                                    const Attributes& attrs = {}) {
  std::vector<const ValueInfo*> ptrs;
  for (const ValueInfo& v : inputs) ptrs.push_back(&v);
  return infer(op, ptrs, attrs);
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

// Bound on the relative error of a kernel that computes in double and rounds
// once to `out`: half an ulp of the output type is f32 2^-24 ≈ 6e-8 (checked
// at 1e-5), bf16 2^-9 ≈ 2e-3 (checked at 1e-2), f16 2^-11 ≈ 5e-4 (checked at
// 2e-3).
inline double dtype_tolerance(DType out) {
  switch (out) {
    case DType::bf16:
      return 1e-2;
    case DType::f16:
      return 2e-3;
    default:
      return 1e-5;
  }
}

// max_rel_error with the relative measure floored at the output type's
// smallest normal magnitude: below it f16 (2^-14 ≈ 6.1e-5) has subnormals with
// fewer mantissa bits, whose rounding error is bounded absolutely (2^-25), not
// relatively.  bf16 and f32 have f32's exponent range, so 1e-6 suffices.
inline double dtype_rel_error(DType out, const std::vector<double>& got,
                              const std::vector<double>& want) {
  return max_rel_error(got, want, out == DType::f16 ? 6.103515625e-05 : 1e-6);
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
