// router (softmax / sigmoid / softmax_topk scoring; greedy, grouped and
// noaux_tc selection; bias, normalisation, scaling), in double on the
// device, one block per token.  Non-finite logits or bias entries are
// reported through error slots.
#include <cmath>

#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

// The router's attributes for E experts (plugin::router_params); throws
// with the reason.
launch::Router router_params(const NodeDesc& n, int64_t experts) {
  plugin::RouterParams p;
  if (std::string problem = plugin::router_params(n, experts, &p); !problem.empty()) fail(problem);
  launch::Router r;
  r.top_k = p.top_k;
  r.scoring = static_cast<int>(p.scoring);
  r.method = static_cast<int>(p.method);
  r.n_group = p.n_group;
  r.topk_group = p.topk_group;
  r.normalize = p.normalize;
  r.normalize_eps = p.normalize_eps;
  r.scaling_factor = p.scaling_factor;
  return r;
}

std::string check_router(const NodeDesc& node) {
  const TensorDesc l = node.input(0);
  if (!is_float(l.dtype())) return "router logits of " + dtype_str(l.dtype());
  if (l.rank() != 2 || l.static_dim(1) < 1) return "router needs logits [T, E], E static";
  if (l.static_dim(1) > launch::kRouterMaxExperts)
    return "router over more than " + std::to_string(launch::kRouterMaxExperts) + " experts";
  if (node.has_input(1) && !is_float(node.input(1).dtype())) return "router bias must be float";
  if (node.num_outputs() != 2 || node.output(0).dtype() != MOERT_DTYPE_I32 ||
      node.output(1).dtype() != MOERT_DTYPE_F32)
    return "router outputs must be i32 ids and f32 weights";
  try {
    router_params(node, l.static_dim(1));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

class Router final : public Kernel {
 public:
  explicit Router(PrepareContext& pc)
      : params_(router_params(pc.node(), pc.node().input(0).static_dim(1))),
        slot_(pc.reserve_error_slots(2)) {}
  void run(ExecContext& ctx) override {
    const Tensor& logits = ctx.in(0);
    launch::Router r = params_;
    r.logits_t = logits.dtype;
    r.logits = logits.data;
    if (ctx.has(1)) {
      r.bias_t = ctx.in(1).dtype;
      r.bias = ctx.in(1).data;
    }
    r.ids = static_cast<int32_t*>(ctx.out(0).data);
    r.weights = static_cast<float*>(ctx.out(1).data);
    r.tokens = logits.dim(0);
    r.experts = logits.dim(1);
    r.bias_error = ctx.error_slot(slot_);
    r.logits_error = ctx.error_slot(slot_ + 1);
    launch::router(ctx.stream(), r);
  }
  std::string describe_error(ExecContext& ctx, int slot, int64_t position) override {
    return plugin::router_error(slot, position, ctx.in(0).dim(1),
                                read_element(ctx, ctx.in(slot == 0 ? 1 : 0), position));
  }

 private:
  launch::Router params_;
  int slot_;
};

std::unique_ptr<Kernel> create_router(PrepareContext& pc) { return std::make_unique<Router>(pc); }

const KernelRegistration router_reg({"router", check_router, create_router});

}  // namespace
}  // namespace moert::cuda
