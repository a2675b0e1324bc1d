// The kernel interface of the in-tree plugins: one per op, found by op name in
// a table the kernel files fill at load time.
//
// A backend describes itself to the kit with a traits struct B (see
// kit/README.md for every member); this header uses:
//   B::Device       its device state
//   B::Tensor       a tensor bound for one execution: kit::TensorShape plus
//                   where the data is (a host pointer, a cl_mem and offset…)
//   B::ExecBase     the backend's part of ExecContext (its queue, launch
//                   helpers, error-slot pointer), constructed from Device&
//   B::PrepareBase  the backend's part of PrepareContext, from Device&
//   B::kName        "cpu", for messages
//
// A kernel file registers a KernelDef: a check (can this node — op version,
// attributes, dtypes, shapes — run here?) and a factory that builds the
// node's Kernel at prepare, when it may read and pre-pack constant inputs.
// At execute, Kernel::run() sees every input and output bound with its shape
// resolved for this call's T and P.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "op_schema.h"
#include "plugin_support.h"

namespace moert::kit {

using plugin::NodeDesc;
using plugin::Symbols;

// The dtype, rank and shape of a bound tensor; a backend's Tensor adds where
// its elements are.
struct TensorShape {
  moert_dtype dtype = MOERT_DTYPE_F32;
  uint32_t rank = 0;
  std::array<int64_t, MOERT_MAX_RANK> shape{};

