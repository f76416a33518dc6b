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
  for (int sp = 0; sp < n_split; ++sp) m = fmaxf(m, pm[2 * sp]);
  for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
    float x = 0.0f, lsum = 0.0f;
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
