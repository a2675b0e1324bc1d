// moe (kernels/moe.cl): routed SwiGLU experts plus an optional shared
// expert, with the expert ids read on the device (no host round trip; bad
// ids are reported through an error slot).  x is widened to f32 once.
//  - Few tokens (decode): per token and chosen expert, GEMV kernels read
//    only that expert's rows; the shared expert is one more fixed expert.
//    With a shared expert the routed sum stays in f32 and the shared part
//    is added before the single rounding to x's dtype.
//  - Many tokens (prefill, CPU-style devices): the (token, slot) pairs are
//    grouped by expert on the device (counts, panel offsets, permutation),
//    every active expert runs one GEMM over its tokens, and a combine
//    kernel applies the routing weights; the shared expert runs as plain
//    GEMMs (gemm.h).
// Weights are read as stored (kernels/weights.cl): routed and shared
// experts each in their dtype or packed as attributes quant and
// shared_quant say (version 2 of moe), gate and up of one kind, down
// possibly another (int4 zero points are per scale tensor).
// Version 3: the routed experts' biases (f32, bf16 or f16, read in the
// kernels: gate and up ones before the activation, the down one before the
// routing weight) and the clamped activation (swiglu_alpha, swiglu_limit,
// swiglu_up_offset, for the shared expert too).  Without either, every
// kernel takes its plain path (one uniform branch per work-item in the
// GEMVs, the plain swiglu kernels in the grouped path).
#include <array>
#include <optional>
#include <utility>
#include <vector>

#include "gemm.h"
#include "moe_inputs.h"
#include "op_checks.h"
#include "op_params.h"

