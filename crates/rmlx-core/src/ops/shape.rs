//! Shape ops. Reshape, transpose, slice and broadcast are zero-copy views; the rest copy.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops::creation::full;
use crate::ops::indexing::slice_update;
use crate::primitive::{Primitive, ViewOp};
use crate::shape::{
    broadcast_shapes, fmt_shape, normalize_axes, normalize_axis, resolve_reshape, Shape,
};

fn view(x: &Array, shape: Shape, v: ViewOp) -> Array {
    Array::make(shape, x.dtype(), Primitive::View(v), [x.clone()])
}

/// `x` with a new shape of the same size; one dimension may be -1.
#[track_caller]
pub fn reshape(x: &Array, shape: &[i64]) -> Result<Array> {
    let s = resolve_reshape("reshape", x.shape(), shape)?;
    if s.as_slice() == x.shape() {
        return Ok(x.clone());
    }
    Ok(view(x, s, ViewOp::Reshape))
}

/// Axes permuted; `None` reverses them.
#[track_caller]
pub fn transpose(x: &Array, axes: Option<&[i32]>) -> Result<Array> {
    let n = x.ndim();
    let perm: Vec<usize> = match axes {
        None => (0..n).rev().collect(),
        Some(a) => {
            if a.len() != n {
                return Err(Error::invalid(
                    "transpose",
                    format!("axes {a:?} do not match an array of dimension {n}"),
                ));
            }
            let mut p = Vec::with_capacity(n);
            for &ax in a {
                let ax = normalize_axis("transpose", ax, n)?;
                if p.contains(&ax) {
                    return Err(Error::invalid(
                        "transpose",
                        format!("repeated axis in {a:?}"),
                    ));
                }
                p.push(ax);
            }
            p
        }
    };
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x.clone());
    }
    let shape = perm.iter().map(|&p| x.shape()[p]).collect();
    Ok(view(x, shape, ViewOp::Transpose { perm }))
}

#[track_caller]
pub fn swapaxes(x: &Array, a: i32, b: i32) -> Result<Array> {
    let n = x.ndim();
    let (a, b) = (
        normalize_axis("swapaxes", a, n)?,
        normalize_axis("swapaxes", b, n)?,
    );
    let mut perm: Vec<i32> = (0..n as i32).collect();
    perm.swap(a, b);
    transpose(x, Some(&perm))
}

/// Moves axis `src` to position `dst`.
#[track_caller]
pub fn moveaxis(x: &Array, src: i32, dst: i32) -> Result<Array> {
    let n = x.ndim();
    let (s, d) = (
        normalize_axis("moveaxis", src, n)?,
        normalize_axis("moveaxis", dst, n)?,
    );
    let mut perm: Vec<i32> = (0..n as i32).filter(|&i| i as usize != s).collect();
    perm.insert(d, s as i32);
    transpose(x, Some(&perm))
}

/// `x` broadcast to `shape` (NumPy rules), as a view.
#[track_caller]
pub fn broadcast_to(x: &Array, shape: &[usize]) -> Result<Array> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let b = broadcast_shapes("broadcast_to", x.shape(), shape)?;
    if b.as_slice() != shape {
        return Err(Error::invalid(
            "broadcast_to",
            format!(
                "cannot broadcast shape {} to {}",
                fmt_shape(x.shape()),
                fmt_shape(shape)
            ),
        ));
    }
    Ok(view(x, shape.into(), ViewOp::BroadcastTo))
}

/// The shape all of `xs` broadcast to (or the error naming `op` and the two that disagree).
pub(crate) fn common_shape(op: &'static str, xs: &[&Array]) -> Result<Shape> {
    let mut shape: Shape = Shape::new();
    for x in xs {
        shape = broadcast_shapes(op, &shape, x.shape())?;
    }
    Ok(shape)
}

