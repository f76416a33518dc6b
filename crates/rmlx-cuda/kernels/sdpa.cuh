// rmlx CUDA: scaled dot-product attention (crates/rmlx-cpu/src/sdpa.rs semantics).
// One block of RS_NT threads per (query row (b, h, i), key split): the keys of the split are
// visited in chunks of RS_KC with an online softmax in f32 (running max m, sum l, Dv
// accumulators, thread t owning dims t, t + RS_NT, ...). Scores: one warp per key, lanes over D.
// With one split the block writes the output row; with several it writes its (m, l, acc) and
// rs_sdpa_merge combines them as the CPU does.

#define RS_NT 128
#define RS_KC 32
#define RS_MAXD 512

// A 4-D strided layout: element [a, b, c, d] at off + a*s[0] + b*s[1] + c*s[2] + d*s[3].
struct Sd4 { i64 off; i64 s[4]; };

// MASK: 0 none, 1 causal (end-aligned), 2 boolean (keep where true), 3 additive.
template <class T, class TM, int MASK, int DVP>
__device__ void rs_sdpa(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                        const TM* __restrict__ mask, T* __restrict__ out, float* __restrict__ part_ml,
                        float* __restrict__ part_acc, Sd4 ql, Sd4 kl, Sd4 vl, Sd4 ml, int Hq, int Hkv, int L,
                        int S, int D, int Dv, float scale, int n_split, int split_len) {
  __shared__ float qs[RS_MAXD];
  __shared__ float ps[RS_KC];
  __shared__ float pw[RS_KC];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const i64 row = blockIdx.x;
  const int sp = blockIdx.y;
  const int i = (int)(row % L);
  const int h = (int)((row / L) % Hq);
  const i64 bb = row / ((i64)L * Hq);
  const int hk = h / (Hq / Hkv);
  const T* qr = q + ql.off + bb * ql.s[0] + h * ql.s[1] + i * ql.s[2];
  for (int d = tid; d < D; d += RS_NT) qs[d] = to_f(qr[d * ql.s[3]]) * scale;
  const T* kb = k + kl.off + bb * kl.s[0] + hk * kl.s[1];
  const T* vb = v + vl.off + bb * vl.s[0] + hk * vl.s[1];
  const TM* mr = mask + ml.off + bb * ml.s[0] + h * ml.s[1] + i * ml.s[2];

  int k_start = sp * split_len;
  int k_end = min(S, k_start + split_len);
  // causal: keys j <= lim are visible; a row that sees none attends uniformly to every key
  const int lim = i + S - L;
  const bool uniform = (MASK == 1) && lim < 0;
  if (MASK == 1 && !uniform) k_end = min(k_end, lim + 1);
  k_start = min(k_start, k_end);

  float m = -__int_as_float(0x7f800000), l = 0.0f;
  float acc[DVP];
#pragma unroll
  for (int e = 0; e < DVP; ++e) acc[e] = 0.0f;
  __syncthreads();

  for (int j0 = k_start; j0 < k_end; j0 += RS_KC) {
    const int kc = min(RS_KC, k_end - j0);
    for (int jj = warp; jj < kc; jj += RS_NT / 32) {
      const int j = j0 + jj;
      const T* kr = kb + (i64)j * kl.s[2];
      float s = 0.0f;
      for (int d = lane; d < D; d += 32) s += qs[d] * to_f(kr[d * kl.s[3]]);
      s = warp_sum(s);
      if (lane == 0) {
        if (MASK == 1) {
          if (uniform) s = 0.0f;
        } else if (MASK == 2) {
          if (!nonzero(mr[(i64)j * ml.s[3]])) s = -3.40282347e38f;  // f32::MIN
        } else if (MASK == 3) {
          s += to_f(mr[(i64)j * ml.s[3]]);
        }
        ps[jj] = s;
      }
    }
    __syncthreads();
    float bm = -__int_as_float(0x7f800000);
    for (int jj = 0; jj < kc; ++jj) bm = fmaxf(bm, ps[jj]);  // ignores NaN, as f32::max
    const float mn = fmaxf(m, bm);
    if (mn == -__int_as_float(0x7f800000)) {  // nothing visible yet (uniform across the block)
      __syncthreads();
      continue;
    }
    if (tid < kc) pw[tid] = expf(ps[tid] - mn);
    __syncthreads();
    const float corr = expf(m - mn);
    float lsum = 0.0f;
    for (int jj = 0; jj < kc; ++jj) lsum += pw[jj];
    l = l * corr + lsum;
    m = mn;
#pragma unroll
    for (int e = 0; e < DVP; ++e) {
      const int d = tid + e * RS_NT;
      if (d < Dv) {
        const T* vc = vb + (i64)d * vl.s[3];
        float a = acc[e] * corr;
#pragma unroll 4
        for (int jj = 0; jj < kc; ++jj) a += pw[jj] * to_f(vc[(i64)(j0 + jj) * vl.s[2]]);
        acc[e] = a;
      }
    }
    __syncthreads();
  }

  if (n_split == 1) {
    const float inv = 1.0f / l;  // no weight at all → NaN, as MLX's softmax of all -inf
#pragma unroll
    for (int e = 0; e < DVP; ++e) {
      const int d = tid + e * RS_NT;
      if (d < Dv) out[row * Dv + d] = from_f<T>(acc[e] * inv);
    }
  } else {
    const i64 p = row * n_split + sp;
    if (tid == 0) {
      part_ml[2 * p] = m;
      part_ml[2 * p + 1] = l;
    }
#pragma unroll
    for (int e = 0; e < DVP; ++e) {
      const int d = tid + e * RS_NT;
      if (d < Dv) part_acc[p * Dv + d] = acc[e];
    }
  }
}

// Combines the key splits of each row: one block per row, threads over Dv.
template <class T>
__device__ void rs_sdpa_merge(const float* __restrict__ part_ml, const float* __restrict__ part_acc,
                              T* __restrict__ out, int Dv, int n_split) {
  const i64 row = blockIdx.x;
  const float* pm = part_ml + row * n_split * 2;
  const float* pa = part_acc + row * n_split * Dv;
  float m = -__int_as_float(0x7f800000);
  // unrolled so that several splits' loads are in flight at once
#pragma unroll 8
  for (int sp = 0; sp < n_split; ++sp) m = fmaxf(m, pm[2 * sp]);
  for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
    float x = 0.0f, lsum = 0.0f;
#pragma unroll 8
    for (int sp = 0; sp < n_split; ++sp) {
      const float ms = pm[2 * sp];
      if (ms == -__int_as_float(0x7f800000)) continue;
      const float c = expf(ms - m);
      lsum += pm[2 * sp + 1] * c;
      x += pa[(i64)sp * Dv + d] * c;
    }
    out[row * Dv + d] = from_f<T>(x * (1.0f / lsum));
  }
}

// ---------------------------------------------------------------------------------------------
// Decode (one query per head, L = 1), GQA-aware: one block of RD_NW warps per (batch, KV head,
// key split) serves all G = Hq / Hkv query heads of that KV head, so K and V are read once for
// the G heads (the kernel above reads them once per query head). Lane l holds dims
// [l*DL, l*DL + DL) of q, K and V (D = 32 * DL, rows contiguous); warp w takes keys
// k0 + w, k0 + w + RD_NW, ...; per key: G dot products reduced across the warp, an online
// softmax per head in f32, V accumulated in registers. The warps' states meet in shared memory;
// the block writes the output row (one split) or its (m, l, acc) for rs_sdpa_merge.
#define RD_NW 4

