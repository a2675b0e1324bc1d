// The buffers of every in-tree plugin: a device's handle to `bytes` bytes
// (a host pointer, a device pointer or a cl_mem), with the ABI's buffer
// calls written once over the backend's five memory hooks:
//   void* B::allocate(Device&, uint64_t bytes)   throws MOERT_ERR_OUT_OF_MEMORY naming the size
//   void  B::release(Device&, void* handle)
//   void  B::write(Device&, void* handle, uint64_t offset, const void* src, uint64_t bytes)
//   void  B::read(Device&, const void* handle, uint64_t offset, void* dst, uint64_t bytes)
//   void  B::copy(Device&, const void* src, uint64_t src_offset, void* dst,
//                 uint64_t dst_offset, uint64_t bytes)      regions never overlap
// Ranges are checked here, and a copy within one buffer whose regions
// overlap goes through a temporary (memmove semantics) unless the backend
// sets B::kCopyMayOverlap.
#pragma once

#include <cstdint>
#include <string>

#include "plugin_support.h"

struct moert_buffer_impl {
  void* handle = nullptr;
  uint64_t bytes = 0;
  int32_t device = 0;
};

namespace moert::kit {

inline void check_range(const moert_buffer_impl* b, uint64_t offset, uint64_t bytes) {
  plugin::require(b != nullptr, "null buffer");
  plugin::require(offset <= b->bytes && bytes <= b->bytes - offset,
                  "range [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
                      ") outside a buffer of " + std::to_string(b->bytes) + " bytes");
}

template <class B>
struct Buffers {
  static moert_status alloc(int32_t device, uint64_t bytes, moert_buffer* out, moert_error* err) {
    return plugin::guarded(err, [&] {
      *out = nullptr;
      auto& d = B::device(device);
      auto* b = new moert_buffer_impl;
      try {
        b->handle = B::allocate(d, bytes);
      } catch (...) {
        delete b;
        throw;
      }
      b->bytes = bytes;
      b->device = device;
      *out = b;
    });
  }

  static void free(moert_buffer b) {
    if (!b) return;
    if (b->handle && b->device >= 0 && b->device < B::device_count())
      B::release(B::device(b->device), b->handle);
    delete b;
  }

  static moert_status write(moert_buffer dst, uint64_t offset, const void* src, uint64_t bytes,
                            moert_error* err) {
    return plugin::guarded(err, [&] {
      check_range(dst, offset, bytes);
      if (bytes) B::write(B::device(dst->device), dst->handle, offset, src, bytes);
    });
  }

  static moert_status read(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                           moert_error* err) {
    return plugin::guarded(err, [&] {
      check_range(src, offset, bytes);
      if (bytes) B::read(B::device(src->device), src->handle, offset, dst, bytes);
    });
  }

  static moert_status copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                           uint64_t dst_offset, uint64_t bytes, moert_error* err) {
    return plugin::guarded(err, [&] {
      check_range(src, src_offset, bytes);
      check_range(dst, dst_offset, bytes);
      if (bytes == 0) return;
      plugin::require(src->device == dst->device,
                      std::string("buffer_copy between two ") + B::kName + " devices");
      auto& d = B::device(dst->device);
      const bool overlap =
          src == dst && src_offset < dst_offset + bytes && dst_offset < src_offset + bytes;
      if (!overlap || B::kCopyMayOverlap) {
        B::copy(d, src->handle, src_offset, dst->handle, dst_offset, bytes);
        return;
      }
      // Overlapping regions: through a temporary, so the copy is a memmove.
      void* tmp = B::allocate(d, bytes);
      try {
        B::copy(d, src->handle, src_offset, tmp, 0, bytes);
        B::copy(d, tmp, 0, dst->handle, dst_offset, bytes);
      } catch (...) {
        B::release(d, tmp);
        throw;
      }
      B::release(d, tmp);
    });
  }
};

}  // namespace moert::kit

// Declares, in a traits struct, the device hooks of the kit (the five memory
// hooks above, finish(), make_constant()), for a backend to define in its
// glue file.  Host backends inherit them from kit::HostMemory instead.
#define MOERT_KIT_DEVICE_HOOKS(Device, Constant)                                             \
  static void* allocate(Device& d, uint64_t bytes);                                          \
  static void release(Device& d, void* handle);                                              \
  static void write(Device& d, void* dst, uint64_t offset, const void* src, uint64_t bytes); \
  static void read(Device& d, const void* src, uint64_t offset, void* dst, uint64_t bytes);  \
  static void copy(Device& d, const void* src, uint64_t src_offset, void* dst,               \
                   uint64_t dst_offset, uint64_t bytes);                                     \
  static void finish(Device& d);                                                             \
  static Constant make_constant(Device& d, const moert_tensor_desc& t, bool persist)
