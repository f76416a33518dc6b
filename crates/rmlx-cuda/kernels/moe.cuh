// rmlx CUDA: fused mixture-of-experts decode kernels (rmlx_core::fast::moe): routing, the gated
// expert MLP's first half, the down projection with the router's weighted sum. Compiled after
// quantized.cuh (rq_dot_rows, RQ_R).

// ---------------------------------------------------------------------------------------------
// Routing: one warp per row of logits [T, E], the row's scores in shared memory (E floats per
// warp). MODE 0: softmax then top k; 1: top k then a softmax over them; 2: sigmoid then top k.
// The selection runs on the logits (every mode's score is monotonic in them): k rounds of a
// warp argmax (two redux.sync), ties to the lower index; a chosen entry becomes NaN. Lane j < k
// keeps choice j.
// Row t of out [T, 2k] gets the indices, then the f32 bits of their weights.

// A float's bits as an unsigned key in the floats' order (-inf lowest, +inf highest; -0 below
// +0; key 0 belongs to the bits 0xFFFFFFFF, a NaN, so the selection keeps it for "none").
__device__ __forceinline__ u32 rm_order_key(float v) {
  const u32 b = __float_as_uint(v);
  return b ^ ((b >> 31) ? 0xffffffffu : 0x80000000u);
}

