#include "moert/memory_planner.h"

#include <algorithm>
#include <numeric>

namespace moert {

MemoryPlan plan_memory(const std::vector<BufferRequest>& requests, uint64_t alignment) {
  auto aligned = [&](uint64_t b) { return (b + alignment - 1) / alignment * alignment; };
  MemoryPlan plan;
  plan.offsets.assign(requests.size(), 0);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return requests[a].bytes > requests[b].bytes; });
  struct Placed {
    uint64_t begin, end;
    size_t request;
  };
  std::vector<Placed> placed;
  for (size_t r : order) {
    const BufferRequest& req = requests[r];
    uint64_t size = aligned(req.bytes);
    plan.naive += size;
    if (size == 0) continue;
    // Byte ranges of placed requests live at the same time, by offset.
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (const Placed& p : placed) {
      const BufferRequest& o = requests[p.request];
      if (o.first <= req.last && req.first <= o.last) busy.emplace_back(p.begin, p.end);
    }
    std::sort(busy.begin(), busy.end());
    uint64_t best = UINT64_MAX, best_gap = UINT64_MAX, cursor = 0;
    for (const auto& [b, e] : busy) {
      if (b >= cursor + size && b - cursor < best_gap) {
        best = cursor;
        best_gap = b - cursor;
      }
      cursor = std::max(cursor, e);
    }
    if (best == UINT64_MAX) best = cursor;  // after everything live
    plan.offsets[r] = best;
    placed.push_back({best, best + size, r});
    plan.peak = std::max(plan.peak, best + size);
  }
  return plan;
}

}  // namespace moert
