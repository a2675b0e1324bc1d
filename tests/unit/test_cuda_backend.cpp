// The CUDA backend beyond the conformance suite.
//
// Host side, run everywhere the plugin is built (no GPU needed): the
// plugin loads through the runtime's registry and, without a device, is
// listed as unavailable with a reason naming CUDA; the element conversions
// and fp8 block-scale indexing the kernels use (backends/cuda/numeric.h)
// against the runtime's own; the pooled allocator's bookkeeping; the GEMM
// plan cache's keying; supports_node's answers for nodes the kernels
// cannot take, and a kernel for every op.
//
// Device side, skipped with the reason when there is no CUDA device: the
// device list, a decoder layer (embedding to MoE with a KV cache over
// several steps, prefill and decode) against the reference backend, decode
// steps run as CUDA graphs (captured, updated, replayed),
// profiling, errors found on the device, a context overflow that writes
// nothing, out-of-memory reporting, overlapping copies, and the GEMM plan
// cache hit by a second run of the same shapes.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../backends/cuda/gemm_plan.h"
#include "../../backends/cuda/memory_pool.h"
#include "../../backends/cuda/numeric.h"
#include "abi_graph.h"
#include "kernel_util.h"
#include "moert/backend_registry.h"
#include "moert/dtype.h"
#include "moert/error.h"
#include "moert/executor.h"
#include "moert/graph.h"
#include "moert/model.h"
#include "moert/op_registry.h"
#include "support/backend_test.h"
#include "support/op_runner.h"
#include "support/tiny_configs.h"

namespace {

using moert::Attributes;
using moert::Dim;
using moert::DType;
using moert::Executor;
using moert::ExecutorOptions;
using moert::Graph;
using moert::Shape;
using moert::SymbolValues;
using moert::Tensor;
using moert::ValueId;
using moert::testing::error_of;
using moert::testing::on;
using moert::testing::random_ints;
using moert::testing::random_tensor;
using moert::testing::run_error;
using moert::testing::testing_symbol;

// The cuda backend as the registry loaded it (available or not), or nullptr
// with the reason in *why (not built here, or it failed to load).
moert::Backend* cuda_plugin(std::string* why, bool* load_failed) {
  const moert::BackendRegistry& registry = moert::BackendRegistry::global();
  *load_failed = false;
  if (moert::Backend* b = registry.find("cuda")) return b;
  *why = "the cuda backend plugin is not loaded (not built on this machine)";
  for (const auto& f : registry.failures())
    if (f.path.find("libmoert_backend_cuda") != std::string::npos) {
      *why = "the cuda backend plugin failed to load: " + f.str();
      *load_failed = true;
    }
  return nullptr;
}

// Host-side tests need the plugin loaded, not a device.
#define REQUIRE_CUDA_PLUGIN()                                       \
  std::string skip_reason;                                          \
  bool load_failed = false;                                         \
  moert::Backend* plugin = cuda_plugin(&skip_reason, &load_failed); \
  ASSERT_FALSE(load_failed) << skip_reason;                         \
  if (!plugin) GTEST_SKIP() << skip_reason;                         \
  (void)plugin

// Device tests need a device.
#define REQUIRE_CUDA_DEVICE()                                             \
  REQUIRE_CUDA_PLUGIN();                                                  \
  if (!plugin->available()) GTEST_SKIP() << plugin->unavailable_reason(); \
  moert::Backend* backend = plugin;                                       \
  (void)backend

using CheckNodeFn = int (*)(const moert_graph_desc*, size_t, char*, size_t);
using HasKernelFn = int (*)(const char*);
using TextFn = int (*)(int32_t, char*, size_t);
using PlansFn = int (*)(int32_t, int64_t*, int64_t*, int64_t*);
using GraphStatsFn = void (*)(int64_t*, int64_t*, int64_t*, int64_t*);
using FlagFn = int (*)();

// ---------------------------------------------------------------------------
// Loading, and the answer without a device.

TEST(CudaBackend, LoadsAndReportsItsDevicesOrWhyThereAreNone) {
  REQUIRE_CUDA_PLUGIN();
  EXPECT_EQ(plugin->api().abi_major, static_cast<uint32_t>(MOERT_ABI_MAJOR));
  EXPECT_NE(std::string(plugin->api().version).find("CUDA"), std::string::npos);
  if (plugin->available()) {
    EXPECT_GE(plugin->device_count(), 1);
    return;
  }
  // Unavailable: the registry says why, naming CUDA and the failing call.
  const std::string& why = plugin->unavailable_reason();
  EXPECT_NE(why.find("CUDA"), std::string::npos) << why;
  EXPECT_EQ(why.rfind("no CUDA device", 0), 0u) << why;
  EXPECT_EQ(plugin->device_count(), 0);
  const std::string listing = moert::BackendRegistry::global().describe();
  EXPECT_NE(listing.find("cuda"), std::string::npos) << listing;
  std::cout << "cuda backend unavailable: " << why << "\n";
}

// ---------------------------------------------------------------------------
// Host-side logic, real on the CPU.

namespace cu = moert::cuda;

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Narrow float patterns produced by the kernels' conversions equal the
// runtime's for every class of input: normals, subnormals, ties, overflow,
// infinities, NaN.
TEST(CudaNumeric, FloatConversionsMatchTheRuntime) {
  std::mt19937 rng(1);
  std::vector<float> values = {
      0.0f,     -0.0f,     1.0f,         -1.5f,         65504.0f, 65519.0f, 65520.0f,
      1e-8f,    -3e-6f,    448.0f,       449.0f,        463.9f,   464.0f,   1e6f,
      INFINITY, -INFINITY, 0.001953125f, 0.0009765625f, 0.01f,    3.0e38f,  1.17549435e-38f};
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = bits_to_float(bits(rng));
    if (!std::isnan(f)) values.push_back(f);
  }
  std::normal_distribution<float> normal(0.0f, 50.0f);
  for (int i = 0; i < 100000; ++i) values.push_back(normal(rng));
  for (float f : values) {
    uint16_t want16 = 0;
    moert::store_element(DType::bf16, &want16, 0, f);
    EXPECT_EQ(cu::f32_to_bf16(f), want16) << f;
    moert::store_element(DType::f16, &want16, 0, f);
    EXPECT_EQ(cu::f32_to_f16(f), want16) << f;
    uint8_t want8 = 0;
    moert::store_element(DType::f8_e4m3, &want8, 0, f);
    EXPECT_EQ(cu::f32_to_e4m3(f), want8) << f;
  }
  // NaN stays NaN.
  EXPECT_TRUE(std::isnan(cu::bf16_to_f32(cu::f32_to_bf16(NAN))));
  EXPECT_TRUE(std::isnan(cu::f16_to_f32(cu::f32_to_f16(NAN))));
  EXPECT_TRUE(std::isnan(cu::e4m3_to_f32(cu::f32_to_e4m3(NAN))));
}

