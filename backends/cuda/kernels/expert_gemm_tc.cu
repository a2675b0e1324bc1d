// The tensor-core form of the MoE expert projections (prefill): the same
// outputs as expert_gemm (moe.cu) for the experts with more than `min_rows`
// rows, with operands rounded to bf16 and f32 accumulation (wmma 16x16x16).
// The SIMT expert_gemm keeps the experts with few rows, whose products stay
// exact in f32; the two launches split the tiles of one route between them.
//
// A block computes one row tile of the route (kMoeTileRows = 64 sorted
// positions of one expert) against a 128-row slice of weight rows: gate_up
// takes 64 output columns of both gate and up (rows 0..63 of the slice are
// gate rows, 64..127 the up rows of the same columns) so the epilogue sees g
// and u together; down takes 128 output columns.  8 warps as 2 x 4, each a
// 32 x 32 piece of the 64 x 128 accumulator (2 x 2 fragments).
//
// K advances 32 at a time through two shared-memory stages: the next slice
// is loaded from global memory into registers (raw, in its stored dtype)
// before the current one is multiplied, then converted to bf16 and stored
// into the other stage, so the loads' latency overlaps the MMAs.  A rows are
// gathered through sorted_slot; weights are dequantised on the fly (fp8
// values times their f32 block scale, packed values (numeric.h) times their
// group's scale, in f32, then rounded once to bf16).
// Widening (f16, e4m3 -> f32) uses the exact hardware conversions; every
// rounding is to nearest even (cuda_bf16.h), as numeric.h rounds.  Packed
// weights load 8 (int8) or 4 (4-bit) bytes per 8 K elements.  Rows or bases
// not aligned for the vector loads take a scalar path (load_float,
// weight_at's arithmetic) without the overlap.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <mma.h>

#include <cstring>

#include "common.cuh"

// Below sm_80 (no bf16 tensor cores) the tensor-core kernels compile to a
// trap, which leaves their helpers unreferenced in that device pass.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#pragma nv_diag_suppress 177
#endif

namespace moert::cuda::launch {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTcM = static_cast<int>(kMoeTileRows);  // A rows per tile
constexpr int kTcB = 128;                             // weight rows per tile
constexpr int kTcK = 32;                              // K per stage
constexpr int kTcThreads = 256;                       // 8 warps: 2 (rows) x 4 (columns)
// Row strides in shared memory, padded by 16 bytes so consecutive rows start
// in different banks; both stay multiples of 16 bytes (wmma's ldm) and every
// fragment pointer 32-byte aligned.
constexpr int kLd = kTcK + 8;   // bf16 elements per A / B row (80 bytes)
constexpr int kLdC = kTcB + 4;  // f32 elements per accumulator row (528 bytes)
constexpr int kABytes = kTcM * kLd * 2;
constexpr int kBBytes = kTcB * kLd * 2;
constexpr int kStageBytes = kABytes + kBBytes;
constexpr int kCBytes = kTcM * kLdC * 4;
// The accumulator tile reuses the stages' memory once the K loop is done.
constexpr int kSmemBytes = 2 * kStageBytes > kCBytes ? 2 * kStageBytes : kCBytes;
static_assert(kTcThreads == kTcM * (kTcK / 8), "one 8-element A chunk per thread");
static_assert(2 * kTcThreads == kTcB * (kTcK / 8), "two 8-element B chunks per thread");
static_assert(kStageBytes % 32 == 0 && kABytes % 32 == 0, "fragment pointers 32-byte aligned");

// 8 consecutive K elements of one row as loaded by the vector path: raw
// bits of the stored dtype (f32 fills lo and hi, bf16/f16 lo, f8 and int8
// lo.x and lo.y, 4-bit formats lo.x), the fp8 block scale or packed group
// scale, and int4's zero point.
struct Chunk {
  uint4 lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
  float scale = 1.0f, zero = 0.0f;
};

__device__ __forceinline__ uint32_t bf16x2(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);  // a in the low half
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}

__device__ __forceinline__ float2 f16x2_to_f32(uint32_t u) {
  __half2 h;
  memcpy(&h, &u, 4);
  return __half22float2(h);  // exact
}

// Two e4m3 values (the low 16 bits of u, the first in the low byte) as f32:
// e4m3 -> f16 is exact (e4m3 subnormals are normal f16 numbers).
__device__ __forceinline__ float2 e4m3x2_to_f32(uint32_t u) {
  const __half2_raw r =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(u & 0xffffu), __NV_E4M3);
  uint32_t bits;
  memcpy(&bits, &r, 4);
  return f16x2_to_f32(bits);
}

