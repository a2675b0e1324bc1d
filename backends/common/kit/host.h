// Host memory for backends that compute on the CPU (the cpu plugin and the
// built-in reference backend): buffers, constants used in place when the
// runtime keeps them alive, and tensors bound to plain pointers.  A traits
// struct inherits HostMemory<Device> to get every memory member the kit asks
// for.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kit/buffers.h"
#include "kit/device.h"
#include "kit/kernel.h"
#include "kit/scratch.h"

namespace moert::kit {

// A tensor bound to host memory: dense, row-major.
struct HostTensor : TensorShape {
  void* data = nullptr;  // nullptr: an absent optional input

  bool present() const { return data != nullptr; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// A scratch block's memory as floats.
inline float* floats(const ScratchStack<void*>::Block& b) { return static_cast<float*>(b.get()); }

// A constant: the runtime's bytes in place, or a copy when they do not
// outlive prepare.
struct HostConstant {
  const void* data = nullptr;
  std::vector<unsigned char> copy;
};

// The host's physical and available memory, in bytes (0 when unknown).
inline void host_memory(uint64_t* total, uint64_t* available) {
  const long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES),
             page = sysconf(_SC_PAGESIZE);
  *total = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
  *available =
      avail > 0 && page > 0 ? static_cast<uint64_t>(avail) * static_cast<uint64_t>(page) : 0;
}

template <class D>
struct HostMemory {
  using Device = D;
  // One device, the host ("cpu:0", "reference:0"), and nothing of the
  // backend's own in the kernel contexts.
  static int32_t device_count() { return 1; }
  static D& device(int32_t index) {
    static D host;
    plugin::require(index == 0, "no host device " + std::to_string(index) + " (there is one: 0)");
    return host;
  }
  static void shutdown() {}
  struct ExecBase {
    explicit ExecBase(D&) {}
    // Scratch host memory for this node's run (kit/scratch.h), 64-byte
    // aligned: the node's until the block goes.  Take it outside parallel
    // regions; threads share it by offsets.
    ScratchStack<void*>::Block scratch(uint64_t bytes, const std::string& what) const {
      return host_scratch().take(bytes, what);
    }
  };
  // The blocks' buffers, shared by every node the host runs.
  static ScratchStack<void*>& host_scratch() {
    static ScratchStack<void*> stack(
        [](uint64_t bytes, const std::string& what) {
          void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
          if (!p)
            plugin::fail(
                "cannot allocate " + std::to_string(bytes) + " bytes of host memory for " + what,
                MOERT_ERR_OUT_OF_MEMORY);
          return p;
        },
        [](void* p) { std::free(p); });
    return stack;
  }
  struct PrepareBase {
    explicit PrepareBase(D&) {}
  };
  using Tensor = HostTensor;
  using Constant = HostConstant;
  using ErrorSlots = NoErrorSlots<D>;
  static constexpr bool kCopyMayOverlap = true;  // memmove
  struct Plan {};                                // nothing of its own per executable

  static void* allocate(D&, uint64_t bytes) {
    // 64-byte alignment for AVX-512 loads; rounded up so a kernel's last
    // vector never reads past the allocation.
    void* p = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
    if (!p)
      plugin::fail("cannot allocate " + std::to_string(bytes) + " bytes of host memory",
                   MOERT_ERR_OUT_OF_MEMORY);
    return p;
  }
  static void release(D&, void* p) { std::free(p); }
  static void write(D&, void* dst, uint64_t offset, const void* src, uint64_t bytes) {
    std::memcpy(static_cast<char*>(dst) + offset, src, bytes);
  }
  static void read(D&, const void* src, uint64_t offset, void* dst, uint64_t bytes) {
    std::memcpy(dst, static_cast<const char*>(src) + offset, bytes);
  }
  static void copy(D&, const void* src, uint64_t src_offset, void* dst, uint64_t dst_offset,
                   uint64_t bytes) {
    std::memmove(static_cast<char*>(dst) + dst_offset, static_cast<const char*>(src) + src_offset,
                 bytes);
  }
  static void finish(D&) {}

  static Constant make_constant(D&, const moert_tensor_desc& t, bool persist) {
    Constant c;
    if (persist) {
      c.data = t.data;
    } else {
      const auto* bytes = static_cast<const unsigned char*>(t.data);
      c.copy.assign(bytes, bytes + t.data_bytes);
      c.data = c.copy.data();
    }
    return c;
  }
  static void bind_constant(Tensor& t, const Constant& c) {
    t.data = const_cast<void*>(c.data);
    present_if_empty(t);
  }
  static void bind_buffer(Tensor& t, const moert_buffer_impl& b, uint64_t offset) {
    t.data = static_cast<char*>(b.handle) + offset;
    present_if_empty(t);
  }

 private:
  // A zero-element tensor still counts as present.
  static void present_if_empty(Tensor& t) {
    static char empty_tensor;
    if (!t.data && t.numel() == 0) t.data = &empty_tensor;
  }
};

}  // namespace moert::kit
