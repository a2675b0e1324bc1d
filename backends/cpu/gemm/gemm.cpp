// The GEMM entry point (gemm.h): chooses between the GEMV kernels and
// oneDNN by m and the weight dtype, and runs the oneDNN paths.
#include "gemm.h"

#include <algorithm>
#include <cstdlib>

#include "gemv.h"
#include "onednn.h"
#include "parallel.h"
#include "scratch.h"
#include "to_bf16.h"

namespace moert::cpu::gemm {
namespace {

// Bytes of bf16 weights converted per tile.  Larger tiles mean fewer
// oneDNN calls, each re-reading x; measured at M = 512 (2 threads), 8 MiB
// tiles beat 1 MiB ones by 10-25% and come within ~5% of converting the
// whole matrix at once, which would need scratch the size of the largest
// matrix.
constexpr int64_t kTileBytes = int64_t{8} << 20;

// Row counts are rounded up to a multiple of this where the caller allows
// (gemm.h, rows_room): the height of an AMX tile.
constexpr int64_t kRowBucket = 16;

// MOERT_CPU_GEMV_MAX_ROWS overrides the GEMV/oneDNN crossover (for tuning).
int64_t gemv_rows_override() {
  static const int64_t v = [] {
    const char* s = std::getenv("MOERT_CPU_GEMV_MAX_ROWS");
    return s && *s ? std::max<int64_t>(0, std::atoll(s)) : int64_t{-1};
  }();
  return v;
}

// x [m, K] rounded to bf16, in scratch, rows k apart, then zero rows up to
// row `rows`.
const uint16_t* x_to_bf16(const float* x, int64_t m, int64_t rows, int64_t k, int64_t ldx) {
  uint16_t* xb = scratch<uint16_t>(Slot::gemm_src, static_cast<size_t>(rows * k));
  parallel_for(m, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)),
               [&](int64_t r0, int64_t r1) {
                 f32_rows_to_bf16(x + r0 * ldx, r1 - r0, k, ldx, xb + r0 * k, k);
               });
  std::fill(xb + m * k, xb + rows * k, uint16_t{0});
  return xb;
}

}  // namespace

int64_t gemv_max_rows(const WeightMatrix& w, Products products) {
  if (const int64_t o = gemv_rows_override(); o >= 0) return o;
  // Exact products of a narrow W: the alternative widens W to f32 in memory
  // (2-4x its bytes written and read again) before oneDNN's f32 matmul,
  // while GEMV passes re-read W as stored, from L3 when it fits (one
  // expert: 5.8 MB).  Measured on bench-moe-s (bf16 W, f32 activations, 2
  // threads): crossover 8 -> 128 rows took pp128 from 290 to 630 tok/s and
  // pp512 from 570 to 665; 256 rows was no better.
  if (products == Products::exact && w.dtype != MOERT_DTYPE_F32) return 128;
  // Crossovers measured on a 2-core Sapphire Rapids (2816 x 1024, weights
  // not in cache, the oneDNN primitive compiled for the exact M): the GEMV
  // passes (up to 8 rows of x per pass over W) beat oneDNN up to 8 rows for
  // f32 and bf16 (oneDNN's AMX bf16 matmul takes 0.36 ms from 8 to 16
  // rows), and up to 16 (f16) and 20 (f8_e4m3) rows, where oneDNN first
  // pays for converting W to bf16 tiles.
  switch (w.dtype) {
    case MOERT_DTYPE_F32:
    case MOERT_DTYPE_BF16:
      return 8;
    case MOERT_DTYPE_F16:
      return 16;
    default:
      return 20;
  }
}

void gemm(const float* x, int64_t m, int64_t ldx, const WeightMatrix& w, float* y, int64_t ldy,
          Products products, int64_t rows_room) {
  const int64_t n = w.rows, k = w.cols;
  if (m <= 0 || n <= 0) return;
  if (k == 0) {
    for (int64_t r = 0; r < m; ++r) std::fill(y + r * ldy, y + r * ldy + n, 0.0f);
    return;
  }
  if (m <= gemv_max_rows(w, products)) {
    const GemvTask task{&w, x, ldx, m, y, ldy, products == Products::int8};
    gemv(&task, 1);
    return;
  }
  // The rows oneDNN computes: m, or m rounded up to a bucket when the
  // caller has room for the extra rows.
  const int64_t bucket = (m + kRowBucket - 1) / kRowBucket * kRowBucket;
  const int64_t mp = rows_room >= bucket ? bucket : m;
  if (w.dtype == MOERT_DTYPE_F32) {
    onednn_matmul_nt(MOERT_DTYPE_F32, x, ldx, w.data, w.stride, mp, n, k, y, ldy);
    return;
  }
  if (products == Products::exact) {
    // x as given, rows past m (when mp > m) zeroed in a copy only if needed.
    const float* xs = x;
    if (mp > m) {
      float* xc = scratch<float>(Slot::gemm_src, static_cast<size_t>(mp * k));
      for (int64_t r = 0; r < m; ++r) std::copy(x + r * ldx, x + r * ldx + k, xc + r * k);
      std::fill(xc + m * k, xc + mp * k, 0.0f);
      xs = xc;
    }
    const int64_t lds = mp > m ? k : ldx;
    int64_t tile = std::max<int64_t>(64, kTileBytes / (4 * k) / 64 * 64);
    tile = std::min(tile, n);
    float* wf = scratch<float>(Slot::gemm_tile, static_cast<size_t>(tile * k));
    for (int64_t n0 = 0; n0 < n; n0 += tile) {
      const int64_t rows = std::min(tile, n - n0);
      parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
        weight_rows_to_f32(w, n0 + r0, n0 + r1, wf + r0 * k, k);
      });
      onednn_matmul_nt(MOERT_DTYPE_F32, xs, lds, wf, k, mp, rows, k, y + n0, ldy);
    }
    return;
  }
  switch (w.dtype) {
    case MOERT_DTYPE_BF16:
      onednn_matmul_nt(MOERT_DTYPE_BF16, x_to_bf16(x, m, mp, k, ldx), k, w.data, w.stride, mp, n, k,
                       y, ldy);
      return;
    default: {
      const uint16_t* xb = x_to_bf16(x, m, mp, k, ldx);
      // Tiles of a whole multiple of 64 rows, at least 64.
      int64_t tile = std::max<int64_t>(64, kTileBytes / (2 * k) / 64 * 64);
      tile = std::min(tile, n);
      uint16_t* wb = scratch<uint16_t>(Slot::gemm_tile, static_cast<size_t>(tile * k));
      for (int64_t n0 = 0; n0 < n; n0 += tile) {
        const int64_t rows = std::min(tile, n - n0);
        parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
          weight_rows_to_bf16(w, n0 + r0, n0 + r1, wb + r0 * k, k);
        });
        onednn_matmul_nt(MOERT_DTYPE_BF16, xb, k, wb, k, mp, rows, k, y + n0, ldy);
      }
      return;
    }
  }
}

}  // namespace moert::cpu::gemm
