// linear (f32/bf16/f16 and fp8 block-scaled weights) and matmul: reference
// kernels against plain float64 code in the test, hand-computed cases,
// inference errors and symbolic shapes.
//
// Tolerances: the kernels accumulate in double and round once to the output
// dtype, so they differ from the test's float64 result by at most half an ulp
// of the output type (plus ~1e-16 relative from summation order): f32 2^-24 ≈
// 6e-8 (checked at 1e-5), bf16 2^-9 ≈ 2e-3 (checked at 1e-2), f16 2^-11 ≈
// 5e-4 (checked at 2e-3).  A missing bias, a wrong block index or a transposed
// operand all give errors of order 1.
#include <gtest/gtest.h>

#include <cmath>
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
using moert::testing::dtype_rel_error;
using moert::testing::dtype_tolerance;
using moert::testing::expect_error;
using moert::testing::infer;
using moert::testing::max_rel_error;
using moert::testing::random_tensor;
using moert::testing::run_op;

// ------------------------------------------------------------------ linear

// y[r, n] = sum_k x[r, k] * w[n * K + k] (+ bias[n]), w already dequantised.
std::vector<double> linear_f64(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& bias, size_t n, size_t k) {
  std::vector<double> y;
  for (size_t row = 0; row < x.size() / k; ++row)
    for (size_t j = 0; j < n; ++j) {
      double acc = bias.empty() ? 0.0 : bias[j];
      for (size_t i = 0; i < k; ++i) acc += x[row * k + i] * w[j * k + i];
      y.push_back(acc);
    }
  return y;
}

TEST(OpLinear, FloatWeightsMatchFloat64) {
  std::mt19937 rng(10);
  struct Case {
    DType x, w;
    std::vector<int64_t> x_shape;
    bool bias;
  };
  const int64_t n = 130, k = 200;
  for (const Case& c :
       {Case{DType::f32, DType::f32, {2, 3, k}, true}, Case{DType::f32, DType::bf16, {5, k}, false},
        Case{DType::bf16, DType::bf16, {1, k}, true}, Case{DType::f16, DType::f16, {3, 1, k}, true},
        Case{DType::f32, DType::f16, {k}, false}}) {
    Tensor x = random_tensor(c.x, c.x_shape, rng);
    Tensor w = random_tensor(c.w, {n, k}, rng, 0.1);
    Tensor b = c.bias ? random_tensor(c.x, {n}, rng) : Tensor();
    Tensor y = run_op("linear", {x, w, b}).at(0);
    std::vector<int64_t> want = c.x_shape;
    want.back() = n;
    EXPECT_EQ(y.shape(), want);
    EXPECT_EQ(y.dtype(), c.x);
    std::vector<double> expect = linear_f64(x.to_doubles(), w.to_doubles(),
                                            c.bias ? b.to_doubles() : std::vector<double>{}, n, k);
    EXPECT_LT(dtype_rel_error(c.x, y.to_doubles(), expect), dtype_tolerance(c.x))
        << dtype_name(c.x) << " x, " << dtype_name(c.w) << " weight";
  }
}

TEST(OpLinear, OutputDtypeAttribute) {
  std::mt19937 rng(11);
  Tensor x = random_tensor(DType::bf16, {4, 33}, rng);
  Tensor w = random_tensor(DType::bf16, {7, 33}, rng);
  Tensor y = run_op("linear", {x, w}, {{"dtype", std::string("f32")}}).at(0);
  EXPECT_EQ(y.dtype(), DType::f32);
  EXPECT_LT(max_rel_error(y.to_doubles(), linear_f64(x.to_doubles(), w.to_doubles(), {}, 7, 33)),
            1e-5);
}

// Dequantises an fp8 weight [n, k] the test's own way: the e4m3 bit pattern
// decoded, times the scale of block (row / b0, col / b1).
std::vector<double> dequantize_f64(const Tensor& w, const Tensor& scale, int64_t b0, int64_t b1) {
  const int64_t n = w.dim(0), k = w.dim(1), scols = scale.dim(1);
  const uint8_t* bits = w.data_as<uint8_t>();
  const float* s = scale.data_as<float>();
  std::vector<double> out;
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < k; ++col)
      out.push_back(static_cast<double>(moert::e4m3_to_f32(bits[row * k + col])) *
                    s[(row / b0) * scols + col / b1]);
  return out;
}

// A scale tensor [rows, cols] with a distinct value per block, so that using
// the wrong block shows.
Tensor block_scales(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::uniform_real_distribution<double> dist(0.001, 0.01);
  std::vector<double> v;
  for (int64_t i = 0; i < rows * cols; ++i) v.push_back(dist(rng));
  return Tensor::from_doubles(DType::f32, {rows, cols}, v);
}

