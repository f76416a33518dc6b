//! Softmax and logsumexp over the last axis (`Softmax`, `LogSumExp`), accumulated in f32 like
//! the CPU backend: a warp per row for rows of up to 1024 elements, else a block per row
//! (1024 threads when there are few rows, as at decode time).

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, output, tag};
use crate::launch::{Args, Grid};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

const CUH: &str = include_str!("../../kernels/softmax.cuh");

/// The wrapper kernel of one variant (append to the softmax .cuh): name and text.
pub fn wrapper(d: Dtype, lse: bool, warp: bool) -> (String, String) {
    let name = format!(
        "{}_{}_{}",
        if lse { "logsumexp" } else { "softmax" },
        tag(d),
        if warp { "wrp" } else { "blk" }
    );
    let t = ctype(d);
    let src = format!(
        "extern \"C\" __global__ void {name}(const {t}* __restrict__ x, i64 nrows, i64 n, {t}* __restrict__ y) {{\n  softmax_rows<{t}, {warp}, {lse}>(x, nrows, n, y);\n}}\n"
    );
    (name, src)
}

fn run(
    gpu: &Arc<Gpu>,
    x: &ArrayData,
    lse: bool,
    shape: &[usize],
    what: &'static str,
) -> Result<ArrayData> {
    if !x.dtype.is_float() {
        return Err(Error::dtype(
            "cuda",
            format!("{what} expects a float input, got {}", x.dtype),
        ));
    }
    let (out, yptr) = output(gpu, shape, x.dtype)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let n = x.shape.last().copied().unwrap_or(1);
    let nrows = out.numel() / if lse { 1 } else { n.max(1) };
    let (_keep, dev) = contiguous_input(gpu, x)?;
    let warp = n <= 1024;
    let (name, body) = wrapper(x.dtype, lse, warp);
    let f = gpu
        .kernels
        .get(&gpu.ctx, &name, &format!("{CUH}\n{body}"))?;
    let g = if warp {
        Grid::rows(nrows.div_ceil(8), 256)
    } else {
        Grid::rows(nrows, if nrows >= 1024 { 256 } else { 1024 })
    };
    let mut a = Args::new();
    a.ptr(dev.base()).i64(nrows as i64).i64(n as i64).ptr(yptr);
    gpu.launch(&f, &name, g, &mut a)?;
    Ok(out)
}

/// `Primitive::Softmax` along the last axis (float input, same output dtype).
pub fn softmax(gpu: &Arc<Gpu>, x: &ArrayData) -> Result<ArrayData> {
    run(gpu, x, false, &x.shape, "softmax")
}

/// `Primitive::LogSumExp` over the last axis, kept with size 1 in `shape`.
pub fn logsumexp(gpu: &Arc<Gpu>, x: &ArrayData, shape: &[usize]) -> Result<ArrayData> {
    run(gpu, x, true, shape, "logsumexp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every softmax/logsumexp kernel compiles with NVRTC for sm_90.
    #[test]
    fn softmax_kernels_compile() {
        let mut body = String::new();
        for d in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for lse in [false, true] {
                for warp in [false, true] {
                    body.push_str(&wrapper(d, lse, warp).1);
                }
            }
        }
        assert_compiles("softmax_all", &format!("{CUH}\n{body}"));
    }
}
