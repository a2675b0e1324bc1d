// attention, masked_softmax, cache_update: checked against a float64
// attention written here from the eager formulation (explicit key lists per
// query), through prefill-then-decode sequences, and against the op's
// decomposition run as a graph.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "moert/graph.h"
#include "support/graph_runner.h"
#include "support/op_runner.h"

namespace moert {
namespace {

using testing::clone;
using testing::max_abs_error;
using testing::max_rel_error;
using testing::random_tensor;
using testing::run_graph;
using testing::run_op;

// f32 outputs of a kernel that computes in double, like the reference: only
// the final f32 rounding differs (relative 6e-8).
constexpr double kF32Tol = 1e-5;

struct Mask {
  bool causal = true;
  int64_t window = 0;
};

// out[i, h, :] for queries at positions first_pos + i over keys/values
// [L, nkv, d] (rows of the whole sequence so far), written as the eager
// reference: gather the allowed keys, softmax with the optional sink column,
// weighted sum.
std::vector<double> reference_attention(const std::vector<double>& q, int64_t tokens, int64_t nh,
                                        int64_t dk, const std::vector<double>& keys,
                                        const std::vector<double>& values, int64_t len, int64_t nkv,
                                        int64_t dv, int64_t first_pos, double scale, Mask mask,
                                        const std::vector<double>* sinks) {
  std::vector<double> out(static_cast<size_t>(tokens * nh * dv), 0.0);
  for (int64_t i = 0; i < tokens; ++i) {
    const int64_t pos = first_pos + i;
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kvh = h * nkv / nh;
      std::vector<int64_t> keys_seen;
      std::vector<double> logits;
      for (int64_t j = 0; j < len; ++j) {
        if (mask.causal && j > pos) continue;
        if (mask.window > 0 && pos - j >= mask.window) continue;
        double dot = 0;
        for (int64_t c = 0; c < dk; ++c)
          dot += q[static_cast<size_t>((i * nh + h) * dk + c)] *
                 keys[static_cast<size_t>((j * nkv + kvh) * dk + c)];
        keys_seen.push_back(j);
        logits.push_back(dot * scale);
      }
      if (sinks) logits.push_back((*sinks)[static_cast<size_t>(h)]);
      double top = -INFINITY;
      for (double l : logits) top = std::max(top, l);
      double sum = 0;
      for (double l : logits) sum += std::exp(l - top);
      for (size_t n = 0; n < keys_seen.size(); ++n) {
        const double p = std::exp(logits[n] - top) / sum;
        for (int64_t c = 0; c < dv; ++c)
          out[static_cast<size_t>((i * nh + h) * dv + c)] +=
              p * values[static_cast<size_t>((keys_seen[n] * nkv + kvh) * dv + c)];
      }
    }
  }
  return out;
}

struct Case {
  int64_t tokens, nh, nkv, dk, dv;
  Mask mask;
  bool sinks = false;
  double scale = 0;  // 0: the default 1/sqrt(dk)
};

void check_no_cache(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor q = random_tensor(DType::f32, {c.tokens, c.nh, c.dk}, rng);
  Tensor k = random_tensor(DType::f32, {c.tokens, c.nkv, c.dk}, rng);
  Tensor v = random_tensor(DType::f32, {c.tokens, c.nkv, c.dv}, rng);
  Tensor sinks = c.sinks ? random_tensor(DType::f32, {c.nh}, rng) : Tensor();
  Attributes attrs{{"causal", int64_t{c.mask.causal}}, {"window", c.mask.window}};
  if (c.scale != 0) attrs.set("scale", c.scale);
  Tensor out = run_op("attention", {q, k, v, Tensor(), Tensor(), sinks}, attrs)[0];
  EXPECT_EQ(out.shape(), (std::vector<int64_t>{c.tokens, c.nh, c.dv}));
  const double scale = c.scale != 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.dk));
  std::vector<double> sink_values = c.sinks ? sinks.to_doubles() : std::vector<double>{};
  std::vector<double> want = reference_attention(
      q.to_doubles(), c.tokens, c.nh, c.dk, k.to_doubles(), v.to_doubles(), c.tokens, c.nkv, c.dv,
      0, scale, c.mask, c.sinks ? &sink_values : nullptr);
  EXPECT_LT(max_rel_error(out.to_doubles(), want), kF32Tol);
}

