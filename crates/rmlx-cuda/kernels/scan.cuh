// rmlx CUDA scans (needs reduce.cuh for the accumulators and combining functors). The input
// is contiguous [outer, n, inner]; exclusive scans start from the op's identity, as on the CPU.
// The direction (REV) and inclusiveness (INCL) are run-time flags, uniform over the launch.

#define SCAN_ITEMS 4

// inner == 1: a block per row; each tile of blockDim.x * SCAN_ITEMS elements is scanned by
// per-thread sequential runs, a warp-shuffle scan of the run totals and a scan of the warp
// totals, then offset by the carry of the earlier tiles.
template <class T, class A, class LD, class ST, class OP>
__device__ __forceinline__ void scan_rows(const T* __restrict__ x, i64 nrows, i64 n,
                                          bool REV, bool INCL, T* __restrict__ y, A init) {
  __shared__ A shw[32];
  LD ld; ST st; OP f;
  int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, nw = blockDim.x >> 5;
  for (i64 r = blockIdx.x; r < nrows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    A carry = init;
    for (i64 base = 0; base < n; base += (i64)blockDim.x * SCAN_ITEMS) {
      A v[SCAN_ITEMS];
      i64 p0 = base + (i64)tid * SCAN_ITEMS;
      A tot = init;
#pragma unroll
      for (int q = 0; q < SCAN_ITEMS; ++q) {
        i64 p = p0 + q;
        if (p < n) tot = f(tot, ld(xr[REV ? n - 1 - p : p]));
        v[q] = tot;
      }
      // inclusive warp scan of the run totals
      A s = tot;
      for (int o = 1; o < 32; o <<= 1) {
        A t = __shfl_up_sync(0xffffffffu, s, o);
        if (lane >= o) s = f(t, s);
      }
      A prev = __shfl_up_sync(0xffffffffu, s, 1);
      if (lane == 0) prev = init;
      if (lane == 31) shw[w] = s;
      __syncthreads();
      if (w == 0) {
        A u = lane < nw ? shw[lane] : init;
        for (int o = 1; o < 32; o <<= 1) {
          A t = __shfl_up_sync(0xffffffffu, u, o);
          if (lane >= o) u = f(t, u);
        }
        if (lane < nw) shw[lane] = u;
      }
      __syncthreads();
      A pre = f(carry, f(w == 0 ? init : shw[w - 1], prev));
#pragma unroll
      for (int q = 0; q < SCAN_ITEMS; ++q) {
        i64 p = p0 + q;
        if (p < n) {
          A o = INCL ? f(pre, v[q]) : (q == 0 ? pre : f(pre, v[q - 1]));
          yr[REV ? n - 1 - p : p] = st(o);
        }
      }
      carry = f(carry, shw[nw - 1]);
      __syncthreads();
    }
  }
}

// inner > 1: a thread per (outer, inner) lane, sequential along n (coalesced across inner).
template <class T, class A, class LD, class ST, class OP>
__device__ __forceinline__ void scan_cols(const T* __restrict__ x, i64 outer, i64 n, i64 inner,
                                          bool REV, bool INCL, T* __restrict__ y, A init) {
  LD ld; ST st; OP f;
  i64 lanes = outer * inner;
  GRID_LOOP(t, lanes) {
    i64 o = t / inner, q = t - o * inner;
    const T* xs = x + o * n * inner + q;
    T* ys = y + o * n * inner + q;
    A acc = init;
    for (i64 s = 0; s < n; ++s) {
      i64 k = REV ? n - 1 - s : s;
      A nx = f(acc, ld(xs[k * inner]));
      ys[k * inner] = st(INCL ? nx : acc);
      acc = nx;
    }
  }
}
