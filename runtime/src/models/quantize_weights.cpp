// Quantize on load: the round-to-nearest quantizers of quantize_weights.h and
// the QuantizingWeights decorator.
#include "quantize_weights.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "moert/dtype.h"
#include "moert/error.h"

namespace moert {

namespace {

using ops::WeightFormat;

// Runs body(i) for i in [0, n) on up to `threads` threads (0: the hardware
// concurrency); the first exception is rethrown.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& body) {
  int t = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  t = static_cast<int>(std::min<int64_t>(std::max(t, 1), n));
  if (t <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr failure;
  std::mutex mutex;
  auto work = [&] {
    try {
      for (int64_t i = next++; i < n && !stop; i = next++) body(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!failure) failure = std::current_exception();
      stop = true;
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < t; ++i) pool.emplace_back(work);
  for (std::thread& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

// The e2m1 code (sign bit 8, magnitude 0..7: 0, 0.5, 1, 1.5, 2, 3, 4, 6) nearest
// to v, ties to the even code; beyond 6 saturates.
uint8_t e2m1_code(float v) {
  const float a = std::fabs(v);
  uint8_t m;
  if (a <= 0.25f)
    m = 0;
  else if (a < 0.75f)
    m = 1;
  else if (a <= 1.25f)
    m = 2;
  else if (a < 1.75f)
    m = 3;
  else if (a <= 2.5f)
    m = 4;
  else if (a < 3.5f)
    m = 5;
  else if (a <= 5.0f)
    m = 6;
  else
    m = 7;
  return static_cast<uint8_t>(m != 0 && std::signbit(v) ? m | 8u : m);
}

void put_nibble(uint8_t* row, int64_t c, unsigned q) {
  if (c & 1)
    row[c >> 1] = static_cast<uint8_t>(row[c >> 1] | (q << 4));
  else
    row[c >> 1] = static_cast<uint8_t>(q);
}

// One group [c0, c1) of one row.
void quantize_group(const float* w, int64_t c0, int64_t c1, WeightFormat format, uint8_t* row,
                    void* scale, int64_t g) {
  float amax = 0.0f, extreme = 0.0f;
  for (int64_t c = c0; c < c1; ++c)
    if (std::fabs(w[c]) > amax) {
      amax = std::fabs(w[c]);
      extreme = w[c];
    }
  switch (format) {
    case WeightFormat::int8: {
      const uint16_t bits = f32_to_f16(amax / 127.0f);
      static_cast<uint16_t*>(scale)[g] = bits;
      const float d = f16_to_f32(bits);
      const float id = d > 0.0f ? 1.0f / d : 0.0f;
      for (int64_t c = c0; c < c1; ++c)
        reinterpret_cast<int8_t*>(row)[c] =
            static_cast<int8_t>(std::clamp(std::nearbyint(w[c] * id), -127.0f, 127.0f));
      return;
    }
    case WeightFormat::int4: {
      const uint16_t bits = f32_to_f16(extreme / -8.0f);
      static_cast<uint16_t*>(scale)[g] = bits;
      const float d = f16_to_f32(bits);
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      for (int64_t c = c0; c < c1; ++c) {
        const float q = std::clamp(std::floor(w[c] * id + 8.5f), 0.0f, 15.0f);
        put_nibble(row, c, static_cast<unsigned>(q));
      }
      return;
    }
    case WeightFormat::mxfp4: {
      // amax / 6 rounded up to a power of two: its f32 exponent field, plus
      // one when the mantissa is not zero.
      const uint32_t ds = std::bit_cast<uint32_t>(amax / 6.0f);
      uint32_t e = ((ds + 0x007FFFFFu) & 0x7F800000u) >> 23;
      e = std::min<uint32_t>(e, 254);  // 255 is e8m0's NaN
      static_cast<uint8_t*>(scale)[g] = static_cast<uint8_t>(e);
      const float inv = std::ldexp(1.0f, 127 - static_cast<int>(e));
      for (int64_t c = c0; c < c1; ++c) put_nibble(row, c, e2m1_code(w[c] * inv));
      return;
    }
    default:
      throw Error("quantize: no packed format given");
  }
}

// Element i of a float or fp8 tensor's data as f32.
struct FloatReader {
  DType dtype;
  const void* data;
  float e4m3[256];
  FloatReader(DType t, const void* p) : dtype(t), data(p) {
    if (t == DType::f8_e4m3) {
      for (int i = 0; i < 256; ++i) {
        const uint8_t b = static_cast<uint8_t>(i);
        e4m3[i] = static_cast<float>(load_element(DType::f8_e4m3, &b, 0));
      }
    }
  }
  float operator()(int64_t i) const {
    switch (dtype) {
      case DType::f32:
        return static_cast<const float*>(data)[i];
      case DType::bf16:
        return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
      case DType::f16:
        return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
      default:
        return e4m3[static_cast<const uint8_t*>(data)[i]];
    }
  }
};

int64_t effective_group(WeightFormat format, int64_t group, int64_t cols) {
  if (format == WeightFormat::mxfp4) return ops::kMxBlock;
  return group <= 0 ? cols : group;
}

// The empty packed tensors of `w` quantized as `format` with `group`.
LinearTensor packed_like(const LinearTensor& w, WeightFormat format, int64_t group) {
  const std::vector<int64_t>& shape = w.weight.shape();
  check(shape.size() >= 2, "quantize: weight " + w.weight.describe() + " is not a matrix");
  const int64_t cols = shape.back();
  const int64_t g = effective_group(format, group, cols);
  LinearTensor p;
  p.format = format;
  p.block = {1, g};
  std::vector<int64_t> ws = shape, ss = shape;
  ws.back() = ops::stored_cols(format, cols);
  ss.back() = (cols + g - 1) / g;
  p.weight = Tensor::empty(format == WeightFormat::int8 ? DType::i8 : DType::u8, ws);
  p.scale = Tensor::empty(format == WeightFormat::mxfp4 ? DType::u8 : DType::f16, ss);
  return p;
}

// Packs the float or fp8 `src` into `dst` (from packed_like).
void quantize_into(const LinearTensor& src, LinearTensor& dst, int threads) {
  const Tensor& w = src.weight;
  const DType dt = w.dtype();
  check(dt == DType::f32 || dt == DType::bf16 || dt == DType::f16 || dt == DType::f8_e4m3,
        "quantize: cannot quantize a " + w.describe() + " weight");
  const bool fp8 = dt == DType::f8_e4m3;
  check(!fp8 || (src.scale.defined() && src.block.size() == 2),
        "quantize: an f8_e4m3 weight needs its block scale");
  const int64_t cols = w.dim(-1), rows = w.dim(-2);
  const int64_t mats = rows > 0 && cols > 0 ? w.numel() / (rows * cols) : 0;
  const int64_t g = dst.block[1];
  const int64_t groups = (cols + g - 1) / g, stored = ops::stored_cols(dst.format, cols);
  const size_t scale_size = dst.format == WeightFormat::mxfp4 ? 1 : 2;
  const FloatReader read(dt, w.data());
  int64_t fp8_rb = 1, fp8_cb = 1, fp8_b0 = 1, fp8_b1 = 1;
  if (fp8) {
    fp8_b0 = src.block[0];
    fp8_b1 = src.block[1];
    fp8_rb = (rows + fp8_b0 - 1) / fp8_b0;
    fp8_cb = (cols + fp8_b1 - 1) / fp8_b1;
  }
  // Chunks of rows of about a million elements.
  const int64_t total_rows = mats * rows;
  const int64_t step = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(cols, 1));
  const int64_t chunks = (total_rows + step - 1) / step;
  uint8_t* data = static_cast<uint8_t*>(dst.weight.data());
  uint8_t* scale = static_cast<uint8_t*>(dst.scale.data());
  parallel_for(chunks, threads, [&](int64_t chunk) {
    std::vector<float> row(static_cast<size_t>(cols));
    const int64_t r0 = chunk * step, r1 = std::min(total_rows, r0 + step);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        float v = read(r * cols + c);
        if (fp8) {
          const int64_t m = r / rows, rr = r % rows;
          v *= src.scale.data_as<float>()[(m * fp8_rb + rr / fp8_b0) * fp8_cb + c / fp8_b1];
        }
        row[static_cast<size_t>(c)] = v;
      }
      quantize_rows(row.data(), 1, cols, dst.format, g, data + r * stored,
                    scale + static_cast<size_t>(r * groups) * scale_size);
    }
  });
}

}  // namespace

ops::WeightFormat quantize_format(const std::string& value, const std::string& what) {
  if (value.empty()) return WeightFormat::none;
  WeightFormat f = WeightFormat::none;
  if (value == "none" || !ops::weight_format_from(value, &f))
    throw Error(what + " must be \"\" (none), \"int8\", \"int4\" or \"mxfp4\", got '" + value +
                "'");
  return f;
}

void quantize_rows(const float* w, int64_t rows, int64_t cols, WeightFormat format, int64_t group,
                   void* data, void* scale) {
  const int64_t g = effective_group(format, group, cols);
  const int64_t groups = (cols + g - 1) / g, stored = ops::stored_cols(format, cols);
  const size_t scale_size = format == WeightFormat::mxfp4 ? 1 : 2;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = static_cast<uint8_t*>(data) + r * stored;
    void* s = static_cast<uint8_t*>(scale) + static_cast<size_t>(r * groups) * scale_size;
    for (int64_t j = 0; j < groups; ++j)
      quantize_group(w + r * cols, j * g, std::min(cols, (j + 1) * g), format, row, s, j);
  }
}

