// cast(x) -> y: converts every element to attribute `dtype` (a dtype name:
// "f32", "bf16", "f8_e4m3", "i32", …).  Floats round to nearest even, f8
// saturates, integers truncate toward zero and saturate (see moert/dtype.h).
#include "kernel_util.h"
#include "ops.h"

namespace moert::ops {

namespace {

DType target_dtype(const Attributes& attrs, const std::string& where) {
  std::string name = attrs.get_string("dtype");
  auto t = dtype_from_name(name);
  if (!t) throw Error(where + "attribute 'dtype' is '" + name + "', not a dtype name");
  return *t;
}

}  // namespace

void register_cast(OpRegistry& r) {
  OpDef d;
  d.name = "cast";
  d.summary = "convert elements to another dtype";
  d.inputs = {{"x"}};
  d.outputs = {"y"};
  d.infer = [](const InferContext& ctx) {
    DType t = target_dtype(ctx.attrs(), "");
    return std::vector<ValueInfo>{{t, ctx.in(0).shape}};
  };
  d.reference = [](KernelContext& ctx) {
    const TensorView& x = ctx.in(0);
    const TensorView& y = ctx.out(0);
    for (int64_t i = 0; i < x.numel(); ++i) y.set(i, x.get(i));
  };
  r.add(std::move(d));
}

}  // namespace moert::ops
