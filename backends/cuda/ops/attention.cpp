// attention (GQA, KV cache, MLA head sizes, sliding window, sinks, paged
// caches), masked_softmax and cache_update.  q, k, v and scores are f32,
// bf16 or f16; caches of any float dtype (f8_e4m3 too) are written in
// place, rounded to their dtype, and read back so a token sees the same
// rounded keys now as in later calls.
#include <cmath>
#include <vector>

#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"
#include "options.h"

namespace moert::cuda {
namespace {

// The mask attributes; throws with the reason when one is out of range.
launch::Mask mask_of(const NodeDesc& n, double default_scale) {
  launch::Mask m;
  const double scale = n.attr_float("scale", default_scale);
  require(std::isfinite(scale), "attribute 'scale' must be finite");
  m.scale = static_cast<float>(scale);
  const int64_t causal = n.attr_int("causal", 1);
  require(causal == 0 || causal == 1, "attribute 'causal' must be 0 or 1");
  m.causal = causal == 1;
  m.window = n.attr_int("window", 0);
  require(m.window >= 0, "attribute 'window' must be >= 0");
  return m;
}

void check_capacity(int64_t past, int64_t tokens, int64_t capacity) {
  require(past >= 0, "the past token count P must be >= 0, got " + std::to_string(past));
  if (past + tokens > capacity)
    fail("context overflow: " + std::to_string(past) + " past + " + std::to_string(tokens) +
         " new tokens exceed the cache capacity " + std::to_string(capacity));
}

// value_dim > 0 (version 2): v and v_cache are absent and the values are
// the keys' first value_dim features (MLA's latent cache).
int64_t value_dim(const NodeDesc& node) { return node.attr_int("value_dim", 0); }

// Paged attention (version 3): inputs positions (6), sequences (7) and
// block_table (8) with attribute block_size.
bool paged(const NodeDesc& node) {
  return node.has_input(6) || node.has_input(7) || node.has_input(8);
}

// The paged inputs and block_size, or why they cannot run ("" when they can).
std::string check_paged(const NodeDesc& node) {
  const int64_t block_size = node.attr_int("block_size", 0);
  if (!paged(node))
    return block_size == 0 ? "" : "attribute 'block_size' is for paged attention only";
  if (!node.has_input(6) || !node.has_input(7) || !node.has_input(8))
    return "inputs 'positions', 'sequences' and 'block_table' must come together";
  if (!node.has_input(3)) return "paged attention needs the caches";
  for (size_t i = 6; i < 8; ++i) {
    const TensorDesc t = node.input(i);
    if (t.dtype() != MOERT_DTYPE_I32 || t.rank() != 1)
      return std::string("input '") + (i == 6 ? "positions" : "sequences") + "' must be i32 [T]";
  }
  const TensorDesc table = node.input(8);
  if (table.dtype() != MOERT_DTYPE_I32 || table.rank() != 2 || !table.all_static())
    return "input 'block_table' must be a static i32 [S, B]";
  const int64_t capacity = node.input(3).static_dim(0);
  if (block_size <= 0 || capacity % block_size != 0)
    return "attribute 'block_size' must be > 0 and divide the cache capacity";
  if (node.attr_int("causal", 1) != 1)
    return "paged attention is causal: attribute 'causal' must be 1";
  return "";
}

std::string check_attention(const NodeDesc& node) {
  const int64_t vd = value_dim(node);
  if (vd < 0) return "attribute 'value_dim' must be >= 0";
  const bool shared = vd > 0;
  if (node.num_inputs() < (shared ? 2u : 3u))
    return shared ? "attention needs inputs q and k" : "attention needs inputs q, k and v";
  if (shared && (node.has_input(2) || node.has_input(4)))
    return "inputs 'v' and 'v_cache' must be absent when value_dim > 0";
  for (size_t i = 0; i < (shared ? 2u : 3u); ++i) {
    if (!node.has_input(i)) return "attention input " + std::to_string(i) + " is missing";
    const TensorDesc t = node.input(i);
    if (!is_activation(t.dtype())) return "attention input of " + dtype_str(t.dtype());
    if (t.rank() != 3 || t.static_dim(1) <= 0 || t.static_dim(2) <= 0)
      return "attention inputs must be [T, heads, d] with static heads and d";
  }
  const int64_t nh = node.input(0).static_dim(1), nkv = node.input(1).static_dim(1);
  if (nh % nkv != 0) return "query heads not a multiple of KV heads";
  if (shared && vd > node.input(1).static_dim(2)) return "attribute 'value_dim' exceeds dk";
  if ((shared ? vd : node.input(2).static_dim(2)) > launch::kAttentionMaxDv)
    return "value head size above " + std::to_string(launch::kAttentionMaxDv);
  if (!shared && node.has_input(3) != node.has_input(4))
    return "k_cache and v_cache must come together";
  for (size_t i = 3; i < 5; ++i) {
    if (!node.has_input(i)) continue;
    const TensorDesc c = node.input(i);
    if (!is_float(c.dtype())) return "cache of " + dtype_str(c.dtype());
    if (c.rank() != 3 || !c.all_static()) return "caches must be static [C, nkv, d]";
  }
  if (node.has_input(5) && !is_float(node.input(5).dtype())) return "sinks must be float";
  if (node.output(0).dtype() != node.input(0).dtype()) return "output dtype differs from q's";
  try {
    mask_of(node, 1.0);
  } catch (const std::exception& e) {
    return e.what();
  }
  return check_paged(node);
}

class Attention final : public Kernel {
 public:
  // Paged, the node reserves one error slot: the first token whose entries
  // are invalid (paged_check).
  explicit Attention(PrepareContext& pc)
      : mask_(mask_of(pc.node(),
                      1.0 / std::sqrt(static_cast<double>(pc.node().input(0).static_dim(2))))),
        capacity_(pc.node().has_input(3) ? pc.node().input(3).static_dim(0) : -1),
        value_dim_(value_dim(pc.node())),
        block_size_(paged(pc.node()) ? pc.node().attr_int("block_size", 0) : 0),
        slot_(block_size_ > 0 ? pc.reserve_error_slots(1) : -1) {}

