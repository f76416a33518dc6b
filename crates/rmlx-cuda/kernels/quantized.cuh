// rmlx CUDA: MLX affine quantization (quantize, dequantize, quantized matmul decode kernel).
// Format: per group of gs consecutive elements of a row, w = scale * q + bias; the codes of a
// row form a little-endian, LSB-first bit stream viewed as u32 words (crates/rmlx-cpu/src/
// quantized/pack.rs).

// ---------------------------------------------------------------------------------------------
// quantize: one warp per chunk of `ch` codes of a row (ch = gs, or 2 * gs where gs codes do
// not fill whole words), so that every chunk is whole u32 words.

// MLX's quantizer in f32 (pack.rs quantize_group): the same operations in the same order.
// IEEE division and no contraction (no multiply-add appears in it).
__device__ __forceinline__ void rq_group_params(const float wmin, const float wmax, const float n_bins,
                                                float& scale, float& bias) {
  const bool mask = fabsf(wmin) > fabsf(wmax);
  float s = fmaxf((wmax - wmin) / n_bins, 1e-7f);
  if (!mask) s = -s;
  const float edge = mask ? wmin : wmax;
  const float q0 = rintf(edge / s);
  float b = 0.0f;
  if (q0 != 0.0f) {
    s = edge / q0;
    b = edge;
  }
  scale = s;
  bias = b;
}

// One warp codes one chunk of `ch` elements at `src` (groups of gs): each group's minimum and
// maximum reduced by shuffles (exact in any order), its scale and bias to s_out[g] and b_out[g]
// where given, and where `dst` is given the codes into `cs` (the warp's shared bytes) and lane j
// packs word j of the chunk (a thread per chunk walked its ch elements twice in series: ~10 µs a
// launch even for a KV cache's one new position).
template <class T>
__device__ __forceinline__ void rq_quantize_chunk(const T* __restrict__ src, u32* __restrict__ dst,
                                                  T* __restrict__ s_out, T* __restrict__ b_out, int gs,
                                                  int bits, int ch, float n_bins, unsigned char* cs,
                                                  int lane) {
  for (int g = 0; g < ch / gs; ++g) {
    float wmin = __int_as_float(0x7f800000), wmax = -__int_as_float(0x7f800000);
    for (int i = lane; i < gs; i += 32) {
      const float v = to_f(src[g * gs + i]);
      wmax = fmaxf(wmax, v);  // ignores NaN, as Rust's f32::max
      wmin = fminf(wmin, v);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      wmax = fmaxf(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));
      wmin = fminf(wmin, __shfl_xor_sync(0xffffffffu, wmin, o));
    }
    float s, b;
    rq_group_params(wmin, wmax, n_bins, s, b);
    if (lane == 0 && s_out) s_out[g] = from_f<T>(s);
    if (lane == 0 && b_out) b_out[g] = from_f<T>(b);
    if (!dst) continue;
    for (int i = lane; i < gs; i += 32) {
      float q = rintf((to_f(src[g * gs + i]) - b) / s);
      // clamp(0, n) then `as u8`: NaN → 0
      q = (q != q) ? 0.0f : fminf(fmaxf(q, 0.0f), n_bins);
      cs[g * gs + i] = (unsigned char)(u32)q;
    }
  }
  if (!dst) return;
  __syncwarp();
  // word j of the chunk holds bits [32 j, 32 j + 32) of its LSB-first code stream
  for (int j = lane; j < ch * bits / 32; j += 32) {
    u64 acc = 0;
    for (int c = 32 * j / bits; c * bits < 32 * j + 32; ++c) {
      const int sh = c * bits - 32 * j;
      acc |= sh >= 0 ? ((u64)cs[c] << sh) : ((u64)cs[c] >> -sh);
    }
    dst[j] = (u32)acc;
  }
  __syncwarp();  // the codes are read before the next chunk overwrites them
}

// Chunks of whole u32 words: gs codes, or 2 gs where gs codes do not fill whole words.
__device__ __forceinline__ int rq_chunk(int gs, int bits) { return ((gs * bits) % 32 == 0) ? gs : 2 * gs; }

