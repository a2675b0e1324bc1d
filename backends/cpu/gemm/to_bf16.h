// Conversions for the oneDNN GEMM paths: into bf16 (activations as f32 rows,
// and weight rows of any dtype: f16, and f8_e4m3 times its block scale), each
// rounded to nearest even once, NaN kept; and weight rows widened to f32.  Serial over the rows
// given: the callers split rows among threads.
#pragma once

#include <cstdint>

#include "weight.h"

namespace moert::cpu::gemm {

// dst[r, c] = bf16(x[r, c]) for r < m, c < k; rows `ldx` and `ldd` apart.
void f32_rows_to_bf16(const float* x, int64_t m, int64_t k, int64_t ldx, uint16_t* dst,
                      int64_t ldd);

// dst[n - n0, c] = bf16(W[n, c]) for n in [n0, n1), c < K (scale applied for
// f8_e4m3); rows of dst `ldd` apart.
void weight_rows_to_bf16(const WeightMatrix& w, int64_t n0, int64_t n1, uint16_t* dst, int64_t ldd);

// dst[n - n0, c] = W[n, c] widened to f32 (scale applied for f8_e4m3: one f32
// rounding of the product), for the exact-products GEMM path.
void weight_rows_to_f32(const WeightMatrix& w, int64_t n0, int64_t n1, float* dst, int64_t ldd);

}  // namespace moert::cpu::gemm
