#include "moert/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "moert/error.h"
#include "moert/shape.h"

namespace moert {

void* allocate_host_bytes(size_t bytes) {
  // Large blocks (weights: stacked experts, random weights, the KV cache) in
  // 2 MiB transparent huge pages where the kernel allows them on request
  // (THP "madvise" mode): fewer TLB misses while a decode step streams the
  // weights (streaming reads: 28.9 -> 32.5 GB/s on the 2-core machine of
  // ../shared/reference/machine.md).  MOERT_HUGEPAGES=0 turns it off.
  constexpr size_t kHuge = size_t{2} << 20;
  static const bool huge = [] {
    const char* v = std::getenv("MOERT_HUGEPAGES");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  if (huge && bytes >= 2 * kHuge) {
    void* p = std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
    if (p) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
    return p;
  }
  // Round up: aligned_alloc wants a multiple of the alignment.
  const size_t padded = ((bytes + 63) / 64) * 64;
  return std::aligned_alloc(64, padded == 0 ? 64 : padded);
}

namespace {

class OwnedHostStorage final : public Storage {
 public:
  explicit OwnedHostStorage(size_t bytes) : bytes_(bytes) {
    data_ = allocate_host_bytes(bytes);
    if (!data_) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  }
  ~OwnedHostStorage() override { std::free(data_); }
  void* host_data() const override { return data_; }
  size_t bytes() const override { return bytes_; }
  std::string location() const override { return "host"; }

 private:
  void* data_;
  size_t bytes_;
};

class BorrowedHostStorage final : public Storage {
 public:
  BorrowedHostStorage(void* data, size_t bytes, std::shared_ptr<const void> keepalive)
      : data_(data), bytes_(bytes), keepalive_(std::move(keepalive)) {}
  void* host_data() const override { return data_; }
  size_t bytes() const override { return bytes_; }
  std::string location() const override { return "host"; }

 private:
  void* data_;
  size_t bytes_;
  std::shared_ptr<const void> keepalive_;
};

}  // namespace

std::shared_ptr<Storage> allocate_host_storage(size_t bytes) {
  return std::make_shared<OwnedHostStorage>(bytes);
}

std::shared_ptr<Storage> borrow_host_storage(void* data, size_t bytes,
                                             std::shared_ptr<const void> keepalive) {
  return std::make_shared<BorrowedHostStorage>(data, bytes, std::move(keepalive));
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape, std::shared_ptr<Storage> storage,
               size_t byte_offset)
    : dtype_(dtype), shape_(std::move(shape)), storage_(std::move(storage)), offset_(byte_offset) {
  for (int64_t d : shape_) check(d >= 0, "negative dimension in tensor shape " + dims_str(shape_));
  check(storage_ != nullptr, "tensor without storage");
  check(offset_ + nbytes() <= storage_->bytes(), "tensor " + describe() +
                                                     " does not fit its storage of " +
                                                     std::to_string(storage_->bytes()) + " bytes");
}

Tensor Tensor::empty(DType dtype, std::vector<int64_t> shape) {
  size_t bytes = static_cast<size_t>(num_elements(shape)) * dtype_size(dtype);
  return Tensor(dtype, std::move(shape), allocate_host_storage(bytes));
}

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t = empty(dtype, std::move(shape));
  std::memset(t.data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::borrow(DType dtype, std::vector<int64_t> shape, void* data,
                      std::shared_ptr<const void> keepalive) {
  size_t bytes = static_cast<size_t>(num_elements(shape)) * dtype_size(dtype);
  return Tensor(dtype, std::move(shape), borrow_host_storage(data, bytes, std::move(keepalive)));
}

Tensor Tensor::from_doubles(DType dtype, std::vector<int64_t> shape,
                            const std::vector<double>& values) {
  Tensor t = empty(dtype, std::move(shape));
  check(static_cast<int64_t>(values.size()) == t.numel(),
        "from_doubles: " + std::to_string(values.size()) + " values for shape " +
            dims_str(t.shape()));
  for (size_t i = 0; i < values.size(); ++i) store_element(dtype, t.data(), i, values[i]);
  return t;
}

int64_t Tensor::dim(int64_t i) const {
  int64_t r = static_cast<int64_t>(shape_.size());
  int64_t j = i < 0 ? i + r : i;
  check(j >= 0 && j < r, "dimension " + std::to_string(i) + " out of range for " + describe());
  return shape_[static_cast<size_t>(j)];
}

int64_t Tensor::numel() const { return num_elements(shape_); }

void* Tensor::data() const {
  check(storage_ != nullptr, "undefined tensor has no data");
  void* base = storage_->host_data();
  check(base != nullptr, "tensor " + describe() + " is not in host memory");
  return static_cast<char*>(base) + offset_;
}

Tensor Tensor::slice0(int64_t begin, int64_t count) const {
  check(rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape_[0],
        "slice [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
            ") out of range for " + describe());
  std::vector<int64_t> s = shape_;
  s[0] = count;
  size_t row_bytes = s.size() > 1 ? static_cast<size_t>(num_elements({s.begin() + 1, s.end()})) *
                                        dtype_size(dtype_)
                                  : dtype_size(dtype_);
  return Tensor(dtype_, std::move(s), storage_, offset_ + static_cast<size_t>(begin) * row_bytes);
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  check(num_elements(shape) == numel(), "cannot reshape " + describe() + " to " + dims_str(shape));
  return Tensor(dtype_, std::move(shape), storage_, offset_);
}

std::vector<double> Tensor::to_doubles() const {
  std::vector<double> out(static_cast<size_t>(numel()));
  const void* p = data();
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_element(dtype_, p, i);
  return out;
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype_)) + dims_str(shape_) + " on " +
         (storage_ ? storage_->location() : std::string("nothing"));
}

}  // namespace moert