// part 0 → packed words wq [rows, K*bits/32]; 1 → scales, 2 → biases [rows, K/gs] (dtype T).
// A warp per chunk (rq_quantize_chunk).
#define RQ_QUANT_WARPS 8
template <class T>
__device__ void rq_quantize(const T* __restrict__ w, u32* __restrict__ wq, T* __restrict__ sb, i64 rows,
                            i64 K, int gs, int bits, int part) {
  __shared__ unsigned char codes[RQ_QUANT_WARPS][256];
  const int ch = rq_chunk(gs, bits);
  const i64 per_row = K / ch;
  const i64 total = rows * per_row;
  const float n_bins = (float)((1u << bits) - 1);
  const i64 W = K * bits / 32, G = K / gs;
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const i64 nwarps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 t = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; t < total; t += nwarps) {
    const i64 r = t / per_row, c0 = (t % per_row) * ch;
    T* sbr = sb ? sb + r * G + c0 / gs : nullptr;
    rq_quantize_chunk<T>(w + r * K + c0, part == 0 ? wq + r * W + c0 * bits / 32 : nullptr,
                         part == 1 ? sbr : nullptr, part == 2 ? sbr : nullptr, gs, bits, ch, n_bins,
                         codes[wib], lane);
  }
}

// A decode step's write into a quantized KV cache (fast::quantized_kv_write): the rows of k
// [rows, Dk] and v [rows, Dv] (rows = B·H, contiguous) coded as rq_quantize codes them, a warp
// per chunk, and their codes, scales and biases stored at position pos[0] (clamped into
// [0, S)) of each row's S positions in the cache buffers (codes [rows, S, D·bits/32], scales
// and biases [rows, S, D/gs], contiguous). One launch where the composition takes six
// quantize launches and six position writes.
template <class T>
__device__ void rq_quantize_kv_write(const T* __restrict__ k, const T* __restrict__ v,
                                     const i32* __restrict__ pos, u32* __restrict__ kq, T* __restrict__ ks,
                                     T* __restrict__ kb, u32* __restrict__ vq, T* __restrict__ vs,
                                     T* __restrict__ vb, i64 rows, i64 S, int Dk, int Dv, int gs, int bits) {
  __shared__ unsigned char codes[RQ_QUANT_WARPS][256];
  const int ch = rq_chunk(gs, bits);
  const i64 nk = rows * (Dk / ch), total = nk + rows * (Dv / ch);
  const float n_bins = (float)((1u << bits) - 1);
  i64 p = (i64)pos[0];
  p = p < 0 ? 0 : (p >= S ? S - 1 : p);
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const i64 nwarps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 t = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; t < total; t += nwarps) {
    const bool is_k = t < nk;
    const i64 u = is_k ? t : t - nk;
    const int D = is_k ? Dk : Dv;
    const i64 r = u / (D / ch), c0 = (u % (D / ch)) * ch;
    const i64 at = r * S + p, W = D * bits / 32, G = D / gs;
    rq_quantize_chunk<T>((is_k ? k : v) + r * D + c0, (is_k ? kq : vq) + at * W + c0 * bits / 32,
                         (is_k ? ks : vs) + at * G + c0 / gs, (is_k ? kb : vb) + at * G + c0 / gs, gs, bits,
                         ch, n_bins, codes[wib], lane);
  }
}

// ---------------------------------------------------------------------------------------------
// dequantize: one thread per 8 output elements. MLXR: MLX's rounding for the dequantize op (half
// scales: the product and the sum each rounded to the scales' dtype; f32: no fused multiply-add),
// else scale * q + bias in f32 rounded once to TO (the quantized matmul's temporary).

__device__ __forceinline__ u32 rq_code(const u32* __restrict__ row, i64 c, int bits) {
  const i64 bit = c * bits;
  const i64 wi = bit >> 5;
  const int sh = (int)(bit & 31);
  u32 v = row[wi] >> sh;
  if (sh + bits > 32) v |= row[wi + 1] << (32 - sh);
  return v & ((1u << bits) - 1u);
}

// 8 consecutive BITS-bit codes starting at code c (a multiple of 8) of a packed row: BITS bytes
// of the little-endian bit stream (rows start on word boundaries), code j at bits [j BITS, ..).
template <int BITS>
__device__ __forceinline__ u64 rq_codes8(const u32* __restrict__ row, i64 c) {
  const u8* p = reinterpret_cast<const u8*>(row) + c * BITS / 8;
  if (BITS == 4) return *reinterpret_cast<const u32*>(p);
  if (BITS == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    return (u64)v.x | ((u64)v.y << 32);
  }
  if (BITS == 2) return *reinterpret_cast<const unsigned short*>(p);
  u64 v = 0;
#pragma unroll
  for (int j = 0; j < BITS; ++j) v |= (u64)p[j] << (8 * j);
  return v;
}

