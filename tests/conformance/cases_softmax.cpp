// softmax: one row, odd widths, many rows, every activation dtype, and
// large-magnitude inputs (the row max must be subtracted first).
#include "conformance.h"

namespace moert::conformance {
namespace {

std::vector<Case> cases() {
  std::mt19937 rng(11);
  std::vector<Case> out;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    const std::string d(dtype_name(t));
    out.push_back(simple_case(d + "_one_row", "softmax", {random(t, {1, 7}, rng)}, {},
                              tolerance_for(t), why_for(t)));
    out.push_back(simple_case(d + "_odd", "softmax", {random(t, {3, 5, 131}, rng, 3.0)}, {},
                              tolerance_for(t), why_for(t)));
    out.push_back(simple_case(d + "_wide", "softmax", {random(t, {17, 4099}, rng)}, {},
                              tolerance_for(t), why_for(t)));
  }
  out.push_back(simple_case("f32_large_values", "softmax",
                            {random(DType::f32, {4, 64}, rng, 200.0)}, {},
                            tolerance_for(DType::f32), why_for(DType::f32)));
  return out;
}

const CaseRegistration registration("softmax", cases);

}  // namespace
}  // namespace moert::conformance