template <class TL, int MODE>
__device__ void rm_route(const TL* __restrict__ logits, u32* __restrict__ out, i64 T, int E, int k, int renorm) {
  extern __shared__ float rm_scores[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wpb = blockDim.x >> 5;
  float* s = rm_scores + (i64)warp * E;
  const float NEG = -__int_as_float(0x7f800000);
  for (i64 t = (i64)blockIdx.x * wpb + warp; t < T; t += (i64)gridDim.x * wpb) {
    const TL* l = logits + t * E;
    float mx = NEG;
    // unrolled so that a lane's loads (E / 32 of them) are in flight together
#pragma unroll 4
    for (int i = lane; i < E; i += 32) {
      float v = to_f(l[i]);
      if (v != v) v = NEG;  // a NaN logit is never chosen before a number
      s[i] = v;
      mx = fmaxf(mx, v);
    }
    mx = warp_max(mx);
    float z = 0.0f;
    if (MODE == 0) {
      for (int i = lane; i < E; i += 32) z += expf(s[i] - mx);
      z = warp_sum(z);
    }
    int mine = 0;
    float mv = NEG;
    for (int j = 0; j < k; ++j) {
      // the lane's best entry (ties to its lower index), then the warp's: the largest order key
      // by one redux, and among the lanes holding it the lowest index by another (where ten
      // dependent shuffles had run per round)
      float bv = NEG;
      int bi = 0x7fffffff;
      u32 bk = 0;  // NaN (chosen, or never to be): key 0, below every number
      for (int i = lane; i < E; i += 32) {
        const float v = s[i];
        if (v == v && (bk == 0 || v > bv)) {
          bv = v;
          bi = i;
          bk = rm_order_key(v + 0.0f);  // -0 as +0: they tie, as compared above
        }
      }
      const u32 top = __reduce_max_sync(0xffffffffu, bk);
      const int wi = (int)__reduce_min_sync(0xffffffffu, bk == top ? (u32)bi : 0x7fffffffu);
      const float wv = __shfl_sync(0xffffffffu, bv, wi & 31);  // the owner lane's best is wi's
      if (lane == j) {
        mine = wi;
        mv = wv;
      }
      if (lane == (wi & 31)) s[wi] = __int_as_float(0x7fc00000);  // only its owner lane reads it
    }
    float w;
    if (MODE == 0) {
      w = expf(mv - mx) / z;
    } else if (MODE == 1) {
      w = expf(mv - mx);  // the first choice is the row's maximum
    } else {
      w = 1.0f / (1.0f + expf(-mv));
    }
    if (MODE == 1 || renorm) w = w / warp_sum(lane < k ? w : 0.0f);
    if (lane < k) {
      out[t * 2 * k + lane] = (u32)mine;
      out[t * 2 * k + k + lane] = __float_as_uint(w);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Gate + up + SwiGLU: h[p, n] = silu(x[p / k] · Wg[e][n]) * (x[p / k] · Wu[e][n]) for each pair
// p (token p / k, chosen expert e = idx[p]). Each warp streams RM_R rows of both matrices (2 RM_R
// rows, the float decode kernel's loop), 4 warps per block; blockIdx.y strides over the pairs.
#define RM_R 2

// Entry j of row t of a [T, k] array whose rows are `rs` apart (the halves of the routing
// output are views with rows 2k apart).
template <class T>
__device__ __forceinline__ T rm_at(const T* __restrict__ a, i64 t, int j, i64 rs) {
  return a[t * rs + j];
}

// The chosen expert j of token t, clamped to the stack as gather_qmm's indices are.
__device__ __forceinline__ i64 rm_expert(const u32* __restrict__ idx, i64 t, int j, i64 rs, i64 E) {
  const i64 e = rm_at(idx, t, j, rs);
  return e < E ? e : E - 1;
}

// The RM_R gate rows (wr[0, RM_R)) and up rows (wr[RM_R, 2 RM_R)) from row0 of expert e.
template <class TS>
__device__ __forceinline__ void rm_pair_rows(const u32* wg, const TS* sg, const TS* bg, const u32* wu, const TS* su,
                                             const TS* bu, i64 e, i64 row0, i64 N, i64 W, i64 G, const u32** wr,
                                             const TS** sr, const TS** br) {
  rq_rows<TS, RM_R>(wg + e * N * W, sg + e * N * G, bg + e * N * G, row0, N, W, G, wr, sr, br);
  rq_rows<TS, RM_R>(wu + e * N * W, su + e * N * G, bu + e * N * G, row0, N, W, G, wr + RM_R, sr + RM_R, br + RM_R);
}

// silu(gate) * up of the warp's RM_R rows into the pair's output row h, both products scaled
// by `scale` (an RMS norm's 1/rms of x, else 1).
template <class TO>
__device__ __forceinline__ void rm_store_swiglu(const float (&acc)[2 * RM_R][1], TO* __restrict__ h, i64 row0,
                                                i64 N, float scale = 1.0f) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < RM_R; ++r) {
    const float g = warp_sum(acc[r][0]) * scale, u = warp_sum(acc[RM_R + r][0]) * scale;
    if (lane == 0 && row0 + r < N) h[row0 + r] = from_f<TO>(g * sigmoid_f(g) * u);
  }
}

template <class TX, class TS, class TO, int BITS>
__device__ void rm_gather_swiglu(const TX* __restrict__ x, const u32* __restrict__ wg, const TS* __restrict__ sg,
                                 const TS* __restrict__ bg, const u32* __restrict__ wu, const TS* __restrict__ su,
                                 const TS* __restrict__ bu, TO* __restrict__ h, const u32* __restrict__ idx,
                                 i64 irs, i64 P, int k, i64 E, i64 N, i64 K, int gs_shift) {
  const int warp = threadIdx.x >> 5;
  const i64 row0 = ((i64)blockIdx.x * (blockDim.x >> 5) + warp) * RM_R;
  if (row0 >= N) return;
  const i64 W = K * BITS / 32, G = K >> gs_shift;
  for (i64 p = blockIdx.y; p < P; p += gridDim.y) {
    const i64 e = rm_expert(idx, p / k, (int)(p % k), irs, E);
    const u32* wr[2 * RM_R];
    const TS* sr[2 * RM_R];
    const TS* br[2 * RM_R];
    rm_pair_rows<TS>(wg, sg, bg, wu, su, bu, e, row0, N, W, G, wr, sr, br);
    float acc[2 * RM_R][1];
#pragma unroll
    for (int r = 0; r < 2 * RM_R; ++r) acc[r][0] = 0.0f;
    rq_dot_rows<TX, TS, BITS, 2 * RM_R, 1, 1>(x + (p / k) * K, wr, sr, br, 1, K, gs_shift, 0, acc);
    rm_store_swiglu<TO>(acc, h + p * N, row0, N);
  }
}

// The same with int8 activations (4- or 8-bit weights, groups of 32 or more; the dense decode
// kernels' arithmetic, quantized.cuh rq_qmv8); each warp streams RM_R rows of both matrices, 2
// blocks of 32 codes in flight per row. XF: each block quantizes its pair's x row (of dtype TX)
// into dynamic shared memory itself (K codes, then K / 32 blocks of meta; x given, xq and meta
// null); else rq_quantize_x ran first (xq [T, K], meta [T, K/32] given, x null). NORM: x is
// RMS-normalised with weight nw and eps first (quantized as x ∘ nw, here or by rq_quantize_x;
// the products scaled by 1/rms: quantized.cuh RqXBlock).
template <class TX, class TS, class TO, int BITS, bool XF, bool NORM>
__device__ void rm_gather_swiglu8(const TX* __restrict__ x, const signed char* __restrict__ xq,
                                  const RqXBlock* __restrict__ meta, const TX* __restrict__ nw, float eps,
                                  const u32* __restrict__ wg,
                                  const TS* __restrict__ sg, const TS* __restrict__ bg, const u32* __restrict__ wu,
                                  const TS* __restrict__ su, const TS* __restrict__ bu, TO* __restrict__ h,
                                  const u32* __restrict__ idx, i64 irs, i64 P, int k, i64 E, i64 N, i64 K,
                                  int gs_shift) {
  extern __shared__ __align__(16) unsigned char rq_xsmem[];
  signed char* sq = reinterpret_cast<signed char*>(rq_xsmem);
  RqXBlock* sm = reinterpret_cast<RqXBlock*>(rq_xsmem + K);
  const int warp = threadIdx.x >> 5;
  const i64 row0 = ((i64)blockIdx.x * (blockDim.x >> 5) + warp) * RM_R;
  // with XF every warp takes part in the quantization, so none returns early
  if (!XF && row0 >= N) return;
  const i64 W = K * BITS / 32, G = K >> gs_shift;
  i64 have = -1;  // the token whose x sits in shared memory
  for (i64 p = blockIdx.y; p < P; p += gridDim.y) {
    const i64 t = p / k;
    if (XF && t != have) {
      __syncthreads();
      rq_quantize_x_block<TX, BITS, NORM>(x + t * K, nw, sq, sm, 1, K);
      __syncthreads();
      have = t;
    }
    if (row0 >= N) continue;
    const i64 e = rm_expert(idx, t, (int)(p % k), irs, E);
    const u32* wr[2 * RM_R];
    const TS* sr[2 * RM_R];
    const TS* br[2 * RM_R];
    rm_pair_rows<TS>(wg, sg, bg, wu, su, bu, e, row0, N, W, G, wr, sr, br);
    float acc[2 * RM_R][1], ss[1] = {0.0f};
#pragma unroll
    for (int r = 0; r < 2 * RM_R; ++r) acc[r][0] = 0.0f;
    if (XF) {
      rq_dot8_rows<TS, BITS, 1, 2 * RM_R, 2, true, NORM>(sq, sm, wr, sr, br, 1, K, gs_shift, acc, ss);
    } else {
      rq_dot8_rows<TS, BITS, 1, 2 * RM_R, 2, false, NORM>(xq + t * K, meta + t * (K >> 5), wr, sr, br, 1, K,
                                                          gs_shift, acc, ss);
    }
    rm_store_swiglu<TO>(acc, h + p * N, row0, N, NORM ? rq_inv_rms(warp_sum(ss[0]), K, eps) : 1.0f);
  }
}

// ---------------------------------------------------------------------------------------------
// Down + weighted sum: y[t, n] = res[t, n] + Σ_j wts[t, j] (h[t, j] · W[e_tj][n]) (res optional,
// null when absent). A block's warps (one per chosen expert, up to RM_DOWN_WARPS; the launch
// sets blockDim) share RQ_R rows and split the chosen experts (warp w takes j = w, w + nw, ...);
// the partial sums meet in shared memory. One expert per warp: with 4 warps for Qwen3's 8
// experts each warp walked two experts one after the other, two chains of dependent loads
// (index, then weights) in a kernel bound by latency. blockIdx.y strides over the tokens.
#define RM_DOWN_WARPS 8
template <class TX, class TS, class TO, class TR, int BITS>
__device__ void rm_gather_down_sum(const TX* __restrict__ h, const u32* __restrict__ w, const TS* __restrict__ s,
                                   const TS* __restrict__ b, TO* __restrict__ y, const u32* __restrict__ idx,
                                   i64 irs, const float* __restrict__ wts, i64 wrs, const TR* __restrict__ res,
                                   i64 T, int k, i64 E, i64 N, i64 K, int gs_shift) {
  __shared__ float part[RM_DOWN_WARPS][RQ_R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const i64 row0 = (i64)blockIdx.x * RQ_R;
  if (row0 >= N) return;
  const i64 W = K * BITS / 32, G = K >> gs_shift;
  for (i64 t = blockIdx.y; t < T; t += gridDim.y) {
    float tot[RQ_R];
#pragma unroll
    for (int r = 0; r < RQ_R; ++r) tot[r] = 0.0f;
    for (int j = warp; j < k; j += nw) {
      const i64 p = t * k + j;
      const i64 e = rm_expert(idx, t, j, irs, E);
      const u32* wr[RQ_R];
      const TS* sr[RQ_R];
      const TS* br[RQ_R];
      rq_rows<TS, RQ_R>(w + e * N * W, s + e * N * G, b + e * N * G, row0, N, W, G, wr, sr, br);
      float acc[RQ_R][1];
#pragma unroll
      for (int r = 0; r < RQ_R; ++r) acc[r][0] = 0.0f;
      rq_dot_rows<TX, TS, BITS, RQ_R, 1, 1>(h + p * K, wr, sr, br, 1, K, gs_shift, 0, acc);
      const float wt = rm_at(wts, t, j, wrs);
#pragma unroll
      for (int r = 0; r < RQ_R; ++r) tot[r] = fmaf(wt, acc[r][0], tot[r]);
    }
#pragma unroll
    for (int r = 0; r < RQ_R; ++r) {
      const float v = warp_sum(tot[r]);
      if (lane == 0) part[warp][r] = v;
    }
    __syncthreads();
    if (warp == 0 && lane < RQ_R && row0 + lane < N) {
      float v = res ? to_f(res[t * N + row0 + lane]) : 0.0f;
      for (int q = 0; q < nw; ++q) v += part[q][lane];
      y[t * N + row0 + lane] = from_f<TO>(v);
    }
    __syncthreads();
  }
}
