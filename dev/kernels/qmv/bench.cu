// qmv ladder: the production decode kernels of crates/rmlx-cuda/kernels/quantized.cuh, built
// by nvcc, checked against a float64 CPU reference and timed against a device-to-device copy
// in the same process. Usage: bench [bits] (default: 4 and 8). Build: see run.sh.
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../../../crates/rmlx-cuda/kernels/prelude.cuh"
#include "../bench_common.cuh"
#include "../../../crates/rmlx-cuda/kernels/quantized.cuh"
#include "../../../crates/rmlx-cuda/kernels/mma.cuh"
#include "../../../crates/rmlx-cuda/kernels/qmv_rows.cuh"
#include "../../../crates/rmlx-cuda/kernels/qmv_stream.cuh"
#include "v4_fused.cuh"
#include "v6_tc.cuh"

// --- kernels under test ----------------------------------------------------------------------
template <int BITS, int MM, int KS>
__global__ void __launch_bounds__(128) k_v0(const bf16* x, const u32* w, const bf16* s, const bf16* b, bf16* y,
                                            int M, i64 N, i64 K, int gs_shift) {
  rq_qmv_t_mat<bf16, bf16, bf16, BITS, MM, KS>(x, w, s, b, y, nullptr, M, N, K, gs_shift);
}
template <int BITS, int MM, int KS>
__global__ void __launch_bounds__(128) rq_v0_f32(const bf16* x, const u32* w, const bf16* s, const bf16* b, float* y,
                                                 int M, i64 N, i64 K, int gs_shift) {
  rq_qmv_t_mat<bf16, bf16, float, BITS, MM, KS>(x, w, s, b, y, nullptr, M, N, K, gs_shift);
}
template <int BITS>
__global__ void k_qx(const bf16* x, signed char* xq, RqXBlock* meta, int M, i64 K) {
  rq_quantize_x<bf16, BITS, false>(x, nullptr, xq, meta, M, K);
}
// the shipped bound (quantized.rs qmv8_source): 128 threads launched, compiled for 256
template <class TO, int BITS, int MM, int R, int UN>
__global__ void __launch_bounds__(256) k_v1(const signed char* xq, const RqXBlock* meta, const u32* w, const bf16* s,
                                            const bf16* b, TO* y, int M, i64 N, i64 K, int gs_shift) {
  rq_qmv8_mat<bf16, TO, BITS, MM, R, UN, false, false>(xq, meta, w, s, b, y, nullptr, M, N, K, gs_shift, 0.0f);
}

template <class TO, int BITS, int UN>
__global__ void __launch_bounds__(256) k_v4(const bf16* x, const u32* w, const bf16* s, const bf16* b, TO* y, i64 N,
                                            i64 K, int gs_shift) {
  rq_qmv8f<bf16, bf16, TO, BITS, UN>(x, w, s, b, y, N, K, gs_shift);
}
// v7: the shipped tensor-core kernel for 2..8 rows of bf16 x (qmv_rows.cuh), no x quantization
template <class TO, int T, int KS, int U, bool NORM, int MINB = 1>
__global__ void __launch_bounds__(32 * KS, MINB) k_v7(const bf16* x, const bf16* nw, const u32* w, const bf16* s,
                                                      const bf16* b, TO* y, int M, i64 N, i64 K, int gs_shift) {
  if (gs_shift == 7)
    rq_qmv_rows<bf16, bf16, TO, 128, T, KS, U, NORM>(x, nw, 1e-5f, w, s, b, y, nullptr, M, N, K, 0, 0, 0, 0, 0);
  else
    rq_qmv_rows<bf16, bf16, TO, 64, T, KS, U, NORM>(x, nw, 1e-5f, w, s, b, y, nullptr, M, N, K, 0, 0, 0, 0, 0);
}
// v6: the tensor-core kernel for 2..8 rows (rq_qmm8_tc), x quantized by k_qx first
template <class TO, int BITS, int KS, int NST>
__global__ void __launch_bounds__(32 * KS) k_v5(const signed char* xq, const RqXBlock* meta, const u32* w,
                                                const bf16* s, const bf16* b, TO* y, int M, i64 N, i64 K,
                                                int gs_shift) {
  rq_tc_mat<bf16, TO, BITS, KS, NST, false>(xq, meta, w, s, b, y, nullptr, M, N, K, gs_shift, 0.0f);
}

// v8: the shipped one-row streaming kernel (qmv_stream.cuh), 8 warps, a ring of D steps
template <class TO, int T, int D>
__global__ void __launch_bounds__(256, 2) k_v8(const bf16* x, const u32* w, const bf16* s, const bf16* b, TO* y,
                                               i64 N, i64 K) {
  rq_qmv_stream<bf16, bf16, TO, 64, T, 8, D, false, false>(x, nullptr, 0.0f, w, s, b, y, nullptr, N, K, 0, 0, 0, 0,
                                                             0, 1);
}

