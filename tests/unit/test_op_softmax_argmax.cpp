// softmax and argmax: reference kernels against plain float64 code in the
// test, hand-computed cases, inference errors and symbolic shapes.
//
// Tolerances (softmax): the kernel computes in double and rounds once to the
// output dtype, so it differs from the test's float64 value by at most half an
// ulp of the output type: f32 2^-24 ≈ 6e-8 (checked at 1e-5), bf16 2^-9 ≈ 2e-3
// (checked at 1e-2), f16 2^-11 ≈ 5e-4 (checked at 2e-3).  argmax is exact.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/op_registry.h"
#include "support/op_runner.h"

namespace {

using moert::Dim;
using moert::DType;
using moert::Shape;
using moert::Tensor;
using moert::ValueInfo;
using moert::testing::dtype_rel_error;
using moert::testing::dtype_tolerance;
using moert::testing::expect_error;
using moert::testing::infer;
using moert::testing::max_rel_error;
using moert::testing::random_tensor;
using moert::testing::run_op;

// ----------------------------------------------------------------- softmax

// exp(x_i) / sum_j exp(x_j) per row, directly: the test inputs are small
// enough (|x| < ~40) for exp not to overflow in double.
std::vector<double> softmax_f64(const Tensor& x) {
  const size_t n = static_cast<size_t>(x.dim(-1));
  std::vector<double> v = x.to_doubles(), y;
  for (size_t row = 0; row < v.size() / n; ++row) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += std::exp(v[row * n + i]);
    for (size_t i = 0; i < n; ++i) y.push_back(std::exp(v[row * n + i]) / sum);
  }
  return y;
}

TEST(OpSoftmax, RandomMatchesFloat64) {
  std::mt19937 rng(40);
  struct Case {
    DType t;
    std::vector<int64_t> shape;
  };
  for (const Case& c : {Case{DType::f32, {2, 3, 17}}, Case{DType::bf16, {1, 9}},
                        Case{DType::f16, {4, 33}}, Case{DType::f32, {5}}}) {
    Tensor x = random_tensor(c.t, c.shape, rng, 5.0);
    Tensor y = run_op("softmax", {x}).at(0);
    EXPECT_EQ(y.shape(), c.shape);
    EXPECT_EQ(y.dtype(), c.t);
    EXPECT_LT(dtype_rel_error(c.t, y.to_doubles(), softmax_f64(x)), dtype_tolerance(c.t))
        << dtype_name(c.t);
  }
}

TEST(OpSoftmax, HandComputedAndStable) {
  // exp(log k) = k: softmax([0, log 2, log 3]) = [1, 2, 3] / 6.
  Tensor x = Tensor::from_doubles(DType::f32, {3}, {0, std::log(2.0), std::log(3.0)});
  EXPECT_LT(max_rel_error(run_op("softmax", {x}).at(0).to_doubles(), {1 / 6.0, 2 / 6.0, 3 / 6.0}),
            1e-6);
  // Without subtracting the row max, exp(1000) overflows to inf and gives NaN.
  Tensor big = Tensor::from_doubles(DType::f32, {2, 2}, {1000, 1000, -1000, 0});
  EXPECT_EQ(run_op("softmax", {big}).at(0).to_doubles(), (std::vector<double>{0.5, 0.5, 0, 1}));
  Tensor one = Tensor::from_doubles(DType::bf16, {3, 1}, {-7, 0, 42});
  EXPECT_EQ(run_op("softmax", {one}).at(0).to_doubles(), (std::vector<double>{1, 1, 1}));
}

