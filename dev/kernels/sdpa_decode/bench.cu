// sdpa_decode ladder: the production decode attention device code of
// crates/rmlx-cuda/kernels/sdpa.cuh (one query row per head, GQA, bf16 K/V of D = 128), built
// by nvcc, checked against a float64 CPU reference and timed against a copy kernel in the same
// process. Each version runs as one captured CUDA graph over enough K/V copies to defeat the
// L2 (>= 600 MB), median of 7 replays. Usage: bench [keys ...] (default: 512 8256).
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../../crates/rmlx-cuda/kernels/prelude.cuh"
#include "../bench_common.cuh"
#include "../../../crates/rmlx-cuda/kernels/mma.cuh"
#include "../../../crates/rmlx-cuda/kernels/sdpa.cuh"
#include "v5_smem.cuh"

constexpr int D = 128;

// --- kernels under test ----------------------------------------------------------------------
// v2: CUDA cores, each lane scoring its own key (rs_sdpa_decode_lk), G heads a block.
template <int G>
__global__ void __launch_bounds__(128) k_lk(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* pml,
                                            float* pacc, Sd4 ql, Sd4 kl, Sd4 vl, int Hq, int Hkv, int S, float scale,
                                            int n_split, int split_len, unsigned* tickets) {
  const Sd4 ml = {0, {0, 0, 0, 0}};
  rs_sdpa_decode_lk<bf16, float, 0, G, D / 32>(q, k, v, nullptr, out, pml, pacc, ql, kl, vl, ml, Hq, Hkv, S, scale,
                                                n_split, split_len, tickets);
}
// The block's G q rows into shared memory, as the fused rope_kv_sdpa kernel has them (its
// rotation prologue left out).
template <int G>
__device__ __forceinline__ void stage_q(const bf16* q, const Sd4& ql, const RdPlace& at, bf16 (&st)[G][D]) {
  for (int i = threadIdx.x; i < G * D; i += blockDim.x)
    st[i / D][i % D] = q[ql.off + at.bb * ql.s[0] + (i64)(at.h0 + i / D) * ql.s[1] + i % D];
  __syncthreads();
}
// v4: tensor cores (rd_mma_attend), the q rows staged by stage_q.
template <int G>
__global__ void __launch_bounds__(128, 1) k_mma(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* pml,
                                                float* pacc, Sd4 ql, Sd4 kl, Sd4 vl, int Hq, int Hkv, int S,
                                                float scale, int n_split, int split_len, unsigned* tickets) {
  __shared__ __align__(16) bf16 st[G][D];
  const RdPlace at = rd_place<G>(Hq, Hkv);
  stage_q<G>(q, ql, at, st);
  rd_mma_attend<bf16, G, D>(&st[0][0], D, k, v, out, pml, pacc, kl, vl, at, Hq, S, n_split, split_len, scale, nullptr,
                            nullptr, tickets);
}
// v5: v4 with each warp's tiles through a shared-memory ring (v5_smem.cuh), RING slots a warp.
template <int G, int RING, int MINB = 1>
__global__ void __launch_bounds__(128, MINB) k_v5(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* pml,
                                               float* pacc, Sd4 ql, Sd4 kl, Sd4 vl, int Hq, int Hkv, int S,
                                               float scale, int n_split, int split_len, unsigned* tickets) {
  __shared__ __align__(16) bf16 st[G][D];
  const RdPlace at = rd_place<G>(Hq, Hkv);
  stage_q<G>(q, ql, at, st);
  v5_attend<bf16, G, D, RING>(&st[0][0], D, k, v, out, pml, pacc, kl, vl, at, Hq, S, n_split, split_len, scale,
                              tickets);
}
template <int G, int RING>
static size_t v5_smem_bytes() {
  return (size_t)RD_NW * RING * sizeof(V5Slot<D>);
}
__global__ void k_merge(const float* pml, const float* pacc, bf16* out, int Dv, int n_split) {
  rs_sdpa_merge<bf16>(pml, pacc, out, Dv, n_split);
}

// --- host helpers ----------------------------------------------------------------------------
// Key splits as ops/sdpa.rs decode_splits for one sequence: about `target` blocks, rounded down, each
// split at least `min_keys` keys, evened out.
static void splits(int pairs, int S, int min_keys, int target, int& n, int& len) {
  int per = std::max(1, target / pairs);
  n = std::max(1, std::min(per, (S + min_keys - 1) / min_keys));
  len = (S + n - 1) / n;
  n = (S + len - 1) / len;
}

// One shape: Hq query heads over Hkv KV heads, S keys; `copies` K/V sets on the device.
struct Shape {
  const char* name;
  int Hq, Hkv, S, copies;
  size_t kv_bytes;  // K and V of one copy
  std::vector<uint16_t> q, k, v;
  std::vector<double> ref;  // [Hq][D]
  bf16 *dq, *dout;
  std::vector<bf16*> dk, dv;
  float *pml, *pacc;
  unsigned* tickets;