TEST(CudaNumeric, DecodingEveryPatternMatchesTheRuntime) {
  for (uint32_t p = 0; p < 65536; ++p) {
    const uint16_t h = static_cast<uint16_t>(p);
    for (DType t : {DType::f16, DType::bf16}) {
      const double want = moert::load_element(t, &h, 0);
      const float got = t == DType::f16 ? cu::f16_to_f32(h) : cu::bf16_to_f32(h);
      if (std::isnan(want))
        EXPECT_TRUE(std::isnan(got)) << p;
      else
        EXPECT_EQ(static_cast<double>(got), want) << moert::dtype_name(t) << " " << p;
    }
  }
  for (uint32_t p = 0; p < 256; ++p) {
    const uint8_t b = static_cast<uint8_t>(p);
    const double want = moert::load_element(DType::f8_e4m3, &b, 0);
    const float got = cu::e4m3_to_f32(b);
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(got)) << p;
    else
      EXPECT_EQ(static_cast<double>(got), want) << p;
  }
}

// cast between every pair of dtypes, element by element as the kernel does
// it, against the runtime's load/store through double.
TEST(CudaNumeric, CastElementMatchesTheRuntimeForEveryDtypePair) {
  const std::vector<DType> all = {DType::f32, DType::f16, DType::bf16, DType::f8_e4m3, DType::i8,
                                  DType::u8,  DType::i32, DType::i64,  DType::boolean};
  const std::vector<double> values = {0.0,   1.0,   -1.0,       2.5,          -3.75,        127.0,
                                      128.0, 255.0, 300.0,      -129.0,       65504.0,      65536.0,
                                      1e9,   -1e9,  16777217.0, 2147483647.0, 4294967296.0, 0.3,
                                      -0.7,  448.0, 500.0,      3e12,         -9.2e18};
  for (DType from : all)
    for (DType to : all)
      for (double v : values) {
        // The source element as the source dtype holds it.
        uint64_t src = 0, want = 0, got = 0;
        moert::store_element(from, &src, 0, v);
        moert::store_element(to, &want, 0, moert::load_element(from, &src, 0));
        cu::cast_element(static_cast<moert_dtype>(from), &src, 0, static_cast<moert_dtype>(to),
                         &got, 0);
        const size_t size = moert::dtype_size(to);
        EXPECT_EQ(std::memcmp(&got, &want, size), 0)
            << moert::dtype_name(from) << " -> " << moert::dtype_name(to) << " of " << v;
      }
}

