// Model, Session and generate() on a small Llama-style checkpoint written by
// the test itself (whole-model numerics against the NumPy reference are in
// tests/python/test_cpp_models.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "moert/error.h"
#include "moert/model.h"
#include "support/tiny_checkpoint.h"

namespace fs = std::filesystem;
using moert::Model;
using moert::Tensor;
using ::testing::HasSubstr;

namespace {

constexpr int64_t kVocab = 97, kHidden = 32, kInter = 48, kLayers = 2, kHeads = 4, kKvHeads = 2;

// Writes config.json and model.safetensors (f32, random) for a tiny Llama.
void write_checkpoint(const fs::path& dir) {
  fs::create_directories(dir);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"vocab_size", kVocab},
                           {"hidden_size", kHidden},
                           {"intermediate_size", kInter},
                           {"num_hidden_layers", kLayers},
                           {"num_attention_heads", kHeads},
                           {"num_key_value_heads", kKvHeads},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", 10000.0},
                           {"max_position_embeddings", 64},
                           {"tie_word_embeddings", false}};
  std::ofstream(dir / "config.json") << config.dump();
  moert_test::TensorShapes tensors = {{"model.embed_tokens.weight", {kVocab, kHidden}},
                                      {"model.norm.weight", {kHidden}},
                                      {"lm_head.weight", {kVocab, kHidden}}};
  const int64_t hd = kHidden / kHeads;
  for (int64_t l = 0; l < kLayers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    for (auto [n, s] :
         moert_test::TensorShapes{{"input_layernorm.weight", {kHidden}},
                                  {"post_attention_layernorm.weight", {kHidden}},
                                  {"self_attn.q_proj.weight", {kHeads * hd, kHidden}},
                                  {"self_attn.k_proj.weight", {kKvHeads * hd, kHidden}},
                                  {"self_attn.v_proj.weight", {kKvHeads * hd, kHidden}},
                                  {"self_attn.o_proj.weight", {kHidden, kHeads * hd}},
                                  {"mlp.gate_proj.weight", {kInter, kHidden}},
                                  {"mlp.up_proj.weight", {kInter, kHidden}},
                                  {"mlp.down_proj.weight", {kHidden, kInter}}})
      tensors.push_back({p + n, s});
  }
  moert_test::write_random_safetensors(dir / "model.safetensors", tensors, 3);
}

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("moert_model_test_" + std::to_string(::getpid()));
    write_checkpoint(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
};
fs::path ModelTest::dir_;

moert::GenerateOptions up_to(int64_t n) {
  moert::GenerateOptions o;
  o.max_new_tokens = n;
  return o;
}

int32_t argmax_last(const Tensor& logits) {
  const float* p = logits.data_as<float>() + (logits.dim(0) - 1) * logits.dim(1);
  return static_cast<int32_t>(std::max_element(p, p + logits.dim(1)) - p);
}

}  // namespace

TEST_F(ModelTest, InfoComesFromConfig) {
  auto m = Model::load(dir_.string());
  EXPECT_EQ(m->info().model_type, "llama");
  EXPECT_EQ(m->info().vocab_size, kVocab);
  EXPECT_EQ(m->info().num_layers, kLayers);
  EXPECT_EQ(m->info().max_context, 64);
  EXPECT_EQ(m->info().weight_dtype, "f32");
}

TEST_F(ModelTest, SessionAppendEqualsForwardRows) {
  auto m = Model::load(dir_.string());
  std::vector<int32_t> ids = {5, 17, 3, 88, 41, 9};
  Tensor all = m->forward(ids);
  ASSERT_EQ(all.shape(), (std::vector<int64_t>{6, kVocab}));
  moert::Session s = m->session();
  Tensor a = s.append({5, 17, 3, 88});
  Tensor b = s.append({41});
  Tensor c = s.append({9});
  EXPECT_EQ(s.position(), 6);
  auto rows = [&](const Tensor& t) { return t.to_doubles(); };
  std::vector<double> want = rows(all), got = rows(a);
  std::vector<double> gb = rows(b), gc = rows(c);
  got.insert(got.end(), gb.begin(), gb.end());
  got.insert(got.end(), gc.begin(), gc.end());
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-4 * (1 + std::fabs(want[i]))) << i;
}

