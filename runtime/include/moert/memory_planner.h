// Liveness-based placement of buffers in one arena.
//
// Each request lives from step `first` to step `last` inclusive.  Requests
// whose lifetimes overlap get disjoint byte ranges; others may share memory.
#pragma once

#include <cstdint>
#include <vector>

namespace moert {

struct BufferRequest {
  int64_t first = 0;
  int64_t last = 0;
  uint64_t bytes = 0;
};

struct MemoryPlan {
  std::vector<uint64_t> offsets;  // one per request, aligned
  uint64_t peak = 0;              // arena size needed
  uint64_t naive = 0;             // sum of the aligned sizes (no reuse)
};

// Greedy best fit, largest requests first: a request goes to the lowest
// offset not overlapping any already placed request it is live with.
MemoryPlan plan_memory(const std::vector<BufferRequest>& requests, uint64_t alignment = 64);

}  // namespace moert
