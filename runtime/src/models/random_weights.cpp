// RandomWeightSource: random weights generated on demand, in parallel, with
// the values and storage dtypes random_weights.h describes.
#include "random_weights.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "moert/error.h"
#include "moert/shape.h"
#include "quantize_weights.h"

namespace moert {

namespace {

constexpr int64_t kBlock = 128;  // fp8 scale blocks are kBlock × kBlock
constexpr float kE4M3Max = 448.0f;

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string shape_error(const std::string& name, const std::vector<int64_t>& shape) {
  return "random weights: tensor '" + name + "' would have shape " + dims_str(shape) +
         "; every dimension config.json implies must be positive";
}

}  // namespace

uint64_t random_weight_key(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ull;
  return mix64(h ^ mix64(seed + 0x9E3779B97F4A7C15ull));
}

float random_weight_value(uint64_t key, uint64_t index) {
  const uint64_t z = mix64(key + (index + 1) * 0x9E3779B97F4A7C15ull);
  // Four uniform parts on [0, 65535]: their sum has mean 131070 and standard
  // deviation 65536 / sqrt(3) (to within 1e-9 relative).
  const uint32_t s =
      static_cast<uint32_t>((z & 0xFFFF) + ((z >> 16) & 0xFFFF) + ((z >> 32) & 0xFFFF) + (z >> 48));
  return (static_cast<float>(s) - 131070.0f) * (1.7320508075688772f / 65536.0f);
}

uint16_t fast_f32_to_bf16(float v) {
  uint32_t x = std::bit_cast<uint32_t>(v);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u)
    return static_cast<uint16_t>(((x >> 16) & 0x8000u) | 0x7FC0u);
  x += 0x7FFFu + ((x >> 16) & 1u);  // round to nearest, ties to even; overflow carries to inf
  return static_cast<uint16_t>(x >> 16);
}

uint16_t fast_f32_to_f16(float v) {
  const uint32_t x = std::bit_cast<uint32_t>(v);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);   // NaN
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds past 65504: inf
  if (a < 0x38800000u) {
    // Below 2^-14, f16's subnormals: adding 0.5 (whose ulp is 2^-24, the f16
    // subnormal step) rounds |v| to that step; the difference of the bit
    // patterns is the f16 pattern (2^-14 itself comes out as 0x0400).
    const float f = std::bit_cast<float>(a) + 0.5f;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(f) - 0x3F000000u));
  }
  // Normal: rebias the exponent (127 → 15) and round away 13 fraction bits.
  a += 0xC8000000u + 0xFFFu + ((a >> 13) & 1u);  // 0xC8000000 = (15 - 127) << 23 mod 2^32
  return static_cast<uint16_t>(sign | (a >> 13));
}

uint8_t fast_f32_to_e4m3(float v) {
  const uint32_t x = std::bit_cast<uint32_t>(v);
  const uint32_t sign = (x >> 24) & 0x80u;
  uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint8_t>(sign | 0x7Fu);  // NaN
  // From 448 up everything (infinity too) rounds to 448 or saturates there.
  if (a >= 0x43E00000u) return static_cast<uint8_t>(sign | 0x7Eu);
  if (a < 0x3C800000u) {
    // Below 2^-6, e4m3's subnormals (step 2^-9): 16384's ulp is 2^-9.
    const float f = std::bit_cast<float>(a) + 16384.0f;
    return static_cast<uint8_t>(sign | (std::bit_cast<uint32_t>(f) - 0x46800000u));
  }
  a += 0xC4000000u + 0x7FFFFu + ((a >> 20) & 1u);  // 0xC4000000 = (7 - 127) << 23 mod 2^32
  return static_cast<uint8_t>(sign | (a >> 20));
}