TEST(OpLinear, Fp8BlockScaledWeightsMatchOwnDequantisation) {
  std::mt19937 rng(12);
  // N and K are not multiples of the block sizes, so the last row and column
  // of blocks are partial.
  const int64_t n = 130, k = 200;
  struct Case {
    std::vector<int64_t> block;
    DType x;
    bool bias;
  };
  for (const Case& c : {Case{{128, 128}, DType::f32, false}, Case{{64, 32}, DType::f32, true},
                        Case{{128, 128}, DType::bf16, true}, Case{{1, 200}, DType::f16, false}}) {
    const int64_t srows = (n + c.block[0] - 1) / c.block[0];
    const int64_t scols = (k + c.block[1] - 1) / c.block[1];
    Tensor w = random_tensor(DType::f8_e4m3, {n, k}, rng, 100.0);
    Tensor scale = block_scales(srows, scols, rng);
    Tensor x = random_tensor(c.x, {3, 2, k}, rng);
    Tensor b = c.bias ? random_tensor(DType::f32, {n}, rng) : Tensor();
    Attributes attrs;
    if (c.block != std::vector<int64_t>{128, 128}) attrs.set("block_size", c.block);
    Tensor y = run_op("linear", {x, w, b, scale}, attrs).at(0);
    EXPECT_EQ(y.shape(), (std::vector<int64_t>{3, 2, n}));
    EXPECT_EQ(y.dtype(), c.x);
    std::vector<double> expect =
        linear_f64(x.to_doubles(), dequantize_f64(w, scale, c.block[0], c.block[1]),
                   c.bias ? b.to_doubles() : std::vector<double>{}, n, k);
    EXPECT_LT(dtype_rel_error(c.x, y.to_doubles(), expect), dtype_tolerance(c.x))
        << "block " << c.block[0] << "x" << c.block[1];
  }
}

TEST(OpLinear, HandComputed) {
  // W = [[1, 0], [0, 1], [1, 1]], bias = [0.5, 0, -1], x = [1, 2]:
  // y = [1 + 0.5, 2 + 0, 3 - 1].
  Tensor x = Tensor::from_doubles(DType::f32, {1, 2}, {1, 2});
  Tensor w = Tensor::from_doubles(DType::f32, {3, 2}, {1, 0, 0, 1, 1, 1});
  Tensor b = Tensor::from_doubles(DType::f32, {3}, {0.5, 0, -1});
  EXPECT_EQ(run_op("linear", {x, w, b}).at(0).to_doubles(), (std::vector<double>{1.5, 2, 2}));
  // fp8: e4m3 stores 2 and 3 exactly; scales 0.5 (rows 0-1) and 4 (row 2)
  // with block_size [2, 2]: W = [[1, 0], [0, 1.5], [8, 12]].
  Tensor wq = Tensor::from_doubles(DType::f8_e4m3, {3, 2}, {2, 0, 0, 3, 2, 3});
  Tensor s = Tensor::from_doubles(DType::f32, {2, 1}, {0.5, 4});
  Tensor y =
      run_op("linear", {x, wq, Tensor(), s}, {{"block_size", std::vector<int64_t>{2, 2}}}).at(0);
  EXPECT_EQ(y.to_doubles(), (std::vector<double>{1, 3, 32}));
}