// 8 values to 8 consecutive elements (16-byte aligned; 32 bytes for f32).
__device__ __forceinline__ void store8(float* p, const float* v) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(f16* p, const float* v) {
  u32 w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) w[j] = (u32)f2h(v[2 * j]) | ((u32)f2h(v[2 * j + 1]) << 16);
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}
__device__ __forceinline__ void store8(bf16* p, const float* v) {
  u32 w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) w[j] = (u32)f2bh(v[2 * j]) | ((u32)f2bh(v[2 * j + 1]) << 16);
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// One thread per 8 codes (a group holds whole runs of 8: group sizes are powers of two from 16),
// one 16-byte store (32 for f32); a warp loads 32 consecutive code words and stores 512
// consecutive bytes. n: elements, a multiple of 8. IX: the index type, u32 where n < 2^32: the
// 64-bit divisions (software routines, ~20 instructions per element) held an 8B prefill's
// dequantization at ~57 µs per matrix on an H100 and an H200 alike, bound by instructions;
// with u32 43 µs on the H200. (32 codes per thread measured slower: its 16-byte stores sit
// 64 bytes apart across the lanes.)
template <class IX, class TS, class TO, bool MLXR, int BITS>
__device__ void rq_dequantize(const u32* __restrict__ wq, const TS* __restrict__ s, const TS* __restrict__ b,
                              TO* __restrict__ y, IX n, IX K, int gs_shift) {
  const IX G = K >> gs_shift, W = K * BITS / 32;
  const IX stride = (IX)gridDim.x * blockDim.x;
  for (IX c = (IX)blockIdx.x * blockDim.x + threadIdx.x; c < (n >> 3); c += stride) {
    const IX i = c << 3, r = i / K, col = i - r * K;
    const u64 codes = rq_codes8<BITS>(wq + (i64)r * W, col);
    const IX g = r * G + (col >> gs_shift);
    const float sf = to_f(s[g]), bf = to_f(b[g]);
    float o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float q = (float)((codes >> (j * BITS)) & ((1u << BITS) - 1u));
      float v = __fmul_rn(sf, q);
      if (MLXR && sizeof(TS) == 2) v = to_f(from_f<TS>(v));
      o[j] = __fadd_rn(v, bf);
    }
    store8(y + i, o);  // rounds once to TO
  }
}

// ---------------------------------------------------------------------------------------------
// Decode quantized matmul, transposed weights: y[m, n] = sum_k x[m, k] * (s[n, g] q[n, k] + b[n, g])
// for M <= MM rows of x. Each warp owns RQ_R weight rows and streams them once; lane `l` takes,
// per step, U sub-chunks of SC codes (sub-chunk u at code (step*U + u)*32*SC + l*SC), so that
// the words of a sub-chunk and the x values it meets are contiguous across the warp. x is read
// from global memory (L1-cached, shared by the block's warps), f32 accumulation, warp reduction.
// Needs K % 32 == 0 and x rows 16-byte aligned.

#define RQ_R 4

template <int BITS> struct RqSub {
  static constexpr int SC = (BITS == 3 || BITS == 5) ? 32 : ((BITS == 2 || BITS == 6) ? 16 : 8);
  static constexpr int WPS = SC * BITS / 32;  // words per sub-chunk
  static constexpr int U = 32 / SC;           // sub-chunks per lane per step (32 codes)
};

template <int BITS>
__device__ __forceinline__ u32 rq_code_c(const u32* w, int j) {
  const int bit = j * BITS;
  const int wi = bit >> 5, sh = bit & 31;
  u32 v = w[wi] >> sh;
  if (sh + BITS > 32) v |= w[wi + 1] << (32 - sh);
  return v & ((1u << BITS) - 1u);
}

// Prefetches R weight rows (codes, scales and biases) into L2, the warp's lanes taking 128-byte
// lines: issued before a kernel waits on its predecessor (programmatic dependent launch), it
// starts the weight stream while the kernels before it finish.
template <class TS, int R>
__device__ __forceinline__ void rq_prefetch_rows(const u32* const (&wr)[R], const TS* const (&sr)[R],
                                                 const TS* const (&br)[R], i64 W, i64 G) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const char* pw = reinterpret_cast<const char*>(wr[r]);
    for (i64 o = (i64)lane * 128; o < W * 4; o += 32 * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(pw + o));
    const i64 sb = G * (i64)sizeof(TS);
    for (i64 o = (i64)lane * 128; o < sb; o += 32 * 128) {
      asm volatile("prefetch.global.L2 [%0];" ::"l"(reinterpret_cast<const char*>(sr[r]) + o));
      asm volatile("prefetch.global.L2 [%0];" ::"l"(reinterpret_cast<const char*>(br[r]) + o));
    }
  }
}