// The fp8 weight element the kernels compute (value times its block scale)
// equals the reference dequantisation, for a stack of matrices whose sizes
// are not multiples of the block.
TEST(CudaNumeric, Fp8BlockDequantisationMatchesTheReference) {
  std::mt19937 rng(2);
  const int64_t experts = 3, rows = 70, cols = 45, b0 = 32, b1 = 16;
  const Tensor w = random_tensor(DType::f8_e4m3, {experts, rows, cols}, rng, 8.0);
  const int64_t srows = (rows + b0 - 1) / b0, scols = (cols + b1 - 1) / b1;
  const Tensor scale = random_tensor(DType::f32, {experts, srows, scols}, rng, 0.01);
  moert::TensorView wv{DType::f8_e4m3, {experts, rows, cols}, const_cast<void*>(w.data())};
  moert::TensorView sv{DType::f32, {experts, srows, scols}, const_cast<void*>(scale.data())};
  for (int64_t e = 0; e < experts; ++e) {
    const std::vector<double> want = moert::ops::dequantize_matrix(wv, &sv, e, rows, cols, b0, b1);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float got = cu::weight_element(MOERT_DTYPE_F8_E4M3, w.data(),
                                             static_cast<const float*>(scale.data()), e, r, c, rows,
                                             cols, b0, b1);
        // The f32 product of an e4m3 value and an f32 scale, rounded once.
        ASSERT_EQ(got, static_cast<float>(want[static_cast<size_t>(r * cols + c)]))
            << "expert " << e << " [" << r << ", " << c << "]";
      }
  }
  EXPECT_EQ(cu::block_scale_index(2, 69, 44, rows, cols, b0, b1), (2 * srows + 2) * scols + 2);
}

TEST(CudaMemoryPool, ReusesBlocksBySizeClassAndTrimsOnFailure) {
  std::vector<std::pair<void*, size_t>> live;
  const size_t budget = size_t{8} << 20;  // the "device" has 8 MiB
  size_t used = 0;
  cu::MemoryPool pool(
      [&](size_t bytes) -> void* {
        if (used + bytes > budget) return nullptr;
        used += bytes;
        void* p = std::malloc(bytes);
        live.emplace_back(p, bytes);
        return p;
      },
      [&](void* p) {
        for (size_t i = 0; i < live.size(); ++i)
          if (live[i].first == p) {
            used -= live[i].second;
            live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
            break;
          }
        std::free(p);
      });
  EXPECT_EQ(cu::MemoryPool::size_class(0), 512u);
  EXPECT_EQ(cu::MemoryPool::size_class(513), 1024u);
  EXPECT_EQ(cu::MemoryPool::size_class((1u << 20) + 1), size_t{2} << 20);
  EXPECT_EQ(cu::MemoryPool::size_class(size_t{5} << 20), size_t{6} << 20);

  void* a = pool.allocate(1000);
  ASSERT_NE(a, nullptr);
  pool.release(a);
  EXPECT_EQ(pool.cached_bytes(), 1024u);
  void* b = pool.allocate(900);  // the same size class: the cached block
  EXPECT_EQ(b, a);
  EXPECT_EQ(pool.raw_allocations(), 1u);
  pool.release(b);

  // 6 MiB cached in one block; a 4 MiB request cannot fit beside it, so the
  // pool returns its cache and retries.
  void* big = pool.allocate(size_t{6} << 20);
  ASSERT_NE(big, nullptr);
  pool.release(big);
  void* other = pool.allocate(size_t{4} << 20);
  EXPECT_NE(other, nullptr);
  EXPECT_EQ(pool.in_use_bytes(), size_t{4} << 20);
  // Nothing fits: nullptr, not a crash.
  EXPECT_EQ(pool.allocate(size_t{16} << 20), nullptr);
  pool.release(other);
  pool.release(nullptr);
  pool.trim();
  EXPECT_EQ(pool.cached_bytes(), 0u);
  EXPECT_TRUE(live.empty());
  EXPECT_EQ(used, 0u);
}

