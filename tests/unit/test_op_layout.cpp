// reshape, slice, transpose, repeat and concat: reference kernels against
// index arithmetic written plainly in the test, hand-computed cases,
// inference errors and symbolic shapes.  Layout ops only move elements, so
// every comparison is exact, including i64 values beyond double's 53 bits.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "moert/error.h"
#include "moert/op_registry.h"
#include "support/op_runner.h"

namespace {

using moert::Attributes;
using moert::Dim;
using moert::DType;
using moert::Shape;
using moert::Tensor;
using moert::ValueInfo;
using moert::testing::expect_error;
using moert::testing::infer;
using moert::testing::random_tensor;
using moert::testing::run_op;
using Ints = std::vector<int64_t>;

// An i64 tensor whose values are distinct and not representable in double,
// so that any copy through double (or a wrong index) changes them.
Tensor big_ints(const Ints& shape) {
  Tensor t = Tensor::empty(DType::i64, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<int64_t>()[i] = (int64_t{1} << 60) + 2 * i + 1;
  return t;
}

std::vector<int64_t> int64s(const Tensor& t) {
  const int64_t* p = t.data_as<int64_t>();
  return {p, p + t.numel()};
}

// ----------------------------------------------------------------- reshape

TEST(OpReshape, KeepsRowMajorOrder) {
  std::mt19937 rng(50);
  Tensor x = random_tensor(DType::bf16, {2, 3, 5}, rng);
  for (const Ints& spec : {Ints{0, -1}, Ints{6, 5}, Ints{-1}, Ints{5, 1, 3, 2}, Ints{0, 3, 0}}) {
    Tensor y = run_op("reshape", {x}, {{"shape", spec}}).at(0);
    EXPECT_EQ(y.numel(), 30);
    EXPECT_EQ(y.dtype(), DType::bf16);
    EXPECT_EQ(y.to_doubles(), x.to_doubles());
  }
  EXPECT_EQ(run_op("reshape", {x}, {{"shape", Ints{0, -1}}}).at(0).shape(), (Ints{2, 15}));
  EXPECT_EQ(run_op("reshape", {x}, {{"shape", Ints{5, 1, -1, 2}}}).at(0).shape(),
            (Ints{5, 1, 3, 2}));
  Tensor big = big_ints({3, 4});
  Tensor y = run_op("reshape", {big}, {{"shape", Ints{2, 6}}}).at(0);
  EXPECT_EQ(int64s(y), int64s(big));
  Tensor one = Tensor::from_doubles(DType::f32, {1, 1}, {4.5});
  EXPECT_EQ(run_op("reshape", {one}, {{"shape", Ints{}}}).at(0).rank(), 0u);
}

TEST(OpReshape, InferenceErrors) {
  const ValueInfo x{DType::f32, Shape{Dim(4), Dim(6)}};
  expect_error(
      [&] {
        infer("reshape", {&x}, {{"shape", Ints{-1, -1}}});
      },
      {"'shape'", "more than one", "-1"});
  expect_error(
      [&] {
        infer("reshape", {&x}, {{"shape", Ints{5, 5}}});
      },
      {"'shape'", "[5, 5]", "[4, 6]", "24"});
  expect_error([&] { infer("reshape", {&x}, {{"shape", Ints{5, -1}}}); }, {"-1", "24", "5"});
  expect_error([&] { infer("reshape", {&x}, {{"shape", Ints{4, -2}}}); }, {"-2"});
  const ValueInfo empty{DType::f32, Shape{Dim(0), Dim(6)}};
  expect_error([&] { infer("reshape", {&empty}, {{"shape", Ints{0, -1}}}); }, {"-1", "zero-sized"});
  expect_error([&] { infer("reshape", {&x}, {{"shape", Ints{0, 0, 0}}}); }, {"entry 2", "no dim"});
  expect_error([&] { infer("reshape", {&x}); }, {"missing required attribute 'shape'"});
  expect_error([&] { infer("reshape", {&x}, {{"shape", int64_t{24}}}); }, {"'shape'", "ints"});
  const ValueInfo sym{DType::f32, Shape{Dim::tokens(), Dim(4), Dim(8)}};
  expect_error(
      [&] {
        infer("reshape", {&sym}, {{"shape", Ints{-1}}});
      },
      {"symbolic", "T", "[T, 4, 8]"});
  expect_error([&] { infer("reshape", {&sym}, {{"shape", Ints{4, 0, 8}}}); }, {"symbolic"});
}

TEST(OpReshape, SymbolicDimsCopiedWithZero) {
  const ValueInfo x{DType::bf16, Shape{Dim::tokens(), Dim(4), Dim(8)}};
  const ValueInfo want{DType::bf16, Shape{Dim::tokens(), Dim(32)}};
  EXPECT_EQ(infer("reshape", {&x}, {{"shape", Ints{0, 32}}}).at(0), want);
  EXPECT_EQ(infer("reshape", {&x}, {{"shape", Ints{0, -1}}}).at(0), want);
  EXPECT_EQ(infer("reshape", {&x}, {{"shape", Ints{0, 2, 2, -1}}}).at(0),
            (ValueInfo{DType::bf16, Shape{Dim::tokens(), Dim(2), Dim(2), Dim(8)}}));
  const ValueInfo kv{DType::f32, Shape{Dim(2), Dim::past_plus_tokens(), Dim(64)}};
  EXPECT_EQ(infer("reshape", {&kv}, {{"shape", Ints{2, 0, 4, 16}}}).at(0),
            (ValueInfo{DType::f32, Shape{Dim(2), Dim::past_plus_tokens(), Dim(4), Dim(16)}}));
}

// ------------------------------------------------------------------- slice

TEST(OpSlice, MatchesIndexing) {
  std::mt19937 rng(51);
  Tensor x = random_tensor(DType::f32, {3, 10, 4}, rng);
  const std::vector<double> v = x.to_doubles();
  struct Case {
    int64_t axis, start, length;
  };
  for (const Case& c :
       {Case{1, 2, 5}, Case{-1, 1, 3}, Case{0, 2, 1}, Case{1, 0, 10}, Case{2, 3, 1}}) {
    Tensor y =
        run_op("slice", {x}, {{"axis", c.axis}, {"start", c.start}, {"length", c.length}}).at(0);
    const int64_t axis = c.axis < 0 ? c.axis + 3 : c.axis;
    Ints shape = {3, 10, 4};
    shape[static_cast<size_t>(axis)] = c.length;
    EXPECT_EQ(y.shape(), shape);
    std::vector<double> want;
    for (int64_t i = 0; i < shape[0]; ++i)
      for (int64_t j = 0; j < shape[1]; ++j)
        for (int64_t k = 0; k < shape[2]; ++k) {
          Ints idx = {i, j, k};
          idx[static_cast<size_t>(axis)] += c.start;
          want.push_back(v[static_cast<size_t>((idx[0] * 10 + idx[1]) * 4 + idx[2])]);
        }
    EXPECT_EQ(y.to_doubles(), want) << "axis " << c.axis << " start " << c.start;
  }
}

TEST(OpSlice, HandComputed) {
  Tensor x = Tensor::from_doubles(DType::f16, {2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor y =
      run_op("slice", {x}, {{"axis", int64_t{1}}, {"start", int64_t{1}}, {"length", int64_t{2}}})
          .at(0);
  EXPECT_EQ(y.to_doubles(), (std::vector<double>{2, 3, 5, 6}));
  Tensor big = big_ints({4});
  Tensor yb =
      run_op("slice", {big}, {{"axis", int64_t{0}}, {"start", int64_t{3}}, {"length", int64_t{1}}})
          .at(0);
  EXPECT_EQ(int64s(yb), (std::vector<int64_t>{int64s(big)[3]}));
}

TEST(OpSlice, InferenceErrorsAndSymbolicShapes) {
  const ValueInfo x{DType::f32, Shape{Dim::tokens(), Dim(10)}};
  auto attrs = [](int64_t axis, int64_t start, int64_t length) {
    return Attributes{{"axis", axis}, {"start", start}, {"length", length}};
  };
  EXPECT_EQ(infer("slice", {&x}, attrs(1, 7, 3)).at(0),
            (ValueInfo{DType::f32, Shape{Dim::tokens(), Dim(3)}}));
  expect_error([&] { infer("slice", {&x}, attrs(1, 8, 3)); }, {"'start'", "8", "3", "10"});
  expect_error([&] { infer("slice", {&x}, attrs(1, -1, 3)); }, {"'start'", "-1"});
  expect_error([&] { infer("slice", {&x}, attrs(1, 0, -1)); }, {"'length'", "-1"});
  expect_error([&] { infer("slice", {&x}, attrs(2, 0, 1)); }, {"'axis'", "2", "[T, 10]"});
  expect_error([&] { infer("slice", {&x}, attrs(-3, 0, 1)); }, {"'axis'", "-3"});
  expect_error([&] { infer("slice", {&x}, attrs(0, 0, 1)); }, {"static", "[T, 10]"});
  expect_error(
      [&] {
        infer("slice", {&x}, {{"axis", int64_t{1}}, {"start", int64_t{0}}});
      },
      {"missing required attribute 'length'"});
}

// --------------------------------------------------------------- transpose

TEST(OpTranspose, MatchesIndexing) {
  std::mt19937 rng(52);
  Tensor x = random_tensor(DType::bf16, {2, 3, 5}, rng);
  const std::vector<double> v = x.to_doubles();
  // y[k, i, j] = x[i, j, k] for perm [2, 0, 1].
  Tensor y = run_op("transpose", {x}, {{"perm", Ints{2, 0, 1}}}).at(0);
  EXPECT_EQ(y.shape(), (Ints{5, 2, 3}));
  std::vector<double> want;
  for (int64_t k = 0; k < 5; ++k)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j) want.push_back(v[static_cast<size_t>((i * 3 + j) * 5 + k)]);
  EXPECT_EQ(y.to_doubles(), want);
  // y[j, i, k] = x[i, j, k] for perm [1, 0, 2].
  Tensor y2 = run_op("transpose", {x}, {{"perm", Ints{1, 0, 2}}}).at(0);
  EXPECT_EQ(y2.shape(), (Ints{3, 2, 5}));
  want.clear();
  for (int64_t j = 0; j < 3; ++j)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t k = 0; k < 5; ++k) want.push_back(v[static_cast<size_t>((i * 3 + j) * 5 + k)]);
  EXPECT_EQ(y2.to_doubles(), want);
  // Identity.
  EXPECT_EQ(run_op("transpose", {x}, {{"perm", Ints{0, 1, 2}}}).at(0).to_doubles(), v);
}

TEST(OpTranspose, HandComputed) {
  Tensor x = Tensor::from_doubles(DType::f32, {2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(run_op("transpose", {x}, {{"perm", Ints{1, 0}}}).at(0).to_doubles(),
            (std::vector<double>{1, 4, 2, 5, 3, 6}));
  Tensor big = big_ints({2, 2});
  const std::vector<int64_t> b = int64s(big);
  EXPECT_EQ(int64s(run_op("transpose", {big}, {{"perm", Ints{1, 0}}}).at(0)),
            (std::vector<int64_t>{b[0], b[2], b[1], b[3]}));
}

TEST(OpTranspose, InferenceErrorsAndSymbolicShapes) {
  const ValueInfo x{DType::f32, Shape{Dim::tokens(), Dim(4), Dim(8)}};
  EXPECT_EQ(infer("transpose", {&x}, {{"perm", Ints{1, 0, 2}}}).at(0),
            (ValueInfo{DType::f32, Shape{Dim(4), Dim::tokens(), Dim(8)}}));
  expect_error(
      [&] {
        infer("transpose", {&x}, {{"perm", Ints{0, 0, 1}}});
      },
      {"'perm'", "[0, 0, 1]", "permutation"});
  expect_error([&] { infer("transpose", {&x}, {{"perm", Ints{1, 0}}}); }, {"'perm'", "[1, 0]"});
  expect_error([&] { infer("transpose", {&x}, {{"perm", Ints{0, 1, 3}}}); }, {"'perm'", "3"});
  expect_error(
      [&] {
        infer("transpose", {&x}, {{"perm", Ints{0, 1, 2}}, {"axes", Ints{}}});
      },
      {"unknown attribute 'axes'"});
}

// ------------------------------------------------------------------ repeat

TEST(OpRepeat, MatchesRepeatInterleave) {
  std::mt19937 rng(53);
  Tensor x = random_tensor(DType::f16, {2, 3, 4}, rng);
  const std::vector<double> v = x.to_doubles();
  for (int64_t axis : {0, 1, 2, -2}) {
    const size_t a = static_cast<size_t>(axis < 0 ? axis + 3 : axis);
    Tensor y = run_op("repeat", {x}, {{"axis", axis}, {"times", int64_t{3}}}).at(0);
    Ints shape = {2, 3, 4};
    shape[a] *= 3;
    EXPECT_EQ(y.shape(), shape);
    std::vector<double> want;
    for (int64_t i = 0; i < shape[0]; ++i)
      for (int64_t j = 0; j < shape[1]; ++j)
        for (int64_t k = 0; k < shape[2]; ++k) {
          Ints idx = {i, j, k};
          idx[a] /= 3;
          want.push_back(v[static_cast<size_t>((idx[0] * 3 + idx[1]) * 4 + idx[2])]);
        }
    EXPECT_EQ(y.to_doubles(), want) << "axis " << axis;
  }
  EXPECT_EQ(run_op("repeat", {x}, {{"axis", int64_t{1}}, {"times", int64_t{1}}}).at(0).to_doubles(),
            v);
}

TEST(OpRepeat, HandComputed) {
  Tensor x = Tensor::from_doubles(DType::f32, {2}, {1, 2});
  EXPECT_EQ(run_op("repeat", {x}, {{"axis", int64_t{0}}, {"times", int64_t{3}}}).at(0).to_doubles(),
            (std::vector<double>{1, 1, 1, 2, 2, 2}));
  // Grouped-query attention: 2 kv heads serve 4 query heads, [kv0, kv0, kv1, kv1].
  Tensor kv = Tensor::from_doubles(DType::f32, {1, 2, 2}, {1, 2, 3, 4});
  EXPECT_EQ(
      run_op("repeat", {kv}, {{"axis", int64_t{1}}, {"times", int64_t{2}}}).at(0).to_doubles(),
      (std::vector<double>{1, 2, 1, 2, 3, 4, 3, 4}));
}

TEST(OpRepeat, InferenceErrorsAndSymbolicShapes) {
  const ValueInfo k{DType::bf16, Shape{Dim::tokens(), Dim(1), Dim(64)}};
  EXPECT_EQ(infer("repeat", {&k}, {{"axis", int64_t{1}}, {"times", int64_t{16}}}).at(0),
            (ValueInfo{DType::bf16, Shape{Dim::tokens(), Dim(16), Dim(64)}}));
  expect_error(
      [&] {
        infer("repeat", {&k}, {{"axis", int64_t{1}}, {"times", int64_t{0}}});
      },
      {"'times'", "0"});
  expect_error(
      [&] {
        infer("repeat", {&k}, {{"axis", int64_t{0}}, {"times", int64_t{2}}});
      },
      {"static", "[T, 1, 64]"});
  expect_error(
      [&] {
        infer("repeat", {&k}, {{"axis", int64_t{3}}, {"times", int64_t{2}}});
      },
      {"'axis'", "3"});
  expect_error(
      [&] {
        infer("repeat", {&k}, {{"axis", int64_t{1}}});
      },
      {"missing required attribute 'times'"});
}

// ------------------------------------------------------------------ concat

TEST(OpConcat, MatchesIndexing) {
  std::mt19937 rng(54);
  Tensor a = random_tensor(DType::f32, {2, 3, 4}, rng);
  Tensor b = random_tensor(DType::f32, {2, 1, 4}, rng);
  Tensor c = random_tensor(DType::f32, {2, 2, 4}, rng);
  Tensor y = run_op("concat", {a, b, c}, {{"axis", int64_t{1}}}).at(0);
  EXPECT_EQ(y.shape(), (Ints{2, 6, 4}));
  const std::vector<double> av = a.to_doubles(), bv = b.to_doubles(), cv = c.to_doubles();
  std::vector<double> want;
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 6; ++j)
      for (int64_t k = 0; k < 4; ++k) {
        if (j < 3)
          want.push_back(av[static_cast<size_t>((i * 3 + j) * 4 + k)]);
        else if (j < 4)
          want.push_back(bv[static_cast<size_t>((i * 1 + j - 3) * 4 + k)]);
        else
          want.push_back(cv[static_cast<size_t>((i * 2 + j - 4) * 4 + k)]);
      }
  EXPECT_EQ(y.to_doubles(), want);

  // Last axis, four inputs, negative axis.
  Tensor p = random_tensor(DType::bf16, {3, 2}, rng);
  Tensor q = random_tensor(DType::bf16, {3, 5}, rng);
  Tensor r = random_tensor(DType::bf16, {3, 1}, rng);
  Tensor s = random_tensor(DType::bf16, {3, 3}, rng);
  Tensor z = run_op("concat", {p, q, r, s}, {{"axis", int64_t{-1}}}).at(0);
  EXPECT_EQ(z.shape(), (Ints{3, 11}));
  want.clear();
  for (int64_t i = 0; i < 3; ++i)
    for (const Tensor* t : {&p, &q, &r, &s})
      for (int64_t k = 0; k < t->dim(1); ++k)
        want.push_back(t->at(static_cast<size_t>(i * t->dim(1) + k)));
  EXPECT_EQ(z.to_doubles(), want);
}

TEST(OpConcat, HandComputed) {
  Tensor a = Tensor::from_doubles(DType::f32, {2}, {1, 2});
  Tensor b = Tensor::from_doubles(DType::f32, {1}, {3});
  EXPECT_EQ(run_op("concat", {a, b}, {{"axis", int64_t{0}}}).at(0).to_doubles(),
            (std::vector<double>{1, 2, 3}));
  Tensor m = Tensor::from_doubles(DType::f32, {2, 1}, {1, 2});
  Tensor n = Tensor::from_doubles(DType::f32, {2, 2}, {3, 4, 5, 6});
  EXPECT_EQ(run_op("concat", {m, n}, {{"axis", int64_t{1}}}).at(0).to_doubles(),
            (std::vector<double>{1, 3, 4, 2, 5, 6}));
  // Absent optional inputs are skipped.
  EXPECT_EQ(run_op("concat", {a, b, Tensor(), a}, {{"axis", int64_t{0}}}).at(0).to_doubles(),
            (std::vector<double>{1, 2, 3, 1, 2}));
  Tensor big = big_ints({2});
  const std::vector<int64_t> bv = int64s(big);
  EXPECT_EQ(int64s(run_op("concat", {big, big}, {{"axis", int64_t{0}}}).at(0)),
            (std::vector<int64_t>{bv[0], bv[1], bv[0], bv[1]}));
}

TEST(OpConcat, InferenceErrorsAndSymbolicShapes) {
  const ValueInfo a{DType::f32, Shape{Dim::tokens(), Dim(4)}};
  const ValueInfo b{DType::f32, Shape{Dim::tokens(), Dim(60)}};
  EXPECT_EQ(infer("concat", {&a, &b}, {{"axis", int64_t{1}}}).at(0),
            (ValueInfo{DType::f32, Shape{Dim::tokens(), Dim(64)}}));
  expect_error(
      [&] {
        infer("concat", {&a, &b}, {{"axis", int64_t{0}}});
      },
      {"'a'", "static", "[T, 4]"});
  const ValueInfo c_dtype{DType::bf16, Shape{Dim::tokens(), Dim(4)}};
  expect_error(
      [&] {
        infer("concat", {&a, &c_dtype}, {{"axis", int64_t{1}}});
      },
      {"'b'", "bf16", "f32"});
  const ValueInfo c_shape{DType::f32, Shape{Dim::past_plus_tokens(), Dim(4)}};
  expect_error(
      [&] {
        infer("concat", {&a, &b, &c_shape}, {{"axis", int64_t{1}}});
      },
      {"'c'", "[P+T, 4]", "[T, 4]"});
  const ValueInfo d_rank{DType::f32, Shape{Dim(4)}};
  expect_error(
      [&] {
        infer("concat", {&a, &b, nullptr, &d_rank}, {{"axis", int64_t{1}}});
      },
      {"'d'", "[4]"});
  expect_error([&] { infer("concat", {&a, &b}, {{"axis", int64_t{2}}}); }, {"'axis'", "2"});
  expect_error([&] { infer("concat", {&a, &b}); }, {"missing required attribute 'axis'"});
  expect_error([&] { infer("concat", {&a}, {{"axis", int64_t{1}}}); }, {"inputs"});
}

}  // namespace
