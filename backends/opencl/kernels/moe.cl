// Routed SwiGLU experts with an optional shared expert (weights.cl is
// prepended; a program is built per kind of weight, WT or WQ).  Per token
// and chosen expert, the GEMV kernels read only the rows of the experts the
// token chose, with the expert ids read on the device (no host round trip):
//   moe_gate_up: h[t, j, :] = act(gate_e x_t + gb_e, up_e x_t + ub_e),
//                e = ids[t, j]
//   moe_down:    out[t, :] = sum_j w[t, j] (down_e h[t, j, :] + db_e) (+ an
//                f32 addend, the routed part when the shared expert follows)
// act is silu(g) * u, or with `general` the clamped form (swiglu_act of
// common.cl; version 3 of moe).  The biases gb, ub, db (routed experts only)
// are [E, n] of dtype `*dt`, or absent with dt < 0.
// The shared expert runs through the same kernels as one fixed expert with
// weight g_t (moe_shared_gate: sigmoid(x_t . gate), or 1).  Every work-item
// computes four output rows.

// Matrix e of a stacked weight [E, rows, wstored(cols)] and of its scales
// [E, srows, scols] (times WSTRIDE).
inline global const wtype* expert_matrix(global const uchar* w, ulong wo, long e, int rows,
                                         int cols) {
  return CAT(wtype, w, wo) + (ulong)e * rows * wstored(cols);
}
inline global const stype* expert_scales(global const uchar* s, ulong so, long e, int srows,
                                         int scols) {
  return CAT(stype, s, so) + (ulong)e * srows * scols * WSTRIDE;
}

// dot4 of rows r0..r0+3 (clamped to `rows`) of matrix w (scales s) with x.
inline float4 rows_dot4(global const wtype* w, global const stype* s, int r0, int rows, int cols,
                        global const float* x, int b0, int b1, int scols) {
  const int r1 = min(r0 + 1, rows - 1), r2 = min(r0 + 2, rows - 1), r3 = min(r0 + 3, rows - 1);
  const ulong ld = wstored(cols);
  return dot4(w + r0 * ld, w + r1 * ld, w + r2 * ld, w + r3 * ld, scale_row(s, r0, b0, scols),
              scale_row(s, r1, b0, scols), scale_row(s, r2, b0, scols),
              scale_row(s, r3, b0, scols), x, cols, b1);
}

// Rows r0..r0+3 (clamped to `rows`) of expert e's bias [E, rows] of dtype dt.
inline float4 bias4(global const uchar* b, int dt, long e, int r0, int rows) {
  const ulong base = (ulong)e * rows;
  return (float4)(load_f(b, base + r0, dt), load_f(b, base + min(r0 + 1, rows - 1), dt),
                  load_f(b, base + min(r0 + 2, rows - 1), dt),
                  load_f(b, base + min(r0 + 3, rows - 1), dt));
}

