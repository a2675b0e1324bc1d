// The GEMM engine's entry point: y[m, N] = x[m, K] · W^T for f32 x and a
// weight matrix of any dtype (weight.h), the product behind linear and moe.
//
//   m <= gemv_max_rows(W): the GEMV kernels (gemv.h), reading W once per 8
//     rows of x in its stored dtype and accumulating in f32: as exact as an
//     f32 computation.
//   larger m: oneDNN (onednn.h).  f32 W: an f32 matmul.  bf16 W: x rounded
//     to bf16 and the bf16 matmul (AMX).  f16 and f8_e4m3 W: x rounded to
//     bf16, W converted to bf16 (block scale applied) in tiles of rows of at
//     most 8 MiB and the bf16 matmul per tile; the scratch is bounded, no
//     copy of the model is made.  Each bf16 rounding is a relative error of
//     at most 2^-9 per operand; accumulation is f32.  f16 weights go through
//     bf16 rather than f32 because the AMX path measured 3-4x faster
//     (~1000-1400 against oneDNN's f32 matmul at ~350 GFLOP/s, M = 512, 2
//     threads), for a rounding no larger than that of x.
//
// Must be called outside any OpenMP parallel region.
#pragma once

#include <cstdint>

#include "weight.h"

namespace moert::cpu::gemm {

// The largest m the GEMV kernels serve for this matrix.
int64_t gemv_max_rows(const WeightMatrix& w);

// y rows are `ldy` apart, x rows `ldx` apart; every element of y[:m, :N] is
// written.  `rows_room`: how many rows of x may be read and of y written
// (0: exactly m).  oneDNN's fastest matmul is compiled for one M (onednn.h);
// when the caller has room for m rounded up to 16 rows, the extra rows are
// computed too (from whatever x holds there, or zeros) so that one compiled
// primitive serves 16 consecutive values of m: for the row counts of MoE
// experts, which change with every call.  Throws plugin::Failure (oneDNN
// failure) or std::bad_alloc (scratch), never from inside a parallel region.
void gemm(const float* x, int64_t m, int64_t ldx, const WeightMatrix& w, float* y, int64_t ldy,
          int64_t rows_room = 0);

}  // namespace moert::cpu::gemm
