// router(logits [T, E] float, bias optional [E] float)
//     -> expert_ids [T, k] i32, expert_weights [T, k] f32.
//   MoE top-k routing, per token, in double (matching transformers):
//   1. scores s from the logits l by `scoring`: "softmax" (default) over the E
//      logits, "sigmoid" of each logit, or "softmax_topk" (GPT-OSS): s = l, and
//      the weights are a softmax over the k selected logits (step 5).
//   2. selection scores sel = s + bias when bias is given, else s.
//   3. when n_group > 1: the experts form n_group contiguous groups of
//      E / n_group; a group's score is the max of its sel ("greedy",
//      "group_limited_greedy") or the sum of its two largest sel ("noaux_tc");
//      the topk_group best groups are kept and every other expert is
//      excluded (its sel set to -inf, as transformers' masked_fill does for
//      noaux_tc; the kept groups hold at least k experts).
//   4. expert_ids = the k largest sel, in descending order of sel, ties going
//      to the lower expert index (also for groups in step 3).
//   5. w = s[expert_ids] (the unbiased scores); for "softmax_topk" w is the
//      softmax of l[expert_ids].  If normalize: w /= (sum of w + normalize_eps).
//      Then w *= scaling_factor.
//   Attributes: top_k (int, required, 1..E), scoring, topk_method ("greedy"
//   default, "group_limited_greedy", "noaux_tc"), n_group (int, default 1,
//   divides E), topk_group (int, default 1, in 1..n_group; with n_group > 1 the
//   kept groups must hold at least k experts), normalize (int 0/1, default 0),
//   normalize_eps (float >= 0, default 0; DeepSeek-V3 uses 1e-20),
//   scaling_factor (float, default 1; DeepSeek's routed_scaling_factor).
//   E must be static; T may be symbolic.  Non-finite logits or bias entries
//   are an error.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernel_util.h"
#include "ops.h"
#include "router_params.h"

