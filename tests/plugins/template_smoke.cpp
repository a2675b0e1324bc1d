// Loads the out-of-tree template backend the way a user does (through
// MOERT_BACKEND_PATH and the global registry) and runs "add" and "mul" through
// its function table.  Usage: template_smoke <path of the built plugin>.
// Exits non-zero with a message on the first thing that is wrong.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "moert/backend_registry.h"
#include "moert/error.h"

namespace {

moert_error make_error() {
  moert_error err;
  std::memset(&err, 0, sizeof(err));
  err.struct_size = sizeof(err);
  return err;
}

// Runs `op` on random f32 inputs of shape [rows, T] with T given at execute,
// and compares with the same arithmetic done here.
void run_binary(const moert::Backend& backend, const char* op, float (*expected)(float, float)) {
  const moert_backend_api& api = backend.api();
  const int64_t rows = 3, tokens = 7, count = rows * tokens;
  const uint64_t bytes = static_cast<uint64_t>(count) * sizeof(float);

  moert_tensor_desc tensors[3];
  const char* names[3] = {"a", "b", "out"};
  for (int i = 0; i < 3; ++i) {
    std::memset(&tensors[i], 0, sizeof(tensors[i]));
    tensors[i].struct_size = sizeof(moert_tensor_desc);
    tensors[i].name = names[i];
    tensors[i].dtype = MOERT_DTYPE_F32;
    tensors[i].rank = 2;
    tensors[i].dims[0] = {rows, 0};
    tensors[i].dims[1] = {0, 1u << MOERT_SYM_TOKENS};
    tensors[i].kind = MOERT_TENSOR_ACTIVATION;
  }
  const moert_tensor_desc* tensor_ptrs[3] = {&tensors[0], &tensors[1], &tensors[2]};
  const uint32_t inputs[2] = {0, 1};
  const uint32_t outputs[1] = {2};
  moert_node_desc node;
  std::memset(&node, 0, sizeof(node));
  node.struct_size = sizeof(node);
  node.op = op;
  node.name = "node";
  node.inputs = inputs;
  node.num_inputs = 2;
  node.outputs = outputs;
  node.num_outputs = 1;
  const moert_node_desc* node_ptrs[1] = {&node};
  moert_graph_desc graph{sizeof(moert_graph_desc), tensor_ptrs, 3, node_ptrs, 1, 0,
                         MOERT_OPSET_VERSION};

  moert_error err = make_error();
  int32_t supported = 0;
  moert::check_status(api.supports_node(0, &graph, 0, &supported, &err), err, "supports_node");
  moert::check(supported == 1, std::string("template does not support ") + op);

  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> dist(0.0f, 10.0f);
  std::vector<float> a(count), b(count), out(count, -1.0f);
  for (auto& v : a) v = dist(rng);
  for (auto& v : b) v = dist(rng);

  moert_buffer buffer = nullptr;
  err = make_error();
  moert::check_status(api.buffer_alloc(0, 3 * bytes, &buffer, &err), err, "buffer_alloc");
  err = make_error();
  moert::check_status(api.buffer_write(buffer, 0, a.data(), bytes, &err), err, "write a");
  err = make_error();
  moert::check_status(api.buffer_write(buffer, bytes, b.data(), bytes, &err), err, "write b");

  moert_executable exe = nullptr;
  err = make_error();
  moert::check_status(api.prepare(0, &graph, &exe, &err), err, "prepare");
  const int64_t symbols[MOERT_NUM_SYMBOLS] = {tokens, 0};
  const moert_buffer_view views[3] = {{buffer, 0}, {buffer, bytes}, {buffer, 2 * bytes}};
  moert_execute_args args{
      sizeof(moert_execute_args), symbols, MOERT_NUM_SYMBOLS, views, 3, nullptr, 0};
  err = make_error();
  moert::check_status(api.execute(exe, &args, &err), err, "execute");
  err = make_error();
  moert::check_status(api.synchronize(0, &err), err, "synchronize");
  err = make_error();
  moert::check_status(api.buffer_read(buffer, 2 * bytes, out.data(), bytes, &err), err, "read");
  api.executable_free(exe);
  api.buffer_free(buffer);

  for (int64_t i = 0; i < count; ++i) {
    float want = expected(a[i], b[i]);
    moert::check(out[i] == want, std::string(op) + ": element " + std::to_string(i) + " is " +
                                     std::to_string(out[i]) + ", expected " + std::to_string(want));
  }
  std::cout << op << " through the template backend: " << count << " elements match\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: template_smoke <libmoert_backend_template.so>\n";
    return 2;
  }
  try {
    moert::BackendRegistry& registry = moert::BackendRegistry::global();
    std::cout << registry.describe();
    moert::Backend* backend = registry.find("template");
    moert::check(backend != nullptr, "backend 'template' was not loaded");
    moert::check(backend->available(),
                 "backend 'template' is unavailable: " + backend->unavailable_reason());
    moert::check(std::filesystem::equivalent(backend->path(), argv[1]),
                 "backend 'template' came from " + backend->path() + ", not " + argv[1]);
    moert::DeviceRef device = registry.resolve("template:0");
    moert::check(device.backend == backend && device.str() == "template:0",
                 "resolve('template:0') gave " + device.str());
    run_binary(*backend, "add", [](float x, float y) { return x + y; });
    run_binary(*backend, "mul", [](float x, float y) { return x * y; });
  } catch (const std::exception& e) {
    std::cerr << "template_smoke: " << e.what() << "\n";
    return 1;
  }
  std::cout << "template backend: ok\n";
  return 0;
}