TEST_F(ModelTest, GreedyGenerateIsTheArgmaxChain) {
  auto m = Model::load(dir_.string());
  std::vector<int32_t> prompt = {1, 2, 3};
  std::vector<int32_t> out = m->generate(prompt, up_to(6));
  ASSERT_EQ(out.size(), 6u);
  std::vector<int32_t> seq = prompt;
  for (int32_t t : out) {
    EXPECT_EQ(argmax_last(m->forward(seq)), t);
    seq.push_back(t);
  }
}

TEST_F(ModelTest, StopTokensAndStreaming) {
  auto m = Model::load(dir_.string());
  std::vector<int32_t> greedy = m->generate({1, 2, 3}, up_to(6));
  moert::GenerateOptions o;
  o.max_new_tokens = 6;
  o.stop_tokens = {greedy[2]};
  std::vector<int32_t> stopped = m->generate({1, 2, 3}, o);
  // Ends at the first occurrence of the stop token, which is included.
  auto first = std::find(greedy.begin(), greedy.end(), greedy[2]);
  EXPECT_EQ(stopped, std::vector<int32_t>(greedy.begin(), first + 1));
  std::vector<int32_t> streamed;
  m->generate({1, 2, 3}, up_to(6), [&](int32_t t) {
    streamed.push_back(t);
    return streamed.size() < 4;
  });
  EXPECT_EQ(streamed, std::vector<int32_t>(greedy.begin(), greedy.begin() + 4));
}

TEST_F(ModelTest, SamplingIsSeeded) {
  auto m = Model::load(dir_.string());
  moert::GenerateOptions o;
  o.max_new_tokens = 12;
  o.sampling = {2.0, 0, 1.0, 77};
  std::vector<int32_t> a = m->generate({4, 5}, o), b = m->generate({4, 5}, o);
  EXPECT_EQ(a, b);
  o.sampling.seed = 78;
  std::vector<int32_t> c = m->generate({4, 5}, o);
  EXPECT_NE(a, c) << "a hot temperature with another seed should change some token";
}

TEST_F(ModelTest, ContextOverflowAndBadTokensLeaveTheSessionUsable) {
  moert::LoadOptions lo;
  lo.max_context = 8;
  lo.kv_cache_tokens = 16;  // room for forward() beside the session
  auto m = Model::load(dir_.string(), lo);
  moert::Session s = m->session();
  Tensor first = s.append({1, 2, 3, 4, 5, 6});
  try {
    s.append({7, 8, 9});
    FAIL();
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("context overflow: 6 cached + 3 new tokens exceed max_context 8"));
  }
  try {
    s.append({kVocab});
    FAIL();
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("token id 97 at position 0 is outside the vocabulary [0, 97)"));
  }
  EXPECT_EQ(s.position(), 6);
  Tensor next = s.append({7});
  std::vector<double> want = m->forward({1, 2, 3, 4, 5, 6, 7}).to_doubles();
  std::vector<double> got = next.to_doubles();
  for (int64_t i = 0; i < kVocab; ++i)
    EXPECT_NEAR(got[static_cast<size_t>(i)], want[static_cast<size_t>(6 * kVocab + i)], 1e-4);
}

TEST_F(ModelTest, LoadErrorsNameTheProblem) {
  try {
    Model::load((dir_ / "nope").string());
    FAIL();
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("nope: not a directory"));
  }
  fs::path broken = dir_.string() + "_broken";
  fs::create_directories(broken);
  std::ofstream(broken / "config.json") << "{ not json";
  try {
    Model::load(broken.string());
    FAIL();
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json: invalid JSON"));
  }
  std::ofstream(broken / "config.json") << R"({"model_type": "llama", "vocab_size": 10})";
  try {
    Model::load(broken.string());
    FAIL();
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json: 'hidden_size' is missing"));
  }
  fs::remove_all(broken);
  moert::LoadOptions lo;
  lo.device = "no-such-device";
  try {
    Model::load(dir_.string(), lo);
    FAIL();
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no-such-device"));
  }
}

