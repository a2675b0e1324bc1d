// Definitions shared by every kernel file (prepended to each one at build
// time): dtype codes, conversions between f32 and the narrow float formats,
// loads and stores by a run-time dtype, work-group reductions and the error
// slots.
//
// The narrow formats are converted with integer bit operations only, so no
// kernel needs cl_khr_fp16 or a particular rounding mode: f32 -> bf16/f16/e4m3
// rounds to nearest even, keeps NaN, overflows to infinity (bf16, f16) or
// saturates to +-448 (e4m3), exactly as moert/dtype.h specifies.
//
// Tensors are passed as (buffer, byte offset) pairs; AT/CAT turn them into
// typed pointers.
//
// Build options set by the host: MOERT_FP64, MOERT_FP16, MOERT_CPU_STYLE
// (all 0/1) and MOERT_ROW_WG (the work-group size of the row kernels, a
// power of two).

#if MOERT_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double wide;  // the type values are widened to when a kernel needs more than f32
#else
typedef float wide;
#endif

// The values of moert_dtype.
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_F8 3
#define DT_I8 4
#define DT_U8 5
#define DT_I32 6
#define DT_I64 7
#define DT_BOOL 8

#define AT(T, base, off) ((global T*)((global uchar*)(base) + (off)))
#define CAT(T, base, off) ((global const T*)((global const uchar*)(base) + (off)))

// ---------------------------------------------------------------------------
// Scalar conversions.

inline float bf16_to_f32(ushort b) { return as_float((uint)b << 16); }

inline ushort f32_to_bf16(float f) {
  uint u = as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (ushort)(u >> 16);
}

inline float f16_to_f32(ushort h) {
  const uint sign = ((uint)h & 0x8000u) << 16;
  const uint em = (uint)h & 0x7fffu;
  float v;
  if (em < 0x0400u)
    v = (float)em * 5.9604644775390625e-8f;  // subnormal: m * 2^-24
  else if (em >= 0x7c00u)
    v = as_float(0x7f800000u | ((em & 0x03ffu) << 13));  // inf or NaN
  else
    v = as_float((em << 13) + (112u << 23));
  return as_float(as_uint(v) | sign);
}

inline ushort f32_to_f16(float f) {
  const uint u = as_uint(f);
  const ushort sign = (ushort)((u >> 16) & 0x8000u);
  const uint a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | (ushort)0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | (ushort)0x7c00u;  // >= 65520 rounds to infinity
  if (a < 0x38800000u) {
    // Below 2^-14: a subnormal f16, m * 2^-24 with m = round(|f| * 2^24),
    // exact scaling and one rounding (rint rounds half to even).
    return sign | (ushort)rint(as_float(a) * 16777216.0f);
  }
  const uint r = a + 0x0fffu + ((a >> 13) & 1u) - (112u << 23);
  return sign | (ushort)(r >> 13);
}

inline float e4m3_to_f32(uchar b) {
  const uint sign = ((uint)b & 0x80u) << 24;
  const uint em = (uint)b & 0x7fu;
  float v;
  if (em == 0x7fu)
    v = NAN;
  else if (em < 8u)
    v = (float)em * 0.001953125f;  // subnormal: m * 2^-9
  else
    v = as_float((em << 20) + (120u << 23));
  return as_float(as_uint(v) | sign);
}

inline uchar f32_to_e4m3(float f) {
  const uint u = as_uint(f);
  const uchar sign = (uchar)((u >> 24) & 0x80u);
  const uint a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | (uchar)0x7fu;  // NaN
  if (a >= 0x43e00000u) return sign | (uchar)0x7eu;  // >= 448 (and infinity) saturates
  if (a < 0x3c800000u)                                // below 2^-6: subnormal, m * 2^-9
    return sign | (uchar)rint(as_float(a) * 512.0f);
  uint r = a + 0x7ffffu + ((a >> 20) & 1u) - (120u << 23);
  r >>= 20;
  return sign | (uchar)(r > 0x7eu ? 0x7eu : r);
}

