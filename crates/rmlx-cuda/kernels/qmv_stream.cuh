// Decode product of one row of half x with 4-bit weights, the weights streamed through shared
// memory: y[n] = Σ_k x[k] (s[n, g] q[n, k] + b[n, g]), groups of 64 or 128 codes.
//
// Why: in a replayed decode step each product starts by waiting for the kernel before it, and
// the rows kernel (qmv_rows.cuh) can have only one step of loads in flight in registers, issued
// after that wait: every kernel boundary empties the memory pipe and refills it (in the model
// the 8B's one-row products ran at 59 % of the copy bandwidth, docs/PERF.md). The weights do not
// depend on the previous kernel, so here each warp copies the weights, scales and biases of its
// next D steps by cp.async into a ring in shared memory, and issues the first D steps *before*
// waiting: a block that becomes resident while its predecessor finishes keeps the memory busy
// through the boundary, and a short matrix is in shared memory by the time x is ready.
//
// Measured (H100, in the model, docs/PERF.md): the 8B shape 1.044×, Qwen3-30B-A3B 1.064× (its
// attention products had been on the dp4a kernel). A ring of 2 steps is best; deeper rings, and
// a first version whose lanes copied their own 8-byte pieces through L1, were slower: the
// kernels around these products need their L1, which large shared memory and L1-allocating
// copies take from them.
//
// Arithmetic and work split are rq_qmv_rows' at U = 4 (rq_unit_mma, rq_rows_store): a block owns
// T tiles of 16 weight rows, its KS warps split K into contiguous runs of whole steps. A warp
// copies each step's 16 T rows × 128 bytes as whole 16-byte chunks (8 lanes per row: full
// lines, past L1) and the rows' scales and biases, into a slot laid out for conflict-free reads
// of the mma fragments (RqStreamSlot); lanes meet at __syncwarp before reading a slot and before
// refilling it. After the wait each warp copies its run of x into shared memory once, as x ∘ nw
// where NORM (summing Σx² on the way).

