// v5 (ladder only): rd_mma_attend with each warp's 16-key tiles streamed through its own
// shared-memory ring by cp.async (RING slots of 16 K rows and 16 V rows), so a warp keeps
// RING - 1 tiles in flight without holding them in registers (v4 holds two tiles, 128
// registers, and reaches 2 blocks per SM). The fragments are read back from shared memory with
// the same per-lane pieces v4 loads from global memory, then production's rd_mma_tile runs.
// Swizzles (16-byte chunk c of row r at chunk c ^ f(r)) keep the fragment reads conflict-free
// for each 8-lane phase of an LDS.128: K reads rows g, g + 1 at chunks 4c + t, so K flips bit 2
// on odd rows; V reads rows 2t (t = 0..3) at chunks 8ch + g, so V xors in row & 6.
template <int D>
struct V5Slot {
  uint4 k[16][D / 8];
  uint4 v[16][D / 8];
};
__device__ __forceinline__ int v5_kc(int row, int c) { return c ^ ((row & 1) << 2); }
__device__ __forceinline__ int v5_vc(int row, int c) { return c ^ (row & 6); }

// The copies of the tile at `base` into slot `sl` (keys at or past k1 read key k1 - 1).
template <class T, int D>
__device__ __forceinline__ void v5_issue(V5Slot<D>& sl, const T* __restrict__ kb, const T* __restrict__ vb, i64 ks,
                                         i64 vs, int base, int k1, int lane) {
  constexpr int CPR = D / 8, PER = 16 * CPR / 32;
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int idx = lane + 32 * i, row = idx / CPR, c = idx % CPR;
    const i64 key = min(base + row, k1 - 1);
    tc_cp16(tc_smem(&sl.k[row][v5_kc(row, c)]), kb + key * ks + 8 * c, true);
    tc_cp16(tc_smem(&sl.v[row][v5_vc(row, c)]), vb + key * vs + 8 * c, true);
  }
}

template <class T, int G, int D, int RING>
__device__ __forceinline__ void v5_attend(const T* q, i64 qs, const T* __restrict__ k, const T* __restrict__ v,
                                          T* __restrict__ out, float* __restrict__ part_ml, float* __restrict__ part_acc,
                                          const Sd4& kl, const Sd4& vl, const RdPlace& at, int Hq, int S, int n_split,
                                          int split_len, float scale, unsigned* tickets) {
  static_assert(RING >= 2, "v5: at least two slots");
  extern __shared__ uint4 v5_smem[];
  __shared__ float sm_ml[RD_NW][G][2];
  __shared__ float sm_acc[RD_NW][G][D];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  V5Slot<D>* ring = reinterpret_cast<V5Slot<D>*>(v5_smem) + warp * RING;
  const T* kb = k + kl.off + at.bb * kl.s[0] + at.hk * kl.s[1];
  const T* vb = v + vl.off + at.bb * vl.s[0] + at.hk * vl.s[1];
  const i64 ks = kl.s[2], vs = vl.s[2];
  u32 qf[D / 32][4];
  rd_mma_q<T, G, D>(q, qs, qf);
  const float sl2 = scale * 1.4426950408889634f;
  const float NEG_INF = -__int_as_float(0x7f800000);
  float m = NEG_INF, l = 0.0f, o[D / 16][4];
#pragma unroll
  for (int mt = 0; mt < D / 16; ++mt) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
  const int k0 = at.sp * split_len, k1 = min(S, k0 + split_len);
  constexpr int STEP = 16 * RD_NW;
  const int first = k0 + 16 * warp;
  const int nt = first < k1 ? (k1 - first + STEP - 1) / STEP : 0;
#pragma unroll
  for (int i = 0; i < RING - 1; ++i) {
    if (i < nt) v5_issue<T, D>(ring[i], kb, vb, ks, vs, first + i * STEP, k1, lane);
    tc_commit();
  }
  for (int i = 0; i < nt; ++i) {
    tc_wait<RING - 2>();
    __syncwarp();  // every lane's copies of tile i landed; every lane is done with tile i - 1
    const int nx = i + RING - 1;
    if (nx < nt) v5_issue<T, D>(ring[nx % RING], kb, vb, ks, vs, first + nx * STEP, k1, lane);
    tc_commit();
    const V5Slot<D>& sl = ring[i % RING];
    RdMmaTile<D> f;
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int c = 0; c < D / 32; ++c) f.k[j][c] = sl.k[8 * j + g][v5_kc(8 * j + g, 4 * c + t)];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = 2 * t + (r & 1) + 8 * (r >> 1);
#pragma unroll
      for (int ch = 0; ch < D / 64; ++ch) f.v[r][ch] = sl.v[row][v5_vc(row, 8 * ch + g)];
    }
    rd_mma_tile<T, D>(f, qf, o, m, l, first + i * STEP, k1, sl2, t);
  }
  tc_wait<0>();
  rd_mma_finish<T, G, D>(m, l, o, sm_ml, sm_acc, out, part_ml, part_acc, at, Hq, n_split, tickets);
}
