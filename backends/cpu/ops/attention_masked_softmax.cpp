// masked_softmax (ops/attention.cpp): softmax of scale * scores over the keys
// each query may see (causal, sliding window), with an optional sink term
// per head; masked entries are exactly 0.  Rows in parallel, f32 math.
#include <omp.h>

#include <cmath>
#include <cstring>

#include "attention_common.h"
#include "kernel.h"
#include "parallel.h"
#include "vec/vec.h"

namespace moert::cpu {
namespace {

std::string check(const NodeDesc& node) {
  const TensorDesc x = node.input(0);
  if (!attn::is_activation(x.dtype()))
    return std::string("masked_softmax of ") + plugin::dtype_name(x.dtype());
  if (x.rank() != 3) return "scores must be [nh, T, L]";
  if (node.has_input(1) && !plugin::dtype_is_float(node.input(1).dtype()))
    return std::string("sinks of dtype ") + plugin::dtype_name(node.input(1).dtype());
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from the scores'";
  return attn::mask_problem(node);
}

class MaskedSoftmax final : public Kernel {
 public:
  explicit MaskedSoftmax(const NodeDesc& node) : mask_(attn::mask_params(node, 1.0)) {}

  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    const int64_t nh = x.dim(0), tokens = x.dim(1), len = x.dim(2);
    if (len < tokens)
      fail("input 'scores' [" + std::to_string(nh) + ", " + std::to_string(tokens) + ", " +
           std::to_string(len) + "] has fewer keys than queries");
    const float* sinks = nullptr;
    const auto sinks_block = ctx.scratch(ctx.has(1) ? nh * sizeof(float) : 0, "the sinks as f32");
    if (ctx.has(1)) {
      float* s = kit::floats(sinks_block);
      vec::widen(ctx.in(1).dtype, ctx.in(1).data, 0, nh, s);
      sinks = s;
    }
    const size_t esize = plugin::dtype_size(y.dtype);
    const int64_t stride = (len + 15) / 16 * 16;
    const auto rows_block =
        ctx.scratch(static_cast<uint64_t>(num_threads() * stride) * sizeof(float), "f32 rows");
    float* rows_buf = kit::floats(rows_block);
    const float scale = static_cast<float>(mask_.scale);
    parallel_for(nh * tokens, std::max<int64_t>(1, 2048 / std::max<int64_t>(len, 1)),
                 [&](int64_t r0, int64_t r1) {
                   float* row = rows_buf + omp_get_thread_num() * stride;
                   char* out = static_cast<char*>(y.data);
                   for (int64_t r = r0; r < r1; ++r) {
                     const int64_t h = r / tokens, p = len - tokens + r % tokens;
                     const int64_t a = mask_.lo(p), b = mask_.hi(p, len);
                     const int64_t n = std::max<int64_t>(b - a, 0);
                     vec::widen(x.dtype, x.data, r * len + a, n, row);
                     vec::scale(row, n, scale);
                     float mx = vec::max_of(row, n);
                     if (sinks) mx = std::max(sinks[h], mx);
                     float denom = vec::exp_sum(row, n, mx);
                     if (sinks) denom += std::exp(sinks[h] - mx);
                     // A row with nothing to normalise stays 0 (as the
                     // reference); it cannot occur, every query sees itself.
                     if (denom > 0.0f) vec::scale(row, n, 1.0f / denom);
                     std::memset(out + static_cast<size_t>(r * len) * esize, 0,
                                 static_cast<size_t>(std::min(a, len)) * esize);
                     if (b < len)
                       std::memset(out + static_cast<size_t>(r * len + std::max(a, b)) * esize, 0,
                                   static_cast<size_t>(len - std::max(a, b)) * esize);
                     vec::narrow(row, n, y.dtype, y.data, r * len + a);
                   }
                 });
  }

 private:
  attn::MaskParams mask_;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) {
  return std::make_unique<MaskedSoftmax>(node);
}

const KernelRegistration registration({"masked_softmax", check, create});

}  // namespace
}  // namespace moert::cpu
