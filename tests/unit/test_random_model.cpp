// Model::random: models with random weights built from a config.json body
// alone — they run, are reproducible from the seed, follow the weight
// conventions (N(0, 0.02²) matrices, norms 1.0, fp8 with 128x128 block
// scales), and a bad config is refused naming the field.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "models/random_weights.h"
#include "moert/dtype.h"
#include "moert/error.h"
#include "moert/model.h"
#include "support/tiny_configs.h"

using moert::Model;
using moert::RandomWeights;
using moert::Tensor;
using moert::testing::tiny_deepseek_v3;
using moert::testing::tiny_mixtral;
using moert::testing::tiny_qwen2_moe;
using ::testing::HasSubstr;

namespace {

RandomWeights weights(const std::string& dtype, uint64_t seed = 0) {
  RandomWeights w;
  w.dtype = dtype;
  w.seed = seed;
  w.name = "test-config";
  return w;
}

std::unique_ptr<Model> build(const nlohmann::json& config, const RandomWeights& w) {
  moert::LoadOptions o;
  o.device = "reference";
  return Model::random(config.dump(), w, o);
}

const std::vector<int32_t> kPrompt = {1, 7, 200, 42, 5};

// The message of the moert::Error building `config` throws ("" when none).
std::string error_of(const nlohmann::json& config, const RandomWeights& w = weights("bf16")) {
  try {
    build(config, w);
  } catch (const moert::Error& e) {
    return e.what();
  }
  return "";
}

const Tensor& constant(const Model& m, const std::string& name) {
  const moert::ValueId id = m.graph().find(name);
  if (id == moert::kNoValue) throw std::runtime_error("no constant " + name);
  return m.graph().value(id).data;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_doubles(), y = b.to_doubles();
  double d = 0;
  for (size_t i = 0; i < x.size(); ++i) d = std::max(d, std::fabs(x[i] - y[i]));
  return d;
}

double max_abs(const Tensor& a) {
  double m = 0;
  for (double v : a.to_doubles()) m = std::max(m, std::fabs(v));
  return m;
}

}  // namespace

TEST(RandomModel, TinyMixtralBuildsAndRunsOnReference) {
  auto m = build(tiny_mixtral(), weights("bf16"));
  EXPECT_EQ(m->info().model_type, "mixtral");
  EXPECT_EQ(m->info().vocab_size, 512);
  EXPECT_EQ(m->info().num_experts, 4);
  EXPECT_EQ(m->info().max_context, 256);
  EXPECT_EQ(m->info().weight_dtype, "bf16");
  // embed + lm_head + final norm + per layer (2 norms, q k v o, router, 4 × 3 experts).
  const int64_t per_layer = 2 * 64 + (64 + 32 + 32 + 64) * 64 + 4 * 64 + 4 * 3 * 96 * 64;
  EXPECT_EQ(m->summary().total_params, 2 * 512 * 64 + 64 + 2 * per_layer);
  EXPECT_EQ(m->summary().weight_bytes, static_cast<uint64_t>(2 * m->summary().total_params));

  Tensor logits = m->forward(kPrompt);
  ASSERT_EQ(logits.shape(), (std::vector<int64_t>{5, 512}));
  std::vector<double> v = logits.to_doubles();
  for (double x : v) ASSERT_TRUE(std::isfinite(x));
  EXPECT_GT(max_abs(logits), 1e-3);  // not degenerate
  // Cached decoding agrees with the full forward.
  moert::Session s = m->session();
  s.append({1, 7, 200, 42});
  Tensor last = s.append({5});
  std::vector<double> row = last.to_doubles();
  for (size_t i = 0; i < row.size(); ++i) EXPECT_NEAR(row[i], v[4 * 512 + i], 1e-5);
  moert::GenerateOptions g;
  g.max_new_tokens = 4;
  EXPECT_EQ(m->generate(kPrompt, g).size(), 4u);
}

TEST(RandomModel, SameSeedSameLogits) {
  Tensor a = build(tiny_mixtral(), weights("bf16", 7))->forward(kPrompt);
  Tensor b = build(tiny_mixtral(), weights("bf16", 7))->forward(kPrompt);
  Tensor c = build(tiny_mixtral(), weights("bf16", 8))->forward(kPrompt);
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
  EXPECT_GT(max_abs_diff(a, c), 1e-4);
}

