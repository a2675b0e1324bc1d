// The cache of GEMM plans: cuBLASLt's heuristic is asked once per problem
// shape (and operand types and layout), and its answer kept for every later
// call of that shape.  Plain C++ over any plan type, so the keying is
// unit-tested without a device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>

namespace moert::cuda {

// One GEMM problem as the plan depends on it, in cuBLASLt's column-major
// terms: D[m, n] = op(A)[m, k] op(B)[k, n], batched with the given strides.
struct GemmKey {
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  int64_t lda = 0, ldb = 0, ldd = 0;
  int64_t stride_a = 0, stride_b = 0, stride_d = 0;
  bool transpose_a = false, transpose_b = false;
  int32_t a_type = 0, b_type = 0, d_type = 0, compute = 0;  // library enum values

  bool operator==(const GemmKey& o) const {
    return m == o.m && n == o.n && k == o.k && batch == o.batch && lda == o.lda && ldb == o.ldb &&
           ldd == o.ldd && stride_a == o.stride_a && stride_b == o.stride_b &&
           stride_d == o.stride_d && transpose_a == o.transpose_a && transpose_b == o.transpose_b &&
           a_type == o.a_type && b_type == o.b_type && d_type == o.d_type && compute == o.compute;
  }
  std::string str() const;  // "m=.. n=.. k=.. ..." for messages
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const {
    // FNV-1a over the members, one at a time (the struct has padding).
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](int64_t v) {
      for (int i = 0; i < 8; ++i) {
        h ^= static_cast<uint64_t>(v >> (8 * i)) & 0xffu;
        h *= 1099511628211ull;
      }
    };
    for (int64_t v :
         {k.m, k.n, k.k, k.batch, k.lda, k.ldb, k.ldd, k.stride_a, k.stride_b, k.stride_d,
          static_cast<int64_t>(k.transpose_a), static_cast<int64_t>(k.transpose_b),
          static_cast<int64_t>(k.a_type), static_cast<int64_t>(k.b_type),
          static_cast<int64_t>(k.d_type), static_cast<int64_t>(k.compute)})
      mix(v);
    return static_cast<size_t>(h);
  }
};

inline std::string GemmKey::str() const {
  return "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
         " batch=" + std::to_string(batch) + (transpose_a ? " A^T" : "") +
         (transpose_b ? " B^T" : "") + " types " + std::to_string(a_type) + "/" +
         std::to_string(b_type) + "->" + std::to_string(d_type);
}

// Plans by key; make() runs on a miss only.  Counts hits and misses so a
// test (and a curious user) can see that a shape is planned once.
template <typename Plan>
class PlanCache {
 public:
  template <typename Make>
  const Plan& get(const GemmKey& key, Make&& make) {
    auto it = plans_.find(key);
    if (it != plans_.end()) {
      ++hits_;
      return it->second;
    }
    ++misses_;
    return plans_.emplace(key, make()).first->second;
  }
  size_t size() const { return plans_.size(); }
  size_t hits() const { return hits_; }
  size_t misses() const { return misses_; }
  void clear() { plans_.clear(); }

 private:
  std::unordered_map<GemmKey, Plan, GemmKeyHash> plans_;
  size_t hits_ = 0, misses_ = 0;
};

}  // namespace moert::cuda
