// libmoert_backend_opencl: the OpenCL backend plugin.  One moert device per
// OpenCL device of every platform ("opencl:0", ...).  Buffers are cl_mem
// objects moved through the device's in-order queue; constants are uploaded
// once at prepare (wrapped in place on CPU devices when the runtime keeps
// them alive); kernels are OpenCL C programs (kernels/*.cl) built at
// prepare and cached on disk (program_cache.h).  The kernels of each op
// live in ops/ (see kernel.h).
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "kernel.h"
#include "program_cache.h"

struct moert_buffer_impl {
  cl_mem mem = nullptr;
  uint64_t bytes = 0;
  int32_t device = 0;
};

struct moert_executable_impl {
  struct Binding {
    moert_tensor_kind kind = MOERT_TENSOR_ACTIVATION;
    moert_dtype dtype = MOERT_DTYPE_F32;
    uint32_t rank = 0;
    std::array<moert_dim, MOERT_MAX_RANK> dims{};
    moert::ocl::ClBuffer constant;  // CONSTANT: the uploaded data
  };
  struct Step {
    std::string where;  // "node 'x' (op)"
    std::unique_ptr<moert::ocl::Kernel> kernel;
    std::vector<uint32_t> inputs, outputs;
    int error_base = 0, error_count = 0;
    moert::ocl::ExecContext ctx;
    explicit Step(moert::ocl::Device& d) : ctx(d) {}
  };
  moert::ocl::Device* device = nullptr;
  std::vector<Binding> tensors;
  std::vector<Step> steps;
  moert::ocl::ClBuffer errors;  // int32 per error slot
  int num_error_slots = 0;
  moert::ocl::ClBuffer placeholder;
};

