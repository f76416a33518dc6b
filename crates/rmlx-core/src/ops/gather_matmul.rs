//! Matrix products with a matrix-level gather (MLX's `gather_mm`, `gather_qmm`): each entry
//! of an index batch picks one matrix of `x`'s batch and one of the weights' batch. A
//! mixture-of-experts layer multiplies each token by the experts its router chose this way.
//!
//! Semantics (as `mlx.core`): `lhs_indices` index the flattened batch axes of `x`
//! (`x.shape[..-2]`), `rhs_indices` those of the weights; a missing index array is
//! `arange(batch).reshape(batch_shape)`. The two broadcast together to `I`; the result is
//! `I + [M, N]`. The backends see flattened operands: `x: [Bx, M, K]`, weights
//! `[E, .., ..]`, both index arrays u32 `[prod(I)]`.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::convert::astype;
use crate::ops::creation::arange;
use crate::ops::quantized::{check_float, check_packed};
use crate::ops::shape::{broadcast_to, reshape};
use crate::primitive::Primitive;
use crate::shape::{broadcast_shapes, fmt_shape, Shape};

/// The flattened indices of one side: given, or the identity over its batch.
fn side_indices(
    op: &'static str,
    what: &str,
    given: Option<&Array>,
    batch: &[usize],
) -> Result<Array> {
    match given {
        Some(i) => {
            if !i.dtype().is_integer() {
                return Err(Error::dtype(
                    op,
                    format!("{what} must be integers, got {}", i.dtype()),
                ));
            }
            Ok(i.clone())
        }
        None => {
            let n: usize = batch.iter().product();
            let shape: Vec<i64> = batch.iter().map(|&d| d as i64).collect();
            reshape(&arange(0.0, n as f64, 1.0, Dtype::U32)?, &shape)
        }
    }
}

/// Broadcasts both index arrays together; returns them flattened to u32 `[B]` and the
/// broadcast shape `I`.
fn gather_indices(
    op: &'static str,
    lhs: Option<&Array>,
    rhs: Option<&Array>,
    x_batch: &[usize],
    w_batch: &[usize],
) -> Result<(Array, Array, Shape)> {
    let l = side_indices(op, "lhs_indices", lhs, x_batch)?;
    let r = side_indices(op, "rhs_indices", rhs, w_batch)?;
    let shape = broadcast_shapes(op, l.shape(), r.shape()).map_err(|_| {
        Error::invalid(
            op,
            format!(
                "lhs_indices {} and rhs_indices {} do not broadcast together",
                fmt_shape(l.shape()),
                fmt_shape(r.shape())
            ),
        )
    })?;
    let flat = |a: &Array| -> Result<Array> {
        let b = broadcast_to(&astype(a, Dtype::U32), &shape)?;
        reshape(&b, &[-1])
    };
    Ok((flat(&l)?, flat(&r)?, shape))
}

/// `a` with its batch axes flattened: `[..., R, C]` → `[B, R, C]`.
fn flatten_batch(a: &Array) -> Result<Array> {
    let nd = a.ndim();
    let (r, c) = (a.shape()[nd - 2], a.shape()[nd - 1]);
    reshape(a, &[-1, r as i64, c as i64]).or_else(|_| {
        // an empty batch: -1 is ambiguous
        let b: usize = a.shape()[..nd - 2].iter().product();
        reshape(a, &[b as i64, r as i64, c as i64])
    })
}

fn need_matrix(op: &'static str, what: &str, a: &Array) -> Result<()> {
    if a.ndim() < 2 {
        return Err(Error::invalid(
            op,
            format!(
                "{what} must have at least 2 dimensions, got shape {}",
                fmt_shape(a.shape())
            ),
        ));
    }
    Ok(())
}