/// Broadcasts all arrays to their common shape.
#[track_caller]
pub fn broadcast_arrays(op: &'static str, xs: &[&Array]) -> Result<Vec<Array>> {
    let shape = common_shape(op, xs)?;
    xs.iter().map(|x| broadcast_to(x, &shape)).collect()
}

/// Inserts size-1 axes at `axes` (positions in the output).
#[track_caller]
pub fn expand_dims(x: &Array, axes: &[i32]) -> Result<Array> {
    let out_nd = x.ndim() + axes.len();
    let ax = normalize_axes("expand_dims", axes, out_nd)?;
    let mut shape: Vec<i64> = Vec::with_capacity(out_nd);
    let mut src = x.shape().iter();
    for i in 0..out_nd {
        if ax.contains(&i) {
            shape.push(1);
        } else {
            shape.push(*src.next().expect("counted") as i64);
        }
    }
    reshape(x, &shape)
}

/// Removes size-1 axes (`axes` empty: all of them).
#[track_caller]
pub fn squeeze(x: &Array, axes: &[i32]) -> Result<Array> {
    let ax = normalize_axes("squeeze", axes, x.ndim())?;
    for &a in &ax {
        if x.shape()[a] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!(
                    "cannot squeeze axis {a} of size {} in shape {}",
                    x.shape()[a],
                    fmt_shape(x.shape())
                ),
            ));
        }
    }
    let shape: Vec<i64> = x
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, d)| {
            if ax.is_empty() {
                **d != 1
            } else {
                !ax.contains(i)
            }
        })
        .map(|(_, d)| *d as i64)
        .collect();
    reshape(x, &shape)
}

/// Axes `start..=end` merged into one.
#[track_caller]
pub fn flatten(x: &Array, start: i32, end: i32) -> Result<Array> {
    if x.ndim() == 0 {
        return reshape(x, &[1]);
    }
    let (s, e) = (
        normalize_axis("flatten", start, x.ndim())?,
        normalize_axis("flatten", end, x.ndim())?,
    );
    if s > e {
        return Err(Error::invalid(
            "flatten",
            format!("start axis {start} is after end axis {end}"),
        ));
    }
    let mut shape: Vec<i64> = x.shape()[..s].iter().map(|&d| d as i64).collect();
    shape.push(x.shape()[s..=e].iter().product::<usize>() as i64);
    shape.extend(x.shape()[e + 1..].iter().map(|&d| d as i64));
    reshape(x, &shape)
}

/// Basic slicing with steps, as a zero-copy view. `start`/`stop` follow Python's rules
/// (negative counts from the end, clamped); a step may be negative, never zero.
#[track_caller]
pub fn slice(x: &Array, start: &[i64], stop: &[i64], step: &[i64]) -> Result<Array> {
    let n = x.ndim();
    if start.len() > n || stop.len() != start.len() || step.len() != start.len() {
        return Err(Error::invalid(
            "slice",
            format!("start {start:?}, stop {stop:?} and step {step:?} must have one entry per leading axis of {}", fmt_shape(x.shape())),
        ));
    }
    let mut st = Vec::with_capacity(n);
    let mut sp = Vec::with_capacity(n);
    let mut shape = Shape::with_capacity(n);
    for (ax, &dim) in x.shape().iter().enumerate() {
        if ax >= start.len() {
            st.push(0);
            sp.push(1);
            shape.push(dim);
            continue;
        }
        let (b, e, s) = python_slice(start[ax], stop[ax], step[ax], dim)
            .ok_or_else(|| Error::invalid("slice", "slice step cannot be zero"))?;
        let count = if s > 0 {
            if e > b {
                (e - b + s - 1) / s
            } else {
                0
            }
        } else if b > e {
            (b - e - s - 1) / -s
        } else {
            0
        };
        st.push(if count == 0 { 0 } else { b as usize });
        sp.push(s as isize);
        shape.push(count as usize);
    }
    if shape.as_slice() == x.shape() && sp.iter().all(|&s| s == 1) {
        return Ok(x.clone());
    }
    Ok(view(
        x,
        shape,
        ViewOp::Slice {
            start: st,
            step: sp,
        },
    ))
}

