//! Dtype conversion and layout.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::{Primitive, ViewOp};

/// `x` converted to `dtype` (float → int truncates toward zero, as in NumPy/MLX).
#[track_caller]
pub fn astype(x: &Array, dtype: Dtype) -> Array {
    if x.dtype() == dtype {
        return x.clone();
    }
    Array::make(x.shape().into(), dtype, Primitive::AsType, [x.clone()])
}

/// `x`'s bytes seen as `dtype` (MLX's `view`), without a copy. Only between dtypes of one
/// element size (`u32` ↔ `f32`, `f16` ↔ `bf16` ↔ `u16`...); `bool` is not reinterpreted.
#[track_caller]
pub fn view(x: &Array, dtype: Dtype) -> Result<Array> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    if x.dtype().size() != dtype.size() || x.dtype() == Dtype::Bool || dtype == Dtype::Bool {
        return Err(Error::dtype(
            "view",
            format!(
                "cannot view {} as {}: only dtypes of one element size (not bool) are supported",
                x.dtype(),
                dtype
            ),
        ));
    }
    Ok(Array::make(
        x.shape().into(),
        dtype,
        Primitive::View(ViewOp::Bitcast),
        [x.clone()],
    ))
}

/// A row-contiguous copy of `x` (or `x` itself when it already is).
#[track_caller]
pub fn contiguous(x: &Array) -> Array {
    if x.is_evaluated() {
        if let Ok(d) = x.data() {
            if d.is_contiguous() {
                return x.clone();
            }
        }
    }
    Array::make(x.shape().into(), x.dtype(), Primitive::Copy, [x.clone()])
}
