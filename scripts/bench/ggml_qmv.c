// llama.cpp's CPU matrix-vector product (ggml's Q4_0 / Q8_0 mul_mat, one f32 row of x) timed the
// way `cargo bench -p rmlx --bench qmatmul` times rmlx's: each round multiplies by every one of
// enough matrices (>= ROTATE_MIB MiB) that the weights cannot sit in the last-level cache, or,
// with ROTATE_MIB = 0, by one matrix 16 times (test-backend-ops' mode). One ggml graph per round
// through the CPU backend; prints the median over rounds of the time per product. `repack` puts
// the weights in the CPU backend's extra buffer type, which reorders Q4_0 / Q8_0 blocks for its
// wider kernels, as llama.cpp does when it loads a model; `plain` as test-backend-ops.
//
//   build (scripts/bench/ggml_qmv.sh does it): cc -O2 ggml_qmv.c -I<ggml include> -L<libs>
//     -lggml-cpu -lggml-base -lggml -o ggml_qmv
//   run:   ggml_qmv N K q4_0|q8_0 THREADS ROTATE_MIB ROUNDS plain|repack
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: %s N K q4_0|q8_0 THREADS ROTATE_MIB ROUNDS plain|repack\n", argv[0]);
    return 2;
  }
  const int n = atoi(argv[1]), k = atoi(argv[2]), threads = atoi(argv[4]), rounds = atoi(argv[6]);
  const long rotate = atol(argv[5]) << 20;
  const enum ggml_type t = strcmp(argv[3], "q8_0") == 0 ? GGML_TYPE_Q8_0 : GGML_TYPE_Q4_0;
  const int repack = strcmp(argv[7], "repack") == 0;
  const size_t bytes = ggml_row_size(t, k) * (size_t)n;
  int count = 1, calls = 16;
  if (rotate > 0) {
    count = (int)((rotate + bytes - 1) / bytes);
    if (count < 2) count = 2;
    calls = count;
  }
  ggml_backend_t be = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(be, threads);
  // weights in the repacking buffer type where asked (what llama.cpp loads model weights into
  // by default: `use_extra_bufts`), else in the plain CPU buffer (test-backend-ops)
  ggml_backend_buffer_type_t wbuft = ggml_backend_cpu_buffer_type();
  if (repack) {
    ggml_backend_dev_t dev = ggml_backend_get_device(be);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_dev_get_extra_bufts_t fn =
        (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t* extra = fn ? fn(dev) : NULL;
    if (!extra || !extra[0]) {
      fprintf(stderr, "no extra (repacking) buffer type in this ggml\n");
      return 3;
    }
    wbuft = extra[0];
  }
  struct ggml_init_params wp = {ggml_tensor_overhead() * (count + 1), NULL, true};
  struct ggml_context* wctx = ggml_init(wp);
  struct ggml_tensor** w = malloc(sizeof(*w) * count);
  for (int c = 0; c < count; ++c) w[c] = ggml_new_tensor_2d(wctx, t, k, n);
  if (!ggml_backend_alloc_ctx_tensors_from_buft(wctx, wbuft)) {
    fprintf(stderr, "allocating the weights failed\n");
    return 3;
  }
  float* src = malloc(sizeof(float) * (size_t)n * k);
  void* q = malloc(bytes);
  unsigned s = 12345u;
  for (int c = 0; c < count; ++c) {
    for (size_t i = 0; i < (size_t)n * k; ++i) {
      s = s * 1664525u + 1013904223u;
      src[i] = ((s >> 8) / 16777216.0f) * 2.0f - 1.0f;
    }
    ggml_quantize_chunk(t, src, q, 0, n, k, NULL);
    ggml_backend_tensor_set(w[c], q, 0, bytes);  // the repacking buffer reorders as it copies
  }
  struct ggml_init_params gp = {ggml_tensor_overhead() * (2 * calls + 16) + ggml_graph_overhead_custom(4 * calls + 16, false), NULL, true};
  struct ggml_context* gctx = ggml_init(gp);
  struct ggml_tensor* x = ggml_new_tensor_2d(gctx, GGML_TYPE_F32, k, 1);
  struct ggml_cgraph* g = ggml_new_graph_custom(gctx, 4 * calls + 16, false);
  for (int c = 0; c < calls; ++c) ggml_build_forward_expand(g, ggml_mul_mat(gctx, w[c % count], x));
  ggml_backend_alloc_ctx_tensors_from_buft(gctx, ggml_backend_cpu_buffer_type());
  float* xv = malloc(sizeof(float) * k);
  for (int i = 0; i < k; ++i) xv[i] = (float)(i % 17) * 0.1f - 0.8f;
  ggml_backend_tensor_set(x, xv, 0, sizeof(float) * k);
  double* per = malloc(sizeof(double) * (rounds + 1));
  for (int r = 0; r <= rounds; ++r) {
    const double t0 = now();
    ggml_backend_graph_compute(be, g);
    per[r] = (now() - t0) / calls;
  }
  qsort(per + 1, rounds, sizeof(double), cmp);  // round 0 warms up
  const double med = per[1 + rounds / 2];
  printf("ggml %s %-6s N=%5d K=%5d threads %d: %9.1f us  %6.2f GB/s  (%d matrices, %zu MiB, %d products a round, %d rounds)\n",
         argv[3], argv[7], n, k, threads, med * 1e6, bytes / med / 1e9, count, ((size_t)count * bytes) >> 20, calls,
         rounds);
  ggml_free(gctx);
  ggml_free(wctx);
  ggml_backend_free(be);
  return 0;
}
