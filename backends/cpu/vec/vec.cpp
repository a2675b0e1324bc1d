// The vector library of vec.h: AVX-512 bodies and portable ones.
#include "vec/vec.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "convert.h"
#include "gemm/isa.h"

#if MOERT_CPU_X86
#include "vec/avx512.h"
#endif

namespace moert::cpu::vec {

bool use_avx512() { return gemm::use_avx512(); }  // the same instructions

namespace {

#if MOERT_CPU_X86

MOERT_CPU_AVX512 void widen_avx512(moert_dtype t, const void* src, int64_t offset, int64_t n,
                                   float* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, vec::avx512::load(t, src, offset + i));
  if (i < n) {
    const __mmask16 m = vec::avx512::tail_mask(n - i);
    _mm512_mask_storeu_ps(dst + i, m, vec::avx512::load_masked(t, src, offset + i, m));
  }
}

MOERT_CPU_AVX512 void narrow_avx512(const float* src, int64_t n, moert_dtype t, void* dst,
                                    int64_t offset) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) vec::avx512::store(t, dst, offset + i, _mm512_loadu_ps(src + i));
  if (i < n) {
    const __mmask16 m = vec::avx512::tail_mask(n - i);
    vec::avx512::store_masked(t, dst, offset + i, _mm512_maskz_loadu_ps(m, src + i), m);
  }
}

MOERT_CPU_AVX512 float max_avx512(const float* x, int64_t n) {
  __m512 acc = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  // max_ps returns its second operand when either is NaN: NaN entries skipped.
  for (; i + 16 <= n; i += 16) acc = _mm512_max_ps(_mm512_loadu_ps(x + i), acc);
  if (i < n) {
    const __mmask16 m = vec::avx512::tail_mask(n - i);
    acc = _mm512_mask_max_ps(acc, m, _mm512_maskz_loadu_ps(m, x + i), acc);
  }
  return _mm512_reduce_max_ps(acc);
}

MOERT_CPU_AVX512 float exp_sum_avx512(float* x, int64_t n, float mx) {
  const __m512 vm = _mm512_set1_ps(mx);
  __m512 sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = vec::avx512::exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    const __mmask16 m = vec::avx512::tail_mask(n - i);
    const __m512 e = vec::avx512::exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

MOERT_CPU_AVX512 void scale_avx512(float* x, int64_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vs));
  if (i < n) {
    const __mmask16 m = vec::avx512::tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
  }
}

MOERT_CPU_AVX512 float sum_squares_avx512(const float* x, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
    acc1 = _mm512_fmadd_ps(b, b, acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = vec::avx512::tail_mask(std::min<int64_t>(16, n - i));
    const __m512 a = _mm512_maskz_loadu_ps(m, x + i);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

MOERT_CPU_AVX512 void scale_mul_avx512(const float* x, float s, const float* w, float* y,
                                       int64_t n) {
  const __m512 vs = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(
        y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs), _mm512_loadu_ps(w + i)));
  if (i < n) {
    const __mmask16 m = vec::avx512::tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs),
                                        _mm512_maskz_loadu_ps(m, w + i)));
  }
}

// Half pairing: the two halves as vectors.  Interleaved: 16 features (8
// pairs) at a time, x * (c, c) + swap-adjacent(x) * (-s, s).
MOERT_CPU_AVX512 void rotate_pairs_avx512(float* x, int64_t heads, int64_t dim, int64_t half,
                                          bool interleaved, const float* c, const float* s) {
  if (!interleaved) {
    for (int64_t h = 0; h < heads; ++h) {
      float* u = x + h * dim;
      float* v = u + half;
      for (int64_t j = 0; j < half; j += 16) {
        const __mmask16 m = vec::avx512::tail_mask(half - j);
        const __m512 vu = _mm512_maskz_loadu_ps(m, u + j), vv = _mm512_maskz_loadu_ps(m, v + j);
        const __m512 vc = _mm512_maskz_loadu_ps(m, c + j), vs = _mm512_maskz_loadu_ps(m, s + j);
        _mm512_mask_storeu_ps(u + j, m, _mm512_fmsub_ps(vu, vc, _mm512_mul_ps(vv, vs)));
        _mm512_mask_storeu_ps(v + j, m, _mm512_fmadd_ps(vv, vc, _mm512_mul_ps(vu, vs)));
      }
    }
    return;
  }
  // (c0 c0 c1 c1 ...) and (-s0 s0 -s1 s1 ...) for 8 pairs at a time.
  const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512 sign = _mm512_set_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
  for (int64_t j = 0; j < half; j += 8) {
    const int64_t pairs = std::min<int64_t>(8, half - j);
    const __mmask16 pm = vec::avx512::tail_mask(pairs), m = vec::avx512::tail_mask(2 * pairs);
    const __m512 vc = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(pm, c + j));
    const __m512 vs =
        _mm512_mul_ps(_mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(pm, s + j)), sign);
    for (int64_t h = 0; h < heads; ++h) {
      float* p = x + h * dim + 2 * j;
      const __m512 v = _mm512_maskz_loadu_ps(m, p);
      _mm512_mask_storeu_ps(p, m,
                            _mm512_fmadd_ps(v, vc, _mm512_mul_ps(_mm512_permute_ps(v, 0xb1), vs)));
    }
  }
}

