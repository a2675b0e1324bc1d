// The compute tiles of the attention kernel, in f32: query-key scores for a
// block of up to kKeyBlock keys and the probability-weighted sum of values.
// AVX-512 register-blocked bodies, or portable loops; tiles() picks once.
#pragma once

#include <cstdint>

namespace moert::cpu::attn {

// Keys per block: the width of a score tile.
constexpr int64_t kKeyBlock = 64;

struct Tiles {
  // Scores against keys stored transposed: kt[c * kKeyBlock + j] is feature
  // c of key j.  s[r * kKeyBlock + j] = sum_c q[r * ldq + c] kt[c * kKeyBlock
  // + j] for r < m and every j < kKeyBlock.
  void (*scores_transposed)(const float* q, int64_t ldq, int64_t m, const float* kt, int64_t dk,
                            float* s);
  // Scores against keys stored by row: s[r * kKeyBlock + j] = q[r, :] .
  // k[j * ldk, :] for r < m and j < nk (nk <= kKeyBlock).
  void (*scores_rows)(const float* q, int64_t ldq, int64_t m, const float* k, int64_t ldk,
                      int64_t nk, int64_t dk, float* s);
  // The online-softmax step of a score tile: row r belongs to token r /
  // group, which may see columns [range[2t], range[2t + 1]) of the first nk.
  // With m_new = max(m[r], its largest allowed score): allowed entries
  // become exp(s - m_new), the others 0 (all 64); l[r] = l[r] * alpha + the
  // row's sum and the output row o[r * ldo, dv] *= alpha, alpha = exp(m[r] -
  // m_new); m[r] = m_new.  Rows with nothing allowed are zeroed and keep
  // their state.
  void (*online_softmax)(float* s, int64_t rows, int64_t group, int64_t nk, const int32_t* range,
                         float* m, float* l, float* o, int64_t ldo, int64_t dv);
  // o[r * ldo + c] += sum_{j < nk} p[r * kKeyBlock + j] v[j * ldv + c] for
  // r < m, c < dv.
  void (*weighted_sum)(const float* p, int64_t m, const float* v, int64_t ldv, int64_t nk,
                       int64_t dv, float* o, int64_t ldo);
};

const Tiles& tiles();

}  // namespace moert::cpu::attn
