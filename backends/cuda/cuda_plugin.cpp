// libmoert_backend_cuda: the CUDA backend plugin.  One moert device per CUDA
// device the kernels were built for ("cuda:0", ...).  Buffers are pooled
// device memory moved through the device's stream; constants are uploaded
// once at prepare; each node's kernels live in ops/ (host side: checks,
// shapes, launch planning) and kernels/ (device code).  Without a device or
// a driver, init() reports MOERT_ERR_NO_DEVICE with the CUDA error and the
// runtime lists the backend as unavailable.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "kernel.h"
#include "kernels/launch.h"
#include "options.h"
#include "step_graph.h"

struct moert_buffer_impl {
  void* data = nullptr;
  uint64_t bytes = 0;
  int32_t device = 0;
};

struct moert_executable_impl {
  struct Binding {
    moert_tensor_kind kind = MOERT_TENSOR_ACTIVATION;
    moert_dtype dtype = MOERT_DTYPE_F32;
    uint32_t rank = 0;
    std::array<moert_dim, MOERT_MAX_RANK> dims{};
    moert::cuda::DeviceBlock constant;  // CONSTANT: the uploaded data
  };
  struct Step {
    std::string where;  // "node 'x' (op)"
    std::unique_ptr<moert::cuda::Kernel> kernel;
    std::vector<uint32_t> inputs, outputs;
    bool past_in_shapes = false;  // a tensor's shape has P in it
    int error_base = 0, error_count = 0;
    moert::cuda::ExecContext ctx;
    explicit Step(moert::cuda::Device& d) : ctx(d) {}
  };
  moert::cuda::Device* device = nullptr;
  std::vector<Binding> tensors;
  std::vector<Step> steps;
  moert::cuda::DeviceBlock errors;  // one 64-bit word per error slot
  int num_error_slots = 0;
  unsigned long long* host_errors = nullptr;  // pinned mirror of the slots
  // Decode steps as CUDA graphs: one per segment of kGraphSegmentSteps nodes.
  std::vector<std::unique_ptr<moert::cuda::StepGraph>> graphs;
  // Whether a segment's launches depend on P (then it is captured again as
  // P grows; otherwise replayed unchanged, reading P from step_past).
  std::vector<bool> segment_uses_past;
  // The tensors each segment's nodes read or write (their bindings key it).
  std::vector<std::vector<uint32_t>> segment_tensors;
  moert::cuda::DeviceBlock step_past;  // int64: P of the graph step running
  ~moert_executable_impl() {
    if (host_errors) cudaFreeHost(host_errors);
  }
};

