// Attention over a key/value sequence (a KV cache, or this call's k and v),
// flash-decoding style: the keys of each (query, head) are cut into
// `splits` pieces; a block of four warps runs each piece with an online
// softmax (one key per warp at a time: the warp's lanes share the dot
// product over dk and hold dv / 32 accumulators each), and a second kernel
// merges the pieces, adds the sink term and normalises.  For prefill (many
// queries) a tiled kernel instead reuses each key/value tile across 64
// queries held in shared memory (see "tiled prefill" below), and for
// bf16 / f16 queries a form of it runs the two products on the tensor cores
// ("tiled prefill on the tensor cores").  Paged attention (a block table
// mapping each sequence's positions to cache rows) takes the split kernel
// only (see "paged attention" below).  Scores, softmax and accumulation
// are f32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <atomic>

#include "common.cuh"

// Below sm_80 (no bf16 tensor cores) the tensor-core kernels compile to a
// trap, which leaves their helpers unreferenced in that device pass.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#pragma nv_diag_suppress 177
#endif

namespace moert::cuda::launch {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = static_cast<int>(kAttentionMaxDv / 32);

// The keys query i may see: [first, last], empty when first > last.
__device__ __forceinline__ void key_range(const Attention& a, int64_t i, int64_t* first,
                                          int64_t* last) {
  const int64_t p = a.past + i;
  int64_t hi = a.len - 1;
  if (a.mask.causal && p < hi) hi = p;
  int64_t lo = 0;
  if (a.mask.window > 0 && p - a.mask.window + 1 > lo) lo = p - a.mask.window + 1;
  *first = lo;
  *last = hi;
}

// ---- paged attention -------------------------------------------------------
//
// paged_check validates every token's entries (one thread per token) before
// anything is written; paged_write copies each token's k or v row into its
// cache row; the split kernel below then maps each key position j of a
// query's sequence to its cache row through the block table.  The three
// launches are ordered on the stream, so every write precedes every read.

// The value of an error slot that recorded nothing (kNoError of kernel.h).
constexpr unsigned long long kSlotClear = ~0ull;

__device__ __forceinline__ bool paged_failed(const PagedKv& p) { return *p.error != kSlotClear; }

// The cache row of position j of the sequence whose block-table row is
// `blocks` (validated by paged_check for every j the caller passes).
__device__ __forceinline__ int64_t paged_row(const PagedKv& p, const int32_t* blocks, int64_t j) {
  return static_cast<int64_t>(blocks[j / p.block_size]) * p.block_size + j % p.block_size;
}

__global__ void paged_check_kernel(PagedKv p, int64_t tokens) {
  for (int64_t t = global_index(); t < tokens; t += global_stride()) {
    const int64_t s = p.sequences[t], pos = p.positions[t];
    bool ok = s >= 0 && s < p.seqs && pos >= 0 && pos / p.block_size < p.cols;
    // Only the columns this token reads: later ones may be unused (-1).
    for (int64_t c = 0; ok && c <= pos / p.block_size; ++c) {
      const int64_t b = p.table[s * p.cols + c];
      ok = b >= 0 && b < p.blocks;
    }
    if (!ok) record_error(p.error, t);
  }
}

__global__ void paged_write_kernel(moert_dtype from, const void* x, moert_dtype to, void* cache,
                                   int64_t row, int64_t n, PagedKv p) {
  if (paged_failed(p)) return;  // the call fails: nothing is written
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    const int64_t t = i / row, c = i % row;
    const int32_t* blocks = p.table + static_cast<int64_t>(p.sequences[t]) * p.cols;
    cast_element(from, x, i, to, cache, paged_row(p, blocks, p.positions[t]) * row + c);
  }
}

// The keys query i of a paged call sees: positions first .. last of its own
// sequence (causal, so up to its own position; the window may cut the
// start), and that sequence's row of the block table.  Empty (first >
// last) when paged_check recorded an error in this call, whose entries may
// then be out of range.
__device__ __forceinline__ void paged_key_range(const Attention& a, int64_t i, int64_t* first,
                                                int64_t* last, const int32_t** blocks) {
  *first = 1;
  *last = 0;
  *blocks = nullptr;
  if (paged_failed(a.paged)) return;
  const int64_t p = a.paged.positions[i];
  int64_t lo = 0;
  if (a.mask.window > 0 && p - a.mask.window + 1 > lo) lo = p - a.mask.window + 1;
  *first = lo;
  *last = p;
  *blocks = a.paged.table + static_cast<int64_t>(a.paged.sequences[i]) * a.paged.cols;
}