template <class T, int DL>
__device__ __forceinline__ void rd_load_row(const T* __restrict__ p, float* o) {
#pragma unroll
  for (int e = 0; e < DL; ++e) o[e] = to_f(p[e]);
}
template <>
__device__ __forceinline__ void rd_load_row<bf16, 4>(const bf16* __restrict__ p, float* o) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
  o[0] = __int_as_float(v.x << 16);
  o[1] = __int_as_float(v.x & 0xffff0000u);
  o[2] = __int_as_float(v.y << 16);
  o[3] = __int_as_float(v.y & 0xffff0000u);
}

// A lane's DL elements of one V row as loaded (16-bit types stay packed: a register per two
// elements), so that all of a step's rows can be in flight while its scores are computed.
template <class T, int DL>
struct RdRow {
  float v[DL];
  __device__ __forceinline__ void load(const T* __restrict__ p) { rd_load_row<T, DL>(p, v); }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int e = 0; e < DL; ++e) v[e] = 0.0f;
  }
  __device__ __forceinline__ void get(float* o) const {
#pragma unroll
    for (int e = 0; e < DL; ++e) o[e] = v[e];
  }
};
// Two packed 16-bit elements to floats.
__device__ __forceinline__ void rd_unpack2(const bf16*, u32 w, float* o) {
  o[0] = __int_as_float(w << 16);
  o[1] = __int_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void rd_unpack2(const f16*, u32 w, float* o) {
  o[0] = h2f((unsigned short)(w & 0xffffu));
  o[1] = h2f((unsigned short)(w >> 16));
}
template <class T>
struct RdRow16x4 {
  uint2 r;
  __device__ __forceinline__ void load(const T* __restrict__ p) { r = __ldg(reinterpret_cast<const uint2*>(p)); }
  __device__ __forceinline__ void zero() { r = make_uint2(0u, 0u); }
  __device__ __forceinline__ void get(float* o) const {
    rd_unpack2(static_cast<const T*>(nullptr), r.x, o);
    rd_unpack2(static_cast<const T*>(nullptr), r.y, o + 2);
  }
};
template <>
struct RdRow<bf16, 4> : RdRow16x4<bf16> {};
template <>
struct RdRow<f16, 4> : RdRow16x4<f16> {};

// Most key splits a decode launch's last block merges itself (their weights sit in shared
// memory); with more, the host launches rs_sdpa_merge after the kernel.
#define RD_MERGE_MAX 128

// The split merge done inside a decode launch: every block of a (batch, KV head, head part) has
// written its (m, l, acc) for the G rows row0 .. row0 + G; the block that arrives last at
// `ticket` (that pair's counter, zero on entry) combines all splits as rs_sdpa_merge does, with
// every split's loads in flight together, and sets the counter back to zero. This saves the
// merge launch's wait for the whole grid and its split-after-split loads (10.5 us a layer on an
// H100 for Llama-8B at 8,256 keys). The pattern is the CUDA threadFenceReduction sample's: the
// partials are fenced before the count, and read past L1 (__ldcg). `sc`: G * RD_MERGE_MAX floats
// of shared memory the block no longer needs (the warp states rd_combine has read).
template <class T, int G, int D>
__device__ __forceinline__ void rd_merge_last(const float* __restrict__ part_ml, const float* __restrict__ part_acc,
                                              T* __restrict__ out, i64 row0, int n_split, unsigned* ticket,
                                              float (*sc)[RD_MERGE_MAX]) {
  __shared__ float sinv[G];
  __shared__ unsigned arrived;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) arrived = atomicAdd(ticket, 1u);
  __syncthreads();
  if (arrived != (unsigned)n_split - 1) return;
  __threadfence();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float NEG_INF = -__int_as_float(0x7f800000);
  constexpr int PL = RD_MERGE_MAX / 32;
  // each split's weight exp(m_s - M) and the rows' 1 / L, a warp per row
  for (int g = warp; g < G; g += RD_NW) {
    const float* pm = part_ml + (row0 + g) * n_split * 2;
    float mv[PL], lv[PL];
#pragma unroll
    for (int i = 0; i < PL; ++i) {
      const int sp = lane + 32 * i;
      mv[i] = sp < n_split ? __ldcg(pm + 2 * sp) : NEG_INF;
      lv[i] = sp < n_split ? __ldcg(pm + 2 * sp + 1) : 0.0f;
    }
    float M = NEG_INF;
#pragma unroll
    for (int i = 0; i < PL; ++i) M = fmaxf(M, mv[i]);
    M = warp_max(M);
    float L = 0.0f;
#pragma unroll
    for (int i = 0; i < PL; ++i) {
      const int sp = lane + 32 * i;
      const float c = mv[i] == NEG_INF ? 0.0f : expf(mv[i] - M);
      L = fmaf(lv[i], c, L);
      if (sp < n_split) sc[g][sp] = c;
    }
    L = warp_sum(L);
    if (lane == 0) sinv[g] = 1.0f / L;
  }
  __syncthreads();
  // a thread per 4 dims of a row, the splits 16 at a time with all 16 loads in flight (each
  // batch is one round trip to L2: Llama-8B's 33 splits take 3, not 33)
  constexpr int B = 16;
  for (int c = threadIdx.x; c < G * D / 4; c += blockDim.x) {
    const int g = c / (D / 4), d4 = c % (D / 4);
    const float4* pa = reinterpret_cast<const float4*>(part_acc + (row0 + g) * n_split * D) + d4;
    float4 A = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int sp = 0; sp < n_split; sp += B) {
      float4 a[B];
#pragma unroll
      for (int u = 0; u < B; ++u)
        a[u] = sp + u < n_split ? __ldcg(pa + (i64)(sp + u) * (D / 4)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int u = 0; u < B; ++u) {
        const float w = sp + u < n_split ? sc[g][min(sp + u, RD_MERGE_MAX - 1)] : 0.0f;
        A.x = fmaf(w, a[u].x, A.x);
        A.y = fmaf(w, a[u].y, A.y);
        A.z = fmaf(w, a[u].z, A.z);
        A.w = fmaf(w, a[u].w, A.w);
      }
    }
    T* o = out + (row0 + g) * D + 4 * d4;
    const float r = sinv[g];
    o[0] = from_f<T>(A.x * r);
    o[1] = from_f<T>(A.y * r);
    o[2] = from_f<T>(A.z * r);
    o[3] = from_f<T>(A.w * r);
  }
  if (threadIdx.x == 0) *ticket = 0u;
}