TEST(Attention, CausalMultiHead) { check_no_cache({5, 2, 2, 8, 8, {}}, 1); }
TEST(Attention, SingleToken) { check_no_cache({1, 3, 1, 5, 5, {}}, 2); }
TEST(Attention, GroupedQuery) { check_no_cache({4, 6, 2, 7, 7, {}}, 3); }
TEST(Attention, MlaHeadSizesDiffer) { check_no_cache({6, 3, 3, 6, 4, {}, false, 0.3}, 4); }
TEST(Attention, SlidingWindow) { check_no_cache({9, 4, 2, 4, 3, {true, 3}}, 5); }
TEST(Attention, WindowOfOne) { check_no_cache({4, 2, 1, 3, 3, {true, 1}}, 6); }
TEST(Attention, Sinks) { check_no_cache({7, 4, 2, 5, 6, {true, 4}, true}, 7); }
TEST(Attention, NonCausal) { check_no_cache({5, 2, 1, 4, 4, {false, 0}, true}, 8); }

// The same sequence fed as several calls through the caches equals one call
// over the whole sequence without caches.
TEST(Attention, PrefillThenDecodeMatchesOneCall) {
  const int64_t total = 9, nh = 4, nkv = 2, dk = 6, dv = 5, capacity = 12;
  std::mt19937 rng(10);
  Tensor q = random_tensor(DType::f32, {total, nh, dk}, rng);
  Tensor k = random_tensor(DType::f32, {total, nkv, dk}, rng);
  Tensor v = random_tensor(DType::f32, {total, nkv, dv}, rng);
  Tensor sinks = random_tensor(DType::f32, {nh}, rng);
  const Attributes attrs{{"window", int64_t{4}}};
  Tensor whole = run_op("attention", {q, k, v, Tensor(), Tensor(), sinks}, attrs)[0];
  // Caches start with junk, which rows past P+T must keep.
  Tensor k_cache = random_tensor(DType::f32, {capacity, nkv, dk}, rng);
  Tensor v_cache = random_tensor(DType::f32, {capacity, nkv, dv}, rng);
  const Tensor k_start = clone(k_cache), v_start = clone(v_cache);
  std::vector<double> stepped;
  int64_t past = 0;
  for (int64_t step : {5, 1, 3}) {
    Tensor out = run_op(
        "attention",
        {q.slice0(past, step), k.slice0(past, step), v.slice0(past, step), k_cache, v_cache, sinks},
        attrs, SymbolValues::of(step, past))[0];
    for (double x : out.to_doubles()) stepped.push_back(x);
    past += step;
  }
  EXPECT_LT(max_rel_error(stepped, whole.to_doubles()), kF32Tol);
  for (int64_t i = 0; i < capacity * nkv * dk; ++i) {
    const double want =
        i < total * nkv * dk ? k.at(static_cast<size_t>(i)) : k_start.at(static_cast<size_t>(i));
    ASSERT_EQ(k_cache.at(static_cast<size_t>(i)), want) << "k_cache element " << i;
  }
  for (int64_t i = 0; i < capacity * nkv * dv; ++i) {
    const double want =
        i < total * nkv * dv ? v.at(static_cast<size_t>(i)) : v_start.at(static_cast<size_t>(i));
    ASSERT_EQ(v_cache.at(static_cast<size_t>(i)), want) << "v_cache element " << i;
  }
}

