//! Reductions, arg-reductions, logsumexp and softmax (MLX semantics).
//!
//! Output dtypes follow MLX 0.32: `sum`/`prod` of bool give int32 and of uint8 give uint32;
//! `mean`/`var`/`logsumexp` of integers give float32 (`softmax` keeps the dtype, as MLX); `any`/`all` give bool;
//! `argmax`/`argmin` give uint32. An empty axis list returns the input unchanged.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::convert::astype;
use crate::ops::shape::{reshape, transpose};
use crate::primitive::{ArgReduceOp, Primitive, ReduceOp};
use crate::shape::{fmt_shape, normalize_axes, normalize_axis, Shape};

/// The axes a reduction acts on: all when `None`, else normalized (sorted, no repeats).
fn reduce_axes(op: &'static str, x: &Array, axes: Option<&[i32]>) -> Result<Vec<usize>> {
    match axes {
        None => Ok((0..x.ndim()).collect()),
        Some(a) => normalize_axes(op, a, x.ndim()),
    }
}

/// The output shape: reduced axes kept with size 1 or dropped.
fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<i64> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d as i64),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// `Reduce` over `axes` of `x` (already in the output dtype), then drops the axes if asked.
#[track_caller]
fn reduce_node(x: &Array, op: ReduceOp, axes: &[usize], keepdims: bool) -> Result<Array> {
    if axes.is_empty() {
        return Ok(x.clone());
    }
    let kept: Shape = x
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let r = Array::make(
        kept,
        x.dtype(),
        Primitive::Reduce {
            op,
            axes: axes.to_vec(),
        },
        [x.clone()],
    );
    if keepdims {
        Ok(r)
    } else {
        reshape(&r, &reduced_shape(x.shape(), axes, false))
    }
}

/// MLX's accumulation dtype for sum and prod: small integer types widen.
fn sum_dtype(d: Dtype) -> Dtype {
    match d {
        Dtype::Bool => Dtype::I32,
        Dtype::U8 => Dtype::U32,
        d => d,
    }
}

/// Sum over `axes` (all when `None`); bool → int32, uint8 → uint32. Empty axes sum to 0.
#[track_caller]
pub fn sum(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let ax = reduce_axes("sum", x, axes)?;
    reduce_node(
        &astype(x, sum_dtype(x.dtype())),
        ReduceOp::Sum,
        &ax,
        keepdims,
    )
}

/// Product over `axes`; bool → int32, uint8 → uint32. Empty axes give 1.
#[track_caller]
pub fn prod(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let ax = reduce_axes("prod", x, axes)?;
    reduce_node(
        &astype(x, sum_dtype(x.dtype())),
        ReduceOp::Prod,
        &ax,
        keepdims,
    )
}

#[track_caller]
fn extreme(
    op_name: &'static str,
    op: ReduceOp,
    x: &Array,
    axes: Option<&[i32]>,
    keepdims: bool,
) -> Result<Array> {
    let ax = reduce_axes(op_name, x, axes)?;
    let out_n: usize = x
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, _)| !ax.contains(i))
        .map(|(_, &d)| d)
        .product();
    if let Some(&a) = ax.iter().find(|&&a| x.shape()[a] == 0) {
        if out_n > 0 {
            return Err(Error::invalid(
                op_name,
                format!("cannot {op_name} reduce over axis {a} with size 0"),
            ));
        }
    }
    reduce_node(x, op, &ax, keepdims)
}

/// Maximum over `axes` (NaN propagates). Errors when a reduced axis is empty.
#[track_caller]
pub fn max(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    extreme("max", ReduceOp::Max, x, axes, keepdims)
}

/// Minimum over `axes` (NaN propagates). Errors when a reduced axis is empty.
#[track_caller]
pub fn min(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    extreme("min", ReduceOp::Min, x, axes, keepdims)
}

/// Whether any element over `axes` is nonzero (bool output).
#[track_caller]
pub fn any(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let ax = reduce_axes("any", x, axes)?;
    reduce_node(&astype(x, Dtype::Bool), ReduceOp::Any, &ax, keepdims)
}

/// Whether all elements over `axes` are nonzero (bool output; true for empty axes).
#[track_caller]
pub fn all(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let ax = reduce_axes("all", x, axes)?;
    reduce_node(&astype(x, Dtype::Bool), ReduceOp::All, &ax, keepdims)
}