/// Python's `slice.indices`: clamped start/stop for a dimension of `dim`.
pub(crate) fn python_slice(
    start: i64,
    stop: i64,
    step: i64,
    dim: usize,
) -> Option<(i64, i64, i64)> {
    if step == 0 {
        return None;
    }
    let d = dim as i64;
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let norm = |v: i64| if v < 0 { v + d } else { v };
    let (b, e) = if step > 0 {
        (clamp(norm(start), 0, d), clamp(norm(stop), 0, d))
    } else {
        (clamp(norm(start), -1, d - 1), clamp(norm(stop), -1, d - 1))
    };
    Some((b, e, step))
}

/// Joins arrays along an existing axis.
#[track_caller]
pub fn concatenate(xs: &[Array], axis: i32) -> Result<Array> {
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("concatenate", "no arrays to concatenate"))?;
    let nd = first.ndim();
    if nd == 0 {
        return Err(Error::invalid(
            "concatenate",
            "zero-dimensional arrays cannot be concatenated",
        ));
    }
    let ax = normalize_axis("concatenate", axis, nd)?;
    let mut dtype = first.dtype();
    let mut shape: Shape = first.shape().into();
    shape[ax] = 0;
    for x in xs {
        if x.ndim() != nd
            || x.shape()
                .iter()
                .enumerate()
                .any(|(i, &d)| i != ax && d != first.shape()[i])
        {
            return Err(Error::invalid(
                "concatenate",
                format!(
                    "all the input array dimensions except axis {ax} must match: {} vs {}",
                    fmt_shape(first.shape()),
                    fmt_shape(x.shape())
                ),
            ));
        }
        shape[ax] += x.shape()[ax];
        dtype = crate::Dtype::promote(dtype, x.dtype());
    }
    let inputs: Vec<Array> = xs.iter().map(|x| crate::ops::astype(x, dtype)).collect();
    if inputs.len() == 1 {
        return Ok(inputs[0].clone());
    }
    Ok(Array::make(
        shape,
        dtype,
        Primitive::Concatenate { axis: ax },
        inputs,
    ))
}

/// Joins arrays along a new axis.
#[track_caller]
pub fn stack(xs: &[Array], axis: i32) -> Result<Array> {
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("stack", "no arrays to stack"))?;
    for x in xs {
        if x.shape() != first.shape() {
            return Err(Error::invalid(
                "stack",
                format!(
                    "all arrays must have the same shape: {} vs {}",
                    fmt_shape(first.shape()),
                    fmt_shape(x.shape())
                ),
            ));
        }
    }
    let expanded: Vec<Array> = xs
        .iter()
        .map(|x| expand_dims(x, &[axis]))
        .collect::<Result<_>>()?;
    concatenate(&expanded, axis)
}

/// How `split` cuts an axis.
pub enum SplitSpec<'a> {
    /// Into this many equal parts.
    Sections(usize),
    /// At these indices.
    Indices(&'a [usize]),
}

/// Splits along `axis` into views.
#[track_caller]
pub fn split(x: &Array, spec: SplitSpec, axis: i32) -> Result<Vec<Array>> {
    let ax = normalize_axis("split", axis, x.ndim())?;
    let dim = x.shape()[ax];
    let cuts: Vec<usize> = match spec {
        SplitSpec::Sections(n) => {
            if n == 0 || !dim.is_multiple_of(n) {
                return Err(Error::invalid(
                    "split",
                    format!(
                        "array split does not result in sections of equal size: {dim} into {n}"
                    ),
                ));
            }
            (1..n).map(|i| i * dim / n).collect()
        }
        SplitSpec::Indices(ix) => ix.to_vec(),
    };
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0usize;
    for c in cuts.iter().copied().chain(std::iter::once(dim)) {
        let c = c.min(dim).max(prev);
        let mut start = vec![0i64; x.ndim()];
        let mut stop: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        start[ax] = prev as i64;
        stop[ax] = c as i64;
        out.push(slice(x, &start, &stop, &vec![1; x.ndim()])?);
        prev = c;
    }
    Ok(out)
}

