// matmul: both transpose_b settings, every pairing of activation dtypes,
// rank 2 to 4, one query row (decode) to many, odd sizes, and symbolic dims
// as the attention decomposition uses them (a [H, T, d] against keys
// [H, P+T, d] and values [H, P+T, d]).
//
// Tolerance: tolerance_for(a's dtype).  A backend computes the products of
// the exact operands in f32: f16 and bf16 values are exact in f32, and a
// product of two bf16 values is exact in f32 too, so a bf16 matrix unit
// given two bf16 operands loses nothing beyond f32 accumulation.  The floor
// is 0.05 of the outputs' RMS: an f32 sum of K terms errs by ~sqrt(K) 2^-24
// RMS (2e-6 RMS at K = 1000), more than the default floor allows near zero.
#include <cmath>

#include "conformance.h"

namespace moert::conformance {
namespace {

// Sum of squares of the exact a . b (or a . b^T) over all batches.
double sum_squares(const Tensor& a, const Tensor& b, bool transpose_b) {
  const int64_t m = a.dim(-2), k = a.dim(-1), n = transpose_b ? b.dim(-2) : b.dim(-1);
  const int64_t batches = m * k > 0 ? a.numel() / (m * k) : 0;
  const std::vector<double> ad = a.to_doubles(), bd = b.to_doubles();
  double sum = 0;
  for (int64_t bi = 0; bi < batches; ++bi)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p)
          acc += ad[static_cast<size_t>((bi * m + i) * k + p)] *
                 bd[static_cast<size_t>(transpose_b ? (bi * n + j) * k + p : (bi * k + p) * n + j)];
        sum += acc * acc;
      }
  return sum;
}

const char* const kFloorWhy =
    "; floor 0.05 RMS(y): f32 sums of K terms err by ~sqrt(K) 2^-24 RMS(y)";

Case make(const std::string& name, DType ta, DType tb, std::vector<int64_t> a_shape,
          std::vector<int64_t> b_shape, bool transpose_b, std::mt19937& rng) {
  Tensor a = random(ta, a_shape, rng), b = random(tb, b_shape, rng);
  const int64_t outputs = a.numel() / a.dim(-1) * (transpose_b ? b.dim(-2) : b.dim(-1));
  const double rms = std::sqrt(sum_squares(a, b, transpose_b) / static_cast<double>(outputs));
  Case c = simple_case(name, "matmul", {a, b}, {{"transpose_b", int64_t{transpose_b ? 1 : 0}}},
                       tolerance_for(ta), why_for(ta) + kFloorWhy);
  c.floor = 0.05 * rms;
  return c;
}

std::vector<Case> cases() {
  std::mt19937 rng(5);
  std::vector<Case> out;
  const std::pair<DType, DType> pairs[] = {{DType::f32, DType::f32},  {DType::bf16, DType::bf16},
                                           {DType::f16, DType::f16},  {DType::f32, DType::bf16},
                                           {DType::bf16, DType::f32}, {DType::f16, DType::bf16}};
  for (auto [ta, tb] : pairs) {
    const std::string d = std::string(dtype_name(ta)) + "_" + std::string(dtype_name(tb));
    for (bool t : {false, true}) {
      const std::string tn = t ? "_bt" : "";
      for (int64_t m : {1, 3, 33}) {
        const int64_t k = 67, n = 131;
        out.push_back(make(d + tn + "_m" + std::to_string(m), ta, tb, {m, k},
                           t ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, t, rng));
      }
      out.push_back(make(d + tn + "_batched", ta, tb, {5, 7, 40},
                         t ? std::vector<int64_t>{5, 9, 40} : std::vector<int64_t>{5, 40, 9}, t,
                         rng));
    }
  }
  // Attention-like rank 4: one query row per head, then many.
  for (bool t : {false, true})
    for (int64_t m : {1, 24}) {
      const std::string name =
          std::string("attention_like") + (t ? "_bt" : "") + "_m" + std::to_string(m);
      out.push_back(make(
          name, DType::f32, DType::f32, {2, 3, m, 64},
          t ? std::vector<int64_t>{2, 3, 50, 64} : std::vector<int64_t>{2, 3, 64, 50}, t, rng));
    }
  // Larger: several threads' shares of the one-row products.
  out.push_back(
      make("bf16_bt_wide_m1", DType::bf16, DType::bf16, {4, 1, 128}, {4, 1000, 128}, true, rng));
  out.push_back(
      make("f32_wide_m2", DType::f32, DType::f32, {4, 2, 1000}, {4, 1000, 128}, false, rng));

  // Symbolic: scores q [H, T, d] . k [H, P+T, d]^T and output p [H, T, P+T]
  // . v [H, P+T, d], stepping T = 1, 4, 20 (P = 0, 1, 5).
  for (DType t : {DType::f32, DType::bf16}) {
    const std::string d(dtype_name(t));
    for (int which = 0; which < 2; ++which) {
      Case c;
      c.name = d + (which == 0 ? "_symbolic_scores" : "_symbolic_values");
      c.op = "matmul";
      c.attrs.set("transpose_b", int64_t{which == 0 ? 1 : 0});
      const int64_t heads = 3, dim = 24;
      if (which == 0) {
        c.slots.push_back(activation(t, Shape{Dim(heads), Dim::tokens(), Dim(dim)}));
        c.slots.push_back(activation(t, Shape{Dim(heads), Dim::past_plus_tokens(), Dim(dim)}));
      } else {
        c.slots.push_back(activation(t, Shape{Dim(heads), Dim::tokens(), Dim::past_plus_tokens()}));
        c.slots.push_back(activation(t, Shape{Dim(heads), Dim::past_plus_tokens(), Dim(dim)}));
      }
      int64_t past = 0, outputs = 0;
      double sum = 0;
      for (int64_t tokens : {1, 4, 20}) {
        Step s;
        s.tokens = tokens;
        const int64_t total = past + tokens;
        if (which == 0) {
          s.inputs.push_back(random(t, {heads, tokens, dim}, rng));
          s.inputs.push_back(random(t, {heads, total, dim}, rng));
        } else {
          s.inputs.push_back(random(t, {heads, tokens, total}, rng));
          s.inputs.push_back(random(t, {heads, total, dim}, rng));
        }
        sum += sum_squares(s.inputs[0], s.inputs[1], which == 0);
        outputs += heads * tokens * (which == 0 ? total : dim);
        c.steps.push_back(std::move(s));
        past = total;
      }
      c.tolerance = tolerance_for(t);
      c.floor = 0.05 * std::sqrt(sum / static_cast<double>(outputs));
      c.why = why_for(t) + kFloorWhy;
      out.push_back(std::move(c));
    }
  }
  return out;
}

const CaseRegistration registration("matmul", cases);

}  // namespace
}  // namespace moert::conformance