LinearTensor quantize_linear(const LinearTensor& w, WeightFormat format, int64_t group,
                             int threads) {
  check(format != WeightFormat::none, "quantize: no packed format given");
  check(!w.packed(), "quantize: the weight is already packed (" + w.describe() + ")");
  LinearTensor p = packed_like(w, format, group);
  quantize_into(w, p, threads);
  return p;
}

QuantizingWeights::QuantizingWeights(WeightSource& inner, std::string where,
                                     ops::WeightFormat format, int64_t group, int threads)
    : inner_(inner), where_(std::move(where)), format_(format), group_(group), threads_(threads) {
  check(format != WeightFormat::none, "quantize: no packed format given");
}

LinearTensor QuantizingWeights::pack(const LinearTensor& w, WeightFormat format, int64_t group) {
  if (inner_.fills_later()) {
    LinearTensor p = packed_like(w, format, group);
    pending_.push_back({w, p});
    return p;
  }
  LinearTensor p = quantize_linear(w, format, group, threads_);
  inner_.release(w);
  return p;
}

LinearTensor QuantizingWeights::linear(const std::string& name, int64_t out, int64_t in,
                                       WeightRole role) {
  LinearTensor w = inner_.linear(name, out, in, role);
  if (w.packed()) return w;
  // lm_head (when not tied to the embeddings) in int8 whatever the format,
  // as llama.cpp keeps its output matrix at 6-8 bits: it is read whole
  // every step (a third of bench-moe-s's bytes per token in bf16).
  if (role == WeightRole::lm_head) return pack(w, WeightFormat::int8, 32);
  if (role != WeightRole::linear) return w;
  return pack(w, format_, group_);
}

