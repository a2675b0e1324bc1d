// router (ops/router.cpp): MoE top-k expert selection per token, in double
// with the reference's formulas and summation orders, so that equal scores
// compare equal on both sides: softmax / sigmoid / softmax_topk scoring, an
// optional selection bias, grouped selection (greedy, group_limited_greedy,
// noaux_tc), ties to the lower index, normalisation and a scaling factor.
// Non-finite logits or bias entries fail the call before anything is
// written.  Tokens in parallel.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "attention_common.h"
#include "convert.h"
#include "kernel.h"
#include "op_params.h"
#include "parallel.h"

namespace moert::cpu {
namespace {

using attn::num;

using Scoring = plugin::RouterScoring;
using Method = plugin::RouterMethod;
using plugin::RouterParams;

std::string check(const NodeDesc& node) {
  const TensorDesc l = node.input(0);
  if (!plugin::dtype_is_float(l.dtype()))
    return std::string("router logits of ") + plugin::dtype_name(l.dtype());
  if (l.rank() != 2 || l.static_dim(1) < 1) return "router needs logits [T, E], E static";
  if (node.has_input(1) && !plugin::dtype_is_float(node.input(1).dtype()))
    return std::string("router bias of ") + plugin::dtype_name(node.input(1).dtype());
  if (node.num_outputs() != 2 || node.output(0).dtype() != MOERT_DTYPE_I32 ||
      node.output(1).dtype() != MOERT_DTYPE_F32)
    return "router outputs must be i32 ids and f32 weights";
  RouterParams p;
  return plugin::router_params(node, l.static_dim(1), &p);
}

// The first k of `order` (indices into v) rearranged to be the k largest
// values of v, largest first, ties to the lower index.
void top_indices(const double* v, int64_t n, int64_t k, int64_t* order) {
  std::iota(order, order + n, int64_t{0});
  std::partial_sort(order, order + k, order + n,
                    [v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
}

class Router final : public Kernel {
 public:
  explicit Router(const NodeDesc& node) : experts_(node.input(0).static_dim(1)) {
    const std::string problem = plugin::router_params(node, experts_, &p_);
    if (!problem.empty()) fail(problem);
  }

  void run(ExecContext& ctx) override {
    const Tensor& logits = ctx.in(0);
    const int64_t tokens = logits.dim(0), experts = logits.dim(1);
    require(experts == experts_, "input 'logits' has " + std::to_string(experts) +
                                     " experts, the node was built for " +
                                     std::to_string(experts_));
    std::vector<double> bias;
    if (ctx.has(1)) {
      const Tensor& b = ctx.in(1);
      bias.resize(static_cast<size_t>(experts));
      for (int64_t e = 0; e < experts; ++e) {
        bias[static_cast<size_t>(e)] = load_f32(b.dtype, b.data, e);
        if (!std::isfinite(bias[static_cast<size_t>(e)]))
          fail("input 'bias'[" + std::to_string(e) + "] = " + num(bias[static_cast<size_t>(e)]) +
               " is not finite");
      }
    }
    // Every logit is checked before any output is written.
    for (int64_t i = 0; i < tokens * experts; ++i) {
      const float v = load_f32(logits.dtype, logits.data, i);
      if (!std::isfinite(v))
        fail("input 'logits'[" + std::to_string(i / experts) + ", " + std::to_string(i % experts) +
             "] = " + num(v) + " is not finite");
    }
    const int threads = num_threads();
    const size_t per_thread = static_cast<size_t>(4 * experts + 2 * p_.n_group + 2 * p_.top_k);
    const auto scratch = ctx.scratch(threads * per_thread * sizeof(double), "scores per thread");
    const size_t per_thread_order = static_cast<size_t>(experts + p_.n_group);
    const auto order_block =
        ctx.scratch(threads * per_thread_order * sizeof(int64_t), "expert order per thread");
    int32_t* ids = ctx.out(0).as<int32_t>();
    float* weights = ctx.out(1).as<float>();
    const double* b = bias.empty() ? nullptr : bias.data();
    parallel_for(tokens, std::max<int64_t>(1, 4096 / experts), [&](int64_t t0, int64_t t1) {
      const size_t thread = static_cast<size_t>(omp_get_thread_num());
      double* d = static_cast<double*>(scratch.get()) + thread * per_thread;
      int64_t* order = static_cast<int64_t*>(order_block.get()) + thread * per_thread_order;
      for (int64_t t = t0; t < t1; ++t) route(logits, t, b, d, order, ids, weights);
    });
  }

 private:
  // Token t; d holds 4 E + 2 n_group + 2 k doubles of scratch, order
  // E + n_group indices.
  void route(const Tensor& logits, int64_t t, const double* bias, double* d, int64_t* order,
             int32_t* ids, float* weights) const {
    const int64_t experts = experts_, k = p_.top_k;
    double* l = d;
    double* s = l + experts;
    double* sel = s + experts;
    double* members = sel + experts;
    double* group_score = members + experts;
    double* w = group_score + 2 * p_.n_group;
    for (int64_t e = 0; e < experts; ++e)
      l[e] = load_f32(logits.dtype, logits.data, t * experts + e);
    std::copy(l, l + experts, s);
    if (p_.scoring == Scoring::softmax) {
      const double mx = *std::max_element(l, l + experts);
      double sum = 0.0;
      for (int64_t e = 0; e < experts; ++e) sum += (s[e] = std::exp(s[e] - mx));
      for (int64_t e = 0; e < experts; ++e) s[e] /= sum;
    } else if (p_.scoring == Scoring::sigmoid) {
      for (int64_t e = 0; e < experts; ++e) s[e] = 1.0 / (1.0 + std::exp(-s[e]));
    }
    std::copy(s, s + experts, sel);
    if (bias)
      for (int64_t e = 0; e < experts; ++e) sel[e] += bias[e];
    if (p_.n_group > 1) {
      const int64_t group_size = experts / p_.n_group;
      const int64_t best = p_.method == Method::noaux_tc ? 2 : 1;
      for (int64_t g = 0; g < p_.n_group; ++g) {
        std::copy(sel + g * group_size, sel + (g + 1) * group_size, members);
        top_indices(members, group_size, best, order);
        double score = 0.0;
        for (int64_t i = 0; i < best; ++i) score += members[order[i]];
        group_score[g] = score;
      }
      top_indices(group_score, p_.n_group, p_.topk_group, order);
      double* kept = group_score + p_.n_group;  // 1 for a kept group
      std::fill(kept, kept + p_.n_group, 0.0);
      for (int64_t i = 0; i < p_.topk_group; ++i) kept[order[i]] = 1.0;
      for (int64_t e = 0; e < experts; ++e)
        if (kept[e / group_size] == 0.0) sel[e] = -INFINITY;
    }
    top_indices(sel, experts, k, order);
    if (p_.scoring == Scoring::softmax_topk) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < k; ++j) mx = std::max(mx, l[order[j]]);
      double sum = 0.0;
      for (int64_t j = 0; j < k; ++j) sum += (w[j] = std::exp(l[order[j]] - mx));
      for (int64_t j = 0; j < k; ++j) w[j] /= sum;
    } else {
      for (int64_t j = 0; j < k; ++j) w[j] = s[order[j]];
    }
    if (p_.normalize) {
      const double sum = std::accumulate(w, w + k, 0.0) + p_.normalize_eps;
      for (int64_t j = 0; j < k; ++j) w[j] /= sum;
    }
    for (int64_t j = 0; j < k; ++j) {
      ids[t * k + j] = static_cast<int32_t>(order[j]);
      weights[t * k + j] = static_cast<float>(w[j] * p_.scaling_factor);
    }
  }

  int64_t experts_;
  RouterParams p_;
};

std::unique_ptr<Kernel> create(const NodeDesc& node) { return std::make_unique<Router>(node); }

const KernelRegistration registration({"router", check, create});

}  // namespace
}  // namespace moert::cpu