__device__ __forceinline__ uint4 floats_to_bf16x8(const uint4& lo, const uint4& hi) {
  return make_uint4(bf16x2(__uint_as_float(lo.x), __uint_as_float(lo.y)),
                    bf16x2(__uint_as_float(lo.z), __uint_as_float(lo.w)),
                    bf16x2(__uint_as_float(hi.x), __uint_as_float(hi.y)),
                    bf16x2(__uint_as_float(hi.z), __uint_as_float(hi.w)));
}

__device__ __forceinline__ uint32_t f16x2_to_bf16x2(uint32_t u) {
  const float2 f = f16x2_to_f32(u);
  return bf16x2(f.x, f.y);
}

__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t u, float scale) {
  const float2 f = e4m3x2_to_f32(u);
  // The same f32 product as weight_element, rounded once to bf16.
  return bf16x2(f.x * scale, f.y * scale);
}

// The 8 elements at element index i of `base` (16-byte aligned for
// f32/bf16/f16, 8-byte for f8) as raw bits.
template <moert_dtype T>
__device__ __forceinline__ void load_raw(Chunk& c, const void* base, int64_t i) {
  if constexpr (T == MOERT_DTYPE_F32) {
    const uint4* q = reinterpret_cast<const uint4*>(static_cast<const float*>(base) + i);
    c.lo = __ldg(q);
    c.hi = __ldg(q + 1);
  } else if constexpr (T == MOERT_DTYPE_F8_E4M3) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(base) + i));
    c.lo.x = v.x;
    c.lo.y = v.y;
  } else {
    c.lo = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + i));
  }
}

// A chunk loaded by load_raw<T>, as 8 bf16 (nearest even).
template <moert_dtype T>
__device__ __forceinline__ uint4 raw_to_bf16x8(const Chunk& c) {
  if constexpr (T == MOERT_DTYPE_F32) {
    return floats_to_bf16x8(c.lo, c.hi);
  } else if constexpr (T == MOERT_DTYPE_BF16) {
    return c.lo;
  } else if constexpr (T == MOERT_DTYPE_F16) {
    return make_uint4(f16x2_to_bf16x2(c.lo.x), f16x2_to_bf16x2(c.lo.y), f16x2_to_bf16x2(c.lo.z),
                      f16x2_to_bf16x2(c.lo.w));
  } else {
    return make_uint4(e4m3x2_to_bf16x2(c.lo.x, c.scale), e4m3x2_to_bf16x2(c.lo.x >> 16, c.scale),
                      e4m3x2_to_bf16x2(c.lo.y, c.scale), e4m3x2_to_bf16x2(c.lo.y >> 16, c.scale));
  }
}

// Eight f32 values as 8 bf16 (nearest even).
__device__ __forceinline__ uint4 floats_to_bf16x8(const float (&f)[8]) {
  return make_uint4(bf16x2(f[0], f[1]), bf16x2(f[2], f[3]), bf16x2(f[4], f[5]), bf16x2(f[6], f[7]));
}

// Packed chunks (kQ != none): 8 int8 bytes, or 4 bytes of 8 nibbles (the
// even column in the low nibble), starting at byte `at` of the weights, and
// the scale (and int4 zero point) of group g.
template <Quant kQ>
__device__ __forceinline__ void load_packed(Chunk& c, const Weights& w, int64_t at, int64_t g) {
  const uint8_t* bytes = static_cast<const uint8_t*>(w.w) + at;
  if constexpr (kQ == Quant::int8)
    load_raw<MOERT_DTYPE_F8_E4M3>(c, bytes, 0);  // 8 bytes
  else
    c.lo.x = __ldg(reinterpret_cast<const unsigned int*>(bytes));
  if constexpr (kQ == Quant::mxfp4) {
    c.scale = e8m0_to_f32(__ldg(static_cast<const uint8_t*>(w.qscale) + g));
  } else {
    const uint16_t* s16 = static_cast<const uint16_t*>(w.qscale);
    if (kQ == Quant::int4 && w.zeros) {
      c.scale = f16_to_f32(__ldg(s16 + 2 * g));
      c.zero = f16_to_f32(__ldg(s16 + 2 * g + 1));
    } else {
      c.scale = f16_to_f32(__ldg(s16 + g));
      c.zero = 8.0f;  // int4's; int8 has none
    }
  }
}

