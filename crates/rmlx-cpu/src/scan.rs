//! Cumulative reductions along one axis (`Scan`).
//!
//! The input (made row-contiguous) is viewed as `[outer, n, inner]`; each outer slab is scanned
//! in parallel, carrying a vector of `inner` accumulators so rows of `inner` values combine with
//! one vectorisable pass each. Half types accumulate in f32, integers wrap.

use crate::copy::{contiguous, out_slice_mut};
use crate::reduce::{Acc, AccVal};
use rayon::prelude::*;
use rmlx_core::dtype::{bf16, f16, Bool8};
use rmlx_core::primitive::{OutputSpec, ScanOp};
use rmlx_core::{ArrayData, Dtype, Error, Result};

fn scan_typed<T: Acc>(
    x: &ArrayData,
    op: ScanOp,
    axis: usize,
    reverse: bool,
    inclusive: bool,
) -> Result<ArrayData> {
    let mut out = ArrayData::alloc(&x.shape, x.dtype)?;
    let n = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    if out.numel() == 0 {
        return Ok(out);
    }
    let xs = contiguous::<T>(x);
    let dst: &mut [T] = out_slice_mut(&mut out);
    let (init, f): (T::A, fn(T::A, T::A) -> T::A) = match op {
        ScanOp::Sum => (T::A::ZERO, |a, b| a.add(b)),
        ScanOp::Prod => (T::A::ONE, |a, b| a.mul(b)),
        ScanOp::Max => (T::A::LOWEST, |a, b| a.max(b)),
        ScanOp::Min => (T::A::HIGHEST, |a, b| a.min(b)),
    };
    let slab = n * inner;
    dst.par_chunks_mut(slab)
        .zip(xs.par_chunks(slab))
        .for_each(|(d, s)| {
            let mut acc = vec![init; inner];
            for step in 0..n {
                let k = if reverse { n - 1 - step } else { step };
                let (drow, srow) = (
                    &mut d[k * inner..(k + 1) * inner],
                    &s[k * inner..(k + 1) * inner],
                );
                for ((o, a), v) in drow.iter_mut().zip(acc.iter_mut()).zip(srow) {
                    let next = f(*a, v.load());
                    *o = T::store(if inclusive { next } else { *a });
                    *a = next;
                }
            }
        });
    Ok(out)
}

/// The CPU kernel of `Primitive::Scan`: output dtype equals the input's (the op converts bool
/// sums to int32 first). Exclusive scans start from the op's identity.
pub fn scan(
    x: &ArrayData,
    op: ScanOp,
    axis: usize,
    reverse: bool,
    inclusive: bool,
    out: &OutputSpec,
) -> Result<ArrayData> {
    if x.dtype != out.dtype {
        return Err(Error::runtime(
            "cpu",
            format!("scan: input {} and output {} differ", x.dtype, out.dtype),
        ));
    }
    match x.dtype {
        Dtype::F32 => scan_typed::<f32>(x, op, axis, reverse, inclusive),
        Dtype::F16 => scan_typed::<f16>(x, op, axis, reverse, inclusive),
        Dtype::BF16 => scan_typed::<bf16>(x, op, axis, reverse, inclusive),
        Dtype::Bool => scan_typed::<Bool8>(x, op, axis, reverse, inclusive),
        Dtype::U8 => scan_typed::<u8>(x, op, axis, reverse, inclusive),
        Dtype::U32 => scan_typed::<u32>(x, op, axis, reverse, inclusive),
        Dtype::I32 => scan_typed::<i32>(x, op, axis, reverse, inclusive),
        Dtype::I64 => scan_typed::<i64>(x, op, axis, reverse, inclusive),
    }
}