TEST(CudaGemmPlans, OnePlanPerShapeAndLayout) {
  cu::PlanCache<int> cache;
  int made = 0;
  auto make = [&] { return ++made; };
  cu::GemmKey a;
  a.m = 4096;
  a.n = 17;
  a.k = 7168;
  a.lda = a.ldb = 7168;
  a.ldd = 4096;
  EXPECT_EQ(cache.get(a, make), 1);
  EXPECT_EQ(cache.get(a, make), 1);  // hit
  cu::GemmKey b = a;
  b.n = 18;  // another token count: another plan
  EXPECT_EQ(cache.get(b, make), 2);
  cu::GemmKey c = a;
  c.transpose_a = true;
  EXPECT_EQ(cache.get(c, make), 3);
  cu::GemmKey d = a;
  d.a_type = 14;  // another operand type
  EXPECT_EQ(cache.get(d, make), 4);
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 4u);
  EXPECT_NE(cu::GemmKeyHash{}(a), cu::GemmKeyHash{}(b));
  EXPECT_NE(a.str().find("m=4096 n=17 k=7168"), std::string::npos) << a.str();
}

// supports_node's logic, through the plugin's testing symbol: nodes the
// runtime accepts but the kernels cannot take are refused with a reason.
std::string check_node(moert::Backend* plugin, const Graph& g, size_t node) {
  auto check = testing_symbol<CheckNodeFn>(plugin, "moert_cuda_testing_check_node");
  if (!check) return "no testing symbol";
  moert::AbiGraph abi(g, {node});
  char reason[512] = {};
  return check(abi.desc(), 0, reason, sizeof(reason)) ? "" : (reason[0] ? reason : "refused");
}

TEST(CudaBackend, SupportsNodeAcceptsTheCoreOpsAndSaysWhyNot) {
  REQUIRE_CUDA_PLUGIN();
  std::mt19937 rng(3);
  {
    Graph g;
    const ValueId x = g.add_input("x", DType::bf16, Shape{Dim::tokens(), 64});
    g.add("linear", "proj",
          {x, g.add_constant("w", random_tensor(DType::f8_e4m3, {96, 64}, rng)), moert::kNoValue,
           g.add_constant("s", random_tensor(DType::f32, {1, 1}, rng))});
    EXPECT_EQ(check_node(plugin, g, 0), "");
  }
  {
    // MLA-sized heads are fine; a value head above 512 is not.
    Graph g;
    const ValueId q = g.add_input("q", DType::f32, Shape{Dim::tokens(), 4, 192});
    const ValueId k = g.add_input("k", DType::f32, Shape{Dim::tokens(), 1, 192});
    const ValueId v = g.add_input("v", DType::f32, Shape{Dim::tokens(), 1, 128});
    const ValueId wide = g.add_input("vw", DType::f32, Shape{Dim::tokens(), 1, 640});
    g.add("attention", "mla", {q, k, v});
    g.add("attention", "wide", {q, k, wide});
    EXPECT_EQ(check_node(plugin, g, 0), "");
    EXPECT_NE(check_node(plugin, g, 1).find("value head size above 512"), std::string::npos)
        << check_node(plugin, g, 1);
  }
  {
    Graph g;
    const ValueId l = g.add_input("l", DType::f32, Shape{Dim::tokens(), 4096});
    g.add_node("router", "wide", {l}, Attributes{{"top_k", int64_t{8}}});
    EXPECT_NE(check_node(plugin, g, 0).find("more than 2048 experts"), std::string::npos)
        << check_node(plugin, g, 0);
  }
  {
    Graph g;
    const ValueId x = g.add_input("x", DType::f32, Shape{Dim::tokens(), 4});
    const ValueId ids = g.add_input("ids", DType::i32, Shape{Dim::tokens(), 2});
    const ValueId w = g.add_input("w", DType::f32, Shape{Dim::tokens(), 2});
    const ValueId gate = g.add_input("g", DType::f32, Shape{5000, 2, 4});
    const ValueId down = g.add_input("d", DType::f32, Shape{5000, 4, 2});
    g.add("moe", "many", {x, ids, w, gate, gate, down});
    EXPECT_NE(check_node(plugin, g, 0).find("more than 4096 experts"), std::string::npos)
        << check_node(plugin, g, 0);
  }
}

