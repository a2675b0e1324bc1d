// Models used from several threads at once: separate models, one per thread
// (each loading its own copy of a small Mixtral checkpoint and generating),
// and one model shared by threads that take turns under a mutex, as the
// Python binding does (python/src/moert_module.cpp).  Every thread's tokens
// and logits must equal those of a serial run.  On every available device;
// scripts/sanitize.sh runs this under ThreadSanitizer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/error.h"
#include "moert/model.h"
#include "support/tiny_checkpoint.h"

namespace fs = std::filesystem;
using moert::Model;
using moert::Tensor;

namespace {

constexpr int kThreads = 4;

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
    moert_test::write_tiny_mixtral(dir_);
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
