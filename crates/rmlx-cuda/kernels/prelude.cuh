// rmlx CUDA prelude: dtypes, conversions with the CPU backend's semantics, strided indexing.
// Self-contained (no CUDA headers), so NVRTC needs nothing beyond itself.

typedef unsigned char u8;
typedef unsigned char boolean;
typedef unsigned int u32;
typedef int i32;
typedef long long i64;
typedef unsigned long long u64;
struct f16 { unsigned short b; };
struct bf16 { unsigned short b; };

#define MAX_DIMS 10
struct Lay { i64 shape[MAX_DIMS]; i64 strides[MAX_DIMS]; int ndim; int pad; };

// Programmatic dependent launch (sm_90+, launch.rs): every kernel first lets the next kernel
// of the stream be scheduled, then waits until the previous one has finished and its writes
// are visible, so a kernel's launch overlaps its predecessor's tail instead of following it.
// kernels.rs inserts the call at the top of every entry point; without the launch attribute
// both instructions return at once.
__device__ __forceinline__ void rmlx_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void rmlx_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void rmlx_pdl_entry() {
  rmlx_pdl_trigger();
  rmlx_pdl_wait();
}
// An entry point whose body starts with this marker calls rmlx_pdl_trigger and rmlx_pdl_wait
// itself (on every path, before it touches memory another kernel writes): it may read
// constant data (weights) before the wait.
#define RMLX_PDL_MANUAL

// A grid-stride loop: `GRID_LOOP(i, n) { ... }` visits i = 0..n across the whole grid.
#define GRID_LOOP(i, n) \
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// Element offset of row-major index i in a strided layout.
__device__ __forceinline__ i64 loc(i64 i, const Lay& l) {
  i64 off = 0;
  for (int d = l.ndim - 1; d >= 0; --d) {
    i64 n = l.shape[d];
    off += (i % n) * l.strides[d];
    i /= n;
  }
  return off;
}

// loc for an index and extents below 2^32: 32-bit divisions (a 64-bit one is a long routine).
__device__ __forceinline__ i64 loc32(u32 i, const Lay& l) {
  i64 off = 0;
  for (int d = l.ndim - 1; d >= 0; --d) {
    const u32 n = (u32)l.shape[d];
    off += (i64)(i % n) * l.strides[d];
    i /= n;
  }
  return off;
}

__device__ __forceinline__ float h2f(unsigned short h) { float r; asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(h)); return r; }
__device__ __forceinline__ unsigned short f2h(float v) { unsigned short r; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(v)); return r; }
__device__ __forceinline__ float bh2f(unsigned short h) { return __int_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ unsigned short f2bh(float v) { unsigned short r; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v)); return r; }

// To float (the compute type of float ops).
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(f16 v) { return h2f(v.b); }
__device__ __forceinline__ float to_f(bf16 v) { return bh2f(v.b); }
__device__ __forceinline__ float to_f(u8 v) { return (float)v; }
__device__ __forceinline__ float to_f(u32 v) { return (float)v; }
__device__ __forceinline__ float to_f(i32 v) { return (float)v; }
__device__ __forceinline__ float to_f(i64 v) { return (float)v; }

__device__ __forceinline__ double to_d(float v) { return v; }
__device__ __forceinline__ double to_d(f16 v) { return h2f(v.b); }
__device__ __forceinline__ double to_d(bf16 v) { return bh2f(v.b); }
__device__ __forceinline__ double to_d(u8 v) { return v; }
__device__ __forceinline__ double to_d(u32 v) { return v; }
__device__ __forceinline__ double to_d(i32 v) { return v; }
__device__ __forceinline__ double to_d(i64 v) { return (double)v; }

