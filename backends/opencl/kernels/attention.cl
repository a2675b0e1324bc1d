// Attention over a KV cache: writing new rows into a cache (any float dtype,
// f8_e4m3 included) and a fused causal GQA attention with sliding window and
// sinks and an online softmax, computed in f32 with one rounding of the
// output.  Two attention kernels:
//  - attention: one work-group per (query, head), keys in tiles of
//    MOERT_ROW_WG work-items (GPU style; any dtypes, read by run-time code);
//  - attention_cpu: one work-item per (head, query) walking its keys with
//    vector dot products (CPU style), for K and V of the dtypes KT and VT
//    given at build time (-DKT=, -DVT=, moert_dtype codes).
// Value rows: V[j, g, c] is element (j * nkv + g) * vh + c of v, vh = dv,
// or dk when the values are the keys' first dv features (attribute
// value_dim: then v is the key buffer).
//
// Paged attention (version 3, `paged` != 0): token i belongs to sequence
// s = seqs[i] at position p = pos[i], and position j of sequence s lives in
// cache row table[s * cols + j / bs] * bs + j % bs (a block table of `cols`
// columns per sequence, blocks of bs rows).  paged_check validates every
// token first and records the first bad one in an error slot; the cache
// writes and the attention kernels then do nothing but write zeros while
// that slot holds an error, so a failing call leaves the caches as they
// were.  The attention kernels walk a token's keys block by block, reading
// only the table columns of positions it may see.

// cache[past + r, :] = x[r, :] for the n = T * row elements of x, rounded
// to the cache's dtype.
kernel void cache_write(global const uchar* x, ulong xo, int xdt, global uchar* cache, ulong co,
                        int cdt, ulong first, ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  store_f(cache + co, first + i, cdt, load_f(x + xo, i, xdt));
}

// The value of an error slot that recorded nothing (kNoError of kernel.h).
#define NO_ERROR 0x7fffffff

// Records in error slot `slot` the first token whose sequence is outside
// [0, seq_count), whose position is negative or needs a table column >=
// cols, or whose table columns 0..p / bs hold a block id outside
// [0, blocks).  One work-item per token.
kernel void paged_check(global const uchar* pos, ulong po, global const uchar* seqs, ulong so,
                        global const uchar* table, ulong bo, long tokens, int seq_count, int cols,
                        int bs, long blocks, global int* errors, int slot) {
  const long t = get_global_id(0);
  if (t >= tokens) return;
  const int s = CAT(int, seqs, so)[t], p = CAT(int, pos, po)[t];
  int ok = s >= 0 && s < seq_count && p >= 0 && p / bs < cols;
  if (ok) {
    global const int* row = CAT(int, table, bo) + (ulong)s * cols;
    for (int c = 0; c <= p / bs; ++c) ok = ok && row[c] >= 0 && row[c] < blocks;
  }
  if (!ok) report_error(errors, slot, t);
}

// The cache row of position p of the sequence whose block-table row is `row`.
inline ulong paged_row(global const int* row, int bs, long p) {
  return (ulong)row[p / bs] * bs + (ulong)(p % bs);
}

// Work-item (c, t): kc[row(t), c] = k[t, c] for c < krow, vc[row(t), c] =
// v[t, c] for c < vrow (vrow = 0: no value cache), rounded to the caches'
// dtypes; nothing while error slot `slot` holds an error.
kernel void paged_cache_write(global const uchar* k, ulong ko, int kdt, global uchar* kc, ulong kco,
                              int kcdt, int krow, global const uchar* v, ulong vo, int vdt,
                              global uchar* vc, ulong vco, int vcdt, int vrow,
                              global const uchar* pos, ulong po, global const uchar* seqs, ulong so,
                              global const uchar* table, ulong bo, int cols, int bs, long tokens,
                              global const int* errors, int slot) {
  const int c = get_global_id(0);
  const long t = get_global_id(1);
  if (t >= tokens || errors[slot] != NO_ERROR) return;
  const ulong r = paged_row(CAT(int, table, bo) + (ulong)CAT(int, seqs, so)[t] * cols, bs,
                            CAT(int, pos, po)[t]);
  if (c < krow) store_f(kc + kco, r * krow + c, kcdt, load_f(k + ko, (ulong)t * krow + c, kdt));
  if (c < vrow) store_f(vc + vco, r * vrow + c, vcdt, load_f(v + vo, (ulong)t * vrow + c, vdt));
}

// The most output features one work-item accumulates: dv <= ATT_ACC * MOERT_ROW_WG.
#define ATT_ACC 8

