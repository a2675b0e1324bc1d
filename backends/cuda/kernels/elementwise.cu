// Elementwise kernels: strided copies (the layout ops), binary and unary
// arithmetic, swiglu (plain or clamped, a template per node's choice), cast
// and the embedding gather.  One thread per
// element, grid-stride loops; dtypes are dispatched per element (the branch
// is uniform across a warp), which keeps one kernel per op.
#include "common.cuh"

namespace moert::cuda::launch {
namespace {

template <typename T>
__global__ void strided_copy_kernel(const T* __restrict__ x, T* __restrict__ y, CopyDims d,
                                    int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    int64_t rest = i, xi = 0, yi = 0;
    for (int a = d.rank - 1; a >= 0; --a) {
      const int64_t c = rest % d.size[a];
      rest /= d.size[a];
      xi += c * d.x_stride[a];
      yi += c * d.y_stride[a];
    }
    y[yi] = x[xi];
  }
}

__global__ void binary_kernel(Binary op, moert_dtype t, const void* a, const void* b, void* y,
                              int64_t n, Broadcast bc) {
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    int64_t j = i;
    if (!bc.same) {
      int64_t rest = i;
      j = 0;
      for (int ax = bc.rank - 1; ax >= 0; --ax) {
        j += (rest % bc.shape[ax]) * bc.b_stride[ax];
        rest /= bc.shape[ax];
      }
    }
    const float va = load_float(t, a, i), vb = load_float(t, b, j);
    store_float(t, y, i, op == Binary::add ? va + vb : va * vb);
  }
}

__global__ void unary_kernel(Unary op, moert_dtype t, const void* x, void* y, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    const float v = load_float(t, x, i);
    const float s = sigmoid_f(v);
    store_float(t, y, i, op == Unary::silu ? v * s : s);
  }
}

// kClamped: swiglu_act (swiglu version 2) instead of silu(g) * u.
template <bool kClamped>
__global__ void swiglu_kernel(moert_dtype t, const void* gate, const void* up, void* y,
                              int64_t rows, int64_t width, SwigluAct act) {
  const int64_t n = rows * width;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    float g, u;
    if (up) {
      g = load_float(t, gate, i);
      u = load_float(t, up, i);
    } else {
      const int64_t r = i / width, c = i % width;
      g = load_float(t, gate, r * 2 * width + c);
      u = load_float(t, gate, r * 2 * width + width + c);
    }
    store_float(t, y, i, kClamped ? swiglu_act(g, u, act) : g * sigmoid_f(g) * u);
  }
}

__global__ void cast_kernel(moert_dtype from, const void* x, moert_dtype to, void* y, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) cast_element(from, x, i, to, y, i);
}

__global__ void cast_at_past_kernel(moert_dtype from, const void* x, moert_dtype to, void* cache,
                                    int64_t row, int64_t n, const int64_t* past) {
  const int64_t first = *past * row;
  for (int64_t i = global_index(); i < n; i += global_stride())
    cast_element(from, x, i, to, cache, first + i);
}

__global__ void store_int64_kernel(int64_t* dst, int64_t v) { *dst = v; }

__global__ void embedding_kernel(moert_dtype table_t, const void* table, moert_dtype ids_t,
                                 const void* ids, moert_dtype out_t, void* y, int64_t count,
                                 int64_t vocab, int64_t hidden, unsigned long long* error) {
  const int64_t n = count * hidden;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    const int64_t p = i / hidden, h = i % hidden;
    const int64_t id = load_id(ids_t, ids, p);
    if (id < 0 || id >= vocab) {
      if (h == 0) record_error(error, p);
      store_float(out_t, y, i, 0.0f);
      continue;
    }
    store_float(out_t, y, i, load_float(table_t, table, id * hidden + h));
  }
}

}  // namespace

void strided_copy(cudaStream_t s, size_t elem_size, const void* x, void* y, const CopyDims& d) {
  int64_t n = 1;
  for (int a = 0; a < d.rank; ++a) n *= d.size[a];
  if (n == 0) return;
  const unsigned grid = grid_for(n);
  switch (elem_size) {
    case 1:
      strided_copy_kernel<<<grid, kThreads, 0, s>>>(static_cast<const uint8_t*>(x),
                                                    static_cast<uint8_t*>(y), d, n);
      break;
    case 2:
      strided_copy_kernel<<<grid, kThreads, 0, s>>>(static_cast<const uint16_t*>(x),
                                                    static_cast<uint16_t*>(y), d, n);
      break;
    case 4:
      strided_copy_kernel<<<grid, kThreads, 0, s>>>(static_cast<const uint32_t*>(x),
                                                    static_cast<uint32_t*>(y), d, n);
      break;
    default:
      strided_copy_kernel<<<grid, kThreads, 0, s>>>(static_cast<const uint64_t*>(x),
                                                    static_cast<uint64_t*>(y), d, n);
      break;
  }
  check_launch("strided_copy");
}

void binary(cudaStream_t s, Binary op, moert_dtype t, const void* a, const void* b, void* y,
            int64_t n, const Broadcast& bc) {
  if (n == 0) return;
  binary_kernel<<<grid_for(n), kThreads, 0, s>>>(op, t, a, b, y, n, bc);
  check_launch("binary");
}

void unary(cudaStream_t s, Unary op, moert_dtype t, const void* x, void* y, int64_t n) {
  if (n == 0) return;
  unary_kernel<<<grid_for(n), kThreads, 0, s>>>(op, t, x, y, n);
  check_launch("unary");
}

void swiglu(cudaStream_t s, moert_dtype t, const void* gate, const void* up, void* y, int64_t rows,
            int64_t width, const SwigluAct* act) {
  if (rows * width == 0) return;
  if (act)
    swiglu_kernel<true>
        <<<grid_for(rows * width), kThreads, 0, s>>>(t, gate, up, y, rows, width, *act);
  else
    swiglu_kernel<false>
        <<<grid_for(rows * width), kThreads, 0, s>>>(t, gate, up, y, rows, width, SwigluAct{});
  check_launch("swiglu");
}

void cast(cudaStream_t s, moert_dtype from, const void* x, moert_dtype to, void* y, int64_t n) {
  if (n == 0) return;
  cast_kernel<<<grid_for(n), kThreads, 0, s>>>(from, x, to, y, n);
  check_launch("cast");
}

void cast_at_past(cudaStream_t s, moert_dtype from, const void* x, moert_dtype to, void* cache,
                  int64_t row, int64_t n, const int64_t* past) {
  if (n == 0) return;
  cast_at_past_kernel<<<grid_for(n), kThreads, 0, s>>>(from, x, to, cache, row, n, past);
  check_launch("cast_at_past");
}

void store_int64(cudaStream_t s, int64_t* dst, int64_t v) {
  store_int64_kernel<<<1, 1, 0, s>>>(dst, v);
  check_launch("store_int64");
}

void embedding(cudaStream_t s, moert_dtype table_t, const void* table, moert_dtype ids_t,
               const void* ids, moert_dtype out_t, void* y, int64_t count, int64_t vocab,
               int64_t hidden, unsigned long long* error) {
  if (count * hidden == 0) return;
  embedding_kernel<<<grid_for(count * hidden), kThreads, 0, s>>>(table_t, table, ids_t, ids, out_t,
                                                                 y, count, vocab, hidden, error);
  check_launch("embedding");
}

}  // namespace moert::cuda::launch
