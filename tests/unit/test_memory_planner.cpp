#include <gtest/gtest.h>

#include <random>

#include "moert/memory_planner.h"

using moert::BufferRequest;
using moert::plan_memory;

namespace {

// No two requests that are live at the same time may share a byte.
void expect_no_conflicts(const std::vector<BufferRequest>& req, const moert::MemoryPlan& plan) {
  ASSERT_EQ(plan.offsets.size(), req.size());
  for (size_t a = 0; a < req.size(); ++a) {
    EXPECT_EQ(plan.offsets[a] % 64, 0u) << "request " << a << " is not aligned";
    EXPECT_LE(plan.offsets[a] + req[a].bytes, plan.peak) << "request " << a << " past the peak";
    for (size_t b = a + 1; b < req.size(); ++b) {
      bool live_together = req[a].first <= req[b].last && req[b].first <= req[a].last;
      if (!live_together || req[a].bytes == 0 || req[b].bytes == 0) continue;
      bool disjoint = plan.offsets[a] + req[a].bytes <= plan.offsets[b] ||
                      plan.offsets[b] + req[b].bytes <= plan.offsets[a];
      EXPECT_TRUE(disjoint) << "requests " << a << " and " << b << " overlap in memory";
    }
  }
}

}  // namespace

TEST(MemoryPlanner, ChainReusesMemory) {
  // A chain x0 -> x1 -> ... : each value is live from its producer to its
  // single consumer, so two buffers suffice.
  std::vector<BufferRequest> req;
  for (int i = 0; i < 10; ++i) req.push_back({i, i + 1, 1000});
  moert::MemoryPlan plan = plan_memory(req);
  expect_no_conflicts(req, plan);
  EXPECT_EQ(plan.naive, 10u * 1024u);
  EXPECT_EQ(plan.peak, 2u * 1024u);
}

TEST(MemoryPlanner, AllLiveTogetherNeedsTheSum) {
  std::vector<BufferRequest> req = {{0, 5, 100}, {1, 5, 200}, {2, 5, 300}};
  moert::MemoryPlan plan = plan_memory(req);
  expect_no_conflicts(req, plan);
  EXPECT_EQ(plan.peak, plan.naive);
}

TEST(MemoryPlanner, RandomLifetimesNeverOverlapAndBeatNaive) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<BufferRequest> req;
    std::uniform_int_distribution<int> start(0, 100), len(0, 10), size(1, 5000);
    for (int i = 0; i < 60; ++i) {
      int s = start(rng);
      req.push_back({s, s + len(rng), static_cast<uint64_t>(size(rng))});
    }
    moert::MemoryPlan plan = plan_memory(req);
    expect_no_conflicts(req, plan);
    EXPECT_LT(plan.peak, plan.naive) << "trial " << trial;
  }
}

TEST(MemoryPlanner, ZeroSizedRequests) {
  std::vector<BufferRequest> req = {{0, 1, 0}, {0, 1, 64}};
  moert::MemoryPlan plan = plan_memory(req);
  EXPECT_EQ(plan.peak, 64u);
}
