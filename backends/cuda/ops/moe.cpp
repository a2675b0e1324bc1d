// moe (op version 3): routed SwiGLU experts plus optional shared experts
// (with the optional sigmoid gate), every weight f32, bf16, f16 or f8_e4m3
// with block scales, or packed (attributes quant for the routed experts,
// shared_quant for the shared ones, independently: int8, int4 with or
// without zero points, mxfp4; packed.h) with group scales, kept packed on
// the device and dequantised as the kernels load them; x f32, bf16 or f16.
// Nothing waits for the host:
//   few tokens (decode): one GEMV block per (token, slot) reads its expert
//     from the ids on the device;
//   many tokens: the (token, slot) pairs are grouped by expert on the
//     device (moe_route), then tiled GEMMs run over the groups.
// Products and sums are f32 of the exact operands in both forms, except
// that with bf16/f16 x, on a GPU with bf16 tensor cores, the experts with
// more than kGemvMaxRows rows (the shared expert: more than that many
// tokens) take the tensor-core tiles: operands rounded to bf16, f32 sums.
// f32 x keeps f32 products everywhere (f32 activations promise them), as
// does MOERT_CUDA_BASELINE_KERNELS=1.  The combine adds a token's slots in
// slot order, then the shared expert.
// Version 3 (GPT-OSS): the routed experts' gate and up biases are added and
// the clamped activation applied where every gate_up form stores its
// output (expert_act: GEMV scalar, vectorised and packed, SIMT and
// tensor-core tiles; the activation for the shared expert too), the down
// bias in the combine, before the routing weight; biases f32, bf16 or f16,
// read as stored.  Without them the kernels take their plain paths (one
// uniform branch per output element).
#include <cstdint>

#include "kernel.h"
#include "kernels/launch.h"
#include "moe_inputs.h"
#include "op_checks.h"
#include "op_params.h"
#include "options.h"
#include "packed.h"