// The end of every decode kernel, once each warp's softmax state (m, l and the D accumulators
// of each of the G heads, m on the natural-log scale) is in shared memory: the block combines
// them and writes the output rows (one split) or its (m, l, acc), which the launch's last block
// merges where `tickets` is given (rd_merge_last, the counters of the launch's blockIdx.x) and
// rs_sdpa_merge otherwise.
template <class T, int G, int D>
__device__ __forceinline__ void rd_combine(const float (&sm_ml)[RD_NW][G][2], float (&sm_acc)[RD_NW][G][D],
                                           T* __restrict__ out, float* __restrict__ part_ml,
                                           float* __restrict__ part_acc, i64 bb, int h0, int Hq, int sp,
                                           int n_split, unsigned* tickets) {
  static_assert(RD_NW * D >= RD_MERGE_MAX, "the split weights of rd_merge_last live in sm_acc");
  const float NEG_INF = -__int_as_float(0x7f800000);
  for (int t = threadIdx.x; t < G * D; t += blockDim.x) {
    const int g = t / D, d = t % D;
    float M = NEG_INF;
#pragma unroll
    for (int w = 0; w < RD_NW; ++w) M = fmaxf(M, sm_ml[w][g][0]);
    float L = 0.0f, A = 0.0f;
    if (M != NEG_INF) {
#pragma unroll
      for (int w = 0; w < RD_NW; ++w) {
        const float mw = sm_ml[w][g][0];
        if (mw == NEG_INF) continue;
        const float c = expf(mw - M);
        L += sm_ml[w][g][1] * c;
        A += sm_acc[w][g][d] * c;
      }
    }
    const i64 row = bb * Hq + h0 + g;
    if (n_split == 1) {
      out[row * D + d] = from_f<T>(A * (1.0f / L));
    } else {
      const i64 p = row * n_split + sp;
      if (d == 0) {
        part_ml[2 * p] = M;
        part_ml[2 * p + 1] = L;
      }
      part_acc[p * D + d] = A;
    }
  }
  if (n_split > 1 && tickets != nullptr)
    rd_merge_last<T, G, D>(part_ml, part_acc, out, bb * Hq + h0, n_split, tickets + blockIdx.x,
                           reinterpret_cast<float (*)[RD_MERGE_MAX]>(&sm_acc[0][0][0]));
}

// The end of the CUDA-core decode kernels: the warps' states (lane l holding dims
// [l*DL, l*DL + DL) of each of the G heads) into shared memory, then rd_combine.
template <class T, int G, int DL>
__device__ __forceinline__ void rd_finish(const float (&m)[G], const float (&l)[G], const float (&acc)[G][DL],
                                          float (&sm_ml)[RD_NW][G][2], float (&sm_acc)[RD_NW][G][32 * DL],
                                          T* __restrict__ out, float* __restrict__ part_ml,
                                          float* __restrict__ part_acc, i64 bb, int h0, int Hq, int sp,
                                          int n_split, unsigned* tickets) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      sm_ml[warp][g][0] = m[g];
      sm_ml[warp][g][1] = l[g];
    }
#pragma unroll
    for (int e = 0; e < DL; ++e) sm_acc[warp][g][lane * DL + e] = acc[g][e];
  }
  __syncthreads();
  rd_combine<T, G, 32 * DL>(sm_ml, sm_acc, out, part_ml, part_acc, bb, h0, Hq, sp, n_split, tickets);
}

template <class T, class TM, int MASK, int G, int DL>
__device__ void rs_sdpa_decode(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                               const TM* __restrict__ mask, T* __restrict__ out, float* __restrict__ part_ml,
                               float* __restrict__ part_acc, Sd4 ql, Sd4 kl, Sd4 vl, Sd4 ml, int Hq, int Hkv, int S,
                               float scale, int n_split, int split_len, unsigned* tickets) {
  constexpr int D = 32 * DL;
  __shared__ float sm_ml[RD_NW][G][2];
  __shared__ float sm_acc[RD_NW][G][D];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hk = (int)(blockIdx.x % Hkv);
  const i64 bb = blockIdx.x / Hkv;
  const int sp = blockIdx.y;
  float qv[G][DL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const T* qr = q + ql.off + bb * ql.s[0] + (i64)(hk * G + g) * ql.s[1];
    rd_load_row<T, DL>(qr + lane * DL, qv[g]);
#pragma unroll
    for (int e = 0; e < DL; ++e) qv[g][e] *= scale;
  }
  const T* kb = k + kl.off + bb * kl.s[0] + hk * kl.s[1] + lane * DL;
  const T* vb = v + vl.off + bb * vl.s[0] + hk * vl.s[1] + lane * DL;
  const int k0 = sp * split_len, k1 = min(S, k0 + split_len);
  const float NEG_INF = -__int_as_float(0x7f800000);
  float m[G], l[G], acc[G][DL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = NEG_INF;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < DL; ++e) acc[g][e] = 0.0f;
  }
  for (int j = k0 + warp; j < k1; j += RD_NW) {
    float kv[DL], vv[DL];
    rd_load_row<T, DL>(kb + (i64)j * kl.s[2], kv);
    rd_load_row<T, DL>(vb + (i64)j * vl.s[2], vv);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < DL; ++e) s = fmaf(qv[g][e], kv[e], s);
      s = warp_sum(s);
      if (MASK == 2 || MASK == 3) {
        const TM mv = mask[ml.off + bb * ml.s[0] + (i64)(hk * G + g) * ml.s[1] + (i64)j * ml.s[3]];
        if (MASK == 2) {
          if (!nonzero(mv)) s = -3.40282347e38f;  // f32::MIN, as the CPU
        } else {
          s += to_f(mv);
        }
      }
      const float mn = fmaxf(m[g], s);
      if (mn == NEG_INF) continue;  // an additive -inf before any visible key
      const float corr = expf(m[g] - mn), p = expf(s - mn);
      l[g] = l[g] * corr + p;
#pragma unroll
      for (int e = 0; e < DL; ++e) acc[g][e] = fmaf(p, vv[e], acc[g][e] * corr);
      m[g] = mn;
    }
  }
  rd_finish<T, G, DL>(m, l, acc, sm_ml, sm_acc, out, part_ml, part_acc, bb, hk * G, Hq, sp, n_split, tickets);
}

// Where a lanes-over-keys block sits: batch row, KV head, which of the `parts` blocks sharing
// that KV head's query heads (fewer registers per lane, more blocks in flight; each block reads
// the KV head's keys itself), its first query head and its key split.
struct RdPlace {
  i64 bb;
  int hk, gp, h0, sp;
};
template <int G>
__device__ __forceinline__ RdPlace rd_place(int Hq, int Hkv) {
  const int parts = Hq / (Hkv * G);
  const i64 pair = blockIdx.x / parts;
  RdPlace r;
  r.gp = (int)(blockIdx.x % parts);
  r.hk = (int)(pair % Hkv);
  r.bb = pair / Hkv;
  r.h0 = r.hk * G * parts + r.gp * G;
  r.sp = blockIdx.y;
  return r;
}

// The block's G q rows times `scale` into shared memory, every load issued before the first
// store (one memory latency, not G·D/128).
template <class T, int G, int D>
__device__ __forceinline__ void rd_load_q(const T* __restrict__ q, const Sd4& ql, const RdPlace& at, float scale,
                                          float (&sq)[G][D]) {
  constexpr int QN = (G * D + 32 * RD_NW - 1) / (32 * RD_NW);
  float qt[QN];
#pragma unroll
  for (int i = 0; i < QN; ++i) {
    const int t = threadIdx.x + i * 32 * RD_NW;
    qt[i] = t < G * D ? to_f(q[ql.off + at.bb * ql.s[0] + (i64)(at.h0 + t / D) * ql.s[1] + t % D]) : 0.0f;
  }
#pragma unroll
  for (int i = 0; i < QN; ++i) {
    const int t = threadIdx.x + i * 32 * RD_NW;
    if (t < G * D) sq[t / D][t % D] = qt[i] * scale;
  }
}

// A warp's empty softmax state for its G heads: m = -inf, l = 0, the DL accumulators 0.
template <int G, int DL>
__device__ __forceinline__ void rd_state_init(float (&m)[G], float (&l)[G], float (&acc)[G][DL]) {
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -__int_as_float(0x7f800000);
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < DL; ++e) acc[g][e] = 0.0f;
  }
}

