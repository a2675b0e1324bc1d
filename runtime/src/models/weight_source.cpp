// CheckpointWeights: the decoder builder's weights read from a safetensors
// checkpoint, shape-checked against config.json, packed layouts (GPTQ, AWQ,
// MXFP4) repacked, experts stacked.
#include "weight_source.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "moert/dtype.h"
#include "moert/error.h"
#include "moert/shape.h"

namespace moert {

namespace {

// Gives back the pages of a mapped tensor once its bytes have been copied
// elsewhere, so that stacking experts does not hold the model twice in
// memory.  The mapping is private and read-only: the pages are re-read from
// the file if ever touched again.
void release_pages(const Tensor& t) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(t.data());
  uintptr_t end = begin + t.nbytes();
  uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::vector<int64_t> scale_shape(int64_t out, int64_t in) {
  return {(out + 127) / 128, (in + 127) / 128};
}

std::vector<int64_t> with_lead(const std::vector<int64_t>& lead, std::vector<int64_t> dims) {
  dims.insert(dims.begin(), lead.begin(), lead.end());
  return dims;
}

// The 32-bit word `i` of a tensor whose bytes need not be aligned.
uint32_t word_at(const uint8_t* bytes, int64_t i) {
  uint32_t w;
  std::memcpy(&w, bytes + 4 * i, 4);
  return w;
}

// The 16-bit word `i` (an f16's bits) of a tensor whose bytes need not be
// aligned.
uint16_t half_at(const uint8_t* bytes, int64_t i) {
  uint16_t h;
  std::memcpy(&h, bytes + 2 * i, 2);
  return h;
}

static_assert(std::endian::native == std::endian::little,
              "GPTQ / AWQ repacking reads int32 words as little-endian nibbles");

// The group scale of a packed int4 weight [N, K] with `groups` groups per
// row: f16 [N, groups] when every zero point is 8 (symmetric), else f16
// [N, groups, 2] (scale, zero) pairs.  scale_bits(g, n) and zero(g, n) read
// the checkpoint's [groups, N] layouts.
template <typename ScaleBits, typename Zero>
Tensor int4_scale(int64_t n_rows, int64_t groups, const ScaleBits& scale_bits, const Zero& zero) {
  bool symmetric = true;
  for (int64_t g = 0; g < groups && symmetric; ++g)
    for (int64_t n = 0; n < n_rows; ++n)
      if (zero(g, n) != 8) {
        symmetric = false;
        break;
      }
  Tensor s = Tensor::empty(DType::f16, symmetric ? std::vector<int64_t>{n_rows, groups}
                                                 : std::vector<int64_t>{n_rows, groups, 2});
  uint16_t* out = s.data_as<uint16_t>();
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t n = 0; n < n_rows; ++n) {
      if (symmetric) {
        out[n * groups + g] = scale_bits(g, n);
      } else {
        out[2 * (n * groups + g)] = scale_bits(g, n);
        out[2 * (n * groups + g) + 1] = f32_to_f16(static_cast<float>(zero(g, n)));
      }
    }
  return s;
}

// Touches every page of the checkpoint's tensors, file by file in offset
// order, so that the disk reads happen here, sequentially and measured,
// instead of spread over the build.  Skipped (nothing reported) when the
// checkpoint exceeds half of the physical memory: the build would then find
// the first pages evicted again.
void page_in(const Checkpoint& c, const LoadProgress& progress) {
  std::vector<std::vector<const SafetensorsEntry*>> order;  // per file, by offset
  uint64_t total = 0;
  for (const auto& file : c.files()) {
    std::vector<const SafetensorsEntry*>& entries = order.emplace_back();
    for (const auto& [name, e] : file->entries()) {
      entries.push_back(&e);
      total += e.end - e.begin;
    }
    std::sort(
        entries.begin(), entries.end(),
        [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  }
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_size > 0 &&
      total > static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size) / 2)
    return;
  const uint64_t stride = page_size > 0 ? static_cast<uint64_t>(page_size) : 4096;
  const uint64_t step = std::max<uint64_t>(total / 256, 1);  // at most ~256 reports
  uint64_t done = 0, reported = 0;
  progress("read", 0, total);
  for (size_t f = 0; f < order.size(); ++f) {
    for (const SafetensorsEntry* e : order[f]) {
      const Tensor t = c.files()[f]->tensor(e->name);
      // Volatile reads: performed although their values are not used.
      const auto* p = static_cast<const volatile unsigned char*>(t.data());
      const uint64_t n = e->end - e->begin;
      for (uint64_t off = 0; off < n; off += stride) (void)p[off];
      done += n;
      if (done - reported >= step && done < total) {
        progress("read", done, total);
        reported = done;
      }
    }
  }
  progress("read", total, total);
}

}  // namespace

