// Attention and the KV cache.
//
// Masking rule shared by the ops below: a query at absolute position p may
// attend to key position kv iff (causal == 0 or kv <= p) and (window == 0 or
// kv > p - window); a query thus sees itself and at most window - 1 earlier
// keys.  With `sinks`, head h's softmax has an extra denominator term:
//   P[q, kv] = exp(s[q, kv]) / (sum over allowed kv' of exp(s[q, kv']) + exp(sinks[h]))
// (GPT-OSS), computed after subtracting the row maximum (sink included), so
// rows then sum to less than 1.  Disallowed entries are exactly 0.
//
// attention(q [T, nh, dk], k [T, nkv, dk], v [T, nkv, dv], k_cache optional
//     [C, nkv, dk], v_cache optional [C, nkv, dv], sinks optional [nh])
//     -> out [T, nh, dv], q's dtype.
//   s[h, i, kv] = scale * (q[i, h, :] . K[kv, g(h), :]), g(h) = h / (nh / nkv)
//   (GQA; nh % nkv == 0), out[i, h, :] = sum_kv P[h, i, kv] V[kv, g(h), :].
//   Without caches K = k, V = v and query i has position i.  With caches
//   (both or neither; they are state inputs written in place) and P =
//   symbols.past(): fails with "context overflow" (writing nothing) unless
//   P + T <= C, then writes k and v into cache rows P..P+T-1 (rounded to the
//   cache dtypes), and K, V are cache rows 0..P+T-1; query i has position P+i.
//   Attributes: scale (float, default 1/sqrt(dk)), causal (int 0/1, default
//   1), window (int >= 0, default 0 = unlimited), value_dim (int, since
//   version 2, default 0): when > 0 (and <= dk), v and v_cache are absent and
//   the values are the keys' first value_dim features, V[kv, g, :] =
//   K[kv, g, :value_dim] (from the k cache when there is one: MLA's latent
//   cache, whose one vector per position is both key and value), dv =
//   value_dim.  q, k, v are f32, bf16 or
//   f16; the caches any float dtype (f8_e4m3 too); sinks any float.  nh, nkv,
//   dk, dv and C must be static; T may be symbolic.  dk != dv is allowed
//   (MLA).  Computed in double; only the cache writes and the output are
//   rounded.
//
//   Paged (since version 3): optional inputs positions i32 [T], sequences
//   i32 [T] and block_table i32 [S, B] (static), given together with the
//   caches and attribute block_size (bs > 0, dividing C).  They carry many
//   sequences in one call: token t belongs to sequence s = sequences[t] at
//   its position p = positions[t], and position p of sequence s lives in
//   cache row block_table[s, p / bs] * bs + p % bs (the cache is a pool of
//   C / bs blocks that the sequences share).  Every token's k and v are first
//   written into its row; then token t attends to positions 0..p of its own
//   sequence (masked as above: causal, window), read from the cache.  The
//   caller keeps positions 0..p-1 of each sequence written (by this or
//   earlier calls) and gives distinct rows to the tokens of one call.  P is
//   not used.  Fails (writing nothing) when a sequence index is outside
//   [0, S), a position is negative or needs a block column >= B, or a
//   block id is outside [0, C / bs).  causal must be 1.
//
// masked_softmax(scores [nh, T, L], sinks optional [nh]) -> y [nh, T, L],
//   scores' dtype (f32, bf16 or f16).  Row i of head h is the query at
//   absolute position (L - T) + i (so L >= T); y = softmax over the allowed
//   keys j of scale * scores[h, i, j], with the sink term when given;
//   disallowed entries are 0.  Attributes scale (float, default 1), causal,
//   window as above.
//
// cache_update(cache [C, ...], x [T, ...]) -> y [P+T, ...], cache's dtype.
//   cache (a state input, written in place) and x are float tensors; x's
//   dim 0 must be the token symbol T and its other dims equal the cache's.
//   Fails with "context overflow" (writing nothing) unless P + T <= C, then
//   writes x into cache rows P..P+T-1 (rounded to the cache dtype) and
//   returns a copy of rows 0..P+T-1.
//
// attention decomposes into cache_update (with caches), transpose, repeat,
// matmul and masked_softmax.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

