// Scratch memory for a node's run, for backends whose nodes run one after
// another on one in-order queue (the OpenCL backend; CUDA has its caching
// pool with the same interface, ExecContext::scratch(bytes, what)).
//
// Blocks are taken as a stack: a run takes block 0, 1, ... and gives each
// back when its Block goes (in reverse order, as scoped variables do).  Block
// k is the same buffer for every node, grown geometrically when a node needs
// more, so steady-state execution allocates nothing and the memory held is
// the largest need at each depth, not the sum over nodes.  Work a node
// enqueued still sees its blocks after they go back: the next user of a
// buffer runs after it on the queue, and a buffer replaced by a larger one is
// released only when the queue is done with it (the backend's release()).
// One stack per device, used by one thread at a time (the ABI's rule: the
// runtime never calls into a plugin from two threads at once).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace moert::kit {

template <class Handle>
class ScratchStack {
 public:
  using Allocate = std::function<Handle(uint64_t bytes, const std::string& what)>;
  using Release = std::function<void(Handle)>;

  // `max_bytes`: the largest allocation the device makes (0: no limit);
  // growth stops there.
  ScratchStack(Allocate allocate, Release release, uint64_t max_bytes = 0)
      : allocate_(std::move(allocate)), release_(std::move(release)), max_bytes_(max_bytes) {}
  ~ScratchStack() {
    for (Entry& e : entries_)
      if (e.handle) release_(e.handle);
  }
  ScratchStack(const ScratchStack&) = delete;
  ScratchStack& operator=(const ScratchStack&) = delete;

  // A block of at least `bytes` (`what` names it in an out-of-memory message).
  class Block {
   public:
    Block() = default;
    Block(Block&& o) noexcept : stack_(std::exchange(o.stack_, nullptr)), index_(o.index_) {}
    Block& operator=(Block&& o) noexcept {
      if (this != &o) {
        reset();
        stack_ = std::exchange(o.stack_, nullptr);
        index_ = o.index_;
      }
      return *this;
    }
    ~Block() { reset(); }
    Handle get() const { return stack_ ? stack_->entries_[index_].handle : Handle{}; }

   private:
    friend class ScratchStack;
    Block(ScratchStack* s, size_t i) : stack_(s), index_(i) {}
    void reset() {
      if (stack_) stack_->give_back(index_);
      stack_ = nullptr;
    }
    ScratchStack* stack_ = nullptr;
    size_t index_ = 0;
  };

  Block take(uint64_t bytes, const std::string& what) {
    const size_t i = depth_;
    if (i == entries_.size()) entries_.emplace_back();
    Entry& e = entries_[i];
    if (!e.handle || e.bytes < bytes) {
      // Geometric growth, so that growing token counts do not reallocate each step.
      uint64_t size = bytes;
      if (size < e.bytes + e.bytes / 2) size = e.bytes + e.bytes / 2;
      if (size < 4096) size = 4096;
      if (max_bytes_ && size > max_bytes_) size = bytes > max_bytes_ ? bytes : max_bytes_;
      // The old buffer first, so the two are never held together.
      if (e.handle) release_(e.handle);
      e.handle = Handle{};
      e.bytes = 0;
      e.handle = allocate_(size, what);
      e.bytes = size;
    }
    e.taken = true;
    ++depth_;
    return Block(this, i);
  }

 private:
  struct Entry {
    Handle handle{};
    uint64_t bytes = 0;
    bool taken = false;
  };
  void give_back(size_t i) {
    entries_[i].taken = false;
    while (depth_ > 0 && !entries_[depth_ - 1].taken) --depth_;
  }

  Allocate allocate_;
  Release release_;
  uint64_t max_bytes_;
  std::vector<Entry> entries_;
  size_t depth_ = 0;
};

}  // namespace moert::kit
