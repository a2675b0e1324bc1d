// Weight matrices of linear layers and experts, prepended to linear.cl and
// moe.cl.  A program is built for one kind of weight: a dtype WT
// (-DWT=<moert_dtype code>: f32, f16, bf16 or f8_e4m3), or a packed format of
// ops/weight_format.h, WQ (-DWQ=1 int8, 2 int4, 3 mxfp4, the values of
// ops::WeightFormat; -DWZP=1: int4 with (scale, zero) pairs).  Weights stay
// as stored in memory and are widened to f32 as they are read, 16 or 32 at a
// time.  f8_e4m3 and packed rows have block scales, one per (row block,
// column block) of the layer's block_size [b0, b1]:
//   f8_e4m3  W[n, k] = e4m3(q) * scale[n / b0, k / b1]            (f32 scales)
//   int8     W[n, k] = q * scale                                  (f16 scales)
//   int4     W[n, k] = (q - zero) * scale, q a nibble             (f16 scales;
//            zero 8, or the second of each (scale, zero) pair)
//   mxfp4    W[n, k] = e2m1(q) * 2^(scale - 127), q a nibble      (u8 e8m0)
// Packed weights are dequantised exactly as they are loaded, in registers
// (q * scale - zero * scale in one fma: both products and their difference
// are exact in f32), so every product is of x with the exact W.  An
// f8_e4m3 value times an f32 scale is not exact in f32: the products of a
// block are summed from e4m3(q) and the sums multiplied by the block's scale
// (WSCALE_SUMS).
// Other dtypes take no scale (the callers pass b1 = K so a row is one block).
//
// A row of K columns holds wstored(K) elements of wtype: two columns per byte
// for int4 and mxfp4 (column k is the low nibble of byte k / 2 when k is
// even, the high one when odd; the last byte is half used when K is odd).
// Loaders take a row and a column index, so every caller addresses columns
// alike; vectors of nibbles start at an even column.

#ifndef WQ
#define WQ 0
#endif
#ifndef WZP
#define WZP 0
#endif
#define WQ_INT8 1
#define WQ_INT4 2
#define WQ_MXFP4 3

#if WQ == WQ_INT8
#undef WT
#define WT DT_I8
#elif WQ == WQ_INT4 || WQ == WQ_MXFP4
#undef WT
#define WT DT_U8
#elif WQ != 0
#error "WQ must be 1 (int8), 2 (int4) or 3 (mxfp4)"
#endif
#ifndef WT
#define WT DT_F32
#endif

// Two columns per byte.
#define WNIBBLE (WQ == WQ_INT4 || WQ == WQ_MXFP4)
// Rows carry block scales (f8_e4m3 and the packed formats) ...
#define WSCALED (WT == DT_F8 || WQ != 0)
// ... which multiply the sums of a block's products (f8_e4m3) rather than
// the weights as they are loaded (packed).
#define WSCALE_SUMS (WT == DT_F8)
// Scale elements per group: (scale, zero) pairs for int4 with zero points.
#define WSTRIDE (WQ == WQ_INT4 && WZP ? 2 : 1)

// The stored elements of a row of `cols` columns.
#if WNIBBLE
#define wstored(cols) (((cols) + 1) / 2)
#else
#define wstored(cols) (cols)
#endif

// ---------------------------------------------------------------------------
// Decoding of the packed formats.

#if WNIBBLE
// Nibbles k .. k + 15 (k even) of a row in column order: the low and high
// nibbles of bytes k / 2 .. k / 2 + 7, interleaved (by a swizzle: PoCL's
// shuffle() goes element by element).
inline uint16 nibbles16(global const uchar* row, int k) {
  const uchar8 b = vload8(0, row + (k >> 1));
  return convert_uint16(((uchar16)(b & (uchar)15, b >> (uchar)4)).s08192a3b4c5d6e7f);
}

inline uint nibble1(global const uchar* row, int k) { return (row[k >> 1] >> ((k & 1) * 4)) & 15u; }

