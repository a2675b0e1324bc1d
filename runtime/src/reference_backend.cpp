// The reference backend: every op of the registry, run by its plain reference
// kernel on host memory.  It is built into the runtime and implements the same
// C ABI as the plugins, through the same plugin kit (backends/common/kit), so
// the executor treats it like any other backend; it is where unsupported nodes
// fall back to, and the oracle the other backends are checked against.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "abi_graph.h"
#include "kit/host.h"
#include "kit/plugin.h"
#include "moert/backend_registry.h"
#include "moert/error.h"
#include "moert/op_registry.h"

namespace moert {
namespace {

struct HostDevice {};

struct Reference : kit::HostMemory<HostDevice> {
  static constexpr const char* kName = "reference";
  static constexpr const char* kVersion = "builtin";
  static void init();
  static void describe(HostDevice&, kit::DeviceDescription& d) {
    d.name = "host (reference kernels)";
    d.kind = MOERT_DEVICE_CPU;
    kit::host_memory(&d.total_memory, &d.free_memory);
    d.capabilities =
        "weights=f32/bf16/f16/f8_e4m3, activations=f32/bf16/f16, accumulation=f64, "
        "threads=1";
  }
};

// One node run by its op's reference kernel.
class ReferenceKernel final : public kit::Kernel<Reference> {
 public:
  explicit ReferenceKernel(const plugin::NodeDesc& node)
      : op_(&OpRegistry::global().get(node.op())) {
    const moert_node_desc& d = *node.desc();
    node_ = Node{d.op, d.name ? d.name : "", attributes_from_abi(d), {}, {}};
  }

  void run(kit::ExecContext<Reference>& ctx) override {
    SymbolValues symbols;
    symbols.values[MOERT_SYM_TOKENS] = ctx.symbols.tokens;
    symbols.values[MOERT_SYM_PAST] = ctx.symbols.past;
    symbols.values[MOERT_SYM_ROWS] = ctx.symbols.rows;
    KernelContext kc{node_, {}, {}, symbols};
    for (const kit::HostTensor& t : ctx.inputs) kc.inputs.push_back(view(t));
    for (const kit::HostTensor& t : ctx.outputs) kc.outputs.push_back(view(t));
    try {
      op_->reference(kc);
    } catch (const std::exception& e) {  // bad input the kernel found
      plugin::fail(e.what());
    }
  }

 private:
  static TensorView view(const kit::HostTensor& t) {
    if (!t.present()) return TensorView{};
    return TensorView{static_cast<DType>(t.dtype),
                      std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.rank), t.data};
  }
  const OpDef* op_;
  Node node_;
};

std::string check_any(const plugin::NodeDesc&) { return ""; }
std::unique_ptr<kit::Kernel<Reference>> create(const plugin::NodeDesc& node) {
  return std::make_unique<ReferenceKernel>(node);
}

// Every op of the registry has its reference kernel here.
void Reference::init() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const std::string& name : OpRegistry::global().names()) {
      const OpDef& op = OpRegistry::global().get(name);
      kit::KernelDef<Reference> def(op.name.c_str(), check_any, create);
      def.version = op.version;  // the reference kernels define each op's current semantics
      kit::KernelTable<Reference>::add(def);
    }
  });
}

}  // namespace

const moert_backend_api* reference_backend_api() {
  Reference::init();  // the table is complete before anyone asks
  return kit::Plugin<Reference>::api();
}

}  // namespace moert