TEST(CudaBackend, HasAKernelForEveryOp) {
  REQUIRE_CUDA_PLUGIN();
  auto has = testing_symbol<HasKernelFn>(plugin, "moert_cuda_testing_has_kernel");
  ASSERT_NE(has, nullptr);
  for (const std::string& op : moert::OpRegistry::global().names())
    EXPECT_EQ(has(op.c_str()), 1) << "no CUDA kernel for op '" << op << "'";
}

// ---------------------------------------------------------------------------
// On a device.

TEST(CudaBackend, ListsDevicesWithTheirCapabilities) {
  REQUIRE_CUDA_DEVICE();
  auto caps = testing_symbol<TextFn>(backend, "moert_cuda_testing_capabilities");
  ASSERT_NE(caps, nullptr);
  for (int32_t d = 0; d < backend->device_count(); ++d) {
    const moert::DeviceInfo info = backend->device_info(d);
    EXPECT_FALSE(info.name.empty());
    EXPECT_GT(info.total_memory, 0u);
    EXPECT_GT(info.free_memory, 0u);
    EXPECT_EQ(info.kind, MOERT_DEVICE_GPU);
    char text[512] = {};
    ASSERT_EQ(caps(d, text, sizeof(text)), MOERT_OK) << text;
    EXPECT_NE(std::string(text).find("sm_"), std::string::npos) << text;
    std::cout << "cuda:" << d << " " << info.name << ": " << text << "\n";
  }
}

// Embedding, rms_norm, linear (bf16 and fp8 weights), rope, attention with
// KV caches (bf16 K, f32 V), router and moe with a shared expert.
struct LayerGraph {
  static constexpr int64_t kVocab = 101, kHidden = 128, kHeads = 4, kKvHeads = 2, kHeadDim = 32,
                           kExperts = 8, kInter = 64, kCapacity = 64;
  Graph g;
  explicit LayerGraph(uint32_t seed = 3) {
    std::mt19937 rng(seed);
    build(rng);
  }
  void build(std::mt19937& rng) {
    auto weight = [&](std::vector<int64_t> shape, DType t = DType::f32, double s = 0.1) {
      return g.add_constant("w" + std::to_string(g.num_values()),
                            random_tensor(t, std::move(shape), rng, s));
    };
    const ValueId ids = g.add_input("ids", DType::i32, Shape{Dim::tokens()});
    const ValueId pos = g.add_input("positions", DType::i32, Shape{Dim::tokens()});
    const ValueId x = g.add("embedding", "embed", {weight({kVocab, kHidden}), ids});
    const ValueId h = g.add("rms_norm", "norm", {x, weight({kHidden})}, Attributes{{"eps", 1e-5}});
    auto heads = [&](const std::string& name, int64_t n, ValueId from) {
      const ValueId p = g.add("linear", name, {from, weight({n * kHeadDim, kHidden}, DType::bf16)});
      return g.add("reshape", name + ".heads", {p},
                   Attributes{{"shape", std::vector<int64_t>{0, n, kHeadDim}}});
    };
    const Attributes rope{{"theta", 10000.0}};
    const ValueId q = g.add("rope", "q.rope", {heads("q", kHeads, h), pos}, rope);
    const ValueId k = g.add("rope", "k.rope", {heads("k", kKvHeads, h), pos}, rope);
    const ValueId v = heads("v", kKvHeads, h);
    const ValueId kc = g.add_state("k_cache", DType::bf16, {kCapacity, kKvHeads, kHeadDim});
    const ValueId vc = g.add_state("v_cache", DType::f32, {kCapacity, kKvHeads, kHeadDim});
    const ValueId a = g.add("attention", "attn", {q, k, v, kc, vc});
    const ValueId flat = g.add("reshape", "attn.flat", {a},
                               Attributes{{"shape", std::vector<int64_t>{0, kHeads * kHeadDim}}});
    // An fp8 output projection with its block scales.
    const ValueId o = g.add("linear", "o",
                            {flat, weight({kHidden, kHeads * kHeadDim}, DType::f8_e4m3, 4.0),
                             moert::kNoValue, weight({1, 1}, DType::f32, 0.01)});
    const ValueId r = g.add("add", "residual", {o, x});
    const ValueId logits = g.add("linear", "gate", {r, weight({kExperts, kHidden})});
    const std::vector<ValueId> routed =
        g.add_node("router", "router", {logits}, Attributes{{"top_k", int64_t{2}}});
    const ValueId m =
        g.add("moe", "moe",
              {r, routed[0], routed[1], weight({kExperts, kInter, kHidden}),
               weight({kExperts, kInter, kHidden}), weight({kExperts, kHidden, kInter}),
               moert::kNoValue, moert::kNoValue, moert::kNoValue, weight({kInter, kHidden}),
               weight({kInter, kHidden}), weight({kHidden, kInter}), moert::kNoValue,
               moert::kNoValue, moert::kNoValue, weight({1, kHidden})});
    g.mark_output(g.add("add", "out", {m, r}));
  }
  static std::vector<Tensor> inputs(int64_t tokens, int64_t past, std::mt19937& rng) {
    Tensor pos = Tensor::empty(DType::i32, {tokens});
    for (int64_t i = 0; i < tokens; ++i) pos.data_as<int32_t>()[i] = static_cast<int32_t>(past + i);
    return {random_ints(DType::i32, {tokens}, 0, kVocab - 1, rng), pos};
  }
};

