// rmlx CUDA softmax / logsumexp over the last axis of contiguous rows, in f32 with the CPU
// backend's steps: m = NaN-propagating row max, s = sum(exp(x - m)); softmax stores
// exp(x - m) * (1 / s), logsumexp stores m where m is ±inf or NaN, else m + log(s).

// A warp per row (WARP) or a block per row; rows of `n` elements at x + r * n.
template <class T, bool WARP, bool LSE>
__device__ __forceinline__ void softmax_rows(const T* __restrict__ x, i64 nrows, i64 n,
                                             T* __restrict__ y) {
  int g, lane; i64 r0, rstep;
  if (WARP) {
    g = 32; lane = threadIdx.x & 31;
    r0 = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    rstep = (i64)gridDim.x * (blockDim.x >> 5);
  } else {
    g = blockDim.x; lane = threadIdx.x; r0 = blockIdx.x; rstep = gridDim.x;
  }
  for (i64 r = r0; r < nrows; r += rstep) {
    const T* xr = x + r * n;
    float m = -__int_as_float(0x7f800000);
#pragma unroll 4
    for (i64 j = lane; j < n; j += g) m = kmax_f(m, to_f(xr[j]));
    m = WARP ? warp_max(m) : block_max(m);
    float s = 0.0f;
#pragma unroll 4
    for (i64 j = lane; j < n; j += g) s += expf(to_f(xr[j]) - m);
    s = WARP ? warp_sum(s) : block_sum(s);
    if (LSE) {
      if (lane == 0) {
        bool special = (m != m) || fabsf(m) == __int_as_float(0x7f800000);
        y[r] = from_f<T>(special ? m : m + logf(s));
      }
    } else {
      float inv = 1.0f / s;
      T* yr = y + r * n;
  #pragma unroll 4
    for (i64 j = lane; j < n; j += g) yr[j] = from_f<T>(expf(to_f(xr[j]) - m) * inv);
    }
  }
}