// v8 with its work split (T tiles of 16 rows a block, KS warps over K, a ring of D steps, at least
// MINB blocks an SM) and the pre-wait issue of its ring as arguments (the chain mode)
template <int T, int KS, int D, int MINB>
__global__ void __launch_bounds__(32 * KS, MINB) k_v8c(const bf16* x, const u32* w, const bf16* s, const bf16* b,
                                                       bf16* y, i64 N, i64 K, int early) {
  rq_qmv_stream<bf16, bf16, bf16, 64, T, KS, D, false, false>(x, nullptr, 0.0f, w, s, b, y, nullptr, N, K, 0, 0, 0,
                                                              0, 0, early);
}

// --- host helpers ----------------------------------------------------------------------------

struct Mat {
  i64 N, K;
  int bits, gs;
  std::vector<u32> w;
  std::vector<uint16_t> s, b;
  size_t wbytes() const { return w.size() * 4; }
  size_t sbytes() const { return s.size() * 2; }
};

static Mat make_mat(i64 N, i64 K, int bits, int gs, std::mt19937& rng) {
  Mat m{N, K, bits, gs, {}, {}, {}};
  m.w.resize((size_t)N * K * bits / 32);
  for (auto& v : m.w) v = rng();
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const i64 G = K / gs;
  m.s.resize((size_t)N * G);
  m.b.resize((size_t)N * G);
  for (size_t i = 0; i < m.s.size(); ++i) {
    float sc = 0.02f * (0.5f + std::fabs(nd(rng))) / (float)(1 << (bits - 4 + 4));
    m.s[i] = f2bf(sc);
    // typical affine groups: bias near -(2^(bits-1)) * scale, with spread
    m.b[i] = f2bf(-sc * (float)(1 << (bits - 1)) + 0.01f * nd(rng));
  }
  return m;
}

static u32 code(const Mat& m, i64 r, i64 c) {
  const i64 bit = c * m.bits;
  const u32* row = m.w.data() + r * (m.K * m.bits / 32);
  u32 v = row[bit >> 5] >> (bit & 31);
  return v & ((1u << m.bits) - 1u);
}

// float64 reference for rows r0, r0+step, ...
static void reference(const Mat& m, const std::vector<uint16_t>& x, int M, i64 step, std::vector<double>& ref) {
  ref.assign((size_t)M * m.N, 0.0);
  for (i64 r = 0; r < m.N; r += step)
    for (int mi = 0; mi < M; ++mi) {
      double acc = 0;
      for (i64 c = 0; c < m.K; ++c) {
        const i64 g = r * (m.K / m.gs) + c / m.gs;
        const double wv = (double)bf2f(m.s[g]) * code(m, r, c) + (double)bf2f(m.b[g]);
        acc += wv * (double)bf2f(x[(size_t)mi * m.K + c]);
      }
      ref[(size_t)mi * m.N + r] = acc;
    }
}

static double rel_err(const std::vector<double>& ref, const std::vector<float>& got, i64 N, int M, i64 step) {
  double num = 0, den = 0;
  for (int mi = 0; mi < M; ++mi)
    for (i64 r = 0; r < N; r += step) {
      const double d = got[(size_t)mi * N + r] - ref[(size_t)mi * N + r];
      if (!std::isfinite(got[(size_t)mi * N + r])) return INFINITY;
      num += d * d;
      den += ref[(size_t)mi * N + r] * ref[(size_t)mi * N + r];
    }
  return std::sqrt(num / den);
}

struct Dev {
  u32* w;
  bf16* s;
  bf16* b;
};

// One product's setup, shared by run_shape and run_rows: a random matrix and enough device
// copies of it (>= 600 MB) to defeat the L2, x (bf16, and its int8 quantization by k_qx), the
// outputs, and the float64 reference at every `step`-th row.
template <int BITS>
struct Case {
  i64 N, K;
  int M, gss, copies;
  i64 step;
  size_t bytes;
  std::vector<Dev> d;
  bf16 *dx, *dy;
  float* dyf;
  signed char* dxq;
  RqXBlock* dmeta;
  std::vector<double> ref;

