// The error contract where a device fails: every failure of a plugin call,
// at load, at a step, in the middle of a generation, becomes a moert::Error
// naming what was being done and the plugin's reason, leaks nothing on the
// device, and leaves the model usable, giving what it gave before.
//
// The failures come from "faulty" (tests/plugins/fault_backend.c): the cpu
// plugin behind a layer that fails the calls a test arms, found through
// MOERT_BACKEND_PATH.  The rest of the contract (hostile checkpoints, bad
// requests, sampling parameters, Ctrl-C) is in tests/python/test_error_contract.py;
// plugins that are missing, of another ABI major or failing init in
// tests/unit/test_plugins.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/batch.h"
#include "moert/error.h"
#include "moert/model.h"
#include "support/tiny_checkpoint.h"

#ifndef MOERT_FAULT_PLUGIN_DIR
#error "MOERT_FAULT_PLUGIN_DIR must name the directory holding the faulty plugin"
#endif

namespace fs = std::filesystem;
using moert::Model;
using moert::Tensor;

namespace {

// The global registry searches MOERT_BACKEND_PATH when first used: name the
// faulty plugin's directory before any test runs.
const bool kPathSet = [] {
  std::string path = MOERT_FAULT_PLUGIN_DIR;
  if (const char* old = std::getenv("MOERT_BACKEND_PATH"); old && *old)
    path += ":" + std::string(old);
  return ::setenv("MOERT_BACKEND_PATH", path.c_str(), 1) == 0;
}();

// The plugin's controls (fault_backend.c documents them).
struct Faults {
  using Arm = int (*)(const char*, int64_t, int64_t);
  using Reset = void (*)();
  using Count = int64_t (*)(const char*);
  Arm arm_fn = nullptr;
  Reset reset_fn = nullptr;
  Count count_fn = nullptr;

  explicit Faults(const moert::Backend& b) {
    auto call = b.call();
    arm_fn = reinterpret_cast<Arm>(call->get_extension("fault_arm"));
    reset_fn = reinterpret_cast<Reset>(call->get_extension("fault_reset"));
    count_fn = reinterpret_cast<Count>(call->get_extension("fault_count"));
  }
  // Lets `skip` calls of `kind` through, then fails `count` of them.
  void arm(const char* kind, int64_t skip, int64_t count = 1) const {
    ASSERT_EQ(arm_fn(kind, skip, count), 0) << kind;
  }
  void reset() const { reset_fn(); }
  int64_t failed(const char* kind) const { return count_fn(kind); }
  int64_t buffers() const { return count_fn("buffers"); }
  int64_t executables() const { return count_fn("executables"); }
};

const std::vector<int32_t> kPrompt = {1, 17, 33, 5, 60, 2, 41, 9};

// What `f` throws (the test fails when it throws nothing or something else).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const moert::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a moert::Error";
  return "";
}

std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
}

class ErrorContract : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(kPathSet);
    dir_ = fs::temp_directory_path() / ("moert_error_contract_" + std::to_string(::getpid()));
    moert_test::write_tiny_mixtral(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  void SetUp() override {
    backend_ = moert::BackendRegistry::global().find("faulty");
    if (backend_ == nullptr || !backend_->available())
      GTEST_SKIP() << "the faulty test plugin is not available (it needs the cpu plugin): "
                   << moert::BackendRegistry::global().describe();
    faults_ = std::make_unique<Faults>(*backend_);
    faults_->reset();
    if (want_logits_.empty()) {  // the results every recovery must give again
      auto m = load();
      want_logits_ = values(m->forward(kPrompt));
      want_tokens_ = m->generate(kPrompt, generate_options());
    }
  }
  void TearDown() override {
    if (faults_) faults_->reset();
  }

  static moert::GenerateOptions generate_options() {
    moert::GenerateOptions o;
    o.max_new_tokens = 6;
    return o;
  }

  static std::unique_ptr<Model> load(const std::string& device = "faulty",
                                     std::function<bool()> interrupted = nullptr) {
    moert::LoadOptions o;
    o.interrupted = std::move(interrupted);
    o.device = device;
    o.strict = true;
    o.max_sequences = 2;
    o.max_context = 32;
    o.prefill_chunk = 3;  // prompts of kPrompt's length run in several executions
    return Model::load(dir_.string(), o);
  }

  // The model works as before the failure.
  void expect_usable(Model& m) const {
    EXPECT_EQ(values(m.forward(kPrompt)), want_logits_);
    EXPECT_EQ(m.generate(kPrompt, generate_options()), want_tokens_);
  }

  // Loads with the `kind`-th call failing, for every call a load makes of
  // that kind; each failure must name `context`, leak nothing and leave the
  // backend able to load again.
  void fail_each_call_of_a_load(const char* kind, const std::string& status,
                                const std::string& context) {
    const int64_t buffers = faults_->buffers(), executables = faults_->executables();
    int64_t call = 0;
    for (;; ++call) {
      ASSERT_LT(call, 1000) << "a load makes more than 1000 " << kind << " calls";
      faults_->reset();
      faults_->arm(kind, call);
      std::unique_ptr<Model> m;
      std::string error;
      try {
        m = load();
      } catch (const moert::Error& e) {
        error = e.what();
      }
      if (faults_->failed(kind) == 0) {  // the load makes fewer calls: all were tried
        ASSERT_TRUE(m) << error;
        faults_->reset();
        expect_usable(*m);
        break;
      }
      SCOPED_TRACE(std::string(kind) + " call " + std::to_string(call));
      EXPECT_FALSE(m);
      EXPECT_NE(error.find(dir_.string()), std::string::npos) << error;
      EXPECT_NE(error.find(context), std::string::npos) << error;
      EXPECT_NE(error.find(status + ": injected fault"), std::string::npos) << error;
      EXPECT_EQ(faults_->buffers(), buffers) << "device buffers leaked: " << error;
      EXPECT_EQ(faults_->executables(), executables) << "executables leaked: " << error;
    }
    EXPECT_GT(call, 0) << "a load makes no " << kind << " call";
  }

  static fs::path dir_;
  static std::vector<float> want_logits_;
  static std::vector<int32_t> want_tokens_;
  moert::Backend* backend_ = nullptr;
  std::unique_ptr<Faults> faults_;
};
fs::path ErrorContract::dir_;
std::vector<float> ErrorContract::want_logits_;
std::vector<int32_t> ErrorContract::want_tokens_;