  Shape(const char* nm, int hq, int hkv, int s, std::mt19937& rng) : name(nm), Hq(hq), Hkv(hkv), S(s) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    q.resize((size_t)Hq * D);
    k.resize((size_t)Hkv * S * D);
    v.resize(k.size());
    for (auto& x : q) x = f2bf(nd(rng));
    for (auto& x : k) x = f2bf(nd(rng));
    for (auto& x : v) x = f2bf(nd(rng));
    kv_bytes = 2 * k.size() * 2;
    copies = (int)std::max<size_t>(2, (600ull << 20) / kv_bytes + 1);
    CK(cudaMalloc(&dq, q.size() * 2));
    CK(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&dout, (size_t)Hq * D * 2));
    for (int c = 0; c < copies; ++c) {
      bf16 *a, *b;
      CK(cudaMalloc(&a, k.size() * 2));
      CK(cudaMalloc(&b, v.size() * 2));
      CK(cudaMemcpy(a, k.data(), k.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(b, v.data(), v.size() * 2, cudaMemcpyHostToDevice));
      dk.push_back(a);
      dv.push_back(b);
    }
    CK(cudaMalloc(&pml, (size_t)Hq * 1024 * 2 * 4));
    CK(cudaMalloc(&pacc, (size_t)Hq * 1024 * D * 4));
    CK(cudaMalloc(&tickets, 65536 * 4));
    CK(cudaMemset(tickets, 0, 65536 * 4));
    // float64 reference: softmax(q k^T / sqrt(D)) v per head
    ref.assign((size_t)Hq * D, 0.0);
    const double scale = 1.0 / std::sqrt((double)D);
    std::vector<double> sc(S);
    for (int h = 0; h < Hq; ++h) {
      const int hk = h / (Hq / Hkv);
      double m = -INFINITY;
      for (int j = 0; j < S; ++j) {
        double acc = 0;
        for (int d = 0; d < D; ++d) acc += (double)bf2f(q[(size_t)h * D + d]) * (double)bf2f(k[((size_t)hk * S + j) * D + d]);
        sc[j] = acc * scale;
        m = std::max(m, sc[j]);
      }
      double z = 0;
      for (int j = 0; j < S; ++j) z += (sc[j] = std::exp(sc[j] - m));
      for (int j = 0; j < S; ++j)
        for (int d = 0; d < D; ++d) ref[(size_t)h * D + d] += sc[j] / z * (double)bf2f(v[((size_t)hk * S + j) * D + d]);
    }
  }
  ~Shape() {
    for (auto p : dk) cudaFree(p);
    for (auto p : dv) cudaFree(p);
    cudaFree(dq);
    cudaFree(dout);
    cudaFree(pml);
    cudaFree(pacc);
    cudaFree(tickets);
  }
  // relative error of what `launch` writes into dout (poisoned with NaN first)
  double check(const std::function<void(int, cudaStream_t)>& launch) {
    CK(cudaMemset(dout, 0xff, (size_t)Hq * D * 2));
    launch(0, 0);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<uint16_t> got((size_t)Hq * D);
    CK(cudaMemcpy(got.data(), dout, got.size() * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double g = (double)bf2f(got[i]);
      if (!std::isfinite(g)) return INFINITY;
      num += (g - ref[i]) * (g - ref[i]);
      den += ref[i] * ref[i];
    }
    return std::sqrt(num / den);
  }
};

// A version: the kernel, its heads per block, its fewest keys per split, its merge.
struct Version {
  std::string name;
  int g, min_keys;
  bool mma, merge_launch;
  int ring;        // v5's slots a warp (0: not v5)
  int target = 264;  // blocks the splits aim at (v5 ring 2 at 3 blocks per SM: 396)
};

template <int G>
static void launch_one(const Shape& s, const Version& ver, int c, cudaStream_t st, int n, int len) {
  const Sd4 ql = {0, {(i64)s.Hq * D, D, D, 1}};
  const Sd4 kl = {0, {(i64)s.Hkv * s.S * D, (i64)s.S * D, D, 1}};
  const int pairs = s.Hq / G;  // (KV head, head part) blocks of the one batch row
  float* pml = n > 1 ? s.pml : nullptr;
  float* pacc = n > 1 ? s.pacc : nullptr;
  unsigned* tk = n > 1 && !ver.merge_launch ? s.tickets : nullptr;
  const dim3 grid(pairs, n);
  const float scale = 1.0f / std::sqrt((float)D);
  if (ver.ring == 2 && ver.target == 396)
    k_v5<G, 2, 3><<<grid, 128, v5_smem_bytes<G, 2>(), st>>>(s.dq, s.dk[c], s.dv[c], s.dout, pml, pacc, ql, kl, kl,
                                                             s.Hq, s.Hkv, s.S, scale, n, len, tk);
  else if (ver.ring == 2)
    k_v5<G, 2><<<grid, 128, v5_smem_bytes<G, 2>(), st>>>(s.dq, s.dk[c], s.dv[c], s.dout, pml, pacc, ql, kl, kl, s.Hq,
                                                          s.Hkv, s.S, scale, n, len, tk);
  else if (ver.ring == 3)
    k_v5<G, 3><<<grid, 128, v5_smem_bytes<G, 3>(), st>>>(s.dq, s.dk[c], s.dv[c], s.dout, pml, pacc, ql, kl, kl, s.Hq,
                                                          s.Hkv, s.S, scale, n, len, tk);
  else if (ver.ring == 4)
    k_v5<G, 4><<<grid, 128, v5_smem_bytes<G, 4>(), st>>>(s.dq, s.dk[c], s.dv[c], s.dout, pml, pacc, ql, kl, kl, s.Hq,
                                                          s.Hkv, s.S, scale, n, len, tk);
  else if (ver.mma)
    k_mma<G><<<grid, 128, 0, st>>>(s.dq, s.dk[c], s.dv[c], s.dout, pml, pacc, ql, kl, kl, s.Hq, s.Hkv, s.S, scale, n,
                                   len, tk);
  else
    k_lk<G><<<grid, 128, 0, st>>>(s.dq, s.dk[c], s.dv[c], s.dout, pml, pacc, ql, kl, kl, s.Hq, s.Hkv, s.S, scale, n,
                                  len, tk);
  if (n > 1 && ver.merge_launch) k_merge<<<s.Hq, 128, 0, st>>>(s.pml, s.pacc, s.dout, D, n);
}

