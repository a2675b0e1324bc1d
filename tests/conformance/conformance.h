// The backend conformance suite: every op, on random inputs of awkward
// shapes and every dtype a backend claims, run on each available device and
// compared with the reference backend (the oracle) by the same executor.
//
// A case is one node of one op.  Its inputs are activations (given per step),
// constants (weights, packed at prepare) or states (KV caches, zero at the
// start and carried from step to step).  Each step runs the node on the
// device (strict placement: a fallback fails the case) and on the reference
// backend, and compares every output and, after the last step, every state.
//
// Floats compare elementwise: |got - want| <= tolerance * (|want| + floor)
// where floor defaults to 1e-3 of the largest |want| of that output, so a
// value that cancels to near zero is judged against the output's scale
// rather than its own.  Integer outputs must match exactly.
#pragma once

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "moert/attributes.h"
#include "moert/shape.h"
#include "moert/tensor.h"

namespace moert::conformance {

struct Slot {
  enum Kind { absent, activation, constant, state };
  Kind kind = absent;
  Tensor constant_data;  // constant
  DType dtype = DType::f32;
  Shape shape;  // activation (may use T and P) or state (static)
};

struct Step {
  int64_t tokens = 0;          // T of this execution
  int64_t rows = 0;            // R of this execution (output rows)
  std::vector<Tensor> inputs;  // one per activation slot, in slot order
};

struct Case {
  std::string name;  // unique within the op: "bf16_weights_odd_rows"
  std::string op;
  Attributes attrs;
  std::vector<Slot> slots;
  std::vector<Step> steps;  // P of step i is the sum of T of the steps before
  double tolerance = 1e-5;
  double floor = -1;  // absolute floor of the relative measure; < 0: 1e-3 of max |want|
  std::string why;    // why this tolerance: the dtype argument, in words
};

// Slot builders.
Slot absent();
Slot activation(DType dtype, Shape shape);
Slot constant(Tensor data);
Slot state(DType dtype, std::vector<int64_t> shape);

// Normal(0, stddev) values rounded to `dtype`; uniform integers in [lo, hi].
Tensor random(DType dtype, std::vector<int64_t> shape, std::mt19937& rng, double stddev = 1.0);
Tensor random_ints(DType dtype, std::vector<int64_t> shape, int64_t lo, int64_t hi,
                   std::mt19937& rng);

// A one-step case whose every input is an activation with a static shape
// (the common form for elementwise and layout ops).  An undefined tensor is
// an absent optional input.
Case simple_case(std::string name, std::string op, std::vector<Tensor> inputs,
                 Attributes attrs = {}, double tolerance = 1e-5, std::string why = "");

// The tolerance a kernel computing in f32 (or better) and rounding once to
// `out` must meet, and the words that justify it.
double tolerance_for(DType out);
std::string why_for(DType out);

// Each family file registers a generator of its cases.
using CaseGenerator = std::function<std::vector<Case>()>;
struct CaseRegistration {
  CaseRegistration(const char* family, CaseGenerator generator);
};

// A backend contract test (contract.cpp): what every device must do besides
// computing ops right: buffers, errors, profiling, refusing what it does not
// know.  Runs on every device of every backend, the reference one included,
// as the family "contract".
using ContractTest = std::function<void(const std::string& device)>;
struct ContractRegistration {
  ContractRegistration(const char* name, ContractTest test);
};

}  // namespace moert::conformance