#endif  // MOERT_CPU_X86

}  // namespace

void rotate_pairs(float* x, int64_t heads, int64_t dim, int64_t half, bool interleaved,
                  const float* c, const float* s) {
#if MOERT_CPU_X86
  if (use_avx512()) return rotate_pairs_avx512(x, heads, dim, half, interleaved, c, s);
#endif
  for (int64_t h = 0; h < heads; ++h) {
    float* xh = x + h * dim;
    if (interleaved) {
      for (int64_t j = 0; j < half; ++j) {
        const float u = xh[2 * j], v = xh[2 * j + 1];
        xh[2 * j] = u * c[j] - v * s[j];
        xh[2 * j + 1] = v * c[j] + u * s[j];
      }
    } else {
      float* xv = xh + half;
      for (int64_t j = 0; j < half; ++j) {
        const float u = xh[j], v = xv[j];
        xh[j] = u * c[j] - v * s[j];
        xv[j] = v * c[j] + u * s[j];
      }
    }
  }
}

void widen(moert_dtype t, const void* src, int64_t offset, int64_t n, float* dst) {
#if MOERT_CPU_X86
  if (use_avx512()) return widen_avx512(t, src, offset, n, dst);
#endif
  to_f32(t, src, offset, n, dst);
}

void narrow(const float* src, int64_t n, moert_dtype t, void* dst, int64_t offset) {
#if MOERT_CPU_X86
  if (use_avx512()) return narrow_avx512(src, n, t, dst, offset);
#endif
  from_f32(src, n, t, dst, offset);
}

void convert(moert_dtype from, const void* src, int64_t src_offset, moert_dtype to, void* dst,
             int64_t dst_offset, int64_t n) {
  if (from == to) {
    const size_t size = plugin::dtype_size(from);
    std::memcpy(static_cast<char*>(dst) + static_cast<size_t>(dst_offset) * size,
                static_cast<const char*>(src) + static_cast<size_t>(src_offset) * size,
                static_cast<size_t>(n) * size);
    return;
  }
  constexpr int64_t kChunk = 1024;
  float buf[kChunk];
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t len = std::min(kChunk, n - i);
    widen(from, src, src_offset + i, len, buf);
    narrow(buf, len, to, dst, dst_offset + i);
  }
}

float max_of(const float* x, int64_t n) {
#if MOERT_CPU_X86
  if (use_avx512()) return max_avx512(x, n);
#endif
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

float exp_sum(float* x, int64_t n, float m) {
#if MOERT_CPU_X86
  if (use_avx512()) return exp_sum_avx512(x, n, m);
#endif
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  return sum;
}

void scale(float* x, int64_t n, float s) {
#if MOERT_CPU_X86
  if (use_avx512()) return scale_avx512(x, n, s);
#endif
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

float sum_squares(const float* x, int64_t n) {
#if MOERT_CPU_X86
  if (use_avx512()) return sum_squares_avx512(x, n);
#endif
  // Eight partial sums: the error of a long f32 sum grows with its length.
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * x[i + j];
  for (; i < n; ++i) acc[0] += x[i] * x[i];
  float s = 0;
  for (float a : acc) s += a;
  return s;
}

void scale_mul(const float* x, float s, const float* w, float* y, int64_t n) {
#if MOERT_CPU_X86
  if (use_avx512()) return scale_mul_avx512(x, s, w, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s * w[i];
}

}  // namespace moert::cpu::vec