  Case(i64 n, i64 k, int gs, int m, std::mt19937& rng) : N(n), K(k), M(m), gss(__builtin_ctz(gs)) {
    Mat mat = make_mat(N, K, BITS, gs, rng);
    bytes = mat.wbytes() + 2 * mat.sbytes();
    copies = (int)std::max<size_t>(2, (600ull << 20) / bytes + 1);
    d.resize(copies);
    for (auto& c : d) {
      CK(cudaMalloc(&c.w, mat.wbytes()));
      CK(cudaMalloc(&c.s, mat.sbytes()));
      CK(cudaMalloc(&c.b, mat.sbytes()));
      CK(cudaMemcpy(c.w, mat.w.data(), mat.wbytes(), cudaMemcpyHostToDevice));
      CK(cudaMemcpy(c.s, mat.s.data(), mat.sbytes(), cudaMemcpyHostToDevice));
      CK(cudaMemcpy(c.b, mat.b.data(), mat.sbytes(), cudaMemcpyHostToDevice));
    }
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> x((size_t)M * K);
    for (auto& v : x) v = f2bf(nd(rng));
    CK(cudaMalloc(&dx, x.size() * 2));
    CK(cudaMalloc(&dy, (size_t)M * N * 2));
    CK(cudaMalloc(&dyf, (size_t)M * N * 4));
    CK(cudaMalloc(&dxq, (size_t)M * K));
    CK(cudaMalloc(&dmeta, (size_t)M * K / 32 * sizeof(RqXBlock)));
    CK(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
    step = std::max<i64>(1, N / 512);
    reference(mat, x, M, step, ref);
  }
  ~Case() {
    for (auto& c : d) {
      cudaFree(c.w);
      cudaFree(c.s);
      cudaFree(c.b);
    }
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dyf);
    cudaFree(dxq);
    cudaFree(dmeta);
  }
  // x's int8 codes and meta for the dp4a kernels
  void quantize_x(cudaStream_t st = 0) {
    const i64 blocks = (i64)M * K / 32;
    k_qx<BITS><<<(unsigned)((blocks + 7) / 8), 256, 0, st>>>(dx, dxq, dmeta, M, K);
  }
  // relative error of `launch_f32out` (writing dyf, poisoned with NaN first) against ref
  template <class F>
  double check(F launch_f32out) {
    CK(cudaMemset(dyf, 0xff, (size_t)M * N * 4));
    launch_f32out();
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<float> got((size_t)M * N);
    CK(cudaMemcpy(got.data(), dyf, got.size() * 4, cudaMemcpyDeviceToHost));
    return rel_err(ref, got, N, M, step);
  }
};

// The names the kernels' launch macros below use, bound to a Case.
#define CASE_NAMES(c)                                                                         \
  auto& d = c.d;                                                                              \
  bf16 *dx = c.dx, *dy = c.dy;                                                                \
  float* dyf = c.dyf;                                                                         \
  signed char* dxq = c.dxq;                                                                   \
  RqXBlock* dmeta = c.dmeta;                                                                  \
  const int gss = c.gss, copies = c.copies;                                                   \
  const size_t bytes = c.bytes;                                                               \
  auto check = [&](auto launch_f32out) { return c.check(launch_f32out); };                    \
  (void)dxq, (void)dmeta, (void)dy;

