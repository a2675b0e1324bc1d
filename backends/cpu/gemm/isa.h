// Run-time instruction-set selection for the GEMM engine's hand-written
// kernels.  The library is compiled for baseline x86-64; the AVX-512 kernels
// are compiled with a function-level target attribute (MOERT_AVX512) and
// called only when the processor reports every feature they use.
#pragma once

// AVX-512 foundation, byte/word, vector-length extensions, F16C and FMA:
// what the GEMV and conversion kernels use.  (No AVX512-BF16 instruction is
// needed: bf16 widening is a shift and rounding to bf16 is integer arithmetic,
// so processors with AVX-512 but without BF16 take the fast path too.)
#define MOERT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

namespace moert::cpu::gemm {

// True when the AVX-512 kernels may run here.  MOERT_CPU_NO_AVX512=1 forces
// the portable kernels (to test them on an AVX-512 machine).
bool use_avx512();

// The AVX-512 kernels plus AVX512-VNNI (vpdpbusd): the packed GEMV with int8
// activations (gemv_int8_avx512.cpp).  MOERT_CPU_NO_VNNI=1 turns it off.
#define MOERT_AVX512_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
bool use_avx512_vnni();

}  // namespace moert::cpu::gemm
