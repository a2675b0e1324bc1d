// embedding: the gather of table rows by id (kernels/layout.cl); ids out of
// range are found on the device and reported through an error slot.
#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "layout.cl";

class Embedding final : public Kernel {
 public:
  explicit Embedding(PrepareContext& pc)
      : k_(pc.kernel(kFile, "embedding")), slot_(pc.reserve_error_slots(1)) {}
  void run(ExecContext& ctx) override {
    const Tensor &table = ctx.in(0), &ids = ctx.in(1), &y = ctx.out(0);
    const uint64_t hidden = static_cast<uint64_t>(table.dim(1));
    const uint64_t positions = static_cast<uint64_t>(ids.numel());
    ctx.args(k_)
        .tensor(table)
        .i32(table.dtype)
        .tensor(ids)
        .i32(ids.dtype == MOERT_DTYPE_I64 ? 1 : 0)
        .tensor(y)
        .i32(y.dtype)
        .u64(positions)
        .u64(hidden)
        .i64(table.dim(0))
        .mem(ctx.errors)
        .i32(slot_);
    const size_t wg = ctx.device().elementwise_wg();
    const size_t local0 = hidden >= wg ? wg : 1;
    ctx.launch(k_, {hidden, positions}, {local0, local0 == 1 ? std::min<size_t>(wg, 16) : 1});
  }
  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const Tensor &table = ctx.in(0), &ids = ctx.in(1);
    const int64_t id = static_cast<int64_t>(read_element(ctx, ids, position));
    return plugin::embedding_error(ids, position, id, table.dim(0));
  }

 private:
  ClKernel k_;
  int slot_;
};

std::unique_ptr<Kernel> create_embedding(PrepareContext& pc) {
  return std::make_unique<Embedding>(pc);
}

const KernelRegistration embedding_reg({"embedding", plugin::check_embedding, create_embedding});

}  // namespace
}  // namespace moert::ocl
