// Decode product of 1 to 8 rows of half x (bf16 or f16) with 4-bit weights on the tensor cores:
// y[m, n] = Σ_k x[m, k] (s[n, g] q[n, k] + b[n, g]), groups of 64 or 128 codes.
//
// Why: the dp4a kernel (quantized.cuh) spends 2 dot instructions per word per row of x, so 8
// rows cost 3–6× one; here one mma.m16n8k16 takes 16 weight rows × 16 codes against all 8 rows
// of x, so the work per weight byte does not grow with the rows and the product stays bound by
// the weight stream. x stays in half precision (no int8 quantization, no launch for it): the
// codes become exact half values and the sums are f32, more exact than the int8 path.
//
// Codes → A operand without conversion instructions: lop3 puts two nibbles into the low
// mantissa bits of a half constant (bf16 0x4300 = 128, f16 0x6400 = 1024, whose ulp is 1), so
// a register holds (OFF + q_lo, OFF + q_hi) exactly. With mask 0x000F000F after a shift by 4p,
// word w yields codes (p, p + 4). Then per group
//   Σ_k x (s q + b) = s Σ (OFF + q) x + (b − OFF s) Σ x,
// where Σ x per group comes from one more mma with an all-ones A (shared by the warp's tiles).
//
// Fragments (PTX m16n8k16 .row.col): A = weights, lane (g, t) holds rows g and g + 8 at k slots
// 2t, 2t+1, 2t+8, 2t+9; B = x, lane (g, t) holds x row g at the same slots; C gives lane (g, t)
// weight rows g, g + 8 against x rows 2t, 2t + 1. The k order inside a group is free as long as
// A and B agree. A unit is 64 codes (one group for gs 64, half of one for gs 128); lane t owns
// its codes 16t..16t+15 (words 2t and 2t+1 of each row: one 8-byte load per row, the 4 lanes
// of a row reading one full 32-byte sector), and mma j of the unit takes word j/2's nibble pairs
// (p, p+4), (p+1, p+5) with p = 2 (j % 2); x is loaded as 16 contiguous values per lane and
// paired the same way with byte permutes.
//
// Work split: a block owns 16 T weight rows (T tiles); its KS warps split K, each warp a
// contiguous run of units, U units at a time: per step a lane loads T × 2 × U weight words
// pairs (8 bytes), 2 U x vectors (16 bytes) and, per row, the step's scales and biases as one
// aligned vector (why K must be a multiple of 64 U). The warps' sums meet in shared memory.
// NORM: x is RMS-normalised with weight nw first: B holds x ∘ nw, each lane sums x² of what it
// loads, and the outputs are scaled by each row's 1/rms at the end (the warps of a block cover
// all of K, so their sums are the whole row's).
//
// SWIGLU (T = 2): w holds a fused gate/up layer, N = 2H rows, gate rows first; tile 0 of a
// block takes gate rows row0.., tile 1 the up rows H + row0.., and the block stores
// silu(g) · u for its 16 columns of y [M, H], g and u rounded to the output type first (the
// product and `silu_mul` as two launches give the same bits): one launch fewer per MLP.
//
// Measured (dev/kernels/qmv, v7, H100): 8 rows of the 8B shape's matrices at 40–71 % of the copy
// bandwidth, 1.3–3.1× faster than the dp4a kernel on the same 8 rows, 1.3–1.45× what the dp4a
// kernel took for one row in an earlier run. Compiled for 2 blocks per SM (the host's
// __launch_bounds__): without that cap the normed variants took 142-152 registers and ran
// 1.1-1.4x slower (v7b). At one or two rows it replaces the dp4a kernel where that one would
// need x quantized by a launch of its own. Tried and slower: the scales staged in shared memory
// per block, a step's scales loaded with its weights one by one, an L2 prefetch of the next step.

template <class T> struct RqHalfCodes;
template <> struct RqHalfCodes<bf16> {
  static constexpr u32 BASE = 0x43004300u;  // (128, 128)
  static constexpr float OFF = 128.0f;
  static constexpr u32 ONE = 0x3F803F80u;   // (1, 1)
  static __device__ __forceinline__ float lo(u32 v) { return bh2f((unsigned short)(v & 0xffffu)); }
  static __device__ __forceinline__ float hi(u32 v) { return bh2f((unsigned short)(v >> 16)); }
};
template <> struct RqHalfCodes<f16> {
  static constexpr u32 BASE = 0x64006400u;  // (1024, 1024)
  static constexpr float OFF = 1024.0f;
  static constexpr u32 ONE = 0x3C003C00u;
  static __device__ __forceinline__ float lo(u32 v) { return h2f((unsigned short)(v & 0xffffu)); }
  static __device__ __forceinline__ float hi(u32 v) { return h2f((unsigned short)(v >> 16)); }
};

