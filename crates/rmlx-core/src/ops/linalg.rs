//! Products and matrix helpers composed from matmul, reductions and gathers: `outer`,
//! `inner`, `tensordot`, `kron`, `addmm`, `vecdot`, `diagonal`, `diag`, `trace`, `tri`,
//! `norm`, `cross`, `hadamard_transform` (names and semantics of `mlx.core` and
//! `mlx.core.linalg`).

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::convert::astype;
use crate::ops::{
    abs, add, arange, broadcast_to, concatenate, equal, matmul, max, min, multiply, negative,
    not_equal, power, reshape, split, sqrt, square, squeeze, subtract, sum, take, transpose,
    where_, SplitSpec,
};
use crate::shape::{broadcast_shapes, fmt_shape, normalize_axes, normalize_axis};

fn dims_i64(s: &[usize]) -> Vec<i64> {
    s.iter().map(|&d| d as i64).collect()
}

/// The outer product of the flattened `a` and `b`: `[a.size, b.size]`.
#[track_caller]
pub fn outer(a: &Array, b: &Array) -> Result<Array> {
    multiply(&reshape(a, &[-1, 1])?, &reshape(b, &[1, -1])?)
}

/// Sum product over the last axes: `a.shape[:-1] + b.shape[:-1]` (a product when either
/// is 0-D).
#[track_caller]
pub fn inner(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return multiply(a, b);
    }
    let (la, lb) = (a.shape()[a.ndim() - 1], b.shape()[b.ndim() - 1]);
    if la != lb {
        return Err(Error::invalid(
            "inner",
            format!(
                "the last dimensions of {} and {} must match",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    tensordot(a, b, &[a.ndim() as i32 - 1], &[b.ndim() as i32 - 1])
}

/// Sum product of `a` over `axes_a` with `b` over `axes_b` (pairwise equal sizes): the free
/// axes of `a`, then those of `b`. Floats only, as matmul.
#[track_caller]
pub fn tensordot(a: &Array, b: &Array, axes_a: &[i32], axes_b: &[i32]) -> Result<Array> {
    if axes_a.len() != axes_b.len() {
        return Err(Error::invalid(
            "tensordot",
            format!("{axes_a:?} and {axes_b:?} must list the same number of axes"),
        ));
    }
    let norm = |x: &Array, ax: &[i32]| -> Result<Vec<usize>> {
        let v: Vec<usize> = ax
            .iter()
            .map(|&i| normalize_axis("tensordot", i, x.ndim()))
            .collect::<Result<_>>()?;
        normalize_axes("tensordot", ax, x.ndim())?; // repeated axes
        Ok(v)
    };
    let (ca, cb) = (norm(a, axes_a)?, norm(b, axes_b)?);
    for (&i, &j) in ca.iter().zip(&cb) {
        if a.shape()[i] != b.shape()[j] {
            return Err(Error::invalid(
                "tensordot",
                format!(
                    "axis {i} of {} and axis {j} of {} differ in size",
                    fmt_shape(a.shape()),
                    fmt_shape(b.shape())
                ),
            ));
        }
    }
    let fa: Vec<usize> = (0..a.ndim()).filter(|i| !ca.contains(i)).collect();
    let fb: Vec<usize> = (0..b.ndim()).filter(|i| !cb.contains(i)).collect();
    let k: usize = ca.iter().map(|&i| a.shape()[i]).product();
    let perm_a: Vec<i32> = fa.iter().chain(&ca).map(|&i| i as i32).collect();
    let perm_b: Vec<i32> = cb.iter().chain(&fb).map(|&i| i as i32).collect();
    let at = reshape(&transpose(a, Some(&perm_a))?, &[-1, k as i64])?;
    let bt = reshape(&transpose(b, Some(&perm_b))?, &[k as i64, -1])?;
    let mut out: Vec<i64> = fa.iter().map(|&i| a.shape()[i] as i64).collect();
    out.extend(fb.iter().map(|&i| b.shape()[i] as i64));
    reshape(&matmul(&at, &bt)?, &out)
}

/// `tensordot` over the last `n` axes of `a` and the first `n` of `b`.
#[track_caller]
pub fn tensordot_n(a: &Array, b: &Array, n: usize) -> Result<Array> {
    if n > a.ndim() || n > b.ndim() {
        return Err(Error::invalid(
            "tensordot",
            format!(
                "cannot contract {n} axes of {} with {}",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    let axes_a: Vec<i32> = (a.ndim() - n..a.ndim()).map(|i| i as i32).collect();
    let axes_b: Vec<i32> = (0..n).map(|i| i as i32).collect();
    tensordot(a, b, &axes_a, &axes_b)
}

/// The Kronecker product: blocks `a[i, j] * b` (the shorter shape padded with leading ones).
#[track_caller]
pub fn kron(a: &Array, b: &Array) -> Result<Array> {
    let n = a.ndim().max(b.ndim());
    let pad = |x: &Array| {
        let mut s = vec![1usize; n - x.ndim()];
        s.extend(x.shape());
        s
    };
    let (sa, sb) = (pad(a), pad(b));
    // a: [a0, 1, a1, 1, ..] * b: [1, b0, 1, b1, ..] → [a0 b0, a1 b1, ..]
    let ia: Vec<i64> = sa.iter().flat_map(|&d| [d as i64, 1]).collect();
    let ib: Vec<i64> = sb.iter().flat_map(|&d| [1, d as i64]).collect();
    let p = multiply(&reshape(a, &ia)?, &reshape(b, &ib)?)?;
    let out: Vec<i64> = sa.iter().zip(&sb).map(|(&x, &y)| (x * y) as i64).collect();
    reshape(&p, &out)
}

/// `alpha * (a @ b) + beta * c`.
#[track_caller]
pub fn addmm(c: &Array, a: &Array, b: &Array, alpha: f32, beta: f32) -> Result<Array> {
    let mut p = matmul(a, b)?;
    let t = p.dtype();
    if alpha != 1.0 {
        p = multiply(&p, &Array::scalar_of(alpha as f64, t))?;
    }
    let c = if beta != 1.0 {
        multiply(&astype(c, t), &Array::scalar_of(beta as f64, t))?
    } else {
        c.clone()
    };
    add(&p, &c)
}

/// Sum of `a * b` along `axis`, which must name the same axis of both (and of equal size);
/// the other axes broadcast.
#[track_caller]
pub fn vecdot(a: &Array, b: &Array, axis: i32) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err(Error::invalid("vecdot", "inputs must be at least 1-D"));
    }
    let ax = normalize_axis("vecdot", axis, a.ndim())?;
    let same = if axis < 0 {
        axis + b.ndim() as i32 == ax as i32
    } else {
        (axis as usize) < b.ndim()
    };
    if !same {
        return Err(Error::invalid(
            "vecdot",
            format!(
                "axis {axis} does not name the same axis of {} and {}",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    if a.shape()[ax] != b.shape()[ax] {
        return Err(Error::invalid(
            "vecdot",
            format!(
                "a and b must have the same size along axis {axis}: {} and {}",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    sum(&multiply(a, b)?, Some(&[ax as i32]), false)
}

/// The diagonal at `offset` (above the main one when positive) of the matrices spanned by
/// `axis1` and `axis2`; it becomes the last axis of the result.
#[track_caller]
pub fn diagonal(a: &Array, offset: i64, axis1: i32, axis2: i32) -> Result<Array> {
    if a.ndim() < 2 {
        return Err(Error::invalid(
            "diagonal",
            format!(
                "array must be at least 2-D, got shape {}",
                fmt_shape(a.shape())
            ),
        ));
    }
    let (i, j) = (
        normalize_axis("diagonal", axis1, a.ndim())?,
        normalize_axis("diagonal", axis2, a.ndim())?,
    );
    if i == j {
        return Err(Error::invalid(
            "diagonal",
            "axis1 and axis2 cannot be the same",
        ));
    }
    let mut perm: Vec<i32> = (0..a.ndim())
        .filter(|&k| k != i && k != j)
        .map(|k| k as i32)
        .collect();
    perm.extend([i as i32, j as i32]);
    let t = transpose(a, Some(&perm))?;
    let (n, m) = (a.shape()[i] as i64, a.shape()[j] as i64);
    let (r0, c0) = (offset.min(0).abs(), offset.max(0));
    let len = (n - r0).min(m - c0).max(0);
    let mut flat = dims_i64(&t.shape()[..t.ndim() - 2]);
    flat.push(n * m);
    let t = reshape(&t, &flat)?;
    // Element k sits at row r0 + k, column c0 + k.
    let idx = arange(
        (r0 * m + c0) as f64,
        (r0 * m + c0 + len * (m + 1)) as f64,
        (m + 1) as f64,
        Dtype::I64,
    )?;
    take(&t, &idx, Some(-1))
}

/// The `k`-th diagonal of a 2-D array, or a 2-D array with the 1-D `a` on its `k`-th
/// diagonal.
#[track_caller]
pub fn diag(a: &Array, k: i64) -> Result<Array> {
    match a.ndim() {
        2 => diagonal(a, k, 0, 1),
        1 => {
            let len = a.shape()[0] as i64;
            let n = (len + k.abs()) as usize;
            let zero = Array::scalar_of(0.0, a.dtype());
            if len == 0 {
                return broadcast_to(&zero, &[n, n]);
            }
            let rows = reshape(&arange(0.0, n as f64, 1.0, Dtype::I64)?, &[-1, 1])?;
            let cols = reshape(&rows, &[1, -1])?;
            let on = equal(&subtract(&cols, &rows)?, &Array::scalar(k))?;
            // On the diagonal, element i of `a` sits at row i (k >= 0) or column i (k < 0).
            let pos = if k >= 0 { &rows } else { &cols };
            let pos = crate::ops::minimum(pos, &Array::scalar(len - 1))?;
            let pos = broadcast_to(&pos, &[n, n])?;
            where_(&on, &take(a, &pos, Some(0))?, &zero)
        }
        d => Err(Error::invalid(
            "diag",
            format!("array must be 1-D or 2-D, got an array with {d} dimensions"),
        )),
    }
}

/// Sum of the diagonal at `offset` of the matrices spanned by `axis1`, `axis2`, optionally
/// accumulated in `dtype`.
#[track_caller]
pub fn trace(
    a: &Array,
    offset: i64,
    axis1: i32,
    axis2: i32,
    dtype: Option<Dtype>,
) -> Result<Array> {
    let d = diagonal(a, offset, axis1, axis2)?;
    let d = match dtype {
        Some(t) => astype(&d, t),
        None => d,
    };
    sum(&d, Some(&[-1]), false)
}

/// `[n, m]` with ones at and below the `k`-th diagonal, zeros above.
#[track_caller]
pub fn tri(n: usize, m: Option<usize>, k: i64, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    let rows = reshape(&arange(0.0, n as f64, 1.0, Dtype::I64)?, &[-1, 1])?;
    let cols = arange(0.0, m as f64, 1.0, Dtype::I64)?;
    let keep = crate::ops::less_equal(&cols, &add(&rows, &Array::scalar(k))?)?;
    Ok(astype(&keep, dtype))
}

/// The order of a norm (`ord` of `mlx.core.linalg.norm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormOrd<'a> {
    /// 2-norm of vectors, Frobenius norm of matrices.
    Default,
    /// `p` (vectors: `(sum |x|^p)^(1/p)`, 0 counts non-zeros, ±inf max/min of `|x|`;
    /// matrices: ±1 max/min column sum, ±inf max/min row sum).
    P(f64),
    /// "fro" (or "f") for matrices ("nuc" needs singular values, not available).
    Name(&'a str),
}

fn float_of(d: Dtype) -> Dtype {
    if d.is_float() {
        d
    } else {
        Dtype::F32
    }
}

fn l2(a: &Array, axes: &[i32], keepdims: bool) -> Result<Array> {
    Ok(sqrt(&sum(&square(a), Some(axes), keepdims)?))
}

/// Vector norms (one axis) and matrix norms (two axes), as `mlx.core.linalg.norm`. Without
/// axes, `Default` is the 2-norm of the flattened array and other orders treat `a` as a
/// vector (1-D) or matrix (2-D). Integer inputs give float32.
#[track_caller]
pub fn norm(a: &Array, ord: NormOrd, axes: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let op = "linalg::norm";
    let t = float_of(a.dtype());
    let all: Vec<i32> = (0..a.ndim() as i32).collect();
    let ax: &[i32] = match (axes, ord) {
        (None, NormOrd::Default) => {
            let out = l2(&reshape(a, &[-1])?, &[0], false)?;
            return if keepdims {
                reshape(&out, &vec![1; a.ndim()])
            } else {
                Ok(out)
            };
        }
        (None, _) => &all,
        (Some(x), _) => x,
    };
    normalize_axes(op, ax, a.ndim())?;
    match (ord, ax.len()) {
        (_, n) if n > 2 || n == 0 => Err(Error::invalid(
            op,
            format!("received {n} axes for norm; it takes one (vector) or two (matrix)"),
        )),
        (NormOrd::Default, _) => l2(a, ax, keepdims),
        (NormOrd::Name(s), 2) if s == "fro" || s == "f" => l2(a, ax, keepdims),
        (NormOrd::Name("nuc"), 2) => Err(Error::invalid(
            op,
            "the nuclear norm needs singular values (svd), which rmlx does not compute",
        )),
        (NormOrd::Name(s), 2) => Err(Error::invalid(
            op,
            format!("invalid ord value '{s}' for matrix norm"),
        )),
        (NormOrd::Name(s), n) => Err(Error::invalid(
            op,
            format!("norm '{s}' only supported for matrices, but received {n} axis/axes"),
        )),
        (NormOrd::P(p), 1) => {
            let x = abs(a);
            let r = if p == 0.0 {
                sum(
                    &not_equal(a, &Array::scalar_of(0.0, a.dtype()))?,
                    Some(ax),
                    keepdims,
                )?
            } else if p == 1.0 {
                sum(&x, Some(ax), keepdims)?
            } else if p == 2.0 {
                return l2(a, ax, keepdims);
            } else if p == f64::INFINITY {
                max(&x, Some(ax), keepdims)?
            } else if p == f64::NEG_INFINITY {
                min(&x, Some(ax), keepdims)?
            } else {
                let s = sum(
                    &power(&astype(&x, t), &Array::scalar_of(p, t))?,
                    Some(ax),
                    keepdims,
                )?;
                power(&s, &Array::scalar_of(1.0 / p, t))?
            };
            Ok(astype(&r, t))
        }
        (NormOrd::P(p), _) => {
            let (row, col) = (ax[0], ax[1]);
            // ±1: sum over rows (column sums), then max/min over columns; ±inf: the reverse.
            let (inner_ax, outer_ax, take_max) = if p == 1.0 {
                (row, col, true)
            } else if p == -1.0 {
                (row, col, false)
            } else if p == f64::INFINITY {
                (col, row, true)
            } else if p == f64::NEG_INFINITY {
                (col, row, false)
            } else if p == 2.0 || p == -2.0 {
                return Err(Error::invalid(
                    op,
                    format!("the matrix norm of ord {p} needs singular values (svd), which rmlx does not compute"),
                ));
            } else {
                return Err(Error::invalid(
                    op,
                    format!("invalid ord {p} for matrix norm"),
                ));
            };
            let s = sum(&abs(a), Some(&[inner_ax]), true)?;
            let r = if take_max {
                max(&s, Some(&[outer_ax]), true)?
            } else {
                min(&s, Some(&[outer_ax]), true)?
            };
            let r = if keepdims {
                r
            } else {
                squeeze(&r, &[row, col])?
            };
            Ok(astype(&r, t))
        }
    }
}

/// The cross product of 3-vectors (a 2-vector is one with z = 0) along `axis`, broadcasting
/// the other axes.
#[track_caller]
pub fn cross(a: &Array, b: &Array, axis: i32) -> Result<Array> {
    let op = "linalg::cross";
    for x in [a, b] {
        let ax = normalize_axis(op, axis, x.ndim())?;
        if !(2..=3).contains(&x.shape()[ax]) {
            return Err(Error::invalid(
                op,
                format!(
                    "the axis {axis} of shape {} must have size 2 or 3",
                    fmt_shape(x.shape())
                ),
            ));
        }
    }
    let (aa, ba) = (
        normalize_axis(op, axis, a.ndim())?,
        normalize_axis(op, axis, b.ndim())?,
    );
    let (a2, b2) = (a.shape()[aa] == 2, b.shape()[ba] == 2);
    let t = Dtype::promote(a.dtype(), b.dtype());
    let (mut sa, mut sb) = (a.shape().to_vec(), b.shape().to_vec());
    sa[aa] = 3;
    sb[ba] = 3;
    let mut shape = broadcast_shapes(op, &sa, &sb)?.to_vec();
    let ax = normalize_axis(op, axis, shape.len())?;
    shape[ax] = a.shape()[aa];
    let a = broadcast_to(&astype(a, t), &shape)?;
    shape[ax] = b.shape()[ba];
    let b = broadcast_to(&astype(b, t), &shape)?;
    let parts = |x: &Array, n: usize| split(x, SplitSpec::Sections(n), ax as i32);
    let (pa, pb) = (
        parts(&a, if a2 { 2 } else { 3 })?,
        parts(&b, if b2 { 2 } else { 3 })?,
    );
    let mul = |x: &Array, y: &Array| multiply(x, y);
    let mut out = Vec::with_capacity(3);
    if a2 && b2 {
        let z = crate::ops::zeros_like(&pa[0]);
        out.extend([z.clone(), z]);
    } else if b2 {
        out.push(negative(&mul(&pa[2], &pb[1])?));
        out.push(mul(&pa[2], &pb[0])?);
    } else if a2 {
        out.push(mul(&pa[1], &pb[2])?);
        out.push(negative(&mul(&pa[0], &pb[2])?));
    } else {
        out.push(subtract(&mul(&pa[1], &pb[2])?, &mul(&pa[2], &pb[1])?)?);
        out.push(subtract(&mul(&pa[2], &pb[0])?, &mul(&pa[0], &pb[2])?)?);
    }
    out.push(subtract(&mul(&pa[0], &pb[1])?, &mul(&pa[1], &pb[0])?)?);
    concatenate(&out, ax as i32)
}

/// The Walsh-Hadamard transform along the last axis (length a power of two), scaled by
/// `scale` (default `1/sqrt(n)`), computed in float32 by `log2(n)` butterfly stages.
#[track_caller]
pub fn hadamard_transform(a: &Array, scale: Option<f32>) -> Result<Array> {
    let op = "hadamard";
    if a.ndim() == 0 {
        return Err(Error::invalid(
            op,
            "the array must have at least one dimension",
        ));
    }
    let n = a.shape()[a.ndim() - 1];
    if n == 0 || !n.is_power_of_two() {
        return Err(Error::invalid(
            op,
            format!("the last axis must have a power-of-two length, got {n}"),
        ));
    }
    let t = float_of(a.dtype());
    let lead = dims_i64(&a.shape()[..a.ndim() - 1]);
    let mut x = astype(a, Dtype::F32);
    // Stage with half-width h: pairs (x[..., 2h-block, i], x[..., 2h-block, i + h]).
    let mut h = 1usize;
    while h < n {
        let mut s = lead.clone();
        s.extend([(n / (2 * h)) as i64, 2, h as i64]);
        let v = reshape(&x, &s)?;
        let halves = split(&v, SplitSpec::Sections(2), -2)?;
        let (lo, hi) = (&halves[0], &halves[1]);
        x = concatenate(&[add(lo, hi)?, subtract(lo, hi)?], -2)?;
        h *= 2;
    }
    let mut s = lead;
    s.push(n as i64);
    let x = reshape(&x, &s)?;
    let scale = scale.unwrap_or(1.0 / (n as f32).sqrt());
    let x = if scale != 1.0 {
        multiply(&x, &Array::scalar(scale))?
    } else {
        x
    };
    Ok(astype(&x, t))
}