// Keys and values are read back from the caches, i.e. rounded to their dtype.
TEST(Attention, CacheDtypeRoundsKeysAndValues) {
  const int64_t tokens = 4, nh = 2, nkv = 1, d = 8;
  std::mt19937 rng(11);
  Tensor q = random_tensor(DType::f32, {tokens, nh, d}, rng);
  Tensor k = random_tensor(DType::f32, {tokens, nkv, d}, rng);
  Tensor v = random_tensor(DType::f32, {tokens, nkv, d}, rng);
  Tensor k_cache = random_tensor(DType::bf16, {6, nkv, d}, rng);
  Tensor v_cache = random_tensor(DType::f8_e4m3, {6, nkv, d}, rng);
  Tensor out = run_op("attention", {q, k, v, k_cache, v_cache}, {}, SymbolValues::of(tokens, 0))[0];
  std::vector<double> kr =
      Tensor::from_doubles(DType::bf16, k.shape(), k.to_doubles()).to_doubles();
  std::vector<double> vr =
      Tensor::from_doubles(DType::f8_e4m3, v.shape(), v.to_doubles()).to_doubles();
  std::vector<double> want = reference_attention(q.to_doubles(), tokens, nh, d, kr, vr, tokens, nkv,
                                                 d, 0, 1.0 / std::sqrt(8.0), {}, nullptr);
  EXPECT_LT(max_rel_error(out.to_doubles(), want), kF32Tol);
}

TEST(Attention, Bf16Activations) {
  const int64_t tokens = 5, nh = 4, nkv = 2, d = 16;
  std::mt19937 rng(12);
  Tensor q = random_tensor(DType::bf16, {tokens, nh, d}, rng);
  Tensor k = random_tensor(DType::bf16, {tokens, nkv, d}, rng);
  Tensor v = random_tensor(DType::bf16, {tokens, nkv, d}, rng);
  Tensor out = run_op("attention", {q, k, v})[0];
  EXPECT_EQ(out.dtype(), DType::bf16);
  std::vector<double> want =
      reference_attention(q.to_doubles(), tokens, nh, d, k.to_doubles(), v.to_doubles(), tokens,
                          nkv, d, 0, 0.25, {}, nullptr);
  // One rounding of the exact result to bf16: relative error <= 2^-9.
  EXPECT_LT(max_rel_error(out.to_doubles(), want), 1e-2);
}

TEST(Attention, OverflowLeavesCachesUnchanged) {
  std::mt19937 rng(13);
  Tensor q = random_tensor(DType::f32, {3, 2, 4}, rng);
  Tensor k = random_tensor(DType::f32, {3, 1, 4}, rng);
  Tensor v = random_tensor(DType::f32, {3, 1, 4}, rng);
  Tensor k_cache = random_tensor(DType::f32, {6, 1, 4}, rng);
  Tensor v_cache = random_tensor(DType::f32, {6, 1, 4}, rng);
  const Tensor k_before = clone(k_cache), v_before = clone(v_cache);
  try {
    run_op("attention", {q, k, v, k_cache, v_cache}, {}, SymbolValues::of(3, 4), "layer3.attn");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("layer3.attn"), std::string::npos) << msg;
    EXPECT_NE(msg.find("context overflow: 4 past + 3 new tokens exceed the cache capacity 6"),
              std::string::npos)
        << msg;
  }
  EXPECT_EQ(std::memcmp(k_cache.data(), k_before.data(), k_cache.nbytes()), 0);
  EXPECT_EQ(std::memcmp(v_cache.data(), v_before.data(), v_cache.nbytes()), 0);
  // Exactly full is fine.
  EXPECT_NO_THROW(run_op("attention", {q, k, v, k_cache, v_cache}, {}, SymbolValues::of(3, 3)));
}