TEST(OpSoftmax, InferenceErrorsAndSymbolicShapes) {
  const ValueInfo ints{DType::i32, Shape{Dim(4)}};
  expect_error([&] { infer("softmax", {&ints}); }, {"'x'", "i32"});
  const ValueInfo scalar{DType::f32, Shape{}};
  expect_error([&] { infer("softmax", {&scalar}); }, {"'x'", "rank"});
  const ValueInfo x{DType::f32, Shape{Dim(4)}};
  expect_error(
      [&] {
        infer("softmax", {&x}, {{"axis", int64_t{0}}});
      },
      {"unknown attribute 'axis'"});
  const ValueInfo scores{DType::f32, Shape{Dim(8), Dim::tokens(), Dim::past_plus_tokens()}};
  EXPECT_EQ(infer("softmax", {&scores}).at(0), scores);
}

// ------------------------------------------------------------------ argmax

TEST(OpArgmax, RandomMatchesPlainLoop) {
  std::mt19937 rng(41);
  struct Case {
    DType t;
    std::vector<int64_t> shape;
  };
  for (const Case& c : {Case{DType::f32, {3, 5, 11}}, Case{DType::bf16, {1, 6}},
                        Case{DType::f16, {7, 3}}, Case{DType::f32, {1, 1}}}) {
    Tensor x = random_tensor(c.t, c.shape, rng);
    Tensor y = run_op("argmax", {x}).at(0);
    std::vector<int64_t> out_shape(c.shape.begin(), c.shape.end() - 1);
    EXPECT_EQ(y.shape(), out_shape);
    EXPECT_EQ(y.dtype(), DType::i32);
    const size_t n = static_cast<size_t>(c.shape.back());
    std::vector<double> v = x.to_doubles(), want;
    for (size_t row = 0; row < v.size() / n; ++row) {
      size_t best = 0;
      for (size_t i = 1; i < n; ++i)
        if (v[row * n + i] > v[row * n + best]) best = i;
      want.push_back(static_cast<double>(best));
    }
    EXPECT_EQ(y.to_doubles(), want) << dtype_name(c.t);
  }
}

TEST(OpArgmax, TiesTakeTheLowestIndexAndNanWins) {
  Tensor x = Tensor::from_doubles(DType::f32, {4, 4},
                                  {1, 3, 3, 2,        // tie between 1 and 2
                                   5, 5, 5, 5,        // all equal
                                   -4, -3, -3.5, -9,  // negatives
                                   1, NAN, 5, NAN});  // first NaN
  Tensor y = run_op("argmax", {x}).at(0);
  EXPECT_EQ(y.to_doubles(), (std::vector<double>{1, 0, 1, 1}));
}

TEST(OpArgmax, RankOneGivesScalar) {
  Tensor x = Tensor::from_doubles(DType::bf16, {5}, {0.5, -1, 7, 2, 7});
  Tensor y = run_op("argmax", {x}).at(0);
  EXPECT_EQ(y.dtype(), DType::i32);
  EXPECT_EQ(y.rank(), 0u);
  EXPECT_EQ(y.to_doubles(), (std::vector<double>{2}));
}

TEST(OpArgmax, InferenceErrorsAndSymbolicShapes) {
  const ValueInfo ints{DType::i64, Shape{Dim(4)}};
  expect_error([&] { infer("argmax", {&ints}); }, {"'x'", "i64"});
  const ValueInfo empty{DType::f32, Shape{Dim(3), Dim(0)}};
  expect_error([&] { infer("argmax", {&empty}); }, {"'x'", "[3, 0]"});
  const ValueInfo scalar{DType::f32, Shape{}};
  expect_error([&] { infer("argmax", {&scalar}); }, {"'x'", "rank"});
  const ValueInfo x{DType::f32, Shape{Dim(4)}};
  expect_error(
      [&] {
        infer("argmax", {&x}, {{"axis", int64_t{0}}});
      },
      {"unknown attribute 'axis'"});
  const ValueInfo logits{DType::bf16, Shape{Dim::tokens(), Dim(50)}};
  EXPECT_EQ(infer("argmax", {&logits}).at(0), (ValueInfo{DType::i32, Shape{Dim::tokens()}}));
}

}  // namespace