template <int BITS, int MM>
static void run_shape(i64 N, i64 K, int gs, int M, float copy, std::mt19937& rng) {
  Case<BITS> cs(N, K, gs, M, rng);
  CASE_NAMES(cs)
  // v0 (float kernel) with f32 output: a bf16-output copy of the kernel is what ships; error
  // is measured in f32 to see the kernel's own error.
  const int ks0 = K >= 4096 ? 4 : 1;
  auto v0 = [&](int c, cudaStream_t st, bool f32) {
    const dim3 grid((unsigned)((N + (16 / ks0) - 1) / (16 / ks0)));
    if (f32) {
      if (ks0 == 4)
        rq_v0_f32<BITS, MM, 4><<<grid, 128, 0, st>>>(dx, d[c].w, d[c].s, d[c].b, dyf, M, N, K, gss);
      else
        rq_v0_f32<BITS, MM, 1><<<grid, 128, 0, st>>>(dx, d[c].w, d[c].s, d[c].b, dyf, M, N, K, gss);
    } else if (ks0 == 4)
      k_v0<BITS, MM, 4><<<grid, 128, 0, st>>>(dx, d[c].w, d[c].s, d[c].b, dy, M, N, K, gss);
    else
      k_v0<BITS, MM, 1><<<grid, 128, 0, st>>>(dx, d[c].w, d[c].s, d[c].b, dy, M, N, K, gss);
  };
  const double e0 = check([&] { v0(0, 0, true); });
  const float t0 = time_graph(copies, 10, [&](int c, cudaStream_t st) { v0(c, st, false); });

  auto qx = [&](cudaStream_t st) { cs.quantize_x(st); };
  const float tq = time_graph(copies, 10, [&](int, cudaStream_t st) { qx(st); });
  printf("%-6s N=%6lld K=%6lld gs=%3d M=%d bits=%d  bytes=%8.2f MB  copy=%.0f GB/s\n", "shape", (long long)N,
         (long long)K, gs, M, BITS, bytes / 1e6, copy);
  printf("  v0 float     %8.2f us  %7.0f GB/s  %5.1f%% of copy  err %.2e\n", t0, bytes / (t0 * 1e-6) / 1e9,
         100.0 * bytes / (t0 * 1e-6) / 1e9 / copy, e0);
  printf("  quantize_x   %8.2f us\n", tq);

#define V1(R, UN)                                                                                                \
  {                                                                                                              \
    const int rows_per_block = 4 * R;                                                                            \
    const dim3 grid((unsigned)((N + rows_per_block - 1) / rows_per_block));                                      \
    const double e = check([&] {                                                                           \
      qx(0);                                                                                                     \
      k_v1<float, BITS, MM, R, UN><<<grid, 128>>>(dxq, dmeta, d[0].w, d[0].s, d[0].b, dyf, M, N, K, gss);       \
    });                                                                                                          \
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {                                        \
      k_v1<bf16, BITS, MM, R, UN><<<grid, 128, 0, st>>>(dxq, dmeta, d[c].w, d[c].s, d[c].b, dy, M, N, K, gss);  \
    });                                                                                                          \
    printf("  v1 R=%d UN=%d  %8.2f us  %7.0f GB/s  %5.1f%% of copy  err %.2e  (+quantize_x: %.1f%%)\n", R, UN, t, \
           bytes / (t * 1e-6) / 1e9, 100.0 * bytes / (t * 1e-6) / 1e9 / copy, e,                                 \
           100.0 * bytes / ((t + tq) * 1e-6) / 1e9 / copy);                                                      \
  }
  V1(1, 2) V1(1, 4) V1(2, 2) V1(2, 4) V1(4, 1) V1(4, 2) V1(4, 4)
#define V4(UN, BPS, T)                                                                                             \
  if (M == 1) {                                                                                                  \
    const size_t sm = (size_t)(K / 32) * 48;                                                                      \
    const unsigned blocks = (unsigned)std::min<i64>((N + (T / 32) - 1) / (T / 32), (i64)g_sms * BPS);             \
    CK(cudaFuncSetAttribute(k_v4<float, BITS, UN>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));       \
    CK(cudaFuncSetAttribute(k_v4<bf16, BITS, UN>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));        \
    const double e = check([&] {                                                                           \
      k_v4<float, BITS, UN><<<blocks, T, sm>>>(dx, d[0].w, d[0].s, d[0].b, dyf, N, K, gss);                      \
    });                                                                                                          \
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {                                        \
      k_v4<bf16, BITS, UN><<<blocks, T, sm, st>>>(dx, d[c].w, d[c].s, d[c].b, dy, N, K, gss);                   \
    });                                                                                                          \
    printf("  v4 UN=%d %d/SM x%d %8.2f us  %7.0f GB/s  %5.1f%% of copy %5.1f%% of read  err %.2e (fused x)\n", UN, BPS, T, t, \
           bytes / (t * 1e-6) / 1e9, 100.0 * bytes / (t * 1e-6) / 1e9 / copy, 100.0 * bytes / (t * 1e-6) / 1e9 / g_read, e); \
  }
  V4(1, 2, 256) V4(2, 2, 256) V4(4, 2, 256) V4(2, 4, 128)
}