// --- Load ------------------------------------------------------------------

TEST_F(ErrorContract, OutOfDeviceMemoryAtEveryAllocationOfALoad) {
  fail_each_call_of_a_load("alloc", "out of memory", "allocating");
}

TEST_F(ErrorContract, AFailedUploadAtEveryWriteOfALoad) {
  fail_each_call_of_a_load("write", "device error", "clearing state");
}

TEST_F(ErrorContract, AFailedPrepareAtEveryPartition) {
  fail_each_call_of_a_load("prepare", "device error", "preparing partition");
}

TEST_F(ErrorContract, AFailedMoveToAnotherDeviceLeavesTheModelWhereItWas) {
  auto m = load("reference");
  const std::vector<float> before = values(m->forward(kPrompt));
  for (const char* kind : {"alloc", "write", "prepare"}) {
    SCOPED_TRACE(kind);
    faults_->reset();
    faults_->arm(kind, std::string(kind) == "prepare" ? 0 : 1);
    const std::string error = error_of([&] { m->to("faulty", true); });
    EXPECT_NE(error.find("moving the model to faulty: "), std::string::npos) << error;
    EXPECT_NE(error.find("injected fault"), std::string::npos) << error;
    EXPECT_EQ(m->device(), "reference");
    EXPECT_EQ(faults_->buffers(), 0) << error;
    EXPECT_EQ(faults_->executables(), 0) << error;
    EXPECT_EQ(values(m->forward(kPrompt)), before);
  }
  faults_->reset();
  m->to("faulty", true);
  expect_usable(*m);
}

// LoadOptions::interrupted (Ctrl-C in Python) answering true at each of its
// checks in turn: the load stops there, leaving nothing on the device.
TEST_F(ErrorContract, AnInterruptedLoadStopsAtEachCheckAndLeavesNothing) {
  for (int stop_at = 0;; ++stop_at) {
    ASSERT_LT(stop_at, 100) << "a load checks more than 100 times";
    int checks = 0;
    std::unique_ptr<Model> m;
    std::string error;
    try {
      m = load("faulty", [&] { return checks++ == stop_at; });
    } catch (const moert::Error& e) {
      error = e.what();
    }
    if (checks <= stop_at) {  // every check was tried
      ASSERT_TRUE(m) << error;
      EXPECT_GE(stop_at, 4) << "before the build, each layer (2), after the build";
      expect_usable(*m);
      break;
    }
    SCOPED_TRACE("stopped at check " + std::to_string(stop_at));
    EXPECT_FALSE(m);
    EXPECT_NE(error.find("the load was interrupted"), std::string::npos) << error;
    EXPECT_EQ(faults_->buffers(), 0);
    EXPECT_EQ(faults_->executables(), 0);
  }
}

// --- A step ------------------------------------------------------------------

struct StepFault {
  const char* kind;
  const char* status;   // as moert::status_name
  const char* context;  // what the runtime was doing
};

class StepFaults : public ErrorContract, public ::testing::WithParamInterface<StepFault> {};

// A session appending its prompt in chunks of 3: the failure hits the second
// chunk.  The session stays at the position of the last whole chunk, and
// appending from there gives the logits an unbroken run gives.
TEST_P(StepFaults, ASessionStaysWhereItWasAndGoesOn) {
  const StepFault& f = GetParam();
  auto m = load();
  auto s = m->session();
  s.append({kPrompt.begin(), kPrompt.begin() + 2});
  faults_->arm(f.kind, 0);
  const std::string error = error_of([&] { s.append({kPrompt.begin() + 2, kPrompt.end()}); });
  ASSERT_EQ(faults_->failed(f.kind), 1) << "no " << f.kind << " call in a step";
  EXPECT_NE(error.find(std::string(f.status) + ": injected fault"), std::string::npos) << error;
  EXPECT_NE(error.find(f.context), std::string::npos) << error;
  const int64_t at = s.position();
  EXPECT_GE(at, 2);
  EXPECT_LT(at, static_cast<int64_t>(kPrompt.size()));
  EXPECT_EQ((at - 2) % 3, 0) << "a session stops at a whole chunk, at " << at;
  const Tensor rest = s.append({kPrompt.begin() + at, kPrompt.end()});
  const int64_t vocab = rest.shape()[1];
  const std::vector<float> want(want_logits_.begin() + at * vocab, want_logits_.end());
  EXPECT_EQ(values(rest), want);
  expect_usable(*m);
}

