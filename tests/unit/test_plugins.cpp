// The plugin loader, against the test plugins of tests/plugins (built into
// MOERT_TEST_PLUGIN_DIR, which the runtime never searches by itself).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/dtype.h"
#include "moert/error.h"

#ifndef MOERT_TEST_PLUGIN_DIR
#error "MOERT_TEST_PLUGIN_DIR must name the directory holding the test plugins"
#endif

namespace {

namespace fs = std::filesystem;
using moert::Backend;
using moert::BackendRegistry;

const std::string kDir = MOERT_TEST_PLUGIN_DIR;

std::string plugin(const std::string& name) {
  return (fs::path(kDir) / ("libmoert_backend_" + name + ".so")).string();
}
std::string dup_dir() { return (fs::path(kDir) / "dup").string(); }

const std::string kAbi = std::to_string(MOERT_ABI_MAJOR) + "." + std::to_string(MOERT_ABI_MINOR);
constexpr size_t kApiV1Size =
    offsetof(moert_backend_api, synchronize) + sizeof(moert_backend_api::synchronize);

// Throws (and so fails the test) with the message, unless `what` matches.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const moert::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a moert::Error";
  return {};
}

std::map<std::string, std::string> failures_by_path(const BackendRegistry& r) {
  std::map<std::string, std::string> out;
  for (const moert::PluginLoadFailure& f : r.failures()) out[f.path] = f.reason;
  return out;
}

std::vector<std::string> backend_names(const BackendRegistry& r) {
  std::vector<std::string> out;
  for (const auto& b : r.backends()) out.push_back(b->name());
  return out;
}

moert_error make_error() {
  moert_error err;
  std::memset(&err, 0, sizeof(err));
  err.struct_size = sizeof(err);
  return err;
}

// Calls a plugin function taking a trailing moert_error*, turning a failure
// into moert::Error (and so into a test failure that shows the message).
template <typename Fn, typename... Args>
void call(const char* what, Fn fn, Args... args) {
  moert_error err = make_error();
  moert::check_status(fn(args..., &err), err, what);
}

// A hand-built graph description of one binary node: out = op(a, b).  Holds
// pointers into itself, so it is neither copied nor moved.
struct BinaryGraph {
  moert_tensor_desc tensors[3];
  const moert_tensor_desc* tensor_ptrs[3];
  uint32_t inputs[2] = {0, 1};
  uint32_t outputs[1] = {2};
  moert_node_desc node;
  const moert_node_desc* node_ptrs[1];
  moert_graph_desc graph;

  BinaryGraph(const char* op, const std::vector<moert_dim>& dims,
              moert_dtype dtype = MOERT_DTYPE_F32) {
    static const char* const kNames[3] = {"a", "b", "out"};
    for (int i = 0; i < 3; ++i) {
      moert_tensor_desc& t = tensors[i];
      std::memset(&t, 0, sizeof(t));
      t.struct_size = sizeof(t);
      t.name = kNames[i];
      t.dtype = dtype;
      t.rank = static_cast<uint32_t>(dims.size());
      for (size_t d = 0; d < dims.size(); ++d) t.dims[d] = dims[d];
      t.kind = MOERT_TENSOR_ACTIVATION;
      tensor_ptrs[i] = &t;
    }
    std::memset(&node, 0, sizeof(node));
    node.struct_size = sizeof(node);
    node.op = op;
    node.name = "node0";
    node.inputs = inputs;
    node.num_inputs = 2;
    node.outputs = outputs;
    node.num_outputs = 1;
    node_ptrs[0] = &node;
    graph = {sizeof(moert_graph_desc), tensor_ptrs, 3, node_ptrs, 1, 0, MOERT_OPSET_VERSION};
  }
  BinaryGraph(const BinaryGraph&) = delete;
  BinaryGraph& operator=(const BinaryGraph&) = delete;
};

