// One executable implementation for every in-tree plugin: the tensor table,
// constants, one step per node, binding of tensors to buffers at execute,
// the execute loop with per-node profiling, exception → status mapping with
// the node named, and device error slots.
//
// The backend's traits B supply (kit/README.md has the whole list):
//   B::Constant                  what the executable keeps of a constant
//   B::make_constant(Device&, const moert_tensor_desc&, bool persist)
//   B::bind_constant(Tensor&, const Constant&)
//   B::bind_buffer(Tensor&, const moert_buffer_impl&, uint64_t offset)
//   B::finish(Device&)           waits for the device's queued work
//   B::ErrorSlots                device error slots (kit::NoErrorSlots: none)
// and optionally
//   B::planned(Executable&)      after prepare (CUDA plans its graphs here)
//   B::execute(Executable&, args, symbols, times)
//                                runs the steps its own way (CUDA graphs);
//                                default: run_steps() over every node
//   B::freeing(Executable&)      before the executable is destroyed
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "kit/buffers.h"
#include "kit/device.h"
#include "kit/kernel.h"

// The ABI's opaque executable: every in-tree plugin's is a kit::Executable.
struct moert_executable_impl {
  virtual ~moert_executable_impl() = default;
};

namespace moert::kit {

template <class B>
class Executable : public moert_executable_impl {
 public:
  using Device = typename B::Device;
  using Tensor = typename B::Tensor;

  struct Binding {
    moert_tensor_kind kind = MOERT_TENSOR_ACTIVATION;
    moert_dtype dtype = MOERT_DTYPE_F32;
    uint32_t rank = 0;
    std::array<moert_dim, MOERT_MAX_RANK> dims{};
    typename B::Constant constant{};  // CONSTANT only
  };
  struct Step {
    std::string where;  // "node 'x' (op)"
    std::unique_ptr<Kernel<B>> kernel;
    std::vector<uint32_t> inputs, outputs;
    bool past_in_shapes = false;  // a tensor's shape has P in it
    int error_base = 0, error_count = 0;
    ExecContext<B> ctx;
    explicit Step(Device& d) : ctx(d) {}
  };

  // Prepares `g` for `device`: keeps or uploads the constants and builds
  // each node's kernel.  Throws plugin::Failure naming the node.
  Executable(Device& d, const moert_graph_desc& g) : device(&d) {
    const bool persist = MOERT_ABI_HAS_MEMBER(&g, moert_graph_desc, flags) &&
                         (g.flags & MOERT_GRAPH_CONSTANTS_PERSIST);
    tensors.resize(g.num_tensors);
    for (size_t i = 0; i < g.num_tensors; ++i) {
      const moert_tensor_desc& t = *g.tensors[i];
      plugin::require(t.rank <= MOERT_MAX_RANK, "tensor rank above MOERT_MAX_RANK");
      Binding& b = tensors[i];
      b.kind = t.kind;
      b.dtype = t.dtype;
      b.rank = t.rank;
      for (uint32_t k = 0; k < t.rank; ++k) b.dims[k] = t.dims[k];
      if (t.kind == MOERT_TENSOR_CONSTANT) b.constant = B::make_constant(d, t, persist);
    }
    int slots = 0;
    for (size_t n = 0; n < g.num_nodes; ++n) {
      const NodeDesc node(g, n);
      const std::string reason = unsupported_reason<B>(g, n, &d);
      if (!reason.empty()) plugin::fail(node.where() + ": " + reason, MOERT_ERR_UNSUPPORTED);
      Step step(d);
      step.where = node.where();
      PrepareContext<B> pc(d, node, slots);
      try {
        step.kernel = KernelTable<B>::find(node.op())->create(pc);
      } catch (const plugin::Failure& e) {
        plugin::fail(step.where + ": " + e.what(), e.status());
      }
      step.error_base = slots;
      step.error_count = pc.error_slots();
      slots += pc.error_slots();
      for (size_t i = 0; i < node.num_inputs(); ++i) step.inputs.push_back(node.input_index(i));
      for (size_t i = 0; i < node.num_outputs(); ++i) step.outputs.push_back(node.output_index(i));
      for (const std::vector<uint32_t>* list : {&step.inputs, &step.outputs})
        for (uint32_t t : *list)
          if (t != MOERT_NO_TENSOR)
            for (uint32_t k = 0; k < tensors[t].rank; ++k)
              if (tensors[t].dims[k].symbols & (1u << MOERT_SYM_PAST)) step.past_in_shapes = true;
      step.ctx.inputs.resize(step.inputs.size());
      step.ctx.outputs.resize(step.outputs.size());
      steps.push_back(std::move(step));
    }
    num_error_slots = slots;
    errors.allocate(d, slots);
    for (Step& step : steps) errors.attach(step.ctx);
    if constexpr (requires(Executable & e) { B::planned(e); }) B::planned(*this);
  }

