// Tensors whose storage is a buffer on a backend's device.
#pragma once

#include <memory>

#include "moert/backend_registry.h"
#include "moert/tensor.h"

namespace moert {

// Storage in one buffer of a device; the buffer is freed with the storage.
class DeviceStorage final : public Storage {
 public:
  // Allocates `bytes` on `device`; throws moert::Error with the backend's
  // message (e.g. out of memory, naming the size) on failure.
  DeviceStorage(const DeviceRef& device, size_t bytes);
  ~DeviceStorage() override;
  DeviceStorage(const DeviceStorage&) = delete;
  DeviceStorage& operator=(const DeviceStorage&) = delete;

  void* host_data() const override { return nullptr; }
  size_t bytes() const override { return bytes_; }
  std::string location() const override { return device_.str(); }
  const DeviceRef& device() const { return device_; }
  moert_buffer buffer() const { return buffer_; }

 private:
  DeviceRef device_;
  moert_buffer buffer_ = nullptr;
  size_t bytes_;
};

// A copy of host tensor `t` on `device`.
Tensor to_device(const Tensor& t, const DeviceRef& device);
// A host copy of `t` (which may be on a device or on the host).
Tensor to_host(const Tensor& t);

}  // namespace moert