// `./qmvbench rows`: µs per product for M rows of x, the shipped dp4a choice for M against the
// tensor-core kernel's configurations (one line each; error against the float64 reference).
template <int BITS, int MM>
static void run_rows(i64 N, i64 K, int gs, int M, float copy, std::mt19937& rng, bool v6 = true) {
  Case<BITS> cs(N, K, gs, M, rng);
  CASE_NAMES(cs)
  cs.quantize_x();
  CK(cudaDeviceSynchronize());
  auto line = [&](const char* what, float t, double e) {
    printf("rows N=%6lld K=%6lld b%d M=%d  %-14s %8.2f us  %5.1f%% of copy  err %.2e\n", (long long)N, (long long)K,
           BITS, M, what, t, 100.0 * bytes / (t * 1e-6) / 1e9 / copy, e);
  };
#define DP4A(R, UN)                                                                                              \
  {                                                                                                              \
    const dim3 grid((unsigned)((N + 4 * R - 1) / (4 * R)));                                                      \
    const double e = check([&] {                                                                                 \
      k_v1<float, BITS, MM, R, UN><<<grid, 128>>>(dxq, dmeta, d[0].w, d[0].s, d[0].b, dyf, M, N, K, gss);       \
    });                                                                                                          \
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {                                        \
      k_v1<bf16, BITS, MM, R, UN><<<grid, 128, 0, st>>>(dxq, dmeta, d[c].w, d[c].s, d[c].b, dy, M, N, K, gss);  \
    });                                                                                                          \
    line("dp4a R" #R " UN" #UN, t, e);                                                                           \
  }
#define DP4AQ(R, UN)                                                                                             \
  {                                                                                                              \
    const dim3 grid((unsigned)((N + 4 * R - 1) / (4 * R)));                                                      \
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {                                        \
      cs.quantize_x(st);                                                                                         \
      k_v1<bf16, BITS, MM, R, UN><<<grid, 128, 0, st>>>(dxq, dmeta, d[c].w, d[c].s, d[c].b, dy, M, N, K, gss);  \
    });                                                                                                          \
    line("qx+dp4a R" #R, t, 0.0);                                                                                \
  }
#define TC(KS, NST)                                                                                                     \
  {                                                                                                              \
    const dim3 grid((unsigned)((N + 15) / 16));                                                                  \
    const double e = check([&] {                                                                                 \
      k_v5<float, BITS, KS, NST><<<grid, 32 * KS>>>(dxq, dmeta, d[0].w, d[0].s, d[0].b, dyf, M, N, K, gss);          \
    });                                                                                                          \
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {                                        \
      k_v5<bf16, BITS, KS, NST><<<grid, 32 * KS, 0, st>>>(dxq, dmeta, d[c].w, d[c].s, d[c].b, dy, M, N, K, gss);     \
    });                                                                                                          \
    line("tc KS" #KS " S" #NST, t, e);                                                                                            \
  }
  bf16* dnw;  // a norm weight of ones: NORM's extra work, the same product up to x's rescaling
  {
    std::vector<uint16_t> ones((size_t)K, f2bf(1.0f));
    CK(cudaMalloc(&dnw, (size_t)K * 2));
    CK(cudaMemcpy(dnw, ones.data(), (size_t)K * 2, cudaMemcpyHostToDevice));
  }
#define MMA(T, KS, U, NORM, MINB)                                                                                  \
  {                                                                                                              \
    const dim3 grid((unsigned)((N + 16 * T - 1) / (16 * T)));                                                   \
    const double e = check([&] {                                                                                 \
      k_v7<float, T, KS, U, NORM, MINB><<<grid, 32 * KS>>>(dx, dnw, d[0].w, d[0].s, d[0].b, dyf, M, N, K, gss); \
    });                                                                                                          \
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {                                        \
      k_v7<bf16, T, KS, U, NORM, MINB><<<grid, 32 * KS, 0, st>>>(dx, dnw, d[c].w, d[c].s, d[c].b, dy, M, N, K, gss); \
    });                                                                                                          \
    line("mma T" #T " KS" #KS " U" #U " N" #NORM " B" #MINB, t, e);                                                \
  }
  if (MM == 1) {
    if (N >= 8192) DP4A(4, 2) else DP4A(1, 2)
  } else if (MM == 2) DP4A(2, 2) else DP4A(4, 1)
  if (v6) {
    if constexpr (BITS == 4) {
      TC(2, 2) TC(3, 2)
    } else {
      TC(1, 2) TC(2, 2)
    }
  }
  if constexpr (BITS == 4) {
    if (gs >= 64) {
      // shipped: T1 KS8 U4 (N <= 4096), T2 KS8 U2; the last two force 3-4 blocks per SM
      MMA(1, 8, 4, 0, 1) MMA(2, 8, 2, 0, 1) MMA(1, 8, 4, 1, 1) MMA(2, 8, 2, 1, 1) MMA(2, 4, 2, 0, 1)
      MMA(1, 8, 4, 0, 2) MMA(2, 8, 2, 0, 2) MMA(1, 8, 4, 1, 2) MMA(2, 8, 2, 1, 2)
      MMA(2, 8, 2, 0, 3) MMA(1, 8, 2, 0, 4)
      if (M == 1) {
        // one row: quantizing x costs a launch of its own on the dp4a path; more warps per
        // block for short N (fewer blocks than SMs with 16 rows per block)
        if (N >= 8192) DP4AQ(4, 2) else DP4AQ(1, 2)
        MMA(1, 16, 2, 0, 1) MMA(1, 16, 4, 0, 1) MMA(1, 16, 2, 1, 1) MMA(1, 4, 4, 0, 2) MMA(1, 4, 4, 1, 2)
      }
    }
  }
  cudaFree(dnw);
}

