// cache_update (ops/attention.cpp): writes this call's T rows into a KV cache
// (a state input, in place) at rows P..P+T-1, rounded to the cache dtype,
// after checking they fit (a context overflow writes nothing), and returns
// a copy of the cache's rows 0..P+T-1.  Copies in parallel chunks.
#include <cstring>

#include "attention_common.h"
#include "kernel.h"
#include "op_checks.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

class CacheUpdate final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& cache = ctx.in(0);
    const Tensor& x = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t capacity = cache.dim(0), tokens = x.dim(0), past = ctx.symbols.past;
    const int64_t row = capacity > 0 ? cache.numel() / capacity : 0;
    attn::check_capacity(past, tokens, capacity);
    require(y.dim(0) == past + tokens && x.numel() == tokens * row,
            "input 'x' and the output do not fit P = " + std::to_string(past) +
                " and the cache's rows of " + std::to_string(row) + " elements");
    parallel_for(tokens * row, 1 << 16, [&](int64_t b, int64_t e) {
      vec::convert(x.dtype, x.data, b, cache.dtype, cache.data, past * row + b, e - b);
    });
    const int64_t bytes = static_cast<int64_t>(y.nbytes());
    parallel_for(bytes, 1 << 18, [&](int64_t b, int64_t e) {
      std::memcpy(static_cast<char*>(y.data) + b, static_cast<const char*>(cache.data) + b,
                  static_cast<size_t>(e - b));
    });
  }
};

std::unique_ptr<Kernel> create(const NodeDesc&) { return std::make_unique<CacheUpdate>(); }

const KernelRegistration registration({"cache_update", plugin::check_cache_update, create});

}  // namespace
}  // namespace moert::cpu
