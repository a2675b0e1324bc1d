// Linear layers and batched matrix products (weights.cl is prepended):
//   y[b, m, n] = sum_k x[b, m, k] W[b, n, k] (+ bias[n])
// with W [N, K] row-major as weights.cl reads it (a linear layer's weight as
// stored in checkpoints, in its dtype or packed, or matmul's b with
// transpose_b), x f32, y any activation dtype (rounded once).  Two families,
// chosen per device by the host:
//  - CPU style (work-groups of one work-item, explicit vectors):
//    gemv4 for few rows of x (each work-item streams four weight rows once
//    and dots them with every row of x) and gemm_cpu for many (each
//    work-item computes a GEMM_NR x 32 block of y^T = W x^T from rows of W
//    and a packed panel of x^T, 2 x GEMM_NR float16 accumulators).
//  - GPU style (cooperative work-groups): gemv_wg (a work-group per output
//    column, strided over k, reduced in local memory) and gemm_tiled (64 x 64
//    tiles of y from 16-deep slices of x and W staged in local memory, each
//    work-item a 4 x 4 register block).

// x of any activation dtype to f32, n elements.
kernel void to_f32(global const uchar* x, ulong xo, int xdt, global float* y, ulong n) {
  const ulong i = get_global_id(0);
  if (i < n) y[i] = load_f(x + xo, i, xdt);
}

inline void store_output(global uchar* y, ulong yo, int ydt, ulong index, float v,
                         global const uchar* bias, ulong bo, int bdt, int has_bias, int n) {
  if (has_bias) v += load_f(bias + bo, (ulong)n, bdt);
  store_f(y + yo, index, ydt, v);
}

// ---------------------------------------------------------------------------
// CPU style.

// One work-item per four columns n of one batch (dim 1).
kernel void gemv4(global const uchar* xb, ulong xo, global const uchar* w, ulong wo, global const uchar* sc,
                  ulong so, int scols, global const uchar* bias, ulong bo, int bdt, int has_bias,
                  global uchar* y, ulong yo, int ydt, int M, int N, int K, int b0, int b1) {
  const int n0 = get_global_id(0) * 4;
  if (n0 >= N) return;
  global const float* x = CAT(float, xb, xo);
  const ulong batch = get_global_id(1);
  const ulong ld = wstored(K);  // stored elements per row of W
  global const wtype* wb = CAT(wtype, w, wo) + batch * (ulong)N * ld;
  const int r0 = n0, r1 = min(n0 + 1, N - 1), r2 = min(n0 + 2, N - 1), r3 = min(n0 + 3, N - 1);
  global const stype* scales = CAT(stype, sc, so);
  global const stype* s0 = scale_row(scales, r0, b0, scols);
  global const stype* s1 = scale_row(scales, r1, b0, scols);
  global const stype* s2 = scale_row(scales, r2, b0, scols);
  global const stype* s3 = scale_row(scales, r3, b0, scols);
  for (int m = 0; m < M; ++m) {
    const ulong row = batch * (ulong)M + (ulong)m;
    const float4 d = dot4(wb + r0 * ld, wb + r1 * ld, wb + r2 * ld, wb + r3 * ld, s0, s1, s2, s3,
                          x + row * (ulong)K, K, b1);
    const ulong out = row * (ulong)N + (ulong)n0;
    store_output(y, yo, ydt, out, d.s0, bias, bo, bdt, has_bias, n0);
    if (n0 + 1 < N) store_output(y, yo, ydt, out + 1, d.s1, bias, bo, bdt, has_bias, n0 + 1);
    if (n0 + 2 < N) store_output(y, yo, ydt, out + 2, d.s2, bias, bo, bdt, has_bias, n0 + 2);
    if (n0 + 3 < N) store_output(y, yo, ydt, out + 3, d.s3, bias, bo, bdt, has_bias, n0 + 3);
  }
}