/// `result[i] = a[lhs_indices[i]] @ b[rhs_indices[i]]` for `a: [..., M, K]`,
/// `b: [..., K, N]` (MLX's `gather_mm`). `sorted_indices` promises that `rhs_indices` is
/// sorted, so consecutive rows share a matrix (a hint; the result is the same either way).
#[track_caller]
pub fn gather_mm(
    a: &Array,
    b: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    sorted_indices: bool,
) -> Result<Array> {
    const OP: &str = "gather_mm";
    need_matrix(OP, "a", a)?;
    need_matrix(OP, "b", b)?;
    let t = Dtype::promote(a.dtype(), b.dtype());
    if !t.is_float() {
        return Err(Error::dtype(
            OP,
            format!(
                "only float inputs are supported, got {} and {}",
                a.dtype(),
                b.dtype()
            ),
        ));
    }
    let (an, bn) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[an - 2], a.shape()[an - 1]);
    let (k2, n) = (b.shape()[bn - 2], b.shape()[bn - 1]);
    if k != k2 {
        return Err(Error::invalid(
            OP,
            format!(
                "a {} and b {} cannot be multiplied (K {k} vs {k2})",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    let (li, ri, ishape) = gather_indices(
        OP,
        lhs_indices,
        rhs_indices,
        &a.shape()[..an - 2],
        &b.shape()[..bn - 2],
    )?;
    let a3 = flatten_batch(&astype(a, t))?;
    let b3 = flatten_batch(&astype(b, t))?;
    let nb = li.shape()[0];
    let out = Array::make(
        smallvec::smallvec![nb, m, n],
        t,
        Primitive::GatherMm { sorted_indices },
        [a3, b3, li, ri],
    );
    let shape: Vec<i64> = ishape.iter().chain(&[m, n]).map(|&d| d as i64).collect();
    reshape(&out, &shape)
}

/// The quantized `gather_mm` (MLX's `gather_qmm`): `result[i] =
/// quantized_matmul(x[lhs_indices[i]], w[rhs_indices[i]], ..)` with `w`, `scales`, `biases`
/// stacked `[..., N, K*bits/32]` (`transpose = true`, the layout of `SwitchLinear`) or
/// `[..., K, N*bits/32]`. The result dtype is `x` promoted with the scales.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    group_size: usize,
    bits: usize,
    sorted_indices: bool,
) -> Result<Array> {
    const OP: &str = "gather_qmm";
    let packed_len = check_packed(OP, wq, scales, biases, group_size, bits)?;
    check_float(OP, "x", x)?;
    need_matrix(OP, "x", x)?;
    let nd = wq.ndim();
    let (k, n) = if transpose {
        (packed_len, wq.shape()[nd - 2])
    } else {
        (wq.shape()[nd - 2], packed_len)
    };
    let (xm, xk) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
    if xk != k {
        return Err(Error::invalid(
            OP,
            format!(
                "x {} has last axis {xk} but the quantized matrices wq {} (transpose={transpose}, \
                 {bits} bits) have K = {k}",
                fmt_shape(x.shape()),
                fmt_shape(wq.shape())
            ),
        ));
    }
    let (li, ri, ishape) = gather_indices(
        OP,
        lhs_indices,
        rhs_indices,
        &x.shape()[..x.ndim() - 2],
        &wq.shape()[..nd - 2],
    )?;
    let dtype = Dtype::promote(x.dtype(), scales.dtype());
    let nb = li.shape()[0];
    let out = Array::make(
        smallvec::smallvec![nb, xm, n],
        dtype,
        Primitive::GatherQmm {
            group_size,
            bits,
            transpose,
            sorted_indices,
            exact: crate::ops::quantized::exact_decode(),
        },
        [
            flatten_batch(x)?,
            flatten_batch(wq)?,
            flatten_batch(scales)?,
            flatten_batch(biases)?,
            li,
            ri,
        ],
    );
    let shape: Vec<i64> = ishape.iter().chain(&[xm, n]).map(|&d| d as i64).collect();
    reshape(&out, &shape)
}
