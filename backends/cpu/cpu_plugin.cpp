// libmoert_backend_cpu: the CPU backend plugin.  One device, "cpu:0", with
// host memory for buffers.  GEMMs go through oneDNN; the other ops are
// vectorised, OpenMP-parallel kernels of kernels/ (see kernel.h).
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "kernel.h"

struct moert_buffer_impl {
  void* data = nullptr;
  uint64_t bytes = 0;
};

struct moert_executable_impl {
  struct Binding {
    moert_tensor_kind kind = MOERT_TENSOR_ACTIVATION;
    moert_dtype dtype = MOERT_DTYPE_F32;
    uint32_t rank = 0;
    std::array<moert_dim, MOERT_MAX_RANK> dims{};
    const void* constant = nullptr;            // CONSTANT: the data
    std::vector<unsigned char> constant_copy;  // when the runtime does not keep it
  };
  struct Step {
    std::string where;  // "node 'x' (op)"
    std::unique_ptr<moert::cpu::Kernel> kernel;
    std::vector<uint32_t> inputs, outputs;
    moert::cpu::ExecContext ctx;  // reused between executions
  };
  std::vector<Binding> tensors;
  std::vector<Step> steps;
};

namespace moert::cpu {
namespace {

using plugin::guarded;
using plugin::report;

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "CPU";
}

std::string isa_summary() {
  std::string s;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    s += "AVX-512";
  else if (__builtin_cpu_supports("avx2"))
    s += "AVX2";
  if (__builtin_cpu_supports("avx512bf16")) s += ", BF16";
  return s.empty() ? "scalar" : s;
}

moert_status cpu_init(moert_error* err) {
  return guarded(err, [] {
    // MOERT_CPU_THREADS caps the pool shared by the kernels and oneDNN.
    if (const char* t = std::getenv("MOERT_CPU_THREADS")) {
      const int n = std::atoi(t);
      if (n <= 0)
        plugin::fail(std::string("MOERT_CPU_THREADS must be a positive integer, got '") + t + "'");
      omp_set_num_threads(n);
    }
  });
}

void cpu_shutdown() {}
int32_t cpu_device_count() { return 1; }

moert_status cpu_device_info(int32_t device, moert_device_info* info, moert_error* err) {
  return guarded(err, [&] {
    plugin::require(device == 0, "no CPU device " + std::to_string(device));
    const size_t size = info->struct_size;
    std::memset(info, 0, size);
    info->struct_size = size;
    const std::string name = cpu_model_name() + " (" + isa_summary() + ", " +
                             std::to_string(omp_get_max_threads()) + " threads)";
    std::snprintf(info->name, sizeof(info->name), "%s", name.c_str());
    info->kind = MOERT_DEVICE_CPU;
    const long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES),
               page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
      info->total_memory = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
    if (avail > 0 && page > 0)
      info->free_memory = static_cast<uint64_t>(avail) * static_cast<uint64_t>(page);
    if (MOERT_ABI_HAS_MEMBER(info, moert_device_info, capabilities)) {
      __builtin_cpu_init();
      const bool amx = __builtin_cpu_supports("amx-bf16");
      const std::string caps = "isa=" + isa_summary() + ", amx=" + (amx ? "yes" : "no") +
                               ", threads=" + std::to_string(omp_get_max_threads()) +
                               ", ops=all, weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16, "
                               "products=f32 for f32 activations / bf16 for bf16 and f16, "
                               "onednn=" MOERT_CPU_DNNL_VERSION;
      std::snprintf(info->capabilities, sizeof(info->capabilities), "%s", caps.c_str());
    }
  });
}

