// The OpenCL backend beyond the conformance suite: device listing and
// capabilities, a kernel table covering every op, the compiler's log in a
// build error, the on-disk program cache seen from a second process (cold
// and warm build times), run-time errors found on the device, out-of-memory
// reporting, profiling, and a decoder layer (embedding to MoE, with a KV
// cache over several steps) against the reference backend.  Every test
// skips with the reason when no OpenCL device is available.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/error.h"
#include "moert/executor.h"
#include "moert/graph.h"
#include "moert/op_registry.h"
#include "support/backend_test.h"
#include "support/op_runner.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using moert::Attributes;
using moert::Dim;
using moert::DType;
using moert::Executor;
using moert::ExecutorOptions;
using moert::Graph;
using moert::Shape;
using moert::SymbolValues;
using moert::Tensor;
using moert::ValueId;
using moert::testing::error_of;
using moert::testing::on;
using moert::testing::random_ints;
using moert::testing::random_tensor;
using moert::testing::run_error;
using moert::testing::testing_symbol;

// The opencl backend when it loaded and found a device, else nullptr with
// the reason in *why.
moert::Backend* opencl_backend(std::string* why) {
  const moert::BackendRegistry& registry = moert::BackendRegistry::global();
  moert::Backend* b = registry.find("opencl");
  if (!b) {
    *why = "the opencl backend plugin is not loaded (not built, or it failed to load:";
    for (const auto& f : registry.failures()) *why += " " + f.str() + ";";
    *why += ")";
    return nullptr;
  }
  if (!b->available()) {
    *why = "no OpenCL device: " + b->unavailable_reason();
    return nullptr;
  }
  return b;
}

#define REQUIRE_OPENCL()                                  \
  std::string skip_reason;                                \
  moert::Backend* backend = opencl_backend(&skip_reason); \
  if (!backend) GTEST_SKIP() << skip_reason;              \
  (void)backend

using BuildFn = int (*)(int32_t, const char*, char*, size_t);
using StatsFn = void (*)(int64_t*, int64_t*, int64_t*, double*);
using TextFn = int (*)(int32_t, char*, size_t);
using HasKernelFn = int (*)(const char*);

TEST(OpenclBackend, ListsDevicesWithTheirCapabilities) {
  REQUIRE_OPENCL();
  ASSERT_GE(backend->device_count(), 1);
  auto caps = testing_symbol<TextFn>(backend, "moert_opencl_testing_capabilities");
  ASSERT_NE(caps, nullptr);
  for (int32_t d = 0; d < backend->device_count(); ++d) {
    const moert::DeviceInfo info = backend->device_info(d);
    EXPECT_FALSE(info.name.empty());
    EXPECT_GT(info.total_memory, 0u);
    EXPECT_NE(info.kind, MOERT_DEVICE_OTHER);
    char text[512] = {};
    ASSERT_EQ(caps(d, text, sizeof(text)), MOERT_OK) << text;
    const std::string summary = text;
    for (const char* part :
         {"OpenCL C", "fp16 ", "fp64 ", "subgroups ", "work-groups up to", "kernel style"})
      EXPECT_NE(summary.find(part), std::string::npos) << summary;
    std::cout << "opencl:" << d << " " << info.name << " (" << moert::device_kind_name(info.kind)
              << ", " << (info.total_memory >> 20) << " MiB): " << summary << "\n";
  }
  char text[256] = {};
  EXPECT_NE(caps(backend->device_count(), text, sizeof(text)), MOERT_OK);
  EXPECT_NE(std::string(text).find("no OpenCL device"), std::string::npos) << text;
}

TEST(OpenclBackend, HasAKernelForEveryOp) {
  REQUIRE_OPENCL();
  auto has = testing_symbol<HasKernelFn>(backend, "moert_opencl_testing_has_kernel");
  ASSERT_NE(has, nullptr);
  for (const std::string& op : moert::OpRegistry::global().names())
    EXPECT_EQ(has(op.c_str()), 1) << "no OpenCL kernel for op '" << op << "'";
}