// 16, 8 or 4 bytes global → shared, completion tracked by cp.async groups (16: past L1).
__device__ __forceinline__ void rq_cp16(u32 dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void rq_cp8(u32 dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void rq_cp4(u32 dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void rq_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are in flight; shared-memory reads
// stay after it.
template <int N> __device__ __forceinline__ void rq_cp_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// One warp's ring slot for a step of 4 units (256 codes) of its 16 T rows: each row's 128 bytes
// of words as 8 chunks of 16 bytes, chunk c at position c ^ 2 (r & 3) (so that lanes (g, t)
// reading their 8 bytes of one unit hit 32 different banks per half-warp), then the rows'
// scales of the step (NG values each), then their biases. The host's formula
// (ops/qmv_stream.rs) must agree.
template <int T, int NG> struct RqStreamSlot {
  static constexpr int W = 16 * T * 128;
  static constexpr int M = 16 * T * NG * 2;
  static constexpr int BYTES = W + 2 * M;
  // byte offset of row r's 16-byte chunk c (the swizzle)
  static __device__ __forceinline__ int chunk(int r, int c) { return r * 128 + ((c ^ (2 * (r & 3))) << 4); }
  // byte offset of row r's 8 bytes of unit u for lane quarter t
  static __device__ __forceinline__ int word_pair(int r, int u, int t) {
    return chunk(r, 2 * u + (t >> 1)) + 8 * (t & 1);
  }
};

// TS: bf16 or f16 scales and biases; GS: 64 or 128; K a multiple of 256; weights, scales and
// biases 16-byte aligned (the host checks); dynamic shared memory KS (D slots + 128 bytes per
// unit of x a warp owns).
template <class TX, class TS, class TO, int GS, int T, int KS, int D, bool NORM, bool SWIGLU = false>
__device__ void rq_qmv_stream(const TX* __restrict__ x, const TX* __restrict__ nw, float eps,
                              const u32* __restrict__ w, const TS* __restrict__ s, const TS* __restrict__ b,
                              TO* __restrict__ y, const TO* __restrict__ res, i64 N, i64 K, i64 xbs, i64 wbs,
                              i64 sbs, i64 bbs, i64 ybs, int early) {
  constexpr int U = 4, UPG = GS / 64, NG = U / UPG;
  static_assert(NG == 2 || NG == 4, "a step holds 2 or 4 groups");
  static_assert(!SWIGLU || T == 2, "SwiGLU pairs a gate tile with an up tile");
  using Slot = RqStreamSlot<T, NG>;
  const i64 bat = rq_batch_entry(w, s, b, y, res, wbs, sbs, bbs, ybs);
  x += bat * xbs;
  rmlx_pdl_trigger();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const i64 NU = K >> 6, W = K >> 3, G = K / GS;
  const i64 per = ((NU + KS - 1) / KS + U - 1) / U * U;
  const i64 ub = warp * per, ue = ub + per < NU ? ub + per : NU;
  const int steps = ue > ub ? (int)((ue - ub) / U) : 0;
  const i64 row0 = (i64)blockIdx.x * (SWIGLU ? 16 : 16 * T);
  // copy duties: lane l copies chunk l & 7 of rows 4j + l / 8 (j < 4T), and entry l (+ 32)
  // of the scales then biases of the block's rows
  const u32* wc[4 * T];
#pragma unroll
  for (int j = 0; j < 4 * T; ++j)
    wc[j] = w + rq_weight_row<SWIGLU>(4 * j + (lane >> 3), row0, N) * W + 4 * (lane & 7);
  const unsigned short* mc[T];
#pragma unroll
  for (int j = 0; j < T; ++j) {
    const int q = lane + 32 * j, r = q % (16 * T);
    mc[j] = reinterpret_cast<const unsigned short*>(q < 16 * T ? (const void*)s : (const void*)b) +
            rq_weight_row<SWIGLU>(r, row0, N) * G;
  }
  extern __shared__ __align__(16) unsigned char rq_stream_smem[];
  unsigned char* ring = rq_stream_smem + (i64)warp * (D * Slot::BYTES + per * 128);
  const u32 ring_s = tc_smem(ring);
  auto issue = [&](int st) {
    if (st < steps) {
      const u32 slot = ring_s + (st % D) * Slot::BYTES;
      const i64 u0 = ub + (i64)st * U, grp0 = u0 / UPG;
#pragma unroll
      for (int j = 0; j < 4 * T; ++j) {
        rq_cp16(slot + Slot::chunk(4 * j + (lane >> 3), lane & 7), wc[j] + u0 * 8);
      }
#pragma unroll
      for (int j = 0; j < T; ++j) {
        const u32 at = slot + Slot::W + (lane + 32 * j) * NG * 2;
        if (NG == 4) rq_cp8(at, mc[j] + grp0);
        else rq_cp4(at, mc[j] + grp0);
      }
    }
    rq_cp_commit();
  };
  // the weights are constant: their first D steps stream before the wait on the previous kernel
  // (early 0: after it, an ablation switch)
  if (early)
#pragma unroll
    for (int st = 0; st < D; ++st) issue(st);
  rmlx_pdl_wait();
  if (!early)
#pragma unroll
    for (int st = 0; st < D; ++st) issue(st);
  // the warp's run of x (x ∘ nw where NORM) into shared memory, by 16-byte vectors
  uint4* xs = reinterpret_cast<uint4*>(ring + D * Slot::BYTES);
  float ss = 0.0f;
  {
    const uint4* xr = reinterpret_cast<const uint4*>(x + ub * 64);
    const uint4* nr = reinterpret_cast<const uint4*>(nw + ub * 64);
    const int n8 = (int)((ue - ub) * 8);
#pragma unroll 4
    for (int c = lane; c < n8; c += 32) {
      uint4 v = __ldg(xr + c);
      if (NORM) v = rq_norm8<TX>(v, __ldg(nr + c), ss);
      xs[c] = v;
    }
  }
  float acc[T][4];
#pragma unroll
  for (int i = 0; i < T; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[i][e] = 0.0f;
  for (int st = 0; st < steps; ++st) {
    rq_cp_wait<D - 1>();
    __syncwarp();  // the other lanes' copies (and, the first time, x) are visible
    const unsigned char* slot = ring + (st % D) * Slot::BYTES;
    RqMeta<NG> sv[T][2], bv[T][2];
#pragma unroll
    for (int i = 0; i < T; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = 16 * i + g + 8 * h;
        const u32* sp = reinterpret_cast<const u32*>(slot + Slot::W + r * NG * 2);
        const u32* bp = reinterpret_cast<const u32*>(slot + Slot::W + Slot::M + r * NG * 2);
#pragma unroll
        for (int j = 0; j < NG / 2; ++j) {
          sv[i][h].raw[j] = sp[j];
          bv[i][h].raw[j] = bp[j];
        }
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint4 xv[2] = {xs[(st * U + u) * 8 + 2 * t], xs[(st * U + u) * 8 + 2 * t + 1]};
      uint2 wv[T][2];
#pragma unroll
      for (int i = 0; i < T; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          wv[i][h] = *reinterpret_cast<const uint2*>(slot + Slot::word_pair(16 * i + g + 8 * h, u, t));
      rq_unit_mma<TX, TS, T, NG>(xv, wv, sv, bv, u / UPG, acc);
    }
    __syncwarp();  // every lane has read the slot before it is refilled
    issue(st + D);
  }
  __shared__ float ssr[KS][8];
  if (NORM) {
    ss = warp_sum(ss);
    if (lane == 0) ssr[warp][0] = ss;
  }
  rq_rows_store<TO, T, KS, NORM, SWIGLU>(acc, ssr, y, res, 1, N, K, eps, row0);
}
