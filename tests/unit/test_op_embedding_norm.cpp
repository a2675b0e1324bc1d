// embedding and rms_norm: reference kernels against plain float64 code in the
// test, hand-computed cases, inference errors and symbolic shapes.
//
// Tolerances: each kernel computes in double and rounds once to the output
// dtype, so its result differs from the test's float64 value by at most half
// an ulp of the output type: f32 2^-24 ≈ 6e-8 (checked at 1e-5), bf16 2^-9 ≈
// 2e-3 (checked at 1e-2), f16 2^-11 ≈ 5e-4 (checked at 2e-3).
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
using moert::testing::expect_error;
using moert::testing::infer;
using moert::testing::max_rel_error;
using moert::testing::random_ints;
using moert::testing::random_tensor;
using moert::testing::run_op;

// ---------------------------------------------------------------- embedding

// Plain gather: out[p, h] = table[ids[p], h].
std::vector<double> embedding_f64(const Tensor& table, const Tensor& ids) {
  const int64_t hidden = table.dim(1);
  std::vector<double> t = table.to_doubles();
  std::vector<double> out;
  for (double id : ids.to_doubles())
    for (int64_t h = 0; h < hidden; ++h) out.push_back(t[static_cast<size_t>(id) * hidden + h]);
  return out;
}

TEST(OpEmbedding, RandomTablesAndIdsMatchGather) {
  std::mt19937 rng(1);
  struct Case {
    DType table, ids;
    std::vector<int64_t> id_shape;
  };
  for (const Case& c :
       {Case{DType::f32, DType::i32, {3, 5}}, Case{DType::bf16, DType::i64, {7}},
        Case{DType::f16, DType::i32, {2, 1, 3}}, Case{DType::f32, DType::i64, {1}}}) {
    Tensor table = random_tensor(c.table, {37, 13}, rng);
    Tensor ids = random_ints(c.ids, c.id_shape, 0, 36, rng);
    Tensor y = run_op("embedding", {table, ids}).at(0);
    std::vector<int64_t> want_shape = c.id_shape;
    want_shape.push_back(13);
    EXPECT_EQ(y.shape(), want_shape);
    EXPECT_EQ(y.dtype(), c.table);
    // Same dtype in and out: a gather copies exactly.
    EXPECT_EQ(y.to_doubles(), embedding_f64(table, ids));
  }
}

TEST(OpEmbedding, OutputDtypeAttributeConverts) {
  std::mt19937 rng(2);
  Tensor table = random_tensor(DType::f32, {11, 9}, rng);
  Tensor ids = random_ints(DType::i32, {4}, 0, 10, rng);
  Tensor y = run_op("embedding", {table, ids}, {{"dtype", std::string("bf16")}}).at(0);
  EXPECT_EQ(y.dtype(), DType::bf16);
  // f32 rows rounded to bf16: within half a bf16 ulp (2^-9).
  EXPECT_LT(max_rel_error(y.to_doubles(), embedding_f64(table, ids)), 1e-2);
  EXPECT_GT(max_rel_error(y.to_doubles(), embedding_f64(table, ids)), 0.0);
}

TEST(OpEmbedding, ScalarIdGivesOneRow) {
  Tensor table = Tensor::from_doubles(DType::f32, {3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor id = Tensor::from_doubles(DType::i64, {}, {1});
  Tensor y = run_op("embedding", {table, id}).at(0);
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{2}));
  EXPECT_EQ(y.to_doubles(), (std::vector<double>{3, 4}));
}

