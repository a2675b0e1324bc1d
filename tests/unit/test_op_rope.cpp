// rope: checked against a float64 implementation written here from the
// formulas of the model families (complex multiplication per pair), with the
// YaRN correction range given as the published constants where they exist.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <numbers>

#include "moert/graph.h"
#include "support/op_runner.h"

namespace moert {
namespace {

using testing::max_rel_error;
using testing::random_ints;
using testing::random_tensor;
using testing::run_op;

// f32 outputs: the kernel and the reference agree in double, so the only
// difference is the final rounding to f32 (relative 6e-8); 1e-5 leaves room
// for cos/sin of large angles.
constexpr double kF32Tol = 1e-5;

std::vector<double> plain_inv_freq(double theta, int64_t rotary_dim) {
  std::vector<double> f;
  for (int64_t i = 0; i < rotary_dim; i += 2)
    f.push_back(1.0 / std::pow(theta, static_cast<double>(i) / static_cast<double>(rotary_dim)));
  return f;
}

// YaRN frequencies for a given correction range [low, high].
std::vector<double> yarn_inv_freq(double theta, int64_t rotary_dim, double factor, double low,
                                  double high) {
  std::vector<double> f = plain_inv_freq(theta, rotary_dim);
  for (size_t j = 0; j < f.size(); ++j) {
    double ramp = (static_cast<double>(j) - low) / (high - low);
    ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);
    const double extrapolation = f[j];
    const double interpolation = f[j] / factor;
    f[j] = interpolation * ramp + extrapolation * (1 - ramp);
  }
  return f;
}

// The number of dims (of rotary_dim) whose wavelength fits `rotations` times
// into the original context: YaRN's correction dimension.
double correction_dim(double rotations, int64_t rotary_dim, double theta, double original) {
  return static_cast<double>(rotary_dim) * std::log(original / (rotations * 2 * std::numbers::pi)) /
         (2 * std::log(theta));
}

// Rotates each pair of every head as the complex number u + iv times
// scaling * e^(i pos inv_freq[j]).
std::vector<double> reference_rope(const Tensor& x, const Tensor& positions,
                                   const std::vector<double>& inv_freq, double scaling,
                                   bool interleaved) {
  const int64_t tokens = x.dim(0), heads = x.dim(1), dim = x.dim(2);
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  std::vector<double> in = x.to_doubles(), out = in;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = 0; j < half; ++j) {
        const int64_t a = interleaved ? 2 * j : j;
        const int64_t b = interleaved ? 2 * j + 1 : j + half;
        const size_t base = static_cast<size_t>((t * heads + h) * dim);
        const std::complex<double> z(in[base + static_cast<size_t>(a)],
                                     in[base + static_cast<size_t>(b)]);
        const std::complex<double> r =
            z * std::polar(scaling,
                           positions.at(static_cast<size_t>(t)) * inv_freq[static_cast<size_t>(j)]);
        out[base + static_cast<size_t>(a)] = r.real();
        out[base + static_cast<size_t>(b)] = r.imag();
      }
  return out;
}

TEST(Rope, NeoxHalfPairsF32) {
  std::mt19937 rng(1);
  Tensor x = random_tensor(DType::f32, {5, 3, 8}, rng);
  Tensor pos = random_ints(DType::i32, {5}, 0, 5000, rng);
  Tensor y = run_op("rope", {x, pos}, {{"theta", 10000.0}})[0];
  EXPECT_EQ(y.dtype(), DType::f32);
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_LT(
      max_rel_error(y.to_doubles(), reference_rope(x, pos, plain_inv_freq(10000, 8), 1.0, false)),
      kF32Tol);
}

TEST(Rope, InterleavedPairsI64Positions) {
  std::mt19937 rng(2);
  Tensor x = random_tensor(DType::f32, {4, 2, 6}, rng);
  Tensor pos = random_ints(DType::i64, {4}, 0, 100000, rng);
  Tensor y = run_op("rope", {x, pos}, {{"theta", 500.0}, {"pairing", "interleaved"}})[0];
  EXPECT_LT(
      max_rel_error(y.to_doubles(), reference_rope(x, pos, plain_inv_freq(500, 6), 1.0, true)),
      kF32Tol);
  // The two pairings really differ (so the test above can tell them apart).
  Tensor z = run_op("rope", {x, pos}, {{"theta", 500.0}})[0];
  EXPECT_GT(max_rel_error(z.to_doubles(), y.to_doubles()), 1e-2);
}

TEST(Rope, PartialRotaryPassesTheRestThrough) {
  std::mt19937 rng(3);
  const int64_t dim = 10, rotary = 4;
  Tensor x = random_tensor(DType::f32, {3, 2, dim}, rng);
  Tensor pos = random_ints(DType::i32, {3}, 1, 64, rng);
  for (const char* pairing : {"half", "interleaved"}) {
    SCOPED_TRACE(pairing);
    Tensor y = run_op("rope", {x, pos},
                      {{"theta", 10000.0}, {"rotary_dim", rotary}, {"pairing", pairing}})[0];
    std::vector<double> want =
        reference_rope(x, pos, plain_inv_freq(10000, rotary), 1.0, std::string(pairing) != "half");
    EXPECT_LT(max_rel_error(y.to_doubles(), want), kF32Tol);
    for (int64_t t = 0; t < 3; ++t)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t c = rotary; c < dim; ++c) {
          const size_t i = static_cast<size_t>((t * 2 + h) * dim + c);
          EXPECT_EQ(y.at(i), x.at(i)) << "t " << t << " h " << h << " c " << c;
        }
  }
}

