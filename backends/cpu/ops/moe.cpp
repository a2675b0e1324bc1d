// moe (ops/moe.cpp): routed SwiGLU experts plus an optional shared expert,
// fused.  Per chunk of tokens:
//   1. routing: every (token, slot) pair is a route; routes are grouped by
//      expert (counts, offsets, and the route's position in its group);
//   2. each active expert's tokens are gathered into consecutive rows;
//   3. gate and up projections of every active expert (and of the shared
//      expert over all tokens) run as one batch: experts with few rows as
//      GEMV tasks sharing a single parallel pass over their weights, experts
//      with many rows as GEMMs (gemm/gemm.h);
//   4. act(gate + gate_bias, up + up_bias), in place: silu(g) * u, or the
//      clamped form of ops/swiglu_params.h (version 3, GPT-OSS), whatever
//      path (GEMV of any weight format, VNNI int8 products, oneDNN) formed
//      the f32 products;
//   5. the down projections, batched likewise;
//   6. per token: the sum over its slots of weight * (expert output +
//      down_bias), plus the shared output times
//      sigmoid(x . shared_expert_gate) when given, stored in x's dtype.
// Biases (f32, bf16 or f16) belong to the routed experts only; the
// activation's parameters apply to the shared expert too.  Without either,
// step 4 is the plain loop over all rows at once.
// Only the chosen experts' weights are read.  An expert id outside [0, E)
// fails the call before any computation.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "convert.h"
#include "gemm/gemm.h"
#include "gemm/gemv.h"
#include "gemm/isa.h"
#include "gemm/scratch.h"
#include "gemm/simd.h"
#include "kernel.h"
#include "moe_inputs.h"
#include "op_params.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

using namespace plugin::moe_inputs;

// Rows past the last route in the per-expert buffers (see run_chunk).
constexpr int64_t kSlack = 16;

// Tokens per chunk are chosen so the f32 intermediates stay near this.
constexpr int64_t kChunkFloats = int64_t{16} << 20;

bool is_weight(moert_dtype t) { return is_activation(t) || t == MOERT_DTYPE_F8_E4M3; }

// The format of attribute `attr` ("quant", "shared_quant"); inference has
// checked the name.
ops::WeightFormat format_of(const NodeDesc& node, const char* attr) {
  ops::WeightFormat f = ops::WeightFormat::none;
  ops::weight_format_from(node.attr_string(attr, "none"), &f);
  return f;
}

std::string check_weight(const NodeDesc& node, size_t w, size_t s, const char* name,
                         ops::WeightFormat format) {
  if (!node.has_input(w)) return "";
  const TensorDesc t = node.input(w);
  if (!t.all_static()) return std::string("moe with a symbolic ") + name;
  if (format != ops::WeightFormat::none) {
    // Inference has checked the packed layout; the kernels need the scales.
    if (!node.has_input(s)) return std::string("moe with a packed ") + name + " but no scale";
    return "";
  }
  if (!is_weight(t.dtype()))
    return std::string("moe with ") + name + " in " + plugin::dtype_name(t.dtype());
  if (t.dtype() == MOERT_DTYPE_F8_E4M3 &&
      (!node.has_input(s) || node.input(s).dtype() != MOERT_DTYPE_F32))
    return std::string("moe with an f8_e4m3 ") + name + " but no f32 scale";
  return "";
}