TEST(CudaBackend, ADecoderLayerMatchesTheReferenceOverSteps) {
  REQUIRE_CUDA_DEVICE();
  LayerGraph layer;
  Executor dev(layer.g, on("cuda:0"));
  Executor ref(layer.g, on("reference"));
  std::mt19937 rng(5);
  int64_t past = 0;
  // A prefill above the GEMV and MoE-GEMV limits, decode steps, another prefill.
  for (int64_t tokens : {12, 1, 1, 3, 20}) {
    const std::vector<Tensor> in = LayerGraph::inputs(tokens, past, rng);
    const SymbolValues s = SymbolValues::of(tokens, past);
    const std::vector<double> got = dev.run(in, s)[0].to_doubles();
    const std::vector<double> want = ref.run(in, s)[0].to_doubles();
    double scale = 0;
    for (double w : want) scale = std::max(scale, std::fabs(w));
    // Above 8 rows the bf16 and fp8 projections may round x to bf16.
    const double tolerance = tokens > 8 ? 3e-2 : 1e-4;
    EXPECT_LT(moert::testing::max_rel_error(got, want, 1e-2 * scale), tolerance)
        << "T=" << tokens << " P=" << past;
    past += tokens;
  }
  for (const char* state : {"k_cache", "v_cache"})
    EXPECT_LT(moert::testing::max_rel_error(dev.read_state(state).to_doubles(),
                                            ref.read_state(state).to_doubles(), 1e-3),
              3e-2)
        << state;
}