void expect_error(const std::string& op, const std::vector<Tensor>& inputs, const Attributes& attrs,
                  const std::string& fragment, SymbolValues symbols = SymbolValues::of(0, 0)) {
  try {
    run_op(op, inputs, attrs, symbols, "node9");
    ADD_FAILURE() << "no error; expected one mentioning " << fragment;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_NE(msg.find("node9"), std::string::npos) << msg;
  }
}

TEST(Attention, InferenceErrors) {
  std::mt19937 rng(14);
  auto t = [&](std::vector<int64_t> shape) { return random_tensor(DType::f32, shape, rng); };
  Tensor q = t({3, 4, 8}), k = t({3, 2, 8}), v = t({3, 2, 5});
  Tensor kc = t({6, 2, 8}), vc = t({6, 2, 5});
  expect_error("attention", {q, k, v, kc}, {}, "'k_cache' and 'v_cache'");
  expect_error("attention", {q, k, v, Tensor(), vc}, {}, "'k_cache' and 'v_cache'");
  expect_error("attention", {t({3, 3, 8}), k, v}, {}, "multiple of the KV heads");
  expect_error("attention", {q, t({3, 2, 7}), v}, {}, "head size dk");
  expect_error("attention", {q, k, t({3, 1, 5})}, {}, "KV heads");
  expect_error("attention", {q, t({2, 2, 8}), t({2, 2, 5})}, {}, "token count");
  expect_error("attention", {q, k, v, t({6, 2, 7}), vc}, {}, "'k_cache'");
  expect_error("attention", {q, k, v, kc, t({6, 2, 4})}, {}, "'v_cache'");
  expect_error("attention", {q, k, v, kc, t({5, 2, 5})}, {}, "capacity");
  expect_error("attention", {q, k, v, Tensor(), Tensor(), t({3})}, {}, "'sinks'");
  expect_error("attention", {q, k, v}, {{"window", int64_t{-1}}}, "'window'");
  expect_error("attention", {q, k, v}, {{"causal", int64_t{2}}}, "'causal'");
  expect_error("attention", {q, k, v}, {{"scale", "big"}}, "'scale'");
  expect_error("attention", {t({3, 32}), k, v}, {}, "'q'");
  expect_error("attention", {random_tensor(DType::i32, {3, 4, 8}, rng), k, v}, {}, "'q'");
  // Head dims must be static; T may be symbolic.
  Graph g;
  ValueId gq = g.add_input("q", DType::f32, Shape{Dim::tokens(), 4, Dim::tokens()});
  ValueId gk = g.add_input("k", DType::f32, Shape{Dim::tokens(), 2, 8});
  ValueId gv = g.add_input("v", DType::f32, Shape{Dim::tokens(), 2, 8});
  EXPECT_THROW(g.add("attention", "attn", {gq, gk, gv}), Error);
  // Caches are written in place, so they must be state values.
  ValueId q2 = g.add_input("q2", DType::f32, Shape{Dim::tokens(), 4, 8});
  ValueId kc_in = g.add_input("kc", DType::f32, Shape{6, 2, 8});
  ValueId vc_in = g.add_input("vc", DType::f32, Shape{6, 2, 8});
  EXPECT_THROW(g.add("attention", "attn", {q2, gk, gv, kc_in, vc_in}), Error);
  ValueId kc_s = g.add_state("kc_s", DType::f32, {6, 2, 8});
  ValueId vc_s = g.add_state("vc_s", DType::f32, {6, 2, 8});
  ValueId out = g.add("attention", "attn", {q2, gk, gv, kc_s, vc_s});
  EXPECT_EQ(g.value(out).shape, (Shape{Dim::tokens(), 4, 8}));
  EXPECT_NO_THROW(g.validate());
}