std::vector<float> random_floats(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Runs out = a + b with a [3, T] graph through `backend`'s table, for two
// values of T on one executable, with the three tensors at distinct nonzero
// offsets of one buffer.
void check_add_through_abi(const Backend& backend, uint32_t seed) {
  const moert_backend_api& api = backend.api();
  BinaryGraph g("add", {{3, 0}, {0, 1u << MOERT_SYM_TOKENS}});

  int32_t supported = -1;
  call("supports_node", api.supports_node, 0, &g.graph, size_t{0}, &supported);
  ASSERT_EQ(supported, 1);

  moert_executable exe = nullptr;
  call("prepare", api.prepare, 0, &g.graph, &exe);
  ASSERT_NE(exe, nullptr);

  std::mt19937 rng(seed);
  const int64_t max_tokens = 9;
  const uint64_t max_bytes = 3 * max_tokens * sizeof(float);
  moert_buffer buffer = nullptr;
  call("buffer_alloc", api.buffer_alloc, 0, 16 + 3 * (max_bytes + 8), &buffer);
  ASSERT_NE(buffer, nullptr);

  for (int64_t tokens : {int64_t{9}, int64_t{2}}) {
    SCOPED_TRACE("T=" + std::to_string(tokens));
    const size_t count = static_cast<size_t>(3 * tokens);
    const uint64_t bytes = count * sizeof(float);
    const uint64_t off_a = 16, off_b = off_a + bytes + 8, off_out = off_b + bytes + 8;
    std::vector<float> a = random_floats(count, rng), b = random_floats(count, rng);
    std::vector<float> poison(count, std::nanf("")), out(count, 0.0f);
    call("write a", api.buffer_write, buffer, off_a, static_cast<const void*>(a.data()), bytes);
    call("write b", api.buffer_write, buffer, off_b, static_cast<const void*>(b.data()), bytes);
    call("write out", api.buffer_write, buffer, off_out, static_cast<const void*>(poison.data()),
         bytes);

    const int64_t symbols[MOERT_NUM_SYMBOLS] = {tokens, 0};
    const moert_buffer_view views[3] = {{buffer, off_a}, {buffer, off_b}, {buffer, off_out}};
    moert_execute_args args{
        sizeof(moert_execute_args), symbols, MOERT_NUM_SYMBOLS, views, 3, nullptr, 0};
    call("execute", api.execute, exe, static_cast<const moert_execute_args*>(&args));
    call("synchronize", api.synchronize, 0);
    call("read", api.buffer_read, buffer, off_out, static_cast<void*>(out.data()), bytes);

    for (size_t i = 0; i < count; ++i) {
      ASSERT_NE(a[i], 0.0f);  // the inputs are not trivially zero
      ASSERT_EQ(out[i], a[i] + b[i]) << "element " << i;
    }
    // The inputs are untouched.
    std::vector<float> a_back(count);
    call("read a", api.buffer_read, buffer, off_a, static_cast<void*>(a_back.data()), bytes);
    EXPECT_EQ(a_back, a);
  }
  api.executable_free(exe);
  api.buffer_free(buffer);
}

// ---------------------------------------------------------------------------

TEST(PluginLoading, DirectoryLoadsTheGoodPluginsAndRecordsEveryFailure) {
  BackendRegistry r({kDir}, /*use_default_paths=*/false);

  // The reference backend first, then the directory's plugins in file-name
  // order; the broken ones are absent, not fatal.
  EXPECT_EQ(backend_names(r),
            (std::vector<std::string>{"reference", "initfail", "newminor", "nodevice", "testdev"}));
  EXPECT_EQ(r.backends()[0]->path(), "(built-in)");
  EXPECT_EQ(r.backends()[1]->path(), plugin("initfail"));
  EXPECT_EQ(r.backends()[4]->path(), plugin("testdev"));
  EXPECT_EQ(r.searched(), std::vector<std::string>{kDir});

  std::map<std::string, std::string> failures = failures_by_path(r);
  std::vector<std::string> failed_paths;
  for (const moert::PluginLoadFailure& f : r.failures()) failed_paths.push_back(f.path);
  // Files not named libmoert_backend_*.so are never opened.
  EXPECT_EQ(failed_paths,
            (std::vector<std::string>{plugin("badmajor"), plugin("badname"), plugin("garbage"),
                                      plugin("missingfn"), plugin("noentry"), plugin("refuse"),
                                      plugin("small")}));

  EXPECT_EQ(failures[plugin("noentry")],
            "no entry point 'moert_backend_entry' (not a moert backend?)");
  EXPECT_EQ(failures[plugin("badmajor")],
            "ABI major version " + std::to_string(MOERT_ABI_MAJOR + 1) + ", this runtime needs " +
                std::to_string(MOERT_ABI_MAJOR));
  EXPECT_EQ(failures[plugin("refuse")], "plugin refused ABI " + kAbi);
  EXPECT_EQ(failures[plugin("small")],
            "function table too small (" +
                std::to_string(offsetof(moert_backend_api, synchronize)) + " bytes; ABI " +
                std::to_string(MOERT_ABI_MAJOR) + ".0 needs " + std::to_string(kApiV1Size) + ")");
  EXPECT_EQ(failures[plugin("missingfn")], "missing required functions: execute, synchronize");
  EXPECT_EQ(failures[plugin("badname")],
            "invalid backend name 'bad:name' (no ':' or whitespace allowed)");
  EXPECT_TRUE(failures[plugin("garbage")].starts_with("dlopen failed: "))
      << failures[plugin("garbage")];

  // Every failure message names the file.
  for (const moert::PluginLoadFailure& f : r.failures())
    EXPECT_TRUE(f.str().starts_with(f.path + ": ")) << f.str();
}

TEST(PluginLoading, EachBrokenPluginFailsAloneWithItsReason) {
  const std::map<std::string, std::string> expected = {
      {"noentry", "no entry point 'moert_backend_entry' (not a moert backend?)"},
      {"badmajor", "ABI major version " + std::to_string(MOERT_ABI_MAJOR + 1) +
                       ", this runtime needs " + std::to_string(MOERT_ABI_MAJOR)},
      {"refuse", "plugin refused ABI " + kAbi},
      {"missingfn", "missing required functions: execute, synchronize"},
      {"small", "function table too small (" +
                    std::to_string(offsetof(moert_backend_api, synchronize)) + " bytes; ABI " +
                    std::to_string(MOERT_ABI_MAJOR) + ".0 needs " + std::to_string(kApiV1Size) +
                    ")"},
      {"badname", "invalid backend name 'bad:name' (no ':' or whitespace allowed)"},
  };
  for (const auto& [name, reason] : expected) {
    SCOPED_TRACE(name);
    BackendRegistry r({}, false);
    EXPECT_EQ(r.load_plugin(plugin(name)), nullptr);
    ASSERT_EQ(r.failures().size(), 1u);
    EXPECT_EQ(r.failures()[0].path, plugin(name));
    EXPECT_EQ(r.failures()[0].reason, reason);
    EXPECT_EQ(r.failures()[0].str(), plugin(name) + ": " + reason);
    EXPECT_EQ(backend_names(r), std::vector<std::string>{"reference"});
    // A good plugin loads after a bad one.
    EXPECT_NE(r.load_plugin(plugin("testdev")), nullptr);
  }
}

TEST(PluginLoading, MissingFilesAreRecorded) {
  const std::string missing = kDir + "/no_such_dir/libmoert_backend_x.so";
  BackendRegistry r({missing, kDir + "/no_such_dir"}, false);
  std::map<std::string, std::string> failures = failures_by_path(r);
  EXPECT_EQ(failures[missing], "no such file or directory");
  EXPECT_EQ(failures[kDir + "/no_such_dir"], "no such file or directory");

  // load_plugin on a file that does not exist reports dlopen's reason.
  EXPECT_EQ(r.load_plugin(missing), nullptr);
  EXPECT_TRUE(r.failures().back().reason.starts_with("dlopen failed: "))
      << r.failures().back().reason;
  EXPECT_NE(r.failures().back().reason.find("libmoert_backend_x.so"), std::string::npos);
}

TEST(PluginLoading, FileEntriesLoadJustThatFile) {
  BackendRegistry r({plugin("testdev"), plugin("nodevice")}, false);
  EXPECT_EQ(backend_names(r), (std::vector<std::string>{"reference", "testdev", "nodevice"}));
  EXPECT_TRUE(r.failures().empty());
  EXPECT_EQ(r.searched(), (std::vector<std::string>{plugin("testdev"), plugin("nodevice")}));
}

TEST(PluginLoading, ADirectoryNamedTwiceIsSearchedOnce) {
  BackendRegistry r({dup_dir(), dup_dir() + "/", dup_dir() + "/../dup"}, false);
  EXPECT_EQ(r.searched(), std::vector<std::string>{dup_dir()});
  EXPECT_TRUE(r.failures().empty()) << r.describe();
  EXPECT_EQ(backend_names(r), (std::vector<std::string>{"reference", "testdev"}));
}

TEST(PluginLoading, NoDeviceMakesTheBackendUnavailableWithThePluginsMessage) {
  BackendRegistry r({plugin("nodevice")}, false);
  Backend* b = r.find("nodevice");
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->available());
  EXPECT_EQ(b->unavailable_reason(), "no test device present (TESTDEV_VISIBLE_DEVICES is empty)");
  EXPECT_EQ(b->device_count(), 0);
  EXPECT_TRUE(r.failures().empty());
}