// x[k .. k + 31] (k even) split into its even and odd columns, the order in
// which wload32 gives 16 bytes of a row (low nibbles: the even columns, high
// nibbles: the odd ones), so the GEMVs interleave neither.
inline void xsplit32(global const float* x, int k, float16* even, float16* odd) {
  const float16 a = vload16(0, x + k), b = vload16(0, x + k + 16);
  *even = (float16)(a.even, b.even);
  *odd = (float16)(a.odd, b.odd);
}
#endif

#if WQ == WQ_MXFP4
// e2m1 codes times a scale s > 0 (or NaN): the magnitudes of codes q & 7
// are half of 0, 1, 2, 3, 4, 6, 8, 12, the nibbles of 0xC8643210, so
// |W| = nibble * (s / 2), exact (s is a power of two); bit 3 of q is the
// sign, set in the product.  (PoCL's shuffle() goes element by element: a
// table of floats would cost 3x.)
inline float16 e2m1x16_scaled(uint16 q, float s) {
  const uint16 twice = ((uint16)(0xC8643210u) >> ((q & 7u) << 2)) & 15u;
  return as_float16(as_uint16(convert_float16(twice) * (0.5f * s)) | ((q & 8u) << 28));
}

inline float e2m1_scaled(uint q, float s) {
  const uint twice = (0xC8643210u >> ((q & 7u) << 2)) & 15u;
  return as_float(as_uint((float)twice * (0.5f * s)) | ((q & 8u) << 28));
}

// An e8m0 scale: 2^(e - 127), NaN for 255 (2^-127, for e = 0, is subnormal).
inline float e8m0_to_f32(uchar e) {
  return e == 255 ? NAN : (e == 0 ? as_float(0x00400000u) : as_float((uint)e << 23));
}
#endif

// ---------------------------------------------------------------------------
// wtype: a stored weight element; stype: a stored scale element.
//   wload16(row, k, s, off), wload1(row, k, s, off): columns k .. k + 15 (k
//     even for nibble formats), or column k, of a row as f32: for packed
//     formats W itself, code * s + off with the scale s and the offset
//     off = -zero * s of the columns' block (wscale, woffset); for the
//     dtypes the stored value (s and off are ignored).
//   wload32(row, k, s, off, &even, &odd) (nibble formats): columns k .. k + 31
//     (k even) as xsplit32 splits x.

#if WQ == WQ_INT8
typedef char wtype;
typedef ushort stype;  // f16
inline float16 wload16(global const wtype* row, int k, float s, float off) {
  return convert_float16(vload16(0, row + k)) * s;
}
inline float wload1(global const wtype* row, int k, float s, float off) { return row[k] * s; }
#elif WQ == WQ_INT4
typedef uchar wtype;
typedef ushort stype;  // f16, or f16 (scale, zero) pairs
inline float16 wload16(global const wtype* row, int k, float s, float off) {
  return fma(convert_float16(nibbles16(row, k)), (float16)(s), (float16)(off));
}
inline float wload1(global const wtype* row, int k, float s, float off) {
  return fma((float)nibble1(row, k), s, off);
}
inline void wload32(global const wtype* row, int k, float s, float off, float16* even,
                    float16* odd) {
  const uint16 b = convert_uint16(vload16(0, row + (k >> 1)));
  *even = fma(convert_float16(b & 15u), (float16)(s), (float16)(off));
  *odd = fma(convert_float16(b >> 4), (float16)(s), (float16)(off));
}
#elif WQ == WQ_MXFP4
typedef uchar wtype;
typedef uchar stype;  // e8m0
inline float16 wload16(global const wtype* row, int k, float s, float off) {
  return e2m1x16_scaled(nibbles16(row, k), s);
}
inline float wload1(global const wtype* row, int k, float s, float off) {
  return e2m1_scaled(nibble1(row, k), s);
}
inline void wload32(global const wtype* row, int k, float s, float off, float16* even,
                    float16* odd) {
  const uint16 b = convert_uint16(vload16(0, row + (k >> 1)));
  *even = e2m1x16_scaled(b & 15u, s);
  *odd = e2m1x16_scaled(b >> 4, s);
}
#elif WT == DT_F32
typedef float wtype;
typedef float stype;
inline float16 wload16(global const wtype* p, int k, float s, float off) {
  return vload16(0, p + k);
}
inline float wload1(global const wtype* p, int k, float s, float off) { return p[k]; }
#elif WT == DT_BF16
typedef ushort wtype;
typedef float stype;
inline float16 wload16(global const wtype* p, int k, float s, float off) {
  return bf16x16_to_f32(vload16(0, p + k));
}
inline float wload1(global const wtype* p, int k, float s, float off) {
  return bf16_to_f32(p[k]);
}
#elif WT == DT_F16
typedef ushort wtype;
typedef float stype;
// vload_half is core OpenCL 1.2 (no cl_khr_fp16 needed): the device's own
// half-to-float conversion (F16C on x86 CPUs).  In the decode GEMV on PoCL
// (1 x 16384 x 4096) it reads f16 weights at 0.95x the bf16 rate, against
// 0.75x with common.cl's integer widening (+14% f16 weight bandwidth).
inline float16 wload16(global const wtype* p, int k, float s, float off) {
  return vload_half16(0, (global const half*)(p + k));
}
inline float wload1(global const wtype* p, int k, float s, float off) {
  return vload_half(k, (global const half*)p);
}
#elif WT == DT_F8
typedef uchar wtype;
typedef float stype;  // f32
inline float16 wload16(global const wtype* p, int k, float s, float off) {
  return e4m3x16_to_f32(vload16(0, p + k));
}
inline float wload1(global const wtype* p, int k, float s, float off) {
  return e4m3_to_f32(p[k]);
}
#else
#error "WT must be the dtype code of f32, f16, bf16 or f8_e4m3"
#endif

