// The backend contract: what every backend device must do besides computing
// its ops right (which the case files check).  Written once, run on every
// device of every backend, the reference one included:
//   test_conformance --backend=cpu --family=contract
// Each test gets the device ("opencl:0") and talks to it through the
// executor or straight through the plugin ABI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "conformance.h"
#include "moert/backend_registry.h"
#include "moert/executor.h"
#include "moert/graph.h"
#include "support/backend_test.h"
#include "support/op_runner.h"

namespace moert::conformance {
namespace {

using moert::testing::error_of;
using moert::testing::on;
using moert::testing::random_tensor;
using moert::testing::run_error;

moert_error make_error() {
  moert_error err{};
  err.struct_size = sizeof(err);
  return err;
}

DeviceRef device_of(const std::string& device) { return BackendRegistry::global().resolve(device); }

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One `add` node over [2, 3] f32 tensors, described by hand through the ABI,
// so a test can give it what the runtime never would.
struct AddGraph {
  moert_tensor_desc tensors[3];
  const moert_tensor_desc* tensor_ptrs[3];
  moert_attr attr;
  const moert_attr* attr_ptrs[1] = {&attr};
  uint32_t inputs[2] = {0, 1}, outputs[1] = {2};
  moert_node_desc node;
  const moert_node_desc* node_ptrs[1] = {&node};
  moert_graph_desc graph;

