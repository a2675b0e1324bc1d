// Scalar dequantisation of packed rows (packed.h).
#include "packed.h"

#include <algorithm>

namespace moert::cpu::gemm {

void packed_row_to_f32(const WeightMatrix& w, int64_t n, int64_t c0, int64_t c1, float* out) {
  const unsigned char* row = w.row_bytes(n);
  for (int64_t c = c0; c < c1;) {
    // A run of columns in one group.
    const int64_t end = std::min(c1, (c / w.block_cols + 1) * w.block_cols);
    const Group g = group_of(w, n, c);
    switch (w.format) {
      case ops::WeightFormat::int8:
        for (; c < end; ++c)
          out[c - c0] = static_cast<float>(reinterpret_cast<const int8_t*>(row)[c]) * g.scale;
        break;
      case ops::WeightFormat::int4:
        for (; c < end; ++c)
          out[c - c0] = (static_cast<float>(ops::nibble(row, c)) - g.zero) * g.scale;
        break;
      default:
        for (; c < end; ++c) out[c - c0] = ops::e2m1_value(ops::nibble(row, c)) * g.scale;
        break;
    }
  }
}

}  // namespace moert::cpu::gemm
