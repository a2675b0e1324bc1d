// Elementwise kernels, one work-item per output element: add/mul with
// one-way broadcasting, silu, sigmoid, swiglu (plain, or its clamped form:
// the *_act kernels), and cast between any dtypes.
// Float math is f32, rounded once on store.

#define OP_ADD 0
#define OP_MUL 1
#define OP_SILU 0
#define OP_SIGMOID 1

inline float binary_op(int op, float a, float b) { return op == OP_MUL ? a * b : a + b; }

inline float sigmoid_f(float v) { return 1.0f / (1.0f + exp(-v)); }

// b repeats with period bn along a's flat index (same shape: bn == n; a
// trailing-dims broadcast: bn == the product of b's dims).
kernel void binary_mod(global const uchar* a, ulong ao, global const uchar* b, ulong bo,
                       global uchar* y, ulong yo, int dt, int op, ulong n, ulong bn) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float r = binary_op(op, load_f(a + ao, i, dt), load_f(b + bo, i % bn, dt));
  store_f(y + yo, i, dt, r);
}

// The general case: `dims` are a's dims (merged, at most 8, innermost last)
// and `bstride` b's stride along each (0 where b broadcasts).
kernel void binary_general(global const uchar* a, ulong ao, global const uchar* b, ulong bo,
                           global uchar* y, ulong yo, int dt, int op, ulong n, long8 dims,
                           long8 bstride, int rank) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  long d[8], s[8];
  vstore8(dims, 0, d);
  vstore8(bstride, 0, s);
  long rest = (long)i, bi = 0;
  for (int axis = rank - 1; axis >= 0; --axis) {
    bi += (rest % d[axis]) * s[axis];
    rest /= d[axis];
  }
  const float r = binary_op(op, load_f(a + ao, i, dt), load_f(b + bo, (ulong)bi, dt));
  store_f(y + yo, i, dt, r);
}

kernel void unary(global const uchar* x, ulong xo, global uchar* y, ulong yo, int dt, int op,
                  ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float v = load_f(x + xo, i, dt);
  store_f(y + yo, i, dt, op == OP_SIGMOID ? sigmoid_f(v) : v * sigmoid_f(v));
}

// swiglu with two inputs: y = silu(gate) * up.
kernel void swiglu_pair(global const uchar* g, ulong go, global const uchar* u, ulong uo,
                        global uchar* y, ulong yo, int dt, ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const float v = load_f(g + go, i, dt);
  store_f(y + yo, i, dt, v * sigmoid_f(v) * load_f(u + uo, i, dt));
}

// swiglu of one input [rows, 2 * half]: gate is the first half of each row.
kernel void swiglu_halves(global const uchar* x, ulong xo, global uchar* y, ulong yo, int dt,
                          ulong n, ulong hn) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const ulong r = i / hn, c = i % hn;
  const float v = load_f(x + xo, r * 2 * hn + c, dt);
  store_f(y + yo, i, dt, v * sigmoid_f(v) * load_f(x + xo, r * 2 * hn + hn + c, dt));
}

// The same with the clamped activation (swiglu_act of common.cl; limit is
// +inf when the node has none).
kernel void swiglu_pair_act(global const uchar* g, ulong go, global const uchar* u, ulong uo,
                            global uchar* y, ulong yo, int dt, ulong n, float alpha, float limit,
                            float up_offset) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  store_f(y + yo, i, dt,
          swiglu_act(load_f(g + go, i, dt), load_f(u + uo, i, dt), alpha, limit, up_offset));
}

kernel void swiglu_halves_act(global const uchar* x, ulong xo, global uchar* y, ulong yo, int dt,
                              ulong n, ulong hn, float alpha, float limit, float up_offset) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const ulong r = i / hn, c = i % hn;
  store_f(y + yo, i, dt,
          swiglu_act(load_f(x + xo, r * 2 * hn + c, dt), load_f(x + xo, r * 2 * hn + hn + c, dt),
                     alpha, limit, up_offset));
}

kernel void cast_any(global const uchar* x, ulong xo, int xdt, global uchar* y, ulong yo, int ydt,
                     ulong n) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  store_w(y + yo, i, ydt, load_w(x + xo, i, xdt));
}
