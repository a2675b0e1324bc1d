// add, mul (with broadcasting), sigmoid, silu and swiglu: reference kernels
// against plain float64 code in the test, hand-computed cases, inference
// errors and symbolic shapes.
//
// Tolerances: each kernel computes in double and rounds once to the output
// dtype, so it differs from the test's float64 value by at most half an ulp of
// the output type: f32 2^-24 ≈ 6e-8 (checked at 1e-5), bf16 2^-9 ≈ 2e-3
// (checked at 1e-2), f16 2^-11 ≈ 5e-4 (checked at 2e-3).
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

const DType kActivations[] = {DType::f32, DType::bf16, DType::f16};

// ------------------------------------------------------------- add and mul

// a is [d0, d1, d2]; b has rank <= 3 and is indexed through its own dims,
// padded with 1 on the left, reading index 0 wherever b's dim is 1.
std::vector<double> binary_f64(const Tensor& a, const Tensor& b, bool multiply) {
  std::vector<int64_t> bs(3 - b.rank(), 1);
  for (int64_t d : b.shape()) bs.push_back(d);
  std::vector<double> av = a.to_doubles(), bv = b.to_doubles(), y;
  for (int64_t i = 0; i < a.dim(0); ++i)
    for (int64_t j = 0; j < a.dim(1); ++j)
      for (int64_t k = 0; k < a.dim(2); ++k) {
        const int64_t bi = bs[0] == 1 ? 0 : i, bj = bs[1] == 1 ? 0 : j, bk = bs[2] == 1 ? 0 : k;
        const double x = av[static_cast<size_t>((i * a.dim(1) + j) * a.dim(2) + k)];
        const double z = bv[static_cast<size_t>((bi * bs[1] + bj) * bs[2] + bk)];
        y.push_back(multiply ? x * z : x + z);
      }
  return y;
}

TEST(OpAddMul, BroadcastingMatchesFloat64) {
  std::mt19937 rng(30);
  const std::vector<std::vector<int64_t>> b_shapes = {{3, 4, 5}, {5}, {4, 1}, {1, 1, 5},
                                                      {3, 1, 5}, {1}, {}};
  for (DType t : kActivations)
    for (const auto& bs : b_shapes)
      for (bool multiply : {false, true}) {
        Tensor a = random_tensor(t, {3, 4, 5}, rng);
        Tensor b = random_tensor(t, bs, rng);
        Tensor y = run_op(multiply ? "mul" : "add", {a, b}).at(0);
        EXPECT_EQ(y.shape(), a.shape());
        EXPECT_EQ(y.dtype(), t);
        // a + b may cancel to a tiny result; its relative error is still one
        // rounding of the exact sum, which max_rel_error measures.
        EXPECT_LT(dtype_rel_error(t, y.to_doubles(), binary_f64(a, b, multiply)),
                  dtype_tolerance(t))
            << (multiply ? "mul " : "add ") << dtype_name(t) << " b " << moert::dims_str(bs);
      }
}

TEST(OpAddMul, HandComputed) {
  Tensor a = Tensor::from_doubles(DType::f32, {3}, {1, 2, 3});
  Tensor b = Tensor::from_doubles(DType::f32, {1}, {10});
  EXPECT_EQ(run_op("add", {a, b}).at(0).to_doubles(), (std::vector<double>{11, 12, 13}));
  Tensor m = Tensor::from_doubles(DType::f32, {2, 2}, {1, 2, 3, 4});
  Tensor col = Tensor::from_doubles(DType::f32, {2, 1}, {2, 3});
  EXPECT_EQ(run_op("mul", {m, col}).at(0).to_doubles(), (std::vector<double>{2, 4, 9, 12}));
  Tensor row = Tensor::from_doubles(DType::f32, {2}, {2, 3});
  EXPECT_EQ(run_op("mul", {m, row}).at(0).to_doubles(), (std::vector<double>{2, 6, 6, 12}));
}

