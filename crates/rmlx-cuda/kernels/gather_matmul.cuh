// rmlx CUDA: gather_qmm / gather_mm (mixture-of-experts products). Entry `bat` of the index
// batch multiplies x[lhs[bat]] by matrix rhs[bat]. Follows quantized.cuh (rq_qmv_t_mat,
// rq_code). Indices are clamped to their batch (out-of-range indices are undefined in MLX; here
// they read a valid matrix instead of faulting).

__device__ __forceinline__ i64 rg_index(const u32* __restrict__ idx, i64 bat, i64 len) {
  const i64 i = idx[bat];
  return i < len ? i : len - 1;
}

// Decode: the quantized GEMV of quantized.cuh per index entry; blockIdx.y strides over the
// entries, so only the selected experts' weights are read.
template <class TX, class TS, class TO, int BITS, int MM>
__device__ void rg_gather_qmv_t(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                                const TS* __restrict__ b, TO* __restrict__ y, const u32* __restrict__ lhs,
                                const u32* __restrict__ rhs, i64 nb, i64 bx, i64 ne, int M, i64 N, i64 K,
                                int gs_shift, i64 xbs, i64 wbs, i64 sbs, i64 ybs) {
  for (i64 bat = blockIdx.y; bat < nb; bat += gridDim.y) {
    const i64 li = rg_index(lhs, bat, bx), ri = rg_index(rhs, bat, ne);
    rq_qmv_t_mat<TX, TS, TO, BITS, MM, 1>(x + li * xbs, w + ri * wbs, s + ri * sbs, b + ri * sbs, y + bat * ybs, M,
                                       N, K, gs_shift);
  }
}

// Any shape: one warp per output element, lanes split K; weights [N, K] (transpose) or [K, N].
template <class TX, class TS, class TO>
__device__ void rg_gather_qmm_any(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                                  const TS* __restrict__ b, TO* __restrict__ y, const u32* __restrict__ lhs,
                                  const u32* __restrict__ rhs, i64 nb, i64 bx, i64 ne, i64 M, i64 N, i64 K,
                                  int gs, int bits, int transpose) {
  const int lane = threadIdx.x & 31;
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  const i64 rl = transpose ? K : N;  // unpacked row length of the stored matrices
  const i64 W = rl * bits / 32, G = rl / gs, rows = transpose ? N : K;
  for (i64 o = (((i64)blockIdx.x * blockDim.x) + threadIdx.x) >> 5; o < nb * M * N; o += warps) {
    const i64 bat = o / (M * N), m = (o / N) % M, n = o % N;
    const i64 li = rg_index(lhs, bat, bx), ri = rg_index(rhs, bat, ne);
    const TX* xr = x + (li * M + m) * K;
    const u32* wm = w + ri * rows * W;
    const TS* sm = s + ri * rows * G;
    const TS* bm = b + ri * rows * G;
    float acc = 0.0f;
    for (i64 k = lane; k < K; k += 32) {
      const i64 r = transpose ? n : k, c = transpose ? k : n;
      const float q = (float)rq_code(wm + r * W, c, bits);
      const float wv = fmaf(to_f(sm[r * G + c / gs]), q, to_f(bm[r * G + c / gs]));
      acc = fmaf(to_f(xr[k]), wv, acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[o] = from_f<TO>(acc);
  }
}

// Float gather_mm: a [Bx, M, K] contiguous, b [E, K, N] strided (a transposed view of
// [E, N, K] weights has bk == 1, so the lanes' reads along K coalesce); one warp per output.
template <class T>
__device__ void rg_gather_mm(const T* __restrict__ a, const T* __restrict__ bmat, T* __restrict__ y,
                             const u32* __restrict__ lhs, const u32* __restrict__ rhs, i64 nb, i64 bx, i64 ne,
                             i64 M, i64 N, i64 K, i64 be, i64 bk, i64 bn) {
  const int lane = threadIdx.x & 31;
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 o = (((i64)blockIdx.x * blockDim.x) + threadIdx.x) >> 5; o < nb * M * N; o += warps) {
    const i64 bat = o / (M * N), m = (o / N) % M, n = o % N;
    const i64 li = rg_index(lhs, bat, bx), ri = rg_index(rhs, bat, ne);
    const T* ar = a + (li * M + m) * K;
    const T* bc = bmat + ri * be + n * bn;
    float acc = 0.0f;
    for (i64 k = lane; k < K; k += 32) acc = fmaf(to_f(ar[k]), to_f(bc[k * bk]), acc);
    acc = warp_sum(acc);
    if (lane == 0) y[o] = from_f<T>(acc);
  }
}
