#include "moert/executor.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "abi_graph.h"
#include "moert/error.h"
#include "moert/memory_planner.h"
#include "moert/op_registry.h"

namespace moert {

namespace {

moert_error new_error() {
  moert_error e{};
  e.struct_size = sizeof(moert_error);
  return e;
}

// Rounds P up to a power of two, so that decode steps share a memory plan:
// sizes only grow with the symbols, so a plan made for the bucket fits every
// P inside it.
int64_t past_bucket(int64_t past) {
  int64_t b = 0;
  if (past > 0) {
    b = 1;
    while (b < past) b <<= 1;
  }
  return b;
}

}  // namespace

struct Executor::Impl {
  struct Slot {
    DeviceRef ref;
    moert_buffer arena = nullptr;
    uint64_t capacity = 0;
  };
  struct Partition {
    int slot = 0;
    std::vector<size_t> nodes;
    std::unique_ptr<AbiGraph> abi;
    moert_executable exe = nullptr;
    std::vector<std::pair<size_t, size_t>> copies_before;  // (source, destination) instances
  };
  // A copy of an activation value on one device, alive over [first, last].
  struct Instance {
    ValueId value;
    int slot;
    int64_t first, last;
  };
  struct StateBuffer {
    int slot;
    moert_buffer buffer = nullptr;
    uint64_t bytes = 0;
  };
  struct Plan {
    std::vector<uint64_t> offsets;    // per instance
    std::vector<uint64_t> slot_peak;  // per slot
    uint64_t naive = 0;
  };

  BackendRegistry& registry;
  ExecutorOptions options;
  Graph graph;  // placed graph
  std::vector<size_t> order;
  std::vector<ValueId> graph_inputs;  // scanned once, not on every decode step
  std::vector<int> node_slot;
  std::vector<Slot> slots;
  std::vector<Partition> partitions;
  std::vector<Fallback> fallbacks;
  std::vector<PartitionInfo> partition_infos;
  std::vector<Instance> instances;
  std::map<std::pair<ValueId, int>, size_t> instance_of;
  std::map<ValueId, StateBuffer> states;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Plan> plans;  // by (T, P bucket, R)
  const Plan* last_plan = nullptr;
  int64_t capacity = 0;
  bool profiling = false;
  std::vector<NodeTiming> timings;  // of the last profiled run

  Impl(BackendRegistry& r, ExecutorOptions o) : registry(r), options(std::move(o)) {}

  ~Impl() {
    for (Partition& p : partitions)
      if (p.exe) slots[static_cast<size_t>(p.slot)].ref.backend->call()->executable_free(p.exe);
    for (auto& [id, s] : states)
      if (s.buffer) slots[static_cast<size_t>(s.slot)].ref.backend->call()->buffer_free(s.buffer);
    for (Slot& s : slots)
      if (s.arena) s.ref.backend->call()->buffer_free(s.arena);
  }

  // The slot's plugin, locked for one call (Backend::call).
  Backend::Call api(int slot) const { return slots[static_cast<size_t>(slot)].ref.backend->call(); }
  std::string slot_name(int slot) const { return slots[static_cast<size_t>(slot)].ref.str(); }

  // Whether each node of `g` is supported by `ref`; reasons for the ones not.
  std::vector<bool> query_support(const Graph& g, const DeviceRef& ref,
                                  std::vector<std::string>* reasons) {
    std::vector<size_t> all(g.num_nodes());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    AbiGraph abi(g, all);
    std::vector<bool> ok(all.size());
    if (reasons) reasons->assign(all.size(), "");
    // Symbol R (output rows) is ABI 1.4: an older plugin would size such a
    // tensor without it.
    const bool knows_rows = ref.backend->abi_minor() >= 4;
    auto uses_rows = [&g](const Node& n) {
      for (const std::vector<ValueId>* list : {&n.inputs, &n.outputs})
        for (ValueId v : *list)
          if (v != kNoValue)
            for (const Dim& d : g.value(v).shape.dims())
              if (d.symbols & (1u << MOERT_SYM_ROWS)) return true;
      return false;
    };
    for (size_t i = 0; i < all.size(); ++i) {
      if (!knows_rows && uses_rows(g.node(i))) {
        ok[i] = false;
        if (reasons)
          (*reasons)[i] = "a shape uses symbol R (output rows), which needs plugin ABI 1.4; '" +
                          ref.backend->name() + "' has 1." +
                          std::to_string(ref.backend->abi_minor());
        continue;
      }
      moert_error err = new_error();
      int32_t supported = 0;
      moert_status s =
          ref.backend->call()->supports_node(ref.device, abi.desc(), i, &supported, &err);
      check_status(s, err,
                   "backend '" + ref.backend->name() + "' checking node '" + g.node(i).name + "'");
      ok[i] = supported != 0;
      if (!ok[i] && reasons)
        (*reasons)[i] = err.message[0] ? err.message : "op '" + g.node(i).op + "' not supported";
    }
    return ok;
  }