namespace moert::ops {

namespace {

using Scoring = RouterScoring;
using Method = RouterMethod;

std::string num(double v) { return attr_value_str(AttrValue(v)); }

// Validates the attributes for E experts (router_params.h).  Ctx is
// InferContext or KernelContext (both have attrs() and fail()).
template <typename Ctx>
RouterParams router_params(const Ctx& ctx, int64_t experts) {
  RouterParams p;
  const std::string problem = ops::router_params(AttrReader{ctx.attrs()}, experts, &p);
  if (!problem.empty()) ctx.fail(problem);
  return p;
}

// The indices of the k largest values, largest first, ties to the lower index.
std::vector<int64_t> top_indices(const std::vector<double>& values, int64_t k) {
  std::vector<int64_t> idx(values.size());
  std::iota(idx.begin(), idx.end(), int64_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)];
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

}  // namespace

void register_router(OpRegistry& r) {
  OpDef d;
  d.name = "router";
  d.summary = "MoE top-k expert selection (softmax / sigmoid / GPT-OSS; grouped; DeepSeek bias)";
  d.inputs = {{"logits"}, {"bias", true}};
  d.outputs = {"expert_ids", "expert_weights"};
  d.infer = [](const InferContext& ctx) {
    require_float(ctx, 0, "input 'logits'");
    require_rank(ctx, 0, 2, "input 'logits' [T, E]");
    const Shape& l = ctx.in(0).shape;
    ctx.require(l[1].is_static() && l[1].fixed > 0,
                "input 'logits' must have a static number of experts > 0, got " + l.str());
    const int64_t experts = l[1].fixed;
    if (ctx.has(1)) {
      require_float(ctx, 1, "input 'bias'");
      ctx.require(ctx.in(1).shape == Shape{Dim(experts)}, "input 'bias' must be [E] = [" +
                                                              std::to_string(experts) + "], got " +
                                                              ctx.in(1).shape.str());
    }
    const RouterParams p = router_params(ctx, experts);
    const Shape out{l[0], Dim(p.top_k)};
    return std::vector<ValueInfo>{{DType::i32, out}, {DType::f32, out}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& logits = ctx.in(0);
    const int64_t tokens = logits.dim(0), experts = logits.dim(1);
    const RouterParams p = router_params(ctx, experts);
    const std::vector<double> all = load(logits);
    std::vector<double> bias;
    if (ctx.has(1)) bias = load(ctx.in(1));
    for (size_t e = 0; e < bias.size(); ++e)
      if (!std::isfinite(bias[e]))
        ctx.fail("input 'bias'[" + std::to_string(e) + "] = " + num(bias[e]) + " is not finite");
    const int64_t k = p.top_k;
    const int64_t group_size = experts / p.n_group;
    std::vector<double> ids(static_cast<size_t>(tokens * k)), weights(ids.size());
    for (int64_t t = 0; t < tokens; ++t) {
      const std::vector<double> l(all.begin() + t * experts, all.begin() + (t + 1) * experts);
      for (int64_t e = 0; e < experts; ++e)
        if (!std::isfinite(l[static_cast<size_t>(e)]))
          ctx.fail("input 'logits'[" + std::to_string(t) + ", " + std::to_string(e) +
                   "] = " + num(l[static_cast<size_t>(e)]) + " is not finite");
      std::vector<double> s = l;
      if (p.scoring == Scoring::softmax) {
        const double mx = *std::max_element(l.begin(), l.end());
        double sum = 0.0;
        for (double& v : s) sum += (v = std::exp(v - mx));
        for (double& v : s) v /= sum;
      } else if (p.scoring == Scoring::sigmoid) {
        for (double& v : s) v = 1.0 / (1.0 + std::exp(-v));
      }
      std::vector<double> sel = s;
      for (size_t e = 0; e < bias.size(); ++e) sel[e] += bias[e];
      if (p.n_group > 1) {
        std::vector<double> group_score(static_cast<size_t>(p.n_group));
        for (int64_t g = 0; g < p.n_group; ++g) {
          const std::vector<double> members(sel.begin() + g * group_size,
                                            sel.begin() + (g + 1) * group_size);
          const std::vector<int64_t> best =
              top_indices(members, p.method == Method::noaux_tc ? 2 : 1);
          double score = 0.0;
          for (int64_t i : best) score += members[static_cast<size_t>(i)];
          group_score[static_cast<size_t>(g)] = score;
        }
        std::vector<bool> kept(static_cast<size_t>(p.n_group), false);
        for (int64_t g : top_indices(group_score, p.topk_group))
          kept[static_cast<size_t>(g)] = true;
        for (int64_t e = 0; e < experts; ++e)
          if (!kept[static_cast<size_t>(e / group_size)]) sel[static_cast<size_t>(e)] = -INFINITY;
      }
      const std::vector<int64_t> chosen = top_indices(sel, k);
      std::vector<double> w(static_cast<size_t>(k));
      if (p.scoring == Scoring::softmax_topk) {
        double mx = -INFINITY;
        for (int64_t e : chosen) mx = std::max(mx, l[static_cast<size_t>(e)]);
        double sum = 0.0;
        for (size_t j = 0; j < w.size(); ++j)
          sum += (w[j] = std::exp(l[static_cast<size_t>(chosen[j])] - mx));
        for (double& v : w) v /= sum;
      } else {
        for (size_t j = 0; j < w.size(); ++j) w[j] = s[static_cast<size_t>(chosen[j])];
      }
      if (p.normalize) {
        const double sum = std::accumulate(w.begin(), w.end(), 0.0) + p.normalize_eps;
        for (double& v : w) v /= sum;
      }
      for (size_t j = 0; j < w.size(); ++j) {
        ids[static_cast<size_t>(t * k) + j] = static_cast<double>(chosen[j]);
        weights[static_cast<size_t>(t * k) + j] = w[j] * p.scaling_factor;
      }
    }
    store(ctx.out(0), ids);
    store(ctx.out(1), weights);
  };
  r.add(std::move(d));
}

}  // namespace moert::ops