moert_status cpu_buffer_alloc(int32_t, uint64_t bytes, moert_buffer* out, moert_error* err) {
  auto* b = new (std::nothrow) moert_buffer_impl;
  // 64-byte alignment for AVX-512 loads; rounded up so a kernel's last
  // vector never reads past the allocation.
  if (b) b->data = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
  if (!b || !b->data) {
    delete b;
    return report(err, MOERT_ERR_OUT_OF_MEMORY,
                  "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  }
  b->bytes = bytes;
  *out = b;
  return MOERT_OK;
}

void cpu_buffer_free(moert_buffer b) {
  if (!b) return;
  std::free(b->data);
  delete b;
}

moert_status check_range(moert_buffer b, uint64_t offset, uint64_t bytes, moert_error* err) {
  if (!b) return report(err, MOERT_ERR_INVALID_ARGUMENT, "null buffer");
  if (offset > b->bytes || bytes > b->bytes - offset)
    return report(err, MOERT_ERR_INVALID_ARGUMENT,
                  "range [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
                      ") outside a buffer of " + std::to_string(b->bytes) + " bytes");
  return MOERT_OK;
}

moert_status cpu_buffer_write(moert_buffer dst, uint64_t offset, const void* src, uint64_t bytes,
                              moert_error* err) {
  if (moert_status s = check_range(dst, offset, bytes, err)) return s;
  if (bytes) std::memcpy(static_cast<char*>(dst->data) + offset, src, bytes);
  return MOERT_OK;
}

moert_status cpu_buffer_read(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                             moert_error* err) {
  if (moert_status s = check_range(src, offset, bytes, err)) return s;
  if (bytes) std::memcpy(dst, static_cast<const char*>(src->data) + offset, bytes);
  return MOERT_OK;
}

moert_status cpu_buffer_copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                             uint64_t dst_offset, uint64_t bytes, moert_error* err) {
  if (moert_status s = check_range(src, src_offset, bytes, err)) return s;
  if (moert_status s = check_range(dst, dst_offset, bytes, err)) return s;
  if (bytes)
    std::memmove(static_cast<char*>(dst->data) + dst_offset,
                 static_cast<const char*>(src->data) + src_offset, bytes);
  return MOERT_OK;
}

// Why node `n` cannot run here, or "" when it can.
std::string unsupported_reason(const moert_graph_desc& g, size_t n) {
  const NodeDesc node(g, n);
  const KernelDef* def = find_kernel(node.op());
  if (!def) return std::string("the cpu backend has no kernel for op '") + node.op() + "'";
  return def->check(node);
}

moert_status cpu_supports_node(int32_t, const moert_graph_desc* g, size_t node_index,
                               int32_t* supported, moert_error* err) {
  return guarded(err, [&] {
    *supported = 0;
    plugin::require(node_index < g->num_nodes, "node index out of range");
    const std::string reason = unsupported_reason(*g, node_index);
    if (reason.empty())
      *supported = 1;
    else
      report(err, MOERT_OK, reason);
  });
}

moert_status cpu_prepare(int32_t, const moert_graph_desc* g, moert_executable* out,
                         moert_error* err) {
  return guarded(err, [&] {
    auto exe = std::make_unique<moert_executable_impl>();
    const bool persist = MOERT_ABI_HAS_MEMBER(g, moert_graph_desc, flags) &&
                         (g->flags & MOERT_GRAPH_CONSTANTS_PERSIST);
    exe->tensors.resize(g->num_tensors);
    for (size_t i = 0; i < g->num_tensors; ++i) {
      const moert_tensor_desc& t = *g->tensors[i];
      auto& b = exe->tensors[i];
      b.kind = t.kind;
      b.dtype = t.dtype;
      b.rank = t.rank;
      plugin::require(t.rank <= MOERT_MAX_RANK, "tensor rank above MOERT_MAX_RANK");
      for (uint32_t d = 0; d < t.rank; ++d) b.dims[d] = t.dims[d];
      if (t.kind != MOERT_TENSOR_CONSTANT) continue;
      if (persist) {
        b.constant = t.data;
      } else {
        const auto* bytes = static_cast<const unsigned char*>(t.data);
        b.constant_copy.assign(bytes, bytes + t.data_bytes);
        b.constant = b.constant_copy.data();
      }
    }
    for (size_t n = 0; n < g->num_nodes; ++n) {
      const NodeDesc node(*g, n);
      const std::string reason = unsupported_reason(*g, n);
      if (!reason.empty()) plugin::fail(node.where() + ": " + reason, MOERT_ERR_UNSUPPORTED);
      moert_executable_impl::Step step;
      step.where = node.where();
      try {
        step.kernel = find_kernel(node.op())->create(node);
      } catch (const plugin::Failure& e) {
        plugin::fail(step.where + ": " + e.what(), e.status());
      }
      for (size_t i = 0; i < node.num_inputs(); ++i) step.inputs.push_back(node.input_index(i));
      for (size_t i = 0; i < node.num_outputs(); ++i) step.outputs.push_back(node.output_index(i));
      step.ctx.inputs.resize(step.inputs.size());
      step.ctx.outputs.resize(step.outputs.size());
      exe->steps.push_back(std::move(step));
    }
    *out = exe.release();
  });
}

void cpu_executable_free(moert_executable exe) { delete exe; }

// Binds tensor `index` for this execution.
Tensor bind(const moert_executable_impl& exe, const moert_execute_args& args, uint32_t index,
            const Symbols& symbols) {
  Tensor t;
  if (index == MOERT_NO_TENSOR) return t;
  const auto& b = exe.tensors[index];
  t.dtype = b.dtype;
  t.rank = b.rank;
  for (uint32_t d = 0; d < b.rank; ++d) t.shape[d] = plugin::resolve_dim(b.dims[d], symbols);
  if (b.kind == MOERT_TENSOR_CONSTANT) {
    t.data = const_cast<void*>(b.constant);
  } else {
    const moert_buffer_view& v = args.views[index];
    plugin::require(v.buffer != nullptr, "tensor " + std::to_string(index) + " is not bound");
    const uint64_t bytes = t.nbytes();
    plugin::require(v.offset <= v.buffer->bytes && bytes <= v.buffer->bytes - v.offset,
                    "tensor " + std::to_string(index) + " is bound past the end of its buffer");
    t.data = static_cast<char*>(v.buffer->data) + v.offset;
  }
  // A zero-element tensor still counts as present.
  static char empty_tensor;
  if (!t.data && t.numel() == 0) t.data = &empty_tensor;
  return t;
}

moert_status cpu_execute(moert_executable exe, const moert_execute_args* args, moert_error* err) {
  return guarded(err, [&] {
    plugin::require(args->num_views == exe->tensors.size(),
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
  });
}

moert_status cpu_synchronize(int32_t, moert_error*) { return MOERT_OK; }

const moert_backend_api kCpuApi = {
    sizeof(moert_backend_api),
    MOERT_ABI_MAJOR,
    MOERT_ABI_MINOR,
    "cpu",
    "oneDNN " MOERT_CPU_DNNL_VERSION,
    cpu_init,
    cpu_shutdown,
    cpu_device_count,
    cpu_device_info,
    cpu_buffer_alloc,
    cpu_buffer_free,
    cpu_buffer_write,
    cpu_buffer_read,
    cpu_buffer_copy,
    cpu_supports_node,
    cpu_prepare,
    cpu_executable_free,
    cpu_execute,
    cpu_synchronize,
};

}  // namespace
}  // namespace moert::cpu

extern "C" MOERT_BACKEND_EXPORT const moert_backend_api* moert_backend_entry(uint32_t major,
                                                                             uint32_t) {
  return major == MOERT_ABI_MAJOR ? &moert::cpu::kCpuApi : nullptr;
}