TEST(PluginLoading, InitFailureMakesTheBackendUnavailable) {
  BackendRegistry r({plugin("initfail")}, false);
  Backend* b = r.find("initfail");
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->available());
  EXPECT_EQ(b->unavailable_reason(), "init failed: driver version 3 is older than the required 4");
}

TEST(PluginLoading, NewerMinorVersionLoadsAndWorks) {
  BackendRegistry r({plugin("newminor")}, false);
  Backend* b = r.find("newminor");
  ASSERT_NE(b, nullptr) << r.describe();
  EXPECT_TRUE(b->available());
  EXPECT_EQ(b->abi_minor(), static_cast<uint32_t>(MOERT_ABI_MINOR + 1));
  EXPECT_GT(b->api().struct_size, sizeof(moert_backend_api));
  EXPECT_EQ(std::string(b->api().version), "test-1.1");
  check_add_through_abi(*b, 7);
}

TEST(PluginLoading, APluginOfThePreviousMinorLoadsAndWorks) {
  // testdev is built as a 1.2 plugin: minor 2 and a table that ends before
  // get_extension (1.3).
  BackendRegistry r({plugin("testdev")}, false);
  Backend* b = r.find("testdev");
  ASSERT_NE(b, nullptr) << r.describe();
  EXPECT_TRUE(b->available());
  EXPECT_EQ(b->abi_minor(), 2u);
  EXPECT_EQ(b->api().struct_size, offsetof(moert_backend_api, get_extension));
  EXPECT_FALSE(MOERT_ABI_HAS_MEMBER(&b->api(), moert_backend_api, get_extension));
  // A 1.3 description (nodes with op_version, a graph with opset_version)
  // given to it: it reads what it knows.
  check_add_through_abi(*b, 8);
}

