// attention (ops/attention.cpp): scaled dot-product attention with GQA, an
// optional KV cache (state inputs written in place), causal and sliding
// window masks, sinks and dk != dv.  f32 math with an online softmax
// (running max, running sum, rescaled output) over blocks of 64 keys.
//
// Work is cut into units of (KV heads, query tokens, key range); a unit's
// rows are its tokens times the nh / nkv query heads of each of its KV
// heads, which share every key and value read.  Two plans:
//   decode (up to 4 tokens, or few rows per KV head): units are pieces of
//   the key range, one per thread when the range is long enough, each over
//   every KV head so that it streams whole cache rows in order (converted
//   block by block when not f32), the pieces' partial (max, sum, output)
//   merged at the end; threads left over split the KV heads instead;
//   prefill: the needed keys are first converted once into transposed f32
//   blocks (and values into f32 rows unless already f32), then units of one
//   KV head and ~64 rows run register-blocked score and value tiles,
//   costliest first.
// Paged (version 3: positions, sequences, block_table): the call's tokens
// are cut into segments, runs of one sequence at consecutive positions, and
// each segment runs as above with its keys read through the sequence's
// block table (a key block never crosses a cache block).  Many single-token
// segments (a batch of decoding sequences) run as one parallel loop over the
// segments instead.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attention_common.h"
#include "attention_tiles.h"
#include "convert.h"
#include "kernel.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

using attn::kKeyBlock;
using attn::MaskParams;

// The decode plan serves calls of up to kDecodeTokens tokens, or of up to
// kDecodeRows rows (tokens x query heads per KV head).
constexpr int64_t kDecodeTokens = 4;
constexpr int64_t kDecodeRows = 16;
// The rows of a prefill unit, about.
constexpr int64_t kPrefillRows = 64;
// A decode is split between threads into pieces of at least this many keys.
constexpr int64_t kMinSplitKeys = 256;

std::string check(const NodeDesc& node) {
  // value_dim > 0 (version 2): no v and no v_cache; values are the keys'
  // first value_dim features.
  const int64_t value_dim = node.attr_int("value_dim", 0);
  if (value_dim < 0) return "attribute 'value_dim' must be >= 0, got " + std::to_string(value_dim);
  const bool shared = value_dim > 0;
  if (node.num_inputs() < (shared ? 2u : 3u))
    return shared ? "attention needs inputs q and k" : "attention needs inputs q, k and v";
  if (shared && (node.has_input(2) || node.has_input(4)))
    return "inputs 'v' and 'v_cache' must be absent when value_dim > 0";
  const char* names[] = {"q", "k", "v"};
  for (size_t i = 0; i < (shared ? 2u : 3u); ++i) {
    const TensorDesc t = node.input(i);
    if (!t.present()) return std::string("input '") + names[i] + "' is missing";
    if (!attn::is_activation(t.dtype()))
      return std::string("input '") + names[i] + "' of dtype " + plugin::dtype_name(t.dtype());
    if (t.rank() != 3 || t.static_dim(1) < 1 || t.static_dim(2) < 1)
      return std::string("input '") + names[i] + "' must be [T, heads, head size], static heads";
  }
  const int64_t nh = node.input(0).static_dim(1), nkv = node.input(1).static_dim(1);
  if (nh % nkv != 0) return "query heads not a multiple of KV heads";
  if (shared && value_dim > node.input(1).static_dim(2))
    return "attribute 'value_dim' exceeds the key size";
  if (node.has_input(8)) {
    if (!node.has_input(3) || !node.has_input(6) || !node.has_input(7))
      return "paged attention needs the caches, positions and sequences";
    for (size_t i = 6; i < 9; ++i)
      if (node.input(i).dtype() != MOERT_DTYPE_I32) return "positions, sequences, block_table: i32";
    if (node.attr_int("block_size", 0) <= 0) return "attribute 'block_size' must be > 0";
  }
  if (!shared && node.has_input(3) != node.has_input(4))
    return "k_cache and v_cache must come together";
  for (size_t i = 3; i < 5; ++i) {
    if (!node.has_input(i)) continue;
    const TensorDesc c = node.input(i);
    if (!plugin::dtype_is_float(c.dtype()))
      return std::string("cache of dtype ") + plugin::dtype_name(c.dtype());
    if (c.rank() != 3 || !c.all_static()) return "caches must be static [C, nkv, d]";
  }
  if (node.has_input(5) && !plugin::dtype_is_float(node.input(5).dtype()))
    return std::string("sinks of dtype ") + plugin::dtype_name(node.input(5).dtype());
  if (node.output(0).dtype() != node.input(0).dtype()) return "output dtype differs from q's";
  return attn::mask_problem(node);
}

