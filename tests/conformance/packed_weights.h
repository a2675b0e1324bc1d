// Random packed weights for the linear and moe cases: int8, int4 (with and
// without zero points) and mxfp4 as ops/weight_format.h defines them, with
// their values dequantised here, independently of ops/, for the cases' own
// estimate of the outputs' scale.
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "moert/tensor.h"

namespace moert::conformance {

struct PackedWeight {
  Tensor data, scale;
  std::vector<double> values;  // [lead..., rows, cols], dequantised
};

// A weight [lead..., rows, cols] in `quant` ("int8", "int4", "mxfp4") with
// groups [b0, b1]; `zeros`: int4 with (scale, zero) pairs.  Its values have
// a standard deviation near `sd`.
inline PackedWeight random_packed(const std::string& quant, std::vector<int64_t> lead, int64_t rows,
                                  int64_t cols, int64_t b0, int64_t b1, bool zeros, double sd,
                                  std::mt19937& rng) {
  const bool nibbles = quant != "int8";
  const int64_t stored = nibbles ? (cols + 1) / 2 : cols;
  const int64_t sr = (rows + b0 - 1) / b0, sc = (cols + b1 - 1) / b1;
  int64_t mats = 1;
  for (int64_t d : lead) mats *= d;
  std::vector<int64_t> wshape = lead, sshape = lead;
  wshape.insert(wshape.end(), {rows, stored});
  sshape.insert(sshape.end(), {sr, sc});
  if (zeros) sshape.push_back(2);

  PackedWeight p;
  std::uniform_int_distribution<int> byte(0, 255), small(-127, 127), zero(0, 15), step(-1, 1);
  std::uniform_real_distribution<double> spread(0.5, 1.5);
  // Stored elements.
  std::vector<double> q(static_cast<size_t>(mats * rows * stored));
  for (double& v : q) v = nibbles ? byte(rng) : small(rng);
  p.data = Tensor::from_doubles(nibbles ? DType::u8 : DType::i8, wshape, q);
  // Scales (and zeros), as stored.
  const size_t groups = static_cast<size_t>(mats * sr * sc);
  std::vector<double> s(groups * (zeros ? 2 : 1));
  for (size_t g = 0; g < groups; ++g) {
    if (quant == "mxfp4") {
      // e2m1 values have an RMS of 2.93 over the 16 codes.
      s[g] = std::round(std::log2(sd / 2.93)) + 127 + step(rng);
    } else if (quant == "int8") {
      s[g] = sd / 73.0 * spread(rng);
    } else if (zeros) {
      s[2 * g] = sd / 6.0 * spread(rng);
      s[2 * g + 1] = zero(rng);
    } else {
      s[g] = sd / 4.6 * spread(rng);
    }
  }
  p.scale = Tensor::from_doubles(quant == "mxfp4" ? DType::u8 : DType::f16, sshape, s);
  const std::vector<double> sv = p.scale.to_doubles();  // f16-rounded

  static const double e2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
  p.values.resize(static_cast<size_t>(mats * rows * cols));
  for (int64_t m = 0; m < mats; ++m)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const size_t g = static_cast<size_t>((m * sr + r / b0) * sc + c / b1);
        const double b = q[static_cast<size_t>((m * rows + r) * stored + (nibbles ? c / 2 : c))];
        const int code = nibbles ? (static_cast<int>(b) >> (c % 2 ? 4 : 0)) & 15 : 0;
        double v;
        if (quant == "int8")
          v = b * sv[g];
        else if (quant == "mxfp4")
          v = e2m1[code] * std::ldexp(1.0, static_cast<int>(sv[g]) - 127);
        else if (zeros)
          v = (code - sv[2 * g + 1]) * sv[2 * g];
        else
          v = (code - 8) * sv[g];
        p.values[static_cast<size_t>((m * rows + r) * cols + c)] = v;
      }
  return p;
}

}  // namespace moert::conformance
