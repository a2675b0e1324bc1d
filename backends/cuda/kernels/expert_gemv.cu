// The GEMV form of the expert projections (few tokens: decode), moved out of
// moe.cu: one block row per unit (a (token, slot) pair, or a token of the
// shared expert), its expert read from the ids on the device, so a decode
// step never waits for the host.  The vectorised form (gemv_vec.cuh: 16-byte
// weight chunks, the gate and up rows of a column read in the same loop) is
// used whenever its alignment preconditions hold (packed experts: the same
// with gemv_packed.cuh's decoder); the scalar kernel stays for everything
// else and for MOERT_CUDA_BASELINE_KERNELS=1.
#include "common.cuh"
#include "gemv_packed.cuh"
#include "gemv_vec.cuh"
#include "options.h"

namespace moert::cuda::launch {
namespace {

constexpr int kGemvWarps = 8;

// The scalar (baseline) form: one warp per output column, lanes stride over
// k.
__global__ void expert_gemv_kernel(ExpertProjection p) {
  const int64_t unit = blockIdx.y;
  int64_t e = 0;
  if (p.ids) {
    e = load_id(p.ids_t, p.ids, unit);
    if (e < 0 || e >= p.experts) {
      if (blockIdx.x == 0 && threadIdx.x == 0) record_error(p.error, unit);
      return;
    }
  }
  const int64_t a_row = p.gate_up ? unit / p.top_k : unit;
  const int lane = threadIdx.x & 31;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  const int64_t step = static_cast<int64_t>(gridDim.x) * kGemvWarps;
  for (int64_t col = first; col < p.n; col += step) {
    float g = 0.0f, u = 0.0f;
    for (int64_t c = lane; c < p.k; c += 32) {
      const float a = load_float(p.a_t, p.a, a_row * p.k + c);
      g += a * weight_at(p.w1, e, col, c, p.n, p.k);
      if (p.gate_up) u += a * weight_at(p.w2, e, col, c, p.n, p.k);
    }
    g = warp_sum(g);
    u = warp_sum(u);
    if (lane == 0) p.out[unit * p.n + col] = p.gate_up ? expert_act(p, e, col, g, u) : g;
  }
}

// Columns per warp: gate_up reads two rows per column, so half as many
// columns keep the same number of loads in flight.
template <bool kGateUp>
constexpr int kExpertCols = kGateUp ? 2 : 4;

// The vectorised form: blockIdx.y is the unit, blockIdx.x strides over
// blocks of column groups (kExpertCols columns, split warps per group).
template <moert_dtype W, moert_dtype X, bool kGateUp>
__global__ void __launch_bounds__(gemv_vec::kThreads, gemv_vec::min_blocks(W, 1))
    expert_gemv_vec_kernel(ExpertProjection p, gemv_vec::Shape s, int64_t col_blocks) {
  constexpr int M = kGateUp ? 2 : 1, C = kExpertCols<kGateUp>;
  __shared__ float red[gemv_vec::kWarps * 32];
  const int64_t unit = blockIdx.y;
  int64_t e = 0;
  if (p.ids) {  // the whole block leaves, before any barrier
    e = load_id(p.ids_t, p.ids, unit);
    if (e < 0 || e >= p.experts) {
      if (blockIdx.x == 0 && threadIdx.x == 0) record_error(p.error, unit);
      return;
    }
  }
  const int64_t a_row = kGateUp ? unit / p.top_k : unit;
  const void* x = static_cast<const unsigned char*>(p.a) + a_row * p.k * gemv_vec::elem_bytes(X);
  // Expert e's matrices and (fp8) its block scales.
  const int64_t matrix_bytes = p.n * p.k * gemv_vec::elem_bytes(W);
  const int64_t matrix_scales = ceil_div(p.n, s.b0) * s.scols;
  const Weights* const pw[2] = {&p.w1, &p.w2};
  const unsigned char* wb[M];
  const float* sb[M];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    wb[m] = static_cast<const unsigned char*>(pw[m]->w) + e * matrix_bytes;
    sb[m] = pw[m]->scale ? pw[m]->scale + e * matrix_scales : nullptr;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int groups = gemv_vec::kWarps / s.split, part = warp % s.split;
  const int64_t group = warp / s.split;
  for (int64_t cb = blockIdx.x; cb < col_blocks; cb += gridDim.x) {
    const int64_t col0 = (cb * groups + group) * C;
    const bool active = col0 < s.n;
    const float v = gemv_vec::columns<W, X, 1, M, C>(wb, sb, x, s, col0, active, part, lane, red);
    if (part == 0 && active) {
      // Lane c holds gate (or down) column col0 + c, lane C + c its up.
      const float up = kGateUp ? __shfl_down_sync(0xffffffffu, v, C) : 0.0f;
      const int64_t col = col0 + lane;
      if (lane < C && col < s.n)
        p.out[unit * s.n + col] = kGateUp ? expert_act(p, e, col, v, up) : v;
    }
  }
}

// The packed form (gemv_packed.cuh) of the kernel above: expert e's
// matrices start e * n * stride bytes in, their scale entries
// e * ceil(n / b0) * scols groups in.
template <gemv_vec::Packed P, moert_dtype X, bool kGateUp>
__global__ void __launch_bounds__(gemv_vec::kThreads, gemv_vec::packed_min_blocks(1))
    expert_gemv_packed_kernel(ExpertProjection p, gemv_vec::Shape s, int64_t col_blocks) {
  constexpr int M = kGateUp ? 2 : 1, C = kExpertCols<kGateUp>;
  __shared__ float red[gemv_vec::kWarps * 32];
  const int64_t unit = blockIdx.y;
  int64_t e = 0;
  if (p.ids) {  // the whole block leaves, before any barrier
    e = load_id(p.ids_t, p.ids, unit);
    if (e < 0 || e >= p.experts) {
      if (blockIdx.x == 0 && threadIdx.x == 0) record_error(p.error, unit);
      return;
    }
  }
  const int64_t a_row = kGateUp ? unit / p.top_k : unit;
  const void* x = static_cast<const unsigned char*>(p.a) + a_row * p.k * gemv_vec::elem_bytes(X);
  const int64_t matrix_bytes = p.n * gemv_vec::packed_stride(P, p.k);
  const int64_t matrix_scale_bytes = ceil_div(p.n, s.b0) * s.scols * gemv_vec::group_bytes(P);
  const Weights* const pw[2] = {&p.w1, &p.w2};
  const unsigned char* wb[M];
  const unsigned char* sb[M];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    wb[m] = static_cast<const unsigned char*>(pw[m]->w) + e * matrix_bytes;
    sb[m] = static_cast<const unsigned char*>(pw[m]->qscale) + e * matrix_scale_bytes;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int groups = gemv_vec::kWarps / s.split, part = warp % s.split;
  const int64_t group = warp / s.split;
  for (int64_t cb = blockIdx.x; cb < col_blocks; cb += gridDim.x) {
    const int64_t col0 = (cb * groups + group) * C;
    const bool active = col0 < s.n;
    const float v =
        gemv_vec::packed_columns<P, X, 1, M, C>(wb, sb, x, s, col0, active, part, lane, red);
    if (part == 0 && active) {
      // Lane c holds gate (or down) column col0 + c, lane C + c its up.
      const float up = kGateUp ? __shfl_down_sync(0xffffffffu, v, C) : 0.0f;
      const int64_t col = col0 + lane;
      if (lane < C && col < s.n)
        p.out[unit * s.n + col] = kGateUp ? expert_act(p, e, col, v, up) : v;
    }
  }
}

// Whether the packed form takes p: both matrices (gate_up) of one format
// and group shape, each readable in chunks, and x aligned (down: f32 only).
// f(dtype_c<X>, bool_constant<gate_up>): the forms a projection's kernels
// are instantiated for: gate/up with x of its activation dtype, or down,
// which reads the f32 activations.
template <class F>
void with_projection(const ExpertProjection& p, F&& f) {
  if (!p.gate_up)
    f(gemv_vec::dtype_c<MOERT_DTYPE_F32>{}, std::false_type{});
  else
    gemv_vec::with_x_dtype(p.a_t, [&](auto xt) { f(xt, std::true_type{}); });
}

bool vec_fits_packed(const ExpertProjection& p) {
  if (!gemv_vec::packed_fits(p.w1, p.k) || !gemv_vec::x_fits(p.a_t, p.a)) return false;
  if (p.gate_up)
    return gemv_vec::packed_fits(p.w2, p.k) && p.w2.quant == p.w1.quant &&
           p.w2.zeros == p.w1.zeros && p.w2.b0 == p.w1.b0 && p.w2.b1 == p.w1.b1;
  return p.a_t == MOERT_DTYPE_F32;
}

void expert_gemv_packed(cudaStream_t s, const ExpertProjection& p) {
  constexpr int kMaxBlocks = 1 << 30;
  gemv_vec::Shape shape = gemv_vec::make_packed_shape(p.w1, p.n, p.k, 1);
  const int64_t groups = ceil_div(p.n, p.gate_up ? kExpertCols<true> : kExpertCols<false>);
  shape.split = gemv_vec::choose_split(groups * p.units, shape.nchunks);
  const int64_t col_blocks = ceil_div(groups, gemv_vec::kWarps / shape.split);
  const dim3 grid(static_cast<unsigned>(col_blocks < kMaxBlocks ? col_blocks : kMaxBlocks),
                  static_cast<unsigned>(p.units));
  gemv_vec::with_packed_kind(p.w1, [&](auto pk) {
    with_projection(p, [&](auto xt, auto gate_up) {
      expert_gemv_packed_kernel<decltype(pk)::value, decltype(xt)::value, decltype(gate_up)::value>
          <<<grid, gemv_vec::kThreads, 0, s>>>(p, shape, col_blocks);
    });
  });
}

// Whether the vectorised form takes p: both matrices (gate_up) of one dtype
// and block shape, each readable in chunks, and x aligned (down reads the
// f32 activations only: other dtypes are not instantiated).
bool vec_fits(const ExpertProjection& p) {
  if (!gemv_vec::weights_fit(p.w1, p.k) || !gemv_vec::x_fits(p.a_t, p.a)) return false;
  if (p.gate_up) {
    if (!gemv_vec::weights_fit(p.w2, p.k) || p.w2.t != p.w1.t) return false;
    if (p.w1.t == MOERT_DTYPE_F8_E4M3 && (p.w2.b0 != p.w1.b0 || p.w2.b1 != p.w1.b1)) return false;
    return true;
  }
  return p.a_t == MOERT_DTYPE_F32;
}

void expert_gemv_vec(cudaStream_t s, const ExpertProjection& p) {
  constexpr int kMaxBlocks = 1 << 30;
  gemv_vec::Shape shape = gemv_vec::make_shape(p.w1, p.n, p.k, 1);
  const int64_t groups = ceil_div(p.n, p.gate_up ? kExpertCols<true> : kExpertCols<false>);
  shape.split = gemv_vec::choose_split(groups * p.units, shape.nchunks);
  const int64_t col_blocks = ceil_div(groups, gemv_vec::kWarps / shape.split);
  const dim3 grid(static_cast<unsigned>(col_blocks < kMaxBlocks ? col_blocks : kMaxBlocks),
                  static_cast<unsigned>(p.units));
  gemv_vec::with_weight_dtype(p.w1.t, [&](auto wt) {
    with_projection(p, [&](auto xt, auto gate_up) {
      expert_gemv_vec_kernel<decltype(wt)::value, decltype(xt)::value, decltype(gate_up)::value>
          <<<grid, gemv_vec::kThreads, 0, s>>>(p, shape, col_blocks);
    });
  });
}

}  // namespace

void expert_gemv(cudaStream_t s, const ExpertProjection& p) {
  if (p.units == 0 || p.n == 0) return;
  if (!baseline_kernels() && vec_fits(p)) {
    expert_gemv_vec(s, p);
    check_launch("expert_gemv");
    return;
  }
  if (!baseline_kernels() && vec_fits_packed(p)) {
    expert_gemv_packed(s, p);
    check_launch("expert_gemv");
    return;
  }
  const int64_t blocks = (p.n + kGemvWarps - 1) / kGemvWarps;
  const dim3 grid(static_cast<unsigned>(blocks < 65535 ? blocks : 65535),
                  static_cast<unsigned>(p.units));
  expert_gemv_kernel<<<grid, 32 * kGemvWarps, 0, s>>>(p);
  check_launch("expert_gemv");
}

}  // namespace moert::cuda::launch
