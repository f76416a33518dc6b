// Ladder version v4 (not shipped): x quantized inside the qmv kernel into shared memory, a
// persistent grid. Slower than v1 + a separate quantize_x launch on every shape measured
// (README.md): too few loads in flight and the scales loaded only when used.
// ---------------------------------------------------------------------------------------------
// One row of x (decode at batch 1), x quantized inside the kernel: every block quantizes x into
// shared memory (32 elements per thread, no shuffles), then its warps stream weight rows
// row = block * warps + warp, += grid warps (a grid sized to the GPU: every warp gets nearly
// the same number of rows). A warp's first weight loads are issued before the quantization,
// so the weight stream starts at once; after that the loads of the next UN blocks are issued
// before the current ones are used. Shared memory: K / 32 * 48 bytes (x codes in two planes
// of 16 bytes per block, then the blocks' meta), given at launch.
template <class TX>
__device__ __forceinline__ void rq_load_x32(const TX* __restrict__ p, float* o) {
#pragma unroll
  for (int j = 0; j < 4; ++j) load8(p + 8 * j, o + 8 * j);
}

template <int BITS>
__device__ __forceinline__ void rq_load_w(const u32* __restrict__ wr, i64 blk, i64 nb, u32* o) {
#pragma unroll
  for (int j = 0; j < BITS / 4; ++j) {
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (blk < nb) v = __ldg(reinterpret_cast<const uint4*>(wr + blk * BITS) + j);
    o[4 * j] = v.x;
    o[4 * j + 1] = v.y;
    o[4 * j + 2] = v.z;
    o[4 * j + 3] = v.w;
  }
}

template <class TX, class TS, class TO, int BITS, int UN>
__device__ void rq_qmv8f(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                         const TS* __restrict__ b, TO* __restrict__ y, i64 N, i64 K, int gs_shift) {
  extern __shared__ int4 rq_smem[];
  constexpr int WPB = BITS;
  constexpr float C = (float)(1 << (BITS - 1));
  const i64 nb = K >> 5, W = K * BITS / 32, G = K >> gs_shift;
  int4* p0 = rq_smem;
  int4* p1 = rq_smem + nb;
  float4* pm = reinterpret_cast<float4*>(rq_smem + 2 * nb);
  const int lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const i64 rstride = (i64)gridDim.x * nwarps;
  i64 row = (i64)blockIdx.x * nwarps + (threadIdx.x >> 5);
  const i64 steps = (nb + 32 * UN - 1) / (32 * UN);  // chunks of UN blocks per row and lane

  // the first chunk's loads, in flight during the quantization
  u32 wv[UN][WPB];
  if (row < N) {
#pragma unroll
    for (int u = 0; u < UN; ++u) rq_load_w<BITS>(w + row * W, lane + 32 * u, nb, wv[u]);
  }

  for (i64 blk = threadIdx.x; blk < nb; blk += blockDim.x) {
    float v[32];
    rq_load_x32(x + blk * 32, v);
    float amax = 0.0f, sx = 0.0f;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      amax = fmaxf(amax, fabsf(v[j]));
      sx += v[j];
    }
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int q[32], sq = 0;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      q[j] = __float2int_rn(v[j] * id);
      sq += q[j];
    }
    int xv[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      // int i holds positions 4i..4i+3 of rq_xpos order
      u32 word = 0;
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const int pos = 4 * i + t;
        int src;
        if (BITS == 8) {
          src = pos;
        } else {
          const int run = pos >> 3, r = pos & 7;
          src = 8 * run + (r < 4 ? 2 * r : 2 * (r - 4) + 1);
        }
        word |= ((u32)(q[src] & 0xff)) << (8 * t);
      }
      xv[i] = (int)word;
    }
    p0[blk] = make_int4(xv[0], xv[1], xv[2], xv[3]);
    p1[blk] = make_int4(xv[4], xv[5], xv[6], xv[7]);
    pm[blk] = make_float4(amax / 127.0f, sx, __int_as_float(sq), 0.0f);
  }
  __syncthreads();

  for (; row < N; row += rstride) {
    const u32* wr = w + row * W;
    const TS* sr = s + row * G;
    const TS* br = b + row * G;
    float acc = 0.0f;
    for (i64 st = 0; st < steps; ++st) {
      const i64 base = lane + st * 32 * UN;
      // next chunk (of this row, or the first of the next row) in flight while this one is used
      u32 nx[UN][WPB];
      const bool last = st + 1 == steps;
      const i64 nrow = last ? row + rstride : row;
      const i64 nbase = last ? lane : base + 32 * UN;
      if (nrow < N) {
#pragma unroll
        for (int u = 0; u < UN; ++u) rq_load_w<BITS>(w + nrow * W, nbase + 32 * u, nb, nx[u]);
      }
#pragma unroll
      for (int u = 0; u < UN; ++u) {
        const i64 blk = base + 32 * u;
        if (blk < nb) {
          const i64 g = (blk << 5) >> gs_shift;
          const float sc = to_f(sr[g]);
          const float bc = fmaf(C, sc, to_f(br[g]));
          const int4 xa = p0[blk], xb = p1[blk];
          const int xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
          const float4 mt = pm[blk];
          const int dot = rq_block_dot<BITS>(wv[u], xv) - (1 << (BITS - 1)) * __float_as_int(mt.z);
          acc = fmaf(sc * mt.x, (float)dot, fmaf(bc, mt.y, acc));
        }
      }
#pragma unroll
      for (int u = 0; u < UN; ++u)
#pragma unroll
        for (int j = 0; j < WPB; ++j) wv[u][j] = nx[u][j];
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = from_f<TO>(acc);
  }
}