// Decode steps (T <= 8) run as CUDA graphs: the first is captured, later
// ones replay it unchanged (attention reads P on the device, so nothing
// else changes from step to step), another T is captured again, and every
// step gives the reference's results; no graph falls back to launching node
// by node.
TEST(CudaBackend, DecodeStepsRunAsCudaGraphs) {
  REQUIRE_CUDA_DEVICE();
  auto enabled = testing_symbol<FlagFn>(backend, "moert_cuda_testing_graphs_enabled");
  auto stats = testing_symbol<GraphStatsFn>(backend, "moert_cuda_testing_graph_stats");
  ASSERT_NE(enabled, nullptr);
  ASSERT_NE(stats, nullptr);
  if (!enabled())
    GTEST_SKIP() << "CUDA graphs are off (MOERT_CUDA_GRAPHS=0 or MOERT_CUDA_BASELINE_KERNELS=1)";
  LayerGraph layer;
  Executor dev(layer.g, on("cuda:0"));
  Executor ref(layer.g, on("reference"));
  std::mt19937 rng(7);
  int64_t made0 = 0, updated0 = 0, replayed0 = 0, off0 = 0;
  stats(&made0, &updated0, &replayed0, &off0);
  auto check = [&](int64_t tokens, int64_t past, const std::vector<Tensor>& in) {
    const SymbolValues s = SymbolValues::of(tokens, past);
    const std::vector<double> got = dev.run(in, s)[0].to_doubles();
    const std::vector<double> want = ref.run(in, s)[0].to_doubles();
    double scale = 0;
    for (double w : want) scale = std::max(scale, std::fabs(w));
    EXPECT_LT(moert::testing::max_rel_error(got, want, 1e-2 * scale), 1e-4)
        << "T=" << tokens << " P=" << past;
    return got;
  };
  check(10, 0, LayerGraph::inputs(10, 0, rng));  // a prefill: node by node
  for (int64_t past = 10; past < 16; ++past) check(1, past, LayerGraph::inputs(1, past, rng));
  int64_t made1 = 0, updated1 = 0, replayed1 = 0, off1 = 0;
  stats(&made1, &updated1, &replayed1, &off1);
  EXPECT_EQ(off1, off0) << "a graph fell back to launching node by node";
  EXPECT_GE((made1 - made0) + (updated1 - updated0), 1) << "the first decode step is captured";
  EXPECT_GE(replayed1 - replayed0, 5) << "later decode steps replay it as P grows";
  // Another T is captured again; the same step twice (it writes the same
  // cache rows again) gives the same result.
  const std::vector<Tensor> in = LayerGraph::inputs(2, 16, rng);
  const std::vector<double> first = check(2, 16, in);
  const std::vector<double> again = check(2, 16, in);
  EXPECT_EQ(first, again);
  int64_t made2 = 0, updated2 = 0, replayed2 = 0, off2 = 0;
  stats(&made2, &updated2, &replayed2, &off2);
  EXPECT_GE((made2 - made1) + (updated2 - updated1), 1) << "T = 2 is captured";
  EXPECT_GT(replayed2, replayed1) << "the unchanged T = 2 step is replayed";
  EXPECT_EQ(off2, off0);
}

// Whole models with random weights on cuda:0 against the reference
// backend, through a session.  Mixtral; Qwen2-MoE (qkv biases, a gated
// shared expert, tied embeddings); DeepSeek-V3 (MLA, grouped sigmoid
// routing with the score bias, a dense first layer, fp8 blocks with partial
// edges).  Tolerances on max |diff| / max |ref| per logit row, as in
// tests/python/test_backend_models.py: f32 activations 1e-4 (both sides
// form f32 products of the same weights), bf16 3e-2 (every op rounds to
// bf16 and one-ulp flips compound).  With f32 activations the session runs a
// 24-token prefill (tiled attention, expert tiles, cuBLASLt), six decode
// steps (CUDA graphs replayed as P grows) and a 20-token chunk over the
// cache; with bf16 the prompts stay at 8 tokens, since above that a matrix
// unit's rounding may flip a router's near-tie (the bf16 tensor-core paths
// are held to their tolerance op by op in the conformance suite).
TEST(CudaBackend, RandomModelsMatchTheReferenceOverASession) {
  REQUIRE_CUDA_DEVICE();
  struct Variant {
    const char* name;
    nlohmann::json config;
    const char* weights;
    DType act;
    double tolerance;
  };
  const std::vector<Variant> variants = {
      {"mixtral f32", moert::testing::tiny_mixtral(), "f32", DType::f32, 1e-4},
      {"qwen2_moe f32", moert::testing::tiny_qwen2_moe(), "f32", DType::f32, 1e-4},
      {"deepseek_v3 fp8", moert::testing::tiny_deepseek_v3(), "fp8", DType::f32, 1e-4},
      {"mixtral bf16", moert::testing::tiny_mixtral(), "bf16", DType::bf16, 3e-2},
      {"qwen2_moe bf16", moert::testing::tiny_qwen2_moe(), "bf16", DType::bf16, 3e-2},
      {"deepseek_v3 bf16", moert::testing::tiny_deepseek_v3(), "bf16", DType::bf16, 3e-2},
  };
  std::mt19937 rng(11);
  for (const Variant& v : variants) {
    moert::RandomWeights w;
    w.dtype = v.weights;
    w.seed = 1;
    w.name = v.name;
    moert::LoadOptions o;
    o.dtype = v.act;
    o.device = "cuda:0";
    o.strict = true;
    std::unique_ptr<moert::Model> dev = moert::Model::random(v.config.dump(), w, o);
    o.device = "reference";
    o.strict = false;
    std::unique_ptr<moert::Model> ref = moert::Model::random(v.config.dump(), w, o);
    std::uniform_int_distribution<int32_t> token(0,
                                                 static_cast<int32_t>(dev->info().vocab_size) - 1);
    const bool long_steps = v.act == DType::f32;
    std::vector<int64_t> lengths = {long_steps ? 24 : 8, 1, 1, 1, 1, 1, 1};
    if (long_steps) lengths.push_back(20);
    moert::Session ds = dev->session(), rs = ref->session();
    for (size_t i = 0; i < lengths.size(); ++i) {
      std::vector<int32_t> step(static_cast<size_t>(lengths[i]));
      for (int32_t& t : step) t = token(rng);
      const Tensor got = ds.append(step);
      const Tensor want = rs.append(step);
      ASSERT_EQ(got.shape(), want.shape()) << v.name;
      const int64_t vocab = want.shape().back();
      const std::vector<double> g = got.to_doubles(), r = want.to_doubles();
      for (int64_t row = 0; row < lengths[i]; ++row) {
        double diff = 0, scale = 0;
        for (int64_t c = 0; c < vocab; ++c) {
          const size_t at = static_cast<size_t>(row * vocab + c);
          diff = std::max(diff, std::fabs(g[at] - r[at]));
          scale = std::max(scale, std::fabs(r[at]));
        }
        EXPECT_LE(diff, v.tolerance * scale)
            << v.name << ": step " << i << " (T=" << lengths[i] << "), row " << row;
      }
    }
  }
}

