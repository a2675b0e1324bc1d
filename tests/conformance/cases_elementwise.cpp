// add, mul, sigmoid, silu, swiglu: every activation dtype; scalars (rank 0),
// odd sizes, every broadcast pattern of b (scalar, row, column, middle axes,
// alternating, size-1 axes of a, zero-sized a), tensors large enough to be
// split between threads mid-row, and inf/NaN/large inputs.
//
// Tolerances.  f32 add and mul are single IEEE operations, correctly rounded
// like the reference's double result rounded to f32; the two differ only by
// a double rounding of a sum of very different magnitudes, at most one f32
// ulp: 1e-6.  The exp-based ops, and every bf16/f16 output (an f32 result
// rounded once more to the narrow type), take tolerance_for(dtype).
#include <cmath>
#include <limits>

#include "conformance.h"

namespace moert::conformance {
namespace {

constexpr DType kActivations[] = {DType::f32, DType::bf16, DType::f16};

double binary_tolerance(DType t) { return t == DType::f32 ? 1e-6 : tolerance_for(t); }
std::string binary_why(DType t) {
  return t == DType::f32 ? "f32 add/mul is correctly rounded, as is the f64 result rounded to "
                           "f32; a double rounding differs by at most one ulp (1.2e-7)"
                         : why_for(t);
}

// Values spanning the awkward cases: infinities, NaN, signed zeros, large
// magnitudes where exp overflows or underflows, and ordinary numbers.
Tensor specials(DType t, int64_t n) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double big = t == DType::f16 ? 60000.0 : 1e30;
  const std::vector<double> pool = {inf,    -inf, nan,   0.0,  -0.0,  1.0,  -1.0,  100.0,
                                    -100.0, 88.8, -88.8, 87.0, -87.0, 20.0, -20.0, 1e-3,
                                    -1e-3,  big,  -big,  0.5,  -0.5,  3.0,  -7.25, 15.0};
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = pool[static_cast<size_t>(i) % pool.size()];
  return Tensor::from_doubles(t, {n}, v);
}

std::vector<Case> cases() {
  std::mt19937 rng(23);
  std::vector<Case> out;
  for (DType t : kActivations) {
    const std::string d(dtype_name(t));
    const double bt = binary_tolerance(t);
    const std::string bw = binary_why(t);
    // (name, shape of a, shape of b)
    const std::vector<std::tuple<std::string, std::vector<int64_t>, std::vector<int64_t>>> shapes =
        {
            {"same_odd", {3, 5, 131}, {3, 5, 131}},
            {"scalars", {}, {}},
            {"scalar_b", {7, 33}, {}},
            {"one_b", {9}, {1}},
            {"row_b", {7, 33}, {33}},
            {"row_b_rank3", {2, 7, 33}, {7, 33}},
            {"column_b", {7, 33}, {7, 1}},
            {"middle_b", {4, 5, 6}, {1, 5, 1}},
            {"alternating_b", {4, 5, 6, 3}, {4, 1, 6, 1}},
            {"outer_b", {4, 5, 6}, {4, 1, 1}},
            {"size1_axes_of_a", {1, 7, 1, 9}, {7, 1, 1}},
            {"size1_both", {3, 1, 5}, {1, 1, 5}},
            {"empty_a", {0, 5}, {5}},
            {"large_same", {37, 4099}, {37, 4099}},
            {"large_row_b", {64, 4097}, {4097}},
            {"large_column_b", {300, 1001}, {300, 1}},
            {"large_middle_b", {3, 200, 513}, {3, 1, 513}},
        };
    for (const auto& [name, sa, sb] : shapes)
      for (const char* op : {"add", "mul"})
        out.push_back(simple_case(d + "_" + name, op,
                                  {random(t, sa, rng, 2.0), random(t, sb, rng, 2.0)}, {}, bt, bw));
    for (const char* op : {"add", "mul"}) {
      out.push_back(
          simple_case(d + "_specials", op, {specials(t, 48), random(t, {1}, rng)}, {}, bt, bw));
      out.push_back(
          simple_case(d + "_specials_both", op, {specials(t, 48), specials(t, 48)}, {}, bt, bw));
    }

    for (const char* op : {"sigmoid", "silu"}) {
      const double tol = tolerance_for(t);
      const std::string why = why_for(t);
      out.push_back(simple_case(d + "_scalar", op, {random(t, {}, rng)}, {}, tol, why));
      out.push_back(simple_case(d + "_odd", op, {random(t, {3, 257}, rng, 4.0)}, {}, tol, why));
      out.push_back(simple_case(d + "_large", op, {random(t, {33, 4099}, rng, 4.0)}, {}, tol, why));
      out.push_back(
          simple_case(d + "_wide_range", op, {random(t, {5, 101}, rng, 40.0)}, {}, tol, why));
      out.push_back(simple_case(d + "_specials", op, {specials(t, 72)}, {}, tol, why));
    }

    const double tol = tolerance_for(t);
    const std::string why = why_for(t);
    out.push_back(simple_case(d + "_two_inputs", "swiglu",
                              {random(t, {5, 77}, rng, 3.0), random(t, {5, 77}, rng)}, {}, tol,
                              why));
    out.push_back(simple_case(d + "_two_scalars", "swiglu",
                              {random(t, {}, rng, 3.0), random(t, {}, rng)}, {}, tol, why));
    out.push_back(simple_case(d + "_two_inputs_large", "swiglu",
                              {random(t, {19, 4103}, rng, 3.0), random(t, {19, 4103}, rng)}, {},
                              tol, why));
    out.push_back(
        simple_case(d + "_halves", "swiglu", {random(t, {3, 4, 66}, rng, 3.0)}, {}, tol, why));
    out.push_back(
        simple_case(d + "_halves_rank1", "swiglu", {random(t, {2}, rng, 3.0)}, {}, tol, why));
    out.push_back(simple_case(d + "_halves_large", "swiglu", {random(t, {17, 2 * 2053}, rng, 3.0)},
                              {}, tol, why));
    out.push_back(
        simple_case(d + "_specials", "swiglu", {specials(t, 48), specials(t, 48)}, {}, tol, why));
    // Version 2: the clamped form (GPT-OSS's parameters, and a limit of 1.5
    // that clamps a good share of inputs of scale 3, both signs of up).
    for (double limit : {7.0, 1.5}) {
      const Attributes clamped{{"alpha", 1.702}, {"limit", limit}, {"up_offset", 1.0}};
      const std::string l = limit == 7.0 ? "_limit7" : "_limit1_5";
      out.push_back(simple_case(d + "_clamped_two_inputs" + l, "swiglu",
                                {random(t, {5, 77}, rng, 3.0), random(t, {5, 77}, rng, 3.0)},
                                clamped, tol, why));
      out.push_back(simple_case(d + "_clamped_halves_large" + l, "swiglu",
                                {random(t, {17, 2 * 2053}, rng, 3.0)}, clamped, tol, why));
    }
    out.push_back(simple_case(d + "_clamped_specials", "swiglu", {specials(t, 48), specials(t, 48)},
                              {{"alpha", 1.702}, {"limit", 7.0}, {"up_offset", 1.0}}, tol, why));
    out.push_back(simple_case(d + "_alpha_only", "swiglu",
                              {random(t, {3, 65}, rng, 3.0), random(t, {3, 65}, rng)},
                              {{"alpha", 0.5}}, tol, why));
  }

  // Symbolic T: the broadcast is resolved per step (one token, then many).
  for (const char* op : {"add", "mul"}) {
    Case c;
    c.name = "f32_symbolic_tokens_row_b";
    c.op = op;
    c.slots = {activation(DType::f32, Shape{Dim::tokens(), Dim(96)}),
               activation(DType::f32, Shape{Dim(96)})};
    for (int64_t tokens : {1, 7, 300}) {
      Step s;
      s.tokens = tokens;
      s.inputs = {random(DType::f32, {tokens, 96}, rng), random(DType::f32, {96}, rng)};
      c.steps.push_back(std::move(s));
    }
    c.tolerance = binary_tolerance(DType::f32);
    c.why = binary_why(DType::f32);
    out.push_back(std::move(c));
  }
  {
    Case c;
    c.name = "bf16_symbolic_tokens_halves";
    c.op = "swiglu";
    c.slots = {activation(DType::bf16, Shape{Dim::tokens(), Dim(2 * 1408)})};
    for (int64_t tokens : {1, 5, 40}) {
      Step s;
      s.tokens = tokens;
      s.inputs = {random(DType::bf16, {tokens, 2 * 1408}, rng, 3.0)};
      c.steps.push_back(std::move(s));
    }
    c.tolerance = tolerance_for(DType::bf16);
    c.why = why_for(DType::bf16);
    out.push_back(std::move(c));
  }
  return out;
}

const CaseRegistration registration("elementwise", cases);

}  // namespace
}  // namespace moert::conformance