namespace {

struct MaskParams {
  double scale = 1.0;
  bool causal = true;
  int64_t window = 0;
};

std::string num(double v) { return attr_value_str(AttrValue(v)); }

template <typename Ctx>
MaskParams mask_params(const Ctx& ctx, double default_scale) {
  MaskParams m;
  m.scale = ctx.attrs().get_float("scale", default_scale);
  if (!std::isfinite(m.scale)) ctx.fail("attribute 'scale' must be finite, got " + num(m.scale));
  const int64_t causal = ctx.attrs().get_int("causal", 1);
  if (causal != 0 && causal != 1)
    ctx.fail("attribute 'causal' must be 0 or 1, got " + std::to_string(causal));
  m.causal = causal == 1;
  m.window = ctx.attrs().get_int("window", 0);
  if (m.window < 0)
    ctx.fail("attribute 'window' must be >= 0 (0 = unlimited), got " + std::to_string(m.window));
  return m;
}

bool allowed(const MaskParams& m, int64_t kv, int64_t p) {
  if (m.causal && kv > p) return false;
  if (m.window > 0 && kv <= p - m.window) return false;
  return true;
}

// Turns scaled scores (one query's row of `len` keys) into probabilities in
// place: disallowed keys get 0, the sink (if any) joins the denominator.
void masked_softmax_row(const MaskParams& m, int64_t p, double* row, int64_t len,
                        const double* sink) {
  double mx = sink ? *sink : -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < len; ++j)
    if (allowed(m, j, p)) mx = std::max(mx, row[j]);
  double denom = sink ? std::exp(*sink - mx) : 0.0;
  for (int64_t j = 0; j < len; ++j) {
    if (allowed(m, j, p)) {
      row[j] = std::exp(row[j] - mx);
      denom += row[j];
    } else {
      row[j] = 0.0;
    }
  }
  // A row with no allowed key and no sink has nothing to normalise; it stays 0.
  if (denom > 0.0)
    for (int64_t j = 0; j < len; ++j) row[j] /= denom;
}

template <typename Ctx>
void check_capacity(const Ctx& ctx, int64_t past, int64_t tokens, int64_t capacity) {
  if (past < 0) ctx.fail("the past token count P must be >= 0, got " + std::to_string(past));
  if (past + tokens > capacity)
    ctx.fail("context overflow: " + std::to_string(past) + " past + " + std::to_string(tokens) +
             " new tokens exceed the cache capacity " + std::to_string(capacity));
}

// Inference: an activation of rank 3 with static dims 1 and 2.
void require_heads(const InferContext& ctx, size_t i, const std::string& what) {
  require_activation(ctx, i, what);
  require_rank(ctx, i, 3, what);
  const Shape& s = ctx.in(i).shape;
  ctx.require(s[1].is_static() && s[2].is_static(),
              what + " must have static heads and head size, got " + s.str());
}