// e = ids[t, j] (or `fixed` >= 0).  An id outside [0, E) records t * k + j
// in error slot `slot` and zeroes h[t, j, :].
kernel void moe_gate_up(global const uchar* xb, ulong xo, global const uchar* ids, ulong io,
                        int ids64, int fixed, global const uchar* g, ulong go,
                        global const uchar* u, ulong uo, global const uchar* gs, ulong gso,
                        global const uchar* us, ulong uso, global float* h, int tokens, int k,
                        int E, int rows, int cols, int b0, int b1, int srows, int scols,
                        global int* errors, int slot, global const uchar* gb, ulong gbo, int gbdt,
                        global const uchar* ub, ulong ubo, int ubdt, int general, float alpha,
                        float limit, float up_offset) {
  const int r0 = get_global_id(0) * 4;
  const int tj = get_global_id(1);
  if (r0 >= rows || tj >= tokens * k) return;
  const long e = fixed >= 0 ? fixed : load_id(ids + io, tj, ids64);
  global float* hrow = h + (ulong)tj * rows;
  if (e < 0 || e >= E) {
    if (r0 == 0) report_error(errors, slot, tj);
    for (int r = r0; r < min(r0 + 4, rows); ++r) hrow[r] = 0.0f;
    return;
  }
  global const float* x = CAT(float, xb, xo) + (ulong)(tj / k) * cols;
  float4 gv = rows_dot4(expert_matrix(g, go, e, rows, cols),
                        expert_scales(gs, gso, e, srows, scols), r0, rows, cols, x, b0, b1, scols);
  float4 uv = rows_dot4(expert_matrix(u, uo, e, rows, cols),
                        expert_scales(us, uso, e, srows, scols), r0, rows, cols, x, b0, b1, scols);
  float4 act;
  if (general) {
    if (gbdt >= 0) gv += bias4(gb + gbo, gbdt, e, r0, rows);
    if (ubdt >= 0) uv += bias4(ub + ubo, ubdt, e, r0, rows);
    act = (float4)(swiglu_act(gv.s0, uv.s0, alpha, limit, up_offset),
                   swiglu_act(gv.s1, uv.s1, alpha, limit, up_offset),
                   swiglu_act(gv.s2, uv.s2, alpha, limit, up_offset),
                   swiglu_act(gv.s3, uv.s3, alpha, limit, up_offset));
  } else {
    act = gv / (1.0f + exp(-gv)) * uv;
  }
  hrow[r0] = act.s0;
  if (r0 + 1 < rows) hrow[r0 + 1] = act.s1;
  if (r0 + 2 < rows) hrow[r0 + 2] = act.s2;
  if (r0 + 3 < rows) hrow[r0 + 3] = act.s3;
}

// out[t, r] = addend[t, r] + sum over the `slots` slots j of
// weight(t, j) * (down_e[r] . h[t, j, :]); weight(t, j) is the routing
// weight, or for a fixed expert gates[t] (or 1).  Bad ids were reported by
// moe_gate_up and are skipped here.
kernel void moe_down(global const float* h, int slots, int fixed, global const uchar* ids,
                     ulong io, int ids64, global const uchar* wts, ulong wto, int wdt,
                     global const float* gates, int has_gates, global const uchar* d, ulong dof,
                     global const uchar* ds, ulong dso, global const float* addend,
                     int has_addend, global uchar* out, ulong oo, int odt, int tokens, int E,
                     int rows, int cols, int b0, int b1, int srows, int scols,
                     global const uchar* db, ulong dbo, int dbdt) {
  const int r0 = get_global_id(0) * 4;
  const int t = get_global_id(1);
  if (r0 >= rows || t >= tokens) return;
  float4 total = 0.0f;
  for (int j = 0; j < slots; ++j) {
    const ulong tj = (ulong)t * slots + j;
    const long e = fixed >= 0 ? fixed : load_id(ids + io, tj, ids64);
    if (e < 0 || e >= E) continue;
    const float w = fixed >= 0 ? (has_gates ? gates[t] : 1.0f) : load_f(wts + wto, tj, wdt);
    float4 v = rows_dot4(expert_matrix(d, dof, e, rows, cols),
                         expert_scales(ds, dso, e, srows, scols), r0, rows, cols, h + tj * cols, b0,
                         b1, scols);
    if (dbdt >= 0) v += bias4(db + dbo, dbdt, e, r0, rows);
    total = fma((float4)(w), v, total);
  }
  const ulong at = (ulong)t * rows + r0;
  for (int r = 0; r < 4 && r0 + r < rows; ++r) {
    float v = r == 0 ? total.s0 : r == 1 ? total.s1 : r == 2 ? total.s2 : total.s3;
    if (has_addend) v += addend[at + r];
    store_f(out + oo, at + r, odt, v);
  }
}

// gates[t] = sigmoid(x[t, :] . gate[0, :]).
kernel void moe_shared_gate(global const uchar* xb, ulong xo, global const uchar* g, ulong go,
                            int gdt, global float* gates, int tokens, int hidden) {
  const int t = get_global_id(0);
  if (t >= tokens) return;
  global const float* x = CAT(float, xb, xo) + (ulong)t * hidden;
  float z = 0.0f;
  for (int c = 0; c < hidden; ++c) z = fma(x[c], load_f(g + go, c, gdt), z);
  gates[t] = 1.0f / (1.0f + exp(-z));
}

