// Layout ops (byte-exact for every dtype): reshape, slice and concat are
// buffer copies (rectangular where rows are strided); transpose and repeat
// are kernels of kernels/layout.cl by element size.
#include <vector>

#include "kernel.h"
#include "op_checks.h"

namespace moert::ocl {
namespace {

constexpr const char* kFile = "layout.cl";

std::string any_dtype(const NodeDesc&, const Device&) { return ""; }

// Copies `rows` rows of `cols` elements of `es` bytes from src (rows
// `src_pitch` elements apart) to dst (rows `dst_pitch` apart): one buffer
// copy when the rows are contiguous on both sides, else a kernel.
void copy_rows(const ExecContext& ctx, const ClKernel& k, uint64_t es, cl_mem src,
               uint64_t src_offset, uint64_t src_pitch, cl_mem dst, uint64_t dst_offset,
               uint64_t dst_pitch, uint64_t cols, uint64_t rows) {
  if (cols == 0 || rows == 0) return;
  if (rows == 1 || (src_pitch == cols && dst_pitch == cols)) {
    ctx.copy(src, src_offset, dst, dst_offset, cols * rows * es);
    return;
  }
  const uint64_t n = cols * rows;
  Args(k.get())
      .mem(src)
      .u64(src_offset)
      .u64(src_pitch)
      .mem(dst)
      .u64(dst_offset)
      .u64(dst_pitch)
      .u64(cols)
      .u64(n);
  ctx.launch(k, {n}, {ctx.device().elementwise_wg()});
}

// The kernel name suffix of an element size.
std::string size_suffix(uint64_t size) { return std::to_string(size); }

class Reshape final : public Kernel {
 public:
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    require(x.numel() == y.numel(), "input 'x' " + shape_str(x) + " and output " + shape_str(y) +
                                        " have different element counts");
    ctx.copy(x.mem, x.offset, y.mem, y.offset, x.nbytes());
  }
};

std::unique_ptr<Kernel> create_reshape(PrepareContext&) { return std::make_unique<Reshape>(); }

std::string check_element_size(const NodeDesc& node, const Device&) {
  const size_t es = plugin::dtype_size(node.input(0).dtype());
  if (es != 1 && es != 2 && es != 4 && es != 8)
    return std::string(node.op()) + " of " + dtype_str(node.input(0).dtype());
  return "";
}

// The copy_rows kernel for the element size of input 0.
ClKernel copy_kernel(PrepareContext& pc) {
  const size_t es = plugin::dtype_size(pc.node().input(0).dtype());
  return pc.kernel(kFile, ("copy_rows_" + size_suffix(es)).c_str());
}

class Slice final : public Kernel {
 public:
  explicit Slice(PrepareContext& pc)
      : axis_(pc.node().attr_int("axis", 0)),
        start_(pc.node().attr_int("start", 0)),
        length_(pc.node().attr_int("length", 0)),
        k_(copy_kernel(pc)) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    const size_t axis = resolve_axis(axis_, x.rank);
    const uint64_t es = x.elem_size();
    const uint64_t inner = static_cast<uint64_t>(prod(x, axis + 1, x.rank));
    const uint64_t outer = static_cast<uint64_t>(prod(x, 0, axis));
    const uint64_t dim = static_cast<uint64_t>(x.shape[axis]);
    const uint64_t length = static_cast<uint64_t>(length_);
    copy_rows(ctx, k_, es, x.mem, x.offset + static_cast<uint64_t>(start_) * inner * es,
              dim * inner, y.mem, y.offset, length * inner, length * inner, outer);
  }

 private:
  int64_t axis_, start_, length_;
  ClKernel k_;
};

std::unique_ptr<Kernel> create_slice(PrepareContext& pc) { return std::make_unique<Slice>(pc); }