// (BASE | nibble p, BASE | nibble p + 4) of word w, for w already shifted right by 4p.
__device__ __forceinline__ u32 rq_nibble_pair(u32 w, u32 base) {
  u32 r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(w), "r"(0x000F000Fu), "r"(base));
  return r;
}

__device__ __forceinline__ u32 rq_prmt(u32 a, u32 b, u32 sel) {
  u32 r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// 8 half values (one 16-byte load, pairs (x0,x1) (x2,x3) (x4,x5) (x6,x7)) → the B pairs
// (x0,x4) (x1,x5) (x2,x6) (x3,x7) matching rq_nibble_pair's (p, p + 4).
__device__ __forceinline__ void rq_pair_x(const uint4 v, u32 (&bp)[4]) {
  bp[0] = rq_prmt(v.x, v.z, 0x5410);
  bp[1] = rq_prmt(v.x, v.z, 0x7632);
  bp[2] = rq_prmt(v.y, v.w, 0x5410);
  bp[3] = rq_prmt(v.y, v.w, 0x7632);
}

// x ∘ nw for 8 values (pairs as loaded), also adding Σx² of x into ss.
template <class TX>
__device__ __forceinline__ uint4 rq_norm8(const uint4 v, const uint4 n, float& ss) {
  using H = RqHalfCodes<TX>;
  const u32 xv[4] = {v.x, v.y, v.z, v.w}, nv[4] = {n.x, n.y, n.z, n.w};
  u32 o[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float a = H::lo(xv[j]), b = H::hi(xv[j]);
    ss = fmaf(a, a, fmaf(b, b, ss));
    o[j] = TcMma<TX>::pack(a * H::lo(nv[j]), b * H::hi(nv[j]));
  }
  return make_uint4(o[0], o[1], o[2], o[3]);
}

// NG consecutive 2-byte scales (or biases) of one row, raw (value j is half j of raw[j / 2]),
// by one aligned vector load (p is NG-aligned: the kernel's K is a multiple of 64 U).
template <int NG> struct RqMeta {
  u32 raw[NG > 1 ? NG / 2 : 1];
  __device__ __forceinline__ void load(const unsigned short* p) {
    if (NG == 8) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
      raw[0] = v.x, raw[NG > 2 ? 1 : 0] = v.y, raw[NG > 4 ? 2 : 0] = v.z, raw[NG > 4 ? 3 : 0] = v.w;
    } else if (NG == 4) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
      raw[0] = v.x, raw[NG > 2 ? 1 : 0] = v.y;
    } else if (NG == 2) {
      raw[0] = __ldg(reinterpret_cast<const u32*>(p));
    } else {
      raw[0] = __ldg(p);
    }
  }
  // value j's bits, in the low half
  __device__ __forceinline__ u32 get(int j) const { return raw[j / 2] >> (16 * (j & 1)); }
};

// Block row r (0..16 T: tile r / 16, row r % 16) of the block starting at row0 → its weight row
// (SWIGLU: tile 1 takes the up rows, N / 2 further), clamped to N - 1 (computed, not stored).
template <bool SWIGLU>
__device__ __forceinline__ i64 rq_weight_row(int r, i64 row0, i64 N) {
  const i64 row = (SWIGLU ? (r >> 4) * (N / 2) + (r & 15) : r) + row0;
  return row < N ? row : N - 1;
}

// Lane (g, t)'s rows of a block's T tiles (block rows 16 i + g and + 8): its words 2t, 2t + 1 of
// each unit, and the rows' scales and biases.
template <int T, bool SWIGLU, class TS>
__device__ __forceinline__ void rq_rows_lane(const u32* __restrict__ w, const TS* __restrict__ s,
                                             const TS* __restrict__ b, i64 N, i64 K, int gs, i64 row0,
                                             const u32* (&wr)[T][2], const unsigned short* (&sr)[T][2],
                                             const unsigned short* (&br)[T][2]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const i64 W = K >> 3, G = K / gs;
#pragma unroll
  for (int i = 0; i < T; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const i64 row = rq_weight_row<SWIGLU>(16 * i + g + 8 * h, row0, N);
      wr[i][h] = w + row * W + 2 * t;
      sr[i][h] = reinterpret_cast<const unsigned short*>(s) + row * G;
      br[i][h] = reinterpret_cast<const unsigned short*>(b) + row * G;
    }
}

