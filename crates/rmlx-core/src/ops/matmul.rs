//! Matrix multiplication with NumPy semantics.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::convert::astype;
use crate::ops::shape::{broadcast_to, reshape};
use crate::primitive::Primitive;
use crate::shape::{broadcast_shapes, fmt_shape, Shape};

/// `a @ b` with NumPy's rules: a 1-D `a` is a row vector `[1, K]` and a 1-D `b` a column
/// `[K, 1]` (the added axis is removed from the result); leading (batch) axes broadcast.
///
/// Shapes: `a: [..., M, K]`, `b: [..., K, N]` → `[broadcast(...), M, N]`.
/// Float inputs only (f32, f16, bf16; mixed floats promote), as in MLX: integer or bool
/// operands are a type error.
#[track_caller]
pub fn matmul(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err(Error::invalid(
            "matmul",
            "got 0-dimension input; inputs must be at least 1-D",
        ));
    }
    let t = Dtype::promote(a.dtype(), b.dtype());
    if !t.is_float() {
        return Err(Error::dtype(
            "matmul",
            format!(
                "Only inexact types are supported but {} and {} were provided which results in {}, which is not a floating point type",
                a.dtype(),
                b.dtype(),
                t
            ),
        ));
    }
    // Promote 1-D operands to matrices; remember which axes to drop from the result.
    let (a2, drop_m) = if a.ndim() == 1 {
        (reshape(a, &[1, a.shape()[0] as i64])?, true)
    } else {
        (a.clone(), false)
    };
    let (b2, drop_n) = if b.ndim() == 1 {
        (reshape(b, &[b.shape()[0] as i64, 1])?, true)
    } else {
        (b.clone(), false)
    };
    let (an, bn) = (a2.ndim(), b2.ndim());
    let (m, k) = (a2.shape()[an - 2], a2.shape()[an - 1]);
    let (k2, n) = (b2.shape()[bn - 2], b2.shape()[bn - 1]);
    if k != k2 {
        return Err(Error::invalid(
            "matmul",
            format!(
                "shapes {} and {} cannot be multiplied",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    let batch =
        broadcast_shapes("matmul", &a2.shape()[..an - 2], &b2.shape()[..bn - 2]).map_err(|_| {
            Error::invalid(
                "matmul",
                format!(
                    "shapes {} and {} cannot be multiplied (batch dimensions do not broadcast)",
                    fmt_shape(a.shape()),
                    fmt_shape(b.shape())
                ),
            )
        })?;
    let mut a_shape: Shape = batch.clone();
    a_shape.extend([m, k]);
    let mut b_shape: Shape = batch.clone();
    b_shape.extend([k, n]);
    // Broadcast batch axes as zero-copy views: the kernel walks them with stride 0.
    let a3 = broadcast_to(&astype(&a2, t), &a_shape)?;
    let b3 = broadcast_to(&astype(&b2, t), &b_shape)?;
    let mut out_shape: Shape = batch.clone();
    out_shape.extend([m, n]);
    let out = Array::make(out_shape.clone(), t, Primitive::Matmul, [a3, b3]);
    if !drop_m && !drop_n {
        return Ok(out);
    }
    let mut final_shape: Vec<i64> = batch.iter().map(|&d| d as i64).collect();
    if !drop_m {
        final_shape.push(m as i64);
    }
    if !drop_n {
        final_shape.push(n as i64);
    }
    reshape(&out, &final_shape)
}