TEST(OpLinear, InferenceErrors) {
  const ValueInfo x{DType::f32, Shape{Dim(4), Dim(200)}};
  const ValueInfo w{DType::bf16, Shape{Dim(130), Dim(200)}};
  const ValueInfo w8{DType::f8_e4m3, Shape{Dim(130), Dim(200)}};
  const ValueInfo scale{DType::f32, Shape{Dim(2), Dim(2)}};
  const ValueInfo x_bad{DType::f32, Shape{Dim(4), Dim(199)}};
  expect_error([&] { infer("linear", {&x_bad, &w}); }, {"'x'", "[4, 199]", "[130, 200]"});
  expect_error([&] { infer("linear", {&x, &w8}); }, {"weight_scale", "f8_e4m3", "[2, 2]"});
  expect_error([&] { infer("linear", {&x, &w, nullptr, &scale}); }, {"'weight_scale'", "bf16"});
  const ValueInfo scale_bad{DType::f32, Shape{Dim(1), Dim(2)}};
  expect_error(
      [&] {
        infer("linear", {&x, &w8, nullptr, &scale_bad});
      },
      {"'weight_scale'", "[2, 2]", "[1, 2]"});
  const ValueInfo scale_bf16{DType::bf16, Shape{Dim(2), Dim(2)}};
  expect_error(
      [&] {
        infer("linear", {&x, &w8, nullptr, &scale_bf16});
      },
      {"'weight_scale'", "bf16"});
  // With block_size [64, 32] the scale must be [3, 7].
  expect_error(
      [&] {
        infer("linear", {&x, &w8, nullptr, &scale}, {{"block_size", std::vector<int64_t>{64, 32}}});
      },
      {"'weight_scale'", "[3, 7]"});
  const ValueInfo bias_bad{DType::f32, Shape{Dim(200)}};
  expect_error([&] { infer("linear", {&x, &w, &bias_bad}); }, {"'bias'", "[130]", "[200]"});
  const ValueInfo w_i8{DType::i8, Shape{Dim(130), Dim(200)}};
  expect_error([&] { infer("linear", {&x, &w_i8}); }, {"'weight'", "i8"});
  const ValueInfo w_sym{DType::f32, Shape{Dim::tokens(), Dim(200)}};
  expect_error([&] { infer("linear", {&x, &w_sym}); }, {"'weight'", "static", "[T, 200]"});
  const ValueInfo x_f8{DType::f8_e4m3, Shape{Dim(4), Dim(200)}};
  expect_error([&] { infer("linear", {&x_f8, &w}); }, {"'x'", "f8_e4m3"});
  expect_error(
      [&] {
        infer("linear", {&x, &w}, {{"block_size", std::vector<int64_t>{128}}});
      },
      {"'block_size'", "[128]"});
  expect_error(
      [&] {
        infer("linear", {&x, &w}, {{"dtype", std::string("i32")}});
      },
      {"'dtype'", "i32"});
  expect_error(
      [&] {
        infer("linear", {&x, &w}, {{"transpose", int64_t{1}}});
      },
      {"unknown attribute 'transpose'"});
}

TEST(OpLinear, SymbolicLeadingDims) {
  const ValueInfo x{DType::bf16, Shape{Dim::tokens(), Dim(64)}};
  const ValueInfo w{DType::f8_e4m3, Shape{Dim(130), Dim(64)}};
  const ValueInfo scale{DType::f32, Shape{Dim(2), Dim(1)}};
  EXPECT_EQ(infer("linear", {&x, &w, nullptr, &scale}).at(0),
            (ValueInfo{DType::bf16, Shape{Dim::tokens(), Dim(130)}}));
  const ValueInfo x_sym_k{DType::f32, Shape{Dim(2), Dim::tokens()}};
  const ValueInfo wf{DType::f32, Shape{Dim(130), Dim(64)}};
  expect_error([&] { infer("linear", {&x_sym_k, &wf}); }, {"'x'", "[2, T]"});
}

// ------------------------------------------------------------------ matmul

// y[b, m, n] = sum_k a[b, m, k] * B[b, k, n], with B read transposed when
// b is stored [batch, n, k].
std::vector<double> matmul_f64(const Tensor& a, const Tensor& b, bool transpose_b) {
  const size_t r = a.rank();
  const int64_t m = a.dim(-2), k = a.dim(-1), n = transpose_b ? b.dim(-2) : b.dim(-1);
  int64_t batches = 1;
  for (size_t i = 0; i + 2 < r; ++i) batches *= a.shape()[i];
  std::vector<double> av = a.to_doubles(), bv = b.to_doubles(), y;
  for (int64_t bt = 0; bt < batches; ++bt)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p) {
          double bval = transpose_b ? bv[static_cast<size_t>(bt * n * k + j * k + p)]
                                    : bv[static_cast<size_t>(bt * k * n + p * n + j)];
          acc += av[static_cast<size_t>(bt * m * k + i * k + p)] * bval;
        }
        y.push_back(acc);
      }
  return y;
}

