// What a backend says of its devices to the kit: a description for
// device_info, and the device error slots of backends whose kernels cannot
// throw (GPUs record a failing position in a slot; the executable reads the
// slots after each execute and asks the kernel for the message).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin_support.h"

namespace moert::kit {

// What a backend says of a device; the kit writes it into moert_device_info.
struct DeviceDescription {
  std::string name;
  moert_device_kind kind = MOERT_DEVICE_OTHER;
  uint64_t total_memory = 0, free_memory = 0;
  // "key=value, ..." items; the kit appends "ops=" from the kernel table.
  std::string capabilities;
};

// An error slot that recorded nothing, as ErrorSlots::read reports it.
inline constexpr int64_t kNoError = -1;

// For backends whose kernels report every error on the host: no slots.
template <class Device>
struct NoErrorSlots {
  void allocate(Device&, int count) {
    plugin::require(count == 0, "internal: this backend has no device error slots",
                    MOERT_ERR_INTERNAL);
  }
  template <class Context>
  void attach(Context&) const {}
  std::vector<int64_t> read(Device&) { return {}; }
  void clear(Device&) {}
};

// The devices a plugin found at init(), in moert's device order.
template <class Device>
struct DeviceList {
  static std::vector<std::unique_ptr<Device>>& all() {
    static std::vector<std::unique_ptr<Device>> list;
    return list;
  }
  // Device `index`; throws naming the kind of device ("CUDA") and the count.
  static Device& at(int32_t index, const char* kind) {
    auto& list = all();
    if (index < 0 || static_cast<size_t>(index) >= list.size())
      plugin::fail(std::string("no ") + kind + " device " + std::to_string(index) +
                   " (the plugin has " + std::to_string(list.size()) + ")");
    return *list[static_cast<size_t>(index)];
  }
};

// The device members of a traits struct whose devices are a DeviceList:
//   static constexpr char kCuda[] = "CUDA";
//   struct Backend : kit::ListedDevices<cuda::Device, kCuda> { ... };
template <class Device, const char* Kind>
struct ListedDevices {
  static void shutdown() { DeviceList<Device>::all().clear(); }
  static int32_t device_count() { return static_cast<int32_t>(DeviceList<Device>::all().size()); }
  static Device& device(int32_t index) { return DeviceList<Device>::at(index, Kind); }
};

}  // namespace moert::kit