// One step of 32 keys (a key per lane) of the lanes-over-keys kernels' online softmax: lane
// j's scores s[g] (-inf where it has no key) fold into each head's (m, l), the accumulators are
// rescaled, and the lane's probabilities go to p[g] (its row of the warp's shared memory) for
// the V pass.
template <int G, int DL>
__device__ __forceinline__ void rd_lk_softmax_step(const float (&s)[G], float (&m)[G], float (&l)[G],
                                                   float (&acc)[G][DL], float* p_out) {
  const float NEG_INF = -__int_as_float(0x7f800000);
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float mn = fmaxf(m[g], warp_max(s[g]));
    float p = 0.0f, corr = 1.0f;
    if (mn != NEG_INF) {  // else no key so far is visible (additive -inf)
      corr = expf(m[g] - mn);
      p = expf(s[g] - mn);
    }
    l[g] = l[g] * corr + warp_sum(p);
#pragma unroll
    for (int e = 0; e < DL; ++e) acc[g][e] *= corr;
    m[g] = mn;
    p_out[g] = p;
  }
}

// The keys [k0, min(S, k0 + split_len)) of the block's split against its scaled q rows `sq`,
// then, where `kn` is given, one more key: `kn` and `vn` (D floats each, shared memory), a key
// the block holds itself (the decode step's own, `rope_kv_sdpa`), folded into warp 0's state.
template <class T, class TM, int MASK, int G, int DL>
__device__ __forceinline__ void rd_lk_attend(const float (&sq)[G][32 * DL], const T* __restrict__ k, const T* __restrict__ v,
                             const TM* __restrict__ mask, T* __restrict__ out, float* __restrict__ part_ml,
                             float* __restrict__ part_acc, const Sd4& kl, const Sd4& vl, const Sd4& ml,
                             const RdPlace& at, int Hq, int S, int n_split, int split_len,
                             const float* __restrict__ kn, const float* __restrict__ vn, unsigned* tickets) {
  constexpr int D = 32 * DL;
  __shared__ float sm_ml[RD_NW][G][2];
  __shared__ float sm_acc[RD_NW][G][D];
  __shared__ float sp_p[RD_NW][32][G];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 bb = at.bb;
  const int hk = at.hk, h0 = at.h0, sp = at.sp;
  const T* kb = k + kl.off + bb * kl.s[0] + hk * kl.s[1];
  const T* vb = v + vl.off + bb * vl.s[0] + hk * vl.s[1] + lane * DL;
  const int k0 = sp * split_len, k1 = min(S, k0 + split_len);
  const float NEG_INF = -__int_as_float(0x7f800000);
  float m[G], l[G], acc[G][DL];
  rd_state_init<G, DL>(m, l, acc);
  for (int base = k0 + warp * 32; base < k1; base += RD_NW * 32) {
    const int j = base + lane;
    const int nk = min(32, k1 - base);
    // PRE: the step's V rows first, their loads in flight while the scores are computed (a key
    // past the split has p = 0 and reads as zeros). Measured on an H100 (docs/PERF.md): 1.03–
    // 1.10x decode for G·DL <= 16 (Llama-8B, SmolLM2); slower at G = 8, DL = 4 (Qwen3-30B-A3B),
    // whose registers the 32 rows crowd, so there V is read 8 rows at a time after the scores.
    constexpr bool PRE = G * DL <= 16;
    RdRow<T, DL> vr[PRE ? 32 : 1];
    if (PRE) {
#pragma unroll
      for (int u = 0; u < 32; ++u) {
        if (u < nk) {
          vr[u].load(vb + (i64)(base + u) * vl.s[2]);
        } else {
          vr[u].zero();
        }
      }
    }
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) s[g] = 0.0f;
    if (j < k1) {
      const T* kr = kb + (i64)j * kl.s[2];
#pragma unroll 8
      for (int d0 = 0; d0 < D; d0 += 8) {
        float kv[8];
        load8(kr + d0, kv);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float4 qa = *reinterpret_cast<const float4*>(&sq[g][d0]);
          const float4 qc = *reinterpret_cast<const float4*>(&sq[g][d0 + 4]);
          s[g] = fmaf(qa.x, kv[0], fmaf(qa.y, kv[1], fmaf(qa.z, kv[2], fmaf(qa.w, kv[3], s[g]))));
          s[g] = fmaf(qc.x, kv[4], fmaf(qc.y, kv[5], fmaf(qc.z, kv[6], fmaf(qc.w, kv[7], s[g]))));
        }
      }
      if (MASK == 2 || MASK == 3) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const TM mv = mask[ml.off + bb * ml.s[0] + (i64)(h0 + g) * ml.s[1] + (i64)j * ml.s[3]];
          if (MASK == 2) {
            if (!nonzero(mv)) s[g] = -3.40282347e38f;  // f32::MIN, as the CPU
          } else {
            s[g] += to_f(mv);
          }
        }
      }
    } else {
#pragma unroll
      for (int g = 0; g < G; ++g) s[g] = NEG_INF;
    }
    rd_lk_softmax_step<G, DL>(s, m, l, acc, sp_p[warp][lane]);
    __syncwarp();
    if (PRE) {
#pragma unroll
      for (int u = 0; u < 32; ++u) {
        float vv[DL];
        vr[u % (PRE ? 32 : 1)].get(vv);  // the index stays in bounds where this branch is dead
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float pt = sp_p[warp][u][g];
#pragma unroll
          for (int e = 0; e < DL; ++e) acc[g][e] = fmaf(pt, vv[e], acc[g][e]);
        }
      }
    } else {
      // 8 rows at a time, all 8 loads issued before any is used
      for (int t0 = 0; t0 < nk; t0 += 8) {
        float vv[8][DL];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          if (t0 + u < nk) {
            rd_load_row<T, DL>(vb + (i64)(base + t0 + u) * vl.s[2], vv[u]);
          } else {
#pragma unroll
            for (int e = 0; e < DL; ++e) vv[u][e] = 0.0f;
          }
        }
#pragma unroll
        for (int u = 0; u < 8; ++u)
#pragma unroll
          for (int g = 0; g < G; ++g) {
            const float pt = sp_p[warp][t0 + u][g];
#pragma unroll
            for (int e = 0; e < DL; ++e) acc[g][e] = fmaf(pt, vv[u][e], acc[g][e]);
          }
      }
    }
    __syncwarp();
  }
  if (kn != nullptr && warp == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < DL; ++e) s = fmaf(sq[g][lane * DL + e], kn[lane * DL + e], s);
      s = warp_sum(s);
      const float mn = fmaxf(m[g], s), corr = expf(m[g] - mn), p = expf(s - mn);
      l[g] = l[g] * corr + p;
#pragma unroll
      for (int e = 0; e < DL; ++e) acc[g][e] = fmaf(p, vn[lane * DL + e], acc[g][e] * corr);
      m[g] = mn;
    }
  }
  rd_finish<T, G, DL>(m, l, acc, sm_ml, sm_acc, out, part_ml, part_acc, bb, h0, Hq, sp, n_split, tickets);
}

