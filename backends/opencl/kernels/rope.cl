// Rotary position embedding.  rope_angles computes cos and sin once per
// (token, pair) in `wide` (double on devices with fp64, as the reference
// does; f32 otherwise); rope then rotates every head with them, one
// work-item per output feature, rounding once on store.
//
// table[0 .. rotary/2 - 1] holds inv_freq (scaling already applied) and
// table[rotary/2] the attention scaling.

// cs[t, j] = (cos, sin)(positions[t] * inv_freq[j]) * attention scaling.
kernel void rope_angles(global const uchar* pos, ulong po, int pos64, global const wide* table,
                        global wide* cs, ulong n, int half_rotary) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const int j = (int)(i % (ulong)half_rotary);
  const wide angle = (wide)load_id(pos + po, i / (ulong)half_rotary, pos64) * table[j];
  cs[2 * i] = cos(angle) * table[half_rotary];
  cs[2 * i + 1] = sin(angle) * table[half_rotary];
}

kernel void rope(global const uchar* x, ulong xo, global uchar* y, ulong yo, int dt,
                 global const wide* cs, ulong n, int heads, int dim, int rotary,
                 int interleaved) {
  const ulong i = get_global_id(0);
  if (i >= n) return;
  const int f = (int)(i % (ulong)dim);
  const ulong base = i - (ulong)f;
  global const uchar* xp = x + xo;
  if (f >= rotary) {
    store_f(y + yo, i, dt, load_f(xp, i, dt));
    return;
  }
  const ulong t = i / ((ulong)dim * (ulong)heads);
  const int hr = rotary / 2;
  const int j = interleaved ? f / 2 : (f < hr ? f : f - hr);
  const int i0 = interleaved ? 2 * j : j;
  const int i1 = interleaved ? 2 * j + 1 : j + hr;
  const ulong at = 2 * (t * (ulong)hr + (ulong)j);
  const wide c = cs[at], s = cs[at + 1];
  const wide u = (wide)load_f(xp, base + (ulong)i0, dt), v = (wide)load_f(xp, base + (ulong)i1, dt);
  store_w(y + yo, i, dt, f == i0 ? u * c - v * s : v * c + u * s);
}