// Where a unit's keys and values come from.
struct Plan {
  int64_t tokens = 0, base = 0, len = 0;  // query t sits at position base + t
  moert_dtype kdtype = MOERT_DTYPE_F32, vdtype = MOERT_DTYPE_F32;
  const void* kdata = nullptr;  // rows (n * nkv + g) * dk
  // Rows (n * nkv + g) * vh (vh = dv, or dk when the values are the keys'
  // first dv features: then vdata is kdata).
  const void* vdata = nullptr;
  // Prefill: transposed key blocks [g][block - first_block][c][64] and, when
  // set, value rows [g][n - first_block * 64][dv] in f32.
  bool transposed = false;
  const float* kt = nullptr;
  const float* vrows = nullptr;
  int64_t first_block = 0, blocks = 0;
  const float* sinks = nullptr;  // [nh] or null
  // Paged: logical key n is cache row pages[n / page] * page + n % page.
  const int32_t* pages = nullptr;
  int64_t page = 0;
  int64_t row(int64_t n) const { return pages ? pages[n / page] * page + n % page : n; }
  // How many of the keys from n on (at most limit) are contiguous in the
  // cache: up to the end of n's block when paged.
  int64_t contiguous(int64_t n, int64_t limit) const {
    return pages ? std::min(limit, page - n % page) : limit;
  }
};

class Attention final : public Kernel {
 public:
  explicit Attention(const NodeDesc& node) {
    nh_ = node.input(0).static_dim(1);
    dk_ = node.input(0).static_dim(2);
    nkv_ = node.input(1).static_dim(1);
    shared_ = node.attr_int("value_dim", 0) > 0;
    dv_ = shared_ ? node.attr_int("value_dim", 0) : node.input(2).static_dim(2);
    vh_ = shared_ ? dk_ : dv_;
    group_ = nh_ / nkv_;
    ldo_ = (dv_ + 15) / 16 * 16;
    cached_ = node.has_input(3);
    paged_ = node.has_input(8);
    block_size_ = node.attr_int("block_size", 0);
    mask_ = attn::mask_params(node, 1.0 / std::sqrt(static_cast<double>(dk_)));
  }

  void run(ExecContext& ctx) override {
    const Tensor& q = ctx.in(0);
    const Tensor& k = ctx.in(1);
    // With value_dim, the values are read from the keys (k, or the k cache).
    const Tensor& v = shared_ ? k : ctx.in(2);
    const int64_t tokens = q.dim(0);
    require(k.dim(0) == tokens && v.dim(0) == tokens,
            "inputs 'q', 'k' and 'v' have " + std::to_string(tokens) + ", " +
                std::to_string(k.dim(0)) + " and " + std::to_string(v.dim(0)) + " tokens");
    if (paged_) return run_paged(ctx, q, k, v);
    Plan plan;
    plan.tokens = tokens;
    plan.kdtype = k.dtype;
    plan.kdata = k.data;
    plan.vdtype = v.dtype;
    plan.vdata = v.data;
    plan.len = tokens;
    if (cached_) {
      const Tensor& kc = ctx.in(3);
      const Tensor& vc = shared_ ? kc : ctx.in(4);
      require(kc.dim(0) == vc.dim(0), "inputs 'k_cache' and 'v_cache' have capacities " +
                                          std::to_string(kc.dim(0)) + " and " +
                                          std::to_string(vc.dim(0)));
      const int64_t past = ctx.symbols.past;
      attn::check_capacity(past, tokens, kc.dim(0));
      write_rows(k, kc, past * nkv_ * dk_, tokens * nkv_ * dk_);
      if (!shared_) write_rows(v, vc, past * nkv_ * dv_, tokens * nkv_ * dv_);
      plan.base = past;
      plan.len = past + tokens;
      plan.kdtype = kc.dtype;
      plan.kdata = kc.data;
      plan.vdtype = vc.dtype;
      plan.vdata = vc.data;
    }
    const auto sinks = ctx.scratch(ctx.has(5) ? nh_ * sizeof(float) : 0, "the sinks as f32");
    if (ctx.has(5)) {
      float* s = kit::floats(sinks);
      vec::widen(ctx.in(5).dtype, ctx.in(5).data, 0, nh_, s);
      plan.sinks = s;
    }
    if (tokens == 0) return;
    if (tokens <= kDecodeTokens || tokens * group_ <= kDecodeRows)
      decode(ctx, q, ctx.out(0), plan);
    else
      prefill(ctx, q, ctx.out(0), plan);
  }

