//! Cumulative ops along one axis (MLX semantics: `reverse` scans from the end, exclusive
//! scans start from the op's identity; bool cumsum/cumprod give int32).

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::ops::convert::astype;
use crate::ops::shape::reshape;
use crate::primitive::{Primitive, ScanOp};
use crate::shape::normalize_axis;

#[track_caller]
fn scan(
    op_name: &'static str,
    op: ScanOp,
    x: &Array,
    axis: Option<i32>,
    reverse: bool,
    inclusive: bool,
) -> Result<Array> {
    let (src, ax) = match axis {
        None => (reshape(x, &[-1])?, 0usize),
        Some(a) => (x.clone(), normalize_axis(op_name, a, x.ndim())?),
    };
    let src = match (op, src.dtype()) {
        (ScanOp::Sum | ScanOp::Prod, Dtype::Bool) => astype(&src, Dtype::I32),
        _ => src,
    };
    Ok(Array::make(
        src.shape().into(),
        src.dtype(),
        Primitive::Scan {
            op,
            axis: ax,
            reverse,
            inclusive,
        },
        [src],
    ))
}

/// Cumulative sum along `axis` (of the flattened array when `None`).
#[track_caller]
pub fn cumsum(x: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan("cumsum", ScanOp::Sum, x, axis, reverse, inclusive)
}

/// Cumulative product along `axis` (of the flattened array when `None`).
#[track_caller]
pub fn cumprod(x: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan("cumprod", ScanOp::Prod, x, axis, reverse, inclusive)
}

/// Running maximum along `axis` (of the flattened array when `None`).
#[track_caller]
pub fn cummax(x: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan("cummax", ScanOp::Max, x, axis, reverse, inclusive)
}

/// Running minimum along `axis` (of the flattened array when `None`).
#[track_caller]
pub fn cummin(x: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan("cummin", ScanOp::Min, x, axis, reverse, inclusive)
}