  // A copy of `source` in which the nodes `target` cannot run, and whose op
  // has a decomposition, are replaced by it.
  Graph decompose_unsupported(const Graph& source, const DeviceRef& target) {
    std::vector<bool> ok = query_support(source, target, nullptr);
    Graph g;
    std::vector<ValueId> remap(source.num_values(), kNoValue);
    for (size_t i = 0; i < source.num_values(); ++i) {
      const Value& v = source.values()[i];
      ValueId id = static_cast<ValueId>(i);
      if (v.kind == ValueKind::input) remap[i] = g.add_input(v.name, v.dtype, v.shape);
      if (v.kind == ValueKind::constant) remap[i] = g.add_constant(v.name, v.data);
      if (v.kind == ValueKind::state)
        remap[i] = g.add_state(v.name, v.dtype, v.shape.static_dims());
      (void)id;
    }
    for (size_t n : source.topological_order()) {
      const Node& node = source.node(n);
      Node copy = node;
      for (ValueId& in : copy.inputs)
        if (in != kNoValue) in = remap[static_cast<size_t>(in)];
      const OpDef& def = OpRegistry::global().get(node.op);
      std::vector<ValueId> outs;
      // A decomposition may decline a node (no outputs, nothing added): it
      // then stays as it is and falls back.
      if (!ok[n] && options.decompose && def.decompose) {
        outs = def.decompose(g, copy);
        check(outs.empty() || outs.size() == node.outputs.size(),
              "decomposition of node '" + node.name + "' gave the wrong number of outputs");
      }
      if (outs.empty()) outs = g.add_node(copy.op, copy.name, copy.inputs, copy.attrs);
      for (size_t i = 0; i < outs.size(); ++i)
        remap[static_cast<size_t>(node.outputs[i])] = outs[i];
    }
    for (ValueId out : source.outputs()) g.mark_output(remap[static_cast<size_t>(out)]);
    return g;
  }

  void place(const Graph& source) {
    DeviceRef target = registry.resolve(options.device);
    slots.push_back({target});
    bool target_is_reference = target.backend == &registry.reference();
    graph = target_is_reference ? source : decompose_unsupported(source, target);
    graph.validate();
    order = graph.topological_order();
    graph_inputs = graph.inputs();
    node_slot.assign(graph.num_nodes(), 0);
    if (!target_is_reference) {
      std::vector<std::string> reasons;
      std::vector<bool> ok = query_support(graph, target, &reasons);
      for (size_t n = 0; n < graph.num_nodes(); ++n) {
        if (ok[n]) continue;
        if (slots.size() == 1) slots.push_back({registry.resolve("reference")});
        node_slot[n] = 1;
        fallbacks.push_back({graph.node(n).name, graph.node(n).op, reasons[n]});
      }
    }
    if (options.strict && !fallbacks.empty()) {
      std::string msg = "strict placement on " + target.str() + ": " +
                        std::to_string(fallbacks.size()) +
                        " node(s) would fall back to the reference backend:";
      for (const Fallback& f : fallbacks) msg += "\n  " + f.node + " (" + f.op + "): " + f.reason;
      throw Error(msg);
    }
    for (size_t k = 0; k < order.size(); ++k) {
      int slot = node_slot[order[k]];
      if (partitions.empty() || partitions.back().slot != slot)
        partitions.push_back({slot, {}, {}, nullptr, {}});
      partitions.back().nodes.push_back(order[k]);
    }
    for (const Partition& p : partitions)
      partition_infos.push_back({slot_name(p.slot), p.nodes.size()});
  }