namespace moert::ocl {
namespace {

using plugin::guarded;
using plugin::report;

moert_status ocl_init(moert_error* err) {
  const moert_status s = guarded(err, [] { discover_devices(); });
  if (s != MOERT_OK) devices().clear();
  return s;
}

void ocl_shutdown() { devices().clear(); }

int32_t ocl_device_count() { return static_cast<int32_t>(devices().size()); }

moert_status ocl_device_info(int32_t index, moert_device_info* info, moert_error* err) {
  return guarded(err, [&] {
    const Device& d = device(index);
    const size_t size = info->struct_size;
    std::memset(info, 0, size);
    info->struct_size = size;
    const std::string name = d.name() + " (" + d.platform_name() + ")";
    std::snprintf(info->name, sizeof(info->name), "%s", name.c_str());
    info->kind = d.kind();
    info->total_memory = d.caps().global_mem_bytes;
    info->free_memory = 0;  // OpenCL has no portable query
    if (MOERT_ABI_HAS_MEMBER(info, moert_device_info, capabilities)) {
      const Capabilities& c = d.caps();
      const std::string caps = c.opencl_c_version + ", fp16=" + (c.fp16 ? "yes" : "no") +
                               ", fp64=" + (c.fp64 ? "yes" : "no") +
                               ", subgroups=" + (c.subgroups ? "yes" : "no") +
                               ", compute_units=" + std::to_string(c.compute_units) +
                               ", max_work_group=" + std::to_string(c.max_work_group_size) +
                               ", local_mem_kib=" + std::to_string(c.local_mem_bytes / 1024) +
                               ", max_alloc_mib=" + std::to_string(c.max_alloc_bytes >> 20) +
                               ", kernels=" + (d.style() == KernelStyle::cpu ? "cpu" : "gpu") +
                               ", ops=all, weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16";
      std::snprintf(info->capabilities, sizeof(info->capabilities), "%s", caps.c_str());
    }
  });
}

moert_status ocl_buffer_alloc(int32_t index, uint64_t bytes, moert_buffer* out, moert_error* err) {
  return guarded(err, [&] {
    Device& d = device(index);
    auto b = std::make_unique<moert_buffer_impl>();
    b->mem = d.allocate(bytes);
    b->bytes = bytes;
    b->device = index;
    *out = b.release();
  });
}

void ocl_buffer_free(moert_buffer b) {
  if (!b) return;
  if (b->mem) clReleaseMemObject(b->mem);
  delete b;
}

void check_range(moert_buffer b, uint64_t offset, uint64_t bytes) {
  require(b != nullptr, "null buffer");
  require(offset <= b->bytes && bytes <= b->bytes - offset,
          "range [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
              ") outside a buffer of " + std::to_string(b->bytes) + " bytes");
}

moert_status ocl_buffer_write(moert_buffer dst, uint64_t offset, const void* src, uint64_t bytes,
                              moert_error* err) {
  return guarded(err, [&] {
    check_range(dst, offset, bytes);
    if (bytes == 0) return;
    check_cl(clEnqueueWriteBuffer(device(dst->device).queue(), dst->mem, CL_TRUE, offset, bytes,
                                  src, 0, nullptr, nullptr),
             "writing " + std::to_string(bytes) + " bytes to the device");
  });
}

moert_status ocl_buffer_read(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                             moert_error* err) {
  return guarded(err, [&] {
    check_range(src, offset, bytes);
    if (bytes == 0) return;
    check_cl(clEnqueueReadBuffer(device(src->device).queue(), src->mem, CL_TRUE, offset, bytes, dst,
                                 0, nullptr, nullptr),
             "reading " + std::to_string(bytes) + " bytes from the device");
  });
}

moert_status ocl_buffer_copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                             uint64_t dst_offset, uint64_t bytes, moert_error* err) {
  return guarded(err, [&] {
    check_range(src, src_offset, bytes);
    check_range(dst, dst_offset, bytes);
    if (bytes == 0) return;
    Device& d = device(dst->device);
    require(src->device == dst->device, "buffer_copy between two OpenCL devices");
    const bool overlap =
        src == dst && src_offset < dst_offset + bytes && dst_offset < src_offset + bytes;
    if (!overlap) {
      check_cl(clEnqueueCopyBuffer(d.queue(), src->mem, dst->mem, src_offset, dst_offset, bytes, 0,
                                   nullptr, nullptr),
               "copying " + std::to_string(bytes) + " bytes on the device");
      return;
    }
    // OpenCL refuses overlapping copies; go through a temporary (memmove).
    ClBuffer tmp(d.allocate(bytes));
    check_cl(clEnqueueCopyBuffer(d.queue(), src->mem, tmp.get(), src_offset, 0, bytes, 0, nullptr,
                                 nullptr),
             "copying " + std::to_string(bytes) + " bytes on the device");
    check_cl(clEnqueueCopyBuffer(d.queue(), tmp.get(), dst->mem, 0, dst_offset, bytes, 0, nullptr,
                                 nullptr),
             "copying " + std::to_string(bytes) + " bytes on the device");
  });
}

// Why node `n` cannot run on `d`, or "" when it can.
std::string unsupported_reason(const moert_graph_desc& g, size_t n, const Device& d) {
  const NodeDesc node(g, n);
  for (size_t i = 0; i < node.num_inputs(); ++i)
    if (node.has_input(i) && node.input(i).rank() > MOERT_MAX_RANK)
      return "an input has rank above " + std::to_string(MOERT_MAX_RANK);
  const KernelDef* def = find_kernel(node.op());
  if (!def) return std::string("the opencl backend has no kernel for op '") + node.op() + "'";
  return def->check(node, d);
}

moert_status ocl_supports_node(int32_t index, const moert_graph_desc* g, size_t node_index,
                               int32_t* supported, moert_error* err) {
  return guarded(err, [&] {
    *supported = 0;
    require(node_index < g->num_nodes, "node index out of range");
    const std::string reason = unsupported_reason(*g, node_index, device(index));
    if (reason.empty())
      *supported = 1;
    else
      report(err, MOERT_OK, reason);
  });
}

moert_status ocl_prepare(int32_t index, const moert_graph_desc* g, moert_executable* out,
                         moert_error* err) {
  return guarded(err, [&] {
    Device& d = device(index);
    auto exe = std::make_unique<moert_executable_impl>();
    exe->device = &d;
    exe->tensors.resize(g->num_tensors);
    const bool persist = MOERT_ABI_HAS_MEMBER(g, moert_graph_desc, flags) &&
                         (g->flags & MOERT_GRAPH_CONSTANTS_PERSIST);
    const bool zero_copy = persist && d.kind() == MOERT_DEVICE_CPU;
    for (size_t i = 0; i < g->num_tensors; ++i) {
      const moert_tensor_desc& t = *g->tensors[i];
      auto& b = exe->tensors[i];
      require(t.rank <= MOERT_MAX_RANK, "tensor rank above MOERT_MAX_RANK");
      b.kind = t.kind;
      b.dtype = t.dtype;
      b.rank = t.rank;
      for (uint32_t k = 0; k < t.rank; ++k) b.dims[k] = t.dims[k];
      if (t.kind != MOERT_TENSOR_CONSTANT) continue;
      // A CPU device reads host memory anyway: when the runtime keeps the
      // constants alive, the buffer wraps them instead of copying the weights.
      if (zero_copy && t.data_bytes && t.data) {
        b.constant = ClBuffer(d.allocate(t.data_bytes, CL_MEM_READ_ONLY | CL_MEM_USE_HOST_PTR,
                                         const_cast<void*>(t.data)));
        continue;
      }
      // Otherwise uploaded once; the executable owns the device copy.
      b.constant = ClBuffer(d.allocate(t.data_bytes, CL_MEM_READ_ONLY));
      if (t.data_bytes)
        check_cl(clEnqueueWriteBuffer(d.queue(), b.constant.get(), CL_TRUE, 0, t.data_bytes, t.data,
                                      0, nullptr, nullptr),
                 "uploading constant '" + std::string(t.name ? t.name : "") + "' (" +
                     std::to_string(t.data_bytes) + " bytes)");
    }
    int error_slots = 0;
    for (size_t n = 0; n < g->num_nodes; ++n) {
      const NodeDesc node(*g, n);
      const std::string reason = unsupported_reason(*g, n, d);
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
      step.ctx.inputs.resize(step.inputs.size());
      step.ctx.outputs.resize(step.outputs.size());
      exe->steps.push_back(std::move(step));
    }
    exe->num_error_slots = error_slots;
    exe->placeholder = ClBuffer(d.allocate(64));
    if (error_slots > 0) {
      exe->errors = ClBuffer(d.allocate(sizeof(int32_t) * static_cast<size_t>(error_slots)));
      const std::vector<int32_t> clear(static_cast<size_t>(error_slots), kNoError);
      check_cl(
          clEnqueueWriteBuffer(d.queue(), exe->errors.get(), CL_TRUE, 0,
                               clear.size() * sizeof(int32_t), clear.data(), 0, nullptr, nullptr),
          "clearing the error slots");
    }
    for (auto& step : exe->steps) {
      step.ctx.errors = exe->errors.get();
      step.ctx.placeholder = exe->placeholder.get();
    }
    *out = exe.release();
  });
}

void ocl_executable_free(moert_executable exe) { delete exe; }

// Binds tensor `index` for this execution.
Tensor bind(const moert_executable_impl& exe, const moert_execute_args& args, uint32_t index,
            const Symbols& symbols) {
  Tensor t;
  if (index == MOERT_NO_TENSOR) return t;
  const auto& b = exe.tensors[index];
  t.dtype = b.dtype;
  t.rank = b.rank;
  for (uint32_t k = 0; k < b.rank; ++k) t.shape[k] = plugin::resolve_dim(b.dims[k], symbols);
  if (b.kind == MOERT_TENSOR_CONSTANT) {
    t.mem = b.constant.get();
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
  t.mem = v.buffer->mem;
  t.offset = v.offset;
  return t;
}

// Reads the error slots back; throws for the first node that recorded one.
void check_errors(moert_executable_impl& exe) {
  if (exe.num_error_slots == 0) return;
  std::vector<int32_t> slots(static_cast<size_t>(exe.num_error_slots));
  Device& d = *exe.device;
  check_cl(clEnqueueReadBuffer(d.queue(), exe.errors.get(), CL_TRUE, 0,
                               slots.size() * sizeof(int32_t), slots.data(), 0, nullptr, nullptr),
           "reading the error slots");
  for (auto& step : exe.steps)
    for (int s = 0; s < step.error_count; ++s) {
      const int32_t position = slots[static_cast<size_t>(step.error_base + s)];
      if (position == kNoError) continue;
      std::string message;
      try {
        message = step.kernel->describe_error(step.ctx, s, position);
      } catch (const std::exception& e) {
        message = std::string("device error (") + e.what() + ")";
      }
      const std::vector<int32_t> clear(slots.size(), kNoError);
      check_cl(
          clEnqueueWriteBuffer(d.queue(), exe.errors.get(), CL_TRUE, 0,
                               clear.size() * sizeof(int32_t), clear.data(), 0, nullptr, nullptr),
          "clearing the error slots");
      plugin::fail(step.where + ": " + message);
    }
}

moert_status ocl_execute(moert_executable exe, const moert_execute_args* args, moert_error* err) {
  return guarded(err, [&] {
    require(args->num_views == exe->tensors.size(),
            "execute got " + std::to_string(args->num_views) + " views for " +
                std::to_string(exe->tensors.size()) + " tensors");
    Symbols symbols;
    if (args->num_symbols > MOERT_SYM_TOKENS)
      symbols.tokens = args->symbol_values[MOERT_SYM_TOKENS];
    if (args->num_symbols > MOERT_SYM_PAST) symbols.past = args->symbol_values[MOERT_SYM_PAST];
    double* times = nullptr;
    if (MOERT_ABI_HAS_MEMBER(args, moert_execute_args, num_node_seconds) && args->node_seconds &&
        args->num_node_seconds >= exe->steps.size())
      times = args->node_seconds;
    cl_command_queue queue = exe->device->queue();
    if (times) clFinish(queue);
    for (size_t s = 0; s < exe->steps.size(); ++s) {
      auto& step = exe->steps[s];
      const auto start = std::chrono::steady_clock::now();
      try {
        step.ctx.symbols = symbols;
        for (size_t i = 0; i < step.inputs.size(); ++i)
          step.ctx.inputs[i] = bind(*exe, *args, step.inputs[i], symbols);
        for (size_t i = 0; i < step.outputs.size(); ++i)
          step.ctx.outputs[i] = bind(*exe, *args, step.outputs[i], symbols);
        step.kernel->run(step.ctx);
        if (times) check_cl(clFinish(queue), "waiting for the node");
      } catch (const plugin::Failure& e) {
        plugin::fail(step.where + ": " + e.what(), e.status());
      } catch (const std::bad_alloc&) {
        throw;
      } catch (const std::exception& e) {
        plugin::fail(step.where + ": " + e.what(), MOERT_ERR_INTERNAL);
      }
      if (times)
        times[s] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    check_errors(*exe);
  });
}

moert_status ocl_synchronize(int32_t index, moert_error* err) {
  return guarded(err, [&] {
    Device& d = device(index);
    check_cl(clFinish(d.queue()), "waiting for '" + d.name() + "'");
  });
}

const moert_backend_api kOpenclApi = {
    sizeof(moert_backend_api),
    MOERT_ABI_MAJOR,
    MOERT_ABI_MINOR,
    "opencl",
    "moert OpenCL " MOERT_OPENCL_PLUGIN_VERSION,
    ocl_init,
    ocl_shutdown,
    ocl_device_count,
    ocl_device_info,
    ocl_buffer_alloc,
    ocl_buffer_free,
    ocl_buffer_write,
    ocl_buffer_read,
    ocl_buffer_copy,
    ocl_supports_node,
    ocl_prepare,
    ocl_executable_free,
    ocl_execute,
    ocl_synchronize,
};

}  // namespace
}  // namespace moert::ocl

extern "C" MOERT_BACKEND_EXPORT const moert_backend_api* moert_backend_entry(uint32_t major,
                                                                             uint32_t) {
  return major == MOERT_ABI_MAJOR ? &moert::ocl::kOpenclApi : nullptr;
}