  // With caches, where the new rows go and how many keys there are depend
  // on P; read on the device (device_past) the launches do not.  Paged
  // calls do not use P: rows and key counts come from the positions and
  // the block table, read on the device.
  bool launches_depend_on_past(bool device_past) const override {
    return capacity_ >= 0 && block_size_ == 0 && !device_past;
  }
  void check_past(int64_t past) const override {
    if (capacity_ >= 0 && block_size_ == 0) check_capacity(past, last_tokens_, capacity_);
  }

  // The paged entry of token `position` that paged_check found invalid,
  // worded as the reference's checks word it.
  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const Tensor& table = ctx.in(8);
    const int64_t t = position;
    const auto s = static_cast<int64_t>(read_element(ctx, ctx.in(7), t));
    const auto p = static_cast<int64_t>(read_element(ctx, ctx.in(6), t));
    const int64_t seqs = table.dim(0), cols = table.dim(1), bs = block_size_;
    const int64_t blocks = ctx.in(3).dim(0) / bs;
    const std::string ts = std::to_string(t), at = "token " + ts + ": ";
    if (s < 0 || s >= seqs)
      return at + "sequences[" + ts + "] = " + std::to_string(s) +
             " is outside the block table's " + std::to_string(seqs) + " rows";
    if (p < 0) return at + "positions[" + ts + "] = " + std::to_string(p) + " < 0";
    if (p / bs >= cols)
      return at + "context overflow: position " + std::to_string(p) + " needs block column " +
             std::to_string(p / bs) + " of a block table with " + std::to_string(cols);
    std::vector<int32_t> row(static_cast<size_t>(p / bs + 1));
    ctx.read(row.data(), table.bytes() + s * cols * static_cast<int64_t>(sizeof(int32_t)),
             row.size() * sizeof(int32_t));
    for (size_t c = 0; c < row.size(); ++c)
      if (row[c] < 0 || row[c] >= blocks)
        return at + "block_table[" + std::to_string(s) + ", " + std::to_string(c) +
               "] = " + std::to_string(row[c]) + " is outside the cache's " +
               std::to_string(blocks) + " blocks";
    return at + "invalid paged attention entry";
  }

