// reshape, slice, transpose, repeat and concat: byte-exact moves for every
// dtype, as strided copies on the device (launch::strided_copy).
#include "kernel.h"
#include "kernels/launch.h"

namespace moert::cuda {
namespace {

std::string check_layout(const NodeDesc& node) {
  if (node.output(0).rank() > MOERT_MAX_RANK) return "rank above MOERT_MAX_RANK";
  for (size_t i = 0; i < node.num_inputs(); ++i)
    if (node.has_input(i) && node.input(i).dtype() != node.output(0).dtype())
      return "input and output dtypes differ";
  return "";
}

// A contiguous copy of `outer` blocks of `inner` elements from x (blocks
// x_pitch apart) to y (y_pitch apart): slice and concat.
void copy_blocks(const ExecContext& ctx, size_t es, const void* x, void* y, int64_t outer,
                 int64_t inner, int64_t x_pitch, int64_t y_pitch) {
  launch::CopyDims d;
  d.rank = 2;
  d.size[0] = outer;
  d.size[1] = inner;
  d.x_stride[0] = x_pitch;
  d.x_stride[1] = 1;
  d.y_stride[0] = y_pitch;
  d.y_stride[1] = 1;
  launch::strided_copy(ctx.stream(), es, x, y, d);
}

class Reshape final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    require(x.numel() == ctx.out(0).numel(), "input and output element counts differ");
    ctx.copy(ctx.out(0).data, x.data, x.nbytes());
  }
};

class Slice final : public Kernel {
 public:
  explicit Slice(const NodeDesc& n)
      : axis_(n.attr_int("axis", 0)),
        start_(n.attr_int("start", 0)),
        length_(n.attr_int("length", 0)) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const size_t axis = resolve_axis(axis_, x.rank);
    require(axis < x.rank, "attribute 'axis' out of range for " + shape_str(x));
    const int64_t dim = x.shape[axis];
    require(start_ >= 0 && length_ >= 0 && start_ + length_ <= dim,
            "slice [" + std::to_string(start_) + ", " + std::to_string(start_ + length_) +
                ") outside dim " + std::to_string(dim));
    const int64_t outer = prod(x, 0, axis), inner = prod(x, axis + 1, x.rank);
    copy_blocks(ctx, x.elem_size(), x.bytes() + start_ * inner * x.elem_size(), ctx.out(0).data,
                outer, length_ * inner, dim * inner, length_ * inner);
  }

 private:
  int64_t axis_, start_, length_;
};

class Transpose final : public Kernel {
 public:
  explicit Transpose(const NodeDesc& n) : perm_(n.attr_ints("perm", {})) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& y = ctx.out(0);
    require(perm_.size() == x.rank, "attribute 'perm' does not match the rank of " + shape_str(x));
    int64_t x_stride[MOERT_MAX_RANK];
    int64_t s = 1;
    for (size_t i = x.rank; i-- > 0;) {
      x_stride[i] = s;
      s *= x.shape[i];
    }
    launch::CopyDims d;
    d.rank = static_cast<int>(y.rank);
    s = 1;
    for (size_t i = y.rank; i-- > 0;) {
      d.size[i] = y.shape[i];
      d.x_stride[i] = x_stride[perm_[i]];
      d.y_stride[i] = s;
      s *= y.shape[i];
    }
    launch::strided_copy(ctx.stream(), x.elem_size(), x.data, y.data, d);
  }

 private:
  std::vector<int64_t> perm_;
};

class Repeat final : public Kernel {
 public:
  explicit Repeat(const NodeDesc& n)
      : axis_(n.attr_int("axis", 0)), times_(n.attr_int("times", 1)) {}
  void run(ExecContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const size_t axis = resolve_axis(axis_, x.rank);
    require(axis < x.rank && times_ >= 1, "bad attributes 'axis' or 'times'");
    const int64_t outer = prod(x, 0, axis), inner = prod(x, axis + 1, x.rank), dim = x.shape[axis];
    // y[o, i, t, :] = x[o, i, :]: a stride-0 axis for the copies.
    launch::CopyDims d;
    d.rank = 4;
    const int64_t size[4] = {outer, dim, times_, inner};
    const int64_t xs[4] = {dim * inner, inner, 0, 1};
    const int64_t ys[4] = {dim * times_ * inner, times_ * inner, inner, 1};
    for (int i = 0; i < 4; ++i) {
      d.size[i] = size[i];
      d.x_stride[i] = xs[i];
      d.y_stride[i] = ys[i];
    }
    launch::strided_copy(ctx.stream(), x.elem_size(), x.data, ctx.out(0).data, d);
  }

 private:
  int64_t axis_, times_;
};

class Concat final : public Kernel {
 public:
  explicit Concat(const NodeDesc& n) : axis_(n.attr_int("axis", 0)) {}
  void run(ExecContext& ctx) override {
    const Tensor& y = ctx.out(0);
    const size_t axis = resolve_axis(axis_, y.rank);
    require(axis < y.rank, "attribute 'axis' out of range for " + shape_str(y));
    const int64_t outer = prod(y, 0, axis), inner = prod(y, axis + 1, y.rank);
    const int64_t y_dim = y.shape[axis];
    int64_t offset = 0;
    for (size_t k = 0; k < ctx.inputs.size(); ++k) {
      if (!ctx.has(k)) continue;
      const Tensor& v = ctx.in(k);
      const int64_t dim = v.shape[axis];
      require(offset + dim <= y_dim, "inputs longer than the output along the axis");
      copy_blocks(ctx, y.elem_size(), v.data, y.bytes() + offset * inner * y.elem_size(), outer,
                  dim * inner, dim * inner, y_dim * inner);
      offset += dim;
    }
  }

 private:
  int64_t axis_;
};

std::unique_ptr<Kernel> create_reshape(PrepareContext&) { return std::make_unique<Reshape>(); }
std::unique_ptr<Kernel> create_slice(PrepareContext& pc) {
  return std::make_unique<Slice>(pc.node());
}
std::unique_ptr<Kernel> create_transpose(PrepareContext& pc) {
  return std::make_unique<Transpose>(pc.node());
}
std::unique_ptr<Kernel> create_repeat(PrepareContext& pc) {
  return std::make_unique<Repeat>(pc.node());
}
std::unique_ptr<Kernel> create_concat(PrepareContext& pc) {
  return std::make_unique<Concat>(pc.node());
}

const KernelRegistration reshape_reg({"reshape", check_layout, create_reshape});
const KernelRegistration slice_reg({"slice", check_layout, create_slice});
const KernelRegistration transpose_reg({"transpose", check_layout, create_transpose});
const KernelRegistration repeat_reg({"repeat", check_layout, create_repeat});
const KernelRegistration concat_reg({"concat", check_layout, create_concat});

}  // namespace
}  // namespace moert::cuda