namespace moert::cuda {
namespace {

using plugin::guarded;
using plugin::report;

moert_status cuda_init(moert_error* err) {
  const moert_status s = guarded(err, [] { discover_devices(); });
  if (s != MOERT_OK) devices().clear();
  return s;
}

void cuda_shutdown() { devices().clear(); }

int32_t cuda_device_count() { return static_cast<int32_t>(devices().size()); }

moert_status cuda_device_info(int32_t index, moert_device_info* info, moert_error* err) {
  return guarded(err, [&] {
    Device& d = device(index);
    const size_t size = info->struct_size;
    std::memset(info, 0, size);
    info->struct_size = size;
    std::snprintf(info->name, sizeof(info->name), "%s", d.caps().name.c_str());
    info->kind = MOERT_DEVICE_GPU;
    uint64_t free_bytes = 0, total = 0;
    d.memory_info(&free_bytes, &total);
    info->total_memory = total ? total : d.caps().total_memory;
    info->free_memory = free_bytes;
    if (MOERT_ABI_HAS_MEMBER(info, moert_device_info, capabilities)) {
      const std::string caps =
          d.caps().summary() + ", ops=all, weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16";
      std::snprintf(info->capabilities, sizeof(info->capabilities), "%s", caps.c_str());
    }
  });
}

moert_status cuda_buffer_alloc(int32_t index, uint64_t bytes, moert_buffer* out, moert_error* err) {
  return guarded(err, [&] {
    *out = nullptr;
    Device& d = device(index);
    auto b = std::make_unique<moert_buffer_impl>();
    b->data = d.allocate(bytes, "a buffer of " + std::to_string(bytes) + " bytes");
    b->bytes = bytes;
    b->device = index;
    *out = b.release();
  });
}

void cuda_buffer_free(moert_buffer b) {
  if (!b) return;
  if (b->data && static_cast<size_t>(b->device) < devices().size())
    device(b->device).release(b->data);
  delete b;
}

void check_range(moert_buffer b, uint64_t offset, uint64_t bytes) {
  require(b != nullptr, "null buffer");
  require(offset <= b->bytes && bytes <= b->bytes - offset,
          "range [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
              ") outside a buffer of " + std::to_string(b->bytes) + " bytes");
}

moert_status cuda_buffer_write(moert_buffer dst, uint64_t offset, const void* src, uint64_t bytes,
                               moert_error* err) {
  return guarded(err, [&] {
    check_range(dst, offset, bytes);
    if (bytes == 0) return;
    Device& d = device(dst->device);
    d.activate();
    check_cuda(cudaMemcpyAsync(static_cast<char*>(dst->data) + offset, src, bytes,
                               cudaMemcpyHostToDevice, d.stream()),
               "writing " + std::to_string(bytes) + " bytes to " + d.label());
    // The caller may reuse `src` on return.
    d.synchronize("writing to the device");
  });
}

moert_status cuda_buffer_read(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                              moert_error* err) {
  return guarded(err, [&] {
    check_range(src, offset, bytes);
    if (bytes == 0) return;
    Device& d = device(src->device);
    d.activate();
    check_cuda(cudaMemcpyAsync(dst, static_cast<const char*>(src->data) + offset, bytes,
                               cudaMemcpyDeviceToHost, d.stream()),
               "reading " + std::to_string(bytes) + " bytes from " + d.label());
    d.synchronize("reading from the device");
  });
}

moert_status cuda_buffer_copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                              uint64_t dst_offset, uint64_t bytes, moert_error* err) {
  return guarded(err, [&] {
    check_range(src, src_offset, bytes);
    check_range(dst, dst_offset, bytes);
    if (bytes == 0) return;
    require(src->device == dst->device, "buffer_copy between two CUDA devices");
    Device& d = device(dst->device);
    d.activate();
    const char* from = static_cast<const char*>(src->data) + src_offset;
    char* to = static_cast<char*>(dst->data) + dst_offset;
    const bool overlap =
        src == dst && src_offset < dst_offset + bytes && dst_offset < src_offset + bytes;
    const std::string what = "copying " + std::to_string(bytes) + " bytes on " + d.label();
    if (!overlap) {
      check_cuda(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, d.stream()), what);
      return;
    }
    // cudaMemcpy leaves overlapping copies undefined; go through a
    // temporary, so the copy behaves like memmove.
    DeviceBlock tmp(d, bytes, "a temporary for an overlapping copy");
    check_cuda(cudaMemcpyAsync(tmp.get(), from, bytes, cudaMemcpyDeviceToDevice, d.stream()), what);
    check_cuda(cudaMemcpyAsync(to, tmp.get(), bytes, cudaMemcpyDeviceToDevice, d.stream()), what);
  });
}

moert_status cuda_supports_node(int32_t index, const moert_graph_desc* g, size_t node_index,
                                int32_t* supported, moert_error* err) {
  return guarded(err, [&] {
    *supported = 0;
    device(index);
    require(node_index < g->num_nodes, "node index out of range");
    const std::string reason = unsupported_reason(*g, node_index);
    if (reason.empty())
      *supported = 1;
    else
      report(err, MOERT_OK, reason);
  });
}