/// Pads each axis with `(before, after)` elements of `value` (constant mode).
#[track_caller]
pub fn pad(x: &Array, widths: &[(usize, usize)], value: f64) -> Result<Array> {
    if widths.len() != x.ndim() {
        return Err(Error::invalid(
            "pad",
            format!(
                "{} pad widths given for an array of dimension {}",
                widths.len(),
                x.ndim()
            ),
        ));
    }
    let shape: Vec<usize> = x
        .shape()
        .iter()
        .zip(widths)
        .map(|(d, (a, b))| d + a + b)
        .collect();
    let base = full(&shape, value, x.dtype());
    let start: Vec<i64> = widths.iter().map(|(a, _)| *a as i64).collect();
    slice_update(&base, x, &start, &vec![1; x.ndim()])
}

/// The `[n, m]` bool mask of a triangle: `keep(row + k, col)`.
fn tri_mask(op: &'static str, x: &Array, k: i64, lower: bool) -> Result<Array> {
    if x.ndim() < 2 {
        return Err(Error::invalid(op, "array must be at least 2-D"));
    }
    let (n, m) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
    let rows = reshape(
        &crate::ops::arange(0.0, n as f64, 1.0, crate::Dtype::I64)?,
        &[n as i64, 1],
    )?;
    let cols = crate::ops::arange(0.0, m as f64, 1.0, crate::Dtype::I64)?;
    let shifted = crate::ops::add(&rows, &Array::scalar(k))?;
    if lower {
        crate::ops::greater_equal(&shifted, &cols)
    } else {
        crate::ops::less_equal(&shifted, &cols)
    }
}

/// The lower triangle of the last two axes: elements with `col <= row + k` kept, the rest 0.
#[track_caller]
pub fn tril(x: &Array, k: i64) -> Result<Array> {
    let mask = tri_mask("tril", x, k, true)?;
    crate::ops::where_(&mask, x, &Array::scalar_of(0.0, x.dtype()))
}

/// The upper triangle of the last two axes: elements with `col >= row + k` kept, the rest 0.
#[track_caller]
pub fn triu(x: &Array, k: i64) -> Result<Array> {
    let mask = tri_mask("triu", x, k, false)?;
    crate::ops::where_(&mask, x, &Array::scalar_of(0.0, x.dtype()))
}

/// The elements of `x` in reverse order along `axes` (all axes when `None`), as a view.
#[track_caller]
pub fn flip(x: &Array, axes: Option<&[i32]>) -> Result<Array> {
    let n = x.ndim();
    let axes = match axes {
        None => (0..n).collect(),
        Some(a) => normalize_axes("flip", a, n)?,
    };
    let mut start = vec![0i64; n];
    let mut stop: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    let mut step = vec![1i64; n];
    for &a in &axes {
        (start[a], stop[a], step[a]) = (-1, i64::MIN + 1, -1);
    }
    slice(x, &start, &stop, &step)
}

/// `x` shifted by `shift` positions along `axis` (elements that fall off one end come back
/// at the other).
fn roll_axis(x: &Array, shift: i64, axis: usize) -> Result<Array> {
    let dim = x.shape()[axis] as i64;
    if dim == 0 {
        return Ok(x.clone());
    }
    let s = shift.rem_euclid(dim);
    if s == 0 {
        return Ok(x.clone());
    }
    let n = x.ndim();
    let part = |b: i64, e: i64| {
        let mut start = vec![0i64; n];
        let mut stop: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        (start[axis], stop[axis]) = (b, e);
        slice(x, &start, &stop, &vec![1; n])
    };
    concatenate(&[part(dim - s, dim)?, part(0, dim - s)?], axis as i32)
}