  // Lifetimes: node at position k of `order` runs at time 2k+2; graph inputs
  // are written at time 0; copies into a partition starting at position k
  // happen at time 2k+1; outputs are read after the last node.
  void plan_lifetimes() {
    const int64_t end = static_cast<int64_t>(2 * order.size() + 2);
    std::vector<int64_t> pos(graph.num_nodes());
    std::vector<size_t> partition_of(graph.num_nodes());
    std::vector<int64_t> partition_start(partitions.size());
    {
      size_t k = 0;
      for (size_t p = 0; p < partitions.size(); ++p) {
        partition_start[p] = static_cast<int64_t>(k);
        for (size_t n : partitions[p].nodes) {
          pos[n] = static_cast<int64_t>(k++);
          partition_of[n] = p;
        }
      }
    }
    auto instance = [&](ValueId v, int slot, int64_t first) -> size_t {
      auto key = std::make_pair(v, slot);
      auto it = instance_of.find(key);
      if (it != instance_of.end()) return it->second;
      instances.push_back({v, slot, first, first});
      instance_of[key] = instances.size() - 1;
      return instances.size() - 1;
    };
    for (size_t n : order) {
      const Node& node = graph.node(n);
      int slot = node_slot[n];
      int64_t t = 2 * pos[n] + 2;
      for (ValueId out : node.outputs) instance(out, slot, t);
      for (ValueId in : node.inputs) {
        if (in == kNoValue) continue;
        const Value& v = graph.value(in);
        if (v.kind == ValueKind::constant || v.kind == ValueKind::state) continue;
        if (v.kind == ValueKind::input) {
          size_t i = instance(in, slot, 0);
          instances[i].last = std::max(instances[i].last, t);
          continue;
        }
        int home = node_slot[static_cast<size_t>(v.producer)];
        size_t src = instance_of.at({in, home});
        if (home == slot) {
          instances[src].last = std::max(instances[src].last, t);
          continue;
        }
        size_t p = partition_of[n];
        bool fresh = instance_of.count({in, slot}) == 0;
        int64_t copy_time = 2 * partition_start[p] + 1;
        size_t dst = instance(in, slot, copy_time);
        instances[dst].last = std::max(instances[dst].last, t);
        if (fresh) {
          partitions[p].copies_before.emplace_back(src, dst);
          instances[src].last = std::max(instances[src].last, copy_time);
        }
      }
    }
    for (ValueId out : graph.outputs()) {
      const Value& v = graph.value(out);
      check(v.kind == ValueKind::intermediate, "graph output '" + v.name +
                                                   "' must be computed by a node (it is a " +
                                                   std::string(value_kind_name(v.kind)) + ")");
      instances[instance_of.at({out, node_slot[static_cast<size_t>(v.producer)]})].last = end;
    }
  }

  void allocate_states() {
    std::map<ValueId, std::set<int>> users;
    for (size_t n = 0; n < graph.num_nodes(); ++n) {
      const Node& node = graph.node(n);
      const OpDef& def = OpRegistry::global().get(node.op);
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        ValueId in = node.inputs[i];
        if (in == kNoValue || graph.value(in).kind != ValueKind::state) continue;
        users[in].insert(node_slot[n]);
        if (def.input_mutated(i)) {
          int64_t c = graph.value(in).shape[0].fixed;
          capacity = capacity == 0 ? c : std::min(capacity, c);
        }
      }
    }
    for (const auto& [id, slot_set] : users) {
      const Value& v = graph.value(id);
      if (slot_set.size() > 1) {
        std::string where;
        for (int s : slot_set) where += (where.empty() ? "" : ", ") + slot_name(s);
        throw Error("state '" + v.name + "' is used by nodes on several devices (" + where +
                    "); place them on one device");
      }
      StateBuffer sb{*slot_set.begin()};
      sb.bytes = static_cast<uint64_t>(num_elements(v.shape.static_dims())) * dtype_size(v.dtype);
      moert_error err = new_error();
      const DeviceRef& ref = slots[static_cast<size_t>(sb.slot)].ref;
      check_status(ref.backend->call()->buffer_alloc(ref.device, std::max<uint64_t>(sb.bytes, 1),
                                                     &sb.buffer, &err),
                   err,
                   "allocating " + std::to_string(sb.bytes) + " bytes for state '" + v.name +
                       "' on " + ref.str());
      states[id] = sb;
      zero_state(id);
    }
  }

