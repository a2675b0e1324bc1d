// embedding(table [V, H], ids [...]) -> y [..., H]
//   y[p, h] = table[ids[p], h] for every position p of ids (any rank, ids may
//   be a scalar).  table is f32, bf16 or f16; ids is i32 or i64.  The output
//   dtype is the optional string attribute "dtype" (f32, bf16 or f16), else the
//   table's; rows are converted (rounded to nearest even) when they differ.
//   V and H may be symbolic in inference.  At run time an id outside [0, V)
//   is an error naming the id, its position in ids and V.
#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

namespace {

// "[i, j, …]": the multi-index of flat position `flat` in a tensor of `shape`,
// so that an error points at the offending element as a user sees it.
std::string position_str(const std::vector<int64_t>& shape, int64_t flat) {
  std::vector<int64_t> index(shape.size());
  for (size_t k = shape.size(); k-- > 0;) {
    index[k] = shape[k] ? flat % shape[k] : 0;
    flat = shape[k] ? flat / shape[k] : 0;
  }
  return dims_str(index);
}

// The id at flat position p, read as an integer: widening i64 ids to double
// would round those beyond 2^53 and could turn an invalid id into a valid one.
int64_t id_at(const TensorView& ids, int64_t p) {
  if (ids.dtype == DType::i64) return static_cast<const int64_t*>(ids.data)[p];
  return static_cast<const int32_t*>(ids.data)[p];
}

}  // namespace

void register_embedding(OpRegistry& registry) {
  OpDef d;
  d.name = "embedding";
  d.summary = "gather rows of a table by integer id";
  d.inputs = {{"table"}, {"ids"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    const ValueInfo& table = ctx.in(0);
    const ValueInfo& ids = ctx.in(1);
    require_activation(ctx, 0, "input 'table'");
    ctx.require(table.shape.rank() == 2,
                "input 'table' must be [V, H] (rank 2), got " + table.shape.str());
    ctx.require(ids.dtype == DType::i32 || ids.dtype == DType::i64,
                "input 'ids' must be i32 or i64, got " + std::string(dtype_name(ids.dtype)));
    DType out = table.dtype;
    if (ctx.attrs().has("dtype")) {
      std::string name = ctx.attrs().get_string("dtype");
      auto t = dtype_from_name(name);
      ctx.require(t.has_value() && is_activation_dtype(*t),
                  "attribute 'dtype' is '" + name + "'; it must be f32, bf16 or f16");
      out = *t;
    }
    std::vector<Dim> dims = ids.shape.dims();
    dims.push_back(table.shape[1]);
    return std::vector<ValueInfo>{{out, Shape(std::move(dims))}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& table = ctx.in(0);
    const TensorView& ids = ctx.in(1);
    const TensorView& y = ctx.out(0);
    const int64_t vocab = table.dim(0);
    const int64_t hidden = table.dim(1);
    for (int64_t p = 0; p < ids.numel(); ++p) {
      const int64_t id = id_at(ids, p);
      if (id < 0 || id >= vocab)
        ctx.fail("input 'ids' holds id " + std::to_string(id) + " at position " +
                 position_str(ids.shape, p) + ", outside [0, V) with V = " + std::to_string(vocab));
      for (int64_t h = 0; h < hidden; ++h) y.set(p * hidden + h, table.get(id * hidden + h));
    }
  };
  registry.add(std::move(d));
}

}  // namespace moert::ops
