// routing_dense: the [T, k] expert choices of a router as a dense [T, E]
// weight matrix; an expert id out of range is reported through an error slot.
#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

std::string check_routing_dense(const NodeDesc& node) {
  const moert_dtype ids = node.input(0).dtype(), w = node.input(1).dtype();
  if (!is_index(ids)) return "expert ids of " + dtype_str(ids);
  if (!is_float(w)) return "expert weights of " + dtype_str(w);
  if (node.attr_int("num_experts", 0) <= 0) return "num_experts must be > 0";
  if (node.output(0).dtype() != MOERT_DTYPE_F32) return "routing_dense output must be f32";
  return "";
}

class RoutingDense final : public Kernel {
 public:
  explicit RoutingDense(PrepareContext& pc)
      : experts_(pc.node().attr_int("num_experts", 1)), slot_(pc.reserve_error_slots(1)) {}
  void run(ExecContext& ctx) override {
    const Tensor& ids = ctx.in(0);
    const Tensor& w = ctx.in(1);
    require(w.numel() == ids.numel(), "inputs 'expert_ids' and 'expert_weights' differ in size");
    launch::routing_dense(ctx.stream(), ids.dtype, ids.data, w.dtype, w.data,
                          static_cast<float*>(ctx.out(0).data), ids.dim(0), ids.dim(1), experts_,
                          ctx.error_slot(slot_));
  }
  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const auto id = static_cast<int64_t>(read_element(ctx, ctx.in(0), position));
    return plugin::expert_id_error(position, ctx.in(0).dim(1), id, experts_);
  }

 private:
  int64_t experts_;
  int slot_;
};

std::unique_ptr<Kernel> create_routing_dense(PrepareContext& pc) {
  return std::make_unique<RoutingDense>(pc);
}

const KernelRegistration routing_dense_reg({"routing_dense", check_routing_dense,
                                            create_routing_dense});

}  // namespace
}  // namespace moert::cuda