// scratch per (query, head, split): [max, sum, acc[dv]].  Paged
// (a.paged.table set): key j of the query's range is its sequence's
// position j, read from cache row paged_row(j); otherwise key j is row j.
__global__ void attention_split_kernel(Attention a, int splits, float* scratch) {
  if (a.past_dev) {  // a replayed graph: this step's position
    a.past = *a.past_dev;
    a.len = a.past + a.tokens;
  }
  extern __shared__ float shared[];
  float* q = shared;                     // [dk], q row as f32
  float* merge = shared + a.dk;          // [kWarps][dv]
  float* stats = merge + kWarps * a.dv;  // [kWarps][2]
  const int64_t row = blockIdx.x;        // i * heads + h
  const int split = blockIdx.y;
  const int64_t i = row / a.heads, h = row % a.heads;
  const int64_t g = h / (a.heads / a.kv_heads);
  const int64_t vh = a.vh > 0 ? a.vh : a.dv;  // the values' head stride
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  for (int64_t c = threadIdx.x; c < a.dk; c += blockDim.x)
    q[c] = load_float(a.q_t, a.q, row * a.dk + c);
  __syncthreads();

  int64_t first, last;
  const int32_t* blocks = nullptr;  // paged: the sequence's row of the block table
  if (a.paged.table)
    paged_key_range(a, i, &first, &last, &blocks);
  else
    key_range(a, i, &first, &last);
  const int64_t count = last >= first ? last - first + 1 : 0;
  const int64_t per = (count + splits - 1) / splits;
  const int64_t begin = first + split * per;
  const int64_t end = min(first + count, begin + per);

  float m = -INFINITY, l = 0.0f;
  float acc[kMaxPerLane];
#pragma unroll
  for (int r = 0; r < kMaxPerLane; ++r) acc[r] = 0.0f;

  for (int64_t j = begin + warp; j < end; j += kWarps) {
    const int64_t kv = blocks ? paged_row(a.paged, blocks, j) : j;  // the cache row
    const int64_t krow = (kv * a.kv_heads + g) * a.dk;
    float dot = 0.0f;
    for (int64_t c = lane; c < a.dk; c += 32) dot += q[c] * load_float(a.k_t, a.k, krow + c);
    const float score = a.mask.scale * warp_sum(dot);
    const float m_new = fmaxf(m, score);
    const float correction = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float p = expf(score - m_new);
    l = l * correction + p;
    const int64_t vrow = (kv * a.kv_heads + g) * vh;
#pragma unroll
    for (int r = 0; r < kMaxPerLane; ++r) {
      const int64_t c = lane + 32 * r;
      if (c < a.dv) acc[r] = acc[r] * correction + p * load_float(a.v_t, a.v, vrow + c);
    }
    m = m_new;
  }

  // Merge the warps' partial softmaxes.
#pragma unroll
  for (int r = 0; r < kMaxPerLane; ++r) {
    const int64_t c = lane + 32 * r;
    if (c < a.dv) merge[warp * a.dv + c] = acc[r];
  }
  if (lane == 0) {
    stats[2 * warp] = m;
    stats[2 * warp + 1] = l;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, stats[2 * w]);
  float factor[kWarps];
  float sum = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    factor[w] = stats[2 * w] == -INFINITY ? 0.0f : expf(stats[2 * w] - mx);
    sum += stats[2 * w + 1] * factor[w];
  }
  float* out = scratch + (row * splits + split) * (a.dv + 2);
  if (threadIdx.x == 0) {
    out[0] = mx;
    out[1] = sum;
  }
  for (int64_t c = threadIdx.x; c < a.dv; c += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += merge[w * a.dv + c] * factor[w];
    out[2 + c] = v;
  }
}

__global__ void attention_merge_kernel(Attention a, int splits, const float* scratch) {
  const int64_t row = blockIdx.x;
  const int64_t h = row % a.heads;
  const float* parts = scratch + row * splits * (a.dv + 2);
  const float sink = a.sinks ? load_float(a.sinks_t, a.sinks, h) : -INFINITY;
  float mx = sink;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, parts[s * (a.dv + 2)]);
  float sum = a.sinks ? expf(sink - mx) : 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = parts[s * (a.dv + 2)];
    if (ms != -INFINITY) sum += parts[s * (a.dv + 2) + 1] * expf(ms - mx);
  }
  // No allowed key and no sink: the output row is 0.
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int64_t c = threadIdx.x; c < a.dv; c += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = parts[s * (a.dv + 2)];
      if (ms != -INFINITY) v += parts[s * (a.dv + 2) + 2 + c] * expf(ms - mx);
    }
    store_float(a.out_t, a.out, row * a.dv + c, v * inv);
  }
}

// ---- tiled prefill --------------------------------------------------------
//
// One block of 256 threads per (64 consecutive queries, query head); it walks
// the keys the tile's queries may see in tiles of 64.  Per key tile, K and V
// are widened to f32 in shared memory (read from global memory once per 64
// queries), S = scale * Q K^T is computed as a 16 x 16 grid of threads with a
// 4 x 4 micro-tile each (rows ty + 16 r, keys tx + 16 c), masked, and folded
// into a per-row online softmax (running max m and sum l, f32); P goes
// through shared memory and O += P V accumulates in registers (thread
// (ty, tx) owns rows ty + 16 r and columns 64 v + 4 tx + e).  A row's 64
// scores live in the 16 lanes of one half-warp, so its max and sum are
// half-warp shuffles.  At the end the sink joins the denominator and the
// rows are normalised exactly as attention_merge_kernel does.