std::string check(const NodeDesc& node) {
  if (!is_activation(node.input(kX).dtype()))
    return std::string("moe of x in ") + plugin::dtype_name(node.input(kX).dtype());
  const moert_dtype ids = node.input(kIds).dtype();
  if (ids != MOERT_DTYPE_I32 && ids != MOERT_DTYPE_I64)
    return std::string("moe with expert_ids in ") + plugin::dtype_name(ids);
  if (!plugin::dtype_is_float(node.input(kWeights).dtype()))
    return std::string("moe with expert_weights in ") +
           plugin::dtype_name(node.input(kWeights).dtype());
  const std::pair<size_t, const char*> weights[] = {{kGate, "gate"}, {kUp, "up"}, {kDown, "down"}};
  for (const auto& [i, name] : weights)
    if (std::string r = check_weight(node, i, i + 3, name, format_of(node, "quant")); !r.empty())
      return r;
  const std::pair<size_t, const char*> shared[] = {
      {kSharedGate, "shared_gate"}, {kSharedUp, "shared_up"}, {kSharedDown, "shared_down"}};
  for (const auto& [i, name] : shared)
    if (std::string r = check_weight(node, i, i + 3, name, format_of(node, "shared_quant"));
        !r.empty())
      return r;
  if (node.has_input(kSharedExpertGate) && !is_activation(node.input(kSharedExpertGate).dtype()))
    return "moe with shared_expert_gate in " +
           std::string(plugin::dtype_name(node.input(kSharedExpertGate).dtype()));
  const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0)
    return "moe with a block_size that is not two sizes > 0";
  if (node.input(kX).rank() != 2 || !plugin::dim_is_static(node.input(kX).dim(1)))
    return "moe with x not [T, H] with a static H";
  for (size_t b : {kGateBias, kUpBias, kDownBias})
    if (node.has_input(b) && !is_activation(node.input(b).dtype()))
      return "moe with a bias in " + std::string(plugin::dtype_name(node.input(b).dtype()));
  plugin::swiglu_params(node, "swiglu_");  // throws (a reason) when invalid
  return "";
}

// The activation's parameters in f32 (ops/swiglu_params.h); limit is +inf
// without a clamp, which min/clamp then leave every value alone.
struct Act {
  float alpha = 1.0f, limit = INFINITY, up_offset = 0.0f;
};

// g[i] = silu(g[i]) * u[i] = g / (1 + e^-g) * u for i < n, 16 at a time;
// kGeneral: g[i] = act(g[i] + gb[i], u[i] + ub[i]) with the clamped form
// (gb, ub may be null: no bias).
// e^x = 2^m e^r with m = round(x / ln 2) and r = x - m ln 2 (ln 2 split in
// two so m ln 2 is exact), e^r by its Taylor series to r^7 (|r| <= 0.35:
// truncation below 1e-8, relative error ~2e-7 overall), 2^m by vscalefps.
// x is clamped to [-87, 88] first, inside the range of normal floats.
template <bool kGeneral>
MOERT_AVX512 void swiglu_avx512(float* g, const float* u, int64_t n, const float* gb = nullptr,
                                const float* ub = nullptr, const Act& act = Act{}) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = static_cast<__mmask16>(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
    __m512 gv = _mm512_maskz_loadu_ps(mask, g + i);
    __m512 uv = _mm512_maskz_loadu_ps(mask, u + i);
    __m512 x;
    if constexpr (kGeneral) {
      if (gb) gv = _mm512_add_ps(gv, _mm512_maskz_loadu_ps(mask, gb + i));
      if (ub) uv = _mm512_add_ps(uv, _mm512_maskz_loadu_ps(mask, ub + i));
      // min(g, l) and clamp(u, -l, l) as std::min / std::clamp: a NaN
      // passes (vminps returns its second operand then).
      const __m512 lim = _mm512_set1_ps(act.limit);
      gv = _mm512_min_ps(lim, gv);
      uv = _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), lim), _mm512_min_ps(lim, uv));
      uv = _mm512_add_ps(uv, _mm512_set1_ps(act.up_offset));
      x = _mm512_mul_ps(_mm512_set1_ps(-act.alpha), gv);
    } else {
      x = _mm512_sub_ps(_mm512_setzero_ps(), gv);
    }
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 m = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(m, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(m, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    for (const float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
      p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    const __m512 e = _mm512_scalef_ps(p, m);
    _mm512_mask_storeu_ps(g + i, mask, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), uv));
  }
}

// The general form of one span, portable.
void swiglu_portable(float* g, const float* u, int64_t n, const float* gb, const float* ub,
                     const Act& act) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = std::min(g[i] + (gb ? gb[i] : 0.0f), act.limit);
    const float ui = std::clamp(u[i] + (ub ? ub[i] : 0.0f), -act.limit, act.limit);
    g[i] = gi / (1.0f + std::exp(-act.alpha * gi)) * (ui + act.up_offset);
  }
}

// Plain SwiGLU over n elements (act null), or the general form without
// biases.
void swiglu(float* g, const float* u, int64_t n, const Act* act) {
  parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
    if (act) {
      if (gemm::use_avx512())
        swiglu_avx512<true>(g + i0, u + i0, i1 - i0, nullptr, nullptr, *act);
      else
        swiglu_portable(g + i0, u + i0, i1 - i0, nullptr, nullptr, *act);
    } else if (gemm::use_avx512()) {
      swiglu_avx512<false>(g + i0, u + i0, i1 - i0);
    } else {
      for (int64_t i = i0; i < i1; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  });
}