// ---------------------------------------------------------------------------
// Grouped by expert, for many tokens (CPU style): the (token, slot) pairs,
// "pairs" q = t * k + j, are sorted by expert into rows of 32-row panels,
// every panel holding rows of one expert (an expert's rows are padded to
// whole panels), so that each expert runs as one GEMM over only its tokens
// with the micro-kernel of weights.cl.  `route` holds, as ints:
//   counts[E] | first_panel[E] | panel_expert[P] | row_pair[32 P] | pair_row[T k]
// with P = ceil(T k / 32) + E, the most panels any routing needs; an unused
// panel has expert -1, a padding row pair -1, a pair with a bad id row -1.
// The order of pairs within an expert is the token order, so results do
// not depend on scheduling.

#define ROUTE_FIRST(route, E) ((route) + (E))
#define ROUTE_PANEL_EXPERT(route, E) ((route) + 2 * (E))
#define ROUTE_ROW_PAIR(route, E, P) ((route) + 2 * (E) + (P))
#define ROUTE_PAIR_ROW(route, E, P) ((route) + 2 * (E) + 33 * (P))

// counts[e]: one work-item per expert.
kernel void moe_count(global const uchar* ids, ulong io, int ids64, int pairs, int E,
                      global int* route) {
  const int e = get_global_id(0);
  if (e >= E) return;
  int c = 0;
  for (int q = 0; q < pairs; ++q) c += load_id(ids + io, q, ids64) == e;
  route[e] = c;
}

// first_panel and panel_expert, and the check of every id (the first bad
// pair goes to error slot `slot`): one work-item.
kernel void moe_panels(global const uchar* ids, ulong io, int ids64, int pairs, int E, int P,
                       global int* route, global int* errors, int slot) {
  if (get_global_id(0) != 0) return;
  global int* first = ROUTE_FIRST(route, E);
  global int* panel_expert = ROUTE_PANEL_EXPERT(route, E);
  int p = 0;
  for (int e = 0; e < E; ++e) {
    first[e] = p;
    for (int n = (route[e] + 31) / 32; n > 0; --n) panel_expert[p++] = e;
  }
  for (; p < P; ++p) panel_expert[p] = -1;
  for (int q = 0; q < pairs; ++q) {
    const long e = load_id(ids + io, q, ids64);
    if (e < 0 || e >= E) {
      report_error(errors, slot, q);
      break;
    }
  }
}

// row_pair and pair_row: one work-item per expert, taking its pairs in order.
kernel void moe_fill(global const uchar* ids, ulong io, int ids64, int pairs, int E, int P,
                     global int* route) {
  const int e = get_global_id(0);
  if (e >= E) return;
  global int* row_pair = ROUTE_ROW_PAIR(route, E, P);
  global int* pair_row = ROUTE_PAIR_ROW(route, E, P);
  int row = ROUTE_FIRST(route, E)[e] * 32;
  for (int q = 0; q < pairs; ++q) {
    const long id = load_id(ids + io, q, ids64);
    if (id == e) {
      row_pair[row] = q;
      pair_row[q] = row++;
    } else if (e == 0 && (id < 0 || id >= E)) {
      pair_row[q] = -1;
    }
  }
  for (const int end = (row + 31) / 32 * 32; row < end; ++row) row_pair[row] = -1;
}

// xp[p][c][mm] = x[token of row 32 p + mm][c], 0 on padding rows; one
// work-item per element of the P panels (unused panels are left alone).
kernel void moe_pack(global const uchar* xb, ulong xo, global const int* route, int E, int P,
                     int k, int cols, global float* xp) {
  const ulong i = get_global_id(0);
  if (i >= (ulong)P * 32 * cols) return;
  const int mm = i % 32;
  const int c = (i / 32) % cols;
  const int p = i / 32 / cols;
  if (ROUTE_PANEL_EXPERT(route, E)[p] < 0) return;
  const int q = ROUTE_ROW_PAIR(route, E, P)[p * 32 + mm];
  xp[i] = q >= 0 ? CAT(float, xb, xo)[(ulong)(q / k) * cols + c] : 0.0f;
}

