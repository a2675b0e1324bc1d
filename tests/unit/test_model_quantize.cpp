// Quantize on load (LoadOptions::quantize, RandomWeights::dtype int8 / int4 /
// mxfp4): the round-to-nearest quantizers against their definitions, read
// back through ops/weight_format.h; random models packed that way (which
// tensors, which formats, the summary, logits near the bf16 model's); and the
// option's errors.  Checkpoints in GPTQ, AWQ and MXFP4 layouts are tested from
// Python (tests/python/test_quantized_checkpoints.py), written by an
// independent NumPy writer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "models/quantize_weights.h"
#include "moert/dtype.h"
#include "moert/error.h"
#include "moert/model.h"
#include "support/tiny_configs.h"
#include "weight_format.h"

using moert::LinearTensor;
using moert::Model;
using moert::RandomWeights;
using moert::Tensor;
using moert::ops::WeightFormat;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

namespace {

// W[r, c] of a packed LinearTensor [rows, cols], via ops/weight_format.h.
double value(const LinearTensor& p, int64_t r, int64_t c, int64_t cols) {
  return moert::ops::packed_value(p.format, p.weight.data(), p.scale.data(), r, c, cols, p.block[0],
                                  p.block[1], p.has_zeros());
}

LinearTensor pack(const std::vector<float>& w, int64_t rows, int64_t cols, WeightFormat f,
                  int64_t group = 32) {
  LinearTensor src;
  src.weight = Tensor::empty(moert::DType::f32, {rows, cols});
  std::memcpy(src.weight.data(), w.data(), w.size() * sizeof(float));
  return moert::quantize_linear(src, f, group, 2);
}

std::vector<float> normal(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

RandomWeights weights(const std::string& dtype) {
  RandomWeights w;
  w.dtype = dtype;
  w.seed = 3;
  w.name = "test-config";
  return w;
}

std::unique_ptr<Model> random_model(const nlohmann::json& config, const std::string& dtype,
                                    const std::string& quantize = "") {
  moert::LoadOptions o;
  o.device = "reference";
  o.quantize = quantize;
  return Model::random(config.dump(), weights(dtype), o);
}

const Tensor& constant(const Model& m, const std::string& name) {
  const moert::ValueId id = m.graph().find(name);
  if (id == moert::kNoValue) throw std::runtime_error("no constant " + name);
  return m.graph().value(id).data;
}

// RMS of (got - want) over the RMS of want.
double relative_rms(const Tensor& got, const Tensor& want) {
  std::vector<double> g = got.to_doubles(), w = want.to_doubles();
  double err = 0, norm = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    err += (g[i] - w[i]) * (g[i] - w[i]);
    norm += w[i] * w[i];
  }
  return std::sqrt(err / norm);
}

const std::vector<int32_t> kPrompt = {1, 7, 200, 42, 5, 9};

}  // namespace

TEST(Quantize, Int8IsSymmetricWithTheAmaxOver127Scale) {
  const int64_t rows = 3, cols = 80;  // the last group of each row is partial (16)
  std::vector<float> w = normal(rows * cols, 1, 0.05f);
  LinearTensor p = pack(w, rows, cols, WeightFormat::int8);
  ASSERT_EQ(p.weight.dtype(), moert::DType::i8);
  ASSERT_EQ(p.weight.shape(), (std::vector<int64_t>{3, 80}));
  ASSERT_EQ(p.scale.dtype(), moert::DType::f16);
  ASSERT_EQ(p.scale.shape(), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(p.block, (std::vector<int64_t>{1, 32}));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < 3; ++g) {
      float amax = 0;
      for (int64_t c = g * 32; c < std::min<int64_t>(cols, g * 32 + 32); ++c)
        amax = std::max(amax, std::fabs(w[static_cast<size_t>(r * cols + c)]));
      const uint16_t bits = p.scale.data_as<uint16_t>()[r * 3 + g];
      EXPECT_EQ(bits, moert::f32_to_f16(amax / 127.0f));
      const double d = moert::f16_to_f32(bits);
      for (int64_t c = g * 32; c < std::min<int64_t>(cols, g * 32 + 32); ++c) {
        const double x = w[static_cast<size_t>(r * cols + c)];
        const int q = p.weight.data_as<int8_t>()[r * cols + c];
        EXPECT_EQ(q, static_cast<int>(std::clamp(std::nearbyint(x / d), -127.0, 127.0)));
        EXPECT_NEAR(value(p, r, c, cols), x, d / 2 + 1e-9);
      }
    }
}