// The scale row of weight row n: scale[n / b0, :], `scols` groups wide.
inline global const stype* scale_row(global const stype* sc, int n, int b0, int scols) {
  return sc + (ulong)(n / b0) * (ulong)scols * WSTRIDE;
}

// The scale of group b of a scale row (1 for unscaled weights).
inline float wscale(global const stype* s, int b) {
#if WQ == WQ_MXFP4
  return e8m0_to_f32(s[b]);
#elif WQ != 0
  return vload_half(b * WSTRIDE, (global const half*)s);
#elif WSCALED
  return s[b];
#else
  return 1.0f;
#endif
}

// The offset -zero * scale of group b of a scale row with scale `scale`
// (exact): int4's zero point is 8 or stored beside the scale; 0 for every
// other kind.
inline float woffset(global const stype* s, int b, float scale) {
#if WQ == WQ_INT4 && WZP
  return -vload_half(2 * b + 1, (global const half*)s) * scale;
#elif WQ == WQ_INT4
  return -8.0f * scale;
#else
  return 0.0f;
#endif
}

// s[i] and off[i] (wscale, woffset) of the `count` <= WGROUPS groups
// from group b of a scale row: a whole vector of them at once when there
// are WGROUPS (converting one group's f16 scale costs as much as the
// products of a group of 32 columns).
#define WGROUPS 16
inline void wgroups(global const stype* srow, int b, int count, float* s, float* off) {
#if WSCALED
  if (count == WGROUPS) {
#if WQ == WQ_MXFP4
    const uint16 e = convert_uint16(vload16(0, srow + b));
    float16 v = as_float16(e << 23);
    v = select(v, (float16)(as_float(0x00400000u)), e == 0u);
    vstore16(select(v, (float16)(NAN), e == 255u), 0, s);
    vstore16((float16)(0.0f), 0, off);
#elif WQ == WQ_INT4 && WZP
    const float16 lo = vload_half16(0, (global const half*)srow + 2 * b);
    const float16 hi = vload_half16(1, (global const half*)srow + 2 * b);
    const float16 v = (float16)(lo.even, hi.even);
    vstore16(v, 0, s);
    vstore16(-(float16)(lo.odd, hi.odd) * v, 0, off);
#elif WQ != 0
    const float16 v = vload_half16(0, (global const half*)srow + b);
    vstore16(v, 0, s);
    vstore16(WQ == WQ_INT4 ? -8.0f * v : (float16)(0.0f), 0, off);
#else
    vstore16(vload16(0, srow + b), 0, s);
    vstore16((float16)(0.0f), 0, off);
#endif
    return;
  }
#endif
  for (int i = 0; i < count; ++i) {
    s[i] = wscale(srow, b + i);
    off[i] = woffset(srow, b + i, s[i]);
  }
}