TEST(Rope, LinearScalingDividesPositions) {
  std::mt19937 rng(4);
  Tensor x = random_tensor(DType::f32, {6, 1, 8}, rng);
  Tensor pos = random_ints(DType::i32, {6}, 0, 3000, rng);
  Tensor y =
      run_op("rope", {x, pos}, {{"theta", 10000.0}, {"scaling", "linear"}, {"factor", 4.0}})[0];
  std::vector<double> f = plain_inv_freq(10000, 8);
  for (double& v : f) v /= 4.0;
  EXPECT_LT(max_rel_error(y.to_doubles(), reference_rope(x, pos, f, 1.0, false)), kF32Tol);
}

Attributes deepseek_v3_yarn() {
  return {{"theta", 10000.0},
          {"pairing", "interleaved"},
          {"scaling", "yarn"},
          {"factor", 40.0},
          {"original_max_position_embeddings", int64_t{4096}},
          {"beta_fast", 32.0},
          {"beta_slow", 1.0},
          {"mscale", 1.0},
          {"mscale_all_dim", 1.0}};
}

TEST(Rope, YarnDeepSeekV3) {
  // The reference's formula gives the published correction range.
  EXPECT_EQ(std::floor(correction_dim(32, 64, 10000, 4096)), 10.0);
  EXPECT_EQ(std::ceil(correction_dim(1, 64, 10000, 4096)), 23.0);
  std::mt19937 rng(5);
  Tensor x = random_tensor(DType::f32, {4, 3, 64}, rng);
  Tensor pos = Tensor::from_doubles(DType::i32, {4}, {0, 7, 4095, 150000});
  Tensor y = run_op("rope", {x, pos}, deepseek_v3_yarn())[0];
  // low 10, high 23 and attention_scaling 1.0 (mscale == mscale_all_dim).
  std::vector<double> want =
      reference_rope(x, pos, yarn_inv_freq(10000, 64, 40, 10, 23), 1.0, true);
  EXPECT_LT(max_rel_error(y.to_doubles(), want), kF32Tol);
}

TEST(Rope, YarnMscaleVariants) {
  std::mt19937 rng(6);
  Tensor x = random_tensor(DType::f32, {2, 2, 64}, rng);
  Tensor pos = Tensor::from_doubles(DType::i64, {2}, {3, 9000});
  const std::vector<double> f = yarn_inv_freq(10000, 64, 40, 10, 23);
  // V2-Lite: mscale = mscale_all_dim = 0.707 -> 1.0.
  Attributes v2 = deepseek_v3_yarn();
  v2.set("mscale", 0.707);
  v2.set("mscale_all_dim", 0.707);
  EXPECT_LT(max_rel_error(run_op("rope", {x, pos}, v2)[0].to_doubles(),
                          reference_rope(x, pos, f, 1.0, true)),
            kF32Tol);
  // mscale_all_dim 0 (the default): 0.1 ln(40) + 1.
  Attributes plain = deepseek_v3_yarn();
  plain.set("mscale_all_dim", 0.0);
  EXPECT_LT(max_rel_error(run_op("rope", {x, pos}, plain)[0].to_doubles(),
                          reference_rope(x, pos, f, 0.1 * std::log(40.0) + 1, true)),
            kF32Tol);
  // mscale 1, mscale_all_dim 0.5: g(40, 1) / g(40, 0.5).
  Attributes ratio = deepseek_v3_yarn();
  ratio.set("mscale_all_dim", 0.5);
  const double g1 = 0.1 * std::log(40.0) + 1, g05 = 0.05 * std::log(40.0) + 1;
  EXPECT_LT(max_rel_error(run_op("rope", {x, pos}, ratio)[0].to_doubles(),
                          reference_rope(x, pos, f, g1 / g05, true)),
            kF32Tol);
  // An explicit attention_factor wins.
  Attributes explicit_factor = deepseek_v3_yarn();
  explicit_factor.set("attention_factor", 0.5);
  EXPECT_LT(max_rel_error(run_op("rope", {x, pos}, explicit_factor)[0].to_doubles(),
                          reference_rope(x, pos, f, 0.5, true)),
            kF32Tol);
}