TEST(Quantize, Int4IsLlamaCppQ4_0) {
  // One group: the value of largest magnitude is negative, -0.8: d = 0.1, it
  // becomes q = 0 exactly; +0.75 rounds to q = 15 (7.5 + 8.5 floors to 16,
  // clamped), the group's other side is one step short.
  std::vector<float> w(32, 0.0f);
  w[0] = -0.8f;
  w[1] = 0.75f;
  w[2] = 0.149f;  // 1.49 + 8.5 -> 9
  w[3] = 0.151f;  // 1.51 + 8.5 -> 10
  w[4] = -0.04f;  // -0.4 + 8.5 -> 8
  LinearTensor p = pack(w, 1, 32, WeightFormat::int4);
  ASSERT_EQ(p.weight.dtype(), moert::DType::u8);
  ASSERT_EQ(p.weight.shape(), (std::vector<int64_t>{1, 16}));
  ASSERT_EQ(p.scale.shape(), (std::vector<int64_t>{1, 1}));  // symmetric: no zero points
  const uint16_t bits = p.scale.data_as<uint16_t>()[0];
  EXPECT_EQ(bits, moert::f32_to_f16(-0.8f / -8.0f));
  const uint8_t* b = p.weight.data_as<uint8_t>();
  EXPECT_EQ(moert::ops::nibble(b, 0), 0u);
  EXPECT_EQ(moert::ops::nibble(b, 1), 15u);
  EXPECT_EQ(moert::ops::nibble(b, 2), 9u);
  EXPECT_EQ(moert::ops::nibble(b, 3), 10u);
  EXPECT_EQ(moert::ops::nibble(b, 4), 8u);
  EXPECT_EQ(moert::ops::nibble(b, 5), 8u);  // 0
  const double d = moert::f16_to_f32(bits);
  EXPECT_DOUBLE_EQ(value(p, 0, 0, 32), -8 * d);
  EXPECT_DOUBLE_EQ(value(p, 0, 1, 32), 7 * d);

  // Random rows: every value within one step (half a step but at the clamped
  // top), odd columns in the high nibble.
  const int64_t rows = 4, cols = 70;
  std::vector<float> v = normal(rows * cols, 2);
  LinearTensor q = pack(v, rows, cols, WeightFormat::int4);
  ASSERT_EQ(q.weight.shape(), (std::vector<int64_t>{4, 35}));
  ASSERT_EQ(q.scale.shape(), (std::vector<int64_t>{4, 3}));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double step = std::fabs(moert::f16_to_f32(q.scale.data_as<uint16_t>()[r * 3 + c / 32]));
      EXPECT_NEAR(value(q, r, c, cols), v[static_cast<size_t>(r * cols + c)], step + 1e-9);
    }
}