TEST(CudaBackend, ProfilingTimesEveryNodeAndGemmPlansAreReused) {
  REQUIRE_CUDA_DEVICE();
  LayerGraph layer;
  Executor dev(layer.g, on("cuda:0"));
  dev.set_profiling(true);
  std::mt19937 rng(6);
  dev.run(LayerGraph::inputs(16, 0, rng), SymbolValues::of(16, 0));
  ASSERT_FALSE(dev.profile().empty());
  for (const moert::NodeTiming& t : dev.profile()) EXPECT_GE(t.seconds, 0.0) << t.node;
  auto plans = testing_symbol<PlansFn>(backend, "moert_cuda_testing_gemm_plans");
  ASSERT_NE(plans, nullptr);
  int64_t size0 = 0, hits0 = 0, misses0 = 0, size1 = 0, hits1 = 0, misses1 = 0;
  ASSERT_EQ(plans(0, &size0, &hits0, &misses0), MOERT_OK);
  dev.run(LayerGraph::inputs(16, 16, rng), SymbolValues::of(16, 16));
  ASSERT_EQ(plans(0, &size1, &hits1, &misses1), MOERT_OK);
  EXPECT_GT(size0, 0);
  EXPECT_EQ(size1, size0) << "the same shapes planned again";
  EXPECT_GT(hits1, hits0);
}

// The contract's out-of-memory test (tests/conformance/contract.cpp) checks
// the size; the CUDA message also says what is free, and on which device.
TEST(CudaBackend, OutOfMemoryNamesTheSizeAndTheFreeMemory) {
  REQUIRE_CUDA_DEVICE();
  moert_error err{};
  err.struct_size = sizeof(err);
  moert_buffer b = nullptr;
  const uint64_t huge = uint64_t{1} << 52;
  EXPECT_EQ(backend->api().buffer_alloc(0, huge, &b, &err), MOERT_ERR_OUT_OF_MEMORY);
  EXPECT_EQ(b, nullptr);
  const std::string msg = err.message;
  EXPECT_NE(msg.find(std::to_string(huge)), std::string::npos) << msg;
  EXPECT_NE(msg.find("bytes free"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
  // The device still works afterwards.
  ASSERT_EQ(backend->api().buffer_alloc(0, 64, &b, &err), MOERT_OK) << err.message;
  backend->api().buffer_free(b);
}

}  // namespace