constexpr int kTileQ = 64, kTileK = 64, kTiledThreads = 256;
constexpr int kTilePStride = kTileK + 4;  // float4 rows of P

// The row stride (floats) of the Q and K tiles: dk rounded up to a float4,
// plus one float4 when that count of float4s is even, so the 8 rows a
// quarter-warp reads with 128-bit loads fall on distinct banks.
__host__ __device__ __forceinline__ int tiled_k_stride(int64_t dk) {
  int ks = static_cast<int>((dk + 3) / 4 * 4);
  if ((ks / 4) % 2 == 0) ks += 4;
  return ks;
}

__device__ __forceinline__ float half_warp_max(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float half_warp_sum(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float component(const float4& v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

// f32 as a shared-memory tile element: unchanged for the f32 tiles, rounded
// to nearest even for the 16-bit tiles of the tensor-core kernel.
template <typename D>
__device__ __forceinline__ D narrow(float v);
template <>
__device__ __forceinline__ float narrow<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half narrow<__half>(float v) {
  return __float2half_rn(v);
}

// dst[r * dst_stride + c] = src[base + r * row_stride + c] as D (f32, or
// rounded to bf16 / f16) for r < valid and c < width, 0 elsewhere in
// r < rows, c < padded.  Elements are numbered row-major over
// [rows][padded] and dealt to the threads in turn (coalesced); each thread
// issues kBatch loads before storing any, so a tile takes few round trips
// to memory rather than one per row.
template <moert_dtype T, typename D>
__device__ __forceinline__ void load_tile_as(const void* src, int64_t base, int64_t row_stride,
                                             int valid, int rows, int width, int padded, D* dst,
                                             int dst_stride) {
  constexpr int kBatch = 16;
  const int total = rows * padded;
  for (int e0 = threadIdx.x; e0 < total; e0 += kTiledThreads * kBatch) {
    float v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = e0 + kTiledThreads * u;
      const int r = e / padded, c = e - r * padded;
      v[u] = e < total && r < valid && c < width ? load_float(T, src, base + r * row_stride + c)
                                                 : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = e0 + kTiledThreads * u;
      const int r = e / padded, c = e - r * padded;
      if (e < total) dst[r * dst_stride + c] = narrow<D>(v[u]);
    }
  }
}

template <typename D>
__device__ __forceinline__ void load_tile(moert_dtype t, const void* src, int64_t base,
                                          int64_t row_stride, int valid, int rows, int width,
                                          int padded, D* dst, int dst_stride) {
  switch (t) {
    case MOERT_DTYPE_BF16:
      load_tile_as<MOERT_DTYPE_BF16>(src, base, row_stride, valid, rows, width, padded, dst,
                                     dst_stride);
      break;
    case MOERT_DTYPE_F16:
      load_tile_as<MOERT_DTYPE_F16>(src, base, row_stride, valid, rows, width, padded, dst,
                                    dst_stride);
      break;
    case MOERT_DTYPE_F8_E4M3:
      load_tile_as<MOERT_DTYPE_F8_E4M3>(src, base, row_stride, valid, rows, width, padded, dst,
                                        dst_stride);
      break;
    default:
      load_tile_as<MOERT_DTYPE_F32>(src, base, row_stride, valid, rows, width, padded, dst,
                                    dst_stride);
      break;
  }
}

// The block's tile of the tiled kernels: queries q0 .. q0 + nq - 1 of
// query head h, whose KV head is g.  Query tiles run in reverse: under a
// causal mask the last tiles see the most keys, and starting them first
// shortens the tail of the grid.
struct QueryTile {
  int64_t q0, h, g;
  int nq;
};
__device__ __forceinline__ QueryTile query_tile(const Attention& a) {
  QueryTile t;
  t.q0 = (static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x) * kTileQ;
  t.h = blockIdx.y;
  t.g = t.h / (a.heads / a.kv_heads);
  t.nq = static_cast<int>(min(static_cast<int64_t>(kTileQ), a.tokens - t.q0));
  return t;
}

// What turns a row's accumulated sum of p v (running max m, sum l) into its
// output: the sink joins the denominator only, as attention_merge_kernel
// computes it for a single piece; no allowed key and no sink gives 0.
__device__ __forceinline__ float row_scale(const Attention& a, float sink, float m, float l) {
  const float mx = fmaxf(sink, m);
  float sum = a.sinks ? expf(sink - mx) : 0.0f;
  const float factor = m == -INFINITY ? 0.0f : expf(m - mx);
  if (m != -INFINITY) sum += l * factor;
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  return factor * inv;
}

// NV: 64-column chunks of dv per row (dv <= 64 * NV).  Shared memory:
// Q [64][ks], K [64][ks], V [64][64 NV], P [64][kTilePStride] floats.
template <int NV>
__global__ void __launch_bounds__(kTiledThreads, 1) attention_tiled_kernel(Attention a) {
  extern __shared__ float4 tiled_shared[];
  constexpr int vs = 64 * NV;
  const int ks = tiled_k_stride(a.dk);
  float* const qs = reinterpret_cast<float*>(tiled_shared);
  float* const kts = qs + kTileQ * ks;
  float* const vts = kts + kTileK * ks;
  float* const ps = vts + kTileK * vs;

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const QueryTile tile = query_tile(a);
  const int64_t q0 = tile.q0, h = tile.h, g = tile.g;
  const int nq = tile.nq;
  const int dk = static_cast<int>(a.dk), dv = static_cast<int>(a.dv);
  const int64_t vh = a.vh > 0 ? a.vh : a.dv;  // the values' head stride
  const int dk4 = (dk + 3) / 4 * 4;

  load_tile(a.q_t, a.q, (q0 * a.heads + h) * a.dk, a.heads * a.dk, nq, kTileQ, dk, dk4, qs, ks);

  // The keys of this thread's rows, and of the whole tile: both ends of
  // key_range grow with the query, so the tile's keys are
  // [first of its first query, last of its last query].
  int64_t lo[4], hi[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = ty + 16 * r;
    if (row < nq) {
      key_range(a, q0 + row, &lo[r], &hi[r]);
    } else {
      lo[r] = 1;  // empty
      hi[r] = 0;
    }
  }
  int64_t first, last, unused;
  key_range(a, q0, &first, &unused);
  key_range(a, q0 + nq - 1, &unused, &last);

  float m[4], l[4], acc[4][NV][4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; ++v)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][v][e] = 0.0f;
  }

  for (int64_t j0 = first; j0 <= last; j0 += kTileK) {
    const int kv = static_cast<int>(min(static_cast<int64_t>(kTileK), last - j0 + 1));
    // Rows past kv are zeros: their P is 0, and 0 * (stale V) could be NaN.
    load_tile(a.k_t, a.k, (j0 * a.kv_heads + g) * a.dk, a.kv_heads * a.dk, kv, kTileK, dk, dk4, kts,
              ks);
    load_tile(a.v_t, a.v, (j0 * a.kv_heads + g) * vh, a.kv_heads * vh, kv, kTileK, dv, vs, vts, vs);
    __syncthreads();  // Q (first pass), K and V tiles complete

    float s[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[r][c] = 0.0f;
    for (int d = 0; d < dk4; d += 4) {
      float4 qv[4], kv4[4];
#pragma unroll
      for (int r = 0; r < 4; ++r)
        qv[r] = *reinterpret_cast<const float4*>(qs + (ty + 16 * r) * ks + d);
#pragma unroll
      for (int c = 0; c < 4; ++c)
        kv4[c] = *reinterpret_cast<const float4*>(kts + (tx + 16 * c) * ks + d);
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          s[r][c] = fmaf(qv[r].x, kv4[c].x, s[r][c]);
          s[r][c] = fmaf(qv[r].y, kv4[c].y, s[r][c]);
          s[r][c] = fmaf(qv[r].z, kv4[c].z, s[r][c]);
          s[r][c] = fmaf(qv[r].w, kv4[c].w, s[r][c]);
        }
    }

    // Mask, then the online softmax of each row over this tile.  A masked
    // key (or one past kv: j0 + col > last >= hi) gets p = 0 exactly.
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t key = j0 + tx + 16 * c;
        s[r][c] = key >= lo[r] && key <= hi[r] ? a.mask.scale * s[r][c] : -INFINITY;
        tile_max = fmaxf(tile_max, s[r][c]);
      }
      tile_max = half_warp_max(tile_max);
      const float m_new = fmaxf(m[r], tile_max);
      const float correction = m[r] == -INFINITY ? 0.0f : expf(m[r] - m_new);
      float row_sum = 0.0f;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float p = s[r][c] == -INFINITY ? 0.0f : expf(s[r][c] - m_new);
        row_sum += p;
        ps[(ty + 16 * r) * kTilePStride + tx + 16 * c] = p;
      }
      row_sum = half_warp_sum(row_sum);
      l[r] = l[r] * correction + row_sum;
      m[r] = m_new;
