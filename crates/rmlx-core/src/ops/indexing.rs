//! Indexing: gathers, scatters and strided updates.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops::convert::astype;
use crate::ops::shape::python_slice;
use crate::primitive::Primitive;
use crate::shape::{broadcast_shapes, fmt_shape, normalize_axis, Shape};

/// A copy of `src` with `update` written into the strided region that starts at `start`
/// (per leading axis, negative counts from the end) with `step`; the update's shape gives the
/// region's extent (after broadcasting the update to it).
#[track_caller]
pub fn slice_update(src: &Array, update: &Array, start: &[i64], step: &[i64]) -> Result<Array> {
    let n = src.ndim();
    if start.len() > n || step.len() != start.len() {
        return Err(Error::invalid(
            "slice_update",
            format!(
                "start {start:?} and step {step:?} do not fit an array of shape {}",
                fmt_shape(src.shape())
            ),
        ));
    }
    if update.ndim() > n {
        return Err(Error::invalid(
            "slice_update",
            format!(
                "update of shape {} has more dimensions than {}",
                fmt_shape(update.shape()),
                fmt_shape(src.shape())
            ),
        ));
    }
    // The region's extent: the update's trailing dims aligned right, full extent elsewhere.
    let off = n - update.ndim();
    let mut region: Vec<usize> = src.shape().to_vec();
    region[off..].copy_from_slice(update.shape());
    let mut st = Vec::with_capacity(n);
    let mut sp = Vec::with_capacity(n);
    for ax in 0..n {
        let (b, s) = if ax < start.len() {
            let (b, _, s) = python_slice(
                start[ax],
                if step[ax] > 0 { i64::MAX } else { i64::MIN + 1 },
                step[ax],
                src.shape()[ax],
            )
            .ok_or_else(|| Error::invalid("slice_update", "step cannot be zero"))?;
            (b, s)
        } else {
            (0, 1)
        };
        if ax < start.len() && step[ax] != 1 && region[ax] == src.shape()[ax] && ax < off {
            region[ax] = 1;
        }
        // the last element written must stay inside the axis
        if region[ax] > 0 {
            let last = b + (region[ax] as i64 - 1) * s;
            if b < 0 || last < 0 || last >= src.shape()[ax] as i64 || b >= src.shape()[ax] as i64 {
                return Err(Error::invalid(
                    "slice_update",
                    format!(
                        "update of shape {} at start {start:?} step {step:?} does not fit in shape {}",
                        fmt_shape(update.shape()),
                        fmt_shape(src.shape())
                    ),
                ));
            }
        }
        st.push(b.max(0) as usize);
        sp.push(s as isize);
    }
    let upd = crate::ops::broadcast_to(&astype(update, src.dtype()), &region)?;
    Ok(Array::make(
        src.shape().into(),
        src.dtype(),
        Primitive::SliceUpdate {
            start: st,
            step: sp,
        },
        [src.clone(), upd],
    ))
}

/// A copy of `src` with `update` written at position `start` along `axis`, where `start` is an
/// integer scalar array (so the position can live in device memory and change between replays
/// of a recorded step). `update` has `src`'s shape except along `axis`; a start past the end is
/// clamped so the update fits (MLX's dynamic `slice_update` does the same).
#[track_caller]
pub fn slice_update_at(src: &Array, update: &Array, start: &Array, axis: i32) -> Result<Array> {
    let ax = normalize_axis("slice_update_at", axis, src.ndim())?;
    let fits = update.ndim() == src.ndim()
        && update.shape()[ax] <= src.shape()[ax]
        && (0..src.ndim()).all(|i| i == ax || update.shape()[i] == src.shape()[i]);
    if !fits {
        return Err(Error::invalid(
            "slice_update_at",
            format!(
                "update of shape {} must match {} except along axis {axis}, and not be longer there",
                fmt_shape(update.shape()),
                fmt_shape(src.shape())
            ),
        ));
    }
    if start.size() != 1 || !start.dtype().is_integer() {
        return Err(Error::invalid(
            "slice_update_at",
            format!(
                "start must be one integer, got shape {} of {}",
                fmt_shape(start.shape()),
                start.dtype()
            ),
        ));
    }
    Ok(Array::make(
        src.shape().into(),
        src.dtype(),
        Primitive::SliceUpdateAt { axis: ax },
        [
            src.clone(),
            astype(update, src.dtype()),
            crate::ops::reshape(&astype(start, crate::Dtype::I32), &[1])?,
        ],
    ))
}

/// Indices must be integers (any width, signed or not); negative ones wrap once from the end.
fn check_indices(op: &'static str, indices: &Array) -> Result<()> {
    if !indices.dtype().is_integer() {
        return Err(Error::dtype(
            op,
            format!(
                "got indices with invalid dtype {}; indices must be integral",
                indices.dtype()
            ),
        ));
    }
    Ok(())
}