namespace moert::cuda {
namespace {

using namespace plugin::moe_inputs;

// Up to this many tokens take the GEMV form.
constexpr int64_t kGemvTokens = 4;

// Weight w (in format q: rows x cols, stacked over the experts or not) and
// its scale s.
std::string check_weight(const NodeDesc& node, size_t w, size_t s, const char* name, Quant q,
                         bool stacked, int64_t rows, int64_t cols,
                         const std::vector<int64_t>& block) {
  if (!node.has_input(w)) return "";
  if (q != Quant::none)
    return check_packed_weight(node, q, w, s, stacked, rows, cols, block,
                               std::string("moe ") + name);
  const TensorDesc t = node.input(w);
  if (!is_weight_dtype(t.dtype()))
    return std::string("moe ") + name + " of " + dtype_str(t.dtype());
  if (!t.all_static()) return std::string("moe ") + name + " with a symbolic shape";
  if (t.dtype() == MOERT_DTYPE_F8_E4M3) {
    if (!node.has_input(s) || node.input(s).dtype() != MOERT_DTYPE_F32)
      return std::string("moe ") + name + " is f8_e4m3 without an f32 scale";
  } else if (node.has_input(s)) {
    return std::string("moe ") + name + " takes no scale unless f8_e4m3 or packed";
  }
  return "";
}

std::string check_moe(const NodeDesc& node) {
  const TensorDesc x = node.input(kX);
  if (!is_activation(x.dtype())) return "moe of x in " + dtype_str(x.dtype());
  if (x.rank() != 2 || x.static_dim(1) <= 0) return "moe with x not [T, H] with a static H";
  if (!is_index(node.input(kIds).dtype())) return "moe expert ids must be i32 or i64";
  if (!is_float(node.input(kWeights).dtype())) return "moe expert weights must be float";
  if (node.input(kIds).rank() != 2) return "moe expert ids must be [T, k]";
  if (node.input(kGate).rank() != 3 || node.input(kUp).rank() != 3 || node.input(kDown).rank() != 3)
    return "moe expert weights must be [E, rows, cols]";
  if (node.input(kGate).static_dim(0) > launch::kMoeMaxExperts)
    return "moe with more than " + std::to_string(launch::kMoeMaxExperts) + " experts";
  const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0)
    return "moe with a block_size that is not two sizes > 0";
  Quant routed = Quant::none, shared_q = Quant::none;
  if (!quant_attr(node, "quant", &routed) || !quant_attr(node, "shared_quant", &shared_q))
    return "moe with quant \"" + node.attr_string("quant", "") + "\" or shared_quant \"" +
           node.attr_string("shared_quant", "") + "\", an unknown format";
  const bool shared = node.has_input(kSharedGate);
  if (shared != node.has_input(kSharedUp) || shared != node.has_input(kSharedDown))
    return "moe needs all three shared expert matrices or none";
  // Logical sizes (packed weights hold their columns packed): H from x, I
  // and Is from the gate matrices' rows.
  const int64_t hidden = x.static_dim(1), inter = node.input(kGate).static_dim(1);
  const int64_t shared_inter = shared ? node.input(kSharedGate).static_dim(0) : 0;
  static const char* const names[] = {"gate",        "up",        "down",
                                      "shared_gate", "shared_up", "shared_down"};
  const size_t weights[] = {kGate, kUp, kDown, kSharedGate, kSharedUp, kSharedDown};
  const size_t scales[] = {kGateScale,       kUpScale,       kDownScale,
                           kSharedGateScale, kSharedUpScale, kSharedDownScale};
  const int64_t rows[] = {inter, inter, hidden, shared_inter, shared_inter, hidden};
  const int64_t cols[] = {hidden, hidden, inter, hidden, hidden, shared_inter};
  for (size_t i = 0; i < 6; ++i) {
    const std::string r = check_weight(node, weights[i], scales[i], names[i],
                                       i < 3 ? routed : shared_q, i < 3, rows[i], cols[i], block);
    if (!r.empty()) return r;
  }
  if (node.has_input(kSharedExpertGate) &&
      (!shared || !is_activation(node.input(kSharedExpertGate).dtype())))
    return "moe with shared_expert_gate in " + dtype_str(node.input(kSharedExpertGate).dtype()) +
           " or without a shared expert";
  if (node.output(0).dtype() != x.dtype()) return "output dtype differs from x's";
  for (size_t b : {kGateBias, kUpBias, kDownBias})
    if (node.has_input(b) && !is_activation(node.input(b).dtype()))
      return "moe bias of " + dtype_str(node.input(b).dtype());
  plugin::swiglu_params(node, "swiglu_");  // throws (a reason) when invalid
  return "";
}

class Moe final : public Kernel {
 public:
  explicit Moe(PrepareContext& pc) : slot_(pc.reserve_error_slots(1)) {
    const std::vector<int64_t> block = pc.node().attr_ints("block_size", {128, 128});
    b0_ = block[0];
    b1_ = block[1];
    // Checked by check_moe.
    quant_attr(pc.node(), "quant", &routed_);
    quant_attr(pc.node(), "shared_quant", &shared_);
    const plugin::SwigluParams act = plugin::swiglu_params(pc.node(), "swiglu_");
    general_act_ = !act.plain();
    act_.alpha = static_cast<float>(act.alpha);
    if (act.limit > 0) act_.limit = static_cast<float>(act.limit);
    act_.up_offset = static_cast<float>(act.up_offset);
  }

  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(kX);
    const Tensor& ids = ctx.in(kIds);
    const int64_t tokens = x.dim(0), hidden = x.dim(1), top_k = ids.dim(1);
    const int64_t experts = ctx.in(kGate).dim(0), inter = ctx.in(kGate).dim(1);
    require(ids.dim(0) == tokens, "input 'expert_ids' has " + std::to_string(ids.dim(0)) +
                                      " rows, input 'x' has " + std::to_string(tokens) + " tokens");
    require(ctx.in(kDown).dim(1) == hidden &&
                ctx.in(kDown).dim(2) == packed_row_bytes(routed_, inter) &&
                ctx.in(kGate).dim(2) == packed_row_bytes(routed_, hidden),
            "input 'gate' " + shape_str(ctx.in(kGate)) + " or 'down' " + shape_str(ctx.in(kDown)) +
                " does not match [E, I, H] and [E, H, I] (quant \"" + quant_name(routed_) + "\")");
    if (tokens == 0) return;
    const int64_t slots = tokens * top_k;
    const bool gemv = tokens <= kGemvTokens;
    cudaStream_t s = ctx.stream();
    // The tiled form's split: experts with up to kGemvMaxRows rows keep the
    // exact SIMT tiles, larger ones go to the tensor cores.
    const bool tensor_cores = (x.dtype == MOERT_DTYPE_BF16 || x.dtype == MOERT_DTYPE_F16) &&
                              !baseline_kernels() && ctx.device().caps().bf16_tensor_cores;
    auto gemm = [&](const launch::ExpertProjection& p) {
      if (tensor_cores) {
        launch::expert_gemm(s, p, launch::kGemvMaxRows);
        launch::expert_gemm_tc(s, p, launch::kGemvMaxRows);
      } else {
        launch::expert_gemm(s, p, INT64_MAX);
      }
    };

