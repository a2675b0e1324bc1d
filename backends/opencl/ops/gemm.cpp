// The batched products of gemm.h: kernel choice and launches.
#include "gemm.h"

#include <algorithm>
#include <vector>

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

std::string WeightKind::options() const {
  if (!packed()) return "-DWT=" + std::to_string(static_cast<int>(dtype));
  return "-DWQ=" + std::to_string(static_cast<int>(format)) + (zero_points ? " -DWZP=1" : "");
}

WeightKind weight_kind(const NodeDesc& node, size_t w, size_t s, const char* quant) {
  WeightKind kind;
  kind.dtype = node.input(w).dtype();
  ops::weight_format_from(node.attr_string(quant, "none"), &kind.format);
  // (scale, zero) pairs add a trailing dim of 2 to the scale.
  kind.zero_points = kind.format == ops::WeightFormat::int4 && node.has_input(s) &&
                     node.input(s).rank() == node.input(w).rank() + 1;
  return kind;
}

std::string check_weight(const NodeDesc& node, const WeightKind& kind, size_t w, size_t s,
                         const std::string& what) {
  const moert_dtype t = node.input(w).dtype();
  const bool has_scale = node.has_input(s);
  const moert_dtype st = has_scale ? node.input(s).dtype() : MOERT_DTYPE_F32;
  if (!node.input(w).all_static()) return what + " must be static";
  if (!kind.packed()) {
    if (!is_weight_dtype(t)) return what + " of " + dtype_str(t);
    if (t == MOERT_DTYPE_F8_E4M3) {
      if (!has_scale || st != MOERT_DTYPE_F32) return "an f8_e4m3 " + what + " needs an f32 scale";
    } else if (has_scale) {
      return "a scale with a " + dtype_str(t) + " " + what;
    }
    return "";
  }
  const std::string format = ops::weight_format_name(kind.format);
  const moert_dtype stored =
      kind.format == ops::WeightFormat::int8 ? MOERT_DTYPE_I8 : MOERT_DTYPE_U8;
  if (t != stored)
    return "an " + format + " " + what + " must be stored as " + dtype_str(stored) + ", got " +
           dtype_str(t);
  const moert_dtype scale_dtype =
      kind.format == ops::WeightFormat::mxfp4 ? MOERT_DTYPE_U8 : MOERT_DTYPE_F16;
  if (!has_scale || st != scale_dtype)
    return "an " + format + " " + what + " needs a " + dtype_str(scale_dtype) + " scale";
  const size_t rank = node.input(w).rank(), scale_rank = node.input(s).rank();
  if (scale_rank != rank && !(kind.zero_points && node.input(s).static_dim(scale_rank - 1) == 2))
    return "the scale of an " + format + " " + what + " has rank " + std::to_string(scale_rank) +
           (kind.format == ops::WeightFormat::int4 ? " (int4 zero points: a trailing dim of 2)"
                                                   : "");
  if (kind.format == ops::WeightFormat::mxfp4 &&
      node.attr_ints("block_size", {128, 128}) != std::vector<int64_t>{1, ops::kMxBlock})
    return "mxfp4 needs block_size [1, 32]";
  return "";
}

Gemm::Gemm(const PrepareContext& pc, const WeightKind& kind) {
  const std::string options = kind.options();
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
