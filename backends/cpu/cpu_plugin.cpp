// libmoert_backend_cpu: the CPU backend plugin.  One device, "cpu:0", with
// host memory for buffers.  GEMMs go through oneDNN; the other ops are
// vectorised, OpenMP-parallel kernels of ops/ (see kernel.h) over the vector library vec/.  The ABI
// glue is the plugin kit's (backends/common/kit); this file says what the
// device is.
#include <omp.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "kernel.h"
#include "kit/plugin.h"

namespace moert::cpu {
namespace {

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

}  // namespace

// MOERT_CPU_THREADS, 0 when unset.
static int g_threads = 0;

void Backend::init() {
  // MOERT_CPU_THREADS caps the pool shared by the kernels and oneDNN.
  if (const char* t = std::getenv("MOERT_CPU_THREADS")) {
    const int n = std::atoi(t);
    if (n <= 0) fail(std::string("MOERT_CPU_THREADS must be a positive integer, got '") + t + "'");
    g_threads = n;
  }
  apply_thread_count();
}

void Backend::apply_thread_count() {
  if (g_threads > 0 && omp_get_max_threads() != g_threads) omp_set_num_threads(g_threads);
}

void Backend::describe(Device&, kit::DeviceDescription& d) {
  const std::string threads = std::to_string(omp_get_max_threads());
  d.name = cpu_model_name() + " (" + isa_summary() + ", " + threads + " threads)";
  d.kind = MOERT_DEVICE_CPU;
  kit::host_memory(&d.total_memory, &d.free_memory);
  __builtin_cpu_init();
  const bool amx = __builtin_cpu_supports("amx-bf16");
  d.capabilities = "isa=" + isa_summary() + ", amx=" + (amx ? "yes" : "no") +
                   ", threads=" + threads +
                   ", weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16, "
                   "products=f32 for f32 activations / bf16 for bf16 and f16, "
                   "onednn=" MOERT_CPU_DNNL_VERSION;
}

}  // namespace moert::cpu

MOERT_KIT_PLUGIN(moert::cpu::Backend)
