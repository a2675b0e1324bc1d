// Weight matrices of linear layers and experts, prepended to linear.cl and
// moe.cl.  A program is built for one weight dtype, WT (-DWT=<moert_dtype
// code>): f32, f16, bf16 or f8_e4m3.  Weights stay in their dtype in memory
// and are widened to f32 as they are read, 16 at a time; f8_e4m3 rows are
// multiplied by their block scale, one scale per (row block, column block)
// of the layer's block_size [b0, b1]:
//   W[n, k] = e4m3(Wq[n, k]) * scale[n / b0, k / b1].
// Other dtypes take no scale (the callers pass b1 = K so a row is one block).

#ifndef WT
#define WT DT_F32
#endif

#if WT == DT_F32
typedef float wtype;
inline float16 wload16(global const wtype* p) { return vload16(0, p); }
inline float8 wload8(global const wtype* p) { return vload8(0, p); }
inline float wload1(global const wtype* p) { return *p; }
#elif WT == DT_BF16
typedef ushort wtype;
inline float16 wload16(global const wtype* p) { return bf16x16_to_f32(vload16(0, p)); }
inline float8 wload8(global const wtype* p) { return bf16x8_to_f32(vload8(0, p)); }
inline float wload1(global const wtype* p) { return bf16_to_f32(*p); }
#elif WT == DT_F16
typedef ushort wtype;
// vload_half is core OpenCL 1.2 (no cl_khr_fp16 needed): the device's own
// half-to-float conversion (F16C on x86 CPUs).  In the decode GEMV on PoCL
// (1 x 16384 x 4096) it reads f16 weights at 0.95x the bf16 rate, against
// 0.75x with common.cl's integer widening (+14% f16 weight bandwidth).
inline float16 wload16(global const wtype* p) { return vload_half16(0, (global const half*)p); }
inline float8 wload8(global const wtype* p) { return vload_half8(0, (global const half*)p); }
inline float wload1(global const wtype* p) { return vload_half(0, (global const half*)p); }
#elif WT == DT_F8
typedef uchar wtype;
inline float16 wload16(global const wtype* p) { return e4m3x16_to_f32(vload16(0, p)); }
inline float8 wload8(global const wtype* p) { return e4m3x8_to_f32(vload8(0, p)); }
inline float wload1(global const wtype* p) { return e4m3_to_f32(*p); }
#else
#error "WT must be the dtype code of f32, f16, bf16 or f8_e4m3"
#endif

// f8 weights carry block scales.
#define WSCALED (WT == DT_F8)

// For four weight rows w0..w3 of K elements: sum_k W_r[k] * x[k], with row
// r's block b (columns [b * b1, (b + 1) * b1)) scaled by s_r[b] when the
// weights are scaled.  x is f32.
inline float4 dot4(global const wtype* w0, global const wtype* w1, global const wtype* w2,
                   global const wtype* w3, global const float* s0, global const float* s1,
                   global const float* s2, global const float* s3, global const float* x, int K,
                   int b1) {
  float4 total = 0.0f;
  for (int kb = 0; kb < K; kb += b1) {
    const int ke = min(kb + b1, K);
    float16 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int k = kb;
    for (; k + 16 <= ke; k += 16) {
      const float16 xv = vload16(0, x + k);
      a0 = fma(wload16(w0 + k), xv, a0);
      a1 = fma(wload16(w1 + k), xv, a1);
      a2 = fma(wload16(w2 + k), xv, a2);
      a3 = fma(wload16(w3 + k), xv, a3);
    }
    float4 part = (float4)(hsum16(a0), hsum16(a1), hsum16(a2), hsum16(a3));
    for (; k < ke; ++k) {
      const float xk = x[k];
      part = fma((float4)(wload1(w0 + k), wload1(w1 + k), wload1(w2 + k), wload1(w3 + k)),
                 (float4)(xk), part);
    }
#if WSCALED
    const int b = kb / b1;
    part *= (float4)(s0[b], s1[b], s2[b], s3[b]);
#endif
    total += part;
  }
  return total;
}

// The same for one row.
inline float dot1(global const wtype* w0, global const float* s0, global const float* x, int K,
                  int b1) {
  float total = 0.0f;
  for (int kb = 0; kb < K; kb += b1) {
    const int ke = min(kb + b1, K);
    float16 a0 = 0.0f;
    int k = kb;
    for (; k + 16 <= ke; k += 16) a0 = fma(wload16(w0 + k), vload16(0, x + k), a0);
    float part = hsum16(a0);
    for (; k < ke; ++k) part = fma(wload1(w0 + k), x[k], part);
#if WSCALED
    part *= s0[kb / b1];
#endif
    total += part;
  }
  return total;
}

