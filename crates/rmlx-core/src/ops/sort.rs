//! Sorting and partial sorting along an axis.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::indexing::take_along_axis;
use crate::primitive::Primitive;
use crate::shape::{fmt_shape, normalize_axis};

/// `x` (flattened when `axis` is None) and the axis to work along.
fn prepare(op: &'static str, x: &Array, axis: Option<i32>) -> Result<(Array, usize)> {
    match axis {
        None => Ok((crate::ops::reshape(x, &[-1])?, 0)),
        Some(a) => Ok((x.clone(), normalize_axis(op, a, x.ndim())?)),
    }
}

/// `x` sorted ascending along `axis` (None: the flattened array); NaN sorts last.
#[track_caller]
pub fn sort(x: &Array, axis: Option<i32>) -> Result<Array> {
    let (x, ax) = prepare("sort", x, axis)?;
    Ok(Array::make(
        x.shape().into(),
        x.dtype(),
        Primitive::Sort { axis: ax },
        [x],
    ))
}

/// The u32 indices that sort `x` along `axis` (stable: equal elements keep their order; NaN
/// last).
#[track_caller]
pub fn argsort(x: &Array, axis: Option<i32>) -> Result<Array> {
    let (x, ax) = prepare("argsort", x, axis)?;
    Ok(Array::make(
        x.shape().into(),
        Dtype::U32,
        Primitive::Argsort { axis: ax },
        [x],
    ))
}

/// Validates `kth` (negative counts from the end) for an axis of `dim` elements.
fn check_kth(
    op: &'static str,
    kth: i32,
    axis: Option<i32>,
    x: &Array,
    dim: usize,
) -> Result<usize> {
    let k = if kth < 0 {
        kth as i64 + dim as i64
    } else {
        kth as i64
    };
    if k < 0 || k >= dim as i64 {
        return Err(Error::invalid(
            op,
            format!(
                "received invalid kth {kth} along axis {} for array with shape {}",
                axis.unwrap_or(-1),
                fmt_shape(x.shape())
            ),
        ));
    }
    Ok(k as usize)
}

/// u32 indices that put the `kth` element of each lane along `axis` in its sorted position,
/// every element before it no greater and every element after it no smaller (order within
/// the two sides unspecified).
#[track_caller]
pub fn argpartition(x: &Array, kth: i32, axis: Option<i32>) -> Result<Array> {
    let (xf, ax) = prepare("argpartition", x, axis)?;
    let k = check_kth("argpartition", kth, axis, x, xf.shape()[ax])?;
    Ok(Array::make(
        xf.shape().into(),
        Dtype::U32,
        Primitive::Argpartition { kth: k, axis: ax },
        [xf],
    ))
}

/// The values of `x` partitioned as `argpartition` orders them.
#[track_caller]
pub fn partition(x: &Array, kth: i32, axis: Option<i32>) -> Result<Array> {
    let (xf, ax) = prepare("partition", x, axis)?;
    let k = check_kth("partition", kth, axis, x, xf.shape()[ax])?;
    let idx = Array::make(
        xf.shape().into(),
        Dtype::U32,
        Primitive::Argpartition { kth: k, axis: ax },
        [xf.clone()],
    );
    take_along_axis(&xf, &idx, Some(ax as i32))
}

/// The `k` largest values along `axis` (None: of the flattened array), as MLX: the last `k`
/// entries of a partition, in no guaranteed order.
#[track_caller]
pub fn topk(x: &Array, k: usize, axis: Option<i32>) -> Result<Array> {
    let (xf, ax) = prepare("topk", x, axis)?;
    let dim = xf.shape()[ax];
    if k > dim || (k == 0 && dim == 0) {
        return Err(Error::invalid(
            "topk",
            format!(
                "received invalid k={k} along axis {} for array with shape {}",
                axis.unwrap_or(-1),
                fmt_shape(x.shape())
            ),
        ));
    }
    let n = xf.ndim();
    let mut start = vec![0i64; n];
    let stop: Vec<i64> = xf.shape().iter().map(|&d| d as i64).collect();
    start[ax] = (dim - k) as i64;
    if k == 0 {
        return crate::ops::slice(&xf, &start, &stop, &vec![1; n]);
    }
    let p = partition(&xf, (dim - k) as i32, Some(ax as i32))?;
    crate::ops::slice(&p, &start, &stop, &vec![1; n])
}

/// Where `values` would go in the ascending 1-D `sorted`: per value, the number of elements
/// below it (`right = false`) or at most it (`right = true`), as uint32 of `values`' shape.
/// Compares every value with every element (memory `values.size * sorted.size`).
#[track_caller]
pub fn searchsorted(sorted: &Array, values: &Array, right: bool) -> Result<Array> {
    if sorted.ndim() != 1 {
        return Err(Error::invalid(
            "searchsorted",
            format!(
                "the sorted sequence must be 1-D but has {} dimensions",
                sorted.ndim()
            ),
        ));
    }
    let v = crate::ops::expand_dims(values, &[-1])?;
    let below = if right {
        crate::ops::less_equal(sorted, &v)?
    } else {
        crate::ops::less(sorted, &v)?
    };
    let n = crate::ops::sum(&below, Some(&[-1]), false)?;
    Ok(crate::ops::astype(&n, Dtype::U32))
}