// A generation failing at its fourth execution: the error reaches the caller,
// the sequence goes back to the pool (max_sequences is 2: three failures
// would exhaust it), and the next generation gives the same tokens.
TEST_P(StepFaults, AGenerationFailingPartWayFreesItsSequence) {
  const StepFault& f = GetParam();
  auto m = load();
  for (int attempt = 0; attempt < 3; ++attempt) {
    faults_->reset();
    faults_->arm(f.kind, 3);
    const std::string error = error_of([&] { m->generate(kPrompt, generate_options()); });
    EXPECT_NE(error.find("injected fault"), std::string::npos) << error;
  }
  faults_->reset();
  expect_usable(*m);
}

// Batched generation: a failing step fails the batch; every sequence goes
// back, and the same batch then gives each prompt's tokens alone.
TEST_P(StepFaults, ABatchFailingPartWayFreesEverySequence) {
  const StepFault& f = GetParam();
  auto m = load();
  const std::vector<std::vector<int32_t>> prompts = {kPrompt, {3, 4, 5}};
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) want.push_back(m->generate(p, generate_options()));
  for (int attempt = 0; attempt < 3; ++attempt) {
    faults_->reset();
    faults_->arm(f.kind, 2);
    const std::string error =
        error_of([&] { moert::generate_batch(*m, prompts, {generate_options()}); });
    EXPECT_NE(error.find("injected fault"), std::string::npos) << error;
  }
  faults_->reset();
  EXPECT_EQ(moert::generate_batch(*m, prompts, {generate_options()}), want);
  expect_usable(*m);
}

INSTANTIATE_TEST_SUITE_P(
    Calls, StepFaults,
    ::testing::Values(StepFault{"execute", "device error", "running partition"},
                      StepFault{"write", "device error", "writing input"},
                      StepFault{"read", "device error", "reading output"},
                      StepFault{"synchronize", "device error", "synchronizing"}),
    [](const ::testing::TestParamInfo<StepFault>& p) { return std::string(p.param.kind); });

// The activation arena is allocated at the first step of a size: out of
// memory there fails that step only.
TEST_F(ErrorContract, OutOfDeviceMemoryForTheActivationsOfAStep) {
  auto m = load();
  const int64_t buffers = faults_->buffers();
  faults_->arm("alloc", 0);
  const std::string error = error_of([&] { m->forward(kPrompt); });
  ASSERT_EQ(faults_->failed("alloc"), 1) << "the first step allocated nothing";
  EXPECT_NE(error.find("out of memory: injected fault"), std::string::npos) << error;
  EXPECT_NE(error.find("activation arena"), std::string::npos) << error;
  EXPECT_LE(faults_->buffers(), buffers);
  expect_usable(*m);
}

// --- Init --------------------------------------------------------------------

// A plugin whose init fails is listed as unavailable with its reason; a model
// asking for it gets that reason, and other backends (here the same plugin in
// the global registry) go on working.
TEST_F(ErrorContract, AnInitFailureMakesTheBackendUnavailableWithItsReason) {
  ASSERT_EQ(::setenv("MOERT_FAULT", "init", 1), 0);
  {
    moert::BackendRegistry registry({MOERT_FAULT_PLUGIN_DIR}, false);
    ::unsetenv("MOERT_FAULT");
    moert::Backend* b = registry.find("faulty");
    ASSERT_NE(b, nullptr);
    EXPECT_FALSE(b->available());
    EXPECT_NE(b->unavailable_reason().find("injected fault: the driver failed to initialise"),
              std::string::npos)
        << b->unavailable_reason();
    const std::string error = error_of([&] { registry.resolve("faulty"); });
    EXPECT_NE(error.find("the driver failed to initialise"), std::string::npos) << error;
  }
  faults_->reset();
  auto m = load();
  expect_usable(*m);
}

TEST_F(ErrorContract, AMalformedFaultSpecificationIsRefusedByInit) {
  ASSERT_EQ(::setenv("MOERT_FAULT", "nosuchcall", 1), 0);
  moert::BackendRegistry registry({MOERT_FAULT_PLUGIN_DIR}, false);
  ::unsetenv("MOERT_FAULT");
  moert::Backend* b = registry.find("faulty");
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->available());
  EXPECT_NE(b->unavailable_reason().find("MOERT_FAULT is malformed"), std::string::npos)
      << b->unavailable_reason();
}

}  // namespace