moert_status cuda_prepare(int32_t index, const moert_graph_desc* g, moert_executable* out,
                          moert_error* err) {
  return guarded(err, [&] {
    Device& d = device(index);
    d.activate();
    auto exe = std::make_unique<moert_executable_impl>();
    exe->device = &d;
    exe->tensors.resize(g->num_tensors);
    for (size_t i = 0; i < g->num_tensors; ++i) {
      const moert_tensor_desc& t = *g->tensors[i];
      auto& b = exe->tensors[i];
      require(t.rank <= MOERT_MAX_RANK, "tensor rank above MOERT_MAX_RANK");
      b.kind = t.kind;
      b.dtype = t.dtype;
      b.rank = t.rank;
      for (uint32_t k = 0; k < t.rank; ++k) b.dims[k] = t.dims[k];
      if (t.kind != MOERT_TENSOR_CONSTANT) continue;
      // Uploaded once; the executable owns the device copy.
      const std::string name = t.name ? t.name : "";
      b.constant = DeviceBlock(
          d, t.data_bytes, "constant '" + name + "' (" + std::to_string(t.data_bytes) + " bytes)");
      if (t.data_bytes)
        check_cuda(
            cudaMemcpyAsync(b.constant.get(), t.data, t.data_bytes, cudaMemcpyHostToDevice,
                            d.stream()),
            "uploading constant '" + name + "' (" + std::to_string(t.data_bytes) + " bytes)");
    }
    int error_slots = 0;
    for (size_t n = 0; n < g->num_nodes; ++n) {
      const NodeDesc node(*g, n);
      const std::string reason = unsupported_reason(*g, n);
      if (!reason.empty()) plugin::fail(node.where() + ": " + reason, MOERT_ERR_UNSUPPORTED);
      moert_executable_impl::Step step(d);
      step.where = node.where();
      PrepareContext pc(d, node, error_slots);
      try {
        step.kernel = find_kernel(node.op())->create(pc);
      } catch (const plugin::Failure& e) {
        plugin::fail(step.where + ": " + e.what(), e.status());
      }
      step.error_base = error_slots;
      step.error_count = pc.error_slots();
      error_slots += pc.error_slots();
      for (size_t i = 0; i < node.num_inputs(); ++i) step.inputs.push_back(node.input_index(i));
      for (size_t i = 0; i < node.num_outputs(); ++i) step.outputs.push_back(node.output_index(i));
      for (const std::vector<uint32_t>* list : {&step.inputs, &step.outputs})
        for (uint32_t t : *list) {
          if (t == MOERT_NO_TENSOR) continue;
          const auto& b = exe->tensors[t];
          for (uint32_t k = 0; k < b.rank; ++k)
            if (b.dims[k].symbols & (1u << MOERT_SYM_PAST)) step.past_in_shapes = true;
        }
      step.ctx.inputs.resize(step.inputs.size());
      step.ctx.outputs.resize(step.outputs.size());
      exe->steps.push_back(std::move(step));
    }
    exe->num_error_slots = error_slots;
    if (error_slots > 0) {
      const uint64_t bytes = sizeof(unsigned long long) * static_cast<uint64_t>(error_slots);
      exe->errors = DeviceBlock(d, bytes, "the error slots");
      check_cuda(cudaMemsetAsync(exe->errors.get(), 0xff, bytes, d.stream()),
                 "clearing the error slots");
      check_cuda(cudaMallocHost(reinterpret_cast<void**>(&exe->host_errors), bytes),
                 "allocating pinned host memory for the error slots");
    }
    for (auto& step : exe->steps) step.ctx.errors = exe->errors.as<unsigned long long>();
    const size_t segments = (exe->steps.size() + kGraphSegmentSteps - 1) / kGraphSegmentSteps;
    for (size_t i = 0; i < segments; ++i) {
      exe->graphs.push_back(std::make_unique<moert::cuda::StepGraph>());
      bool uses_past = false;
      std::vector<uint32_t> tensors;
      for (size_t n = i * kGraphSegmentSteps;
           n < std::min(exe->steps.size(), (i + 1) * kGraphSegmentSteps); ++n) {
        const auto& step = exe->steps[n];
        uses_past = uses_past || step.past_in_shapes || step.kernel->launches_depend_on_past(true);
        for (const std::vector<uint32_t>* list : {&step.inputs, &step.outputs})
          for (uint32_t t : *list)
            if (t != MOERT_NO_TENSOR && exe->tensors[t].kind != MOERT_TENSOR_CONSTANT)
              tensors.push_back(t);
      }
      std::sort(tensors.begin(), tensors.end());
      tensors.erase(std::unique(tensors.begin(), tensors.end()), tensors.end());
      exe->segment_uses_past.push_back(uses_past);
      exe->segment_tensors.push_back(std::move(tensors));
    }
    exe->step_past = DeviceBlock(d, sizeof(int64_t), "the step's past-token count");
    // The uploads read host memory that is only valid during this call.
    d.synchronize("uploading the constants");
    *out = exe.release();
  });
}

void cuda_executable_free(moert_executable exe) {
  if (!exe) return;
  // Work still queued may use the executable's memory.
  exe->device->activate();
  cudaStreamSynchronize(exe->device->stream());
  delete exe;
}