TEST(RandomModel, WeightsDoNotDependOnTheThreadCount) {
  RandomWeights one = weights("fp8", 3), many = weights("fp8", 3);
  one.threads = 1;
  many.threads = 5;
  auto a = build(tiny_deepseek_v3(), one), b = build(tiny_deepseek_v3(), many);
  size_t constants = 0;
  for (const moert::Value& v : a->graph().values()) {
    if (v.kind != moert::ValueKind::constant) continue;
    const Tensor& other = constant(*b, v.name);
    ASSERT_EQ(v.data.nbytes(), other.nbytes()) << v.name;
    EXPECT_EQ(std::memcmp(v.data.data(), other.data(), other.nbytes()), 0) << v.name;
    ++constants;
  }
  EXPECT_GT(constants, 20u);
}

TEST(RandomModel, ValuesFollowTheConvention) {
  auto m = build(tiny_mixtral(), weights("f32"));
  EXPECT_EQ(m->info().weight_dtype, "f32");
  // Matrices N(0, 0.02²): 4 × 96 × 64 values of the stacked w1.
  const Tensor& w1 = constant(*m, "model.layers.0.block_sparse_moe.experts.*.w1.weight");
  ASSERT_EQ(w1.shape(), (std::vector<int64_t>{4, 96, 64}));
  double sum = 0, sq = 0;
  for (double x : w1.to_doubles()) {
    sum += x;
    sq += x * x;
    EXPECT_LE(std::fabs(x), 0.02 * 3.47);
  }
  const double n = static_cast<double>(w1.numel());
  EXPECT_NEAR(sum / n, 0.0, 0.001);
  EXPECT_NEAR(std::sqrt(sq / n - (sum / n) * (sum / n)), 0.02, 0.0005);
  // Norm weights 1.0.
  for (double x : constant(*m, "model.layers.1.input_layernorm.weight").to_doubles())
    EXPECT_EQ(x, 1.0);
  for (double x : constant(*m, "model.norm.weight").to_doubles()) EXPECT_EQ(x, 1.0);
  // Two different tensors differ.
  EXPECT_GT(max_abs_diff(constant(*m, "model.layers.0.self_attn.q_proj.weight"),
                         constant(*m, "model.layers.0.self_attn.o_proj.weight")),
            0.01);
}