// ---------------------------------------------------------------------------------------------
// Decode on tensor cores (`rd_mma_attend`: 16-bit K and V with rows contiguous and 16-byte
// aligned, G <= 8 query heads per block, D of 64 or 128, no mask). One block per (batch row,
// KV head, head part, key split) as in rd_lk_attend, its G heads all in one pass over the keys
// (ops/sdpa.rs LkGrid: a batch's blocks hold all of a KV head's heads, so K and V are read
// once; one sequence's share them out as the CUDA-core kernel does, for more blocks). Each warp
// takes tiles of 16 keys (tiles warp, warp + RD_NW, ...), the next tile's loads in flight while
// one is computed. Measured on an H100 (docs/PERF.md, calls Z1-Z7): 7.06 M -> 2.51 M warp
// instructions a launch at 8,256 keys; Llama-8B 1.05x there, Qwen3-30B-A3B 1.28x.
// Per tile: S = Q Kᵀ on mma.sync m16n8k16 (the G heads are rows of the 16-row A tile, the rest
// zero; two n-tiles of 8 keys; D / 16 k-steps); an online softmax in f32 on the exp2 scale; then
// Oᵀ = Vᵀ Pᵀ (dims as rows, the heads as the 8 columns, the tile's 16 keys as k), P rounded to
// the input type as flash attention rounds it. Every operand goes from global memory straight
// into registers in fragment form. A dot product's dimension order and the output's are free to
// permute (as long as Q and K agree), so every lane loads whole 16-byte pieces; lane (g, t) =
// (lane / 4, lane % 4):
//   S's B (K)    key 8j + g of n-tile j, dims [32c + 8t, +8) of each 32-dim chunk c; k-step
//                2c + h takes words 2h, 2h + 1 (k index 2t + e <-> dim 32c + 8t + 4h + e,
//                2t + 8 + e <-> 32c + 8t + 4h + 2 + e). Q's A: the same dims of head g.
//   Oᵀ's B (Pᵀ)  S's accumulator as it is: lane (g, t) holds P[g][2t, 2t + 1] (n-tile 0) and
//                P[g][8 + 2t, 9 + 2t] (n-tile 1), mma's B layout for k = key, n = head.
//   Oᵀ's A (Vᵀ)  keys 2t, 2t + 1, 8 + 2t, 9 + 2t, dims [64ch + 8g, +8) of each 64-dim chunk ch;
//                m-tile mt takes word mt % 4 of chunk mt / 4 of each key, two keys' halves
//                interleaved by byte permutes: row g <-> dim 64(mt / 4) + 8g + 2(mt % 4) (the
//                tile's `rd_mma_dim`), row g + 8 <-> the dim after it.
//   Oᵀ's C       lane (g, t) holds heads 2t, 2t + 1 at those two dims of each m-tile.
template <int D>
struct RdMmaTile {
  uint4 k[2][D / 32];
  uint4 v[4][D / 64];
};

// The output dim of row g of Oᵀ's m-tile mt (row g + 8 is the next one).
__device__ __forceinline__ int rd_mma_dim(int mt, int g) { return 64 * (mt >> 2) + 8 * g + 2 * (mt & 3); }

// The loads of the 16 keys at `base` (a key at or past k1 reads key k1 - 1 instead: in bounds,
// and masked out of the softmax).
template <class T, int D>
__device__ __forceinline__ void rd_mma_load(RdMmaTile<D>& f, const T* __restrict__ kb, const T* __restrict__ vb,
                                            i64 ks, i64 vs, int base, int k1, int g, int t) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const T* r = kb + (i64)min(base + 8 * j + g, k1 - 1) * ks + 8 * t;
#pragma unroll
    for (int c = 0; c < D / 32; ++c) f.k[j][c] = __ldg(reinterpret_cast<const uint4*>(r + 32 * c));
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const T* p = vb + (i64)min(base + 2 * t + (r & 1) + 8 * (r >> 1), k1 - 1) * vs + 8 * g;
#pragma unroll
    for (int ch = 0; ch < D / 64; ++ch) f.v[r][ch] = __ldg(reinterpret_cast<const uint4*>(p + 64 * ch));
  }
}

// One tile: its scores, the online softmax update of head g's (m, l) (l summed over this lane's
// keys only) and Oᵀ += Vᵀ Pᵀ after rescaling. `sl2`: the scale times log2(e).
template <class T, int D>
__device__ __forceinline__ void rd_mma_tile(const RdMmaTile<D>& f, const u32 (&qf)[D / 32][4], float (&o)[D / 16][4],
                                            float& m, float& l, int base, int k1, float sl2, int t) {
  const float NEG_INF = -__int_as_float(0x7f800000);
  float s[2][4];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
      const u32 kw[4] = {f.k[j][c].x, f.k[j][c].y, f.k[j][c].z, f.k[j][c].w};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const u32 a[4] = {qf[c][2 * h], 0u, qf[c][2 * h + 1], 0u};
        const u32 b[2] = {kw[2 * h], kw[2 * h + 1]};
        TcMma<T>::run(s[j], a, b);
      }
    }
  }
  float mx = NEG_INF;
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[j][e] = base + 8 * j + 2 * t + e < k1 ? s[j][e] * sl2 : NEG_INF;
      mx = fmaxf(mx, s[j][e]);
    }
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
  const float mn = fmaxf(m, mx);  // finite: the tile's first key is before k1
  const float corr = exp2f(m - mn);
  m = mn;
  float p[2][2], ps = 0.0f;
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      p[j][e] = exp2f(s[j][e] - mn);
      ps += p[j][e];
    }
  l = l * corr + ps;
  const u32 b[2] = {TcMma<T>::pack(p[0][0], p[0][1]), TcMma<T>::pack(p[1][0], p[1][1])};
  const float c_lo = __shfl_sync(0xffffffffu, corr, 8 * t), c_hi = __shfl_sync(0xffffffffu, corr, 8 * t + 4);
#pragma unroll
  for (int mt = 0; mt < D / 16; ++mt) {
    o[mt][0] *= c_lo;
    o[mt][1] *= c_hi;
    o[mt][2] *= c_lo;
    o[mt][3] *= c_hi;
    const u32 w[4] = {reinterpret_cast<const u32*>(&f.v[0][mt >> 2])[mt & 3],
                      reinterpret_cast<const u32*>(&f.v[1][mt >> 2])[mt & 3],
                      reinterpret_cast<const u32*>(&f.v[2][mt >> 2])[mt & 3],
                      reinterpret_cast<const u32*>(&f.v[3][mt >> 2])[mt & 3]};
    const u32 a[4] = {__byte_perm(w[0], w[1], 0x5410), __byte_perm(w[0], w[1], 0x7632),
                      __byte_perm(w[2], w[3], 0x5410), __byte_perm(w[2], w[3], 0x7632)};
    TcMma<T>::run(o[mt], a, b);
  }
}

// Q's A fragments (rows g < G real, the rest zero): lane (g, t) holds dims [32c + 8t, +8) of
// head g for each 32-dim chunk c (q: row g at q + g * qs, 16-byte aligned).
template <class T, int G, int D>
__device__ __forceinline__ void rd_mma_q(const T* q, i64 qs, u32 (&qf)[D / 32][4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int c = 0; c < D / 32; ++c) {
    uint4 w = make_uint4(0u, 0u, 0u, 0u);
    if (g < G) w = *reinterpret_cast<const uint4*>(q + g * qs + 32 * c + 8 * t);
    qf[c][0] = w.x;
    qf[c][1] = w.y;
    qf[c][2] = w.z;
    qf[c][3] = w.w;
  }
}

