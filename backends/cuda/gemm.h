// GEMMs through cuBLASLt for many rows (prefill): row-major operands mapped
// onto cuBLASLt's column-major layouts, f32 accumulation and an f32 result,
// the heuristic's choice cached per shape (gemm_plan.h).
#pragma once

#include <cstdint>

#include "device.h"

namespace moert::cuda {

// A row-major operand of a GEMM in the dtype it is multiplied in (f32, bf16
// or f16), `batch_stride` elements between batch entries.
struct GemmOperand {
  moert_dtype dtype = MOERT_DTYPE_F32;
  const void* data = nullptr;
  int64_t batch_stride = 0;
};

// y[b, i, j] = sum_p a[b, i, p] * B[b, p, j] for b < batch, i < m, j < n,
// with B = b [k, n] or, when b_transposed, b [n, k] read transposed.  a and b
// have the same dtype (the compute is f32 either way: no TF32 rounding);
// y is f32 with row stride ldy and batch stride y_batch_stride.
void gemm(Device& d, int64_t m, int64_t n, int64_t k, int64_t batch, const GemmOperand& a,
          const GemmOperand& b, bool b_transposed, float* y, int64_t ldy, int64_t y_batch_stride);

}  // namespace moert::cuda