TEST(OpAddMul, InferenceErrors) {
  const ValueInfo a{DType::f32, Shape{Dim(3), Dim(5)}};
  const ValueInfo b_bf16{DType::bf16, Shape{Dim(5)}};
  expect_error([&] { infer("add", {&a, &b_bf16}); }, {"'a'", "'b'", "f32", "bf16"});
  const ValueInfo b4{DType::f32, Shape{Dim(4)}};
  expect_error([&] { infer("mul", {&a, &b4}); }, {"'b'", "[4]", "[3, 5]"});
  const ValueInfo b3{DType::f32, Shape{Dim(3)}};
  expect_error([&] { infer("mul", {&a, &b3}); }, {"[3]", "broadcast"});
  const ValueInfo b_big{DType::f32, Shape{Dim(2), Dim(3), Dim(5)}};
  expect_error([&] { infer("add", {&a, &b_big}); }, {"[2, 3, 5]", "[3, 5]"});
  const ValueInfo ints{DType::i32, Shape{Dim(3), Dim(5)}};
  expect_error([&] { infer("add", {&ints, &ints}); }, {"'a'", "i32"});
  expect_error(
      [&] {
        infer("add", {&a, &a}, {{"axis", int64_t{1}}});
      },
      {"unknown attribute 'axis'", "takes none"});
  expect_error([&] { infer("add", {&a}); }, {"inputs"});
}

TEST(OpAddMul, SymbolicShapes) {
  const ValueInfo a{DType::bf16, Shape{Dim::tokens(), Dim(64)}};
  const ValueInfo w{DType::bf16, Shape{Dim(64)}};
  const ValueInfo per_token{DType::bf16, Shape{Dim::tokens(), Dim(1)}};
  EXPECT_EQ(infer("add", {&a, &w}).at(0), a);
  EXPECT_EQ(infer("mul", {&a, &per_token}).at(0), a);
  EXPECT_EQ(infer("mul", {&a, &a}).at(0), a);
  const ValueInfo other{DType::bf16, Shape{Dim::past_plus_tokens(), Dim(64)}};
  expect_error([&] { infer("add", {&a, &other}); }, {"[P+T, 64]", "[T, 64]"});
}

// ------------------------------------------------------- sigmoid and silu

TEST(OpSigmoidSilu, RandomMatchesFloat64) {
  std::mt19937 rng(31);
  for (DType t : kActivations)
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{3, 7}, std::vector<int64_t>{1, 1, 9}, std::vector<int64_t>{5}}) {
      Tensor x = random_tensor(t, shape, rng, 4.0);
      std::vector<double> sig, silu;
      for (double v : x.to_doubles()) {
        sig.push_back(1.0 / (1.0 + std::exp(-v)));
        silu.push_back(v / (1.0 + std::exp(-v)));
      }
      Tensor ys = run_op("sigmoid", {x}).at(0);
      Tensor yl = run_op("silu", {x}).at(0);
      EXPECT_EQ(ys.dtype(), t);
      EXPECT_EQ(yl.shape(), shape);
      EXPECT_LT(dtype_rel_error(t, ys.to_doubles(), sig), dtype_tolerance(t)) << dtype_name(t);
      EXPECT_LT(dtype_rel_error(t, yl.to_doubles(), silu), dtype_tolerance(t)) << dtype_name(t);
    }
}

TEST(OpSigmoidSilu, HandComputedAndExtremes) {
  Tensor x = Tensor::from_doubles(DType::f32, {5}, {0, 1, -1, 1000, -1000});
  // sigmoid(1) = 1 / (1 + e^-1) = 0.7310585786300049.
  std::vector<double> sig = run_op("sigmoid", {x}).at(0).to_doubles();
  EXPECT_LT(max_rel_error(sig, {0.5, 0.7310585786300049, 0.2689414213699951, 1.0, 0.0}), 1e-6);
  std::vector<double> silu = run_op("silu", {x}).at(0).to_doubles();
  EXPECT_LT(max_rel_error(silu, {0.0, 0.7310585786300049, -0.2689414213699951, 1000.0, 0.0}), 1e-6);
}

TEST(OpSigmoidSilu, InferenceErrors) {
  const ValueInfo ints{DType::i64, Shape{Dim(3)}};
  expect_error([&] { infer("silu", {&ints}); }, {"'x'", "i64"});
  const ValueInfo f8{DType::f8_e4m3, Shape{Dim(3)}};
  expect_error([&] { infer("sigmoid", {&f8}); }, {"'x'", "f8_e4m3"});
  const ValueInfo x{DType::f32, Shape{Dim::tokens(), Dim(8)}};
  EXPECT_EQ(infer("silu", {&x}).at(0), x);
  expect_error([&] { infer("silu", {&x, &x}); }, {"inputs"});
}