// masked_softmax: row i of a head is the query at position L - T + i.
std::vector<double> reference_masked_softmax(const std::vector<double>& s, int64_t nh,
                                             int64_t tokens, int64_t len, double scale, Mask m,
                                             const std::vector<double>* sinks) {
  std::vector<double> y(s.size(), 0.0);
  for (int64_t h = 0; h < nh; ++h)
    for (int64_t i = 0; i < tokens; ++i) {
      const int64_t pos = len - tokens + i;
      std::vector<int64_t> keep;
      for (int64_t j = 0; j < len; ++j)
        if ((!m.causal || j <= pos) && (m.window == 0 || j > pos - m.window)) keep.push_back(j);
      double denom = sinks ? std::exp((*sinks)[static_cast<size_t>(h)]) : 0.0;
      for (int64_t j : keep)
        denom += std::exp(scale * s[static_cast<size_t>((h * tokens + i) * len + j)]);
      for (int64_t j : keep) {
        const size_t at = static_cast<size_t>((h * tokens + i) * len + j);
        y[at] = std::exp(scale * s[at]) / denom;
      }
    }
  return y;
}

TEST(MaskedSoftmax, WindowSinksScale) {
  std::mt19937 rng(15);
  const int64_t nh = 3, tokens = 4, len = 7;
  Tensor s = random_tensor(DType::f32, {nh, tokens, len}, rng, 3.0);
  Tensor sinks = random_tensor(DType::f32, {nh}, rng);
  for (Mask m : {Mask{true, 0}, Mask{true, 3}, Mask{false, 0}, Mask{false, 2}}) {
    SCOPED_TRACE("causal " + std::to_string(m.causal) + " window " + std::to_string(m.window));
    const Attributes attrs{{"scale", 0.5}, {"causal", int64_t{m.causal}}, {"window", m.window}};
    Tensor y = run_op("masked_softmax", {s, sinks}, attrs)[0];
    std::vector<double> sv = sinks.to_doubles();
    std::vector<double> want =
        reference_masked_softmax(s.to_doubles(), nh, tokens, len, 0.5, m, &sv);
    EXPECT_LT(max_rel_error(y.to_doubles(), want), kF32Tol);
    for (size_t i = 0; i < want.size(); ++i)
      if (want[i] == 0.0) {
        EXPECT_EQ(y.at(i), 0.0) << "element " << i;
      }
    Tensor y2 = run_op("masked_softmax", {s}, attrs)[0];
    EXPECT_LT(max_rel_error(y2.to_doubles(), reference_masked_softmax(s.to_doubles(), nh, tokens,
                                                                      len, 0.5, m, nullptr)),
              kF32Tol);
  }
}

TEST(MaskedSoftmax, Errors) {
  std::mt19937 rng(16);
  Tensor s = random_tensor(DType::f32, {2, 4, 3}, rng);
  expect_error("masked_softmax", {s}, {}, "at least as many keys");
  Tensor ok = random_tensor(DType::f32, {2, 3, 4}, rng);
  expect_error("masked_softmax", {ok, random_tensor(DType::f32, {3}, rng)}, {}, "'sinks'");
  expect_error("masked_softmax", {ok}, {{"window", int64_t{-2}}}, "'window'");
  expect_error("masked_softmax", {random_tensor(DType::f32, {3, 4}, rng)}, {}, "'scores'");
}

// cache_update's x must have the symbolic token count, so it runs in graphs.
struct CacheGraph {
  Graph g;
  ValueId cache, x, y;
  CacheGraph(DType cache_dtype, std::vector<int64_t> cache_shape) {
    cache = g.add_state("cache", cache_dtype, cache_shape);
    Shape xs = Shape::of(cache_shape);
    xs[0] = Dim::tokens();
    x = g.add_input("x", DType::f32, xs);
    y = g.add("cache_update", "layer0.k_update", {cache, x});
    g.mark_output(y);
  }
};

