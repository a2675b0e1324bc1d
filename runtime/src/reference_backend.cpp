// The reference backend: every op of the registry, run by its plain reference
// kernel on host memory.  It is built into the runtime and implements the same
// C ABI as the plugins, so the executor treats it like any other backend; it
// is where unsupported nodes fall back to, and the oracle the other backends
// are checked against.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "abi_graph.h"
#include "moert/backend_registry.h"
#include "moert/error.h"
#include "moert/op_registry.h"

struct moert_buffer_impl {
  void* data = nullptr;
  uint64_t bytes = 0;
};

struct moert_executable_impl {
  struct Tensor {
    moert::DType dtype;
    moert::Shape shape;
    moert_tensor_kind kind;
    const void* constant = nullptr;                    // CONSTANT: data (copied or persistent)
    std::shared_ptr<std::vector<unsigned char>> copy;  // when not persistent
  };
  std::vector<Tensor> tensors;
  std::vector<moert::Node> nodes;  // inputs/outputs index `tensors`
  std::vector<const moert::OpDef*> ops;
};

namespace moert {
namespace {

moert_status fail(moert_error* err, moert_status status, const std::string& message) {
  if (err) std::snprintf(err->message, sizeof(err->message), "%s", message.c_str());
  return status;
}

moert_status ref_init(moert_error*) { return MOERT_OK; }
void ref_shutdown() {}
int32_t ref_device_count() { return 1; }

moert_status ref_device_info(int32_t device, moert_device_info* info, moert_error* err) {
  if (device != 0)
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, "no device " + std::to_string(device));
  size_t size = info->struct_size;
  std::memset(info, 0, size);
  info->struct_size = size;
  std::snprintf(info->name, sizeof(info->name), "host (reference kernels)");
  info->kind = MOERT_DEVICE_CPU;
  long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES),
       page = sysconf(_SC_PAGESIZE);
  info->total_memory =
      pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
  info->free_memory =
      avail > 0 && page > 0 ? static_cast<uint64_t>(avail) * static_cast<uint64_t>(page) : 0;
  if (MOERT_ABI_HAS_MEMBER(info, moert_device_info, capabilities))
    std::snprintf(info->capabilities, sizeof(info->capabilities),
                  "ops=all, weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16, "
                  "accumulation=f64, threads=1");
  return MOERT_OK;
}

moert_status ref_buffer_alloc(int32_t, uint64_t bytes, moert_buffer* out, moert_error* err) {
  auto* b = new (std::nothrow) moert_buffer_impl;
  if (b) b->data = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
  if (!b || !b->data) {
    delete b;
    return fail(err, MOERT_ERR_OUT_OF_MEMORY,
                "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  }
  b->bytes = bytes;
  *out = b;
  return MOERT_OK;
}

void ref_buffer_free(moert_buffer b) {
  if (!b) return;
  std::free(b->data);
  delete b;
}

moert_status check_range(moert_buffer b, uint64_t offset, uint64_t bytes, moert_error* err) {
  if (!b) return fail(err, MOERT_ERR_INVALID_ARGUMENT, "null buffer");
  if (offset > b->bytes || bytes > b->bytes - offset)
    return fail(err, MOERT_ERR_INVALID_ARGUMENT,
                "range [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
                    ") outside a buffer of " + std::to_string(b->bytes) + " bytes");
  return MOERT_OK;
}

moert_status ref_buffer_write(moert_buffer dst, uint64_t offset, const void* src, uint64_t bytes,
                              moert_error* err) {
  if (moert_status s = check_range(dst, offset, bytes, err)) return s;
  if (bytes) std::memcpy(static_cast<char*>(dst->data) + offset, src, bytes);
  return MOERT_OK;
}

moert_status ref_buffer_read(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                             moert_error* err) {
  if (moert_status s = check_range(src, offset, bytes, err)) return s;
  if (bytes) std::memcpy(dst, static_cast<const char*>(src->data) + offset, bytes);
  return MOERT_OK;
}

moert_status ref_buffer_copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                             uint64_t dst_offset, uint64_t bytes, moert_error* err) {
  if (moert_status s = check_range(src, src_offset, bytes, err)) return s;
  if (moert_status s = check_range(dst, dst_offset, bytes, err)) return s;
  if (bytes)
    std::memmove(static_cast<char*>(dst->data) + dst_offset,
                 static_cast<const char*>(src->data) + src_offset, bytes);
  return MOERT_OK;
}

// Rebuilds node `n` of the description as a C++ node whose value ids are the
// description's tensor indices.
Node node_from_abi(const moert_graph_desc& g, size_t n) {
  const moert_node_desc& d = *g.nodes[n];
  Node node{d.op, d.name ? d.name : "", attributes_from_abi(d), {}, {}};
  for (size_t i = 0; i < d.num_inputs; ++i)
    node.inputs.push_back(d.inputs[i] == MOERT_NO_TENSOR ? kNoValue
                                                         : static_cast<ValueId>(d.inputs[i]));
  for (size_t i = 0; i < d.num_outputs; ++i)
    node.outputs.push_back(static_cast<ValueId>(d.outputs[i]));
  return node;
}

moert_status ref_supports_node(int32_t, const moert_graph_desc* g, size_t node_index,
                               int32_t* supported, moert_error* err) {
  *supported = 0;
  if (node_index >= g->num_nodes)
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, "node index out of range");
  const char* op = g->nodes[node_index]->op;
  if (OpRegistry::global().find(op)) {
    *supported = 1;
  } else {
    fail(err, MOERT_OK, std::string("unknown op '") + op + "'");
  }
  return MOERT_OK;
}