// Packs x [batch, M, K] (any activation dtype) into panels of 32 rows:
// xp[batch][M / 32][K][32], f32, zero past row M.  One work-item per
// (k, m) of the padded [K, 32 * ceil(M / 32)], batch in dim 1.
kernel void pack_x(global const uchar* x, ulong xo, int xdt, global float* xp, int M, int K,
                   ulong padded) {
  const ulong i = get_global_id(0);
  if (i >= padded * (ulong)K) return;
  const ulong batch = get_global_id(1);
  const ulong m = i % padded, k = i / padded;
  const ulong panel = m / 32;
  float v = 0.0f;
  if (m < (ulong)M) v = load_f(x + xo, (batch * (ulong)M + m) * (ulong)K + k, xdt);
  xp[((batch * (padded / 32) + panel) * (ulong)K + k) * 32 + (m % 32)] = v;
}

// One work-item per block of GEMM_NR columns n (dim 0) and 32 rows m (dim
// 1) of one batch (dim 2).
kernel void gemm_cpu(global const uchar* xb, ulong xo, global const uchar* w, ulong wo,
                     global const uchar* sc, ulong so, int scols, global const uchar* bias,
                     ulong bo, int bdt, int has_bias, global uchar* y, ulong yo, int ydt, int M,
                     int N, int K, int b0, int b1) {
  const int n0 = get_global_id(0) * GEMM_NR;
  if (n0 >= N) return;
  const int mb = get_global_id(1);
  const ulong batch = get_global_id(2);
  const int panels = (M + 31) / 32;
  global const float* panel =
      CAT(float, xb, xo) + (batch * (ulong)panels + (ulong)mb) * (ulong)K * 32;
  float16 c0[GEMM_NR], c1[GEMM_NR];
  gemm_tile(panel, CAT(wtype, w, wo) + batch * (ulong)N * (ulong)wstored(K), CAT(stype, sc, so), n0,
            N, K, b0, b1, scols, c0, c1);
  const int m0 = mb * 32;
  float tile[32];
  for (int r = 0; r < GEMM_NR; ++r) {
    const int n = n0 + r;
    if (n >= N) break;
    vstore16(c0[r], 0, tile);
    vstore16(c1[r], 0, tile + 16);
    for (int mm = 0; mm < 32 && m0 + mm < M; ++mm)
      store_output(y, yo, ydt, (batch * (ulong)M + (ulong)(m0 + mm)) * (ulong)N + (ulong)n,
                   tile[mm], bias, bo, bdt, has_bias, n);
  }
}

// ---------------------------------------------------------------------------
// GPU style.

// One work-group per column n (dim 0) of one batch (dim 1).
kernel void gemv_wg(global const uchar* xb, ulong xo, global const uchar* w, ulong wo,
                    global const uchar* sc, ulong so, int scols, global const uchar* bias,
                    ulong bo, int bdt, int has_bias, global uchar* y, ulong yo, int ydt, int M,
                    int N, int K, int b0, int b1) {
  local float scratch[MOERT_ROW_WG];
  global const float* x = CAT(float, xb, xo);
  const int n = get_group_id(0);
  const ulong batch = get_global_id(1);
  const int lid = get_local_id(0), wg = get_local_size(0);
  global const wtype* wrow =
      CAT(wtype, w, wo) + (batch * (ulong)N + (ulong)n) * (ulong)wstored(K);
  global const stype* srow = scale_row(CAT(stype, sc, so), n, b0, scols);
  for (int m = 0; m < M; ++m) {
    global const float* xr = x + (batch * (ulong)M + (ulong)m) * (ulong)K;
    float acc = 0.0f;
    for (int kb = 0, b = 0; kb < K; kb += b1, ++b) {
      const int ke = min(kb + b1, K);
      const float s = wscale(srow, b), off = woffset(srow, b, s);
      float part = 0.0f;
      for (int k = kb + lid; k < ke; k += wg) part = fma(wload1(wrow, k, s, off), xr[k], part);
#if WSCALE_SUMS
      acc = fma(part, s, acc);
#else
      acc += part;
#endif
    }
    acc = wg_sum(acc, scratch);
    if (lid == 0)
      store_output(y, yo, ydt, (batch * (ulong)M + (ulong)m) * (ulong)N + (ulong)n, acc, bias, bo,
                   bdt, has_bias, n);
  }
}