/// Gathers along `axis`: `out[..., i..., ...] = x[..., indices[i...], ...]`, output shape
/// `x.shape[..axis] + indices.shape + x.shape[axis+1..]`. `axis = None` takes from the
/// flattened array. Negative indices count from the end; an index still out of range is an
/// error at evaluation (MLX reads out of bounds there; NumPy raises, and so do we).
#[track_caller]
pub fn take(x: &Array, indices: &Array, axis: Option<i32>) -> Result<Array> {
    check_indices("take", indices)?;
    let (x, ax) = match axis {
        None => (crate::ops::reshape(x, &[-1])?, 0),
        Some(a) => (x.clone(), normalize_axis("take", a, x.ndim())?),
    };
    if x.shape()[ax] == 0 && indices.size() > 0 {
        return Err(Error::invalid(
            "take",
            "cannot take non-empty indices from an empty axis",
        ));
    }
    let mut shape: Shape = x.shape()[..ax].into();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&x.shape()[ax + 1..]);
    Ok(Array::make(
        shape,
        x.dtype(),
        Primitive::Take { axis: ax },
        [x.clone(), indices.clone()],
    ))
}

/// Shapes for the along-axis ops: `x` and `indices` broadcast against each other on every
/// axis but `axis`, where `indices` keeps its own extent. Returns (x's, indices') shapes.
fn along_axis_shapes(
    op: &'static str,
    x: &Array,
    indices: &Array,
    ax: usize,
) -> Result<(Shape, Shape)> {
    if indices.ndim() != x.ndim() {
        return Err(Error::invalid(
            op,
            format!(
                "indices of dimension {} do not match array of dimension {}",
                indices.ndim(),
                x.ndim()
            ),
        ));
    }
    let mut xs: Vec<usize> = x.shape().to_vec();
    let mut is: Vec<usize> = indices.shape().to_vec();
    xs[ax] = 1;
    is[ax] = 1;
    let common = broadcast_shapes(op, &xs, &is)?;
    let mut x_shape = common.clone();
    x_shape[ax] = x.shape()[ax];
    let mut i_shape = common;
    i_shape[ax] = indices.shape()[ax];
    Ok((x_shape, i_shape))
}

/// `out[.., j, ..] = x[.., indices[.., j, ..], ..]` along `axis` (NumPy's
/// `take_along_axis`); `x` and `indices` broadcast on the other axes. `axis = None` works on
/// the flattened `x` (indices must then be 1-D).
#[track_caller]
pub fn take_along_axis(x: &Array, indices: &Array, axis: Option<i32>) -> Result<Array> {
    check_indices("take_along_axis", indices)?;
    let (x, ax) = match axis {
        None => (crate::ops::reshape(x, &[-1])?, 0),
        Some(a) => (x.clone(), normalize_axis("take_along_axis", a, x.ndim())?),
    };
    let (xs, is) = along_axis_shapes("take_along_axis", &x, indices, ax)?;
    if xs[ax] == 0 && is.iter().product::<usize>() > 0 {
        return Err(Error::invalid(
            "take_along_axis",
            "cannot take non-empty indices from an empty axis",
        ));
    }
    let xb = crate::ops::broadcast_to(&x, &xs)?;
    let ib = crate::ops::broadcast_to(indices, &is)?;
    Ok(Array::make(
        is,
        x.dtype(),
        Primitive::TakeAlongAxis { axis: ax },
        [xb, ib],
    ))
}

/// A copy of `x` with `values` written at `indices` along `axis` (NumPy's
/// `put_along_axis`). `indices` broadcasts against `x` on the other axes (it may not grow
/// `x`), `values` broadcasts to the indices' shape and is cast to `x`'s dtype. Of repeated
/// indices the last write wins. `axis = None` writes into the flattened `x` and returns that
/// flat shape, as NumPy does.
#[track_caller]
pub fn put_along_axis(
    x: &Array,
    indices: &Array,
    values: &Array,
    axis: Option<i32>,
) -> Result<Array> {
    check_indices("put_along_axis", indices)?;
    let (x, ax) = match axis {
        None => (crate::ops::reshape(x, &[-1])?, 0),
        Some(a) => (x.clone(), normalize_axis("put_along_axis", a, x.ndim())?),
    };
    let (xs, is) = along_axis_shapes("put_along_axis", &x, indices, ax)?;
    if xs.as_slice() != x.shape() {
        return Err(Error::invalid(
            "put_along_axis",
            format!(
                "indices of shape {} would broadcast the array of shape {} to {}",
                fmt_shape(indices.shape()),
                fmt_shape(x.shape()),
                fmt_shape(&xs)
            ),
        ));
    }
    if xs[ax] == 0 && is.iter().product::<usize>() > 0 {
        return Err(Error::invalid(
            "put_along_axis",
            "cannot put at non-empty indices of an empty axis",
        ));
    }
    let ib = crate::ops::broadcast_to(indices, &is)?;
    let vb = crate::ops::broadcast_to(&astype(values, x.dtype()), &is).map_err(|_| {
        Error::invalid(
            "put_along_axis",
            format!(
                "values of shape {} cannot be broadcast to the indices' shape {}",
                fmt_shape(values.shape()),
                fmt_shape(&is)
            ),
        )
    })?;
    Ok(Array::make(
        x.shape().into(),
        x.dtype(),
        Primitive::PutAlongAxis { axis: ax },
        [x.clone(), ib, vb],
    ))
}