// One unit (64 codes) of T tiles of 16 weight rows against x: acc[i] += its products. xv: the
// lane's 16 x values of the unit (normed already) as loaded, wv: its words of rows g and g + 8
// of each tile, sv / bv: the step's scales and biases of those rows, q: the unit's group among
// them.
template <class TX, class TS, int T, int NG>
__device__ __forceinline__ void rq_unit_mma(const uint4 (&xv)[2], const uint2 (&wv)[T][2], const RqMeta<NG> (&sv)[T][2],
                                            const RqMeta<NG> (&bv)[T][2], int q, float (&acc)[T][4]) {
  using H = RqHalfCodes<TX>;
  const u32 ones[4] = {H::ONE, H::ONE, H::ONE, H::ONE};
  u32 bp[2][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) rq_pair_x(xv[h], bp[h]);
  // Σ x of the unit for x rows 2t, 2t + 1 (sx[0], sx[1]; sx[2], sx[3] repeat them)
  float sx[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const u32 bb[2] = {bp[j >> 1][2 * (j & 1)], bp[j >> 1][2 * (j & 1) + 1]};
    TcMma<TX>::run(sx, ones, bb);
  }
#pragma unroll
  for (int i = 0; i < T; ++i) {
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int p = 2 * (j & 1);
      const u32 w0 = (j >> 1) ? wv[i][0].y : wv[i][0].x;
      const u32 w1 = (j >> 1) ? wv[i][1].y : wv[i][1].x;
      const u32 a[4] = {rq_nibble_pair(w0 >> (4 * p), H::BASE), rq_nibble_pair(w1 >> (4 * p), H::BASE),
                        rq_nibble_pair(w0 >> (4 * p + 4), H::BASE), rq_nibble_pair(w1 >> (4 * p + 4), H::BASE)};
      const u32 bb[2] = {bp[j >> 1][p], bp[j >> 1][p + 1]};
      TcMma<TX>::run(c, a, bb);
    }
    using S = RqHalfCodes<TS>;
    const float s0 = S::lo(sv[i][0].get(q)), s1 = S::lo(sv[i][1].get(q));
    const float b0 = fmaf(-H::OFF, s0, S::lo(bv[i][0].get(q)));
    const float b1 = fmaf(-H::OFF, s1, S::lo(bv[i][1].get(q)));
    acc[i][0] = fmaf(s0, c[0], fmaf(b0, sx[0], acc[i][0]));
    acc[i][1] = fmaf(s0, c[1], fmaf(b0, sx[1], acc[i][1]));
    acc[i][2] = fmaf(s1, c[2], fmaf(b1, sx[2], acc[i][2]));
    acc[i][3] = fmaf(s1, c[3], fmaf(b1, sx[3], acc[i][3]));
  }
}

// The rows kernels' end (rq_qmv_rows, rq_qmv_stream): the KS warps' accumulators (lane (g, t)
// of tile i: rows row0 + 16 i + g (+ 8), x rows 2t, 2t + 1) meet in shared memory and are
// stored, scaled by each x row's 1/rms from ssr[warp][m] (the warps' Σx², NORM), plus the
// residual, or (SWIGLU) as silu(g) · u of the gate and up tiles.
template <class TO, int T, int KS, bool NORM, bool SWIGLU>
__device__ __forceinline__ void rq_rows_store(const float (&acc)[T][4], float (&ssr)[KS][8], TO* __restrict__ y,
                                              const TO* __restrict__ res, int M, i64 N, i64 K, float eps,
                                              i64 row0) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __shared__ float red[KS][T * 4][32];
#pragma unroll
  for (int i = 0; i < T; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) red[warp][i * 4 + e][lane] = acc[i][e];
  __syncthreads();
  if (SWIGLU) {
    const i64 H = N / 2;
    for (int o = threadIdx.x; o < 4 * 32; o += 32 * KS) {
      const int e = o >> 5, l = o & 31;
      const i64 row = row0 + (l >> 2) + 8 * (e >> 1);
      const int m = 2 * (l & 3) + (e & 1);
      if (row >= H || m >= M) continue;
      float vg = 0.0f, vu = 0.0f;
#pragma unroll
      for (int k = 0; k < KS; ++k) {
        vg += red[k][e][l];
        vu += red[k][4 + e][l];
      }
      if (NORM) {
        float q = 0.0f;
#pragma unroll
        for (int k = 0; k < KS; ++k) q += ssr[k][m];
        const float r = rq_inv_rms(q, K, eps);
        vg *= r;
        vu *= r;
      }
      const float gr = to_f(from_f<TO>(vg)), ur = to_f(from_f<TO>(vu));
      y[(i64)m * H + row] = from_f<TO>(gr * sigmoid_f(gr) * ur);
    }
    return;
  }
  for (int o = threadIdx.x; o < T * 4 * 32; o += 32 * KS) {
    const int ie = o >> 5, l = o & 31, i = ie >> 2, e = ie & 3;
    const i64 row = row0 + 16 * i + (l >> 2) + 8 * (e >> 1);
    const int m = 2 * (l & 3) + (e & 1);
    if (row >= N || m >= M) continue;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < KS; ++k) v += red[k][ie][l];
    if (NORM) {
      float q = 0.0f;
#pragma unroll
      for (int k = 0; k < KS; ++k) q += ssr[k][m];
      v *= rq_inv_rms(q, K, eps);
    }
    y[(i64)m * N + row] = rq_out<TO>(v, res, (i64)m * N + row);
  }
}