template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ f16 from_f<f16>(float v) { f16 r; r.b = f2h(v); return r; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { bf16 r; r.b = f2bh(v); return r; }

// Float → integer as Rust's `as`: truncate, saturate, NaN → 0.
template <class T> __device__ __forceinline__ T sat_int(double d, double lo, double hi) {
  if (d != d) return (T)0;
  if (d <= lo) return (T)lo;
  if (d >= hi) return (T)hi;
  return (T)d;
}
template <class T> __device__ __forceinline__ T from_d(double v);
template <> __device__ __forceinline__ u8 from_d<u8>(double v) { return sat_int<u8>(v, 0.0, 255.0); }
template <> __device__ __forceinline__ u32 from_d<u32>(double v) { return sat_int<u32>(v, 0.0, 4294967295.0); }
template <> __device__ __forceinline__ i32 from_d<i32>(double v) { return sat_int<i32>(v, -2147483648.0, 2147483647.0); }
template <> __device__ __forceinline__ i64 from_d<i64>(double v) {
  if (v != v) return 0;
  if (v >= 9223372036854775807.0) return 9223372036854775807LL;
  if (v <= -9223372036854775808.0) return (-9223372036854775807LL - 1);
  return (i64)v;
}

template <class T> __device__ __forceinline__ bool is_float_t() { return false; }
template <> __device__ __forceinline__ bool is_float_t<float>() { return true; }
template <> __device__ __forceinline__ bool is_float_t<f16>() { return true; }
template <> __device__ __forceinline__ bool is_float_t<bf16>() { return true; }

// Integer value of an integer element (for int → int casts, through i64 as the CPU does).
__device__ __forceinline__ i64 to_i(u8 v) { return v; }
__device__ __forceinline__ i64 to_i(u32 v) { return v; }
__device__ __forceinline__ i64 to_i(i32 v) { return v; }
__device__ __forceinline__ i64 to_i(i64 v) { return v; }
__device__ __forceinline__ i64 to_i(float v) { return (i64)v; }
__device__ __forceinline__ i64 to_i(f16 v) { return (i64)h2f(v.b); }
__device__ __forceinline__ i64 to_i(bf16 v) { return (i64)bh2f(v.b); }

__device__ __forceinline__ bool nonzero(float v) { return v != 0.0f; }
__device__ __forceinline__ bool nonzero(f16 v) { return h2f(v.b) != 0.0f; }
__device__ __forceinline__ bool nonzero(bf16 v) { return bh2f(v.b) != 0.0f; }
__device__ __forceinline__ bool nonzero(u8 v) { return v != 0; }
__device__ __forceinline__ bool nonzero(u32 v) { return v != 0; }
__device__ __forceinline__ bool nonzero(i32 v) { return v != 0; }
__device__ __forceinline__ bool nonzero(i64 v) { return v != 0; }

// 8 consecutive elements (16-byte aligned; 32 bytes for f32) as f32.
__device__ __forceinline__ void load8(const float* __restrict__ p, float* o) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 c = *reinterpret_cast<const float4*>(p + 4);
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
  o[4] = c.x; o[5] = c.y; o[6] = c.z; o[7] = c.w;
}
__device__ __forceinline__ void load8(const f16* __restrict__ p, float* o) {
  const uint4 a = *reinterpret_cast<const uint4*>(p);
  const u32 w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    o[2 * j] = h2f((unsigned short)(w[j] & 0xffffu));
    o[2 * j + 1] = h2f((unsigned short)(w[j] >> 16));
  }
}
__device__ __forceinline__ void load8(const bf16* __restrict__ p, float* o) {
  const uint4 a = *reinterpret_cast<const uint4*>(p);
  const u32 w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    o[2 * j] = __int_as_float(w[j] << 16);
    o[2 * j + 1] = __int_as_float(w[j] & 0xffff0000u);
  }
}


__device__ __forceinline__ float kmax_f(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float kmin_f(float a, float b) { return (a < b || a != a) ? a : b; }

// Block-wide reductions over float (blockDim.x a multiple of 32, at most 1024).
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = kmax_f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ float block_sum(float v) {
  __shared__ float s_part[32];
  v = warp_sum(v);
  int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  __syncthreads();
  if (l == 0) s_part[w] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = (threadIdx.x < nw) ? s_part[threadIdx.x] : 0.0f;
  if (w == 0) v = warp_sum(v);
  if (threadIdx.x == 0) s_part[0] = v;
  __syncthreads();
  return s_part[0];
}
__device__ float block_max(float v) {
  __shared__ float s_part[32];
  v = warp_max(v);
  int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  __syncthreads();
  if (l == 0) s_part[w] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = (threadIdx.x < nw) ? s_part[threadIdx.x] : -__int_as_float(0x7f800000);
  if (w == 0) v = warp_max(v);
  if (threadIdx.x == 0) s_part[0] = v;
  __syncthreads();
  return s_part[0];
}

__device__ __forceinline__ float sigmoid_f(float x) {
  float e = expf(-fabsf(x));
  float s = 1.0f / (1.0f + e);
  return x >= 0.0f ? s : e * s;
}
// Python's %: the result takes the divisor's sign.
__device__ __forceinline__ float py_fmod(float x, float y) {
  float r = fmodf(x, y);
  return (r != 0.0f && ((r < 0.0f) != (y < 0.0f))) ? r + y : r;
}
template <class T> __device__ __forceinline__ bool is_neg(T v) { return v < (T)0 && (T)-1 < (T)0; }
// Integer division with Python's rounding and the CPU's rules: x / 0 = 0, wrapping overflow.
template <class T> __device__ __forceinline__ T int_floordiv(T x, T y) {
  if (y == 0) return 0;
  if ((T)-1 < (T)0 && y == (T)-1) return (T)(0ULL - (u64)x);
  T q = x / y, r = x % y;
  return (r != 0 && (is_neg(r) != is_neg(y))) ? (T)(q - 1) : q;
}
template <class T> __device__ __forceinline__ T int_pmod(T x, T y) {
  if (y == 0) return 0;
  if ((T)-1 < (T)0 && y == (T)-1) return 0;
  T r = x % y;
  return (r != 0 && (is_neg(r) != is_neg(y))) ? (T)(r + y) : r;
}
template <class T> __device__ __forceinline__ T int_pow(T b, T e) {
  if (is_neg(e)) {
    if (b == 1) return 1;
    if ((T)(b + 1) == 0) return (e % 2 == 0) ? (T)1 : b;
    return 0;
  }
  T acc = 1;
  while (e != 0) {
    if (e & 1) acc = (T)((u64)acc * (u64)b);
    b = (T)((u64)b * (u64)b);
    e >>= 1;
  }
  return acc;
}