#pragma unroll
      for (int v = 0; v < NV; ++v)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[r][v][e] *= correction;
    }
    __syncthreads();  // P complete

    // O += P V over the tile's keys (kv rounded up to 4: the extra P are 0
    // and the extra V rows zeros).
    const int kv_end = (kv + 3) / 4 * 4;
    for (int j = 0; j < kv_end; j += 4) {
      float4 pv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r)
        pv[r] = *reinterpret_cast<const float4*>(ps + (ty + 16 * r) * kTilePStride + j);
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
#pragma unroll
        for (int v = 0; v < NV; ++v) {
          const float4 vv = *reinterpret_cast<const float4*>(vts + (j + jj) * vs + 64 * v + 4 * tx);
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const float p = component(pv[r], jj);
            acc[r][v][0] = fmaf(p, vv.x, acc[r][v][0]);
            acc[r][v][1] = fmaf(p, vv.y, acc[r][v][1]);
            acc[r][v][2] = fmaf(p, vv.z, acc[r][v][2]);
            acc[r][v][3] = fmaf(p, vv.w, acc[r][v][3]);
          }
        }
      }
    }
    __syncthreads();  // K, V and P are overwritten by the next tile
  }

  // The sink and the normalisation, as attention_merge_kernel computes them
  // for a single piece; no allowed key and no sink gives 0.
  const float sink = a.sinks ? load_float(a.sinks_t, a.sinks, h) : -INFINITY;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = ty + 16 * r;
    if (row >= nq) continue;
    const float out_scale = row_scale(a, sink, m[r], l[r]);
    const int64_t out_row = ((q0 + row) * a.heads + h) * a.dv;
