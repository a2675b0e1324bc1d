// The GEMV engine's per-instruction-set kernels (gemv_avx512.cpp and
// gemv_portable.cpp), called by the scheduler in gemv.cpp.  Both read x in a
// prepared layout: `m` rows of gemv_x_stride(K) floats, zero past K, which
// lets a kernel's last, partial chunk of a row multiply the zero-filled tail
// of a masked weight load by zeros.
#pragma once

#include <cstdint>
#include <type_traits>

#include "weight.h"

namespace moert::cpu::gemm::detail {

// Calls f(std::integral_constant<int, M>{}) for the row count m of a pass
// (1..8, kGemvMaxRows), so that a kernel is compiled per M with its
// accumulators in registers.
template <class F>
inline void with_rows(int64_t m, F&& f) {
  switch (m) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 5:
      return f(std::integral_constant<int, 5>{});
    case 6:
      return f(std::integral_constant<int, 6>{});
    case 7:
      return f(std::integral_constant<int, 7>{});
    default:
      return f(std::integral_constant<int, 8>{});
  }
}

// Floats between prepared rows of x: K rounded up to a whole 32-wide chunk.
inline int64_t gemv_x_stride(int64_t k) { return (k + 31) / 32 * 32; }

// Copies x [m, K] (rows `ldx` apart) into the prepared layout for `w`.
void gemv_prepare_x_avx512(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m,
                           float* xp);
void gemv_prepare_x_portable(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m,
                             float* xp);

// Rows [n0, n1) of y[m, N] = x · W^T from the prepared x.  `tmp` holds
// m * gemv_x_stride(K) floats of this thread's own (x scaled by an fp8 block
// row's scales, or a packed row dequantised).  Never throws.
void gemv_rows_avx512(const WeightMatrix& w, const float* xp, int64_t m, int64_t n0, int64_t n1,
                      float* y, int64_t ldy, float* tmp);
void gemv_rows_portable(const WeightMatrix& w, const float* xp, int64_t m, int64_t n0, int64_t n1,
                        float* y, int64_t ldy, float* tmp);

// Packed W with int8 activations (GemvTask::int8_products, on CPUs with
// AVX512-VNNI; gemv_int8_avx512.cpp): whether a matrix takes them, its
// prepared x (per row, within gemv_x_stride(K) floats: the int8 codes in the
// weights' chunk order, then each block's scale and scale * sum of codes)
// and its rows.
bool gemv_int8_packed(const WeightMatrix& w);
void gemv_prepare_x_int8(const WeightMatrix& w, const float* x, int64_t ldx, int64_t m, float* xp);
void gemv_rows_int8(const WeightMatrix& w, const float* xp, int64_t m, int64_t n0, int64_t n1,
                    float* y, int64_t ldy);

}  // namespace moert::cpu::gemm::detail
