// A caching allocator for device memory.  cudaMalloc and cudaFree are slow
// and synchronise the device, so blocks released by buffers, constants and
// per-node scratch go back to a free list by size class and are handed out
// again.  Every user of a device's memory runs on that device's one stream,
// so a block released after enqueueing work that uses it may be reused by
// later work on the stream without waiting.
//
// The pool knows nothing of CUDA: it gets the raw allocate/free functions,
// so its bookkeeping is unit-tested on the host (header-only for that).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <unordered_map>
#include <utility>
#include <vector>

namespace moert::cuda {

class MemoryPool {
 public:
  // raw_alloc returns nullptr when the memory is not there.
  using RawAlloc = std::function<void*(size_t bytes)>;
  using RawFree = std::function<void(void* p)>;

  MemoryPool(RawAlloc raw_alloc, RawFree raw_free);
  ~MemoryPool();  // returns every cached block; blocks still in use are leaked
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;

  // A block of at least `bytes` (a zero-byte request gets a small block), or
  // nullptr when even after returning every cached block nothing fits.
  void* allocate(size_t bytes);
  // Gives a block from allocate() back; nullptr is ignored.
  void release(void* p);
  // Returns every cached (free) block to the raw allocator.
  void trim();

  size_t in_use_bytes() const { return in_use_bytes_; }
  size_t cached_bytes() const { return cached_bytes_; }
  size_t raw_allocations() const { return raw_allocations_; }

  // The size class a request is served from: powers of two from 512 bytes up
  // to 1 MiB, then multiples of 2 MiB (so large blocks waste at most 2 MiB).
  static size_t size_class(size_t bytes);

 private:
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  std::map<size_t, std::vector<void*>> free_;  // by size class
  std::unordered_map<void*, size_t> in_use_;   // block -> size class
  size_t in_use_bytes_ = 0, cached_bytes_ = 0, raw_allocations_ = 0;
};

inline MemoryPool::MemoryPool(RawAlloc raw_alloc, RawFree raw_free)
    : raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)) {}

inline MemoryPool::~MemoryPool() { trim(); }

inline size_t MemoryPool::size_class(size_t bytes) {
  constexpr size_t kSmallest = 512, kLargeStep = size_t{2} << 20;
  if (bytes <= kSmallest) return kSmallest;
  if (bytes <= (size_t{1} << 20)) {
    size_t c = kSmallest;
    while (c < bytes) c <<= 1;
    return c;
  }
  return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
}

inline void* MemoryPool::allocate(size_t bytes) {
  const size_t c = size_class(bytes);
  void* p = nullptr;
  auto it = free_.find(c);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    cached_bytes_ -= c;
  } else {
    p = raw_alloc_(c);
    if (!p && cached_bytes_ > 0) {
      // The cache may hold the memory in blocks of other sizes.
      trim();
      p = raw_alloc_(c);
    }
    if (!p) return nullptr;
    ++raw_allocations_;
  }
  in_use_[p] = c;
  in_use_bytes_ += c;
  return p;
}

inline void MemoryPool::release(void* p) {
  if (!p) return;
  auto it = in_use_.find(p);
  if (it == in_use_.end()) return;  // not ours: ignore rather than corrupt the lists
  const size_t c = it->second;
  in_use_.erase(it);
  in_use_bytes_ -= c;
  free_[c].push_back(p);
  cached_bytes_ += c;
}

inline void MemoryPool::trim() {
  for (auto& [c, blocks] : free_)
    for (void* p : blocks) raw_free_(p);
  free_.clear();
  cached_bytes_ = 0;
}

}  // namespace moert::cuda