TEST(OpEmbedding, HandComputed) {
  Tensor table = Tensor::from_doubles(DType::f32, {3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor ids = Tensor::from_doubles(DType::i32, {3}, {2, 0, 2});
  Tensor y = run_op("embedding", {table, ids}).at(0);
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(y.to_doubles(), (std::vector<double>{5, 6, 1, 2, 5, 6}));
}

TEST(OpEmbedding, IdOutOfRangeFailsNamingIdPositionAndVocab) {
  Tensor table = Tensor::from_doubles(DType::f32, {5, 2}, std::vector<double>(10, 1.0));
  Tensor ids = Tensor::from_doubles(DType::i32, {2, 2}, {0, 4, 5, 1});
  expect_error(
      [&] {
        run_op("embedding", {table, ids});
      },
      {"test_node", "id 5", "position [1, 0]", "V = 5"});
  Tensor negative = Tensor::from_doubles(DType::i64, {3}, {0, -1, 2});
  expect_error([&] { run_op("embedding", {table, negative}); }, {"id -1", "position [1]", "V = 5"});
  // 2^53 + 1 is not a double; the message must show it exactly.
  Tensor huge = Tensor::empty(DType::i64, {1});
  huge.data_as<int64_t>()[0] = (int64_t{1} << 53) + 1;
  expect_error([&] { run_op("embedding", {table, huge}); }, {"id 9007199254740993"});
}

TEST(OpEmbedding, InferenceErrors) {
  const ValueInfo table{DType::f32, Shape{Dim(100), Dim(8)}};
  const ValueInfo ids{DType::i32, Shape{Dim(4)}};
  expect_error(
      [&] {
        infer("embedding", {table, {DType::f32, Shape{Dim(4)}}});
      },
      {"'ids'", "i32 or i64", "f32"});
  expect_error(
      [&] {
        infer("embedding", {{DType::f32, Shape{Dim(100)}}, ids});
      },
      {"'table'", "[100]"});
  expect_error(
      [&] {
        infer("embedding", {{DType::i32, Shape{Dim(100), Dim(8)}}, ids});
      },
      {"'table'", "i32"});
  expect_error(
      [&] {
        infer("embedding", {table, ids}, {{"dtype", std::string("i32")}});
      },
      {"'dtype'", "i32"});
  expect_error(
      [&] {
        infer("embedding", {table, ids}, {{"dtype", std::string("nope")}});
      },
      {"'dtype'", "nope"});
  expect_error(
      [&] {
        infer("embedding", {table, ids}, {{"axis", int64_t{0}}});
      },
      {"unknown attribute 'axis'"});
}

TEST(OpEmbedding, SymbolicIds) {
  auto out = infer("embedding",
                   {{DType::bf16, Shape{Dim(1000), Dim(64)}}, {DType::i32, Shape{Dim::tokens()}}},
                   {{"dtype", std::string("f32")}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], (ValueInfo{DType::f32, Shape{Dim::tokens(), Dim(64)}}));
}

// ---------------------------------------------------------------- rms_norm

std::vector<double> rms_norm_f64(const Tensor& x, const Tensor& w, double eps) {
  std::vector<double> xs = x.to_doubles(), ws = w.to_doubles(), out(xs.size());
  const size_t d = ws.size();
  for (size_t row = 0; row < xs.size() / d; ++row) {
    double ms = 0;
    for (size_t i = 0; i < d; ++i) ms += xs[row * d + i] * xs[row * d + i] / static_cast<double>(d);
    for (size_t i = 0; i < d; ++i) out[row * d + i] = xs[row * d + i] / std::sqrt(ms + eps) * ws[i];
  }
  return out;
}

TEST(OpRmsNorm, RandomMatchesFloat64) {
  std::mt19937 rng(3);
  struct Case {
    DType x, w;
    std::vector<int64_t> shape;
    double tol;
  };
  for (const Case& c :
       {Case{DType::f32, DType::f32, {3, 4, 37}, 1e-5},
        Case{DType::f32, DType::bf16, {1, 37}, 1e-5}, Case{DType::bf16, DType::bf16, {5, 37}, 1e-2},
        Case{DType::f16, DType::f32, {2, 1, 37}, 2e-3},
        Case{DType::f32, DType::f8_e4m3, {37}, 1e-5}}) {
    Tensor x = random_tensor(c.x, c.shape, rng, 3.0);
    Tensor w = random_tensor(c.w, {37}, rng);
    Tensor y = run_op("rms_norm", {x, w}, {{"eps", 1e-5}}).at(0);
    EXPECT_EQ(y.dtype(), c.x);
    EXPECT_EQ(y.shape(), c.shape);
    EXPECT_LT(dtype_rel_error(c.x, y.to_doubles(), rms_norm_f64(x, w, 1e-5)), c.tol)
        << dtype_name(c.x) << " x, " << dtype_name(c.w) << " weight";
  }
}

TEST(OpRmsNorm, HandComputed) {
  // x = [3, 4]: mean(x^2) = 12.5; with eps = 0, y = x / sqrt(12.5) * [1, 2].
  Tensor x = Tensor::from_doubles(DType::f32, {1, 2}, {3, 4});
  Tensor w = Tensor::from_doubles(DType::f32, {2}, {1, 2});
  Tensor y = run_op("rms_norm", {x, w}, {{"eps", 0.0}}).at(0);
  EXPECT_LT(max_rel_error(y.to_doubles(), {0.84852813742385702, 2.2627416997969521}), 1e-6);
}

TEST(OpRmsNorm, DefaultEpsIsOneMillionth) {
  // x = 0.001: mean(x^2) = 1e-6, so the default eps doubles the denominator's
  // square: y = 0.001 / sqrt(2e-6) = 1/sqrt(2) (it would be 1 without eps).
  Tensor x = Tensor::from_doubles(DType::f32, {1}, {0.001});
  Tensor w = Tensor::from_doubles(DType::f32, {1}, {1});
  Tensor y = run_op("rms_norm", {x, w}).at(0);
  EXPECT_NEAR(y.at(0), 0.001 / std::sqrt(0.001f * 0.001f + 1e-6), 1e-6);
  EXPECT_NEAR(y.at(0), 0.70710678, 1e-4);
}

TEST(OpRmsNorm, InferenceErrors) {
  const ValueInfo x{DType::f32, Shape{Dim(4), Dim(64)}};
  const ValueInfo w{DType::f32, Shape{Dim(64)}};
  expect_error(
      [&] {
        infer("rms_norm", {x, {DType::f32, Shape{Dim(32)}}});
      },
      {"'weight'", "[32]", "[4, 64]"});
  expect_error(
      [&] {
        infer("rms_norm", {x, {DType::f32, Shape{Dim(1), Dim(64)}}});
      },
      {"'weight'", "[1, 64]"});
  expect_error(
      [&] {
        infer("rms_norm", {{DType::i32, Shape{Dim(4), Dim(64)}}, w});
      },
      {"'x'", "i32"});
  expect_error([&] { infer("rms_norm", {x, {DType::i64, Shape{Dim(64)}}}); }, {"'weight'", "i64"});
  expect_error([&] { infer("rms_norm", {x, w}, {{"eps", -1.0}}); }, {"'eps'", "-1"});
  expect_error(
      [&] {
        infer("rms_norm", {x, w}, {{"epsilon", 1e-5}});
      },
      {"unknown attribute 'epsilon'"});
  expect_error([&] { infer("rms_norm", {x}); }, {"inputs"});
}

TEST(OpRmsNorm, SymbolicShapes) {
  auto out = infer("rms_norm",
                   {{DType::bf16, Shape{Dim::tokens(), Dim(64)}}, {DType::f32, Shape{Dim(64)}}});
  EXPECT_EQ(out.at(0), (ValueInfo{DType::bf16, Shape{Dim::tokens(), Dim(64)}}));
  expect_error(
      [&] {
        infer("rms_norm",
              {{DType::f32, Shape{Dim(2), Dim::tokens()}}, {DType::f32, Shape{Dim(64)}}});
      },
      {"'weight'", "[2, T]"});
}

}  // namespace
