#include "moert/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "moert/error.h"
#include "moert/tensor.h"

namespace moert {
namespace {

// Sums 64-bit words with independent accumulators so the loop is bound by
// loads, not by the add latency; the compiler vectorises it.
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

}  // namespace

BandwidthMeasurement measure_read_bandwidth(uint64_t bytes, int threads, int repeat) {
  check(bytes >= (uint64_t{1} << 20), "measure_read_bandwidth: buffer must be at least 1 MiB");
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t words = static_cast<size_t>(bytes / 8);
  // Allocated as the weights are (allocate_host_bytes: huge pages for large
  // blocks), so the figure is the roofline of the tensors a decode step reads.
  std::unique_ptr<uint64_t[], decltype(&std::free)> buffer(
      static_cast<uint64_t*>(allocate_host_bytes(words * 8)), &std::free);
  check(buffer != nullptr, "measure_read_bandwidth: out of memory for the buffer");
  // Touch every page with distinct values so none is a shared zero page.
  for (size_t i = 0; i < words; ++i) buffer[i] = i;
  std::vector<uint64_t> sums(static_cast<size_t>(threads));
  double best = 0;
  for (int r = 0; r < std::max(1, repeat); ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const size_t begin = words * static_cast<size_t>(t) / static_cast<size_t>(threads);
        const size_t end = words * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
        sums[static_cast<size_t>(t)] += sum_words(buffer.get() + begin, end - begin);
      });
    for (std::thread& th : pool) th.join();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(words * 8) / s);
  }
  // Keep the sums observable so the reads are not optimised away.
  volatile uint64_t sink = 0;
  for (uint64_t s : sums) sink = sink + s;
  (void)sink;
  return {best, static_cast<uint64_t>(words * 8), threads};
}

}  // namespace moert
