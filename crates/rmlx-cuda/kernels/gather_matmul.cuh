// rmlx CUDA: gather_qmm / gather_mm (mixture-of-experts products); needs mma.cuh. Entry `bat` of the index
// batch multiplies x[lhs[bat]] by matrix rhs[bat]. Follows quantized.cuh (rq_qmv_t_mat,
// rq_code). Indices are clamped to their batch (out-of-range indices are undefined in MLX; here
// they read a valid matrix instead of faulting).

__device__ __forceinline__ i64 rg_index(const u32* __restrict__ idx, i64 bat, i64 len) {
  const i64 i = idx[bat];
  return i < len ? i : len - 1;
}

// Decode: the quantized GEMV of quantized.cuh per index entry; blockIdx.y strides over the
// entries, so only the selected experts' weights are read.
template <class TX, class TS, class TO, int BITS, int MM>
__device__ void rg_gather_qmv_t(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                                const TS* __restrict__ b, TO* __restrict__ y, const u32* __restrict__ lhs,
                                const u32* __restrict__ rhs, i64 nb, i64 bx, i64 ne, int M, i64 N, i64 K,
                                int gs_shift, i64 xbs, i64 wbs, i64 sbs, i64 ybs) {
  for (i64 bat = blockIdx.y; bat < nb; bat += gridDim.y) {
    const i64 li = rg_index(lhs, bat, bx), ri = rg_index(rhs, bat, ne);
    rq_qmv_t_mat<TX, TS, TO, BITS, MM, 1>(x + li * xbs, w + ri * wbs, s + ri * sbs, b + ri * sbs, y + bat * ybs, nullptr, M,
                                       N, K, gs_shift);
  }
}