// Pointers to R consecutive weight rows from row0 of one matrix (w, s, b: its first row), into
// wr, sr, br. Rows past N repeat the last one: computed, not stored.
template <class TS, int R>
__device__ __forceinline__ void rq_rows(const u32* __restrict__ w, const TS* __restrict__ s, const TS* __restrict__ b,
                                        i64 row0, i64 N, i64 W, i64 G, const u32** wr, const TS** sr,
                                        const TS** br) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const i64 row = (row0 + r < N) ? row0 + r : N - 1;
    wr[r] = w + row * W;
    sr[r] = s + row * G;
    br[r] = b + row * G;
  }
}

// The streaming loop of the float decode kernels: lane partial sums acc[r][m] of weight rows
// (wr, sr, br) against M <= MM rows of x, over the steps of K this warp owns (every KS-th step
// from kpart). Not yet reduced across the warp. Also serves the fused MoE kernels (moe.cuh).
template <class TX, class TS, int BITS, int R, int MM, int KS>
__device__ __forceinline__ void rq_dot_rows(const TX* __restrict__ x, const u32* const (&wr)[R],
                                            const TS* const (&sr)[R], const TS* const (&br)[R], int M, i64 K,
                                            int gs_shift, int kpart, float (&acc)[R][MM]) {
  constexpr int SC = RqSub<BITS>::SC, WPS = RqSub<BITS>::WPS, U = RqSub<BITS>::U;
  const int lane = threadIdx.x & 31;
  for (i64 base = (i64)kpart * 32 * SC * U; base < K; base += (i64)KS * 32 * SC * U) {
    // issue every load of the step first (U x R x WPS words in flight per lane)
    u32 wv[U][R][WPS];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const i64 c0 = base + (i64)u * 32 * SC + (i64)lane * SC;
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = 0; j < WPS; ++j) wv[u][r][j] = (c0 < K) ? __ldg(wr[r] + c0 * BITS / 32 + j) : 0u;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const i64 c0 = base + (i64)u * 32 * SC + (i64)lane * SC;
      if (c0 >= K) break;
#pragma unroll
      for (int p = 0; p < SC / 8; ++p) {
        const i64 cb = c0 + p * 8;
        const i64 g = cb >> gs_shift;
        float wf[R][8];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float sc = to_f(sr[r][g]), bs = to_f(br[r][g]);
#pragma unroll
          for (int j = 0; j < 8; ++j) wf[r][j] = fmaf(sc, (float)rq_code_c<BITS>(wv[u][r], p * 8 + j), bs);
        }
#pragma unroll
        for (int m = 0; m < MM; ++m) {
          if (m < M) {
            float xv[8];
            load8(x + (i64)m * K + cb, xv);
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
              for (int j = 0; j < 8; ++j) acc[r][m] = fmaf(wf[r][j], xv[j], acc[r][m]);
          }
        }
      }
    }
  }
}

// A decode kernel's stored output: v rounded to TO, plus res[i] where a residual is given
// (ops::quantized_matmul_add), rounded again: the rounding of the two ops it replaces.
template <class TO>
__device__ __forceinline__ TO rq_out(float v, const TO* __restrict__ res, i64 i) {
  if (res == nullptr) return from_f<TO>(v);
  return from_f<TO>(to_f(from_f<TO>(v)) + to_f(res[i]));
}

// One matrix: the block's warps take weight rows from blockIdx.x (the batch is the caller's).
// KS = 1: the block's 4 warps own 4 x RQ_R rows. KS = 4 (long rows): they share RQ_R rows,
// warp w taking every 4th step of K from step w, and the partial sums meet in shared memory:
// four times the warps in flight for the same matrix, which a weight stream needs to reach
// the memory bandwidth (4096 rows of 4 warps per 4 x 4 rows is 2 blocks per SM otherwise).
template <class TX, class TS, class TO, int BITS, int MM, int KS>
__device__ void rq_qmv_t_mat(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                             const TS* __restrict__ b, TO* __restrict__ y, const TO* __restrict__ res, int M, i64 N,
                             i64 K, int gs_shift) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 row0 = KS == 1 ? ((i64)blockIdx.x * (blockDim.x >> 5) + warp) * RQ_R : (i64)blockIdx.x * RQ_R;
  const int kpart = KS == 1 ? 0 : warp;
  if (row0 >= N) return;
  const i64 W = K * BITS / 32, G = K >> gs_shift;
  const u32* wr[RQ_R];
  const TS* sr[RQ_R];
  const TS* br[RQ_R];
  rq_rows<TS, RQ_R>(w, s, b, row0, N, W, G, wr, sr, br);
  float acc[RQ_R][MM];