TEST(Quantize, Mxfp4SharesTheExponentOfAmaxOver6RoundedUp) {
  // amax 6: 6 / 6 = 1 = 2^0, e8m0 127; the e2m1 grid is then exact, and the
  // midpoints round to the even code: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1,
  // 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
  std::vector<float> w = {6.0f,  -4.0f, 3.0f, 0.5f,  -1.5f, 0.25f, 0.75f, 1.25f,
                          1.75f, 2.5f,  3.5f, -5.0f, 0.0f,  0.1f,  -0.3f, 2.0f};
  w.resize(32, 1.0f);
  LinearTensor p = pack(w, 1, 32, WeightFormat::mxfp4);
  ASSERT_EQ(p.weight.shape(), (std::vector<int64_t>{1, 16}));
  ASSERT_EQ(p.scale.dtype(), moert::DType::u8);
  ASSERT_EQ(p.scale.shape(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(p.scale.data_as<uint8_t>()[0], 127);
  const std::vector<double> want = {6, -4, 3, 0.5, -1.5, 0, 1, 1, 2, 2, 4, -4, 0, 0, -0.5, 2};
  for (size_t c = 0; c < want.size(); ++c)
    EXPECT_EQ(value(p, 0, static_cast<int64_t>(c), 32), want[c]) << c;

  // amax 6.5: 6.5 / 6 rounds up to 2, e8m0 128, nothing saturates.
  w[0] = 6.5f;
  p = pack(w, 1, 32, WeightFormat::mxfp4);
  EXPECT_EQ(p.scale.data_as<uint8_t>()[0], 128);
  EXPECT_EQ(value(p, 0, 0, 32), 6.0);  // 3.25 -> 3 (e2m1), times 2
  // A group of zeros.
  std::vector<float> z(32, 0.0f);
  p = pack(z, 1, 32, WeightFormat::mxfp4);
  for (int64_t c = 0; c < 32; ++c) EXPECT_EQ(value(p, 0, c, 32), 0.0);

  // Random rows (a partial last group): within half an e2m1 step (at most 1
  // at the top of the grid, times the scale) of the values.
  const int64_t rows = 3, cols = 72;
  std::vector<float> v = normal(rows * cols, 3, 0.02f);
  LinearTensor q = pack(v, rows, cols, WeightFormat::mxfp4);
  ASSERT_EQ(q.scale.shape(), (std::vector<int64_t>{3, 3}));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double s = moert::ops::e8m0_value(q.scale.data_as<uint8_t>()[r * 3 + c / 32]);
      const double x = v[static_cast<size_t>(r * cols + c)];
      ASSERT_LE(std::fabs(x) / s, 6.0);  // rounded up: no saturation
      EXPECT_NEAR(value(q, r, c, cols), x, s + 1e-12);
    }
}

TEST(Quantize, GroupOfMinusOneIsOneGroupPerRowAndFp8IsDequantisedFirst) {
  std::vector<float> w = normal(2 * 48, 4);
  LinearTensor p = pack(w, 2, 48, WeightFormat::int8, -1);
  EXPECT_EQ(p.block, (std::vector<int64_t>{1, 48}));
  EXPECT_EQ(p.scale.shape(), (std::vector<int64_t>{2, 1}));

  // An e4m3 weight with a 128x128 block scale of 0.5: the values quantised
  // are the e4m3 values times 0.5.
  LinearTensor fp8;
  fp8.weight = Tensor::empty(moert::DType::f8_e4m3, {2, 32});
  fp8.scale = Tensor::from_doubles(moert::DType::f32, {1, 1}, {0.5});
  fp8.block = {128, 128};
  std::vector<float> e4m3_values(64);
  for (int64_t i = 0; i < 64; ++i) {
    const float x = static_cast<float>(i % 17) - 8.0f;
    fp8.weight.data_as<uint8_t>()[i] = moert::f32_to_e4m3(x);
    e4m3_values[static_cast<size_t>(i)] = x * 0.5f;
  }
  LinearTensor q = moert::quantize_linear(fp8, WeightFormat::int8, 32, 1);
  LinearTensor direct = pack(e4m3_values, 2, 32, WeightFormat::int8);
  ASSERT_EQ(q.weight.nbytes(), direct.weight.nbytes());
  EXPECT_EQ(std::memcmp(q.weight.data(), direct.weight.data(), q.weight.nbytes()), 0);
  EXPECT_EQ(std::memcmp(q.scale.data(), direct.scale.data(), q.scale.nbytes()), 0);
}

TEST(QuantizeOnLoad, RandomModelsPackTheLayerLinearsOnly) {
  auto bf16 = random_model(moert::testing::tiny_qwen2_moe(), "bf16");
  auto int4 = random_model(moert::testing::tiny_qwen2_moe(), "int4");
  EXPECT_THAT(int4->info().weight_dtype, HasSubstr("int4 g32"));
  EXPECT_THAT(int4->info().weight_dtype, HasSubstr("bf16"));
  EXPECT_EQ(int4->summary().weight_dtype, int4->info().weight_dtype);
  EXPECT_THAT(int4->summary().str(), HasSubstr("int4 g32"));
  // Packed: attention, experts, shared expert (u8 + f16 scales, groups of 32).
  for (const char* name :
       {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.experts.*.down_proj.weight",
        "model.layers.0.mlp.shared_expert.up_proj.weight"}) {
    const Tensor& t = constant(*int4, name);
    EXPECT_EQ(t.dtype(), moert::DType::u8) << name;
    EXPECT_EQ(constant(*int4, std::string(name) + "_scale").dtype(), moert::DType::f16) << name;
  }
  EXPECT_EQ(constant(*int4, "model.layers.1.mlp.experts.*.down_proj.weight").shape(),
            (std::vector<int64_t>{4, 64, 16}));
  // Not packed: embeddings (tied to lm_head here), routers, the shared-expert
  // gate, norms, biases.
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.mlp.gate.weight",
                           "model.layers.0.mlp.shared_expert_gate.weight", "model.norm.weight",
                           "model.layers.0.self_attn.q_proj.bias"})
    EXPECT_EQ(constant(*int4, name).dtype(), moert::DType::bf16) << name;
  // The nodes say so (op version 2 only where packed).
  for (const moert::Node& n : int4->graph().nodes()) {
    if (n.op == "moe") {
      EXPECT_EQ(n.attrs.get_string("quant", ""), "int4");
      EXPECT_EQ(n.attrs.get_string("shared_quant", ""), "int4");
      EXPECT_EQ(n.attrs.get_ints("block_size", {}), (std::vector<int64_t>{1, 32}));
    }
    if (n.name == "lm_head" || n.name.ends_with("router_logits")) {
      EXPECT_FALSE(n.attrs.has("quant")) << n.name;
    }
  }
  // The same parameters; fewer bytes.
  EXPECT_EQ(int4->summary().total_params, bf16->summary().total_params);
  EXPECT_EQ(int4->summary().active_params, bf16->summary().active_params);
  EXPECT_LT(int4->summary().weight_bytes, bf16->summary().weight_bytes);

  // Logits near the bf16 model's.  int8's error per weight is at most half
  // a step, amax / 254 (an RMS near 0.3% of the weights' for groups of 32
  // normal values); int4's step is 16 times larger and mxfp4's e2m1 grid
  // coarser still at its top: both stay well under the fp8-style bound of
  // test_random_model (0.25), routing flips included.
  const Tensor want = bf16->forward(kPrompt);
  EXPECT_LT(
      relative_rms(random_model(moert::testing::tiny_qwen2_moe(), "int8")->forward(kPrompt), want),
      1e-2);
  EXPECT_LT(relative_rms(int4->forward(kPrompt), want), 0.2);
  auto mx = random_model(moert::testing::tiny_qwen2_moe(), "mxfp4");
  EXPECT_THAT(mx->info().weight_dtype, HasSubstr("mxfp4"));
  EXPECT_LT(relative_rms(mx->forward(kPrompt), want), 0.25);
}