TEST_F(ModelTest, SummaryCountsActiveParametersAndBytes) {
  auto m = Model::load(dir_.string());
  moert::ModelSummary s = m->summary();
  const int64_t hd = kHidden / kHeads;
  const int64_t per_layer = 2 * kHidden + (kHeads * hd + 2 * kKvHeads * hd) * kHidden +
                            kHidden * kHeads * hd + 3 * kInter * kHidden;
  const int64_t total = 2 * kVocab * kHidden + kHidden + kLayers * per_layer;
  EXPECT_EQ(s.total_params, total);
  // Dense model: everything is active but the embedding rows not looked up.
  EXPECT_EQ(s.active_params, total - (kVocab - 1) * kHidden);
  EXPECT_EQ(s.weight_bytes, static_cast<uint64_t>(total) * 4);
  EXPECT_EQ(s.bytes_per_token, static_cast<uint64_t>(s.active_params) * 4);
  // K and V, f32, per layer per position.
  EXPECT_EQ(s.kv_bytes_per_token, static_cast<uint64_t>(kLayers * 2 * kKvHeads * hd * 4));
  EXPECT_THAT(s.str(), HasSubstr("active per token"));
}

TEST_F(ModelTest, QuantizeOnLoadPacksTheLayerLinears) {
  auto plain = Model::load(dir_.string());
  moert::LoadOptions o;
  o.quantize = "int8";
  auto m = Model::load(dir_.string(), o);
  // Per layer: q, o [32, 32], k, v [16, 32], gate, up [48, 32], down [32, 48]
  // as int8 with one f16 scale per row and 32 columns (down: 2 per row);
  // lm_head [vocab, 32] int8 too.
  const int64_t packed = 2 * 32 * 32 + 2 * 16 * 32 + 3 * 48 * 32;
  const int64_t groups = 32 + 32 + 16 + 16 + 48 + 48 + 2 * 32;
  const int64_t head = kVocab * kHidden + 2 * kVocab * (kHidden / 32);
  const int64_t f32 = kVocab * kHidden + kHidden + kLayers * 2 * kHidden;
  const moert::ModelSummary s = m->summary();
  EXPECT_EQ(s.total_params, plain->summary().total_params);
  EXPECT_EQ(s.weight_bytes,
            static_cast<uint64_t>(kLayers * (packed + 2 * groups) + head + 4 * f32));
  const double share =
      100.0 * (kLayers * (packed + 2 * groups) + head) / static_cast<double>(s.weight_bytes);
  // Largest share first.
  EXPECT_EQ(m->info().weight_dtype, "int8 g32 " + std::to_string(static_cast<int>(share + 0.5)) +
                                        "%, f32 " +
                                        std::to_string(static_cast<int>(100 - share + 0.5)) + "%");
  EXPECT_THAT(s.str(), HasSubstr("int8 g32"));
  // int8 with groups of 32: each weight within amax / 254 of its value.  This
  // checkpoint's N(0, 0.3²) weights are not scaled by 1/sqrt(fan_in), so its
  // attention is sharp and amplifies that noise (measured 4% RMS of the
  // logits); tests/python/test_quantized_checkpoints.py checks the packed
  // values exactly and the 1e-2 bound on well-scaled models.
  const std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6};
  std::vector<double> want = plain->forward(ids).to_doubles(), got = m->forward(ids).to_doubles();
  double err = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  EXPECT_LT(std::sqrt(err / norm), 0.1);
  EXPECT_GT(err, 0.0);  // it did quantize
}

TEST_F(ModelTest, ToAnotherDeviceKeepsResultsAndFailsCleanly) {
  auto m = Model::load(dir_.string());
  Tensor before = m->forward({3, 1, 4, 1, 5});
  moert::Session s = m->session();
  s.append({3});
  try {
    m->to("no-such-device");
    FAIL();
  } catch (const moert::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no-such-device"));
  }
  EXPECT_EQ(m->device(), "reference");
  EXPECT_NO_THROW(s.append({1})) << "a failed move must leave the model and its session usable";
  m->to("reference:0");
  EXPECT_EQ(m->device(), "reference:0");
  EXPECT_THROW(s.append({4}), moert::Error) << "sessions end when the model moves";
  EXPECT_EQ(m->forward({3, 1, 4, 1, 5}).to_doubles(), before.to_doubles());
}