 private:
  // The rows of k (or v) into cache rows from element `offset` on, rounded
  // to the cache dtype; in parallel for a long prefill.
  static void write_rows(const Tensor& x, const Tensor& cache, int64_t offset, int64_t n) {
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
      vec::convert(x.dtype, x.data, b, cache.dtype, cache.data, offset + b, e - b);
    });
  }

  // Per-thread scratch, in floats, for units of up to `rows` rows.
  int64_t scratch_floats(int64_t rows) const {
    return rows * (dk_ + kKeyBlock + ldo_ + 2) + kKeyBlock * nkv_ * (dk_ + (shared_ ? 0 : dv_)) +
           64 * 7;
  }

  struct Scratch {
    float *q, *s, *o, *m, *l, *kb, *vb;
    int32_t* range;  // per token of the unit: the allowed columns of a key block
  };

  Scratch carve(int thread, int64_t rows) {
    float* p = scratch_base_ + thread * scratch_stride_;
    auto take = [&](int64_t n) {
      float* r = p;
      p += (n + 15) / 16 * 16;
      return r;
    };
    Scratch s;
    s.q = take(rows * dk_);
    s.s = take(rows * kKeyBlock);
    s.o = take(rows * ldo_);
    s.m = take(rows);
    s.l = take(rows);
    s.kb = take(kKeyBlock * nkv_ * dk_);
    // Shared values are read from the widened keys kb.
    s.vb = shared_ ? s.kb : take(kKeyBlock * nkv_ * dv_);
    s.range = ranges_.data() + static_cast<size_t>(thread) * static_cast<size_t>(2 * rows);
    return s;
  }

  using Block = kit::ScratchStack<void*>::Block;

  // The threads' scratch for units of up to `rows` rows (carve() hands it
  // out); the caller keeps the block while the units run.
  Block reserve_scratch(const ExecContext& ctx, int64_t rows) {
    scratch_stride_ = (scratch_floats(rows) + 15) / 16 * 16;
    Block block = ctx.scratch(
        static_cast<uint64_t>(num_threads() * scratch_stride_) * sizeof(float), "per-thread tiles");
    scratch_base_ = kit::floats(block);
    ranges_.resize(static_cast<size_t>(num_threads()) * static_cast<size_t>(2 * rows));
    return block;
  }

  // Runs fn(unit, thread) for every unit, handing units out in order to the
  // threads as they come free.
  template <typename F>
  static void for_units(int64_t units, F&& fn) {
    const int threads = static_cast<int>(std::min<int64_t>(num_threads(), units));
    if (threads <= 1) {
      for (int64_t u = 0; u < units; ++u) fn(u, 0);
      return;
    }
    std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
    {
      const int thread = omp_get_thread_num();
      for (int64_t u = next.fetch_add(1); u < units; u = next.fetch_add(1)) fn(u, thread);
    }
  }

  // One unit: KV heads [g0, g1), query tokens [t0, t1), keys [k0, k1).
  // Row r of the unit is head (g0 + r / per_group) * group_ + r % group_
  // of token t0 + (r % per_group) / group_, per_group = (t1 - t0) * group_.
  // Leaves the running max, sum and unnormalised output of its rows in `sc`.
  void process(const Plan& plan, const Tensor& q, int64_t g0, int64_t g1, int64_t t0, int64_t t1,
               int64_t k0, int64_t k1, const Scratch& sc) const {
    const attn::Tiles& tiles = attn::tiles();
    const int64_t per_group = (t1 - t0) * group_, heads = g1 - g0;
    const int64_t rows = heads * per_group;
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t t = t0; t < t1; ++t)
        vec::widen(q.dtype, q.data, (t * nh_ + g * group_) * dk_, group_ * dk_,
                   sc.q + ((g - g0) * per_group + (t - t0) * group_) * dk_);
    vec::scale(sc.q, rows * dk_, static_cast<float>(mask_.scale));
    for (int64_t r = 0; r < rows; ++r) {
      sc.m[r] = -std::numeric_limits<float>::infinity();
      sc.l[r] = 0.0f;
    }
    std::fill(sc.o, sc.o + rows * ldo_, 0.0f);

    const int64_t first = std::max(k0, mask_.lo(plan.base + t0));
    const int64_t end = std::min(k1, mask_.hi(plan.base + t1 - 1, plan.len));
    int64_t n0 = plan.transposed ? first / kKeyBlock * kKeyBlock : first;
    for (int64_t nk = 0; n0 < end; n0 += nk) {
      // Keys read in place stay within one cache block.
      nk = plan.transposed ? std::min(kKeyBlock, end - n0)
                           : plan.contiguous(n0, std::min(kKeyBlock, end - n0));
      // Keys and values of the block not read in place: rows n0 .. n0 + nk
      // - 1 of the unit's heads, widened to f32 (one span when the unit has
      // every KV head: whole cache rows, read in order).  Shared values
      // (value_dim) are the widened keys' first dv features: widened once.
      const bool k_rows = !plan.transposed && plan.kdtype != MOERT_DTYPE_F32;
      const bool v_rows = !plan.vrows && plan.vdtype != MOERT_DTYPE_F32;
      const int64_t vb_head = shared_ ? dk_ : dv_;
      // The columns of the block each token may see.
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t p = plan.base + t;
        const int64_t a = std::max({n0, k0, mask_.lo(p)}) - n0;
        const int64_t b = std::min({n0 + nk, k1, mask_.hi(p, plan.len)}) - n0;
        sc.range[2 * (t - t0)] = static_cast<int32_t>(std::clamp<int64_t>(a, 0, kKeyBlock));
        sc.range[2 * (t - t0) + 1] = static_cast<int32_t>(std::clamp<int64_t>(b, 0, kKeyBlock));
      }
      if (k_rows) widen_block(plan.kdtype, plan.kdata, plan.row(n0), nk, g0, g1, dk_, sc.kb);
      if (v_rows && !(shared_ && k_rows))
        widen_block(plan.vdtype, plan.vdata, plan.row(n0), nk, g0, g1, vb_head, sc.vb);
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t r0 = (g - g0) * per_group;
        float* q_g = sc.q + r0 * dk_;
        float* s_g = sc.s + r0 * kKeyBlock;
        float* o_g = sc.o + r0 * ldo_;
        // Scores of the head's rows against keys n0 .. n0 + nk - 1.
        if (plan.transposed) {
          const float* kt =
              plan.kt + ((g * plan.blocks) + (n0 / kKeyBlock - plan.first_block)) * dk_ * kKeyBlock;
          tiles.scores_transposed(q_g, dk_, per_group, kt, dk_, s_g);
        } else if (!k_rows) {
          const float* kr = static_cast<const float*>(plan.kdata) + (plan.row(n0) * nkv_ + g) * dk_;
          tiles.scores_rows(q_g, dk_, per_group, kr, nkv_ * dk_, nk, dk_, s_g);
        } else {
          tiles.scores_rows(q_g, dk_, per_group, sc.kb + (g - g0) * dk_, heads * dk_, nk, dk_, s_g);
        }
        // Online softmax: masked keys get probability 0; rows whose max
        // grows rescale what they have summed so far.
        tiles.online_softmax(s_g, per_group, group_, nk, sc.range, sc.m + r0, sc.l + r0, o_g, ldo_,
                             dv_);
        // Probability-weighted values.
        const float* vr;
        int64_t ldv;
        if (plan.vrows) {
          vr = plan.vrows +
               (g * plan.blocks * kKeyBlock + (n0 - plan.first_block * kKeyBlock)) * dv_;
          ldv = dv_;
        } else if (!v_rows) {
          vr = static_cast<const float*>(plan.vdata) + (plan.row(n0) * nkv_ + g) * vh_;
          ldv = nkv_ * vh_;
        } else {
          vr = sc.vb + (g - g0) * vb_head;
          ldv = heads * vb_head;
        }
        tiles.weighted_sum(s_g, per_group, vr, ldv, nk, dv_, o_g, ldo_);
      }
    }
  }

  // Rows n0 .. n0 + nk - 1, heads [g0, g1), of a [len, nkv, d] tensor into
  // dst [nk, g1 - g0, d] in f32.
  void widen_block(moert_dtype t, const void* src, int64_t n0, int64_t nk, int64_t g0, int64_t g1,
                   int64_t d, float* dst) const {
    if (g1 - g0 == nkv_) return vec::widen(t, src, n0 * nkv_ * d, nk * nkv_ * d, dst);
    for (int64_t j = 0; j < nk; ++j)
      vec::widen(t, src, ((n0 + j) * nkv_ + g0) * d, (g1 - g0) * d, dst + j * (g1 - g0) * d);
  }

  // Normalises one output row (running max m, sum l, unnormalised o of head
  // h), adds the sink's share and stores it as out[t, h, :].
  void finish_row(const Plan& plan, const Tensor& out, int64_t t, int64_t h, float m, float l,
                  float* o) const {
    double factor;
    if (plan.sinks) {
      const double sink = plan.sinks[h];
      const double mx = std::max<double>(m, sink);
      const double keep = std::exp(static_cast<double>(m) - mx);
      factor = keep / (static_cast<double>(l) * keep + std::exp(sink - mx));
    } else {
      factor = l > 0.0f ? 1.0 / static_cast<double>(l) : 0.0;
    }
    vec::scale(o, dv_, static_cast<float>(factor));
    vec::narrow(o, dv_, out.dtype, out.data, (t * nh_ + h) * dv_);
  }

  void finish_unit(const Plan& plan, const Tensor& out, int64_t g0, int64_t g1, int64_t t0,
                   int64_t t1, const Scratch& sc) const {
    int64_t r = 0;
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t j = 0; j < group_; ++j, ++r)
          finish_row(plan, out, t, g * group_ + j, sc.m[r], sc.l[r], sc.o + r * ldo_);
  }

  void decode(const ExecContext& ctx, const Tensor& q, const Tensor& out, Plan& plan) {
    const int64_t rows = plan.tokens * nh_;
    // The keys any query may see, split into pieces for the threads; each
    // piece covers every KV head, so it reads whole cache rows in order.
    const int64_t kmin = mask_.lo(plan.base);
    const int64_t kmax = mask_.hi(plan.base + plan.tokens - 1, plan.len);
    const int64_t span = std::max<int64_t>(kmax - kmin, 1);
    const int64_t threads = num_threads();
    const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(threads, span / kMinSplitKeys));
    // Threads left over share out the KV heads, when there is work enough.
    const int64_t parts =
        span * nkv_ >= 2 * kMinSplitKeys ? std::min<int64_t>(nkv_, threads / splits) : 1;
    const int64_t per_group = plan.tokens * group_;
    const Block tiles = reserve_scratch(ctx, rows);
    const int64_t stride = dv_ + 2;
    // Partial results per (piece, row): max, sum, then dv outputs.
    const Block partials =
        ctx.scratch(splits > 1 ? static_cast<uint64_t>(splits * rows * stride) * sizeof(float) : 0,
                    "partial sums of the key pieces");
    float* partial = splits > 1 ? kit::floats(partials) : nullptr;
    for_units(parts * splits, [&](int64_t u, int thread) {
      const int64_t part = u / splits, piece = u % splits;
      const int64_t g0 = nkv_ * part / parts, g1 = nkv_ * (part + 1) / parts;
      const int64_t k0 = kmin + span * piece / splits, k1 = kmin + span * (piece + 1) / splits;
      const Scratch sc = carve(thread, rows);
      process(plan, q, g0, g1, 0, plan.tokens, k0, k1, sc);
      if (splits == 1) return finish_unit(plan, out, g0, g1, 0, plan.tokens, sc);
      for (int64_t r = 0; r < (g1 - g0) * per_group; ++r) {
        float* dst = partial + (piece * rows + g0 * per_group + r) * stride;
        dst[0] = sc.m[r];
        dst[1] = sc.l[r];
        std::memcpy(dst + 2, sc.o + r * ldo_, static_cast<size_t>(dv_) * 4);
      }
    });
    if (splits == 1) return;
    // Merge the pieces of each row (rows ordered as in process()).
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
      const Scratch sc = carve(omp_get_thread_num(), rows);
      for (int64_t r = r0; r < r1; ++r) {
        float m = -INFINITY;
        for (int64_t piece = 0; piece < splits; ++piece)
          m = std::max(m, partial[(piece * rows + r) * stride]);
        float l = 0.0f;
        float* o = sc.o;
        std::fill(o, o + dv_, 0.0f);
        for (int64_t piece = 0; piece < splits; ++piece) {
          const float* src = partial + (piece * rows + r) * stride;
          if (src[0] == -INFINITY) continue;
          const float w = std::exp(src[0] - m);
          l += src[1] * w;
          for (int64_t c = 0; c < dv_; ++c) o[c] += src[2 + c] * w;
        }
        const int64_t g = r / per_group, t = (r % per_group) / group_;
        finish_row(plan, out, t, g * group_ + r % group_, m, l, o);
      }
    });
  }

  void prefill(const ExecContext& ctx, const Tensor& q, const Tensor& out, Plan& plan) {
    // Keys [kmin, kmax) are the ones any query may see, in whole blocks.
    const int64_t kmin = mask_.lo(plan.base);
    const int64_t kmax = mask_.hi(plan.base + plan.tokens - 1, plan.len);
    plan.first_block = kmin / kKeyBlock;
    plan.blocks = std::max<int64_t>((kmax + kKeyBlock - 1) / kKeyBlock - plan.first_block, 0);
    const int64_t nblocks = nkv_ * plan.blocks;
    const Block kt_block = ctx.scratch(
        static_cast<uint64_t>(nblocks * dk_ * kKeyBlock) * sizeof(float), "keys transposed as f32");
    float* kt = kit::floats(kt_block);
    // Paged values are gathered into rows too: blocks of 64 keys may span
    // cache blocks.
    const bool convert_v = plan.vdtype != MOERT_DTYPE_F32 || plan.pages;
    const Block v_block = ctx.scratch(
        convert_v ? static_cast<uint64_t>(nblocks * kKeyBlock * dv_) * sizeof(float) : 0,
        "values as f32");
    float* vrows = convert_v ? kit::floats(v_block) : nullptr;
    // Token blocks: ~kPrefillRows rows each, but enough units for the threads.
    const int64_t threads = num_threads();
    int64_t block_tokens = std::max<int64_t>(1, kPrefillRows / group_);
    const int64_t wanted = (4 * threads + nkv_ - 1) / nkv_;
    block_tokens = std::max<int64_t>(
        1, std::min(block_tokens, (plan.tokens + wanted - 1) / std::max<int64_t>(wanted, 1)));
    const int64_t rows = block_tokens * group_;
    const Block tiles = reserve_scratch(ctx, rows);

    // Convert the keys (transposed) and values of each block, in parallel.
    for_units(nblocks, [&](int64_t u, int thread) {
      const int64_t g = u / plan.blocks, blk = u % plan.blocks;
      const int64_t n0 = (plan.first_block + blk) * kKeyBlock;
      float* dst = kt + u * dk_ * kKeyBlock;
      float* row = carve(thread, rows).kb;
      for (int64_t j = 0; j < kKeyBlock; ++j) {
        const int64_t n = n0 + j;
        if (n < plan.len)
          vec::widen(plan.kdtype, plan.kdata, (plan.row(n) * nkv_ + g) * dk_, dk_, row);
        else
          std::fill(row, row + dk_, 0.0f);
        for (int64_t c = 0; c < dk_; ++c) dst[c * kKeyBlock + j] = row[c];
        if (convert_v) {
          float* vd = vrows + (u * kKeyBlock + j) * dv_;
          if (shared_)  // the values are the widened key's first dv features
            std::copy(row, row + dv_, vd);
          else if (n < plan.len)
            vec::widen(plan.vdtype, plan.vdata, (plan.row(n) * nkv_ + g) * vh_, dv_, vd);
          else
            std::fill(vd, vd + dv_, 0.0f);
        }
      }
    });
    plan.transposed = true;
    plan.kt = kt;
    plan.vrows = vrows;

    // Units, costliest first: with a causal mask the late token blocks see
    // the most keys.
    const int64_t tblocks = (plan.tokens + block_tokens - 1) / block_tokens;
    for_units(nkv_ * tblocks, [&](int64_t u, int thread) {
      const int64_t tb = mask_.causal ? tblocks - 1 - u / nkv_ : u / nkv_;
      const int64_t g = u % nkv_;
      const int64_t t0 = tb * block_tokens, t1 = std::min(plan.tokens, t0 + block_tokens);
      const Scratch sc = carve(thread, rows);
      process(plan, q, g, g + 1, t0, t1, 0, plan.len, sc);
      finish_unit(plan, out, g, g + 1, t0, t1, sc);
    });
  }

  // A run of one sequence's tokens at consecutive positions.
  struct Segment {
    int64_t t0, t1, base;
    const int32_t* pages;
  };

  // Version 3: the tokens' k and v into their cache rows, then attention per
  // segment through the block table (see the header).
  void run_paged(ExecContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v) {
    const Tensor& kc = ctx.in(3);
    const Tensor& vc = shared_ ? kc : ctx.in(4);
    const Tensor& table = ctx.in(8);
    const int64_t tokens = q.dim(0), seqs = table.dim(0), cols = table.dim(1);
    const int64_t bs = block_size_, blocks = kc.dim(0) / bs;
    require(shared_ || kc.dim(0) == vc.dim(0), "inputs 'k_cache' and 'v_cache' have capacities " +
                                                   std::to_string(kc.dim(0)) + " and " +
                                                   std::to_string(vc.dim(0)));
    const int32_t* pos = ctx.in(6).as<int32_t>();
    const int32_t* seq = ctx.in(7).as<int32_t>();
    const int32_t* bt = table.as<int32_t>();
    // Every entry is checked before anything is written.
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t s = seq[t], p = pos[t];
      const std::string at = "token " + std::to_string(t) + ": ";
      require(s >= 0 && s < seqs,
              at + "sequences[" + std::to_string(t) + "] = " + std::to_string(s) +
                  " is outside the block table's " + std::to_string(seqs) + " rows");
      require(p >= 0, at + "positions[" + std::to_string(t) + "] = " + std::to_string(p) + " < 0");
      require(p / bs < cols, at + "context overflow: position " + std::to_string(p) +
                                 " needs block column " + std::to_string(p / bs) +
                                 " of a block table with " + std::to_string(cols));
      for (int64_t c = 0; c <= p / bs; ++c) {
        const int64_t b = bt[s * cols + c];
        require(b >= 0 && b < blocks, at + "block_table[" + std::to_string(s) + ", " +
                                          std::to_string(c) + "] = " + std::to_string(b) +
                                          " is outside the cache's " + std::to_string(blocks) +
                                          " blocks");
      }
    }
    const int64_t krow = nkv_ * dk_, vrow = nkv_ * dv_;
    parallel_for(tokens, 64, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t p = pos[t];
        const int64_t r = bt[seq[t] * cols + p / bs] * bs + p % bs;
        vec::convert(k.dtype, k.data, t * krow, kc.dtype, kc.data, r * krow, krow);
        if (!shared_) vec::convert(v.dtype, v.data, t * vrow, vc.dtype, vc.data, r * vrow, vrow);
      }
    });
    const auto sinks = ctx.scratch(ctx.has(5) ? nh_ * sizeof(float) : 0, "the sinks as f32");
    const float* sink = nullptr;
    if (ctx.has(5)) {
      float* f = kit::floats(sinks);
      vec::widen(ctx.in(5).dtype, ctx.in(5).data, 0, nh_, f);
      sink = f;
    }
    std::vector<Segment> segments;
    for (int64_t t = 0; t < tokens;) {
      int64_t e = t + 1;
      while (e < tokens && seq[e] == seq[t] && pos[e] == pos[e - 1] + 1) ++e;
      segments.push_back({t, e, pos[t], bt + seq[t] * cols});
      t = e;
    }
    auto plan_of = [&](const Segment& sg) {
      Plan plan;
      plan.tokens = sg.t1 - sg.t0;
      plan.base = sg.base;
      plan.len = sg.base + plan.tokens;
      plan.kdtype = kc.dtype;
      plan.kdata = kc.data;
      plan.vdtype = vc.dtype;
      plan.vdata = vc.data;
      plan.sinks = sink;
      plan.pages = sg.pages;
      plan.page = bs;
      return plan;
    };
    // The segment's rows of q or the output.
    auto part = [](const Tensor& x, const Segment& sg) {
      Tensor view = x;
      const int64_t row = x.dim(0) > 0 ? x.numel() / x.dim(0) : 0;
      view.data = static_cast<char*>(x.data) +
                  static_cast<size_t>(sg.t0 * row) * static_cast<size_t>(x.elem_size());
      view.shape[0] = sg.t1 - sg.t0;
      return view;
    };
    const Tensor& out = ctx.out(0);
    // Single tokens of many sequences: one unit per segment, every KV head.
    const bool batch = segments.size() >= static_cast<size_t>(num_threads()) &&
                       std::all_of(segments.begin(), segments.end(),
                                   [](const Segment& sg) { return sg.t1 - sg.t0 == 1; });
    if (batch) {
      const Block tiles = reserve_scratch(ctx, nh_);
      for_units(static_cast<int64_t>(segments.size()), [&](int64_t u, int thread) {
        const Segment& sg = segments[static_cast<size_t>(u)];
        const Plan plan = plan_of(sg);
        const Tensor qs = part(q, sg), os = part(out, sg);
        const Scratch sc = carve(thread, nh_);
        process(plan, qs, 0, nkv_, 0, 1, mask_.lo(plan.base), mask_.hi(plan.base, plan.len), sc);
        finish_unit(plan, os, 0, nkv_, 0, 1, sc);
      });
      return;
    }
    for (const Segment& sg : segments) {
      Plan plan = plan_of(sg);
      const Tensor qs = part(q, sg), os = part(out, sg);
      if (plan.tokens <= kDecodeTokens || plan.tokens * group_ <= kDecodeRows)
        decode(ctx, qs, os, plan);
      else
        prefill(ctx, qs, os, plan);
    }
  }

  // vh_: the distance between the values of adjacent KV heads (dv_, or dk_
  // when shared_: the values are the keys' first dv_ features, value_dim).
  int64_t nh_ = 0, nkv_ = 0, dk_ = 0, dv_ = 0, vh_ = 0, group_ = 1, ldo_ = 16;
  bool cached_ = false, shared_ = false, paged_ = false;
  int64_t block_size_ = 0;
  MaskParams mask_;
  float* scratch_base_ = nullptr;  // reserve_scratch()'s block, while a run lasts
  std::vector<int32_t> ranges_;
  int64_t scratch_stride_ = 0;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<Attention>(node); }

// Version 2: attribute value_dim (values read from the keys, MLA's latent
// cache); version 3: paged caches shared by many sequences.
const KernelRegistration registration(KernelDef("attention", check, create).at_version(3));

}  // namespace
}  // namespace moert::cpu
