// attention, masked_softmax and cache_update: GQA (nh = 6, nkv = 2), MQA and
// MHA, odd head sizes (24, 40), dk != dv (MLA), T = 1 and T = 37, prefill
// then several decode steps against a KV cache of every float dtype (f8_e4m3
// included) with every activation dtype, a cache filled to the last row,
// chunked prefill (P > 0), windows shorter than the sequence, sinks, a
// non-default scale, non-causal attention, and a decode long enough that
// the kernel splits the cache between threads.
//
// Tolerance: outputs are convex combinations of value rows (values N(0, 1)),
// so their scale is ~1 and an element that cancels to ~0 is judged against
// a floor of 0.02 instead of its own size; against that, f32 computation
// (dot products of up to 128 terms, sums over up to ~600 keys) is ~1e-6
// relative.  The caches hold the same rounded values on both sides (the
// reference reads back what it wrote), so only the output rounding differs.
#include <algorithm>
#include <string>
#include <vector>

#include "conformance.h"

namespace moert::conformance {
namespace {

constexpr double kFloor = 0.02;
const char* const kFloorWhy =
    "; outputs are averages of N(0,1) value rows, judged against a floor of 0.02 (the scale of "
    "an average over up to a few hundred keys) where they cancel";

struct AttnSpec {
  std::string name;
  DType act = DType::f32;  // q, k, v
  DType k_cache = DType::f32, v_cache = DType::f32;
  bool cached = true;
  int64_t nh = 6, nkv = 2, dk = 40, dv = 40;
  int64_t capacity = 64;
  std::vector<int64_t> steps{37, 1, 1, 3, 1};
  Attributes attrs;
  bool sinks = false;
  bool sinks_constant = true;
  DType sinks_dtype = DType::f32;
  double q_std = 1.0;
  // Version 2: values are the keys' first value_dim features (no v, no
  // v_cache; MLA's latent cache); 0: values given.
  int64_t value_dim = 0;
};

Case attention_case(const AttnSpec& s, std::mt19937& rng) {
  Case c;
  c.name = s.name;
  c.op = "attention";
  c.attrs = s.attrs;
  const bool shared = s.value_dim > 0;
  if (shared) c.attrs.set("value_dim", s.value_dim);
  c.slots.push_back(activation(s.act, Shape{Dim::tokens(), Dim(s.nh), Dim(s.dk)}));
  c.slots.push_back(activation(s.act, Shape{Dim::tokens(), Dim(s.nkv), Dim(s.dk)}));
  c.slots.push_back(shared ? absent()
                           : activation(s.act, Shape{Dim::tokens(), Dim(s.nkv), Dim(s.dv)}));
  if (s.cached) {
    c.slots.push_back(state(s.k_cache, {s.capacity, s.nkv, s.dk}));
    c.slots.push_back(shared ? absent() : state(s.v_cache, {s.capacity, s.nkv, s.dv}));
  } else if (s.sinks) {
    c.slots.push_back(absent());
    c.slots.push_back(absent());
  }
  Tensor sinks;
  if (s.sinks) {
    sinks = random(s.sinks_dtype, {s.nh}, rng, 2.0);
    if (s.sinks_constant)
      c.slots.push_back(constant(sinks));
    else
      c.slots.push_back(activation(s.sinks_dtype, Shape{Dim(s.nh)}));
  }
  for (int64_t tokens : s.steps) {
    Step step;
    step.tokens = tokens;
    step.inputs.push_back(random(s.act, {tokens, s.nh, s.dk}, rng, s.q_std));
    step.inputs.push_back(random(s.act, {tokens, s.nkv, s.dk}, rng));
    if (!shared) step.inputs.push_back(random(s.act, {tokens, s.nkv, s.dv}, rng));
    if (s.sinks && !s.sinks_constant) step.inputs.push_back(sinks);
    c.steps.push_back(std::move(step));
  }
  c.tolerance = tolerance_for(s.act);
  c.floor = kFloor;
  c.why = why_for(s.act) + kFloorWhy;
  return c;
}

// Version 3, paged: several sequences share one cache pool of `blocks`
// blocks of `block_size` rows.  Each step lists (sequence, tokens) pieces,
// run in that order in one call (prompt chunks and single decode tokens
// mixed, sequences interleaved); each sequence's blocks are a random
// scattering of the pool, and the block table's unused entries are -1, so a
// kernel that reads beyond what a token may see fails.
struct PagedSpec {
  std::string name;
  DType act = DType::f32, cache = DType::f32;
  int64_t nh = 6, nkv = 2, dk = 40, dv = 40, value_dim = 0;
  int64_t block_size = 16, blocks = 24, table_columns = 8;
  std::vector<std::vector<std::pair<int32_t, int64_t>>> steps;
  Attributes attrs;
  bool sinks = false;
};

Case paged_case(const PagedSpec& s, std::mt19937& rng) {
  Case c;
  c.name = s.name;
  c.op = "attention";
  c.attrs = s.attrs;
  c.attrs.set("block_size", s.block_size);
  const bool shared = s.value_dim > 0;
  if (shared) c.attrs.set("value_dim", s.value_dim);
  int32_t sequences = 0;
  for (const auto& step : s.steps)
    for (const auto& [seq, n] : step) sequences = std::max(sequences, seq + 1);
  const int64_t capacity = s.blocks * s.block_size;
  c.slots.push_back(activation(s.act, Shape{Dim::tokens(), Dim(s.nh), Dim(s.dk)}));
  c.slots.push_back(activation(s.act, Shape{Dim::tokens(), Dim(s.nkv), Dim(s.dk)}));
  c.slots.push_back(shared ? absent()
                           : activation(s.act, Shape{Dim::tokens(), Dim(s.nkv), Dim(s.dv)}));
  c.slots.push_back(state(s.cache, {capacity, s.nkv, s.dk}));
  c.slots.push_back(shared ? absent() : state(s.cache, {capacity, s.nkv, s.dv}));
  c.slots.push_back(s.sinks ? constant(random(DType::f32, {s.nh}, rng, 2.0)) : absent());
  c.slots.push_back(activation(DType::i32, Shape{Dim::tokens()}));
  c.slots.push_back(activation(DType::i32, Shape{Dim::tokens()}));
  c.slots.push_back(activation(DType::i32, Shape{Dim(sequences), Dim(s.table_columns)}));
  // The pool's blocks dealt out in a random order.
  std::vector<int32_t> pool(static_cast<size_t>(s.blocks));
  for (size_t i = 0; i < pool.size(); ++i) pool[i] = static_cast<int32_t>(i);
  std::shuffle(pool.begin(), pool.end(), rng);
  Tensor table = Tensor::empty(DType::i32, {sequences, s.table_columns});
  int32_t* bt = table.data_as<int32_t>();
  std::fill(bt, bt + sequences * s.table_columns, -1);
  std::vector<int64_t> position(static_cast<size_t>(sequences), 0);
  size_t dealt = 0;
  for (const auto& pieces : s.steps) {
    int64_t tokens = 0;
    for (const auto& piece : pieces) tokens += piece.second;
    Tensor pos = Tensor::empty(DType::i32, {tokens}), seq = Tensor::empty(DType::i32, {tokens});
    int64_t t = 0;
    for (const auto& [sq, n] : pieces)
      for (int64_t i = 0; i < n; ++i, ++t) {
        int64_t& p = position[static_cast<size_t>(sq)];
        int32_t& entry = bt[sq * s.table_columns + p / s.block_size];
        if (entry < 0) entry = pool.at(dealt++);
        pos.data_as<int32_t>()[t] = static_cast<int32_t>(p++);
        seq.data_as<int32_t>()[t] = sq;
      }
    Step step;
    step.tokens = tokens;
    step.inputs.push_back(random(s.act, {tokens, s.nh, s.dk}, rng));
    step.inputs.push_back(random(s.act, {tokens, s.nkv, s.dk}, rng));
    if (!shared) step.inputs.push_back(random(s.act, {tokens, s.nkv, s.dv}, rng));
    step.inputs.push_back(pos);
    step.inputs.push_back(seq);
    Tensor snapshot = Tensor::empty(DType::i32, {sequences, s.table_columns});
    std::copy(bt, bt + sequences * s.table_columns, snapshot.data_as<int32_t>());
    step.inputs.push_back(snapshot);
    c.steps.push_back(std::move(step));
  }
  c.tolerance = tolerance_for(s.act);
  c.floor = kFloor;
  c.why = why_for(s.act) + kFloorWhy;
  return c;
}

Attributes attrs_of(std::initializer_list<std::pair<const char*, AttrValue>> list) {
  Attributes a;
  for (const auto& [k, v] : list) a.set(k, v);
  return a;
}

std::vector<Case> attention_cases() {
  std::mt19937 rng(2024);
  std::vector<Case> out;
  auto add = [&](AttnSpec s) { out.push_back(attention_case(s, rng)); };

  // Every activation dtype with every cache dtype: GQA 6/2, head size 40,
  // prefill 37 then decode steps of 1, 1, 3 (the decode plan) and 1.
  for (DType act : {DType::f32, DType::bf16, DType::f16})
    for (DType cache : {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3}) {
      AttnSpec s;
      s.name = std::string(dtype_name(act)) + "_cache_" + std::string(dtype_name(cache));
      s.act = act;
      s.k_cache = s.v_cache = cache;
      add(s);
    }
  // Version 2: values read from the keys (value_dim), MLA's latent layout:
  // one KV head for 16 query heads, key [latent 64, rope 8], value the
  // latent; every cache dtype; decode long enough to split between threads;
  // no cache; GQA with two KV heads; a sliding window.
  for (DType cache : {DType::f32, DType::bf16, DType::f8_e4m3}) {
    AttnSpec s;
    s.name = "shared_kv_mla_cache_" + std::string(dtype_name(cache));
    s.k_cache = cache;
    s.nh = 16;
    s.nkv = 1;
    s.dk = 72;
    s.value_dim = 64;
    s.dv = 64;
    s.capacity = 700;
    s.steps = {37, 1, 1, 3, 1, 600, 1};
    add(s);
  }
  {
    AttnSpec s;
    s.name = "shared_kv_bf16_act_gqa";
    s.act = DType::bf16;
    s.k_cache = DType::bf16;
    s.value_dim = 24;
    s.dv = 24;
    add(s);
    s.name = "shared_kv_nocache";
    s.act = DType::f32;
    s.cached = false;
    s.steps = {29};
    add(s);
    s.name = "shared_kv_window_sinks";
    s.cached = true;
    s.sinks = true;
    s.steps = {37, 1, 2, 1};
    s.attrs = attrs_of({{"window", int64_t{9}}});
    add(s);
  }
  // Version 3, paged: sequences joining and leaving between calls, prompt
  // chunks mixed with decode tokens, interleaved pieces of one sequence's
  // neighbours, every cache dtype; MLA's latent layout; a window and sinks;
  // a long decode that the kernel splits between threads.
  const std::vector<std::vector<std::pair<int32_t, int64_t>>> mixed = {
      {{0, 37}, {1, 20}},       {{0, 1}, {1, 1}, {2, 50}},
      {{2, 1}, {0, 1}, {1, 1}}, {{1, 5}, {3, 1}, {0, 1}, {2, 1}},
      {{3, 30}, {1, 1}},        {{0, 1}, {1, 1}, {2, 1}, {3, 1}}};
  for (DType act : {DType::f32, DType::bf16})
    for (DType cache : {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3}) {
      PagedSpec s;
      s.name = "paged_" + std::string(dtype_name(act)) + "_cache_" + std::string(dtype_name(cache));
      s.act = act;
      s.cache = cache;
      s.steps = mixed;
      out.push_back(paged_case(s, rng));
    }
  {
    PagedSpec s;
    s.name = "paged_mla_latent_block64";
    s.nh = 16;
    s.nkv = 1;
    s.dk = 72;
    s.value_dim = s.dv = 64;
    s.cache = DType::bf16;
    s.block_size = 64;
    s.blocks = 24;
    s.table_columns = 12;
    s.steps = {{{0, 100}, {1, 3}}, {{1, 600}}, {{0, 1}, {1, 1}}, {{1, 1}, {0, 2}}};
    out.push_back(paged_case(s, rng));
    s.name = "paged_window9_sinks";
    s.nh = 4;
    s.nkv = 2;
    s.dk = s.dv = 32;
    s.value_dim = 0;
    s.block_size = 8;
    s.blocks = 40;
    s.table_columns = 16;
    s.sinks = true;
    s.attrs = attrs_of({{"window", int64_t{9}}});
    s.steps = mixed;
    out.push_back(paged_case(s, rng));
    s.name = "paged_one_sequence_decode_split";
    s.sinks = false;
    s.attrs = {};
    s.block_size = 32;
    s.blocks = 40;
    s.table_columns = 40;
    s.steps = {{{0, 700}}, {{0, 1}}, {{0, 1}}, {{0, 3}}};
    out.push_back(paged_case(s, rng));
  }
  {  // Keys and values cached in different dtypes.
    AttnSpec s;
    s.name = "bf16_kcache_f8_vcache_f16";
    s.act = DType::bf16;
    s.k_cache = DType::f8_e4m3;
    s.v_cache = DType::f16;
    add(s);
  }
  {  // No cache: one prefill; then steps whose P the op must ignore.
    AttnSpec s;
    s.name = "nocache_t37_d24";
    s.cached = false;
    s.dk = s.dv = 24;
    s.steps = {37};
    add(s);
    s.name = "nocache_steps_ignore_past";
    s.steps = {5, 37, 1};
    add(s);
    s.name = "nocache_bf16_t1";
    s.act = DType::bf16;
    s.steps = {1};
    add(s);
  }
  {  // Non-causal, with and without a cache.
    AttnSpec s;
    s.name = "noncausal_nocache";
    s.cached = false;
    s.steps = {20};
    s.attrs = attrs_of({{"causal", int64_t{0}}});
    add(s);
    s.name = "noncausal_cache";
    s.cached = true;
    s.steps = {20, 1, 2};
    add(s);
  }
  {  // The cache filled exactly to its last row.
    AttnSpec s;
    s.name = "cache_full_at_end";
    s.capacity = 45;
    s.steps = {40, 1, 4};
    s.k_cache = s.v_cache = DType::bf16;
    add(s);
  }
  {  // Chunked prefill: the second prefill attends to the first from the cache.
    AttnSpec s;
    s.name = "chunked_prefill";
    s.capacity = 90;
    s.steps = {30, 40, 1, 2};
    s.nh = 8;
    s.nkv = 2;
    s.dk = s.dv = 32;
    add(s);
  }
  {  // Sliding windows: shorter than the sequence (crossing 64-key blocks),
     // longer than it, and 1 (each query sees only itself).
    AttnSpec s;
    s.nh = 4;
    s.nkv = 2;
    s.dk = s.dv = 32;
    s.capacity = 80;
    s.steps = {70, 1, 1, 5};
    s.name = "window7";
    s.attrs = attrs_of({{"window", int64_t{7}}});
    add(s);
    s.name = "window100";
    s.attrs = attrs_of({{"window", int64_t{100}}});
    add(s);
    s.name = "window1";
    s.attrs = attrs_of({{"window", int64_t{1}}});
    add(s);
    s.name = "window5_noncausal_nocache";
    s.cached = false;
    s.steps = {20};
    s.attrs = attrs_of({{"window", int64_t{5}}, {"causal", int64_t{0}}});
    add(s);
  }
  {  // Sinks: MQA; bf16 sinks given per step; with a window (GPT-OSS).
    AttnSpec s;
    s.name = "sinks_mqa";
    s.nh = 4;
    s.nkv = 1;
    s.dk = s.dv = 64;
    s.k_cache = s.v_cache = DType::bf16;
    s.steps = {33, 1, 1};
    s.sinks = true;
    add(s);
    s.name = "sinks_bf16_activation";
    s.sinks_dtype = DType::bf16;
    s.sinks_constant = false;
    add(s);
    s.name = "sinks_window16";
    s.sinks_constant = true;
    s.sinks_dtype = DType::f32;
    s.nh = 8;
    s.nkv = 2;
    s.capacity = 64;
    s.steps = {50, 1, 1};
    s.attrs = attrs_of({{"window", int64_t{16}}});
    add(s);
    s.name = "sinks_nocache";
    s.cached = false;
    s.steps = {19};
    s.attrs = {};
    add(s);
  }
  {  // MLA-like head sizes: dk = 48, dv = 32; dk = 96, dv = 64; dv > 64.
    AttnSpec s;
    s.name = "mla_dk48_dv32";
    s.nh = s.nkv = 4;
    s.dk = 48;
    s.dv = 32;
    s.k_cache = s.v_cache = DType::bf16;
    s.steps = {20, 1, 1};
    add(s);
    s.name = "mla_dk48_dv32_nocache";
    s.cached = false;
    s.steps = {20};
    add(s);
    s.name = "mla_dk96_dv64_mha16";
    s.cached = true;
    s.nh = s.nkv = 16;
    s.dk = 96;
    s.dv = 64;
    s.k_cache = s.v_cache = DType::f32;
    s.steps = {30, 1};
    add(s);
    s.name = "dk80_dv144";
    s.nh = 4;
    s.nkv = 2;
    s.dk = 80;
    s.dv = 144;
    s.steps = {25, 1, 2};
    add(s);
  }
  {  // A non-default scale and peaked scores.
    AttnSpec s;
    s.name = "scale_0_3_peaked";
    s.attrs = attrs_of({{"scale", 0.3}});
    s.q_std = 3.0;
    add(s);
  }
  {  // The bench shape's heads (16 / 4, d = 64) and head size 128.
    AttnSpec s;
    s.name = "heads16_kv4_d64";
    s.nh = 16;
    s.nkv = 4;
    s.dk = s.dv = 64;
    s.capacity = 160;
    s.steps = {130, 1, 1};
    s.act = DType::bf16;
    s.k_cache = s.v_cache = DType::bf16;
    add(s);
    s.name = "heads8_kv2_d128";
    s.nh = 8;
    s.nkv = 2;
    s.dk = s.dv = 128;
    s.capacity = 80;
    s.steps = {70, 1};
    s.act = DType::f32;
    s.k_cache = s.v_cache = DType::f32;
    add(s);
  }
  {  // Many query heads per KV head (32 / 1): one decode token is 32 rows.
    AttnSpec s;
    s.name = "heads32_kv1";
    s.nh = 32;
    s.nkv = 1;
    s.dk = s.dv = 32;
    s.capacity = 16;
    s.steps = {9, 1, 1};
    add(s);
  }
  {  // Single head, single token.
    AttnSpec s;
    s.name = "one_head_t1";
    s.nh = s.nkv = 1;
    s.dk = s.dv = 16;
    s.capacity = 4;
    s.steps = {1, 1};
    add(s);
  }
  {  // A decode over 600+ cached keys: split between threads.
    AttnSpec s;
    s.name = "long_decode_split";
    s.nh = 4;
    s.nkv = 1;
    s.dk = s.dv = 64;
    s.capacity = 700;
    s.steps = {600, 1, 1};
    add(s);
    // Two KV heads: with 4+ threads the decode splits both keys and heads.
    s.name = "long_decode_split_f8_sinks_window";
    s.nkv = 2;
    s.act = DType::bf16;
    s.k_cache = s.v_cache = DType::f8_e4m3;
    s.sinks = true;
    s.attrs = attrs_of({{"window", int64_t{550}}});
    add(s);
  }
  return out;
}

// masked_softmax: every dtype, sinks, windows, non-causal, T = 1 over a long
// row, and symbolic [nh, T, P+T] scores over steps.  Probabilities are at
// most 1; the default floor (1e-3 of the largest) covers the tiny ones.
std::vector<Case> masked_softmax_cases() {
  std::mt19937 rng(77);
  std::vector<Case> out;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    const std::string d(dtype_name(t));
    out.push_back(simple_case(d + "_causal", "masked_softmax", {random(t, {3, 5, 9}, rng, 2.0)}, {},
                              tolerance_for(t), why_for(t)));
    out.push_back(simple_case(d + "_window16_sinks", "masked_softmax",
                              {random(t, {4, 7, 70}, rng, 2.0), random(DType::f32, {4}, rng, 2.0)},
                              attrs_of({{"window", int64_t{16}}}), tolerance_for(t), why_for(t)));
  }
  out.push_back(simple_case(
      "f32_t1_long_noncausal", "masked_softmax", {random(DType::f32, {2, 1, 300}, rng, 3.0)},
      attrs_of({{"causal", int64_t{0}}}), tolerance_for(DType::f32), why_for(DType::f32)));
  out.push_back(simple_case("f32_window5_noncausal", "masked_softmax",
                            {random(DType::f32, {2, 6, 20}, rng)},
                            attrs_of({{"causal", int64_t{0}}, {"window", int64_t{5}}}),
                            tolerance_for(DType::f32), why_for(DType::f32)));
  out.push_back(
      simple_case("f32_scale_square", "masked_softmax", {random(DType::f32, {2, 33, 33}, rng, 8.0)},
                  attrs_of({{"scale", 0.125}}), tolerance_for(DType::f32), why_for(DType::f32)));
  out.push_back(simple_case(
      "bf16_sinks_f8", "masked_softmax",
      {random(DType::bf16, {3, 4, 10}, rng, 2.0), random(DType::f8_e4m3, {3}, rng, 2.0)}, {},
      tolerance_for(DType::bf16), why_for(DType::bf16)));
  {
    Case c;
    c.name = "symbolic_past_plus_tokens";
    c.op = "masked_softmax";
    c.slots = {activation(DType::f32, Shape{Dim(3), Dim::tokens(), Dim::past_plus_tokens()})};
    int64_t past = 0;
    for (int64_t tokens : {5, 1, 3}) {
      Step s;
      s.tokens = tokens;
      s.inputs.push_back(random(DType::f32, {3, tokens, past + tokens}, rng, 2.0));
      c.steps.push_back(std::move(s));
      past += tokens;
    }
    c.tolerance = tolerance_for(DType::f32);
    c.why = why_for(DType::f32);
    out.push_back(std::move(c));
  }
  return out;
}

// cache_update: a copy with one rounding to the cache dtype of values that
// f32 holds exactly, the same on both sides: bit-exact (tolerance 0).
Case cache_case(const std::string& name, DType x_dtype, DType cache_dtype,
                std::vector<int64_t> cache_shape, std::vector<int64_t> steps, std::mt19937& rng) {
  Case c;
  c.name = name;
  c.op = "cache_update";
  std::vector<Dim> xdims{Dim::tokens()};
  for (size_t i = 1; i < cache_shape.size(); ++i) xdims.push_back(Dim(cache_shape[i]));
  c.slots = {state(cache_dtype, cache_shape), activation(x_dtype, Shape(xdims))};
  for (int64_t tokens : steps) {
    Step s;
    s.tokens = tokens;
    std::vector<int64_t> shape = cache_shape;
    shape[0] = tokens;
    s.inputs.push_back(random(x_dtype, shape, rng));
    c.steps.push_back(std::move(s));
  }
  c.tolerance = 0;
  c.why = "a copy, rounded once to the cache dtype from a value f32 holds exactly: bit-exact";
  return c;
}

std::vector<Case> cache_update_cases() {
  std::mt19937 rng(5);
  std::vector<Case> out;
  out.push_back(
      cache_case("f32_fill_to_capacity", DType::f32, DType::f32, {20, 2, 24}, {7, 1, 12}, rng));
  out.push_back(
      cache_case("bf16_into_f8", DType::bf16, DType::f8_e4m3, {12, 3, 40}, {5, 1, 1}, rng));
  out.push_back(cache_case("f16_into_bf16", DType::f16, DType::bf16, {12, 2, 16}, {3, 2}, rng));
  out.push_back(cache_case("f32_into_f16", DType::f32, DType::f16, {12, 2, 16}, {1, 1, 1}, rng));
  out.push_back(cache_case("bf16_into_f32", DType::bf16, DType::f32, {9, 40}, {1, 1, 1, 6}, rng));
  out.push_back(cache_case("f32_long_rows", DType::f32, DType::f32, {1100, 4, 64}, {1000, 1}, rng));
  return out;
}

const CaseRegistration attention_registration("attention", attention_cases);
const CaseRegistration masked_softmax_registration("masked_softmax", masked_softmax_cases);
const CaseRegistration cache_update_registration("cache_update", cache_update_cases);

}  // namespace
}  // namespace moert::conformance
