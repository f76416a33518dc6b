// Ladder bench: what a dependency between two decode kernels costs, and what one persistent
// kernel with a grid barrier instead would cost. README.md has the question and the tables.
//
// A "link" is one step of a chain where every block needs what the whole previous step wrote
// (a matrix-vector product needs all of x). Each link's blocks may also stream `bytes` of their
// own constant data (the weights), before the dependency (`pre`, as the shipped kernels do
// before griddepcontrol.wait) or after it. Modes:
//   plain    a graph of `links` launches, ordinary stream order
//   pdl      the same launches as programmatic dependents (trigger first, then wait: prelude.cuh)
//   barrier  one launch of `links` phases separated by a grid barrier (an arrival counter in
//            global memory, thread 0 of each block spinning on it), every block resident
// Time per link = graph time / links (median of 7 replays).
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../../crates/rmlx-cuda/kernels/prelude.cuh"
#include "../bench_common.cuh"

// Block b's share of one link's data: n16 16-byte vectors from w, summed so the loads stay.
__device__ __forceinline__ u32 stream_share(const uint4* __restrict__ w, i64 n16) {
  u32 acc = 0;
#pragma unroll 4
  for (i64 i = threadIdx.x; i < n16; i += blockDim.x) {
    const uint4 v = __ldg(w + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  return acc;
}

// The dependent part of a link: every block reads a word another block of the previous link
// wrote, and writes its own.
__device__ __forceinline__ void link_body(const u32* in, u32* out, u32 acc) {
  __shared__ u32 v;
  if (threadIdx.x == 0) v = *(volatile const u32*)(in + (blockIdx.x * 7 + 3) % gridDim.x);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = v + 1 + (acc == 0x9e3779b9u);
}

__global__ void k_link(const u32* in, u32* out, const uint4* w, i64 n16, int pre) {
  rmlx_pdl_trigger();
  const uint4* wb = w + (i64)blockIdx.x * n16;
  u32 acc = pre ? stream_share(wb, n16) : 0;
  rmlx_pdl_wait();
  if (!pre) acc = stream_share(wb, n16);
  link_body(in, out, acc);
}

// One launch, `links` phases; bar counts arrivals (zeroed before the launch).
__global__ void k_persist(u32* a, u32* b, const uint4* w, i64 n16, i64 link16, int links, int pre,
                          unsigned* bar) {
  for (int p = 0; p < links; ++p) {
    const uint4* wb = w + p * link16 + (i64)blockIdx.x * n16;
    u32 acc = pre ? stream_share(wb, n16) : 0;
    if (p > 0) {
      // the previous phase's arrivals: every block's writes are visible after them
      if (threadIdx.x == 0) {
        const unsigned want = (unsigned)p * gridDim.x;
        unsigned seen;
        do {
          asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(seen) : "l"(bar) : "memory");
        } while (seen < want);
      }
      __syncthreads();
    }
    if (!pre) acc = stream_share(wb, n16);
    link_body(p & 1 ? b : a, p & 1 ? a : b, acc);
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(bar, 1u);
    }
  }
}

static void launch_link(cudaStream_t st, bool pdl, int blocks, const u32* in, u32* out, const uint4* w, i64 n16,
                        int pre) {
  launch_ex(pdl, dim3(blocks), dim3(128), 0, st, k_link, in, out, w, n16, pre);
}

int main(int argc, char** argv) {
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  g_sms = prop.multiProcessorCount;
  printf("%s, %d SMs\n", prop.name, g_sms);
  copy_bw();
  const int links = 192;
  const i64 max_link_bytes = 8 << 20;
  uint4* w;
  const size_t wbytes = (size_t)links * max_link_bytes;
  CK(cudaMalloc(&w, wbytes));
  CK(cudaMemset(w, 1, wbytes));
  u32 *a, *b;
  unsigned* bar;
  CK(cudaMalloc(&a, 1 << 16));
  CK(cudaMalloc(&b, 1 << 16));
  CK(cudaMalloc(&bar, 4));
  CK(cudaMemset(a, 0, 1 << 16));
  CK(cudaMemset(b, 0, 1 << 16));
  printf("µs per link (%d links, median of 7 graph replays); bytes: each link's own data, all blocks\n", links);
  printf("%-8s %-7s %-12s %-4s %8s %s\n", "blocks", "mode", "bytes", "pre", "us/link", "(bytes at the read-only rate, us)");
  for (int blocks : {g_sms, 2 * g_sms}) {
    for (i64 bytes : {(i64)0, (i64)1 << 20, (i64)8 << 20}) {
      const i64 n16 = bytes / 16 / blocks;
      const i64 link16 = max_link_bytes / 16;
      const float ideal = bytes / (g_read * 1e3);  // µs at the read-only kernel's rate
      for (int pre = 0; pre < (bytes ? 2 : 1); ++pre) {
        for (int mode = 0; mode < 3; ++mode) {
          float us;
          if (mode < 2) {
            us = time_graph(links, 1, [&](int c, cudaStream_t st) {
              launch_link(st, mode == 1, blocks, c & 1 ? b : a, c & 1 ? a : b, w + c * link16, n16, pre);
            }) ;
          } else {
            us = time_graph(1, 1, [&](int, cudaStream_t st) {
                   CK(cudaMemsetAsync(bar, 0, 4, st));
                   k_persist<<<blocks, 128, 0, st>>>(a, b, w, n16, link16, links, pre, bar);
                 }) / links;
          }
          const char* names[] = {"plain", "pdl", "barrier"};
          printf("%-8d %-7s %-12lld %-4d %8.2f (%.2f)\n", blocks, names[mode], (long long)bytes, pre, us, ideal);
        }
      }
    }
  }
  CK(cudaFree(w));
  return 0;
}
