// Portable GEMV kernels, for processors without the AVX-512 subset of
// isa.h: each row of W is widened to f32 a chunk at a time (convert.h) and
// dotted with every row of x using eight partial sums, a loop the compiler
// vectorises for the baseline instruction set.
#include <algorithm>
#include <cstring>

#include "convert.h"
#include "gemv_kernels.h"
#include "packed.h"

namespace moert::cpu::gemm::detail {
namespace {

constexpr int64_t kChunk = 256;

// y[r, n] for every r < m, from row n of W and x rows `ldx` apart.
void one_row(const WeightMatrix& w, int64_t n, const float* x, int64_t ldx, int64_t m, float* y,
             int64_t ldy) {
  float acc[8][8] = {};
  float buf[kChunk];
  const int64_t k = w.cols;
  const unsigned char* row = w.row_bytes(n);
  for (int64_t c = 0; c < k; c += kChunk) {
    const int64_t len = std::min(kChunk, k - c);
    if (w.packed())
      packed_row_to_f32(w, n, c, c + len, buf);
    else
      to_f32(w.dtype, row, c, len, buf);
    for (int64_t i = len; i < (len + 7) / 8 * 8; ++i) buf[i] = 0.0f;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * ldx + c;  // zero past K (prepared layout)
      for (int64_t i = 0; i < len; i += 8)
        for (int j = 0; j < 8; ++j) acc[r][j] += buf[i + j] * xr[i + j];
    }
  }
  for (int64_t r = 0; r < m; ++r) {
    float s = 0.0f;
    for (int j = 0; j < 8; ++j) s += acc[r][j];
    y[r * ldy + n] = s;
  }
}

}  // namespace

void gemv_prepare_x_portable(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m,
                             float* xp) {
  const int64_t k = w.cols, ld = gemv_x_stride(k);
  for (int64_t r = 0; r < m; ++r) {
    std::memcpy(xp + r * ld, x + r * ldx, static_cast<size_t>(k) * sizeof(float));
    for (int64_t i = k; i < ld; ++i) xp[r * ld + i] = 0.0f;
  }
}

void gemv_rows_portable(const WeightMatrix& w, const float* xp, int64_t m, int64_t n0, int64_t n1,
                        float* y, int64_t ldy, float* tmp) {
  const int64_t k = w.cols, ldx = gemv_x_stride(k);
  if (!w.scaled()) {
    for (int64_t n = n0; n < n1; ++n) one_row(w, n, xp, ldx, m, y, ldy);
    return;
  }
  // fp8: x scaled by each block row's scales, then the plain e4m3 values.
  for (int64_t n = n0; n < n1;) {
    const int64_t nb = n / w.block_rows, end = std::min(n1, (nb + 1) * w.block_rows);
    const float* s = w.scale + nb * w.scale_cols();
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t i = 0; i < k; ++i) tmp[r * ldx + i] = xp[r * ldx + i] * s[i / w.block_cols];
      for (int64_t i = k; i < ldx; ++i) tmp[r * ldx + i] = 0.0f;
    }
    for (; n < end; ++n) one_row(w, n, tmp, ldx, m, y, ldy);
  }
}

}  // namespace moert::cpu::gemm::detail
