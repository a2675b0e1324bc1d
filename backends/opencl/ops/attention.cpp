// attention (fused, over the KV cache) and cache_update
// (kernels/attention.cl).  The context-overflow check happens on the host,
// before anything is written; new rows go into the caches first, and the
// attention then reads every key and value back from the caches, so a token
// sees the same rounded values now as in later calls.
//
// Paged attention (version 3: inputs positions, sequences, block_table)
// keeps those i32 inputs on the device: paged_check validates them into an
// error slot before the cache writes, which (like the attention kernels)
// do nothing while the slot holds an error, so a bad call writes nothing.
// The host formats the message afterwards from the offending token's
// entries, read back.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernel.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "attention.cl";
constexpr int kAccPerItem = 8;              // ATT_ACC of attention.cl
constexpr int64_t kCpuMaxHead = 576;        // ATT_MAX_D of attention.cl
constexpr int64_t kCpuMaxHeadsPerItem = 8;  // the most HPI of attention.cl

// The query heads of one KV head that an attention_cpu work-item serves
// (HPI), sharing every key and value read: the largest divisor of the
// group (nh / nkv) up to kCpuMaxHeadsPerItem that still leaves a decode
// step (one token) a work-item per compute unit.
int64_t heads_per_item(int64_t nh, int64_t nkv, uint32_t compute_units) {
  const int64_t group = nh / nkv;
  int64_t best = 1;
  for (int64_t n = 2; n <= std::min(group, kCpuMaxHeadsPerItem); ++n)
    if (group % n == 0 && nh / n >= static_cast<int64_t>(compute_units)) best = n;
  return best;
}

void check_capacity(int64_t past, int64_t tokens, int64_t capacity) {
  require(past >= 0, "the past token count P must be >= 0, got " + std::to_string(past));
  if (past + tokens > capacity)
    fail("context overflow: " + std::to_string(past) + " past + " + std::to_string(tokens) +
         " new tokens exceed the cache capacity " + std::to_string(capacity));
}

// Writes x's rows into cache rows P.. (converting), after the capacity check.
void write_rows(const ExecContext& ctx, const ClKernel& k, const Tensor& x, const Tensor& cache,
                int64_t past) {
  const uint64_t row = static_cast<uint64_t>(cache.dim(0) ? cache.numel() / cache.dim(0) : 0);
  const uint64_t n = static_cast<uint64_t>(x.numel());
  ctx.args(k)
      .tensor(x)
      .i32(x.dtype)
      .tensor(cache)
      .i32(cache.dtype)
      .u64(static_cast<uint64_t>(past) * row)
      .u64(n);
  ctx.launch(k, {n}, {ctx.device().elementwise_wg()});
}

// value_dim > 0 (version 2): v and v_cache are absent and the values are
// the keys' first value_dim features (MLA's latent cache).
int64_t value_dim(const NodeDesc& node) { return node.attr_int("value_dim", 0); }

// Paged (version 3): positions, sequences and block_table given.
bool paged(const NodeDesc& node) {
  return node.has_input(6) || node.has_input(7) || node.has_input(8);
}

// The paged inputs' contract as attention's schema states it; the kernels
// take positions, block ids and block_size as i32.
std::string check_paged(const NodeDesc& node) {
  if (!node.has_input(6) || !node.has_input(7) || !node.has_input(8))
    return "attention inputs 'positions', 'sequences' and 'block_table' must be given together";
  if (!node.has_input(3)) return "paged attention without the caches";
  for (size_t i = 6; i < 9; ++i)
    if (node.input(i).dtype() != MOERT_DTYPE_I32)
      return "paged attention input of " + dtype_str(node.input(i).dtype());
  const TensorDesc table = node.input(8);
  if (table.rank() != 2 || !table.all_static())
    return "attention input 'block_table' must be a static [S, B]";
  if (node.attr_int("causal", 1) != 1) return "paged attention must be causal";
  const int64_t bs = node.attr_int("block_size", 0), capacity = node.input(3).static_dim(0);
  if (bs <= 0 || capacity < 0 || capacity % bs != 0)
    return "attention attribute 'block_size' must be > 0 and divide the cache capacity";
  if (bs > std::numeric_limits<int32_t>::max())
    return "attention attribute 'block_size' above the i32 range";
  return "";
}