// ---------------------------------------------------------------------------
// Dot products of the GEMV kernels.

// Adds the products of columns kb .. ke - 1 of four weight rows w0..w3
// (row r dequantised with the block's scale sr and offset offr) and x
// to the vector sums p0..p3 and, for columns taken one at a time, to `part`.
// Always inlined, so the sums stay in registers (PoCL otherwise calls it);
// scalar scales, so each is one broadcast.
__attribute__((always_inline)) inline void dot4_block(
    global const wtype* w0, global const wtype* w1, global const wtype* w2,
    global const wtype* w3, global const float* x, int kb, int ke, float s0, float s1, float s2,
    float s3, float off0, float off1, float off2, float off3, float16* p0, float16* p1, float16* p2,
    float16* p3, float4* part) {
  int k = kb;
#if WNIBBLE
  if (k & 1) {  // a block starting mid-byte
    *part = fma((float4)(wload1(w0, k, s0, off0), wload1(w1, k, s1, off1),
                         wload1(w2, k, s2, off2), wload1(w3, k, s3, off3)),
                (float4)(x[k]), *part);
    ++k;
  }
  for (; k + 32 <= ke; k += 32) {
    float16 xe, xo, we, wo;
    xsplit32(x, k, &xe, &xo);
    wload32(w0, k, s0, off0, &we, &wo);
    *p0 = fma(we, xe, fma(wo, xo, *p0));
    wload32(w1, k, s1, off1, &we, &wo);
    *p1 = fma(we, xe, fma(wo, xo, *p1));
    wload32(w2, k, s2, off2, &we, &wo);
    *p2 = fma(we, xe, fma(wo, xo, *p2));
    wload32(w3, k, s3, off3, &we, &wo);
    *p3 = fma(we, xe, fma(wo, xo, *p3));
  }
#endif
  for (; k + 16 <= ke; k += 16) {
    const float16 xv = vload16(0, x + k);
    *p0 = fma(wload16(w0, k, s0, off0), xv, *p0);
    *p1 = fma(wload16(w1, k, s1, off1), xv, *p1);
    *p2 = fma(wload16(w2, k, s2, off2), xv, *p2);
    *p3 = fma(wload16(w3, k, s3, off3), xv, *p3);
  }
  for (; k < ke; ++k)
    *part = fma((float4)(wload1(w0, k, s0, off0), wload1(w1, k, s1, off1),
                         wload1(w2, k, s2, off2), wload1(w3, k, s3, off3)),
                (float4)(x[k]), *part);
}

// For four weight rows w0..w3 (each `wstored(K)` elements) of K columns:
// sum_k W_r[k] * x[k], a block of b1 columns at a time with the block's
// scales from the scale rows s0..s3, read WGROUPS blocks at a time (f8 block
// sums are multiplied by the scale at the block's end).  Vector sums are
// reduced once at the end.  x is f32.
inline float4 dot4(global const wtype* w0, global const wtype* w1, global const wtype* w2,
                   global const wtype* w3, global const stype* s0, global const stype* s1,
                   global const stype* s2, global const stype* s3, global const float* x, int K,
                   int b1) {
  float16 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  float4 tail = 0.0f;  // the columns taken one at a time
#if WSCALED
  const int groups = (K + b1 - 1) / b1;
  float gs[4][WGROUPS], goff[4][WGROUPS];
  for (int b = 0; b < groups; b += WGROUPS) {
    const int count = min(groups - b, WGROUPS);
    wgroups(s0, b, count, gs[0], goff[0]);
    wgroups(s1, b, count, gs[1], goff[1]);
    wgroups(s2, b, count, gs[2], goff[2]);
    wgroups(s3, b, count, gs[3], goff[3]);
    for (int g = 0; g < count; ++g) {
      const int kb = (b + g) * b1, ke = min(kb + b1, K);
#if WSCALE_SUMS
      float16 p0 = 0.0f, p1 = 0.0f, p2 = 0.0f, p3 = 0.0f;
      float4 part = 0.0f;
      dot4_block(w0, w1, w2, w3, x, kb, ke, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, &p0,
                 &p1, &p2, &p3, &part);
      const float4 s = (float4)(gs[0][g], gs[1][g], gs[2][g], gs[3][g]);
      a0 = fma(p0, (float16)(s.s0), a0);
      a1 = fma(p1, (float16)(s.s1), a1);
      a2 = fma(p2, (float16)(s.s2), a2);
      a3 = fma(p3, (float16)(s.s3), a3);
      tail = fma(part, s, tail);
#else
      dot4_block(w0, w1, w2, w3, x, kb, ke, gs[0][g], gs[1][g], gs[2][g], gs[3][g], goff[0][g],
                 goff[1][g], goff[2][g], goff[3][g], &a0, &a1, &a2, &a3, &tail);
#endif
    }
  }
#else
  dot4_block(w0, w1, w2, w3, x, 0, K, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, &a0, &a1, &a2,
             &a3, &tail);
#endif
  return (float4)(hsum16(a0), hsum16(a1), hsum16(a2), hsum16(a3)) + tail;
}

