// Batched products y[b] = x[b] W[b]^T (+ bias) on the device
// (kernels/linear.cl), shared by linear, matmul and the shared expert of
// moe.  W [N, K] is read in place as stored (kernels/weights.cl): in its
// dtype (f32, bf16, f16, or f8_e4m3 with block scales) or packed (int8,
// int4, mxfp4 with their block scales, ops/weight_format.h); x is any
// activation dtype, converted (or packed) to f32 in scratch; y is written
// in its own dtype.  Few rows of x take the GEMV kernel, many the GEMM;
// which kernels depends on the device's kernel style (device.h).
#pragma once

#include <string>

#include "kernel.h"
#include "weight_format.h"

namespace moert::ocl {

// How a weight matrix is stored: a dtype, or a packed format of
// ops/weight_format.h (int4 with or without (scale, zero) pairs).  A program
// of linear.cl or moe.cl is built for one kind (options()).
struct WeightKind {
  moert_dtype dtype = MOERT_DTYPE_F32;  // the stored dtype (i8 or u8 when packed)
  ops::WeightFormat format = ops::WeightFormat::none;
  bool zero_points = false;  // int4 scales of (scale, zero) pairs

  bool packed() const { return format != ops::WeightFormat::none; }
  // Whether the weight takes a block scale (f8_e4m3 and the packed formats).
  bool scaled() const { return packed() || dtype == MOERT_DTYPE_F8_E4M3; }
  // The build options of weights.cl: -DWT=<dtype>, or -DWQ=<format> (-DWZP=1).
  std::string options() const;
  bool operator==(const WeightKind&) const = default;
};

// The kind of weight input `w` of `node` with scale input `s`, in the format
// that attribute `quant` names ("quant" or "shared_quant"; absent: none).
WeightKind weight_kind(const NodeDesc& node, size_t w, size_t s, const char* quant);

// Why weight input `w` (`what`, for messages) of kind `kind` with scale
// input `s` cannot run here, or "": a dtype linear.cl reads, the scale its
// format needs, the block_size mxfp4 needs.  The runtime checked shapes.
std::string check_weight(const NodeDesc& node, const WeightKind& kind, size_t w, size_t s,
                         const std::string& what);

class Gemm {
 public:
  // Creates the kernels for weights of `kind` (building the program).
  Gemm(const PrepareContext& pc, const WeightKind& kind);

  struct Problem {
    const Tensor* x = nullptr;      // [batch, M, K]
    cl_mem w = nullptr;             // [batch, N, stored K] as stored
    uint64_t w_offset = 0;          // bytes
    const Tensor* scale = nullptr;  // scaled kinds: [ceil(N / b0), ceil(K / b1) (, 2)]
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