// `./qmvbench stream`: the one-row streaming kernel (v8) against the dp4a kernel at the 8B's and
// Qwen3-30B-A3B's one-row shapes; ring depths 1..3.
template <int T>
static void run_stream(i64 N, i64 K, float copy, std::mt19937& rng) {
  Case<4> cs(N, K, 64, 1, rng);
  CASE_NAMES(cs)
  cs.quantize_x();
  CK(cudaDeviceSynchronize());
  auto line = [&](const char* what, float t, double e) {
    printf("stream N=%6lld K=%6lld  %-22s %8.2f us  %6.0f GB/s  %5.1f%% of copy  err %.2e\n", (long long)N,
           (long long)K, what, t, bytes / (t * 1e-6) / 1e9, 100.0 * bytes / (t * 1e-6) / 1e9 / copy, e);
  };
  const dim3 grid((unsigned)(N / (16 * T)));
  const i64 per = ((K / 64 + 7) / 8 + 3) / 4 * 4;
  const int slot = 16 * T * 128 + 2 * (16 * T * 4 * 2);
#define V8(D)                                                                                                \
  {                                                                                                              \
    const int sm = 8 * (D * slot + (int)per * 128);                                                              \
    CK(cudaFuncSetAttribute(k_v8<float, T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));           \
    CK(cudaFuncSetAttribute(k_v8<bf16, T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));            \
    const double e = check([&] { k_v8<float, T, D><<<grid, 256, sm>>>(dx, d[0].w, d[0].s, d[0].b, dyf, N, K); }); \
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {                                        \
      k_v8<bf16, T, D><<<grid, 256, sm, st>>>(dx, d[c].w, d[c].s, d[c].b, dy, N, K);                        \
    });                                                                                                          \
    line("v8 ring " #D, t, e);                                                      \
  }
  V8(1) V8(2) V8(3)
  {
    const int R = N >= 8192 ? 4 : 1;
    const dim3 g1((unsigned)((N + 4 * R - 1) / (4 * R)));
    const float t = time_graph(copies, 10, [&](int c, cudaStream_t st) {
      if (R == 4) k_v1<bf16, 4, 1, 4, 2><<<g1, 128, 0, st>>>(dxq, dmeta, d[c].w, d[c].s, d[c].b, dy, 1, N, K, gss);
      else k_v1<bf16, 4, 1, 1, 2><<<g1, 128, 0, st>>>(dxq, dmeta, d[c].w, d[c].s, d[c].b, dy, 1, N, K, gss);
    });
    line(R == 4 ? "dp4a R4 UN2 (x int8)" : "dp4a R1 UN2 (x int8)", t, 0.0);
  }
}

// `./qmvbench chain`: the 8B layer's four one-row products (q/k/v, o_proj, gate/up, down) as
// chains of launches in one graph, launched plainly or as programmatic dependents (PDL, as the
// runtime launches them). Every launch reads its own weight copy (>= 600 MB a shape), so nothing
// stays in L2. First each product alone, 128 launches in a row, in each work split; then the
// layer (32 × the four) with the shipped splits and with the best of each. (A persistent grid,
// a block an SM looping over its tiles, lost: README.md.) Products only: the
// model's step adds attention, the x quantization and the head.
struct Split {
  int T, KS, D, MINB;
};
// Every split the chain mode tries, once: X(T, KS, D, MINB) for each.
#define RQ_SPLITS(X)                                                                                       \
  X(1, 8, 2, 2) X(2, 8, 2, 2) X(1, 8, 3, 2) X(2, 8, 3, 2) X(1, 16, 2, 1) X(2, 16, 2, 1) X(1, 16, 2, 2)         \
  X(2, 16, 2, 2) X(1, 8, 2, 1) X(2, 8, 2, 1) X(1, 4, 2, 2) X(1, 8, 1, 2) X(1, 8, 2, 3) X(1, 8, 2, 4)          \
  X(2, 8, 1, 3) X(2, 8, 1, 4) X(1, 8, 1, 4) X(1, 4, 2, 6) X(1, 4, 2, 8) X(2, 4, 2, 6) X(2, 4, 1, 8) X(2, 4, 2, 4)
