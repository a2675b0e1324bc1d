// routing_dense (ops/moe.cpp): the top-k routing weights scattered into a
// dense [T, E] f32 matrix (repeated ids in a row add up), for the dense
// decomposition of moe.  Ids are checked before anything is written.
#include <algorithm>
#include <string>

#include "convert.h"
#include "kernel.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

std::string check(const NodeDesc& node) {
  const moert_dtype ids = node.input(0).dtype();
  if (ids != MOERT_DTYPE_I32 && ids != MOERT_DTYPE_I64)
    return std::string("routing_dense with expert_ids in ") + plugin::dtype_name(ids);
  if (!plugin::dtype_is_float(node.input(1).dtype()))
    return std::string("routing_dense with expert_weights in ") +
           plugin::dtype_name(node.input(1).dtype());
  if (node.attr_int("num_experts", 0) <= 0) return "routing_dense without num_experts > 0";
  return "";
}

class RoutingDense final : public Kernel {
 public:
  explicit RoutingDense(const NodeDesc& node) : experts_(node.attr_int("num_experts", 0)) {}

  void run(ExecContext& ctx) override {
    const Tensor& ids = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor& out = ctx.out(0);
    const int64_t tokens = ids.dim(0), slots = ids.dim(1), experts = experts_;
    require(w.numel() == tokens * slots, "input 'expert_weights' does not match 'expert_ids'");
    auto id = [&](int64_t i) -> int64_t {
      return ids.dtype == MOERT_DTYPE_I32 ? ids.as<int32_t>()[i] : ids.as<int64_t>()[i];
    };
    for (int64_t i = 0; i < tokens * slots; ++i)
      if (id(i) < 0 || id(i) >= experts)
        fail("input 'expert_ids'[" + std::to_string(i / slots) + ", " + std::to_string(i % slots) +
             "] = " + std::to_string(id(i)) + " is out of range [0, " + std::to_string(experts) +
             ")");
    float* dense = out.as<float>();
    parallel_for(tokens, std::max<int64_t>(1, 4096 / experts), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* row = dense + t * experts;
        std::fill(row, row + experts, 0.0f);
        for (int64_t j = 0; j < slots; ++j)
          row[id(t * slots + j)] += load_f32(w.dtype, w.data, t * slots + j);
      }
    });
  }

 private:
  int64_t experts_;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) {
  return std::make_unique<RoutingDense>(node);
}

const KernelRegistration registration({"routing_dense", check, create});

}  // namespace
}  // namespace moert::cpu