  void run(ExecContext& ctx) override {
    const Tensor& q = ctx.in(0);
    const Tensor& k = ctx.in(1);
    // With value_dim the values are the keys' first dv features: read from
    // k (or the k cache) with the keys' head stride dk; no v cache written.
    const bool shared = value_dim_ > 0;
    const Tensor& v = shared ? k : ctx.in(2);
    const int64_t tokens = q.dim(0), nkv = k.dim(1), dk = q.dim(2);
    const int64_t dv = shared ? value_dim_ : v.dim(2);
    require(k.dim(0) == tokens && v.dim(0) == tokens,
            "inputs 'q', 'k' and 'v' have different token counts");
    launch::Attention a;
    a.q_t = q.dtype;
    a.q = q.data;
    a.out_t = ctx.out(0).dtype;
    a.out = ctx.out(0).data;
    a.tokens = tokens;
    a.heads = q.dim(1);
    a.kv_heads = nkv;
    a.dk = dk;
    a.dv = dv;
    a.vh = shared ? dk : dv;
    a.mask = mask_;
    if (ctx.has(5)) {
      a.sinks_t = ctx.in(5).dtype;
      a.sinks = ctx.in(5).data;
    }
    if (block_size_ > 0) {
      run_paged(ctx, a, k, v);
      return;
    }
    if (ctx.has(3)) {
      const Tensor& kc = ctx.in(3);
      const Tensor& vc = shared ? kc : ctx.in(4);
      require(kc.dim(0) == vc.dim(0), "inputs 'k_cache' and 'v_cache' have different capacities");
      const int64_t past = ctx.symbols.past;
      check_capacity(past, tokens, kc.dim(0));
      last_tokens_ = tokens;
      // This call's rows into the caches, then attend over rows 0..P+T-1.
      if (ctx.device_past) {
        launch::cast_at_past(ctx.stream(), k.dtype, k.data, kc.dtype, kc.data, nkv * dk,
                             tokens * nkv * dk, ctx.device_past);
        if (!shared)
          launch::cast_at_past(ctx.stream(), v.dtype, v.data, vc.dtype, vc.data, nkv * dv,
                               tokens * nkv * dv, ctx.device_past);
        a.past_dev = ctx.device_past;
      } else {
        launch::cast(ctx.stream(), k.dtype, k.data, kc.dtype,
                     kc.bytes() + past * nkv * dk * kc.elem_size(), tokens * nkv * dk);
        if (!shared)
          launch::cast(ctx.stream(), v.dtype, v.data, vc.dtype,
                       vc.bytes() + past * nkv * dv * vc.elem_size(), tokens * nkv * dv);
      }
      a.k_t = kc.dtype;
      a.k = kc.data;
      a.v_t = vc.dtype;
      a.v = vc.data;
      a.len = past + tokens;
      a.past = past;
    } else {
      a.k_t = k.dtype;
      a.k = k.data;
      a.v_t = v.dtype;
      a.v = v.data;
      a.len = tokens;
      a.past = 0;
    }
    // Prefill: the tiled kernels read each key and value once per 64 queries
    // instead of once per query; bf16 / f16 queries take the tensor-core
    // form, f32 queries keep f32 products.  Few queries (decode) keep the
    // split path, which spreads a long cache over the device.
    constexpr int64_t kTiledMinTokens = 16;
    const size_t max_shared = ctx.device().caps().shared_memory_per_block;
    if (!baseline_kernels() && tokens >= kTiledMinTokens && !a.past_dev) {
      if (ctx.device().caps().bf16_tensor_cores && launch::attention_tiled_tc_fits(a, max_shared)) {
        launch::attention_tiled_tc(ctx.stream(), a, max_shared);
        return;
      }
      if (launch::attention_tiled_fits(a, max_shared)) {
        launch::attention_tiled(ctx.stream(), a, max_shared);
        return;
      }
    }
    // With P on the device the split count must not depend on it: plan for
    // a full cache (pieces past the keys a step has are empty).
    launch::Attention plan = a;
    if (a.past_dev) plan.len = capacity_;
    const int splits = launch::attention_splits(plan, ctx.device().caps().multiprocessors);
    DeviceBlock scratch = ctx.scratch(
        sizeof(float) * static_cast<uint64_t>(launch::attention_scratch_floats(a, splits)),
        "attention partial results");
    launch::attention(ctx.stream(), a, splits, scratch.as<float>());
  }

 private:
  // Paged: validate the positions, sequences and block table on the device
  // (nothing is read on the host: a captured graph replays these launches
  // with each call's values), write k and v into their rows, then the
  // split kernel over each token's sequence.  The writes precede the
  // attention on the stream, so tokens see rows written in the same call.
  void run_paged(ExecContext& ctx, launch::Attention& a, const Tensor& k, const Tensor& v) {
    const bool shared = value_dim_ > 0;
    const Tensor& kc = ctx.in(3);
    const Tensor& vc = shared ? kc : ctx.in(4);
    const Tensor& positions = ctx.in(6);
    const Tensor& sequences = ctx.in(7);
    const Tensor& table = ctx.in(8);
    require(kc.dim(0) == vc.dim(0), "inputs 'k_cache' and 'v_cache' have different capacities");
    require(positions.dim(0) == a.tokens && sequences.dim(0) == a.tokens,
            "inputs 'positions' " + shape_str(positions) + " and 'sequences' " +
                shape_str(sequences) + " must have the token count " + std::to_string(a.tokens));
    launch::PagedKv& p = a.paged;
    p.positions = static_cast<const int32_t*>(positions.data);
    p.sequences = static_cast<const int32_t*>(sequences.data);
    p.table = static_cast<const int32_t*>(table.data);
    p.seqs = table.dim(0);
    p.cols = table.dim(1);
    p.block_size = block_size_;
    p.blocks = kc.dim(0) / block_size_;
    p.error = ctx.error_slot(slot_);
    if (a.tokens == 0) return;
    launch::paged_check(ctx.stream(), p, a.tokens);
    launch::paged_write(ctx.stream(), k.dtype, k.data, kc.dtype, kc.data, a.kv_heads * a.dk,
                        a.tokens, p);
    if (!shared)
      launch::paged_write(ctx.stream(), v.dtype, v.data, vc.dtype, vc.data, a.kv_heads * a.dv,
                          a.tokens, p);
    a.k_t = kc.dtype;
    a.k = kc.data;
    a.v_t = vc.dtype;
    a.v = vc.data;
    a.past = 0;
    // The split count from the most keys a query may see (positions below
    // cols * block_size; at most `window`), never from this call's values.
    a.len = p.cols * p.block_size;
    if (mask_.window > 0 && mask_.window < a.len) a.len = mask_.window;
    const int splits = launch::attention_splits(a, ctx.device().caps().multiprocessors);
    DeviceBlock scratch = ctx.scratch(
        sizeof(float) * static_cast<uint64_t>(launch::attention_scratch_floats(a, splits)),
        "attention partial results");
    launch::attention(ctx.stream(), a, splits, scratch.as<float>());
  }

