// Layout kernels that move elements without changing them (bit-exact, by
// element size: 1, 2, 4 or 8 bytes), and embedding (a gather that converts).
// reshape is a plain buffer copy done by the host.

// Copies `rows` rows of `cols` elements from x (rows `xpitch` elements
// apart) to y (rows `ypitch` apart): slice and concat.
#define COPY_ROWS_KERNEL(NAME, T)                                                             \
  kernel void NAME(global const uchar* x, ulong xo, ulong xpitch, global uchar* y, ulong yo,  \
                   ulong ypitch, ulong cols, ulong n) {                                       \
    const ulong i = get_global_id(0);                                                         \
    if (i >= n) return;                                                                       \
    const ulong r = i / cols, c = i % cols;                                                   \
    AT(T, y, yo)[r * ypitch + c] = CAT(T, x, xo)[r * xpitch + c];                             \
  }
COPY_ROWS_KERNEL(copy_rows_1, uchar)
COPY_ROWS_KERNEL(copy_rows_2, ushort)
COPY_ROWS_KERNEL(copy_rows_4, uint)
COPY_ROWS_KERNEL(copy_rows_8, ulong)

// transpose: output flat index -> input index through `ydims` (the output
// dims) and `xstride` (for output axis i, the input stride of axis perm[i]).
#define TRANSPOSE_KERNEL(NAME, T)                                                            \
  kernel void NAME(global const uchar* x, ulong xo, global uchar* y, ulong yo, ulong n,      \
                   long8 ydims, long8 xstride, int rank) {                                    \
    const ulong i = get_global_id(0);                                                         \
    if (i >= n) return;                                                                       \
    long d[8], s[8];                                                                          \
    vstore8(ydims, 0, d);                                                                     \
    vstore8(xstride, 0, s);                                                                   \
    long rest = (long)i, xi = 0;                                                              \
    for (int axis = rank - 1; axis >= 0; --axis) {                                            \
      xi += (rest % d[axis]) * s[axis];                                                       \
      rest /= d[axis];                                                                        \
    }                                                                                         \
    AT(T, y, yo)[i] = CAT(T, x, xo)[xi];                                                      \
  }
TRANSPOSE_KERNEL(transpose_1, uchar)
TRANSPOSE_KERNEL(transpose_2, ushort)
TRANSPOSE_KERNEL(transpose_4, uint)
TRANSPOSE_KERNEL(transpose_8, ulong)

// repeat (repeat_interleave) of x [outer, dim, inner] along dim, `times`
// times: y[o, i, c] = x[o, i / times, c].
#define REPEAT_KERNEL(NAME, T)                                                                \
  kernel void NAME(global const uchar* x, ulong xo, global uchar* y, ulong yo, ulong n,       \
                   ulong dim, ulong times, ulong inner) {                                     \
    const ulong i = get_global_id(0);                                                         \
    if (i >= n) return;                                                                       \
    const ulong c = i % inner, r = i / inner;                                                 \
    const ulong k = r % (dim * times), o = r / (dim * times);                                 \
    AT(T, y, yo)[i] = CAT(T, x, xo)[(o * dim + k / times) * inner + c];                       \
  }
REPEAT_KERNEL(repeat_1, uchar)
REPEAT_KERNEL(repeat_2, ushort)
REPEAT_KERNEL(repeat_4, uint)
REPEAT_KERNEL(repeat_8, ulong)

// embedding: y[p, h] = table[ids[p], h], converted to y's dtype.  An id
// outside [0, vocab) records position p in error slot `slot` and writes 0.
kernel void embedding(global const uchar* table, ulong to, int tdt, global const uchar* ids,
                      ulong io, int ids64, global uchar* y, ulong yo, int ydt, ulong positions,
                      ulong hidden, long vocab, global int* errors, int slot) {
  const ulong h = get_global_id(0), p = get_global_id(1);
  if (h >= hidden || p >= positions) return;
  const long id = load_id(ids + io, p, ids64);
  float v = 0.0f;
  if (id < 0 || id >= vocab) {
    if (h == 0) report_error(errors, slot, (long)p);
  } else {
    v = load_f(table + to, (ulong)id * hidden + h, tdt);
  }
  store_f(y + yo, p * hidden + h, ydt, v);
}
