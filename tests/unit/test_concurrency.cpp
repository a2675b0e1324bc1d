// Models used from several threads at once: separate models, one per thread
// (each loading its own copy of a small Mixtral checkpoint and generating),
// and one model shared by threads that take turns under a mutex, as the
// Python binding does (python/src/moert_module.cpp).  Every thread's tokens
// and logits must equal those of a serial run.  On every available device;
// scripts/sanitize.sh runs this under ThreadSanitizer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/error.h"
#include "moert/model.h"

namespace fs = std::filesystem;
using moert::Model;
using moert::Tensor;

namespace {

constexpr int64_t kVocab = 89, kHidden = 32, kInter = 40, kLayers = 2, kHeads = 4, kKvHeads = 2,
                  kExperts = 4;
constexpr int kThreads = 4;

// Writes config.json and model.safetensors (f32, random) for a tiny Mixtral.
void write_checkpoint(const fs::path& dir) {
  fs::create_directories(dir);
  nlohmann::json config = {{"architectures", {"MixtralForCausalLM"}},
                           {"model_type", "mixtral"},
                           {"vocab_size", kVocab},
                           {"hidden_size", kHidden},
                           {"intermediate_size", kInter},
                           {"num_hidden_layers", kLayers},
                           {"num_attention_heads", kHeads},
                           {"num_key_value_heads", kKvHeads},
                           {"num_local_experts", kExperts},
                           {"num_experts_per_tok", 2},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", 10000.0},
                           {"max_position_embeddings", 64},
                           {"tie_word_embeddings", false}};
  std::ofstream(dir / "config.json") << config.dump();
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors = {
      {"model.embed_tokens.weight", {kVocab, kHidden}},
      {"model.norm.weight", {kHidden}},
      {"lm_head.weight", {kVocab, kHidden}}};
  const int64_t hd = kHidden / kHeads;
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (auto [n, s] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
             {"input_layernorm.weight", {kHidden}},
             {"post_attention_layernorm.weight", {kHidden}},
             {"self_attn.q_proj.weight", {kHeads * hd, kHidden}},
             {"self_attn.k_proj.weight", {kKvHeads * hd, kHidden}},
             {"self_attn.v_proj.weight", {kKvHeads * hd, kHidden}},
             {"self_attn.o_proj.weight", {kHidden, kHeads * hd}},
             {"block_sparse_moe.gate.weight", {kExperts, kHidden}}})
      tensors.push_back({p + n, s});
    for (int64_t e = 0; e < kExperts; ++e) {
      const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      tensors.push_back({x + "w1.weight", {kInter, kHidden}});
      tensors.push_back({x + "w2.weight", {kHidden, kInter}});
      tensors.push_back({x + "w3.weight", {kInter, kHidden}});
    }
  }
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  nlohmann::json header = nlohmann::json::object();
  std::vector<float> data;
  for (const auto& [name, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const uint64_t begin = data.size() * 4;
    const bool norm = name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < n; ++i) data.push_back(norm ? 1.0f + 0.1f * normal(rng) : normal(rng));
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {begin, data.size() * 4}}};
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h;
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * 4));
}

// One thread's work and what it produced.
struct Result {
  std::vector<int32_t> tokens;  // greedy continuation
  std::vector<float> logits;    // forward() of the prompt, every row
  std::string error;            // what a thread threw ("" when nothing)
};

std::vector<int32_t> prompt_of(int i) {
  return {1, static_cast<int32_t>(7 + 5 * i), static_cast<int32_t>(30 + i), 3, 60};
}

Result work(Model& m, int i) {
  Result r;
  moert::GenerateOptions o;
  o.max_new_tokens = 6;
  r.tokens = m.generate(prompt_of(i), o);
  const Tensor logits = m.forward(prompt_of(i));
  r.logits.assign(logits.data_as<float>(), logits.data_as<float>() + logits.numel());
  return r;
}

class Concurrency : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("moert_concurrency_test_" + std::to_string(::getpid()));
    write_checkpoint(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  void SetUp() override {
    moert::Backend* b = moert::BackendRegistry::global().find(GetParam());
    if (b == nullptr || b->device_count() == 0) GTEST_SKIP() << GetParam() << " is not available";
  }

  static std::unique_ptr<Model> load() {
    moert::LoadOptions o;
    o.device = GetParam();
    o.strict = true;
    return Model::load(dir_.string(), o);
  }

  // What each thread's work gives when the threads run one after another.
  static std::vector<Result> serial() {
    std::vector<Result> want;
    auto m = load();
    for (int i = 0; i < kThreads; ++i) want.push_back(work(*m, i));
    return want;
  }

  static void expect_same(const std::vector<Result>& got, const std::vector<Result>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].error, "") << "thread " << i;
      EXPECT_EQ(got[i].tokens, want[i].tokens) << "thread " << i;
      EXPECT_EQ(got[i].logits, want[i].logits) << "thread " << i;
    }
  }

  static fs::path dir_;
};
fs::path Concurrency::dir_;

TEST_P(Concurrency, ThreadsWithTheirOwnModels) {
  const std::vector<Result> want = serial();
  std::vector<Result> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&got, i] {
      try {
        auto m = load();
        got[static_cast<size_t>(i)] = work(*m, i);
      } catch (const std::exception& e) {
        got[static_cast<size_t>(i)].error = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  expect_same(got, want);
}

TEST_P(Concurrency, ThreadsSharingOneModelUnderAMutex) {
  const std::vector<Result> want = serial();
  auto m = load();
  std::mutex mutex;  // as moert_module.cpp's ModelHandle::mutex
  std::vector<Result> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      try {
        // Several turns each, so that the threads interleave on the model.
        for (int turn = 0; turn < 2; ++turn) {
          std::lock_guard<std::mutex> lock(mutex);
          got[static_cast<size_t>(i)] = work(*m, i);
        }
      } catch (const std::exception& e) {
        got[static_cast<size_t>(i)].error = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  expect_same(got, want);
}

INSTANTIATE_TEST_SUITE_P(Devices, Concurrency, ::testing::Values("reference", "cpu", "opencl"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
