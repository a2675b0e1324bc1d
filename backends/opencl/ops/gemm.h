// Batched products y[b] = x[b] W[b]^T (+ bias) on the device
// (kernels/linear.cl), shared by linear, matmul and the shared expert of
// moe.  W [N, K] is read in place in its dtype (f32, bf16, f16, or f8_e4m3
// with block scales); x is any activation dtype, converted (or packed) to
// f32 in scratch; y is written in its own dtype.  Few rows of x take the
// GEMV kernel, many the GEMM; which kernels depends on the device's kernel
// style (device.h).
#pragma once

#include "kernel.h"

namespace moert::ocl {

class Gemm {
 public:
  // Creates the kernels for weights of `weight_dtype` (building the program).
  Gemm(const PrepareContext& pc, moert_dtype weight_dtype);

  struct Problem {
    const Tensor* x = nullptr;      // [batch, M, K]
    cl_mem w = nullptr;             // [batch, N, K] in the weight dtype
    uint64_t w_offset = 0;          // bytes
    const Tensor* scale = nullptr;  // f8 only: [ceil(N / b0), ceil(K / b1)] f32
    const Tensor* bias = nullptr;   // [N], any float dtype
    const Tensor* y = nullptr;      // [batch, M, N]
    int64_t batch = 1, m = 0, n = 0, k = 0;
    int64_t b0 = 1, b1 = 0;  // the block size of the scales; b1 = 0 without
  };
  void run(const ExecContext& ctx, const Problem& p) const;

 private:
  bool cpu_ = true;
  ClKernel to_f32_, gemv_, pack_, gemm_;
};

}  // namespace moert::ocl