#pragma unroll
  for (int r = 0; r < RQ_R; ++r)
#pragma unroll
    for (int m = 0; m < MM; ++m) acc[r][m] = 0.0f;
  rq_dot_rows<TX, TS, BITS, RQ_R, MM, KS>(x, wr, sr, br, M, K, gs_shift, kpart, acc);
  if (KS == 1) {
#pragma unroll
    for (int r = 0; r < RQ_R; ++r)
#pragma unroll
      for (int m = 0; m < MM; ++m) {
        const float v = warp_sum(acc[r][m]);
        if (lane == 0 && m < M && row0 + r < N) y[(i64)m * N + row0 + r] = rq_out<TO>(v, res, (i64)m * N + row0 + r);
      }
    return;
  }
  __shared__ float part[KS][RQ_R * MM];
#pragma unroll
  for (int r = 0; r < RQ_R; ++r)
#pragma unroll
    for (int m = 0; m < MM; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0) part[warp][r * MM + m] = v;
    }
  __syncthreads();
  if (warp == 0 && lane < RQ_R * MM) {
    const int r = lane / MM, m = lane % MM;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < KS; ++k) v += part[k][lane];
    if (m < M && row0 + r < N) y[(i64)m * N + row0 + r] = rq_out<TO>(v, res, (i64)m * N + row0 + r);
  }
}

// Batched: blockIdx.y picks the matrix.
template <class TX, class TS, class TO, int BITS, int MM, int KS>
__device__ void rq_qmv_t(const TX* __restrict__ x, const u32* __restrict__ w, const TS* __restrict__ s,
                         const TS* __restrict__ b, TO* __restrict__ y, const TO* __restrict__ res, int M, i64 N,
                         i64 K, int gs_shift, i64 xbs, i64 wbs, i64 sbs, i64 bbs, i64 ybs) {
  const i64 bat = blockIdx.y;
  rq_qmv_t_mat<TX, TS, TO, BITS, MM, KS>(x + bat * xbs, w + bat * wbs, s + bat * sbs, b + bat * bbs, y + bat * ybs,
                                         res ? res + bat * ybs : nullptr, M, N, K, gs_shift);
}

// ---------------------------------------------------------------------------------------------
// Decode quantized matmul with int8 activations (4- and 8-bit weights, groups of 32 or more):
// llama.cpp's trick, the same arithmetic as the CPU's int8 path (crates/rmlx-cpu/src/quantized/
// qmv.rs). The float kernel above spends ~6 instructions per code and tops out near 1.5 TB/s on
// an H200; here 8 codes cost 2 logic ops and 2 integer dot products (dp4a).
//
// x is first quantized per block of 32 (d = max|x| / 127, xq = round(x / d)) by
// rq_quantize_x, which also keeps each block's exact Σx and Σxq. With codes centred on
// C = 2^(BITS-1):  Σ (s q + b) x  ≈  s d (Σ q xq - C Σ xq) + (b + C s) Σ x,
// an integer identity for the first term (so centring is free) and exact Σx for the second.

//
// An RMS norm before the product (NORM: `QuantizedMatmul`'s norm) rides on this: the codes are
// those of u = x ∘ w (the norm's weight), and since 1/rms(x) is one factor per row of x, the
// product of u is scaled by it at the end. Each block keeps its Σx² (ss), so the kernel that
// streams a row's blocks also sums the row's Σx² at no extra pass.

struct RqXBlock {
  float d;   // the block's int8 step
  float sx;  // exact Σ x over the block
  int sq;    // Σ xq
  float ss;  // Σ x² of the block before the norm's weight (0 without a norm)
};

// A block's meta from its max |x|, Σx, Σxq and (NORM) Σx².
__device__ __forceinline__ RqXBlock rq_xblock(float amax, float sx, int sq, float ss) {
  RqXBlock b;
  b.d = amax / 127.0f;
  b.sx = sx;
  b.sq = sq;
  b.ss = ss;
  return b;
}

// 1 / rms of a row of K elements whose Σx² is ss: the norm kernels' f32 formula.
__device__ __forceinline__ float rq_inv_rms(float ss, i64 K, float eps) {
  return 1.0f / sqrtf(ss / (float)K + eps);
}

