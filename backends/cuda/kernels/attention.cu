// Attention over a key/value sequence (a KV cache, or this call's k and v),
// flash-decoding style: the keys of each (query, head) are cut into
// `splits` pieces; a block of four warps runs each piece with an online
// softmax (one key per warp at a time: the warp's lanes share the dot
// product over dk and hold dv / 32 accumulators each), and a second kernel
// merges the pieces, adds the sink term and normalises.  Scores, softmax and
// accumulation are f32.
#include "common.cuh"

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

// scratch per (query, head, split): [max, sum, acc[dv]].
__global__ void attention_split_kernel(Attention a, int splits, float* scratch) {
  extern __shared__ float shared[];
  float* q = shared;                     // [dk], q row as f32
  float* merge = shared + a.dk;          // [kWarps][dv]
  float* stats = merge + kWarps * a.dv;  // [kWarps][2]
  const int64_t row = blockIdx.x;        // i * heads + h
  const int split = blockIdx.y;
  const int64_t i = row / a.heads, h = row % a.heads;
  const int64_t g = h / (a.heads / a.kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  for (int64_t c = threadIdx.x; c < a.dk; c += blockDim.x)
    q[c] = load_float(a.q_t, a.q, row * a.dk + c);
  __syncthreads();

  int64_t first, last;
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
    const int64_t krow = (j * a.kv_heads + g) * a.dk;
    float dot = 0.0f;
    for (int64_t c = lane; c < a.dk; c += 32) dot += q[c] * load_float(a.k_t, a.k, krow + c);
    const float score = a.mask.scale * warp_sum(dot);
    const float m_new = fmaxf(m, score);
    const float correction = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float p = expf(score - m_new);
    l = l * correction + p;
    const int64_t vrow = (j * a.kv_heads + g) * a.dv;
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

}  // namespace

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

}  // namespace moert::cuda::launch