fn float_of(d: Dtype) -> Dtype {
    if d.is_float() {
        d
    } else {
        Dtype::F32
    }
}

/// Arithmetic mean over `axes`; integers give float32 (NaN for an empty reduction).
#[track_caller]
pub fn mean(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let ax = reduce_axes("mean", x, axes)?;
    let t = float_of(x.dtype());
    let n: usize = ax.iter().map(|&a| x.shape()[a]).product();
    let s = reduce_node(&astype(x, t), ReduceOp::Sum, &ax, keepdims)?;
    crate::ops::divide(&s, &Array::scalar_of(n as f64, t))
}

/// Variance over `axes` with `ddof` delta degrees of freedom (two-pass: mean of squared
/// deviations, so large offsets do not cancel).
#[track_caller]
pub fn var(x: &Array, axes: Option<&[i32]>, keepdims: bool, ddof: usize) -> Result<Array> {
    let ax = reduce_axes("var", x, axes)?;
    let t = float_of(x.dtype());
    let xf = astype(x, t);
    let n: usize = ax.iter().map(|&a| x.shape()[a]).product();
    let ax_i: Vec<i32> = ax.iter().map(|&a| a as i32).collect();
    let m = mean(&xf, Some(&ax_i), true)?;
    let d = crate::ops::subtract(&xf, &m)?;
    let ss = reduce_node(&crate::ops::square(&d), ReduceOp::Sum, &ax, keepdims)?;
    let denom = n.saturating_sub(ddof) as f64;
    crate::ops::divide(&ss, &Array::scalar_of(denom, t))
}

/// `x` with `axes` moved to the end (in order) and merged into one: `[...kept, prod(axes)]`.
/// Returns the transposed view too (for undoing).
fn axes_last(x: &Array, ax: &[usize]) -> Result<(Array, Array)> {
    let mut perm: Vec<i32> = (0..x.ndim())
        .filter(|a| !ax.contains(a))
        .map(|a| a as i32)
        .collect();
    perm.extend(ax.iter().map(|&a| a as i32));
    let t = transpose(x, Some(&perm))?;
    let kept = x.ndim() - ax.len();
    let mut shape: Vec<i64> = t.shape()[..kept].iter().map(|&d| d as i64).collect();
    shape.push(t.shape()[kept..].iter().product::<usize>() as i64);
    Ok((reshape(&t, &shape)?, t))
}

/// `log(sum(exp(x)))` over `axes`, stable for large inputs; integers give float32.
#[track_caller]
pub fn logsumexp(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let ax = reduce_axes("logsumexp", x, axes)?;
    if x.size() == 0 {
        return Err(Error::invalid(
            "logsumexp",
            format!("received an empty array of shape {}", fmt_shape(x.shape())),
        ));
    }
    if ax.is_empty() {
        return Ok(astype(x, float_of(x.dtype())));
    }
    let xf = astype(x, float_of(x.dtype()));
    let (flat, _) = axes_last(&xf, &ax)?;
    let mut shape: Shape = flat.shape().into();
    *shape.last_mut().expect("at least one axis") = 1;
    let r = Array::make(shape, flat.dtype(), Primitive::LogSumExp, [flat]);
    reshape(&r, &reduced_shape(x.shape(), &ax, keepdims))
}

/// Softmax over `axes` (all when `None`), computed in f32 with the max subtracted; the output
/// keeps a float input's dtype; integers follow MLX (see the note at the end). `precise` is accepted for MLX
/// compatibility: half inputs are always accumulated in f32.
#[track_caller]
pub fn softmax(x: &Array, axes: Option<&[i32]>, precise: bool) -> Result<Array> {
    let _ = precise;
    let ax = reduce_axes("softmax", x, axes)?;
    let xf = astype(x, float_of(x.dtype()));
    if ax.is_empty() {
        // softmax over no axes: each element alone, exp(x - x) / 1
        let z = crate::ops::subtract(&xf, &xf)?;
        return Ok(crate::ops::exp(&z));
    }
    let (flat, t) = axes_last(&xf, &ax)?;
    let s = Array::make(
        flat.shape().into(),
        flat.dtype(),
        Primitive::Softmax,
        [flat],
    );
    let t_shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let s = reshape(&s, &t_shape)?;
    // undo the permutation
    let mut perm: Vec<usize> = (0..x.ndim()).filter(|a| !ax.contains(a)).collect();
    perm.extend(ax.iter().copied());
    let mut inv = vec![0i32; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i as i32;
    }
    // MLX 0.32 quirk, matched so scripts ported from mlx.core give the same numbers: an integer
    // input gives float32 over the last axis alone, but keeps its dtype (probabilities
    // truncate) over any other axes.
    let last_only = ax.len() == 1 && ax[0] + 1 == x.ndim();
    let y = transpose(&s, Some(&inv))?;
    Ok(if last_only { y } else { astype(&y, x.dtype()) })
}

