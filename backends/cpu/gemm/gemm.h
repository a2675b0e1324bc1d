// The GEMM engine's entry point: y[m, N] = x[m, K] · W^T for f32 x and a
// weight matrix of any dtype (weight.h), the product behind linear and moe.
//
//   m <= gemv_max_rows(W, products): the GEMV kernels (gemv.h), reading W
//     once per 8 rows of x in its stored dtype and accumulating in f32: as
//     exact as an f32 computation.  8-20 rows for bf16 products; 128 for
//     exact products of a narrow W, where the alternative widens W first.
//   larger m: oneDNN (onednn.h), with the products the caller asks for:
//     Products::exact (callers whose activations are f32): f32 products of
//       x and W as stored.  f32 W: oneDNN's f32 matmul.  Other W: widened to
//       f32 (block scale applied) in tiles of rows of at most 8 MiB, the f32
//       matmul per tile; the scratch is bounded, no copy of the model is made.
//     Products::bf16 (callers whose activations are bf16 or f16, already
//       rounded to 8-11 bits): x rounded to bf16 and W as bf16 (bf16 W as
//       stored; f16 and f8_e4m3 W converted, block scale applied, in tiles as
//       above), the bf16 matmul (AMX or AVX512-BF16), f32 accumulation.  Each
//       bf16 rounding is a relative error of at most 2^-9 per operand.  About
//       2x the f32 matmul's rate where the CPU has AVX512-BF16 (882 against
//       448 GFLOP/s at 2048^3 on 2 Zen cores, moert-opbench), 6x with AMX.
//     f32 activations get exact products because bf16 rounding of a prompt's
//     hidden states can flip a router's near-tie between experts: a
//     discrete change in that token's output that no tolerance covers.
//
// Must be called outside any OpenMP parallel region.
#pragma once

#include <cstdint>

#include "weight.h"

namespace moert::cpu::gemm {

// How the products are formed (above).  `int8` (the op attribute products =
// "int8", for packed weights): as `bf16` for the large-m GEMMs, and the
// GEMV may quantise x to int8 per block of 32 (scale max |x| / 127) and
// form the products of the packed codes in integers (AVX512-VNNI), as
// llama.cpp does for Q4_0/Q8_0: 2-3x the exact kernel's rate at one row.
enum class Products { exact, bf16, int8 };

// The largest m the GEMV kernels serve for this matrix and products.
int64_t gemv_max_rows(const WeightMatrix& w, Products products);

// y rows are `ldy` apart, x rows `ldx` apart; every element of y[:m, :N] is
// written.  `rows_room`: how many rows of x may be read and of y written
// (0: exactly m).  oneDNN's fastest matmul is compiled for one M (onednn.h);
// when the caller has room for m rounded up to 16 rows, the extra rows are
// computed too (from whatever x holds there, or zeros) so that one compiled
// primitive serves 16 consecutive values of m: for the row counts of MoE
// experts, which change with every call.  Throws plugin::Failure (oneDNN
// failure) or std::bad_alloc (scratch), never from inside a parallel region.
void gemm(const float* x, int64_t m, int64_t ldx, const WeightMatrix& w, float* y, int64_t ldy,
          Products products, int64_t rows_room = 0);

}  // namespace moert::cpu::gemm