// Where element j (0..31) of a block goes in xq. For 4-bit weights a word holds codes 0..7 as
// nibbles; its low nibbles (codes 0, 2, 4, 6) and high nibbles (1, 3, 5, 7) become one int
// each, so x is stored evens-then-odds within each run of 8. 8-bit: natural order.
template <int BITS>
__device__ __forceinline__ int rq_xpos(int j) {
  if (BITS == 8) return j;
  const int r = j & 7;
  return (j & ~7) + ((r & 1) ? 4 + (r >> 1) : (r >> 1));
}

// One block of 32 quantized by a warp, lane j holding element j's value v (and its square
// before the norm's weight, xx, summed into ss where NORM): its int8 code into xqb (in
// rq_xpos order), its meta into *mb.
template <int BITS, bool NORM>
__device__ __forceinline__ void rq_quantize_x_warp(float v, float xx, signed char* __restrict__ xqb,
                                                   RqXBlock* __restrict__ mb) {
  const int lane = threadIdx.x & 31;
  float amax = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  const int q = __float2int_rn(v * id);
  const float sx = warp_sum(v);
  const float ss = NORM ? warp_sum(xx) : 0.0f;
  int sq = q;
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
  xqb[rq_xpos<BITS>(lane)] = (signed char)q;
  if (lane == 0) *mb = rq_xblock(amax, sx, sq, ss);
}

// x: [M, K] (rows contiguous) → xq [M, K] int8 in rq_xpos order, meta [M, K/32].
// One warp per block of 32, lane j takes element j. NORM: of x ∘ nw (see RqXBlock).
template <class TX, int BITS, bool NORM>
__device__ void rq_quantize_x(const TX* __restrict__ x, const TX* __restrict__ nw, signed char* __restrict__ xq,
                              RqXBlock* __restrict__ meta, int M, i64 K) {
  const int lane = threadIdx.x & 31;
  const i64 nb = K >> 5, total = (i64)M * nb;
  const i64 nw8 = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 blk = (((i64)blockIdx.x * blockDim.x) + threadIdx.x) >> 5; blk < total; blk += nw8) {
    const float v = to_f(x[blk * 32 + lane]);
    const float u = NORM ? v * to_f(nw[(blk % nb) * 32 + lane]) : v;
    rq_quantize_x_warp<BITS, NORM>(u, v * v, xq + blk * 32, meta + blk);
  }
}

__device__ __forceinline__ int rq_dp4a_ss(int a, int b, int c) {
  int d;
  asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ int rq_dp4a_us(u32 a, int b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// Σ q xq over one block of 32 codes: w = the block's BITS words, xv = its 8 ints of xq.
template <int BITS>
__device__ __forceinline__ int rq_block_dot(const u32* w, const int* xv) {
  int acc = 0;
  if (BITS == 4) {
    // high nibbles stay in place (16 q as an unsigned byte): no shift, and the sum is an exact
    // multiple of 16
    int hi = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      acc = rq_dp4a_ss((int)(w[j] & 0x0F0F0F0Fu), xv[2 * j], acc);
      hi = rq_dp4a_us(w[j] & 0xF0F0F0F0u, xv[2 * j + 1], hi);
    }
    acc += hi >> 4;
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc = rq_dp4a_us(w[j], xv[j], acc);
  }
  return acc;
}

// The streaming loop of the int8 decode kernels: lane partial sums acc[r][m] of weight rows
// (wr, sr, br) against M <= MM rows of quantized x. Lane l takes blocks l, l + 32, ... of every
// row (one 16-byte load per row per block for 4 bits, two for 8), UN blocks in flight at a
// time; the x data of a block (32 bytes + 16 bytes of meta) is loaded once and serves the R
// rows. Not yet reduced across the warp. Also serves the fused MoE kernels (moe.cuh).
// NORM: also the lane's part of each x row's Σx² (ss, from the blocks' meta; see RqXBlock).
template <class TS, int BITS, int MM, int R, int UN, bool XS = false, bool NORM = false>
__device__ __forceinline__ void rq_dot8_rows(const signed char* __restrict__ xq, const RqXBlock* __restrict__ meta,
                                             const u32* const (&wr)[R], const TS* const (&sr)[R],
                                             const TS* const (&br)[R], int M, i64 K, int gs_shift,
                                             float (&acc)[R][MM], float (&ss)[MM]) {
  constexpr int WPB = BITS;  // words per block of 32 codes
  constexpr float C = (float)(1 << (BITS - 1));
  const int lane = threadIdx.x & 31;
  const i64 nb = K >> 5;
  for (i64 base = lane; base < nb; base += 32 * UN) {
    u32 wv[UN][R][WPB];
#pragma unroll
    for (int u = 0; u < UN; ++u) {
      const i64 blk = base + 32 * u;
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = 0; j < WPB / 4; ++j) {
          uint4 v = make_uint4(0u, 0u, 0u, 0u);
          if (blk < nb) v = __ldg(reinterpret_cast<const uint4*>(wr[r] + blk * WPB) + j);
          wv[u][r][4 * j] = v.x;
          wv[u][r][4 * j + 1] = v.y;
          wv[u][r][4 * j + 2] = v.z;
          wv[u][r][4 * j + 3] = v.w;
        }
    }
#pragma unroll
    for (int u = 0; u < UN; ++u) {
      const i64 blk = base + 32 * u;
      if (blk >= nb) break;
      const i64 g = (blk << 5) >> gs_shift;
      float sc[R], bc[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        sc[r] = to_f(sr[r][g]);
        bc[r] = fmaf(C, sc[r], to_f(br[r][g]));
      }
#pragma unroll
      for (int m = 0; m < MM; ++m) {
        if (m < M) {
          const int4* xp = reinterpret_cast<const int4*>(xq + (i64)m * K + blk * 32);
          const float4* mp = reinterpret_cast<const float4*>(meta + (i64)m * nb + blk);
          // XS: x sits in shared memory (the read-only cache path is for global memory only)
          const int4 xa = XS ? xp[0] : __ldg(xp), xb = XS ? xp[1] : __ldg(xp + 1);
          const int xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
          const float4 mt = XS ? *mp : __ldg(mp);
          const int sq = __float_as_int(mt.z);
          if (NORM) ss[m] += mt.w;
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const int dot = rq_block_dot<BITS>(wv[u][r], xv) - (1 << (BITS - 1)) * sq;
            acc[r][m] = fmaf(sc[r] * mt.x, (float)dot, fmaf(bc[r], mt.y, acc[r][m]));
          }
        }
      }
    }
  }
}