#pragma unroll
    for (int v = 0; v < NV; ++v)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = 64 * v + 4 * tx + e;
        if (col < dv) store_float(a.out_t, a.out, out_row + col, acc[r][v][e] * out_scale);
      }
  }
}

// The dynamic shared memory of the tiled kernel for this shape, in bytes.
size_t tiled_shared_bytes(const Attention& a) {
  const int64_t nv = (a.dv + 63) / 64;
  const int64_t ks = tiled_k_stride(a.dk);
  return sizeof(float) *
         static_cast<size_t>(kTileQ * ks + kTileK * ks + kTileK * 64 * nv + kTileQ * kTilePStride);
}

// Above 48 KiB a kernel must be allowed more dynamic shared memory.
// Raising the limit to the device's maximum once per device (bit d of
// `raised`, one per kernel) keeps later launches free of the call, so they
// stay cheap and capturable in a CUDA graph.
template <typename Kernel>
void raise_shared_once(Kernel kernel, std::atomic<uint64_t>& raised, size_t shared,
                       size_t max_shared, const char* what) {
  if (shared <= 48 * 1024) return;
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  const uint64_t bit = device >= 0 && device < 64 ? uint64_t{1} << device : 0;
  if (bit == 0 || (raised.load(std::memory_order_relaxed) & bit) == 0) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(max_shared)),
               what);
    raised.fetch_or(bit, std::memory_order_relaxed);
  }
}

template <int NV>
void launch_tiled(cudaStream_t s, const Attention& a, size_t shared, size_t max_shared) {
  static std::atomic<uint64_t> raised{0};
  raise_shared_once(attention_tiled_kernel<NV>, raised, shared, max_shared,
                    "raising the shared memory of the tiled attention kernel");
  const int64_t tiles = (a.tokens + kTileQ - 1) / kTileQ;
  attention_tiled_kernel<NV><<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(a.heads)),
                               kTiledThreads, shared, s>>>(a);
  check_launch("attention_tiled");
}

// ---- tiled prefill on the tensor cores -------------------------------------
//
// The tiled kernel's schedule (a block of 256 threads per 64 queries of one
// head, 64-key tiles, the same key ranges, tile skipping, sink and
// normalisation) with the two products on the tensor cores: wmma 16x16x16
// with 16-bit inputs H (bf16 or f16: q's dtype) and f32 accumulators.  Only
// for bf16 / f16 queries, whose activations already are 16-bit; f32 queries
// keep the f32 kernel.  Q is rounded to H once per block (exact: it is of
// dtype H), K and V per tile (any float dtype, nearest even), P per tile
// after the f32 softmax.  Per key tile, separated by barriers:
//   1. K and V to shared memory as H (rows past the tile's last key and
//      columns past dk / dv are zeros: dk and dv are padded to 16);
//   2. S = Q K^T into an f32 tile: warp w computes rows 16 (w / 2) .. +15,
//      keys 32 (w % 2) .. +31 (two accumulator fragments);
//   3. warp w owns rows 8 w .. 8 w + 7 (and their running max m and sum l,
//      in registers, lane-uniform): lane c takes keys c and c + 32, masks,
//      updates m, writes P = exp(s - m) rounded to H and adds the rounded
//      values to l (so the weights of V sum exactly to l), and scales its
//      O rows in shared memory by the correction exp(m_old - m_new);
//   4. O += P V: O is kept in f32 shared memory, so warp w loads the
//      accumulator fragments of rows 16 (w % 4) .. +15, column blocks
//      w / 4, w / 4 + 2, ... from it, adds its P fragments (loaded once) times
//      the V fragments and stores them back.  Each O fragment belongs to one
//      warp in step 4 and each O row to one warp in step 3, and the barriers
//      keep the steps apart.
// The epilogue (warp w, its rows) adds the sink and normalises as the tiled
// kernel does.

namespace wmma = nvcuda::wmma;