std::string check_attention(const NodeDesc& node, const Device& d) {
  if (paged(node))
    if (std::string why = check_paged(node); !why.empty()) return why;
  const bool shared = value_dim(node) > 0;
  if (value_dim(node) < 0) return "attention attribute 'value_dim' must be >= 0";
  if (shared && (node.has_input(2) || node.has_input(4)))
    return "attention inputs 'v' and 'v_cache' must be absent when value_dim > 0";
  for (size_t i = 0; i < (shared ? 2u : 3u); ++i) {
    if (!node.has_input(i)) return "attention without input " + std::to_string(i);
    const TensorDesc t = node.input(i);
    if (!is_activation(t.dtype())) return "attention input of " + dtype_str(t.dtype());
    if (t.rank() != 3 || t.static_dim(1) < 0 || t.static_dim(2) < 0)
      return "attention inputs must be [T, heads, head size] with static heads and sizes";
  }
  for (size_t i = 3; i < 6; ++i)
    if (node.has_input(i) && !is_float(node.input(i).dtype()))
      return "attention input of " + dtype_str(node.input(i).dtype());
  if (!shared && node.has_input(3) != node.has_input(4))
    return "attention with only one of the two caches";
  if (shared && value_dim(node) > node.input(1).static_dim(2))
    return "attention attribute 'value_dim' exceeds the key head size";
  const int64_t dv = shared ? value_dim(node) : node.input(2).static_dim(2);
  const int64_t most = kAccPerItem * static_cast<int64_t>(d.row_wg());
  if (d.style() == KernelStyle::cpu && dv <= kCpuMaxHead &&
      node.input(0).static_dim(2) <= kCpuMaxHead)
    return "";
  if (dv > most)
    return "attention value head size " + std::to_string(dv) + " above this device's limit " +
           std::to_string(most);
  const int64_t dk = node.input(0).static_dim(2);
  // qs (dk floats), probs and scratch (a float per work-item), rows (a ulong
  // per work-item).
  if (static_cast<uint64_t>(dk) * 4 + (2 * 4 + 8) * d.row_wg() + 1024 > d.caps().local_mem_bytes)
    return "attention key head size " + std::to_string(dk) + " exceeds the device's local memory";
  return "";
}

class Attention final : public Kernel {
 public:
  explicit Attention(PrepareContext& pc) {
    const NodeDesc& node = pc.node();
    shared_ = value_dim(node) > 0;
    paged_ = paged(node);
    if (paged_) {
      block_size_ = node.attr_int("block_size", 0);
      slot_ = pc.reserve_error_slots(1);
      check_ = pc.kernel(kFile, "paged_check");
      write_ = pc.kernel(kFile, "paged_cache_write");
    } else {
      write_ = pc.kernel(kFile, "cache_write");
    }
    const int64_t dk = node.input(0).static_dim(2);
    const int64_t dv = shared_ ? value_dim(node) : node.input(2).static_dim(2);
    cpu_ = pc.device().style() == KernelStyle::cpu && dk <= kCpuMaxHead && dv <= kCpuMaxHead;
    if (cpu_) {
      // K and V as read: the caches when given, else k and v.
      const moert_dtype kt = node.input(node.has_input(3) ? 3 : 1).dtype();
      const moert_dtype vt = shared_ ? kt : node.input(node.has_input(4) ? 4 : 2).dtype();
      hpi_ = heads_per_item(node.input(0).static_dim(1), node.input(1).static_dim(1),
                            pc.device().caps().compute_units);
      attend_ = pc.kernel(kFile, "attention_cpu",
                          "-DKT=" + std::to_string(static_cast<int>(kt)) +
                              " -DVT=" + std::to_string(static_cast<int>(vt)) +
                              " -DHPI=" + std::to_string(hpi_));
    } else {
      attend_ = pc.kernel(kFile, "attention");
    }
    scale_ = static_cast<float>(node.attr_float("scale", 1.0 / std::sqrt(static_cast<double>(dk))));
    causal_ = static_cast<int32_t>(node.attr_int("causal", 1));
    window_ = node.attr_int("window", 0);
  }

