// rmlx CUDA reductions: accumulators with the CPU backend's rules (floats in f32, NaN
// propagating max/min; integers wrap in their own width; bool/u8 accumulate in u32, which
// wraps modulo 2^32 and so agrees with u8 wrapping in the low byte), group reductions over a
// warp or a block, and the generic row reduction all `Reduce` kernels instantiate.

// Wrapping arithmetic and the NaN-propagating max/min of one accumulator type.
__device__ __forceinline__ float wadd(float a, float b) { return a + b; }
__device__ __forceinline__ u32 wadd(u32 a, u32 b) { return a + b; }
__device__ __forceinline__ i32 wadd(i32 a, i32 b) { return (i32)((u32)a + (u32)b); }
__device__ __forceinline__ i64 wadd(i64 a, i64 b) { return (i64)((u64)a + (u64)b); }
__device__ __forceinline__ float wmul(float a, float b) { return a * b; }
__device__ __forceinline__ u32 wmul(u32 a, u32 b) { return a * b; }
__device__ __forceinline__ i32 wmul(i32 a, i32 b) { return (i32)((u32)a * (u32)b); }
__device__ __forceinline__ i64 wmul(i64 a, i64 b) { return (i64)((u64)a * (u64)b); }
__device__ __forceinline__ float vmax(float a, float b) { return kmax_f(a, b); }
__device__ __forceinline__ float vmin(float a, float b) { return kmin_f(a, b); }
template <class A> __device__ __forceinline__ A vmax(A a, A b) { return a > b ? a : b; }
template <class A> __device__ __forceinline__ A vmin(A a, A b) { return a < b ? a : b; }

struct OpSum { template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return wadd(a, b); } };
struct OpProd { template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return wmul(a, b); } };
struct OpMax { template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return vmax(a, b); } };
struct OpMin { template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return vmin(a, b); } };

// Element → accumulator.
struct LdF { template <class T> __device__ __forceinline__ float operator()(T v) const { return to_f(v); } };
template <class A> struct LdCast { template <class T> __device__ __forceinline__ A operator()(T v) const { return (A)v; } };
// Accumulator → element.
template <class T> struct StF { __device__ __forceinline__ T operator()(float a) const { return from_f<T>(a); } };
template <class T> struct StCast { template <class A> __device__ __forceinline__ T operator()(A a) const { return (T)a; } };
struct StBool { __device__ __forceinline__ boolean operator()(u32 a) const { return (boolean)((a & 255u) != 0u); } };