// A chunk loaded by load_packed<kQ>, dequantised in f32 (exact) and rounded
// once to 8 bf16.
template <Quant kQ>
__device__ __forceinline__ uint4 packed_to_bf16x8(const Chunk& c) {
  float f[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if constexpr (kQ == Quant::int8) {
      const uint32_t word = j < 4 ? c.lo.x : c.lo.y;
      f[j] = static_cast<float>(static_cast<int8_t>((word >> (8 * (j & 3))) & 0xffu)) * c.scale;
    } else {
      const uint32_t n = (c.lo.x >> (4 * j)) & 15u;
      f[j] = kQ == Quant::mxfp4 ? e2m1_to_f32(n) * c.scale
                                : (static_cast<float>(n) - c.zero) * c.scale;
    }
  }
  return floats_to_bf16x8(f);
}

// The A operand (x of any float dtype for gate_up, h f32 for down): the
// row starting at element a_base (< 0: outside the tile), columns
// kk..kk+7.  Vector path: raw bits, zeros outside; kk < k implies
// kk + 8 <= k (k % 8 == 0).
__device__ __forceinline__ void load_a_vec(Chunk& c, const ExpertProjection& p, int64_t a_base,
                                           int64_t kk) {
  if (a_base < 0 || kk >= p.k)
    c.lo = c.hi = make_uint4(0, 0, 0, 0);
  else if (p.a_t == MOERT_DTYPE_F32)
    load_raw<MOERT_DTYPE_F32>(c, p.a, a_base + kk);
  else
    load_raw<MOERT_DTYPE_BF16>(c, p.a, a_base + kk);  // bf16 or f16 bits
}

__device__ __forceinline__ uint4 a_vec_to_bf16x8(const Chunk& c, moert_dtype a_t) {
  if (a_t == MOERT_DTYPE_F32) return raw_to_bf16x8<MOERT_DTYPE_F32>(c);
  if (a_t == MOERT_DTYPE_F16) return raw_to_bf16x8<MOERT_DTYPE_F16>(c);
  return c.lo;
}

// Scalar path (unaligned rows or base): element by element, loaded when
// stored, so these loads are not overlapped with the MMAs.
__device__ __forceinline__ uint4 a_scalar_bf16x8(const ExpertProjection& p, int64_t a_base,
                                                 int64_t kk) {
  float f[8];
#pragma unroll
  for (int j = 0; j < 8; ++j)
    f[j] = a_base >= 0 && kk + j < p.k ? load_float(p.a_t, p.a, a_base + kk + j) : 0.0f;
  return floats_to_bf16x8(f);
}

// One weight row's chunk: the row starts at element w_base (< 0: outside
// the matrix; packed: at byte w_base), columns kk..kk+7.  `scale_row`:
// block_scale_index of the row's column 0, so column c's scale is
// scale[scale_row + c / b1] (vector path: b1 % 8 == 0, the chunk lies in
// one block or group).
template <moert_dtype kW, Quant kQ>
__device__ __forceinline__ void load_w_vec(Chunk& c, const Weights& w, const ExpertProjection& p,
                                           int64_t w_base, int64_t scale_row, int64_t kk) {
  if (w_base < 0 || kk >= p.k) {
    c.lo = c.hi = make_uint4(0, 0, 0, 0);
    c.scale = 1.0f;
    c.zero = 0.0f;
    return;
  }
  if constexpr (kQ != Quant::none) {
    // The group is found with 32-bit division (k and b1 checked on the host).
    const int64_t g = scale_row + static_cast<uint32_t>(kk) / static_cast<uint32_t>(w.b1);
    load_packed<kQ>(c, w, w_base + (kQ == Quant::int8 ? kk : kk / 2), g);
  } else {
    load_raw<kW>(c, w.w, w_base + kk);
    if constexpr (kW == MOERT_DTYPE_F8_E4M3)
      c.scale =
          w.scale
              ? __ldg(w.scale + scale_row + static_cast<uint32_t>(kk) / static_cast<uint32_t>(w.b1))
              : 1.0f;
  }
}

// A chunk loaded by load_w_vec<kW, kQ>, as 8 bf16.
template <moert_dtype kW, Quant kQ>
__device__ __forceinline__ uint4 w_vec_to_bf16x8(const Chunk& c) {
  if constexpr (kQ != Quant::none)
    return packed_to_bf16x8<kQ>(c);
  else
    return raw_to_bf16x8<kW>(c);
}