class Concat final : public Kernel {
 public:
  explicit Concat(PrepareContext& pc) : axis_(pc.node().attr_int("axis", 0)), k_(copy_kernel(pc)) {}
  void run(ExecContext& ctx) override {
    const Tensor& y = ctx.out(0);
    const size_t axis = resolve_axis(axis_, y.rank);
    const uint64_t es = y.elem_size();
    const uint64_t inner = static_cast<uint64_t>(prod(y, axis + 1, y.rank));
    const uint64_t outer = static_cast<uint64_t>(prod(y, 0, axis));
    const uint64_t y_dim = static_cast<uint64_t>(y.shape[axis]);
    uint64_t at = 0;  // where the current input starts along axis
    for (size_t k = 0; k < ctx.inputs.size(); ++k) {
      if (!ctx.has(k)) continue;
      const Tensor& v = ctx.in(k);
      const uint64_t dim = static_cast<uint64_t>(v.shape[axis]);
      copy_rows(ctx, k_, es, v.mem, v.offset, dim * inner, y.mem, y.offset + at * inner * es,
                y_dim * inner, dim * inner, outer);
      at += dim;
    }
  }

 private:
  int64_t axis_;
  ClKernel k_;
};

std::unique_ptr<Kernel> create_concat(PrepareContext& pc) { return std::make_unique<Concat>(pc); }

class Transpose final : public Kernel {
 public:
  explicit Transpose(PrepareContext& pc)
      : perm_(pc.node().attr_ints("perm", {})),
        k_(pc.kernel(
            kFile,
            ("transpose_" + size_suffix(plugin::dtype_size(pc.node().input(0).dtype()))).c_str())) {
  }
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    const uint32_t rank = x.rank;
    std::array<int64_t, MOERT_MAX_RANK> x_stride{};
    int64_t s = 1;
    for (uint32_t i = rank; i-- > 0;) {
      x_stride[i] = s;
      s *= x.shape[i];
    }
    // Output axis i walks input axis perm[i]; size-1 axes are dropped.
    std::array<int64_t, 8> dims{}, strides{};
    int n_axes = 0;
    for (uint32_t i = 0; i < rank; ++i) {
      if (y.shape[i] == 1) continue;
      dims[static_cast<size_t>(n_axes)] = y.shape[i];
      strides[static_cast<size_t>(n_axes)] = x_stride[static_cast<size_t>(perm_[i])];
      ++n_axes;
    }
    const uint64_t n = static_cast<uint64_t>(y.numel());
    ctx.args(k_).tensor(x).tensor(y).u64(n).long8(dims).long8(strides).i32(n_axes);
    ctx.launch(k_, {n}, {ctx.device().elementwise_wg()});
  }

 private:
  std::vector<int64_t> perm_;
  ClKernel k_;
};

std::unique_ptr<Kernel> create_transpose(PrepareContext& pc) {
  return std::make_unique<Transpose>(pc);
}

class Repeat final : public Kernel {
 public:
  explicit Repeat(PrepareContext& pc)
      : axis_(pc.node().attr_int("axis", 0)),
        times_(pc.node().attr_int("times", 1)),
        k_(pc.kernel(
            kFile,
            ("repeat_" + size_suffix(plugin::dtype_size(pc.node().input(0).dtype()))).c_str())) {}
  void run(ExecContext& ctx) override {
    const Tensor &x = ctx.in(0), &y = ctx.out(0);
    const size_t axis = resolve_axis(axis_, x.rank);
    const uint64_t inner = static_cast<uint64_t>(prod(x, axis + 1, x.rank));
    const uint64_t n = static_cast<uint64_t>(y.numel());
    ctx.args(k_)
        .tensor(x)
        .tensor(y)
        .u64(n)
        .u64(static_cast<uint64_t>(x.shape[axis]))
        .u64(static_cast<uint64_t>(times_))
        .u64(inner);
    ctx.launch(k_, {n}, {ctx.device().elementwise_wg()});
  }

 private:
  int64_t axis_, times_;
  ClKernel k_;
};

std::unique_ptr<Kernel> create_repeat(PrepareContext& pc) { return std::make_unique<Repeat>(pc); }

const KernelRegistration reshape_reg({"reshape", any_dtype, create_reshape});
const KernelRegistration slice_reg({"slice", check_element_size, create_slice});
const KernelRegistration concat_reg({"concat", check_element_size, create_concat});
const KernelRegistration transpose_reg({"transpose", check_element_size, create_transpose});
const KernelRegistration repeat_reg({"repeat", check_element_size, create_repeat});

}  // namespace
}  // namespace moert::ocl