// v5's dynamic shared memory above the default 48 KB, set once per instantiation
template <int G>
static void v5_attributes() {
  CK(cudaFuncSetAttribute(k_v5<G, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)v5_smem_bytes<G, 2>()));
  CK(cudaFuncSetAttribute(k_v5<G, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)v5_smem_bytes<G, 3>()));
  CK(cudaFuncSetAttribute(k_v5<G, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)v5_smem_bytes<G, 4>()));
  CK(cudaFuncSetAttribute(k_v5<G, 2, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)v5_smem_bytes<G, 2>()));
}

static void run(Shape& s, const Version& ver, float copy) {
  int n, len;
  splits(s.Hq / ver.g, s.S, ver.min_keys, ver.target, n, len);
  auto launch = [&](int c, cudaStream_t st) {
    switch (ver.g) {
      case 2: launch_one<2>(s, ver, c, st, n, len); break;
      case 4: launch_one<4>(s, ver, c, st, n, len); break;
      case 8: launch_one<8>(s, ver, c, st, n, len); break;
      default: fprintf(stderr, "no G = %d variant\n", ver.g); exit(1);
    }
  };
  const double err = s.check(launch);
  const float us = time_graph(s.copies, 10, launch);
  const double gbs = s.kv_bytes / (us * 1e-6) / 1e9;
  printf("%-10s S=%5d %-34s %4d blocks (%3d splits of %4d keys)  %7.2f us  %6.0f GB/s (%3.0f%% of copy)  err %.1e\n",
         s.name, s.S, ver.name.c_str(), s.Hq / ver.g * n, n, len, us, gbs, 100.0 * gbs / copy, err);
}

int main(int argc, char** argv) {
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  g_sms = p.multiProcessorCount;
  printf("%s, %d SMs\n", p.name, g_sms);
  const float copy = copy_bw();
  std::vector<int> keys = {512, 8256};
  if (argc > 1) {
    keys.clear();
    for (int i = 1; i < argc; ++i) keys.push_back(atoi(argv[i]));
  }
  std::mt19937 rng(7);
  const std::vector<Version> llama = {
      {"v2 CUDA cores, 2 heads, launch merge", 2, 128, false, true, 0},
      {"v3 CUDA cores, 2 heads", 2, 128, false, false, 0},
      {"v4 tensor cores, 4 heads", 4, 64, true, false, 0},
      {"v4 tensor cores, 2 heads (shipped)", 2, 64, true, false, 0},
      {"v5 smem ring 2, 2 heads", 2, 64, true, false, 2},
      {"v5 smem ring 3, 2 heads", 2, 64, true, false, 3},
      {"v5 smem ring 4, 2 heads", 2, 64, true, false, 4},
      {"v5 smem ring 3, 4 heads", 4, 64, true, false, 3},
      {"v5 smem ring 2, 2 heads, 3 blocks/SM", 2, 64, true, false, 2, 396},
  };
  const std::vector<Version> qwen = {
      {"v3 CUDA cores, 2 heads", 2, 128, false, false, 0},
      {"v4 tensor cores, 8 heads", 8, 64, true, false, 0},
      {"v4 tensor cores, 2 heads (shipped)", 2, 64, true, false, 0},
      {"v5 smem ring 3, 2 heads", 2, 64, true, false, 3},
  };
  v5_attributes<2>();
  v5_attributes<4>();
  v5_attributes<8>();
  for (int S : keys) {
    {
      Shape s("llama-8b", 32, 8, S, rng);
      for (const auto& v : llama) run(s, v, copy);
    }
    {
      Shape s("qwen3-30b", 32, 4, S, rng);
      for (const auto& v : qwen) run(s, v, copy);
    }
  }
  return 0;
}