RandomWeightSource::RandomWeightSource(const ArchSpec& arch, const RandomWeights& options)
    : arch_(arch),
      mode_(options.dtype.ends_with("-experts")
                ? options.dtype.substr(0, options.dtype.size() - std::string("-experts").size())
                : options.dtype),
      experts_only_(options.dtype.ends_with("-experts")),
      seed_(options.seed),
      std_(static_cast<float>(options.std)),
      threads_(options.threads) {
  if (mode_ != "none") ops::weight_format_from(mode_, &packed_);
  check(
      (!experts_only_ && (mode_ == "f32" || mode_ == "bf16" || mode_ == "f16" || mode_ == "fp8")) ||
          packed_ != ops::WeightFormat::none,
      "random weights: dtype must be f32, bf16, f16, fp8, int8, int4 or mxfp4, or "
      "int8-experts, int4-experts or mxfp4-experts, got '" +
          options.dtype + "'");
  check(std::isfinite(options.std) && options.std >= 0,
        "random weights: std must be finite and >= 0, got " + std::to_string(options.std));
}

bool RandomWeightSource::has(const std::string& name) const {
  return name != "lm_head.weight" || !arch_.tie_embeddings;
}

DType RandomWeightSource::dtype_for(WeightRole role) const {
  if (role == WeightRole::score_bias || mode_ == "f32") return DType::f32;
  if (mode_ == "f16") return DType::f16;
  if (mode_ == "fp8" && role == WeightRole::linear) return DType::f8_e4m3;
  return DType::bf16;
}

void RandomWeightSource::add_job(const std::string& name, void* data, DType dtype,
                                 const std::vector<int64_t>& shape, WeightRole role, float* scale) {
  Job j;
  j.data = data;
  j.dtype = dtype;
  j.cols = shape.back();
  j.rows = num_elements(shape) / j.cols;
  j.key = random_weight_key(seed_, name);
  j.ones = role == WeightRole::norm;
  j.scale = scale;
  jobs_.push_back(j);
}

Tensor RandomWeightSource::tensor(const std::string& name, const std::vector<int64_t>& shape,
                                  WeightRole role) {
  check(!shape.empty() && std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d > 0; }),
        shape_error(name, shape));
  DType dtype = dtype_for(role);
  if (dtype == DType::f8_e4m3) dtype = DType::bf16;  // only linear() quantises
  Tensor t = Tensor::empty(dtype, shape);
  add_job(name, t.data(), dtype, shape, role, nullptr);
  return t;
}

// Packed with groups of 32 columns; values generated in generate().
LinearTensor RandomWeightSource::packed_linear(const std::vector<std::string>& names, int64_t out,
                                               int64_t in, bool stacked, ops::WeightFormat format) {
  const int64_t experts = static_cast<int64_t>(names.size()), stored = ops::stored_cols(format, in);
  const int64_t groups = (in + 31) / 32;
  const bool mx = format == ops::WeightFormat::mxfp4;
  std::vector<int64_t> wshape{out, stored}, sshape{out, groups};
  if (stacked) {
    wshape.insert(wshape.begin(), experts);
    sshape.insert(sshape.begin(), experts);
  }
  LinearTensor w;
  w.format = format;
  w.block = {1, 32};
  w.weight = Tensor::empty(format == ops::WeightFormat::int8 ? DType::i8 : DType::u8, wshape);
  w.scale = Tensor::empty(mx ? DType::u8 : DType::f16, sshape);
  for (int64_t e = 0; e < experts; ++e) {
    Job j;
    j.data = static_cast<char*>(w.weight.data()) + static_cast<size_t>(e * out * stored);
    j.dtype = w.weight.dtype();
    j.rows = out;
    j.cols = in;
    j.key = random_weight_key(seed_, names[static_cast<size_t>(e)]);
    j.format = format;
    j.groups = static_cast<char*>(w.scale.data()) +
               static_cast<size_t>(e * out * groups) * dtype_size(w.scale.dtype());
    jobs_.push_back(j);
  }
  return w;
}

