// rmlx CUDA: tensor-core building blocks (sm_80+ PTX): shared-memory addresses, ldmatrix,
// mma.sync m16n8k16 with f32 accumulation for bf16 and f16 operands, cp.async copies.
// Fragment layouts are PTX's: an m16n8 accumulator gives lane l rows l/4 and l/4 + 8, columns
// 2(l%4) and 2(l%4) + 1.

__device__ __forceinline__ u32 tc_smem(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

// Four 8x8 16-bit matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void tc_ldmatrix4(u32 addr, u32* r) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// The same, each matrix transposed (a row-major [k][n] tile as mma's B operand).
__device__ __forceinline__ void tc_ldmatrix4_t(u32 addr, u32* r) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a b for one m16n8k16 tile of 16-bit type T; pack: two floats as T's bits (lo first).
template <class T> struct TcMma;
template <> struct TcMma<bf16> {
  static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  static __device__ __forceinline__ u32 pack(float lo, float hi) {
    return (u32)f2bh(lo) | ((u32)f2bh(hi) << 16);
  }
};
template <> struct TcMma<f16> {
  static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  static __device__ __forceinline__ u32 pack(float lo, float hi) {
    return (u32)f2h(lo) | ((u32)f2h(hi) << 16);
  }
};

// 16 bytes global → shared without passing through registers; `ok` false writes zeros (the
// source address must still be valid).
__device__ __forceinline__ void tc_cp16(u32 dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void tc_commit() { asm volatile("cp.async.commit_group;"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void tc_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
