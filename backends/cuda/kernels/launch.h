// The device kernels, as host functions that enqueue them on a stream.
// The .cu files of this directory implement them; the op files of ops/
// (plain C++) decide shapes, dtypes and which kernel to use.  Every launcher
// checks the launch (check_launch) and throws plugin::Failure on an error.
//
// All tensors are dense and row-major; element counts and indices are
// 64-bit.  Float inputs of any float dtype are widened to f32 on load and
// results rounded once to the output dtype on store (numeric.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "moert/backend_abi.h"
#include "numeric.h"

namespace moert::cuda::launch {

// ---- elementwise.cu ---------------------------------------------------------

// A strided copy of `rank` nested loops: element (i_0, ..., i_{r-1}) goes
// from x[sum i_d * x_stride[d]] to y[sum i_d * y_stride[d]] (in elements).
// Transpose, repeat (a stride-0 axis), slice and concat are all this.
struct CopyDims {
  int rank = 0;
  int64_t size[MOERT_MAX_RANK] = {};
  int64_t x_stride[MOERT_MAX_RANK] = {};
  int64_t y_stride[MOERT_MAX_RANK] = {};
};
void strided_copy(cudaStream_t s, size_t elem_size, const void* x, void* y, const CopyDims& d);

enum class Binary { add, mul };
// y[i] = a[i] op b[j(i)] for i < n, where j walks b with b_stride over a's
// shape (`shape`, `rank` dims; stride 0 where b is broadcast).  `same`:
// b has a's shape (j = i).
struct Broadcast {
  int rank = 0;
  bool same = true;
  int64_t shape[MOERT_MAX_RANK] = {};
  int64_t b_stride[MOERT_MAX_RANK] = {};
};
void binary(cudaStream_t s, Binary op, moert_dtype t, const void* a, const void* b, void* y,
            int64_t n, const Broadcast& bc);

enum class Unary { silu, sigmoid };
void unary(cudaStream_t s, Unary op, moert_dtype t, const void* x, void* y, int64_t n);

// The clamped gated activation of ops/swiglu_params.h in f32 (swiglu
// version 2, moe version 3): limit is +inf when there is no clamp, which
// leaves every value (NaN and infinities too) as it is.
struct SwigluAct {
  float alpha = 1.0f, limit = INFINITY, up_offset = 0.0f;
};
// min(g, l) sigmoid(alpha min(g, l)) (clamp(u, -l, l) + up_offset), the
// comparisons as std::min / std::clamp make them (a NaN passes through).
MOERT_HD float swiglu_act(float g, float u, const SwigluAct& a) {
  g = a.limit < g ? a.limit : g;
  u = u < -a.limit ? -a.limit : (a.limit < u ? a.limit : u);
#if defined(__CUDA_ARCH__)
  return g / (1.0f + expf(-a.alpha * g)) * (u + a.up_offset);
#else
  return g / (1.0f + std::exp(-a.alpha * g)) * (u + a.up_offset);
#endif
}

// y[r, i] = silu(gate[r, i]) * up[r, i] for rows x width elements; with
// `up` null, gate rows are [2 * width]: the gate half, then the up half.
// With `act`: swiglu_act(gate, up, *act) instead.
void swiglu(cudaStream_t s, moert_dtype t, const void* gate, const void* up, void* y, int64_t rows,
            int64_t width, const SwigluAct* act = nullptr);

// y[i] = x[i] converted as the cast op defines (any dtype to any dtype).
void cast(cudaStream_t s, moert_dtype from, const void* x, moert_dtype to, void* y, int64_t n);
// The same into rows *past, *past + 1, ... of `cache` (rows of `row`
// elements), with the past-token count read on the device: a KV-cache
// write a replayed CUDA graph does at every step's own position.
void cast_at_past(cudaStream_t s, moert_dtype from, const void* x, moert_dtype to, void* cache,
                  int64_t row, int64_t n, const int64_t* past);
// *dst = v, in stream order (the past-token count of a graph step).
void store_int64(cudaStream_t s, int64_t* dst, int64_t v);

// y[p, :] = table[ids[p], :] converted to out_t; an id outside [0, vocab)
// records its position p in *error.
void embedding(cudaStream_t s, moert_dtype table_t, const void* table, moert_dtype ids_t,
               const void* ids, moert_dtype out_t, void* y, int64_t count, int64_t vocab,
               int64_t hidden, unsigned long long* error);

// ---- rows.cu: one block per row -------------------------------------------

void rms_norm(cudaStream_t s, moert_dtype x_t, const void* x, moert_dtype w_t, const void* w,
              void* y, int64_t rows, int64_t dim, float eps);
void softmax(cudaStream_t s, moert_dtype t, const void* x, void* y, int64_t rows, int64_t n);
// y[r] = index of the largest element of row r (first NaN, else lowest on ties).
void argmax(cudaStream_t s, moert_dtype t, const void* x, int32_t* y, int64_t rows, int64_t n);

// Masking of attention: query at position p sees key kv iff
// (!causal || kv <= p) && (window == 0 || kv > p - window).
struct Mask {
  float scale = 1.0f;
  bool causal = true;
  int64_t window = 0;
};
// scores [heads, tokens, len]; row i is the query at position len - tokens + i.
void masked_softmax(cudaStream_t s, moert_dtype t, const void* scores, moert_dtype sinks_t,
                    const void* sinks, void* y, int64_t heads, int64_t tokens, int64_t len,
                    const Mask& m);

// x, y [tokens, heads, dim]; pair j of token t rotates by
// positions[t] * inv_freq[j] (double, `half` entries), times `scaling`.
void rope(cudaStream_t s, moert_dtype t, const void* x, moert_dtype pos_t, const void* pos, void* y,
          int64_t tokens, int64_t heads, int64_t dim, const double* inv_freq, int64_t half,
          bool interleaved, double scaling);

// ---- attention.cu -----------------------------------------------------------

// Paged attention (attention version 3): the tokens of one call belong to
// several sequences that share the cache as a pool of `blocks` blocks of
// `block_size` rows.  Token t is sequence sequences[t] at position
// positions[t]; position p of sequence s is cache row
// table[s * cols + p / block_size] * block_size + p % block_size.  All
// three arrays are device memory read when the kernels run, so a captured
// graph sees each call's values.  `error` is the node's error slot: the
// first token with an invalid entry is recorded there by paged_check, and
// then paged_write writes nothing and attention() attends to no key.
struct PagedKv {
  const int32_t* positions = nullptr;  // [tokens]
  const int32_t* sequences = nullptr;  // [tokens]
  const int32_t* table = nullptr;      // [seqs, cols]
  int64_t seqs = 0, cols = 0, block_size = 0, blocks = 0;
  unsigned long long* error = nullptr;
};
// Records in *p.error the first token t whose sequence is outside
// [0, seqs), whose position is negative or needs a block column >= cols,
// or one of whose table entries for columns 0 .. positions[t] / block_size
// (the blocks it reads) is outside [0, blocks).  No other column is read.
void paged_check(cudaStream_t s, const PagedKv& p, int64_t tokens);
// Unless paged_check recorded an error: row t of x [tokens, row] goes to
// cache row (of `row` elements) of token t, converted as cast does.
void paged_write(cudaStream_t s, moert_dtype from, const void* x, moert_dtype to, void* cache,
                 int64_t row, int64_t tokens, const PagedKv& p);

struct Attention {
  moert_dtype q_t = MOERT_DTYPE_F32, k_t = MOERT_DTYPE_F32, v_t = MOERT_DTYPE_F32;
  moert_dtype out_t = MOERT_DTYPE_F32, sinks_t = MOERT_DTYPE_F32;
  const void* q = nullptr;      // [tokens, heads, dk]
  const void* k = nullptr;      // [len, kv_heads, dk]: the keys to attend to
  const void* v = nullptr;      // [len, kv_heads, vh]: features :dv are the values
  const void* sinks = nullptr;  // [heads] or null
  void* out = nullptr;          // [tokens, heads, dv]
  int64_t tokens = 0, heads = 0, kv_heads = 0, dk = 0, dv = 0;
  // The values' head stride: dv, or dk when the values are the keys' first
  // dv features (attribute value_dim: then v is k); 0 means dv.
  int64_t vh = 0;
  int64_t len = 0, past = 0;  // query i is at position past + i
  // Set: past is *past_dev and len = past + tokens, read on the device, so
  // a replayed CUDA graph attends at each step's own position (split
  // kernel only; `splits` must then not depend on len).
  const int64_t* past_dev = nullptr;
  // Set (paged.table not null): paged attention, split kernel only.  k and
  // v are the caches; query i (sequence s, position p) attends to the keys
  // of positions 0 .. p of s (masked: window; causal always) found through
  // the block table; past and len are not used by the kernels (len only
  // plans the split count: the most keys a query may see).
  PagedKv paged;
  Mask mask;
};
// The largest dv the kernel holds in registers (dk is limited only by
// shared memory).
inline constexpr int64_t kAttentionMaxDv = 512;
// How many pieces each query's keys are split into (flash-decoding: few
// queries, long caches), and the f32 scratch the pieces need.
int attention_splits(const Attention& a, int multiprocessors);
int64_t attention_scratch_floats(const Attention& a, int splits);
void attention(cudaStream_t s, const Attention& a, int splits, float* scratch);

// Tiled (flash-attention style) prefill: one block per 64 queries of one
// head loops over 64-key tiles, so each key and value is read once per 64
// queries instead of once per query.  f32 products and softmax.
// `max_shared`: the device's opt-in shared memory per block
// (DeviceCaps::shared_memory_per_block).  fits: dv <= kAttentionTiledMaxDv
// and the tiles of this dk and dv fit in max_shared; otherwise use
// attention() above.
inline constexpr int64_t kAttentionTiledMaxDv = 256;
bool attention_tiled_fits(const Attention& a, size_t max_shared);
void attention_tiled(cudaStream_t s, const Attention& a, size_t max_shared);
// The same on the tensor cores, for bf16 / f16 q only: Q, K, V and the
// softmax weights P rounded to q's dtype (nearest even), S = Q K^T and
// O += P V accumulated in f32 (wmma, sm_80 and newer); softmax in f32.
// fits: q bf16 or f16, dv <= kAttentionTiledMaxDv (dk and dv padded to 16
// in shared memory) and the tiles fit in max_shared; otherwise use
// attention_tiled() or attention().
bool attention_tiled_tc_fits(const Attention& a, size_t max_shared);
void attention_tiled_tc(cudaStream_t s, const Attention& a, size_t max_shared);

// ---- gemv.cu: linear layers ----------------------------------------------

// A weight matrix (or a stack of E of them) as stored: f32, bf16, f16, or
// f8_e4m3 with its block scale [E, ceil(rows/b0), ceil(cols/b1)] (f32); or
// packed (quant, numeric.h): rows of packed_row_bytes(quant, cols) bytes
// (t is i8 or u8) with `qscale` [E, ceil(rows/b0), ceil(cols/b1)] of f16
// scales, of f16 (scale, zero) pairs (`zeros`, a trailing 2) or of e8m0
// bytes (mxfp4).
struct Weights {
  moert_dtype t = MOERT_DTYPE_F32;
  const void* w = nullptr;
  const float* scale = nullptr;  // f8_e4m3 only
  int64_t b0 = 128, b1 = 128;
  Quant quant = Quant::none;
  const void* qscale = nullptr;  // packed only
  bool zeros = false;            // int4 with (scale, zero) pairs
};
// The most rows of x a GEMV call takes (its products stay exact in f32).
inline constexpr int64_t kGemvMaxRows = 8;
// y[r, n] = sum_k x[r, k] W[n, k] (+ bias[n]) for r < rows <= kGemvMaxRows:
// every weight is read once, in its stored dtype.
void linear_gemv(cudaStream_t s, moert_dtype x_t, const void* x, int64_t rows, int64_t k,
                 const Weights& w, int64_t n, moert_dtype bias_t, const void* bias,
                 moert_dtype out_t, void* y);
// Rows [row0, row0 + rows) of the [total_rows, cols] weight, dequantised to
// `to` (f32, bf16 or f16) in dst [rows, cols]: fp8 blocks times their scale,
// packed values times their group's scale (exact in f32, then rounded once).
void dequantize_rows(cudaStream_t s, const Weights& w, int64_t row0, int64_t rows, int64_t cols,
                     int64_t total_rows, moert_dtype to, void* dst);
// y[r, n] = acc[r, n] (+ bias[n]), rounded to out_t.
void bias_store(cudaStream_t s, const float* acc, int64_t rows, int64_t n, moert_dtype bias_t,
                const void* bias, moert_dtype out_t, void* y);

// ---- moe.cu -----------------------------------------------------------------

struct Router {
  moert_dtype logits_t = MOERT_DTYPE_F32, bias_t = MOERT_DTYPE_F32;
  const void* logits = nullptr;  // [tokens, experts]
  const void* bias = nullptr;    // [experts] or null
  int32_t* ids = nullptr;        // [tokens, top_k]
  float* weights = nullptr;      // [tokens, top_k]
  int64_t tokens = 0, experts = 0, top_k = 1;
  int scoring = 0;  // 0 softmax, 1 sigmoid, 2 softmax_topk
  int method = 0;   // 0 greedy, 1 group_limited_greedy, 2 noaux_tc
  int64_t n_group = 1, topk_group = 1;
  bool normalize = false;
  double normalize_eps = 0.0, scaling_factor = 1.0;
  unsigned long long* bias_error = nullptr;    // position e of a non-finite bias
  unsigned long long* logits_error = nullptr;  // position t * E + e of a non-finite logit
};
inline constexpr int64_t kRouterMaxExperts = 2048;
void router(cudaStream_t s, const Router& r);

// dense [tokens, experts] f32 = sum of the routing weights per chosen expert.
void routing_dense(cudaStream_t s, moert_dtype ids_t, const void* ids, moert_dtype w_t,
                   const void* w, float* dense, int64_t tokens, int64_t top_k, int64_t experts,
                   unsigned long long* error);

// The grouping of a MoE call's (token, slot) pairs by expert, built on the
// device: sorted_slot[p] is the slot (t * top_k + j) at sorted position p,
// expert_start[e] .. expert_start[e + 1] the positions of expert e, and row
// tile i (kMoeTileRows positions of one expert) starts at tile_start[i] and
// belongs to expert tile_expert[i] (-1: unused tile).
inline constexpr int64_t kMoeTileRows = 64;
inline constexpr int64_t kMoeMaxExperts = 4096;
struct MoeRoute {
  int32_t* sorted_slot = nullptr;   // [slots]
  int32_t* expert_start = nullptr;  // [experts + 1]
  int32_t* tile_expert = nullptr;   // [max_tiles]
  int32_t* tile_start = nullptr;    // [max_tiles]
  int64_t max_tiles = 0;
};
// ceil(slots / kMoeTileRows) + experts: enough tiles for any routing.
inline int64_t moe_max_tiles(int64_t slots, int64_t experts) {
  return (slots + kMoeTileRows - 1) / kMoeTileRows + experts;
}
// An id outside [0, experts) records its slot in *error (and is left out).
void moe_route(cudaStream_t s, moert_dtype ids_t, const void* ids, int64_t slots, int64_t experts,
               const MoeRoute& r, unsigned long long* error);

// One expert projection over a set of rows.  Rows are "units": in the
// tiled form (route given) sorted positions p, else slots s (routed, with
// `ids`) or tokens (the shared expert: no ids, expert 0).
//   gate_up: h[unit, :] = silu(a W_gate^T) * (a W_up^T), a = x[slot / top_k];
//            with `general` (moe version 3): swiglu_act(a W_gate^T + gb_e,
//            a W_up^T + ub_e, act), the biases [E, n] optional
//   down:    y[slot, :] = h[unit] W_down^T (its bias is the combine's)
// With a route, h is indexed by sorted position and y by slot; without, both
// by unit.  h and y are f32.
struct ExpertProjection {
  bool gate_up = true;
  int64_t units = 0;  // slots or tokens
  int64_t top_k = 1;
  moert_dtype a_t = MOERT_DTYPE_F32;
  const void* a = nullptr;  // x [T, K] (gate_up) or h [units, K] f32 (down)
  Weights w1, w2;           // gate and up (gate_up), or down (w1)
  int64_t n = 0, k = 0;     // output width and reduction length
  float* out = nullptr;
  // Without a route: the expert of each slot (null: expert 0).
  moert_dtype ids_t = MOERT_DTYPE_I32;
  const void* ids = nullptr;
  int64_t experts = 1;
  unsigned long long* error = nullptr;  // an id out of range (gemv form)
  const MoeRoute* route = nullptr;      // the tiled form
  // gate_up, moe version 3: the clamped activation and the gate and up
  // biases (null: none).  `general` false: plain SwiGLU, no bias.
  bool general = false;
  SwigluAct act;
  moert_dtype gate_bias_t = MOERT_DTYPE_F32, up_bias_t = MOERT_DTYPE_F32;
  const void* gate_bias = nullptr;
  const void* up_bias = nullptr;
};
// Few units: one block per unit, each weight row read once per unit.
void expert_gemv(cudaStream_t s, const ExpertProjection& p);
// Many units: 64 x 64 output tiles of one expert each, f32 products.  Tiles
// of an expert with more than `max_rows` rows (identity form: units) are
// left out, for expert_gemm_tc; INT64_MAX computes every tile.
void expert_gemm(cudaStream_t s, const ExpertProjection& p, int64_t max_rows);

// ---- expert_gemm_tc.cu: tensor-core expert tiles (prefill) ------------------

// The same outputs as expert_gemm for the tiles of experts with more than
// `min_rows` rows (identity form: units), with A and the dequantised weights
// rounded to bf16 (nearest even) and f32 accumulation on the tensor cores
// (sm_80 and newer).  Launched with expert_gemm(max_rows = min_rows) over
// the same route, the two cover every tile exactly once.
void expert_gemm_tc(cudaStream_t s, const ExpertProjection& p, int64_t min_rows);

// out[t, :] = sum_j w[t, j] (y[t * top_k + j, :] + db_e) (+ g_t shared[t, :]),
// with g_t = sigmoid(x[t] . gate[0]) when `gate` is given, else 1; db_e row
// e = ids[t, j] of the down bias [E, H] when `down_bias` is given (an id
// outside [0, experts), already reported, takes none).
struct MoeCombine {
  int64_t tokens = 0, top_k = 0, hidden = 0;
  moert_dtype w_t = MOERT_DTYPE_F32;
  const void* w = nullptr;        // routing weights [T, top_k]
  const float* routed = nullptr;  // [T * top_k, H]
  const float* shared = nullptr;  // [T, H] or null
  moert_dtype x_t = MOERT_DTYPE_F32, gate_t = MOERT_DTYPE_F32;
  const void* x = nullptr;     // [T, H], for the gate
  const void* gate = nullptr;  // [1, H] or null
  moert_dtype out_t = MOERT_DTYPE_F32;
  void* out = nullptr;
  moert_dtype ids_t = MOERT_DTYPE_I32, down_bias_t = MOERT_DTYPE_F32;
  const void* ids = nullptr;        // [T, top_k], with down_bias
  const void* down_bias = nullptr;  // [E, H] or null
  int64_t experts = 0;
};
void moe_combine(cudaStream_t s, const MoeCombine& c);

}  // namespace moert::cuda::launch