#define RQ_SPLIT_ENTRY(a, b, c, d) {a, b, c, d},
static const Split kSplits[] = {RQ_SPLITS(RQ_SPLIT_ENTRY)};
#undef RQ_SPLIT_ENTRY
template <int T, int KS, int D, int MINB>
static void launch_v8c(Case<4>& q, const Dev& dv, cudaStream_t st, bool pdl, int early) {
  const i64 per = ((q.K / 64 + KS - 1) / KS + 3) / 4 * 4;
  const int slot = 16 * T * 128 + 2 * (16 * T * 4 * 2);
  const int sm = KS * (D * slot + (int)per * 128);
  static bool set = false;
  if (!set) {
    CK(cudaFuncSetAttribute(k_v8c<T, KS, D, MINB>, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    set = true;
  }
  launch_ex(pdl, dim3((unsigned)(q.N / (16 * T))), dim3(32 * KS), sm, st, k_v8c<T, KS, D, MINB>, (const bf16*)q.dx,
            (const u32*)dv.w, (const bf16*)dv.s, (const bf16*)dv.b, q.dy, q.N, q.K, early);
}
template <int T, int KS, int D, int MINB>
static const char* regs_of() {
  static char buf[64];
  cudaFuncAttributes fa;
  CK(cudaFuncGetAttributes(&fa, k_v8c<T, KS, D, MINB>));
  snprintf(buf, sizeof buf, "%d regs, %zu B local", fa.numRegs, fa.localSizeBytes);
  return buf;
}
static void launch_split(const Split& p, Case<4>& q, const Dev& dv, cudaStream_t st, bool pdl, int early) {
#define RQ_SPLIT_LAUNCH(a, b, c, d) \
  if (p.T == a && p.KS == b && p.D == c && p.MINB == d) return launch_v8c<a, b, c, d>(q, dv, st, pdl, early);
  RQ_SPLITS(RQ_SPLIT_LAUNCH)
#undef RQ_SPLIT_LAUNCH
  fprintf(stderr, "no such split\n");
  exit(1);
}
static const char* split_regs(const Split& p) {
#define RQ_SPLIT_REGS(a, b, c, d) \
  if (p.T == a && p.KS == b && p.D == c && p.MINB == d) return regs_of<a, b, c, d>();
  RQ_SPLITS(RQ_SPLIT_REGS)
#undef RQ_SPLIT_REGS
  return "?";
}

static float chain_time(Case<4>* const* cs, const Split* sp, int n, int reps, bool pdl, int early) {
  return time_graph(reps, 1, [&](int c, cudaStream_t st) {
    for (int i = 0; i < n; ++i) launch_split(sp[i], *cs[i], cs[i]->d[c % cs[i]->copies], st, pdl, early);
  });
}

static void run_chain(std::mt19937& rng) {
  Case<4> qkv(6144, 4096, 64, 1, rng), o(4096, 4096, 64, 1, rng), gu(28672, 4096, 64, 1, rng),
      dn(4096, 14336, 64, 1, rng);
  Case<4>* cs[4] = {&qkv, &o, &gu, &dn};
  const char* names[4] = {"q/k/v 6144x4096", "o 4096x4096", "gate/up 28672x4096", "down 4096x14336"};
  const Split shipped[4] = {{2, 8, 2, 2}, {1, 8, 2, 2}, {2, 8, 2, 2}, {1, 8, 2, 2}};
  Split best[4] = {shipped[0], shipped[1], shipped[2], shipped[3]};
  const float read = g_read;
  for (int i = 0; i < 4; ++i) {
    const double by = cs[i]->bytes;
    float tb = 1e30f;
    for (const Split& p : kSplits) {
      // (timing only: a split moves work between warps; `stream` mode checks v8 against the
      // float64 reference)
      const float t = chain_time(&cs[i], &p, 1, 128, true, 1);
      printf("chain alone %-20s T%d KS%-2d D%d minb%d  %7.2f us  %5.1f%% of read (%.2f us)  %s\n", names[i], p.T,
             p.KS, p.D, p.MINB, t, 100.0 * by / (t * 1e-6) / 1e9 / read, by / read / 1e3, split_regs(p));
      if (t < tb) tb = t, best[i] = p;
    }
    const float tp = chain_time(&cs[i], &shipped[i], 1, 128, false, 1);
    printf("chain alone %-20s shipped split, plain launches  %7.2f us\n", names[i], tp);
  }
  const double bytes = (double)qkv.bytes + o.bytes + gu.bytes + dn.bytes;
  printf("layer: %.1f MB (q/k/v %.1f, o %.1f, gate/up %.1f, down %.1f)\n", bytes / 1e6, qkv.bytes / 1e6,
         o.bytes / 1e6, gu.bytes / 1e6, dn.bytes / 1e6);
  auto line = [&](const char* what, float t) {
    printf("chain layer %-34s %7.2f us  %5.1f%% of read (%.2f us)\n", what, t, 100.0 * bytes / (t * 1e-6) / 1e9 / read,
           bytes / read / 1e3);
  };
  for (int r = 0; r < 2; ++r) {
    line("shipped, plain", chain_time(cs, shipped, 4, 32, false, 1));
    line("shipped, pdl", chain_time(cs, shipped, 4, 32, true, 1));
    line("shipped, pdl, ring after the wait", chain_time(cs, shipped, 4, 32, true, 0));
    line("best splits, pdl", chain_time(cs, best, 4, 32, true, 1));
  }
  for (int i = 0; i < 4; ++i)
    printf("best split %-20s T%d KS%d D%d minb%d\n", names[i], best[i].T, best[i].KS, best[i].D, best[i].MINB);
}

int main(int argc, char** argv) {
  int only_bits = argc > 1 ? atoi(argv[1]) : 0;
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  g_sms = p.multiProcessorCount;
  const float copy = copy_bw();
  printf("device %s, %d SMs, L2 %d MB; copy %.0f GB/s (1 GiB D2D, read + write)\n", p.name, p.multiProcessorCount,
         p.l2CacheSize >> 20, copy);
  std::mt19937 rng(1234);
  if (argc > 1 && strcmp(argv[1], "mma") == 0) {
    const i64 sh[5][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {128256, 4096}, {6144, 4096}};
    for (auto& h : sh) {
      run_rows<4, 2>(h[0], h[1], 64, 2, copy, rng, false);
      run_rows<4, 8>(h[0], h[1], 64, 8, copy, rng, false);
    }
    run_rows<4, 8>(28672, 4096, 64, 8, copy, rng, false);
    run_rows<4, 8>(14336, 4096, 128, 8, copy, rng, false);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "ncu") == 0) {
    // one plain launch of each shipped split (and gate/up's best alone), for
    // `ncu --clock-control none --set full -k regex:k_v8c ./qmvbench ncu`
    Case<4> qkv(6144, 4096, 64, 1, rng), o(4096, 4096, 64, 1, rng), gu(28672, 4096, 64, 1, rng),
        dn(4096, 14336, 64, 1, rng);
    launch_split({2, 8, 2, 2}, qkv, qkv.d[0], 0, false, 1);
    launch_split({1, 8, 2, 2}, o, o.d[0], 0, false, 1);
    launch_split({2, 8, 2, 2}, gu, gu.d[0], 0, false, 1);
    launch_split({1, 8, 2, 2}, dn, dn.d[0], 0, false, 1);
    launch_split({1, 4, 2, 2}, gu, gu.d[1], 0, false, 1);
    CK(cudaDeviceSynchronize());
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "chain") == 0) {
    run_chain(rng);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "stream") == 0) {
    // T per the shipped rule: one tile of 16 rows per block up to 4,096 rows, two above
    run_stream<1>(4096, 4096, copy, rng);
    run_stream<2>(6144, 4096, copy, rng);
    run_stream<1>(4096, 14336, copy, rng);
    run_stream<2>(14336, 4096, copy, rng);
    run_stream<1>(2048, 4096, copy, rng);
    run_stream<2>(5120, 2048, copy, rng);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "mma1") == 0) {
    // one row of x: the 8B shape's and Qwen3-30B-A3B's (o_proj 2048 x 4096, q/k/v 5120 x 2048)
    const i64 sh[7][2] = {{2048, 4096}, {5120, 2048}, {4096, 4096}, {6144, 4096}, {4096, 14336}, {14336, 4096}, {2048, 2048}};
    for (auto& h : sh) run_rows<4, 1>(h[0], h[1], 64, 1, copy, rng, false);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "rows") == 0) {
    const i64 sh[4][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {128256, 4096}};
    for (auto& h : sh) {
      run_rows<4, 1>(h[0], h[1], 64, 1, copy, rng);
      run_rows<4, 2>(h[0], h[1], 64, 2, copy, rng);
      run_rows<4, 4>(h[0], h[1], 64, 4, copy, rng);
      run_rows<4, 8>(h[0], h[1], 64, 8, copy, rng);
    }
    run_rows<8, 1>(14336, 4096, 64, 1, copy, rng);
    run_rows<8, 8>(14336, 4096, 64, 8, copy, rng);
    run_rows<4, 8>(14336, 4096, 32, 8, copy, rng);
    run_rows<4, 8>(14336, 4096, 128, 8, copy, rng);
    return 0;
  }
  const i64 shapes[4][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {128256, 4096}};
  for (auto& sh : shapes) {
    if (only_bits == 0 || only_bits == 4) run_shape<4, 1>(sh[0], sh[1], 64, 1, copy, rng);
    if (only_bits == 0 || only_bits == 8) run_shape<8, 1>(sh[0], sh[1], 64, 1, copy, rng);
  }
  // rows of x: 2..8 at 4-bit on the 14336 x 4096 shape
  run_shape<4, 4>(14336, 4096, 64, 4, copy, rng);
  run_shape<4, 8>(14336, 4096, 64, 8, copy, rng);
  // group sizes
  run_shape<4, 1>(14336, 4096, 32, 1, copy, rng);
  run_shape<4, 1>(14336, 4096, 128, 1, copy, rng);
  return 0;
}