// out[i, h, :] = sum_j P[h, i, j] V[j, g, :] with P the masked softmax of
// scale * q[i, h, :] . K[j, g, :] over keys j in [lo, hi] (query position
// past + i, or pos[i] when paged), g = h / (nh / nkv), plus exp(sink[h]) in
// the denominator.
kernel void attention(global const uchar* q, ulong qo, int qdt, global const uchar* k, ulong ko,
                      int kdt, global const uchar* v, ulong vo, int vdt, global const uchar* sinks,
                      ulong so, int sdt, int has_sinks, global uchar* out, ulong oo, int odt,
                      int nh, int nkv, int dk, int dv, int vh, long past, long len, float scale,
                      int causal, long window, global const uchar* pos, ulong po,
                      global const uchar* seqs, ulong sqo, global const uchar* table, ulong bo,
                      int paged, int cols, int bs, global const int* errors, int slot,
                      local float* qs) {
  local float probs[MOERT_ROW_WG];
  local float scratch[MOERT_ROW_WG];
  local ulong rows[MOERT_ROW_WG];  // the cache rows of the tile's keys
  const int lid = get_local_id(0), wg = get_local_size(0);
  const long i = get_group_id(0) / nh;
  const int h = get_group_id(0) % nh;
  const int g = h / (nh / nkv);
  long p = past + i, hi = causal ? min(p, len - 1) : len - 1;
  global const int* trow = CAT(int, table, bo);
  if (paged) {
    if (errors[slot] != NO_ERROR) {
      for (int c = lid; c < dv; c += wg)
        store_f(out + oo, (ulong)((i * nh + h) * dv + c), odt, 0.0f);
      return;
    }
    p = hi = CAT(int, pos, po)[i];
    trow += (ulong)CAT(int, seqs, sqo)[i] * cols;
  }
  const long lo = window > 0 ? max(p - window + 1, 0L) : 0L;
  for (int c = lid; c < dk; c += wg) qs[c] = load_f(q + qo, (ulong)((i * nh + h) * dk + c), qdt);
  barrier(CLK_LOCAL_MEM_FENCE);

  float m = -INFINITY, l = 0.0f;
  if (has_sinks) {
    m = load_f(sinks + so, h, sdt);
    l = 1.0f;  // exp(sink - m)
  }
  float acc[ATT_ACC];
  for (int r = 0; r < ATT_ACC; ++r) acc[r] = 0.0f;
  global const uchar* kp = k + ko;
  global const uchar* vp = v + vo;
  for (long j0 = lo; j0 <= hi; j0 += wg) {
    const long j = j0 + lid;
    float s = -INFINITY;
    if (j <= hi) {
      const ulong r = paged ? paged_row(trow, bs, j) : (ulong)j;
      rows[lid] = r;
      const ulong row = (r * nkv + g) * dk;
      float dot = 0.0f;
      for (int c = 0; c < dk; ++c) dot = fma(qs[c], load_f(kp, row + c, kdt), dot);
      s = scale * dot;
    }
    const float m_new = fmax(m, wg_max(s, scratch));
    const float corr = m == -INFINITY ? 0.0f : exp(m - m_new);
    const float pj = j <= hi ? exp(s - m_new) : 0.0f;
    probs[lid] = pj;
    l = l * corr + wg_sum(pj, scratch);  // its barriers also publish probs and rows
    const int count = (int)min((long)wg, hi - j0 + 1);
    for (int r = 0; r < ATT_ACC; ++r) {
      const int c = lid + r * wg;
      if (c >= dv) break;
      float a = acc[r] * corr;
      for (int jj = 0; jj < count; ++jj)
        a = fma(probs[jj], load_f(vp, (rows[jj] * nkv + g) * vh + c, vdt), a);
      acc[r] = a;
    }
    m = m_new;
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  for (int r = 0; r < ATT_ACC; ++r) {
    const int c = lid + r * wg;
    if (c >= dv) break;
    store_f(out + oo, (ulong)((i * nh + h) * dv + c), odt, l > 0.0f ? acc[r] / l : 0.0f);
  }
}

#ifndef KT
#define KT DT_F32
#endif
#ifndef VT
#define VT DT_F32
#endif
// The query heads one attention_cpu work-item serves (-DHPI=, a divisor of
// nh / nkv chosen by the host): they share one KV head, so each key and
// value row is read once for all of them.
#ifndef HPI
#define HPI 1
#endif
// The largest head size attention_cpu takes (the host checks).
#define ATT_MAX_D 576

// Work-item (x, i): query i, heads x * HPI .. x * HPI + HPI - 1.
kernel void attention_cpu(global const uchar* q, ulong qo, int qdt, global const uchar* k, ulong ko,
                          global const uchar* v, ulong vo, global const uchar* sinks, ulong so,
                          int sdt, int has_sinks, global uchar* out, ulong oo, int odt, int nh,
                          int nkv, int dk, int dv, int vh, long past, long len, float scale,
                          int causal, long window, global const uchar* pos, ulong po,
                          global const uchar* seqs, ulong sqo, global const uchar* table, ulong bo,
                          int paged, int cols, int bs, global const int* errors, int slot) {
  const int h0 = get_global_id(0) * HPI;
  const long i = get_global_id(1);
  if (h0 >= nh) return;
  const int g = h0 / (nh / nkv);
  long p = past + i, hi = causal ? min(p, len - 1) : len - 1;
  global const int* trow = CAT(int, table, bo);
  if (paged) {
    if (errors[slot] != NO_ERROR) {
      for (int c = 0; c < HPI * dv; ++c)
        store_f(out + oo, (ulong)((i * nh + h0) * dv + c), odt, 0.0f);
      return;
    }
    p = hi = CAT(int, pos, po)[i];
    trow += (ulong)CAT(int, seqs, sqo)[i] * cols;
  }
  const long lo = window > 0 ? max(p - window + 1, 0L) : 0L;
  float qs[HPI][ATT_MAX_D], acc[HPI][ATT_MAX_D], m[HPI], l[HPI];
  for (int e = 0; e < HPI; ++e) {
    for (int c = 0; c < dk; ++c)
      qs[e][c] = scale * load_f(q + qo, (ulong)((i * nh + h0 + e) * dk + c), qdt);
    for (int c = 0; c < dv; ++c) acc[e][c] = 0.0f;
    m[e] = -INFINITY;
    l[e] = 0.0f;
    if (has_sinks) {
      m[e] = load_f(sinks + so, h0 + e, sdt);
      l[e] = 1.0f;  // exp(sink - m)
    }
  }
  global const STORAGE(KT)* kb = CAT(STORAGE(KT), k, ko) + (ulong)g * dk;
  global const STORAGE(VT)* vb = CAT(STORAGE(VT), v, vo) + (ulong)g * vh;
  // Keys j0..j1 are consecutive cache rows: the rest of one block when
  // paged, all of them otherwise.
  for (long j0 = lo, j1; j0 <= hi; j0 = j1 + 1) {
    ulong first = (ulong)j0;
    j1 = hi;
    if (paged) {
      j1 = min(hi, (j0 / bs + 1) * bs - 1);
      first = paged_row(trow, bs, j0);
    }
    global const STORAGE(KT)* kr = kb + first * nkv * dk;
    global const STORAGE(VT)* vr = vb + first * nkv * vh;
    for (long j = j0; j <= j1; ++j, kr += (ulong)nkv * dk, vr += (ulong)nkv * vh) {
      float16 d16[HPI];
      for (int e = 0; e < HPI; ++e) d16[e] = 0.0f;
      int c = 0;
      for (; c + 16 <= dk; c += 16) {
        const float16 kk = LOAD16(KT, kr + c);
        for (int e = 0; e < HPI; ++e) d16[e] = fma(vload16(0, qs[e] + c), kk, d16[e]);
      }
      float s[HPI];
      for (int e = 0; e < HPI; ++e) s[e] = hsum16(d16[e]);
      for (; c < dk; ++c) {
        const float kk = LOAD1(KT, kr + c);
        for (int e = 0; e < HPI; ++e) s[e] = fma(qs[e][c], kk, s[e]);
      }
      // Online softmax: a new maximum rescales what was accumulated.
      float w[HPI];
      for (int e = 0; e < HPI; ++e) {
        w[e] = 1.0f;
        if (s[e] > m[e]) {
          const float corr = exp(m[e] - s[e]);
          l[e] *= corr;
          c = 0;
          for (; c + 16 <= dv; c += 16) vstore16(vload16(0, acc[e] + c) * corr, 0, acc[e] + c);
          for (; c < dv; ++c) acc[e][c] *= corr;
          m[e] = s[e];
        } else {
          w[e] = exp(s[e] - m[e]);
        }
        l[e] += w[e];
      }
      c = 0;
      for (; c + 16 <= dv; c += 16) {
        const float16 vv = LOAD16(VT, vr + c);
        for (int e = 0; e < HPI; ++e)
          vstore16(fma((float16)(w[e]), vv, vload16(0, acc[e] + c)), 0, acc[e] + c);
      }
      for (; c < dv; ++c) {
        const float vv = LOAD1(VT, vr + c);
        for (int e = 0; e < HPI; ++e) acc[e][c] = fma(w[e], vv, acc[e][c]);
      }
    }
  }
  for (int e = 0; e < HPI; ++e) {
    const float inv = l[e] > 0.0f ? 1.0f / l[e] : 0.0f;
    for (int c = 0; c < dv; ++c)
      store_f(out + oo, (ulong)((i * nh + h0 + e) * dv + c), odt, acc[e][c] * inv);
  }
}
