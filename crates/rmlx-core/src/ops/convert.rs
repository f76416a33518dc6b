//! Dtype conversion and layout.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::primitive::Primitive;

/// `x` converted to `dtype` (float → int truncates toward zero, as in NumPy/MLX).
#[track_caller]
pub fn astype(x: &Array, dtype: Dtype) -> Array {
    if x.dtype() == dtype {
        return x.clone();
    }
    Array::make(x.shape().into(), dtype, Primitive::AsType, [x.clone()])
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
