//! Cumulative reductions along one axis (`Scan`) with the CPU backend's accumulators (see
//! ops/reduce.rs): the input, made contiguous, is `[outer, n, inner]`. Along the last axis a
//! block scans each row tile by tile; along an inner axis a thread scans each lane.

use crate::context::Gpu;
use crate::data::{contiguous_input, ctype, output, tag};
use crate::launch::{Args, Grid};
use crate::ops::reduce::{acc_of, identity, op_functor, CUH as REDUCE_CUH};
use rmlx_core::primitive::{ReduceOp, ScanOp};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

const CUH: &str = include_str!("../../kernels/scan.cuh");
/// Elements per thread and tile (`SCAN_ITEMS` in scan.cuh).
const ITEMS: usize = 4;

fn as_reduce(op: ScanOp) -> ReduceOp {
    match op {
        ScanOp::Sum => ReduceOp::Sum,
        ScanOp::Prod => ReduceOp::Prod,
        ScanOp::Max => ReduceOp::Max,
        ScanOp::Min => ReduceOp::Min,
    }
}

/// The wrapper kernel of one variant (append to reduce.cuh + scan.cuh): name and text.
pub fn wrapper(d: Dtype, op: ScanOp, rows: bool) -> (String, String) {
    let (a, ld, st) = acc_of(d);
    let rop = as_reduce(op);
    let opn = format!("{op:?}").to_lowercase();
    let name = format!(
        "scan_{opn}_{}_{}",
        tag(d),
        if rows { "rows" } else { "cols" }
    );
    let t = ctype(d);
    let targs = format!("{t}, {a}, {ld}, {st}, {f}", f = op_functor(rop));
    let init = format!("({a})({})", identity(rop, d));
    let src = if rows {
        format!(
            "extern \"C\" __global__ void {name}(const {t}* __restrict__ x, i64 nrows, i64 n, int rev, int inc, {t}* __restrict__ y) {{\n  scan_rows<{targs}>(x, nrows, n, rev != 0, inc != 0, y, {init});\n}}\n"
        )
    } else {
        format!(
            "extern \"C\" __global__ void {name}(const {t}* __restrict__ x, i64 outer, i64 n, i64 inner, int rev, int inc, {t}* __restrict__ y) {{\n  scan_cols<{targs}>(x, outer, n, inner, rev != 0, inc != 0, y, {init});\n}}\n"
        )
    };
    (name, src)
}

/// `Primitive::Scan`: the output dtype equals the input's.
#[allow(clippy::too_many_arguments)]
pub fn scan(
    gpu: &Arc<Gpu>,
    x: &ArrayData,
    op: ScanOp,
    axis: usize,
    reverse: bool,
    inclusive: bool,
    od: Dtype,
) -> Result<ArrayData> {
    if x.dtype != od {
        return Err(Error::runtime(
            "cuda",
            format!("scan: input {} and output {} differ", x.dtype, od),
        ));
    }
    if axis >= x.shape.len() {
        return Err(Error::invalid(
            "scan",
            format!("axis {axis} out of range for {} dimensions", x.shape.len()),
        ));
    }
    let (out, yptr) = output(gpu, &x.shape, od)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let n = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    let (_keep, dev) = contiguous_input(gpu, x)?;
    let rows = inner == 1;
    let (name, body) = wrapper(od, op, rows);
    let f = gpu
        .kernels
        .get(&gpu.ctx, &name, &format!("{REDUCE_CUH}\n{CUH}\n{body}"))?;
    let mut a = Args::new();
    a.ptr(dev.base());
    let g = if rows {
        a.i64(outer as i64).i64(n as i64);
        let threads = n.div_ceil(ITEMS).next_power_of_two().clamp(32, 1024) as u32;
        Grid::rows(outer, threads)
    } else {
        a.i64(outer as i64).i64(n as i64).i64(inner as i64);
        Grid::elems(outer * inner)
    };
    a.i32(reverse as i32).i32(inclusive as i32).ptr(yptr);
    gpu.launch(&f, &name, g, &mut a)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;

    /// Every scan kernel compiles with NVRTC for sm_90.
    #[test]
    fn scan_kernels_compile() {
        let mut body = String::new();
        for d in Dtype::ALL {
            for op in [ScanOp::Sum, ScanOp::Prod, ScanOp::Max, ScanOp::Min] {
                for rows in [false, true] {
                    body.push_str(&wrapper(d, op, rows).1);
                }
            }
        }
        assert_compiles("scan_all", &format!("{REDUCE_CUH}\n{CUH}\n{body}"));
    }
}
