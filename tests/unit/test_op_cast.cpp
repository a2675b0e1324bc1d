// cast: every element converted as moert/dtype.h defines, checked against the
// scalar conversion functions (themselves tested exhaustively in test_dtype).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "moert/error.h"
#include "support/op_runner.h"

using moert::Attributes;
using moert::DType;
using moert::Tensor;
using moert::testing::random_tensor;
using moert::testing::run_op;

TEST(OpCast, FloatToNarrowFloatsRoundsLikeTheScalarConversions) {
  std::mt19937 rng(11);
  Tensor x = random_tensor(DType::f32, {7, 13}, rng, 100.0);  // wide range: e4m3 saturates some
  const float* xs = x.data_as<float>();
  Tensor bf = run_op("cast", {x}, Attributes{{"dtype", std::string("bf16")}})[0];
  Tensor h = run_op("cast", {x}, Attributes{{"dtype", std::string("f16")}})[0];
  Tensor e = run_op("cast", {x}, Attributes{{"dtype", std::string("f8_e4m3")}})[0];
  ASSERT_EQ(bf.dtype(), DType::bf16);
  ASSERT_EQ(bf.shape(), x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_EQ(bf.data_as<uint16_t>()[i], moert::f32_to_bf16(xs[i])) << i;
    EXPECT_EQ(h.data_as<uint16_t>()[i], moert::f32_to_f16(xs[i])) << i;
    EXPECT_EQ(e.data_as<uint8_t>()[i], moert::f32_to_e4m3(xs[i])) << i;
    EXPECT_LE(std::fabs(moert::e4m3_to_f32(e.data_as<uint8_t>()[i])), 448.0f);
  }
}

TEST(OpCast, FloatToIntegersTruncatesAndSaturates) {
  Tensor x = Tensor::from_doubles(DType::f32, {6}, {-3.7, 2.9, 1e10, -1e10, 0.49, 200.5});
  Tensor i32 = run_op("cast", {x}, Attributes{{"dtype", std::string("i32")}})[0];
  EXPECT_EQ(i32.to_doubles(), (std::vector<double>{-3, 2, 2147483647, -2147483648.0, 0, 200}));
  Tensor i8 = run_op("cast", {x}, Attributes{{"dtype", std::string("i8")}})[0];
  EXPECT_EQ(i8.to_doubles(), (std::vector<double>{-3, 2, 127, -128, 0, 127}));
  Tensor b = run_op("cast", {x}, Attributes{{"dtype", std::string("bool")}})[0];
  EXPECT_EQ(b.to_doubles(), (std::vector<double>{1, 1, 1, 1, 1, 1}));
}

TEST(OpCast, IntegersToFloatAreExact) {
  std::mt19937 rng(12);
  Tensor x = moert::testing::random_ints(DType::i64, {33}, -100000, 100000, rng);
  Tensor y = run_op("cast", {x}, Attributes{{"dtype", std::string("f32")}})[0];
  EXPECT_EQ(y.to_doubles(), x.to_doubles());
}

TEST(OpCast, UnknownDtypeIsAnError) {
  Tensor x = Tensor::from_doubles(DType::f32, {2}, {1, 2});
  try {
    run_op("cast", {x}, Attributes{{"dtype", std::string("f64")}}, {}, "to_f64");
    FAIL() << "expected an error";
  } catch (const moert::Error& e) {
    EXPECT_THAT(
        e.what(),
        ::testing::HasSubstr("node 'to_f64' (cast): attribute 'dtype' is 'f64', not a dtype name"));
  }
}