// weight_at, with the row's part of the indices hoisted (packed: w_base is
// the row's first byte).
__device__ __forceinline__ uint4 w_scalar_bf16x8(const Weights& w, const ExpertProjection& p,
                                                 int64_t w_base, int64_t scale_row, int64_t kk) {
  float f[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    f[j] = 0.0f;
    if (w_base >= 0 && kk + j < p.k) {
      if (w.quant != Quant::none) {
        f[j] = packed_value(w.quant, static_cast<const uint8_t*>(w.w) + w_base, w.qscale, w.zeros,
                            scale_row + (kk + j) / w.b1, kk + j);
      } else {
        const float v = load_float(w.t, w.w, w_base + kk + j);
        f[j] = w.scale ? v * w.scale[scale_row + (kk + j) / w.b1] : v;
      }
    }
  }
  return floats_to_bf16x8(f);
}

// One block: tiles blockIdx.y, blockIdx.y + gridDim.y, ... of the route (or
// of the units, identity form) against output columns [n0, n0 + 64) of
// gate and up (gate_up) or [n0, n0 + 128) (down).  `a_vec` / `w_vec`: the
// 16-byte loads are allowed (checked on the host).  kQ: packed weights of
// that format (kW unused), none: kW.
template <bool kGateUp, moert_dtype kW, Quant kQ = Quant::none>
__global__ void __launch_bounds__(kTcThreads, 2)
    expert_gemm_tc_kernel(ExpertProjection p, MoeRoute route, bool identity, int64_t tiles,
                          int64_t min_rows, bool a_vec, bool w_vec) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // bf16 tensor cores start with sm_80; the host never launches this
  // kernel below that (DeviceCaps::bf16_tensor_cores).
  __trap();