/// Rolls `x` by `shift` along `axes`, as `mlx.core.roll`: without axes the flattened array
/// rolls by the sum of the shifts; one shift rolls every axis by it; one axis rolls by the
/// sum of the shifts; otherwise shifts and axes pair up.
#[track_caller]
pub fn roll(x: &Array, shift: &[i64], axes: Option<&[i32]>) -> Result<Array> {
    if shift.is_empty() {
        return Err(Error::invalid("roll", "at least one shift is needed"));
    }
    let total: i64 = shift.iter().sum();
    let Some(axes) = axes else {
        let flat = reshape(x, &[-1])?;
        let shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        return reshape(&roll_axis(&flat, total, 0)?, &shape);
    };
    let axes = normalize_axes("roll", axes, x.ndim())?;
    let pairs: Vec<(i64, usize)> = match (shift.len(), axes.len()) {
        (_, 1) => vec![(total, axes[0])],
        (1, _) => axes.iter().map(|&a| (shift[0], a)).collect(),
        (s, a) if s == a => shift.iter().copied().zip(axes).collect(),
        (s, a) => {
            return Err(Error::invalid(
                "roll",
                format!("{s} shifts and {a} axes given; they must have the same length"),
            ))
        }
    };
    let mut y = x.clone();
    for (s, a) in pairs {
        y = roll_axis(&y, s, a)?;
    }
    Ok(y)
}

/// Each element repeated `repeats` times along `axis` (of the flattened array when `None`).
#[track_caller]
pub fn repeat(x: &Array, repeats: usize, axis: Option<i32>) -> Result<Array> {
    let (x, ax) = match axis {
        None => (reshape(x, &[-1])?, 0),
        Some(a) => (x.clone(), normalize_axis("repeat", a, x.ndim())?),
    };
    let e = expand_dims(&x, &[ax as i32 + 1])?;
    let mut big: Vec<usize> = e.shape().to_vec();
    big[ax + 1] = repeats;
    let b = broadcast_to(&e, &big)?;
    let mut shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    shape[ax] *= repeats as i64;
    reshape(&b, &shape)
}

/// `x` repeated `reps[i]` times along each axis (NumPy's `tile`: the shorter of `reps` and
/// the shape is padded with leading ones).
#[track_caller]
pub fn tile(x: &Array, reps: &[usize]) -> Result<Array> {
    let n = x.ndim().max(reps.len());
    let mut shape = vec![1usize; n - x.ndim()];
    shape.extend(x.shape());
    let mut r = vec![1usize; n - reps.len()];
    r.extend(reps);
    // [d0, d1, ..] → [1, d0, 1, d1, ..] → broadcast [r0, d0, r1, d1, ..] → [r0 d0, r1 d1, ..]
    let inter: Vec<i64> = shape.iter().flat_map(|&d| [1, d as i64]).collect();
    let big: Vec<usize> = shape.iter().zip(&r).flat_map(|(&d, &k)| [k, d]).collect();
    let out: Vec<i64> = shape
        .iter()
        .zip(&r)
        .map(|(&d, &k)| (d * k) as i64)
        .collect();
    let y = broadcast_to(&reshape(x, &inter)?, &big)?;
    reshape(&y, &out)
}

