// Scratch memory for the GEMM engine and the kernels built on it: per
// thread, per purpose (a Slot), 64-byte aligned, grown on demand and kept for
// the next call, so steady-state execution allocates nothing.  Each slot is
// one buffer: a caller must not hold two live pointers from the same slot.
#pragma once

#include <cstddef>

namespace moert::cpu::gemm {

enum class Slot {
  kernel_input,   // a kernel's input converted to f32 (x of linear, a of matmul)
  kernel_input2,  // a second converted input (b of matmul)
  kernel_output,  // a kernel's f32 result before bias / conversion
  kernel_small,   // small per-call vectors (a bias in f32)
  moe_tokens,     // moe: gathered token rows and intermediate activations
  moe_routes,     // moe: routing tables
  gemm_src,       // x for oneDNN: rounded to bf16, or padded with zero rows
  gemm_tile,      // dequantised weight tiles (bf16 or f32)
  gemv_x,         // x in a GEMV kernel's layout
  gemv_thread,    // per-thread GEMV buffers (fp8 scaled x)
  count
};

// At least `bytes` of this thread's buffer for `slot`; contents are undefined.
void* scratch_bytes(Slot slot, size_t bytes);

template <typename T>
T* scratch(Slot slot, size_t n) {
  return static_cast<T*>(scratch_bytes(slot, n * sizeof(T)));
}

}  // namespace moert::cpu::gemm