    DeviceBlock h = ctx.scratch(static_cast<uint64_t>(slots * inter) * 4, "moe activations");
    DeviceBlock y = ctx.scratch(static_cast<uint64_t>(slots * hidden) * 4, "moe expert outputs");
    launch::ExpertProjection up;
    up.gate_up = true;
    up.units = slots;
    up.top_k = top_k;
    up.a_t = x.dtype;
    up.a = x.data;
    up.w1 = weights(ctx, kGate, kGateScale, routed_);
    up.w2 = weights(ctx, kUp, kUpScale, routed_);
    up.n = inter;
    up.k = hidden;
    up.out = h.as<float>();
    up.act = act_;
    if (ctx.has(kGateBias)) {
      up.gate_bias_t = ctx.in(kGateBias).dtype;
      up.gate_bias = ctx.in(kGateBias).data;
    }
    if (ctx.has(kUpBias)) {
      up.up_bias_t = ctx.in(kUpBias).dtype;
      up.up_bias = ctx.in(kUpBias).data;
    }
    up.general = general_act_ || up.gate_bias || up.up_bias;
    launch::ExpertProjection down;
    down.gate_up = false;
    down.units = slots;
    down.top_k = top_k;
    down.a_t = MOERT_DTYPE_F32;
    down.a = h.get();
    down.w1 = weights(ctx, kDown, kDownScale, routed_);
    down.n = hidden;
    down.k = inter;
    down.out = y.as<float>();
    DeviceBlock route_block;
    launch::MoeRoute route;
    if (gemv) {
      for (launch::ExpertProjection* p : {&up, &down}) {
        p->ids_t = ids.dtype;
        p->ids = ids.data;
        p->experts = experts;
        p->error = ctx.error_slot(slot_);
      }
      launch::expert_gemv(s, up);
      launch::expert_gemv(s, down);
    } else {
      route.max_tiles = launch::moe_max_tiles(slots, experts);
      const int64_t ints = slots + experts + 1 + 2 * route.max_tiles;
      route_block = ctx.scratch(static_cast<uint64_t>(ints) * 4, "moe grouping by expert");
      int32_t* p = route_block.as<int32_t>();
      route.sorted_slot = p;
      route.expert_start = p + slots;
      route.tile_expert = route.expert_start + experts + 1;
      route.tile_start = route.tile_expert + route.max_tiles;
      launch::moe_route(s, ids.dtype, ids.data, slots, experts, route, ctx.error_slot(slot_));
      up.route = &route;
      down.route = &route;
      gemm(up);
      gemm(down);
    }

    launch::MoeCombine c;
    DeviceBlock sh, sy;
    if (ctx.has(kSharedGate)) {
      const int64_t shared_inter = ctx.in(kSharedGate).dim(0);
      sh = ctx.scratch(static_cast<uint64_t>(tokens * shared_inter) * 4,
                       "shared expert activations");
      sy = ctx.scratch(static_cast<uint64_t>(tokens * hidden) * 4, "shared expert outputs");
      launch::ExpertProjection su = up, sd = down;
      su.units = sd.units = tokens;
      su.top_k = sd.top_k = 1;
      su.ids = sd.ids = nullptr;
      su.route = sd.route = nullptr;
      su.gate_bias = su.up_bias = nullptr;  // biases are the routed experts'
      su.general = general_act_;
      su.w1 = weights(ctx, kSharedGate, kSharedGateScale, shared_);
      su.w2 = weights(ctx, kSharedUp, kSharedUpScale, shared_);
      su.n = shared_inter;
      su.out = sh.as<float>();
      sd.a = sh.get();
      sd.w1 = weights(ctx, kSharedDown, kSharedDownScale, shared_);
      sd.k = shared_inter;
      sd.out = sy.as<float>();
      if (gemv) {
        launch::expert_gemv(s, su);
        launch::expert_gemv(s, sd);
      } else {
        gemm(su);
        gemm(sd);
      }
      c.shared = sy.as<float>();
      if (ctx.has(kSharedExpertGate)) {
        c.gate_t = ctx.in(kSharedExpertGate).dtype;
        c.gate = ctx.in(kSharedExpertGate).data;
      }
    }
    c.tokens = tokens;
    c.top_k = top_k;
    c.hidden = hidden;
    c.w_t = ctx.in(kWeights).dtype;
    c.w = ctx.in(kWeights).data;
    c.routed = y.as<float>();
    c.x_t = x.dtype;
    c.x = x.data;
    c.out_t = ctx.out(0).dtype;
    c.out = ctx.out(0).data;
    if (ctx.has(kDownBias)) {
      c.down_bias_t = ctx.in(kDownBias).dtype;
      c.down_bias = ctx.in(kDownBias).data;
      c.ids_t = ids.dtype;
      c.ids = ids.data;
      c.experts = experts;
    }
    launch::moe_combine(s, c);
  }

  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const auto id = static_cast<int64_t>(read_element(ctx, ctx.in(kIds), position));
    return plugin::expert_id_error(position, ctx.in(kIds).dim(1), id, ctx.in(kGate).dim(0));
  }

 private:
  launch::Weights weights(const ExecContext& ctx, size_t w, size_t scale, Quant q) const {
    return weights_of(ctx.in(w), ctx.has(scale) ? &ctx.in(scale) : nullptr, q, b0_, b1_);
  }

  int slot_;
  int64_t b0_ = 128, b1_ = 128;
  Quant routed_ = Quant::none, shared_ = Quant::none;
  // Version 3: the activation (general_act_: not plain SwiGLU).
  launch::SwigluAct act_;
  bool general_act_ = false;
};

std::unique_ptr<Kernel> create_moe(PrepareContext& pc) { return std::make_unique<Moe>(pc); }

// Version 2: packed weights (attributes quant and shared_quant); version 3:
// routed biases and the clamped activation (swiglu_alpha, swiglu_limit,
// swiglu_up_offset).
KernelDef moe_def() {
  KernelDef d("moe", check_moe, create_moe);
  d.version = 3;
  return d;
}

const KernelRegistration moe_reg(moe_def());

}  // namespace
}  // namespace moert::cuda