#[track_caller]
fn arg_reduce(
    op_name: &'static str,
    op: ArgReduceOp,
    x: &Array,
    axis: Option<i32>,
    keepdims: bool,
) -> Result<Array> {
    if x.size() == 0 {
        return Err(Error::invalid(
            op_name,
            format!(
                "cannot {op_name} reduce a zero-size array of shape {}",
                fmt_shape(x.shape())
            ),
        ));
    }
    let (src, ax) = match axis {
        None => (reshape(x, &[-1])?, 0usize),
        Some(a) => (x.clone(), normalize_axis(op_name, a, x.ndim())?),
    };
    let mut kept: Shape = src.shape().into();
    kept[ax] = 1;
    let r = Array::make(
        kept,
        Dtype::U32,
        Primitive::ArgReduce { op, axis: ax },
        [src],
    );
    let shape: Vec<i64> = match (axis, keepdims) {
        (None, true) => vec![1; x.ndim()],
        (None, false) => vec![],
        (Some(_), true) => return Ok(r),
        (Some(_), false) => reduced_shape(x.shape(), &[ax], false),
    };
    reshape(&r, &shape)
}

/// Index (uint32) of the first maximum along `axis` (of the flattened array when `None`).
#[track_caller]
pub fn argmax(x: &Array, axis: Option<i32>, keepdims: bool) -> Result<Array> {
    arg_reduce("argmax", ArgReduceOp::ArgMax, x, axis, keepdims)
}

/// Index (uint32) of the first minimum along `axis` (of the flattened array when `None`).
#[track_caller]
pub fn argmin(x: &Array, axis: Option<i32>, keepdims: bool) -> Result<Array> {
    arg_reduce("argmin", ArgReduceOp::ArgMin, x, axis, keepdims)
}

/// Number of non-zero elements over `axes` (int32).
#[track_caller]
pub fn count_nonzero(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let nz = crate::ops::not_equal(x, &Array::scalar_of(0.0, x.dtype()))?;
    sum(&astype(&nz, Dtype::I32), axes, keepdims)
}

/// The median over `axes` (all when `None`): the middle of the sorted values, or the mean of
/// the two middle ones; integers give float32; NaN anywhere in a reduction gives NaN.
#[track_caller]
pub fn median(x: &Array, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let ax = reduce_axes("median", x, axes)?;
    let t = float_of(x.dtype());
    let (flat, _) = axes_last(x, &ax)?;
    let n = *flat.shape().last().expect("axes_last adds an axis");
    if n == 0 {
        return Err(Error::invalid(
            "median",
            "cannot take the median along an empty axis",
        ));
    }
    let sorted = crate::ops::sort(&flat, Some(-1))?;
    let nd = sorted.ndim();
    let pick = |i: usize| {
        let mut start = vec![0i64; nd];
        let mut stop: Vec<i64> = sorted.shape().iter().map(|&d| d as i64).collect();
        (start[nd - 1], stop[nd - 1]) = (i as i64, i as i64 + 1);
        crate::ops::slice(&sorted, &start, &stop, &vec![1; nd]).map(|s| astype(&s, t))
    };
    let mut m = pick(n / 2)?;
    if n % 2 == 0 {
        m = crate::ops::multiply(
            &crate::ops::add(&m, &pick(n / 2 - 1)?)?,
            &Array::scalar_of(0.5, t),
        )?;
    }
    if x.dtype().is_float() {
        // Sorting puts NaN last, where the midpoint never looks: propagate it explicitly.
        let nan = any(&crate::ops::isnan(&flat), Some(&[-1]), true)?;
        m = crate::ops::where_(&nan, &Array::scalar_of(f64::NAN, t), &m)?;
    }
    let m = crate::ops::squeeze(&m, &[-1])?;
    if keepdims {
        let ax_i: Vec<i32> = ax.iter().map(|&a| a as i32).collect();
        crate::ops::expand_dims(&m, &ax_i)
    } else {
        Ok(m)
    }
}