TEST(CacheUpdate, WritesRowsAndReturnsFilledPart) {
  CacheGraph cg(DType::bf16, {7, 2, 3});
  EXPECT_EQ(cg.g.value(cg.y).shape, (Shape{Dim::past_plus_tokens(), 2, 3}));
  EXPECT_EQ(cg.g.value(cg.y).dtype, DType::bf16);
  std::mt19937 rng(17);
  Tensor cache = random_tensor(DType::bf16, {7, 2, 3}, rng);
  const Tensor before = clone(cache);
  Tensor x = random_tensor(DType::f32, {3, 2, 3}, rng);
  Tensor y = run_graph(cg.g, {{cg.x, x}}, {{cg.cache, cache}}, SymbolValues::of(3, 2))[0];
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{5, 2, 3}));
  const std::vector<double> xr =
      Tensor::from_doubles(DType::bf16, x.shape(), x.to_doubles()).to_doubles();
  for (size_t i = 0; i < 7 * 6; ++i) {
    double want = before.at(i);
    if (i >= 2 * 6 && i < 5 * 6) want = xr[i - 2 * 6];
    EXPECT_EQ(cache.at(i), want) << "cache element " << i;
    if (i < 5 * 6) {
      EXPECT_EQ(y.at(i), want) << "output element " << i;
    }
  }
}

TEST(CacheUpdate, OverflowLeavesCacheUnchanged) {
  CacheGraph cg(DType::f32, {4, 3});
  std::mt19937 rng(18);
  Tensor cache = random_tensor(DType::f32, {4, 3}, rng);
  const Tensor before = clone(cache);
  Tensor x = random_tensor(DType::f32, {2, 3}, rng);
  try {
    run_graph(cg.g, {{cg.x, x}}, {{cg.cache, cache}}, SymbolValues::of(2, 3));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("layer0.k_update"), std::string::npos) << msg;
    EXPECT_NE(msg.find("context overflow: 3 past + 2 new tokens exceed the cache capacity 4"),
              std::string::npos)
        << msg;
  }
  EXPECT_EQ(std::memcmp(cache.data(), before.data(), cache.nbytes()), 0);
}

TEST(CacheUpdate, InferenceErrors) {
  Graph g;
  ValueId cache = g.add_state("cache", DType::f32, {8, 4});
  ValueId fixed = g.add_input("fixed", DType::f32, Shape{3, 4});
  ValueId wide = g.add_input("wide", DType::f32, Shape{Dim::tokens(), 5});
  ValueId flat = g.add_input("flat", DType::f32, Shape{Dim::tokens()});
  ValueId not_state = g.add_input("not_state", DType::f32, Shape{8, 4});
  ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 4});
  EXPECT_THROW(g.add("cache_update", "u", {cache, fixed}), Error);
  EXPECT_THROW(g.add("cache_update", "u", {cache, wide}), Error);
  EXPECT_THROW(g.add("cache_update", "u", {cache, flat}), Error);
  EXPECT_THROW(g.add("cache_update", "u", {not_state, x}), Error);
  EXPECT_NO_THROW(g.add("cache_update", "u", {cache, x}));
}

// The decomposition, run as a graph, matches the fused op over a prefill and
// a decode step (with caches) or one call (without).
struct AttentionSetup {
  int64_t nh, nkv, dk, dv, capacity;  // capacity 0: no caches
  DType cache_dtype = DType::f32;
  bool sinks = false;
  Attributes attrs;
};

struct AttentionGraph {
  Graph g;
  ValueId q, k, v, k_cache = kNoValue, v_cache = kNoValue;
  AttentionGraph(const AttentionSetup& s, const Tensor& sinks) {
    q = g.add_input("q", DType::f32, Shape{Dim::tokens(), s.nh, s.dk});
    k = g.add_input("k", DType::f32, Shape{Dim::tokens(), s.nkv, s.dk});
    v = g.add_input("v", DType::f32, Shape{Dim::tokens(), s.nkv, s.dv});
    if (s.capacity > 0) {
      k_cache = g.add_state("k_cache", s.cache_dtype, {s.capacity, s.nkv, s.dk});
      v_cache = g.add_state("v_cache", s.cache_dtype, {s.capacity, s.nkv, s.dv});
    }
    std::vector<ValueId> inputs{q, k, v, k_cache, v_cache};
    if (sinks.defined()) inputs.push_back(g.add_constant("sinks", sinks));
    while (inputs.back() == kNoValue) inputs.pop_back();
    nodes_from = g.num_nodes();
    inputs_ = inputs;
  }
  size_t nodes_from = 0;
  std::vector<ValueId> inputs_;
};

