// The attention tiles of attention_tiles.h.  The AVX-512 bodies keep a
// block of rows x 64 columns of results in 24 zmm accumulators and stream
// the shared operand once per block; the portable bodies are plain loops.
#include "attention_tiles.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "vec/vec.h"

#if MOERT_CPU_X86
#include "vec/avx512.h"
#endif

namespace moert::cpu::attn {
namespace {

// ---- portable -------------------------------------------------------------

void scores_transposed_portable(const float* q, int64_t ldq, int64_t m, const float* kt, int64_t dk,
                                float* s) {
  for (int64_t r = 0; r < m; ++r) {
    float* srow = s + r * kKeyBlock;
    std::fill(srow, srow + kKeyBlock, 0.0f);
    for (int64_t c = 0; c < dk; ++c) {
      const float qc = q[r * ldq + c];
      const float* kc = kt + c * kKeyBlock;
      for (int64_t j = 0; j < kKeyBlock; ++j) srow[j] += qc * kc[j];
    }
  }
}

void scores_rows_portable(const float* q, int64_t ldq, int64_t m, const float* k, int64_t ldk,
                          int64_t nk, int64_t dk, float* s) {
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < nk; ++j) {
      const float* qr = q + r * ldq;
      const float* kr = k + j * ldk;
      float acc[8] = {};
      int64_t c = 0;
      for (; c + 8 <= dk; c += 8)
        for (int u = 0; u < 8; ++u) acc[u] += qr[c + u] * kr[c + u];
      for (; c < dk; ++c) acc[0] += qr[c] * kr[c];
      float sum = 0;
      for (float a : acc) sum += a;
      s[r * kKeyBlock + j] = sum;
    }
}

void weighted_sum_portable(const float* p, int64_t m, const float* v, int64_t ldv, int64_t nk,
                           int64_t dv, float* o, int64_t ldo) {
  for (int64_t r = 0; r < m; ++r) {
    float* orow = o + r * ldo;
    for (int64_t j = 0; j < nk; ++j) {
      const float w = p[r * kKeyBlock + j];
      if (w == 0.0f) continue;
      const float* vr = v + j * ldv;
      for (int64_t c = 0; c < dv; ++c) orow[c] += w * vr[c];
    }
  }
}

void online_softmax_portable(float* s, int64_t rows, int64_t group, int64_t nk,
                             const int32_t* range, float* m, float* l, float* o, int64_t ldo,
                             int64_t dv) {
  for (int64_t r = 0; r < rows; ++r) {
    float* sr = s + r * kKeyBlock;
    const int64_t t = r / group, a = range[2 * t], b = std::min<int64_t>(range[2 * t + 1], nk);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = a; j < b; ++j) mx = std::max(mx, sr[j]);
    const float m_new = std::max(m[r], mx);
    if (a >= b || m_new == -std::numeric_limits<float>::infinity()) {
      std::fill(sr, sr + kKeyBlock, 0.0f);
      continue;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < kKeyBlock; ++j) {
      sr[j] = j >= a && j < b ? std::exp(sr[j] - m_new) : 0.0f;
      sum += sr[j];
    }
    const float alpha = std::exp(m[r] - m_new);
    if (alpha != 1.0f)
      for (int64_t c = 0; c < dv; ++c) o[r * ldo + c] *= alpha;
    l[r] = l[r] * alpha + sum;
    m[r] = m_new;
  }
}

const Tiles kPortable = {scores_transposed_portable, scores_rows_portable, online_softmax_portable,
                         weighted_sum_portable};

// ---- AVX-512 --------------------------------------------------------------

#if MOERT_CPU_X86

