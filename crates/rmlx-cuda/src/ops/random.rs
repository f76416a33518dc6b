//! Random bits on the GPU: the counter-based threefry2x32 stream of
//! `rmlx_core::ops::random` (`threefry2x32`, `bits_at`), bit-identical to the CPU.
//!
//! Element `i` of `n` depends only on the key and `i`: counter `(j, j + h')` fills elements
//! `j` and `j + h'` (`h = n / 2`, `h' = h + n % 2`); for odd `n` the middle element takes the
//! first word of counter `(h, 0)`. One thread per counter computes both of its words.

use crate::context::Gpu;
use crate::data::{input, output};
use crate::launch::{Args, Grid};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

pub const KERNEL: &str = "random_bits_threefry";

/// The kernel: the key is read on the device (a strided `u32[2]` view), so drawing never
/// waits for the key's producer.
pub fn source() -> (String, String) {
    let src = format!(
        r#"__device__ __forceinline__ u32 rmlx_rotl32(u32 x, int r) {{ return (x << r) | (x >> (32 - r)); }}
__device__ __forceinline__ void rmlx_threefry2x32(u32 k0, u32 k1, u32 c0, u32 c1, u32& o0, u32& o1) {{
  const u32 ks[3] = {{k0, k1, k0 ^ k1 ^ 0x1BD11BDAu}};
  const int rot[2][4] = {{{{13, 15, 26, 6}}, {{17, 29, 16, 24}}}};
  u32 x0 = c0 + ks[0], x1 = c1 + ks[1];
#pragma unroll
  for (int i = 0; i < 5; ++i) {{
#pragma unroll
    for (int r = 0; r < 4; ++r) {{
      x0 += x1;
      x1 = rmlx_rotl32(x1, rot[i % 2][r]) ^ x0;
    }}
    x0 += ks[(i + 1) % 3];
    x1 += ks[(i + 2) % 3] + (u32)(i + 1);
  }}
  o0 = x0;
  o1 = x1;
}}
extern "C" __global__ void {KERNEL}(const u32* __restrict__ key, i64 ko, Lay kl, u32* __restrict__ y, i64 n) {{
  const u32 k0 = key[ko + loc(0, kl)], k1 = key[ko + loc(1, kl)];
  const i64 h = n / 2, off = h + n % 2;
  GRID_LOOP(j, off) {{
    u32 a, b;
    if (j < h) {{
      rmlx_threefry2x32(k0, k1, (u32)j, (u32)(j + off), a, b);
      y[j] = a;
      y[j + off] = b;
    }} else {{
      rmlx_threefry2x32(k0, k1, (u32)h, 0u, a, b);
      y[h] = a;
    }}
  }}
}}
"#
    );
    (KERNEL.to_string(), src)
}

/// `[key]` (u32 `[2]`) → u32 bits of `shape`, laid out as MLX's `RandomBits`.
pub fn random_bits(
    gpu: &Arc<Gpu>,
    key: &ArrayData,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    if key.dtype != Dtype::U32 || key.numel() != 2 || od != Dtype::U32 {
        return Err(Error::runtime(
            "random_bits",
            "expects a uint32 key of 2 words and a uint32 output",
        ));
    }
    let (out, yptr) = output(gpu, shape, Dtype::U32)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    let k = input(gpu, key)?;
    let (name, src) = source();
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut a = Args::new();
    a.ptr(k.ptr).i64(k.offset).push(k.lay);
    a.ptr(yptr).i64(n as i64);
    gpu.launch(&f, &name, Grid::elems(n.div_ceil(2)), &mut a)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// The random-bits kernel compiles with NVRTC for sm_90.
    #[test]
    fn random_kernels_compile() {
        assert_compiles("random_all", &source().1);
    }
}