TEST(QuantizeOnLoad, DtypeAndQuantizeOptionAreTheSame) {
  // RandomWeights::dtype "int8" is the bf16 model with quantize "int8";
  // DeepSeek-V3 (MLA, partial groups: hidden 200) from fp8 weights too.
  const Tensor a = random_model(moert::testing::tiny_deepseek_v3(), "int8")->forward(kPrompt);
  const Tensor b =
      random_model(moert::testing::tiny_deepseek_v3(), "bf16", "int8")->forward(kPrompt);
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
  auto from_fp8 = random_model(moert::testing::tiny_deepseek_v3(), "fp8", "mxfp4");
  EXPECT_THAT(from_fp8->info().weight_dtype, HasSubstr("mxfp4"));
  EXPECT_THAT(from_fp8->info().weight_dtype, Not(HasSubstr("fp8")));
  // This tiny DeepSeek-V3 amplifies weight noise (its fp8 model is 0.17 from
  // the f32 one, its bf16 -> mxfp4 one 0.27): 0.5 of the fp8 model's logits
  // still tells packed values from wrong ones (unrelated logits: about 1.4).
  const Tensor want = random_model(moert::testing::tiny_deepseek_v3(), "fp8")->forward(kPrompt);
  EXPECT_LT(relative_rms(from_fp8->forward(kPrompt), want), 0.5);
}