// TS: bf16 or f16 scales and biases; GS: 64 or 128 codes per group; K a multiple of 64 U,
// weights, scales and biases 16-byte aligned (the host's dispatch checks both).
template <class TX, class TS, class TO, int GS, int T, int KS, int U, bool NORM, bool SWIGLU = false>
__device__ void rq_qmv_rows(const TX* __restrict__ x, const TX* __restrict__ nw, float eps, const u32* __restrict__ w,
                            const TS* __restrict__ s, const TS* __restrict__ b, TO* __restrict__ y,
                            const TO* __restrict__ res, int M, i64 N, i64 K, i64 xbs, i64 wbs, i64 sbs, i64 bbs,
                            i64 ybs) {
  constexpr int UPG = GS / 64;                  // units per group
  constexpr int NG = U / UPG > 0 ? U / UPG : 1;  // groups per step
  const i64 bat = rq_batch_entry(w, s, b, y, res, wbs, sbs, bbs, ybs);
  x += bat * xbs;
  rmlx_pdl_trigger();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const i64 NU = K >> 6;
  // warp w owns a contiguous run of units, a whole number of steps long (K is a multiple of
  // 64 U: every step is whole), so that a step's scales and biases of a row are one aligned
  // vector load
  const i64 per = ((NU + KS - 1) / KS + U - 1) / U * U;
  const i64 ub = warp * per, ue = ub + per < NU ? ub + per : NU;
  static_assert(!SWIGLU || T == 2, "SwiGLU pairs a gate tile with an up tile");
  const i64 row0 = (i64)blockIdx.x * (SWIGLU ? 16 : 16 * T);
  const u32* wr[T][2];
  const unsigned short* sr[T][2];
  const unsigned short* br[T][2];
  rq_rows_lane<T, SWIGLU>(w, s, b, N, K, GS, row0, wr, sr, br);
  // the weights are constant: start their stream before waiting on the previous kernel
#pragma unroll
  for (int i = 0; i < T; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (ub + u < ue) asm volatile("prefetch.global.L2 [%0];" ::"l"(wr[i][h] + (ub + u) * 8));
  const TX* xr = x + (i64)(g < M ? g : M - 1) * K + 16 * t;
  const TX* nr = nw + 16 * t;
  rmlx_pdl_wait();
  float acc[T][4];
#pragma unroll
  for (int i = 0; i < T; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[i][e] = 0.0f;
  float ss = 0.0f;
  // One step's loads: U units of every tile's rows, of x, and the rows' scales and biases.
  struct Step {
    uint2 wv[U][T][2];
    uint4 xv[U][2];
    RqMeta<NG> sv[T][2], bv[T][2];
  };
  auto load = [&](Step& st, i64 u0) {
    const i64 grp0 = u0 / UPG;
#pragma unroll
    for (int i = 0; i < T; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        st.sv[i][h].load(sr[i][h] + grp0);
        st.bv[i][h].load(br[i][h] + grp0);
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const i64 unit = u0 + u;
#pragma unroll
      for (int i = 0; i < T; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) st.wv[u][i][h] = __ldg(reinterpret_cast<const uint2*>(wr[i][h] + unit * 8));
      st.xv[u][0] = __ldg(reinterpret_cast<const uint4*>(xr + unit * 64));
      st.xv[u][1] = __ldg(reinterpret_cast<const uint4*>(xr + unit * 64 + 8));
    }
  };
  auto compute = [&](const Step& st, i64 u0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      uint4 xv[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        xv[h] = st.xv[u][h];
        if (NORM) xv[h] = rq_norm8<TX>(xv[h], __ldg(reinterpret_cast<const uint4*>(nr + (u0 + u) * 64 + 8 * h)), ss);
      }
      rq_unit_mma<TX, TS, T, NG>(xv, st.wv[u], st.sv, st.bv, u / UPG, acc);
    }
  };
  for (i64 u0 = ub; u0 < ue; u0 += U) {
    Step st;
    load(st, u0);
    compute(st, u0);
  }
  // the KS warps' partial sums (and Σx² per x row) meet in shared memory
  __shared__ float ssr[KS][8];
  if (NORM) {
    ss += __shfl_xor_sync(0xffffffffu, ss, 1);
    ss += __shfl_xor_sync(0xffffffffu, ss, 2);
    if (t == 0) ssr[warp][g] = ss;
  }
  rq_rows_store<TO, T, KS, NORM, SWIGLU>(acc, ssr, y, res, M, N, K, eps, row0);
}