LinearTensor RandomWeightSource::linear(const std::string& name, int64_t out, int64_t in,
                                        WeightRole role) {
  check(out > 0 && in > 0, shape_error(name, {out, in}));
  if (packed_ != ops::WeightFormat::none && !experts_only_ && role == WeightRole::linear)
    return packed_linear({name}, out, in, false, packed_);
  // lm_head in int8 whatever the format, as QuantizingWeights packs it.
  if (packed_ != ops::WeightFormat::none && !experts_only_ && role == WeightRole::lm_head)
    return packed_linear({name}, out, in, false, ops::WeightFormat::int8);
  LinearTensor w;
  const DType dtype = dtype_for(role);
  w.weight = Tensor::empty(dtype, {out, in});
  if (dtype == DType::f8_e4m3) {
    w.scale = Tensor::empty(DType::f32, {(out + kBlock - 1) / kBlock, (in + kBlock - 1) / kBlock});
    w.block = {kBlock, kBlock};
  }
  add_job(name, w.weight.data(), dtype, {out, in}, role,
          w.scale.defined() ? w.scale.data_as<float>() : nullptr);
  return w;
}

LinearTensor RandomWeightSource::stacked(const std::vector<std::string>& names, int64_t out,
                                         int64_t in) {
  check(!names.empty(), "random weights: no experts to stack");
  check(out > 0 && in > 0, shape_error(names[0], {out, in}));
  const int64_t experts = static_cast<int64_t>(names.size());
  if (packed_ != ops::WeightFormat::none) return packed_linear(names, out, in, true, packed_);
  const int64_t row_blocks = (out + kBlock - 1) / kBlock, col_blocks = (in + kBlock - 1) / kBlock;
  const DType dtype = dtype_for(WeightRole::linear);
  LinearTensor w;
  w.weight = Tensor::empty(dtype, {experts, out, in});
  if (dtype == DType::f8_e4m3) {
    w.scale = Tensor::empty(DType::f32, {experts, row_blocks, col_blocks});
    w.block = {kBlock, kBlock};
  }
  const size_t expert_bytes = static_cast<size_t>(out * in) * dtype_size(dtype);
  for (int64_t e = 0; e < experts; ++e)
    add_job(names[static_cast<size_t>(e)],
            static_cast<char*>(w.weight.data()) + static_cast<size_t>(e) * expert_bytes, dtype,
            {out, in}, WeightRole::linear,
            w.scale.defined() ? w.scale.data_as<float>() + e * row_blocks * col_blocks : nullptr);
  return w;
}

// Rows [row_begin, row_end) of a job; for fp8 they are whole 128-row blocks
// (the last may be partial), so each block's scale is computed here.
void RandomWeightSource::fill(const Job& j, int64_t row_begin, int64_t row_end,
                              std::vector<float>& scratch) const {
  const int64_t cols = j.cols;
  auto value = [&](int64_t r, int64_t c) {
    return j.ones ? 1.0f : std_ * random_weight_value(j.key, static_cast<uint64_t>(r * cols + c));
  };
  if (j.format != ops::WeightFormat::none) {
    // The bf16 values of the rows, packed as quantize packs a bf16 model.
    const int64_t rows = row_end - row_begin, stored = ops::stored_cols(j.format, cols);
    const int64_t groups = (cols + 31) / 32;
    const size_t group_bytes = j.format == ops::WeightFormat::mxfp4 ? 1 : 2;
    scratch.resize(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        scratch[static_cast<size_t>(r * cols + c)] = std::bit_cast<float>(
            static_cast<uint32_t>(fast_f32_to_bf16(value(row_begin + r, c))) << 16);
    quantize_rows(
        scratch.data(), rows, cols, j.format, 32,
        static_cast<char*>(j.data) + static_cast<size_t>(row_begin * stored),
        static_cast<char*>(j.groups) + static_cast<size_t>(row_begin * groups) * group_bytes);
    return;
  }
  switch (j.dtype) {
    case DType::f32: {
      float* out = static_cast<float*>(j.data);
      for (int64_t r = row_begin; r < row_end; ++r)
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = value(r, c);
      return;
    }
    case DType::bf16:
    case DType::f16: {
      uint16_t* out = static_cast<uint16_t*>(j.data);
      const bool bf16 = j.dtype == DType::bf16;
      for (int64_t r = row_begin; r < row_end; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const float v = value(r, c);
          out[r * cols + c] = bf16 ? fast_f32_to_bf16(v) : fast_f32_to_f16(v);
        }
      return;
    }
    case DType::f8_e4m3: {
      const int64_t col_blocks = (cols + kBlock - 1) / kBlock;
      uint8_t* out = static_cast<uint8_t*>(j.data);
      for (int64_t r0 = row_begin; r0 < row_end; r0 += kBlock) {
        const int64_t rows = std::min(kBlock, row_end - r0);
        scratch.resize(static_cast<size_t>(rows * cols));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            scratch[static_cast<size_t>(r * cols + c)] = value(r0 + r, c);
        for (int64_t cb = 0; cb < col_blocks; ++cb) {
          const int64_t c0 = cb * kBlock, c1 = std::min(cols, c0 + kBlock);
          float amax = 0;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = c0; c < c1; ++c)
              amax = std::max(amax, std::fabs(scratch[static_cast<size_t>(r * cols + c)]));
          const float scale = amax > 0 ? amax / kE4M3Max : 1.0f;
          j.scale[r0 / kBlock * col_blocks + cb] = scale;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = c0; c < c1; ++c)
              out[(r0 + r) * cols + c] =
                  fast_f32_to_e4m3(scratch[static_cast<size_t>(r * cols + c)] / scale);
        }
      }
      return;
    }
    default:
      throw Error("random weights: cannot generate " + std::string(dtype_name(j.dtype)));
  }
}