  launch::Mask mask_;
  int64_t capacity_;         // the caches' rows; -1 without caches
  int64_t value_dim_;        // > 0: values are the keys' first value_dim_ features
  int64_t block_size_;       // > 0: paged (version 3); 0 otherwise
  int slot_;                 // paged: the error slot of paged_check
  int64_t last_tokens_ = 0;  // T of the last run, for check_past
};

std::string check_masked_softmax(const NodeDesc& node) {
  const TensorDesc s = node.input(0);
  if (!is_activation(s.dtype())) return "masked_softmax of " + dtype_str(s.dtype());
  if (s.rank() != 3) return "scores must be [nh, T, L]";
  if (node.has_input(1) && !is_float(node.input(1).dtype())) return "sinks must be float";
  if (node.output(0).dtype() != s.dtype()) return "output dtype differs from the scores'";
  try {
    mask_of(node, 1.0);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

class MaskedSoftmax final : public Kernel {
 public:
  explicit MaskedSoftmax(const NodeDesc& n) : mask_(mask_of(n, 1.0)) {}
  void run(ExecContext& ctx) override {
    const Tensor& s = ctx.in(0);
    require(s.dim(2) >= s.dim(1),
            "input 'scores' " + shape_str(s) + " has fewer keys than queries");
    const bool sinks = ctx.has(1);
    launch::masked_softmax(ctx.stream(), s.dtype, s.data, sinks ? ctx.in(1).dtype : MOERT_DTYPE_F32,
                           sinks ? ctx.in(1).data : nullptr, ctx.out(0).data, s.dim(0), s.dim(1),
                           s.dim(2), mask_);
  }

 private:
  launch::Mask mask_;
};

class CacheUpdate final : public Kernel {
 public:
  // The output [P + T, ...] and the copy depend on P in any case.
  bool launches_depend_on_past(bool) const override { return true; }

  void run(ExecContext& ctx) override {
    const Tensor& cache = ctx.in(0);
    const Tensor& x = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t capacity = cache.dim(0), tokens = x.dim(0), past = ctx.symbols.past;
    const int64_t row = capacity > 0 ? cache.numel() / capacity : 0;
    check_capacity(past, tokens, capacity);
    require(x.numel() == tokens * row && y.numel() == (past + tokens) * row,
            "input 'x' " + shape_str(x) + " and output " + shape_str(y) +
                " do not fit P = " + std::to_string(past) + " and cache " + shape_str(cache));
    launch::cast(ctx.stream(), x.dtype, x.data, cache.dtype,
                 cache.bytes() + past * row * cache.elem_size(), tokens * row);
    ctx.copy(y.data, cache.data, y.nbytes());
  }
};

std::unique_ptr<Kernel> create_attention(PrepareContext& pc) {
  return std::make_unique<Attention>(pc);
}
std::unique_ptr<Kernel> create_masked_softmax(PrepareContext& pc) {
  return std::make_unique<MaskedSoftmax>(pc.node());
}
std::unique_ptr<Kernel> create_cache_update(PrepareContext&) {
  return std::make_unique<CacheUpdate>();
}

// Version 2: attribute value_dim.  Version 3: paged caches (positions,
// sequences, block_table, block_size).
const KernelRegistration attention_reg(
    KernelDef("attention", check_attention, create_attention).at_version(3));
const KernelRegistration masked_softmax_reg({"masked_softmax", check_masked_softmax,
                                             create_masked_softmax});
const KernelRegistration cache_update_reg({"cache_update", plugin::check_cache_update,
                                           create_cache_update});

}  // namespace
}  // namespace moert::cuda
