// embedding (ops/embedding.cpp): y[p, :] = table[ids[p], :] for every
// position p of ids (i32 or i64, any rank).  Rows are copied as bytes when
// the output dtype is the table's, else converted through f32 (exact for
// every activation dtype) and rounded once.  Every id is checked before any
// row is written; one outside [0, V) is an error naming it, its position and
// V.
#include <algorithm>
#include <cstring>
#include <string>

#include "convert.h"
#include "kernel.h"
#include "op_checks.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

int64_t id_at(const Tensor& ids, int64_t p) {
  return ids.dtype == MOERT_DTYPE_I64 ? ids.as<const int64_t>()[p] : ids.as<const int32_t>()[p];
}

class Embedding final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& table = ctx.in(0);
    const Tensor& ids = ctx.in(1);
    const Tensor& y = ctx.out(0);
    const int64_t vocab = table.shape[0], hidden = table.shape[1], n = ids.numel();
    for (int64_t p = 0; p < n; ++p) {
      const int64_t id = id_at(ids, p);
      if (id < 0 || id >= vocab) fail(plugin::embedding_error(ids, p, id, vocab));
    }
    if (y.numel() != n * hidden) fail("output size is not ids' size times H");
    if (n == 0 || hidden == 0) return;
    const size_t row_in = static_cast<size_t>(hidden) * plugin::dtype_size(table.dtype);
    const size_t row_out = static_cast<size_t>(hidden) * plugin::dtype_size(y.dtype);
    const auto* src = static_cast<const char*>(table.data);
    auto* dst = static_cast<char*>(y.data);
    // Work in elements: a few rows of a wide table are still shared.
    parallel_for(n * hidden, 65536, [&](int64_t begin, int64_t end) {
      constexpr int64_t kChunk = 512;
      float buf[kChunk];
      for (int64_t pos = begin; pos < end;) {
        const int64_t p = pos / hidden, h = pos - p * hidden;
        const int64_t len = std::min(hidden - h, end - pos);
        const int64_t id = id_at(ids, p);
        if (table.dtype == y.dtype) {
          const size_t es = plugin::dtype_size(y.dtype);
          std::memcpy(dst + static_cast<size_t>(p) * row_out + static_cast<size_t>(h) * es,
                      src + static_cast<size_t>(id) * row_in + static_cast<size_t>(h) * es,
                      static_cast<size_t>(len) * es);
        } else {
          for (int64_t c = 0; c < len; c += kChunk) {
            const int64_t m = std::min(kChunk, len - c);
            to_f32(table.dtype, table.data, id * hidden + h + c, m, buf);
            from_f32(buf, m, y.dtype, y.data, p * hidden + h + c);
          }
        }
        pos += len;
      }
    });
  }
};

std::unique_ptr<Kernel> create(const NodeDesc&) { return std::make_unique<Embedding>(); }

const KernelRegistration registration({"embedding", plugin::check_embedding, create});

}  // namespace
}  // namespace moert::cpu
