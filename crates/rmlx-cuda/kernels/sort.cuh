// rmlx CUDA sorting: bitonic networks over (key, index) items, ordered lexicographically so the
// result is the stable sort. Keys map values to unsigned integers in the CPU backend's order:
// floats through f32 with -0 == +0 and every NaN equal and after +inf, signed integers with
// the sign bit flipped. Lanes are the [pre, n, post] view of a contiguous array: lane l is
// (p, q) = (l / post, l % post), its element i sits at p * n * post + i * post + q.

// 32-bit keys and the index packed in one u64 (key high); i64 keys need a pair.
typedef u64 It32;
struct It64 { u64 k; u32 i; u32 pad; };

__device__ __forceinline__ It32 mk_item(u32 k, u32 i) { return ((u64)k << 32) | (u64)i; }
__device__ __forceinline__ It64 mk_item(u64 k, u32 i) { It64 r; r.k = k; r.i = i; r.pad = 0; return r; }
__device__ __forceinline__ bool lt(It32 a, It32 b) { return a < b; }
__device__ __forceinline__ bool lt(const It64& a, const It64& b) { return a.k < b.k || (a.k == b.k && a.i < b.i); }
__device__ __forceinline__ u32 item_idx(It32 a) { return (u32)a; }
__device__ __forceinline__ u32 item_idx(const It64& a) { return a.i; }
template <class It> __device__ __forceinline__ It pad_item();
template <> __device__ __forceinline__ It32 pad_item<It32>() { return ~0ULL; }
template <> __device__ __forceinline__ It64 pad_item<It64>() { It64 r; r.k = ~0ULL; r.i = 0xffffffffu; r.pad = 0; return r; }

__device__ __forceinline__ u32 fkey(float f) {
  if (f != f) return 0xffffffffu;
  u32 u = (f == 0.0f) ? 0u : __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ u32 skey(float v) { return fkey(v); }
__device__ __forceinline__ u32 skey(f16 v) { return fkey(to_f(v)); }
__device__ __forceinline__ u32 skey(bf16 v) { return fkey(to_f(v)); }
__device__ __forceinline__ u32 skey(u8 v) { return v; }
__device__ __forceinline__ u32 skey(u32 v) { return v; }
__device__ __forceinline__ u32 skey(i32 v) { return (u32)v ^ 0x80000000u; }
__device__ __forceinline__ u64 skey(i64 v) { return (u64)v ^ 0x8000000000000000ULL; }

template <class T> struct ItemOf { typedef decltype(mk_item(skey(T{}), 0u)) type; };

template <class It> __device__ __forceinline__ void cmpx(It* s, i64 a, i64 b, bool asc) {
  It u = s[a], v = s[b];
  if (asc ? lt(v, u) : lt(u, v)) { s[a] = v; s[b] = u; }
}

// The bitonic stages k = klo..khi (powers of two) of S items in shared memory, the first of
// which sits at position pos0 of its lane (the direction of a pair depends on its position);
// substeps j from min(k, S) / 2 down to 1. All threads of the block call it.
template <class It> __device__ __forceinline__ void bitonic_shared(It* s, int S, i64 pos0, i64 klo, i64 khi) {
  for (i64 k = klo; k <= khi; k <<= 1) {
    int j0 = (int)((k >> 1) < (i64)(S >> 1) ? (k >> 1) : (i64)(S >> 1));
    for (int j = j0; j > 0; j >>= 1) {
      for (int t = threadIdx.x; t < (S >> 1); t += blockDim.x) {
        int i = ((t & ~(j - 1)) << 1) | (t & (j - 1));
        cmpx(s, i, i + j, ((pos0 + i) & k) == 0);
      }
      __syncthreads();
    }
  }
}

// A whole lane sorted in shared memory (P = power of two >= n items of dynamic shared memory).
template <class T, bool IDX>
__device__ __forceinline__ void sort_small(const T* __restrict__ x, i64 nlanes, i64 n, i64 post, int P, void* out) {
  typedef typename ItemOf<T>::type It;
  extern __shared__ u64 smem_sort[];
  It* s = (It*)smem_sort;
  for (i64 l = blockIdx.x; l < nlanes; l += gridDim.x) {
    i64 p = l / post, q = l - p * post;
    i64 base = p * n * post + q;
    for (int i = threadIdx.x; i < P; i += blockDim.x)
      s[i] = i < n ? mk_item(skey(x[base + i * post]), (u32)i) : pad_item<It>();
    __syncthreads();
    bitonic_shared(s, P, 0, 2, P);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      u32 id = item_idx(s[i]);
      if (IDX) ((u32*)out)[base + i * post] = id;
      else ((T*)out)[base + i * post] = x[base + (i64)id * post];
    }
    __syncthreads();
  }
}

// Global path for long lanes: items [nlanes, P] in global memory.
template <class T>
__device__ __forceinline__ void sort_init(const T* __restrict__ x, i64 nlanes, i64 n, i64 post, int logp, typename ItemOf<T>::type* items) {
  typedef typename ItemOf<T>::type It;
  i64 P = (i64)1 << logp, total = nlanes * P;
  GRID_LOOP(g, total) {
    i64 l = g >> logp, i = g & (P - 1);
    if (i < n) {
      i64 p = l / post, q = l - p * post;
      items[g] = mk_item(skey(x[p * n * post + i * post + q]), (u32)i);
    } else {
      items[g] = pad_item<It>();
    }
  }
}

// Blocks of S items (dynamic shared memory) through stages klo..khi.
template <class It>
__device__ __forceinline__ void sort_block(It* items, i64 total, int S, i64 P, i64 klo, i64 khi) {
  extern __shared__ u64 smem_sort[];
  It* s = (It*)smem_sort;
  i64 nblk = total / S;
  for (i64 b = blockIdx.x; b < nblk; b += gridDim.x) {
    It* g = items + b * S;
    for (int i = threadIdx.x; i < S; i += blockDim.x) s[i] = g[i];
    __syncthreads();
    bitonic_shared(s, S, (b * S) & (P - 1), klo, khi);
    for (int i = threadIdx.x; i < S; i += blockDim.x) g[i] = s[i];
    __syncthreads();
  }
}

// One substep (k, j) over all lanes, a thread per pair.
template <class It>
__device__ __forceinline__ void sort_step(It* items, i64 total, i64 P, i64 k, i64 j) {
  i64 pairs = total >> 1;
  GRID_LOOP(t, pairs) {
    i64 i = ((t & ~(j - 1)) << 1) | (t & (j - 1));
    cmpx(items, i, i + j, ((i & (P - 1)) & k) == 0);
  }
}

template <class T, bool IDX>
__device__ __forceinline__ void sort_out(const T* __restrict__ x, i64 nlanes, i64 n, i64 post, int logp, const typename ItemOf<T>::type* items, void* out) {
  i64 total = nlanes * n;
  GRID_LOOP(g, total) {
    i64 l = g / n, i = g - l * n;
    i64 p = l / post, q = l - p * post;
    i64 base = p * n * post + q;
    u32 id = item_idx(items[(l << logp) + i]);
    if (IDX) ((u32*)out)[base + i * post] = id;
    else ((T*)out)[base + i * post] = x[base + (i64)id * post];
  }
}