void RandomWeightSource::after_build(const LoadProgress& progress) {
  std::function<void(uint64_t, uint64_t)> report;
  if (progress) report = [&](uint64_t done, uint64_t total) { progress("build", done, total); };
  generate(report);
}

void RandomWeightSource::generate(const std::function<void(uint64_t, uint64_t)>& progress) {
  // Chunks of about a million elements; fp8 chunks are whole 128-row blocks.
  struct Chunk {
    size_t job;
    int64_t begin, end;
    uint64_t bytes;
  };
  std::vector<Chunk> chunks;
  uint64_t total = 0;
  for (size_t i = 0; i < jobs_.size(); ++i) {
    const Job& j = jobs_[i];
    int64_t step = std::max<int64_t>(1, (int64_t{1} << 20) / j.cols);
    if (j.scale) step = std::max<int64_t>(1, step / kBlock) * kBlock;
    for (int64_t r = 0; r < j.rows; r += step) {
      const int64_t end = std::min(j.rows, r + step);
      uint64_t bytes = static_cast<uint64_t>((end - r) * j.cols) * dtype_size(j.dtype);
      if (j.scale)
        bytes += static_cast<uint64_t>((end - r + kBlock - 1) / kBlock *
                                       ((j.cols + kBlock - 1) / kBlock)) *
                 sizeof(float);
      chunks.push_back({i, r, end, bytes});
      total += bytes;
    }
  }
  // Largest first, so that the threads finish together.
  std::stable_sort(chunks.begin(), chunks.end(),
                   [](const Chunk& a, const Chunk& b) { return a.bytes > b.bytes; });

  const int threads =
      std::max(1, threads_ > 0 ? threads_ : static_cast<int>(std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::atomic<int> running{threads};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr failure;
  auto work = [&] {
    std::vector<float> scratch;
    try {
      while (!stop) {
        const size_t c = next++;
        if (c >= chunks.size()) break;
        const Chunk& k = chunks[c];
        fill(jobs_[k.job], k.begin, k.end, scratch);
        done += k.bytes;
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!failure) failure = std::current_exception();
      stop = true;
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (--running == 0) finished.notify_all();
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  try {
    if (progress) progress(0, total);
    std::unique_lock<std::mutex> lock(mutex);
    while (running > 0) {
      finished.wait_for(lock, std::chrono::milliseconds(200));
      if (progress && running > 0) {
        lock.unlock();
        progress(done, total);
        lock.lock();
      }
    }
  } catch (...) {
    stop = true;
    for (std::thread& t : pool) t.join();
    throw;
  }
  for (std::thread& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
  jobs_.clear();
  if (progress) progress(total, total);
}

}  // namespace moert