TEST(PluginLoading, DuplicateNamesAreRecordedAndTheFirstStays) {
  // The same plugin through two search paths.
  BackendRegistry r({kDir + "/libmoert_backend_testdev.so", dup_dir()}, false);
  EXPECT_EQ(backend_names(r), (std::vector<std::string>{"reference", "testdev"}));
  EXPECT_EQ(r.find("testdev")->path(), plugin("testdev"));
  ASSERT_EQ(r.failures().size(), 1u);
  EXPECT_EQ(r.failures()[0].path, dup_dir() + "/libmoert_backend_testdev.so");
  EXPECT_EQ(r.failures()[0].reason,
            "duplicate backend 'testdev' (already loaded from " + plugin("testdev") + ")");

  // The same file twice; the loaded one keeps working.
  EXPECT_EQ(r.load_plugin(plugin("testdev")), nullptr);
  EXPECT_EQ(r.failures().back().reason,
            "duplicate backend 'testdev' (already loaded from " + plugin("testdev") + ")");
  check_add_through_abi(*r.find("testdev"), 11);

  // The built-in name is taken too.
  EXPECT_EQ(r.find("reference"), &r.reference());
}

TEST(PluginLoading, ShutdownRunsOnceWhenTheRegistryIsDestroyed) {
  // Holding our own handle keeps the library (and its counters) alive after
  // the registry closes it.
  void* handle = dlopen(plugin("testdev").c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << dlerror();
  using Counters = void (*)(int*, int*);
  auto counters = reinterpret_cast<Counters>(dlsym(handle, "moert_test_backend_counters"));
  ASSERT_NE(counters, nullptr);
  int init0 = 0, shutdown0 = 0, init1 = 0, shutdown1 = 0;
  counters(&init0, &shutdown0);
  {
    BackendRegistry r({plugin("testdev")}, false);
    ASSERT_NE(r.find("testdev"), nullptr);
    counters(&init1, &shutdown1);
    EXPECT_EQ(init1, init0 + 1);
    EXPECT_EQ(shutdown1, shutdown0);
  }
  counters(&init1, &shutdown1);
  EXPECT_EQ(init1, init0 + 1);
  EXPECT_EQ(shutdown1, shutdown0 + 1);
  dlclose(handle);
}

TEST(PluginLoading, DefaultPathsAreLibmoertsDirectoryThenMoertBackendPath) {
  const char* old = std::getenv("MOERT_BACKEND_PATH");
  std::string saved = old ? old : "";
  const std::string missing = kDir + "/not_there";
  setenv("MOERT_BACKEND_PATH", (dup_dir() + "::" + missing + ":").c_str(), 1);
  BackendRegistry r;
  if (old)
    setenv("MOERT_BACKEND_PATH", saved.c_str(), 1);
  else
    unsetenv("MOERT_BACKEND_PATH");

  Dl_info info;
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&moert::dtype_size), &info), 0);
  const fs::path libdir = fs::path(info.dli_fname).parent_path();
  ASSERT_EQ(r.searched().size(), 3u);
  EXPECT_TRUE(fs::equivalent(r.searched()[0], libdir)) << r.searched()[0];
  EXPECT_EQ(r.searched()[1], dup_dir());
  EXPECT_EQ(r.searched()[2], missing);

  Backend* b = r.find("testdev");
  ASSERT_NE(b, nullptr) << r.describe();
  EXPECT_EQ(b->path(), dup_dir() + "/libmoert_backend_testdev.so");
  EXPECT_EQ(failures_by_path(r)[missing], "no such file or directory");
  // The test plugins' own directory is never searched by default.
  EXPECT_EQ(r.find("nodevice"), nullptr);
}