// yp[p][n][mm] = (W_e x^T)[n][mm] for the panel's expert e, W stacked
// [E, N, wstored(K)] with scales [E, srows, scols]; one work-item per
// (GEMM_NR rows, panel).
kernel void moe_gemm(global const float* xp, global const int* route, int E, int P,
                     global const uchar* w, ulong wo, global const uchar* sc, ulong so,
                     global float* yp, int N, int K, int b0, int b1, int srows, int scols) {
  const int n0 = get_global_id(0) * GEMM_NR;
  const int p = get_global_id(1);
  if (n0 >= N || p >= P) return;
  const int e = ROUTE_PANEL_EXPERT(route, E)[p];
  if (e < 0) return;
  float16 c0[GEMM_NR], c1[GEMM_NR];
  gemm_tile(xp + (ulong)p * K * 32, expert_matrix(w, wo, e, N, K),
            expert_scales(sc, so, e, srows, scols), n0, N, K, b0, b1, scols, c0, c1);
  for (int r = 0; r < GEMM_NR && n0 + r < N; ++r) {
    global float* out = yp + ((ulong)p * N + n0 + r) * 32;
    vstore16(c0[r], 0, out);
    vstore16(c1[r], 0, out + 16);
  }
}

// g = silu(g) * u, elementwise over n values.
kernel void moe_swiglu(global float* g, global const float* u, ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float v = g[i];
  g[i] = v / (1.0f + exp(-v)) * u[i];
}

// g = act(g + gb_e, u + ub_e) with the clamped form, over the panels'
// [P][N][32] layout (e: the panel's expert; unused panels take no bias).
kernel void moe_swiglu_act(global float* g, global const float* u, ulong n,
                           global const int* route, int E, int N, global const uchar* gb, ulong gbo,
                           int gbdt, global const uchar* ub, ulong ubo, int ubdt, float alpha,
                           float limit, float up_offset) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  float gv = g[i], uv = u[i];
  if (gbdt >= 0 || ubdt >= 0) {
    const ulong pn = i / 32;
    const int e = ROUTE_PANEL_EXPERT(route, E)[pn / N];
    if (e >= 0) {
      const ulong at = (ulong)e * N + pn % N;
      if (gbdt >= 0) gv += load_f(gb + gbo, at, gbdt);
      if (ubdt >= 0) uv += load_f(ub + ubo, at, ubdt);
    }
  }
  g[i] = swiglu_act(gv, uv, alpha, limit, up_offset);
}

// out[t, c] = sum_j w[t, j] (yp[row of (t, j)][c] + db_e[c])
// (+ g_t shared[t, c]), rounded once to out's dtype; one work-item per
// (c, t).  db: the down bias of dtype dbdt, absent when dbdt < 0.
kernel void moe_combine(global const float* yp, global const int* route, int E, int P, int k,
                        global const uchar* wts, ulong wto, int wdt, global const uchar* sb,
                        ulong so, int has_shared, global const float* gates, int has_gates,
                        global uchar* out, ulong oo, int odt, int tokens, int cols,
                        global const uchar* db, ulong dbo, int dbdt) {
  const int c = get_global_id(0), t = get_global_id(1);
  if (c >= cols || t >= tokens) return;
  global const int* pair_row = ROUTE_PAIR_ROW(route, E, P);
  float acc = 0.0f;
  for (int j = 0; j < k; ++j) {
    const int q = t * k + j, row = pair_row[q];
    if (row < 0) continue;
    float y = yp[((ulong)(row / 32) * cols + c) * 32 + row % 32];
    if (dbdt >= 0)
      y += load_f(db + dbo, (ulong)ROUTE_PANEL_EXPERT(route, E)[row / 32] * cols + c, dbdt);
    acc = fma(load_f(wts + wto, q, wdt), y, acc);
  }
  if (has_shared)
    acc = fma(has_gates ? gates[t] : 1.0f, CAT(float, sb, so)[(ulong)t * cols + c], acc);
  store_f(out + oo, (ulong)t * cols + c, odt, acc);
}