  void run(ExecContext& ctx) override {
    // With value_dim the values are the keys' first dv features: read from
    // k (or the k cache) with the keys' head stride dk.
    const Tensor &q = ctx.in(0), &k = ctx.in(1), &v = shared_ ? k : ctx.in(2), &out = ctx.out(0);
    const int64_t tokens = q.dim(0), nh = q.dim(1), dk = q.dim(2), nkv = k.dim(1);
    const int64_t dv = out.dim(2), vh = shared_ ? dk : dv;
    require(k.dim(0) == tokens && v.dim(0) == tokens,
            "inputs 'q', 'k' and 'v' have different token counts");
    const bool cached = ctx.has(3);
    int64_t past = 0;
    const Tensor *keys = &k, *values = &v;
    if (cached) {
      const Tensor &kc = ctx.in(3), &vc = shared_ ? kc : ctx.in(4);
      require(kc.dim(0) == vc.dim(0), "inputs 'k_cache' and 'v_cache' have different capacities");
      if (paged_) {
        write_paged(ctx, tokens);
      } else {
        past = ctx.symbols.past;
        check_capacity(past, tokens, kc.dim(0));
        write_rows(ctx, write_, k, kc, past);
        if (!shared_) write_rows(ctx, write_, v, vc, past);
      }
      keys = &kc;
      values = &vc;
    }
    const Tensor none;
    const Tensor& sinks = ctx.has(5) ? ctx.in(5) : none;
    // The paged inputs (placeholders when absent) and the error slot.
    const Tensor& positions = paged_ ? ctx.in(6) : none;
    const Tensor& sequences = paged_ ? ctx.in(7) : none;
    const Tensor& table = paged_ ? ctx.in(8) : none;
    const int32_t cols = paged_ ? static_cast<int32_t>(table.dim(1)) : 0;
    const cl_mem errors = paged_ ? ctx.errors : ctx.placeholder;
    if (cpu_) {
      ctx.args(attend_)
          .tensor(q)
          .i32(q.dtype)
          .tensor(*keys)
          .tensor(*values)
          .tensor(sinks)
          .i32(sinks.dtype)
          .i32(ctx.has(5) ? 1 : 0)
          .tensor(out)
          .i32(out.dtype)
          .i32(static_cast<int32_t>(nh))
          .i32(static_cast<int32_t>(nkv))
          .i32(static_cast<int32_t>(dk))
          .i32(static_cast<int32_t>(dv))
          .i32(static_cast<int32_t>(vh))
          .i64(past)
          .i64(past + tokens)
          .f32(scale_)
          .i32(causal_)
          .i64(window_)
          .tensor(positions)
          .tensor(sequences)
          .tensor(table)
          .i32(paged_ ? 1 : 0)
          .i32(cols)
          .i32(static_cast<int32_t>(block_size_))
          .mem(errors)
          .i32(slot_);
      ctx.launch(attend_, {static_cast<size_t>(nh / hpi_), static_cast<size_t>(tokens)}, {1, 1});
      return;
    }
    const size_t wg = ctx.device().row_wg();
    ctx.args(attend_)
        .tensor(q)
        .i32(q.dtype)
        .tensor(*keys)
        .i32(keys->dtype)
        .tensor(*values)
        .i32(values->dtype)
        .tensor(sinks)
        .i32(sinks.dtype)
        .i32(ctx.has(5) ? 1 : 0)
        .tensor(out)
        .i32(out.dtype)
        .i32(static_cast<int32_t>(nh))
        .i32(static_cast<int32_t>(nkv))
        .i32(static_cast<int32_t>(dk))
        .i32(static_cast<int32_t>(dv))
        .i32(static_cast<int32_t>(vh))
        .i64(past)
        .i64(past + tokens)
        .f32(scale_)
        .i32(causal_)
        .i64(window_)
        .tensor(positions)
        .tensor(sequences)
        .tensor(table)
        .i32(paged_ ? 1 : 0)
        .i32(cols)
        .i32(static_cast<int32_t>(block_size_))
        .mem(errors)
        .i32(slot_)
        .local(static_cast<size_t>(dk) * sizeof(float));
    ctx.launch(attend_, {static_cast<size_t>(tokens * nh) * wg}, {wg});
  }

  // The first bad token's entries, read back, in the reference's words.
  std::string describe_error(ExecContext& ctx, int, int64_t token) override {
    const Tensor &positions = ctx.in(6), &sequences = ctx.in(7), &table = ctx.in(8);
    const int64_t seqs = table.dim(0), cols = table.dim(1);
    const int64_t blocks = ctx.in(3).dim(0) / block_size_;
    const int64_t s = static_cast<int64_t>(read_element(ctx, sequences, token));
    const int64_t p = static_cast<int64_t>(read_element(ctx, positions, token));
    const std::string t = std::to_string(token), at = "token " + t + ": ";
    if (s < 0 || s >= seqs)
      return at + "sequences[" + t + "] = " + std::to_string(s) + " is outside the block table's " +
             std::to_string(seqs) + " rows";
    if (p < 0) return at + "positions[" + t + "] = " + std::to_string(p) + " < 0";
    if (p / block_size_ >= cols)
      return at + "context overflow: position " + std::to_string(p) + " needs block column " +
             std::to_string(p / block_size_) + " of a block table with " + std::to_string(cols);
    std::vector<int32_t> row(static_cast<size_t>(p / block_size_ + 1));
    ctx.read(table.mem, table.offset + static_cast<uint64_t>(s * cols) * sizeof(int32_t),
             row.data(), row.size() * sizeof(int32_t));
    for (size_t c = 0; c < row.size(); ++c)
      if (row[c] < 0 || row[c] >= blocks)
        return at + "block_table[" + std::to_string(s) + ", " + std::to_string(c) +
               "] = " + std::to_string(row[c]) + " is outside the cache's " +
               std::to_string(blocks) + " blocks";
    return at + "invalid paged attention entries";
  }

