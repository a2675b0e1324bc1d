// Tensors: a dtype, a concrete shape and a view into storage.  Storage may be
// owned host memory, borrowed host memory (a memory-mapped file, a NumPy
// array) kept alive by a shared handle, or a buffer on a backend's device.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moert/dtype.h"

namespace moert {

class Storage {
 public:
  virtual ~Storage() = default;
  // Host address of byte 0, or nullptr when the storage is on a device.
  virtual void* host_data() const = 0;
  virtual size_t bytes() const = 0;
  // "host", or the device's name, e.g. "cuda:0".
  virtual std::string location() const = 0;
};

// Host memory for tensors: 64-byte aligned, and blocks of 4 MiB or more in
// transparent huge pages (unless MOERT_HUGEPAGES=0).  nullptr when out of
// memory; release with std::free.
void* allocate_host_bytes(size_t bytes);
// Owned host memory from allocate_host_bytes.
std::shared_ptr<Storage> allocate_host_storage(size_t bytes);
// Host memory owned by someone else; `keepalive` is held as long as the
// storage lives (pass nullptr when the caller guarantees the lifetime).
std::shared_ptr<Storage> borrow_host_storage(void* data, size_t bytes,
                                             std::shared_ptr<const void> keepalive);

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::vector<int64_t> shape, std::shared_ptr<Storage> storage,
         size_t byte_offset = 0);

  // A new host tensor.  Its bytes are uninitialised.
  static Tensor empty(DType dtype, std::vector<int64_t> shape);
  static Tensor zeros(DType dtype, std::vector<int64_t> shape);
  // A host tensor over memory the caller keeps alive through `keepalive`.
  static Tensor borrow(DType dtype, std::vector<int64_t> shape, void* data,
                       std::shared_ptr<const void> keepalive = nullptr);
  // A host tensor holding `values` converted to dtype.
  static Tensor from_doubles(DType dtype, std::vector<int64_t> shape,
                             const std::vector<double>& values);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int64_t i) const;  // negative counts from the end
  size_t rank() const { return shape_.size(); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool on_host() const { return storage_ && storage_->host_data() != nullptr; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t byte_offset() const { return offset_; }

  // Host pointer to the first element; throws if the tensor is on a device.
  void* data() const;
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data());
  }

  // Rows [begin, begin+count) of dimension 0, sharing storage.
  Tensor slice0(int64_t begin, int64_t count) const;
  // Same storage, another shape with the same element count.
  Tensor reshape(std::vector<int64_t> shape) const;

  double at(size_t flat_index) const { return load_element(dtype_, data(), flat_index); }
  std::vector<double> to_doubles() const;
  std::string describe() const;  // "bf16[4, 64] on host"

 private:
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
};

}  // namespace moert