/// Coordinate arrays from 1-D coordinate vectors (inputs are flattened): `indexing` "xy"
/// (Cartesian: the first two output axes swapped) or "ij" (matrix). `sparse` leaves each
/// output broadcastable instead of full size.
#[track_caller]
pub fn meshgrid(xs: &[Array], sparse: bool, indexing: &str) -> Result<Vec<Array>> {
    let xy = match indexing {
        "xy" => true,
        "ij" => false,
        _ => {
            return Err(Error::invalid(
                "meshgrid",
                format!("invalid indexing value {indexing:?}; valid values are 'xy' and 'ij'"),
            ))
        }
    };
    let n = xs.len();
    let mut sizes: Vec<usize> = xs.iter().map(|x| x.size()).collect();
    // Output axis of input i.
    let pos = |i: usize| match (xy && n > 1, i) {
        (true, 0) => 1,
        (true, 1) => 0,
        _ => i,
    };
    if xy && n > 1 {
        sizes.swap(0, 1);
    }
    xs.iter()
        .enumerate()
        .map(|(i, x)| {
            let mut shape = vec![1i64; n];
            shape[pos(i)] = -1;
            let y = reshape(x, &shape)?;
            if sparse {
                Ok(y)
            } else {
                broadcast_to(&y, &sizes)
            }
        })
        .collect()
}

/// `x` with at least `n` (1, 2 or 3) dimensions, as NumPy's `atleast_1d/2d/3d`: a 1-D
/// array becomes `[1, k]` (2-D) or `[1, k, 1]` (3-D), a 2-D array `[m, k, 1]` (3-D).
#[track_caller]
pub fn atleast_nd(x: &Array, n: usize) -> Result<Array> {
    if x.ndim() >= n {
        return Ok(x.clone());
    }
    let s: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    let shape: Vec<i64> = match (n, s.as_slice()) {
        (_, []) => vec![1; n],
        (2, [k]) => vec![1, *k],
        (3, [k]) => vec![1, *k, 1],
        (3, [m, k]) => vec![*m, *k, 1],
        _ => {
            return Err(Error::invalid(
                "atleast_nd",
                format!("n must be 1, 2 or 3, got {n}"),
            ))
        }
    };
    reshape(x, &shape)
}

/// `x` with `axis` split into `shape` (one entry may be -1).
#[track_caller]
pub fn unflatten(x: &Array, axis: i32, shape: &[i64]) -> Result<Array> {
    let ax = normalize_axis("unflatten", axis, x.ndim())?;
    if shape.is_empty() {
        return Err(Error::invalid(
            "unflatten",
            "the new shape must not be empty",
        ));
    }
    let part = resolve_reshape("unflatten", &x.shape()[ax..=ax], shape)?;
    let mut out: Vec<i64> = x.shape()[..ax].iter().map(|&d| d as i64).collect();
    out.extend(part.iter().map(|&d| d as i64));
    out.extend(x.shape()[ax + 1..].iter().map(|&d| d as i64));
    reshape(x, &out)
}

/// The `n`-th discrete difference along `axis`: `x[1:] - x[:-1]`, `n` times (bool arrays
/// give `x[1:] != x[:-1]`).
#[track_caller]
pub fn diff(x: &Array, n: usize, axis: i32) -> Result<Array> {
    if x.ndim() == 0 {
        return Err(Error::invalid(
            "diff",
            "a 0-dimensional array has no axis to take differences along",
        ));
    }
    let ax = normalize_axis("diff", axis, x.ndim())?;
    let nd = x.ndim();
    let mut y = x.clone();
    for _ in 0..n {
        let dim = y.shape()[ax] as i64;
        if dim == 0 {
            break;
        }
        let part = |b: i64, e: i64| {
            let mut start = vec![0i64; nd];
            let mut stop: Vec<i64> = y.shape().iter().map(|&d| d as i64).collect();
            (start[ax], stop[ax]) = (b, e);
            slice(&y, &start, &stop, &vec![1; nd])
        };
        let (hi, lo) = (part(1, dim)?, part(0, dim - 1)?);
        y = if y.dtype() == crate::Dtype::Bool {
            crate::ops::not_equal(&hi, &lo)?
        } else {
            crate::ops::subtract(&hi, &lo)?
        };
    }
    Ok(y)
}