// Any shape: one warp per output element, lanes split K; weights [N, K] (transpose) or [K, N].
template <class TX, class TS, class TO>
__device__ void rg_gather_qmm_any(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                                  const TS* __restrict__ b, TO* __restrict__ y, const u32* __restrict__ lhs,
                                  const u32* __restrict__ rhs, i64 nb, i64 bx, i64 ne, i64 M, i64 N, i64 K,
                                  int gs, int bits, int transpose) {
  const int lane = threadIdx.x & 31;
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  const i64 rl = transpose ? K : N;  // unpacked row length of the stored matrices
  const i64 W = rl * bits / 32, G = rl / gs, rows = transpose ? N : K;
  for (i64 o = (((i64)blockIdx.x * blockDim.x) + threadIdx.x) >> 5; o < nb * M * N; o += warps) {
    const i64 bat = o / (M * N), m = (o / N) % M, n = o % N;
    const i64 li = rg_index(lhs, bat, bx), ri = rg_index(rhs, bat, ne);
    const TX* xr = x + (li * M + m) * K;
    const u32* wm = w + ri * rows * W;
    const TS* sm = s + ri * rows * G;
    const TS* bm = b + ri * rows * G;
    float acc = 0.0f;
    for (i64 k = lane; k < K; k += 32) {
      const i64 r = transpose ? n : k, c = transpose ? k : n;
      const float q = (float)rq_code(wm + r * W, c, bits);
      const float wv = fmaf(to_f(sm[r * G + c / gs]), q, to_f(bm[r * G + c / gs]));
      acc = fmaf(to_f(xr[k]), wv, acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[o] = from_f<TO>(acc);
  }
}

// Float gather_mm: a [Bx, M, K] contiguous, b [E, K, N] strided (a transposed view of
// [E, N, K] weights has bk == 1, so the lanes' reads along K coalesce); one warp per output.
template <class T>
__device__ void rg_gather_mm(const T* __restrict__ a, const T* __restrict__ bmat, T* __restrict__ y,
                             const u32* __restrict__ lhs, const u32* __restrict__ rhs, i64 nb, i64 bx, i64 ne,
                             i64 M, i64 N, i64 K, i64 be, i64 bk, i64 bn) {
  const int lane = threadIdx.x & 31;
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 o = (((i64)blockIdx.x * blockDim.x) + threadIdx.x) >> 5; o < nb * M * N; o += warps) {
    const i64 bat = o / (M * N), m = (o / N) % M, n = o % N;
    const i64 li = rg_index(lhs, bat, bx), ri = rg_index(rhs, bat, ne);
    const T* ar = a + (li * M + m) * K;
    const T* bc = bmat + ri * be + n * bn;
    float acc = 0.0f;
    for (i64 k = lane; k < K; k += 32) acc = fmaf(to_f(ar[k]), to_f(bc[k * bk]), acc);
    acc = warp_sum(acc);
    if (lane == 0) y[o] = from_f<T>(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill: a grouped tensor-core product for transposed weights. The rows of the product,
// r = bat * M + m (entry bat's row m of x), are cut into tiles of at most RG_BM rows that share
// one matrix: each run of equal rhs entries (an expert's whole segment when the entries are
// sorted) split every RG_BM rows. `rg_tiles` lists the tiles (one block); `rg_qmm_mma` computes
// one tile x RG_BN weight rows per block and iteration: RG_BK codes of each weight row
// dequantized to x's 16-bit dtype in shared memory, x's rows gathered through lhs beside them,
// the next step's loads in flight during the products, mma.sync m16n8k16 with f32
// accumulation. Each block streams its expert's weights once for the whole tile, instead of
// once per row as the decode kernel does. (A 3-stage cp.async ring for x with codes two steps
// ahead in registers measured slower: 196 against 153 µs per call, docs/PERF.md.)

#define RG_BM 64
#define RG_BN 128
#define RG_BK 64
#define RG_LD (RG_BK + 8)  // shared row stride in 16-bit elements: ldmatrix rows hit distinct banks

struct RgTile { int row0; int rows; int mat; int pad; };

// Exclusive prefix sum of v over the block (1024 threads at most); `total` gets the sum.
__device__ __forceinline__ int rg_block_scan(int v, int* total) {
  __shared__ int warp_tot[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  int inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += t;
  }
  __syncthreads();  // warp_tot may still be read from the previous call
  if (lane == 31) warp_tot[warp] = inc;
  __syncthreads();
  int before = 0, sum = 0;
  for (int w = 0; w < nw; ++w) {
    const int t = warp_tot[w];
    if (w < warp) before += t;
    sum += t;
  }
  *total = sum;
  return before + inc - v;
}

// One block: the runs of equal (clamped) rhs in `runs` (nb + 1 entries at most, the last one
// nb), then the tiles. `ntiles` gets their number.
__device__ void rg_tiles(const u32* __restrict__ rhs, i64 nb, int M, i64 ne, u32* __restrict__ runs,
                         RgTile* __restrict__ tiles, u32* __restrict__ ntiles) {
  int nruns = 0;
  for (i64 base = 0; base < nb; base += blockDim.x) {
    const i64 i = base + threadIdx.x;
    const int start = i < nb && (i == 0 || rg_index(rhs, i, ne) != rg_index(rhs, i - 1, ne));
    int tot;
    const int pos = rg_block_scan(start, &tot);
    if (start) runs[nruns + pos] = (u32)i;
    nruns += tot;
  }
  if (threadIdx.x == 0) runs[nruns] = (u32)nb;
  __syncthreads();
  int nt = 0;
  for (int base = 0; base < nruns; base += blockDim.x) {
    const int r = base + threadIdx.x;
    i64 row0 = 0, row1 = 0;
    int cnt = 0;
    if (r < nruns) {
      row0 = (i64)runs[r] * M;
      row1 = (i64)runs[r + 1] * M;
      cnt = (int)((row1 - row0 + RG_BM - 1) / RG_BM);
    }
    int tot;
    const int off = rg_block_scan(cnt, &tot);
    if (cnt > 0) {
      const int mat = (int)rg_index(rhs, runs[r], ne);
      for (int j = 0; j < cnt; ++j) {
        const i64 a = row0 + (i64)j * RG_BM;
        RgTile t;
        t.row0 = (int)a;
        t.rows = (int)min((i64)RG_BM, row1 - a);
        t.mat = mat;
        t.pad = 0;
        tiles[nt + off + j] = t;
      }
    }
    nt += tot;
  }
  if (threadIdx.x == 0) *ntiles = (u32)nt;
}

template <class TX, class TS, class TO, int BITS>
__device__ void rg_qmm_mma(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                           const TS* __restrict__ b, TO* __restrict__ y, const u32* __restrict__ lhs,
                           const RgTile* __restrict__ tiles, const u32* __restrict__ ntiles, i64 bx, int M, i64 N,
                           i64 K, int gs_shift, i64 wbs, i64 sbs) {
  __shared__ __align__(16) unsigned short xs[RG_BM * RG_LD];
  __shared__ __align__(16) unsigned short ws[RG_BN * RG_LD];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;  // this warp's 32 x 32 corner of the 64 x 128 tile
  const i64 n0 = (i64)blockIdx.x * RG_BN;
  const i64 W = K * BITS / 32, G = K >> gs_shift;
  const u32 nt = *ntiles;
  // per thread: 2 chunks of 8 x values and 4 chunks of 8 codes per RG_BK step
  const int c8 = (tid & 7) * 8;
  for (u32 t = blockIdx.y; t < nt; t += gridDim.y) {
    const RgTile tile = tiles[t];
    const TX* xr[2];
    bool xok[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = (tid >> 3) + 32 * i;
      xok[i] = row < tile.rows;
      const i64 r = tile.row0 + (xok[i] ? row : 0);
      const i64 bat = r / M, m = r - bat * M;
      xr[i] = x + (rg_index(lhs, bat, bx) * M + m) * K + c8;
    }
    const u32* wr[4];
    const TS* sr[4];
    const TS* br[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const i64 n = min(n0 + (tid >> 3) + 32 * i, N - 1);  // rows past N: computed, not stored
      wr[i] = w + tile.mat * wbs + n * W;
      sr[i] = s + tile.mat * sbs + n * G;
      br[i] = b + tile.mat * sbs + n * G;
    }
    uint4 xv[2];
    u64 wv[4];
    float sv[4], bv[4];
    auto load = [&](i64 k0) {
#pragma unroll
      for (int i = 0; i < 2; ++i)
        xv[i] = xok[i] ? *reinterpret_cast<const uint4*>(xr[i] + k0) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        wv[i] = rq_codes8<BITS>(wr[i], k0 + c8);
        const i64 g = (k0 + c8) >> gs_shift;
        sv[i] = to_f(sr[i][g]);
        bv[i] = to_f(br[i][g]);
      }
    };
    float acc[2][4][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int c = 0; c < 4; ++c)
#pragma unroll
        for (int d = 0; d < 4; ++d) acc[a][c][d] = 0.0f;
    load(0);
    for (i64 k0 = 0; k0 < K; k0 += RG_BK) {
      __syncthreads();  // the previous step's fragments are read
#pragma unroll
      for (int i = 0; i < 2; ++i)
        *reinterpret_cast<uint4*>(&xs[((tid >> 3) + 32 * i) * RG_LD + c8]) = xv[i];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        u32 h[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float q0 = (float)((wv[i] >> (2 * j * BITS)) & ((1u << BITS) - 1u));
          const float q1 = (float)((wv[i] >> ((2 * j + 1) * BITS)) & ((1u << BITS) - 1u));
          h[j] = TcMma<TX>::pack(fmaf(sv[i], q0, bv[i]), fmaf(sv[i], q1, bv[i]));
        }
        *reinterpret_cast<uint4*>(&ws[((tid >> 3) + 32 * i) * RG_LD + c8]) = make_uint4(h[0], h[1], h[2], h[3]);
      }
      __syncthreads();
      if (k0 + RG_BK < K) load(k0 + RG_BK);  // the next step's loads fly during the products
#pragma unroll
      for (int kk = 0; kk < RG_BK; kk += 16) {
        u32 af[2][4], bfr[2][4];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
          tc_ldmatrix4(tc_smem(&xs[(wm * 32 + mi * 16 + (lane & 15)) * RG_LD + kk + (lane >> 4) * 8]), af[mi]);
#pragma unroll
        for (int nj = 0; nj < 2; ++nj)
          tc_ldmatrix4(tc_smem(&ws[(wn * 32 + nj * 16 + (lane & 7) + ((lane >> 4) << 3)) * RG_LD + kk +
                                   ((lane >> 3) & 1) * 8]),
                       bfr[nj]);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) TcMma<TX>::run(acc[mi][ni], af[mi], &bfr[ni >> 1][(ni & 1) * 2]);
      }
    }
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = wm * 32 + mi * 16 + (lane >> 2) + 8 * h;
          const i64 col = n0 + wn * 32 + ni * 8 + (lane & 3) * 2;
          if (row >= tile.rows) continue;
          TO* yr = y + (i64)(tile.row0 + row) * N;
          if (col < N) yr[col] = from_f<TO>(acc[mi][ni][2 * h]);
          if (col + 1 < N) yr[col + 1] = from_f<TO>(acc[mi][ni][2 * h + 1]);
        }
    __syncthreads();  // shared tiles are rewritten by the next tile
  }
}