constexpr int kTcWarps = kTiledThreads / 32;
constexpr int kTcRows = kTileQ / kTcWarps;  // softmax rows per warp
constexpr int kTcLdP = kTileK + 8;          // H elements per P row
constexpr int kTcLdS = kTileK + 4;          // floats per S row
static_assert(kTcWarps == 8 && kTileQ == 64 && kTileK == 64, "the warp layout below");

// The shared memory of the tensor-core kernel for dk, dv: the padded sizes,
// the row strides (elements; wmma's ldm must be a multiple of 8 for 16-bit
// and 4 for f32 elements, and the 8 (16-bit) or 4 (f32) extra elements put
// consecutive rows of a fragment in different banks) and the byte offsets
// of the sections Q, K, V [64][ld*] (H), P [64][kTcLdP] (H), S [64][kTcLdS]
// and O [64][ldo] (f32), each rounded to 128 bytes so that every fragment
// pointer (row a multiple of 16, column a multiple of 16) is 32-byte aligned.
struct TcLayout {
  int dkp, dvp, ldk, ldv, ldo;
  int64_t k, v, p, s, o, bytes;
};

__host__ __device__ __forceinline__ int64_t tc_round(int64_t bytes) {
  return (bytes + 127) / 128 * 128;
}

// dk and dv bounded by the caller (attention_tiled_tc_fits).
__host__ __device__ __forceinline__ TcLayout tc_layout(int64_t dk, int64_t dv) {
  TcLayout t;
  t.dkp = static_cast<int>((dk + 15) / 16 * 16);
  t.dvp = static_cast<int>((dv + 15) / 16 * 16);
  t.ldk = t.dkp + 8;
  t.ldv = t.dvp + 8;
  t.ldo = t.dvp + 4;
  t.k = tc_round(int64_t{2} * kTileQ * t.ldk);
  t.v = t.k + tc_round(int64_t{2} * kTileK * t.ldk);
  t.p = t.v + tc_round(int64_t{2} * kTileK * t.ldv);
  t.s = t.p + tc_round(int64_t{2} * kTileQ * kTcLdP);
  t.o = t.s + tc_round(int64_t{4} * kTileQ * kTcLdS);
  t.bytes = t.o + tc_round(int64_t{4} * kTileQ * t.ldo);
  return t;
}

__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }

// Two blocks per multiprocessor (128 registers) where the shared memory
// allows it (dk, dv <= 128: 110 KiB each), so one block's loads and softmax
// overlap the other's products; ptxas spills a few words to reach it.
template <typename H>
__global__ void __launch_bounds__(kTiledThreads, 2) attention_tiled_tc_kernel(Attention a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // bf16 tensor cores start with sm_80; the host never launches this
  // kernel below that (DeviceCaps::bf16_tensor_cores).
  __trap();
#else
  extern __shared__ __align__(128) unsigned char tc_shared[];
  const TcLayout L = tc_layout(a.dk, a.dv);
  H* const qs = reinterpret_cast<H*>(tc_shared);
  H* const kts = reinterpret_cast<H*>(tc_shared + L.k);
  H* const vts = reinterpret_cast<H*>(tc_shared + L.v);
  H* const ps = reinterpret_cast<H*>(tc_shared + L.p);
  float* const ss = reinterpret_cast<float*>(tc_shared + L.s);
  float* const os = reinterpret_cast<float*>(tc_shared + L.o);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const QueryTile tile = query_tile(a);
  const int64_t q0 = tile.q0, h = tile.h, g = tile.g;
  const int nq = tile.nq;
  const int dk = static_cast<int>(a.dk), dv = static_cast<int>(a.dv);
  const int64_t vh = a.vh > 0 ? a.vh : a.dv;  // the values' head stride

  load_tile(a.q_t, a.q, (q0 * a.heads + h) * a.dk, a.heads * a.dk, nq, kTileQ, dk, L.dkp, qs,
            L.ldk);
  for (int e = threadIdx.x; e < kTileQ * L.ldo; e += kTiledThreads) os[e] = 0.0f;

  // The running max and sum of this warp's rows (the same in every lane:
  // warp_max and warp_sum leave every lane the same value).
  float m[kTcRows], l[kTcRows];
#pragma unroll
  for (int r = 0; r < kTcRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  int64_t first, last, unused;
  key_range(a, q0, &first, &unused);
  key_range(a, q0 + nq - 1, &unused, &last);
  __syncthreads();  // Q and O complete (the epilogue reads O even without key tiles)

  const int s_row = 16 * (warp >> 1), s_key = 32 * (warp & 1);  // step 2
  const int o_row = 16 * (warp & 3);                            // step 4
  const int nvb = L.dvp / 16;
  const float scale = a.mask.scale;

  for (int64_t j0 = first; j0 <= last; j0 += kTileK) {
    const int kv = static_cast<int>(min(static_cast<int64_t>(kTileK), last - j0 + 1));
    // Rows past kv are zeros: their P is 0, and 0 * (stale V) could be NaN.
    load_tile(a.k_t, a.k, (j0 * a.kv_heads + g) * a.dk, a.kv_heads * a.dk, kv, kTileK, dk, L.dkp,
              kts, L.ldk);
    load_tile(a.v_t, a.v, (j0 * a.kv_heads + g) * vh, a.kv_heads * vh, kv, kTileK, dv, L.dvp, vts,
              L.ldv);
    __syncthreads();  // K and V complete

    // 2. S = Q K^T (K row-major [key][d] is K^T column-major).
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c0, c1;
      wmma::fill_fragment(c0, 0.0f);
      wmma::fill_fragment(c1, 0.0f);
      for (int d = 0; d < L.dkp; d += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major> fq;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::col_major> fk0, fk1;
        wmma::load_matrix_sync(fq, qs + s_row * L.ldk + d, L.ldk);
        wmma::load_matrix_sync(fk0, kts + s_key * L.ldk + d, L.ldk);
        wmma::load_matrix_sync(fk1, kts + (s_key + 16) * L.ldk + d, L.ldk);
        wmma::mma_sync(c0, fq, fk0, c0);
        wmma::mma_sync(c1, fq, fk1, c1);
      }
      wmma::store_matrix_sync(ss + s_row * kTcLdS + s_key, c0, kTcLdS, wmma::mem_row_major);
      wmma::store_matrix_sync(ss + s_row * kTcLdS + s_key + 16, c1, kTcLdS, wmma::mem_row_major);
    }
    __syncthreads();  // S complete

    // 3. Mask and online softmax of this warp's rows; P as H.  A masked key
    // (or one past kv: j0 + col > last >= hi) gets p = 0 exactly.  The key
    // ranges are recomputed here rather than held (16 int64 registers).
#pragma unroll
    for (int r = 0; r < kTcRows; ++r) {
      const int row = warp * kTcRows + r;
      int64_t lo = 1, hi = 0;  // empty for the rows past nq
      if (row < nq) key_range(a, q0 + row, &lo, &hi);
      const int64_t key0 = j0 + lane, key1 = key0 + 32;
      const float s0 = key0 >= lo && key0 <= hi ? scale * ss[row * kTcLdS + lane] : -INFINITY;
      const float s1 = key1 >= lo && key1 <= hi ? scale * ss[row * kTcLdS + lane + 32] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(fmaxf(s0, s1)));
      const float correction = m[r] == -INFINITY ? 0.0f : expf(m[r] - m_new);
      const H p0 = narrow<H>(s0 == -INFINITY ? 0.0f : expf(s0 - m_new));
      const H p1 = narrow<H>(s1 == -INFINITY ? 0.0f : expf(s1 - m_new));
      ps[row * kTcLdP + lane] = p0;
      ps[row * kTcLdP + lane + 32] = p1;
      l[r] = l[r] * correction + warp_sum(widen(p0) + widen(p1));
      m[r] = m_new;
      if (correction != 1.0f)
        for (int c = lane; c < dv; c += 32) os[row * L.ldo + c] *= correction;
    }
    __syncthreads();  // P and the scaled O complete

    // 4. O += P V over the 16-key steps that hold keys (the rest of P is 0).
    {
      const int steps = (kv + 15) / 16;
      wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major> fp[kTileK / 16];
#pragma unroll
      for (int t = 0; t < kTileK / 16; ++t)
        if (t < steps) wmma::load_matrix_sync(fp[t], ps + o_row * kTcLdP + 16 * t, kTcLdP);
      for (int n = warp >> 2; n < nvb; n += 2) {
        float* const o = os + o_row * L.ldo + 16 * n;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::load_matrix_sync(acc, o, L.ldo, wmma::mem_row_major);
#pragma unroll
        for (int t = 0; t < kTileK / 16; ++t) {
          if (t < steps) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::row_major> fv;
            wmma::load_matrix_sync(fv, vts + 16 * t * L.ldv + 16 * n, L.ldv);
            wmma::mma_sync(acc, fp[t], fv, acc);
          }
        }
        wmma::store_matrix_sync(o, acc, L.ldo, wmma::mem_row_major);
      }
    }
    __syncthreads();  // O complete; K, V, S and P are overwritten by the next tile
  }

  // The sink and the normalisation, as the tiled kernel computes them.
  const float sink = a.sinks ? load_float(a.sinks_t, a.sinks, h) : -INFINITY;
#pragma unroll
  for (int r = 0; r < kTcRows; ++r) {
    const int row = warp * kTcRows + r;
    if (row >= nq) continue;
    const float out_scale = row_scale(a, sink, m[r], l[r]);
    const int64_t out_row = ((q0 + row) * a.heads + h) * a.dv;
    for (int c = lane; c < dv; c += 32)
      store_float(a.out_t, a.out, out_row + c, os[row * L.ldo + c] * out_scale);
  }
#endif
}