// R rows of scores against a transposed key block: R x 4 accumulators.
template <int R>
MOERT_CPU_AVX512 inline void scores_transposed_rows(const float* q, int64_t ldq, const float* kt,
                                                    int64_t dk, float* s) {
  __m512 acc[R][4];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; ++c) {
    const float* kc = kt + c * kKeyBlock;
    const __m512 k0 = _mm512_loadu_ps(kc), k1 = _mm512_loadu_ps(kc + 16);
    const __m512 k2 = _mm512_loadu_ps(kc + 32), k3 = _mm512_loadu_ps(kc + 48);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 b = _mm512_set1_ps(q[i * ldq + c]);
      acc[i][0] = _mm512_fmadd_ps(b, k0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(b, k1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(b, k2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(b, k3, acc[i][3]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(s + i * kKeyBlock + 16 * j, acc[i][j]);
}

MOERT_CPU_AVX512 void scores_transposed_avx512(const float* q, int64_t ldq, int64_t m,
                                               const float* kt, int64_t dk, float* s) {
  int64_t r = 0;
  for (; r + 6 <= m; r += 6) scores_transposed_rows<6>(q + r * ldq, ldq, kt, dk, s + r * kKeyBlock);
  const float* qr = q + r * ldq;
  float* sr = s + r * kKeyBlock;
  switch (m - r) {
    case 5:
      return scores_transposed_rows<5>(qr, ldq, kt, dk, sr);
    case 4:
      return scores_transposed_rows<4>(qr, ldq, kt, dk, sr);
    case 3:
      return scores_transposed_rows<3>(qr, ldq, kt, dk, sr);
    case 2:
      return scores_transposed_rows<2>(qr, ldq, kt, dk, sr);
    case 1:
      return scores_transposed_rows<1>(qr, ldq, kt, dk, sr);
    default:
      return;
  }
}

// Lane j of the result = the sum of the 16 lanes of a[j]: pairs of vectors
// interleaved and added (within 128-bit lanes), then 128-bit lanes
// exchanged and added; 15 additions and 30 shuffles for 16 sums.
MOERT_CPU_AVX512 inline __m512 sum16(const __m512* a) {
  __m512 b[8], c[4], d[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
    c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0xdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], 0x88),
                       _mm512_shuffle_f32x4(d[0], d[1], 0xdd));
}

// Scores 16 keys at a time: per row, one accumulator per key over the
// features, then the 16 accumulators summed together by sum16.
MOERT_CPU_AVX512 void scores_rows_avx512(const float* q, int64_t ldq, int64_t m, const float* k,
                                         int64_t ldk, int64_t nk, int64_t dk, float* s) {
  const int64_t full = dk / 16 * 16;
  const __mmask16 tail = vec::avx512::tail_mask(dk - full);
  for (int64_t j0 = 0; j0 < nk; j0 += 16) {
    const int64_t nj = std::min<int64_t>(16, nk - j0);
    // Keys past the last repeat it (valid memory); their lanes are not stored.
    const float* kr[16];
    for (int64_t j = 0; j < 16; ++j) kr[j] = k + (j0 + std::min(j, nj - 1)) * ldk;
    for (int64_t r = 0; r < m; ++r) {
      const float* qr = q + r * ldq;
      __m512 acc[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
      for (int64_t c = 0; c < full; c += 16) {
        const __m512 qv = _mm512_loadu_ps(qr + c);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j)
          acc[j] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(kr[j] + c), acc[j]);
      }
      if (full < dk) {
        const __m512 qv = _mm512_maskz_loadu_ps(tail, qr + full);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j)
          acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tail, kr[j] + full), acc[j]);
      }
      _mm512_mask_storeu_ps(s + r * kKeyBlock + j0, vec::avx512::tail_mask(nj), sum16(acc));
    }
  }
}

// R rows x NV vectors (up to 64 columns) of the output, the last vector
// under mask `last`.
template <int R, int NV>
MOERT_CPU_AVX512 inline void weighted_sum_tile(const float* p, const float* v, int64_t ldv,
                                               int64_t nk, float* o, int64_t ldo, __mmask16 last) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j)
      acc[i][j] = _mm512_maskz_loadu_ps(j == NV - 1 ? last : 0xffff, o + i * ldo + 16 * j);
  for (int64_t n = 0; n < nk; ++n) {
    __m512 vv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j)
      vv[j] = _mm512_maskz_loadu_ps(j == NV - 1 ? last : 0xffff, v + n * ldv + 16 * j);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 b = _mm512_set1_ps(p[i * kKeyBlock + n]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(b, vv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j)
      _mm512_mask_storeu_ps(o + i * ldo + 16 * j, j == NV - 1 ? last : 0xffff, acc[i][j]);
}

template <int NV>
MOERT_CPU_AVX512 inline void weighted_sum_cols(const float* p, int64_t m, const float* v,
                                               int64_t ldv, int64_t nk, float* o, int64_t ldo,
                                               __mmask16 last) {
  int64_t r = 0;
  for (; r + 6 <= m; r += 6)
    weighted_sum_tile<6, NV>(p + r * kKeyBlock, v, ldv, nk, o + r * ldo, ldo, last);
  const float* pr = p + r * kKeyBlock;
  float* orow = o + r * ldo;
  switch (m - r) {
    case 5:
      return weighted_sum_tile<5, NV>(pr, v, ldv, nk, orow, ldo, last);
    case 4:
      return weighted_sum_tile<4, NV>(pr, v, ldv, nk, orow, ldo, last);
    case 3:
      return weighted_sum_tile<3, NV>(pr, v, ldv, nk, orow, ldo, last);
    case 2:
      return weighted_sum_tile<2, NV>(pr, v, ldv, nk, orow, ldo, last);
    case 1:
      return weighted_sum_tile<1, NV>(pr, v, ldv, nk, orow, ldo, last);
    default:
      return;
  }
}