 private:
  // Validates the paged inputs into the error slot, then writes every
  // token's k (and v) into its cache row unless the slot holds an error.
  void write_paged(const ExecContext& ctx, int64_t tokens) const {
    const Tensor &k = ctx.in(1), &kc = ctx.in(3);
    const Tensor none;
    const Tensor &v = shared_ ? none : ctx.in(2), &vc = shared_ ? none : ctx.in(4);
    const Tensor &positions = ctx.in(6), &sequences = ctx.in(7), &table = ctx.in(8);
    require(positions.dim(0) == tokens && sequences.dim(0) == tokens,
            "inputs 'positions' and 'sequences' must have one entry per token");
    const int64_t krow = k.numel() / std::max<int64_t>(tokens, 1);
    const int64_t vrow = shared_ ? 0 : v.numel() / std::max<int64_t>(tokens, 1);
    const int32_t cols = static_cast<int32_t>(table.dim(1));
    const int32_t bs = static_cast<int32_t>(block_size_);
    const size_t wg = ctx.device().elementwise_wg();
    ctx.args(check_)
        .tensor(positions)
        .tensor(sequences)
        .tensor(table)
        .i64(tokens)
        .i32(static_cast<int32_t>(table.dim(0)))
        .i32(cols)
        .i32(bs)
        .i64(kc.dim(0) / block_size_)
        .mem(ctx.errors)
        .i32(slot_);
    ctx.launch(check_, {static_cast<size_t>(tokens)}, {wg});
    ctx.args(write_)
        .tensor(k)
        .i32(k.dtype)
        .tensor(kc)
        .i32(kc.dtype)
        .i32(static_cast<int32_t>(krow))
        .tensor(v)
        .i32(v.dtype)
        .tensor(vc)
        .i32(vc.dtype)
        .i32(static_cast<int32_t>(vrow))
        .tensor(positions)
        .tensor(sequences)
        .tensor(table)
        .i32(cols)
        .i32(bs)
        .i64(tokens)
        .mem(ctx.errors)
        .i32(slot_);
    const size_t row = static_cast<size_t>(std::max(krow, vrow));
    const size_t local0 = row >= wg ? wg : 1;
    ctx.launch(write_, {row, static_cast<size_t>(tokens)}, {local0, 1});
  }

  ClKernel write_, attend_, check_;
  bool cpu_ = false, shared_ = false;  // shared_: value_dim > 0
  bool paged_ = false;                 // version 3: positions, sequences, block_table
  int64_t block_size_ = 0;
  int slot_ = 0;     // the paged inputs' error slot
  int64_t hpi_ = 1;  // query heads per attention_cpu work-item
  float scale_ = 1.0f;
  int32_t causal_ = 1;
  int64_t window_ = 0;
};

std::unique_ptr<Kernel> create_attention(PrepareContext& pc) {
  return std::make_unique<Attention>(pc);
}

std::string check_cache_update(const NodeDesc& node, const Device&) {
  if (!is_float(node.input(0).dtype()) || !is_float(node.input(1).dtype()))
    return "cache_update of " + dtype_str(node.input(0).dtype()) + " and " +
           dtype_str(node.input(1).dtype());
  return "";
}

class CacheUpdate final : public Kernel {
 public:
  explicit CacheUpdate(PrepareContext& pc) : write_(pc.kernel(kFile, "cache_write")) {}
  void run(ExecContext& ctx) override {
    const Tensor &cache = ctx.in(0), &x = ctx.in(1), &y = ctx.out(0);
    const int64_t capacity = cache.dim(0), tokens = x.dim(0), past = ctx.symbols.past;
    check_capacity(past, tokens, capacity);
    const int64_t row = capacity > 0 ? cache.numel() / capacity : 0;
    require(y.dim(0) == past + tokens && x.numel() == tokens * row,
            "input 'x' " + shape_str(x) + " and output " + shape_str(y) +
                " do not fit P = " + std::to_string(past) + " and cache " + shape_str(cache));
    write_rows(ctx, write_, x, cache, past);
    ctx.copy(cache.mem, cache.offset, y.mem, y.offset, y.nbytes());
  }

 private:
  ClKernel write_;
};

std::unique_ptr<Kernel> create_cache_update(PrepareContext& pc) {
  return std::make_unique<CacheUpdate>(pc);
}

// Version 2: attribute value_dim; version 3: paged (inputs positions,
// sequences, block_table and attribute block_size).
const KernelRegistration attention_reg(
    KernelDef("attention", check_attention, create_attention).at_version(3));
const KernelRegistration cache_update_reg({"cache_update", check_cache_update,
                                           create_cache_update});

}  // namespace
}  // namespace moert::ocl