// The end of a tensor-core decode block: each warp's state (m on the exp2 scale, l summed per
// lane, Oᵀ's accumulators) into shared memory in rd_combine's layout, then rd_combine.
template <class T, int G, int D>
__device__ __forceinline__ void rd_mma_finish(float m, float l, const float (&o)[D / 16][4],
                                              float (&sm_ml)[RD_NW][G][2], float (&sm_acc)[RD_NW][G][D],
                                              T* __restrict__ out, float* __restrict__ part_ml,
                                              float* __restrict__ part_acc, const RdPlace& at, int Hq, int n_split,
                                              unsigned* tickets) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  if (t == 0 && g < G) {
    sm_ml[warp][g][0] = m * 0.6931471805599453f;  // back to the natural-log scale rd_combine uses
    sm_ml[warp][g][1] = l;
  }
#pragma unroll
  for (int mt = 0; mt < D / 16; ++mt) {
    const int d0 = rd_mma_dim(mt, g);
    if (2 * t < G) {
      sm_acc[warp][2 * t][d0] = o[mt][0];
      sm_acc[warp][2 * t][d0 + 1] = o[mt][2];
    }
    if (2 * t + 1 < G) {
      sm_acc[warp][2 * t + 1][d0] = o[mt][1];
      sm_acc[warp][2 * t + 1][d0 + 1] = o[mt][3];
    }
  }
  __syncthreads();
  rd_combine<T, G, D>(sm_ml, sm_acc, out, part_ml, part_acc, at.bb, at.h0, Hq, at.sp, n_split, tickets);
}

// The keys [k0, min(S, k0 + split_len)) of the block's split against its G q rows `q` (type T,
// unscaled, row g at q + g * qs, 16-byte aligned: shared or global memory), then, where `kn` is
// given, one more key (`kn`, `vn`: D floats each in shared memory, the decode step's own key,
// `rope_kv_sdpa`), folded into warp 0's state; then rd_combine.
template <class T, int G, int D>
__device__ __forceinline__ void rd_mma_attend(const T* q, i64 qs, const T* __restrict__ k, const T* __restrict__ v,
                                              T* __restrict__ out, float* __restrict__ part_ml,
                                              float* __restrict__ part_acc, const Sd4& kl, const Sd4& vl,
                                              const RdPlace& at, int Hq, int S, int n_split, int split_len,
                                              float scale, const float* __restrict__ kn,
                                              const float* __restrict__ vn, unsigned* tickets) {
  static_assert(G >= 1 && G <= 8 && (D == 64 || D == 128), "rd_mma_attend: G <= 8 heads of D 64 or 128");
  __shared__ float sm_ml[RD_NW][G][2];
  __shared__ float sm_acc[RD_NW][G][D];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
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
  // two tiles' registers, loaded and used in turn (the loop unrolled by two keeps them static)
  RdMmaTile<D> fa, fb;
  int base = k0 + 16 * warp;
  if (base < k1) rd_mma_load<T, D>(fa, kb, vb, ks, vs, base, k1, g, t);
  while (base < k1) {
    const int nb = base + STEP;
    if (nb < k1) rd_mma_load<T, D>(fb, kb, vb, ks, vs, nb, k1, g, t);
    rd_mma_tile<T, D>(fa, qf, o, m, l, base, k1, sl2, t);
    if (nb >= k1) break;
    base = nb + STEP;
    if (base < k1) rd_mma_load<T, D>(fa, kb, vb, ks, vs, base, k1, g, t);
    rd_mma_tile<T, D>(fb, qf, o, m, l, nb, k1, sl2, t);
  }
  if (kn != nullptr && warp == 0) {
    // head g against the new key: lane t sums dims [t D / 4, (t + 1) D / 4)
    float x = 0.0f;
    if (g < G) {
#pragma unroll 8
      for (int d = t * (D / 4); d < (t + 1) * (D / 4); ++d) x = fmaf(to_f(q[g * qs + d]), kn[d], x);
    }
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    x *= sl2;
    const float mn = fmaxf(m, x), corr = exp2f(m - mn), p = exp2f(x - mn);
    m = mn;
    l = l * corr + (t == 0 ? p : 0.0f);
    const float c_lo = __shfl_sync(0xffffffffu, corr, 8 * t), c_hi = __shfl_sync(0xffffffffu, corr, 8 * t + 4);
    const float p_lo = __shfl_sync(0xffffffffu, p, 8 * t), p_hi = __shfl_sync(0xffffffffu, p, 8 * t + 4);
#pragma unroll
    for (int mt = 0; mt < D / 16; ++mt) {
      const int d0 = rd_mma_dim(mt, g);
      o[mt][0] = fmaf(p_lo, vn[d0], o[mt][0] * c_lo);
      o[mt][1] = fmaf(p_hi, vn[d0], o[mt][1] * c_hi);
      o[mt][2] = fmaf(p_lo, vn[d0 + 1], o[mt][2] * c_lo);
      o[mt][3] = fmaf(p_hi, vn[d0 + 1], o[mt][3] * c_hi);
    }
  }
  rd_mma_finish<T, G, D>(m, l, o, sm_ml, sm_acc, out, part_ml, part_acc, at, Hq, n_split, tickets);
}

// Decode with keys across the lanes (the default where rows are 16-byte aligned): the block's
// scaled q rows sit in shared memory; per step a warp takes 32 keys, lane l scoring key
// base + l against the G heads by itself (K row read with 16-byte loads, no shuffles per
// key); one warp max and sum per head and step update the online softmax; then the 32 keys'
// V rows (loaded before the scores where registers allow, see PRE) are accumulated with lane l
// holding dims [l*DL, l*DL + DL), the probabilities read from shared memory (`rd_lk_attend`).
// The per-key chain of rs_sdpa_decode (G warp reductions in series) becomes 32 independent keys
// per step. Same states and ending as rs_sdpa_decode.
template <class T, class TM, int MASK, int G, int DL>
__device__ void rs_sdpa_decode_lk(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                  const TM* __restrict__ mask, T* __restrict__ out, float* __restrict__ part_ml,
                                  float* __restrict__ part_acc, Sd4 ql, Sd4 kl, Sd4 vl, Sd4 ml, int Hq, int Hkv,
                                  int S, float scale, int n_split, int split_len, unsigned* tickets) {
  constexpr int D = 32 * DL;
  __shared__ __align__(16) float sq[G][D];
  const RdPlace at = rd_place<G>(Hq, Hkv);
  rd_load_q<T, G, D>(q, ql, at, scale, sq);
  __syncthreads();
  rd_lk_attend<T, TM, MASK, G, DL>(sq, k, v, mask, out, part_ml, part_acc, kl, vl, ml, at, Hq, S, n_split,
                                   split_len, nullptr, nullptr, tickets);
}

// ---------------------------------------------------------------------------------------------
// Prefill (many query rows): one block of 128 threads per (16 query rows, query head), keys in
// tiles of 32 through shared memory (f32), so a K/V tile is read once for 16 rows instead of
// once per row. Thread t owns row t / 8 of the tile: scores of keys t % 8 + 8 c (c < 4), then
// output dims t % 8 + 8 e (e < D / 8); the 8 threads of a row reduce its max and sum by
// shuffles. Online softmax in f32; masks as rs_sdpa (end-aligned causal, rows that see no key
// attend uniformly).
#define RP_BQ 16
#define RP_BK 32