// One matrix. Each warp owns R weight rows (rq_dot8_rows streams them). NORM: x was
// quantized as x ∘ w_norm; each row's product is scaled by its 1/rms (eps: the norm's).
template <class TS, class TO, int BITS, int MM, int R, int UN, bool XS, bool NORM>
__device__ void rq_qmv8_mat(const signed char* __restrict__ xq, const RqXBlock* __restrict__ meta,
                            const u32* __restrict__ w, const TS* __restrict__ s, const TS* __restrict__ b,
                            TO* __restrict__ y, const TO* __restrict__ res, int M, i64 N, i64 K, int gs_shift,
                            float eps) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 row0 = ((i64)blockIdx.x * (blockDim.x >> 5) + warp) * R;
  if (row0 >= N) return;
  const i64 W = K * BITS / 32, G = K >> gs_shift;
  const u32* wr[R];
  const TS* sr[R];
  const TS* br[R];
  rq_rows<TS, R>(w, s, b, row0, N, W, G, wr, sr, br);
  float acc[R][MM], ss[MM];
#pragma unroll
  for (int m = 0; m < MM; ++m) {
    ss[m] = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r][m] = 0.0f;
  }
  rq_dot8_rows<TS, BITS, MM, R, UN, XS, NORM>(xq, meta, wr, sr, br, M, K, gs_shift, acc, ss);
  float inv[MM];
#pragma unroll
  for (int m = 0; m < MM; ++m) inv[m] = NORM ? rq_inv_rms(warp_sum(ss[m]), K, eps) : 1.0f;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MM; ++m) {
      const float v = warp_sum(acc[r][m]) * inv[m];
      if (lane == 0 && m < M && row0 + r < N) y[(i64)m * N + row0 + r] = rq_out<TO>(v, res, (i64)m * N + row0 + r);
    }
}

// Byte p of a block of xq holds element rq_xsrc<BITS>(p) of the block (rq_xpos inverted).
template <int BITS>
__device__ __forceinline__ int rq_xsrc(int p) {
  if (BITS == 8) return p;
  const int r = p & 7;
  return (p & ~7) + (r < 4 ? 2 * r : 2 * (r - 4) + 1);
}