TEST(QuantizeOnLoad, ThreadCountDoesNotChangeTheWeights) {
  RandomWeights one = weights("int4"), many = weights("int4");
  one.threads = 1;
  many.threads = 4;
  moert::LoadOptions o;
  const auto a = Model::random(moert::testing::tiny_mixtral().dump(), one, o);
  const auto b = Model::random(moert::testing::tiny_mixtral().dump(), many, o);
  const std::string name = "model.layers.1.block_sparse_moe.experts.*.w2.weight";
  for (const std::string& n : {name, name + "_scale"}) {
    const Tensor& x = constant(*a, n);
    const Tensor& y = constant(*b, n);
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.nbytes()), 0) << n;
  }
}

TEST(QuantizeOnLoad, BadOptionsAreNamed) {
  auto error = [](const std::string& dtype, const std::string& quantize) {
    try {
      random_model(moert::testing::tiny_mixtral(), dtype, quantize);
    } catch (const moert::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error("bf16", "int3"), HasSubstr("load option quantize must be"));
  EXPECT_THAT(error("bf16", "int3"), HasSubstr("'int3'"));
  EXPECT_THAT(error("bf16", "none"), HasSubstr("'none'"));
  EXPECT_THAT(error("int4", "int8"), HasSubstr("test-config: random weights of dtype 'int4'"));
  EXPECT_THAT(error("int5", ""), HasSubstr("f32, bf16, f16, fp8, int8, int4 or mxfp4"));
  EXPECT_EQ(error("int4", "int4"), "");
}

// LoadOptions::precision: "fast" (the default) marks every linear and moe
// node with narrow weights products = "bf16" ("int8" when packed), except
// the routers' linears;
// "exact" marks none; f32 weights are never marked (nothing to gain).
TEST(Precision, FastMarksNarrowProductsExceptRoutersAndExactMarksNone) {
  auto marked = [](const Model& m) {
    std::vector<std::string> names;
    for (const moert::Node& n : m.graph().nodes())
      if (n.attrs.get_string("products", "exact") != "exact") names.push_back(n.name);
    return names;
  };
  auto load = [](const std::string& dtype, const std::string& precision) {
    moert::LoadOptions o;
    o.precision = precision;
    return Model::random(moert::testing::tiny_qwen2_moe().dump(), weights(dtype), o);
  };
  for (const char* dtype : {"bf16", "int4", "fp8"}) {
    const auto fast = load(dtype, "fast");
    const std::vector<std::string> names = marked(*fast);
    EXPECT_THAT(names, Contains("model.layers.0.self_attn.q_proj")) << dtype;
    EXPECT_THAT(names, Contains("model.layers.0.mlp.moe")) << dtype;
    EXPECT_THAT(names, Contains("lm_head")) << dtype;
    for (const std::string& n : names) EXPECT_FALSE(n.ends_with("router_logits")) << n;
    EXPECT_THAT(marked(*load(dtype, "exact")), IsEmpty()) << dtype;
  }
  EXPECT_THAT(marked(*load("f32", "fast")), IsEmpty());
  // Packed weights take "int8", the others "bf16".  (The model is named: a
  // range-for over a temporary's member would outlive the temporary.)
  const auto int4 = load("int4", "fast");
  for (const moert::Node& n : int4->graph().nodes()) {
    if (n.name == "model.layers.0.mlp.moe" || n.name == "model.layers.0.self_attn.q_proj") {
      EXPECT_EQ(n.attrs.get_string("products", ""), "int8") << n.name;
    } else if (n.name == "lm_head") {
      EXPECT_EQ(n.attrs.get_string("products", ""), "bf16");
    }
  }
  // The marks change nothing on the reference backend, which forms exact
  // products whatever the mode.
  const Tensor a = load("bf16", "fast")->forward(kPrompt);
  const Tensor b = load("bf16", "exact")->forward(kPrompt);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
  try {
    load("bf16", "quick");
    ADD_FAILURE() << "precision \"quick\" was accepted";
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("load option precision must be \"fast\" or \"exact\""));
    EXPECT_THAT(e.what(), HasSubstr("\"quick\""));
  }
}