// The cache row of every token of a paged call (see the header), after
// checking the positions, sequences and block table: fails naming the
// first bad entry.
template <typename Ctx>
std::vector<int64_t> paged_rows(const Ctx& ctx, const TensorView& positions,
                                const TensorView& sequences, const TensorView& table,
                                int64_t block_size, int64_t capacity) {
  const int64_t tokens = positions.numel(), seqs = table.dim(0), cols = table.dim(1);
  const int32_t* pos = static_cast<const int32_t*>(positions.data);
  const int32_t* seq = static_cast<const int32_t*>(sequences.data);
  const int32_t* bt = static_cast<const int32_t*>(table.data);
  const int64_t blocks = capacity / block_size;
  std::vector<int64_t> rows(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t s = seq[t], p = pos[t];
    const std::string at = "token " + std::to_string(t) + ": ";
    if (s < 0 || s >= seqs)
      ctx.fail(at + "sequences[" + std::to_string(t) + "] = " + std::to_string(s) +
               " is outside the block table's " + std::to_string(seqs) + " rows");
    if (p < 0)
      ctx.fail(at + "positions[" + std::to_string(t) + "] = " + std::to_string(p) + " < 0");
    if (p / block_size >= cols)
      ctx.fail(at + "context overflow: position " + std::to_string(p) + " needs block column " +
               std::to_string(p / block_size) + " of a block table with " + std::to_string(cols));
    // Every block a token reads (0..p / bs) must be a block of the pool.
    for (int64_t c = 0; c <= p / block_size; ++c) {
      const int64_t b = bt[s * cols + c];
      if (b < 0 || b >= blocks)
        ctx.fail(at + "block_table[" + std::to_string(s) + ", " + std::to_string(c) +
                 "] = " + std::to_string(b) + " is outside the cache's " + std::to_string(blocks) +
                 " blocks");
    }
    rows[static_cast<size_t>(t)] = bt[s * cols + p / block_size] * block_size + p % block_size;
  }
  return rows;
}

// attention's reference with positions, sequences and block_table (paged).
template <typename Ctx>
void paged_reference(Ctx& ctx, const MaskParams& m, bool shared, int64_t dv) {
  const TensorView& q = ctx.in(0);
  const TensorView& k = ctx.in(1);
  const TensorView& kc = ctx.in(3);
  const TensorView& out = ctx.out(0);
  const int64_t tokens = q.dim(0), nh = q.dim(1), dk = q.dim(2), nkv = k.dim(1);
  const int64_t bs = ctx.attrs().get_int("block_size", 0);
  const TensorView& table = ctx.in(8);
  const int64_t cols = table.dim(1);
  const int32_t* bt = static_cast<const int32_t*>(table.data);
  const int32_t* pos = static_cast<const int32_t*>(ctx.in(6).data);
  const int32_t* seq = static_cast<const int32_t*>(ctx.in(7).data);
  if (!shared && kc.dim(0) != ctx.in(4).dim(0))
    ctx.fail("inputs 'k_cache' and 'v_cache' have capacities " + std::to_string(kc.dim(0)) +
             " and " + std::to_string(ctx.in(4).dim(0)));
  const std::vector<int64_t> rows = paged_rows(ctx, ctx.in(6), ctx.in(7), table, bs, kc.dim(0));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < nkv * dk; ++i)
      kc.set(rows[static_cast<size_t>(t)] * nkv * dk + i, k.get(t * nkv * dk + i));
  if (!shared) {
    const TensorView& vc = ctx.in(4);
    const TensorView& v = ctx.in(2);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < nkv * dv; ++i)
        vc.set(rows[static_cast<size_t>(t)] * nkv * dv + i, v.get(t * nkv * dv + i));
  }
  const TensorView& vc = shared ? kc : ctx.in(4);
  const int64_t vh = shared ? dk : dv;  // distance between value rows of adjacent heads
  std::vector<double> sinks;
  if (ctx.has(5)) sinks = load(ctx.in(5));
  const int64_t group = nh / nkv;
  std::vector<double> result(static_cast<size_t>(tokens * nh * dv));
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t s = seq[t], p = pos[t], len = p + 1;
    std::vector<int64_t> key_rows(static_cast<size_t>(len));
    for (int64_t j = 0; j < len; ++j)
      key_rows[static_cast<size_t>(j)] = bt[s * cols + j / bs] * bs + j % bs;
    std::vector<double> row(static_cast<size_t>(len));
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t g = h / group;
      for (int64_t j = 0; j < len; ++j) {
        if (!allowed(m, j, p)) continue;
        double dot = 0.0;
        for (int64_t c = 0; c < dk; ++c)
          dot += q.get((t * nh + h) * dk + c) *
                 kc.get((key_rows[static_cast<size_t>(j)] * nkv + g) * dk + c);
        row[static_cast<size_t>(j)] = m.scale * dot;
      }
      masked_softmax_row(m, p, row.data(), len,
                         sinks.empty() ? nullptr : &sinks[static_cast<size_t>(h)]);
      double* orow = &result[static_cast<size_t>((t * nh + h) * dv)];
      for (int64_t c = 0; c < dv; ++c) orow[c] = 0.0;
      for (int64_t j = 0; j < len; ++j) {
        const double w = row[static_cast<size_t>(j)];
        if (w == 0.0) continue;
        const int64_t base = (key_rows[static_cast<size_t>(j)] * nkv + g) * vh;
        for (int64_t c = 0; c < dv; ++c) orow[c] += w * vc.get(base + c);
      }
    }
  }
  store(out, result);
}