#define TILE 64
#define TILE_K 16

// A 16 x 16 work-group computes a 64 x 64 tile of y (rows m, columns n) of
// one batch (dim 2); work-item (tx, ty) owns rows ty + 16 i and columns
// tx + 16 j, i, j < 4.
kernel void gemm_tiled(global const uchar* xb, ulong xo, global const uchar* w, ulong wo,
                       global const uchar* sc, ulong so, int scols, global const uchar* bias,
                       ulong bo, int bdt, int has_bias, global uchar* y, ulong yo, int ydt, int M,
                       int N, int K, int b0, int b1) {
  local float xs[TILE_K][TILE + 1];
  local float ws[TILE_K][TILE + 1];
  const int tx = get_local_id(0), ty = get_local_id(1);
  const int n_base = get_group_id(0) * TILE, m_base = get_group_id(1) * TILE;
  const ulong batch = get_global_id(2);
  global const float* xm = CAT(float, xb, xo) + batch * (ulong)M * (ulong)K;
  global const wtype* wb = CAT(wtype, w, wo) + batch * (ulong)N * (ulong)wstored(K);
  global const stype* scales = CAT(stype, sc, so);
  const int flat = ty * 16 + tx;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
#if WSCALE_SUMS
  // Products of one block of b1 columns are summed unscaled, then scaled.
  float part[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) part[i][j] = 0.0f;
#define TILE_SUM part
#define FLUSH_BLOCK(block)                                                      \
  for (int j = 0; j < 4; ++j) {                                                 \
    const int n = min(n_base + tx + 16 * j, N - 1);                             \
    const float s = wscale(scale_row(scales, n, b0, scols), block);             \
    for (int i = 0; i < 4; ++i) {                                               \
      acc[i][j] = fma(part[i][j], s, acc[i][j]);                                \
      part[i][j] = 0.0f;                                                        \
    }                                                                           \
  }
#else
#define TILE_SUM acc
#endif
  for (int k0 = 0; k0 < K; k0 += TILE_K) {
    // 256 work-items load 64 x 16 values of each operand, 4 each.
    for (int e = flat; e < TILE * TILE_K; e += 256) {
      const int kk = e % TILE_K, rr = e / TILE_K;
      const int k = k0 + kk;
      const int m = m_base + rr, n = n_base + rr;
      xs[kk][rr] = (m < M && k < K) ? xm[(ulong)m * (ulong)K + (ulong)k] : 0.0f;
      float wv = 0.0f;
      if (n < N && k < K) {
        // Packed weights are staged dequantised with their block's scale.
        global const stype* srow = scale_row(scales, n, b0, scols);
        const float s = wscale(srow, k / b1);
        wv = wload1(wb + (ulong)n * (ulong)wstored(K), k, s, woffset(srow, k / b1, s));
      }
      ws[kk][rr] = wv;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int kk = 0; kk < TILE_K && k0 + kk < K; ++kk) {
#if WSCALE_SUMS
      if (k0 + kk > 0 && (k0 + kk) % b1 == 0) FLUSH_BLOCK((k0 + kk) / b1 - 1)
#endif
      float xv[4], wv[4];
      for (int i = 0; i < 4; ++i) xv[i] = xs[kk][ty + 16 * i];
      for (int j = 0; j < 4; ++j) wv[j] = ws[kk][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) TILE_SUM[i][j] = fma(xv[i], wv[j], TILE_SUM[i][j]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
#if WSCALE_SUMS
  if (K > 0) FLUSH_BLOCK((K - 1) / b1)
#undef FLUSH_BLOCK
#endif
#undef TILE_SUM
  for (int i = 0; i < 4; ++i) {
    const int m = m_base + ty + 16 * i;
    if (m >= M) continue;
    for (int j = 0; j < 4; ++j) {
      const int n = n_base + tx + 16 * j;
      if (n < N)
        store_output(y, yo, ydt, (batch * (ulong)M + (ulong)m) * (ulong)N + (ulong)n, acc[i][j],
                     bias, bo, bdt, has_bias, n);
    }
  }
}
