// The host's memory read bandwidth, measured: the ceiling a memory-bound
// decode step on the CPU can reach (bytes of weights per token / bandwidth is
// its roofline).
#pragma once

#include <cstdint>

namespace moert {

struct BandwidthMeasurement {
  double bytes_per_second = 0;  // best of the repetitions
  uint64_t buffer_bytes = 0;
  int threads = 0;
};

// Streams through a buffer of `bytes` (much larger than the caches) with
// `threads` threads (0: the hardware concurrency), summing it so the reads
// cannot be elided, and reports the best of `repeat` passes.
BandwidthMeasurement measure_read_bandwidth(uint64_t bytes = uint64_t{512} << 20, int threads = 0,
                                            int repeat = 5);

}  // namespace moert