void check_decomposition(const AttentionSetup& s, const std::vector<int64_t>& steps,
                         uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor sinks = s.sinks ? random_tensor(DType::f32, {s.nh}, rng) : Tensor();
  AttentionGraph fused(s, sinks), split(s, sinks);
  ValueId out = fused.g.add("attention", "layer1.attn", fused.inputs_, s.attrs);
  fused.g.mark_output(out);
  const OpDef& def = OpRegistry::global().get("attention");
  ASSERT_TRUE(def.decompose);
  for (ValueId id : def.decompose(split.g, fused.g.node(0))) split.g.mark_output(id);
  ASSERT_NO_THROW(split.g.validate());
  EXPECT_GT(split.g.num_nodes(), 4u);
  for (const Node& n : split.g.nodes()) EXPECT_NE(n.op, "attention");
  std::map<ValueId, Tensor> fused_states, split_states;
  if (s.capacity > 0) {
    for (ValueId id : {fused.k_cache, fused.v_cache}) {
      const Value& val = fused.g.value(id);
      Tensor t = random_tensor(val.dtype, val.shape.static_dims(), rng);
      fused_states[id] = t;
      split_states[id] = clone(t);
    }
  }
  int64_t past = 0;
  for (int64_t step : steps) {
    SCOPED_TRACE("step of " + std::to_string(step) + " after " + std::to_string(past));
    std::map<ValueId, Tensor> inputs{
        {fused.q, random_tensor(DType::f32, {step, s.nh, s.dk}, rng)},
        {fused.k, random_tensor(DType::f32, {step, s.nkv, s.dk}, rng)},
        {fused.v, random_tensor(DType::f32, {step, s.nkv, s.dv}, rng)}};
    const SymbolValues sym = SymbolValues::of(step, past);
    Tensor a = run_graph(fused.g, inputs, fused_states, sym)[0];
    Tensor b = run_graph(split.g, inputs, split_states, sym)[0];
    ASSERT_EQ(a.shape(), b.shape());
    // The decomposition rounds scores and probabilities to f32 on the way;
    // 1e-5 of the output's scale bounds that.
    double scale = 0;
    for (double x : a.to_doubles()) scale = std::max(scale, std::fabs(x));
    EXPECT_LT(max_abs_error(b.to_doubles(), a.to_doubles()), 1e-5 * scale);
    past += step;
  }
  for (const auto& [id, t] : fused_states)
    EXPECT_EQ(std::memcmp(t.data(), split_states[id].data(), t.nbytes()), 0)
        << fused.g.value(id).name;
}

TEST(AttentionDecompose, NoCacheGqaSinksWindow) {
  check_decomposition({6, 2, 5, 5, 0, DType::f32, true, {{"window", int64_t{3}}}}, {7}, 20);
}

TEST(AttentionDecompose, NoCacheMlaNonCausal) {
  check_decomposition({3, 3, 6, 4, 0, DType::f32, false, {{"causal", int64_t{0}}, {"scale", 0.2}}},
                      {4}, 21);
}

TEST(AttentionDecompose, CachedPrefillThenDecode) {
  check_decomposition({4, 2, 6, 3, 10, DType::f32, true, {{"window", int64_t{4}}}}, {5, 1, 2}, 22);
}

TEST(AttentionDecompose, Fp8Cache) {
  check_decomposition({2, 1, 4, 4, 8, DType::f8_e4m3, false, {}}, {3, 1}, 23);
}

}  // namespace
}  // namespace moert