namespace moert::ocl {
namespace {

using namespace plugin::moe_inputs;

constexpr const char* kFile = "moe.cl";
// Tokens from which the grouped path beats the per-token GEMVs.
constexpr int64_t kGroupedTokens = 4;
constexpr int64_t kGemmRows = 6;  // GEMM_NR of weights.cl

// The kind of weight matrix input `w` (gate, up, down or a shared one): its
// scale is input w + 3, its format attribute quant or shared_quant.
WeightKind kind_of(const NodeDesc& node, size_t w) {
  return weight_kind(node, w, w + 3, w >= kSharedGate ? "shared_quant" : "quant");
}

std::string check_matrix(const NodeDesc& node, size_t w, const char* name) {
  if (!node.has_input(w)) return std::string("moe without ") + name;
  return check_weight(node, kind_of(node, w), w, w + 3, std::string("moe ") + name);
}

std::string check_moe(const NodeDesc& node, const Device&) {
  if (!is_activation(node.input(kX).dtype()))
    return "moe input of " + dtype_str(node.input(kX).dtype());
  const moert_dtype ids = node.input(kIds).dtype();
  if (ids != MOERT_DTYPE_I32 && ids != MOERT_DTYPE_I64)
    return "moe expert ids of " + dtype_str(ids);
  if (!is_float(node.input(kWeights).dtype())) return "moe expert weights of a non-float dtype";
  for (auto [w, name] : {std::pair{kGate, "gate"}, {kUp, "up"}, {kDown, "down"}})
    if (std::string r = check_matrix(node, w, name); !r.empty()) return r;
  // gate and up run in one kernel, built for one kind of weight.
  if (node.input(kGate).dtype() != node.input(kUp).dtype())
    return "moe gate and up of different dtypes";
  if (kind_of(node, kGate) != kind_of(node, kUp))
    return "moe gate and up scales with and without int4 zero points";
  if (node.has_input(kSharedGate)) {
    for (auto [w, name] : {std::pair{kSharedGate, "shared_gate"},
                           {kSharedUp, "shared_up"},
                           {kSharedDown, "shared_down"}})
      if (std::string r = check_matrix(node, w, name); !r.empty()) return r;
    if (node.input(kSharedGate).dtype() != node.input(kSharedUp).dtype())
      return "moe shared_gate and shared_up of different dtypes";
    if (kind_of(node, kSharedGate) != kind_of(node, kSharedUp))
      return "moe shared_gate and shared_up scales with and without int4 zero points";
  }
  if (node.has_input(kSharedExpertGate) && !is_activation(node.input(kSharedExpertGate).dtype()))
    return "moe shared_expert_gate of " + dtype_str(node.input(kSharedExpertGate).dtype());
  const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0) return "bad block_size";
  for (size_t b : {kGateBias, kUpBias, kDownBias})
    if (node.has_input(b) && !is_activation(node.input(b).dtype()))
      return "moe bias of " + dtype_str(node.input(b).dtype());
  plugin::swiglu_params(node, "swiglu_");  // throws (a reason) when invalid
  return "";
}

std::string wt_option(const NodeDesc& node, size_t input) { return kind_of(node, input).options(); }

// Block-scale geometry of one stacked matrix [.., rows, cols].
struct Blocks {
  int32_t b0 = 1, b1 = 1, srows = 1, scols = 1;
};

Blocks blocks_of(const NodeDesc& node, size_t w, int64_t rows, int64_t cols) {
  Blocks b;
  if (!kind_of(node, w).scaled()) {
    b.b1 = static_cast<int32_t>(std::max<int64_t>(cols, 1));  // one block per row, no scale
    return b;
  }
  const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
  b.b0 = static_cast<int32_t>(block[0]);
  b.b1 = static_cast<int32_t>(block[1]);
  b.srows = static_cast<int32_t>((rows + block[0] - 1) / block[0]);
  b.scols = static_cast<int32_t>((cols + block[1] - 1) / block[1]);
  return b;
}

// An f32 tensor at `offset` bytes into scratch memory.
Tensor f32_view(cl_mem mem, uint64_t offset, std::initializer_list<int64_t> shape) {
  Tensor t;
  t.dtype = MOERT_DTYPE_F32;
  t.mem = mem;
  t.offset = offset;
  for (int64_t d : shape) t.shape[t.rank++] = d;
  return t;
}

class Moe final : public Kernel {
 public:
  explicit Moe(PrepareContext& pc) {
    const NodeDesc& node = pc.node();
    const std::string gu = wt_option(node, kGate), dn = wt_option(node, kDown);
    cast_ = pc.kernel("elementwise.cl", "cast_any");
    gate_up_ = pc.kernel(kFile, "moe_gate_up", gu);
    down_ = pc.kernel(kFile, "moe_down", dn);
    const int64_t hidden = node.input(kX).static_dim(1);
    const int64_t inter = node.input(kGate).static_dim(1);
    gu_blocks_ = blocks_of(node, kGate, inter, hidden);
    down_blocks_ = blocks_of(node, kDown, hidden, inter);
    slot_ = pc.reserve_error_slots(1);
    const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
    block_ = {block[0], block[1]};
    shared_ = node.has_input(kSharedGate);
    const plugin::SwigluParams act = plugin::swiglu_params(node, "swiglu_");
    act_alpha_ = static_cast<float>(act.alpha);
    act_limit_ = act.limit > 0 ? static_cast<float>(act.limit) : INFINITY;
    act_up_offset_ = static_cast<float>(act.up_offset);
    general_act_ = !act.plain();
    biased_ = node.has_input(kGateBias) || node.has_input(kUpBias) || node.has_input(kDownBias);
    grouped_ = pc.device().style() == KernelStyle::cpu;
    if (grouped_) {
      count_ = pc.kernel(kFile, "moe_count", gu);
      panels_ = pc.kernel(kFile, "moe_panels", gu);
      fill_ = pc.kernel(kFile, "moe_fill", gu);
      pack_ = pc.kernel(kFile, "moe_pack", gu);
      gemm_gu_ = pc.kernel(kFile, "moe_gemm", gu);
      swiglu_ = pc.kernel(kFile, general_act_ || biased_ ? "moe_swiglu_act" : "moe_swiglu", gu);
      gemm_down_ = pc.kernel(kFile, "moe_gemm", dn);
      combine_ = pc.kernel(kFile, "moe_combine", gu);
    }
    if (shared_) {
      const int64_t shared_inter = node.input(kSharedGate).static_dim(0);
      shared_gate_up_ = pc.kernel(kFile, "moe_gate_up", wt_option(node, kSharedGate));
      shared_down_ = pc.kernel(kFile, "moe_down", wt_option(node, kSharedDown));
      shared_gu_blocks_ = blocks_of(node, kSharedGate, shared_inter, hidden);
      shared_down_blocks_ = blocks_of(node, kSharedDown, hidden, shared_inter);
      if (node.has_input(kSharedExpertGate))
        gate_ = pc.kernel(kFile, "moe_shared_gate", wt_option(node, kSharedGate));
      if (grouped_) {
        shared_gemm_gate_.emplace(pc, kind_of(node, kSharedGate));
        shared_gemm_up_.emplace(pc, kind_of(node, kSharedUp));
        shared_gemm_down_.emplace(pc, kind_of(node, kSharedDown));
        swiglu_pair_ =
            pc.kernel("elementwise.cl", general_act_ ? "swiglu_pair_act" : "swiglu_pair");
      }
    }
  }

  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(kX), &ids = ctx.in(kIds);
    const int64_t tokens = x.dim(0);
    require(ids.dim(0) == tokens, "input 'expert_ids' has " + std::to_string(ids.dim(0)) +
                                      " rows, input 'x' has " + std::to_string(tokens) + " tokens");
    if (tokens == 0) return;
    Device& d = ctx.device();
    // x as f32.
    Tensor xf = x;
    Device::ScratchBlock x_f32;
    if (x.dtype != MOERT_DTYPE_F32) {
      const uint64_t count = static_cast<uint64_t>(x.numel());
      x_f32 = ctx.scratch(count * 4, "x as f32");
      xf.mem = x_f32.get();
      xf.offset = 0;
      xf.dtype = MOERT_DTYPE_F32;
      ctx.args(cast_).tensor(x).i32(x.dtype).tensor(xf).i32(MOERT_DTYPE_F32).u64(count);
      ctx.launch(cast_, {count}, {d.elementwise_wg()});
    }
    if (grouped_ && tokens >= kGroupedTokens)
      run_grouped(ctx, xf);
    else
      run_per_token(ctx, xf);
  }

  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const auto id = static_cast<int64_t>(read_element(ctx, ctx.in(kIds), position));
    return plugin::expert_id_error(position, ctx.in(kIds).dim(1), id, ctx.in(kGate).dim(0));
  }

 private:
  const Tensor& optional(const ExecContext& ctx, size_t i) const {
    return ctx.has(i) ? ctx.in(i) : none_;
  }

  // Bias input b as the kernels take it: buffer, offset, dtype (-1: absent;
  // always for the shared expert, `routed` false).
  void bias_args(Args& a, const ExecContext& ctx, size_t b, bool routed = true) const {
    const bool has = routed && ctx.has(b);
    a.tensor(has ? ctx.in(b) : none_).i32(has ? static_cast<int32_t>(ctx.in(b).dtype) : -1);
  }

  // Shared expert gates g_t, in scratch memory; an empty block (get() is
  // nullptr) without a shared_expert_gate.
  Device::ScratchBlock shared_gates(const ExecContext& ctx, const Tensor& xf) const {
    if (!ctx.has(kSharedExpertGate)) return {};
    const Tensor& g = ctx.in(kSharedExpertGate);
    const int64_t tokens = xf.dim(0), hidden = xf.dim(1);
    Device::ScratchBlock block =
        ctx.scratch(static_cast<uint64_t>(tokens) * 4, "shared expert gates");
    cl_mem gates = block.get();
    ctx.args(gate_)
        .tensor(xf)
        .tensor(g)
        .i32(g.dtype)
        .mem(gates)
        .i32(static_cast<int32_t>(tokens))
        .i32(static_cast<int32_t>(hidden));
    ctx.launch(gate_, {static_cast<size_t>(tokens)}, {gate_wg(ctx)});
    return block;
  }

  static size_t gate_wg(const ExecContext& ctx) {
    return ctx.device().style() == KernelStyle::cpu ? 1 : 64;
  }

  void run_per_token(const ExecContext& ctx, const Tensor& xf) const {
    const Tensor &ids = ctx.in(kIds), &w = ctx.in(kWeights), &out = ctx.out(0);
    const int64_t tokens = xf.dim(0), hidden = xf.dim(1), k = ids.dim(1);
    const int64_t experts = ctx.in(kGate).dim(0), inter = ctx.in(kGate).dim(1);
    const size_t wg = gate_wg(ctx);
    // Routed experts: h = swiglu per (token, slot), then the weighted down.
    const uint64_t slots = static_cast<uint64_t>(tokens * k);
    const auto h_block =
        ctx.scratch(slots * static_cast<uint64_t>(inter) * 4, "expert activations");
    cl_mem h = h_block.get();
    gate_up(ctx, gate_up_, xf, ids, -1, ctx.in(kGate), ctx.in(kUp), optional(ctx, kGateScale),
            optional(ctx, kUpScale), h, tokens, k, experts, inter, hidden, gu_blocks_, wg, true);
    Tensor acc = out;
    Device::ScratchBlock acc_block;
    if (shared_) {
      acc_block = ctx.scratch(static_cast<uint64_t>(tokens * hidden) * 4, "the routed sum");
      acc = f32_view(acc_block.get(), 0, {tokens, hidden});
    }
    down(ctx, down_, h, k, -1, ids, w, nullptr, ctx.in(kDown), optional(ctx, kDownScale), nullptr,
         acc, tokens, experts, hidden, inter, down_blocks_, wg, true);
    if (!shared_) return;
    // The shared expert: one fixed expert, weighted by its gate (or 1).
    const int64_t shared_inter = ctx.in(kSharedGate).dim(0);
    const auto hs_block =
        ctx.scratch(static_cast<uint64_t>(tokens * shared_inter) * 4, "shared expert activations");
    cl_mem hs = hs_block.get();
    gate_up(ctx, shared_gate_up_, xf, none_, 0, ctx.in(kSharedGate), ctx.in(kSharedUp),
            optional(ctx, kSharedGateScale), optional(ctx, kSharedUpScale), hs, tokens, 1, 1,
            shared_inter, hidden, shared_gu_blocks_, wg, false);
    down(ctx, shared_down_, hs, 1, 0, none_, none_, shared_gates(ctx, xf).get(),
         ctx.in(kSharedDown), optional(ctx, kSharedDownScale), acc.mem, out, tokens, 1, hidden,
         shared_inter, shared_down_blocks_, wg, false);
  }

  void run_grouped(const ExecContext& ctx, const Tensor& xf) const {
    const Tensor &ids = ctx.in(kIds), &w = ctx.in(kWeights), &out = ctx.out(0);
    const int64_t tokens = xf.dim(0), hidden = xf.dim(1), k = ids.dim(1);
    const int64_t experts = ctx.in(kGate).dim(0), inter = ctx.in(kGate).dim(1);
    Device& d = ctx.device();
    const int32_t pairs = static_cast<int32_t>(tokens * k), E = static_cast<int32_t>(experts);
    const int32_t P = (pairs + 31) / 32 + E;  // the most panels any routing needs
    const int32_t ids64 = ids.dtype == MOERT_DTYPE_I64 ? 1 : 0;
    const size_t ew = d.elementwise_wg();
    // 1. Group the pairs by expert.
    const auto route_block =
        ctx.scratch((2 * static_cast<uint64_t>(E) + 33 * static_cast<uint64_t>(P) +
                     static_cast<uint64_t>(pairs)) *
                        4,
                    "the grouping of pairs by expert");
    cl_mem route = route_block.get();
    ctx.args(count_).tensor(ids).i32(ids64).i32(pairs).i32(E).mem(route);
    ctx.launch(count_, {static_cast<size_t>(E)}, {1});
    ctx.args(panels_)
        .tensor(ids)
        .i32(ids64)
        .i32(pairs)
        .i32(E)
        .i32(P)
        .mem(route)
        .mem(ctx.errors)
        .i32(slot_);
    ctx.launch(panels_, {1}, {1});
    ctx.args(fill_).tensor(ids).i32(ids64).i32(pairs).i32(E).i32(P).mem(route);
    ctx.launch(fill_, {static_cast<size_t>(E)}, {1});
    // 2. Pack x per panel; gate and up GEMMs; swiglu; down GEMM.
    const uint64_t rows = 32 * static_cast<uint64_t>(P);
    const auto xp_block = ctx.scratch(rows * static_cast<uint64_t>(hidden) * 4, "x in panels");
    cl_mem xp = xp_block.get();
    ctx.args(pack_)
        .tensor(xf)
        .mem(route)
        .i32(E)
        .i32(P)
        .i32(static_cast<int32_t>(k))
        .i32(static_cast<int32_t>(hidden))
        .mem(xp);
    ctx.launch(pack_, {rows * static_cast<uint64_t>(hidden)}, {ew});
    const auto g_block = ctx.scratch(rows * static_cast<uint64_t>(inter) * 4, "gate outputs");
    const auto u_block = ctx.scratch(rows * static_cast<uint64_t>(inter) * 4, "up outputs");
    const auto y_block = ctx.scratch(rows * static_cast<uint64_t>(hidden) * 4, "down outputs");
    cl_mem g = g_block.get(), u = u_block.get(), y = y_block.get();
    panel_gemm(ctx, gemm_gu_, xp, route, E, P, ctx.in(kGate), optional(ctx, kGateScale), g, inter,
               hidden, gu_blocks_);
    panel_gemm(ctx, gemm_gu_, xp, route, E, P, ctx.in(kUp), optional(ctx, kUpScale), u, inter,
               hidden, gu_blocks_);
    const uint64_t n = rows * static_cast<uint64_t>(inter);
    if (general_act_ || biased_) {
      Args a = ctx.args(swiglu_);
      a.mem(g).mem(u).u64(n).mem(route).i32(E).i32(static_cast<int32_t>(inter));
      bias_args(a, ctx, kGateBias);
      bias_args(a, ctx, kUpBias);
      a.f32(act_alpha_).f32(act_limit_).f32(act_up_offset_);
    } else {
      ctx.args(swiglu_).mem(g).mem(u).u64(n);
    }
    ctx.launch(swiglu_, {n}, {ew});
    panel_gemm(ctx, gemm_down_, g, route, E, P, ctx.in(kDown), optional(ctx, kDownScale), y, hidden,
               inter, down_blocks_);
    // 3. The shared expert as plain GEMMs, then the weighted combination.
    cl_mem shared = nullptr, gates = nullptr;
    Device::ScratchBlock shared_block, gates_block;
    uint64_t shared_offset = 0;
    if (shared_) {
      const int64_t si = ctx.in(kSharedGate).dim(0);
      const uint64_t a = static_cast<uint64_t>(tokens * si) * 4;
      shared_block = ctx.scratch(2 * a + static_cast<uint64_t>(tokens * hidden) * 4,
                                 "shared expert intermediates");
      shared = shared_block.get();
      shared_offset = 2 * a;
      const Tensor gs = f32_view(shared, 0, {tokens, si}), us = f32_view(shared, a, {tokens, si});
      dense(ctx, *shared_gemm_gate_, xf, kSharedGate, kSharedGateScale, gs);
      dense(ctx, *shared_gemm_up_, xf, kSharedUp, kSharedUpScale, us);
      const uint64_t count = static_cast<uint64_t>(tokens * si);
      Args act = ctx.args(swiglu_pair_);
      act.tensor(gs).tensor(us).tensor(gs).i32(MOERT_DTYPE_F32).u64(count);
      if (general_act_) act.f32(act_alpha_).f32(act_limit_).f32(act_up_offset_);
      ctx.launch(swiglu_pair_, {count}, {ew});
      dense(ctx, *shared_gemm_down_, gs, kSharedDown, kSharedDownScale,
            f32_view(shared, shared_offset, {tokens, hidden}));
      gates_block = shared_gates(ctx, xf);
      gates = gates_block.get();
    }
    Args combine = ctx.args(combine_);
    combine.mem(y)
        .mem(route)
        .i32(E)
        .i32(P)
        .i32(static_cast<int32_t>(k))
        .tensor(w)
        .i32(w.dtype)
        .mem(shared ? shared : ctx.placeholder)
        .u64(shared_offset)
        .i32(shared ? 1 : 0)
        .mem(gates ? gates : ctx.placeholder)
        .i32(gates ? 1 : 0)
        .tensor(out)
        .i32(out.dtype)
        .i32(static_cast<int32_t>(tokens))
        .i32(static_cast<int32_t>(hidden));
    bias_args(combine, ctx, kDownBias);
    ctx.launch(combine_, {static_cast<size_t>(hidden), static_cast<size_t>(tokens)}, {ew, 1});
  }

  // A shared-expert matrix as a dense product over every token.
  void dense(const ExecContext& ctx, const Gemm& gemm, const Tensor& x, size_t weight, size_t scale,
             const Tensor& y) const {
    const Tensor& wt = ctx.in(weight);
    Gemm::Problem p;
    p.x = &x;
    p.w = wt.mem;
    p.w_offset = wt.offset;
    p.scale = ctx.has(scale) ? &ctx.in(scale) : nullptr;
    p.y = &y;
    p.m = x.dim(0);
    p.n = wt.dim(0);
    p.k = x.dim(1);  // a packed weight stores two columns per byte
    if (p.scale) {
      p.b0 = block_[0];
      p.b1 = block_[1];
    }
    gemm.run(ctx, p);
  }

  void panel_gemm(const ExecContext& ctx, const ClKernel& kernel, cl_mem xp, cl_mem route,
                  int32_t E, int32_t P, const Tensor& w, const Tensor& scale, cl_mem out,
                  int64_t rows, int64_t cols, const Blocks& b) const {
    ctx.args(kernel)
        .mem(xp)
        .mem(route)
        .i32(E)
        .i32(P)
        .tensor(w)
        .tensor(scale)
        .mem(out)
        .i32(static_cast<int32_t>(rows))
        .i32(static_cast<int32_t>(cols))
        .i32(b.b0)
        .i32(b.b1)
        .i32(b.srows)
        .i32(b.scols);
    ctx.launch(kernel,
               {static_cast<size_t>((rows + kGemmRows - 1) / kGemmRows), static_cast<size_t>(P)},
               {1, 1});
  }

  void gate_up(const ExecContext& ctx, const ClKernel& kernel, const Tensor& xf, const Tensor& ids,
               int32_t fixed, const Tensor& g, const Tensor& u, const Tensor& gs, const Tensor& us,
               cl_mem h, int64_t tokens, int64_t k, int64_t experts, int64_t rows, int64_t cols,
               const Blocks& b, size_t wg, bool routed) const {
    Args a = ctx.args(kernel);
    a.tensor(xf)
        .tensor(ids)
        .i32(ids.dtype == MOERT_DTYPE_I64 ? 1 : 0)
        .i32(fixed)
        .tensor(g)
        .tensor(u)
        .tensor(gs)
        .tensor(us)
        .mem(h)
        .i32(static_cast<int32_t>(tokens))
        .i32(static_cast<int32_t>(k))
        .i32(static_cast<int32_t>(experts))
        .i32(static_cast<int32_t>(rows))
        .i32(static_cast<int32_t>(cols))
        .i32(b.b0)
        .i32(b.b1)
        .i32(b.srows)
        .i32(b.scols)
        .mem(ctx.errors ? ctx.errors : ctx.placeholder)
        .i32(slot_);
    bias_args(a, ctx, kGateBias, routed);
    bias_args(a, ctx, kUpBias, routed);
    a.i32(general_act_ || (routed && biased_) ? 1 : 0)
        .f32(act_alpha_)
        .f32(act_limit_)
        .f32(act_up_offset_);
    ctx.launch(kernel, {static_cast<size_t>((rows + 3) / 4), static_cast<size_t>(tokens * k)},
               {wg, 1});
  }

  void down(const ExecContext& ctx, const ClKernel& kernel, cl_mem h, int64_t slots, int32_t fixed,
            const Tensor& ids, const Tensor& w, cl_mem gates, const Tensor& dw, const Tensor& ds,
            cl_mem addend, const Tensor& out, int64_t tokens, int64_t experts, int64_t rows,
            int64_t cols, const Blocks& b, size_t wg, bool routed) const {
    Args a = ctx.args(kernel);
    a.mem(h)
        .i32(static_cast<int32_t>(slots))
        .i32(fixed)
        .tensor(ids)
        .i32(ids.dtype == MOERT_DTYPE_I64 ? 1 : 0)
        .tensor(w)
        .i32(w.dtype)
        .mem(gates ? gates : ctx.placeholder)
        .i32(gates ? 1 : 0)
        .tensor(dw)
        .tensor(ds)
        .mem(addend ? addend : ctx.placeholder)
        .i32(addend ? 1 : 0)
        .tensor(out)
        .i32(out.dtype)
        .i32(static_cast<int32_t>(tokens))
        .i32(static_cast<int32_t>(experts))
        .i32(static_cast<int32_t>(rows))
        .i32(static_cast<int32_t>(cols))
        .i32(b.b0)
        .i32(b.b1)
        .i32(b.srows)
        .i32(b.scols);
    bias_args(a, ctx, kDownBias, routed);
    ctx.launch(kernel, {static_cast<size_t>((rows + 3) / 4), static_cast<size_t>(tokens)}, {wg, 1});
  }

  const Tensor none_;
  ClKernel cast_, gate_up_, down_, shared_gate_up_, shared_down_, gate_;
  ClKernel count_, panels_, fill_, pack_, gemm_gu_, swiglu_, gemm_down_, combine_, swiglu_pair_;
  std::optional<Gemm> shared_gemm_gate_, shared_gemm_up_, shared_gemm_down_;
  Blocks gu_blocks_, down_blocks_, shared_gu_blocks_, shared_down_blocks_;
  std::array<int64_t, 2> block_{128, 128};
  bool shared_ = false, grouped_ = false;
  // Version 3: the activation's parameters (limit +inf: none) and whether
  // it is not plain SwiGLU; whether the node has any routed bias.
  float act_alpha_ = 1.0f, act_limit_ = INFINITY, act_up_offset_ = 0.0f;
  bool general_act_ = false, biased_ = false;
  int slot_ = 0;
};

std::unique_ptr<Kernel> create_moe(PrepareContext& pc) { return std::make_unique<Moe>(pc); }

// Version 2: packed weights (attributes quant and shared_quant); version 3:
// routed biases and the clamped activation.
KernelDef moe_def() {
  KernelDef def("moe", check_moe, create_moe);
  def.version = 3;
  return def;
}

const KernelRegistration moe_reg(moe_def());

}  // namespace
}  // namespace moert::ocl