template <class A, class F> __device__ __forceinline__ A warp_red(A v, F f) {
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// All threads of the block must call it; blockDim.x a multiple of 32. `sh` holds 32 values.
template <class A, class F> __device__ __forceinline__ A block_red(A v, F f, A* sh, A id) {
  v = warp_red(v, f);
  int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  __syncthreads();
  if (l == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    int nw = blockDim.x >> 5;
    A u = l < nw ? sh[l] : id;
    u = warp_red(u, f);
    if (l == 0) sh[0] = u;
  }
  __syncthreads();
  return sh[0];
}

// How threads are grouped over jobs: a block per job, a warp per job, or a thread per job.
#define RMODE_BLOCK 0
#define RMODE_WARP 1
#define RMODE_THREAD 2

template <int MODE> __device__ __forceinline__ void group_of(int& g, int& lane, i64& job0, i64& jstep) {
  if (MODE == RMODE_BLOCK) {
    g = blockDim.x; lane = threadIdx.x; job0 = blockIdx.x; jstep = gridDim.x;
  } else if (MODE == RMODE_WARP) {
    g = 32; lane = threadIdx.x & 31;
    job0 = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    jstep = (i64)gridDim.x * (blockDim.x >> 5);
  } else {
    g = 1; lane = 0;
    job0 = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    jstep = (i64)gridDim.x * blockDim.x;
  }
}

// Reduces `x` viewed as rows: row r starts at x + xo + loc(r, kl), its element j at j * rs.
// Each row is cut into `nchunk` chunks of `chunk` elements; job b is chunk c = b / nrows of
// row r = b % nrows (neighbouring threads take neighbouring rows) and writes y[r * nchunk + c].
template <class TI, class A, class TO, class LD, class ST, class OP, int MODE>
__device__ __forceinline__ void reduce_rows(const TI* __restrict__ x, i64 xo, const Lay& kl,
    i64 rs, i64 nrows, i64 nchunk, i64 chunk, i64 R, TO* __restrict__ y, A init) {
  __shared__ A sh[32];
  LD ld; ST st; OP f;
  int g, lane; i64 job0, jstep;
  group_of<MODE>(g, lane, job0, jstep);
  i64 njobs = nrows * nchunk;
  for (i64 b = job0; b < njobs; b += jstep) {
    i64 c = nchunk == 1 ? 0 : b / nrows;
    i64 r = b - c * nrows;
    i64 j0 = c * chunk, j1 = j0 + chunk < R ? j0 + chunk : R;
    const TI* xr = x + xo + loc(r, kl);
    A acc = init;
#pragma unroll 4
    for (i64 j = j0 + lane; j < j1; j += g) acc = f(acc, ld(xr[j * rs]));
    if (MODE == RMODE_BLOCK) acc = block_red(acc, f, sh, init);
    else if (MODE == RMODE_WARP) acc = warp_red(acc, f);
    if (lane == 0) y[r * nchunk + c] = st(acc);
  }
}

// Arg reductions: (value, index) pairs; the first NaN wins, ties keep the lower index, index
// 0xffffffff marks "no element" and always loses.
template <bool MAX, class A> __device__ __forceinline__ bool arg_wins(A va, u32 ia, A vb, u32 ib) {
  if (ib == 0xffffffffu) return true;
  if (ia == 0xffffffffu) return false;
  bool na = va != va, nb = vb != vb;
  if (na || nb) return na && (!nb || ia < ib);
  if (MAX ? (va > vb) : (va < vb)) return true;
  if (va == vb) return ia < ib;
  return false;
}
template <bool MAX, class A> __device__ __forceinline__ void arg_warp(A& v, u32& i) {
  for (int o = 16; o > 0; o >>= 1) {
    A v2 = __shfl_xor_sync(0xffffffffu, v, o);
    u32 i2 = __shfl_xor_sync(0xffffffffu, i, o);
    if (!arg_wins<MAX>(v, i, v2, i2)) { v = v2; i = i2; }
  }
}

template <class TI, class A, class LD, bool MAX, int MODE>
__device__ __forceinline__ void argreduce_rows(const TI* __restrict__ x, i64 xo, const Lay& kl,
    i64 rs, i64 nrows, i64 R, u32* __restrict__ y) {
  __shared__ A shv[32];
  __shared__ u32 shi[32];
  LD ld;
  int g, lane; i64 job0, jstep;
  group_of<MODE>(g, lane, job0, jstep);
  for (i64 r = job0; r < nrows; r += jstep) {
    const TI* xr = x + xo + loc(r, kl);
    A bv = (A)0;
    u32 bi = 0xffffffffu;
#pragma unroll 4
    for (i64 j = lane; j < R; j += g) {
      A v = ld(xr[j * rs]);
      if (arg_wins<MAX>(v, (u32)j, bv, bi)) { bv = v; bi = (u32)j; }
    }
    if (MODE != RMODE_THREAD) arg_warp<MAX>(bv, bi);
    if (MODE == RMODE_BLOCK) {
      int w = threadIdx.x >> 5;
      __syncthreads();
      if (lane % 32 == 0) { shv[w] = bv; shi[w] = bi; }
      __syncthreads();
      if (w == 0) {
        int nw = blockDim.x >> 5;
        bv = lane < nw ? shv[lane] : (A)0;
        bi = lane < nw ? shi[lane] : 0xffffffffu;
        arg_warp<MAX>(bv, bi);
      }
    }
    if (lane == 0) y[r] = bi == 0xffffffffu ? 0u : bi;
  }
}

// Few long rows (a decode step's argmax over the vocabulary): block (r, sp) of a grid
// (nrows, nsplit) reduces elements [sp * chunk, sp * chunk + chunk) of row r into
// (pv, pi)[r * nsplit + sp] with global indices; argreduce_merge (one block per row) then
// reduces the nsplit candidates with the same order (first NaN, then the extreme, then the
// lowest index), so the result equals the one-pass kernel's.
template <class TI, class A, class LD, bool MAX>
__device__ __forceinline__ void argreduce_split(const TI* __restrict__ x, i64 xo, const Lay& kl, i64 rs, i64 R,
                                                i64 chunk, A* __restrict__ pv, u32* __restrict__ pi) {
  __shared__ A shv[32];
  __shared__ u32 shi[32];
  LD ld;
  const i64 r = blockIdx.x;
  const int nsplit = gridDim.y, sp = blockIdx.y;
  const TI* xr = x + xo + loc(r, kl);
  const i64 j1 = min(R, (sp + 1) * chunk);
  A bv = (A)0;
  u32 bi = 0xffffffffu;
#pragma unroll 4
  for (i64 j = sp * chunk + threadIdx.x; j < j1; j += blockDim.x) {
    A v = ld(xr[j * rs]);
    if (arg_wins<MAX>(v, (u32)j, bv, bi)) { bv = v; bi = (u32)j; }
  }
  arg_warp<MAX>(bv, bi);
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) { shv[w] = bv; shi[w] = bi; }
  __syncthreads();
  if (w == 0) {
    const int nw = blockDim.x >> 5;
    bv = lane < nw ? shv[lane] : (A)0;
    bi = lane < nw ? shi[lane] : 0xffffffffu;
    arg_warp<MAX>(bv, bi);
    if (lane == 0) { pv[r * nsplit + sp] = bv; pi[r * nsplit + sp] = bi; }
  }
}

template <class A, bool MAX>
__device__ __forceinline__ void argreduce_merge(const A* __restrict__ pv, const u32* __restrict__ pi, int nsplit,
                                                u32* __restrict__ y) {
  const i64 r = blockIdx.x;
  const int lane = threadIdx.x;  // one warp per row
  A bv = (A)0;
  u32 bi = 0xffffffffu;
  for (int s = lane; s < nsplit; s += 32) {
    const A v = pv[r * nsplit + s];
    const u32 i = pi[r * nsplit + s];
    if (arg_wins<MAX>(v, i, bv, bi)) { bv = v; bi = i; }
  }
  arg_warp<MAX>(bv, bi);
  if (lane == 0) y[r] = bi == 0xffffffffu ? 0u : bi;
}