TEST(RandomModel, DtypesAreRoundingsOfTheSameValues) {
  auto f32 = build(tiny_deepseek_v3(), weights("f32"));
  auto bf16 = build(tiny_deepseek_v3(), weights("bf16"));
  auto f16 = build(tiny_deepseek_v3(), weights("f16"));
  auto fp8 = build(tiny_deepseek_v3(), weights("fp8"));
  EXPECT_THAT(f16->info().weight_dtype, HasSubstr("f16"));
  EXPECT_THAT(fp8->info().weight_dtype, HasSubstr("fp8 e4m3"));
  EXPECT_THAT(fp8->info().weight_dtype, HasSubstr("bf16"));

  const std::string name = "model.layers.1.mlp.experts.*.down_proj.weight";
  const Tensor& exact = constant(*f32, name);
  std::vector<double> x = exact.to_doubles();
  std::vector<double> b = constant(*bf16, name).to_doubles();
  std::vector<double> h = constant(*f16, name).to_doubles();
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(b[i], moert::bf16_to_f32(moert::f32_to_bf16(static_cast<float>(x[i]))));
    EXPECT_EQ(h[i], moert::f16_to_f32(moert::f32_to_f16(static_cast<float>(x[i]))));
  }
  // fp8: e4m3 values with f32 block scales [E, ⌈200/128⌉, ⌈72/128⌉] that
  // dequantise to the f32 values within e4m3's rounding.
  const Tensor& q = constant(*fp8, name);
  const Tensor& scale = constant(*fp8, "model.layers.1.mlp.experts.*.down_proj.weight_scale_inv");
  ASSERT_EQ(q.dtype(), moert::DType::f8_e4m3);
  ASSERT_EQ(scale.dtype(), moert::DType::f32);
  ASSERT_EQ(scale.shape(), (std::vector<int64_t>{8, 2, 1}));
  std::vector<double> qv = q.to_doubles(), sv = scale.to_doubles();
  for (int64_t e = 0; e < 8; ++e)
    for (int64_t r = 0; r < 200; ++r)
      for (int64_t c = 0; c < 72; ++c) {
        const size_t i = static_cast<size_t>((e * 200 + r) * 72 + c);
        const double s = sv[static_cast<size_t>(e * 2 + r / 128)];
        ASSERT_NEAR(qv[i] * s, x[i], std::fabs(x[i]) / 16 + s / 512 + 1e-12) << i;
      }
  // The block's largest magnitude lands on 448.
  double amax = 0;
  for (int64_t r = 0; r < 128; ++r)
    for (int64_t c = 0; c < 72; ++c)
      amax = std::max(amax, std::fabs(qv[static_cast<size_t>(r * 72 + c)]));
  EXPECT_EQ(amax, 448.0);
  // Only linear weights in layers are fp8; the score bias is f32 in every mode.
  EXPECT_EQ(constant(*fp8, "model.layers.1.mlp.gate.weight").dtype(), moert::DType::bf16);
  EXPECT_EQ(constant(*fp8, "model.embed_tokens.weight").dtype(), moert::DType::bf16);
  EXPECT_EQ(constant(*fp8, "lm_head.weight").dtype(), moert::DType::bf16);
  EXPECT_EQ(constant(*fp8, "model.layers.0.mlp.gate_proj.weight").dtype(), moert::DType::f8_e4m3);
  EXPECT_EQ(constant(*fp8, "model.layers.0.self_attn.q_b_proj.weight").dtype(),
            moert::DType::f8_e4m3);
  EXPECT_EQ(constant(*bf16, "model.layers.1.mlp.gate.e_score_correction_bias").dtype(),
            moert::DType::f32);

  // Every variant runs, and the logits stay near the f32 model's.
  Tensor want = f32->forward(kPrompt);
  const double scale_of_logits = max_abs(want);
  ASSERT_GT(scale_of_logits, 1e-3);
  EXPECT_LT(max_abs_diff(bf16->forward(kPrompt), want), 0.05 * scale_of_logits);
  EXPECT_LT(max_abs_diff(f16->forward(kPrompt), want), 0.01 * scale_of_logits);
  // fp8's coarser rounding flips some expert choices: compare the RMS.
  std::vector<double> got = fp8->forward(kPrompt).to_doubles(), ref = want.to_doubles();
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err += (got[i] - ref[i]) * (got[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  EXPECT_LT(std::sqrt(err / norm), 0.25);
}

TEST(RandomModel, QwenWithBiasesSharedGateAndTiedEmbeddings) {
  auto m = build(tiny_qwen2_moe(), weights("bf16"));
  EXPECT_EQ(m->graph().find("lm_head.weight"), moert::kNoValue);
  EXPECT_NE(m->graph().find("model.layers.0.self_attn.q_proj.bias"), moert::kNoValue);
  EXPECT_NE(m->graph().find("model.layers.1.mlp.shared_expert_gate.weight"), moert::kNoValue);
  Tensor logits = m->forward({3, 1, 4, 1, 5});
  for (double x : logits.to_doubles()) ASSERT_TRUE(std::isfinite(x));
}

TEST(RandomModel, ProgressCountsGeneratedBytes) {
  uint64_t build_done = 0, build_total = 0, prepare_total = 0;
  std::vector<std::string> stages;
  moert::LoadOptions o;
  o.progress = [&](const std::string& stage, uint64_t done, uint64_t total) {
    if (stages.empty() || stages.back() != stage) stages.push_back(stage);
    if (stage == "build") {
      EXPECT_LE(done, total);
      EXPECT_GE(done, build_done);
      build_done = done;
      build_total = total;
    }
    if (stage == "prepare") prepare_total = total;
  };
  auto m = Model::random(tiny_mixtral().dump(), weights("fp8"), o);
  EXPECT_EQ(stages, (std::vector<std::string>{"build", "prepare"}));
  EXPECT_EQ(build_done, build_total);
  EXPECT_EQ(build_total, m->summary().weight_bytes);
  EXPECT_EQ(prepare_total, m->summary().weight_bytes);
}

TEST(RandomModel, ProgressMayAbort) {
  moert::LoadOptions o;
  o.progress = [](const std::string&, uint64_t, uint64_t) { throw moert::Error("stop"); };
  EXPECT_THROW(Model::random(tiny_mixtral().dump(), weights("bf16"), o), moert::Error);
}

TEST(RandomModel, BadConfigNamesTheField) {
  nlohmann::json c = tiny_mixtral();
  c.erase("hidden_size");
  EXPECT_THAT(error_of(c), HasSubstr("test-config: 'hidden_size' is missing"));

  c = tiny_mixtral();
  c["intermediate_size"] = -5;
  EXPECT_THAT(error_of(c), HasSubstr("'intermediate_size' must be positive"));

  c = tiny_mixtral();
  c["num_experts_per_tok"] = 9;
  EXPECT_THAT(error_of(c), HasSubstr("'num_experts_per_tok'"));

  c = tiny_mixtral();
  c["vocab_size"] = "large";
  EXPECT_THAT(error_of(c), HasSubstr("'vocab_size' must be an integer"));

  c = tiny_mixtral();
  c["model_type"] = "gpt2";
  EXPECT_THAT(error_of(c), HasSubstr("unknown model_type 'gpt2'"));

  c = tiny_deepseek_v3();
  c["kv_lora_rank"] = 0;
  EXPECT_THAT(error_of(c), HasSubstr("'kv_lora_rank' must be positive"));

  c = tiny_deepseek_v3();
  c["n_group"] = 3;
  EXPECT_THAT(error_of(c), HasSubstr("'n_group' must divide"));

  c = tiny_deepseek_v3();
  c["moe_intermediate_size"] = 0;
  EXPECT_THAT(error_of(c), HasSubstr("'moe_intermediate_size' must be positive"));

  EXPECT_THAT(error_of(tiny_mixtral(), weights("int3")),
              HasSubstr("dtype must be f32, bf16, f16, fp8, int8, int4 or mxfp4, or int8-experts, "
                        "int4-experts or mxfp4-experts, got 'int3'"));
  try {
    Model::random("{\"vocab_size\": 5", weights("bf16"));
    ADD_FAILURE() << "no error";
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("test-config: invalid JSON"));
  }
  EXPECT_THROW(Model::random("[1, 2]", weights("bf16")), moert::Error);
}