// ---------------------------------------------------------------------------
// Vector conversions of 16 and 8 values (weights, caches).  Subnormal
// inputs go through an integer-to-float conversion, never through
// arithmetic on f32 denormals (slow on CPUs, flushed to zero on some GPUs).

inline float16 bf16x16_to_f32(ushort16 b) { return as_float16(convert_uint16(b) << 16); }
inline float8 bf16x8_to_f32(ushort8 b) { return as_float8(convert_uint8(b) << 16); }

#define NARROW_TO_F32(N, utype, ftype)                                                             \
  inline ftype f16x##N##_to_f32(ushort##N h) {                                                     \
    const utype u = convert_##utype(h);                                                            \
    const utype sign = (u & 0x8000u) << 16;                                                        \
    const utype em = u & 0x7fffu;                                                                  \
    utype bits = (em << 13) + (112u << 23);                                                        \
    bits = select(bits, bits + (112u << 23), em >= 0x7c00u); /* inf / NaN */                       \
    const ftype sub = convert_##ftype(em) * 5.9604644775390625e-8f;                                \
    const ftype v = select(as_##ftype(bits), sub, em < 0x0400u);                                   \
    return as_##ftype(as_##utype(v) | sign);                                                       \
  }                                                                                                \
  inline ftype e4m3x##N##_to_f32(uchar##N b) {                                                     \
    const utype u = convert_##utype(b);                                                            \
    const utype sign = (u & 0x80u) << 24;                                                          \
    const utype em = u & 0x7fu;                                                                    \
    ftype v = as_##ftype((em << 20) + (120u << 23));                                               \
    v = select(v, convert_##ftype(em) * 0.001953125f, em < 8u);                                    \
    v = select(v, (ftype)(NAN), em == 0x7fu);                                                      \
    return as_##ftype(as_##utype(v) | sign);                                                       \
  }
NARROW_TO_F32(16, uint16, float16)
NARROW_TO_F32(8, uint8, float8)
#undef NARROW_TO_F32

inline float hsum16(float16 v) {
  const float8 a = v.lo + v.hi;
  const float4 b = a.lo + a.hi;
  const float2 c = b.lo + b.hi;
  return c.x + c.y;
}

// Typed access by a dtype code known at build time: STORAGE(code) is the
// element type, LOAD1(code, p) and LOAD16(code, p) read 1 or 16 elements at
// p as f32.
#define MOERT_CAT_(a, b) a##b
#define MOERT_CAT(a, b) MOERT_CAT_(a, b)
#define STORAGE_0 float
#define STORAGE_1 ushort
#define STORAGE_2 ushort
#define STORAGE_3 uchar
#define LOAD1_0(p) (*(p))
#define LOAD1_1(p) f16_to_f32(*(p))
#define LOAD1_2(p) bf16_to_f32(*(p))
#define LOAD1_3(p) e4m3_to_f32(*(p))
#define LOAD16_0(p) vload16(0, p)
#define LOAD16_1(p) f16x16_to_f32(vload16(0, p))
#define LOAD16_2(p) bf16x16_to_f32(vload16(0, p))
#define LOAD16_3(p) e4m3x16_to_f32(vload16(0, p))
#define STORAGE(code) MOERT_CAT(STORAGE_, code)
#define LOAD1(code, p) MOERT_CAT(LOAD1_, code)(p)
#define LOAD16(code, p) MOERT_CAT(LOAD16_, code)(p)

// ---------------------------------------------------------------------------
// Loads and stores of element i of a float tensor of run-time dtype dt
// (f32, f16, bf16 or f8_e4m3), through f32.  Every value of those dtypes is
// exact in f32, so a load then a store rounds once.

inline float load_f(global const uchar* p, ulong i, int dt) {
  switch (dt) {
    case DT_F16:
      return f16_to_f32(((global const ushort*)p)[i]);
    case DT_BF16:
      return bf16_to_f32(((global const ushort*)p)[i]);
    case DT_F8:
      return e4m3_to_f32(p[i]);
    default:
      return ((global const float*)p)[i];
  }
}

