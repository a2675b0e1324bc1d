// argmax: every activation dtype; rows of 1, 15, 16, 17, 33 elements (below,
// at and across a vector width) and of a vocabulary's size; rank 1 (a scalar
// result) to rank 3; ties (values from a handful of integers, so most rows
// have several maxima, including ties of +inf and of +0/-0); NaN first,
// last, in the middle and repeated (the first NaN wins); rows of -inf only;
// a symbolic T; and enough rows to be shared between threads.
//
// The output is i32, compared exactly.
#include <cmath>
#include <limits>

#include "conformance.h"

namespace moert::conformance {
namespace {

constexpr DType kActivations[] = {DType::f32, DType::bf16, DType::f16};
const char* const kExact = "an index: exact";

// Rows of width n built from `row(r, i)`.
template <typename F>
Tensor rows(DType t, int64_t count, int64_t n, F row) {
  std::vector<double> v(static_cast<size_t>(count * n));
  for (int64_t r = 0; r < count; ++r)
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(r * n + i)] = row(r, i);
  return Tensor::from_doubles(t, {count, n}, v);
}

std::vector<Case> cases() {
  std::mt19937 rng(61);
  std::vector<Case> out;
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType t : kActivations) {
    const std::string d(dtype_name(t));
    for (int64_t n : {1, 15, 16, 17, 33, 1000})
      out.push_back(simple_case(d + "_width" + std::to_string(n), "argmax",
                                {random(t, {7, n}, rng)}, {}, 0.0, kExact));
    out.push_back(simple_case(d + "_rank1", "argmax", {random(t, {37}, rng)}, {}, 0.0, kExact));
    out.push_back(
        simple_case(d + "_rank3", "argmax", {random(t, {2, 3, 45}, rng)}, {}, 0.0, kExact));
    out.push_back(
        simple_case(d + "_vocab", "argmax", {random(t, {3, 151936}, rng)}, {}, 0.0, kExact));
    out.push_back(
        simple_case(d + "_many_rows", "argmax", {random(t, {700, 129}, rng)}, {}, 0.0, kExact));
    // Values from {-2, ..., 2}: the maximum is repeated in most rows.
    out.push_back(simple_case(d + "_ties", "argmax", {random_ints(t, {40, 37}, -2, 2, rng)}, {},
                              0.0, kExact));
    out.push_back(simple_case(d + "_ties_wide", "argmax", {random_ints(t, {5, 3001}, -3, 3, rng)},
                              {}, 0.0, kExact));
    // Special rows, one per pattern.
    std::uniform_int_distribution<int> coin(0, 1);
    out.push_back(
        simple_case(d + "_specials", "argmax",
                    {rows(t, 12, 37,
                          [&](int64_t r, int64_t i) -> double {
                            switch (r) {
                              case 0:
                                return i == 0 ? nan : static_cast<double>(i);  // NaN first
                              case 1:
                                return i == 36 ? nan : static_cast<double>(i);  // NaN last
                              case 2:
                                return i == 20 || i == 5 || i == 30 ? nan : 100.0;  // several NaNs
                              case 3:
                                return -inf;  // nothing above -inf
                              case 4:
                                return i == 9 || i == 21 ? inf : 1.0;  // tied +inf
                              case 5:
                                return i % 2 ? 0.0 : -0.0;  // +0 and -0 tie
                              case 6:
                                return i < 30 ? -inf : -1e4;  // the maximum late
                              case 7:
                                return i == 17 ? inf : (i == 33 ? nan : -1.0);  // NaN beats +inf
                              case 8:
                                return i == 3 ? -inf : -5.0;  // everything but one equal
                              case 9:
                                return coin(rng) ? 1.0 : -1.0;  // ties throughout
                              case 10:
                                return i == 16 || i == 32 ? 7.0 : 0.0;  // tie across vector lanes
                              default:
                                return i == 36 || i == 20 ? 7.0 : 0.0;  // tie between tail and body
                            }
                          })},
                    {}, 0.0, kExact));
  }
  // Symbolic T: one row per token.
  {
    Case c;
    c.name = "bf16_symbolic";
    c.op = "argmax";
    c.slots = {activation(DType::bf16, Shape{Dim::tokens(), Dim(512)})};
    for (int64_t tokens : {8, 1, 1}) {
      Step s;
      s.tokens = tokens;
      s.inputs = {random(DType::bf16, {tokens, 512}, rng)};
      c.steps.push_back(std::move(s));
    }
    c.tolerance = 0.0;
    c.why = kExact;
    out.push_back(std::move(c));
  }
  return out;
}

const CaseRegistration registration("argmax", cases);

}  // namespace
}  // namespace moert::conformance
