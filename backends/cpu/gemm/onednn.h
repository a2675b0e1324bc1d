// oneDNN matmul primitives for the large-M GEMMs, executed on the OpenMP
// pool the kernels share.
//   onednn_matmul_nt: a primitive compiled for the exact shape (a brgemm
//     kernel, AMX for bf16): 12-30% faster at M = 512 than one with a
//     run-time M.  A new M costs a JIT compilation (0.1-0.7 ms); primitives
//     stay in oneDNN's own primitive cache (LRU, 1024 entries by default,
//     ~5 us a hit).  Dense layers repeat one M across all layers of a
//     prompt; MoE experts round their row counts up to buckets (gemm.h).
//   onednn_batched_matmul: every dim a run-time dim (the attention
//     decomposition's shapes change at every step), one primitive per
//     dtype and transposition, kept here.
// Must be called outside any parallel region.  oneDNN errors become
// plugin::Failure.
#pragma once

#include <cstdint>

#include "kernel.h"

namespace moert::cpu::gemm {

// y[m, n] (f32, rows `ldy` apart) = a[m, k] · b^T, where b is [n, k] (rows
// `ldb` apart) and a is [m, k] (rows `lda` apart).  a and b are f32 or bf16
// (both the same dtype).
void onednn_matmul_nt(moert_dtype t, const void* a, int64_t lda, const void* b, int64_t ldb,
                      int64_t m, int64_t n, int64_t k, float* y, int64_t ldy);

// Batched: y[i] = a[i] · (transpose_b ? b[i]^T : b[i]) for i < batch, every
// operand dense; a [batch, m, k], b [batch, k, n] or [batch, n, k], y
// [batch, m, n] f32.  a and b are both f32 or both bf16.  Every dim is a
// run-time dim: one primitive per (dtype, transpose_b).
void onednn_batched_matmul(moert_dtype t, const void* a, const void* b, bool transpose_b,
                           int64_t batch, int64_t m, int64_t k, int64_t n, float* y);

}  // namespace moert::cpu::gemm
