// CheckpointWeights: the decoder builder's weights read from a safetensors
// checkpoint, shape-checked against config.json, experts stacked.
#include "weight_source.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

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

LinearTensor CheckpointWeights::linear(const std::string& name, int64_t out, int64_t in,
                                       WeightRole role) {
  LinearTensor w;
  w.weight = tensor(name, {out, in}, role);
  if (w.weight.dtype() == DType::f8_e4m3) w.scale = fetch_scale(name, out, in);
  return w;
}

LinearTensor CheckpointWeights::stacked(const std::vector<std::string>& names, int64_t out,
                                        int64_t in) {
  check(!names.empty(), ckpt_.directory() + ": no experts to stack");
  const int64_t experts = static_cast<int64_t>(names.size());
  Tensor first = tensor(names[0], {out, in}, WeightRole::linear);
  LinearTensor w;
  w.weight = Tensor::empty(first.dtype(), {experts, out, in});
  const bool fp8 = first.dtype() == DType::f8_e4m3;
  if (fp8) w.scale = Tensor::empty(DType::f32, {experts, (out + 127) / 128, (in + 127) / 128});
  for (int64_t e = 0; e < experts; ++e) {
    const std::string& name = names[static_cast<size_t>(e)];
    Tensor t = tensor(name, {out, in}, WeightRole::linear);
    if (t.dtype() != first.dtype())
      throw Error(ckpt_.directory() + ": tensor '" + name + "' is " + t.describe() +
                  " but expert 0 is " + std::string(dtype_name(first.dtype())));
    std::memcpy(static_cast<char*>(w.weight.data()) + e * first.nbytes(), t.data(), t.nbytes());
    release_pages(t);
    if (fp8) {
      Tensor s = fetch_scale(name, out, in);
      std::memcpy(static_cast<char*>(w.scale.data()) + e * s.nbytes(), s.data(), s.nbytes());
    }
  }
  return w;
}

}  // namespace moert
