// rmlx CUDA: decode attention over a quantized KV cache read in place
// (rmlx_core::fast::quantized_sdpa_decode; compiled after sdpa.cuh). The keys and values are
// the packed rows of rq_quantize: BITS-bit codes, LSB first in u32 words, and per group of GS
// dims a scale s and a bias b (value = s·c + b). Laid out as rs_sdpa_decode_lk: one block of
// RD_NW warps per (batch row, KV head, head part, key split); lane j scores its own key against
// the block's G query heads, each group's code sum scaled once (s·Σ q·c + b·Σ q, the Σ q of
// each group computed once a block), and lane l accumulates dims [l·DL, l·DL + DL) of V, its
// codes dequantized as s·c + b in f32. The keys [0, len[0]) are visited (len read on the
// device, clamped into [1, S]), so a recorded decode step serves every length.

// Code e (0-based) of a word of BITS-bit codes, as a float (exact: the code in the mantissa
// of 2^23, then 2^23 subtracted).
template <int BITS>
__device__ __forceinline__ float rq_code_f(u32 w, int e) {
  const u32 c = BITS == 8 ? __byte_perm(w, 0x4B000000u, 0x7440 | e) : (((w >> (BITS * e)) & ((1u << BITS) - 1u)) | 0x4B000000u);
  return __uint_as_float(c) - 8388608.0f;
}

template <class T, int G, int DL, int BITS, int GS>
__device__ void rq_sdpa_decode(const T* __restrict__ q, const u32* __restrict__ kq, const T* __restrict__ ks,
                               const T* __restrict__ kb, const u32* __restrict__ vq, const T* __restrict__ vs,
                               const T* __restrict__ vb, const int* __restrict__ len, T* __restrict__ out,
                               float* __restrict__ part_ml, float* __restrict__ part_acc, Sd4 ql, Sd4 kql, Sd4 ksl,
                               Sd4 kbl, Sd4 vql, Sd4 vsl, Sd4 vbl, int Hq, int Hkv, int S, float scale, int n_split,
                               int split_len, unsigned* tickets) {
  constexpr int D = 32 * DL, W = D * BITS / 32, NG = D / GS, WG = GS * BITS / 32, CPW = 32 / BITS;
  static_assert(W % 4 == 0 && GS % 4 == 0 && DL * BITS <= 32, "rows of whole 16-byte chunks");
  __shared__ __align__(16) float sq[G][D];
  __shared__ float sqs[G][NG];
  __shared__ float sm_ml[RD_NW][G][2];
  __shared__ float sm_acc[RD_NW][G][D];
  __shared__ float sp_p[RD_NW][32][G];
  const RdPlace at = rd_place<G>(Hq, Hkv);
  rd_load_q<T, G, D>(q, ql, at, scale, sq);
  __syncthreads();
  for (int t = threadIdx.x; t < G * NG; t += blockDim.x) {
    const int g = t / NG, gi = t % NG;
    float a = 0.0f;
    for (int d = 0; d < GS; ++d) a += sq[g][gi * GS + d];
    sqs[g][gi] = a;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 bb = at.bb;
  const int hk = at.hk;
  const u32* kqb = kq + kql.off + bb * kql.s[0] + hk * kql.s[1];
  const T* ksb = ks + ksl.off + bb * ksl.s[0] + hk * ksl.s[1];
  const T* kbb = kb + kbl.off + bb * kbl.s[0] + hk * kbl.s[1];
  // lane l's V dims: DL·BITS bits from bit l·DL·BITS of a row, in group l·DL / GS
  const int vbit = lane * DL * BITS, vg = lane * DL / GS;
  const u32* vqb = vq + vql.off + bb * vql.s[0] + hk * vql.s[1] + (vbit >> 5);
  const T* vsb = vs + vsl.off + bb * vsl.s[0] + hk * vsl.s[1] + vg;
  const T* vbb = vb + vbl.off + bb * vbl.s[0] + hk * vbl.s[1] + vg;
  const int n = min(max(len[0], 1), S);
  const int k0 = at.sp * split_len, k1 = min(n, k0 + split_len);
  const float NEG_INF = -__int_as_float(0x7f800000);
  float m[G], l[G], acc[G][DL];
  rd_state_init<G, DL>(m, l, acc);
  for (int base = k0 + warp * 32; base < k1; base += RD_NW * 32) {
    const int j = base + lane;
    const int nk = min(32, k1 - base);
    // the step's 32 V rows (codes, scale, bias) first, their loads in flight with the keys'
    // while the scores are computed (a row past the split reads as zeros)
    u32 vc[32];
    float vsc[32], vbi[32];
#pragma unroll
    for (int u = 0; u < 32; ++u) {
      const i64 r = base + u;
      const bool in = u < nk;
      vc[u] = in ? __ldg(vqb + r * vql.s[2]) : 0u;
      vsc[u] = in ? to_f(vsb[r * vsl.s[2]]) : 0.0f;
      vbi[u] = in ? to_f(vbb[r * vbl.s[2]]) : 0.0f;
    }
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) s[g] = j < k1 ? 0.0f : NEG_INF;
    if (j < k1) {
      uint4 c4[W / 4];
      const uint4* kr = reinterpret_cast<const uint4*>(kqb + (i64)j * kql.s[2]);
#pragma unroll
      for (int i = 0; i < W / 4; ++i) c4[i] = __ldg(kr + i);
      float sc[NG], bi[NG];
#pragma unroll
      for (int gi = 0; gi < NG; ++gi) {
        sc[gi] = to_f(ksb[(i64)j * ksl.s[2] + gi]);
        bi[gi] = to_f(kbb[(i64)j * kbl.s[2] + gi]);
      }
      const u32* cw = reinterpret_cast<const u32*>(c4);
#pragma unroll
      for (int gi = 0; gi < NG; ++gi) {
        float dot[G];
#pragma unroll
        for (int g = 0; g < G; ++g) dot[g] = 0.0f;
#pragma unroll
        for (int w = 0; w < WG; ++w) {
          const u32 word = cw[gi * WG + w];
#pragma unroll
          for (int e4 = 0; e4 < CPW; e4 += 4) {
            const int d0 = gi * GS + w * CPW + e4;
            float cv[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) cv[e] = rq_code_f<BITS>(word, e4 + e);
#pragma unroll
            for (int g = 0; g < G; ++g) {
              const float4 qa = *reinterpret_cast<const float4*>(&sq[g][d0]);
              dot[g] = fmaf(qa.x, cv[0], fmaf(qa.y, cv[1], fmaf(qa.z, cv[2], fmaf(qa.w, cv[3], dot[g]))));
            }
          }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) s[g] = fmaf(sc[gi], dot[g], fmaf(bi[gi], sqs[g][gi], s[g]));
      }
    }
    rd_lk_softmax_step<G, DL>(s, m, l, acc, sp_p[warp][lane]);
    __syncwarp();
#pragma unroll
    for (int u = 0; u < 32; ++u) {
      const u32 c = vc[u] >> (vbit & 31);
      float vv[DL];
#pragma unroll
      for (int e = 0; e < DL; ++e) vv[e] = fmaf(vsc[u], rq_code_f<BITS>(c, e), vbi[u]);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float pt = sp_p[warp][u][g];
#pragma unroll
        for (int e = 0; e < DL; ++e) acc[g][e] = fmaf(pt, vv[e], acc[g][e]);
      }
    }
    __syncwarp();
  }
  rd_finish<T, G, DL>(m, l, acc, sm_ml, sm_acc, out, part_ml, part_acc, bb, at.h0, Hq, at.sp, n_split, tickets);
}