LinearTensor QuantizingWeights::stacked(const std::vector<std::string>& names, int64_t out,
                                        int64_t in) {
  check(!names.empty(), where_ + ": no experts to stack");
  std::vector<LinearTensor> experts;
  experts.reserve(names.size());
  for (const std::string& name : names)
    experts.push_back(inner_.linear(name, out, in, WeightRole::linear));
  // The plain experts take the format and groups of a packed one, if any.
  WeightFormat format = format_;
  int64_t group = group_;
  for (const LinearTensor& e : experts)
    if (e.packed()) {
      format = e.format;
      group = e.block.size() == 2 && e.block[0] == 1 ? e.block[1] : group_;
      break;
    }
  if (inner_.fills_later()) {
    // Pack straight into the stacked tensors once the source has filled them
    // (such a source, random weights, gives every expert plain).
    const int64_t n = static_cast<int64_t>(experts.size());
    for (const LinearTensor& e : experts)
      check(!e.packed(), where_ + ": cannot stack packed experts of a source filled later");
    {
      LinearTensor first = packed_like(experts[0], format, group);
      LinearTensor stack;
      stack.format = first.format;
      stack.block = first.block;
      std::vector<int64_t> ws = first.weight.shape(), ss = first.scale.shape();
      ws.insert(ws.begin(), n);
      ss.insert(ss.begin(), n);
      stack.weight = Tensor::empty(first.weight.dtype(), ws);
      stack.scale = Tensor::empty(first.scale.dtype(), ss);
      for (int64_t e = 0; e < n; ++e) {
        LinearTensor slice;
        slice.format = stack.format;
        slice.block = stack.block;
        slice.weight = stack.weight.slice0(e, 1).reshape(first.weight.shape());
        slice.scale = stack.scale.slice0(e, 1).reshape(first.scale.shape());
        pending_.push_back({experts[static_cast<size_t>(e)], slice});
      }
      return stack;
    }
  }
  for (LinearTensor& e : experts)
    if (!e.packed()) e = pack(e, format, group);
  return stack_experts(where_, names, experts);
}

ExpertWeights QuantizingWeights::fused_experts(const std::string& prefix, int64_t experts,
                                               int64_t inter, int64_t hidden) {
  ExpertWeights w = inner_.fused_experts(prefix, experts, inter, hidden);
  for (LinearTensor* t : {&w.gate, &w.up, &w.down})
    if (!t->packed()) *t = pack(*t, format_, group_);
  return w;
}

void QuantizingWeights::after_build(const LoadProgress& progress) {
  inner_.after_build(progress);
  std::vector<Pending> pending = std::move(pending_);
  pending_.clear();
  // One weight per task: the quantization of each is single-threaded.
  parallel_for(static_cast<int64_t>(pending.size()), threads_, [&](int64_t i) {
    Pending& p = pending[static_cast<size_t>(i)];
    quantize_into(p.source, p.target, 1);
  });
}

}  // namespace moert
