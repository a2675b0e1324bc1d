// The batched products of gemm.h: kernel choice and launches.
#include "gemm.h"

#include <algorithm>

namespace moert::ocl {
namespace {

constexpr const char* kFile = "linear.cl";
// Rows of x up to which the GEMV kernels beat the GEMM ones (measured on
// PoCL: a 4096 x 4096 f32 layer takes 3.2 ms as GEMV at 8 rows, 4.4 ms as
// GEMM at 16; GPUs favour the tiles earlier).
constexpr int64_t kGemvRowsCpu = 8;
constexpr int64_t kGemvRowsGpu = 4;
constexpr int64_t kGemmRows = 6;  // GEMM_NR of weights.cl

}  // namespace

Gemm::Gemm(const PrepareContext& pc, moert_dtype weight_dtype) {
  const std::string options = "-DWT=" + std::to_string(static_cast<int>(weight_dtype));
  cpu_ = pc.device().style() == KernelStyle::cpu;
  to_f32_ = pc.kernel(kFile, "to_f32", options);
  if (cpu_) {
    gemv_ = pc.kernel(kFile, "gemv4", options);
    pack_ = pc.kernel(kFile, "pack_x", options);
    gemm_ = pc.kernel(kFile, "gemm_cpu", options);
  } else {
    gemv_ = pc.kernel(kFile, "gemv_wg", options);
    gemm_ = pc.kernel(kFile, "gemm_tiled", options);
  }
}

void Gemm::run(const ExecContext& ctx, const Problem& p) const {
  if (p.batch == 0 || p.m == 0 || p.n == 0) return;
  Device& d = ctx.device();
  const int64_t b1 = p.b1 > 0 ? p.b1 : std::max<int64_t>(p.k, 1);
  const int32_t scols = static_cast<int32_t>(p.k > 0 ? (p.k + b1 - 1) / b1 : 1);
  const Tensor none;
  const Tensor& scale = p.scale ? *p.scale : none;
  const Tensor& bias = p.bias ? *p.bias : none;
  const size_t batch = static_cast<size_t>(p.batch);
  const bool gemv = p.m <= (cpu_ ? kGemvRowsCpu : kGemvRowsGpu);
  const auto tail = [&](Args a) {
    a.mem(p.w)
        .u64(p.w_offset)
        .tensor(scale)
        .i32(scols)
        .tensor(bias)
        .i32(bias.dtype)
        .i32(p.bias ? 1 : 0)
        .tensor(*p.y)
        .i32(p.y->dtype)
        .i32(static_cast<int32_t>(p.m))
        .i32(static_cast<int32_t>(p.n))
        .i32(static_cast<int32_t>(p.k))
        .i32(static_cast<int32_t>(p.b0))
        .i32(static_cast<int32_t>(b1));
  };
  if (cpu_ && !gemv) {
    const uint64_t padded = round_up(static_cast<uint64_t>(p.m), 32);
    const auto panels =
        ctx.scratch(batch * padded * static_cast<uint64_t>(p.k) * 4, "x^T in panels");
    cl_mem xp = panels.get();
    ctx.args(pack_)
        .tensor(*p.x)
        .i32(p.x->dtype)
        .mem(xp)
        .i32(static_cast<int32_t>(p.m))
        .i32(static_cast<int32_t>(p.k))
        .u64(padded);
    ctx.launch(pack_, {padded * static_cast<uint64_t>(p.k), batch}, {d.elementwise_wg(), 1});
    tail(ctx.args(gemm_).mem(xp).u64(0));
    ctx.launch(gemm_, {static_cast<size_t>((p.n + kGemmRows - 1) / kGemmRows), padded / 32, batch},
               {1, 1, 1});
    return;
  }
  // The other kernels read x as f32.
  cl_mem xf = p.x->mem;
  uint64_t x_offset = p.x->offset;
  Device::ScratchBlock x_f32;
  if (p.x->dtype != MOERT_DTYPE_F32) {
    const uint64_t count = static_cast<uint64_t>(p.x->numel());
    x_f32 = ctx.scratch(count * 4, "x as f32");
    xf = x_f32.get();
    x_offset = 0;
    ctx.args(to_f32_).tensor(*p.x).i32(p.x->dtype).mem(xf).u64(count);
    ctx.launch(to_f32_, {count}, {d.elementwise_wg()});
  }
  if (cpu_) {
    tail(ctx.args(gemv_).mem(xf).u64(x_offset));
    ctx.launch(gemv_, {static_cast<size_t>((p.n + 3) / 4), batch}, {1, 1});
  } else if (gemv) {
    const size_t wg = d.row_wg();
    tail(ctx.args(gemv_).mem(xf).u64(x_offset));
    ctx.launch(gemv_, {static_cast<size_t>(p.n) * wg, batch}, {wg, 1});
  } else {
    tail(ctx.args(gemm_).mem(xf).u64(x_offset));
    ctx.launch(gemm_,
               {round_up(static_cast<uint64_t>(p.n), 64) / 4,
                round_up(static_cast<uint64_t>(p.m), 64) / 4, batch},
               {16, 16, 1});
  }
}

}  // namespace moert::ocl
