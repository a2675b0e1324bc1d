// Threading for the CPU kernels.  oneDNN (as Debian builds it) runs on
// OpenMP, so the kernels use the same OpenMP pool: one set of threads for
// both, never more threads than the pool has (no oversubscription).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace moert::cpu {

inline int num_threads() { return omp_get_max_threads(); }

// Calls fn(begin, end) on disjoint chunks covering [0, n), in parallel when
// there is more than `grain` work items per thread to share.  fn must not
// throw (exceptions cannot leave an OpenMP region): check inputs first.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  const int64_t threads =
      std::min<int64_t>(num_threads(), std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(static_cast <int>(threads))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) fn(begin, end);
  }
}

}  // namespace moert::cpu