// Binds tensor `index` for this execution.
Tensor bind(const moert_executable_impl& exe, const moert_execute_args& args, uint32_t index,
            const Symbols& symbols) {
  Tensor t;
  if (index == MOERT_NO_TENSOR) return t;
  const auto& b = exe.tensors[index];
  t.dtype = b.dtype;
  t.rank = b.rank;
  t.bound = true;
  for (uint32_t k = 0; k < b.rank; ++k) t.shape[k] = plugin::resolve_dim(b.dims[k], symbols);
  if (b.kind == MOERT_TENSOR_CONSTANT) {
    t.data = b.constant.get();
    return t;
  }
  const moert_buffer_view& v = args.views[index];
  require(v.buffer != nullptr, "tensor " + std::to_string(index) + " is not bound");
  require(&device(v.buffer->device) == exe.device,
          "tensor " + std::to_string(index) + " is bound to a buffer of another device");
  const uint64_t bytes = t.nbytes();
  require(v.offset <= v.buffer->bytes && bytes <= v.buffer->bytes - v.offset,
          "tensor " + std::to_string(index) + " is bound past the end of its buffer");
  require(v.offset % t.elem_size() == 0,
          "tensor " + std::to_string(index) + " is bound at a misaligned offset");
  t.data = static_cast<char*>(v.buffer->data) + v.offset;
  return t;
}

// Reads the error slots back; throws for the first node that recorded one.
void check_errors(moert_executable_impl& exe) {
  if (exe.num_error_slots == 0) return;
  Device& d = *exe.device;
  const uint64_t bytes = sizeof(unsigned long long) * static_cast<uint64_t>(exe.num_error_slots);
  check_cuda(
      cudaMemcpyAsync(exe.host_errors, exe.errors.get(), bytes, cudaMemcpyDeviceToHost, d.stream()),
      "reading the error slots");
  d.synchronize("running the graph");
  for (auto& step : exe.steps)
    for (int s = 0; s < step.error_count; ++s) {
      const unsigned long long position = exe.host_errors[step.error_base + s];
      if (position == kNoError) continue;
      std::string message;
      try {
        message = step.kernel->describe_error(step.ctx, s, static_cast<int64_t>(position));
      } catch (const std::exception& e) {
        message = std::string("device error (") + e.what() + ")";
      }
      check_cuda(cudaMemsetAsync(exe.errors.get(), 0xff, bytes, d.stream()),
                 "clearing the error slots");
      d.synchronize("clearing the error slots");
      plugin::fail(step.where + ": " + message);
    }
}