template <class T, class TM, int MASK, int D>
__device__ void rs_sdpa_prefill(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                const TM* __restrict__ mask, T* __restrict__ out, Sd4 ql, Sd4 kl, Sd4 vl, Sd4 ml,
                                int Hq, int Hkv, int L, int S, float scale) {
  constexpr int DP = D + 4;  // padded rows: 16-byte aligned, consecutive rows 4 banks apart
  __shared__ __align__(16) float qs[RP_BQ][DP];
  __shared__ __align__(16) float ks[RP_BK][DP];
  __shared__ __align__(16) float vs[RP_BK][D];
  __shared__ float ps[RP_BQ][RP_BK];
  const int t = threadIdx.x, r = t >> 3, c8 = t & 7;
  const int i0 = blockIdx.x * RP_BQ;
  const int h = (int)(blockIdx.y % Hq);
  const i64 bb = blockIdx.y / Hq;
  const int hk = h / (Hq / Hkv);
  const T* qb = q + ql.off + bb * ql.s[0] + h * ql.s[1];
  const T* kb = k + kl.off + bb * kl.s[0] + hk * kl.s[1];
  const T* vb = v + vl.off + bb * vl.s[0] + hk * vl.s[1];
  for (int e = t; e < RP_BQ * D; e += blockDim.x) {
    const int rr = e / D, d = e % D;
    const int i = i0 + rr;
    qs[rr][d] = i < L ? to_f(qb[(i64)i * ql.s[2] + d * ql.s[3]]) * scale : 0.0f;
  }
  const int i = i0 + r;  // this thread's query row
  const int lim = i + S - L;
  const bool uniform = (MASK == 1) && lim < 0;
  // keys any row of the tile may see
  int kend = S;
  if (MASK == 1 && i0 + S - L >= 0) {  // (a tile with a uniform row needs every key)
    const int last = min(i0 + RP_BQ, L) - 1;
    kend = min(S, last + S - L + 1);
  }
  const float NEG_INF = -__int_as_float(0x7f800000);
  float m = NEG_INF, l = 0.0f;
  float acc[D / 8];
#pragma unroll
  for (int e = 0; e < D / 8; ++e) acc[e] = 0.0f;

  for (int j0 = 0; j0 < kend; j0 += RP_BK) {
    __syncthreads();  // the previous tile's ks/vs/ps are consumed
    for (int e = t; e < RP_BK * D; e += blockDim.x) {
      const int jj = e / D, d = e % D;
      const int j = j0 + jj;
      float kv = 0.0f, vv = 0.0f;
      if (j < S) {
        kv = to_f(kb[(i64)j * kl.s[2] + d * kl.s[3]]);
        vv = to_f(vb[(i64)j * vl.s[2] + d * vl.s[3]]);
      }
      ks[jj][d] = kv;
      vs[jj][d] = vv;
    }
    __syncthreads();
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 8
    for (int d = 0; d < D; d += 4) {
      const float4 qv = *reinterpret_cast<const float4*>(&qs[r][d]);
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float4 kv = *reinterpret_cast<const float4*>(&ks[c8 + 8 * c][d]);
        s[c] = fmaf(qv.x, kv.x, fmaf(qv.y, kv.y, fmaf(qv.z, kv.z, fmaf(qv.w, kv.w, s[c]))));
      }
    }
    float bm = NEG_INF;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int j = j0 + c8 + 8 * c;
      bool vis = j < S && i < L;
      float sc = s[c];
      if (MASK == 1) {
        if (uniform) sc = 0.0f;
        else vis = vis && j <= lim;
      } else if (MASK == 2 || MASK == 3) {
        if (vis) {
          const TM mv = mask[ml.off + bb * ml.s[0] + h * ml.s[1] + (i64)i * ml.s[2] + (i64)j * ml.s[3]];
          if (MASK == 2) {
            if (!nonzero(mv)) sc = -3.40282347e38f;  // f32::MIN, as the CPU
          } else {
            sc += to_f(mv);
          }
        }
      }
      s[c] = vis ? sc : NEG_INF;
      bm = fmaxf(bm, s[c]);
    }
    for (int o = 4; o > 0; o >>= 1) bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, o));
    const float mn = fmaxf(m, bm);
    float corr = 1.0f, lsum = 0.0f;
    if (mn == NEG_INF) {
#pragma unroll
      for (int c = 0; c < 4; ++c) ps[r][c8 + 8 * c] = 0.0f;
    } else {
      corr = expf(m - mn);
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float p = expf(s[c] - mn);  // invisible keys: exp(-inf) = 0
        ps[r][c8 + 8 * c] = p;
        lsum += p;
      }
      m = mn;
    }
    for (int o = 4; o > 0; o >>= 1) lsum += __shfl_xor_sync(0xffffffffu, lsum, o);
    l = l * corr + lsum;
    __syncwarp();