// ---------------------------------------------------------------------------
// The GEMM micro-kernel of the CPU-style kernels: the GEMM_NR x 32 block of
// y^T = W x^T for weight rows n0 .. n0 + GEMM_NR - 1 (clamped to N) of `w`
// ([N, wstored(K)]; scale rows in `sc`, [ceil(N / b0), scols]) and one packed
// panel of 32 rows of x (`panel`, [K][32] f32).  c0[r] receives columns
// 0..15 of row n0 + r, c1[r] columns 16..31.  Every k streams two vectors
// of the panel and one weight per row, for 2 * GEMM_NR vector FMAs.

#ifndef GEMM_NR
#define GEMM_NR 6
#endif
#define GEMM_KC 256  // columns of narrow weights widened at a time

inline void gemm_tile(global const float* panel, global const wtype* w, global const stype* sc,
                      int n0, int N, int K, int b0, int b1, int scols, float16* out0,
                      float16* out1) {
  // Accumulators are locals (kept in registers), copied out at the end.
  float16 c0[GEMM_NR], c1[GEMM_NR];
  global const wtype* wr[GEMM_NR];
  global const stype* sr[GEMM_NR];
#if WT != DT_F32
  float wide_w[GEMM_NR * GEMM_KC];
#endif
#pragma unroll
  for (int r = 0; r < GEMM_NR; ++r) {
    const int n = min(n0 + r, N - 1);
    wr[r] = w + (ulong)n * (ulong)wstored(K);
    sr[r] = scale_row(sc, n, b0, scols);
    c0[r] = c1[r] = 0.0f;
  }
  for (int kb = 0; kb < K; kb += b1) {
    const int ke = min(kb + b1, K);
    const int b = kb / b1;
#if WSCALE_SUMS
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
    // Narrow and packed weights are widened (packed ones dequantised)
    // GEMM_KC columns at a time into `wide_w`, so the inner loop broadcasts
    // f32 values from memory as the f32 path does (converting each weight
    // where it is used costs more than the FMAs).
    for (int kc = kb; kc < ke; kc += GEMM_KC) {
      const int kn = min(kc + GEMM_KC, ke) - kc;
#pragma unroll
      for (int r = 0; r < GEMM_NR; ++r) {
        const float s = wscale(sr[r], b), off = woffset(sr[r], b, s);
        int c = 0;
#if WNIBBLE
        // Vectors of nibbles start at an even column.
        if (kc & 1) {
          wide_w[r * GEMM_KC] = wload1(wr[r], kc, s, off);
          c = 1;
        }
#endif
        for (; c + 16 <= kn; c += 16)
          vstore16(wload16(wr[r], kc + c, s, off), 0, wide_w + r * GEMM_KC + c);
        for (; c < kn; ++c) wide_w[r * GEMM_KC + c] = wload1(wr[r], kc + c, s, off);
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
#if WSCALE_SUMS
#pragma unroll
    for (int r = 0; r < GEMM_NR; ++r) {
      const float s = wscale(sr[r], b);
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
