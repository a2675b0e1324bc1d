// routing_dense: the [T, k] expert choices of a router as a dense [T, E]
// weight matrix (kernels/router.cl); expert ids out of range are found on
// the device and reported through an error slot.
#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "router.cl";

std::string check_routing_dense(const NodeDesc& node, const Device&) {
  const moert_dtype ids = node.input(0).dtype(), w = node.input(1).dtype();
  if (ids != MOERT_DTYPE_I32 && ids != MOERT_DTYPE_I64) return "expert ids of " + dtype_str(ids);
  if (!is_float(w)) return "expert weights of " + dtype_str(w);
  if (node.attr_int("num_experts", 0) <= 0) return "num_experts must be > 0";
  return "";
}

class RoutingDense final : public Kernel {
 public:
  explicit RoutingDense(PrepareContext& pc)
      : k_(pc.kernel(kFile, "routing_dense")),
        slot_(pc.reserve_error_slots(1)),
        experts_(pc.node().attr_int("num_experts", 1)) {}
  void run(ExecContext& ctx) override {
    const Tensor &ids = ctx.in(0), &w = ctx.in(1), &dense = ctx.out(0);
    const int64_t tokens = ids.dim(0), k = ids.dim(1);
    ctx.args(k_)
        .tensor(ids)
        .i32(ids.dtype == MOERT_DTYPE_I64 ? 1 : 0)
        .tensor(w)
        .i32(w.dtype)
        .tensor(dense)
        .i32(static_cast<int32_t>(tokens))
        .i32(static_cast<int32_t>(k))
        .i32(static_cast<int32_t>(experts_))
        .mem(ctx.errors)
        .i32(slot_);
    const size_t wg = ctx.device().style() == KernelStyle::cpu ? 1 : 64;
    ctx.launch(k_, {static_cast<size_t>(tokens)}, {wg});
  }
  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const auto id = static_cast<int64_t>(read_element(ctx, ctx.in(0), position));
    return plugin::expert_id_error(position, ctx.in(0).dim(1), id, experts_);
  }

 private:
  ClKernel k_;
  int slot_;
  int64_t experts_;
};

std::unique_ptr<Kernel> create_routing_dense(PrepareContext& pc) {
  return std::make_unique<RoutingDense>(pc);
}

const KernelRegistration routing_dense_reg({"routing_dense", check_routing_dense,
                                            create_routing_dense});

}  // namespace
}  // namespace moert::ocl
