// The CPU backend's vector library: row operations its op files share
// (attention, masked_softmax, cache_update, rope, rms_norm, router): dtype
// widening to f32 and rounding back, conversion, row max, exp-and-sum,
// scaling, sum of squares, rotary pairs.  Each has an AVX-512 body (chosen at run
// time when the processor has AVX-512 F/BW/VL/DQ, F16C and FMA) and a
// portable one; both round exactly as convert.h does.  MOERT_CPU_NO_AVX512=1
// forces the portable bodies, to test them on an AVX-512 machine.
#pragma once

#include <cstdint>

#include "kernel.h"

// The target of the hand-vectorised bodies; the library itself is built for
// baseline x86-64.
#if defined(__x86_64__) && defined(__GNUC__)
#define MOERT_CPU_X86 1
#define MOERT_CPU_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))
#else
#define MOERT_CPU_X86 0
#define MOERT_CPU_AVX512
#endif

// Hot span functions get one copy per ISA level; the dynamic loader picks the
// best one the CPU supports (GNU indirect functions).
#if defined(__x86_64__) && defined(__GNUC__)
#define MOERT_CPU_CLONES [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#else
#define MOERT_CPU_CLONES
#endif

namespace moert::cpu::vec {

// True when the AVX-512 bodies run on this processor.
bool use_avx512();

// n elements of `src` (any float dtype) from element `offset` on, as f32.
void widen(moert_dtype t, const void* src, int64_t offset, int64_t n, float* dst);
// n f32 values rounded into `dst` (any float dtype) from element `offset` on.
void narrow(const float* src, int64_t n, moert_dtype t, void* dst, int64_t offset);
// n elements from `src` (dtype `from`) to `dst` (dtype `to`), element
// offsets given; one rounding (through f32, which holds every source exactly).
void convert(moert_dtype from, const void* src, int64_t src_offset, moert_dtype to, void* dst,
             int64_t dst_offset, int64_t n);

// The largest of x[0..n) (-inf for n = 0); NaN entries are skipped.
float max_of(const float* x, int64_t n);
// x[i] = exp(x[i] - m) in place; returns the sum of the results.
float exp_sum(float* x, int64_t n, float m);
// x[i] *= s.
void scale(float* x, int64_t n, float s);
// The sum of x[i]^2.
float sum_squares(const float* x, int64_t n);
// y[i] = x[i] * s * w[i].
void scale_mul(const float* x, float s, const float* w, float* y, int64_t n);

// Rotary embedding of one token's heads in place: x holds `heads` rows of
// `dim` features; pair j (j < half) of each row is (j, j + half), or (2j,
// 2j + 1) when `interleaved`, and becomes (u c_j - v s_j, v c_j + u s_j).
void rotate_pairs(float* x, int64_t heads, int64_t dim, int64_t half, bool interleaved,
                  const float* c, const float* s);

}  // namespace moert::cpu::vec