  int64_t numel() const {
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  // Dim i; negative i counts from the end.
  int64_t dim(int i) const {
    return shape[static_cast<size_t>(i < 0 ? i + static_cast<int>(rank) : i)];
  }
  // The number of rows of a [..., N] tensor.
  int64_t rows() const { return rank == 0 ? 1 : (dim(-1) ? numel() / dim(-1) : 0); }
  uint64_t elem_size() const { return plugin::dtype_size(dtype); }
  uint64_t nbytes() const { return static_cast<uint64_t>(numel()) * elem_size(); }
};

// "[2, 3]" of a bound tensor's shape, for messages.
inline std::string shape_str(const TensorShape& t) {
  std::string s = "[";
  for (uint32_t i = 0; i < t.rank; ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

// Product of dims [begin, end) of a bound tensor.
inline int64_t prod(const TensorShape& t, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= t.shape[i];
  return n;
}

// What Kernel::run() gets: the node's tensors bound for this execution, and
// the backend's own members (ExecBase).
template <class B>
class ExecContext : public B::ExecBase {
 public:
  using Tensor = typename B::Tensor;
  explicit ExecContext(typename B::Device& device) : B::ExecBase(device) {}

  std::vector<Tensor> inputs;  // absent optional inputs: present() is false
  std::vector<Tensor> outputs;
  Symbols symbols;

  bool has(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const Tensor& in(size_t i) const { return inputs[i]; }
  const Tensor& out(size_t i) const { return outputs[i]; }
};

template <class B>
class Kernel {
 public:
  virtual ~Kernel() = default;
  // Computes (or enqueues) the node's outputs.  Throws plugin::Failure on
  // bad input found on the host (an id out of range, a context overflow);
  // the message need not name the node, the executable adds that.
  virtual void run(ExecContext<B>& ctx) = 0;
  // Backends with device error slots: the message for slot `slot` (0-based
  // within this kernel's slots) having recorded `position`; `ctx` is bound
  // as in the failing run and the device is idle.
  virtual std::string describe_error(ExecContext<B>& ctx, int slot, int64_t position) {
    (void)ctx;
    return "device kernel error " + std::to_string(slot) + " at position " +
           std::to_string(position);
  }
  // Backends that record work once and replay it (CUDA graphs): whether
  // run() enqueues different work for another past-token count P, beyond
  // what the shapes of its tensors say.  `device_past`: the backend passes P
  // on the device, and a kernel that reads it from there answers false.
  virtual bool launches_depend_on_past(bool device_past) const {
    (void)device_past;
    return false;
  }
  // The host-side checks of run() that depend on P (a context overflow),
  // made before recorded work is replayed without calling run().
  virtual void check_past(int64_t past) const { (void)past; }
};

// What a kernel factory gets at prepare.
template <class B>
class PrepareContext : public B::PrepareBase {
 public:
  using Device = typename B::Device;
  PrepareContext(Device& device, const NodeDesc& node, int error_base)
      : B::PrepareBase(device), device_(device), node_(node), error_base_(error_base) {}
  Device& device() const { return device_; }
  const NodeDesc& node() const { return node_; }
  // Reserves `count` device error slots for this node; returns the first
  // one's index in the executable's slots (pass it to the device kernel).
  int reserve_error_slots(int count) {
    const int first = error_base_ + error_slots_;
    error_slots_ += count;
    return first;
  }
  int error_slots() const { return error_slots_; }

 private:
  Device& device_;
  const NodeDesc& node_;
  int error_base_;
  int error_slots_ = 0;
};

// One op's kernel.  check and create come in two forms each: a check that
// needs no device (it looks at the description only) or one that asks the
// device; a factory from the node alone or from the full PrepareContext.
template <class B>
struct KernelDef {
  using Device = typename B::Device;
  using CheckFn = std::string (*)(const NodeDesc&);
  using CheckOnFn = std::string (*)(const NodeDesc&, const Device&);
  using CreateFn = std::unique_ptr<Kernel<B>> (*)(PrepareContext<B>&);
  using CreateFromNodeFn = std::unique_ptr<Kernel<B>> (*)(const NodeDesc&);

  KernelDef(const char* name, CheckFn c, CreateFn f) : op(name), check_(c), create_(f) {}
  KernelDef(const char* name, CheckOnFn c, CreateFn f) : op(name), check_on_(c), create_(f) {}
  KernelDef(const char* name, CheckFn c, CreateFromNodeFn f)
      : op(name), check_(c), create_node_(f) {}

  const char* op;
  // The version of the op's semantics this kernel implements (docs/ops.md).
  // A kernel says so when it implements a newer one; the conformance suite,
  // whose nodes carry the schema's current version, fails until it does.
  uint32_t version = 1;
  // This definition at version v:  KernelRegistration reg(KernelDef(...).at_version(2));
  KernelDef at_version(uint32_t v) const {
    KernelDef d = *this;
    d.version = v;
    return d;
  }

  // Empty when the node can run (on `device`, when given); otherwise why not.
  std::string check(const NodeDesc& node, const Device* device) const {
    if (check_) return check_(node);
    if (!device) return {};  // asks the device: decided at prepare
    return check_on_(node, *device);
  }
  std::unique_ptr<Kernel<B>> create(PrepareContext<B>& ctx) const {
    return create_ ? create_(ctx) : create_node_(ctx.node());
  }

 private:
  CheckFn check_ = nullptr;
  CheckOnFn check_on_ = nullptr;
  CreateFn create_ = nullptr;
  CreateFromNodeFn create_node_ = nullptr;
};

// The backend's kernels, by op name.
template <class B>
class KernelTable {
 public:
  static void add(const KernelDef<B>& def) { defs().push_back(def); }
  static const KernelDef<B>* find(const char* op) {
    for (const KernelDef<B>& d : defs())
      if (std::strcmp(d.op, op) == 0) return &d;
    return nullptr;
  }
  static std::vector<std::string> ops() {
    std::vector<std::string> out;
    for (const KernelDef<B>& d : defs()) out.emplace_back(d.op);
    return out;
  }
  // "all" when every op of ops/op_schema.h has a kernel, else the ops that
  // do ("add/mul"): the "ops=" item of the device's capabilities.
  static std::string coverage() {
    bool all = true;
    for (const schema::Op& op : schema::ops()) all = all && find(op.name);
    if (all) return "all";
    std::string out;
    for (const KernelDef<B>& d : defs()) out += (out.empty() ? "" : "/") + std::string(d.op);
    return out.empty() ? "none" : out;
  }

 private:
  // A function-local static, so registrations from other files' static
  // initialisers never run before the table exists.
  static std::vector<KernelDef<B>>& defs() {
    static std::vector<KernelDef<B>> table;
    return table;
  }
};

// Registers a KernelDef at load time, from a kernel file's namespace scope:
//   const KernelRegistration rope_reg({"rope", check_rope, create_rope});
template <class B>
struct KernelRegistration {
  explicit KernelRegistration(const KernelDef<B>& def) { KernelTable<B>::add(def); }
};

// Why node `n` of `g` cannot run on this backend (on `device`, when given),
// or "" when it can.  The op's version and attributes are checked against the
// schema this plugin was built with before the kernel's own check.
template <class B>
std::string unsupported_reason(const moert_graph_desc& g, size_t n,
                               const typename B::Device* device) {
  const NodeDesc node(g, n);
  for (size_t i = 0; i < node.num_inputs(); ++i)
    if (node.has_input(i) && node.input(i).rank() > MOERT_MAX_RANK)
      return "an input has rank above " + std::to_string(MOERT_MAX_RANK);
  const KernelDef<B>* def = KernelTable<B>::find(node.op());
  if (!def)
    return std::string("the ") + B::kName + " backend has no kernel for op '" + node.op() + "'";
  if (node.op_version() > def->version)
    return std::string("op '") + node.op() + "' version " + std::to_string(node.op_version()) +
           " is newer than the version " + std::to_string(def->version) + " the " + B::kName +
           " backend implements";
  if (const schema::Op* op = schema::find_op(node.op()))
    for (size_t i = 0; i < node.num_attrs(); ++i)
      if (!schema::find_attr(*op, node.attr_name(i)))
        return std::string("attribute '") + node.attr_name(i) + "' of op '" + node.op() +
               "' is unknown to the " + B::kName + " backend";
  try {
    return def->check(node, device);
  } catch (const std::exception& e) {  // a malformed attribute
    return e.what();
  }
}

// The names a backend's op files use unqualified; its kernel.h says
//   using namespace kit::names;
namespace names {
using kit::prod;
using kit::shape_str;
using plugin::dtype_str;
using plugin::fail;
using plugin::is_activation;
using plugin::is_float;
using plugin::is_index;
using plugin::is_weight_dtype;
using plugin::NodeDesc;
using plugin::require;
using plugin::resolve_axis;
using plugin::Symbols;
using plugin::TensorDesc;
}  // namespace names

}  // namespace moert::kit

// The names a backend's op files use, declared once in its kernel.h after its
// traits struct `B` (and its Tensor type): ExecContext, PrepareContext, Kernel, KernelDef,
// KernelRegistration, find_kernel().
#define MOERT_KIT_KERNEL_NAMES(B)                                 \
  using ExecContext = ::moert::kit::ExecContext<B>;               \
  using PrepareContext = ::moert::kit::PrepareContext<B>;         \
  using Kernel = ::moert::kit::Kernel<B>;                         \
  using KernelDef = ::moert::kit::KernelDef<B>;                   \
  using KernelRegistration = ::moert::kit::KernelRegistration<B>; \
  inline const KernelDef* find_kernel(const char* op) {           \
    return ::moert::kit::KernelTable<B>::find(op);                \
  }