TEST(OpMatmul, RandomMatchesFloat64) {
  std::mt19937 rng(20);
  struct Case {
    DType a, b;
    std::vector<int64_t> a_shape, b_shape;
    bool transpose_b;
  };
  for (const Case& c : {Case{DType::f32, DType::f32, {2, 3, 5, 7}, {2, 3, 7, 9}, false},
                        Case{DType::f32, DType::f32, {2, 3, 5, 7}, {2, 3, 9, 7}, true},
                        Case{DType::bf16, DType::bf16, {1, 13}, {13, 6}, false},
                        Case{DType::f16, DType::f16, {3, 1, 11}, {3, 5, 11}, true},
                        Case{DType::bf16, DType::f32, {4, 3}, {3, 1}, false}}) {
    Tensor a = random_tensor(c.a, c.a_shape, rng);
    Tensor b = random_tensor(c.b, c.b_shape, rng);
    Tensor y = run_op("matmul", {a, b}, {{"transpose_b", int64_t{c.transpose_b}}}).at(0);
    std::vector<int64_t> want = c.a_shape;
    want.back() = c.transpose_b ? c.b_shape[c.b_shape.size() - 2] : c.b_shape.back();
    EXPECT_EQ(y.shape(), want);
    EXPECT_EQ(y.dtype(), c.a);
    EXPECT_LT(dtype_rel_error(c.a, y.to_doubles(), matmul_f64(a, b, c.transpose_b)),
              dtype_tolerance(c.a))
        << moert::dims_str(c.a_shape) << " x " << moert::dims_str(c.b_shape);
  }
}

TEST(OpMatmul, HandComputed) {
  Tensor a = Tensor::from_doubles(DType::f32, {2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::from_doubles(DType::f32, {2, 2}, {5, 6, 7, 8});
  EXPECT_EQ(run_op("matmul", {a, b}).at(0).to_doubles(), (std::vector<double>{19, 22, 43, 50}));
  Tensor bt = Tensor::from_doubles(DType::f32, {2, 2}, {5, 7, 6, 8});
  EXPECT_EQ(run_op("matmul", {a, bt}, {{"transpose_b", int64_t{1}}}).at(0).to_doubles(),
            (std::vector<double>{19, 22, 43, 50}));
}

TEST(OpMatmul, InferenceErrors) {
  const ValueInfo a{DType::f32, Shape{Dim(2), Dim(5), Dim(7)}};
  const ValueInfo b_batch{DType::f32, Shape{Dim(3), Dim(7), Dim(9)}};
  expect_error([&] { infer("matmul", {&a, &b_batch}); }, {"batch", "[2, 5, 7]", "[3, 7, 9]"});
  const ValueInfo b_k{DType::f32, Shape{Dim(2), Dim(6), Dim(9)}};
  expect_error([&] { infer("matmul", {&a, &b_k}); }, {"contracted", "[2, 5, 7]", "[2, 6, 9]"});
  // [2, 7, 9] is fine untransposed but has K = 9 when transposed.
  const ValueInfo b{DType::f32, Shape{Dim(2), Dim(7), Dim(9)}};
  expect_error(
      [&] {
        infer("matmul", {&a, &b}, {{"transpose_b", int64_t{1}}});
      },
      {"contracted", "[2, 7, 9]"});
  const ValueInfo b_rank{DType::f32, Shape{Dim(7), Dim(9)}};
  expect_error([&] { infer("matmul", {&a, &b_rank}); }, {"rank", "[7, 9]"});
  const ValueInfo v{DType::f32, Shape{Dim(7)}};
  expect_error([&] { infer("matmul", {&v, &v}); }, {"'a'", "rank >= 2"});
  expect_error(
      [&] {
        infer("matmul", {&a, &b}, {{"transpose_b", int64_t{2}}});
      },
      {"'transpose_b'", "2"});
  const ValueInfo b_i32{DType::i32, Shape{Dim(2), Dim(7), Dim(9)}};
  expect_error([&] { infer("matmul", {&a, &b_i32}); }, {"'b'", "i32"});
}

TEST(OpMatmul, SymbolicDims) {
  // Attention scores: q [H, T, d] times k [H, P+T, d] transposed.
  const ValueInfo q{DType::bf16, Shape{Dim(4), Dim::tokens(), Dim(16)}};
  const ValueInfo k{DType::bf16, Shape{Dim(4), Dim::past_plus_tokens(), Dim(16)}};
  EXPECT_EQ(infer("matmul", {&q, &k}, {{"transpose_b", int64_t{1}}}).at(0),
            (ValueInfo{DType::bf16, Shape{Dim(4), Dim::tokens(), Dim::past_plus_tokens()}}));
  // Probabilities [H, T, P+T] times v [H, P+T, d].
  const ValueInfo p{DType::bf16, Shape{Dim(4), Dim::tokens(), Dim::past_plus_tokens()}};
  EXPECT_EQ(infer("matmul", {&p, &k}).at(0),
            (ValueInfo{DType::bf16, Shape{Dim(4), Dim::tokens(), Dim(16)}}));
  // T and P+T are different dims.
  const ValueInfo v_t{DType::bf16, Shape{Dim(4), Dim::tokens(), Dim(16)}};
  expect_error([&] { infer("matmul", {&p, &v_t}); }, {"contracted", "[4, T, P+T]", "[4, T, 16]"});
}

}  // namespace