#else
  __shared__ __align__(128) unsigned char smem[kSmemBytes];
  __shared__ int64_t out_row[kTcM];  // the output row of each tile row, -1: none
  constexpr int kOutCols = kGateUp ? kTcB / 2 : kTcB;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;  // the warp's 32 x 32 accumulator piece
  const int lr = tid >> 2;                  // the A row / weight row this thread loads
  const int kc = (tid & 3) * 8;             // and its K offset within the stage
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kOutCols;
  const int64_t nk = (p.k + kTcK - 1) / kTcK;

  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    // Every condition below depends on the tile only: the whole block
    // skips or runs it, so the barriers stay uniform.
    int64_t e = 0, row0, row_end, count;
    if (identity) {
      row0 = tile * kTcM;
      row_end = min(row0 + kTcM, p.units);
      count = p.units;
    } else {
      e = route.tile_expert[tile];
      if (e < 0) continue;
      row0 = route.tile_start[tile];
      const int64_t end = route.expert_start[e + 1];
      count = end - route.expert_start[e];
      row_end = min(row0 + kTcM, end);
    }
    if (count <= min_rows || row0 >= row_end) continue;  // the SIMT kernel's tile

    if (tid < kTcM) {
      const int64_t pos = row0 + tid;
      out_row[tid] = pos < row_end ? (kGateUp || identity ? pos : route.sorted_slot[pos]) : -1;
    }
    // The first element of the thread's A row, -1: past the expert's rows.
    int64_t a_base = -1;
    {
      const int64_t pos = row0 + lr;
      if (pos < row_end) {
        const int64_t slot = identity ? pos : route.sorted_slot[pos];
        a_base = (kGateUp ? slot / p.top_k : pos) * p.k;
      }
    }
    // The thread's two weight rows: gate and up of column n0 + lr (gate_up),
    // or columns n0 + lr and n0 + 64 + lr (down); -1: past n.
    int64_t w_base[2] = {-1, -1}, scale_row[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const Weights& w = kGateUp && i == 1 ? p.w2 : p.w1;
      const int64_t r = n0 + lr + (kGateUp ? 0 : kTcM * i);
      if (r < p.n) {
        const bool packed = w.quant != Quant::none;
        w_base[i] = (e * p.n + r) * (packed ? packed_row_bytes(w.quant, p.k) : p.k);
        if (w.scale || packed) scale_row[i] = block_scale_index(e, r, 0, p.n, p.k, w.b0, w.b1);
      }
    }

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    // The vector path's next slice, raw, in registers (scalar paths load
    // at store time).
    Chunk a_st, b_st[2];
    auto load = [&](int64_t kt) {
      const int64_t kk = kt * kTcK + kc;
      if (a_vec) load_a_vec(a_st, p, a_base, kk);
      if (w_vec)
#pragma unroll
        for (int i = 0; i < 2; ++i)
          load_w_vec<kW, kQ>(b_st[i], kGateUp && i == 1 ? p.w2 : p.w1, p, w_base[i], scale_row[i],
                             kk);
    };
    auto store = [&](int buf, int64_t kt) {
      const int64_t kk = kt * kTcK + kc;
      unsigned char* stage = smem + buf * kStageBytes;
      *reinterpret_cast<uint4*>(stage + (lr * kLd + kc) * 2) =
          a_vec ? a_vec_to_bf16x8(a_st, p.a_t) : a_scalar_bf16x8(p, a_base, kk);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const Weights& w = kGateUp && i == 1 ? p.w2 : p.w1;
        *reinterpret_cast<uint4*>(stage + kABytes + ((lr + kTcM * i) * kLd + kc) * 2) =
            w_vec ? w_vec_to_bf16x8<kW, kQ>(b_st[i])
                  : w_scalar_bf16x8(w, p, w_base[i], scale_row[i], kk);
      }
    };

    if (nk > 0) {
      load(0);
      store(0, 0);
    }
    __syncthreads();
    for (int64_t kt = 0; kt < nk; ++kt) {
      const int buf = static_cast<int>(kt & 1);
      // Stage buf ^ 1 was last read in step kt - 1, which every warp has
      // finished (the barrier closing that step): it can be refilled now.
      if (kt + 1 < nk) load(kt + 1);
      const __nv_bfloat16* as = reinterpret_cast<const __nv_bfloat16*>(smem + buf * kStageBytes);
      const __nv_bfloat16* bs =
          reinterpret_cast<const __nv_bfloat16*>(smem + buf * kStageBytes + kABytes);
#pragma unroll
      for (int ks = 0; ks < kTcK; ks += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
        // B(k, n) = W[n, k]: the weight rows are B's columns.
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb[2];
#pragma unroll
        for (int i = 0; i < 2; ++i)
          wmma::load_matrix_sync(fa[i], as + (wm * 32 + i * 16) * kLd + ks, kLd);
#pragma unroll
        for (int j = 0; j < 2; ++j)
          wmma::load_matrix_sync(fb[j], bs + (wn * 32 + j * 16) * kLd + ks, kLd);
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
      if (kt + 1 < nk) store(buf ^ 1, kt + 1);
      __syncthreads();
    }

    // Every warp is past the K loop (the barrier above): the stages become
    // the accumulator tile.
    float* ct = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(ct + (wm * 32 + i * 16) * kLdC + wn * 32 + j * 16, acc[i][j], kLdC,
                                wmma::mem_row_major);
    __syncthreads();
    // Consecutive threads write consecutive columns of one row.
    for (int idx = tid; idx < kTcM * kOutCols; idx += kTcThreads) {
      const int r = idx / kOutCols, c = idx % kOutCols;
      const int64_t orow = out_row[r], col = n0 + c;
      if (orow < 0 || col >= p.n) continue;
      const float g = ct[r * kLdC + c];
      p.out[orow * p.n + col] = kGateUp ? expert_act(p, e, col, g, ct[r * kLdC + kTcM + c]) : g;
    }
    // The next tile refills the memory just read.
    __syncthreads();
  }
#endif
}