  void zero_state(ValueId id) {
    StateBuffer& sb = states.at(id);
    std::vector<char> zeros(std::min<uint64_t>(sb.bytes, 1 << 20), 0);
    for (uint64_t off = 0; off < sb.bytes; off += zeros.size()) {
      uint64_t n = std::min<uint64_t>(zeros.size(), sb.bytes - off);
      moert_error err = new_error();
      check_status(api(sb.slot)->buffer_write(sb.buffer, off, zeros.data(), n, &err), err,
                   "clearing state '" + graph.value(id).name + "' on " + slot_name(sb.slot));
    }
  }

  void prepare_partitions() {
    for (size_t p = 0; p < partitions.size(); ++p) {
      Partition& part = partitions[p];
      part.abi = std::make_unique<AbiGraph>(graph, part.nodes);
      const DeviceRef& ref = slots[static_cast<size_t>(part.slot)].ref;
      moert_error err = new_error();
      check_status(ref.backend->call()->prepare(ref.device, part.abi->desc(), &part.exe, &err), err,
                   "preparing partition " + std::to_string(p) + " (" +
                       std::to_string(part.nodes.size()) + " nodes, first '" +
                       graph.node(part.nodes.front()).name + "') on " + ref.str());
    }
  }

  uint64_t instance_bytes(const Instance& in, const SymbolValues& s) const {
    const Value& v = graph.value(in.value);
    return static_cast<uint64_t>(num_elements(v.shape.resolve(s))) * dtype_size(v.dtype);
  }

  const Plan& plan_for(const SymbolValues& s) {
    SymbolValues bucket = SymbolValues::of(s.tokens(), past_bucket(s.past()), s.rows());
    auto key = std::make_tuple(bucket.tokens(), bucket.past(), bucket.rows());
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan plan;
    plan.offsets.assign(instances.size(), 0);
    plan.slot_peak.assign(slots.size(), 0);
    for (size_t slot = 0; slot < slots.size(); ++slot) {
      std::vector<BufferRequest> requests;
      std::vector<size_t> which;
      for (size_t i = 0; i < instances.size(); ++i) {
        if (instances[i].slot != static_cast<int>(slot)) continue;
        requests.push_back(
            {instances[i].first, instances[i].last, instance_bytes(instances[i], bucket)});
        which.push_back(i);
      }
      MemoryPlan mp = plan_memory(requests);
      for (size_t j = 0; j < which.size(); ++j) plan.offsets[which[j]] = mp.offsets[j];
      plan.slot_peak[slot] = mp.peak;
      plan.naive += mp.naive;
    }
    return plans.emplace(key, std::move(plan)).first->second;
  }

  void poison_arenas(const Plan& plan) {
    for (size_t s = 0; s < slots.size(); ++s) {
      if (!slots[s].arena || plan.slot_peak[s] == 0) continue;
      std::vector<unsigned char> fill(plan.slot_peak[s], 0xFF);
      moert_error err = new_error();
      check_status(
          api(static_cast<int>(s))->buffer_write(slots[s].arena, 0, fill.data(), fill.size(), &err),
          err, "poisoning the activation arena of " + slots[s].ref.str());
    }
  }

  void ensure_arenas(const Plan& plan) {
    for (size_t s = 0; s < slots.size(); ++s) {
      Slot& slot = slots[s];
      if (plan.slot_peak[s] <= slot.capacity) continue;
      if (slot.arena) api(static_cast<int>(s))->buffer_free(slot.arena);
      slot.arena = nullptr;
      slot.capacity = 0;
      moert_error err = new_error();
      check_status(api(static_cast<int>(s))
                       ->buffer_alloc(slot.ref.device, plan.slot_peak[s], &slot.arena, &err),
                   err,
                   "allocating the " + std::to_string(plan.slot_peak[s]) +
                       "-byte activation arena on " + slot.ref.str());
      slot.capacity = plan.slot_peak[s];
    }
  }