// ------------------------------------------------------------------ swiglu

double silu_f64(double v) { return v / (1.0 + std::exp(-v)); }

TEST(OpSwiglu, TwoInputsMatchFloat64) {
  std::mt19937 rng(32);
  for (DType t : kActivations) {
    Tensor gate = random_tensor(t, {2, 3, 11}, rng, 2.0);
    Tensor up = random_tensor(t, {2, 3, 11}, rng);
    std::vector<double> g = gate.to_doubles(), u = up.to_doubles(), want;
    for (size_t i = 0; i < g.size(); ++i) want.push_back(silu_f64(g[i]) * u[i]);
    Tensor y = run_op("swiglu", {gate, up}).at(0);
    EXPECT_EQ(y.shape(), gate.shape());
    EXPECT_EQ(y.dtype(), t);
    EXPECT_LT(dtype_rel_error(t, y.to_doubles(), want), dtype_tolerance(t)) << dtype_name(t);
  }
}

TEST(OpSwiglu, OneInputSplitsLastAxisInHalves) {
  std::mt19937 rng(33);
  for (DType t : kActivations)
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{2, 3, 10}, std::vector<int64_t>{1, 14}, std::vector<int64_t>{6}}) {
      Tensor x = random_tensor(t, shape, rng, 2.0);
      const size_t two_i = static_cast<size_t>(shape.back()), half = two_i / 2;
      std::vector<double> v = x.to_doubles(), want;
      for (size_t row = 0; row < v.size() / two_i; ++row)
        for (size_t i = 0; i < half; ++i)
          want.push_back(silu_f64(v[row * two_i + i]) * v[row * two_i + half + i]);
      Tensor y = run_op("swiglu", {x}).at(0);
      std::vector<int64_t> out_shape = shape;
      out_shape.back() /= 2;
      EXPECT_EQ(y.shape(), out_shape);
      EXPECT_LT(dtype_rel_error(t, y.to_doubles(), want), dtype_tolerance(t)) << dtype_name(t);
    }
}

TEST(OpSwiglu, HandComputed) {
  // silu(1) * 2 = 2 * 0.7310585786300049; silu(-1) * 4 = 4 * -0.2689414213699951.
  Tensor x = Tensor::from_doubles(DType::f32, {1, 4}, {1, -1, 2, 4});
  std::vector<double> y = run_op("swiglu", {x}).at(0).to_doubles();
  EXPECT_LT(max_rel_error(y, {1.4621171572600098, -1.0757656854799804}), 1e-6);
  Tensor gate = Tensor::from_doubles(DType::f32, {2}, {1, -1});
  Tensor up = Tensor::from_doubles(DType::f32, {2}, {2, 4});
  EXPECT_LT(max_rel_error(run_op("swiglu", {gate, up}).at(0).to_doubles(),
                          {1.4621171572600098, -1.0757656854799804}),
            1e-6);
}

TEST(OpSwiglu, InferenceErrorsAndSymbolicShapes) {
  const ValueInfo odd{DType::f32, Shape{Dim(2), Dim(7)}};
  expect_error([&] { infer("swiglu", {&odd}); }, {"'gate'", "even", "[2, 7]"});
  const ValueInfo sym_last{DType::f32, Shape{Dim(2), Dim::tokens()}};
  expect_error([&] { infer("swiglu", {&sym_last}); }, {"'gate'", "static", "[2, T]"});
  const ValueInfo gate{DType::f32, Shape{Dim::tokens(), Dim(8)}};
  const ValueInfo up_shape{DType::f32, Shape{Dim::tokens(), Dim(4)}};
  expect_error([&] { infer("swiglu", {&gate, &up_shape}); }, {"'up'", "[T, 4]", "[T, 8]"});
  const ValueInfo up_dtype{DType::bf16, Shape{Dim::tokens(), Dim(8)}};
  expect_error([&] { infer("swiglu", {&gate, &up_dtype}); }, {"'up'", "bf16", "f32"});
  EXPECT_EQ(infer("swiglu", {&gate}).at(0), (ValueInfo{DType::f32, Shape{Dim::tokens(), Dim(4)}}));
  EXPECT_EQ(infer("swiglu", {&gate, &gate}).at(0), gate);
}

}  // namespace