TEST(Rope, YarnGptOssUntruncated) {
  const double low = correction_dim(32, 64, 150000, 4096);
  const double high = correction_dim(1, 64, 150000, 4096);
  EXPECT_NEAR(low, 8.0928, 1e-4);
  EXPECT_NEAR(high, 17.3980, 1e-4);
  std::mt19937 rng(7);
  Tensor x = random_tensor(DType::f32, {3, 4, 64}, rng);
  Tensor pos = Tensor::from_doubles(DType::i32, {3}, {1, 200, 131000});
  Attributes attrs{{"theta", 150000.0},     {"scaling", "yarn"},
                   {"factor", 32.0},        {"original_max_position_embeddings", int64_t{4096}},
                   {"beta_fast", 32.0},     {"beta_slow", 1.0},
                   {"truncate", int64_t{0}}};
  Tensor y = run_op("rope", {x, pos}, attrs)[0];
  const double scaling = 1.346574;  // 0.1 ln 32 + 1, as published
  EXPECT_LT(
      max_rel_error(y.to_doubles(), reference_rope(x, pos, yarn_inv_freq(150000, 64, 32, low, high),
                                                   0.1 * std::log(32.0) + 1, false)),
      kF32Tol);
  // Every (j, j + 32) pair's length grows by the attention scaling.
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t j = 0; j < 32; ++j) {
      const size_t a = static_cast<size_t>(t * 4 * 64 + j), b = a + 32;
      const double before = std::hypot(x.at(a), x.at(b)), after = std::hypot(y.at(a), y.at(b));
      EXPECT_NEAR(after / before, scaling, 1e-5) << "t " << t << " j " << j;
    }
}

TEST(Rope, Bf16RoundsOnce) {
  std::mt19937 rng(8);
  Tensor x = random_tensor(DType::bf16, {3, 2, 16}, rng);
  Tensor pos = random_ints(DType::i32, {3}, 0, 2000, rng);
  Tensor y = run_op("rope", {x, pos}, {{"theta", 10000.0}})[0];
  EXPECT_EQ(y.dtype(), DType::bf16);
  // One bf16 rounding of the exact result: relative error <= 2^-9 ~ 2e-3.
  EXPECT_LT(
      max_rel_error(y.to_doubles(), reference_rope(x, pos, plain_inv_freq(10000, 16), 1.0, false)),
      1e-2);
}

TEST(Rope, SymbolicTokens) {
  Graph g;
  ValueId x = g.add_input("x", DType::bf16, Shape{Dim::tokens(), 4, 64});
  ValueId pos = g.add_input("pos", DType::i32, Shape{Dim::tokens()});
  ValueId y = g.add("rope", "rope", {x, pos}, {{"theta", 10000.0}});
  EXPECT_EQ(g.value(y).shape, (Shape{Dim::tokens(), 4, 64}));
  EXPECT_EQ(g.value(y).dtype, DType::bf16);
}

void expect_error(const std::vector<Tensor>& inputs, const Attributes& attrs,
                  const std::string& fragment) {
  try {
    run_op("rope", inputs, attrs, SymbolValues::of(0, 0), "rope7");
    ADD_FAILURE() << "no error; expected one mentioning " << fragment;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_NE(msg.find("rope7"), std::string::npos) << msg;
  }
}

TEST(Rope, Errors) {
  std::mt19937 rng(9);
  Tensor x = random_tensor(DType::f32, {3, 2, 8}, rng);
  Tensor pos = random_ints(DType::i32, {3}, 0, 10, rng);
  const Attributes base{{"theta", 10000.0}};
  auto with = [&](const std::string& k, AttrValue v) {
    Attributes a = base;
    a.set(k, std::move(v));
    return a;
  };
  expect_error({x, pos}, {}, "theta");
  expect_error({x, pos}, {{"theta", -1.0}}, "'theta'");
  expect_error({x, pos}, with("rotary_dim", int64_t{7}), "'rotary_dim'");
  expect_error({x, pos}, with("rotary_dim", int64_t{10}), "'rotary_dim'");
  expect_error({x, pos}, with("rotary_dim", int64_t{0}), "'rotary_dim'");
  expect_error({x, pos}, with("pairing", "adjacent"), "'pairing'");
  expect_error({x, pos}, with("scaling", "ntk"), "'scaling'");
  expect_error({x, pos}, with("scaling", "yarn"), "'factor'");
  expect_error({x, pos}, with("scaling", "linear"), "'factor'");
  Attributes yarn = with("scaling", "yarn");
  yarn.set("factor", 8.0);
  expect_error({x, pos}, yarn, "'original_max_position_embeddings'");
  yarn.set("original_max_position_embeddings", int64_t{4096});
  yarn.set("truncate", int64_t{2});
  expect_error({x, pos}, yarn, "'truncate'");
  Attributes zero_factor = with("scaling", "linear");
  zero_factor.set("factor", 0.0);
  expect_error({x, pos}, zero_factor, "'factor'");
  expect_error({x, pos}, with("unknown", int64_t{1}), "unknown attribute 'unknown'");
  expect_error({x, random_tensor(DType::f32, {3}, rng)}, base, "'positions'");
  expect_error({x, random_ints(DType::i32, {4}, 0, 9, rng)}, base, "'positions'");
  expect_error({random_tensor(DType::f32, {3, 16}, rng), pos}, base, "'x'");
  expect_error({random_ints(DType::i32, {3, 2, 8}, 0, 9, rng), pos}, base, "'x'");
}

}  // namespace
}  // namespace moert