void CheckpointWeights::before_build(const LoadProgress& progress) {
  if (!progress) return;
  page_in(ckpt_, progress);
  progress("build", 0, ckpt_.total_bytes());
}

void CheckpointWeights::after_build(const LoadProgress& progress) {
  if (progress) progress("build", ckpt_.total_bytes(), ckpt_.total_bytes());
}

bool LinearTensor::has_zeros() const {
  return format == ops::WeightFormat::int4 && weight.defined() && scale.defined() &&
         scale.rank() == weight.rank() + 1;
}

std::string packed_label(ops::WeightFormat format, const std::vector<int64_t>& block) {
  std::string s = ops::weight_format_name(format);
  if (format == ops::WeightFormat::mxfp4 || block.size() != 2) return s;
  if (block[0] == 1) return s + " g" + std::to_string(block[1]);
  return s + " " + std::to_string(block[0]) + "x" + std::to_string(block[1]);
}

std::string LinearTensor::describe() const {
  if (!packed()) return std::string(dtype_name(weight.dtype()));
  return packed_label(format, block) + (has_zeros() ? " with zero points" : "");
}

LinearTensor mxfp4_linear(const std::string& where, const std::string& name, const Tensor& blocks,
                          const Tensor& scales, const std::vector<int64_t>& lead, int64_t rows,
                          int64_t cols) {
  const std::string bn = name + "_blocks", sn = name + "_scales";
  if (cols % ops::kMxBlock != 0)
    throw Error(where + ": tensor '" + bn + "' holds MXFP4 blocks of 32 columns but config.json " +
                "implies " + std::to_string(cols) + " columns, not a multiple of 32");
  const int64_t nb = cols / ops::kMxBlock;
  const std::vector<int64_t> bshape = with_lead(lead, {rows, nb, 16}),
                             sshape = with_lead(lead, {rows, nb});
  if (blocks.dtype() != DType::u8 || blocks.shape() != bshape)
    throw Error(where + ": tensor '" + bn + "' is " + blocks.describe() +
                " but config.json implies MXFP4 blocks u8" + dims_str(bshape) + " (a [" +
                std::to_string(rows) + ", " + std::to_string(cols) + "] weight)");
  if (scales.dtype() != DType::u8 || scales.shape() != sshape)
    throw Error(where + ": tensor '" + sn + "' is " + scales.describe() +
                " but config.json implies MXFP4 scales u8" + dims_str(sshape) + " (a [" +
                std::to_string(rows) + ", " + std::to_string(cols) + "] weight)");
  LinearTensor w;
  w.weight = blocks.reshape(with_lead(lead, {rows, cols / 2}));
  w.scale = scales;
  w.format = ops::WeightFormat::mxfp4;
  w.block = {1, ops::kMxBlock};
  return w;
}