TEST(PluginLoading, GlobalRegistryStartsWithTheReferenceBackend) {
  BackendRegistry& g = BackendRegistry::global();
  EXPECT_EQ(&g, &BackendRegistry::global());
  ASSERT_FALSE(g.backends().empty());
  EXPECT_EQ(g.backends()[0]->name(), "reference");
  EXPECT_EQ(g.backends()[0]->path(), "(built-in)");
  EXPECT_EQ(&g.reference(), g.backends()[0].get());
  EXPECT_TRUE(g.reference().available());
  EXPECT_GE(g.reference().device_count(), 1);
  EXPECT_EQ(g.find("testdev"), nullptr);
}

// ---------------------------------------------------------------------------

TEST(PluginResolve, ResolvesNamesAndIndices) {
  BackendRegistry r({kDir}, false);
  moert::DeviceRef d = r.resolve("testdev");
  EXPECT_EQ(d.backend, r.find("testdev"));
  EXPECT_EQ(d.device, 0);
  EXPECT_EQ(d.str(), "testdev:0");
  EXPECT_EQ(r.resolve("testdev:0").str(), "testdev:0");
  EXPECT_EQ(r.resolve("reference").backend, &r.reference());
  EXPECT_EQ(r.resolve("reference:0").str(), "reference:0");
}

TEST(PluginResolve, UnknownNameListsWhatIsAvailableAndWhatFailed) {
  BackendRegistry r({kDir}, false);
  std::string message = error_of([&] { r.resolve("cuda:0"); });
  EXPECT_NE(message.find("unknown backend 'cuda'"), std::string::npos) << message;
  EXPECT_NE(message.find("available: reference ("), std::string::npos) << message;
  EXPECT_NE(message.find("newminor (1 device), testdev (1 device)"), std::string::npos) << message;
  EXPECT_NE(message.find("nodevice (no test device present"), std::string::npos) << message;
  EXPECT_NE(message.find(plugin("noentry") + ": no entry point"), std::string::npos) << message;
  EXPECT_NE(message.find(plugin("badmajor") + ": ABI major version"), std::string::npos) << message;
  EXPECT_NE(message.find("searched: " + kDir), std::string::npos) << message;
}

TEST(PluginResolve, UnavailableBackendGivesItsReason) {
  BackendRegistry r({kDir}, false);
  EXPECT_EQ(error_of([&] { r.resolve("nodevice"); }),
            "backend 'nodevice' is unavailable: no test device present "
            "(TESTDEV_VISIBLE_DEVICES is empty) (" +
                plugin("nodevice") + ")");
  EXPECT_EQ(error_of([&] { r.resolve("initfail:0"); }),
            "backend 'initfail' is unavailable: init failed: driver version 3 is older than the "
            "required 4 (" +
                plugin("initfail") + ")");
}

