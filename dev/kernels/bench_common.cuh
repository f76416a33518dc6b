// Shared by the kernel ladders' benches (dev/kernels/*/bench.cu): error checks, bf16 on the
// host, graph-replay timing, and the bandwidth ceilings (copy and read-only kernels). Include
// after prelude.cuh (for i64) and <cuda_runtime.h>.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CK(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

__global__ void k_copy(const uint4* a, uint4* b, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) b[i] = a[i];
}

__global__ void k_read(const uint4* a, u32* out, i64 n) {
  u32 acc = 0;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const uint4 v = __ldg(a + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) out[0] = acc;
}

static uint16_t f2bf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
static float bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times `launch(copy, stream)` over all copies, `reps` times, as one captured graph; returns
// µs per call (median of 7 replays).
template <class F>
static float time_graph(int copies, int reps, F launch) {
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  for (int r = 0; r < reps; ++r)
    for (int c = 0; c < copies; ++c) launch(c, st);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  CK(cudaGraphLaunch(ge, st));
  CK(cudaStreamSynchronize(st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int i = 0; i < 7; ++i) {
    CK(cudaEventRecord(e0, st));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1000.0f / (reps * copies));
  }
  CK(cudaGetLastError());
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(st);
  return median(t);
}

// Launches `k` on `st`, as a programmatic dependent of the kernel before it where `pdl` (trigger
// then wait, prelude.cuh: how the runtime launches every kernel), else in plain stream order.
template <class... P, class... A>
static void launch_ex(bool pdl, dim3 grid, dim3 block, size_t smem, cudaStream_t st, void (*k)(P...), A... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute at;
  at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &at;
  cfg.numAttrs = pdl ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, k, args...));
}

// The ceilings in this process: a 16-byte copy kernel over 1 GiB (returned, GB/s read + write),
// cudaMemcpy device to device, and a read-only kernel (in g_read, GB/s); all printed.
static int g_sms = 132;
static float g_read = 0;
static float copy_bw() {
  const size_t n = (size_t)1 << 30;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemset(a, 1, n));
  const i64 n16 = n / 16;
  float us = time_graph(1, 5, [&](int, cudaStream_t st) {
    k_copy<<<g_sms * 8, 256, 0, st>>>((const uint4*)a, (uint4*)b, n16);
  });
  float usr = time_graph(1, 5, [&](int, cudaStream_t st) {
    k_read<<<g_sms * 8, 256, 0, st>>>((const uint4*)a, (u32*)b, n16);
  });
  float usm = time_graph(1, 5, [&](int, cudaStream_t st) { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, st)); });
  printf("ceilings: copy kernel %.0f GB/s, cudaMemcpy D2D %.0f GB/s (read + write), read-only kernel %.0f GB/s\n",
         2.0 * n / (us * 1e-6) / 1e9, 2.0 * n / (usm * 1e-6) / 1e9, n / (usr * 1e-6) / 1e9);
  g_read = n / (usr * 1e-6) / 1e9;
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * n / (us * 1e-6) / 1e9;  // GB/s, read + write
}
