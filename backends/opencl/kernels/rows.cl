// Row-wise reductions over the last axis, one work-group (MOERT_ROW_WG
// work-items) per row: softmax, masked_softmax, argmax and rms_norm.
// Computed in f32 and rounded once on store.

// softmax(x)[r, i] = exp(x[r, i] - m) / sum_j exp(x[r, j] - m), m the row max.
kernel void softmax_rows(global const uchar* x, ulong xo, global uchar* y, ulong yo, int dt,
                         ulong n) {
  local float scratch[MOERT_ROW_WG];
  const ulong base = get_group_id(0) * n;
  const int lid = get_local_id(0), wg = get_local_size(0);
  global const uchar* xp = x + xo;
  float m = -INFINITY;
  for (ulong i = lid; i < n; i += wg) m = fmax(m, load_f(xp, base + i, dt));
  m = wg_max(m, scratch);
  float s = 0.0f;
  for (ulong i = lid; i < n; i += wg) s += exp(load_f(xp, base + i, dt) - m);
  s = wg_sum(s, scratch);
  for (ulong i = lid; i < n; i += wg)
    store_f(y + yo, base + i, dt, exp(load_f(xp, base + i, dt) - m) / s);
}

// masked_softmax(scores [nh, T, L], sinks? [nh]): row (h, i) is the query at
// position p = L - T + i; key j is allowed iff (!causal || j <= p) and
// (window == 0 || j > p - window).  Allowed entries get
// exp(scale s - mx) / (sum + exp(sink - mx)), the others 0.
kernel void masked_softmax_rows(global const uchar* x, ulong xo, global const uchar* sinks,
                                ulong so, int sinks_dt, int has_sinks, global uchar* y, ulong yo,
                                int dt, long heads, long tokens, long len, float scale, int causal,
                                long window) {
  local float scratch[MOERT_ROW_WG];
  const long row = get_group_id(0);
  const long h = row / tokens, i = row % tokens;
  const long p = len - tokens + i;
  const long hi = causal ? min(p, len - 1) : len - 1;  // allowed keys: [lo, hi]
  const long lo = window > 0 ? max(p - window + 1, 0L) : 0L;
  const ulong base = (ulong)row * (ulong)len;
  const int lid = get_local_id(0), wg = get_local_size(0);
  global const uchar* xp = x + xo;
  const float sink = has_sinks ? load_f(sinks + so, h, sinks_dt) : -INFINITY;
  float m = -INFINITY;
  for (long j = lo + lid; j <= hi; j += wg) m = fmax(m, scale * load_f(xp, base + j, dt));
  m = fmax(wg_max(m, scratch), sink);
  float s = 0.0f;
  for (long j = lo + lid; j <= hi; j += wg) s += exp(scale * load_f(xp, base + j, dt) - m);
  s = wg_sum(s, scratch);
  if (has_sinks) s += exp(sink - m);
  for (long j = lid; j < len; j += wg) {
    float v = 0.0f;
    if (j >= lo && j <= hi && s > 0.0f) v = exp(scale * load_f(xp, base + j, dt) - m) / s;
    store_f(y + yo, base + j, dt, v);
  }
}

// The better of two (value, index) candidates: the first NaN wins, then the
// larger value, then the lower index.
inline int argmax_better(float va, long ia, float vb, long ib) {
  const int na = isnan(va), nb = isnan(vb);
  if (na || nb) return na && nb ? ia < ib : na;
  if (va != vb) return va > vb;
  return ia < ib;
}

kernel void argmax_rows(global const uchar* x, ulong xo, global int* y, ulong yo, int dt,
                        ulong n) {
  local float best_v[MOERT_ROW_WG];
  local long best_i[MOERT_ROW_WG];
  const ulong base = get_group_id(0) * n;
  const int lid = get_local_id(0), wg = get_local_size(0);
  float bv = NAN;
  long bi = -1;
  for (ulong i = lid; i < n; i += wg) {
    const float v = load_f(x + xo, base + i, dt);
    if (bi < 0 || argmax_better(v, (long)i, bv, bi)) {
      bv = v;
      bi = (long)i;
    }
  }
  best_v[lid] = bv;
  best_i[lid] = bi;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = wg / 2; s > 0; s >>= 1) {
    if (lid < s && best_i[lid + s] >= 0 &&
        (best_i[lid] < 0 ||
         argmax_better(best_v[lid + s], best_i[lid + s], best_v[lid], best_i[lid]))) {
      best_v[lid] = best_v[lid + s];
      best_i[lid] = best_i[lid + s];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) AT(int, y, yo)[get_group_id(0)] = (int)best_i[0];
}

// rms_norm: y = x / sqrt(mean(x^2) + eps) * weight.
kernel void rms_norm_rows(global const uchar* x, ulong xo, global const uchar* w, ulong wo,
                          int wdt, global uchar* y, ulong yo, int dt, ulong n, float eps) {
  local float scratch[MOERT_ROW_WG];
  const ulong base = get_group_id(0) * n;
  const int lid = get_local_id(0), wg = get_local_size(0);
  global const uchar* xp = x + xo;
  float s = 0.0f;
  for (ulong i = lid; i < n; i += wg) {
    const float v = load_f(xp, base + i, dt);
    s = fma(v, v, s);
  }
  s = wg_sum(s, scratch);
  const float inv = 1.0f / sqrt(s / (float)n + eps);
  for (ulong i = lid; i < n; i += wg)
    store_f(y + yo, base + i, dt, load_f(xp, base + i, dt) * inv * load_f(w + wo, i, wdt));
}