  AddGraph() {
    for (int i = 0; i < 3; ++i) {
      std::memset(&tensors[i], 0, sizeof(tensors[i]));
      tensors[i].struct_size = sizeof(moert_tensor_desc);
      tensors[i].name = i == 0 ? "a" : i == 1 ? "b" : "y";
      tensors[i].dtype = MOERT_DTYPE_F32;
      tensors[i].rank = 2;
      tensors[i].dims[0].fixed = 2;
      tensors[i].dims[1].fixed = 3;
      tensors[i].kind = MOERT_TENSOR_ACTIVATION;
      tensor_ptrs[i] = &tensors[i];
    }
    std::memset(&attr, 0, sizeof(attr));
    attr.struct_size = sizeof(attr);
    std::memset(&node, 0, sizeof(node));
    node.struct_size = sizeof(node);
    node.op = "add";
    node.name = "node0";
    node.inputs = inputs;
    node.num_inputs = 2;
    node.outputs = outputs;
    node.num_outputs = 1;
    node.op_version = 1;
    std::memset(&graph, 0, sizeof(graph));
    graph.struct_size = sizeof(graph);
    graph.tensors = tensor_ptrs;
    graph.num_tensors = 3;
    graph.nodes = node_ptrs;
    graph.num_nodes = 1;
    graph.opset_version = MOERT_OPSET_VERSION;
  }
  void add_attribute(const char* name) {
    attr.name = name;
    attr.type = MOERT_ATTR_INT;
    attr.i = 1;
    node.attrs = attr_ptrs;
    node.num_attrs = 1;
  }
};

// Whether the device supports node 0 of `g`, and why not.
bool supports(const DeviceRef& d, const moert_graph_desc& g, std::string* why) {
  moert_error err = make_error();
  int32_t supported = -1;
  EXPECT_EQ(d.backend->api().supports_node(d.device, &g, 0, &supported, &err), MOERT_OK)
      << err.message;
  *why = err.message;
  return supported == 1;
}

const ContractRegistration runs_a_node_described_through_the_abi(
    "RunsANodeDescribedThroughTheAbi", [](const std::string& device) {
      const DeviceRef d = device_of(device);
      const moert_backend_api& api = d.backend->api();
      AddGraph g;
      std::string why;
      ASSERT_TRUE(supports(d, g.graph, &why)) << why;
      moert_error err = make_error();
      moert_executable exe = nullptr;
      ASSERT_EQ(api.prepare(d.device, &g.graph, &exe, &err), MOERT_OK) << err.message;
      moert_buffer buf[3] = {};
      const float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {0.5f, -1, 2, 0.25f, 8, -6};
      for (moert_buffer& x : buf) ASSERT_EQ(api.buffer_alloc(d.device, 24, &x, &err), MOERT_OK);
      ASSERT_EQ(api.buffer_write(buf[0], 0, a, 24, &err), MOERT_OK) << err.message;
      ASSERT_EQ(api.buffer_write(buf[1], 0, b, 24, &err), MOERT_OK) << err.message;
      const float poison[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
      ASSERT_EQ(api.buffer_write(buf[2], 0, poison, 24, &err), MOERT_OK) << err.message;
      const moert_buffer_view views[3] = {{buf[0], 0}, {buf[1], 0}, {buf[2], 0}};
      const int64_t symbols[2] = {0, 0};
      moert_execute_args args{};
      args.struct_size = sizeof(args);
      args.symbol_values = symbols;
      args.num_symbols = 2;
      args.views = views;
      args.num_views = 3;
      ASSERT_EQ(api.execute(exe, &args, &err), MOERT_OK) << err.message;
      ASSERT_EQ(api.synchronize(d.device, &err), MOERT_OK) << err.message;
      float y[6] = {};
      ASSERT_EQ(api.buffer_read(buf[2], 0, y, 24, &err), MOERT_OK) << err.message;
      for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], a[i] + b[i]) << i;

      // Wrong bindings are errors that name the tensor, and leave the
      // executable usable.
      args.num_views = 2;
      err = make_error();
      EXPECT_EQ(api.execute(exe, &args, &err), MOERT_ERR_INVALID_ARGUMENT);
      EXPECT_TRUE(has(err.message, "views for 3 tensors")) << err.message;
      const moert_buffer_view unbound[3] = {{buf[0], 0}, {nullptr, 0}, {buf[2], 0}};
      args.views = unbound;
      args.num_views = 3;
      err = make_error();
      EXPECT_EQ(api.execute(exe, &args, &err), MOERT_ERR_INVALID_ARGUMENT);
      EXPECT_TRUE(has(err.message, "tensor 1 is not bound")) << err.message;
      const moert_buffer_view past_end[3] = {{buf[0], 8}, {buf[1], 0}, {buf[2], 0}};
      args.views = past_end;
      err = make_error();
      EXPECT_EQ(api.execute(exe, &args, &err), MOERT_ERR_INVALID_ARGUMENT);
      EXPECT_TRUE(has(err.message, "tensor 0 is bound past the end of its buffer")) << err.message;
      args.views = views;
      EXPECT_EQ(api.execute(exe, &args, &err), MOERT_OK) << err.message;

      api.executable_free(exe);
      for (moert_buffer x : buf) api.buffer_free(x);
    });

const ContractRegistration refuses_an_attribute_it_does_not_know(
    "RefusesAnAttributeItDoesNotKnow", [](const std::string& device) {
      // An op that gained an attribute after the plugin was built: running
      // it without the attribute's meaning would compute something else.
      const DeviceRef d = device_of(device);
      AddGraph g;
      g.add_attribute("frobnicate");
      std::string why;
      EXPECT_FALSE(supports(d, g.graph, &why));
      EXPECT_TRUE(has(why, "attribute 'frobnicate' of op 'add' is unknown")) << why;
      moert_error err = make_error();
      moert_executable exe = nullptr;
      EXPECT_EQ(d.backend->api().prepare(d.device, &g.graph, &exe, &err), MOERT_ERR_UNSUPPORTED);
      EXPECT_EQ(exe, nullptr);
      EXPECT_TRUE(has(err.message, "node 'node0' (add)")) << err.message;
      EXPECT_TRUE(has(err.message, "frobnicate")) << err.message;
    });

const ContractRegistration refuses_a_newer_op_version(
    "RefusesANewerOpVersion", [](const std::string& device) {
      const DeviceRef d = device_of(device);
      AddGraph g;
      g.node.op_version = 2;
      std::string why;
      EXPECT_FALSE(supports(d, g.graph, &why));
      EXPECT_TRUE(has(why, "op 'add' version 2 is newer than the version 1")) << why;
      // A 1.2 runtime's node, without the member, means version 1.
      g.node.op_version = 0;
      g.node.struct_size = offsetof(moert_node_desc, op_version);
      EXPECT_TRUE(supports(d, g.graph, &why)) << why;
    });

const ContractRegistration lists_what_it_supports(
    "ListsWhatItSupports", [](const std::string& device) {
      const DeviceRef d = device_of(device);
      moert_device_info info{};
      info.struct_size = sizeof(info);
      moert_error err = make_error();
      ASSERT_EQ(d.backend->api().device_info(d.device, &info, &err), MOERT_OK) << err.message;
      EXPECT_GT(std::strlen(info.name), 0u);
      // Derived from the kernel table: every in-tree backend runs every op.
      EXPECT_TRUE(has(info.capabilities, "ops=all")) << info.capabilities;
      // A 1.1 caller's smaller struct: nothing written past its end.
      struct Small {
        moert_device_info info;
      } small{};
      std::memset(&small, 0x5a, sizeof(small));
      small.info.struct_size = offsetof(moert_device_info, capabilities);
      ASSERT_EQ(d.backend->api().device_info(d.device, &small.info, &err), MOERT_OK);
      EXPECT_EQ(small.info.capabilities[0], 0x5a);
    });

const ContractRegistration reports_errors_found_on_the_device(
    "ReportsErrorsFoundOnTheDevice", [](const std::string& device) {
      std::mt19937 rng(7);
      const Tensor table = random_tensor(DType::f32, {10, 4}, rng);
      const Tensor ids = Tensor::from_doubles(DType::i64, {2, 3}, {1, 2, 3, 4, 12, -1});
      std::string msg = run_error(device, "embedding", {table, ids});
      EXPECT_TRUE(has(msg, "node 'node' (embedding)")) << msg;
      EXPECT_TRUE(has(msg, "id 12 at position [1, 1], outside [0, V) with V = 10")) << msg;

      const Tensor experts = Tensor::from_doubles(DType::i32, {2, 2}, {0, 1, 1, 7});
      const Tensor weights = random_tensor(DType::f32, {2, 2}, rng);
      msg = run_error(device, "routing_dense", {experts, weights},
                      Attributes{{"num_experts", int64_t{4}}});
      EXPECT_TRUE(has(msg, "input 'expert_ids'[1, 1] = 7 is out of range [0, 4)")) << msg;

      const Tensor x = random_tensor(DType::f32, {2, 8}, rng);
      const Tensor w1 = random_tensor(DType::f32, {4, 6, 8}, rng),
                   w2 = random_tensor(DType::f32, {4, 8, 6}, rng);
      msg = run_error(device, "moe", {x, experts, weights, w1, w1, w2});
      EXPECT_TRUE(has(msg, "input 'expert_ids'[1, 1] = 7 is out of range [0, 4)")) << msg;
      // Enough tokens for the grouped path.
      const Tensor many =
          Tensor::from_doubles(DType::i64, {6, 2}, {0, 1, 2, 3, 1, 2, 3, -2, 0, 9, 1, 1});
      msg = run_error(device, "moe",
                      {random_tensor(DType::bf16, {6, 8}, rng), many,
                       random_tensor(DType::f32, {6, 2}, rng), w1, w1, w2});
      EXPECT_TRUE(has(msg, "input 'expert_ids'[3, 1] = -2 is out of range [0, 4)")) << msg;

      const Tensor logits = Tensor::from_doubles(DType::f32, {2, 3}, {0, 1, 2, 3, NAN, 5});
      msg = run_error(device, "router", {logits}, Attributes{{"top_k", int64_t{1}}});
      EXPECT_TRUE(has(msg, "input 'logits'[1, 1] = nan is not finite")) << msg;
    });

const ContractRegistration a_context_overflow_writes_nothing(
    "AContextOverflowWritesNothing", [](const std::string& device) {
      Graph g;
      const ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 3});
      const ValueId cache = g.add_state("cache", DType::f32, {4, 3});
      g.mark_output(g.add("cache_update", "update", {cache, x}));
      Executor dev(g, on(device));
      std::mt19937 rng(8);
      dev.run({random_tensor(DType::f32, {3, 3}, rng)}, SymbolValues::of(3, 0));
      const std::vector<double> before = dev.read_state("cache").to_doubles();
      // P + T > C: refused before anything is written.
      const std::string msg = error_of([&] {
        dev.run({random_tensor(DType::f32, {2, 3}, rng)}, SymbolValues::of(2, 3));
      });
      EXPECT_TRUE(has(msg, "context overflow")) << msg;
      EXPECT_EQ(dev.read_state("cache").to_doubles(), before);
      // And the executable still runs.
      dev.run({random_tensor(DType::f32, {1, 3}, rng)}, SymbolValues::of(1, 3));
    });