  std::vector<Tensor> run(const std::vector<Tensor>& inputs, SymbolValues symbols) {
    check(symbols.tokens() >= 0 && symbols.past() >= 0 && symbols.rows() >= 0,
          "negative token count or past length (T=" + std::to_string(symbols.tokens()) +
              ", P=" + std::to_string(symbols.past()) + ")");
    const std::vector<ValueId>& input_ids = graph_inputs;
    check(inputs.size() == input_ids.size(), "the graph takes " + std::to_string(input_ids.size()) +
                                                 " inputs, got " + std::to_string(inputs.size()));
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Value& v = graph.value(input_ids[i]);
      std::vector<int64_t> want = v.shape.resolve(symbols);
      check(inputs[i].defined() && inputs[i].on_host(),
            "input '" + v.name + "' must be a host tensor");
      check(inputs[i].dtype() == v.dtype && inputs[i].shape() == want,
            "input '" + v.name + "' must be " + std::string(dtype_name(v.dtype)) + dims_str(want) +
                " (T=" + std::to_string(symbols.tokens()) +
                ", P=" + std::to_string(symbols.past()) + ", R=" + std::to_string(symbols.rows()) +
                "), got " + inputs[i].describe());
    }
    if (capacity > 0 && symbols.past() + symbols.tokens() > capacity)
      throw Error("context overflow: " + std::to_string(symbols.past()) + " cached + " +
                  std::to_string(symbols.tokens()) +
                  " new tokens exceed the KV cache capacity of " + std::to_string(capacity) +
                  " positions");
    const Plan& plan = plan_for(symbols);
    ensure_arenas(plan);
    last_plan = &plan;
    if (options.poison) poison_arenas(plan);
    if (profiling) timings.clear();
    auto view = [&](size_t instance) {
      return moert_buffer_view{slots[static_cast<size_t>(instances[instance].slot)].arena,
                               plan.offsets[instance]};
    };
    for (size_t i = 0; i < inputs.size(); ++i) {
      for (size_t slot = 0; slot < slots.size(); ++slot) {
        auto it = instance_of.find({input_ids[i], static_cast<int>(slot)});
        if (it == instance_of.end()) continue;
        moert_buffer_view bv = view(it->second);
        moert_error err = new_error();
        check_status(
            api(static_cast<int>(slot))
                ->buffer_write(bv.buffer, bv.offset, inputs[i].data(), inputs[i].nbytes(), &err),
            err,
            "writing input '" + graph.value(input_ids[i]).name + "' to " +
                slot_name(static_cast<int>(slot)));
      }
    }
    std::vector<char> staging;
    for (size_t p = 0; p < partitions.size(); ++p) {
      Partition& part = partitions[p];
      for (const auto& [src, dst] : part.copies_before) {
        uint64_t bytes = instance_bytes(instances[src], symbols);
        staging.resize(bytes);
        moert_buffer_view s = view(src), d = view(dst);
        moert_error err = new_error();
        const std::string what = "copying '" + graph.value(instances[src].value).name + "' from " +
                                 slot_name(instances[src].slot) + " to " +
                                 slot_name(instances[dst].slot);
        check_status(
            api(instances[src].slot)
                ->synchronize(slots[static_cast<size_t>(instances[src].slot)].ref.device, &err),
            err, what);
        check_status(
            api(instances[src].slot)->buffer_read(s.buffer, s.offset, staging.data(), bytes, &err),
            err, what);
        check_status(
            api(instances[dst].slot)->buffer_write(d.buffer, d.offset, staging.data(), bytes, &err),
            err, what);
      }
      const std::vector<ValueId>& tensors = part.abi->tensor_values();
      std::vector<moert_buffer_view> views(tensors.size(), moert_buffer_view{nullptr, 0});
      for (size_t t = 0; t < tensors.size(); ++t) {
        const Value& v = graph.value(tensors[t]);
        if (v.kind == ValueKind::state) views[t] = {states.at(tensors[t]).buffer, 0};
        if (v.kind == ValueKind::input || v.kind == ValueKind::intermediate)
          views[t] = view(instance_of.at({tensors[t], part.slot}));
      }
      moert_execute_args args{};
      args.struct_size = sizeof(args);
      args.symbol_values = symbols.values.data();
      args.num_symbols = symbols.values.size();
      args.views = views.data();
      args.num_views = views.size();
      std::vector<double> node_seconds;
      if (profiling) {
        node_seconds.assign(part.nodes.size(), -1.0);
        args.node_seconds = node_seconds.data();
        args.num_node_seconds = node_seconds.size();
      }
      moert_error err = new_error();
      check_status(api(part.slot)->execute(part.exe, &args, &err), err,
                   "running partition " + std::to_string(p) + " on " + slot_name(part.slot));
      if (profiling) {
        // A plugin older than ABI 1.1 never reads the member: its nodes keep -1.
        for (size_t n = 0; n < part.nodes.size(); ++n) {
          const Node& node = graph.node(part.nodes[n]);
          timings.push_back({node.name, node.op, slot_name(part.slot), node_seconds[n]});
        }
      }
    }
    for (size_t s = 0; s < slots.size(); ++s) {
      moert_error err = new_error();
      check_status(api(static_cast<int>(s))->synchronize(slots[s].ref.device, &err), err,
                   "synchronizing " + slots[s].ref.str());
    }
    std::vector<Tensor> outputs;
    for (ValueId out : graph.outputs()) {
      const Value& v = graph.value(out);
      Tensor t = Tensor::empty(v.dtype, v.shape.resolve(symbols));
      int slot = node_slot[static_cast<size_t>(v.producer)];
      moert_buffer_view bv = view(instance_of.at({out, slot}));
      moert_error err = new_error();
      check_status(api(slot)->buffer_read(bv.buffer, bv.offset, t.data(), t.nbytes(), &err), err,
                   "reading output '" + v.name + "' from " + slot_name(slot));
      outputs.push_back(std::move(t));
    }
    return outputs;
  }
};