  ~Executable() override {
    if constexpr (requires(Executable & e) { B::freeing(e); }) B::freeing(*this);
  }

  // Runs the nodes for one execute() call.
  void execute(const moert_execute_args& args) {
    plugin::require(args.num_views == tensors.size(),
                    "execute got " + std::to_string(args.num_views) + " views for " +
                        std::to_string(tensors.size()) + " tensors");
    Symbols symbols;
    if (args.num_symbols > MOERT_SYM_TOKENS) symbols.tokens = args.symbol_values[MOERT_SYM_TOKENS];
    if (args.num_symbols > MOERT_SYM_PAST) symbols.past = args.symbol_values[MOERT_SYM_PAST];
    if (args.num_symbols > MOERT_SYM_ROWS) symbols.rows = args.symbol_values[MOERT_SYM_ROWS];
    double* times = nullptr;
    if (MOERT_ABI_HAS_MEMBER(&args, moert_execute_args, num_node_seconds) && args.node_seconds &&
        args.num_node_seconds >= steps.size())
      times = args.node_seconds;
    if constexpr (requires(Executable & e) { B::execute(e, args, symbols, times); }) {
      B::execute(*this, args, symbols, times);
    } else {
      if (times) B::finish(*device);
      run_steps(args, symbols, 0, steps.size(), times);
    }
    check_errors();
  }

  // Binds and runs (or enqueues) nodes [begin, end).  With `times`, waits
  // for each node and records its seconds.
  void run_steps(const moert_execute_args& args, const Symbols& symbols, size_t begin, size_t end,
                 double* times) {
    for (size_t s = begin; s < end; ++s) {
      Step& step = steps[s];
      const auto start = std::chrono::steady_clock::now();
      try {
        step.ctx.symbols = symbols;
        for (size_t i = 0; i < step.inputs.size(); ++i)
          step.ctx.inputs[i] = bind(args, step.inputs[i], symbols);
        for (size_t i = 0; i < step.outputs.size(); ++i)
          step.ctx.outputs[i] = bind(args, step.outputs[i], symbols);
        step.kernel->run(step.ctx);
        if (times) B::finish(*device);
      } catch (const plugin::Failure& e) {
        plugin::fail(named(step, e.what()), e.status());
      } catch (const std::bad_alloc&) {
        throw;
      } catch (const std::exception& e) {
        plugin::fail(named(step, e.what()), MOERT_ERR_INTERNAL);
      }
      if (times)
        times[s] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  }

  // Tensor `index` bound for this execution (not present for MOERT_NO_TENSOR).
  Tensor bind(const moert_execute_args& args, uint32_t index, const Symbols& symbols) const {
    Tensor t;
    if (index == MOERT_NO_TENSOR) return t;
    const Binding& b = tensors[index];
    t.dtype = b.dtype;
    t.rank = b.rank;
    for (uint32_t k = 0; k < b.rank; ++k) t.shape[k] = plugin::resolve_dim(b.dims[k], symbols);
    if (b.kind == MOERT_TENSOR_CONSTANT) {
      B::bind_constant(t, b.constant);
      return t;
    }
    const moert_buffer_view& v = args.views[index];
    const std::string name = "tensor " + std::to_string(index);
    plugin::require(v.buffer != nullptr, name + " is not bound");
    plugin::require(&B::device(v.buffer->device) == device,
                    name + " is bound to a buffer of another device");
    const uint64_t bytes = t.nbytes();
    plugin::require(v.offset <= v.buffer->bytes && bytes <= v.buffer->bytes - v.offset,
                    name + " is bound past the end of its buffer");
    plugin::require(v.offset % t.elem_size() == 0, name + " is bound at a misaligned offset");
    B::bind_buffer(t, *v.buffer, v.offset);
    return t;
  }

  // Reads the device error slots; throws for the first node that recorded
  // one (after clearing them, so the executable stays usable).
  void check_errors() {
    if (num_error_slots == 0) return;
    const std::vector<int64_t> slots = errors.read(*device);
    for (Step& step : steps)
      for (int s = 0; s < step.error_count; ++s) {
        const int64_t position = slots[static_cast<size_t>(step.error_base + s)];
        if (position == kNoError) continue;
        std::string message;
        try {
          message = step.kernel->describe_error(step.ctx, s, position);
        } catch (const std::exception& e) {
          message = std::string("device error (") + e.what() + ")";
        }
        errors.clear(*device);
        plugin::fail(step.where + ": " + message);
      }
  }

  Device* device;
  std::vector<Binding> tensors;
  std::vector<Step> steps;
  typename B::ErrorSlots errors;
  int num_error_slots = 0;
  typename B::Plan plan;  // the backend's own per-executable state

 private:
  // `message` prefixed with the step's node, unless it names it already.
  static std::string named(const Step& step, const std::string& message) {
    return message.rfind(step.where, 0) == 0 ? message : step.where + ": " + message;
  }
};

}  // namespace moert::kit