moert_status ref_prepare(int32_t, const moert_graph_desc* g, moert_executable* out,
                         moert_error* err) {
  try {
    auto exe = std::make_unique<moert_executable_impl>();
    bool persist = MOERT_ABI_HAS_MEMBER(g, moert_graph_desc, flags) &&
                   (g->flags & MOERT_GRAPH_CONSTANTS_PERSIST);
    for (size_t i = 0; i < g->num_tensors; ++i) {
      const moert_tensor_desc& t = *g->tensors[i];
      moert_executable_impl::Tensor rt{static_cast<DType>(t.dtype), shape_from_abi(t), t.kind,
                                       nullptr, nullptr};
      if (t.kind == MOERT_TENSOR_CONSTANT) {
        if (persist) {
          rt.constant = t.data;
        } else {
          const auto* bytes = static_cast<const unsigned char*>(t.data);
          rt.copy = std::make_shared<std::vector<unsigned char>>(bytes, bytes + t.data_bytes);
          rt.constant = rt.copy->data();
        }
      }
      exe->tensors.push_back(std::move(rt));
    }
    for (size_t n = 0; n < g->num_nodes; ++n) {
      exe->nodes.push_back(node_from_abi(*g, n));
      exe->ops.push_back(&OpRegistry::global().get(exe->nodes.back().op));
    }
    *out = exe.release();
    return MOERT_OK;
  } catch (const std::exception& e) {
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, e.what());
  }
}

void ref_executable_free(moert_executable exe) { delete exe; }

moert_status ref_execute(moert_executable exe, const moert_execute_args* args, moert_error* err) {
  try {
    SymbolValues symbols;
    for (size_t i = 0; i < args->num_symbols && i < MOERT_NUM_SYMBOLS; ++i)
      symbols.values[i] = args->symbol_values[i];
    if (args->num_views != exe->tensors.size())
      return fail(err, MOERT_ERR_INVALID_ARGUMENT,
                  "execute got " + std::to_string(args->num_views) + " views for " +
                      std::to_string(exe->tensors.size()) + " tensors");
    auto view_of = [&](ValueId id) -> TensorView {
      const auto& t = exe->tensors[static_cast<size_t>(id)];
      TensorView v{t.dtype, t.shape.resolve(symbols), nullptr};
      if (t.kind == MOERT_TENSOR_CONSTANT) {
        v.data = const_cast<void*>(t.constant);
      } else {
        const moert_buffer_view& bv = args->views[static_cast<size_t>(id)];
        if (!bv.buffer) throw Error("tensor " + std::to_string(id) + " is not bound");
        uint64_t bytes = static_cast<uint64_t>(v.numel()) * dtype_size(v.dtype);
        if (bv.offset > bv.buffer->bytes || bytes > bv.buffer->bytes - bv.offset)
          throw Error("tensor " + std::to_string(id) + " is bound past the end of its buffer");
        v.data = static_cast<char*>(bv.buffer->data) + bv.offset;
      }
      return v;
    };
    double* times = nullptr;
    if (MOERT_ABI_HAS_MEMBER(args, moert_execute_args, num_node_seconds) && args->node_seconds &&
        args->num_node_seconds >= exe->nodes.size())
      times = args->node_seconds;
    for (size_t n = 0; n < exe->nodes.size(); ++n) {
      const auto start = std::chrono::steady_clock::now();
      const Node& node = exe->nodes[n];
      KernelContext ctx{node, {}, {}, symbols};
      for (ValueId in : node.inputs)
        ctx.inputs.push_back(in == kNoValue ? TensorView{} : view_of(in));
      for (ValueId o : node.outputs) ctx.outputs.push_back(view_of(o));
      exe->ops[n]->reference(ctx);
      if (times)
        times[n] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    return MOERT_OK;
  } catch (const std::exception& e) {
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, e.what());
  }
}

moert_status ref_synchronize(int32_t, moert_error*) { return MOERT_OK; }

const moert_backend_api kReferenceApi = {
    sizeof(moert_backend_api),
    MOERT_ABI_MAJOR,
    MOERT_ABI_MINOR,
    "reference",
    "builtin",
    ref_init,
    ref_shutdown,
    ref_device_count,
    ref_device_info,
    ref_buffer_alloc,
    ref_buffer_free,
    ref_buffer_write,
    ref_buffer_read,
    ref_buffer_copy,
    ref_supports_node,
    ref_prepare,
    ref_executable_free,
    ref_execute,
    ref_synchronize,
};

}  // namespace

const moert_backend_api* reference_backend_api() { return &kReferenceApi; }

}  // namespace moert