MOERT_CPU_AVX512 void weighted_sum_avx512(const float* p, int64_t m, const float* v, int64_t ldv,
                                          int64_t nk, int64_t dv, float* o, int64_t ldo) {
  for (int64_t c0 = 0; c0 < dv; c0 += 64) {
    const int64_t cols = std::min<int64_t>(64, dv - c0);
    const int64_t nv = (cols + 15) / 16;
    const __mmask16 last = vec::avx512::tail_mask(cols - 16 * (nv - 1));
    switch (nv) {
      case 4:
        weighted_sum_cols<4>(p, m, v + c0, ldv, nk, o + c0, ldo, last);
        break;
      case 3:
        weighted_sum_cols<3>(p, m, v + c0, ldv, nk, o + c0, ldo, last);
        break;
      case 2:
        weighted_sum_cols<2>(p, m, v + c0, ldv, nk, o + c0, ldo, last);
        break;
      default:
        weighted_sum_cols<1>(p, m, v + c0, ldv, nk, o + c0, ldo, last);
        break;
    }
  }
}

// Sixteen rows at a time, in two passes so that the rows' dependency chains
// (max, then exp) overlap: first each row's allowed maximum, then for the 16
// rows at once the new max and the rescale factor alpha, then each row's
// exponentials, sum and output rescale.  Masked lanes are loaded as -inf
// and zeroed after the exp.
MOERT_CPU_AVX512 void online_softmax_avx512(float* s, int64_t rows, int64_t group, int64_t nk,
                                            const int32_t* range, float* m, float* l, float* o,
                                            int64_t ldo, int64_t dv) {
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  alignas(64) float block_max[16], m_new[16], alpha[16];
  alignas(64) uint64_t allowed[16];
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t n = std::min<int64_t>(16, rows - r0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = (r0 + i) / group, a = range[2 * t];
      const int64_t b = std::min<int64_t>(range[2 * t + 1], nk);
      const uint64_t bits =
          a >= b ? 0
                 : (b >= 64 ? ~uint64_t{0} : (uint64_t{1} << b) - 1) & ~((uint64_t{1} << a) - 1);
      allowed[i] = bits;
      const float* sr = s + (r0 + i) * kKeyBlock;
      __m512 v[4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        v[j] = _mm512_mask_loadu_ps(neg_inf, static_cast<__mmask16>(bits >> (16 * j)), sr + 16 * j);
      block_max[i] =
          _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3])));
    }
    const __mmask16 rm = vec::avx512::tail_mask(n);
    const __m512 m_old = _mm512_mask_loadu_ps(neg_inf, rm, m + r0);
    const __m512 mn = _mm512_max_ps(_mm512_load_ps(block_max), m_old);
    _mm512_store_ps(m_new, mn);
    _mm512_store_ps(alpha, vec::avx512::exp(_mm512_sub_ps(m_old, mn)));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = r0 + i;
      float* sr = s + r * kKeyBlock;
      if (m_new[i] == -INFINITY) {  // nothing allowed yet: stays empty
        for (int j = 0; j < 4; ++j) _mm512_storeu_ps(sr + 16 * j, _mm512_setzero_ps());
        continue;
      }
      const __m512 vm = _mm512_set1_ps(m_new[i]);
      __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __mmask16 mk = static_cast<__mmask16>(allowed[i] >> (16 * j));
        const __m512 e = _mm512_maskz_mov_ps(
            mk,
            vec::avx512::exp(_mm512_sub_ps(_mm512_mask_loadu_ps(neg_inf, mk, sr + 16 * j), vm)));
        _mm512_storeu_ps(sr + 16 * j, e);
        sum = _mm512_add_ps(sum, e);
      }
      // Rescaled unconditionally: a branch on alpha == 1 would mispredict.
      const __m512 va = _mm512_set1_ps(alpha[i]);
      float* orow = o + r * ldo;
      for (int64_t c = 0; c < dv; c += 16) {
        const __mmask16 cm = vec::avx512::tail_mask(dv - c);
        _mm512_mask_storeu_ps(orow + c, cm, _mm512_mul_ps(_mm512_maskz_loadu_ps(cm, orow + c), va));
      }
      l[r] = l[r] * alpha[i] + _mm512_reduce_add_ps(sum);
      m[r] = m_new[i];
    }
  }
}

const Tiles kAvx512 = {scores_transposed_avx512, scores_rows_avx512, online_softmax_avx512,
                       weighted_sum_avx512};

#endif  // MOERT_CPU_X86

}  // namespace

const Tiles& tiles() {
#if MOERT_CPU_X86
  if (vec::use_avx512()) return kAvx512;
#endif
  return kPortable;
}

}  // namespace moert::cpu::attn