inline void store_f(global uchar* p, ulong i, int dt, float v) {
  switch (dt) {
    case DT_F16:
      ((global ushort*)p)[i] = f32_to_f16(v);
      break;
    case DT_BF16:
      ((global ushort*)p)[i] = f32_to_bf16(v);
      break;
    case DT_F8:
      p[i] = f32_to_e4m3(v);
      break;
    default:
      ((global float*)p)[i] = v;
      break;
  }
}

// The clamped gated activation of ops/swiglu_params.h in f32:
//   min(g, limit) sigmoid(alpha min(g, limit)) (clamp(u, -limit, limit) + up_offset)
// with the comparisons of std::min / std::clamp (a NaN passes through; the
// built-in min/fmin differ on NaN).  limit is +inf when there is no clamp.
inline float swiglu_act(float g, float u, float alpha, float limit, float up_offset) {
  g = limit < g ? limit : g;
  u = u < -limit ? -limit : (limit < u ? limit : u);
  return g / (1.0f + exp(-alpha * g)) * (u + up_offset);
}

// A wide value rounded to f32 toward zero with the lost bits folded into the
// last bit ("round to odd"): rounding that to a narrower format then gives
// the same result as rounding the wide value directly (no double rounding).
inline float wide_to_f32_odd(wide v) {
#if MOERT_FP64
  float f = convert_float_rtz(v);
  if (!isnan(v) && (wide)f != v) f = as_float(as_uint(f) | 1u);
  return f;
#else
  return v;
#endif
}

// Element i of a tensor of any dtype, widened (integers exactly up to 2^53
// with fp64, as the reference does).
inline wide load_w(global const uchar* p, ulong i, int dt) {
  switch (dt) {
    case DT_I8:
      return (wide)((global const char*)p)[i];
    case DT_U8:
      return (wide)p[i];
    case DT_I32:
      return (wide)((global const int*)p)[i];
    case DT_I64:
      return (wide)((global const long*)p)[i];
    case DT_BOOL:
      return p[i] ? (wide)1 : (wide)0;
    default:
      return (wide)load_f(p, i, dt);
  }
}

// Stores a wide value: floats round once to nearest even, integers truncate
// toward zero and saturate, NaN stores 0, bool is v != 0.
inline void store_w(global uchar* p, ulong i, int dt, wide v) {
  const int nan = isnan(v);
  switch (dt) {
    case DT_F32:
      ((global float*)p)[i] = (float)v;
      break;
    case DT_F16:
    case DT_BF16:
    case DT_F8:
      store_f(p, i, dt, wide_to_f32_odd(v));
      break;
    case DT_I8:
      ((global char*)p)[i] = nan ? 0 : convert_char_sat_rtz(v);
      break;
    case DT_U8:
      p[i] = nan ? 0 : convert_uchar_sat_rtz(v);
      break;
    case DT_I32:
      ((global int*)p)[i] = nan ? 0 : convert_int_sat_rtz(v);
      break;
    case DT_I64:
      ((global long*)p)[i] = nan ? 0 : convert_long_sat_rtz(v);
      break;
    case DT_BOOL:
      p[i] = (!nan && v != (wide)0) ? 1 : 0;
      break;
  }
}

// An integer id (i32 or i64 by `is64`) at position i.
inline long load_id(global const uchar* p, ulong i, int is64) {
  return is64 ? ((global const long*)p)[i] : (long)((global const int*)p)[i];
}

// Records an error at `position` in slot `slot`: the smallest position wins.
inline void report_error(global int* errors, int slot, long position) {
  atomic_min(errors + slot, (int)min(position, (long)0x7ffffffe));
}

// ---------------------------------------------------------------------------
// Work-group reductions over get_local_size(0) (a power of two) work-items.
// `scratch` holds one float per work-item; every work-item must call.

inline float wg_sum(float v, local float* scratch) {
  const int lid = get_local_id(0);
  scratch[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = get_local_size(0) / 2; s > 0; s >>= 1) {
    if (lid < s) scratch[lid] += scratch[lid + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  const float r = scratch[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}

inline float wg_max(float v, local float* scratch) {
  const int lid = get_local_id(0);
  scratch[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = get_local_size(0) / 2; s > 0; s >>= 1) {
    if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  const float r = scratch[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}
