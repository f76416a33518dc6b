// Ladder rungs v5/v6 (README.md): the int8 decode product for several rows of x on the tensor
// cores. Not shipped: alone it beats the dp4a kernel on 8 rows of the 4096-row shapes, but the
// 8B model's batch-8 decode ran slower with it (634.8 against 682.5 tok/s on an H100). Kept here
// to be continued; it builds on quantized.cuh (RqXBlock, rq_inv_rms, rq_out, rq_prefetch_rows,
// rq_batch_entry, the PDL helpers of prelude.cuh).
// The int8 decode product for several rows of x (2..8) on the tensor cores. The dp4a kernel
// of quantized.cuh spends 2 dot instructions per word per row of x: 8 rows cost 2.8x one row. Here one
// mma.m16n8k32 (u8 codes x s8 x, s32 sums) takes a block of 32 codes of 16 weight rows against
// all 8 rows of x, so the instructions per code hardly depend on the row count.
//
// Per block the integer sums are exactly the dp4a kernel's (Σ q xq, centred by C Σxq), and each
// block's float update is the same expression; only the order in which blocks are summed
// differs (each warp runs through its contiguous share of K in order, the warps' partial sums
// are added in warp order), so a row's result does not depend on the other rows, and it
// matches the dp4a kernel's within rounding.
//
// Fragments (PTX m16n8k32, .row.col): A = weights, lane (g, t) (g = lane / 4, t = lane % 4)
// holds rows g and g + 8, k slots t and t + 4 (4 codes each); B = x, lane (g, t) holds x row g,
// slots t and t + 4; C gives lane (g, t) weight rows g, g + 8 against x rows 2t, 2t + 1. The k
// order inside a block is free as long as weights and x agree: for 4 bits slot t holds the low
// nibbles of word t and slot t + 4 its high nibbles, which is where rq_xpos puts those codes'
// x (ints 2t and 2t + 1 of the block); for 8 bits slots t and t + 4 hold words t and t + 4.
//
// Every global load is a full 16-byte cp.async into the warp's own shared memory, a stage of
// RT_SB blocks at a time (double-buffered): the weights (16 rows), x's codes and meta (M rows);
// the scales and biases of the stage's blocks come through registers (2-byte loads, issued a
// stage ahead). ldmatrix then hands each lane exactly its A fragment: word t of a row's 16-byte
// segment. (v5 of the ladder loaded the fragments straight from global memory, 4 bytes per
// lane, and was bound by the L1: dev/kernels/qmv/README.md.)

#define RT_SB 8  // blocks of 32 codes per stage

