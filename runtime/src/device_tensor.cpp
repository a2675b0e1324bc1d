#include "moert/device_tensor.h"

#include <algorithm>
#include <cstring>

#include "moert/error.h"

namespace moert {

namespace {
moert_error new_error() {
  moert_error e{};
  e.struct_size = sizeof(e);
  return e;
}
}  // namespace

DeviceStorage::DeviceStorage(const DeviceRef& device, size_t bytes)
    : device_(device), bytes_(bytes) {
  check(device.backend != nullptr, "DeviceStorage: no device");
  moert_error err = new_error();
  check_status(device.backend->call()->buffer_alloc(device.device, std::max<size_t>(bytes, 1),
                                                    &buffer_, &err),
               err, "allocating " + std::to_string(bytes) + " bytes on " + device.str());
}

DeviceStorage::~DeviceStorage() {
  if (buffer_) device_.backend->call()->buffer_free(buffer_);
}

Tensor to_device(const Tensor& t, const DeviceRef& device) {
  auto storage = std::make_shared<DeviceStorage>(device, t.nbytes());
  moert_error err = new_error();
  check_status(
      device.backend->call()->buffer_write(storage->buffer(), 0, t.data(), t.nbytes(), &err), err,
      "copying " + t.describe() + " to " + device.str());
  return Tensor(t.dtype(), t.shape(), storage);
}

Tensor to_host(const Tensor& t) {
  if (t.on_host()) {
    Tensor out = Tensor::empty(t.dtype(), t.shape());
    std::memcpy(out.data(), t.data(), t.nbytes());
    return out;
  }
  auto* storage = dynamic_cast<DeviceStorage*>(t.storage().get());
  check(storage != nullptr,
        "to_host: " + t.describe() + " is neither on the host nor on a moert device");
  Tensor out = Tensor::empty(t.dtype(), t.shape());
  const Backend& backend = *storage->device().backend;
  moert_error err = new_error();
  const std::string what = "copying " + t.describe() + " to the host";
  check_status(backend.call()->synchronize(storage->device().device, &err), err, what);
  check_status(
      backend.call()->buffer_read(storage->buffer(), t.byte_offset(), out.data(), t.nbytes(), &err),
      err, what);
  return out;
}

}  // namespace moert