TEST(PluginResolve, IndexOutOfRangeNamesTheDeviceCount) {
  BackendRegistry r({kDir}, false);
  EXPECT_EQ(error_of([&] { r.resolve("testdev:1"); }),
            "device 'testdev:1' does not exist: backend 'testdev' has 1 device "
            "(testdev:0..testdev:0) (" +
                plugin("testdev") + ")");
  for (const char* bad :
       {"testdev:", "testdev:-1", "testdev:x", "testdev:1:2", "testdev:99999999999"}) {
    std::string message = error_of([&] { r.resolve(bad); });
    EXPECT_NE(message.find(std::string("invalid device '") + bad + "'"), std::string::npos)
        << message;
  }
}

TEST(PluginDescribe, OneLinePerBackendAndPerFailure) {
  BackendRegistry r({kDir}, false);
  const std::string text = r.describe();
  std::vector<std::string> lines;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    ASSERT_NE(end, std::string::npos) << "every line ends with a newline";
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  ASSERT_EQ(lines.size(), r.backends().size() + r.failures().size()) << text;
  EXPECT_EQ(lines[4],
            "testdev    available  1 device: moert test device [cpu]  version test-1.0 (" +
                plugin("testdev") + ")");
  EXPECT_EQ(lines[3],
            "nodevice   unavailable  no test device present (TESTDEV_VISIBLE_DEVICES is empty) (" +
                plugin("nodevice") + ")");
  EXPECT_TRUE(lines[0].starts_with("reference  available  ")) << lines[0];
  EXPECT_TRUE(lines[0].ends_with("(built-in)")) << lines[0];
  for (size_t i = 0; i < r.failures().size(); ++i)
    EXPECT_EQ(lines[r.backends().size() + i], "failed  " + r.failures()[i].str());
}

// ---------------------------------------------------------------------------

TEST(PluginAbi, ExecutesAnAddThroughTheGoodPlugin) {
  BackendRegistry r({plugin("testdev")}, false);
  Backend* b = r.find("testdev");
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(b->available());
  EXPECT_EQ(b->device_count(), 1);
  moert::DeviceInfo info = b->device_info(0);
  EXPECT_EQ(info.name, "moert test device");
  EXPECT_EQ(info.kind, MOERT_DEVICE_CPU);
  EXPECT_NE(error_of([&] { b->device_info(1); }).find("has 1 device"), std::string::npos);
  check_add_through_abi(*b, 1234);
}

TEST(PluginAbi, ConstantsAreCopiedAtPrepare) {
  BackendRegistry r({plugin("testdev")}, false);
  const moert_backend_api& api = r.find("testdev")->api();
  BinaryGraph g("add", {{4, 0}, {6, 0}});
  std::mt19937 rng(99);
  std::vector<float> constant = random_floats(24, rng), a = random_floats(24, rng);
  g.tensors[1].kind = MOERT_TENSOR_CONSTANT;
  g.tensors[1].data = constant.data();
  g.tensors[1].data_bytes = constant.size() * sizeof(float);

  moert_executable exe = nullptr;
  call("prepare", api.prepare, 0, &g.graph, &exe);
  const std::vector<float> original = constant;
  std::fill(constant.begin(), constant.end(), 1e30f);  // only valid during prepare

  moert_buffer in = nullptr, out = nullptr;
  call("alloc", api.buffer_alloc, 0, uint64_t{96}, &in);
  call("alloc", api.buffer_alloc, 0, uint64_t{96}, &out);
  call("write", api.buffer_write, in, uint64_t{0}, static_cast<const void*>(a.data()),
       uint64_t{96});
  const int64_t symbols[MOERT_NUM_SYMBOLS] = {0, 0};
  const moert_buffer_view views[3] = {{in, 0}, {nullptr, 0}, {out, 0}};
  moert_execute_args args{
      sizeof(moert_execute_args), symbols, MOERT_NUM_SYMBOLS, views, 3, nullptr, 0};
  call("execute", api.execute, exe, static_cast<const moert_execute_args*>(&args));
  call("synchronize", api.synchronize, 0);
  std::vector<float> result(24);
  call("read", api.buffer_read, out, uint64_t{0}, static_cast<void*>(result.data()), uint64_t{96});
  for (size_t i = 0; i < result.size(); ++i) EXPECT_EQ(result[i], a[i] + original[i]) << i;
  api.executable_free(exe);
  api.buffer_free(in);
  api.buffer_free(out);
}