template <typename H>
void launch_tiled_tc(cudaStream_t s, const Attention& a, size_t max_shared) {
  const size_t shared = static_cast<size_t>(tc_layout(a.dk, a.dv).bytes);
  static std::atomic<uint64_t> raised{0};
  raise_shared_once(attention_tiled_tc_kernel<H>, raised, shared, max_shared,
                    "raising the shared memory of the tensor-core attention kernel");
  const int64_t tiles = (a.tokens + kTileQ - 1) / kTileQ;
  attention_tiled_tc_kernel<H><<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(a.heads)),
                                 kTiledThreads, shared, s>>>(a);
  check_launch("attention_tiled_tc");
}

}  // namespace

void paged_check(cudaStream_t s, const PagedKv& p, int64_t tokens) {
  if (tokens == 0) return;
  paged_check_kernel<<<grid_for(tokens), kThreads, 0, s>>>(p, tokens);
  check_launch("paged_check");
}

void paged_write(cudaStream_t s, moert_dtype from, const void* x, moert_dtype to, void* cache,
                 int64_t row, int64_t tokens, const PagedKv& p) {
  const int64_t n = tokens * row;
  if (n == 0) return;
  paged_write_kernel<<<grid_for(n), kThreads, 0, s>>>(from, x, to, cache, row, n, p);
  check_launch("paged_write");
}

int attention_splits(const Attention& a, int multiprocessors) {
  const int64_t rows = a.tokens * a.heads;
  if (rows == 0) return 1;
  // Enough blocks for two waves over the device, but no piece shorter than
  // 256 keys, and at most 64 pieces.
  const int64_t want = (2 * static_cast<int64_t>(multiprocessors) + rows - 1) / rows;
  const int64_t by_length = (a.len + 255) / 256;
  int64_t s = want < by_length ? want : by_length;
  if (s > 64) s = 64;
  return static_cast<int>(s < 1 ? 1 : s);
}

int64_t attention_scratch_floats(const Attention& a, int splits) {
  return a.tokens * a.heads * splits * (a.dv + 2);
}

void attention(cudaStream_t s, const Attention& a, int splits, float* scratch) {
  const int64_t rows = a.tokens * a.heads;
  if (rows == 0) return;
  const size_t shared = sizeof(float) * static_cast<size_t>(a.dk + kWarps * a.dv + 2 * kWarps);
  if (shared > 48 * 1024)
    check_cuda(
        cudaFuncSetAttribute(attention_split_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(shared)),
        "raising the shared memory of the attention kernel");
  attention_split_kernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(splits)),
                           32 * kWarps, shared, s>>>(a, splits, scratch);
  check_launch("attention_split");
  attention_merge_kernel<<<static_cast<unsigned>(rows), 128, 0, s>>>(a, splits, scratch);
  check_launch("attention_merge");
}

namespace {
// The shapes both tiled kernels take: grid dimensions in range, and a dk
// bound that keeps the kernels' int indices (row * stride) far from
// overflow (the shared memory check bounds it much lower in practice).
bool tiled_shape_ok(const Attention& a) {
  return a.tokens > 0 && a.heads > 0 && a.heads <= 65535 && a.kv_heads > 0 &&
         a.heads % a.kv_heads == 0 && a.dk > 0 && a.dk <= 16384 && a.dv > 0 &&
         a.dv <= kAttentionTiledMaxDv && (a.tokens + kTileQ - 1) / kTileQ <= 0x7fffffff;
}
}  // namespace

bool attention_tiled_fits(const Attention& a, size_t max_shared) {
  return tiled_shape_ok(a) && tiled_shared_bytes(a) <= max_shared;
}

void attention_tiled(cudaStream_t s, const Attention& a, size_t max_shared) {
  if (a.tokens == 0 || a.heads == 0) return;
  const size_t shared = tiled_shared_bytes(a);
  switch ((a.dv + 63) / 64) {
    case 1:
      launch_tiled<1>(s, a, shared, max_shared);
      break;
    case 2:
      launch_tiled<2>(s, a, shared, max_shared);
      break;
    case 3:
      launch_tiled<3>(s, a, shared, max_shared);
      break;
    default:
      launch_tiled<4>(s, a, shared, max_shared);
      break;
  }
}

bool attention_tiled_tc_fits(const Attention& a, size_t max_shared) {
  return (a.q_t == MOERT_DTYPE_BF16 || a.q_t == MOERT_DTYPE_F16) && tiled_shape_ok(a) &&
         static_cast<size_t>(tc_layout(a.dk, a.dv).bytes) <= max_shared;
}

void attention_tiled_tc(cudaStream_t s, const Attention& a, size_t max_shared) {
  if (a.tokens == 0 || a.heads == 0) return;
  if (a.q_t == MOERT_DTYPE_F16)
    launch_tiled_tc<__half>(s, a, max_shared);
  else
    launch_tiled_tc<__nv_bfloat16>(s, a, max_shared);
}

}  // namespace moert::cuda::launch