__device__ __forceinline__ void rq_mma_u8s8(int (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %10, %10, %10};"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}
__device__ __forceinline__ u32 rq_smem_addr(const void* p) {
  return (u32)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void rq_ldmatrix4(const void* p, u32 (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(rq_smem_addr(p)));
}
// 16 bytes global → shared; `ok` false writes zeros (src must still be a valid address).
__device__ __forceinline__ void rq_cp16(void* dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(rq_smem_addr(dst)), "l"(src),
               "r"(ok ? 16 : 0));
}
// rq_cp_commit and rq_cp_wait: qmv_stream.cuh's (bench.cu includes it first)

// One warp's staging area of NST stages. Row strides keep ldmatrix and the lanes' x reads free
// of bank conflicts (odd multiples of 16 bytes). (Reading x straight from global memory
// instead, where it is small and stays in L1, measured 1.2–2x slower: dev/kernels/qmv.)
template <int BITS, int NST>
struct RtStage {
  static constexpr int WB = BITS * 4;             // bytes of a block of one weight row
  static constexpr int WS = RT_SB * WB + 16;       // weight row stride: 144 (4-bit), 272 (8-bit)
  static constexpr int XS = BITS == 4 ? 288 : 304;  // x row stride
  unsigned char w[NST][16][WS];
  signed char x[NST][8][XS];
  float4 meta[NST][8][RT_SB];
  float2 sc[NST][RT_SB][16];  // (scale, bias + C scale) of each block's group, per row
};

// One matrix: a block of KS warps owns 16 weight rows from blockIdx.x * 16, warp w taking the
// w-th contiguous share of K's blocks; the partial sums meet in shared memory. x: xq/meta in
// global memory (rq_quantize_x ran first).
template <class TS, class TO, int BITS, int KS, int NST, bool NORM>
__device__ void rq_tc_mat(const signed char* __restrict__ xq, const RqXBlock* __restrict__ meta,
                          const u32* __restrict__ w, const TS* __restrict__ s, const TS* __restrict__ b,
                          TO* __restrict__ y, const TO* __restrict__ res, int M, i64 N, i64 K, int gs_shift,
                          float eps) {
  constexpr int CI = 1 << (BITS - 1);
  constexpr float C = (float)CI;
  constexpr int WB = RtStage<BITS, NST>::WB;
  __shared__ __align__(16) RtStage<BITS, NST> st[KS];
  __shared__ float part[KS][128];
  __shared__ float sspart[KS][8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  RtStage<BITS, NST>& S = st[warp];
  const i64 row0 = (i64)blockIdx.x * 16;
  const i64 W = K * BITS / 32, G = K >> gs_shift, nb = K >> 5;
  const i64 per = (nb + KS - 1) / KS;
  const i64 blk0 = per * warp < nb ? per * warp : nb, blk1 = blk0 + per < nb ? blk0 + per : nb;
  const int nst = (int)((blk1 - blk0 + RT_SB - 1) / RT_SB);
  // rows past N repeat the last one: computed, not stored
  auto wrow = [&](int r) -> i64 { return row0 + r < N ? row0 + r : N - 1; };
  // the stage's cp.async copies
  auto issue = [&](int n, int buf) {
    const i64 base = blk0 + (i64)n * RT_SB;
    constexpr int WCH = 16 * RT_SB * WB / 16;  // 16-byte chunks of weights
#pragma unroll
    for (int j = 0; j < WCH / 32; ++j) {
      const int c = lane + 32 * j;
      const int r = c / (RT_SB * WB / 16), o = c % (RT_SB * WB / 16);
      const i64 byte = base * WB + (i64)o * 16;
      const bool ok = byte < blk1 * WB;
      const unsigned char* src = reinterpret_cast<const unsigned char*>(w + wrow(r) * W);
      rq_cp16(&S.w[buf][r][o * 16], src + (ok ? byte : 0), ok);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // x codes: 8 rows x 16 chunks
      const int c = lane + 32 * j, m = c >> 4, o = c & 15;
      if (m < M) {
        const i64 byte = base * 32 + (i64)o * 16;
        const bool ok = byte < blk1 * 32;
        rq_cp16(&S.x[buf][m][o * 16], xq + (i64)m * K + (ok ? byte : 0), ok);
      }
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {  // meta: 8 rows x RT_SB blocks
      const int c = lane + 32 * j, m = c >> 3, u = c & 7;
      if (m < M) {
        const bool ok = base + u < blk1;
        rq_cp16(&S.meta[buf][m][u], meta + (i64)m * nb + (ok ? base + u : 0), ok);
      }
    }
    rq_cp_commit();
  };
  // the stage's scales and biases into registers (lane: rows c / 8, block c % 8)
  float sv[4], bv[4];
  auto load_scales = [&](int n) {
    const i64 base = blk0 + (i64)n * RT_SB;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = lane + 32 * j, r = c >> 3, u = c & 7;
      const i64 blk = base + u;
      const i64 gi = blk < blk1 ? (blk << 5) >> gs_shift : 0;
      const i64 o = wrow(r) * G + gi;
      sv[j] = blk < blk1 ? to_f(s[o]) : 0.0f;
      bv[j] = blk < blk1 ? to_f(b[o]) : 0.0f;
    }
  };
  auto store_scales = [&](int buf) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = lane + 32 * j, r = c >> 3, u = c & 7;
      S.sc[buf][u][r] = make_float2(sv[j], fmaf(C, sv[j], bv[j]));
    }
  };
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, ss[2] = {0.0f, 0.0f};
  // NST - 1 stages ahead: issued (an empty group past the end keeps the wait count fixed)
#pragma unroll
  for (int p = 0; p < NST - 1; ++p) {
    if (p < nst) {
      issue(p, p);
      load_scales(p);
      store_scales(p);
    } else {
      rq_cp_commit();
    }
  }
  for (int n = 0; n < nst; ++n) {
    const int buf = n % NST;
    const int ahead = n + NST - 1;
    const bool more = ahead < nst;
    if (more) {
      issue(ahead, ahead % NST);
      load_scales(ahead);
    } else {
      rq_cp_commit();
    }
    rq_cp_wait<NST - 1>();
    __syncwarp();
    const i64 base = blk0 + (i64)n * RT_SB;
#pragma unroll
    for (int u2 = 0; u2 < RT_SB; u2 += 2) {
      u32 fr[2][4];
      if (BITS == 4) {
        // lanes 0-15: rows 0-15 of block u2; lanes 16-31: of block u2 + 1
        u32 r[4];
        rq_ldmatrix4(&S.w[buf][lane & 15][(u2 + (lane >> 4)) * 16], r);
        fr[0][0] = r[0] & 0x0F0F0F0Fu;
        fr[0][1] = r[1] & 0x0F0F0F0Fu;
        fr[0][2] = (r[0] >> 4) & 0x0F0F0F0Fu;
        fr[0][3] = (r[1] >> 4) & 0x0F0F0F0Fu;
        fr[1][0] = r[2] & 0x0F0F0F0Fu;
        fr[1][1] = r[3] & 0x0F0F0F0Fu;
        fr[1][2] = (r[2] >> 4) & 0x0F0F0F0Fu;
        fr[1][3] = (r[3] >> 4) & 0x0F0F0F0Fu;
      } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) rq_ldmatrix4(&S.w[buf][lane & 15][(u2 + h) * 32 + (lane >> 4) * 16], fr[h]);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int u = u2 + h;
        if (base + u >= blk1) break;
        u32 b0 = 0u, b1 = 0u;
        if (g < M) {
          const signed char* xb = &S.x[buf][g][u * 32];
          if (BITS == 4) {
            const int2 xv = *reinterpret_cast<const int2*>(xb + 8 * t);
            b0 = (u32)xv.x;
            b1 = (u32)xv.y;
          } else {
            b0 = *reinterpret_cast<const u32*>(xb + 4 * t);
            b1 = *reinterpret_cast<const u32*>(xb + 16 + 4 * t);
          }
        }
        int c[4];
        rq_mma_u8s8(c, fr[h], b0, b1);
        const float2 ka = S.sc[buf][u][g], kb = S.sc[buf][u][g + 8];
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int m = 2 * t + q;
          if (m < M) {
            const float4 mt = S.meta[buf][m][u];
            const int sq = __float_as_int(mt.z);
            if (NORM) ss[q] += mt.w;
            const int d0 = c[q] - CI * sq, d1 = c[2 + q] - CI * sq;
            acc[q] = fmaf(ka.x * mt.x, (float)d0, fmaf(ka.y, mt.y, acc[q]));
            acc[2 + q] = fmaf(kb.x * mt.x, (float)d1, fmaf(kb.y, mt.y, acc[2 + q]));
          }
        }
      }
    }
    __syncwarp();
    if (more) store_scales(ahead % NST);
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) part[warp][j * 32 + lane] = acc[j];
  if (NORM && g == 0) {
    sspart[warp][2 * t] = ss[0];
    sspart[warp][2 * t + 1] = ss[1];
  }
  __syncthreads();
  for (int o = threadIdx.x; o < 128; o += 32 * KS) {
    const int j = o >> 5, l = o & 31;
    const i64 row = row0 + (l >> 2) + 8 * (j >> 1);
    const int m = 2 * (l & 3) + (j & 1);
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < KS; ++k) v += part[k][o];
    if (NORM) {
      float sst = 0.0f;
#pragma unroll
      for (int k = 0; k < KS; ++k) sst += sspart[k][m];
      v *= rq_inv_rms(sst, K, eps);
    }
    if (m < M && row < N) y[(i64)m * N + row] = rq_out<TO>(v, res, (i64)m * N + row);
  }
}