TEST(RandomModel, MaxContextAndActivationDtype) {
  moert::LoadOptions o;
  o.dtype = moert::DType::bf16;
  o.max_context = 16;
  auto m = Model::random(tiny_mixtral().dump(), weights("bf16"), o);
  EXPECT_EQ(m->info().max_context, 16);
  Tensor logits = m->forward(kPrompt);
  EXPECT_EQ(logits.dtype(), moert::DType::f32);
  moert::Session s = m->session();
  s.append(std::vector<int32_t>(16, 1));
  EXPECT_THROW(s.append({1}), moert::Error);
}

// The generator's conversions agree bit for bit with dtype.h's.
TEST(RandomWeightConversions, MatchDtypeH) {
  std::vector<uint32_t> patterns;
  std::mt19937_64 rng(11);
  for (int i = 0; i < 300000; ++i) patterns.push_back(static_cast<uint32_t>(rng()));
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 8191)
    patterns.push_back(static_cast<uint32_t>(bits));
  // Around every power of two and every rounding threshold that matters.
  for (float edge : {448.0f, 464.0f, 480.0f, 65504.0f, 65520.0f, 0x1p-6f, 0x1p-9f, 0x1p-10f,
                     0x1p-14f, 0x1p-24f, 0x1p-25f, 3.0e38f, 1.0f, 0.02f})
    for (int d = -600; d <= 600; ++d)
      patterns.push_back(
          static_cast<uint32_t>(static_cast<int64_t>(std::bit_cast<uint32_t>(edge)) + d));
  for (int e = -140; e < 128; ++e)
    for (int d = -3; d <= 3; ++d)
      patterns.push_back(std::bit_cast<uint32_t>(std::ldexp(1.0f, e)) + static_cast<uint32_t>(d));
  patterns.push_back(0x7F800000u);  // inf
  patterns.push_back(0x7FC00000u);  // NaN
  for (uint32_t p : std::vector<uint32_t>(patterns))
    patterns.push_back(p ^ 0x80000000u);  // both signs
  for (uint32_t p : patterns) {
    const float v = std::bit_cast<float>(p);
    ASSERT_EQ(moert::fast_f32_to_bf16(v), moert::f32_to_bf16(v)) << std::hexfloat << v;
    ASSERT_EQ(moert::fast_f32_to_f16(v), moert::f32_to_f16(v)) << std::hexfloat << v;
    ASSERT_EQ(moert::fast_f32_to_e4m3(v), moert::f32_to_e4m3(v)) << std::hexfloat << v;
  }
}

TEST(RandomWeightConversions, ValuesAreUnitNormalish) {
  const uint64_t key = moert::random_weight_key(0, "x");
  EXPECT_NE(key, moert::random_weight_key(1, "x"));
  EXPECT_NE(key, moert::random_weight_key(0, "y"));
  double sum = 0, sq = 0, quartic = 0;
  const int n = 1 << 20;
  for (int i = 0; i < n; ++i) {
    const double v = moert::random_weight_value(key, static_cast<uint64_t>(i));
    sum += v;
    sq += v * v;
    quartic += v * v * v * v;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.005);
  EXPECT_NEAR(sq / n, 1.0, 0.01);
  // Kurtosis of the four-part sum: 3 - 1.2 / 4 = 2.7 (a normal's is 3).
  EXPECT_NEAR(quartic / n, 2.7, 0.05);
}
