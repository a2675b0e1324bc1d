// Thread-local scratch buffers (scratch.h).
#include "scratch.h"

#include <array>
#include <cstdlib>
#include <memory>
#include <new>

namespace moert::cpu::gemm {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

struct Buffer {
  std::unique_ptr<void, FreeDeleter> data;
  size_t bytes = 0;
};

}  // namespace

void* scratch_bytes(Slot slot, size_t bytes) {
  thread_local std::array<Buffer, static_cast<size_t>(Slot::count)> buffers;
  Buffer& b = buffers[static_cast<size_t>(slot)];
  if (bytes > b.bytes || !b.data) {
    // Grow by at least half again, so a slowly rising size (a longer
    // prompt) does not reallocate on every call.
    size_t want = bytes > b.bytes + b.bytes / 2 ? bytes : b.bytes + b.bytes / 2;
    want = (want + 63) / 64 * 64 + 64;  // a vector read at the end stays inside
    b.data.reset();
    b.data.reset(std::aligned_alloc(64, want));
    if (!b.data) {
      b.bytes = 0;
      throw std::bad_alloc();
    }
    b.bytes = want - 64;
  }
  return b.data.get();
}

}  // namespace moert::cpu::gemm