// The tensor-core kernel's entry, with rq_qmv8's arguments but x, quantized by rq_quantize_x
// first (batch in blockIdx.y; NORM; PF: the block's 16 weight rows prefetched into L2 before
// the wait on the previous kernel). Launched with 32 KS threads.
template <class TS, class TO, int BITS, int KS, int NST, bool NORM, bool PF>
__device__ void rq_qmm8_tc(const signed char* __restrict__ xq, const RqXBlock* __restrict__ meta, float eps,
                           const u32* __restrict__ w, const TS* __restrict__ s, const TS* __restrict__ b,
                           TO* __restrict__ y, const TO* __restrict__ res, int M, i64 N, i64 K, int gs_shift, i64 xbs,
                           i64 wbs, i64 sbs, i64 bbs, i64 ybs) {
  const i64 bat = rq_batch_entry(w, s, b, y, res, wbs, sbs, bbs, ybs);
  rmlx_pdl_trigger();
  if (PF) {
    const i64 W = K * BITS / 32, G = K >> gs_shift;
    for (int r = threadIdx.x >> 5; r < 16; r += KS) {
      const i64 row = (i64)blockIdx.x * 16 + r;
      if (row >= N) break;
      const u32* wr[1] = {w + row * W};
      const TS* sr[1] = {s + row * G};
      const TS* br[1] = {b + row * G};
      rq_prefetch_rows<TS, 1>(wr, sr, br, W, G);
    }
  }
  rmlx_pdl_wait();
  rq_tc_mat<TS, TO, BITS, KS, NST, NORM>(xq + bat * xbs, meta + bat * (xbs >> 5), w, s, b, y, res, M, N, K, gs_shift,
                                    eps);
}