TEST(OpenclBackend, ABuildErrorCarriesTheCompilerLog) {
  REQUIRE_OPENCL();
  auto build = testing_symbol<BuildFn>(backend, "moert_opencl_testing_build");
  ASSERT_NE(build, nullptr);
  char message[MOERT_ERROR_MESSAGE_CAPACITY] = {};
  EXPECT_EQ(
      build(0, "kernel void fine(global float* x) { x[0] = 1.0f; }", message, sizeof(message)),
      MOERT_OK)
      << message;
  const int status = build(0, "kernel void broken(global float* x) { x[0] = no_such_name; }",
                           message, sizeof(message));
  EXPECT_EQ(status, MOERT_ERR_DEVICE);
  const std::string msg = message;
  EXPECT_NE(msg.find("build log"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no_such_name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("testing.cl"), std::string::npos) << msg;
}

// Embedding, rms_norm, linear, rope, attention over a KV cache, router and
// moe with a shared expert: one decoder layer touching most kernel files.
struct LayerGraph {
  static constexpr int64_t kVocab = 97, kHidden = 64, kHeads = 4, kKvHeads = 2, kHeadDim = 16,
                           kExperts = 8, kInter = 48, kCapacity = 32;
  Graph g;
  explicit LayerGraph(uint32_t seed = 3) {
    std::mt19937 rng(seed);
    auto weight = [&](std::vector<int64_t> shape, DType t = DType::f32) {
      return g.add_constant("w" + std::to_string(g.num_values()),
                            random_tensor(t, std::move(shape), rng, 0.2));
    };
    const ValueId ids = g.add_input("ids", DType::i32, Shape{Dim::tokens()});
    const ValueId pos = g.add_input("positions", DType::i32, Shape{Dim::tokens()});
    const ValueId x = g.add("embedding", "embed", {weight({kVocab, kHidden}), ids});
    const ValueId h = g.add("rms_norm", "norm", {x, weight({kHidden})}, Attributes{{"eps", 1e-5}});
    auto heads = [&](const std::string& name, int64_t n, ValueId from) {
      const ValueId p = g.add("linear", name, {from, weight({n * kHeadDim, kHidden}, DType::bf16)});
      return g.add("reshape", name + ".heads", {p},
                   Attributes{{"shape", std::vector<int64_t>{0, n, kHeadDim}}});
    };
    const Attributes rope{{"theta", 10000.0}};
    const ValueId q = g.add("rope", "q.rope", {heads("q", kHeads, h), pos}, rope);
    const ValueId k = g.add("rope", "k.rope", {heads("k", kKvHeads, h), pos}, rope);
    const ValueId v = heads("v", kKvHeads, h);
    const ValueId kc = g.add_state("k_cache", DType::bf16, {kCapacity, kKvHeads, kHeadDim});
    const ValueId vc = g.add_state("v_cache", DType::f32, {kCapacity, kKvHeads, kHeadDim});
    const ValueId a = g.add("attention", "attn", {q, k, v, kc, vc});
    const ValueId flat = g.add("reshape", "attn.flat", {a},
                               Attributes{{"shape", std::vector<int64_t>{0, kHeads * kHeadDim}}});
    const ValueId o = g.add("linear", "o", {flat, weight({kHidden, kHeads * kHeadDim})});
    const ValueId r = g.add("add", "residual", {o, x});
    const ValueId logits = g.add("linear", "gate", {r, weight({kExperts, kHidden})});
    const std::vector<ValueId> routed =
        g.add_node("router", "router", {logits}, Attributes{{"top_k", int64_t{2}}});
    const ValueId m =
        g.add("moe", "moe",
              {r, routed[0], routed[1], weight({kExperts, kInter, kHidden}),
               weight({kExperts, kInter, kHidden}), weight({kExperts, kHidden, kInter}),
               moert::kNoValue, moert::kNoValue, moert::kNoValue, weight({kInter, kHidden}),
               weight({kInter, kHidden}), weight({kHidden, kInter}), moert::kNoValue,
               moert::kNoValue, moert::kNoValue, weight({1, kHidden})});
    g.mark_output(g.add("add", "out", {m, r}));
  }
  static std::vector<Tensor> inputs(int64_t tokens, int64_t past, std::mt19937& rng) {
    Tensor pos = Tensor::empty(DType::i32, {tokens});
    for (int64_t i = 0; i < tokens; ++i) pos.data_as<int32_t>()[i] = static_cast<int32_t>(past + i);
    return {random_ints(DType::i32, {tokens}, 0, kVocab - 1, rng), pos};
  }
};

TEST(OpenclBackend, ADecoderLayerMatchesTheReferenceOverSteps) {
  REQUIRE_OPENCL();
  LayerGraph layer;
  Executor dev(layer.g, on("opencl:0"));
  Executor ref(layer.g, on("reference"));
  std::mt19937 rng(5);
  int64_t past = 0;
  for (int64_t tokens : {6, 1, 1, 9}) {
    const std::vector<Tensor> in = LayerGraph::inputs(tokens, past, rng);
    const SymbolValues s = SymbolValues::of(tokens, past);
    const std::vector<double> got = dev.run(in, s)[0].to_doubles();
    const std::vector<double> want = ref.run(in, s)[0].to_doubles();
    double scale = 0;
    for (double w : want) scale = std::max(scale, std::fabs(w));
    // f32 activations, bf16 weights and a bf16 K cache: computed in f32
    // against f64 with the same roundings of weights and cache.
    EXPECT_LT(moert::testing::max_rel_error(got, want, 1e-3 * scale), 1e-4)
        << "T=" << tokens << " P=" << past;
    past += tokens;
  }
  for (const char* state : {"k_cache", "v_cache"})
    EXPECT_LT(moert::testing::max_rel_error(dev.read_state(state).to_doubles(),
                                            ref.read_state(state).to_doubles(), 1e-3),
              1e-2)
        << state;
}

// ---------------------------------------------------------------------------
// The program cache across processes.  The parent runs this binary twice as
// a child (OpenclCacheChild.PrepareAndReport) with a fresh cache directory:
// the first child compiles every program from source and stores it, the
// second loads every one from the disk.  PoCL's own kernel cache is pointed
// at a fresh directory too, so the first child's time is a truly cold build.

const char* const kReportVariable = "MOERT_OPENCL_TEST_REPORT";

struct ChildReport {
  int64_t source_builds = -1, binary_loads = -1, cache_writes = -1;
  double build_seconds = 0, prepare_seconds = 0, first_run_seconds = 0;
};

TEST(OpenclCacheChild, PrepareAndReport) {
  const char* report = std::getenv(kReportVariable);
  if (!report) GTEST_SKIP() << "runs only as the child process of OpenclBackend.KernelCache*";
  REQUIRE_OPENCL();
  auto stats = testing_symbol<StatsFn>(backend, "moert_opencl_testing_cache_stats");
  ASSERT_NE(stats, nullptr);
  LayerGraph layer;
  const auto t0 = std::chrono::steady_clock::now();
  Executor dev(layer.g, on("opencl:0"));
  const auto t1 = std::chrono::steady_clock::now();
  std::mt19937 rng(9);
  dev.run(LayerGraph::inputs(4, 0, rng), SymbolValues::of(4, 0));
  const auto t2 = std::chrono::steady_clock::now();
  ChildReport r;
  stats(&r.source_builds, &r.binary_loads, &r.cache_writes, &r.build_seconds);
  std::ofstream out(report);
  out << r.source_builds << " " << r.binary_loads << " " << r.cache_writes << " " << r.build_seconds
      << " " << std::chrono::duration<double>(t1 - t0).count() << " "
      << std::chrono::duration<double>(t2 - t1).count() << "\n";
}

// Runs the child test in a new process with `env` added; returns its report.
ChildReport run_child(const std::vector<std::string>& env, const fs::path& report) {
  std::vector<std::string> vars = env;
  vars.push_back(std::string(kReportVariable) + "=" + report.string());
  for (char** e = environ; *e; ++e) {
    const std::string var = *e;
    bool overridden = false;
    for (const std::string& v : env)
      overridden |= var.substr(0, var.find('=')) == v.substr(0, v.find('='));
    if (!overridden) vars.push_back(var);
  }
  std::vector<char*> envp;
  for (std::string& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string();
  std::string filter = "--gtest_filter=OpenclCacheChild.PrepareAndReport";
  char* argv[] = {exe.data(), filter.data(), nullptr};
  pid_t pid = 0;
  ChildReport r;
  if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()) != 0) return r;
  int status = 0;
  waitpid(pid, &status, 0);
  // A child that crashed, failed or had a sanitizer report after writing its
  // report still fails the test.
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child exited with status " << status;
  std::ifstream in(report);
  in >> r.source_builds >> r.binary_loads >> r.cache_writes >> r.build_seconds >>
      r.prepare_seconds >> r.first_run_seconds;
  return r;
}