/// A copy of `a` whose elements selected by the boolean `mask` are replaced, in row-major
/// order, by consecutive elements of `values` (MLX's `masked_scatter`, behind
/// `a[mask] = values`). `mask` has the shape of `a`'s leading axes and covers the rest
/// whole. `values` either broadcasts to one value per selected position (fewer dimensions
/// than `a.ndim - mask.ndim + 1`), or lists them along its first axis, the rest
/// broadcasting to `a`'s trailing shape; extra values are unused. Fewer values than selected
/// positions is an error when the result is evaluated on the CPU (a GPU repeats the last).
#[track_caller]
pub fn masked_scatter(a: &Array, mask: &Array, values: &Array) -> Result<Array> {
    let op = "masked_scatter";
    if mask.dtype() != crate::Dtype::Bool {
        return Err(Error::dtype(
            op,
            format!("the mask has to be boolean, got {}", mask.dtype()),
        ));
    }
    if mask.ndim() > a.ndim() {
        return Err(Error::invalid(
            op,
            format!(
                "the mask of shape {} has more dimensions than the array of shape {}",
                fmt_shape(mask.shape()),
                fmt_shape(a.shape())
            ),
        ));
    }
    let unmasked = a.ndim() - mask.ndim();
    if values.ndim() > unmasked + 1 {
        return Err(Error::invalid(
            op,
            format!(
                "values of shape {} must be broadcastable with the last {unmasked} dimensions of the array of shape {}",
                fmt_shape(values.shape()),
                fmt_shape(a.shape())
            ),
        ));
    }
    if mask.shape() != &a.shape()[..mask.ndim()] {
        return Err(Error::invalid(
            op,
            format!(
                "the boolean mask should have the shape of the beginning of the indexed array, but the mask has shape {} and the array has shape {}",
                fmt_shape(mask.shape()),
                fmt_shape(a.shape())
            ),
        ));
    }
    let trailing = &a.shape()[mask.ndim()..];
    // The values as [count, trailing...].
    let v = astype(values, a.dtype());
    let mut vshape: Vec<usize> = Vec::with_capacity(unmasked + 1);
    let v = if v.ndim() < unmasked + 1 {
        let mut lead: Vec<i64> = vec![1; unmasked + 1 - v.ndim()];
        lead.extend(v.shape().iter().map(|&d| d as i64));
        vshape.push(mask.size());
        crate::ops::reshape(&v, &lead)?
    } else {
        vshape.push(v.shape()[0]);
        v
    };
    vshape.extend(trailing);
    let src = crate::ops::reshape(&crate::ops::broadcast_to(&v, &vshape)?, &[-1])?;
    if a.size() == 0 {
        return Ok(a.clone());
    }
    if src.size() == 0 {
        return Err(Error::invalid(
            op,
            "there are no values to write where the mask is true",
        ));
    }
    let mut mshape: Vec<i64> = mask.shape().iter().map(|&d| d as i64).collect();
    mshape.extend(std::iter::repeat_n(1, unmasked));
    let em = crate::ops::broadcast_to(&crate::ops::reshape(mask, &mshape)?, a.shape())?;
    let em = crate::ops::reshape(&em, &[-1])?;
    // The k-th selected position (in row-major order) reads value k.
    let it = if a.size() > i32::MAX as usize {
        crate::Dtype::I64
    } else {
        crate::Dtype::I32
    };
    let k = crate::ops::cumsum(&astype(&em, it), Some(0), false, false)?;
    let k = crate::ops::where_(&em, &k, &Array::scalar_of(0.0, it))?;
    let picked = take(&src, &k, Some(0))?;
    let flat = crate::ops::reshape(a, &[-1])?;
    let out = crate::ops::where_(&em, &picked, &flat)?;
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    crate::ops::reshape(&out, &shape)
}
