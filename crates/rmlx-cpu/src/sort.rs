//! Sort, argsort and argpartition along an axis.
//!
//! The input is viewed as `[pre, n, post]`; each of the `pre * post` lanes of `n` elements is
//! sorted on its own (lanes in parallel). Floats order NaN after everything, like NumPy/MLX.

use crate::copy::{contiguous, out_slice_mut};
use rayon::prelude::*;
use rmlx_core::dtype::Element;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{dispatch_dtype, ArrayData, Dtype, Result};
use std::cmp::Ordering;

/// A total order for `T`: integers by value, floats with NaN last (all NaNs equal).
fn order<T: Element>() -> fn(&T, &T) -> Ordering {
    match T::DTYPE {
        Dtype::F16 | Dtype::BF16 | Dtype::F32 => |a: &T, b: &T| {
            let (x, y) = (a.to_f32(), b.to_f32());
            x.partial_cmp(&y)
                .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
        },
        // i64 does not fit an f64 exactly; compare the bits as i64.
        Dtype::I64 => {
            |a: &T, b: &T| bytemuck::cast::<T, i64>(*a).cmp(&bytemuck::cast::<T, i64>(*b))
        }
        _ => |a: &T, b: &T| a.to_f64().total_cmp(&b.to_f64()),
    }
}

/// (pre, n, post) of `shape` around `axis`.
fn dims(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Runs `f(lane_in, lane_out)` for every lane; lanes are gathered into scratch when strided.
fn per_lane<T: Element, O: Element + Default>(
    x: &ArrayData,
    axis: usize,
    dst: &mut [O],
    f: impl Fn(&[T], &mut [O]) + Sync,
) {
    let (_, n, post) = dims(&x.shape, axis);
    if dst.is_empty() || n == 0 {
        return;
    }
    let src = contiguous::<T>(x);
    if post == 1 {
        dst.par_chunks_mut(n)
            .zip(src.par_chunks(n))
            .for_each(|(d, s)| f(s, d));
        return;
    }
    dst.par_chunks_mut(n * post)
        .zip(src.par_chunks(n * post))
        .for_each(|(d, s)| {
            let mut lane_in: Vec<T> = Vec::with_capacity(n);
            let mut lane_out: Vec<O> = vec![O::default(); n];
            for q in 0..post {
                lane_in.clear();
                lane_in.extend((0..n).map(|i| s[i * post + q]));
                f(&lane_in, &mut lane_out);
                for (i, v) in lane_out.iter().enumerate() {
                    d[i * post + q] = *v;
                }
            }
        });
}

/// `x` sorted ascending along `axis`.
pub fn sort(x: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    dispatch_dtype!(x.dtype, T => {
        let cmp = order::<T>();
        let dst: &mut [T] = out_slice_mut(&mut o);
        per_lane::<T, T>(x, axis, dst, |s, d| {
            d.copy_from_slice(s);
            d.sort_by(cmp);
        });
    });
    Ok(o)
}

/// u32 indices that sort along `axis`, stable.
pub fn argsort(x: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, Dtype::U32)?;
    dispatch_dtype!(x.dtype, T => {
        let cmp = order::<T>();
        let dst: &mut [u32] = out_slice_mut(&mut o);
        per_lane::<T, u32>(x, axis, dst, |s, d| {
            for (i, v) in d.iter_mut().enumerate() {
                *v = i as u32;
            }
            d.sort_by(|&i, &j| cmp(&s[i as usize], &s[j as usize]));
        });
    });
    Ok(o)
}

/// u32 indices with the `kth` element in sorted position, smaller before, larger after.
pub fn argpartition(x: &ArrayData, kth: usize, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, Dtype::U32)?;
    dispatch_dtype!(x.dtype, T => {
        let cmp = order::<T>();
        let dst: &mut [u32] = out_slice_mut(&mut o);
        per_lane::<T, u32>(x, axis, dst, |s, d| {
            for (i, v) in d.iter_mut().enumerate() {
                *v = i as u32;
            }
            d.select_nth_unstable_by(kth, |&i, &j| cmp(&s[i as usize], &s[j as usize]));
        });
    });
    Ok(o)
}