TEST(OpenclBackend, KernelCacheIsHitByASecondProcess) {
  REQUIRE_OPENCL();
  const fs::path dir =
      fs::temp_directory_path() / ("moert-opencl-cache-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<std::string> env = {"MOERT_OPENCL_CACHE=" + (dir / "moert").string(),
                                        "POCL_CACHE_DIR=" + (dir / "pocl").string()};
  const ChildReport cold = run_child(env, dir / "cold.txt");
  const ChildReport warm = run_child(env, dir / "warm.txt");
  fs::remove_all(dir);
  ASSERT_GE(cold.source_builds, 0) << "the first child did not report";
  ASSERT_GE(warm.source_builds, 0) << "the second child did not report";
  EXPECT_GT(cold.source_builds, 0);
  EXPECT_EQ(cold.binary_loads, 0);
  EXPECT_EQ(cold.cache_writes, cold.source_builds);
  EXPECT_EQ(warm.source_builds, 0);
  EXPECT_EQ(warm.binary_loads, cold.source_builds);
  std::cout << "programs: " << cold.source_builds << "; cold: build " << cold.build_seconds
            << " s, prepare " << cold.prepare_seconds << " s, first run " << cold.first_run_seconds
            << " s; warm: build " << warm.build_seconds << " s, prepare " << warm.prepare_seconds
            << " s, first run " << warm.first_run_seconds << " s\n";
  RecordProperty("cold_build_seconds", std::to_string(cold.build_seconds));
  RecordProperty("warm_build_seconds", std::to_string(warm.build_seconds));
  EXPECT_LT(warm.build_seconds, cold.build_seconds);
}

}  // namespace
