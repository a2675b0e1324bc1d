// The oneDNN matmul primitive cache (onednn.h).
#include "onednn.h"

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>

namespace moert::cpu::gemm {
namespace {

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;
constexpr dnnl::memory::dim kRuntime = DNNL_RUNTIME_DIM_VAL;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dt dnnl_type(moert_dtype t) {
  switch (t) {
    case MOERT_DTYPE_F32:
      return dt::f32;
    case MOERT_DTYPE_BF16:
      return dt::bf16;
    default:
      plugin::fail(std::string("oneDNN matmul of ") + plugin::dtype_name(t) + " operands",
                   MOERT_ERR_INTERNAL);
  }
}

// (dtype, transpose_b).
using BatchedKey = std::tuple<int, bool>;

std::mutex& cache_mutex() {
  static std::mutex m;
  return m;
}

template <typename Key>
std::map<Key, dnnl::matmul>& cache() {
  static std::map<Key, dnnl::matmul> c;
  return c;
}

// The cached primitive for `key`, made by `make` on first use.
template <typename Key, typename Make>
dnnl::matmul lookup(const Key& key, Make&& make) {
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto& c = cache<Key>();
  auto it = c.find(key);
  if (it == c.end()) it = c.emplace(key, make()).first;
  return it->second;
}

void execute(const dnnl::matmul& prim, const dnnl::memory& a, const dnnl::memory& b,
             const dnnl::memory& y) {
  dnnl::stream s(engine());
  prim.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, y}});
  s.wait();
}

[[noreturn]] void rethrow(const dnnl::error& e, const std::string& what) {
  plugin::fail("oneDNN " + what + ": " + e.what(), MOERT_ERR_INTERNAL);
}

}  // namespace

void onednn_matmul_nt(moert_dtype t, const void* a, int64_t lda, const void* b, int64_t ldb,
                      int64_t m, int64_t n, int64_t k, float* y, int64_t ldy) {
  if (m <= 0 || n <= 0) return;
  const dt type = dnnl_type(t);
  try {
    // b [n, k] row-major read as the [k, n] weights: strides {1, ldb}.
    const dnnl::memory::desc ad({m, k}, type, dims{lda, 1});
    const dnnl::memory::desc bd({k, n}, type, dims{1, ldb});
    const dnnl::memory::desc yd({m, n}, dt::f32, dims{ldy, 1});
    const dnnl::matmul prim(dnnl::matmul::primitive_desc(dnnl::matmul::desc(ad, bd, yd), engine()));
    execute(prim, dnnl::memory(ad, engine(), const_cast<void*>(a)),
            dnnl::memory(bd, engine(), const_cast<void*>(b)), dnnl::memory(yd, engine(), y));
  } catch (const dnnl::error& e) {
    rethrow(e, "matmul [" + std::to_string(m) + ", " + std::to_string(k) + "] x [" +
                   std::to_string(n) + ", " + std::to_string(k) + "]^T");
  }
}

void onednn_batched_matmul(moert_dtype t, const void* a, const void* b, bool transpose_b,
                           int64_t batch, int64_t m, int64_t k, int64_t n, float* y) {
  if (batch <= 0 || m <= 0 || n <= 0) return;
  const dt type = dnnl_type(t);
  try {
    const BatchedKey key{static_cast<int>(t), transpose_b};
    dnnl::matmul prim = lookup(key, [&] {
      const dims any3{kRuntime, kRuntime, kRuntime};
      const dnnl::memory::desc ad(any3, type, dims{kRuntime, kRuntime, 1});
      const dnnl::memory::desc bd(
          any3, type, transpose_b ? dims{kRuntime, 1, kRuntime} : dims{kRuntime, kRuntime, 1});
      const dnnl::memory::desc yd(any3, dt::f32, dims{kRuntime, kRuntime, 1});
      return dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(ad, bd, yd), engine()));
    });
    const dnnl::memory am({{batch, m, k}, type, dims{m * k, k, 1}}, engine(), const_cast<void*>(a));
    const dnnl::memory bm(
        {{batch, k, n}, type, transpose_b ? dims{n * k, 1, k} : dims{k * n, n, 1}}, engine(),
        const_cast<void*>(b));
    const dnnl::memory ym({{batch, m, n}, dt::f32, dims{m * n, n, 1}}, engine(), y);
    execute(prim, am, bm, ym);
  } catch (const dnnl::error& e) {
    rethrow(e, "batched matmul");
  }
}

}  // namespace moert::cpu::gemm
