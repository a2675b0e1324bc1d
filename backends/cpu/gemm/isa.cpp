// Run-time instruction-set selection (isa.h).
#include "isa.h"

#include <cstdlib>
#include <cstring>

namespace moert::cpu::gemm {

bool use_avx512() {
  static const bool yes = [] {
    const char* off = std::getenv("MOERT_CPU_NO_AVX512");
    if (off && *off && std::strcmp(off, "0") != 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
  }();
  return yes;
}

bool use_avx512_vnni() {
  static const bool yes = [] {
    const char* off = std::getenv("MOERT_CPU_NO_VNNI");
    if (off && *off && std::strcmp(off, "0") != 0) return false;
    return use_avx512() && __builtin_cpu_supports("avx512vnni");
  }();
  return yes;
}

}  // namespace moert::cpu::gemm