bool aligned(const void* ptr, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// Whether a weight's chunks of 8 K elements may be loaded as vectors: row
// starts are multiples of 8 elements (k % 8 == 0, checked by the caller),
// the base is aligned, and an fp8 or packed chunk lies in one block (group).
bool vector_weights(const Weights& w, int64_t k) {
  if (w.quant != Quant::none)  // 8 bytes (int8) or 4 (nibbles) per chunk
    return w.qscale && aligned(w.w, w.quant == Quant::int8 ? 8 : 4) && k <= INT32_MAX && w.b1 > 0 &&
           w.b1 % 8 == 0 && w.b1 <= INT32_MAX;
  switch (w.t) {
    case MOERT_DTYPE_F32:
    case MOERT_DTYPE_BF16:
    case MOERT_DTYPE_F16:
      return w.scale == nullptr && aligned(w.w, 16);
    case MOERT_DTYPE_F8_E4M3:
      // The scale column is found with 32-bit division.
      return aligned(w.w, 8) && k <= INT32_MAX &&
             (w.scale == nullptr || (w.b1 > 0 && w.b1 % 8 == 0 && w.b1 <= INT32_MAX));
    default:
      return false;
  }
}

template <bool kGateUp>
void launch_tc(cudaStream_t s, const ExpertProjection& p, const MoeRoute& route, bool identity,
               int64_t tiles, int64_t min_rows, bool a_vec, bool w_vec) {
  constexpr int64_t out_cols = kGateUp ? kTcB / 2 : kTcB;
  const dim3 grid(static_cast<unsigned>((p.n + out_cols - 1) / out_cols),
                  static_cast<unsigned>(tiles < 65535 ? tiles : 65535));
  if (w_vec && p.w1.quant != Quant::none) {
    switch (p.w1.quant) {
      case Quant::int8:
        expert_gemm_tc_kernel<kGateUp, MOERT_DTYPE_U8, Quant::int8>
            <<<grid, kTcThreads, 0, s>>>(p, route, identity, tiles, min_rows, a_vec, w_vec);
        break;
      case Quant::int4:
        expert_gemm_tc_kernel<kGateUp, MOERT_DTYPE_U8, Quant::int4>
            <<<grid, kTcThreads, 0, s>>>(p, route, identity, tiles, min_rows, a_vec, w_vec);
        break;
      default:
        expert_gemm_tc_kernel<kGateUp, MOERT_DTYPE_U8, Quant::mxfp4>
            <<<grid, kTcThreads, 0, s>>>(p, route, identity, tiles, min_rows, a_vec, w_vec);
        break;
    }
    return;
  }
  switch (p.w1.t) {
    case MOERT_DTYPE_BF16:
      expert_gemm_tc_kernel<kGateUp, MOERT_DTYPE_BF16>
          <<<grid, kTcThreads, 0, s>>>(p, route, identity, tiles, min_rows, a_vec, w_vec);
      break;
    case MOERT_DTYPE_F16:
      expert_gemm_tc_kernel<kGateUp, MOERT_DTYPE_F16>
          <<<grid, kTcThreads, 0, s>>>(p, route, identity, tiles, min_rows, a_vec, w_vec);
      break;
    case MOERT_DTYPE_F8_E4M3:
      expert_gemm_tc_kernel<kGateUp, MOERT_DTYPE_F8_E4M3>
          <<<grid, kTcThreads, 0, s>>>(p, route, identity, tiles, min_rows, a_vec, w_vec);
      break;
    default:  // f32 (any other dtype, packed ones included here, has w_vec false: the scalar path)
      expert_gemm_tc_kernel<kGateUp, MOERT_DTYPE_F32>
          <<<grid, kTcThreads, 0, s>>>(p, route, identity, tiles, min_rows, a_vec, w_vec);
      break;
  }
}

}  // namespace

void expert_gemm_tc(cudaStream_t s, const ExpertProjection& p, int64_t min_rows) {
  if (p.units == 0 || p.n == 0) return;
  const bool identity = p.route == nullptr;
  if (identity && p.units <= min_rows) return;  // all of it is the SIMT kernel's
  const MoeRoute route = identity ? MoeRoute{} : *p.route;
  const int64_t tiles = identity ? (p.units + kTcM - 1) / kTcM : route.max_tiles;
  if (tiles <= 0) return;
  // 16-byte loads need every row to start on a multiple of 8 elements.
  const bool rows8 = p.k % 8 == 0;
  const bool a_vec =
      rows8 && aligned(p.a, 16) &&
      (p.a_t == MOERT_DTYPE_F32 || p.a_t == MOERT_DTYPE_BF16 || p.a_t == MOERT_DTYPE_F16);
  const bool w_vec =
      rows8 && vector_weights(p.w1, p.k) &&
      (!p.gate_up || (p.w2.t == p.w1.t && p.w2.quant == p.w1.quant && vector_weights(p.w2, p.k)));
  if (p.gate_up)
    launch_tc<true>(s, p, route, identity, tiles, min_rows, a_vec, w_vec);
  else
    launch_tc<false>(s, p, route, identity, tiles, min_rows, a_vec, w_vec);
  check_launch("expert_gemm_tc");
}

}  // namespace moert::cuda::launch
