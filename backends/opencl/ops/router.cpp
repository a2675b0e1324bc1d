// router (kernels/router.cl).  Attributes are validated at
// prepare; invalid logits, bias entries and expert ids are found on the
// device and reported through error slots (kernel.h).
#include <cstdio>

#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "router.cl";
constexpr int64_t kMaxTopK = 64;  // the weights array of the router kernel

// The attributes as the router kernel takes them.
struct RouterArgs {
  int32_t top_k = 1, scoring = 0, method = 0, n_group = 1, topk_group = 1, normalize = 0;
  float normalize_eps = 0, scaling_factor = 1;
};

// The attributes (plugin::router_params), or a reason they cannot be served.
std::string router_args(const NodeDesc& node, int64_t experts, RouterArgs* out) {
  plugin::RouterParams p;
  if (std::string problem = plugin::router_params(node, experts, &p); !problem.empty())
    return problem;
  if (p.top_k > kMaxTopK) return "top_k above " + std::to_string(kMaxTopK);
  out->top_k = static_cast<int32_t>(p.top_k);
  out->scoring = static_cast<int32_t>(p.scoring);
  out->method = static_cast<int32_t>(p.method);
  out->n_group = static_cast<int32_t>(p.n_group);
  out->topk_group = static_cast<int32_t>(p.topk_group);
  out->normalize = p.normalize ? 1 : 0;
  out->normalize_eps = static_cast<float>(p.normalize_eps);
  out->scaling_factor = static_cast<float>(p.scaling_factor);
  return "";
}

std::string check_router(const NodeDesc& node, const Device&) {
  const TensorDesc l = node.input(0);
  if (!is_float(l.dtype())) return "router logits of " + dtype_str(l.dtype());
  if (l.rank() != 2 || l.static_dim(1) <= 0) return "router logits must be [T, E], E static";
  if (node.has_input(1) && !is_float(node.input(1).dtype()))
    return "router bias of " + dtype_str(node.input(1).dtype());
  RouterArgs p;
  return router_args(node, l.static_dim(1), &p);
}

class Router final : public Kernel {
 public:
  explicit Router(PrepareContext& pc)
      : k_(pc.kernel(kFile, "router")), slot_(pc.reserve_error_slots(2)) {
    router_args(pc.node(), pc.node().input(0).static_dim(1), &p_);
  }
  void run(ExecContext& ctx) override {
    const Tensor &logits = ctx.in(0), &ids = ctx.out(0), &weights = ctx.out(1);
    const int64_t tokens = logits.dim(0), experts = logits.dim(1);
    const size_t wide = ctx.device().caps().fp64 ? 8 : 4;
    const uint64_t per_token = static_cast<uint64_t>(2 * experts + 2 * p_.n_group);
    const auto work_block = ctx.scratch(
        std::max<uint64_t>(1, static_cast<uint64_t>(tokens)) * per_token * wide, "router scores");
    cl_mem work = work_block.get();
    const Tensor none;
    const Tensor& bias = ctx.has(1) ? ctx.in(1) : none;
    ctx.args(k_)
        .tensor(logits)
        .i32(logits.dtype)
        .tensor(bias)
        .i32(bias.dtype)
        .i32(ctx.has(1) ? 1 : 0)
        .tensor(ids)
        .tensor(weights)
        .mem(work)
        .i32(static_cast<int32_t>(tokens))
        .i32(static_cast<int32_t>(experts))
        .i32(p_.top_k)
        .i32(p_.scoring)
        .i32(p_.method)
        .i32(p_.n_group)
        .i32(p_.topk_group)
        .i32(p_.normalize)
        .f32(p_.normalize_eps)
        .f32(p_.scaling_factor)
        .mem(ctx.errors)
        .i32(slot_);
    const size_t wg = ctx.device().style() == KernelStyle::cpu ? 1 : 64;
    ctx.launch(k_, {static_cast<size_t>(tokens)}, {wg});
  }
  std::string describe_error(ExecContext& ctx, int slot, int64_t position) override {
    return plugin::router_error(slot, position, ctx.in(0).dim(1),
                                read_element(ctx, ctx.in(slot == 0 ? 1 : 0), position));
  }

 private:
  ClKernel k_;
  int slot_;
  RouterArgs p_;
};

std::unique_ptr<Kernel> create_router(PrepareContext& pc) { return std::make_unique<Router>(pc); }

const KernelRegistration router_reg({"router", check_router, create_router});

}  // namespace
}  // namespace moert::ocl
