// MoE routing: router (scores, optional group limiting, top-k, weights) and
// routing_dense.  One work-item per token; the router computes in `wide`
// (double with fp64, as the reference does) so that the chosen experts
// match it exactly.  `work` is scratch of 2 * E + 2 * n_group values per
// token.

#define SCORING_SOFTMAX 0
#define SCORING_SIGMOID 1
#define SCORING_SOFTMAX_TOPK 2
#define METHOD_GREEDY 0
#define METHOD_GROUP_LIMITED 1
#define METHOD_NOAUX_TC 2

// Error slots: slot + 0 a non-finite bias entry (position e), slot + 1 a
// non-finite logit (position t * E + e).
kernel void router(global const uchar* logits, ulong lo, int ldt, global const uchar* bias,
                   ulong bo, int bdt, int has_bias, global int* ids, ulong io, global uchar* wts,
                   ulong wo, global wide* work, int tokens, int E, int k, int scoring, int method,
                   int n_group, int topk_group, int normalize, float normalize_eps,
                   float scaling_factor, global int* errors, int slot) {
  const int t = get_global_id(0);
  if (t >= tokens) return;
  global int* out_ids = AT(int, ids, io) + (ulong)t * k;
  global float* out_w = AT(float, wts, wo) + (ulong)t * k;
  global wide* s = work + (ulong)t * (2 * E + 2 * n_group);
  global wide* sel = s + E;
  global wide* gscore = sel + E;
  global wide* gkept = gscore + n_group;
  global const uchar* lp = logits + lo;
  const ulong row = (ulong)t * (ulong)E;

  int bad = 0;
  for (int e = 0; e < E; ++e) {
    const float v = load_f(lp, row + e, ldt);
    if (!isfinite(v)) {
      report_error(errors, slot + 1, (long)(row + e));
      bad = 1;
    }
    s[e] = (wide)v;
  }
  if (has_bias)
    for (int e = 0; e < E; ++e)
      if (!isfinite(load_f(bias + bo, e, bdt))) {
        report_error(errors, slot, e);
        bad = 1;
      }
  if (bad) {
    for (int j = 0; j < k; ++j) {
      out_ids[j] = 0;
      out_w[j] = 0.0f;
    }
    return;
  }
  // 1. scores
  if (scoring == SCORING_SOFTMAX) {
    wide mx = s[0];
    for (int e = 1; e < E; ++e) mx = fmax(mx, s[e]);
    wide sum = 0;
    for (int e = 0; e < E; ++e) sum += (s[e] = exp(s[e] - mx));
    for (int e = 0; e < E; ++e) s[e] /= sum;
  } else if (scoring == SCORING_SIGMOID) {
    for (int e = 0; e < E; ++e) s[e] = (wide)1 / ((wide)1 + exp(-s[e]));
  }
  // 2. selection scores
  for (int e = 0; e < E; ++e)
    sel[e] = s[e] + (has_bias ? (wide)load_f(bias + bo, e, bdt) : (wide)0);
  // 3. group limiting
  if (n_group > 1) {
    const int gs = E / n_group;
    for (int g = 0; g < n_group; ++g) {
      wide best = sel[g * gs], second = -INFINITY;
      for (int e = g * gs + 1; e < (g + 1) * gs; ++e) {
        const wide v = sel[e];
        if (v > best) {
          second = best;
          best = v;
        } else if (v > second) {
          second = v;
        }
      }
      gscore[g] = method == METHOD_NOAUX_TC ? best + second : best;
      gkept[g] = 0;
    }
    for (int pick = 0; pick < topk_group; ++pick) {
      int bg = -1;
      for (int g = 0; g < n_group; ++g)
        if (gkept[g] == 0 && (bg < 0 || gscore[g] > gscore[bg])) bg = g;
      gkept[bg] = 1;
    }
    for (int e = 0; e < E; ++e)
      if (gkept[e / gs] == 0) sel[e] = -INFINITY;  // excluded
  }
  // 4. top k, ties to the lower index; a chosen expert's sel becomes -inf
  // (every real one is finite).
  for (int j = 0; j < k; ++j) {
    int be = -1;
    for (int e = 0; e < E; ++e) {
      const wide v = sel[e];
      if (isinf(v)) continue;
      if (be < 0 || v > sel[be]) be = e;
    }
    out_ids[j] = be;
    sel[be] = -INFINITY;
  }
  // 5. weights
  wide w[64];
  wide sum = 0;
  const int kk = min(k, 64);
  if (scoring == SCORING_SOFTMAX_TOPK) {
    wide mx = s[out_ids[0]];
    for (int j = 1; j < kk; ++j) mx = fmax(mx, s[out_ids[j]]);
    wide total = 0;
    for (int j = 0; j < kk; ++j) total += (w[j] = exp(s[out_ids[j]] - mx));
    for (int j = 0; j < kk; ++j) w[j] /= total;
  } else {
    for (int j = 0; j < kk; ++j) w[j] = s[out_ids[j]];
  }
  for (int j = 0; j < kk; ++j) sum += w[j];
  for (int j = 0; j < kk; ++j) {
    wide v = w[j];
    if (normalize) v /= sum + (wide)normalize_eps;
    out_w[j] = (float)(v * (wide)scaling_factor);
  }
}

// dense[t, e] = sum of weights[t, j] over the slots j with ids[t, j] == e.
// An id outside [0, E) records position t * k + j in error slot `slot`.
kernel void routing_dense(global const uchar* ids, ulong io, int ids64, global const uchar* wts,
                          ulong wo, int wdt, global float* dense, ulong dense_offset, int tokens,
                          int k, int E, global int* errors, int slot) {
  const int t = get_global_id(0);
  if (t >= tokens) return;
  global float* row = AT(float, dense, dense_offset) + (ulong)t * E;
  for (int e = 0; e < E; ++e) row[e] = 0.0f;
  for (int j = 0; j < k; ++j) {
    const ulong at = (ulong)t * k + j;
    const long e = load_id(ids + io, at, ids64);
    if (e < 0 || e >= E) {
      report_error(errors, slot, (long)at);
      continue;
    }
    row[e] += load_f(wts + wo, at, wdt);
  }
}