Tensor deinterleave_last(const Tensor& t, int part) {
  check(t.rank() >= 1 && t.dim(-1) % 2 == 0,
        "deinterleave: " + t.describe() + " has no even last dim");
  std::vector<int64_t> shape = t.shape();
  const int64_t n = shape.back() / 2, rows = n > 0 ? t.numel() / (2 * n) : 0;
  shape.back() = n;
  Tensor out = Tensor::empty(t.dtype(), shape);
  const size_t es = dtype_size(t.dtype());
  const char* src = static_cast<const char*>(t.data());
  char* dst = static_cast<char*>(out.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(dst + static_cast<size_t>(r * n + i) * es,
                  src + static_cast<size_t>(r * 2 * n + 2 * i + part) * es, es);
  return out;
}

ExpertWeights split_fused_experts(const std::string& where, const std::string& prefix,
                                  const std::function<Tensor(const std::string&)>& get,
                                  const std::function<bool(const std::string&)>& has,
                                  int64_t experts, int64_t inter, int64_t hidden) {
  const std::string gu = prefix + "gate_up_proj", dn = prefix + "down_proj";
  ExpertWeights w;
  if (has(gu + "_blocks")) {
    // MXFP4, output-major: gate_up [E, 2I, H/32, 16] -> even and odd rows.
    for (const std::string& n : {gu + "_scales", dn + "_blocks", dn + "_scales"})
      if (!has(n))
        throw Error(where + ": tensor '" + gu + "_blocks' (MXFP4) is stored but '" + n +
                    "' is missing");
    const LinearTensor fused = mxfp4_linear(where, gu, get(gu + "_blocks"), get(gu + "_scales"),
                                            {experts}, 2 * inter, hidden);
    w.down =
        mxfp4_linear(where, dn, get(dn + "_blocks"), get(dn + "_scales"), {experts}, hidden, inter);
    // Rows of the fused weight: [E, 2I, row] viewed as [E, I, 2 row], so the
    // even and odd rows are the two halves of the last dim.
    auto rows_of = [&](const Tensor& t, int part) {
      const int64_t row = t.dim(-1);
      const Tensor pairs = t.reshape({experts, inter, 2 * row});
      Tensor out = Tensor::empty(t.dtype(), {experts, inter, row});
      const size_t bytes = static_cast<size_t>(row) * dtype_size(t.dtype());
      for (int64_t r = 0; r < experts * inter; ++r)
        std::memcpy(
            static_cast<char*>(out.data()) + static_cast<size_t>(r) * bytes,
            static_cast<const char*>(pairs.data()) + static_cast<size_t>(2 * r + part) * bytes,
            bytes);
      return out;
    };
    for (int part : {0, 1}) {
      LinearTensor& t = part == 0 ? w.gate : w.up;
      t.format = fused.format;
      t.block = fused.block;
      t.weight = rows_of(fused.weight, part);
      t.scale = rows_of(fused.scale, part);
    }
    return w;
  }
  // Plain, input-major: gate_up [E, H, 2I], down [E, I, H].
  auto plain = [&](const std::string& name, const std::vector<int64_t>& shape) {
    if (!has(name))
      throw Error(where + ": tensor '" + name + "' (or its MXFP4 '" + name +
                  "_blocks') is missing");
    Tensor t = get(name);
    if (t.shape() != shape)
      throw Error(where + ": tensor '" + name + "' is " + t.describe() +
                  " but config.json implies shape " + dims_str(shape));
    if (t.dtype() != DType::f32 && t.dtype() != DType::bf16 && t.dtype() != DType::f16)
      throw Error(where + ": tensor '" + name + "' is " + t.describe() +
                  "; fused experts must be f32, bf16, f16 or MXFP4");
    return t;
  };
  const Tensor fused = plain(gu, {experts, hidden, 2 * inter});
  const Tensor down = plain(dn, {experts, inter, hidden});
  // out[e, r, c] = in[e, c, stride * r + offset]: a transpose, taking every
  // stride-th column of the input-major matrix from `offset`.
  auto transpose = [&](const Tensor& in, int64_t rows, int64_t cols, int64_t stride,
                       int64_t offset) {
    Tensor out = Tensor::empty(in.dtype(), {experts, rows, cols});
    auto copy = [&](auto* dst, const auto* src) {
      const int64_t in_row = rows * stride;
      for (int64_t e = 0; e < experts; ++e)
        for (int64_t c = 0; c < cols; ++c) {
          const auto* row = src + (e * cols + c) * in_row + offset;
          for (int64_t r = 0; r < rows; ++r) dst[(e * rows + r) * cols + c] = row[stride * r];
        }
    };
    if (dtype_size(in.dtype()) == 4)
      copy(out.data_as<uint32_t>(), in.data_as<const uint32_t>());
    else
      copy(out.data_as<uint16_t>(), in.data_as<const uint16_t>());
    return out;
  };
  w.gate.weight = transpose(fused, inter, hidden, 2, 0);
  w.up.weight = transpose(fused, inter, hidden, 2, 1);
  w.down.weight = transpose(down, hidden, inter, 1, 0);
  return w;
}

ExpertWeights WeightSource::fused_experts(const std::string& prefix, int64_t experts, int64_t inter,
                                          int64_t hidden) {
  auto names = [&](const char* proj) {
    std::vector<std::string> n;
    for (int64_t e = 0; e < experts; ++e)
      n.push_back(prefix + std::to_string(e) + "." + proj + ".weight");
    return n;
  };
  return {stacked(names("gate_proj"), inter, hidden), stacked(names("up_proj"), inter, hidden),
          stacked(names("down_proj"), hidden, inter)};
}

LinearTensor stack_experts(const std::string& where, const std::vector<std::string>& names,
                           const std::vector<LinearTensor>& experts,
                           const std::function<void(const LinearTensor&)>& release) {
  check(!experts.empty() && experts.size() == names.size(), where + ": no experts to stack");
  const LinearTensor& first = experts[0];
  bool zeros = false;
  for (const LinearTensor& t : experts) zeros = zeros || t.has_zeros();
  // The scale's shape without the zero points' trailing 2.
  auto groups_shape = [](const LinearTensor& t) {
    std::vector<int64_t> s = t.scale.defined() ? t.scale.shape() : std::vector<int64_t>{};
    if (t.has_zeros()) s.pop_back();
    return s;
  };
  for (size_t e = 1; e < experts.size(); ++e) {
    const LinearTensor& t = experts[e];
    if (t.format == first.format && t.weight.dtype() == first.weight.dtype() &&
        t.weight.shape() == first.weight.shape() && t.block == first.block &&
        t.scale.defined() == first.scale.defined() &&
        (!t.scale.defined() ||
         (t.scale.dtype() == first.scale.dtype() && groups_shape(t) == groups_shape(first))))
      continue;
    std::string hint;
    if (t.packed() != first.packed())
      hint = " (load with quantize=\"" +
             std::string(ops::weight_format_name(t.packed() ? t.format : first.format)) +
             "\" to pack the plain ones)";
    throw Error(where + ": tensor '" + names[e] + "' is " + t.describe() + " but expert 0 ('" +
                names[0] + "') is " + first.describe() +
                ": the experts of a layer must share one format" + hint);
  }
  const int64_t n = static_cast<int64_t>(experts.size());
  LinearTensor w;
  w.format = first.format;
  w.block = first.block;
  w.weight = Tensor::empty(first.weight.dtype(), with_lead({n}, first.weight.shape()));
  std::vector<int64_t> sshape = groups_shape(first);
  if (zeros) sshape.push_back(2);
  if (first.scale.defined()) w.scale = Tensor::empty(first.scale.dtype(), with_lead({n}, sshape));
  const size_t wbytes = first.weight.nbytes();
  const size_t sbytes = first.scale.defined() ? w.scale.nbytes() / static_cast<size_t>(n) : 0;
  for (int64_t e = 0; e < n; ++e) {
    const LinearTensor& t = experts[static_cast<size_t>(e)];
    std::memcpy(static_cast<char*>(w.weight.data()) + static_cast<size_t>(e) * wbytes,
                t.weight.data(), wbytes);
    if (t.scale.defined()) {
      char* dst = static_cast<char*>(w.scale.data()) + static_cast<size_t>(e) * sbytes;
      if (zeros && !t.has_zeros()) {
        // Symmetric int4: (scale, 8), the same values.
        const uint16_t eight = f32_to_f16(8.0f);
        const uint16_t* src = t.scale.data_as<uint16_t>();
        uint16_t* out = reinterpret_cast<uint16_t*>(dst);
        for (int64_t i = 0; i < t.scale.numel(); ++i) {
          out[2 * i] = src[i];
          out[2 * i + 1] = eight;
        }
      } else {
        std::memcpy(dst, t.scale.data(), sbytes);
      }
    }
    if (release) release(t);
  }
  return w;
}

Tensor CheckpointWeights::tensor(const std::string& name, const std::vector<int64_t>& shape,
                                 WeightRole) {
  Tensor t = ckpt_.get(name);
  if (t.shape() != shape)
    throw Error(ckpt_.directory() + ": tensor '" + name + "' (in " + ckpt_.file_of(name) + ") is " +
                t.describe() + " but config.json implies shape " + dims_str(shape));
  return t;
}

// An fp8 weight's *_scale_inv, as f32.
Tensor CheckpointWeights::fetch_scale(const std::string& weight_name, int64_t out, int64_t in) {
  std::string name = weight_name + "_scale_inv";
  if (!ckpt_.has(name))
    throw Error(ckpt_.directory() + ": tensor '" + weight_name +
                "' is F8_E4M3 but its block scale '" + name + "' is missing");
  Tensor s = tensor(name, scale_shape(out, in), WeightRole::linear);
  if (s.dtype() == DType::f32) return s;
  Tensor f = Tensor::empty(DType::f32, s.shape());
  for (int64_t i = 0; i < s.numel(); ++i)
    f.data_as<float>()[i] = static_cast<float>(s.at(static_cast<size_t>(i)));
  return f;
}

Tensor CheckpointWeights::packed_part(const std::string& name, DType dtype,
                                      const std::vector<int64_t>& shape, const std::string& what) {
  if (!ckpt_.has(name))
    throw Error(ckpt_.directory() + ": tensor '" + name + "' is missing (" + what + ")");
  Tensor t = ckpt_.get(name);
  if (t.dtype() != dtype || t.shape() != shape)
    throw Error(ckpt_.directory() + ": tensor '" + name + "' (in " + ckpt_.file_of(name) + ") is " +
                t.describe() + " but " + what + " needs " + std::string(dtype_name(dtype)) +
                dims_str(shape));
  return t;
}

// GPTQ v1 (AutoGPTQ, GPTQModel "gptq"): qweight i32 [K/8, N], word (i, n)
// holding W[n, 8i + j] in bits 4j..4j+3, so the 4 bytes of the word are
// exactly bytes 4i..4i+3 of row n in the op's layout (low nibble = even
// column): the repack is a transpose of words.  qzeros i32 [G, N/8], nibble
// j of word (g, m) holding zero(g, 8m + j) - 1; scales f16 [G, N].
LinearTensor CheckpointWeights::read_gptq(const std::string& base, int64_t out, int64_t in) {
  const int64_t g = quant_.group_size == -1 ? in : quant_.group_size;
  const std::string what = "config.json's [" + std::to_string(out) + ", " + std::to_string(in) +
                           "] weight as 4-bit GPTQ with group_size " +
                           std::to_string(quant_.group_size);
  if (in % 8 != 0 || out % 8 != 0)
    throw Error(ckpt_.directory() + ": tensor '" + base + ".qweight' cannot hold " + what +
                ": GPTQ packs 8 values per int32 along both dims, which must be multiples of 8");
  const int64_t groups = (in + g - 1) / g;
  Tensor qweight = packed_part(base + ".qweight", DType::i32, {in / 8, out}, what);
  Tensor qzeros = packed_part(base + ".qzeros", DType::i32, {groups, out / 8}, what);
  Tensor scales = packed_part(base + ".scales", DType::f16, {groups, out}, what);
  const std::string gname = base + ".g_idx";
  if (ckpt_.has(gname)) {
    Tensor gidx = packed_part(gname, DType::i32, {in}, what);
    const uint8_t* p = static_cast<const uint8_t*>(gidx.data());
    for (int64_t k = 0; k < in; ++k) {
      const int32_t v = static_cast<int32_t>(word_at(p, k));
      if (v != k / g)
        throw Error(ckpt_.directory() + ": tensor '" + gname + "' (in " + ckpt_.file_of(gname) +
                    ") puts column " + std::to_string(k) + " in group " + std::to_string(v) +
                    ", not k / group_size = " + std::to_string(k / g) +
                    ": an act-order (desc_act) checkpoint whose groups are permuted, which moert "
                    "does not read (quantize without desc_act, or with static_groups)");
    }
  } else if (quant_.desc_act) {
    throw Error(ckpt_.directory() + ": tensor '" + gname + "' is missing but " +
                quant_.config_path +
                " declares 'quantization_config.desc_act' true: the group of each column is "
                "unknown");
  }
  LinearTensor w;
  w.format = ops::WeightFormat::int4;
  w.block = {1, g};
  w.weight = Tensor::empty(DType::u8, {out, in / 2});
  const uint8_t* qw = static_cast<const uint8_t*>(qweight.data());
  uint8_t* dst = w.weight.data_as<uint8_t>();
  const int64_t row_bytes = in / 2;
  for (int64_t i = 0; i < in / 8; ++i)
    for (int64_t n = 0; n < out; ++n)
      std::memcpy(dst + n * row_bytes + 4 * i, qw + 4 * (i * out + n), 4);
  const uint8_t* qz = static_cast<const uint8_t*>(qzeros.data());
  const uint8_t* sc = static_cast<const uint8_t*>(scales.data());
  w.scale = int4_scale(
      out, groups, [&](int64_t gi, int64_t n) { return half_at(sc, gi * out + n); },
      // v1 stores zero - 1; AutoGPTQ's dequantisation adds 1 to the nibble.
      [&](int64_t gi, int64_t n) {
        return static_cast<int>((word_at(qz, gi * (out / 8) + n / 8) >> (4 * (n % 8))) & 15u) + 1;
      });
  release_pages(qweight);
  return w;
}

// AWQ gemm (AutoAWQ WQLinear_GEMM): qweight i32 [K, N/8], nibble p of word
// (k, m) holding W[8m + kAwqOrder[p], k] with kAwqOrder = [0, 2, 4, 6, 1, 3,
// 5, 7] (so column 8m + j sits in nibble kAwqReverse[j]); qzeros i32 [G, N/8]
// in the same order, zero as is; scales f16 [G, N].
LinearTensor CheckpointWeights::read_awq(const std::string& base, int64_t out, int64_t in) {
  static constexpr int kAwqReverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  const int64_t g = quant_.group_size == -1 ? in : quant_.group_size;
  const std::string what = "config.json's [" + std::to_string(out) + ", " + std::to_string(in) +
                           "] weight as 4-bit AWQ (gemm) with group_size " +
                           std::to_string(quant_.group_size);
  if (out % 8 != 0)
    throw Error(ckpt_.directory() + ": tensor '" + base + ".qweight' cannot hold " + what +
                ": AWQ packs 8 output columns per int32, so " + std::to_string(out) +
                " must be a multiple of 8");
  const int64_t groups = (in + g - 1) / g, words = out / 8;
  Tensor qweight = packed_part(base + ".qweight", DType::i32, {in, words}, what);
  Tensor qzeros = packed_part(base + ".qzeros", DType::i32, {groups, words}, what);
  Tensor scales = packed_part(base + ".scales", DType::f16, {groups, out}, what);
  LinearTensor w;
  w.format = ops::WeightFormat::int4;
  w.block = {1, g};
  const int64_t row_bytes = (in + 1) / 2;
  w.weight = Tensor::zeros(DType::u8, {out, row_bytes});
  const uint8_t* qw = static_cast<const uint8_t*>(qweight.data());
  uint8_t* dst = w.weight.data_as<uint8_t>();
  for (int64_t k = 0; k < in; ++k) {
    const int shift = static_cast<int>(k & 1) * 4;
    for (int64_t m = 0; m < words; ++m) {
      const uint32_t word = word_at(qw, k * words + m);
      for (int j = 0; j < 8; ++j) {
        const uint32_t q = (word >> (4 * kAwqReverse[j])) & 15u;
        dst[(8 * m + j) * row_bytes + k / 2] |= static_cast<uint8_t>(q << shift);
      }
    }
  }
  const uint8_t* qz = static_cast<const uint8_t*>(qzeros.data());
  const uint8_t* sc = static_cast<const uint8_t*>(scales.data());
  w.scale = int4_scale(
      out, groups, [&](int64_t gi, int64_t n) { return half_at(sc, gi * out + n); },
      [&](int64_t gi, int64_t n) {
        return static_cast<int>((word_at(qz, gi * words + n / 8) >> (4 * kAwqReverse[n % 8])) &
                                15u);
      });
  release_pages(qweight);
  return w;
}

LinearTensor CheckpointWeights::linear(const std::string& name, int64_t out, int64_t in,
                                       WeightRole role) {
  LinearTensor w;
  if (ckpt_.has(name)) {
    w.weight = tensor(name, {out, in}, role);
    if (w.weight.dtype() == DType::f8_e4m3) {
      w.scale = fetch_scale(name, out, in);
      w.block = {128, 128};
    }
    return w;
  }
  const std::string base = name.ends_with(".weight") ? name.substr(0, name.size() - 7) : name;
  const std::string& method = quant_.method;
  if (ckpt_.has(base + ".qweight")) {
    if (method == "gptq") return read_gptq(base, out, in);
    if (method == "awq") return read_awq(base, out, in);
    throw Error(
        ckpt_.directory() + ": tensor '" + base + ".qweight' is a packed (GPTQ or AWQ) " +
        "weight but config.json's quantization_config " +
        (method.empty() ? std::string("is absent") : "declares quant_method '" + method + "'") +
        ": its layout is unknown");
  }
  if (ckpt_.has(name + "_blocks")) {
    if (method == "mxfp4") {
      const std::string sn = name + "_scales";
      if (!ckpt_.has(sn))
        throw Error(ckpt_.directory() + ": tensor '" + name + "_blocks' has no scales '" + sn +
                    "'");
      return mxfp4_linear(ckpt_.directory(), name, ckpt_.get(name + "_blocks"), ckpt_.get(sn), {},
                          out, in);
    }
    throw Error(
        ckpt_.directory() + ": tensor '" + name + "_blocks' is an MXFP4 weight but " +
        "config.json's quantization_config " +
        (method.empty() ? std::string("is absent") : "declares quant_method '" + method + "'") +
        " (quant_method \"mxfp4\" expected)");
  }
  w.weight = tensor(name, {out, in}, role);  // throws: missing
  return w;
}

LinearTensor CheckpointWeights::stacked(const std::vector<std::string>& names, int64_t out,
                                        int64_t in) {
  check(!names.empty(), ckpt_.directory() + ": no experts to stack");
  std::vector<LinearTensor> experts;
  experts.reserve(names.size());
  for (const std::string& name : names)
    experts.push_back(linear(name, out, in, WeightRole::linear));
  return stack_experts(ckpt_.directory(), names, experts,
                       [this](const LinearTensor& t) { release(t); });
}

ExpertWeights CheckpointWeights::fused_experts(const std::string& prefix, int64_t experts,
                                               int64_t inter, int64_t hidden) {
  std::vector<Tensor> copied;  // what the split copies (all but MXFP4 down_proj, a view)
  ExpertWeights w = split_fused_experts(
      ckpt_.directory(), prefix,
      [&](const std::string& n) {
        Tensor t = ckpt_.get(n);
        if (n.find("down_proj_") == std::string::npos) copied.push_back(t);
        return t;
      },
      [&](const std::string& n) { return ckpt_.has(n); }, experts, inter, hidden);
  for (const Tensor& t : copied) release_pages(t);
  return w;
}

// Only what is mapped: plain and fp8 weights, MXFP4 blocks and scales (GPTQ
// and AWQ weights were repacked on the heap, fp8 scales may be converted
// copies; giving back heap pages would zero them).
void CheckpointWeights::release(const LinearTensor& w) {
  if (!w.packed()) {
    release_pages(w.weight);
  } else if (w.format == ops::WeightFormat::mxfp4) {
    release_pages(w.weight);
    release_pages(w.scale);
  }
}

}  // namespace moert