ValueId input_or_none(const Node& node, size_t i) {
  return i < node.inputs.size() ? node.inputs[i] : kNoValue;
}

void register_attention_op(OpRegistry& r) {
  OpDef d;
  d.name = "attention";
  d.summary = "scaled dot-product attention with GQA, KV cache, sliding window and sinks";
  d.inputs = {{"q"},
              {"k"},
              {"v", true},
              {"k_cache", true, true},
              {"v_cache", true, true},
              {"sinks", true},
              {"positions", true, false, 3},
              {"sequences", true, false, 3},
              {"block_table", true, false, 3}};
  d.outputs = {"out"};
  d.infer = [](const InferContext& ctx) {
    require_heads(ctx, 0, "input 'q' [T, nh, dk]");
    require_heads(ctx, 1, "input 'k' [T, nkv, dk]");
    const int64_t value_dim = ctx.attrs().get_int("value_dim", 0);
    const Shape& q = ctx.in(0).shape;
    const Shape& k = ctx.in(1).shape;
    if (value_dim != 0) {
      // Values from the keys: no v, no v_cache.
      ctx.require(value_dim > 0 && value_dim <= k[2].fixed,
                  "attribute 'value_dim' must be in [1, dk = " + std::to_string(k[2].fixed) +
                      "] (or 0: values given), got " + std::to_string(value_dim));
      ctx.require(!ctx.has(2) && !ctx.has(4),
                  "inputs 'v' and 'v_cache' must be absent with attribute 'value_dim' (the "
                  "values are the keys' first value_dim features)");
    } else {
      ctx.require(ctx.has(2), "input 'v' is required (unless attribute 'value_dim' is set)");
      require_heads(ctx, 2, "input 'v' [T, nkv, dv]");
    }
    const Shape v = value_dim != 0 ? Shape{k[0], k[1], Dim(value_dim)} : ctx.in(2).shape;
    const int64_t nh = q[1].fixed, dk = q[2].fixed;
    const int64_t nkv = k[1].fixed, dv = v[2].fixed;
    ctx.require(k[0] == q[0] && v[0] == q[0], "inputs 'q' " + q.str() + ", 'k' " + k.str() +
                                                  " and 'v' " + v.str() +
                                                  " must have the same token count (dim 0)");
    ctx.require(k[2] == q[2],
                "input 'k' " + k.str() + " must have the head size dk of input 'q' " + q.str());
    ctx.require(v[1] == k[1],
                "input 'v' " + v.str() + " must have the KV heads of input 'k' " + k.str());
    ctx.require(
        nh > 0 && nkv > 0 && dk > 0 && dv > 0,
        "heads and head sizes must be > 0, got q " + q.str() + ", k " + k.str() + ", v " + v.str());
    ctx.require(nh % nkv == 0, "the query heads (" + std::to_string(nh) +
                                   ") must be a multiple of the KV heads (" + std::to_string(nkv) +
                                   ")");
    ctx.require(value_dim != 0 || ctx.has(3) == ctx.has(4),
                "inputs 'k_cache' and 'v_cache' must be given both or neither, got only " +
                    std::string(ctx.has(3) ? "'k_cache'" : "'v_cache'"));
    if (ctx.has(3)) {
      const ValueInfo& kc = ctx.in(3);
      require_float(ctx, 3, "input 'k_cache'");
      ctx.require(kc.shape.is_static() && kc.shape.rank() == 3 && kc.shape[1] == k[1] &&
                      kc.shape[2] == k[2],
                  "input 'k_cache' must be a static [C, nkv, dk] = [C, " + std::to_string(nkv) +
                      ", " + std::to_string(dk) + "], got " + kc.shape.str());
    }
    if (ctx.has(4)) {
      const ValueInfo& kc = ctx.in(3);
      const ValueInfo& vc = ctx.in(4);
      require_float(ctx, 4, "input 'v_cache'");
      ctx.require(vc.shape.is_static() && vc.shape.rank() == 3 && vc.shape[1] == v[1] &&
                      vc.shape[2] == v[2],
                  "input 'v_cache' must be a static [C, nkv, dv] = [C, " + std::to_string(nkv) +
                      ", " + std::to_string(dv) + "], got " + vc.shape.str());
      ctx.require(kc.shape[0] == vc.shape[0], "inputs 'k_cache' " + kc.shape.str() +
                                                  " and 'v_cache' " + vc.shape.str() +
                                                  " must have the same capacity C (dim 0)");
    }
    if (ctx.has(5)) {
      require_float(ctx, 5, "input 'sinks'");
      const Shape& s = ctx.in(5).shape;
      ctx.require(s == Shape{Dim(nh)},
                  "input 'sinks' must be [nh] = [" + std::to_string(nh) + "], got " + s.str());
    }
    const MaskParams mp = mask_params(ctx, 1.0 / std::sqrt(static_cast<double>(dk)));
    const int64_t block_size = ctx.attrs().get_int("block_size", 0);
    const bool paged = ctx.has(6) || ctx.has(7) || ctx.has(8);
    if (paged) {
      ctx.require(ctx.has(6) && ctx.has(7) && ctx.has(8),
                  "inputs 'positions', 'sequences' and 'block_table' must be given together");
      ctx.require(ctx.has(3), "paged attention (input 'block_table') needs the caches");
      ctx.require(mp.causal,
                  "paged attention (input 'block_table') is causal: attribute "
                  "'causal' must be 1");
      for (size_t i : {size_t{6}, size_t{7}})
        ctx.require(ctx.in(i).dtype == DType::i32 && ctx.in(i).shape == Shape{q[0]},
                    std::string("input '") + (i == 6 ? "positions" : "sequences") +
                        "' must be i32 [T] = [" + q[0].str() + "], got " +
                        std::string(dtype_name(ctx.in(i).dtype)) + ctx.in(i).shape.str());
      const ValueInfo& bt = ctx.in(8);
      ctx.require(bt.dtype == DType::i32 && bt.shape.rank() == 2 && bt.shape.is_static(),
                  "input 'block_table' must be a static i32 [S, B], got " +
                      std::string(dtype_name(bt.dtype)) + bt.shape.str());
      const int64_t capacity = ctx.in(3).shape[0].fixed;
      ctx.require(block_size > 0 && capacity % block_size == 0,
                  "attribute 'block_size' must be > 0 and divide the cache capacity " +
                      std::to_string(capacity) + ", got " + std::to_string(block_size));
    } else {
      ctx.require(block_size == 0,
                  "attribute 'block_size' is for paged attention (inputs 'positions', "
                  "'sequences', 'block_table'), got " +
                      std::to_string(block_size) + " without them");
    }
    return std::vector<ValueInfo>{{ctx.in(0).dtype, Shape{q[0], q[1], v[2]}}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& q = ctx.in(0);
    const TensorView& k = ctx.in(1);
    const TensorView& out = ctx.out(0);
    const int64_t value_dim = ctx.attrs().get_int("value_dim", 0);
    const bool shared = value_dim > 0;  // values are the keys' first value_dim features
    const int64_t tokens = q.dim(0), nh = q.dim(1), dk = q.dim(2);
    const int64_t nkv = k.dim(1), dv = shared ? value_dim : ctx.in(2).dim(2);
    if (k.dim(0) != tokens || (!shared && ctx.in(2).dim(0) != tokens))
      ctx.fail("inputs 'q', 'k' and 'v' have different token counts");
    const MaskParams m = mask_params(ctx, 1.0 / std::sqrt(static_cast<double>(dk)));
    const bool cached = ctx.has(3);
    if (!shared && ctx.has(3) != ctx.has(4))
      ctx.fail("inputs 'k_cache' and 'v_cache' must be given both or neither");
    if (ctx.has(8)) return paged_reference(ctx, m, shared, dv);
    const int64_t past = cached ? ctx.symbols.past() : 0;
    const int64_t len = past + tokens;
    std::vector<double> keys, values;
    if (cached) {
      const TensorView& kc = ctx.in(3);
      if (!shared && kc.dim(0) != ctx.in(4).dim(0))
        ctx.fail("inputs 'k_cache' and 'v_cache' have capacities " + std::to_string(kc.dim(0)) +
                 " and " + std::to_string(ctx.in(4).dim(0)));
      check_capacity(ctx, past, tokens, kc.dim(0));
      for (int64_t i = 0; i < tokens * nkv * dk; ++i) kc.set(past * nkv * dk + i, k.get(i));
      // Keys and values are read back from the caches so that a token attends
      // to the same (rounded) values now as in later calls.
      keys.resize(static_cast<size_t>(len * nkv * dk));
      for (size_t i = 0; i < keys.size(); ++i) keys[i] = kc.get(static_cast<int64_t>(i));
      if (!shared) {
        const TensorView& vc = ctx.in(4);
        const TensorView& v = ctx.in(2);
        for (int64_t i = 0; i < tokens * nkv * dv; ++i) vc.set(past * nkv * dv + i, v.get(i));
        values.resize(static_cast<size_t>(len * nkv * dv));
        for (size_t i = 0; i < values.size(); ++i) values[i] = vc.get(static_cast<int64_t>(i));
      }
    } else {
      keys = load(k);
      if (!shared) values = load(ctx.in(2));
    }
    if (shared) {
      values.resize(static_cast<size_t>(len * nkv * dv));
      for (int64_t row = 0; row < len * nkv; ++row)
        for (int64_t c = 0; c < dv; ++c)
          values[static_cast<size_t>(row * dv + c)] = keys[static_cast<size_t>(row * dk + c)];
    }
    const std::vector<double> qs = load(q);
    std::vector<double> sinks;
    if (ctx.has(5)) sinks = load(ctx.in(5));
    const int64_t group = nh / nkv;
    std::vector<double> result(static_cast<size_t>(tokens * nh * dv));
    std::vector<double> row(static_cast<size_t>(len));
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t g = h / group;
      for (int64_t i = 0; i < tokens; ++i) {
        const int64_t p = past + i;
        const double* qrow = &qs[static_cast<size_t>((i * nh + h) * dk)];
        for (int64_t j = 0; j < len; ++j) {
          if (!allowed(m, j, p)) continue;  // masked_softmax_row zeroes it
          const double* krow = &keys[static_cast<size_t>((j * nkv + g) * dk)];
          double dot = 0.0;
          for (int64_t c = 0; c < dk; ++c) dot += qrow[c] * krow[c];
          row[static_cast<size_t>(j)] = m.scale * dot;
        }
        masked_softmax_row(m, p, row.data(), len,
                           sinks.empty() ? nullptr : &sinks[static_cast<size_t>(h)]);
        double* orow = &result[static_cast<size_t>((i * nh + h) * dv)];
        for (int64_t c = 0; c < dv; ++c) orow[c] = 0.0;
        for (int64_t j = 0; j < len; ++j) {
          const double w = row[static_cast<size_t>(j)];
          if (w == 0.0) continue;
          const double* vrow = &values[static_cast<size_t>((j * nkv + g) * dv)];
          for (int64_t c = 0; c < dv; ++c) orow[c] += w * vrow[c];
        }
      }
    }
    store(out, result);
  };
  d.decompose = [](Graph& g, const Node& node) {
    const std::string& name = node.name;
    // Paged attention has no decomposition: a backend without it falls back
    // to the reference kernel.
    if (input_or_none(node, 8) != kNoValue) return std::vector<ValueId>{};
    const ValueId q = node.inputs.at(0);
    const ValueId k_cache = input_or_none(node, 3);
    const ValueId v_cache = input_or_none(node, 4);
    const ValueId sinks = input_or_none(node, 5);
    // Copies, not references: adding nodes may move the graph's values.
    const DType q_dtype = g.value(q).dtype;
    const int64_t nh = g.value(q).shape[1].fixed;
    const int64_t dk = g.value(q).shape[2].fixed;
    const int64_t nkv = g.value(node.inputs.at(1)).shape[1].fixed;
    const int64_t value_dim = node.attrs.get_int("value_dim", 0);
    ValueId k_all = node.inputs.at(1);
    ValueId v_all = input_or_none(node, 2);
    if (k_cache != kNoValue) {
      k_all = g.add("cache_update", name + ".k_all", {k_cache, k_all});
      if (value_dim == 0) v_all = g.add("cache_update", name + ".v_all", {v_cache, v_all});
    }
    if (value_dim > 0)
      v_all = g.add("slice", name + ".v_all", {k_all},
                    {{"axis", int64_t{2}}, {"start", int64_t{0}}, {"length", value_dim}});
    const std::vector<int64_t> swap01{1, 0, 2};
    // [L, nkv, d] -> [nh, L, d]: heads first, each KV head repeated for its
    // group of query heads (repeat_interleave matches h / (nh / nkv)).  matmul
    // takes activation dtypes only, so an fp8 cache is widened (exactly) to
    // q's dtype first.
    auto heads_first = [&](ValueId x, const std::string& tag) {
      if (!is_activation_dtype(g.value(x).dtype))
        x = g.add("cast", name + "." + tag + "_wide", {x},
                  {{"dtype", std::string(dtype_name(q_dtype))}});
      ValueId t = g.add("transpose", name + "." + tag + "_heads", {x}, {{"perm", swap01}});
      if (nh != nkv)
        t = g.add("repeat", name + "." + tag + "_groups", {t},
                  {{"axis", int64_t{0}}, {"times", nh / nkv}});
      return t;
    };
    const ValueId qh = g.add("transpose", name + ".q_heads", {q}, {{"perm", swap01}});
    const ValueId kh = heads_first(k_all, "k");
    const ValueId vh = heads_first(v_all, "v");
    const ValueId scores =
        g.add("matmul", name + ".scores", {qh, kh}, {{"transpose_b", int64_t{1}}});
    Attributes sm;
    sm.set("scale", node.attrs.get_float("scale", 1.0 / std::sqrt(static_cast<double>(dk))));
    sm.set("causal", node.attrs.get_int("causal", 1));
    sm.set("window", node.attrs.get_int("window", 0));
    std::vector<ValueId> sm_inputs{scores};
    if (sinks != kNoValue) sm_inputs.push_back(sinks);
    const ValueId probs = g.add("masked_softmax", name + ".probs", sm_inputs, sm);
    const ValueId context = g.add("matmul", name + ".context", {probs, vh});
    return std::vector<ValueId>{g.add("transpose", name, {context}, {{"perm", swap01}})};
  };
  r.add(std::move(d));
}