// rq_quantize_x by one block, into shared memory: one thread per block of 32 (its Σx summed in
// order, the only difference from rq_quantize_x: a rounding of the sum). NORM: of x ∘ nw.
template <class TX, int BITS, bool NORM>
__device__ void rq_quantize_x_block(const TX* __restrict__ x, const TX* __restrict__ nw, signed char* xq,
                                    RqXBlock* meta, int M, i64 K) {
  const int nb = (int)(K >> 5), total = M * nb;
  for (int blk = threadIdx.x; blk < total; blk += blockDim.x) {
    float v[32];
    float ss = 0.0f;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      load8(x + (i64)blk * 32 + 8 * c, v + 8 * c);
      if (NORM) {
        float wv[8];
        load8(nw + (i64)(blk % nb) * 32 + 8 * c, wv);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          ss += v[8 * c + j] * v[8 * c + j];
          v[8 * c + j] *= wv[j];
        }
      }
    }
    float amax = 0.0f, sx = 0.0f;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      amax = fmaxf(amax, fabsf(v[j]));
      sx += v[j];
    }
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int sq = 0;
    u32 wd[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      u32 word = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int q = __float2int_rn(v[rq_xsrc<BITS>(4 * i + j)] * id);
        sq += q;
        word |= ((u32)q & 0xffu) << (8 * j);
      }
      wd[i] = word;
    }
    int4* dst = reinterpret_cast<int4*>(xq + (i64)blk * 32);
    dst[0] = make_int4((int)wd[0], (int)wd[1], (int)wd[2], (int)wd[3]);
    dst[1] = make_int4((int)wd[4], (int)wd[5], (int)wd[6], (int)wd[7]);
    meta[blk] = rq_xblock(amax, sx, sq, ss);
  }
}

// The batched decode kernels' entry: blockIdx.y picks the matrix; moves the weight, scale,
// bias, output and residual pointers to it and returns its index.
template <class TS, class TO>
__device__ __forceinline__ i64 rq_batch_entry(const u32* __restrict__& w, const TS* __restrict__& s,
                                              const TS* __restrict__& b, TO* __restrict__& y,
                                              const TO* __restrict__& res, i64 wbs, i64 sbs, i64 bbs, i64 ybs) {
  const i64 bat = blockIdx.y;
  w += bat * wbs;
  s += bat * sbs;
  b += bat * bbs;
  y += bat * ybs;
  if (res) res += bat * ybs;
  return bat;
}

// Batched: blockIdx.y picks the matrix. XF: x (of dtype TX, [M, K] per matrix at stride xbs)
// is quantized by each block into dynamic shared memory (M K codes, then M K / 32 blocks of
// meta) instead of by a rq_quantize_x launch before (then xq and meta are given, x is null):
// one launch fewer per product. NORM: x is RMS-normalised with weight nw (and eps) first, by
// quantizing x ∘ nw (here or in rq_quantize_x) and scaling each row's product by its 1/rms.
// PF: the warps' weight rows are prefetched into L2 before the kernel waits on its
// predecessor (the entry point is RMLX_PDL_MANUAL).
template <class TX, class TS, class TO, int BITS, int MM, int R, int UN, bool XF, bool NORM, bool PF>
__device__ void rq_qmv8(const TX* __restrict__ x, const signed char* __restrict__ xq,
                        const RqXBlock* __restrict__ meta, const TX* __restrict__ nw, float eps,
                        const u32* __restrict__ w, const TS* __restrict__ s,
                        const TS* __restrict__ b, TO* __restrict__ y, const TO* __restrict__ res, int M, i64 N,
                        i64 K, int gs_shift, i64 xbs, i64 wbs, i64 sbs, i64 bbs, i64 ybs) {
  const i64 bat = rq_batch_entry(w, s, b, y, res, wbs, sbs, bbs, ybs);
  rmlx_pdl_trigger();
  if (PF) {
    const i64 row0 = ((i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * R;
    if (row0 < N) {
      const i64 W = K * BITS / 32, G = K >> gs_shift;
      const u32* wr[R];
      const TS* sr[R];
      const TS* br[R];
      rq_rows<TS, R>(w, s, b, row0, N, W, G, wr, sr, br);
      rq_prefetch_rows<TS, R>(wr, sr, br, W, G);
    }
  }
  rmlx_pdl_wait();
  if (XF) {
    extern __shared__ __align__(16) unsigned char rq_xsmem[];
    signed char* sq = reinterpret_cast<signed char*>(rq_xsmem);
    RqXBlock* sm = reinterpret_cast<RqXBlock*>(rq_xsmem + (i64)M * K);
    rq_quantize_x_block<TX, BITS, NORM>(x + bat * xbs, nw, sq, sm, M, K);
    __syncthreads();
    rq_qmv8_mat<TS, TO, BITS, MM, R, UN, true, NORM>(sq, sm, w, s, b, y, res, M, N, K, gs_shift, eps);
  } else {
    rq_qmv8_mat<TS, TO, BITS, MM, R, UN, false, NORM>(xq + bat * xbs, meta + bat * (xbs >> 5), w, s, b, y, res, M,
                                                      N, K, gs_shift, eps);
  }
}
