// Small-M matrix products y[m, N] = x[m, K] · W^T for decode (m of one to a
// few tokens): W is read once, in its stored layout and dtype, widened to f32
// in registers and accumulated in f32.  The work of several products (the
// gate and up projections of every chosen expert, say) is shared among the
// threads as one pool of weight rows, so small matrices still keep every
// thread streaming.
#pragma once

#include <cstddef>
#include <cstdint>

#include "weight.h"

namespace moert::cpu::gemm {

// The most rows of x one pass over W serves; a task with more is split into
// passes (each reading W again).
inline constexpr int64_t kGemvMaxRows = 8;

struct GemvTask {
  const WeightMatrix* w = nullptr;  // [N, K]
  const float* x = nullptr;         // m rows of K, `ldx` apart
  int64_t ldx = 0;
  int64_t m = 0;
  float* y = nullptr;  // m rows of N, `ldy` apart (fully written)
  int64_t ldy = 0;
  // Products::int8 permitted (gemm.h): a packed W may meet x quantised to
  // int8 per block of 32 (the VNNI kernel, where the CPU has it).
  bool int8_products = false;
};

// Runs every task, the rows of all of them shared among the OpenMP threads.
// Must be called outside any parallel region; does not throw once past its
// scratch allocation.
void gemv(const GemvTask* tasks, size_t count);

}  // namespace moert::cpu::gemm
