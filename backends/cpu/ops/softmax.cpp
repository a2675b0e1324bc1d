// softmax over the last axis (ops/softmax.cpp): rows in parallel, computed in
// f32 with the row max subtracted first.
#include <cmath>
#include <vector>

#include "convert.h"
#include "kernel.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

std::string check(const NodeDesc& node) {
  if (!is_activation(node.input(0).dtype()))
    return std::string("softmax of ") + plugin::dtype_name(node.input(0).dtype());
  return "";
}

class Softmax final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    const int64_t n = x.rank == 0 ? 1 : x.dim(-1), rows = x.rows();
    parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1)),
                 [&](int64_t r0, int64_t r1) {
                   std::vector<float> row(static_cast<size_t>(n));
                   for (int64_t r = r0; r < r1; ++r) {
                     to_f32(x.dtype, x.data, r * n, n, row.data());
                     float m = -INFINITY;
                     for (int64_t i = 0; i < n; ++i) m = std::max(m, row[static_cast<size_t>(i)]);
                     float sum = 0;
                     for (int64_t i = 0; i < n; ++i) {
                       row[static_cast<size_t>(i)] = std::exp(row[static_cast<size_t>(i)] - m);
                       sum += row[static_cast<size_t>(i)];
                     }
                     const float inv = 1.0f / sum;
                     for (int64_t i = 0; i < n; ++i) row[static_cast<size_t>(i)] *= inv;
                     from_f32(row.data(), n, y.dtype, y.data, r * n);
                   }
                 });
  }
};

std::unique_ptr<Kernel> create(const NodeDesc&) { return std::make_unique<Softmax>(); }

const KernelRegistration registration({"softmax", check, create});

}  // namespace
}  // namespace moert::cpu