// ---------------------------------------------------------------------------
// The GEMM micro-kernel of the CPU-style kernels: the GEMM_NR x 32 block of
// y^T = W x^T for weight rows n0 .. n0 + GEMM_NR - 1 (clamped to N) of `w`
// ([N, K]; f8 scale rows in `sc`, [ceil(N / b0), scols]) and one packed
// panel of 32 rows of x (`panel`, [K][32] f32).  c0[r] receives columns
// 0..15 of row n0 + r, c1[r] columns 16..31.  Every k streams two vectors
// of the panel and one weight per row, for 2 * GEMM_NR vector FMAs.

#ifndef GEMM_NR
#define GEMM_NR 6
#endif
#define GEMM_KC 256  // columns of narrow weights widened at a time

inline void gemm_tile(global const float* panel, global const wtype* w, global const float* sc,
                      int n0, int N, int K, int b0, int b1, int scols, float16* out0,
                      float16* out1) {
  // Accumulators are locals (kept in registers), copied out at the end.
  float16 c0[GEMM_NR], c1[GEMM_NR];
  global const wtype* wr[GEMM_NR];
#if WSCALED
  global const float* sr[GEMM_NR];
#endif
#if WT != DT_F32
  float wide_w[GEMM_NR * GEMM_KC];
#endif
#pragma unroll
  for (int r = 0; r < GEMM_NR; ++r) {
    const int n = min(n0 + r, N - 1);
    wr[r] = w + (ulong)n * (ulong)K;
#if WSCALED
    sr[r] = sc + (ulong)(n / b0) * (ulong)scols;
#endif
    c0[r] = c1[r] = 0.0f;
  }
  for (int kb = 0; kb < K; kb += b1) {
    const int ke = min(kb + b1, K);
#if WSCALED
    float16 t0[GEMM_NR], t1[GEMM_NR];
#pragma unroll
    for (int r = 0; r < GEMM_NR; ++r) t0[r] = t1[r] = 0.0f;
#define ACC0 t0
#define ACC1 t1
#else
#define ACC0 c0
#define ACC1 c1
#endif
#if WT == DT_F32
    for (int k = kb; k < ke; ++k) {
      const float16 x0 = vload16(0, panel + (ulong)k * 32);
      const float16 x1 = vload16(0, panel + (ulong)k * 32 + 16);
#pragma unroll
      for (int r = 0; r < GEMM_NR; ++r) {
        const float16 a = (float16)(wr[r][k]);
        ACC0[r] = fma(a, x0, ACC0[r]);
        ACC1[r] = fma(a, x1, ACC1[r]);
      }
    }
#else
    // Narrow weights are widened GEMM_KC columns at a time into `wide_w`, so
    // the inner loop broadcasts f32 values from memory as the f32 path does
    // (converting each weight where it is used costs more than the FMAs).
    for (int kc = kb; kc < ke; kc += GEMM_KC) {
      const int kn = min(kc + GEMM_KC, ke) - kc;
#pragma unroll
      for (int r = 0; r < GEMM_NR; ++r) {
        int c = 0;
        for (; c + 16 <= kn; c += 16) vstore16(wload16(wr[r] + kc + c), 0, wide_w + r * GEMM_KC + c);
        for (; c < kn; ++c) wide_w[r * GEMM_KC + c] = wload1(wr[r] + kc + c);
      }
      for (int c = 0; c < kn; ++c) {
        const float16 x0 = vload16(0, panel + (ulong)(kc + c) * 32);
        const float16 x1 = vload16(0, panel + (ulong)(kc + c) * 32 + 16);
#pragma unroll
        for (int r = 0; r < GEMM_NR; ++r) {
          const float16 a = (float16)(wide_w[r * GEMM_KC + c]);
          ACC0[r] = fma(a, x0, ACC0[r]);
          ACC1[r] = fma(a, x1, ACC1[r]);
        }
      }
    }
#endif
#undef ACC0
#undef ACC1
#if WSCALED
    const int b = kb / b1;
#pragma unroll
    for (int r = 0; r < GEMM_NR; ++r) {
      const float s = sr[r][b];
      c0[r] = fma(t0[r], (float16)(s), c0[r]);
      c1[r] = fma(t1[r], (float16)(s), c1[r]);
    }
#endif
  }
#pragma unroll
  for (int r = 0; r < GEMM_NR; ++r) {
    out0[r] = c0[r];
    out1[r] = c1[r];
  }
}