#pragma unroll
    for (int e = 0; e < D / 8; ++e) acc[e] *= corr;
    const int jn = min(RP_BK, S - j0);
    for (int jj = 0; jj < jn; ++jj) {
      const float p = ps[r][jj];
#pragma unroll
      for (int e = 0; e < D / 8; ++e) acc[e] = fmaf(p, vs[jj][c8 + 8 * e], acc[e]);
    }
  }
  if (i < L) {
    const float inv = 1.0f / l;
    T* orow = out + ((bb * Hq + h) * (i64)L + i) * D;
#pragma unroll
    for (int e = 0; e < D / 8; ++e) orow[c8 + 8 * e] = from_f<T>(acc[e] * inv);
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill on tensor cores (16-bit q/k/v, no mask or causal with at least as many keys as
// queries, D of 64 or 128, rows contiguous along D and 16-byte aligned): one block of 4 warps
// per (RF_BQ query rows, query head), each warp 16 rows; K and V tiles of RF_BK keys copied to
// shared memory by cp.async, the next K tile in flight during the softmax and P V, the next V
// tile during the next Q Kᵀ. Q Kᵀ and P V on mma.sync m16n8k16 (f32 accumulation; P rounded to
// the input type as flash attention does); online softmax in f32 on the exp2 scale, the row
// sums kept per lane and reduced once at the end. Needs mma.cuh.
#define RF_BQ 64
#define RF_BK 64

template <class T, int MASK, int D>
__device__ void rs_sdpa_flash(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                              T* __restrict__ out, Sd4 ql, Sd4 kl, Sd4 vl, int Hq, int Hkv, int L, int S,
                              float scale) {
  constexpr int LD = D + 8;   // shared row stride: ldmatrix rows in distinct banks
  constexpr int CH = D / 8;   // 16-byte chunks per row
  constexpr int KD = D / 16;  // k-steps of Q Kᵀ
  __shared__ __align__(16) unsigned short ks[RF_BK * LD];
  __shared__ __align__(16) unsigned short vs[RF_BK * LD];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int i0 = (gridDim.x - 1 - blockIdx.x) * RF_BQ;  // the longest causal rows start first
  const int h = (int)(blockIdx.y % Hq);
  const i64 bb = blockIdx.y / Hq;
  const int hk = h / (Hq / Hkv);
  const T* qb = q + ql.off + bb * ql.s[0] + h * ql.s[1];
  const T* kb = k + kl.off + bb * kl.s[0] + hk * kl.s[1];
  const T* vb = v + vl.off + bb * vl.s[0] + hk * vl.s[1];
  // Q tile through ks into A fragments, kept in registers for every key tile
  for (int c = tid; c < RF_BQ * CH; c += blockDim.x) {
    const int r = c / CH, d8 = (c % CH) * 8, i = i0 + r;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (i < L) val = *reinterpret_cast<const uint4*>(qb + (i64)i * ql.s[2] + d8);
    *reinterpret_cast<uint4*>(&ks[r * LD + d8]) = val;
  }
  __syncthreads();
  u32 qf[KD][4];
#pragma unroll
  for (int kd = 0; kd < KD; ++kd)
    tc_ldmatrix4(tc_smem(&ks[(warp * 16 + (lane & 15)) * LD + kd * 16 + (lane >> 4) * 8]), qf[kd]);
  __syncthreads();
  // keys the block's rows may see (end-aligned causal: row i sees j <= i + S - L)
  int kend = S;
  if (MASK == 1) kend = min(S, min(i0 + RF_BQ, L) + S - L);
  const int ntiles = (kend + RF_BK - 1) / RF_BK;
  auto load = [&](const T* base, i64 rs, unsigned short* dst, int j0) {
    for (int c = tid; c < RF_BK * CH; c += blockDim.x) {
      const int r = c / CH, d8 = (c % CH) * 8, j = j0 + r;
      const bool ok = j < S;
      tc_cp16(tc_smem(&dst[r * LD + d8]), base + (i64)(ok ? j : 0) * rs + d8, ok);
    }
  };
  if (ntiles > 0) load(kb, kl.s[2], ks, 0);
  tc_commit();
  if (ntiles > 0) load(vb, vl.s[2], vs, 0);
  tc_commit();
  const float NEG_INF = -__int_as_float(0x7f800000);
  const float sl2 = scale * 1.4426950408889634f;
  float o[D / 8][4];
#pragma unroll
  for (int a = 0; a < D / 8; ++a)
#pragma unroll
    for (int c = 0; c < 4; ++c) o[a][c] = 0.0f;
  float mrow[2] = {NEG_INF, NEG_INF}, lrow[2] = {0.0f, 0.0f};
  const int row_a = i0 + warp * 16 + (lane >> 2);  // this lane's rows: row_a and row_a + 8
  for (int t = 0; t < ntiles; ++t) {
    const int j0 = t * RF_BK;
    tc_wait<1>();  // K tile t
    __syncthreads();
    float s[RF_BK / 8][4];
#pragma unroll
    for (int a = 0; a < RF_BK / 8; ++a)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[a][c] = 0.0f;
#pragma unroll
    for (int kd = 0; kd < KD; ++kd)
#pragma unroll
      for (int nj = 0; nj < RF_BK / 16; ++nj) {
        u32 b[4];
        tc_ldmatrix4(tc_smem(&ks[(nj * 16 + (lane & 7) + ((lane >> 4) << 3)) * LD + kd * 16 + ((lane >> 3) & 1) * 8]), b);
        TcMma<T>::run(s[2 * nj], qf[kd], b);
        TcMma<T>::run(s[2 * nj + 1], qf[kd], b + 2);
      }
    __syncthreads();  // every warp is done with ks
    if (t + 1 < ntiles) load(kb, kl.s[2], ks, j0 + RF_BK);
    tc_commit();
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row_a + 8 * r;
      float mx = NEG_INF;
#pragma unroll
      for (int nt = 0; nt < RF_BK / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = j0 + nt * 8 + (lane & 3) * 2 + e;
          bool vis = col < S;
          if (MASK == 1) vis = vis && col <= row + S - L;
          const float sv = vis ? s[nt][2 * r + e] * sl2 : NEG_INF;
          s[nt][2 * r + e] = sv;
          mx = fmaxf(mx, sv);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mn = fmaxf(mrow[r], mx);
      const float base = mn == NEG_INF ? 0.0f : mn;  // a row that sees nothing yet stays at 0
      const float corr = exp2f(mrow[r] - base);
      mrow[r] = mn;
      float ls = 0.0f;
#pragma unroll
      for (int nt = 0; nt < RF_BK / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(s[nt][2 * r + e] - base);
          s[nt][2 * r + e] = p;
          ls += p;
        }
      lrow[r] = lrow[r] * corr + ls;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        o[dt][2 * r] *= corr;
        o[dt][2 * r + 1] *= corr;
      }
    }
    tc_wait<1>();  // V tile t
    __syncthreads();
#pragma unroll
    for (int kt = 0; kt < RF_BK / 16; ++kt) {
      const u32 a[4] = {TcMma<T>::pack(s[2 * kt][0], s[2 * kt][1]), TcMma<T>::pack(s[2 * kt][2], s[2 * kt][3]),
                        TcMma<T>::pack(s[2 * kt + 1][0], s[2 * kt + 1][1]),
                        TcMma<T>::pack(s[2 * kt + 1][2], s[2 * kt + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        u32 b[4];
        tc_ldmatrix4_t(tc_smem(&vs[(kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + dp * 16 + (lane >> 4) * 8]), b);
        TcMma<T>::run(o[2 * dp], a, b);
        TcMma<T>::run(o[2 * dp + 1], a, b + 2);
      }
    }
    __syncthreads();  // every warp is done with vs
    if (t + 1 < ntiles) load(vb, vl.s[2], vs, j0 + RF_BK);
    tc_commit();
  }
  tc_wait<0>();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = lrow[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = row_a + 8 * r;
    if (row >= L) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* orow = out + ((bb * Hq + h) * (i64)L + row) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<u32*>(&orow[dt * 8 + (lane & 3) * 2]) =
          TcMma<T>::pack(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
  }
}

// ---------------------------------------------------------------------------------------------
// Decode over ragged sequences (`fast::sdpa_rows`): batch row bb attends keys 0..lens[bb] of its
// own K/V buffers, whose addresses and strides (per KV head, per key) come in by value. Blocks
// and splits are laid out as for one [B, Hkv, S_max, D] tensor; a split past a row's length
// finds no keys and leaves an empty softmax state, which the merge skips.
#define RD_MAXROWS 16
struct RdRows {
  u64 k[RD_MAXROWS], v[RD_MAXROWS];
  i64 kh[RD_MAXROWS], kr[RD_MAXROWS], vh[RD_MAXROWS], vr[RD_MAXROWS];
};

// The caches of a fused decode step (`rope_kv_sdpa`): row bb's K and V as above (its batch
// entry's element 0) and its capacity (positions).
struct RkvRows {
  RdRows rows;
  i64 cap[RD_MAXROWS];
};

template <class T, int G, int DL>
__device__ void rs_sdpa_decode_rows(const T* __restrict__ q, const RdRows& rows, const int* __restrict__ lens,
                                    T* __restrict__ out, float* __restrict__ part_ml, float* __restrict__ part_acc,
                                    Sd4 ql, int Hq, int Hkv, float scale, int n_split, int split_len,
                                    unsigned* tickets) {
  const int parts = Hq / (Hkv * G);
  const i64 bb = blockIdx.x / parts / Hkv;
  // rows past the table are never launched (the host checks B <= RD_MAXROWS)
  const Sd4 kl = {0, {0, rows.kh[bb], rows.kr[bb], 1}};
  const Sd4 vl = {0, {0, rows.vh[bb], rows.vr[bb], 1}};
  const Sd4 ml = {0, {0, 0, 0, 0}};
  rs_sdpa_decode_lk<T, float, 0, G, DL>(q, reinterpret_cast<const T*>(rows.k[bb]),
                                        reinterpret_cast<const T*>(rows.v[bb]), nullptr, out, part_ml, part_acc,
                                        ql, kl, vl, ml, Hq, Hkv, lens[bb], scale, n_split, split_len, tickets);
}