Executor::Executor(const Graph& graph, ExecutorOptions options, BackendRegistry& registry)
    : impl_(std::make_unique<Impl>(registry, std::move(options))) {
  graph.validate();
  impl_->place(graph);
  impl_->plan_lifetimes();
  impl_->allocate_states();
  impl_->prepare_partitions();
}

Executor::~Executor() = default;

std::vector<Tensor> Executor::run(const std::vector<Tensor>& inputs, SymbolValues symbols) {
  return impl_->run(inputs, symbols);
}

const Graph& Executor::placed_graph() const { return impl_->graph; }
const std::vector<Fallback>& Executor::fallbacks() const { return impl_->fallbacks; }
const std::vector<PartitionInfo>& Executor::partitions() const { return impl_->partition_infos; }
int64_t Executor::state_capacity() const { return impl_->capacity; }
void Executor::set_profiling(bool enabled) { impl_->profiling = enabled; }
const std::vector<NodeTiming>& Executor::profile() const { return impl_->timings; }

MemoryReport Executor::memory() const {
  MemoryReport r;
  for (const auto& [id, s] : impl_->states) r.state_bytes += s.bytes;
  if (impl_->last_plan) {
    for (size_t s = 0; s < impl_->slots.size(); ++s)
      r.arena_bytes[impl_->slot_name(static_cast<int>(s))] = impl_->last_plan->slot_peak[s];
    r.naive_bytes = impl_->last_plan->naive;
  }
  return r;
}

std::string Executor::placement_report() const {
  std::ostringstream os;
  os << "placement on " << impl_->slot_name(0) << ": " << impl_->graph.num_nodes() << " nodes in "
     << impl_->partitions.size() << " partition(s)";
  for (const PartitionInfo& p : impl_->partition_infos)
    os << " [" << p.device << ": " << p.num_nodes << "]";
  os << "\n";
  if (impl_->fallbacks.empty()) {
    os << "no fallbacks\n";
  } else {
    os << impl_->fallbacks.size() << " node(s) fell back to the reference backend:\n";
    for (const Fallback& f : impl_->fallbacks)
      os << "  " << f.node << " (" << f.op << "): " << f.reason << "\n";
  }
  return os.str();
}

void Executor::reset_state() {
  for (auto& [id, s] : impl_->states) impl_->zero_state(id);
}

Tensor Executor::read_state(const std::string& name) const {
  ValueId id = impl_->graph.find(name);
  auto it = impl_->states.find(id);
  check(id != kNoValue && it != impl_->states.end(), "no state value named '" + name + "'");
  const Value& v = impl_->graph.value(id);
  Tensor t = Tensor::empty(v.dtype, v.shape.static_dims());
  moert_error err = new_error();
  check_status(
      impl_->api(it->second.slot)
          ->synchronize(impl_->slots[static_cast<size_t>(it->second.slot)].ref.device, &err),
      err, "reading state '" + name + "'");
  check_status(
      impl_->api(it->second.slot)->buffer_read(it->second.buffer, 0, t.data(), t.nbytes(), &err),
      err, "reading state '" + name + "'");
  return t;
}

}  // namespace moert