void register_masked_softmax(OpRegistry& r) {
  OpDef d;
  d.name = "masked_softmax";
  d.summary = "causal / sliding-window softmax of attention scores, with optional sinks";
  d.inputs = {{"scores"}, {"sinks", true}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    require_activation(ctx, 0, "input 'scores'");
    require_rank(ctx, 0, 3, "input 'scores' [nh, T, L]");
    const Shape& s = ctx.in(0).shape;
    if (s[1].is_static() && s[2].is_static())
      ctx.require(s[2].fixed >= s[1].fixed,
                  "input 'scores' " + s.str() + " must have at least as many keys L as queries T");
    if (ctx.has(1)) {
      require_float(ctx, 1, "input 'sinks'");
      ctx.require(ctx.in(1).shape == Shape{s[0]}, "input 'sinks' must be [nh] = [" + s[0].str() +
                                                      "], got " + ctx.in(1).shape.str());
    }
    mask_params(ctx, 1.0);
    return std::vector<ValueInfo>{ctx.in(0)};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& scores = ctx.in(0);
    const int64_t nh = scores.dim(0), tokens = scores.dim(1), len = scores.dim(2);
    if (len < tokens)
      ctx.fail("input 'scores' [" + std::to_string(nh) + ", " + std::to_string(tokens) + ", " +
               std::to_string(len) + "] has fewer keys than queries");
    const MaskParams m = mask_params(ctx, 1.0);
    std::vector<double> y = load(scores);
    std::vector<double> sinks;
    if (ctx.has(1)) sinks = load(ctx.in(1));
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t i = 0; i < tokens; ++i) {
        double* row = &y[static_cast<size_t>((h * tokens + i) * len)];
        for (int64_t j = 0; j < len; ++j) row[j] *= m.scale;
        masked_softmax_row(m, len - tokens + i, row, len,
                           sinks.empty() ? nullptr : &sinks[static_cast<size_t>(h)]);
      }
    store(ctx.out(0), y);
  };
  r.add(std::move(d));
}

