// rms_norm: every activation dtype with weights of every float dtype
// (f8_e4m3 included), odd and wide rows (D = 37, 4099), D = 1, rank 3,
// eps 0 and large, large-magnitude inputs, weights given per step, and a
// symbolic row count over steps.
//
// Tolerance: each output is a product x * inv_rms * w with no cancellation,
// so its error is relative: the f32 sum of squares (32 lanes) and one
// rounding of the output; tolerance_for the output dtype, default floor.
#include <string>
#include <vector>

#include "conformance.h"

namespace moert::conformance {
namespace {

Attributes eps_attr(double eps) {
  Attributes a;
  a.set("eps", eps);
  return a;
}

Case norm_case(const std::string& name, DType t, std::vector<int64_t> shape, DType wt,
               bool weight_constant, Attributes attrs, std::mt19937& rng, double stddev = 1.0) {
  const int64_t dim = shape.back();
  Case c;
  c.name = name;
  c.op = "rms_norm";
  c.attrs = std::move(attrs);
  Tensor w = random(wt, {dim}, rng, 1.5);
  Step s;
  s.tokens = shape[0];
  c.slots.push_back(activation(t, Shape::of(shape)));
  s.inputs.push_back(random(t, shape, rng, stddev));
  if (weight_constant) {
    c.slots.push_back(constant(std::move(w)));
  } else {
    c.slots.push_back(activation(wt, Shape{Dim(dim)}));
    s.inputs.push_back(std::move(w));
  }
  c.steps.push_back(std::move(s));
  c.tolerance = tolerance_for(t);
  c.why = why_for(t);
  return c;
}

std::vector<Case> cases() {
  std::mt19937 rng(41);
  std::vector<Case> out;
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    for (DType wt : {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3}) {
      const std::string name =
          std::string(dtype_name(t)) + "_weight_" + std::string(dtype_name(wt)) + "_d37";
      out.push_back(norm_case(name, t, {5, 37}, wt, true, {}, rng));
    }
  out.push_back(
      norm_case("f32_wide_4099", DType::f32, {3, 4099}, DType::f32, true, eps_attr(1e-5), rng));
  out.push_back(norm_case("bf16_wide_rows_1024", DType::bf16, {64, 1024}, DType::bf16, true,
                          eps_attr(1e-5), rng));
  out.push_back(norm_case("f32_d1", DType::f32, {4, 1}, DType::f32, true, {}, rng));
  out.push_back(norm_case("f16_rank3", DType::f16, {2, 3, 64}, DType::f32, true, {}, rng));
  out.push_back(norm_case("f32_eps0", DType::f32, {3, 48}, DType::f32, true, eps_attr(0.0), rng));
  out.push_back(
      norm_case("f32_eps_large", DType::f32, {3, 48}, DType::bf16, true, eps_attr(0.5), rng, 0.3));
  out.push_back(
      norm_case("f32_large_values", DType::f32, {3, 300}, DType::f32, true, {}, rng, 1000.0));
  out.push_back(
      norm_case("bf16_weight_per_step", DType::bf16, {6, 80}, DType::f32, false, {}, rng));
  {  // Symbolic T rows over steps 1, 17, 2.
    Case c;
    c.name = "symbolic_rows";
    c.op = "rms_norm";
    c.attrs = eps_attr(1e-5);
    c.slots = {activation(DType::bf16, Shape{Dim::tokens(), Dim(96)}),
               constant(random(DType::bf16, {96}, rng, 1.5))};
    for (int64_t tokens : {1, 17, 2}) {
      Step s;
      s.tokens = tokens;
      s.inputs.push_back(random(DType::bf16, {tokens, 96}, rng));
      c.steps.push_back(std::move(s));
    }
    c.tolerance = tolerance_for(DType::bf16);
    c.why = why_for(DType::bf16);
    out.push_back(std::move(c));
  }
  return out;
}

const CaseRegistration registration("rms_norm", cases);

}  // namespace
}  // namespace moert::conformance