// Enqueues the work of nodes [begin, end).  With `times`, waits for each
// node and records its seconds; with `keep`, scratch memory goes there (a
// graph is being captured).
void enqueue_steps(moert_executable_impl& exe, const moert_execute_args& args,
                   const Symbols& symbols, size_t begin, size_t end, double* times,
                   std::vector<DeviceBlock>* keep, const int64_t* device_past) {
  Device& d = *exe.device;
  for (size_t s = begin; s < end; ++s) {
    auto& step = exe.steps[s];
    const auto start = std::chrono::steady_clock::now();
    try {
      step.ctx.symbols = symbols;
      step.ctx.keep = keep;
      step.ctx.device_past = device_past;
      for (size_t i = 0; i < step.inputs.size(); ++i)
        step.ctx.inputs[i] = bind(exe, args, step.inputs[i], symbols);
      for (size_t i = 0; i < step.outputs.size(); ++i)
        step.ctx.outputs[i] = bind(exe, args, step.outputs[i], symbols);
      step.kernel->run(step.ctx);
      step.ctx.keep = nullptr;
      if (times) d.synchronize("running the node");
    } catch (const plugin::Failure& e) {
      step.ctx.keep = nullptr;
      plugin::fail(step.where + ": " + e.what(), e.status());
    } catch (const std::bad_alloc&) {
      step.ctx.keep = nullptr;
      throw;
    } catch (const std::exception& e) {
      step.ctx.keep = nullptr;
      plugin::fail(step.where + ": " + e.what(), MOERT_ERR_INTERNAL);
    }
    if (times)
      times[s] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
}

// What a segment's launches depend on: T, P where `past` (a kernel or a
// shape of the segment depends on it), and the binding of every tensor the
// segment reads or writes (the constants' are fixed for the executable's
// life), with its buffer's size, so that a replay, which skips bind()'s
// range checks, sees exactly the bindings its capture checked.
void segment_key(const moert_execute_args& args, const Symbols& symbols,
                 const std::vector<uint32_t>& tensors, bool past, std::vector<uint64_t>* key) {
  key->clear();
  key->push_back(static_cast<uint64_t>(symbols.tokens));
  if (past) key->push_back(static_cast<uint64_t>(symbols.past));
  for (uint32_t t : tensors) {
    const moert_buffer_view& v = args.views[t];
    key->push_back(v.buffer ? reinterpret_cast<uint64_t>(v.buffer->data) + v.offset : 0);
    key->push_back(v.buffer ? v.buffer->bytes : 0);
  }
}

moert_status cuda_execute(moert_executable exe, const moert_execute_args* args, moert_error* err) {
  return guarded(err, [&] {
    require(args->num_views == exe->tensors.size(),
            "execute got " + std::to_string(args->num_views) + " views for " +
                std::to_string(exe->tensors.size()) + " tensors");
    Device& d = *exe->device;
    d.activate();
    Symbols symbols;
    if (args->num_symbols > MOERT_SYM_TOKENS)
      symbols.tokens = args->symbol_values[MOERT_SYM_TOKENS];
    if (args->num_symbols > MOERT_SYM_PAST) symbols.past = args->symbol_values[MOERT_SYM_PAST];
    double* times = nullptr;
    if (MOERT_ABI_HAS_MEMBER(args, moert_execute_args, num_node_seconds) && args->node_seconds &&
        args->num_node_seconds >= exe->steps.size())
      times = args->node_seconds;
    // A profiled run times each node, so it runs node by node.
    size_t done = 0;  // nodes enqueued
    const size_t total = exe->steps.size();
    if (!times && symbols.tokens <= kGraphMaxTokens && graphs_enabled() && !exe->graphs.empty() &&
        exe->graphs.front()->enabled()) {
      // A replayed segment runs no run(): its P checks first, then P for
      // the kernels that read it on the device.
      for (const auto& step : exe->steps) {
        try {
          step.kernel->check_past(symbols.past);
        } catch (const plugin::Failure& e) {
          plugin::fail(step.where + ": " + e.what(), e.status());
        }
      }
      int64_t* device_past = exe->step_past.as<int64_t>();
      launch::store_int64(d.stream(), device_past, symbols.past);
      std::vector<uint64_t> key;
      for (size_t g = 0; g < exe->graphs.size() && done < total; ++g) {
        const size_t end = std::min(total, done + kGraphSegmentSteps);
        segment_key(*args, symbols, exe->segment_tensors[g], exe->segment_uses_past[g], &key);
        const bool ok = exe->graphs[g]->run(d, key, [&](std::vector<DeviceBlock>* keep) {
          enqueue_steps(*exe, *args, symbols, done, end, nullptr, keep, device_past);
        });
        if (!ok) {  // this segment cannot be captured: none of them run as graphs
          for (auto& other : exe->graphs) other->disable(exe->graphs[g]->disabled_reason());
          break;
        }
        done = end;
      }
    }
    if (times) d.synchronize("waiting before a profiled run");
    enqueue_steps(*exe, *args, symbols, done, total, times, nullptr, nullptr);
    check_errors(*exe);
  });
}

moert_status cuda_synchronize(int32_t index, moert_error* err) {
  return guarded(err, [&] {
    Device& d = device(index);
    d.synchronize("waiting for " + d.caps().name);
  });
}

const moert_backend_api kCudaApi = {
    sizeof(moert_backend_api),
    MOERT_ABI_MAJOR,
    MOERT_ABI_MINOR,
    "cuda",
    "moert CUDA " MOERT_CUDA_PLUGIN_VERSION " (kernels for " MOERT_CUDA_ARCHITECTURES ")",
    cuda_init,
    cuda_shutdown,
    cuda_device_count,
    cuda_device_info,
    cuda_buffer_alloc,
    cuda_buffer_free,
    cuda_buffer_write,
    cuda_buffer_read,
    cuda_buffer_copy,
    cuda_supports_node,
    cuda_prepare,
    cuda_executable_free,
    cuda_execute,
    cuda_synchronize,
};

}  // namespace
}  // namespace moert::cuda

extern "C" MOERT_BACKEND_EXPORT const moert_backend_api* moert_backend_entry(uint32_t major,
                                                                             uint32_t) {
  return major == MOERT_ABI_MAJOR ? &moert::cuda::kCudaApi : nullptr;
}