// The general form over `rows` rows of n, row r adding the biases of expert
// expert_of[r] (gb[e], ub[e]: f32 rows, or null).
void swiglu_biased(float* g, const float* u, int64_t rows, int64_t n, const int64_t* expert_of,
                   const float* const* gb, const float* const* ub, const Act& act) {
  const bool avx512 = gemm::use_avx512();
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const int64_t e = expert_of[r];
                   const float* gbe = gb ? gb[e] : nullptr;
                   const float* ube = ub ? ub[e] : nullptr;
                   if (avx512)
                     swiglu_avx512<true>(g + r * n, u + r * n, n, gbe, ube, act);
                   else
                     swiglu_portable(g + r * n, u + r * n, n, gbe, ube, act);
                 }
               });
}

// The gate/up and down products of one group of rows (an expert's gathered
// tokens, or all tokens for the shared expert).
struct Mlp {
  gemm::WeightMatrix gate, up, down;
};

class Moe final : public Kernel {
 public:
  explicit Moe(const NodeDesc& node) {
    const TensorDesc gate = node.input(kGate);
    experts_ = gate.static_dim(0);
    inter_ = gate.static_dim(1);
    hidden_ = node.input(kX).static_dim(1);  // gate's last dim is packed for 4-bit formats
    const std::vector<int64_t> block = node.attr_ints("block_size", {128, 128});
    block_rows_ = block[0];
    block_cols_ = block[1];
    routed_format_ = format_of(node, "quant");
    shared_format_ = format_of(node, "shared_quant");
    products_attr_ = node.attr_string("products", "exact");
    // int4 scales with zero points have a trailing dim of 2.
    for (size_t w : {kGate, kUp, kDown, kSharedGate, kSharedUp, kSharedDown})
      if (node.has_input(w) && node.has_input(w + 3))
        zero_points_[w] = node.input(w + 3).rank() == node.input(w).rank() + 1;
    if (node.has_input(kSharedGate)) shared_inter_ = node.input(kSharedGate).static_dim(0);
    const plugin::SwigluParams act = plugin::swiglu_params(node, "swiglu_");
    general_act_ = !act.plain();
    act_.alpha = static_cast<float>(act.alpha);
    if (act.limit > 0) act_.limit = static_cast<float>(act.limit);
    act_.up_offset = static_cast<float>(act.up_offset);
    for (size_t b : {kGateBias, kUpBias, kDownBias}) has_bias_[b - kGateBias] = node.has_input(b);
  }

  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(kX);
    const Tensor& ids = ctx.in(kIds);
    const int64_t tokens = x.dim(0), hidden = hidden_, slots = ids.dim(1);
    require(x.dim(1) == hidden, "input 'x' has hidden size " + std::to_string(x.dim(1)) +
                                    ", the experts " + std::to_string(hidden));
    require(ids.dim(0) == tokens, "input 'expert_ids' has " + std::to_string(ids.dim(0)) +
                                      " rows, input 'x' has " + std::to_string(tokens) + " tokens");
    if (tokens == 0) return;
    // f32 activations get f32 products unless the node permits bf16 ones;
    // bf16/f16 activations may take bf16 (gemm.h).
    products_ = products_attr_ == "int8" ? gemm::Products::int8
                                         : (x.dtype == MOERT_DTYPE_F32 && products_attr_ == "exact"
                                                ? gemm::Products::exact
                                                : gemm::Products::bf16);
    // Every id is checked before anything runs (and before any parallel
    // region, which an exception must not leave).
    for (int64_t i = 0; i < tokens * slots; ++i) {
      const int64_t e = expert_id(ids, i);
      if (e < 0 || e >= experts_)
        fail("input 'expert_ids'[" + std::to_string(i / slots) + ", " + std::to_string(i % slots) +
             "] = " + std::to_string(e) + " is out of range [0, " + std::to_string(experts_) + ")");
    }
    const int64_t per_token =
        slots * (2 * hidden + 2 * inter_) + hidden + 2 * shared_inter_ + hidden;
    const int64_t chunk = std::max<int64_t>(64, kChunkFloats / std::max<int64_t>(1, per_token));
    for (int64_t t0 = 0; t0 < tokens; t0 += chunk) run_chunk(ctx, t0, std::min(chunk, tokens - t0));
  }

 private:
  static int64_t expert_id(const Tensor& ids, int64_t i) {
    return ids.dtype == MOERT_DTYPE_I32 ? ids.as<int32_t>()[i] : ids.as<int64_t>()[i];
  }

  gemm::WeightMatrix matrix(const ExecContext& ctx, size_t w, size_t s, int64_t expert,
                            int64_t rows, int64_t cols) const {
    const Tensor& t = ctx.in(w);
    const ops::WeightFormat format = w >= kSharedGate ? shared_format_ : routed_format_;
    if (format != ops::WeightFormat::none)
      return gemm::packed_matrix(format, t.dtype, t.data, ctx.in(s).data, zero_points_[w], expert,
                                 rows, cols, block_rows_, block_cols_);
    const float* scale = ctx.has(s) ? ctx.in(s).as<float>() : nullptr;
    return gemm::stacked_matrix(t.dtype, t.data, scale, expert, rows, cols, block_rows_,
                                block_cols_);
  }

  // y[m, N] = x[m, K] · W^T: queued as a GEMV task when m is small, else
  // computed now by the GEMM engine, which may also compute rows up to
  // `room` (gemm.h: one compiled oneDNN primitive per 16 row counts).
  void product(const gemm::WeightMatrix& w, const float* x, int64_t m, float* y, int64_t room) {
    if (m <= 0) return;
    if (m <= gemm::gemv_max_rows(w, products_))
      tasks_.push_back({&w, x, w.cols, m, y, w.rows, products_ == gemm::Products::int8});
    else
      gemm::gemm(x, m, w.cols, w, y, w.rows, products_, room);
  }

  void run_tasks() {
    gemm::gemv(tasks_.data(), tasks_.size());
    tasks_.clear();
  }

  // bias_rows_[b][e]: row e of bias b (0 gate, 1 up, 2 down) as f32, for
  // the active experts: in place when the bias is f32, else widened into
  // the scratch (one slot for all three).
  void bind_biases(const ExecContext& ctx) {
    size_t floats = 0;
    for (size_t b = 0; b < 3; ++b) {
      bias_rows_[b].assign(static_cast<size_t>(experts_), nullptr);
      if (has_bias_[b] && ctx.in(kGateBias + b).dtype != MOERT_DTYPE_F32)
        floats += active_.size() * static_cast<size_t>(b == 2 ? hidden_ : inter_);
    }
    float* buf = floats ? gemm::scratch<float>(gemm::Slot::kernel_input, floats) : nullptr;
    for (size_t b = 0; b < 3; ++b) {
      if (!has_bias_[b]) continue;
      const Tensor& t = ctx.in(kGateBias + b);
      const int64_t n = b == 2 ? hidden_ : inter_;
      for (const int64_t e : active_) {
        if (t.dtype == MOERT_DTYPE_F32) {
          bias_rows_[b][static_cast<size_t>(e)] = t.as<float>() + e * n;
        } else {
          to_f32(t.dtype, t.data, e * n, n, buf);
          bias_rows_[b][static_cast<size_t>(e)] = buf;
          buf += n;
        }
      }
    }
  }

  void run_chunk(const ExecContext& ctx, int64_t t0, int64_t tokens) {
    const Tensor& x = ctx.in(kX);
    const Tensor& ids = ctx.in(kIds);
    const Tensor& weights = ctx.in(kWeights);
    const Tensor& out = ctx.out(0);
    const int64_t slots = ids.dim(1), hidden = hidden_, inter = inter_, sinter = shared_inter_;
    const int64_t routes = tokens * slots, experts = experts_;
    const bool shared = sinter > 0;

    // Routing tables: count, offset and fill per expert; each route's row
    // (position in the expert-ordered list) and token.
    int64_t* table = gemm::scratch<int64_t>(gemm::Slot::moe_routes,
                                            static_cast<size_t>(3 * experts + 3 * routes + 1));
    int64_t* count = table;
    int64_t* offset = count + experts;  // experts + 1 entries
    int64_t* row_of = offset + experts + 1;
    int64_t* token_of = row_of + routes;
    int64_t* expert_of = token_of + routes;  // of each row
    std::fill(count, count + experts, 0);
    for (int64_t i = 0; i < routes; ++i) ++count[expert_id(ids, t0 * slots + i)];
    offset[0] = 0;
    for (int64_t e = 0; e < experts; ++e) offset[e + 1] = offset[e] + count[e];
    std::fill(count, count + experts, 0);  // reused as the fill level
    for (int64_t i = 0; i < routes; ++i) {
      const int64_t e = expert_id(ids, t0 * slots + i);
      row_of[i] = offset[e] + count[e]++;
      token_of[row_of[i]] = i / slots;
      expert_of[row_of[i]] = e;
    }

    // f32 buffers, carved from one scratch block.  The per-expert buffers
    // have kSlack rows past the last route: an expert's GEMM may compute up
    // to 15 rows beyond its own (gemm.h, rows_room), which belong to the
    // next expert (computed after it, in expert order, or by the GEMV tasks
    // run afterwards) or to the slack, whose input rows are zeros.
    auto padded = [](int64_t n) { return (n + 15) / 16 * 16; };
    const int64_t rows = routes + kSlack;
    const int64_t xs_n = padded(tokens * hidden), gather_n = padded(rows * hidden);
    const int64_t act_n = padded(rows * inter), down_n = padded(rows * hidden);
    const int64_t sact_n = padded(tokens * sinter), sdown_n = shared ? padded(tokens * hidden) : 0;
    float* base = gemm::scratch<float>(
        gemm::Slot::moe_tokens,
        static_cast<size_t>(xs_n + gather_n + 2 * act_n + down_n + 2 * sact_n + sdown_n));
    float* xs = base;                   // [tokens, H] x in f32
    float* gathered = xs + xs_n;        // [routes, H] expert-ordered
    float* gate = gathered + gather_n;  // [routes, I], then silu(gate) * up
    float* up = gate + act_n;           // [routes, I]
    float* down = up + act_n;           // [routes, H]
    float* sgate = down + down_n;       // [tokens, Is]
    float* sup = sgate + sact_n;        // [tokens, Is]
    float* sdown = sup + sact_n;        // [tokens, H]

    parallel_for(tokens * hidden, 16384, [&](int64_t i0, int64_t i1) {
      to_f32(x.dtype, x.data, t0 * hidden + i0, i1 - i0, xs + i0);
    });
    parallel_for(routes, std::max<int64_t>(1, 4096 / hidden), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        std::copy(xs + token_of[r] * hidden, xs + (token_of[r] + 1) * hidden,
                  gathered + r * hidden);
    });
    std::fill(gathered + routes * hidden, gathered + rows * hidden, 0.0f);
    std::fill(gate + routes * inter, gate + rows * inter, 0.0f);

    // Weight views of the active experts (stable addresses for the tasks).
    mlps_.clear();
    active_.clear();
    for (int64_t e = 0; e < experts; ++e)
      if (offset[e + 1] > offset[e]) active_.push_back(e);
    mlps_.resize(active_.size() + 1);
    for (size_t a = 0; a < active_.size(); ++a) {
      const int64_t e = active_[a];
      mlps_[a].gate = matrix(ctx, kGate, kGateScale, e, inter, hidden);
      mlps_[a].up = matrix(ctx, kUp, kUpScale, e, inter, hidden);
      mlps_[a].down = matrix(ctx, kDown, kDownScale, e, hidden, inter);
    }
    Mlp& sh = mlps_.back();
    if (shared) {
      sh.gate = matrix(ctx, kSharedGate, kSharedGateScale, 0, sinter, hidden);
      sh.up = matrix(ctx, kSharedUp, kSharedUpScale, 0, sinter, hidden);
      sh.down = matrix(ctx, kSharedDown, kSharedDownScale, 0, hidden, sinter);
    }

    // Gate and up projections, all experts together.
    for (size_t a = 0; a < active_.size(); ++a) {
      const int64_t e = active_[a], r0 = offset[e], m = offset[e + 1] - r0;
      product(mlps_[a].gate, gathered + r0 * hidden, m, gate + r0 * inter, rows - r0);
      product(mlps_[a].up, gathered + r0 * hidden, m, up + r0 * inter, rows - r0);
    }
    if (shared) {
      product(sh.gate, xs, tokens, sgate, 0);
      product(sh.up, xs, tokens, sup, 0);
    }
    run_tasks();

    const bool biased = has_bias_[0] || has_bias_[1] || has_bias_[2];
    if (biased) bind_biases(ctx);
    if (has_bias_[0] || has_bias_[1])
      swiglu_biased(gate, up, routes, inter, expert_of,
                    has_bias_[0] ? bias_rows_[0].data() : nullptr,
                    has_bias_[1] ? bias_rows_[1].data() : nullptr, act_);
    else
      swiglu(gate, up, routes * inter, general_act_ ? &act_ : nullptr);
    swiglu(sgate, sup, tokens * sinter, general_act_ ? &act_ : nullptr);

    // Down projections.
    for (size_t a = 0; a < active_.size(); ++a) {
      const int64_t e = active_[a], r0 = offset[e], m = offset[e + 1] - r0;
      product(mlps_[a].down, gate + r0 * inter, m, down + r0 * hidden, rows - r0);
    }
    if (shared) product(sh.down, sgate, tokens, sdown, 0);
    run_tasks();

    // The shared expert's gate vector, in f32.
    const float* seg = nullptr;
    if (shared && ctx.has(kSharedExpertGate)) {
      float* v = gemm::scratch<float>(gemm::Slot::kernel_small, static_cast<size_t>(hidden));
      to_f32(ctx.in(kSharedExpertGate).dtype, ctx.in(kSharedExpertGate).data, 0, hidden, v);
      seg = v;
    }

    // Combine per token, in slot order, then the shared expert; one row of
    // f32 sums per thread.
    float* sums = gemm::scratch<float>(gemm::Slot::kernel_output,
                                       static_cast<size_t>(num_threads() * padded(hidden)));
    parallel_for(tokens, std::max<int64_t>(1, 2048 / hidden), [&](int64_t r0, int64_t r1) {
      float* acc = sums + omp_get_thread_num() * padded(hidden);
      for (int64_t t = r0; t < r1; ++t) {
        std::fill(acc, acc + hidden, 0.0f);
        for (int64_t j = 0; j < slots; ++j) {
          const int64_t i = t * slots + j;
          const float wgt = load_f32(weights.dtype, weights.data, t0 * slots + i);
          const float* d = down + row_of[i] * hidden;
          if (has_bias_[2]) {
            const float* db = bias_rows_[2][static_cast<size_t>(expert_of[row_of[i]])];
            for (int64_t c = 0; c < hidden; ++c) acc[c] += wgt * (d[c] + db[c]);
          } else {
            for (int64_t c = 0; c < hidden; ++c) acc[c] += wgt * d[c];
          }
        }
        if (shared) {
          float g = 1.0f;
          if (seg) {
            const float* xt = xs + t * hidden;
            float z = 0.0f;
            for (int64_t c = 0; c < hidden; ++c) z += xt[c] * seg[c];
            g = 1.0f / (1.0f + std::exp(-z));
          }
          const float* d = sdown + t * hidden;
          for (int64_t c = 0; c < hidden; ++c) acc[c] += g * d[c];
        }
        from_f32(acc, hidden, out.dtype, out.data, (t0 + t) * hidden);
      }
    });
  }

  gemm::Products products_ = gemm::Products::exact;  // of this run (x's dtype)
  int64_t experts_ = 0, inter_ = 0, hidden_ = 0, shared_inter_ = 0;
  int64_t block_rows_ = 128, block_cols_ = 128;
  ops::WeightFormat routed_format_ = ops::WeightFormat::none;
  ops::WeightFormat shared_format_ = ops::WeightFormat::none;
  bool zero_points_[kSharedExpertGate] = {};
  std::string products_attr_ = "exact";  // attribute products
  // Version 3: the activation's parameters (general_act_: not plain SwiGLU)
  // and which of the biases (gate, up, down) the node has.
  Act act_;
  bool general_act_ = false;
  bool has_bias_[3] = {};
  // Reused between runs.
  std::array<std::vector<const float*>, 3> bias_rows_;
  std::vector<int64_t> active_;
  std::vector<Mlp> mlps_;
  std::vector<gemm::GemvTask> tasks_;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<Moe>(node); }

// Version 2: packed weights (attributes quant, shared_quant); version 3:
// biases of the routed experts and the clamped activation (swiglu_alpha,
// swiglu_limit, swiglu_up_offset).
const KernelRegistration registration(KernelDef("moe", check, create).at_version(3));

}  // namespace
}  // namespace moert::cpu