TEST(PluginAbi, SupportsNodeSaysNoWithAReason) {
  BackendRegistry r({plugin("testdev")}, false);
  const moert_backend_api& api = r.find("testdev")->api();
  struct Case {
    const char* op;
    moert_dtype dtype;
    int32_t expected;
  };
  for (const Case& c : {Case{"add", MOERT_DTYPE_F32, 1}, Case{"mul", MOERT_DTYPE_F32, 0},
                        Case{"add", MOERT_DTYPE_F16, 0}}) {
    SCOPED_TRACE(std::string(c.op) + " " + std::to_string(c.dtype));
    BinaryGraph g(c.op, {{5, 0}}, c.dtype);
    moert_error err = make_error();
    int32_t supported = -1;
    EXPECT_EQ(api.supports_node(0, &g.graph, 0, &supported, &err), MOERT_OK);
    EXPECT_EQ(supported, c.expected);
    EXPECT_EQ(err.message[0] != '\0', c.expected == 0) << err.message;
  }
  // prepare refuses what supports_node refuses, as an error.
  BinaryGraph g("mul", {{5, 0}});
  moert_error err = make_error();
  moert_executable exe = nullptr;
  EXPECT_EQ(api.prepare(0, &g.graph, &exe, &err), MOERT_ERR_UNSUPPORTED);
  EXPECT_EQ(error_of([&] { moert::check_status(MOERT_ERR_UNSUPPORTED, err, "testdev: prepare"); }),
            "testdev: prepare: unsupported: only 'add' is supported");
}

TEST(PluginAbi, PluginErrorsBecomeMoertErrors) {
  BackendRegistry r({plugin("testdev")}, false);
  const moert_backend_api& api = r.find("testdev")->api();
  moert_buffer buffer = nullptr;
  call("alloc", api.buffer_alloc, 0, uint64_t{8}, &buffer);
  char bytes[16] = {};
  moert_error err = make_error();
  moert_status status = api.buffer_read(buffer, 4, bytes, 8, &err);
  EXPECT_EQ(status, MOERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(error_of([&] { moert::check_status(status, err, "testdev:0: reading 'x'"); }),
            "testdev:0: reading 'x': invalid argument: buffer_read out of range");
  api.buffer_free(buffer);
}

TEST(PluginAbi, CheckStatusAndNames) {
  moert_error err = make_error();
  EXPECT_NO_THROW(moert::check_status(MOERT_OK, err, "ctx"));
  EXPECT_EQ(error_of([&] { moert::check_status(MOERT_ERR_DEVICE, err, "ctx"); }),
            "ctx: device error");
  std::strcpy(err.message, "cudaMalloc failed");
  EXPECT_EQ(error_of([&] { moert::check_status(MOERT_ERR_OUT_OF_MEMORY, err, "cuda:0"); }),
            "cuda:0: out of memory: cudaMalloc failed");
  // A message without a terminator is cut at the buffer's end, not read past it.
  std::memset(err.message, 'x', sizeof(err.message));
  std::string long_message = error_of([&] { moert::check_status(MOERT_ERR_INTERNAL, err, "c"); });
  EXPECT_EQ(long_message, "c: internal error: " + std::string(sizeof(err.message), 'x'));

  EXPECT_EQ(moert::status_name(MOERT_OK), "ok");
  EXPECT_EQ(moert::status_name(MOERT_ERR_INVALID_ARGUMENT), "invalid argument");
  EXPECT_EQ(moert::status_name(MOERT_ERR_UNSUPPORTED), "unsupported");
  EXPECT_EQ(moert::status_name(MOERT_ERR_OUT_OF_MEMORY), "out of memory");
  EXPECT_EQ(moert::status_name(MOERT_ERR_DEVICE), "device error");
  EXPECT_EQ(moert::status_name(MOERT_ERR_NO_DEVICE), "no device");
  EXPECT_EQ(moert::status_name(MOERT_ERR_INTERNAL), "internal error");
  EXPECT_EQ(moert::device_kind_name(MOERT_DEVICE_CPU), "cpu");
  EXPECT_EQ(moert::device_kind_name(MOERT_DEVICE_GPU), "gpu");
  EXPECT_EQ(moert::device_kind_name(MOERT_DEVICE_ACCELERATOR), "accelerator");
  EXPECT_EQ(moert::device_kind_name(MOERT_DEVICE_OTHER), "other");
  EXPECT_EQ(moert::DeviceRef{}.str(), "(no device)");
}

}  // namespace