const ContractRegistration out_of_memory_names_the_size(
    "OutOfMemoryNamesTheSize", [](const std::string& device) {
      const DeviceRef d = device_of(device);
      moert_error err = make_error();
      moert_buffer b = nullptr;
      const uint64_t huge = uint64_t{1} << 52;
      EXPECT_EQ(d.backend->api().buffer_alloc(d.device, huge, &b, &err), MOERT_ERR_OUT_OF_MEMORY);
      EXPECT_EQ(b, nullptr);
      EXPECT_TRUE(has(err.message, std::to_string(huge))) << err.message;
      // The device still works afterwards.
      ASSERT_EQ(d.backend->api().buffer_alloc(d.device, 64, &b, &err), MOERT_OK) << err.message;
      d.backend->api().buffer_free(b);
    });

const ContractRegistration buffers_check_their_ranges_and_copies_behave_like_memmove(
    "BuffersCheckRangesAndCopiesBehaveLikeMemmove", [](const std::string& device) {
      const DeviceRef d = device_of(device);
      const moert_backend_api& api = d.backend->api();
      moert_error err = make_error();
      moert_buffer b = nullptr;
      ASSERT_EQ(api.buffer_alloc(d.device, 16, &b, &err), MOERT_OK) << err.message;
      const char src[] = "0123456789abcdef";
      ASSERT_EQ(api.buffer_write(b, 0, src, 16, &err), MOERT_OK) << err.message;
      ASSERT_EQ(api.buffer_copy(b, 0, b, 4, 10, &err), MOERT_OK) << err.message;
      char out[17] = {};
      ASSERT_EQ(api.buffer_read(b, 0, out, 16, &err), MOERT_OK) << err.message;
      EXPECT_STREQ(out, "01230123456789ef");
      ASSERT_EQ(api.buffer_copy(b, 6, b, 2, 10, &err), MOERT_OK) << err.message;
      ASSERT_EQ(api.buffer_read(b, 0, out, 16, &err), MOERT_OK) << err.message;
      // Backwards: [6, 16) onto [2, 12).
      const std::string after = out;
      EXPECT_EQ(after, "0123456789ef89ef");

      err = make_error();
      EXPECT_EQ(api.buffer_write(b, 10, src, 8, &err), MOERT_ERR_INVALID_ARGUMENT);
      EXPECT_TRUE(has(err.message, "range [10, 18) outside a buffer of 16 bytes")) << err.message;
      err = make_error();
      EXPECT_EQ(api.buffer_read(b, 17, out, 0, &err), MOERT_ERR_INVALID_ARGUMENT);
      err = make_error();
      EXPECT_EQ(api.buffer_copy(b, 0, b, 12, 8, &err), MOERT_ERR_INVALID_ARGUMENT);
      // Nothing was written by the refused calls.
      ASSERT_EQ(api.buffer_read(b, 0, out, 16, &err), MOERT_OK) << err.message;
      EXPECT_EQ(std::string(out), after);
      api.buffer_free(b);
      api.buffer_free(nullptr);  // allowed, does nothing
    });

const ContractRegistration profiling_times_every_node(
    "ProfilingTimesEveryNode", [](const std::string& device) {
      Graph g;
      const ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 8});
      const ValueId w = g.add_input("w", DType::f32, Shape{8});
      const ValueId h = g.add("rms_norm", "norm", {x, w});
      g.mark_output(g.add("silu", "act", {g.add("mul", "scale", {h, x})}));
      Executor dev(g, on(device));
      dev.set_profiling(true);
      std::mt19937 rng(6);
      dev.run({random_tensor(DType::f32, {3, 8}, rng), random_tensor(DType::f32, {8}, rng)},
              SymbolValues::of(3, 0));
      ASSERT_EQ(dev.profile().size(), 3u);
      for (const NodeTiming& t : dev.profile()) EXPECT_GE(t.seconds, 0.0) << t.node;
    });

}  // namespace
}  // namespace moert::conformance