void register_cache_update(OpRegistry& r) {
  OpDef d;
  d.name = "cache_update";
  d.summary = "append this step's rows to a KV cache and return the filled part";
  d.inputs = {{"cache", false, true}, {"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& cache = ctx.in(0);
    const ValueInfo& x = ctx.in(1);
    require_float(ctx, 0, "input 'cache'");
    require_float(ctx, 1, "input 'x'");
    ctx.require(cache.shape.rank() >= 1 && cache.shape.is_static(),
                "input 'cache' must have a static shape [C, ...], got " + cache.shape.str());
    ctx.require(
        x.shape.rank() == cache.shape.rank(),
        "input 'x' " + x.shape.str() + " must have the rank of input 'cache' " + cache.shape.str());
    ctx.require(x.shape[0] == Dim::tokens(),
                "input 'x' must have the token count T as dim 0, got " + x.shape.str());
    std::vector<Dim> dims{Dim::past_plus_tokens()};
    for (size_t i = 1; i < cache.shape.rank(); ++i) {
      ctx.require(x.shape[i] == cache.shape[i], "input 'x' " + x.shape.str() +
                                                    " must match input 'cache' " +
                                                    cache.shape.str() + " past dim 0");
      dims.push_back(cache.shape[i]);
    }
    return std::vector<ValueInfo>{{cache.dtype, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& cache = ctx.in(0);
    const TensorView& x = ctx.in(1);
    const TensorView& y = ctx.out(0);
    const int64_t capacity = cache.dim(0);
    const int64_t tokens = x.dim(0);
    const int64_t past = ctx.symbols.past();
    const int64_t row = capacity > 0 ? cache.numel() / capacity : 0;
    check_capacity(ctx, past, tokens, capacity);
    if (y.dim(0) != past + tokens || x.numel() != tokens * row)
      ctx.fail("input 'x' " + dims_str(x.shape) + " and output " + dims_str(y.shape) +
               " do not fit P = " + std::to_string(past) + " and cache " + dims_str(cache.shape));
    for (int64_t i = 0; i < tokens * row; ++i) cache.set(past * row + i, x.get(i));
    for (int64_t i = 0; i < (past + tokens) * row; ++i) y.set(i, cache.get(i));
  };
  r.add(std::move(d));
}

}  // namespace

void register_attention(OpRegistry& r) {
  register_attention_op(r);
  register_masked_softmax(r);
  register_cache_update(r);
}

}  // namespace moert::ops
