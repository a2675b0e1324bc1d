// embedding: rows of an f32, bf16 or f16 table gathered by i32 or i64 ids;
// an id out of range is reported through an error slot.
#include "kernel.h"
#include "kernels/launch.h"
#include "op_checks.h"

namespace moert::cuda {
namespace {

class Embedding final : public Kernel {
 public:
  explicit Embedding(PrepareContext& pc) : slot_(pc.reserve_error_slots(1)) {}
  void run(ExecContext& ctx) override {
    const Tensor& table = ctx.in(0);
    const Tensor& ids = ctx.in(1);
    const Tensor& y = ctx.out(0);
    launch::embedding(ctx.stream(), table.dtype, table.data, ids.dtype, ids.data, y.dtype, y.data,
                      ids.numel(), table.dim(0), table.dim(1), ctx.error_slot(slot_));
  }
  std::string describe_error(ExecContext& ctx, int, int64_t position) override {
    const Tensor& ids = ctx.in(1);
    const auto id = static_cast<int64_t>(read_element(ctx, ids, position));
    return plugin::embedding_error(ids, position, id, ctx.in(0).dim(0));
  }

 private:
  int slot_;
};

std::unique_ptr<Kernel> create_embedding(PrepareContext& pc) {
  return std::make_unique<Embedding>(pc);
}

const KernelRegistration embedding_reg({"embedding", plugin::check_embedding, create_embedding});

}  // namespace
}  // namespace moert::cuda
